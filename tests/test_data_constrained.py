"""The data-constrained law family (Muennighoff et al. 2023): the law by hand, its fit on tables drawn from it,
selection against the Chinchilla form, fit.json and `plmscale predict --unique-tokens`."""

import json

import numpy as np
import pandas as pd
import pytest

from plmscale.cli import main as cli_main
from plmscale.errors import PlmscaleError
from plmscale.scaling import data_constrained as dc
from plmscale.scaling import parametric
from plmscale.scaling.backtest import rollouts
from plmscale.scaling.fit import choose_law, fit_all
from plmscale.scaling.fitfile import parse_fit, write_fit
from scaling_synthetic import BUDGETS, fit_settings, isoflop_runs, random_law

FAMILIES = ["parametric", "data_constrained"]
# Chinchilla's constants (Hoffmann et al. 2022) with Muennighoff et al.'s fitted decay constants.
PAPER_TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28, "r_star_d": 15.4, "r_star_n": 5.3}
# The same Chinchilla part where repetition does not matter: a repeat is worth a new token, an excess parameter
# a useful one (R* far beyond any epoch count: the Chinchilla law itself, to 1e-10).
NO_DECAY_TRUTH = {**PAPER_TRUTH, "r_star_d": 1e12, "r_star_n": 1e12}


def data_constrained_runs(truth, rng, noise=0.005, sizes_per_budget=8, spread=6.0, data_runs_out_at=1e19):
    """An IsoFLOP table of one data set of U unique tokens: U is the Chinchilla-optimal data at the budget
    data_runs_out_at, so larger budgets repeat it (up to ~90 epochs at the top budget's smallest model).
    Sizes are log-spaced spread× either side of the law's optimum for U."""
    unique = data_runs_out_at / (6 * parametric.optimal_allocation(
        truth["E"], truth["A"], truth["B"], truth["alpha"], truth["beta"], data_runs_out_at, 6.0)[0])
    rows = []
    for budget in BUDGETS:
        centre, _, _ = dc.optimal_allocation(truth, budget, unique_tokens=unique)
        offsets = np.linspace(-np.log(spread), np.log(spread), sizes_per_budget)
        for j, n in enumerate(centre * np.exp(offsets + rng.normal(0, 0.05, sizes_per_budget))):
            n = float(round(n))
            d = budget / (6 * n)
            rows.append({"run_id": f"clm_c{budget:.0e}_{j}", "objective": "clm", "n_params": n, "tokens": d,
                         "flops": budget, "budget": budget, "unique_tokens": unique,
                         "loss": float(dc.loss(truth, n, d, unique)) * np.exp(rng.normal(0, noise))})
    return pd.DataFrame(rows)


def test_effective_data_and_parameters_by_hand():
    # D = 5e9 tokens of U = 1e9: R_D = 4 repeats, D' = 1e9·(1 + 15.4·(1 − e^(−4/15.4))) = 4.5227e9.
    assert dc.effective_data(5e9, 1e9, 15.4) == pytest.approx(4.5227e9, rel=1e-4)
    # Unique data (U >= D) and unlimited data are worth every token.
    assert dc.effective_data(1e9, 2e9, 15.4) == 1e9 and dc.effective_data(1e9, None, 15.4) == 1e9
    # α = β and A = B make G = 1 and N_of_U = U_D: N = 4e9 on U_D = 1e9 tokens has R_N = 3 excess parameters per
    # unique one, N' = 1e9·(1 + 5.3·(1 − e^(−3/5.3))) = 3.2908e9; a model below N_of_U counts in full.
    even = {"E": 1.0, "A": 100.0, "B": 100.0, "alpha": 0.5, "beta": 0.5, "r_star_d": 15.4, "r_star_n": 5.3}
    assert dc.effective_params(even, 4e9, 1e9, 1e9) == pytest.approx(3.2908e9, rel=1e-4)
    assert dc.effective_params(even, 5e8, 1e9, 1e9) == 5e8
    # Chinchilla's constants: G = (0.34·406.4 / (0.28·410.7))^(1/0.62) = 1.3447 and, for U_D = 1e10,
    # N_of_U = G·(U_D·G)^(0.28/0.34) = 2.9502e8; N = 1e9 counts as N' = N_of_U·(1 + 5.3·(1 − e^(−(N/N_of_U − 1)/5.3)))
    # = 8.6249e8.
    assert np.exp(dc.log_n_of_unique(406.4, 410.7, 0.34, 0.28, 1e10)) == pytest.approx(2.9502e8, rel=1e-4)
    assert dc.effective_params(PAPER_TRUTH, 1e9, 1e10, 1e10) == pytest.approx(8.6249e8, rel=1e-4)
    # The loss puts both into the Chinchilla form.
    loss = dc.loss(PAPER_TRUTH, 1e9, 5e10, 1e10)
    n_eff, d_eff = dc.effective_params(PAPER_TRUTH, 1e9, 5e10, 1e10), dc.effective_data(5e10, 1e10, 15.4)
    assert loss == pytest.approx(1.69 + 406.4 / n_eff ** 0.34 + 410.7 / d_eff ** 0.28, rel=1e-12)


