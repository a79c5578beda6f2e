"""The training loop: metrics, learning, exact resume after kill -9, guards, safe checkpoints, transfer."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plmscale.errors import PlmscaleError
from plmscale import run_metrics
from plmscale.train import checkpoint as ckpt
from plmscale.train import loop, train_run
from train_fixtures import member_split, shard_dirs, tiny_spec, unigram_entropy
from workflow_helpers import result_numbers

REPO = Path(__file__).resolve().parent.parent
METRIC_KEYS = {"run_id", "objective", "shape", "model", "n_params", "n_params_with_embeddings", "tokens", "flops",
               "flops_6nd", "flops_with_attention", "budget", "final_valid_loss", "best_valid_loss", "train_loss",
               "steps", "wall_seconds", "tokens_per_second", "mfu", "device", "config_hash", "versions",
               "init_from"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return shard_dirs(tmp_path_factory.mktemp("train"), member_split(n_families=4))


def run(spec, shards, tmp_path, name="run", **kwargs):
    return train_run(spec, *shards, tmp_path / name / "out", tmp_path / "checkpoints" / spec["run_id"], threads=1,
                     **kwargs)


def test_outputs_have_every_key_and_consistent_counts(shards, tmp_path):
    spec = tiny_spec("mlm", tokens=6000)
    metrics = run(spec, shards, tmp_path)
    assert METRIC_KEYS <= set(metrics)
    on_disk = json.loads((tmp_path / "run" / "out" / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert list(on_disk)[0] == "metrics_version" and on_disk["metrics_version"] == run_metrics.METRICS_VERSION
    assert run_metrics.read_metrics(tmp_path / "run" / "out" / "metrics.json").to_dict() == on_disk
    assert metrics["n_params"] == 2 * (4 * 32 * 32 + 3 * 32 * 128 + 64) + 32
    assert metrics["flops"] == metrics["flops_6nd"] == 6 * metrics["n_params"] * metrics["tokens"]
    assert metrics["flops_with_attention"] > metrics["flops_6nd"]
    assert abs(metrics["tokens"] - 6000) / 6000 < 0.15  # real tokens, close to the asked D
    with open(tmp_path / "run" / "out" / "curve.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", "tokens", "flops", "train_loss", "valid_loss", "lr"]
    assert len(rows) == metrics["steps"] and rows[-1]["valid_loss"] != ""
    assert int(rows[-1]["tokens"]) == metrics["tokens"]
    assert any(r["valid_loss"] == "" for r in rows)  # evaluated every K steps, not every step
    prov = json.loads((tmp_path / "run" / "out" / "provenance.json").read_text())
    assert prov["seed"] == 11 and prov["config_hash"] == metrics["config_hash"]
    # final weights kept for transfer, the rolling checkpoint removed, all weights_only-loadable
    final = tmp_path / "checkpoints" / spec["run_id"] / "final.pt"
    assert torch.load(final, weights_only=True)["model"]["embed.weight"].shape == (33, 32)
    assert not (final.parent / "last.pt").exists()


def test_compile_on_cpu_without_a_compiler_says_what_to_install(shards, tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-for-plmscale")
    with pytest.raises(PlmscaleError, match=r"C\+\+ compiler .*no-such-compiler-for-plmscale.*train\.compile: false"):
        run(tiny_spec(tokens=2000, compile=True), shards, tmp_path)


@pytest.mark.slow  # torch.compile builds C++ kernels first: not in the fast set
def test_compiled_steps_rerun_identically_and_learn_as_eager_steps_do(shards, tmp_path):
    """train.compile (configs/paper.yaml's setting; off in the demo): a compiled run is the same run again
    (same final loss to the last bit), and follows the eager run to within float reordering. Compiling
    costs ~10-30 s once per graph."""
    settings = dict(tokens=6000, eval_every_steps=100)
    eager = run(tiny_spec(**settings), shards, tmp_path, "eager")
    torch._dynamo.utils.counters.clear()
    compiled = [run(tiny_spec(**settings, compile=True, run_id=f"clm_compiled_{i}"), shards, tmp_path, f"compiled_{i}")
                for i in range(2)]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the steps did go through the compiler
    assert compiled[0]["final_valid_loss"] == compiled[1]["final_valid_loss"]
    assert compiled[0]["steps"] == eager["steps"] and compiled[0]["tokens"] == eager["tokens"]
    assert compiled[0]["final_valid_loss"] == pytest.approx(eager["final_valid_loss"], rel=0.01)


@pytest.mark.slow
def test_clm_loss_falls_well_below_unigram_entropy(tmp_path):
    train, valid = member_split(n_families=4)
    spec = tiny_spec("clm", tokens=200_000, seq_len=128, batch_tokens=1024, micro_batch_size=8, lr=5e-3,
                     eval_every_steps=100, checkpoint_every_steps=10_000)
    spec["shape"] = {"layers": 2, "d_model": 64, "heads": 4}
    metrics = train_run(spec, train, valid, tmp_path / "out", tmp_path / "ck", threads=1)
    baseline = unigram_entropy(train, valid)
    assert metrics["final_valid_loss"] < 0.75 * baseline, (metrics["final_valid_loss"], baseline)


def test_stopped_run_resumes_to_the_same_final_loss(shards, tmp_path):
    spec = tiny_spec("mlm", tokens=8000, checkpoint_every_steps=4)
    full = run(spec, shards, tmp_path, "full")
    ck = tmp_path / "ck2"
    assert train_run(spec, *shards, tmp_path / "half", ck, threads=1, stop_after_steps=6) is None
    state = torch.load(ck / "last.pt", weights_only=True)
    assert state["step"] == 4 and isinstance(state["rng"]["torch"], torch.Tensor)
    resumed = train_run(spec, *shards, tmp_path / "half", ck, threads=1)
    assert resumed["steps"] == full["steps"] and resumed["tokens"] == full["tokens"]
    assert resumed["final_valid_loss"] == full["final_valid_loss"]
    assert resumed["train_loss"] == full["train_loss"]
    assert (tmp_path / "half" / "curve.csv").read_text() == (tmp_path / "full" / "out" / "curve.csv").read_text()
    # Every field but the machine's timings: the sampler's crop count used to restart from 0 on resume.
    assert full["cropped_sequences"] > 0
    assert result_numbers(resumed) == result_numbers(full)


KILLER = """
import os, signal, sys
from plmscale.train import checkpoint
real_save = checkpoint.save
def save(obj, path):
    real_save(obj, path)
    if path.name == "last.pt" and obj["step"] >= int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9: no cleanup, no finally
checkpoint.save = save
from plmscale.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill_9_then_restart_gives_the_uninterrupted_result(shards, tmp_path):
    spec = tiny_spec("clm", tokens=8000, checkpoint_every_steps=3)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    args = ["train", "--spec", str(spec_path), "--train-shards", str(shards[0]), "--valid-shards",
            str(shards[1]), "--out", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ck"),
            "--threads", "1"]
    env = dict(os.environ, KILL_AT_STEP="6", PYTHONPATH=str(REPO))
    killed = subprocess.run([sys.executable, "-c", KILLER, *args], env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert torch.load(tmp_path / "ck" / "last.pt", weights_only=True)["step"] == 6
    restarted = subprocess.run([sys.executable, "-m", "plmscale.cli", *args], env=env, capture_output=True,
                               text=True)
    assert restarted.returncode == 0, restarted.stderr
    assert "resumed clm_tiny at step 6" in restarted.stderr
    resumed = json.loads((tmp_path / "out" / "metrics.json").read_text())
    full = run(spec, shards, tmp_path, "full")
    assert resumed["final_valid_loss"] == pytest.approx(full["final_valid_loss"], abs=1e-6)
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], abs=1e-6)


