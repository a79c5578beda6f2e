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
from plmscale.grid.shapes import ladder_like_shape
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
    for column in ("flops_6nd", "flops_with_attention", "flops_chinchilla"):
        assert column in runs.columns
    assert runs.loc["new", "flops_chinchilla"] == 123.0  # as recorded
    assert runs.loc["old", "flops_chinchilla"] == 1000 * 44640  # exact from shape, seq_len and tokens


def test_runs_table_has_no_timing_column_and_run_timings_reads_them(tmp_path):
    """runs.csv is byte-identical between reruns: the clock stays out of it, run_timings reads it from
    metrics.json for the measured cost law."""
    from plmscale.scaling.collect import run_timings
    from plmscale.scaling.table import write_tables
    fast = _metrics_file(tmp_path / "a", "r1", TINY, 1000, wall_seconds=4.0, device="cpu", tokens_per_second=250.0)
    slow = _metrics_file(tmp_path / "b", "r1", TINY, 1000, wall_seconds=9.0, device="cuda", tokens_per_second=111.0)
    old = _metrics_file(tmp_path / "a", "old", TINY, 1000)  # no wall time recorded
    written = []
    for metrics in (fast, slow):
        runs, _ = collect_runs([metrics, old])
        assert not {"wall_seconds", "device", "tokens_per_second"} & set(runs.columns)
        write_tables(runs, None, metrics.parent / "runs.csv")
        written.append((metrics.parent / "runs.csv").read_bytes())
    assert written[0] == written[1]  # the same run timed differently: the same runs.csv
    timings = run_timings([old, fast]).set_index("run_id")
    assert list(timings.columns) == ["tokens", "flops_chinchilla", "wall_seconds", "device"]
    assert timings.loc["r1", "wall_seconds"] == 4.0 and timings.loc["r1", "device"] == "cpu"
    assert timings.loc["old", "flops_chinchilla"] == 1000 * 44640  # computed as collect does
    assert pd.isna(timings.loc["old", "wall_seconds"]) and pd.isna(timings.loc["old", "device"])


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


# ---- priority 4: allocation under a cost model ---------------------------------------------------------------

DEMO_LAW = {"E": 2.11, "A": 22.9, "B": 5.47e4, "alpha": 0.577, "beta": 0.952}  # near the demo's CLM fit


def _demo_ladder():
    config, _ = load_config_files(["config.yaml"])
    return config["train"]["ladder"], config["train"]["seq_len"]


def test_allocation_under_6nd_equals_the_closed_form():
    from plmscale.scaling import allocation
    from plmscale.scaling.parametric import optimal_allocation
    ladder, seq_len = _demo_ladder()
    for budget in (1.5e12, 1e13, 1e15):
        got = allocation.allocate(DEMO_LAW, budget, ladder, seq_len, "6nd")
        n, d, loss = optimal_allocation(*(DEMO_LAW[k] for k in ("E", "A", "B", "alpha", "beta")), budget, 6.0)
        assert got["n_opt"] == pytest.approx(float(n), rel=1e-4)
        assert got["d_opt"] == pytest.approx(float(d), rel=1e-4)
        assert got["loss"] == pytest.approx(float(loss), rel=1e-9)


def test_a_constant_cost_ratio_is_the_closed_form_at_the_smaller_budget():
    from plmscale.scaling import allocation
    from plmscale.scaling.parametric import optimal_allocation
    constants = [DEMO_LAW[k] for k in ("E", "A", "B", "alpha", "beta")]
    n_grid = allocation.search_grid(1e5)
    n, d, _ = allocation.minimise_on_grid(n_grid, 3.0 * 6.0 * n_grid, 1e13, allocation.parametric_loss,
                                          [constants])
    n_ref, d_ref, _ = optimal_allocation(*constants, 1e13 / 3.0, 6.0)
    assert n[0] == pytest.approx(float(n_ref), rel=1e-4) and d[0] == pytest.approx(float(d_ref), rel=1e-4)


