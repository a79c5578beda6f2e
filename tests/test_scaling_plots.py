"""Every figure is written (PNG, SVG, PDF), is not blank, and draws what it should."""

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection

from plmscale import plots
from plmscale.plots import common

E, A, B, ALPHA, BETA = 1.8, 400.0, 900.0, 0.34, 0.28
BUDGETS = [1e18, 1e19, 1e20]


def loss(n, d):
    return E + A / n ** ALPHA + B / d ** BETA


@pytest.fixture(scope="module")
def study():
    rng = np.random.default_rng(0)
    runs, curves, optima = [], [], []
    for objective in ("clm", "mlm"):
        for budget in BUDGETS:
            ids = []
            for n in np.logspace(math.log10(budget) / 2 - 4, math.log10(budget) / 2 - 1.5, 6):
                d = budget / (6 * n)
                run_id = f"{objective}_{n:.3g}_{budget:.0e}"
                ids.append(run_id)
                runs.append({"run_id": run_id, "objective": objective, "n_params": n, "tokens": d, "flops": budget,
                             "loss": loss(n, d) * (1 + 0.002 * rng.standard_normal()), "budget": budget,
                             "source": "own", "init_from": "", "kind": "", "pair": ""})
                steps = np.linspace(0.05, 1, 8)
                curves.append(pd.DataFrame({"run_id": run_id, "objective": objective, "n_params": n,
                                            "flops": budget * steps, "tokens": d * steps,
                                            "loss": loss(n, d * steps), "kind": ""}))
            table = pd.DataFrame([r for r in runs if r["run_id"] in ids])
            fit = np.polyfit(np.log(table["n_params"]), table["loss"], 2)
            vertex = -fit[1] / (2 * fit[0])
            optima.append({"objective": objective, "budget": budget, "run_ids": ids, "kept": budget != 1e18,
                           "n_opt": math.exp(vertex), "d_opt": budget / 6 / math.exp(vertex),
                           "loss_opt": float(np.polyval(fit, vertex)), "curvature": float(fit[0])})
    runs.append({"run_id": "t1", "objective": "mlm", "n_params": 1e8, "tokens": 1e9, "flops": 6e17, "loss": 2.5,
                 "budget": None, "source": "own", "init_from": "clm_x", "kind": "transfer", "pair": "t1"})
    runs.append({"run_id": "s1", "objective": "mlm", "n_params": 1e8, "tokens": 1e9, "flops": 6e17, "loss": 2.6,
                 "budget": None, "source": "own", "init_from": "", "kind": "scratch", "pair": "t1"})
    draws = {"k_n": list(0.1 * np.exp(0.1 * rng.standard_normal(50))), "a": list(0.5 + 0.01 * rng.standard_normal(50)),
             "k_d": list(1.6 * np.exp(0.1 * rng.standard_normal(50))), "b": list(0.5 + 0.01 * rng.standard_normal(50))}
    objectives = {}
    for objective in ("clm", "mlm"):
        objectives[objective] = {
            "isoflop": {"a": 0.5, "b": 0.5, "k_n": 0.1, "k_d": 1.6, "a_ci": [0.48, 0.52], "b_ci": [0.48, 0.52],
                        "optima": [o for o in optima if o["objective"] == objective],
                        "bootstrap": {"n": 50, "draws": draws}},
            "envelope": {"a": 0.55, "b": 0.45, "k_n": 0.05, "k_d": 3.0, "k_l": 12.0, "s": -0.05,
                         "points": [{"flops": c, "loss": 12.0 * c ** -0.05, "n_params": 1e7} for c in BUDGETS]},
            "parametric": {"E": E, "A": A, "B": B, "alpha": ALPHA, "beta": BETA,
                           "a": BETA / (ALPHA + BETA), "b": ALPHA / (ALPHA + BETA)},
        }
    return {"version": 1, "objectives": objectives}, pd.DataFrame(runs), pd.concat(curves, ignore_index=True)


def _check_files(path, min_kb=10):
    for suffix in (".png", ".svg", ".pdf"):
        target = path.with_suffix(suffix)
        assert target.exists(), target
        assert target.stat().st_size > min_kb * 1024 or suffix == ".pdf", target


