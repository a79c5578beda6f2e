"""Closed loop: choose the forecast run from fit.json, size its shape, score the forecast; plan it in Snakemake."""

import copy
import json

import numpy as np
import pytest
import yaml

from plmscale.config import load_config
from plmscale.errors import PlmscaleError
from plmscale import recipe as recipes
from plmscale.grid.shapes import ffn_granularity, ladder_like_shape, n_params, nearest_ladder_entry
from plmscale.plots.closed_loop import plot_closed_loop
from plmscale.scaling import closed_loop as cl
from plmscale.scaling.parametric import optimal_allocation
from workflow_helpers import REPO, SNAKEMAKE, TINY_STUDY, merged, planned_rules, run_snakemake, workflow_copy

ISO = {"k_n": 0.5, "a": 0.5, "k_d": 1 / 3, "b": 0.5, "k_l": 40.0, "s": -0.05}
PARAM = {"E": 1.8, "A": 60.0, "B": 90.0, "alpha": 0.35, "beta": 0.32}
BUDGETS = [3e11, 6e11, 1.2e12]
N_DRAWS = 200


def draws_around(constants, rng, spread=0.01):
    return {key: list(value * (1 + spread * rng.standard_normal(N_DRAWS))) for key, value in constants.items()}


def hand_made_fit(isoflop_identified=None, parametric_identified=None):
    """A fit.json document with known laws: IsoFLOP power laws, a parametric law, no envelope."""
    rng = np.random.default_rng(0)
    isoflop = {**ISO, "a_ci": [0.49, 0.51], "b_ci": [0.49, 0.51], "loss_law": "L_opt = k_l * C^s",
               "bootstrap": {"draws": draws_around(ISO, rng)},
               "optima": [{"budget": b, "n_opt": ISO["k_n"] * b ** ISO["a"], "d_opt": ISO["k_d"] * b ** ISO["b"],
                           "loss_opt": 2.5, "curvature": 0.1, "kept": True, "run_ids": []} for b in BUDGETS]}
    a = PARAM["beta"] / (PARAM["alpha"] + PARAM["beta"])
    parametric = {**PARAM, "a": a, "b": 1 - a, "flops_per_param_token": 6.0,
                  "bootstrap": {"draws": draws_around(PARAM, rng)}}
    for entry, verdict in ((isoflop, isoflop_identified), (parametric, parametric_identified)):
        if verdict is not None:
            entry["identified"] = verdict
            entry["reasons"] = [] if verdict else ["optimum at the grid edge in 2 of 3 budgets"]
    return {"version": 1, "objectives": {"clm": {"isoflop": isoflop, "parametric": parametric,
                                                 "envelope": {"error": "envelope fit needs training curves"}}}}


DEMO_LADDER = yaml.safe_load((REPO / "config.yaml").read_text())["train"]["ladder"]
PAPER_LADDER = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())["train"]["ladder"]


def demo_config(**closed_loop):
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["train"]["isoflop"]["budgets"] = BUDGETS
    raw["train"]["objectives"] = ["clm", "mlm"]
    raw["fit"]["closed_loop"] = {"multiples": [3], **closed_loop}
    return load_config(raw)


# ---- the ladder-like shape ---------------------------------------------------------------------------

