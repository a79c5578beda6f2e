"""Law families and a verdict that listens to the backtest, on synthetic tables drawn from known laws."""

import json

import numpy as np
import pandas as pd
import pytest

from plmscale.cli import main as cli_main
from plmscale.scaling import farseer
from plmscale.scaling.backtest import rollouts
from plmscale.scaling.fit import choose_law, fit_all
from plmscale.scaling.fitfile import write_fit
from plmscale.scaling.identify import backtest_verdict
from scaling_synthetic import BUDGETS, fit_settings, isoflop_runs, random_law

# Farseer's law is opt-in (fit.law_families); these tests fit both families.
BOTH_FAMILIES = ["parametric", "farseer"]

# A Farseer law whose data exponent grows with N (0.29 at the smallest budget's optimum, 0.44 at the top):
# larger models learn more from each token than a fixed-β Chinchilla form fitted below can know.
FARSEER_TRUTH = {"s": 1.0, "q": -0.3, "S": np.log(1.8), "B": 0.0, "b": 0.0, "Q": np.log(0.6),
                 "A": 0.12, "a": 0.2, "E": -1.55}


def farseer_runs(truth, rng, noise=0.004, sizes_per_budget=8, spread=6.0, budgets=BUDGETS, objective="clm"):
    """An IsoFLOP table drawn from a Farseer law: sizes log-spaced spread× either side of its optimum."""
    rows = []
    for budget in budgets:
        centre, _, _ = farseer.optimal_allocation(truth, budget)
        offsets = np.linspace(-np.log(spread), np.log(spread), sizes_per_budget)
        for j, n in enumerate(centre * np.exp(offsets + rng.normal(0, 0.05, sizes_per_budget))):
            n = float(round(n))
            d = budget / (6 * n)
            rows.append({"run_id": f"{objective}_c{budget:.0e}_{j}", "objective": objective, "n_params": n,
                         "tokens": d, "flops": budget, "budget": budget,
                         "loss": float(farseer.loss(truth, n, d)) * np.exp(rng.normal(0, noise))})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_biased_rollout_refuses_the_chinchilla_form(seed):
    runs = farseer_runs(FARSEER_TRUTH, np.random.default_rng(seed))
    fit = fit_all(runs, None, fit_settings(bootstrap=100, seed=seed, law_families=BOTH_FAMILIES))
    parametric = fit["objectives"]["clm"]["parametric"]
    rollout = fit["objectives"]["clm"]["backtest"]["parametric"]["rollout"]
    assert rollout["loss_consistent"] is False and rollout["loss_error_pct_ci"][0] > 0
    assert parametric["identified"] is False
    (reason,) = [r for r in parametric["reasons"] if "rollout backtest" in r]
    assert "not identified for forecasting" in reason and "biased at larger scale" in reason
    assert f"{rollout['loss_error_pct']:+.2f}%" in reason


@pytest.mark.parametrize("seed", [3, 4])
def test_a_chinchilla_table_keeps_its_law(seed):
    rng = np.random.default_rng(seed)
    runs = isoflop_runs(random_law(rng), rng, noise=0.005)
    fit = fit_all(runs, None, fit_settings(bootstrap=100, seed=seed, law_families=BOTH_FAMILIES))
    entry = fit["objectives"]["clm"]
    assert entry["backtest"]["parametric"]["rollout"]["loss_consistent"] is True
    assert entry["parametric"]["identified"] is True, entry["parametric"]["reasons"]
    assert not any("rollout backtest" in r for r in entry["parametric"]["reasons"])


def test_a_rollout_that_cannot_be_made_is_a_note_not_a_refusal():
    reasons, notes = backtest_verdict("parametric", {"rollout": {
        "held_out_budget": 1e18, "error": "rollout needs runs at 2 or more IsoFLOP budgets (the top one is held "
                                          "out); found 1"}})
    assert reasons == [] and notes == ["rollout backtest not made: rollout needs runs at 2 or more IsoFLOP "
                                       "budgets (the top one is held out); found 1"]


def test_a_forecast_below_a_best_run_is_no_bias():
    rollout = {"held_out_budget": 1e20, "forecast": {"loss": 2.0}, "loss_error_pct": -3.0,
               "loss_error_pct_ci": [-4.0, -2.0],
               "observed": {"source": "best run (no usable vertex at 1e+20: ...)"}}
    reasons, notes = backtest_verdict("parametric", {"rollout": rollout})
    assert reasons == [] and "only bounds the optimum from above" in notes[0]
    rollout["observed"]["source"] = "parabola vertex"
    reasons, _ = backtest_verdict("parametric", {"rollout": rollout})
    assert "-3.00% [-4.00, -2.00] off: biased at larger scale" in reasons[0]