def test_unlimited_data_gives_the_chinchilla_optimum_and_scarce_data_more_epochs():
    chinchilla = parametric.optimal_allocation(1.69, 406.4, 410.7, 0.34, 0.28, 1e22, 6.0)
    n_opt, d_opt, loss = dc.optimal_allocation(PAPER_TRUTH, 1e22)
    assert (n_opt, d_opt, loss) == pytest.approx(tuple(float(v) for v in chinchilla), rel=1e-3)
    # A data set of a tenth of the optimal tokens: a higher loss, and (R*_N < R*_D: excess parameters lose their
    # value faster than repeated epochs, the paper's advice) a smaller model trained for more epochs.
    scarce_n, scarce_d, scarce_loss = dc.optimal_allocation(PAPER_TRUTH, 1e22, unique_tokens=d_opt / 10)
    assert scarce_loss > loss and scarce_n < n_opt and scarce_d > d_opt


def test_the_gradient_matches_finite_differences():
    runs = data_constrained_runs(PAPER_TRUTH, np.random.default_rng(0))
    design = dc._Design(runs["n_params"], runs["tokens"], runs["unique_tokens"], runs["loss"])
    theta = np.array([0.4, 6.2, 5.8, 0.3, 0.3, np.log(8.0), np.log(3.0)])
    weights = np.ones(len(runs))
    _, grad = dc._objective(theta, design, weights)
    step = 1e-6
    numeric = [(dc._objective(theta + step * e, design, weights)[0] - dc._objective(theta - step * e, design,
                                                                                   weights)[0]) / (2 * step)
               for e in np.eye(7)]
    assert grad == pytest.approx(numeric, rel=1e-4, abs=1e-3)


def test_without_unique_tokens_or_repeats_the_family_is_not_fitted_and_says_why():
    rng = np.random.default_rng(0)
    runs = isoflop_runs(random_law(rng), rng)
    settings = fit_settings(bootstrap=0, backtest=False, law_families=FAMILIES)
    entry = fit_all(runs, None, settings)["objectives"]["clm"]
    assert entry["data_constrained"]["identified"] is False
    assert "no unique_tokens column" in entry["data_constrained"]["reasons"][0]
    assert "parametric" in entry and "error" not in entry["parametric"]
    runs["unique_tokens"] = runs["tokens"] * 2  # every run on unique data
    entry = fit_all(runs, None, settings)["objectives"]["clm"]
    (reason,) = entry["data_constrained"]["reasons"]
    assert reason.startswith("not fitted: no run repeats its data") and "unidentifiable" in reason
    runs["unique_tokens"] = runs["unique_tokens"].astype(object)
    runs.loc[0, "unique_tokens"] = "lots"
    entry = fit_all(runs, None, settings)["objectives"]["clm"]
    assert "must be a positive number of tokens or empty" in entry["data_constrained"]["reasons"][0]


def test_the_family_is_opt_in():
    rng = np.random.default_rng(2)
    runs = data_constrained_runs(PAPER_TRUTH, rng)
    entry = fit_all(runs, None, fit_settings(bootstrap=0, law_families=["parametric"]))["objectives"]["clm"]
    assert "data_constrained" not in entry and "data_constrained" not in entry["backtest"]
    assert set(entry["law_selection"]["families"]) == {"parametric"}


@pytest.fixture(scope="module")
def known_truth_fit():
    runs = data_constrained_runs(PAPER_TRUTH, np.random.default_rng(1))
    return runs, fit_all(runs, None, fit_settings(bootstrap=60, seed=1, law_families=FAMILIES))


def test_known_truth_is_selected_and_forecasts_the_held_out_budget_within_its_interval(known_truth_fit):
    runs, fit = known_truth_fit
    entry = fit["objectives"]["clm"]
    constrained = entry["data_constrained"]
    assert constrained["identified"] is True, constrained["reasons"]
    assert entry["selected_law"] == "data_constrained", entry["law_selection"]
    rollout = entry["backtest"]["data_constrained"]["rollout"]
    low, high = rollout["loss_error_pct_ci"]
    assert low <= 0 <= high and rollout["loss_consistent"] is True
    assert rollout["unique_tokens"] == pytest.approx(runs["unique_tokens"].iat[0])
    # The fitted decay constants' intervals hold the truth.
    for name in ("r_star_d", "r_star_n", "alpha", "beta"):
        low, high = constrained[f"{name}_ci"]
        assert low <= PAPER_TRUTH[name] <= high, (name, constrained[f"{name}_ci"])
    assert constrained["n_repeated_runs"] > 0 and constrained["n_excess_param_runs"] > 0
    # fit.json's reader takes the entry as a typed law.
    law = parse_fit(json.loads(json.dumps(fit, default=float))).method("clm", "data_constrained").law
    assert law.r_star_d == pytest.approx(constrained["r_star_d"])


