"""Adaptive IsoFLOP rounds (plmscale.design.rounds, round_files): decisions on synthetic studies of known truth."""

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from plmscale.config import load_config
from plmscale.design.round_files import (adaptive_run_id, check_adaptive, design_record, plan_round, round_of,
                                         round_specs)
from plmscale.design.rounds import AdaptiveSettings, isoflop_flops_spent, next_round
from plmscale.errors import PlmscaleError
from plmscale.grid import shapes
from plmscale.grid.expand import expand_grid, format_number
from plmscale.grid.resources import gpu_hours
from plmscale.scaling.fit import fit_all
from scaling_synthetic import fit_settings

DEMO = yaml.safe_load(open("config.yaml"))
LADDER = DEMO["train"]["ladder"]
SEQ_LEN = DEMO["train"]["seq_len"]
N = {name: shapes.n_params(shape) for name, shape in LADDER.items()}


def settings(**overrides):
    values = dict(shapes={k: dict(v) for k, v in LADDER.items()}, ladder=tuple(LADDER), seq_len=SEQ_LEN,
                  flops_definition="6nd", objectives=("clm",))
    values.update(overrides)
    return AdaptiveSettings(**values)


def study(vertices, sizes, curvature=0.08, noise=0.0, seed=0, replicates=1):
    """A CLM runs table whose loss at budget C is a parabola in ln N with its minimum at vertices[C] (the known
    truth): loss = L0(C) + curvature·(ln N − ln N*(C))², L0 falling with C; `sizes` lists the models per budget."""
    rng = np.random.default_rng(seed)
    rows = []
    for budget in sorted(vertices):
        level = 3.0 * (budget / 1e10) ** -0.05
        for model in sizes[budget]:
            n = N[model]
            tokens = round(budget / shapes.flops_per_token(LADDER[model], SEQ_LEN))
            for replicate in range(1, replicates + 1):
                loss = level + curvature * (math.log(n) - math.log(vertices[budget])) ** 2 + rng.normal(0, noise)
                run_id = f"clm_{model}_c{budget:g}" + (f"_r{replicate}" if replicate > 1 else "")
                rows.append({"run_id": run_id, "objective": "clm", "n_params": n, "tokens": tokens,
                             "flops": 6.0 * n * tokens, "loss": loss, "budget": budget, "model": model})
    return pd.DataFrame(rows)


def fitted(runs):
    return fit_all(runs, None, fit_settings(["clm"], bootstrap=100, backtest=False,
                                              isoflop_bootstrap="residuals"))


BUDGETS = (3.125e10, 6.25e10, 1.25e11, 5e11)
# N_opt = 60k·(C/5e11)^0.5 (15k, 30k, 60k): the lowest budget brackets its optimum; 1.25e11 samples only sizes
# below its optimum, and the top budget's optimum lies beyond the ladder's largest size (55k). With one budget
# bracketed the fit is not identified.
BEYOND = {c: 6e4 * (c / 5e11) ** 0.5 for c in (3.125e10, 1.25e11, 5e11)}
BEYOND_SIZES = {3.125e10: ["n3.5k", "n7k", "n14k", "n25k", "n55k"], 1.25e11: ["n3.5k", "n7k", "n14k"],
                5e11: ["n14k", "n25k", "n55k"]}