def test_a_scatter_forecast_below_its_held_out_runs_is_a_bias():
    """A scatter's rollout compares each held-out run with the law at that run's own N and D: no best run bounds
    anything there, so a forecast too low is as biased as one too high (found on a 491-run scatter drawn from a
    law whose data exponent grows with N: the Chinchilla form forecast the top fifth 12.9% low and was selected)."""
    rollout = {"held_out_budget": 1e21, "held_out": "the top 20% of the scatter's runs by compute (99 runs at >= 1e+21 "
               "FLOPs)", "forecast": {"loss": 2.77}, "loss_error_pct": -12.91, "loss_error_pct_ci": [-14.72, -5.57],
               "observed": {"source": "mean loss of the top 20% of the scatter's runs by compute"}}
    reasons, notes = backtest_verdict("parametric", {"rollout": rollout})
    assert notes == [] and "forecasts their mean loss -12.91% [-14.72, -5.57] off: biased at larger scale" in reasons[0]


def test_the_isoflop_allocation_is_judged_by_its_n_opt_rollout():
    """The released curves' case: the IsoFLOP N_opt forecast is on target, its loss curve 1.1% high."""
    rollout = {"held_out_budget": 1e21, "forecast": {"loss": 2.23, "n_opt": 1.54e9},
               "observed": {"source": "parabola vertex"}, "loss_error_pct": 1.12, "loss_error_pct_ci": [0.40, 2.70],
               "n_opt_log_error": 0.01, "n_opt_log_error_ci": [-0.56, 0.60]}
    reasons, notes = backtest_verdict("isoflop", {"rollout": rollout})
    assert reasons == [] and "its allocation is judged by the N_opt rollout" in notes[0]
    rollout.update(n_opt_log_error=0.9, n_opt_log_error_ci=[0.3, 1.5])
    reasons, _ = backtest_verdict("isoflop", {"rollout": rollout})
    assert "compute-optimal model size +0.90 [+0.30, +1.50] in ln N off: biased at larger scale" in reasons[0]


def test_farseer_recovers_its_forecast_at_a_larger_budget():
    """Known truth: fitted to a noisy table drawn from the law, the forecast at 10x the top budget holds
    the true compute-optimal loss within its bootstrap interval (and within 1%)."""
    runs = farseer_runs(FARSEER_TRUTH, np.random.default_rng(7))
    entry = farseer.fit_entry(runs["n_params"], runs["tokens"], runs["loss"], 6.0,
                              np.random.default_rng(0).multinomial(len(runs), np.full(len(runs), 1 / len(runs)),
                                                                   size=40), reference_flops=BUDGETS[-1])
    target = 10 * BUDGETS[-1]
    n_true, d_true, loss_true = farseer.optimal_allocation(FARSEER_TRUTH, target)
    n_fit, d_fit, loss_fit = farseer.optimal_allocation(entry["theta"], target)
    assert loss_fit == pytest.approx(loss_true, rel=0.01)
    point, (low, high) = farseer.loss_with_interval(entry, n_true, d_true)
    assert low <= float(farseer.loss(FARSEER_TRUTH, n_true, d_true)) <= high
    assert entry["bootstrap"]["n_failed"] <= 4


@pytest.mark.parametrize("truth", ["farseer", "chinchilla"])
def test_selection_picks_the_family_the_table_was_drawn_from(truth):
    rng = np.random.default_rng(11)
    runs = (farseer_runs(FARSEER_TRUTH, rng) if truth == "farseer" else isoflop_runs(random_law(rng), rng, noise=0.005))
    entry = fit_all(runs, None, fit_settings(bootstrap=40, seed=0, law_families=BOTH_FAMILIES))["objectives"]["clm"]
    assert entry["selected_law"] == ("farseer" if truth == "farseer" else "parametric")
    assert set(entry["law_selection"]["families"]) == {"parametric", "farseer"}
    assert entry["backtest"]["farseer"].get("rollout") or entry["backtest"]["farseer"].get("skipped")