def test_checkpoint_of_other_settings_is_not_resumed(shards, tmp_path):
    spec = tiny_spec("clm", tokens=6000, checkpoint_every_steps=2)
    train_run(spec, *shards, tmp_path / "o", tmp_path / "ck", threads=1, stop_after_steps=3)
    changed = dict(spec, lr=1e-3)
    metrics = train_run(changed, *shards, tmp_path / "o", tmp_path / "ck", threads=1)
    fresh = train_run(changed, *shards, tmp_path / "p", tmp_path / "ck_fresh", threads=1)
    assert metrics["final_valid_loss"] == fresh["final_valid_loss"]


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(shards, tmp_path, monkeypatch):
    real_build = loop.build_model
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        model = real_build(*args, **kwargs)
        forward = model.forward

        def bad_forward(tokens, causal, labels=None):
            out = forward(tokens, causal, labels)
            if labels is not None and model.training:
                calls["n"] += 1
                if calls["n"] > 2 * 7:  # 2 micro-batches per step: step 8 goes non-finite
                    return out[0], out[1] * float("nan")
            return out
        model.forward = bad_forward
        return model

    monkeypatch.setattr(loop, "build_model", poisoned)
    spec = tiny_spec("clm", tokens=20_000, checkpoint_every_steps=5)
    with pytest.raises(PlmscaleError, match="non-finite loss at step 8 .*last good checkpoint .*last.pt is kept"):
        run(spec, shards, tmp_path)
    assert torch.load(tmp_path / "checkpoints" / spec["run_id"] / "last.pt", weights_only=True)["step"] == 5


