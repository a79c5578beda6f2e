"""Mixed CLM+MLM training (issue 24 §4): the step schedule, attention per batch kind, both validation
losses, config errors, the scaling stage leaving mixed runs out, and the comparison with single objectives."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from plmscale.alphabet import MASK_ID
from plmscale.config import load_config, load_config_files
from plmscale.errors import PlmscaleError
from plmscale.grid import RunSpec, expand_grid
from plmscale.model import Transformer
from plmscale.plots.mixed import plot_mixed
from plmscale.run_metrics import RunMetrics, read_metrics, write_metrics
from plmscale.scaling.closed_loop import closed_loop_jobs
from plmscale.scaling.collect import collect_runs
from plmscale.scaling.mixed import compare_mixed, comparison_runs, comparison_table
from plmscale.train import train_run
from plmscale.train.mixed import mixed_loss, mlm_steps, step_objective
from train_fixtures import member_split, shard_dirs, tiny_spec

REPO = Path(__file__).resolve().parent.parent
DEMO = yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return shard_dirs(tmp_path_factory.mktemp("mixed"), member_split(n_families=4))


def mixed_spec(tokens=4000, fraction=0.5, **train):
    return tiny_spec("mixed", tokens=tokens, mixed={"mlm_fraction": fraction}, **{"eval_every_steps": 4, **train})


def run(spec, shards, directory):
    return train_run(spec, *shards, directory / "out", directory / "checkpoints", threads=1)


# ---- the schedule ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.5, 0.25, 0.3, 0.9, 1 / 3])
def test_every_prefix_of_the_schedule_holds_the_set_share_of_mlm_steps(fraction):
    kinds = [step_objective(step, fraction) for step in range(2000)]
    is_mlm = np.cumsum([kind == "mlm" for kind in kinds])
    for k in range(1, 2001):
        assert is_mlm[k - 1] == mlm_steps(k, fraction)
        assert abs(is_mlm[k - 1] - k * fraction) < 1  # never more than one step off the share
    assert kinds == [step_objective(step, fraction) for step in range(2000)]  # a pure function of the step


def test_half_and_half_alternates_clm_then_mlm():
    assert [step_objective(step, 0.5) for step in range(6)] == ["clm", "mlm"] * 3


# ---- the run -----------------------------------------------------------------------------------------------

def test_clm_batches_attend_causally_and_mlm_batches_both_ways(shards, tmp_path, monkeypatch):
    seen = []  # (causal, any <mask> among the inputs) of every forward: training steps, then evaluations
    forward = Transformer.forward

    def recording(self, tokens, causal, *args, **kwargs):
        seen.append((causal, bool((tokens == MASK_ID).any())))
        return forward(self, tokens, causal, *args, **kwargs)

    monkeypatch.setattr(Transformer, "forward", recording)
    metrics = run(mixed_spec(tokens=3000, eval_every_steps=100, micro_batch_size=8), shards, tmp_path)
    steps = metrics["steps"]
    training = seen[:steps]  # one micro-batch per step (8 sequences of 64 tokens); the evaluations come after
    assert [causal for causal, _ in training] == [step_objective(s, 0.5) == "clm" for s in range(steps)]
    assert all(masked != causal for causal, masked in training)  # MLM inputs are masked, CLM inputs never
    evaluations = seen[steps:]
    assert {causal for causal, _ in evaluations} == {True, False}  # validated on both objectives
    assert metrics["mixed"] == {"mlm_fraction": 0.5, "mlm_steps": steps // 2, "clm_steps": steps - steps // 2}


def test_a_mixed_run_reports_both_valid_losses_and_reruns_byte_identically(shards, tmp_path):
    first = run(mixed_spec(), shards, tmp_path / "a")
    second = run(mixed_spec(), shards, tmp_path / "b")
    losses = first["valid_loss_by_objective"]
    assert set(losses) == {"clm", "mlm"} and all(2.0 < v < 4.0 for v in losses.values())
    assert first["final_valid_loss"] == pytest.approx(mixed_loss(losses, 0.5))
    assert first["objective"] == "mixed" and first["flops"] == 6 * first["n_params"] * first["tokens"]
    read_metrics(tmp_path / "a" / "out" / "metrics.json")  # valid against the schema
    timing = {"wall_seconds", "tokens_per_second", "achieved_flops_per_second", "mfu"}
    assert {k: v for k, v in first.items() if k not in timing} == {k: v for k, v in second.items() if k not in timing}
    curve_a = (tmp_path / "a" / "out" / "curve.csv").read_text()
    assert curve_a == (tmp_path / "b" / "out" / "curve.csv").read_text()
    rows = list(csv.DictReader(curve_a.splitlines()))
    assert list(rows[0])[-3:] == ["step_objective", "valid_loss_clm", "valid_loss_mlm"]
    assert [r["step_objective"] for r in rows] == [step_objective(s, 0.5) for s in range(len(rows))]
    assert float(rows[-1]["valid_loss_clm"]) == losses["clm"] and float(rows[-1]["valid_loss_mlm"]) == losses["mlm"]
    evaluated = [r for r in rows if r["valid_loss"]]
    assert len(evaluated) > 1 and all(r["valid_loss_clm"] and r["valid_loss_mlm"] for r in evaluated)


def test_a_stopped_mixed_run_resumes_to_the_uninterrupted_result(shards, tmp_path):
    """The schedule is a function of the step, so a resumed run trains the kinds an uninterrupted one does."""
    whole = run(mixed_spec(checkpoint_every_steps=3), shards, tmp_path / "whole")
    directory = tmp_path / "resumed"
    assert train_run(mixed_spec(checkpoint_every_steps=3), *shards, directory / "out", directory / "checkpoints",
                     threads=1, stop_after_steps=4) is None
    resumed = run(mixed_spec(checkpoint_every_steps=3), shards, directory)
    for key in ("final_valid_loss", "valid_loss_by_objective", "mixed", "tokens", "train_loss"):
        assert resumed[key] == whole[key]
    assert (directory / "out" / "curve.csv").read_text() == (tmp_path / "whole" / "out" / "curve.csv").read_text()


def test_a_single_objective_spec_is_as_it_was():
    """No `mixed` key in a clm run's spec (so its params and checkpoint hash are unchanged)."""
    spec = RunSpec.from_dict(tiny_spec("clm"))
    assert "mixed" not in spec.to_dict() and spec.mixed is None
    assert RunSpec.from_dict(mixed_spec()).to_dict()["mixed"] == {"mlm_fraction": 0.5}


