"""The training grid: IsoFLOP arithmetic, run ids, filters, transfer runs, resources, launch commands."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from plmscale.config import load_config
from plmscale.errors import PlmscaleError
from plmscale.arithmetic import ModelShape
from plmscale.arithmetic import peak_lr_cheng2024 as lr_for_params
from plmscale.grid import RunSpec, expand_grid, format_number, n_params, run_seed, shape_for_params
from plmscale.grid import shapes as grid_shapes
from plmscale.train.launch import expand_nodelist, first_host, launch_command, rendezvous_port, torchrun_command
from plmscale.grid.resources import gpu_counts

REPO = Path(__file__).resolve().parent.parent
PAPER_README = REPO.parent / "shared" / "published" / "ScalingProteinLM" / "README.md"

LADDER = {
    "n1M": {"layers": 4, "d_model": 128, "heads": 2},
    "n3M": {"layers": 8, "d_model": 192, "heads": 3},
    "n10M": {"layers": 8, "d_model": 320, "heads": 5},
}


def make_config(**train):
    base = {"ladder": LADDER, "isoflop": {"budgets": [1e16, 3e16, 1e17]}}
    base.update(train)
    return load_config({"train": base})


# ---- FLOPs and the IsoFLOP arithmetic --------------------------------------------------------------

def test_isoflop_6nd_is_exactly_six_n_d():
    for spec in expand_grid(make_config()):
        assert spec.flops == 6 * spec.n_params * spec.tokens
        assert spec.flops_per_token == 6 * spec.n_params
        # tokens are rounded to whole tokens: the budget is met to within one token's FLOPs
        assert abs(spec.flops - spec.budget) <= spec.flops_per_token / 2 + 1e-6 * spec.budget


def test_with_attention_uses_the_larger_per_token_figure():
    plain = {s.run_id: s for s in expand_grid(make_config())}
    attention = {s.run_id: s for s in expand_grid(make_config(flops_definition="with_attention"))}
    for run_id, spec in attention.items():
        shape = spec.shape
        assert spec.flops_per_token == 6 * spec.n_params + 12 * shape["layers"] * shape["d_model"] * 1024
        if run_id in plain:
            assert spec.tokens < plain[run_id].tokens  # same budget, dearer tokens -> fewer of them


def test_n_params_matches_the_training_module():
    model = pytest.importorskip("plmscale.model")
    for shape in [LADDER["n3M"], {"layers": 3, "d_model": 96, "heads": 3, "ffn_dim": 250},
                  {"layers": 47, "d_model": 4352, "heads": 68, "ffn_dim": 11608}]:
        full = grid_shapes.normalise_shape(shape)
        expected = model.ModelShape.from_dict(full).n_params()
        assert n_params(shape) == expected
        assert ModelShape(full["layers"], full["d_model"], full["heads"], full["ffn_dim"]).n_params() == expected


def test_n_params_equals_a_built_module():
    model = pytest.importorskip("plmscale.model")
    shape = {"layers": 2, "d_model": 64, "heads": 2, "ffn_dim": 176}
    built = model.build_model(model.ModelShape.from_dict(shape), max_len=32)
    assert built.n_params(non_embedding=True) == n_params(shape)


# ---- run ids, filters, explicit and transfer runs ----------------------------------------------------

@pytest.mark.parametrize("value,text", [(1e19, "1e19"), (3e18, "3e18"), (3.5e11, "3.5e11"), (2e9, "2e9"),
                                        (1.94e11, "1.94e11"), (524288, "5.24288e5"), (100, "100")])
def test_format_number_is_compact(value, text):
    assert format_number(value) == text


def test_run_ids_are_unique_and_formatted():
    specs = expand_grid(make_config(runs=[{"objective": "clm", "model": "n3M", "tokens": 2e9}]))
    ids = [s.run_id for s in specs]
    assert len(ids) == len(set(ids))
    pattern = re.compile(r"^(clm|mlm)_n\w+_(c|d)\d+(\.\d+)?e\d+$")
    assert all(pattern.match(i) for i in ids), ids
    assert "clm_n3M_d2e9" in ids
    assert "mlm_n1M_c1e16" in ids


def test_models_filtered_by_tokens_per_param():
    config = make_config(isoflop={"budgets": [1e17], "min_tokens_per_param": 10, "max_tokens_per_param": 200})
    specs = expand_grid(config)
    assert specs, "some model must fit"
    for spec in specs:
        assert 10 <= spec.tokens / spec.n_params <= 200
    # n1M at 1e17: D/N ≈ 2e4, far above 200
    assert not any(s.model == "n1M" for s in specs)


def test_budget_below_one_optimizer_step_is_refused():
    config = make_config(isoflop={"budgets": [1e12], "min_tokens_per_param": 0, "max_tokens_per_param": 1e6})
    with pytest.raises(PlmscaleError, match="1e\\+12 has no run: n1M, n3M, n10M .* shorter than one optimizer step"):
        expand_grid(config)  # 1e12 / 6N is below one 524288-token batch for every size


def test_explicit_and_transfer_runs():
    config = make_config(runs=[{"objective": "mlm", "model": "n10M", "tokens": 3.5e9}],
                         transfer=[{"source_run": "clm_n3M_c1e17", "tokens": 1e9}])
    specs = {s.run_id: s for s in expand_grid(config)}
    explicit = specs["mlm_n10M_d3.5e9"]
    assert explicit.budget is None and explicit.tokens == 3_500_000_000
    transfer = specs["tmlm_clm_n3M_c1e17"]
    assert transfer.objective == "mlm" and transfer.init_from == "clm_n3M_c1e17"
    assert transfer.model == "n3M" and transfer.shape == specs["clm_n3M_c1e17"].shape
    assert list(specs)[-1] == "tmlm_clm_n3M_c1e17"  # transfers come last


@pytest.mark.parametrize("source", ["clm_n3M_c9e99", "mlm_n3M_c1e17"])
def test_bad_transfer_source_is_a_clear_error(source):
    config = make_config(transfer=[{"source_run": source, "tokens": 1e9}])
    with pytest.raises(PlmscaleError, match=rf"train\.transfer\[0\]\.source_run '{source}'.*CLM run"):
        expand_grid(config, source="study.yaml")


def test_duplicate_run_ids_are_an_error():
    config = make_config(runs=[{"objective": "clm", "model": "n3M", "tokens": 2e9},
                               {"objective": "clm", "model": "n3M", "tokens": 2e9}])
    with pytest.raises(PlmscaleError, match="clm_n3M_d2e9"):
        expand_grid(config)


def test_seeds_stable_and_distinct():
    specs = expand_grid(make_config())
    assert len({s.seed for s in specs}) == len(specs)
    assert specs[0].seed == run_seed(0, specs[0].run_id) == run_seed(0, specs[0].run_id)
    assert run_seed(1, specs[0].run_id) != specs[0].seed


def test_replicates_repeat_each_grid_point_under_its_own_seed():
    single = expand_grid(make_config(runs=[{"objective": "clm", "model": "n3M", "tokens": 2e9}]))
    config = make_config(runs=[{"objective": "clm", "model": "n3M", "tokens": 2e9}])
    config["train"]["isoflop"]["replicates"] = 3
    specs = {s.run_id: s for s in expand_grid(config)}
    grid = [s for s in single if s.budget is not None]
    assert len(specs) == 3 * len(grid) + 1  # the explicit run is not replicated
    for point in grid:
        copies = [specs[point.run_id], specs[f"{point.run_id}_r2"], specs[f"{point.run_id}_r3"]]
        assert specs[point.run_id].to_dict() == point.to_dict()  # replicate 1 is the grid as before
        assert {(c.model, c.tokens, c.budget, c.lr, c.batch_tokens) for c in copies} == {
            (point.model, point.tokens, point.budget, point.lr, point.batch_tokens)}
        assert len({c.seed for c in copies}) == 3


def test_replicates_with_a_wsd_schedule_are_refused():
    config = make_config()
    config["train"]["isoflop"].update(replicates=2, schedule="wsd")
    with pytest.raises(PlmscaleError, match="replicates > 1 needs schedule cosine"):
        expand_grid(config, source="study.yaml")


def test_spec_round_trips_and_carries_train_settings():
    spec = expand_grid(make_config(seq_len=512))[0]
    data = spec.to_dict()
    assert RunSpec.from_dict(json.loads(json.dumps(data))) == spec
    assert data["seq_len"] == 512 and data["lr"] == lr_for_params(spec.n_params)
    assert data["distributed"]["strategy"] in ("none", "ddp", "fsdp")
    assert "resources" not in spec.training_dict()


def test_resource_settings_do_not_change_the_training_spec():
    """Snakemake reruns on params change: a new MFU assumption must not retrain the grid."""
    a = expand_grid(make_config())
    b = expand_grid(make_config(resources={"assumed_mfu": 0.1}))
    assert [s.training_dict() for s in a] == [s.training_dict() for s in b]
    assert [s.resources for s in a] != [s.resources for s in b]


def test_large_models_get_the_large_batch():
    config = make_config(ladder={"small": {"layers": 2, "d_model": 128, "heads": 2},
                                 "big": {"layers": 24, "d_model": 2048, "heads": 32}},
                         isoflop={"budgets": [1e21]}, batch_tokens_large=1048576)
    batches = {s.model: s.batch_tokens for s in expand_grid(config)}
    assert batches.get("big") == 1048576
    assert lr_for_params(5e9) == 3e-4 and lr_for_params(1e6) == 6e-4
    assert 3.5e-4 < lr_for_params(600e6) < 4e-4


# ---- the training recipe ------------------------------------------------------------------------------

TINY_LADDER = {"n7k": {"layers": 2, "d_model": 16, "heads": 2, "ffn_dim": 48},
               "n25k": {"layers": 2, "d_model": 32, "heads": 2, "ffn_dim": 88},
               "n100k": {"layers": 2, "d_model": 64, "heads": 2, "ffn_dim": 176}}


def small_scale_grid(**train):
    base = {"ladder": TINY_LADDER, "recipe": "small-scale", "seq_len": 128, "device": "cpu",
            "isoflop": {"budgets": [1e11, 1e12], "min_tokens_per_param": 0.5, "max_tokens_per_param": 1000}}
    base.update(train)
    return expand_grid(load_config({"train": base}))


def test_small_scale_recipe_scales_lr_with_size_and_batch_with_budget():
    specs = small_scale_grid(small_scale={"lr_ref": 4e-3, "n_ref": 2e4, "min_steps": 100})
    assert len({s.model for s in specs}) == 3 and len({s.budget for s in specs}) == 2
    for spec in specs:
        assert spec.lr == pytest.approx(4e-3 * (spec.n_params / 2e4) ** (-1 / 3), rel=1e-12)
        batch = spec.batch_tokens
        assert batch & (batch - 1) == 0  # a power of two
        assert batch == 512 or spec.tokens / batch >= 100  # at least min_steps steps unless at the floor
        assert batch == 524288 or spec.tokens / (2 * batch) < 100  # and the largest such batch
        assert (spec.train.warmup_fraction, spec.train.min_lr_ratio, spec.train.beta2) == (0.05, 0.0, 0.95)
        assert spec.recipe["name"] == "small-scale" and spec.recipe["overridden_by_config"] == []
    by_size = sorted(specs, key=lambda s: s.n_params)
    assert by_size[0].lr > by_size[-1].lr  # smaller models take larger steps
    # A 10x budget at the same size: more tokens, a larger batch.
    small, large = (next(s for s in specs if s.model == "n25k" and s.budget == b) for b in (1e11, 1e12))
    assert large.batch_tokens > small.batch_tokens


def test_explicit_settings_override_the_recipe_and_are_recorded():
    specs = small_scale_grid(lr=1e-3, batch_tokens=1024, beta2=0.99)
    for spec in specs:
        assert spec.lr == 1e-3 and spec.batch_tokens == 1024 and spec.train.beta2 == 0.99
        assert spec.train.warmup_fraction == 0.05  # not overridden: the recipe's
        assert set(spec.recipe["overridden_by_config"]) == {"lr", "batch_tokens", "beta2"}


def test_recipe_hash_names_the_recipe_and_its_constants():
    default = small_scale_grid()[0].recipe["sha256"]
    assert small_scale_grid(lr=1e-3)[0].recipe["sha256"] == default  # overrides are listed, not the recipe
    assert small_scale_grid(small_scale={"lr_ref": 1e-2})[0].recipe["sha256"] != default
    cheng = expand_grid(make_config())[0].recipe
    assert cheng["name"] == "cheng2024" and cheng["sha256"] != default
    assert cheng["sha256"] == expand_grid(make_config(seq_len=512))[0].recipe["sha256"]


def test_cheng2024_recipe_is_the_papers_by_default():
    config = make_config(ladder={"small": {"layers": 2, "d_model": 128, "heads": 2},
                                 "big": {"layers": 24, "d_model": 2048, "heads": 32}},
                         isoflop={"budgets": [1e21], "max_tokens_per_param": 1e12})
    assert config["train"]["warmup_fraction"] == 0.025 and config["train"]["min_lr_ratio"] == 0.1
    specs = {s.model: s for s in expand_grid(config)}
    assert specs["big"].batch_tokens == 1048576 and specs["small"].batch_tokens == 524288
    assert specs["big"].lr == 3e-4 and specs["small"].lr == 6e-4
    assert specs["big"].train.beta2 == 0.95


def test_plan_prints_the_recipe(tmp_path, capsys):
    from plmscale.cli import main
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"train": {"ladder": TINY_LADDER, "recipe": "small-scale", "lr": 2e-3,
                                              "isoflop": {"budgets": [1e11]}}}))
    assert main(["plan", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    sha = expand_grid(load_config(path))[0].recipe["sha256"]
    assert f"recipe small-scale v1 (sha256 {sha[:12]})" in out
    assert "overridden by train.*: lr=0.002" in out
    assert "adaptive rounds" not in out


def test_plan_says_the_adaptive_rounds_add_runs_as_the_study_runs(capsys):
    from plmscale.cli import main
    assert main(["plan", "--config", str(REPO / "config.yaml")]) == 0  # the demo is an adaptive study
    out = capsys.readouterr().out
    assert "adaptive rounds on: the IsoFLOP runs above are the first round; up to 4 more" in out
    assert "up to 3e+12 IsoFLOP FLOPs in all" in out
    assert "clm_n25k_c1.25e11" in out and "c5e11 " not in out.split("rep_clm")[0]  # 5e11 is the rounds' to add
    assert main(["plan", "--config", str(REPO / "config.yaml"), str(REPO / "configs" / "demo-fixed.yaml")]) == 0
    fixed = capsys.readouterr().out
    assert "clm_n25k_c5e11 " in fixed and "adaptive rounds" not in fixed


def test_a_spec_from_another_recipe_version_is_refused():
    spec = expand_grid(make_config())[0].to_dict()
    spec["recipe"] = dict(spec["recipe"], version=99)
    with pytest.raises(PlmscaleError, match="version 99"):
        RunSpec.from_dict(spec)


# ---- lr calibration ----------------------------------------------------------------------------------

def test_lr_sweep_runs_exist_only_when_enabled_and_centre_on_the_law():
    from plmscale.grid.calibration import calibration_specs
    assert calibration_specs(load_config({"train": {"ladder": TINY_LADDER}})) == []
    config = load_config({"train": {"ladder": TINY_LADDER, "seq_len": 128, "small_scale": {"lr_ref": 2e-3},
                                    "lr_calibration": {"enabled": True, "lr_factors": [0.5, 1, 2]}}})
    specs = calibration_specs(config)
    assert len(specs) == 3 * 3 and len({s.run_id for s in specs}) == 9
    for spec in specs:
        centre = 2e-3 * (spec.n_params / 5e4) ** (-1 / 3)
        assert min(abs(spec.lr / centre - f) for f in (0.5, 1, 2)) < 1e-9
        assert spec.tokens == round(20 * spec.n_params) and spec.objective == "clm"
    grid_ids = {s.run_id for s in expand_grid(config)}
    assert not grid_ids & {s.run_id for s in specs}  # the sweep never enters the study's grid


def test_lr_sweep_with_an_unknown_anchor_names_the_key():
    from plmscale.grid.calibration import calibration_specs
    config = load_config({"train": {"ladder": TINY_LADDER, "lr_calibration": {"enabled": True, "models": ["n9M"]}}})
    with pytest.raises(PlmscaleError, match=r"train\.lr_calibration\.models \['n9M'\]"):
        calibration_specs(config)


def _sweep(n_params, lr_opt, factors):
    lrs = [lr_opt * f for f in factors]
    return {"model": f"n{n_params}", "n_params": n_params, "lrs": lrs,
            "losses": [2.0 + 0.1 * math.log(lr / lr_opt) ** 2 for lr in lrs]}


def test_lr_fit_recovers_the_constant_and_exponent():
    from plmscale.grid.calibration import fit_lr_constant
    sizes = [7e3, 5e4, 2.2e5]
    factors = [0.3, 0.7, 1.9, 4.1]  # the optimum is never a sweep point: the vertex must find it
    anchors = [_sweep(n, 3e-3 * (n / 5e4) ** (-1 / 3), factors) for n in sizes]
    result = fit_lr_constant(anchors, n_ref=5e4, exponent=-1 / 3)
    assert result["identified"] and all(row["bracketed"] for row in result["anchors"])
    assert result["lr_ref"] == pytest.approx(3e-3, rel=1e-6)
    assert result["fitted_exponent"] == pytest.approx(-1 / 3, rel=1e-6)
    assert "lr_ref: 0.003" in result["advice"]


def test_lr_fit_refuses_a_sweep_that_misses_the_optimum(tmp_path):
    from plmscale.grid.calibration import fit_lr_constant, write_calibration
    anchors = [_sweep(5e4, 1e-2, [0.01, 0.02, 0.05])]  # every lr far below the optimum: loss still falling
    result = fit_lr_constant(anchors, n_ref=5e4, exponent=-1 / 3)
    assert not result["identified"] and result["lr_ref"] is None and "widen" in result["advice"]
    paths = []
    for i, (lr, loss) in enumerate(zip(anchors[0]["lrs"], anchors[0]["losses"])):
        paths.append(tmp_path / f"m{i}.json")
        paths[-1].write_text(json.dumps({"run_id": f"lr{i}", "objective": "clm", "model": "n50k", "n_params": 50000,
                                         "tokens": 10**6, "flops": 3e11, "budget": None, "init_from": None,
                                         "peak_lr": lr, "final_valid_loss": loss}))
    train = load_config({})["train"]
    written = write_calibration(paths, train, tmp_path / "cal" / "lr.json")
    assert json.loads((tmp_path / "cal" / "lr.json").read_text())["advice"] == written["advice"]
    from plmscale.plots.calibration import plot_calibration
    sweep, law = plot_calibration(written, tmp_path / "cal" / "lr.png").axes
    assert (tmp_path / "cal" / "lr.png").stat().st_size > 10_000
    assert list(sweep.lines[0].get_xdata()) == sorted(anchors[0]["lrs"])  # the sweep, and its best lr dotted
    assert sweep.lines[1].get_linestyle() == ":"
    # No refitted law from a sweep that missed its optimum: only the recipe's law and the open edge point.
    assert [line.get_label() for line in law.lines] == ["at the sweep's edge",
                                                        f"recipe's: lr_ref {train['small_scale']['lr_ref']:.3g}"]


# ---- shapes ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [2e6, 9e6, 35e6, 150e6, 650e6, 3e9, 15e9])
def test_shape_for_params_is_close_and_sane(target):
    shape = shape_for_params(target)
    assert abs(n_params(shape) - target) / target < 0.02
    assert shape["d_model"] % 64 == 0 and shape["d_model"] // shape["heads"] == 64
    assert 8 <= shape["d_model"] / shape["layers"] <= 150  # aspect ratio of a real ladder


@pytest.mark.parametrize("entry,why", [({"layers": 2, "d_model": 100, "heads": 3}, "not divisible"),
                                       ({"layers": 2, "d_model": 30, "heads": 2}, "must be even")])
def test_impossible_ladder_shape_names_the_config_key(entry, why, tmp_path, capsys):
    """Issue 9: a raw ValueError from the model code became a message naming train.ladder.<name>."""
    config = make_config(ladder={**LADDER, "odd": entry})
    with pytest.raises(PlmscaleError, match=rf"study\.yaml: train\.ladder\.odd .*'d_model': {entry['d_model']}.*{why}"):
        expand_grid(config, source="study.yaml")
    from plmscale.cli import main
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"train": {"ladder": {**LADDER, "odd": entry}, "isoflop": {"budgets": [1e16]}}}))
    assert main(["plan", "--config", str(path)]) == 2
    assert "train.ladder.odd" in capsys.readouterr().err


def test_grid_and_model_arithmetic_import_without_torch():
    """Planning a study (and counting its models) must not need torch: login nodes often lack it."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from plmscale.arithmetic import ModelShape\n"
            "from plmscale.config import load_config\n"
            "from plmscale.grid import expand_grid\n"
            "specs = expand_grid(load_config('configs/paper.yaml'))\n"
            "print(len(specs), ModelShape(8, 192, 3).n_params())")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[1] == str(3_538_944 + 17 * 192)


