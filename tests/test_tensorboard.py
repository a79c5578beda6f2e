"""TensorBoard scalars next to each run's curve.csv (issue 25 §2), read back by `plmscale import-curves`
as the authors' released curves are: a resumed run's files read as the uninterrupted run's curve."""

import csv

import pytest

from plmscale.cli import main as cli_main
from plmscale.errors import PlmscaleError
from plmscale.scaling.importer import import_curves, load_import_config, read_scalar_events
from plmscale.train import train_run
from train_fixtures import member_split, shard_dirs, tiny_spec

pytest.importorskip("tensorboard", reason="the `watch` extra (tensorboard) is not installed; `make` installs it")

TINY_N = 2 * (4 * 32 * 32 + 3 * 32 * 128 + 64) + 32  # 2 layers, d_model 32, ffn 128: non-embedding parameters
IMPORT_CONFIG = f"""
format: {{tag: loss/valid_vs_megaflops, flops_unit: 1.0e6, flops_per_param_token: 6}}
run_name_from: folder
drop_identical_curves: false
unknown_size: error
budget_regex: '_c(?P<budget>[0-9]+(?:\\.[0-9]+)?e[0-9]+)$'
size_map: {{tiny: {TINY_N}}}
groups:
  - {{glob: 'runs/clm_*/events.out.tfevents.*', objective: clm, size_from: name, size_regex: '^clm_(?P<label>tiny)_'}}
"""


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return shard_dirs(tmp_path_factory.mktemp("tb"), member_split(n_families=4))


def _valid_points(curve_csv):
    with open(curve_csv) as handle:
        return [(float(r["flops"]), float(r["valid_loss"])) for r in csv.DictReader(handle) if r["valid_loss"]]


def test_runs_write_event_files_that_import_curves_reads_back(shards, tmp_path):
    results = tmp_path / "results"
    whole = tiny_spec("clm", tokens=6000, run_id="clm_tiny_c1e9", checkpoint_every_steps=4)
    resumed = tiny_spec("clm", tokens=6000, run_id="clm_tiny_c2e9", checkpoint_every_steps=4)
    train_run(whole, *shards, results / "runs" / whole["run_id"], tmp_path / "ck" / "a", threads=1)
    # killed after step 6 (last checkpoint at 4), then resumed: two event files in the run's folder
    assert train_run(resumed, *shards, results / "runs" / resumed["run_id"], tmp_path / "ck" / "b", threads=1,
                     stop_after_steps=6) is None
    metrics = train_run(resumed, *shards, results / "runs" / resumed["run_id"], tmp_path / "ck" / "b", threads=1)
    assert len(list((results / "runs" / resumed["run_id"]).glob("events.out.tfevents.*"))) == 2

    config = tmp_path / "import.yaml"
    config.write_text(IMPORT_CONFIG)
    assert cli_main(["import-curves", str(results), "--config", str(config), "--out", str(tmp_path / "out.csv")]) == 0
    runs, curves = import_curves(results, load_import_config(config))
    assert len(runs) == 2 and (tmp_path / "out.csv").exists()
    for run_id in (whole["run_id"], resumed["run_id"]):
        expected = _valid_points(results / "runs" / run_id / "curve.csv")
        row = runs[runs["name"] == run_id].iloc[0]
        assert row["n_params"] == TINY_N
        assert row["loss"] == pytest.approx(expected[-1][1], rel=1e-6)  # float32 in the event file
        points = curves[curves["run_id"] == row["run_id"]].sort_values("flops")
        # the resumed run's curve is the uninterrupted one: no point twice, none of the killed attempt's
        assert len(points) == len(expected)
        assert points["flops"].tolist() == pytest.approx([round(f / 1e6) * 1e6 for f, _ in expected], rel=1e-9)
        assert points["loss"].tolist() == pytest.approx([loss for _, loss in expected], rel=1e-6)
    assert metrics["final_valid_loss"] == pytest.approx(runs[runs["name"] == resumed["run_id"]]["loss"].iat[0], rel=1e-6)


def test_an_event_file_without_the_tag_names_the_file_and_the_setting(shards, tmp_path):
    spec = tiny_spec("clm", tokens=2000, run_id="clm_tiny_c1e9")
    train_run(spec, *shards, tmp_path / "run", tmp_path / "ck", threads=1)
    event_file = next((tmp_path / "run").glob("events.out.tfevents.*"))
    with pytest.raises(PlmscaleError, match=r"no scalar 'loss/valid_vs_gigaflops' \(it has \[.*'loss/valid'.*\]\); "
                                            r"set format.tag"):
        read_scalar_events(event_file, "loss/valid_vs_gigaflops")
    with pytest.raises(PlmscaleError, match="set format.tag in the import config"):
        read_scalar_events(event_file, None)
