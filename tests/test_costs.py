"""Cost models (issue 28): FLOPs definitions per shape hand-computed, every run recording each cost, the measured
cost law, allocation under a cost model, predict in GPU-hours."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from plmscale.arithmetic import ModelShape
from plmscale.config import load_config_files
from plmscale.errors import PlmscaleError
from plmscale.scaling import costs
from plmscale.scaling.collect import collect_runs

TINY = {"layers": 2, "d_model": 8, "heads": 2, "ffn_dim": 32}  # the demo's n2k
PAPER_N3M = {"layers": 8, "d_model": 192, "heads": 3, "ffn_dim": 512}  # configs/paper.yaml's n3M


# ---- priority 1: the formulas, by hand -----------------------------------------------------------------------

def test_chinchilla_flops_per_token_of_the_tiny_shape_by_hand():
    # V 33, d 8, h·dh 8, ffn 32, T 128 (Hoffmann et al. 2022, Table 4, per token):
    # embeddings 2·33·8 = 528; per layer q,k,v 2·3·8·8 = 384, scores 2·128·8 = 2048, softmax 3·2·128 = 768,
    # softmax·values 2048, output 2·8·8 = 128, GLU 2·3·8·32 = 1536 -> 6912; 2 layers 13824; logits 528.
    forward = 528 + 2 * (384 + 2048 + 768 + 2048 + 128 + 1536) + 528
    assert forward == 14880
    assert ModelShape.from_dict(TINY).flops_per_token(128, "chinchilla") == 3 * 14880 == 44640


def test_chinchilla_flops_per_token_of_a_paper_ladder_shape_by_hand():
    # n3M at T 1024: embeddings 2·33·192 = 12672; per layer q,k,v 6·192·192 = 221184, scores 2·1024·192 = 393216,
    # softmax 3·3·1024 = 9216, softmax·values 393216, output 2·192·192 = 73728, GLU 6·192·512 = 589824.
    per_layer = 221184 + 393216 + 9216 + 393216 + 73728 + 589824
    assert per_layer == 1680384
    forward = 12672 + 8 * per_layer + 12672
    assert ModelShape.from_dict(PAPER_N3M).flops_per_token(1024, "chinchilla") == 3 * forward == 40405248


def test_other_definitions_and_an_unknown_one():
    shape = ModelShape.from_dict(TINY)
    assert shape.flops_per_token(128, "6nd") == 6 * 2088
    assert shape.flops_per_token(128, "with_attention") == 6 * 2088 + 12 * 2 * 8 * 128
    with pytest.raises(ValueError, match="chinchilla"):
        shape.flops_per_token(128, "kaplan")


def test_ratio_table_on_the_demo_ladder_matches_the_issue():
    config, _ = load_config_files(["config.yaml"])
    rows = {r["model"]: r for r in costs.ratio_rows(config["train"]["ladder"], config["train"]["seq_len"])}
    assert rows["n2k"]["with_attention/6nd"] == pytest.approx(2.96, abs=0.005)  # the issue's figure
    assert rows["n2k"]["chinchilla/6nd"] == pytest.approx(44640 / (6 * 2088))
    # the overhead shrinks with size under both definitions
    ordered = sorted(rows.values(), key=lambda r: r["n_params"])
    assert all(a["chinchilla/6nd"] > b["chinchilla/6nd"] for a, b in zip(ordered, ordered[1:]))
    text = costs.format_ratio_table(config["train"]["ladder"], config["train"]["seq_len"])
    assert "chinchilla/6nd" in text and "n55k" in text


def test_a_grid_laid_out_in_chinchilla_flops_sizes_tokens_by_that_definition():
    from plmscale.grid.expand import expand_grid
    config, _ = load_config_files(["config.yaml"])
    config["train"]["flops_definition"] = "chinchilla"
    specs = [s for s in expand_grid(config) if s.budget]
    assert specs
    for spec in specs:
        per_token = spec.model_shape.flops_per_token(spec.train.seq_len, "chinchilla")
        assert spec.tokens * per_token == pytest.approx(spec.budget, rel=0.02)


# ---- priority 2: every run records each cost -----------------------------------------------------------------

def test_a_training_run_records_flops_under_every_definition(tmp_path):
    from train_fixtures import member_split, shard_dirs, tiny_spec
    from plmscale.train import train_run
    shards = shard_dirs(tmp_path / "shards", member_split(n_families=3))
    spec = tiny_spec("clm", tokens=3000, flops_definition="chinchilla")
    metrics = train_run(spec, *shards, tmp_path / "out", tmp_path / "ckpt", threads=1)
    shape = ModelShape.from_dict(metrics["shape"])
    assert metrics["flops_chinchilla"] == metrics["tokens"] * shape.flops_per_token(64, "chinchilla")
    assert metrics["flops"] == metrics["flops_chinchilla"] and metrics["flops_definition"] == "chinchilla"
    assert metrics["flops_6nd"] == 6 * metrics["n_params"] * metrics["tokens"]
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk["flops_chinchilla"] == metrics["flops_chinchilla"]


def _metrics_file(folder, run_id, shape, tokens, **extra):
    n = ModelShape.from_dict(shape).n_params()
    record = {"run_id": run_id, "objective": "clm", "model": "m", "shape": shape, "n_params": n, "tokens": tokens,
              "flops": 6.0 * n * tokens, "budget": None, "final_valid_loss": 2.5, "init_from": None,
              "seq_len": 128, **extra}
    path = folder / run_id / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    return path


def test_runs_table_carries_each_cost_and_fills_a_definition_older_metrics_lack(tmp_path):
    new = _metrics_file(tmp_path, "new", TINY, 1000, flops_chinchilla=123.0, wall_seconds=4.0, device="cpu")
    old = _metrics_file(tmp_path, "old", TINY, 1000)  # written before flops_chinchilla existed
    runs, _ = collect_runs([new, old])
    runs = runs.set_index("run_id")
    for column in ("flops_6nd", "flops_with_attention", "flops_chinchilla", "wall_seconds", "device"):
        assert column in runs.columns
    assert runs.loc["new", "flops_chinchilla"] == 123.0  # as recorded
    assert runs.loc["old", "flops_chinchilla"] == 1000 * 44640  # exact from shape, seq_len and tokens
    assert runs.loc["new", "device"] == "cpu" and runs.loc["new", "wall_seconds"] == 4.0
    assert pd.isna(runs.loc["old", "wall_seconds"])


# ---- priority 3: the measured cost law -----------------------------------------------------------------------

def _timed_runs(c0, c1, device, per_token_flops, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    tokens = np.full(len(per_token_flops), 1e5)
    seconds = tokens * (c0 + c1 * np.asarray(per_token_flops)) * (1 + noise * rng.standard_normal(len(tokens)))
    return pd.DataFrame({"tokens": tokens, "flops_chinchilla": tokens * np.asarray(per_token_flops),
                         "wall_seconds": seconds, "device": device})


def test_measured_cost_recovers_known_c0_and_c1_per_device():
    table = pd.concat([_timed_runs(2e-5, 1e-10, "cpu", [4e4, 8e4, 2e5, 6e5, 1e6]),
                       _timed_runs(1e-7, 2e-15, "cuda", [1e8, 3e8, 1e9]),
                       _timed_runs(1e-7, 2e-15, "mps", [1e8, 1e8, 1e8])])  # one shape only: no law
    laws = costs.fit_measured_cost(table)
    assert set(laws) == {"cpu", "cuda"}
    assert laws["cpu"].c0 == pytest.approx(2e-5, rel=1e-6) and laws["cpu"].c1 == pytest.approx(1e-10, rel=1e-6)
    assert laws["cuda"].c0 == pytest.approx(1e-7, rel=1e-6) and laws["cuda"].c1 == pytest.approx(2e-15, rel=1e-6)
    assert laws["cpu"].n_runs == 5 and laws["cpu"].r2 == pytest.approx(1.0)


def test_measured_cost_without_the_columns_names_them():
    with pytest.raises(PlmscaleError, match="wall_seconds"):
        costs.fit_measured_cost(pd.DataFrame({"tokens": [1.0], "flops_chinchilla": [1.0], "device": ["cpu"]}))