def test_isoflop_plot(study, tmp_path):
    fit, runs, _ = study
    fig = plots.plot_isoflop(fit, runs, "clm", tmp_path / "isoflop_clm.png")
    _check_files(tmp_path / "isoflop_clm.png")
    ax = fig.axes[0]
    assert len(ax.get_lines()) == len(BUDGETS)  # one parabola per budget
    assert "0.500" in ax.get_title()


def test_optimal_allocation_plot(study, tmp_path):
    fit, _, _ = study
    fig = plots.plot_optimal_allocation(fit, tmp_path / "alloc.png",
                                        predictions={"clm": {"n": [(1e22, 1e10)], "d": [(1e22, 1e11)]}})
    _check_files(tmp_path / "alloc.png")
    assert len(fig.axes) == 2
    # per objective: 3 methods + the paper's line, on both panels
    assert all(len(ax.get_lines()) == 8 for ax in fig.axes)
    assert any("paper" in text.get_text() for text in fig.axes[0].get_legend().get_texts())
    assert len(fig.axes[0].collections) >= 2  # bootstrap bands


def test_optimal_allocation_draws_no_paper_line_for_an_objective_without_a_law(study, tmp_path):
    fit, _, _ = study
    fit = {**fit, "objectives": {**fit["objectives"],
                                 "mlm": {method: {"error": "only 1 of 3 IsoFLOP budgets bracketed"}
                                         for method in ("isoflop", "envelope", "parametric")}}}
    fig = plots.plot_optimal_allocation(fit, tmp_path / "alloc.png")
    for ax in fig.axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert any(label.startswith("CLM paper") for label in labels)
        assert not any(label.startswith("MLM") for label in labels), labels  # nothing drawn for MLM
    legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    # but it says why, once: every MLM method fails for the same reason
    assert [text for text in legend if text.startswith("MLM")] == [
        "MLM all methods: not fitted: only 1 of 3 IsoFLOP budgets\nbracketed"]


def _scatter_points(ax):
    """(C, value, hollow) of every scattered point of a panel."""
    points = []
    for collection in ax.collections:
        if isinstance(collection, PathCollection):
            faces = collection.get_facecolors()
            for i, (x, y) in enumerate(collection.get_offsets()):
                points.append((float(x), float(y), len(faces) == 0 or faces[i % len(faces)][3] == 0))
    return points


def _with_isoflop(fit, objective, **changes):
    entry = {**fit["objectives"][objective]["isoflop"], **changes}
    return {**fit, "objectives": {**fit["objectives"], objective: {**fit["objectives"][objective], "isoflop": entry}}}


def test_optimal_allocation_draws_uncounted_optima_hollow_and_says_why(study, tmp_path):
    fit, _, _ = study
    why = "curvature 0.001 ± 0.002 per (ln N)^2 (t = 0.5 < 2): the minimum is within the runs' scatter"
    fit = _with_isoflop(fit, "clm", identified=True, reasons=[], notes=[f"budget 1e+20 not counted: {why}"])
    fig = plots.plot_optimal_allocation(fit, tmp_path / "alloc.png")
    clm = {o["budget"]: o for o in fit["objectives"]["clm"]["isoflop"]["optima"]}
    for ax, what in zip(fig.axes, ("n_opt", "d_opt")):
        clm_points = [p for p in _scatter_points(ax) if any(p[1] == pytest.approx(o[what]) for o in clm.values())]
        # 1e18 is not kept (its vertex is not bracketed): not drawn at all; 1e19 counts; 1e20 does not.
        assert sorted(clm_points) == [(1e19, pytest.approx(clm[1e19][what]), False),
                                      (1e20, pytest.approx(clm[1e20][what]), True)]
    legend = " ".join(text.get_text().replace("\n", " ") for text in fig.axes[0].get_legend().get_texts())
    assert f"CLM optimum at $10^{{20}}$ FLOPs (hollow) not counted: {why}" in legend