def _paper_size_map():
    text = PAPER_README.read_text().split("## Size map")[1].split("##")[0]
    pairs = [item.split() for item in text.split("\n", 1)[1].replace("\n", " ").split("·") if item.strip()]
    return {f"n{label}": int(count) for label, count in pairs}


@pytest.mark.skipif(not PAPER_README.exists(), reason="published reference data not present")
def test_paper_ladder_matches_the_size_map():
    ladder = load_config(REPO / "configs" / "paper.yaml")["train"]["ladder"]
    size_map = _paper_size_map()
    assert set(ladder) == set(size_map)
    deviations = {name: (n_params(shape) - size_map[name]) / size_map[name] for name, shape in ladder.items()}
    worst = max(deviations, key=lambda n: abs(deviations[n]))
    print(f"paper ladder: max deviation {deviations[worst]:+.4%} at {worst}")
    assert abs(deviations[worst]) < 0.005


# ---- resources ---------------------------------------------------------------------------------------

def _spec(n_layers, d_model, tokens, **train):
    config = make_config(ladder={"m": {"layers": n_layers, "d_model": d_model, "heads": d_model // 64}},
                         isoflop={"budgets": []}, runs=[{"objective": "clm", "model": "m", "tokens": tokens}],
                         **train)
    return expand_grid(config)[0], config["train"]


def test_runtime_and_gpus_grow_with_flops():
    previous = None
    for tokens in (1e9, 1e10, 1e11, 1e12):
        spec, _ = _spec(24, 1024, tokens)
        gpu_minutes = spec.resources["gpus"] * spec.resources["runtime_min"]
        if previous is not None:
            assert gpu_minutes >= previous[0] and spec.resources["gpus"] >= previous[1]
        previous = (gpu_minutes, spec.resources["gpus"])
    assert previous[1] > 1  # 1e12 tokens of a 300M model cannot fit 48 h on one GPU


def test_small_run_is_one_gpu_without_strategy():
    spec, _ = _spec(8, 256, 1e9)
    assert spec.resources["gpus"] == 1 and spec.resources["strategy"] == "none"
    assert spec.resources["runtime_min"] >= 10  # the configured floor


def test_ten_billion_model_is_sharded():
    spec, _ = _spec(47, 4352, 2e10)  # ~10.7B parameters: 16 bytes/param = 170 GB of state
    res = spec.resources
    assert res["strategy"] == "fsdp" and res["gpus"] >= 4
    assert res["gpu_mem_estimate_gb"] <= 80
    assert res["nodes"] * res["gpus_per_node"] == res["gpus"]


def test_forced_ddp_that_cannot_fit_is_an_error():
    with pytest.raises(PlmscaleError, match="fsdp"):
        _spec(47, 4352, 2e10, distributed={"strategy": "ddp"})


def test_multi_node_when_runtime_needs_it():
    spec, _ = _spec(36, 3072, 2e11)  # ~4B params, 5e21 FLOPs
    res = spec.resources
    assert res["nodes"] > 1 and res["gpus_per_node"] == 8


def test_cpu_study_asks_for_no_gpu():
    spec, _ = _spec(2, 64, 1e6, device="cpu", threads=2)
    res = spec.resources
    assert res["gpus"] == 0 and res["cpus"] == 2 and res["strategy"] == "none"
    assert res["runtime_min"] >= 1 and res["mem_mb"] >= 512
    # One process: the plan has no process count, so the files that record it are as they always were.
    assert res["nodes"] == 1 and "processes_per_node" not in res


def test_cpu_run_across_two_nodes_is_one_torchrun_per_node():
    """train.distributed.cpu_nodes plans a CPU run as a multi-node job (it used to be nodes=1 whatever asked)."""
    from plmscale.grid.resources import snakemake_resources

    spec, _ = _spec(2, 64, 1e6, device="cpu", threads=1,
                    distributed={"strategy": "fsdp", "cpu_nodes": 2, "cpu_processes_per_node": 1})
    res = spec.resources
    assert (res["nodes"], res["processes_per_node"], res["strategy"], res["cpus"]) == (2, 1, "fsdp", 1)
    assert spec.train.distributed == {"strategy": "fsdp"}
    job = snakemake_resources(res)
    assert (job["nodes"], job["tasks"], job["mpi"], job["processes_per_node"]) == (2, 2, "srun", 1)
    assert job["slurm_extra"] == "--ntasks-per-node=1" and job["gpu"] is None  # no --gpus-per-node=0

    one_node, _ = _spec(2, 64, 1e6, device="cpu", threads=1,
                        distributed={"strategy": "fsdp", "cpu_processes_per_node": 2})
    res = one_node.resources
    assert (res["nodes"], res["processes_per_node"], res["cpus"]) == (1, 2, 2)
    assert snakemake_resources(res)["nodes"] is None and snakemake_resources(res)["processes_per_node"] == 2
    # Same world size, same run: only the resources differ, so the trained model is the same spec.
    assert one_node.training_dict() == spec.training_dict()
    auto, _ = _spec(2, 64, 1e6, device="cpu", distributed={"cpu_nodes": 2})
    assert auto.resources["strategy"] == "ddp"


def test_more_cpu_processes_than_micro_batches_is_an_error():
    with pytest.raises(PlmscaleError, match="cpu_nodes 4 × cpu_processes_per_node 2"):
        _spec(2, 64, 1e6, device="cpu", seq_len=64, micro_batch_size=8, batch_tokens=1024,
              distributed={"cpu_nodes": 4, "cpu_processes_per_node": 2})


def test_gpu_counts_are_powers_then_whole_nodes():
    assert gpu_counts(8, 64) == [1, 2, 4, 8, 16, 32, 64]
    assert gpu_counts(4, 10) == [1, 2, 4, 8]


# ---- launch ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("nodelist,hosts", [
    ("gpu[01-04]", ["gpu01", "gpu02", "gpu03", "gpu04"]),
    ("gpu[01-02,07],login1", ["gpu01", "gpu02", "gpu07", "login1"]),
    ("node7", ["node7"]),
    ("a[9-11]", ["a9", "a10", "a11"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
])
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


def test_torchrun_single_node():
    command = torchrun_command({"run_id": "x"}, 1, 4, ["-m", "plmscale.cli", "train"], env={})
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert command[3:8] == ["--standalone", "--nnodes", "1", "--nproc-per-node", "4"]
    assert command[-3:] == ["-m", "plmscale.cli", "train"]


def test_torchrun_multi_node_from_slurm_environment():
    env = {"SLURM_JOB_NODELIST": "gpu[03-06]", "SLURM_NODEID": "2", "SLURM_JOB_ID": "4242",
           "PLMSCALE_PARSE_NODELIST": "1"}
    command = torchrun_command({"run_id": "clm_n10B_c1e21"}, 4, 8, ["-m", "plmscale.cli", "train"], env=env)
    joined = " ".join(command)
    assert "--nnodes 4 --nproc-per-node 8 --node-rank 2" in joined
    # The port is the job's own (15000 + id mod 10,000), so two jobs with the same first host do not share a
    # rendezvous store; node rank 0 hosts it.
    assert "--rdzv-backend c10d --rdzv-endpoint gpu03:19242 --rdzv-id 4242 --rdzv-conf is_host=0" in joined
    assert "--standalone" not in command
    first = torchrun_command({"run_id": "r"}, 4, 8, [], env={**env, "SLURM_NODEID": "0", "SLURM_JOB_ID": "4243"})
    assert " ".join(first).endswith("--rdzv-endpoint gpu03:19243 --rdzv-id 4243 --rdzv-conf is_host=1")
    assert rendezvous_port({"SLURM_JOB_ID": "123456", "MASTER_PORT": "23456"}) == 23456
    with pytest.raises(PlmscaleError, match="MASTER_PORT"):
        rendezvous_port({"SLURM_JOB_NODELIST": "gpu[1-2]"})


def test_master_addr_wins_and_missing_slurm_is_an_error():
    assert first_host({"MASTER_ADDR": "10.0.0.5", "SLURM_JOB_NODELIST": "gpu[1-2]"}) == "10.0.0.5"
    with pytest.raises(PlmscaleError, match="SLURM_JOB_NODELIST"):
        first_host({})
    with pytest.raises(PlmscaleError, match="srun"):
        torchrun_command({"run_id": "x"}, 2, 8, [], env={"SLURM_JOB_NODELIST": "gpu[1-2]"})


def test_launch_command_wraps_multi_node_in_srun():
    single = launch_command({"run_id": "x"}, 1, 2, ["-m", "plmscale.cli"], env={})
    assert "--standalone" in single
    multi = launch_command({"run_id": "x"}, 2, 8, ["-m", "plmscale.cli"], env={"SLURM_JOB_ID": "7"})
    assert multi[:5] == ["srun", "--nodes", "2", "--ntasks-per-node", "1"]
    assert "plmscale.train.launch" in multi and multi[-2:] == ["-m", "plmscale.cli"]
    assert multi[multi.index("--processes-per-node") + 1] == "8"


def test_multi_node_run_outside_slurm_says_what_to_do():
    """A run planned across nodes and started by a local Snakemake used to die in a missing `srun`."""
    with pytest.raises(PlmscaleError, match="cpu_nodes.*profiles/slurm"):
        launch_command({"run_id": "x"}, 2, 1, ["-m", "plmscale.cli"], env={})


# ---- plan CLI ----------------------------------------------------------------------------------------

def test_plan_cli_table_and_json(tmp_path, capsys):
    from plmscale.cli import main
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"train": {"ladder": LADDER, "isoflop": {"budgets": [1e16]}}}))
    assert main(["plan", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "clm_n1M_c1e16" in out and "strategy" in out
    assert main(["plan", "--config", str(path), "--json"]) == 0
    specs = json.loads(capsys.readouterr().out)
    assert {s["run_id"] for s in specs} == {s.run_id for s in expand_grid(load_config(path))}


def test_plan_cli_reports_a_bad_transfer_without_traceback(tmp_path, capsys):
    from plmscale.cli import main
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"train": {"ladder": LADDER, "transfer": [{"source_run": "nope",
                                                                               "tokens": 1e9}]}}))
    assert main(["plan", "--config", str(path)]) == 2
    assert "nope" in capsys.readouterr().err