def test_allocation_under_chinchilla_moves_as_the_cost_formula_says():
    """At the optimum of L(N, C/c(N)): alpha·A/N^alpha = eps·beta·B/D^beta, eps = dlog c / dlog N (1 under 6nd;
    below 1 when small models pay more per token than 6N), and D = C / c(N_opt)."""
    from plmscale.scaling import allocation
    ladder, seq_len = _demo_ladder()
    budget = 1e13
    six = allocation.allocate(DEMO_LAW, budget, ladder, seq_len, "6nd")
    chin = allocation.allocate(DEMO_LAW, budget, ladder, seq_len, "chinchilla")
    n, d = chin["n_opt"], chin["d_opt"]
    grid = allocation.search_grid(six["n_opt"])  # the sizes allocate searched
    log_cost = np.interp(np.log([n / 1.05, n, n * 1.05]), np.log(grid),
                         np.log(allocation.cost_per_token(grid, ladder, seq_len, "chinchilla")))
    assert d == pytest.approx(budget / math.exp(log_cost[1]), rel=1e-4)
    eps = (log_cost[2] - log_cost[0]) / (2 * math.log(1.05))
    assert 0.8 < eps < 0.95  # embeddings, attention and logits grow slower than 6N
    law = DEMO_LAW
    lhs = law["alpha"] * law["A"] / n ** law["alpha"]
    rhs = eps * law["beta"] * law["B"] / d ** law["beta"]
    assert lhs == pytest.approx(rhs, rel=1e-3)
    # the smoothed cost stays within a few percent of the exact count of the ladder-like shape
    exact = ModelShape.from_dict(ladder_like_shape(n, ladder))
    assert math.exp(log_cost[1]) == pytest.approx(6 * n + exact.flops_per_token(seq_len, "chinchilla")
                                                  - exact.flops_per_token(seq_len, "6nd"), rel=0.01)
    assert chin["n_opt"] != pytest.approx(six["n_opt"], rel=0.02)  # the allocation moved
    assert chin["loss"] > six["loss"]  # the same number counts more of the work: less training bought


def test_a_study_in_n_and_d_recovers_the_same_law_whatever_the_grid_cost_model():
    """The same true law sampled on IsoFLOP grids laid out in each FLOPs definition (different (N, D) points):
    the parametric fit, which sees only N, D and loss, recovers the same constants from every one."""
    from plmscale.scaling import allocation
    from plmscale.scaling.parametric import fit_parametric
    ladder, seq_len = _demo_ladder()
    law = DEMO_LAW
    fits = {}
    for model in ("6nd", "with_attention", "chinchilla"):
        n_all, d_all = [], []
        for budget in (3e10, 1e11, 3e11, 1e12, 3e12):
            sizes = allocation.search_grid(1e4, decades=1.2)
            cost = allocation.cost_per_token(sizes, ladder, seq_len, model)
            sizes, cost = sizes[::24], cost[::24]
            n_all += list(sizes)
            d_all += list(budget / cost)
        n_all, d_all = np.array(n_all), np.array(d_all)
        loss = law["E"] + law["A"] / n_all ** law["alpha"] + law["B"] / d_all ** law["beta"]
        fits[model] = fit_parametric(n_all, d_all, loss)
    for key in ("E", "alpha", "beta"):
        for model in fits:
            assert fits[model][key] == pytest.approx(law[key], rel=0.02), (model, key)
    # ... while the allocation of the recovered law at one budget depends on the cost model
    entry = {k: fits["chinchilla"][k] for k in ("E", "A", "B", "alpha", "beta")}
    by_model = allocation.allocation_by_cost_model(entry, [1e13], ladder, seq_len)
    assert set(by_model) == {"6nd", "with_attention", "chinchilla"}
    assert by_model["chinchilla"][0]["n_opt"] != pytest.approx(by_model["6nd"][0]["n_opt"], rel=0.02)
    # as the formulas say: the more a count charges small models beyond 6N, the smaller N_opt at a given count
    # and the faster it grows with the budget (attention, then embeddings and logits on top)
    rows = {model: by_model[model][0] for model in ("6nd", "with_attention", "chinchilla")}
    assert rows["chinchilla"]["n_opt"] < rows["with_attention"]["n_opt"] < rows["6nd"]["n_opt"]
    assert rows["chinchilla"]["a"] > rows["with_attention"]["a"] > rows["6nd"]["a"]


def _fit_with_law(identified=True):
    law = {**DEMO_LAW, "a": 0.62, "b": 0.38, "flops_per_param_token": 6.0, "identified": identified,
           "reasons": [] if identified else ["optimum at the grid edge"]}
    return {"version": 1, "settings": {"predict_flops": {"clm": [1e13], "mlm": [1e13]}},
            "objectives": {"clm": {"parametric": law}, "mlm": {"parametric": {**law, "identified": False,
                                                                              "reasons": ["too few runs"]}}}}