def test_a_budget_whose_optimum_lies_beyond_the_grid_gets_the_next_size_on_its_open_side():
    runs = study(BEYOND, BEYOND_SIZES)
    record = next_round(runs, fitted(runs), settings(), 1, isoflop_flops_spent(runs))
    assert record["stop"] is None
    at_top = [r for r in record["runs_added"] if r["budget"] == 5e11]
    assert len(at_top) == 1
    added = at_top[0]
    # beyond the ladder: a new shape of the ladder's family (2 layers, 2 heads), one ladder step above n55k
    step = (N["n55k"] / N["n2k"]) ** (1 / 5)
    assert added["shape"]["layers"] == 2 and added["shape"]["heads"] == 2
    assert added["n_params"] == pytest.approx(N["n55k"] * step, rel=0.03)
    assert added["model"] not in LADDER and added["replicate"] == 1
    assert "largest size" in added["why"] and "open (larger) side" in added["why"]
    assert added["tokens"] == round(5e11 / shapes.flops_per_token(added["shape"], SEQ_LEN))
    assert record["flops"] == pytest.approx(sum(r["flops"] for r in record["runs_added"]))
    # inside the ladder the open side is its next rung; the bracketed budget (5 sizes, an exact parabola) gets none
    assert [(r["budget"], r["model"]) for r in record["runs_added"] if r["budget"] != 5e11] == [(1.25e11, "n25k")]


def test_the_open_side_is_the_ladder_rung_when_the_ladder_has_one():
    vertices = {c: 1.5e3 * (c / 5e11) ** 0.5 for c in BUDGETS}  # every optimum below the smallest size sampled
    sizes = {c: ["n7k", "n14k", "n25k"] for c in BUDGETS}
    runs = study(vertices, sizes)
    record = next_round(runs, fitted(runs), settings(), 1, isoflop_flops_spent(runs))
    assert {(r["budget"], r["model"]) for r in record["runs_added"]} == {(c, "n3.5k") for c in BUDGETS}
    assert all("open (smaller) side" in r["why"] for r in record["runs_added"])


def test_a_size_that_would_repeat_a_small_corpus_past_max_epochs_is_refused_and_the_stop_says_add_data():
    # Every optimum lies below the smallest size sampled, as on a corpus too small for the budgets, where the
    # smallest models win by repeating their data: the next rung down at the top budget would read far more
    # than the split holds.
    vertices = {c: 1.5e3 * (c / 5e11) ** 0.5 for c in BUDGETS}
    runs = study(vertices, {c: ["n7k", "n14k", "n25k"] for c in BUDGETS})
    fit = fitted(runs)
    wanted = next_round(runs, fit, settings(), 1, isoflop_flops_spent(runs))["runs_added"]
    tokens = {r["budget"]: r["tokens"] for r in wanted}  # n3.5k at each budget (the test above)
    # a split that 3.5k-parameter runs read 2-8 times over at 1.25e11-5e11 and under 4 times below
    split = tokens[5e11] / 8
    record = next_round(runs, fit, settings(max_epochs=4.0, train_tokens=split), 1, isoflop_flops_spent(runs))
    assert {r["budget"] for r in record["runs_added"]} == {c for c in BUDGETS if tokens[c] / split <= 4}
    refused = [r for r in record["skipped"] if "max_epochs" in r["why"]]
    assert {r["budget"] for r in refused} == {c for c in BUDGETS if tokens[c] / split > 4}
    assert f"{tokens[5e11] / split:.3g} epochs" in next(r["why"] for r in refused if r["budget"] == 5e11)
    # with every wanted run repeating the split too often, the round adds nothing and says why, not "budget spent"
    tiny = next_round(runs, fit, settings(max_epochs=4.0, train_tokens=min(tokens.values()) / 5), 1,
                      isoflop_flops_spent(runs))
    assert tiny["runs_added"] == [] and len(tiny["skipped"]) == len(wanted)
    assert tiny["stop"].startswith("no run can be added") and "max_epochs 4" in tiny["stop"]
    assert "add data (data.sources)" in tiny["stop"]
    # no limit, or a split of unknown size: the rule adds what it wanted
    for unchecked in (settings(max_epochs=None, train_tokens=split), settings(max_epochs=4.0, train_tokens=None)):
        assert next_round(runs, fit, unchecked, 1, isoflop_flops_spent(runs))["runs_added"] == wanted


def identified_study():
    vertices = {c: 1e4 * (c / 1e11) ** 0.5 for c in (3.125e10, 6.25e10, 1.25e11, 2.5e11, 5e11, 1e12)}
    sizes = {c: ["n2k", "n3.5k", "n7k", "n14k", "n25k", "n55k"] for c in vertices}
    return study(vertices, sizes, curvature=0.05, noise=2e-4, seed=3)