# ---- config ------------------------------------------------------------------------------------------------

def demo(**train):
    raw = json.loads(json.dumps(DEMO))
    raw["train"].update(train)
    return raw


def test_mixed_runs_in_the_grid_and_as_explicit_runs_get_mixed_ids_and_the_mix():
    config = load_config(demo(objectives=["clm", "mixed"], mixed={"mlm_fraction": 0.25},
                              runs=[{"objective": "mixed", "model": "n14k", "tokens": 2e6}],
                              isoflop={**DEMO["train"]["isoflop"], "adaptive": {"enabled": False}}))
    specs = {s.run_id: s for s in expand_grid(config)}
    assert specs["mixed_n25k_c1.25e11"].mixed == {"mlm_fraction": 0.25}
    assert specs["mixed_n25k_c1.25e11"].tokens == specs["clm_n25k_c1.25e11"].tokens  # equal FLOPs by construction
    assert specs["mixed_n14k_d2e6"].objective == "mixed"
    assert all(s.mixed is None for s in specs.values() if s.objective != "mixed")


@pytest.mark.parametrize("train, message", [
    ({"objectives": ["clm", "mixed"], "mixed": {"mlm_fraction": 1.0}}, r"train/mixed/mlm_fraction"),
    ({"objectives": ["clm", "mixed"], "mixed": {"mlm_fraction": 0}}, r"train/mixed/mlm_fraction"),
    ({"objectives": ["clm", "mixed"], "mixed": {"mlm_share": 0.5}}, r"train/mixed"),
    ({"objectives": ["clm", "mixd"]}, r"train/objectives"),
])
def test_config_errors_name_the_key(train, message):
    with pytest.raises(PlmscaleError, match=message):
        load_config(demo(**train))