def test_fit_json_gets_allocations_per_flops_definition_and_nothing_measured():
    """fit.json is identical between two runs from scratch: no measured cost law or measured allocation in it
    (they are measured_cost.json's)."""
    from plmscale.scaling.allocation import with_cost_allocations
    from plmscale.scaling.fitfile import parse_fit
    from plmscale.scaling.results import json_ready
    ladder, seq_len = _demo_ladder()
    fit = with_cost_allocations(_fit_with_law(), ladder, seq_len)
    clm = fit["objectives"]["clm"]["allocation_by_cost_model"]
    assert set(clm) == {"6nd", "with_attention", "chinchilla"}
    assert "measured_cost" not in fit and "measured" not in json.dumps(fit)
    assert clm["6nd"][0]["flops"] == 1e13
    assert "too few runs" in fit["objectives"]["mlm"]["allocation_by_cost_model"]["skipped"]
    parse_fit(json_ready(fit))
    clm["chinchilla"][0]["n_opt"] = -5.0
    with pytest.raises(PlmscaleError, match=r"allocation_by_cost_model.chinchilla\[0\].n_opt"):
        parse_fit(json_ready(fit))


# ---- priority 5: predict in GPU-hours and under a cost model -------------------------------------------------

def test_gpu_hours_convert_through_peak_and_mfu():
    converted = costs.gpu_hours_to_flops(10, "h100", 0.4)
    assert converted["flops"] == pytest.approx(10 * 3600 * 989e12 * 0.4)
    with pytest.raises(PlmscaleError, match="h100"):
        costs.gpu_hours_to_flops(10, "tpu9", 0.4)


def test_measured_allocation_spends_the_seconds_the_6nd_optimum_takes():
    from plmscale.scaling import allocation
    ladder, seq_len = _demo_ladder()
    law = costs.fit_measured_cost(_timed_runs(8e-6, 2e-11, "cpu", [1.2e4, 4e4, 8e4, 3e5]))
    rows = allocation.allocation_by_cost_model(DEMO_LAW, [1e13], ladder, seq_len, law)
    assert rows["measured:cpu"][0]["unit"] == "cpu-seconds" and rows["measured:cpu"][0]["flops"] == 1e13
    # the same money as the 6nd answer, spent where the measured cost says: at least as low a loss
    assert rows["measured:cpu"][0]["loss"] <= rows["6nd"][0]["loss"] + 1e-12


def test_measured_cost_file_round_trips_and_a_bad_one_is_named(tmp_path):
    from plmscale.scaling.results import write_json
    laws = costs.fit_measured_cost(_timed_runs(8e-6, 2e-11, "cpu", [1.2e4, 4e4, 8e4, 3e5]))
    path = tmp_path / costs.MEASURED_COST_FILE
    write_json(costs.measured_cost_record(laws), path)
    assert costs.read_measured_cost(path) == laws
    with pytest.raises(PlmscaleError, match="rule measured_cost"):
        costs.read_measured_cost(tmp_path / "elsewhere.json")
    with pytest.raises(PlmscaleError, match="cuda.*it has cpu"):
        costs.measured_law(laws, "cuda", str(path))
    path.write_text(json.dumps({"cpu": {"c0": "fast"}}))
    with pytest.raises(PlmscaleError, match="'cpu' needs numbers c0, c1 and r2"):
        costs.read_measured_cost(path)


def _written_fit(tmp_path):
    """fit.json, and beside it measured_cost.json as the workflow writes them."""
    from plmscale.scaling.allocation import with_cost_allocations
    from plmscale.scaling.fitfile import write_fit
    from plmscale.scaling.results import write_json
    ladder, seq_len = _demo_ladder()
    fit = with_cost_allocations(_fit_with_law(), ladder, seq_len)
    laws = costs.fit_measured_cost(_timed_runs(8e-6, 2e-11, "cpu", [1.2e4, 4e4, 8e4, 3e5]))
    write_json(costs.measured_cost_record(laws), tmp_path / costs.MEASURED_COST_FILE)
    return fit, write_fit(fit, tmp_path / "fit.json")