def test_checkpoints_refuse_to_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    torch.save({"model": Evil()}, tmp_path / "last.pt")
    with pytest.raises(PlmscaleError, match="cannot read checkpoint"):
        ckpt.load(tmp_path / "last.pt")


def test_transfer_starts_mlm_from_clm_weights(shards, tmp_path):
    source = tiny_spec("clm", tokens=8000, run_id="clm_src")
    run(source, shards, tmp_path, "src")
    transfer = tiny_spec("mlm", tokens=3000, run_id="tmlm_clm_src")
    transfer["init_from"] = "clm_src"
    run(dict(transfer, init_from=None, run_id="mlm_scratch"), shards, tmp_path, "scratch")
    metrics = run(transfer, shards, tmp_path, "transfer")
    assert metrics["init_from"] == "clm_src"
    with open(tmp_path / "transfer" / "out" / "curve.csv") as t, open(tmp_path / "scratch" / "out" / "curve.csv") as s:
        first_t, first_s = next(csv.DictReader(t)), next(csv.DictReader(s))
    assert float(first_t["train_loss"]) < float(first_s["train_loss"])  # starts from learned weights
    assert float(first_t["lr"]) == float(first_s["lr"])  # fresh schedule
    missing = dict(transfer, run_id="tmlm_nothing", init_from="nothing")
    with pytest.raises(PlmscaleError, match="nothing/final.pt.*train that run first"):
        run(missing, shards, tmp_path, "missing")


def test_cli_reports_a_missing_spec_without_traceback(tmp_path):
    from plmscale.cli import main
    code = main(["train", "--spec", str(tmp_path / "nope.json"), "--train-shards", "a", "--valid-shards", "b",
                 "--out", "c", "--checkpoint-dir", "d"])
    assert code == 2


def test_recipe_decides_a_hand_spec_and_is_in_provenance(shards, tmp_path):
    from plmscale import recipe as recipes

    small = recipes.make_recipe("small-scale", {"lr_ref": 4e-3, "n_ref": 1e4, "lr_exponent": -1 / 3,
                                                "min_steps": 20, "min_batch_tokens": 256, "max_batch_tokens": 4096})
    spec = tiny_spec("clm", tokens=6000, lr=None, batch_tokens=None, warmup_fraction=None,
                     recipe=recipes.record(small))
    metrics = run(spec, shards, tmp_path)  # lr, batch and warm-up left to the spec's recipe
    assert metrics["peak_lr"] == pytest.approx(4e-3 * (metrics["n_params"] / 1e4) ** (-1 / 3))
    assert metrics["batch_sequences"] == 256 // 64  # 6000/20 tokens -> 256-token batches of 64-token rows
    assert metrics["recipe"] == "small-scale" and metrics["recipe_sha256"] == recipes.record(small)["sha256"]
    prov = json.loads((tmp_path / "run" / "out" / "provenance.json").read_text())
    assert prov["recipe"]["sha256"] == metrics["recipe_sha256"] and prov["recipe"]["constants"]["n_ref"] == 1e4


def test_a_checkpoint_of_the_model_without_positions_is_not_resumed(tmp_path):
    """Version-1 checkpoints predate the rotary fix (their model had no position information): a rerun must
    start over rather than continue that model under the fixed code."""
    ckpt.save({"format_version": 1, "config_hash": "h", "step": 7}, tmp_path / ckpt.LAST)
    assert ckpt.load_resumable(tmp_path, "h") is None
    ckpt.save({"format_version": ckpt.FORMAT_VERSION, "config_hash": "h", "step": 7}, tmp_path / ckpt.LAST)
    assert ckpt.load_resumable(tmp_path, "h")["step"] == 7


# ---- metrics.json: one typed record (plmscale.run_metrics) and schemas/metrics.schema.json ----------------

def test_the_metrics_schema_and_the_dataclass_agree():
    """Users read the schema, code reads the dataclass: the same keys, the same required ones, the same types."""
    import dataclasses
    import typing

    schema = run_metrics.load_schema()
    fields = {f.name: f for f in dataclasses.fields(run_metrics.RunMetrics)}
    assert list(schema["properties"]) == [run_metrics.VERSION_KEY, *fields]  # the order metrics.json is written in
    assert schema["required"] == list(run_metrics.REQUIRED) and schema["additionalProperties"] is False
    python_types = {"string": str, "integer": int, "number": float, "boolean": bool, "object": dict,
                    "array": list, "null": type(None)}
    for name, field in fields.items():
        declared = schema["properties"][name]["type"]
        declared = {python_types[t] for t in (declared if isinstance(declared, list) else [declared])}
        annotated = set(typing.get_args(field.type)) or {field.type}
        if name not in run_metrics.REQUIRED:  # optional for hand-written records: the dataclass allows None
            declared.add(type(None))
        assert declared == annotated, name