def test_mixed_in_a_wsd_or_adaptive_grid_is_refused_with_the_key():
    raw = demo(objectives=["clm", "mixed"])
    raw["train"]["isoflop"]["schedule"] = "wsd"
    with pytest.raises(PlmscaleError, match=r"train.isoflop.schedule cosine"):
        expand_grid(load_config(raw))
    raw = demo(objectives=["clm", "mixed"])
    raw["train"]["isoflop"]["adaptive"] = {"enabled": True}
    with pytest.raises(PlmscaleError, match=r"train.isoflop.adaptive.*train.runs"):
        expand_grid(load_config(raw))


def test_a_spec_without_its_mix_is_refused():
    spec = tiny_spec("mixed")
    with pytest.raises(PlmscaleError, match=r"mlm_fraction"):
        RunSpec.from_dict(spec)
    with pytest.raises(PlmscaleError, match=r"strictly between 0 and 1"):
        RunSpec.from_dict({**spec, "mixed": {"mlm_fraction": 1.5}})


# ---- the scaling stage -------------------------------------------------------------------------------------

def record(run_id, objective, model="n14k", loss=2.5, by_objective=None, tokens=6_000_000, n_params=13944, seed=1):
    return RunMetrics(run_id=run_id, objective=objective, model=model, n_params=n_params, tokens=tokens,
                      target_tokens=tokens, flops=6.0 * n_params * tokens, budget=6.0 * n_params * tokens,
                      final_valid_loss=loss, init_from=None, seed=seed,
                      mixed={"mlm_fraction": 0.5, "mlm_steps": 5, "clm_steps": 5} if by_objective else None,
                      valid_loss_by_objective=by_objective)


def test_collect_leaves_mixed_runs_out_of_the_fits(tmp_path, caplog):
    paths = []
    for metrics in (record("clm_n14k_c5e11", "clm"), record("mixed_n14k_c5e11", "mixed", loss=2.6,
                                                            by_objective={"clm": 2.4, "mlm": 2.8})):
        path = tmp_path / metrics.run_id / "metrics.json"
        path.parent.mkdir()
        write_metrics(path, metrics)
        paths.append(path)
    with caplog.at_level("INFO"):
        runs, _ = collect_runs(paths)
    assert runs["run_id"].tolist() == ["clm_n14k_c5e11"]
    assert "left out 1 mixed run(s) (mixed_n14k_c5e11)" in caplog.text


def test_the_closed_loop_of_a_grid_with_mixed_runs_closes_clm_and_mlm_only():
    raw = demo(objectives=["clm", "mlm", "mixed"])
    assert {objective for objective, _, _ in closed_loop_jobs(load_config(raw))} == {"clm", "mlm"}


def synthetic_table(mixed_clm=(2.30, 2.32), mixed_mlm=(2.40, 2.42), clm=(2.20, 2.21), mlm=(2.30, 2.31)):
    records = [record(f"clm_n14k_c5e11{s}", "clm", loss=v, seed=i) for i, (s, v) in enumerate(zip(("", "_r2"), clm))]
    records += [record(f"mlm_n14k_c5e11{s}", "mlm", loss=v, seed=i) for i, (s, v) in enumerate(zip(("", "_r2"), mlm))]
    records += [record(f"mixed_n14k_c5e11{s}", "mixed", loss=(c + m) / 2, by_objective={"clm": c, "mlm": m}, seed=i)
                for i, (s, c, m) in enumerate(zip(("", "_r2"), mixed_clm, mixed_mlm))]
    records.append(record("clm_n55k_c5e11", "clm", model="n55k", n_params=55000, tokens=1_500_000))  # no partner
    return comparison_table([r.to_dict() for r in records])


