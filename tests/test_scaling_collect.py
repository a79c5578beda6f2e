"""Own runs (metrics.json + curve.csv) into the scaling tables, and merging with imported runs."""

import json

import pandas as pd
import pytest

from plmscale.errors import PlmscaleError
from plmscale.scaling.collect import collect_and_merge, collect_runs, merge_tables


def write_run(root, run_id, objective="clm", n_params=1_000_000, tokens=2e8, budget=1.2e15, loss=2.6,
              init_from=None, drop=None):
    folder = root / run_id
    folder.mkdir(parents=True)
    metrics = {"run_id": run_id, "objective": objective, "model": "n1M", "n_params": n_params,
               "n_params_with_embeddings": n_params + 10_000, "tokens": tokens, "flops": 6 * n_params * tokens,
               "flops_6nd": 6 * n_params * tokens, "flops_with_attention": 7 * n_params * tokens,
               "budget": budget, "final_valid_loss": loss, "best_valid_loss": loss - 0.01, "train_loss": loss,
               "steps": 10, "init_from": init_from}
    if drop:
        metrics.pop(drop)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "curve.csv").write_text("step,tokens,flops,train_loss,valid_loss,lr\n"
                                      f"1,{tokens / 2},{3 * n_params * tokens},3.0,,0.001\n"
                                      f"2,{tokens},{6 * n_params * tokens},2.7,{loss},0.0001\n")
    return folder / "metrics.json", folder / "curve.csv"


def test_collect_reads_metrics_and_curves(tmp_path):
    a = write_run(tmp_path, "clm_n1M_c1e15")
    b = write_run(tmp_path, "mlm_n1M_d2e8", objective="mlm", budget=None, loss=2.4)
    c = write_run(tmp_path, "tmlm_clm_n1M_c1e15", objective="mlm", budget=None, init_from="clm_n1M_c1e15")
    runs, curves = collect_runs([a[0], b[0], c[0]], [a[1], b[1], c[1]])
    assert list(runs.columns[:9]) == ["run_id", "objective", "n_params", "tokens", "flops", "loss", "budget",
                                      "source", "init_from"]
    by_id = runs.set_index("run_id")
    assert by_id.loc["clm_n1M_c1e15", "loss"] == 2.6
    assert by_id.loc["clm_n1M_c1e15", "flops"] == pytest.approx(1.2e15)
    assert by_id.loc["clm_n1M_c1e15", "design"] == "isoflop"
    assert by_id.loc["mlm_n1M_d2e8", "design"] == "long"
    assert by_id.loc["tmlm_clm_n1M_c1e15", "kind"] == "transfer"
    assert set(runs["source"]) == {"own"}
    # only evaluated points make it into the curves
    assert len(curves) == 3 and curves["loss"].notna().all()


def test_missing_metric_key_names_file_and_key(tmp_path):
    metrics, _ = write_run(tmp_path, "clm_bad", drop="final_valid_loss")
    with pytest.raises(PlmscaleError, match=r"clm_bad/metrics.json.*final_valid_loss"):
        collect_runs([metrics])


def test_bad_json_and_diverged_run(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "metrics.json").write_text("{not json")
    with pytest.raises(PlmscaleError, match="broken/metrics.json:1"):
        collect_runs([folder / "metrics.json"])
    metrics, _ = write_run(tmp_path, "clm_nan", loss=float("nan"))
    with pytest.raises(PlmscaleError, match="final_valid_loss"):
        collect_runs([metrics])


def test_merge_own_and_imported(tmp_path):
    own = collect_runs(*zip(write_run(tmp_path, "clm_n1M_c1e15")))
    imported = (pd.DataFrame([{"run_id": "clm_13M_x", "objective": "clm", "n_params": 13e6, "tokens": 1e9,
                               "flops": 7.8e16, "loss": 2.7, "budget": None, "source": "imported",
                               "init_from": None, "kind": "", "design": "long"}]),
                pd.DataFrame([{"run_id": "clm_13M_x", "objective": "clm", "n_params": 13e6, "flops": 7.8e16,
                               "tokens": 1e9, "loss": 2.7}]))
    runs, curves = merge_tables(own, imported)
    assert sorted(runs["source"]) == ["imported", "own"]
    assert len(curves) == 2
    with pytest.raises(PlmscaleError, match="both own and imported"):
        merge_tables(own, own)