def test_an_identified_study_with_a_narrow_interval_adds_nothing_and_says_why():
    runs = identified_study()
    fit = fitted(runs)
    iso = fit["objectives"]["clm"]["isoflop"]
    assert iso["identified"] and iso["a_ci"][1] - iso["a_ci"][0] <= 0.25  # the premise
    record = next_round(runs, fit, settings(), 1, isoflop_flops_spent(runs))
    assert record["runs_added"] == [] and record["skipped"] == []
    assert record["stop"].startswith("identified")


def test_an_exhausted_study_budget_stops_and_lists_what_it_could_not_add():
    runs = study(BEYOND, BEYOND_SIZES)
    spent = isoflop_flops_spent(runs)
    record = next_round(runs, fitted(runs), settings(study_flops=spent + 1e9), 1, spent)
    assert record["runs_added"] == []
    assert record["stop"].startswith("study budget spent")
    assert any(r["budget"] == 5e11 and "study_flops" in r["why"] for r in record["skipped"])
    spent_out = next_round(runs, fitted(runs), settings(study_flops=spent), 1, spent)
    assert spent_out["stop"].startswith("study budget spent") and spent_out["skipped"] == []


def test_max_rounds_stops():
    runs = study(BEYOND, BEYOND_SIZES)
    record = next_round(runs, fitted(runs), settings(max_rounds=2), 3, isoflop_flops_spent(runs))
    assert record["runs_added"] == [] and record["stop"].startswith("max_rounds")


def test_a_wide_exponent_interval_buys_the_most_certainty_per_flop_a_cheap_budget_below_the_span():
    runs = identified_study()
    fit = copy.deepcopy(fitted(runs))
    fit["objectives"]["clm"]["isoflop"]["a_ci"] = [0.2, 0.8]  # as a noisier study would measure it
    record = next_round(runs, fit, settings(), 1, isoflop_flops_spent(runs))
    # a budget below the span widens it as much as one above (budget_factor either way) for 1/64 of the FLOPs
    assert {r["budget"] for r in record["runs_added"]} == {3.125e10 / 2}
    assert len(record["runs_added"]) == 4
    assert all("below the lowest budget" in r["why"] and "most certainty per FLOP" in r["why"]
               for r in record["runs_added"])
    iso = fit["objectives"]["clm"]["isoflop"]
    forecast = iso["k_n"] * (3.125e10 / 2) ** iso["a"]
    sizes = sorted(r["n_params"] for r in record["runs_added"])
    assert sizes[0] < forecast < sizes[-1]  # sizes around the forecast N_opt
    assert record["flops"] < 0.05 * isoflop_flops_spent(runs)


def test_a_short_span_is_widened_above_even_when_its_interval_is_narrow():
    # known truth a = 0.5 over three budgets spanning 4x: identified and narrow, but a span that short can hold a
    # biased exponent (the demo's seed 1235: a = 0.35 over 3.1e10-1.25e11 against 0.60 over 16x)
    runs = identified_study()
    runs = runs[runs["budget"] <= 1.25e11]
    fit = fitted(runs)
    iso = fit["objectives"]["clm"]["isoflop"]
    assert iso["identified"] and iso["a_ci"][1] - iso["a_ci"][0] <= 0.25  # the premise
    assert next_round(runs, fit, settings(), 1, isoflop_flops_spent(runs))["stop"].startswith("identified")
    record = next_round(runs, fit, settings(min_budget_span=16, budget_factor=4), 1, isoflop_flops_spent(runs))
    assert record["stop"] is None
    assert {r["budget"] for r in record["runs_added"]} == {5e11}
    assert all("min_budget_span 16x" in r["why"] and "above the top budget" in r["why"]
               for r in record["runs_added"])
    wide_enough = identified_study()
    wide_enough = wide_enough[(wide_enough["budget"] >= 3.125e10) & (wide_enough["budget"] <= 5e11)]
    done = next_round(wide_enough, fitted(wide_enough), settings(min_budget_span=16), 1,
                      isoflop_flops_spent(wide_enough))
    assert done["stop"].startswith("identified") and "spanning at least 16x" in done["stop"]