def test_mixed_worse_than_both_beyond_the_seed_noise_reproduces_the_paper():
    result = compare_mixed(synthetic_table())
    (point,) = result["comparisons"]
    clm, mlm = point["objectives"]["clm"], point["objectives"]["mlm"]
    assert clm["difference"] == pytest.approx(2.31 - 2.205) and mlm["difference"] == pytest.approx(2.41 - 2.305)
    assert clm["single"]["seed_sd"] == pytest.approx(np.std([2.20, 2.21], ddof=1))
    assert clm["difference_se"] == pytest.approx(np.sqrt(np.var([2.30, 2.32], ddof=1) / 2
                                                         + np.var([2.20, 2.21], ddof=1) / 2))
    assert clm["verdict"] == mlm["verdict"] == "mixed worse" and clm["flops_ratio"] == 1.0
    assert result["reproduces_paper"] is True
    assert "n14k at 5.02e+11 FLOPs on CLM: +0.105 nats" in result["sentence"]
    assert "as the paper found" in result["sentence"]


def test_a_difference_inside_the_seed_noise_is_called_that():
    result = compare_mixed(synthetic_table(mixed_clm=(2.15, 2.27)))
    assert result["comparisons"][0]["objectives"]["clm"]["verdict"] == "within seed noise"
    assert result["reproduces_paper"] is None and "neither confirm nor contradict" in result["sentence"]
    better = compare_mixed(synthetic_table(mixed_mlm=(2.10, 2.11)))
    assert better["comparisons"][0]["objectives"]["mlm"]["verdict"] == "mixed better"
    assert better["reproduces_paper"] is False


def test_a_missing_side_is_reported_and_no_mixed_run_is_an_error():
    table = synthetic_table()
    result = compare_mixed(table[table["objective"] != "mlm"])
    assert result["comparisons"][0]["objectives"]["mlm"]["compared"] is False
    assert "no mlm run of this size" in result["comparisons"][0]["objectives"]["mlm"]["reason"]
    with pytest.raises(PlmscaleError, match=r"no mixed run.*train.objectives"):
        compare_mixed(table[table["objective"] != "mixed"])


def test_the_comparison_takes_each_mixed_runs_partners_of_the_same_size_and_tokens():
    config = load_config_files([REPO / "config.yaml", REPO / "configs" / "mixed.yaml"])[0]
    specs = expand_grid(config)
    assert sorted(comparison_runs(specs)) == sorted(s.run_id for s in specs)  # the preset is only the comparison
    config = load_config(demo(runs=DEMO["train"]["runs"] + [{"objective": "mixed", "model": "n14k", "tokens": 2e6}]))
    assert comparison_runs(expand_grid(config)) == ["mlm_n14k_d2e6", "mixed_n14k_d2e6"]  # not the transfer run


def test_the_figure_shows_every_seed_and_the_difference(tmp_path):
    result = compare_mixed(synthetic_table())
    fig = plot_mixed(result, tmp_path / "mixed.png")
    clm_axis, mlm_axis = fig.axes
    points = [line for line in clm_axis.lines if line.get_marker() in ("o", "^")]
    assert sorted(tuple(sorted(line.get_ydata())) for line in points) == [(2.20, 2.21), (2.30, 2.32)]
    assert any("+0.105" in text.get_text() for text in clm_axis.texts)
    assert (tmp_path / "mixed.png").exists() and (tmp_path / "mixed.svg").exists()


@pytest.mark.slow  # starts Snakemake: a DAG build of seconds; the fast set (-m "not slow") starts none
def test_the_workflow_compares_mixed_runs_and_fits_without_them(tmp_path):
    """`snakemake -n` on the demo with configs/mixed.yaml: compare_mixed reads every run of the overlay; collect
    (so the fits) none of the mixed ones."""
    from workflow_helpers import default_config_with, planned_rules, run_snakemake, workflow_copy
    overlay = yaml.safe_load((REPO / "configs" / "mixed.yaml").read_text())
    output = run_snakemake(workflow_copy(tmp_path / "wf", default_config_with(overlay)), "--dry-run")
    assert planned_rules(output)["compare_mixed"] == 1 and planned_rules(output)["train"] == 12
    inputs = {block.split(":", 1)[0]: block.split("input:", 1)[1].split("\n", 1)[0]
              for block in output.split("\nrule ")[1:] if "input:" in block}
    assert inputs["compare_mixed"].count("results/runs/") == 12
    assert "results/runs/clm_n14k_c5e11_r2/metrics.json" in inputs["collect"]
    assert "mixed_" not in inputs["collect"]
