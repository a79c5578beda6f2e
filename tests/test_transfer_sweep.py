"""The transfer sweep (train.transfer_sweep, docs/transfer.md): its runs, its config errors, and the known truth of
its two fits (the best CLM share, the effectively transferred tokens law)."""

import numpy as np
import pandas as pd
import pytest

from plmscale.config import load_config
from plmscale.errors import PlmscaleError
from plmscale.grid import expand_grid
from plmscale.grid import shapes
from plmscale.grid.transfer_sweep import transfer_sweep_plan, transfer_sweep_specs
from plmscale.plots.transfer import plot_transfer_sweep
from plmscale.scaling import transfer
from workflow_helpers import SNAKEMAKE, default_config_with, planned_rules, planned_run_ids, run_snakemake, workflow_copy

SWEEP = {"models": ["n7k", "n14k"], "total_flops": 5.0e11, "clm_shares": [0, 0.1, 0.2, 0.4, 0.6]}


def sweep_config(**override):
    return load_config(default_config_with({"train": {"transfer_sweep": {**SWEEP, **override}}}))


# ---- the runs ------------------------------------------------------------------------------------------

def test_sweep_runs_split_one_budget_and_start_mlm_from_the_clm_run_of_the_same_share():
    config = sweep_config(replicates=2, eval_every_steps=500)
    specs = {spec.run_id: spec for spec in transfer_sweep_specs(config)}
    # per model and replicate: 4 CLM runs (shares > 0) and 5 MLM runs
    assert len(specs) == 2 * 2 * (4 + 5)
    scratch = specs["xfer_mlm_n7k_c5e11_s0"]
    assert scratch.objective == "mlm" and scratch.init_from is None
    per_token = shapes.flops_per_token(scratch.shape, config["train"]["seq_len"], "6nd")
    assert scratch.tokens == round(5e11 / per_token)
    for share in (0.1, 0.2, 0.4, 0.6):
        clm, mlm = specs[f"xfer_clm_n7k_c5e11_s{share}"], specs[f"xfer_mlm_n7k_c5e11_s{share}"]
        assert clm.objective == "clm" and mlm.init_from == clm.run_id  # the train.transfer machinery
        assert clm.tokens == round(share * 5e11 / per_token)
        assert mlm.tokens == round((1 - share) * 5e11 / per_token)
        assert mlm.train.eval_every_steps == 500 and clm.train.eval_every_steps == 2000  # only MLM curves are read
    # a replicate: its own ids and seed, shared by all runs of that size and replicate (common random numbers)
    assert specs["xfer_mlm_n7k_c5e11_s0.1_r2"].init_from == "xfer_clm_n7k_c5e11_s0.1_r2"
    assert len({specs[f"xfer_{o}_n7k_c5e11_s0.2"].seed for o in ("clm", "mlm")} | {scratch.seed}) == 1
    assert specs["xfer_mlm_n7k_c5e11_s0_r2"].seed != scratch.seed
    # ids never collide with the study's other runs, and the sweep adds nothing to the grid the fits read
    grid_ids = {spec.run_id for spec in expand_grid(config)}
    assert not grid_ids & set(specs)
    assert grid_ids == {spec.run_id for spec in expand_grid(load_config(default_config_with({})))}
    plan = transfer_sweep_plan(config)
    assert [row["run_id"] for row in plan if row["model"] == "n14k" and row["replicate"] == 1] == [
        f"xfer_mlm_n14k_c5e11_s{s}" for s in ("0", "0.1", "0.2", "0.4", "0.6")]
    assert plan[1]["source_run_id"] == "xfer_clm_n7k_c5e11_s0.1" and plan[0]["source_run_id"] is None


def test_no_sweep_without_models():
    assert transfer_sweep_specs(load_config(default_config_with({}))) == []


@pytest.mark.parametrize("override, key", [
    ({"models": ["n7k", "n99k"]}, "train.transfer_sweep.models"),
    ({"clm_shares": [0.1, 0.2]}, "train.transfer_sweep.clm_shares"),
    ({"clm_shares": [0, 0.2, 0.2]}, "train.transfer_sweep.clm_shares"),
    ({"total_flops": None}, "train.transfer_sweep.total_flops"),
    ({"total_flops": 1.0e8}, "train.transfer_sweep.total_flops"),  # a share shorter than one batch
])
def test_sweep_config_errors_name_the_key(override, key):
    with pytest.raises(PlmscaleError, match=key.replace(".", r"\.")):
        transfer_sweep_specs(sweep_config(**override))