def selection_picks(truth, draws=10):
    """choose_law's pick on `draws` noisy tables drawn from truth (point fits, the rule fit.json applies)."""
    picks = []
    for seed in range(draws):
        runs = data_constrained_runs(truth, np.random.default_rng(100 + seed))
        result = rollouts(runs, methods=tuple(FAMILIES))
        table = {f: {"identified": True, "held_out_rms_pct": result[f]["held_out_runs"]["rms_pct"]} for f in result}
        picks.append(choose_law(table)[0])
    return picks


@pytest.mark.slow
def test_selection_picks_the_data_constrained_law_on_ten_draws():
    picks = selection_picks(PAPER_TRUTH)
    assert picks.count("data_constrained") >= 9, picks


@pytest.mark.slow
def test_selection_keeps_the_chinchilla_form_where_repetition_does_not_matter():
    picks = selection_picks(NO_DECAY_TRUTH)
    assert picks.count("parametric") >= 9, picks


@pytest.fixture(scope="module")
def fit_file(known_truth_fit, tmp_path_factory):
    path = tmp_path_factory.mktemp("dc") / "fit.json"
    write_fit(known_truth_fit[1], path)
    return path


def test_predict_a_run_with_its_unique_tokens(fit_file, capsys):
    n, d, u = 2e9, 2e11, 5e9
    args = ["predict", "--fit", str(fit_file), "--objective", "clm", "--n-params", str(n), "--tokens", str(d)]
    assert cli_main(args + ["--unique-tokens", str(u), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert set(result) == {"law", "loss", "loss_ci", "families"}
    assert result["law"] == "data_constrained"
    row = result["families"]["data_constrained"]
    assert result["loss"] == row["loss"] and row["identified"] is True
    low, high = row["loss_ci"]
    assert low <= float(dc.loss(PAPER_TRUTH, n, d, u)) <= high
    # The family models repetition: no note says none does.
    assert "no fitted family models repetition" not in captured.err
    assert cli_main(args + ["--json"]) == 0
    unlimited = json.loads(capsys.readouterr().out)
    assert unlimited["loss"] < result["loss"]  # the same run on unique data
    assert unlimited["families"]["parametric"] == result["families"]["parametric"]  # it does not read U
    assert cli_main(args + ["--unique-tokens", str(u)]) == 0
    text = capsys.readouterr().out
    assert "selected law: data_constrained" in text and "of U = 5e+09 unique" in text


def test_predict_says_no_family_models_repetition_only_without_the_family(tmp_path, capsys):
    rng = np.random.default_rng(3)
    runs = isoflop_runs(random_law(rng), rng)
    path = tmp_path / "fit.json"
    write_fit(fit_all(runs, None, fit_settings(bootstrap=20, law_families=FAMILIES)), path)
    assert cli_main(["predict", "--fit", str(path), "--objective", "clm", "--n-params", "1e9", "--tokens", "4e10",
                     "--unique-tokens", "1e10"]) == 0
    text = capsys.readouterr().out
    assert "no fitted family models repetition" in text and "data_constrained" in text


def test_fit_json_refuses_an_edited_decay_constant(known_truth_fit):
    fit = json.loads(json.dumps(known_truth_fit[1], default=float))
    fit["objectives"]["clm"]["data_constrained"]["r_star_n"] = -1.0
    with pytest.raises(PlmscaleError, match=r"objectives\.clm\.data_constrained\.r_star_n must be > 0"):
        parse_fit(fit)


def scatter_runs(truth, rng, n_runs=80, noise=0.005, unique_tokens=None):
    """Runs at random (N, D), no budget column: no IsoFLOP grid to bin them into."""
    n = np.exp(rng.uniform(np.log(1e6), np.log(3e9), n_runs))
    d = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n_runs))
    runs = pd.DataFrame({"run_id": [f"scatter_{i}" for i in range(n_runs)], "objective": "clm", "n_params": n,
                         "tokens": d, "flops": 6 * n * d,
                         "loss": dc.loss(truth, n, d, unique_tokens) * np.exp(rng.normal(0, noise, n_runs))})
    if unique_tokens is not None:
        runs["unique_tokens"] = unique_tokens
    return runs


