"""fit.json's selected law downstream: the figures, the closed loop and the planner's prior use the law family
fit.json selected (here Farseer's, the Chinchilla form refused by its backtest), and keep the parametric law
where it is the one selected."""

import copy

import numpy as np
import pandas as pd
import pytest

from plmscale.design import planner
from plmscale.plots.allocation import plot_optimal_allocation
from plmscale.plots.closed_loop import plot_closed_loop
from plmscale.plots.parametric import plot_parametric
from plmscale.scaling import closed_loop as cl
from plmscale.scaling import farseer
from plmscale.scaling.selected_law import selected_law
from test_closed_loop import BUDGETS, _trained, demo_config, hand_made_fit
from test_laws import FARSEER_TRUTH

THETA = [FARSEER_TRUTH[k] for k in farseer.PARAM_NAMES]
WHY = "RMS error on the held-out top budget's runs among the identified families: farseer 0.39%"


def farseer_selected_fit():
    """hand_made_fit's laws with a Farseer law (known constants, bootstrap rows around them) that fit.json
    selected, the parametric law refused by its rollout."""
    fit = hand_made_fit(isoflop_identified=True, parametric_identified=False)
    rng = np.random.default_rng(1)
    thetas = np.array(THETA) + 0.01 * rng.standard_normal((60, len(THETA)))
    a = float(farseer.allocation_exponent(THETA, BUDGETS[-1]))
    clm = fit["objectives"]["clm"]
    clm["parametric"]["reasons"] = ["not identified for forecasting: its rollout backtest is biased"]
    clm["farseer"] = {"theta": THETA, "flops_per_param_token": 6.0, "a": a, "b": 1 - a, "identified": True,
                      "reasons": [], "bootstrap": {"n": 60, "thetas": thetas.tolist()}}
    clm["selected_law"] = "farseer"
    clm["law_selection"] = {"why": WHY, "families": {}}
    return fit


def test_the_selected_family_is_read_and_a_file_without_one_falls_back_to_parametric():
    law = selected_law(farseer_selected_fit(), "clm")
    assert (law.family, law.named_by_fit, law.usable, law.label) == ("farseer", True, True, "farseer (selected law)")
    n, d, loss = farseer.optimal_allocation(THETA, 1e13)
    forecast = law.forecast(1e13)
    assert forecast["n_opt"] == pytest.approx(n) and forecast["loss"] == pytest.approx(loss)
    assert forecast["n_opt_ci"][0] <= n <= forecast["n_opt_ci"][1]
    older = hand_made_fit()
    fallback = selected_law(older, "clm")
    assert (fallback.family, fallback.named_by_fit) == ("parametric", False)
    assert "the parametric law is used" in fallback.why


def test_the_closed_loop_sizes_and_scores_with_the_selected_law():
    fit = farseer_selected_fit()
    config = demo_config(methods=["parametric"])
    plan = cl.plan_closed_loop(config, fit, "clm", 3)
    n_true, _, _ = farseer.optimal_allocation(THETA, 3 * BUDGETS[-1])
    assert plan["method"] == "farseer" and plan["n_opt"] == pytest.approx(n_true, rel=1e-6)
    assert plan["spec"] is not None
    observed = 2.0
    record = cl.score_run(fit, plan, _trained(plan, observed))
    assert record["selected_law"] == "farseer" and record["forecast_method"] == "farseer"
    entry = record["methods"]["farseer"]
    expected = float(farseer.loss(THETA, record["n_params"], record["tokens"]))
    assert entry["loss"] == pytest.approx(expected) and entry["identified"] is True
    assert entry["error_pct"] == pytest.approx(100 * (observed - expected) / expected)
    assert entry["selected_because"] == WHY
    # the parametric law is still scored, marked as refused
    assert record["methods"]["parametric"]["identified"] is False


def test_a_fit_that_selected_the_parametric_law_scores_as_before():
    fit = hand_made_fit(isoflop_identified=True, parametric_identified=True)
    selected = copy.deepcopy(fit)
    selected["objectives"]["clm"].update(selected_law="parametric", law_selection={"why": "parametric 0.9%"})
    config = demo_config(methods=["parametric"])
    plans = [cl.plan_closed_loop(config, f, "clm", 3) for f in (fit, selected)]
    assert plans[0] == plans[1] and plans[0]["method"] == "parametric"
    records = [cl.score_run(f, plans[0], _trained(plans[0], 2.0)) for f in (fit, selected)]
    assert records[0] == records[1] and "selected_law" not in records[0]
    assert set(records[0]["methods"]) == {"isoflop", "envelope", "parametric"}


