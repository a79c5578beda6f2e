"""Acceptance: the workflow on the authors' released curves recovers the paper's allocation exponents.

Runs `snakemake --cores 2 --configfile configs/paper-logs.yaml` in a copy of the workflow, with
fit.curves_dir pointing at the released data (../shared/published/ScalingProteinLM/data beside the
repository); skipped where that folder is absent.
"""

import pytest
import yaml

from workflow_helpers import REPO, SNAKEMAKE, read_json, run_snakemake, workflow_copy

CURVES = (REPO / ".." / "shared" / "published" / "ScalingProteinLM" / "data").resolve()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CURVES.is_dir(), reason=f"released curves not found at {CURVES} "
                       "(clone cxysteven/ScalingProteinLM and put its data/ there)"),
    pytest.mark.skipif(not SNAKEMAKE.exists(), reason="needs snakemake next to the Python running pytest"),
]


@pytest.fixture(scope="module")
def paper_results(tmp_path_factory):
    work = workflow_copy(tmp_path_factory.mktemp("paper-logs") / "wf")
    config = yaml.safe_load((REPO / "configs" / "paper-logs.yaml").read_text())
    config["fit"]["curves_dir"] = str(CURVES)
    (work / "configs" / "paper-logs.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(work, "--configfile", "configs/paper-logs.yaml")
    fit = read_json(work / "results" / "scaling" / "fit.json")
    predictions = read_json(work / "results" / "scaling" / "predictions.json")
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
