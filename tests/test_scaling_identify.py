"""identify(): a good synthetic fit is identified; degenerate tables are not, each for the right reason."""

import copy

import numpy as np
import pytest

from plmscale.errors import PlmscaleError
from plmscale.scaling.fit import fit_objective
from plmscale.scaling.identify import Criteria, curvature_significance, identify, identify_objective
from plmscale.scaling.table import validate_runs
from scaling_synthetic import BUDGETS, isoflop_runs, random_law

N_BOOT = 100


def fitted(runs, curves=None, n_boot=N_BOOT):
    """One objective's fit entry as the fit stage builds it (fit.fit_objective)."""
    return fit_objective(validate_runs(runs), curves, n_boot, np.random.default_rng(0), 3)


@pytest.fixture(scope="module")
def law():
    return random_law(np.random.default_rng(0))


@pytest.fixture(scope="module")
def good(law):
    runs, curves = isoflop_runs(law, np.random.default_rng(1), noise=0.005, with_curves=True)
    return runs, fitted(runs, curves)


def test_good_synthetic_fit_is_identified(good):
    runs, entry = good
    verdicts = identify_objective(entry, runs=runs)
    for method in ("isoflop", "envelope", "parametric"):
        assert verdicts[method]["identified"], (method, verdicts[method]["reasons"])
        assert verdicts[method]["reasons"] == []
    assert verdicts["isoflop"]["bracketed_budgets"] == verdicts["isoflop"]["n_budgets"] == len(BUDGETS)


def test_monotone_losses_bracket_nothing(law):
    rng = np.random.default_rng(2)
    runs = isoflop_runs(law, rng, noise=0.005)
    # Bigger is always better at every budget: every optimum sits at the largest size of the grid.
    runs["loss"] = 3.0 * runs["n_params"] ** -0.05 * np.exp(rng.normal(0, 0.001, len(runs)))
    verdict = identify("isoflop", fitted(runs)["isoflop"], runs=runs)
    assert not verdict["identified"]
    assert verdict["bracketed_budgets"] == 0
    assert verdict["reasons"][0] == f"only 0 of {len(BUDGETS)} IsoFLOP budgets bracketed an optimum (need 2)"
    assert sum("largest model size" in reason for reason in verdict["reasons"]) >= len(BUDGETS) - 2
    assert not any(reason.startswith("not fitted") for reason in verdict["reasons"])  # said once, per budget


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_flat_losses_are_not_identified(seed):
    rng = np.random.default_rng(seed)
    runs = isoflop_runs(random_law(rng), rng, noise=0.005)
    runs["loss"] = 2.0 * np.exp(rng.normal(0, 0.005, len(runs)))  # no minimum anywhere, only noise
    entry = fitted(runs)
    verdict = identify("isoflop", entry["isoflop"], runs=runs)
    assert not verdict["identified"]
    flat_symptoms = ("bracketed an optimum", "does not fall", "interval of exponent a")
    assert any(symptom in reason for reason in verdict["reasons"] for symptom in flat_symptoms), verdict
    assert not identify("parametric", entry["parametric"])["identified"]


def test_noise_brackets_are_not_counted_with_the_runs():
    """On flat losses noise alone makes some parabolas curve upwards; their curvature is not significant."""
    rng = np.random.default_rng(1)
    runs = isoflop_runs(random_law(rng), rng, noise=0.005)
    runs["loss"] = 2.0 * np.exp(rng.normal(0, 0.005, len(runs)))
    entry = fitted(runs)["isoflop"]
    kept = [optimum["budget"] for optimum in entry["optima"] if optimum["kept"]]
    assert kept, "the premise: noise brackets at least one budget"
    with_runs = identify("isoflop", entry, runs=runs)
    assert with_runs["bracketed_budgets"] < len(kept)
    assert any("within the runs' scatter" in reason for reason in with_runs["reasons"])


def test_curvature_significance_of_a_clear_profile(good):
    runs, _ = good
    tests = curvature_significance(runs)
    assert len(tests) == len(BUDGETS)
    for test in tests.values():
        assert test["dof"] == 5 and test["curvature"] > 0 and test["t"] > 2


def test_one_budget_is_not_fitted(law):
    runs = isoflop_runs(law, np.random.default_rng(3), noise=0.005, budgets=[1e19])
    verdict = identify("isoflop", fitted(runs)["isoflop"])
    assert not verdict["identified"]
    assert verdict["reasons"][0].startswith("not fitted: IsoFLOP fit needs runs at 2 or more compute budgets")


def test_parametric_at_a_bound_is_not_identified(law):
    runs = isoflop_runs(law, np.random.default_rng(4), noise=0.0)
    # Loss that does not depend on data: the B/D^beta term has nothing to fit and runs into its bounds.
    runs["loss"] = law["E"] + law["A"] / runs["n_params"] ** law["alpha"]
    verdict = identify("parametric", fitted(runs)["parametric"])
    assert not verdict["identified"]
    # The optimiser parks the empty term at a bound: beta at its upper bound, often B at its lower one.
    assert any(reason.startswith("beta = 5 sits at the optimiser's upper bound") for reason in verdict["reasons"])
    assert not any(reason.startswith(("E = ", "A = ", "alpha = ")) for reason in verdict["reasons"])