def test_predict_reports_the_allocation_under_a_cost_model_and_a_gpu_hour_budget(tmp_path, capsys):
    from plmscale.cli import main as cli_main
    fit, path = _written_fit(tmp_path)
    stored = fit["objectives"]["clm"]["allocation_by_cost_model"]["chinchilla"][0]
    assert cli_main(["predict", "--fit", str(path), "--flops", "1e13", "--objective", "clm",
                     "--cost-model", "chinchilla"]) == 0
    out = capsys.readouterr().out
    assert "counted in chinchilla" in out and f"N_opt {stored['n_opt']:.3g}" in out
    # measured on cpu: the seconds the 6nd optimum takes, the law from measured_cost.json beside fit.json
    from plmscale.scaling import allocation
    ladder, seq_len = _demo_ladder()
    law = costs.read_measured_cost(tmp_path / costs.MEASURED_COST_FILE)
    measured = allocation.allocation_by_cost_model(DEMO_LAW, [1e13], ladder, seq_len, law)["measured:cpu"][0]
    for how in (["--cost-model", "measured", "--device", "cpu"], ["--cost-model", "measured:cpu"]):
        assert cli_main(["predict", "--fit", str(path), "--flops", "1e13", "--objective", "clm", *how,
                         "--config", "config.yaml"]) == 0
        out = capsys.readouterr().out
        assert "cpu-seconds" in out and f"N_opt {measured['n_opt']:.3g}" in out
    # --measured elsewhere: a missing file is named, with the rule that writes it
    assert cli_main(["predict", "--fit", str(path), "--flops", "1e13", "--objective", "clm", "--cost-model",
                     "measured:cpu", "--measured", str(tmp_path / "none.json"), "--config", "config.yaml"]) == 2
    err = capsys.readouterr().err
    assert "none.json does not exist" in err and "rule measured_cost" in err
    with pytest.raises(SystemExit):  # not a cost model
        cli_main(["predict", "--fit", str(path), "--flops", "1e13", "--objective", "clm", "--cost-model", "kaplan"])
    capsys.readouterr()
    # GPU-hours: the budget converted at the device's peak and the stated MFU
    assert cli_main(["predict", "--fit", str(path), "--gpu-hours", "0.01", "--device", "h100", "--mfu", "0.3",
                     "--objective", "clm", "--cost-model", "with_attention", "--config", "config.yaml"]) == 0
    out = capsys.readouterr().out
    flops = 0.01 * 3600 * 989e12 * 0.3
    assert "assumed MFU of 0.3" in out and f"C = {flops:.3g} FLOPs" in out
    # a budget fit.json stores nothing for, without a config: the error says what to give
    assert cli_main(["predict", "--fit", str(path), "--flops", "3e13", "--objective", "clm",
                     "--cost-model", "chinchilla"]) == 2
    assert "--config" in capsys.readouterr().err
    assert cli_main(["predict", "--fit", str(path), "--objective", "clm"]) == 2  # no budget at all


def test_local_exponent_under_6nd_is_the_closed_form_and_moves_under_chinchilla():
    from plmscale.scaling import allocation
    ladder, seq_len = _demo_ladder()
    law = DEMO_LAW
    six = allocation.exponent_and_optimum(law, 1e13, ladder, seq_len, "6nd")
    assert six["a"] == pytest.approx(law["beta"] / (law["alpha"] + law["beta"]), rel=1e-3)
    chin = allocation.exponent_and_optimum(law, 1e13, ladder, seq_len, "chinchilla")
    # c(N)/6N falls with N: a budget's growth buys relatively more of the larger models, a rises
    assert chin["a"] > six["a"] + 0.005


# ---- IsoFLOP honest about its FLOPs definition; the envelope per cost model ----------------------------------

def _costed_runs(definition="6nd", rows=4):
    n = np.array([1e3, 2e3, 4e3, 8e3][:rows])
    tokens = np.full(rows, 1e6)
    counts = {"6nd": 6 * n * tokens, "with_attention": 7 * n * tokens, "chinchilla": 9 * n ** 0.95 * tokens}
    return pd.DataFrame({"run_id": [f"r{i}" for i in range(rows)], "n_params": n, "tokens": tokens,
                         "flops": counts[definition] * (1 + 1e-9),  # runs.csv's rounding
                         **{f"flops_{d}": v for d, v in counts.items()}})