def test_a_noisy_vertex_gets_replicates_of_the_points_that_decide_it():
    vertices = {c: 1e4 * (c / 1e11) ** 0.5 for c in BUDGETS}
    sizes = {c: ["n2k", "n3.5k", "n7k", "n14k", "n25k", "n55k"] for c in BUDGETS}
    runs = study(vertices, sizes, curvature=0.01, noise=0.01, seed=5)
    fit = fitted(runs)
    record = next_round(runs, fit, settings(max_vertex_width=0.2), 1, isoflop_flops_spent(runs))
    replicates = [r for r in record["runs_added"] if r["replicate"] == 2]
    assert replicates and all("replicate" in r["why"] for r in replicates)
    for budget in {r["budget"] for r in replicates}:  # three points per budget, the lowest losses there
        here = runs[runs["budget"] == budget].nsmallest(3, "loss")
        assert {r["model"] for r in replicates if r["budget"] == budget} == set(here["model"])


def test_the_decision_is_a_function_of_the_runs_alone():
    runs = study(BEYOND, BEYOND_SIZES)
    fit = fitted(runs)
    first = next_round(runs, fit, settings(), 1, isoflop_flops_spent(runs))
    assert first["runs_added"]
    assert json.dumps(first) == json.dumps(next_round(runs, fitted(runs), settings(), 1, isoflop_flops_spent(runs)))
    # the rows in another order: the same decision from the same fit
    shuffled = runs.sample(frac=1.0, random_state=7).reset_index(drop=True)
    again = next_round(shuffled, fit, settings(), 1, isoflop_flops_spent(shuffled))
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)


def demo_config(**adaptive):
    raw = copy.deepcopy(DEMO)
    raw["train"]["isoflop"]["adaptive"] = {"enabled": True, **adaptive}
    return load_config(raw, source="config.yaml")


def test_a_round_file_holds_specs_that_read_back_byte_identical_and_ids_apart_from_the_grid():
    config = demo_config()
    runs = study(BEYOND, BEYOND_SIZES)
    record = plan_round(config, runs, fitted(runs), [], 1, source="config.yaml")
    assert record["runs_added"]
    specs = round_specs(json.loads(json.dumps(record)))
    for run in record["runs_added"]:
        assert run["run_id"].startswith("ad1_clm_") and round_of(run["run_id"]) == 1
        assert run["run_id"] == adaptive_run_id(1, run)
        assert json.dumps(specs[run["run_id"]].training_dict(), sort_keys=True) == \
            json.dumps({k: v for k, v in run["spec"].items() if k != "resources"}, sort_keys=True)
    assert round_of("clm_n25k_c5e11") is None
    # a later round replicates a point by its model name, derived shapes included (earlier rounds' shapes)
    second = plan_round(config, runs, fitted(runs), [record], 2, source="config.yaml")
    assert all(r["run_id"].startswith("ad2_") for r in second["runs_added"])
    with pytest.raises(PlmscaleError, match="already stopped"):
        plan_round(config, runs, fitted(runs), [{**record, "stop": "identified"}], 2)
    summary = design_record(config, [record, second], fitted(runs))
    assert summary["n_runs_added"] == len(record["runs_added"]) + len(second["runs_added"])
    assert summary["rounds"][0]["fit_before"]["clm"]["identified"] in (True, False)
    assert "spec" not in summary["rounds"][0]["runs_added"][0]


def test_adaptive_rounds_refuse_a_wsd_grid_naming_the_key():
    raw = copy.deepcopy(DEMO)
    raw["train"]["isoflop"].update(schedule="wsd", adaptive={"enabled": True})
    with pytest.raises(PlmscaleError, match="train.isoflop.schedule"):
        check_adaptive(load_config(raw, source="config.yaml"), "config.yaml")