def test_missing_entry_says_not_fitted():
    verdict = identify("envelope", {"error": "envelope fit needs training curves (--curves CURVES.csv)"})
    assert verdict == {"identified": False, "notes": [],
                       "reasons": ["not fitted: envelope fit needs training curves (--curves CURVES.csv)"]}


# Each check on its own: one field of a good entry broken at a time.

def broken(entry, method, change):
    entry = copy.deepcopy(entry[method])
    change(entry)
    return entry


def test_failed_bootstrap_refits(good):
    _, entry = good

    def fail(share):
        def change(e):
            e["bootstrap"]["n_failed"] = int(share * e["bootstrap"]["n"])
        return change

    assert identify("isoflop", broken(entry, "isoflop", fail(0.10)))["identified"]
    verdict = identify("isoflop", broken(entry, "isoflop", fail(0.11)))
    assert verdict["reasons"] == [f"11 of {N_BOOT} bootstrap refits failed (11%, limit 10%)"]


def test_wide_interval_and_configurable_width(good):
    _, entry = good
    wide = broken(entry, "isoflop", lambda e: e.update(a_ci=[e["a"] - 0.3, e["a"] + 0.3]))
    verdict = identify("isoflop", wide)
    assert len(verdict["reasons"]) == 1 and "0.600 wide (limit 0.5)" in verdict["reasons"][0]
    width = entry["parametric"]["a_ci"][1] - entry["parametric"]["a_ci"][0]
    strict = Criteria.from_config({"max_exponent_ci_width": width / 2})
    assert not identify("parametric", entry["parametric"], strict)["identified"]
    assert identify("parametric", entry["parametric"], Criteria(max_exponent_ci_width=2 * width))["identified"]


def test_point_outside_its_interval_and_unphysical_exponent(good):
    _, entry = good
    outside = broken(entry, "envelope", lambda e: e.update(b_ci=[e["b"] + 0.01, e["b"] + 0.02]))
    assert any(reason.startswith("b = ") and "outside its own 95% interval" in reason
               for reason in identify("envelope", outside)["reasons"])
    unphysical = broken(entry, "isoflop", lambda e: e.update(a=1.2, b=-0.2, a_ci=[1.1, 1.3], b_ci=[-0.3, -0.1]))
    reasons = identify("isoflop", unphysical)["reasons"]
    assert any(reason.startswith("exponent a = 1.200 is outside (0, 1)") for reason in reasons)


def test_no_bootstrap_is_not_identified_unless_allowed(good):
    _, entry = good

    def strip(e):
        for key in [k for k in e if k.endswith("_ci")] + ["bootstrap"]:
            del e[key]

    bare = broken(entry, "isoflop", strip)
    assert identify("isoflop", bare)["reasons"] == ["no bootstrap (bootstrap = 0): nothing measures how stable "
                                                   "the fit is"]
    assert identify("isoflop", bare, Criteria(require_bootstrap=False))["identified"]


def test_few_starts_in_the_best_basin(good):
    _, entry = good
    lonely = broken(entry, "parametric", lambda e: e.update(starts_in_best_basin=1))
    reasons = identify("parametric", lonely)["reasons"]
    assert reasons == [f"only 1 of {entry['parametric']['n_refined']} refined starts reached the best basin "
                       "(need 3): another minimum may fit as well"]


def test_dropped_budget_is_a_note_while_enough_remain(good):
    _, entry = good

    def drop_first(e):
        e["optima"][0]["kept"] = False
        e["dropped_budgets"] = [{"budget": e["optima"][0]["budget"], "reason": "made up for the test"}]

    verdict = identify("isoflop", broken(entry, "isoflop", drop_first))
    assert verdict["identified"] and verdict["bracketed_budgets"] == len(BUDGETS) - 1
    assert verdict["notes"] == ["budget 1e+18 dropped: made up for the test"]
    verdict = identify("isoflop", broken(entry, "isoflop", drop_first), Criteria(min_bracketed_budgets=7))
    assert verdict["reasons"][:2] == [f"only 6 of {len(BUDGETS)} IsoFLOP budgets bracketed an optimum (need 7)",
                                      "budget 1e+18 dropped: made up for the test"]


def test_criteria_from_config_names_the_key():
    assert Criteria.from_config(None) == Criteria()
    assert Criteria.from_config({"min_bracketed_budgets": 3}).min_bracketed_budgets == 3
    with pytest.raises(PlmscaleError, match=r"fit.identify: unknown key\(s\) max_width"):
        Criteria.from_config({"max_width": 0.3})
    with pytest.raises(PlmscaleError, match="fit.identify.min_bracketed_budgets must be a whole number"):
        Criteria.from_config({"min_bracketed_budgets": 2.5})
    with pytest.raises(PlmscaleError, match="fit.identify.require_bootstrap must be true or false"):
        Criteria.from_config({"require_bootstrap": "yes"})
    with pytest.raises(PlmscaleError, match="must be a number >= 0"):
        Criteria.from_config({"max_exponent_ci_width": -1})