def test_the_flops_definition_of_a_table_is_detected_from_its_cost_columns():
    for definition in ("6nd", "with_attention", "chinchilla"):
        assert costs.detect_flops_definition(_costed_runs(definition)) == {"flops_definition": definition}
    mixed = _costed_runs("6nd")
    mixed.loc[0, "flops"] = mixed.loc[0, "flops_chinchilla"]  # one run laid out in another definition
    found = costs.detect_flops_definition(mixed, "clm runs")
    assert found["flops_definition"] == "unknown"
    assert "clm runs" in found["note"] and "3 of 4 rows match flops_6nd" in found["note"]
    imported = _costed_runs().drop(columns=["flops_6nd", "flops_with_attention", "flops_chinchilla"])
    found = costs.detect_flops_definition(imported)
    assert found["flops_definition"] == "unknown" and "flops_chinchilla" in found["note"]
    assert costs.detect_flops_definition(_costed_runs().assign(flops=lambda t: t["flops"] * 2))[
        "flops_definition"] == "unknown"  # edited: matches none


def _synthetic_study(seed=0):
    from scaling_synthetic import isoflop_runs
    law = {"E": 1.8, "A": 400.0, "B": 3000.0, "alpha": 0.34, "beta": 0.30}
    runs, curves = isoflop_runs(law, np.random.default_rng(seed), budgets=10.0 ** np.arange(18, 20.01, 0.5),
                                with_curves=True)
    # a chinchilla-like count whose cost per token grows slower than 6N
    per_token = {"6nd": 6 * runs["n_params"], "with_attention": 6 * runs["n_params"] + 3e7,
                 "chinchilla": 6 * runs["n_params"] + 1e8}
    for definition, rate in per_token.items():
        runs[f"flops_{definition}"] = rate * runs["tokens"]
    return runs, curves


def test_fit_json_says_which_definition_isoflop_budgets_count_and_refits_the_envelope_per_cost_model():
    from plmscale.scaling.fit import fit_objective
    from plmscale.scaling.fitfile import parse_fit
    from plmscale.scaling.results import json_ready
    runs, curves = _synthetic_study()
    entry = fit_objective(runs, curves, 30, np.random.default_rng(1), 3)
    iso, env = entry["isoflop"], entry["envelope"]
    assert iso["flops_definition"] == "6nd" and env["flops_definition"] == "6nd"
    assert "iso-compute in 6nd only" in iso["cost_models"] and "train.flops_definition" in iso["cost_models"]
    by_model = env["by_cost_model"]
    assert set(by_model) == {"6nd", "with_attention", "chinchilla"}
    # under the study's own count: the envelope itself, its interval from the very same resamples
    assert by_model["6nd"]["a"] == env["a"] and by_model["6nd"]["a_ci"] == env["a_ci"]
    # recounted where small models cost more per token, the envelope is another one (what it recovers on curves
    # that span each optimum: the next test; on an IsoFLOP grid's curves, which sizes reach a compute limits it)
    assert abs(by_model["chinchilla"]["a"] - env["a"]) > 0.05 and by_model["chinchilla"]["n_runs"] == len(runs)
    from plmscale.scaling.summary import summary_table
    text = summary_table({"objectives": {"clm": entry}, "published": {}})  # what `plmscale fit` prints
    assert "budgets in 6nd FLOPs: iso-compute in 6nd" in text
    assert f"chinchilla a {by_model['chinchilla']['a']:.3f}" in text
    document = {"version": 1, "objectives": {"clm": json_ready(entry)}}
    parse_fit(document)
    document["objectives"]["clm"]["envelope"]["by_cost_model"]["chinchilla"]["k_n"] = -1.0
    with pytest.raises(PlmscaleError, match=r"envelope.by_cost_model.chinchilla.k_n"):
        parse_fit(document)
    # an imported table (no per-definition columns): the definition is unknown, the envelope not recounted
    plain = fit_objective(runs.drop(columns=[c for c in runs if c.startswith("flops_")]), curves, 0,
                          np.random.default_rng(1), 3)
    assert plain["isoflop"]["flops_definition"] == "unknown" and "imported" in plain["isoflop"]["note"]
    assert "iso-compute in no named cost model" in plain["isoflop"]["cost_models"]
    assert "flops_chinchilla" in plain["envelope"]["by_cost_model"]["skipped"]