def test_the_closed_loop_figure_shows_the_selected_law(tmp_path):
    fit = farseer_selected_fit()
    plan = cl.plan_closed_loop(demo_config(methods=["parametric"]), fit, "clm", 3)
    record = cl.score_closed_loop(fit, [(plan, _trained(plan, 2.0))])
    figure = plot_closed_loop(record, tmp_path / "closed_loop.png")
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert "farseer (selected law)" in labels and "parametric (not identified)" in labels


def test_the_allocation_figure_draws_the_selected_law(tmp_path):
    figure = plot_optimal_allocation(farseer_selected_fit(), tmp_path / "allocation.png")
    ax = figure.axes[0]
    (line,) = [line for line in ax.get_lines() if "selected law" in line.get_label()]
    assert line.get_label().startswith("CLM farseer (selected law): a=")
    c, n = line.get_data()
    middle = len(c) // 2
    assert n[middle] == pytest.approx(farseer.optimal_allocation(THETA, c[middle])[0], rel=1e-6)
    # the parametric law, refused, draws nothing and the legend says why
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("CLM parametric: not identified") for t in texts)


def test_the_law_figure_draws_the_selected_family(tmp_path):
    runs = pd.DataFrame({"run_id": ["a", "b"], "objective": "clm", "n_params": [1e5, 1e6], "tokens": [1e6, 1e7],
                         "flops": [6e11, 6e13], "loss": [3.0, 2.5]})
    figure = plot_parametric(farseer_selected_fit(), "clm", tmp_path / "law.png", runs=runs)
    ax = figure.axes[0]
    assert ax.get_title().startswith("Selected law (farseer), CLM")
    (frontier,) = [line for line in ax.get_lines() if line.get_label().startswith("efficient frontier")]
    n, d = frontier.get_data()
    i = len(n) // 2
    n_opt, d_opt, _ = farseer.optimal_allocation(THETA, 6.0 * n[i] * d[i])
    assert n[i] == pytest.approx(n_opt, rel=1e-6) and d[i] == pytest.approx(d_opt, rel=1e-6)


def test_the_planner_prior_is_the_selected_law():
    prior = planner.prior_from_fit(farseer_selected_fit(), "clm", "fit.json")
    assert isinstance(prior, planner.FamilyPrior)
    assert "farseer" in prior.describe() and "selected" in prior.notes[0]
    assert prior.loss(3e6, 2e8) == pytest.approx(float(farseer.loss(THETA, 3e6, 2e8)))
    n_opt, loss = prior.optimum(1e13, 6.0)
    assert n_opt == pytest.approx(farseer.optimal_allocation(THETA, 1e13)[0])
    assert prior.a == pytest.approx(float(farseer.allocation_exponent(THETA, BUDGETS[-1])))
    # a fit.json that selected the parametric law (or none) keeps the parametric prior
    assert isinstance(planner.prior_from_fit(hand_made_fit(parametric_identified=True), "clm"), planner.PriorLaw)


def test_predict_at_a_budget_prints_the_selected_law_beside_the_methods(tmp_path, capsys):
    import json
    from plmscale.cli import main as cli_main
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(farseer_selected_fit()))
    flops = 3 * BUDGETS[-1]
    assert cli_main(["predict", "--fit", str(path), "--flops", str(flops), "--objective", "clm"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if "selected law:" in l)
    expected = selected_law(farseer_selected_fit(), "clm").forecast(flops)
    assert line.startswith("  selected law: farseer  N_opt") and WHY in line
    assert f"{expected['n_opt']:.3g}" in line
    assert cli_main(["predict", "--fit", str(path), "--flops", str(flops), "--objective", "clm", "--json"]) == 0
    chosen = json.loads(capsys.readouterr().out)["selected_law"]
    assert chosen["family"] == "farseer" and chosen["named_by_fit"] and chosen["n_opt"] == pytest.approx(
        expected["n_opt"])
