"""The whole workflow, for real: the demo corpus through MMseqs2, shards, CLM/MLM training with a
transfer run, fits, plots, predictions and the closed loop — then what a rerun, a changed run and a grown
study do."""

import json
import shutil

import pytest
import yaml

from workflow_helpers import (SNAKEMAKE, TINY_STUDY, merged, planned_rules, planned_run_ids, read_json,
                              result_numbers, run_snakemake, workflow_copy)

CONFIG = merged(TINY_STUDY, {
    "train": {"objectives": ["clm", "mlm"], "transfer": [{"source_run": "clm_n12k_c1e10", "tokens": 20000}]},
    # The closed loop runs here too: one workflow run serves both (a separate one cost ~95 s of the suite).
    "fit": {"bootstrap": 20, "predict_flops": {"clm": ["1e12"], "mlm": ["1e12"]}, "closed_loop": {"multiples": [3]}},
    "export": {"runs": ["clm_n12k_c1e10", "tmlm_clm_n12k_c1e10"], "samples": 3},
})
METRICS_KEYS = {"run_id", "objective", "shape", "n_params", "n_params_with_embeddings", "tokens", "flops",
                "flops_6nd", "flops_with_attention", "final_valid_loss", "best_valid_loss", "train_loss",
                "steps", "wall_seconds", "tokens_per_second", "mfu", "device", "config_hash", "versions"}

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("mmseqs") is None, reason="needs the mmseqs binary"),
              pytest.mark.skipif(not SNAKEMAKE.exists(), reason="needs snakemake next to the Python running pytest")]


def grid_run_ids(workdir) -> list:
    output = run_snakemake(workdir, "--dry-run", "--forceall")
    return sorted(planned_run_ids(output))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    work = workflow_copy(tmp_path_factory.mktemp("study") / "wf", CONFIG)
    run_snakemake(work)
    return work


def test_every_run_and_the_fit_are_complete(finished):
    run_ids = grid_run_ids(finished)
    assert "tmlm_clm_n12k_c1e10" in run_ids and len(run_ids) >= 8
    for run_id in run_ids:
        metrics = read_json(finished / f"results/runs/{run_id}/metrics.json")
        assert METRICS_KEYS <= set(metrics), METRICS_KEYS - set(metrics)
        assert metrics["flops_6nd"] == pytest.approx(6 * metrics["n_params"] * metrics["tokens"], rel=1e-9)
        assert metrics["flops_with_attention"] > metrics["flops_6nd"]
        assert 0 < metrics["final_valid_loss"] < 10
    assert read_json(finished / "results/runs/tmlm_clm_n12k_c1e10/metrics.json")["init_from"] == "clm_n12k_c1e10"

    fit = read_json(finished / "results/scaling/fit.json")
    assert set(fit["objectives"]) == {"clm", "mlm"}
    for objective in ("clm", "mlm"):
        assert set(fit["objectives"][objective]) >= {"isoflop", "envelope", "parametric"}
    predictions = read_json(finished / "results/scaling/predictions.json")
    assert set(predictions) == {"clm", "mlm"}
    for name in ("isoflop_clm", "optimal_allocation", "loss_frontier"):
        assert (finished / f"results/scaling/{name}.png").stat().st_size > 10_000


def test_the_exported_runs_load_and_the_clm_samples(finished):
    import torch

    from plmscale.alphabet import RESIDUE_IDS, TOKENS
    from plmscale.export.files import load_exported
    from plmscale.train import checkpoint as ckpt

    for run_id in CONFIG["export"]["runs"]:
        model = load_exported(finished / f"results/export/{run_id}")
        trained = ckpt.load(finished / f"results/checkpoints/{run_id}/final.pt")["model"]
        assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in trained.items())
    records = (finished / "results/export/clm_n12k_c1e10.samples.fasta").read_text().split(">")[1:]
    residues = {TOKENS[int(i)] for i in RESIDUE_IDS}
    assert len(records) == 3
    assert all(set("".join(record.splitlines()[1:])) <= residues for record in records)
    assert not (finished / "results/export/tmlm_clm_n12k_c1e10.samples.fasta").exists()  # MLM: no sampling


def test_the_closed_loop_trains_the_planned_run_and_scores_it(finished):
    results = finished / "results"
    validation = read_json(results / "scaling" / "closed_loop.json")["objectives"]
    assert set(validation) == {"clm", "mlm"}
    for objective in ("clm", "mlm"):
        plan = read_json(results / "closed_loop" / f"{objective}_x3" / "plan.json")
        metrics = read_json(results / "closed_loop" / f"{objective}_x3" / "metrics.json")
        record = validation[objective]["x3"]
        assert set(record["methods"]) == {"isoflop", "envelope", "parametric"}
        # The tiny grid's parabolas have no minimum, so no method is identified: the loop records why and
        # trains nothing (the next test gives it an identified forecast and checks the run it trains).
        assert plan["spec"] is None and plan["method"] is None
        assert plan["reason"].startswith("no identified method among ['isoflop', 'parametric']")
        assert metrics == {"run_id": plan["run_id"], "trained": False, "reason": plan["reason"]}
        assert record["trained"] is False
        assert not (results / "checkpoints" / f"fcl_{objective}_x3").exists()