def test_the_envelope_per_cost_model_recovers_the_exponent_each_cost_implies():
    """Curves of a Chinchilla law L = E + A/N^alpha + B/D^beta on a dense ladder. Counted as c(N) = k·N^gamma per
    token, the envelope's optimum follows N_opt ∝ C^(beta / (alpha + gamma·beta)): gamma 1 is 6ND's
    beta/(alpha+beta); a cost growing slower than N (gamma < 1) raises the exponent."""
    from plmscale.scaling.envelope import envelope_by_cost_model
    law = {"E": 1.5, "A": 50.0, "B": 50.0, "alpha": 0.5, "beta": 0.5}
    sizes = np.geomspace(1e3, 1e7, 61)
    fractions = np.geomspace(1e-2, 1.0, 300)
    frames = []
    for i, n in enumerate(sizes):
        tokens = 3 * n * fractions  # the kept last 90% of each curve spans the optimum D = N (0.64 N at gamma 0.8)
        frames.append(pd.DataFrame({"run_id": f"r{i:02d}", "objective": "clm", "n_params": n, "tokens": tokens,
                                    "flops": 6 * n * tokens,
                                    "loss": law["E"] + law["A"] / n ** law["alpha"]
                                    + law["B"] / tokens ** law["beta"]}))
    curves = pd.concat(frames, ignore_index=True)
    gammas = {"6nd": 1.0, "steeper": 1.0, "flatter": 0.8}
    per_token = {name: {f"r{i:02d}": (6 * n if name == "6nd" else 3 * n ** gamma) for i, n in enumerate(sizes)}
                 for name, gamma in gammas.items()}
    fitted = envelope_by_cost_model(curves, per_token)
    for name, gamma in gammas.items():
        expected = law["beta"] / (law["alpha"] + gamma * law["beta"])
        assert fitted[name]["a"] == pytest.approx(expected, abs=0.02), name
    assert fitted["6nd"]["n_runs"] == len(sizes) and "draws" not in fitted["6nd"]  # no bootstrap counts given
    missing = envelope_by_cost_model(curves, {"none": {}})
    assert "no curve point" in missing["none"]["error"]


# ---- allocation of every (N, D) law family ------------------------------------------------------------------

FARSEER_THETA = [0.3, -0.35, 0.6, 0.1, -0.25, -1.5, 0.05, 0.3, math.log(0.4)]  # an interior optimum near 1.5e5 at 1e13


def _farseer_entry(n_draws=40, identified=True):
    rng = np.random.default_rng(3)
    thetas = [list(np.array(FARSEER_THETA) + rng.normal(0, 0.01, 9)) for _ in range(n_draws)] + [None]
    return {"theta": FARSEER_THETA, "identified": identified, "reasons": [] if identified else ["bound"],
            "bootstrap": {"thetas": thetas}}


def test_allocation_of_the_farseer_law_under_each_cost_model():
    """A law with no closed form: under 6nd the allocation is farseer's own numerical optimum; under chinchilla
    N_opt minimises L(N, C / c(N)) (its neighbours on either side lose), with bootstrap intervals around it."""
    from plmscale.scaling import allocation, farseer
    ladder, seq_len = _demo_ladder()
    law = allocation.loss_law("farseer", _farseer_entry())
    assert law.draws.shape == (40, 9)  # the failed refit (null) left out
    six = allocation.allocate(law, 1e13, ladder, seq_len, "6nd")
    n_ref, d_ref, loss_ref = farseer.optimal_allocation(FARSEER_THETA, 1e13, 6.0)
    assert six["n_opt"] == pytest.approx(n_ref, rel=0.01) and six["loss"] == pytest.approx(loss_ref, rel=1e-5)
    assert six["n_opt_ci"][0] < six["n_opt"] < six["n_opt_ci"][1] and six["a_ci"][0] < six["a"] < six["a_ci"][1]
    chin = allocation.allocate(law, 1e13, ladder, seq_len, "chinchilla")
    grid = allocation.search_grid(six["n_opt"])  # the sizes allocate searched, and c(N) on them
    grid_cost = allocation.cost_per_token(grid, ladder, seq_len, "chinchilla")
    cost = lambda n: math.exp(np.interp(math.log(n), np.log(grid), np.log(grid_cost)))  # noqa: E731
    at = lambda n: float(farseer.loss(FARSEER_THETA, n, 1e13 / cost(n)))  # noqa: E731
    assert chin["d_opt"] == pytest.approx(1e13 / cost(chin["n_opt"]), rel=1e-3)
    assert at(chin["n_opt"]) < min(at(chin["n_opt"] * 1.1), at(chin["n_opt"] / 1.1))
    # c(N)/6N falls with N: the optimum moves up, and the same number buys less training
    assert chin["n_opt"] > 1.01 * six["n_opt"] and chin["loss"] > six["loss"]