def test_selection_rule_on_ten_draws_per_family():
    """Known truth, 10 noisy tables per family: the rule fit.json's selection applies (held-out RMS error of
    the rollout, a margin before the family with more constants) picks the family drawn from in >= 9 of 10.
    Point fits only (the identification gate is tested above), to stay fast."""
    picks = {"farseer": [], "parametric": []}
    for seed in range(10):
        for family in picks:
            rng = np.random.default_rng(100 + seed)
            runs = (farseer_runs(FARSEER_TRUTH, rng) if family == "farseer"
                    else isoflop_runs(random_law(rng), rng, noise=0.005))
            result = rollouts(runs)
            table = {f: {"identified": True, "held_out_rms_pct": result[f]["held_out_runs"]["rms_pct"]}
                     for f in result}
            picks[family].append(choose_law(table)[0])
    for family, chosen in picks.items():
        assert chosen.count(family) >= 9, (family, chosen)


@pytest.fixture(scope="module")
def farseer_fit_file(tmp_path_factory):
    runs = farseer_runs(FARSEER_TRUTH, np.random.default_rng(0))
    path = tmp_path_factory.mktemp("laws") / "fit.json"
    write_fit(fit_all(runs, None, fit_settings(bootstrap=40, seed=0, law_families=BOTH_FAMILIES)), path)
    return path