@pytest.mark.parametrize("ladder, targets", [
    (DEMO_LADDER, [9e3, 3.1e4, 7.7e4, 1.5e5, 6e5]),
    (PAPER_LADDER, [6e6, 1.234e8, 7e8, 1e9, 3e9, 2e10]),
])
def test_ladder_like_shape_hits_the_target_in_the_ladders_family(ladder, targets):
    for target in targets:
        shape = ladder_like_shape(target, ladder)
        nearest = ladder[nearest_ladder_entry(target, ladder)]
        assert abs(n_params(shape) - target) / target < 0.02, (target, shape)
        assert shape["layers"] == nearest["layers"]
        assert (shape["d_model"] // shape["heads"]) % 2 == 0 and shape["d_model"] % shape["heads"] == 0
        if ladder is PAPER_LADDER:  # one head dimension (64) throughout: the forecast keeps it
            assert shape["d_model"] // shape["heads"] == 64, (target, shape)
        else:  # head dimensions vary along the ladder: the forecast keeps the nearest entry's head count
            assert shape["heads"] == nearest["heads"]
        assert shape["ffn_dim"] % ffn_granularity(ladder) == 0
        assert 1.5 * shape["d_model"] <= shape["ffn_dim"] <= 4 * shape["d_model"]


def test_ladder_like_shape_keeps_the_ladders_ffn_ratio_when_the_count_allows():
    """The demo's closed loop at 1.5e12 forecast 28,878 parameters: matching the count exactly gave d_model 40
    with ffn_dim 64 (1.6·d), a shape unlike every rung (2.7-4·d); a 2% looser count keeps the ratio."""
    for target in (28_878, 9e3, 4.1e4, 7.7e4):
        shape = ladder_like_shape(target, DEMO_LADDER)
        assert abs(n_params(shape) - target) / target <= 0.02, (target, shape)
        assert 2.2 <= shape["ffn_dim"] / shape["d_model"] <= 3.5, (target, shape)


def test_ffn_steps_follow_the_ladders_own_granularity():
    """Steps of 8 leave a 3-layer, 2-head model of ~29k parameters no GLU near 8/3·d within 2% of the count
    (d_model 32 with ffn_dim 56, 1.75·d); a ladder built in steps of 4 lends its forecasts steps of 4."""
    ladder = {"a": {"layers": 3, "d_model": 20, "heads": 2, "ffn_dim": 52},
              "b": {"layers": 3, "d_model": 28, "heads": 2, "ffn_dim": 64}}
    assert ffn_granularity(ladder) == 4 and ffn_granularity(PAPER_LADDER) == 8
    shape = ladder_like_shape(28_878, ladder)
    assert shape["ffn_dim"] % 4 == 0 and 2.4 <= shape["ffn_dim"] / shape["d_model"] <= 3.0, shape
    coarse = ladder_like_shape(28_878, ladder, ffn_multiple=8)
    assert not 2.2 <= coarse["ffn_dim"] / coarse["d_model"] <= 3.5, coarse


def test_ladder_like_shape_reproduces_a_ladder_entry_size():
    target = n_params(DEMO_LADDER["n55k"])
    assert n_params(ladder_like_shape(target, DEMO_LADDER)) == pytest.approx(target, rel=1e-3)


# ---- choosing the forecast ---------------------------------------------------------------------------

def test_the_first_identified_method_sizes_the_run_at_a_multiple_of_the_top_budget():
    choice = cl.choose_forecast(hand_made_fit(), "clm", 3, ["isoflop", "parametric"])
    flops = 3 * max(BUDGETS)
    assert choice["flops"] == pytest.approx(flops) and choice["top_budget"] == max(BUDGETS)
    assert choice["method"] == "isoflop"
    assert choice["n_opt"] == pytest.approx(ISO["k_n"] * flops ** ISO["a"])
    low, high = choice["n_opt_ci"]
    assert low < choice["n_opt"] < high


def test_an_unidentified_method_is_passed_over():
    choice = cl.choose_forecast(hand_made_fit(isoflop_identified=False, parametric_identified=True), "clm", 10,
                                ["isoflop", "parametric"])
    flops = 10 * max(BUDGETS)
    expected, _, _ = optimal_allocation(*(PARAM[k] for k in ("E", "A", "B", "alpha", "beta")), flops, 6.0)
    assert choice["method"] == "parametric"
    assert choice["n_opt"] == pytest.approx(float(expected))
    assert choice["considered"]["isoflop"] == {"identified": False,
                                               "reasons": ["optimum at the grid edge in 2 of 3 budgets"]}


def test_no_identified_method_gives_a_no_forecast_record_and_no_training():
    fit = hand_made_fit(isoflop_identified=False, parametric_identified=False)
    plan = cl.plan_closed_loop(demo_config(), fit, "clm", 3)
    assert plan["method"] is None and plan["spec"] is None
    assert "no identified method" in plan["reason"] and "grid edge" in plan["reason"]
    record = cl.score_run(fit, plan, {"run_id": plan["run_id"], "trained": False, "reason": plan["reason"]})
    assert record["trained"] is False and record["reason"] == plan["reason"]
    # Every method is still listed with its verdict; there is nothing observed to score.
    assert record["methods"]["isoflop"]["identified"] is False
    assert record["methods"]["isoflop"]["loss"] is not None
    assert record["methods"]["isoflop"]["error_pct"] is None
    assert record["methods"]["envelope"]["reasons"][0].startswith("not fitted")


def test_a_fit_without_the_objective_plans_nothing_instead_of_failing():
    # The DAG is built from the fit.json on disk, which may predate an objective added to the config.
    plan = cl.plan_closed_loop(demo_config(), hand_made_fit(), "mlm", 3)
    assert plan["spec"] is None and "has no mlm fit" in plan["reason"]
    assert plan["flops"] == pytest.approx(3 * max(BUDGETS))


def test_a_fit_without_isoflop_budgets_falls_back_to_the_given_one():
    fit = hand_made_fit()
    fit["objectives"]["clm"]["isoflop"]["optima"] = []
    assert cl.choose_forecast(fit, "clm", 3, ["isoflop"], fallback_budget=2e12)["flops"] == pytest.approx(6e12)
    with pytest.raises(PlmscaleError, match="records no budget"):
        cl.choose_forecast(fit, "clm", 3, ["isoflop"])


# ---- the planned run ---------------------------------------------------------------------------------

def test_the_plan_is_a_grid_like_run_of_the_forecast_size_and_budget():
    config = demo_config()
    plan = cl.plan_closed_loop(config, hand_made_fit(), "clm", 3)
    spec = plan["spec"]
    assert plan["run_id"] == spec["run_id"] == "fcl_clm_x3"
    assert abs(spec["n_params"] - plan["n_opt"]) / plan["n_opt"] < 0.02
    assert spec["flops"] == pytest.approx(plan["flops"], rel=1e-6)
    assert spec["budget"] == pytest.approx(plan["flops"])
    # lr and batch as the config's recipe gives a grid run of this size and length.
    recipe = recipes.recipe_from_config(config["train"])
    resolved = recipes.resolve(recipe, config["train"], spec["n_params"], spec["tokens"])
    assert (spec["lr"], spec["batch_tokens"]) == (resolved["lr"], resolved["batch_tokens"])
    assert spec["seq_len"] == config["train"]["seq_len"]
    assert plan["resources"]["runtime_min"] >= 1 and "resources" not in spec


def test_closed_loop_jobs_follow_the_config():
    # On in the demo (CLM at 3x its top budget, 3 layers), off in the paper's study.
    assert cl.closed_loop_jobs(load_config(yaml.safe_load((REPO / "config.yaml").read_text()))) == [
        ("clm", 3.0, 3)]
    assert cl.closed_loop_jobs(load_config(REPO / "configs" / "paper.yaml")) == []
    assert cl.closed_loop_jobs(demo_config(multiples=[3, 10])) == [("clm", 3.0, None), ("clm", 10.0, None),
                                                                   ("mlm", 3.0, None), ("mlm", 10.0, None)]
    assert cl.closed_loop_jobs(demo_config(objectives=["mlm"])) == [("mlm", 3.0, None)]
    assert cl.closed_loop_jobs(demo_config(objectives=["clm"], layers=[2, 3])) == [("clm", 3.0, 2), ("clm", 3.0, 3)]
    with pytest.raises(PlmscaleError, match="repeats a depth"):
        cl.closed_loop_jobs(demo_config(layers=[2, 2]))
    config = demo_config()
    config["train"]["objectives"] = ["clm"]
    config["fit"]["closed_loop"]["objectives"] = ["mlm"]
    with pytest.raises(PlmscaleError, match="fit.closed_loop.objectives"):
        cl.closed_loop_jobs(config)
    with pytest.raises(PlmscaleError, match="repeats a multiple"):
        cl.closed_loop_jobs(demo_config(multiples=[3, 3.0]))
    no_budgets = demo_config()
    no_budgets["train"]["isoflop"]["budgets"] = []
    with pytest.raises(PlmscaleError, match="train.isoflop.budgets is empty"):
        cl.closed_loop_jobs(no_budgets)
    released_curves_only = demo_config()
    released_curves_only["fit"]["use_own_runs"] = False
    assert cl.closed_loop_jobs(released_curves_only) == []


def test_a_depth_search_plans_one_run_per_depth_at_the_same_forecast():
    """fit.closed_loop.layers: the forecast N_opt and budget are shared; only the depth (and the width that
    keeps N) differs, each run with its own id."""
    config = demo_config(layers=[2, 3])
    plans = {layers: cl.plan_closed_loop(config, hand_made_fit(), "clm", 3, layers=layers) for layers in (2, 3)}
    assert [plans[d]["run_id"] for d in (2, 3)] == ["fcl_clm_x3_L2", "fcl_clm_x3_L3"]
    assert [plans[d]["shape"]["layers"] for d in (2, 3)] == [2, 3]
    assert plans[3]["shape"]["d_model"] < plans[2]["shape"]["d_model"]
    assert plans[2]["n_opt"] == plans[3]["n_opt"] and plans[2]["flops"] == plans[3]["flops"]
    # The same batches for every depth, and those of the run without a search (common random numbers).
    plain = cl.plan_closed_loop(demo_config(), hand_made_fit(), "clm", 3)
    assert plans[2]["spec"]["seed"] == plans[3]["spec"]["seed"] == plain["spec"]["seed"]
    for plan in plans.values():
        assert abs(plan["spec"]["n_params"] - plan["n_opt"]) / plan["n_opt"] < 0.02
        assert plan["spec"]["flops"] == pytest.approx(plan["flops"], rel=1e-6)


def test_a_depth_search_marks_the_best_depth_and_says_so():
    fit = hand_made_fit()
    config = demo_config(layers=[2, 3])
    plans = [cl.plan_closed_loop(config, fit, "clm", 3, layers=layers) for layers in (2, 3)]
    validation = cl.score_closed_loop(fit, [(plans[0], _trained(plans[0], 2.45)),
                                            (plans[1], _trained(plans[1], 2.40))])
    records = validation["objectives"]["clm"]
    assert set(records) == {"x3_L2", "x3_L3"}
    assert records["x3_L3"]["best_of_depths"] is True and records["x3_L2"]["best_of_depths"] is False
    lines = cl.validation_lines(validation, "clm")
    heads = [line for line in lines if line.startswith("validated")]
    assert "2 layers" in heads[0] and "one of depths 2, 3" in heads[0]
    assert "3 layers" in heads[1] and "best of depths 2, 3" in heads[1]
    # Without a search nothing is marked.
    single = cl.plan_closed_loop(demo_config(), fit, "clm", 3)
    plain = cl.score_closed_loop(fit, [(single, _trained(single, 2.45))])["objectives"]["clm"]["x3"]
    assert "best_of_depths" not in plain and "depths" not in cl.validation_lines(
        {"objectives": {"clm": {"x3": plain}}}, "clm")[0]
    # One listed depth (the demo's [3]) sets the depth; nothing was searched, so nothing is marked.
    set_depth = cl.plan_closed_loop(demo_config(layers=[3]), fit, "clm", 3, layers=3)
    assert set_depth["depths_searched"] is None and set_depth["shape"]["layers"] == 3
    record = cl.score_closed_loop(fit, [(set_depth, _trained(set_depth, 2.40))])["objectives"]["clm"]["x3_L3"]
    line = cl.validation_lines({"objectives": {"clm": {"x3_L3": record}}}, "clm")[0]
    assert "best_of_depths" not in record and "3 layers" in line and "depths" not in line


# ---- scoring -----------------------------------------------------------------------------------------

def _trained(plan, loss):
    return {"run_id": plan["run_id"], "final_valid_loss": loss, "n_params": plan["spec"]["n_params"],
            "tokens": plan["spec"]["tokens"], "flops": plan["spec"]["flops"], "shape": plan["shape"]}


def test_score_compares_each_method_with_the_observed_loss():
    fit = hand_made_fit()
    plan = cl.plan_closed_loop(demo_config(), fit, "clm", 3)
    n, d = plan["spec"]["n_params"], plan["spec"]["tokens"]
    parametric_loss = PARAM["E"] + PARAM["A"] / n ** PARAM["alpha"] + PARAM["B"] / d ** PARAM["beta"]
    record = cl.score_run(fit, plan, _trained(plan, parametric_loss * 1.01))
    entry = record["methods"]["parametric"]
    assert entry["loss"] == pytest.approx(parametric_loss)
    assert entry["error_pct"] == pytest.approx(1.0, abs=1e-6) and entry["within_2pct"] is True
    assert "trained N and D" in entry["loss_basis"]
    iso = record["methods"]["isoflop"]
    assert iso["loss"] == pytest.approx(ISO["k_l"] * plan["flops"] ** ISO["s"])
    assert "L_opt(C)" in iso["loss_basis"]
    low, high = iso["loss_ci"]
    assert iso["inside_interval"] is (low <= parametric_loss * 1.01 <= high)
    assert record["methods"]["envelope"]["loss"] is None and record["methods"]["envelope"]["error_pct"] is None

    far = cl.score_run(fit, plan, _trained(plan, parametric_loss * 1.10))["methods"]["parametric"]
    assert far["within_2pct"] is False and far["inside_interval"] is False
    assert far["error_pct"] == pytest.approx(10.0, abs=1e-6)


def test_an_unidentified_method_is_scored_and_marked():
    fit = hand_made_fit(isoflop_identified=True, parametric_identified=False)
    plan = cl.plan_closed_loop(demo_config(), fit, "clm", 3)
    record = cl.score_run(fit, plan, _trained(plan, 2.4))
    assert record["forecast_method"] == "isoflop"
    assert record["methods"]["parametric"]["identified"] is False
    assert record["methods"]["parametric"]["error_pct"] is not None


def test_validation_lines():
    fit = hand_made_fit()
    plans = [cl.plan_closed_loop(demo_config(multiples=[3, 10]), fit, "clm", m) for m in (3, 10)]
    untrained = cl.plan_closed_loop(demo_config(), hand_made_fit(False, False), "clm", 3)
    validation = cl.score_closed_loop(fit, [(plans[0], _trained(plans[0], 2.45)), (plans[1], _trained(plans[1], 2.3))])
    assert set(validation["objectives"]["clm"]) == {"x3", "x10"}
    lines = cl.validation_lines(validation, "clm")
    assert lines[0].startswith(f"validated at C = {3 * max(BUDGETS):.3g}")
    error = validation["objectives"]["clm"]["x3"]["methods"]["parametric"]["error_pct"]
    assert any(line.strip().startswith("parametric") and f"{error:+.2f}%" in line for line in lines)
    assert cl.validation_lines(validation, "mlm") == []
    assert cl.validation_lines(validation, "clm", fit) == lines  # the fit that was scored: no note
    refitted = {**fit, "inputs_sha256": "another table"}
    assert "inputs_sha256 differs" in cl.validation_lines(validation, "clm", refitted)[0]
    no_forecast = cl.score_closed_loop(fit, [(untrained, {"trained": False})])
    assert "not trained" in cl.validation_lines(no_forecast, "clm")[0]


def test_plot_shows_each_forecast_against_the_observed_loss(tmp_path):
    fit = hand_made_fit(parametric_identified=False)
    plans = [cl.plan_closed_loop(demo_config(multiples=[3, 10]), fit, "clm", m) for m in (3, 10)]
    observed = {"x3": 2.45, "x10": 2.3}
    validation = cl.score_closed_loop(fit, [(plans[0], _trained(plans[0], 2.45)), (plans[1], _trained(plans[1], 2.3))])
    path = tmp_path / "closed_loop.png"
    (ax,) = plot_closed_loop(validation, path).axes
    assert path.stat().st_size > 0
    records = validation["objectives"]["clm"]
    # One column per multiple, by budget, named with its compute.
    assert [tick.get_text() for tick in ax.get_xticklabels()] == [
        f"{label}\nC={records[label]['flops']:.2g}" for label in ("x3", "x10")]
    # The observed loss as a bar across each column.
    bars = [line for line in ax.lines if line.get_linewidth() == 2]
    assert [list(bar.get_ydata()) for bar in bars] == [[observed["x3"]] * 2, [observed["x10"]] * 2]
    # Each method with a loss forecast as a point at that forecast (open where not identified), with its error.
    points = {(round(float(c.lines[0].get_xdata()[0])), float(c.lines[0].get_ydata()[0])): c.lines[0]
              for c in ax.containers}
    for position, label in enumerate(("x3", "x10")):
        for method in ("isoflop", "parametric"):
            entry = records[label]["methods"][method]
            marker = points[(position, entry["loss"])]
            assert (marker.get_markerfacecolor() == "none") is (method == "parametric")
            assert any(text.get_text().startswith(f"{entry['error_pct']:+.2f}%") for text in ax.texts)
    assert len(points) == 4
    assert sum("no loss forecast: envelope" in text.get_text() for text in ax.texts) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["observed", "isoflop", "parametric (not identified)"]


# ---- the workflow plans the closed loop after the fit ------------------------------------------------

DRY_RUN_CONFIG = merged(TINY_STUDY, {
    "data": {"demo": {"floor_sequences": 0}},
    "train": {"objectives": ["clm", "mlm"], "transfer": []},
    "fit": {"bootstrap": 20, "closed_loop": {"multiples": [3]}},
})


@pytest.mark.slow  # starts Snakemake: a DAG build of seconds; the fast set (-m "not slow") starts none
@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="needs snakemake next to the Python running pytest")
def test_dry_run_plans_the_closed_loop_after_the_fit(tmp_path):
    workdir = workflow_copy(tmp_path / "wf", DRY_RUN_CONFIG)
    output = run_snakemake(workdir, "--dry-run")
    jobs = planned_rules(output)
    assert jobs["closed_loop_train"] == 2 and jobs["closed_loop_score"] == 1 and jobs["fit"] == 1
    for objective in ("clm", "mlm"):
        assert f"results/closed_loop/{objective}_x3/metrics.json" in output
    # A depth search: one job per depth, each in its own directory.
    searched = copy.deepcopy(DRY_RUN_CONFIG)
    searched["fit"]["closed_loop"]["layers"] = [1, 2]
    (workdir / "config.yaml").write_text(yaml.safe_dump(searched))
    output = run_snakemake(workdir, "--dry-run")
    assert planned_rules(output)["closed_loop_train"] == 4
    for objective in ("clm", "mlm"):
        for depth in (1, 2):
            assert f"results/closed_loop/{objective}_x3_L{depth}/metrics.json" in output
    # Off (the schema default): no closed-loop job at all.
    off = copy.deepcopy(DRY_RUN_CONFIG)
    off["fit"].pop("closed_loop")
    (workdir / "config.yaml").write_text(yaml.safe_dump(off))
    jobs = planned_rules(run_snakemake(workdir, "--dry-run"))
    assert "closed_loop_train" not in jobs and "closed_loop_score" not in jobs


# The closed loop trained and scored by the real workflow: tests/test_workflow.py (its study has it on).


def test_predict_reports_the_closed_loop_beside_its_fit(tmp_path, capsys):
    from argparse import ArgumentParser

    from plmscale.cli import predict

    fit = hand_made_fit()
    plan = cl.plan_closed_loop(demo_config(), fit, "clm", 3)
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    parser = ArgumentParser()
    predict.configure_parser(parser)
    args = parser.parse_args(["--fit", str(tmp_path / "fit.json"), "--flops", "1e13", "--objective", "clm"])
    predict.main(args)
    assert "validated at" not in capsys.readouterr().out
    validation = cl.score_closed_loop(fit, [(plan, _trained(plan, 2.45))])
    (tmp_path / "closed_loop.json").write_text(json.dumps(validation))
    predict.main(args)
    assert f"validated at C = {3 * max(BUDGETS):.3g}" in capsys.readouterr().out
