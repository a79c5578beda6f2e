"""fit.json's verdicts and backtests reach predict and the plots: nothing from an unidentified fit is shown.

Degenerate tables (flat losses, losses that fall monotonically with N, a single budget, a parametric
law pushed to its bounds) go through fit_all; every method they leave unidentified must give null
predictions with its reasons, and draw no line, band or contour. A synthetic table from known constants
must backtest to within 1% (fit.json's rollout), and the plots' axes stay near the data and the targets.
"""

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PolyCollection

from plmscale.cli import main as cli_main
from plmscale import plots
from plmscale.plots import backtest, common
from plmscale.scaling.fit import fit_all
from plmscale.scaling.fitfile import METHODS, parse_fit
from plmscale.scaling.predict import predict
from plmscale.scaling.predict import predict_budgets
from scaling_synthetic import BUDGETS, fit_settings, isoflop_runs, loss_of, random_law, true_n_opt

N_BOOT = 60
TARGET = 1e22


@pytest.fixture(autouse=True)
def png_only(monkeypatch):
    monkeypatch.setattr(common, "FORMATS", ("png",))
    yield
    plt.close("all")


def _flat(rng):
    runs = isoflop_runs(random_law(rng), rng, noise=0.005)
    runs["loss"] = 2.0 * np.exp(rng.normal(0, 0.005, len(runs)))
    return runs


def _monotone(rng):
    runs = isoflop_runs(random_law(rng), rng, noise=0.005)
    runs["loss"] = 3.0 * runs["n_params"] ** -0.05 * np.exp(rng.normal(0, 0.001, len(runs)))
    return runs


def _one_budget(rng):
    return isoflop_runs(random_law(rng), rng, noise=0.005, budgets=[1e19])


def _at_bound(rng):
    law = random_law(rng)
    runs = isoflop_runs(law, rng, noise=0.0)
    runs["loss"] = law["E"] + law["A"] / runs["n_params"] ** law["alpha"]  # no data term: beta runs to its bound
    return runs


DEGENERATE = {"flat": (_flat, ["isoflop", "parametric"]), "monotone": (_monotone, ["isoflop"]),
              "one budget": (_one_budget, ["isoflop"]), "parametric at a bound": (_at_bound, ["parametric"])}


@pytest.fixture(scope="module", params=list(DEGENERATE))
def degenerate(request):
    make, expected = DEGENERATE[request.param]
    runs = make(np.random.default_rng(5))
    fit = json.loads(json.dumps(fit_all(runs, None, fit_settings(bootstrap=N_BOOT, seed=0, predict_flops={"clm": [TARGET]}))))
    return request.param, expected, runs, fit


def unidentified(fit, objective="clm"):
    return [m for m in METHODS if fit["objectives"][objective][m].get("identified") is False]


def test_degenerate_tables_are_judged_not_identified(degenerate):
    name, expected, _, fit = degenerate
    methods = fit["objectives"]["clm"]
    for method in METHODS:
        assert isinstance(methods[method]["identified"], bool), (name, method)
    for method in expected:
        assert methods[method]["identified"] is False, (name, method)
        assert methods[method]["reasons"], (name, method)
    # the backtest covers only identified methods; the others say why they were not backtested
    for method in ("isoflop", "parametric"):
        result = methods["backtest"][method]
        if method in expected:
            assert result["skipped"].startswith("not identified"), (name, method, result)