def test_collect_and_merge_needs_something(tmp_path):
    with pytest.raises(PlmscaleError, match="nothing to collect"):
        collect_and_merge([], [], None, None)
    imported = tmp_path / "runs.csv"
    pd.DataFrame([{"run_id": "r", "objective": "mlm", "n_params": 1e6, "tokens": 1e9, "flops": 6e15,
                   "loss": 2.5, "budget": "", "source": "imported", "init_from": ""}]).to_csv(imported, index=False)
    runs, curves = collect_and_merge([], [], imported, None)
    assert len(runs) == 1 and len(curves) == 0


def test_own_transfer_run_is_paired_alike_in_fit_and_plot(tmp_path):
    """Own runs carry no importer `pair`: collect pairs the transfer run with the same-size scratch run,
    and fit.json's transfer analysis and the transfer figure show that same pair."""
    from plmscale.scaling.fit import fit_all
    from plmscale.plots import plot_transfer
    from scaling_synthetic import fit_settings

    files = [write_run(tmp_path, "clm_n1M_c1e15"),
             write_run(tmp_path, "mlm_n1M_d2e8", objective="mlm", budget=None, loss=2.6),
             write_run(tmp_path, "mlm_n2M_d2e8", objective="mlm", n_params=2_000_000, budget=None, loss=2.5),
             write_run(tmp_path, "tmlm_clm_n1M_c1e15", objective="mlm", budget=None, loss=2.4,
                       init_from="clm_n1M_c1e15")]
    runs, curves = collect_runs(*zip(*files))
    by_id = runs.set_index("run_id")
    assert by_id.loc["tmlm_clm_n1M_c1e15", "role"] == "transfer"
    assert by_id.loc["tmlm_clm_n1M_c1e15", "pair"] == "mlm_n1M_d2e8"
    assert by_id.loc["mlm_n1M_d2e8", "pair"] == "mlm_n1M_d2e8"

    fit = fit_all(runs, curves, fit_settings(bootstrap=0))
    (pair,) = fit["transfer"]["pairs"]
    assert pair["scratch_run_id"] == "mlm_n1M_d2e8" and pair["loss_gap"] == pytest.approx(0.2)

    fig = plot_transfer(runs, tmp_path / "transfer.png", fit=fit)
    (line,) = fig.axes[0].get_lines()[:1]
    assert list(line.get_xdata()) == [1_000_000]
    assert line.get_ydata()[0] == pytest.approx(100 * pair["loss_gap"] / pair["scratch_loss"])
    assert not any("no paired" in text.get_text() for text in fig.axes[0].texts)


def test_every_own_run_has_its_unique_tokens(tmp_path):
    """runs.csv's unique_tokens (for the data-constrained law): min(D, the tokens a run draws from): the train
    split's (manifest n_tokens) for a grid run, its subset's for a repetition run; empty without a manifest."""
    from plmscale.scaling.data_constrained import repetition_problem, unique_tokens_of

    below = write_run(tmp_path, "clm_below", tokens=5e7)
    above = write_run(tmp_path, "clm_above", tokens=3e8)
    subset = write_run(tmp_path, "rep_clm", tokens=2e8, budget=None)
    metrics = json.loads(subset[0].read_text())
    metrics.update(unique_tokens=1e7, epochs=20.0, subset={"source": "demo", "unique_tokens": 1e7, "seed": 0})
    subset[0].write_text(json.dumps(metrics))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"n_tokens": 1e8 - 2e5, "n_sequences": 1e5}))  # 1e8 tokens framed
    runs, _ = collect_and_merge([below[0], above[0], subset[0]], [], train_manifest=manifest)
    unique = runs.set_index("run_id")["unique_tokens"]
    assert unique.to_dict() == {"clm_below": 5e7, "clm_above": 1e8, "rep_clm": 1e7}
    # the law reads the column as it is written to runs.csv, and sees the repeated runs
    written = tmp_path / "runs.csv"
    runs.to_csv(written, index=False)
    table = pd.read_csv(written)
    assert repetition_problem(table["tokens"].to_numpy(float), unique_tokens_of(table)) is None
    alone, _ = collect_and_merge([below[0]], [])
    assert alone["unique_tokens"].isna().all()