def test_isoflop_plot_gives_an_uncounted_optimum_a_hollow_star_and_says_so(study, tmp_path):
    """The demo's 5e11 budget: kept (its vertex is inside the sizes) but not counted (curvature within the
    runs' scatter). Its star was drawn like a counted one; now it is hollow and the legend says why it differs."""
    fit, runs, _ = study
    why = "curvature 0.001 ± 0.002 per (ln N)^2 (t = 0.5 < 2): the minimum is within the runs' scatter"
    fit = _with_isoflop(fit, "clm", identified=True, reasons=[], notes=[f"budget 1e+20 not counted: {why}"])
    ax = plots.plot_isoflop(fit, runs, "clm", tmp_path / "isoflop.png").axes[0]
    stars = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets()) == 1
             and c.get_sizes()[0] == 160]
    optima = {o["budget"]: o for o in fit["objectives"]["clm"]["isoflop"]["optima"] if o["kept"]}
    hollow = sorted((float(c.get_offsets()[0][0]), tuple(c.get_facecolors()[0]) == (1.0, 1.0, 1.0, 1.0))
                    for c in stars)
    expected = sorted((o["n_opt"], budget == 1e20) for budget, o in optima.items())
    assert [x for x, _ in hollow] == pytest.approx([x for x, _ in expected])
    assert [h for _, h in hollow] == [h for _, h in expected] and sum(h for _, h in hollow) == 1
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(label.endswith("FLOPs (not counted)") for label in labels)
    assert sum(label.endswith("(not counted)") for label in labels) == 1


def test_optimal_allocation_draws_no_optimum_without_an_isoflop_law(study, tmp_path):
    fit, _, _ = study
    fit = _with_isoflop(fit, "clm", identified=False, reasons=["only 1 of 3 IsoFLOP budgets bracketed an optimum"])
    fig = plots.plot_optimal_allocation(fit, tmp_path / "alloc.png")
    clm = fit["objectives"]["clm"]["isoflop"]["optima"]
    for ax, what in zip(fig.axes, ("n_opt", "d_opt")):
        assert not [p for p in _scatter_points(ax) if any(p[1] == pytest.approx(o[what]) for o in clm)]


def test_optimal_allocation_title_names_a_band_only_when_one_is_drawn(study, tmp_path):
    fit, _, _ = study
    with_band = plots.plot_optimal_allocation(fit, tmp_path / "alloc.png")
    assert "band" in with_band.axes[0].get_title() and with_band.axes[0].collections
    no_draws = {**fit, "objectives": {
        objective: {**entry, "isoflop": {k: v for k, v in entry["isoflop"].items() if k != "bootstrap"}}
        for objective, entry in fit["objectives"].items()}}
    fig = plots.plot_optimal_allocation(no_draws, tmp_path / "alloc.png")
    assert fig.axes[0].get_title() == "Optimal model size"
    assert not [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]


def test_curves_frontier_parametric_transfer(study, tmp_path):
    fit, runs, curves = study
    fig = plots.plot_training_curves(curves, "mlm", tmp_path / "curves.png")
    assert len(fig.axes[0].get_lines()) == len(BUDGETS) * 6 and len(fig.axes) == 2  # + colorbar
    fig = plots.plot_loss_frontier(fit, tmp_path / "frontier.png", curves=curves)
    assert len(fig.axes[0].get_lines()) == 4
    fig = plots.plot_parametric(fit, "clm", tmp_path / "param.png", runs=runs)
    assert len(fig.axes) == 2 and len(fig.axes[0].get_lines()) >= 2 + len(BUDGETS)
    fig = plots.plot_transfer(runs, tmp_path / "transfer.png")
    line = fig.axes[0].get_lines()[0]
    assert line.get_ydata()[0] == pytest.approx(100 * 0.1 / 2.6)
    for name in ("curves", "frontier", "param", "transfer"):
        _check_files(tmp_path / f"{name}.png", min_kb=5)