def test_predict_gives_nulls_and_reasons_for_unidentified(degenerate, tmp_path, capsys):
    name, _, _, fit = degenerate
    result = predict(fit, TARGET, "clm")
    for method in unidentified(fit):
        values = result["methods"][method]
        assert values == {"n_opt": None, "d_opt": None, "loss": None, "n_opt_ci": None, "d_opt_ci": None}, name
        note = result["details"][method]["note"]
        entry = fit["objectives"]["clm"][method]
        if "error" in entry:  # not fitted at all: identify's short form of the error says why
            assert note == (first if (first := entry["reasons"][0]).startswith("not fitted") else f"not fitted: {first}")
        else:
            assert note == f"not identified: {entry['reasons'][0]}", (name, method, note)
    saved = predict_budgets(fit, {"clm": [TARGET]})["clm"][0]
    for method in unidentified(fit):
        assert saved["methods"][method]["n_opt"] is None and saved["details"][method]["note"]
    # the CLI: --json keeps its shape (nulls), the reasons go to stderr; the text output names them
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    assert cli_main(["predict", "--fit", str(tmp_path / "fit.json"), "--flops", str(TARGET), "--objective", "clm",
                     "--json"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert set(printed) == {"objective", "flops", "methods", "selected_law"}
    chosen = printed["selected_law"]  # no law selected here: the parametric fallback, with its own verdict
    if "parametric" in unidentified(fit) and not chosen["named_by_fit"]:
        assert chosen["family"] == "parametric" and chosen["not_usable"].startswith(("not identified", "not fitted"))
    for method in unidentified(fit):
        assert printed["methods"][method]["n_opt"] is None
        assert f"note: {method}: not " in captured.err
    assert cli_main(["predict", "--fit", str(tmp_path / "fit.json"), "--flops", str(TARGET), "--objective",
                     "clm"]) == 0
    text = capsys.readouterr().out
    for method in unidentified(fit):
        assert any(line.strip().startswith(f"{method}") and "no prediction: not " in line for line in text.splitlines())


def _drawn_labels(ax):
    return [line.get_label() for line in ax.get_lines()]


def test_plots_draw_nothing_from_unidentified(degenerate, tmp_path):
    name, _, runs, fit = degenerate
    hidden = unidentified(fit)
    display = {m: common.METHOD_STYLES[m][1] for m in METHODS}
    iso_hidden = "isoflop" in hidden

    fig = plots.plot_optimal_allocation(fit, tmp_path / "alloc.png")
    for ax in fig.axes:
        for method in hidden:
            assert not any(label.startswith(f"CLM {display[method]}:") for label in _drawn_labels(ax)), (name, method)
        if len(hidden) == len(METHODS):  # no law at all: no extrapolated part either
            assert not any(isinstance(c, LineCollection) for c in ax.collections)
        if iso_hidden:
            assert not any(isinstance(c, PolyCollection) for c in ax.collections), name  # no IsoFLOP band
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    for method in hidden:
        assert any(text.startswith(f"CLM {display[method]}: not") for text in legend), (name, legend)

    if "parametric" in hidden:
        fig = plots.plot_parametric(fit, "clm", tmp_path / "param.png", runs=runs)
        assert len(fig.axes) == 1  # no colorbar: no contours
        ax = fig.axes[0]
        assert not ax.get_lines() and not any(hasattr(c, "levels") for c in ax.collections)
        assert any("not identified" in t.get_text() for t in ax.texts)

    fig = plots.plot_isoflop(fit, runs, "clm", tmp_path / "iso.png")
    title = fig.axes[0].get_title()
    if iso_hidden:
        assert "N_opt ∝" not in title and ("not identified" in title or "not fitted" in title), title
        # per-budget parabolas stay as a faded, dashed diagnostic; no optimum is marked
        assert all(line.get_linestyle() == "--" for line in fig.axes[0].get_lines())
        assert not any(len(c.get_sizes()) and c.get_sizes()[0] == 160 for c in fig.axes[0].collections)

    fig = plots.plot_loss_frontier(fit, tmp_path / "frontier.png")
    assert not any("L(C)" in label for label in _drawn_labels(fig.axes[0]))  # no curves: envelope not fitted

    fig = plots.plot_backtest(fit, tmp_path / "backtest.png")
    slots = [(o, m) for o in ("clm",) for m in backtest.BACKTESTED_METHODS]
    for ax in fig.axes:
        for x, (_, method) in enumerate(slots):
            if method in hidden:
                # points are one-point lines, intervals error bars and vertical ranges (line collections)
                points = [line for line in ax.get_lines()
                          if len(line.get_xdata()) == 1 and abs(float(line.get_xdata()[0]) - x) < 0.3]
                ranges = [seg for c in ax.collections if isinstance(c, LineCollection) for seg in c.get_segments()
                          if len(seg) and abs(float(seg[0][0]) - x) < 0.3]
                assert not points and not ranges, (name, method)
                assert any("not identified" in t.get_text() or "not fitted" in t.get_text() for t in ax.texts)


# ------------------------------------------------------------------------- a table from known constants

@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(1)  # the table test_scaling_backtest.py backtests directly
    law = random_law(rng)
    runs, curves = isoflop_runs(law, rng, noise=0.005, with_curves=True)
    fit = fit_all(runs, curves, fit_settings(bootstrap=200, seed=0, predict_flops={"clm": [TARGET]}))
    return law, runs, curves, json.loads(json.dumps(fit))


def test_fit_json_backtest_rollout_within_one_percent(synthetic):
    law, _, _, fit = synthetic
    clm = fit["objectives"]["clm"]
    for method in ("isoflop", "envelope", "parametric"):
        assert clm[method]["identified"], (method, clm[method]["reasons"])
    top = BUDGETS[-1]
    n_true = true_n_opt(law, top)
    loss_true = loss_of(law, n_true, top / (6 * n_true))
    for method in ("isoflop", "parametric"):
        rollout = clm["backtest"][method]["rollout"]
        assert rollout["held_out_budget"] == top
        assert abs(rollout["loss_error_pct"]) < 1.0, (method, rollout["loss_error_pct"])
        assert rollout["forecast"]["loss"] == pytest.approx(loss_true, rel=0.01)
        low, high = rollout["forecast"]["n_opt_ci"]
        assert low <= n_true <= high, method
        lobo = clm["backtest"][method]["leave_one_budget_out"]
        assert lobo["targets"] == [TARGET] and lobo["sensitivity"][0]["n_opt_ratio"] >= 1
    assert fit["settings"]["predict_flops"] == {"clm": [TARGET], "mlm": []}  # the schema fills the section


def test_fit_json_loss_law_saturates(synthetic):
    """The IsoFLOP loss law in fit.json has a floor: its loss forecast at 10x the top budget is close to
    the true compute-optimal loss, where a pure power law through the same optima undershoots."""
    law, _, _, fit = synthetic
    iso = fit["objectives"]["clm"]["isoflop"]
    assert iso["loss_floor"] > 0 and "loss_floor" in iso["bootstrap"]["draws"]
    n_true = true_n_opt(law, TARGET)
    loss_true = loss_of(law, n_true, TARGET / (6 * n_true))
    forecast = predict(fit, TARGET, "clm")
    assert forecast["methods"]["isoflop"]["loss"] == pytest.approx(loss_true, rel=0.01)
    low, high = forecast["details"]["isoflop"]["loss_ci"]
    assert low < forecast["methods"]["isoflop"]["loss"] < high
    kept = [o for o in iso["optima"] if o["kept"]]
    slope, intercept = np.polyfit(np.log([o["budget"] for o in kept]), np.log([o["loss_opt"] for o in kept]), 1)
    assert np.exp(intercept) * TARGET ** slope < 0.99 * loss_true  # the law fit.json used to write


def test_file_without_verdicts_still_predicts(synthetic):
    """fit.json written before identification (no identified/reasons/loss_floor) reads as not judged."""
    _, _, _, fit = synthetic
    old = json.loads(json.dumps(fit))
    for objective in old["objectives"].values():
        objective.pop("backtest")
        for method in METHODS:
            for key in ("identified", "reasons", "notes", "loss_floor"):
                objective[method].pop(key, None)
            objective[method].get("bootstrap", {}).get("draws", {}).pop("loss_floor", None)
    assert parse_fit(old).method("clm", "isoflop").identified is None
    result = predict(old, TARGET, "clm")
    assert all(result["methods"][m]["n_opt"] > 0 for m in METHODS)


def test_a_verdict_without_reasons_is_refused(synthetic):
    from plmscale.errors import PlmscaleError
    _, _, _, fit = synthetic
    edited = json.loads(json.dumps(fit))
    edited["objectives"]["clm"]["isoflop"].update({"identified": False, "reasons": []})
    with pytest.raises(PlmscaleError, match="reasons"):
        parse_fit(edited)
    edited["objectives"]["clm"]["isoflop"]["identified"] = "no"
    with pytest.raises(PlmscaleError, match="identified"):
        parse_fit(edited)


def test_axes_stay_near_the_data_and_the_targets(synthetic, tmp_path):
    """Data 1e18-1e21 and a target at 1e22: no axis out to 1e23 or beyond; an unidentified law with absurd
    constants (N_opt of 0.1 parameters at the target) neither draws nor stretches the size axis."""
    _, _, _, fit = synthetic
    edited = json.loads(json.dumps(fit))
    parametric = edited["objectives"]["clm"]["parametric"]
    parametric.update({"identified": False, "reasons": ["E sits at the optimiser's lower bound"]})
    parametric.update({"A": 1e-6, "alpha": 0.01})  # allocation exponents run wild
    marks = plots.predictions_for_plot(predict_budgets(edited, {"clm": [TARGET]}))
    fig = plots.plot_optimal_allocation(edited, tmp_path / "alloc.png", predictions=marks)
    optima = [o for o in fit["objectives"]["clm"]["isoflop"]["optima"] if o["kept"]]
    predicted_n = marks["clm"]["n"][0][1]
    low, high = fig.axes[0].get_xlim()
    assert BUDGETS[0] / 3.01 <= low and high <= TARGET * 3.01
    n_low, n_high = fig.axes[0].get_ylim()
    assert n_low >= min(o["n_opt"] for o in optima) / 100 and n_high <= predicted_n * 100
    d_low, d_high = fig.axes[1].get_ylim()
    assert d_low >= min(o["d_opt"] for o in optima) / 100 and d_high <= marks["clm"]["d"][0][1] * 100
    assert not any(label.startswith("CLM parametric: a=") for label in _drawn_labels(fig.axes[0]))
    # extrapolation is marked: the IsoFLOP law beyond its budgets is a dashed collection, inside a line
    kept = [o["budget"] for o in optima]
    dashed = [seg[:, 0] for c in fig.axes[0].collections if isinstance(c, LineCollection) for seg in c.get_segments()]
    assert dashed
    for xs in dashed:  # outside the fitted budgets but for the one point that joins the solid part
        assert ((xs > min(kept) * 1.001) & (xs < max(kept) * 0.999)).sum() <= 1
    solid = next(line for line in fig.axes[0].get_lines() if line.get_label().startswith("CLM IsoFLOP"))
    assert min(solid.get_xdata()) >= min(kept) * 0.999 and max(solid.get_xdata()) <= max(kept) * 1.001


def test_backtest_plot_shows_forecast_and_observed(synthetic, tmp_path):
    _, _, _, fit = synthetic
    fig = plots.plot_backtest(fit, tmp_path / "backtest.png")
    assert (tmp_path / "backtest.png").stat().st_size > 10_000
    loss_ax, n_ax, lobo_ax = fig.axes
    rollout = fit["objectives"]["clm"]["backtest"]["isoflop"]["rollout"]
    # per identified method: an observed square at 0 and the forecast at its error, each with an error bar
    points = {round(float(bar.lines[0].get_xdata()[0]), 2): float(bar.lines[0].get_ydata()[0])
              for bar in loss_ax.containers}
    assert points[-0.12] == 0.0 and points[0.12] == pytest.approx(rollout["loss_error_pct"])
    assert len(loss_ax.containers) == len(n_ax.containers) == 4  # isoflop and parametric, observed and forecast
    assert lobo_ax.collections  # the leave-one-out ranges


def test_drop_highest_loss_is_reported_and_leaves_the_outlier_out():
    rng = np.random.default_rng(2)
    law = random_law(rng)
    runs = isoflop_runs(law, rng, noise=0.005)
    spoiled = runs.copy()
    worst = spoiled["n_params"].idxmax()
    spoiled.loc[worst, "loss"] = spoiled["loss"].max() * 1.2  # a diverged run at the largest budget
    kept = fit_all(spoiled, None, fit_settings(bootstrap=0, backtest=False))["objectives"]["clm"]["parametric"]
    fit = fit_all(spoiled, None, fit_settings(bootstrap=0, backtest=False, parametric={"drop_highest_loss": 1}))
    dropped = fit["objectives"]["clm"]["parametric"]
    assert fit["settings"]["parametric_drop_highest_loss"] == 1 and dropped["drop_highest_loss"] == 1
    assert [run["run_id"] for run in dropped["dropped_runs"]] == [spoiled.loc[worst, "run_id"]]
    assert dropped["n_runs"] == len(runs) - 1 and kept["dropped_runs"] == []
    # the same fit as on a table without that run (the Huber loss alone only damps the outlier)
    without = fit_all(spoiled.drop(index=worst), None, fit_settings(bootstrap=0, backtest=False))["objectives"]["clm"]["parametric"]
    for key in ("E", "A", "B", "alpha", "beta"):
        assert dropped[key] == pytest.approx(without[key], rel=1e-9), key
    assert kept["objective"] > dropped["objective"]


def test_fit_cli_reads_the_config_and_prints_rollouts(tmp_path, capsys, synthetic):
    _, runs, _, _ = synthetic
    runs.to_csv(tmp_path / "runs.csv", index=False)
    config = tmp_path / "config.yaml"
    config.write_text("fit:\n  bootstrap: 30\n  predict_flops: {clm: [1.0e+22]}\n"
                      "  identify: {max_exponent_ci_width: 0.000001}\n  parametric: {drop_highest_loss: 2}\n")
    assert cli_main(["fit", str(tmp_path / "runs.csv"), "--config", str(config), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["settings"]["bootstrap"] == 30 and fit["settings"]["identify"]["max_exponent_ci_width"] == 1e-6
    assert len(fit["objectives"]["clm"]["parametric"]["dropped_runs"]) == 2
    # an absurdly strict width: nothing is identified, nothing is backtested, nothing is predicted
    for method in ("isoflop", "parametric"):
        assert not fit["objectives"]["clm"][method]["identified"]
        assert any(line.startswith(f"rollout clm  {method}") and "not identified" in line
                   for line in printed.splitlines()), printed
    assert "NO: 95% interval of exponent a" in printed
    result = predict(fit, 1e22, "clm")
    assert all(values["n_opt"] is None for values in result["methods"].values())
    bad = tmp_path / "bad.yaml"
    bad.write_text("fit:\n  identify: {max_width: 0.2}\n")
    assert cli_main(["fit", str(tmp_path / "runs.csv"), "--config", str(bad), "--out", str(tmp_path)]) == 2
    assert "max_width" in capsys.readouterr().err


def test_an_objective_outside_the_grid_says_so_first(tmp_path):
    """The demo's MLM (one run from scratch, no IsoFLOP grid): fit.json must say it is not in the grid, not
    only that a fit failed; CLM, in the grid, is judged on its own. `plmscale fit --config` says the same
    as the workflow's fit rule."""
    rng = np.random.default_rng(4)
    clm = isoflop_runs(random_law(rng), rng, noise=0.005)
    mlm = clm.iloc[:1].assign(objective="mlm", run_id="mlm_one")
    runs = pd.concat([clm, mlm], ignore_index=True)
    runs.to_csv(tmp_path / "runs.csv", index=False)
    config = tmp_path / "config.yaml"
    config.write_text("train:\n  objectives: [clm]\nfit:\n  bootstrap: 0\n  backtest: false\n")
    assert cli_main(["fit", str(tmp_path / "runs.csv"), "--config", str(config), "--out", str(tmp_path)]) == 0
    from_cli = json.loads((tmp_path / "fit.json").read_text())["objectives"]
    for fit in (fit_all(runs, None, fit_settings(["clm"], bootstrap=0, backtest=False))["objectives"], from_cli):
        assert fit["mlm"]["in_isoflop_grid"] is False and "in_isoflop_grid" not in fit["clm"]
        for method in ("isoflop", "parametric"):
            reasons = fit["mlm"][method]["reasons"]
            assert fit["mlm"][method]["identified"] is False
            assert reasons[0].startswith("mlm is not in the IsoFLOP grid (train.objectives is ['clm'])")
            assert len(reasons) >= 2  # the fit's own reason is kept after it
        assert not any("not in the IsoFLOP grid" in r for m in METHODS for r in fit["clm"][m].get("reasons", []))
    # The backtest plot gives such an objective one column with the shared reason, not one per method.
    fig = plots.plot_backtest(fit_all(runs, None, fit_settings(["clm"], bootstrap=0, backtest=False)),
                              tmp_path / "backtest.png")
    ticks = [label.get_text() for label in fig.axes[0].get_xticklabels()]
    assert [t for t in ticks if t.startswith("MLM")] == ["MLM\nall methods"]
    assert any("mlm is not in the IsoFLOP grid" in " ".join(t.get_text().split()) for t in fig.axes[0].texts)