def test_schema_refuses_a_share_of_one_and_unknown_keys():
    with pytest.raises(PlmscaleError, match="transfer_sweep"):
        sweep_config(clm_shares=[0, 1.0])
    with pytest.raises(PlmscaleError, match="transfer_sweep"):
        sweep_config(budget=5e11)


# ---- the best share ------------------------------------------------------------------------------------

def synthetic_sweep(vertex=0.15, curvature=0.6, noise=0.003, sizes=(7000, 14000, 25000), seed=0):
    """Loss = level(N) + curvature·(s − vertex)² + noise, at the sweep's five shares."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        level = 2.0 + 0.1 * np.log10(25000 / n)
        for share in (0, 0.1, 0.2, 0.4, 0.6):
            rows.append({"run_id": f"xfer_mlm_n{n}_s{share}", "model": f"n{n}", "n_params": n, "share": share,
                         "replicate": 1, "total_flops": 5e11, "tokens": (1 - share) * 1e6,
                         "pretrain_tokens": share * 1e6,
                         "loss": level + curvature * (share - vertex) ** 2 + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def test_best_share_recovers_a_parabolas_vertex_inside_its_interval():
    fits = transfer.best_share_fits(synthetic_sweep(vertex=0.15), n_boot=500, seed=1)
    for model, entry in fits["by_model"].items():
        assert entry["identified"], entry["reasons"]
        low, high = entry["interval"]
        assert low < 0.15 < high and high - low < 0.2
        assert entry["raw_best_share"] in (0.1, 0.2)
    pooled = fits["pooled"]
    assert pooled["identified"] and pooled["interval"][0] < 0.15 < pooled["interval"][1]
    assert abs(pooled["best_share"] - 0.15) < 0.03


def test_best_share_at_the_edge_is_not_identified():
    """Transfer that only hurts: the best share is 0 (from scratch), and the verdict says the vertex is outside."""
    fits = transfer.best_share_fits(synthetic_sweep(vertex=-0.3, curvature=0.3), n_boot=200)
    for entry in fits["by_model"].values():
        assert entry["best_share"] == 0.0 and not entry["identified"]
        assert "outside the swept shares" in entry["reasons"][0] or "do not curve up" in entry["reasons"][0]
    two_shares = synthetic_sweep()
    two_shares = two_shares[two_shares["share"].isin([0, 0.6])]
    entry = transfer.best_share_fits(two_shares, n_boot=100)["by_model"]["n7000"]
    assert not entry["identified"] and entry["reasons"][0] == "2 share(s): a parabola needs at least 3"


# ---- effectively transferred tokens --------------------------------------------------------------------

def scratch_curve(run_id, tokens_max=1e7):
    tokens = np.geomspace(1e5, tokens_max, 40)
    return pd.DataFrame({"run_id": run_id, "tokens": tokens, "loss": 2.0 + 10.0 * tokens ** -0.3})


def test_transferred_tokens_are_read_off_the_scratch_curve_and_beyond_it_only_bounded():
    table = pd.DataFrame([
        {"run_id": "s0", "model": "m", "n_params": 1e4, "share": 0.0, "replicate": 1, "total_flops": 1, "tokens": 1e7,
         "pretrain_tokens": 0.0, "loss": 2.0 + 10.0 * 1e7 ** -0.3},
        # reaches the scratch curve's loss at 4e6 tokens after 1e6 MLM tokens: D_T = 3e6
        {"run_id": "s1", "model": "m", "n_params": 1e4, "share": 0.2, "replicate": 1, "total_flops": 1, "tokens": 1e6,
         "pretrain_tokens": 2e6, "loss": 2.0 + 10.0 * 4e6 ** -0.3},
        # lower than the scratch run ever got: beyond the curve
        {"run_id": "s2", "model": "m", "n_params": 1e4, "share": 0.4, "replicate": 1, "total_flops": 1, "tokens": 6e6,
         "pretrain_tokens": 4e6, "loss": 1.9}])
    ett = transfer.transferred_tokens(table, scratch_curve("s0")).set_index("run_id")
    assert ett.loc["s1", "effective_tokens"] == pytest.approx(4e6, rel=0.01)
    assert ett.loc["s1", "transferred_tokens"] == pytest.approx(3e6, rel=0.02)
    assert pd.isna(ett.loc["s2", "effective_tokens"]) and pd.isna(ett.loc["s2", "transferred_tokens"])
    assert ett.loc["s2", "transferred_lower_bound"] == pytest.approx(1e7 - 6e6)
    assert ett.loc["s2", "effective_tokens_from"].startswith("beyond the curve")


def test_transfer_law_recovers_a_synthetic_power_law():
    rng = np.random.default_rng(3)
    d_pre = np.tile([1e5, 3e5, 1e6, 3e6], 3)
    n = np.repeat([7e3, 1.4e4, 2.5e4], 4)
    d_t = 40.0 * d_pre ** 0.6 * n ** 0.3 * np.exp(rng.normal(0, 0.02, len(n)))
    law = transfer.fit_transfer_law(d_pre, n, d_t, n_boot=500, seed=0)
    assert law["alpha"] == pytest.approx(0.6, abs=0.03) and law["beta"] == pytest.approx(0.3, abs=0.05)
    assert law["intervals"]["alpha"][0] < 0.6 < law["intervals"]["alpha"][1]
    assert law["intervals"]["beta"][0] < 0.3 < law["intervals"]["beta"][1]
    assert law["intervals"]["log_k"][0] < np.log(40.0) < law["intervals"]["log_k"][1]
    # one size: no N term; too few points: an error that says what the law needs
    assert transfer.fit_transfer_law(d_pre[:4], n[:4], d_t[:4], n_boot=0)["beta"] is None
    assert "needs more points" in transfer.fit_transfer_law(d_pre[:2], n[:2], d_t[:2])["error"]


def test_summary_and_figure_from_a_synthetic_sweep(tmp_path):
    table = synthetic_sweep()
    curves = pd.concat([scratch_curve(run.run_id, run.tokens) for run in table[table["share"] == 0].itertuples()])
    summary = transfer.transfer_sweep_summary(table, curves, n_boot=100)
    assert summary["shares"] == [0.0, 0.1, 0.2, 0.4, 0.6] and summary["models"] == ["n7000", "n14000", "n25000"]
    # every transfer run is counted once: a point of the law, or left out with its reason
    law = summary["transfer_law"]
    measured = table[table["share"] > 0]
    assert law["left_out_beyond_curve"] + law["left_out_not_positive"] + law.get("n_points", 0) == len(measured)
    assert law["identified"] == (not law["caveats"] and "error" not in law)
    assert {run["run_id"] for run in summary["runs"]} == set(table["run_id"])
    fig = plot_transfer_sweep(summary, tmp_path / "transfer_sweep.png")
    left, right = fig.axes
    assert len([line for line in left.lines if line.get_marker() == "o"]) == 3  # one set of points per size
    assert right.get_xlabel() == "CLM pre-training tokens D_pre"
    # the law is drawn only where identified
    assert right.get_title().startswith("D_T = ") == bool(summary["transfer_law"]["identified"])
    assert (tmp_path / "transfer_sweep.png").exists()


def test_a_best_share_whose_interval_reaches_the_edge_is_not_identified():
    """A vertex just inside the range with noise that moves it to the edge in many refits: not a located optimum."""
    fits = transfer.best_share_fits(synthetic_sweep(vertex=0.03, curvature=0.3, noise=0.01, seed=1), n_boot=300)
    entry = fits["by_model"]["n7000"]
    assert 0 < entry["best_share"] < 0.6 and entry["interval"][0] == 0.0 and not entry["identified"]
    assert "reaches the edge" in " ".join(entry["reasons"])


# ---- the workflow --------------------------------------------------------------------------------------

@pytest.mark.slow  # starts Snakemake: a DAG build of seconds; the fast set (-m "not slow") starts none
@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="needs snakemake next to the Python running pytest")
def test_dry_run_plans_the_sweep_outside_the_scaling_fits(tmp_path):
    workdir = workflow_copy(tmp_path / "wf", default_config_with({"train": {"transfer_sweep": SWEEP}}))
    output = run_snakemake(workdir, "--dry-run", "--forceall")
    assert planned_rules(output)["transfer_sweep"] == 1
    sweep = {spec.run_id for spec in transfer_sweep_specs(sweep_config())}
    assert sweep <= planned_run_ids(output)
    # an MLM run of a share waits for its CLM run; the scaling fits never read the sweep's runs
    job = output.split("wildcards: run_id=xfer_mlm_n14k_c5e11_s0.2\n", 1)[0].rsplit("rule train:", 1)[1]
    assert "results/runs/xfer_clm_n14k_c5e11_s0.2/metrics.json" in job
    collect = output.split("rule collect:", 1)[1].split("\n\n", 1)[0]
    assert "xfer_" not in collect