def test_a_law_family_plugs_in_as_a_callable_and_its_constants():
    """Any loss(params, n, d) that broadcasts like farseer.loss allocates: the Chinchilla form written as such a
    callable (as scaling/data_constrained.py's law plugs in) gives the parametric allocation."""
    from plmscale.scaling import allocation
    ladder, seq_len = _demo_ladder()

    def chinchilla_form(params, n, d):
        p = np.asarray(params, float)
        return p[..., 0] + p[..., 1] / n ** p[..., 3] + p[..., 2] / d ** p[..., 4]

    point = np.array([DEMO_LAW[k] for k in ("E", "A", "B", "alpha", "beta")])
    custom = allocation.LossLaw("custom", chinchilla_form, point)  # no closed form given: the centre is searched
    for model in ("6nd", "chinchilla"):
        got = allocation.allocate(custom, 1e13, ladder, seq_len, model)
        expected = allocation.allocate(DEMO_LAW, 1e13, ladder, seq_len, model)
        assert got["n_opt"] == pytest.approx(expected["n_opt"], rel=1e-3)
        assert got["a"] == pytest.approx(expected["a"], rel=1e-3) and got["n_opt_ci"] is None


def test_the_data_constrained_family_allocates_under_each_cost_model():
    """With unlimited unique data the data-constrained law still discounts parameters beyond the optimum for
    its D (Muennighoff's U_N), so it is not the Chinchilla form away from the optimum, but at it: the 6nd
    allocation is the parametric one of the same constants; under chinchilla its own optimum minimises
    L(N, C / c(N)); its stored draws give the interval."""
    from plmscale.scaling import allocation, data_constrained
    ladder, seq_len = _demo_ladder()
    entry = {**{k: DEMO_LAW[k] for k in ("E", "A", "B", "alpha", "beta")}, "r_star_d": 15.4, "r_star_n": 5.3}
    scale = np.linspace(0.97, 1.03, 20)
    entry["bootstrap"] = {"draws": {name: [entry[name] * (f if name == "A" else 1.0) for f in scale]
                                    for name in data_constrained.PARAM_NAMES}}
    law = allocation.loss_law("data_constrained", entry)
    assert law.draws.shape == (20, 7)
    six = allocation.allocate(law, 1e13, ladder, seq_len, "6nd")
    assert six["n_opt"] == pytest.approx(allocation.allocate(DEMO_LAW, 1e13, ladder, seq_len, "6nd")["n_opt"], rel=0.01)
    chin = allocation.allocate(law, 1e13, ladder, seq_len, "chinchilla")
    grid = allocation.search_grid(six["n_opt"])
    grid_cost = allocation.cost_per_token(grid, ladder, seq_len, "chinchilla")
    cost = lambda n: math.exp(np.interp(math.log(n), np.log(grid), np.log(grid_cost)))  # noqa: E731
    at = lambda n: float(data_constrained.loss(law.point, n, 1e13 / cost(n)))  # noqa: E731
    assert at(chin["n_opt"]) < min(at(chin["n_opt"] * 1.1), at(chin["n_opt"] / 1.1))
    assert chin["n_opt_ci"][0] < chin["n_opt"] < chin["n_opt_ci"][1]


