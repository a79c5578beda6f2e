"""Adaptive IsoFLOP rounds in the real workflow (rules/design.smk): a tiny CLM study whose grid does not pin its
optima down gets a round of runs decided from its fit, trains them by the train rule, refits, writes
design.json, and a rerun has nothing to do."""

import shutil

import pytest

from workflow_helpers import SNAKEMAKE, TINY_STUDY, merged, planned_rules, read_json, run_snakemake, workflow_copy

CONFIG = merged(TINY_STUDY, {
    "data": {"identity": {"enabled": False}},
    "train": {"objectives": ["clm"],
              # the tiny corpus is read many times over by any added run: max_epochs off, or the round refuses
              # them all (test_design_rounds covers that refusal)
              "isoflop": {"adaptive": {"enabled": True, "max_rounds": 1, "min_tokens_per_param": 1,
                                       "max_epochs": None}}},
    "fit": {"bootstrap": 20, "predict_flops": {"clm": ["1e12"]}},
    "export": {"runs": []},
})
TARGETS = ("results/scaling/design.json", "results/scaling/fit.json")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("mmseqs") is None, reason="needs the mmseqs binary"),
              pytest.mark.skipif(not SNAKEMAKE.exists(), reason="needs snakemake next to the Python running pytest")]


def test_a_round_is_added_trained_refitted_recorded_and_a_rerun_is_a_no_op(tmp_path):
    work = workflow_copy(tmp_path / "wf", CONFIG)
    dry = run_snakemake(work, "--dry-run", targets=TARGETS)  # before any run exists: the round is pending
    assert planned_rules(dry)["design_round"] == 1
    run_snakemake(work, targets=TARGETS)
    design = read_json(work / "results/scaling/design.json")
    round_file = read_json(work / "results/scaling/design/round_1.json")
    added = [run["run_id"] for run in round_file["runs_added"]]
    assert added, round_file  # the tiny grid pins nothing down: the round adds runs, each with its reason
    assert design["n_runs_added"] == len(added) and design["rounds"][0]["round"] == 1
    assert all(run["why"] and run["run_id"].startswith("ad1_clm_") for run in design["rounds"][0]["runs_added"])
    assert design["stop"].startswith(("max_rounds", "identified", "study budget", "no run"))
    assert design["added_flops"] == pytest.approx(sum(run["flops"] for run in round_file["runs_added"]))
    # the added runs were trained by the train rule and are in the final runs table and fit
    runs = (work / "results/scaling/runs.csv").read_text()
    for run_id in added:
        assert (work / f"results/runs/{run_id}/metrics.json").exists()
        assert run_id in runs
    assert (work / "results/scaling/design.png").exists()
    assert "Nothing to be done" in run_snakemake(work, "--dry-run", targets=TARGETS)