def test_plmscale_fit_takes_a_scatter_of_runs(tmp_path, capsys):
    """A table that is no IsoFLOP grid: the IsoFLOP method says it does not apply instead of binning the runs
    into budgets (before: the fit refused the table), and the Chinchilla form fits it."""
    path = tmp_path / "runs.csv"
    scatter_runs(NO_DECAY_TRUTH, np.random.default_rng(5)).to_csv(path, index=False)
    assert cli_main(["fit", str(path), "--out", str(tmp_path), "--bootstrap", "40"]) == 0
    capsys.readouterr()
    entry = json.loads((tmp_path / "fit.json").read_text())["objectives"]["clm"]
    (reason,) = entry["isoflop"]["reasons"]
    assert "does not apply: the runs are a scatter of N and D, not an IsoFLOP grid" in reason
    assert "80 runs" in reason and "Add a budget column" in reason
    parametric_entry = entry["parametric"]
    assert parametric_entry["identified"] is True, parametric_entry["reasons"]
    for name in ("alpha", "beta"):
        low, high = parametric_entry[f"{name}_ci"]
        assert low <= NO_DECAY_TRUTH[name] <= high
    # No IsoFLOP budget to hold out: the rollout holds out the top fifth of the runs by compute instead.
    rollout = entry["backtest"]["parametric"]["rollout"]
    assert rollout["held_out"].startswith("the top 20% of the scatter's runs by compute (16 runs")
    assert rollout["loss_consistent"] is True and entry["selected_law"] == "parametric"


def test_the_data_constrained_law_fits_a_scatter_with_unique_tokens():
    runs = scatter_runs(PAPER_TRUTH, np.random.default_rng(6), unique_tokens=2e9)
    entry = fit_all(runs, None, fit_settings(bootstrap=40, law_families=FAMILIES))["objectives"]["clm"]
    assert entry["isoflop"]["identified"] is False and "scatter" in entry["isoflop"]["reasons"][0]
    constrained = entry["data_constrained"]
    assert constrained["identified"] is True, constrained["reasons"]
    assert constrained["n_repeated_runs"] == int((runs["tokens"] > 2e9).sum())
    low, high = constrained["r_star_d_ci"]
    assert low <= PAPER_TRUTH["r_star_d"] <= high


def test_the_verdict_refuses_a_chinchilla_constant_at_its_bound_and_notes_an_unconstrained_decay(known_truth_fit):
    from plmscale.scaling.identify import identify_data_constrained

    entry = json.loads(json.dumps(known_truth_fit[1]["objectives"]["clm"]["data_constrained"], default=float))
    entry["n_excess_param_runs"] = 0
    entry["theta"][5] = dc.R_STAR_BOUNDS[1]
    verdict = identify_data_constrained(entry)
    assert verdict["identified"] is True  # what R* cannot be told from the runs is a note, not a refusal
    assert any(note.startswith("R*_N = ") and "is not constrained: no run has more parameters" in note
               for note in verdict["notes"])
    assert any(note.startswith("R*_D sits at its upper bound") for note in verdict["notes"])
    entry["theta"][3] = parametric.BOUNDS[3][1]  # α at the optimiser's upper bound
    verdict = identify_data_constrained(entry)
    assert verdict["identified"] is False
    assert "alpha" in verdict["reasons"][0] and "upper bound" in verdict["reasons"][0]


def test_the_multistart_reaches_the_minimum_that_the_true_constants_lead_to():
    """The known-truth draw whose rollout keeps the Chinchilla form (random constants, R*_D = 5, R*_N = 3, seed
    106; docs/laws.md): no start or basin is missed. The fit below the top budget reaches the objective that
    L-BFGS-B reaches from the true constants, lower than the truth's own: the noise, not the optimiser, puts R*_D
    at its bound there."""
    rng = np.random.default_rng(106)
    truth = {**random_law(rng), "r_star_d": 5.0, "r_star_n": 3.0}
    runs = data_constrained_runs(truth, rng)
    below = runs[runs["budget"] < runs["budget"].max()]
    n, d, u, loss = (below[c].to_numpy(float) for c in ("n_params", "tokens", "unique_tokens", "loss"))
    fit = dc.fit_data_constrained(n, d, u, loss)
    design, weights = dc._Design(n, d, u, loss), np.ones(len(n))
    true_theta = [np.log(truth["E"]), np.log(truth["A"]), np.log(truth["B"]), truth["alpha"], truth["beta"],
                  np.log(5.0), np.log(3.0)]
    _, from_truth, _ = dc._refine(true_theta, design, weights)
    at_truth, _ = dc._objective(np.array(true_theta), design, weights)
    assert fit["objective"] / parametric.HUBER_DELTA <= from_truth * (1 + 1e-9) < at_truth
    assert fit["r_star_d"] == pytest.approx(1e4)  # at its bound: repeats worth new tokens, the runs allow it