def test_with_cost_allocations_covers_every_identified_family_and_predict_prints_them(tmp_path, capsys):
    from plmscale.cli import main as cli_main
    from plmscale.scaling import isoflop
    from plmscale.scaling.allocation import with_cost_allocations
    from plmscale.scaling.fitfile import parse_fit, write_fit
    from plmscale.scaling.results import json_ready
    ladder, seq_len = _demo_ladder()
    fit = _fit_with_law()
    fit["objectives"]["clm"]["farseer"] = _farseer_entry()
    fit["objectives"]["mlm"]["farseer"] = _farseer_entry(identified=False)
    fit["objectives"]["clm"]["isoflop"] = {"error": "no grid", "flops_definition": "6nd",
                                           "cost_models": isoflop.cost_model_note("6nd")}
    fit = with_cost_allocations(fit, ladder, seq_len)
    clm, mlm = fit["objectives"]["clm"], fit["objectives"]["mlm"]
    assert set(clm["allocation_by_family"]["farseer"]) == {"6nd", "with_attention", "chinchilla"}
    assert clm["allocation_by_cost_model"]["6nd"][0]["a"] == pytest.approx(
        DEMO_LAW["beta"] / (DEMO_LAW["alpha"] + DEMO_LAW["beta"]), rel=1e-3)  # rows carry the local exponent
    assert "bound" in mlm["allocation_by_family"]["farseer"]["skipped"]
    parse_fit(json_ready(fit))
    path = write_fit(fit, tmp_path / "fit.json")
    assert cli_main(["predict", "--fit", str(path), "--flops", "1e13", "--objective", "clm", "--cost-model",
                     "chinchilla", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["cost_model"]
    assert printed["name"] == "chinchilla" and set(printed["by_family"]) == {"parametric", "farseer"}
    stored = clm["allocation_by_family"]["farseer"]["chinchilla"][0]
    assert printed["by_family"]["farseer"]["n_opt"] == pytest.approx(stored["n_opt"])
    assert printed["by_family"]["farseer"]["n_opt_ci"] == pytest.approx(stored["n_opt_ci"])
    assert cli_main(["predict", "--fit", str(path), "--flops", "1e13", "--objective", "clm", "--cost-model",
                     "chinchilla"]) == 0
    out = capsys.readouterr().out
    assert "farseer law with the budget counted in chinchilla" in out and "parametric law with" in out
    assert "isoflop law: not relabelled under chinchilla: iso-compute in 6nd only" in out
    # no family predicts anything: an error saying why (the first family's reason)
    assert cli_main(["predict", "--fit", str(path), "--flops", "1e13", "--objective", "mlm", "--cost-model",
                     "chinchilla", "--json"]) == 2
    assert "parametric predicts nothing (too few runs)" in capsys.readouterr().err


def test_the_report_figure_shows_the_stored_exponent_and_optimum_per_cost_model(tmp_path):
    """The figure draws fit.json's stored allocations (no recomputation): each family's a and N_opt per cost
    model with its interval, the envelope per cost model, and names a law that predicts nothing."""
    from plmscale.plots.cost_models import plot_cost_models
    from plmscale.scaling.allocation import with_cost_allocations
    from plmscale.scaling.results import json_ready
    ladder, seq_len = _demo_ladder()
    fit = _fit_with_law()
    fit["objectives"]["clm"]["farseer"] = _farseer_entry()
    fit = with_cost_allocations(fit, ladder, seq_len)
    stored = fit["objectives"]["clm"]["allocation_by_cost_model"]
    for model in ("6nd", "chinchilla"):  # a marker no recomputation could produce
        stored[model][0]["a"] = {"6nd": 0.111, "chinchilla": 0.333}[model]
        stored[model][0]["a_ci"] = [0.05, 0.5]
    fit["objectives"]["clm"]["envelope"] = {"error": "not fitted", "by_cost_model": {"chinchilla": {
        "k_n": 1.0, "a": 0.777, "k_d": 1.0, "b": 0.2, "a_ci": [0.7, 0.8], "b_ci": [0.1, 0.3]}}}
    figure = plot_cost_models(json_ready(fit), tmp_path / "cost_models.png")
    assert (tmp_path / "cost_models.png").exists()
    ax_a, ax_n, mlm_a, _ = figure.axes
    points = {round(float(line.get_ydata()[0]), 3) for line in ax_a.get_lines() if len(line.get_ydata()) == 1}
    assert {0.111, 0.333, 0.777} <= points
    n_points = [float(line.get_ydata()[0]) for line in ax_n.get_lines() if len(line.get_ydata()) == 1]
    assert any(math.isclose(n, stored["chinchilla"][0]["n_opt"]) for n in n_points)
    assert any(math.isclose(n, fit["objectives"]["clm"]["allocation_by_family"]["farseer"]["6nd"][0]["n_opt"])
               for n in n_points)
    assert "too few runs" in " ".join(text.get_text().replace("\n", " ") for text in mlm_a.texts)
    # an envelope judged unidentified draws nothing under any cost model; the reason is named instead
    fit["objectives"]["clm"]["envelope"].update(identified=False, reasons=["interval of a too wide"])
    figure = plot_cost_models(json_ready(fit), tmp_path / "unidentified.png")
    points = {round(float(line.get_ydata()[0]), 3) for line in figure.axes[0].get_lines()
              if len(line.get_ydata()) == 1}
    assert 0.777 not in points and 0.333 in points
    assert "interval of a too wide" in " ".join(t.get_text().replace("\n", " ") for t in figure.axes[1].texts)