def test_the_design_figure_marks_each_round_s_runs_on_the_isoflop_axes(tmp_path):
    import matplotlib.pyplot as plt

    from plmscale.plots.design import plot_design

    config = demo_config()
    runs = study(BEYOND, BEYOND_SIZES)
    record = plan_round(config, runs, fitted(runs), [], 1, source="config.yaml")
    added = pd.DataFrame([{"run_id": r["run_id"], "objective": "clm", "n_params": r["n_params"], "tokens": r["tokens"],
                           "flops": r["flops"], "loss": 2.5, "budget": r["budget"], "model": r["model"]}
                          for r in record["runs_added"]])
    after = pd.concat([runs, added], ignore_index=True)
    figure = plot_design(design_record(config, [record], fitted(after)), after, tmp_path / "design.png")
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels == [f"grid ({len(runs)} runs)", f"round 1 ({len(added)} runs)"]
    assert "runs added in 1 of 1 round(s)" in figure.axes[0].get_title() and (tmp_path / "design.png").exists()
    # the whole stop reason, wrapped, not cut short
    design = design_record(config, [record], fitted(after))
    assert " ".join(figure._suptitle.get_text().split()).endswith(" ".join(f"stopped: {design['stop']}".split()))
    plt.close(figure)


def test_a_new_budget_goes_below_the_span_when_the_study_cannot_pay_for_one_above():
    runs = identified_study()
    fit = copy.deepcopy(fitted(runs))
    fit["objectives"]["clm"]["isoflop"]["a_ci"] = [0.2, 0.8]
    spent = isoflop_flops_spent(runs)
    record = next_round(runs, fit, settings(study_flops=spent + 4 * 3.125e10 / 2 + 1e8), 1, spent)
    assert {r["budget"] for r in record["runs_added"]} == {3.125e10 / 2}
    assert all("below the lowest budget" in r["why"] for r in record["runs_added"])
    assert record["skipped"] == []  # the alternative above was not wanted once one below fitted


def test_a_three_size_budget_gets_a_fourth_size_only_when_no_other_budget_s_residuals_measure_its_vertex():
    vertices = {c: 1e4 * (c / 1e11) ** 0.5 for c in (3.125e10, 1.25e11, 5e11)}
    sizes = {3.125e10: ["n2k", "n3.5k", "n7k", "n14k", "n25k"], 1.25e11: ["n7k", "n14k", "n25k"],
             5e11: ["n7k", "n14k", "n25k", "n55k"]}
    runs = study(vertices, sizes, curvature=0.05, noise=2e-3, seed=11)
    fit = fitted(runs)
    spent = isoflop_flops_spent(runs)

    def fourth_sizes(record):
        return [r for r in record["runs_added"] if r["budget"] == 1.25e11 and r["model"] not in sizes[1.25e11]]

    assert fit["objectives"]["clm"]["isoflop"]["identified"]
    # a target narrower than this study's interval (about 0.05 wide), so that the rounds go on
    alone = next_round(runs, fit, settings(target_a_width=0.02), 1, spent)
    assert fourth_sizes(alone) and "no residual" in fourth_sizes(alone)[0]["why"]
    # the residual bootstrap (fit.isoflop_bootstrap: residuals) gives the 3-size budget the pooled noise: a fourth
    # size there is no longer bought whatever it costs; its replicates compete with the other runs on cost
    pooled = next_round(runs, fit, settings(target_a_width=0.02, pooled_residuals=True), 1, spent)
    assert not fourth_sizes(pooled)
    assert all("no residual" not in r["why"] for r in pooled["runs_added"])


def test_extend_below_false_keeps_new_budgets_above_the_span():
    runs = identified_study()
    fit = copy.deepcopy(fitted(runs))
    fit["objectives"]["clm"]["isoflop"]["a_ci"] = [0.2, 0.8]
    record = next_round(runs, fit, settings(extend_below=False), 1, isoflop_flops_spent(runs))
    assert record["runs_added"] and all(r["budget"] >= 3.125e10 for r in record["runs_added"])
    assert not any("below the lowest budget" in r["why"] for r in record["runs_added"] + record["skipped"])


