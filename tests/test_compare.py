"""CLM against MLM from a study's own fits (issue 24 §2): the exponents' difference with its interval, the
optima compared at a budget both grids reach, and an honest sentence about the paper's ordering."""

import numpy as np
import pandas as pd
import pytest

from plmscale.scaling.compare import compare_objectives, comparison_lines, ordering_sentence
from plmscale.scaling.fit import fit_all
from plmscale.scaling.published import PUBLISHED
from scaling_synthetic import fit_settings, isoflop_runs, true_n_opt

# a = beta / (alpha + beta): CLM 0.45, MLM 0.70
CLM_LAW = {"E": 1.9, "A": 400.0, "B": 2000.0, "alpha": 0.33, "beta": 0.27}
MLM_LAW = {"E": 2.0, "A": 60.0, "B": 30000.0, "alpha": 0.18, "beta": 0.42}


def _fit(*objective_laws, seed=3):
    rng = np.random.default_rng(seed)
    runs = pd.concat([isoflop_runs(law, rng, noise=0.004, objective=o) for o, law in objective_laws],
                     ignore_index=True)
    return fit_all(runs, None, fit_settings(bootstrap=100, backtest=False))


def test_a_study_with_both_grids_gives_the_difference_and_the_optima_with_intervals():
    fit = _fit(("clm", CLM_LAW), ("mlm", MLM_LAW))
    comparison = fit["comparison"]
    assert comparison["available"], comparison
    true_difference = (MLM_LAW["beta"] / (MLM_LAW["alpha"] + MLM_LAW["beta"])
                       - CLM_LAW["beta"] / (CLM_LAW["alpha"] + CLM_LAW["beta"]))
    low, high = comparison["a_difference_ci"]
    assert low < true_difference < high and low > 0
    assert comparison["a_difference"] == pytest.approx(comparison["a_mlm"] - comparison["a_clm"])
    budget = comparison["budget"]
    assert budget == pytest.approx(1e21)
    true_ratio = true_n_opt(MLM_LAW, budget) / true_n_opt(CLM_LAW, budget)
    assert comparison["n_opt_ratio"] == pytest.approx(true_ratio, rel=0.25)
    assert comparison["n_opt_ratio_ci"][0] < comparison["n_opt_ratio"] < comparison["n_opt_ratio_ci"][1]
    # N·D = C / 6 for both: the D ratio is the inverse of the N ratio
    assert comparison["d_opt_ratio"] == pytest.approx(1 / comparison["n_opt_ratio"], rel=1e-6)
    assert "reproduces the paper's ordering" in comparison["sentence"]
    lines = comparison_lines(comparison)
    assert lines[0].startswith("CLM vs MLM: a_MLM − a_CLM = +") and "FLOPs: MLM's N_opt is" in lines[1]


def test_without_an_identified_mlm_fit_the_comparison_says_why():
    fit = _fit(("clm", CLM_LAW))
    comparison = fit["comparison"]
    assert comparison == {"method": "isoflop", "available": False, "reasons": ["no mlm runs in the table"]}
    assert comparison_lines(comparison) == ["CLM vs MLM: not compared: no mlm runs in the table"]
    objectives = {"clm": {"isoflop": {"identified": True}},
                  "mlm": {"isoflop": {"identified": False, "reasons": ["only 1 of 4 budgets bracketed"]}}}
    assert compare_objectives(objectives, PUBLISHED)["reasons"] == [
        "the mlm isoflop fit is not identified: only 1 of 4 budgets bracketed"]


@pytest.mark.parametrize("ci, verdict", [([0.05, 0.3], "reproduces the paper's ordering"),
                                         ([-0.3, -0.05], "reverses the paper's ordering"),
                                         ([-0.1, 0.3], "cannot tell the two exponents apart")])
def test_the_sentence_is_honest_either_way(ci, verdict):
    sentence = ordering_sentence(sum(ci) / 2, ci, PUBLISHED)
    assert verdict in sentence and "the paper's a_MLM − a_CLM is +0.198" in sentence