def _minimal_metrics(**changes):
    record = {"run_id": "clm_n1M_c1e15", "objective": "clm", "model": "n1M", "n_params": 10**6, "tokens": 2e8,
              "flops": 1.2e15, "budget": 1.2e15, "final_valid_loss": 2.5, "init_from": None}
    record.update(changes)
    return {key: value for key, value in record.items() if value != "drop"}


@pytest.mark.parametrize("changes, message", [
    ({"final_valid_loss": "drop"}, r"metrics lack key\(s\) final_valid_loss"),
    ({"n_params": "many"}, r"n_params is 'many', not integer"),
    ({"objective": "gpt"}, r"objective is 'gpt', not one of \['clm', 'mlm', 'mixed'\]"),
    ({"final_loss": 2.0}, r"unknown metrics key\(s\) final_loss"),
    ({"metrics_version": 99}, r"metrics_version 99 is not the version this plmscale reads \(1\); rerun"),
])
def test_reading_bad_metrics_names_the_file_and_the_key(tmp_path, changes, message):
    path = tmp_path / "run" / "metrics.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_minimal_metrics(**changes)))
    with pytest.raises(PlmscaleError, match=re.escape(str(path)) + ": " + message):
        run_metrics.read_metrics(path)


def test_metrics_from_before_the_version_key_still_read(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(_minimal_metrics()))
    metrics = run_metrics.read_metrics(path)
    assert metrics.final_valid_loss == 2.5 and metrics.shape is None
    assert metrics.to_dict()[run_metrics.VERSION_KEY] == run_metrics.METRICS_VERSION


# ---- a write that fails names its file (issue 27) ---------------------------------------------------------

def test_a_failed_metrics_write_names_the_file(tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_metrics.json, "dump", disk_full)
    target = tmp_path / "runs" / "r" / "metrics.json"
    metrics = run_metrics.RunMetrics(**_minimal_metrics())
    with pytest.raises(PlmscaleError, match=re.escape(f"could not write {target}: No space left on device; free "
                                                      f"disk space there, then run again")):
        run_metrics.write_metrics(target, metrics)
    assert not target.exists() and not list(target.parent.iterdir())  # no half file, no temporary left


def test_a_failed_checkpoint_write_names_the_file(tmp_path):
    blocker = tmp_path / "checkpoints"
    blocker.write_text("a file where the checkpoint folder should be")
    with pytest.raises(PlmscaleError, match=re.escape(f"could not write {blocker / 'r' / 'final.pt'}: Not a directory")):
        ckpt.save({"model": {}}, blocker / "r" / "final.pt")


def test_a_run_whose_outputs_cannot_be_written_names_the_file(shards, tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results folder should be")
    with pytest.raises(PlmscaleError, match=re.escape(f"could not write run directory {blocker / 'out'}")):
        train_run(tiny_spec(tokens=2000), *shards, blocker / "out", tmp_path / "checkpoints", threads=1)


def test_a_long_run_logs_its_progress_between_evaluations(shards, tmp_path, monkeypatch, caplog):
    """Issue 25 §2: steps, loss and tokens/s in the job log every PROGRESS_EVERY_SECONDS (here every step),
    the lines `plmscale status` reads a running run's step and ETA from, and the curve unchanged by them."""
    spec = tiny_spec("clm", tokens=3000)
    quiet = run(spec, shards, tmp_path, name="quiet")
    monkeypatch.setattr(loop, "PROGRESS_EVERY_SECONDS", 0.0)
    with caplog.at_level("INFO", logger="plmscale.train.loop"):
        chatty = run(spec, shards, tmp_path, name="chatty")
    progress = [r.getMessage() for r in caplog.records if "tokens/s" in r.getMessage()]
    assert len(progress) >= chatty["steps"] // 2
    assert re.fullmatch(r"step \d+/\d+ tokens \d+ train \d+\.\d{4} lr \S+, \S+ tokens/s", progress[0])
    assert chatty["final_valid_loss"] == quiet["final_valid_loss"]
    assert (tmp_path / "quiet" / "out" / "curve.csv").read_bytes() == (tmp_path / "chatty" / "out" / "curve.csv").read_bytes()