def test_a_study_bounded_in_gpu_hours_adds_only_what_the_hours_left_pay_for_and_weighs_runs_by_them():
    runs = study(BEYOND, BEYOND_SIZES)
    fit = fitted(runs)
    spent = isoflop_flops_spent(runs)

    def hours(run):  # a job's request grows with its model, not with its budget alone (per-step overhead)
        return 1.0 + run["n_params"] / 1e4

    free = next_round(runs, fit, settings(study_gpu_hours=1e6, gpu_hours_of=hours), 1, spent, 10.0)
    assert free["runs_added"] and free["gpu_hours"] == pytest.approx(sum(hours(r) for r in free["runs_added"]))
    assert free["gpu_hours_spent_before"] == 10.0
    tight = next_round(runs, fit, settings(study_gpu_hours=10.5, gpu_hours_of=hours), 1, spent, 10.0)
    assert tight["runs_added"] == [] and tight["stop"].startswith("study budget spent")
    assert tight["skipped"] and all("GPU-hours" in r["why"] and "study_gpu_hours" in r["why"]
                                    for r in tight["skipped"])
    spent_out = next_round(runs, fit, settings(study_gpu_hours=10.0, gpu_hours_of=hours), 1, spent, 10.0)
    assert spent_out["stop"] == "study budget spent: 10 of 10 GPU-hours (train.isoflop.adaptive.study_gpu_hours)"


def test_study_gpu_hours_on_a_cpu_study_is_refused_naming_the_key():
    config = load_config({"train": {"device": "cpu", "isoflop": {"budgets": [3.125e10], "adaptive": {
        "enabled": True, "study_gpu_hours": 10}}}})
    with pytest.raises(PlmscaleError, match="study_gpu_hours.*train.device 'cpu'"):
        check_adaptive(config)
    check_adaptive({**config, "train": {**config["train"], "device": "cuda"}})  # a GPU study may


def test_a_gpu_study_s_round_counts_the_gpu_hours_its_jobs_request():
    config = demo_config()
    config["train"]["device"] = "cuda"
    config["train"]["isoflop"]["adaptive"]["study_gpu_hours"] = 1e6
    runs = study(BEYOND, BEYOND_SIZES)
    runs["run_id"] = [f"clm_{m}_c{format_number(b)}" for m, b in zip(runs["model"], runs["budget"])]  # grid ids
    record = plan_round(config, runs, fitted(runs), [], 1, source="config.yaml")
    requested = sum(gpu_hours(run["spec"]["resources"]) for run in record["runs_added"])
    assert record["runs_added"] and requested > 0
    assert record["gpu_hours"] == pytest.approx(requested)
    # what the grid's runs requested: each grid run of the table, at its planned spec
    grid = {s.run_id: s for s in expand_grid(config) if s.budget is not None}
    trained = [run_id for run_id in runs["run_id"] if run_id in grid]
    assert trained and record["gpu_hours_spent_before"] == pytest.approx(
        sum(gpu_hours(grid[run_id].resources) for run_id in trained))


def test_a_study_cut_short_by_max_rounds_says_whether_its_final_fit_meets_the_stop_rule():
    config = demo_config(max_rounds=1)
    runs = study(BEYOND, BEYOND_SIZES)
    record = plan_round(config, runs, fitted(runs), [], 1, source="config.yaml")
    assert record["runs_added"] and record["stop"] is None  # round 1 adds runs; no round 2 may judge them
    good = identified_study()
    met = design_record(config, [record], fitted(good))["stop"]
    assert met.startswith("max_rounds: 1 round(s) made") and "is final and meets the stop rule" in met
    missed = design_record(config, [record], fitted(runs))["stop"]
    assert "does not meet the stop rule" in missed and "clm: " in missed