def test_plot_all_writes_every_figure(study, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "FORMATS", ("png",))  # the other formats are covered above
    fit, runs, curves = study
    marks = {"clm": {"n": [(1e22, 1e10)], "d": [(1e22, 1e11)]}}
    made = plots.plot_all(fit, runs, curves, tmp_path, predictions=marks)
    assert sorted(made) == sorted(plots.PLOT_NAMES)
    for name in made:
        assert (tmp_path / f"{name}.png").stat().st_size > 5 * 1024
    # Each figure got its own inputs: the objective of its name, the curves, the runs, the predictions.
    for objective, name in (("clm", "CLM (causal)"), ("mlm", "MLM (masked)")):
        assert made[f"isoflop_{objective}"].axes[0].get_title().startswith(f"IsoFLOP profiles, {name}")
        assert len(made[f"isoflop_{objective}"].axes[0].get_lines()) == len(BUDGETS)
        assert made[f"curves_{objective}"].axes[0].get_title() == f"Training curves, {name} ({len(BUDGETS) * 6} runs)"
        assert made[f"parametric_{objective}"].axes[0].get_title().startswith(f"Parametric fit, {name}: E=1.8")
        runs_drawn = [c for c in made[f"parametric_{objective}"].axes[0].collections if c.get_label() == "runs"]
        assert len(runs_drawn[0].get_offsets()) == len(BUDGETS) * 6
    diamonds = [p for p in _scatter_points(made["optimal_allocation"].axes[0]) if p[0] == 1e22]
    assert [p[1] for p in diamonds] == [1e10]  # the prediction mark
    frontier = made["loss_frontier"].axes[0]
    assert [line.get_label() for line in frontier.get_lines()] == [
        "CLM envelope points", "CLM L(C) ∝ C^-0.0500", "MLM envelope points", "MLM L(C) ∝ C^-0.0500"]
    assert sum(len(c.get_offsets()) for c in frontier.collections) == len(curves)  # every curve point, faint
    assert [line.get_label() for line in made["transfer"].axes[0].get_lines()
            if not line.get_label().startswith("_")] == ["CLM → MLM (MLM loss)"]
    backtest = made["backtest"].axes[0]  # this fit.json holds no backtest: each objective says so once
    assert [tick.get_text() for tick in backtest.get_xticklabels()] == ["CLM\nall methods", "MLM\nall methods"]
    assert [text.get_text().replace("\n", " ") for text in backtest.texts] == [
        "no backtest in fit.json (rerun `plmscale fit`)"] * 2
    # No identity bins in these runs: the figure says so.
    assert made["loss_by_identity"].axes[0].texts[0].get_text().startswith("no identity bins:")


def test_a_redrawn_figure_has_the_same_bytes_in_every_format(study, tmp_path):
    fit, runs, _ = study
    for run in ("a", "b"):
        plots.plot_isoflop(fit, runs, "clm", tmp_path / run / "isoflop_clm.png")
    for suffix in (".png", ".svg", ".pdf"):
        first, second = (tmp_path / run / f"isoflop_clm{suffix}" for run in ("a", "b"))
        assert first.read_bytes() == second.read_bytes(), suffix


def test_si_labels():
    assert common.si_label(1e7) == "10M"
    assert common.si_label(2.5e9) == "2.5B"
    assert common.si_label(1e12) == "1T"


def test_every_registered_figure_has_its_report_caption():
    """The plot rule's report entries come from plots.PLOTS: each caption must exist under report/."""
    from pathlib import Path

    report = Path(__file__).resolve().parent.parent / "report"
    for name, plot in plots.PLOTS.items():
        assert (report / plot.caption).is_file(), (name, plot.caption)


def test_optimal_allocation_states_the_clm_mlm_comparison_when_the_fit_has_one(study, tmp_path):
    from plmscale.scaling.compare import compare_objectives
    from plmscale.scaling.published import PUBLISHED
    fit, _, _ = study
    fit = {**fit, "objectives": {o: {m: {**e, "identified": True} if m == "isoflop" else e for m, e in entry.items()}
                                 for o, entry in fit["objectives"].items()}}
    for objective, floor in (("clm", 2.0), ("mlm", 1.6)):  # the loss law the comparison reads at a budget
        fit["objectives"][objective]["isoflop"].update(budgets=list(BUDGETS), loss_floor=floor, k_l=10.0, s=-0.05)
    with_comparison = {**fit, "comparison": compare_objectives(fit["objectives"], PUBLISHED)}
    title = plots.plot_optimal_allocation(with_comparison, tmp_path / "both.png")._suptitle
    assert title is not None and "a_MLM − a_CLM" in title.get_text() and "paper" in title.get_text()
    assert plots.plot_optimal_allocation(fit, tmp_path / "one.png")._suptitle is None