# ---- the paper's grid through Snakemake ---------------------------------------------------------------

@pytest.mark.slow
def test_paper_grid_plans_in_snakemake(tmp_path):
    """`snakemake -n` on configs/paper.yaml: one train/transfer job per grid point, resources from the spec."""
    snakemake = Path(sys.executable).parent / "snakemake"
    if not snakemake.exists():
        pytest.skip("snakemake is not installed next to this Python")
    config = load_config(REPO / "configs" / "paper.yaml")
    specs = expand_grid(config)
    # Local source files (the ColabFoldDB FASTA the user prepares) must exist for the DAG: placeholders.
    for source in config["data"]["sources"]:
        if "://" not in source["url"]:
            placeholder = tmp_path / source["url"]
            placeholder.parent.mkdir(parents=True, exist_ok=True)
            placeholder.touch()
    targets = [f"results/runs/{s.run_id}/metrics.json" for s in specs]
    result = subprocess.run(
        [str(snakemake), *targets, "-n", "--quiet", "rules", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
         "--workflow-profile", "none", "--configfile", str(REPO / "configs" / "paper.yaml")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = dict(re.findall(r"^(train|transfer)\s+(\d+)$", result.stdout + result.stderr, flags=re.M))
    # One rule trains every grid point, transfer runs included (their source run is an extra input).
    assert int(counts.get("train", 0)) == len(specs)
    assert "transfer" not in counts


@pytest.mark.slow  # starts Snakemake: a DAG build of seconds; the fast set (-m "not slow") starts none
def test_the_workflow_trains_every_replicate(tmp_path):
    """`snakemake -n` on the demo config with train.isoflop.replicates 2: a train job for each replicate."""
    from workflow_helpers import default_config_with, planned_run_ids, run_snakemake, workflow_copy
    config = default_config_with({"train": {"isoflop": {"replicates": 2}}})
    grid = {s.run_id for s in expand_grid(load_config(REPO / "config.yaml")) if s.budget is not None}
    planned = planned_run_ids(run_snakemake(workflow_copy(tmp_path / "wf", config), "--dry-run"))
    assert grid and {f"{run_id}_r2" for run_id in grid} | grid <= planned
    assert not any(run_id.endswith("_r3") for run_id in planned)


def test_snakemake_resources_for_cpu_one_gpu_node_and_several_nodes():
    from plmscale.grid.resources import snakemake_resources

    base = {"mem_mb": 4096, "runtime_min": 30, "cpus": 8, "gpu_model": None}
    cpu = snakemake_resources({**base, "gpus": 0, "nodes": 1, "gpus_per_node": 0})
    assert cpu["gpu"] is None and cpu["nodes"] is None and cpu["runtime"] == 30 and cpu["cpus_per_task"] == 8

    one_node = snakemake_resources({**base, "gpus": 4, "nodes": 1, "gpus_per_node": 4, "gpu_model": "h100"})
    assert one_node["gpu"] == 4 and one_node["gpu_model"] == "h100"
    assert one_node["nodes"] is None and one_node["mpi"] is None and one_node["slurm_extra"] is None

    two_nodes = snakemake_resources({**base, "gpus": 16, "nodes": 2, "gpus_per_node": 8, "gpu_model": "h100"})
    # Several nodes: no `gpu` (the plugin would turn tasks into --ntasks-per-gpu), one task per node.
    assert two_nodes["gpu"] is None and two_nodes["nodes"] == 2 and two_nodes["tasks"] == 2
    assert two_nodes["mpi"] == "srun"
    assert two_nodes["slurm_extra"] == "--ntasks-per-node=1 --gpus-per-node=h100:8"


# ---- budgets that train nothing, runs that repeat their data (issue 27) ------------------------------------

@pytest.mark.parametrize("budget", [1e3, 1e40])
def test_a_budget_with_no_model_in_the_window_is_refused(budget):
    """A budget outside every model's tokens-per-parameter window used to vanish from the grid (plan: 0 runs,
    snakemake: the data stage only, rc 0)."""
    with pytest.raises(PlmscaleError) as error:
        expand_grid(make_config(isoflop={"budgets": [1e16, budget]}), source="study.yaml")
    message = str(error.value)
    assert f"train.isoflop.budgets {budget:g} has no run" in message and "study.yaml" in message
    assert "min_tokens_per_param" in message and "max_tokens_per_param" in message
    assert "n1M … n10M" in message  # the ladder's size range


def _write_train_manifest(results, n_tokens, n_sequences):
    folder = results / "data" / "shards" / "train"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"n_tokens": n_tokens, "n_sequences": n_sequences}))


