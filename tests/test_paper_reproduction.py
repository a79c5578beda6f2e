"""Acceptance: the workflow on the authors' released curves recovers the paper's allocation exponents.

Runs `snakemake --cores 2 --configfile configs/paper-logs.yaml` in a copy of the workflow, with
fit.curves_dir pointing at the released data (../shared/published/ScalingProteinLM/data beside the
repository); skipped where that folder is absent.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CURVES = (REPO / ".." / "shared" / "published" / "ScalingProteinLM" / "data").resolve()
WORKFLOW_PARTS = ["Snakefile", "config.yaml", "rules", "workflow_scripts", "report", "envs", "schemas", "configs",
                  "plmscale"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CURVES.is_dir(), reason=f"released curves not found at {CURVES} "
                       "(clone cxysteven/ScalingProteinLM and put its data/ there)"),
    pytest.mark.skipif(shutil.which("snakemake") is None and not (Path(sys.executable).parent / "snakemake").exists(),
                       reason="snakemake is not installed"),
]


@pytest.fixture(scope="module")
def paper_results(tmp_path_factory):
    work = tmp_path_factory.mktemp("paper-logs")
    for part in WORKFLOW_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, work / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, work / part)
    config = yaml.safe_load((REPO / "configs" / "paper-logs.yaml").read_text())
    config["fit"]["curves_dir"] = str(CURVES)
    (work / "configs" / "paper-logs.yaml").write_text(yaml.safe_dump(config))
    snakemake = shutil.which("snakemake") or str(Path(sys.executable).parent / "snakemake")
    env = dict(os.environ, PYTHONPATH=str(work))
    result = subprocess.run([snakemake, "--cores", "2", "--configfile", "configs/paper-logs.yaml"], cwd=work,
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    fit = json.loads((work / "results" / "scaling" / "fit.json").read_text())
    predictions = json.loads((work / "results" / "scaling" / "predictions.json").read_text())
    return work, fit, predictions


def test_no_training_stage_ran(paper_results):
    work, _, _ = paper_results
    assert not (work / "results" / "data").exists()
    assert not (work / "results" / "runs").exists()
    for name in ("isoflop_clm", "isoflop_mlm", "optimal_allocation", "loss_frontier", "parametric_mlm"):
        assert (work / "results" / "scaling" / f"{name}.png").stat().st_size > 10_000


def test_allocation_exponents_match_the_paper(paper_results):
    _, fit, _ = paper_results
    clm = fit["objectives"]["clm"]["isoflop"]
    mlm = fit["objectives"]["mlm"]["isoflop"]
    assert 0.53 <= clm["a"] <= 0.71, clm["a"]
    assert 0.68 <= mlm["a"] <= 0.84, mlm["a"]
    assert mlm["a"] > clm["a"]
    for law in (clm, mlm):
        low, high = law["a_ci"]
        assert low < law["a"] < high


def test_predictions_cover_the_paper_sizes(paper_results):
    _, _, predictions = paper_results
    for objective, flops, paper_n in (("clm", 1.34e22, 7e9), ("mlm", 1.7e22, 1e10)):
        entry = next(p for p in predictions[objective] if abs(p["flops"] / flops - 1) < 1e-6)
        iso = entry["methods"]["isoflop"]
        low, high = iso["n_opt_ci"]
        assert low <= paper_n <= high, (objective, iso)