def test_predict_a_run_under_the_selected_law_and_each_family(farseer_fit_file, capsys):
    n, d = 3e9, 2e10
    assert cli_main(["predict", "--fit", str(farseer_fit_file), "--objective", "clm", "--n-params", str(n),
                     "--tokens", str(d), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"law", "loss", "loss_ci", "families"}
    assert result["law"] == "farseer"
    assert result["loss"] == result["families"]["farseer"]["loss"]
    low, high = result["loss_ci"]
    assert low <= float(farseer.loss(FARSEER_TRUTH, n, d)) <= high
    chinchilla = result["families"]["parametric"]
    assert chinchilla["identified"] is False and any("rollout backtest" in r for r in chinchilla["reasons"])
    assert chinchilla["loss"] is not None and chinchilla["loss_ci"] is not None
    # The text form names every family with its verdict; repeated data is called out.
    assert cli_main(["predict", "--fit", str(farseer_fit_file), "--objective", "clm", "--n-params", str(n),
                     "--tokens", str(d), "--unique-tokens", str(d / 4)]) == 0
    text = capsys.readouterr().out
    assert "selected law: farseer" in text and "parametric" in text and "not identified" in text
    assert "4 epochs" in text


def test_predict_a_run_needs_both_sizes(farseer_fit_file, capsys):
    assert cli_main(["predict", "--fit", str(farseer_fit_file), "--objective", "clm", "--n-params", "1e9"]) != 0
    assert "--tokens D" in capsys.readouterr().err


def test_a_rollout_that_forecasts_nothing_is_a_refusal():
    rollout = {"held_out_budget": 1e20, "forecast": {"loss": None, "n_opt": None}, "loss_error_pct": None,
               "loss_error_pct_ci": [-100.0, -100.0], "observed": {"source": "parabola vertex"}}
    reasons, _ = backtest_verdict("farseer", {"rollout": rollout})
    assert "forecasts no finite compute-optimal loss" in reasons[0]


def test_rollout_summary_prints_a_failed_forecast():
    from plmscale.scaling.summary import rollout_summary

    rollout = {"held_out_budget": 5e11, "loss_error_pct": None, "loss_error_pct_ci": None, "n_opt_log_error": None,
               "n_opt_ratio": None, "observed": {"source": "parabola vertex"}}
    text = rollout_summary({"objectives": {"clm": {"backtest": {"farseer": {"rollout": rollout}}}}})
    assert "loss n/a, N_opt xn/a" in text


# ---- scatter tables: the rollout holds out the top compute quantile ----------------------------------------

def law_scatter(loss, rng, n_runs=80, noise=0.004):
    """Runs at random (N, D) (no IsoFLOP budgets) with losses from loss(n, d) and log-normal noise."""
    n = np.exp(rng.uniform(np.log(1e7), np.log(3e9), n_runs))
    d = np.exp(rng.uniform(np.log(3e8), np.log(1e11), n_runs))
    return pd.DataFrame({"run_id": [f"scatter_{i}" for i in range(n_runs)], "objective": "clm", "n_params": n,
                         "tokens": d, "flops": 6 * n * d, "loss": loss(n, d) * np.exp(rng.normal(0, noise, n_runs))})


def test_a_scatter_drawn_from_farseer_refuses_the_chinchilla_form_by_its_top_quantile():
    """A scatter has no top budget; its rollout fits below the top fifth of the runs by compute and forecasts
    each held-out run (before: no rollout, so a biased Chinchilla form was called identified)."""
    runs = law_scatter(lambda n, d: farseer.loss(FARSEER_TRUTH, n, d), np.random.default_rng(0))
    entry = fit_all(runs, None, fit_settings(bootstrap=40, seed=0))["objectives"]["clm"]
    rollout = entry["backtest"]["parametric"]["rollout"]
    assert rollout["held_out_runs"]["n_runs"] == 16 and rollout["n_runs_fitted"] == 64
    assert rollout["loss_error_pct_ci"][0] > 0 and rollout["loss_consistent"] is False
    assert entry["parametric"]["identified"] is False
    (reason,) = [r for r in entry["parametric"]["reasons"] if "rollout backtest" in r]
    assert "the top 20% of the scatter's runs by compute (16 runs at >=" in reason and "biased" in reason


def test_plmscale_fit_points_to_the_families_it_did_not_fit_when_none_passes(tmp_path, capsys):
    """Without a config plmscale fit fits the Chinchilla form alone (fit.law_families' default); where its backtest
    refuses it, the user is told which families were not fitted and how to ask for them (--law-families)."""
    path = tmp_path / "runs.csv"
    law_scatter(lambda n, d: farseer.loss(FARSEER_TRUTH, n, d), np.random.default_rng(0)).to_csv(path, index=False)
    assert cli_main(["fit", str(path), "--out", str(tmp_path / "one"), "--bootstrap", "20"]) == 0
    printed = capsys.readouterr().out
    assert ("note: clm: no law family fitted (parametric) passes identification and its rollout backtest; farseer "
            "may forecast these runs better: --law-families parametric farseer") in printed
    assert "data_constrained may" not in printed  # no unique_tokens column: that law has nothing to fit
    assert cli_main(["fit", str(path), "--out", str(tmp_path / "both"), "--bootstrap", "20",
                     "--law-families", "parametric", "farseer"]) == 0
    entry = json.loads((tmp_path / "both" / "fit.json").read_text())["objectives"]["clm"]
    assert set(entry["law_selection"]["families"]) == {"parametric", "farseer"}


def test_selection_works_on_scatters():
    """Known truth on scatters, 4 tables per family (10 in docs/laws.md: 9/10 and 10/10): the rule picks the family
    drawn from; the held-out runs are the top compute quantile's."""
    picks = {"farseer": [], "parametric": []}
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        law = random_law(rng)
        tables = {"farseer": law_scatter(lambda n, d: farseer.loss(FARSEER_TRUTH, n, d), rng),
                  "parametric": law_scatter(lambda n, d, law=law: law["E"] + law["A"] / n ** law["alpha"]
                                            + law["B"] / d ** law["beta"], rng, noise=0.005)}
        for family, runs in tables.items():
            result = rollouts(runs, scatter=True)
            assert {r["held_out_runs"]["n_runs"] for r in result.values()} == {16}
            table = {f: {"identified": True, "held_out_rms_pct": result[f]["held_out_runs"]["rms_pct"]} for f in result}
            picks[family].append(choose_law(table)[0])
    for family, chosen in picks.items():
        assert chosen.count(family) >= 3, (family, chosen)


def test_the_farseer_gradient_matches_finite_differences():
    runs = farseer_runs(FARSEER_TRUTH, np.random.default_rng(0), budgets=[1e18, 1e19, 1e20])
    n, d = runs["n_params"].to_numpy(float) / farseer.N_UNIT, runs["tokens"].to_numpy(float) / farseer.D_UNIT
    args = (n, d, np.log(n), np.log(d), np.log(runs["loss"].to_numpy(float)), np.arange(len(runs)) % 3.0)
    theta = np.array([FARSEER_TRUTH[k] for k in farseer.PARAM_NAMES]) + 0.02
    _, grad = farseer._objective(theta, *args)
    step = 1e-6
    numeric = [(farseer._objective(theta + step * e, *args)[0] - farseer._objective(theta - step * e, *args)[0])
               / (2 * step) for e in np.eye(9)]
    assert grad == pytest.approx(numeric, rel=1e-4, abs=1e-3)