def test_plan_shows_epochs_and_warns_about_runs_that_repeat_their_data(tmp_path, capsys):
    from plmscale.cli import main
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"train": {"ladder": LADDER, "isoflop": {"budgets": [1e16, 1e17]}}}))
    specs = {s.run_id: s for s in expand_grid(load_config(path))}
    split_tokens = 10**9  # more than some runs' tokens, fewer than others'
    _write_train_manifest(tmp_path / "results", split_tokens - 2 * 1000, 1000)
    repeated = sorted(r for r, s in specs.items() if s.tokens > split_tokens)
    assert repeated and len(repeated) < len(specs)
    assert main(["plan", "--config", str(path), "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("run_id"))
    assert "epochs" in header.split()
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    assert all(run_id in warning for run_id in repeated)
    assert not any(run_id in warning for run_id in specs if run_id not in repeated)
    for run_id in repeated:
        assert f"{run_id} ({specs[run_id].tokens / split_tokens:.2g})" in warning


def test_plan_says_epochs_are_unknown_before_the_data_stage(tmp_path, capsys):
    from plmscale.cli import main
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"train": {"ladder": LADDER, "isoflop": {"budgets": [1e16]}}}))
    assert main(["plan", "--config", str(path), "--results", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "epochs: unknown until the data stage" in out and "warning:" not in out