def identified_isoflop_law(k_n: float, a: float, budgets) -> dict:
    """An IsoFLOP entry of fit.json that identifies N_opt = k_n C^a (D_opt = C / 6 N_opt) and L_opt(C)."""
    return {"budgets": list(budgets), "dropped_budgets": [], "optima": [], "k_n": k_n, "a": a,
            "k_d": 1 / (6 * k_n), "b": 1 - a, "loss_floor": 2.0, "k_l": 5.0, "s": -0.05,
            "loss_law": "L_opt = loss_floor + k_l * C^s", "a_ci": [a - 0.05, a + 0.05],
            "b_ci": [1 - a - 0.05, 1 - a + 0.05], "bootstrap": None, "identified": True, "reasons": [],
            "notes": [], "bracketed_budgets": len(budgets), "n_budgets": len(budgets)}


def test_the_closed_loop_trains_an_identified_forecast_and_scores_it(finished, tmp_path):
    """The branch the tiny grid cannot reach: an identified CLM forecast (written into a copy of the finished
    study's fit.json) makes the workflow train the forecast optimum at 3x the top budget and score it."""
    work = tmp_path / "wf"
    shutil.copytree(finished, work, symlinks=True)
    fit_path = work / "results/scaling/fit.json"
    fit = read_json(fit_path)
    # N_opt(3e10) = 10k parameters: inside the test ladder's span, ~0.5M tokens.
    a = 0.5
    fit["objectives"]["clm"]["isoflop"] = identified_isoflop_law(1e4 / 3e10 ** a, a, [3e9, 1e10])
    fit_path.write_text(json.dumps(fit, indent=2))
    run_snakemake(work, targets=["results/scaling/closed_loop.json"])

    results = work / "results"
    plan = read_json(results / "closed_loop/clm_x3/plan.json")
    metrics = read_json(results / "closed_loop/clm_x3/metrics.json")
    record = read_json(results / "scaling/closed_loop.json")["objectives"]["clm"]["x3"]
    assert plan["method"] == "isoflop" and plan["flops"] == pytest.approx(3e10)
    assert plan["n_opt"] == pytest.approx(1e4, rel=1e-6) and plan["spec"] is not None
    run_id = "fcl_clm_x3"
    assert metrics["run_id"] == run_id and metrics["n_params"] == plan["spec"]["n_params"]
    assert abs(metrics["flops"] - plan["flops"]) <= 6 * metrics["n_params"] * plan["spec"]["batch_tokens"]
    assert record["trained"] is True and record["observed_loss"] == metrics["final_valid_loss"]
    assert (results / "checkpoints" / run_id / "final.pt").exists()
    isoflop = record["methods"]["isoflop"]
    forecast = 2.0 + 5.0 * 3e10 ** -0.05
    assert isoflop["loss"] == pytest.approx(forecast)
    assert isoflop["error_pct"] == pytest.approx(100 * (metrics["final_valid_loss"] - forecast) / forecast)


def test_a_finished_study_has_nothing_to_do(finished):
    assert "Nothing to be done" in run_snakemake(finished, "--dry-run")


def dry_run_with(workdir, edit) -> str:
    """A dry run with an edited copy of CONFIG in place; the original config is restored after."""
    changed = yaml.safe_load(yaml.safe_dump(CONFIG))
    edit(changed)
    (workdir / "config.yaml").write_text(yaml.safe_dump(changed))
    try:
        return run_snakemake(workdir, "--dry-run")
    finally:
        (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))


def test_changing_one_model_reruns_its_runs_and_the_fits_only(finished):
    output = dry_run_with(finished, lambda c: c["train"]["ladder"]["n20k"].update(heads=4))
    rerun = planned_run_ids(output)
    assert rerun and all("_n20k_" in run_id for run_id in rerun), rerun
    planned = planned_rules(output)
    assert set(planned) <= {"train", "collect", "measured_cost", "fit", "predict", "plot", "closed_loop_train",
                            "closed_loop_score", "all"}, planned


def test_a_grown_study_trains_only_the_new_points(finished):
    output = dry_run_with(finished, lambda c: c["train"]["isoflop"]["budgets"].append("2e10"))
    rerun = planned_run_ids(output)
    assert rerun and all(run_id.endswith("_c2e10") for run_id in rerun), rerun


def test_training_and_fit_rerun_from_scratch_give_identical_results(finished, tmp_path):
    again = workflow_copy(tmp_path / "again", CONFIG)
    # The data stage's byte-identical rerun is tested in test_data_workflow; start from its shards.
    shutil.copytree(finished / "results/data", again / "results/data")
    run_snakemake(again, "--touch", targets=[f"results/data/shards/{s}/manifest.json"
                                             for s in ("train", "valid", "test")])
    run_snakemake(again)
    for run_id in grid_run_ids(finished):
        first = read_json(finished / f"results/runs/{run_id}/metrics.json")
        second = read_json(again / f"results/runs/{run_id}/metrics.json")
        assert result_numbers(first) == result_numbers(second), run_id
    first_fit = read_json(finished / "results/scaling/fit.json")
    second_fit = read_json(again / "results/scaling/fit.json")
    first_fit.pop("provenance", None), second_fit.pop("provenance", None)
    assert first_fit == second_fit
