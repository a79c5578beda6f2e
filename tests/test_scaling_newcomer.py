"""What a newcomer met with `plmscale fit`, `predict`, `cross-check` and `import-curves` (issue 27): each
test failed on the code the issue was filed against and holds the behaviour now asked for."""

import json

import numpy as np
import pandas as pd
import pytest

from plmscale.cli import main as cli_main
from plmscale.errors import PlmscaleError
from plmscale.scaling.collect import collect_runs
from plmscale.scaling.fit import fit_all
from plmscale.scaling.fitfile import write_fit
from plmscale.scaling.importer import read_scalar_csv
from scaling_synthetic import fit_settings, isoflop_runs, random_law


@pytest.fixture(scope="module")
def runs():
    return isoflop_runs(random_law(np.random.default_rng(3)), np.random.default_rng(3), budgets=[1e18, 1e19, 1e20],
                        sizes_per_budget=6)


def _fit(tmp_path, args, runs, capsys):
    runs.to_csv(tmp_path / "runs.csv", index=False)
    code = cli_main(["fit", str(tmp_path / "runs.csv"), "--out", str(tmp_path), *args])
    return code, capsys.readouterr()


# ---- budgets without a budget column: grouped around a centre, never chained ----------------------------------

def test_runs_spread_evenly_in_flops_are_a_scatter_not_chained_into_one_budget(tmp_path, capsys):
    # Chinchilla-like: FLOPs spread over 9.4x, neighbours 0.02 dex apart: chaining made them one budget. They are
    # a scatter of N and D (issue 23): the IsoFLOP method does not apply, and says how to make it apply.
    flops = np.geomspace(1e18, 9.4e18, 50)
    n = np.geomspace(5e6, 5e8, 50)
    spread = pd.DataFrame({"run_id": [f"r{i}" for i in range(50)], "objective": "clm", "n_params": n,
                           "tokens": flops / (6 * n), "flops": flops, "loss": 3.0 - 0.1 * np.log10(flops / 1e18)})
    code, _ = _fit(tmp_path, ["--bootstrap", "0"], spread, capsys)
    assert code == 0
    isoflop = json.loads((tmp_path / "fit.json").read_text())["objectives"]["clm"]["isoflop"]
    assert "optima" not in isoflop
    (reason,) = isoflop["reasons"]
    assert "scatter of N and D" in reason and "9.4x" in reason and "Add a budget column" in reason
    assert "docs/fitting.md" in reason


def test_budgets_close_to_their_centre_still_group_without_a_budget_column(runs):
    jittered = runs.drop(columns="budget").assign(flops=runs["flops"] * np.tile([0.9, 1.0, 1.1], len(runs) // 3))
    entry = fit_all(jittered, None, fit_settings(bootstrap=0, backtest=False))["objectives"]["clm"]["isoflop"]
    assert [round(np.log10(o["budget"]), 2) for o in entry["optima"]] == [18.0, 19.0, 20.0]


# ---- the unit warning names the column that is off --------------------------------------------------------------

def chinchilla_like_runs():
    """Three budgets, sizes around Chinchilla's optimum (~20 tokens per parameter)."""
    rows = []
    for budget in (1e18, 1e19, 1e20):
        for j, n in enumerate(np.sqrt(budget / 120) * np.geomspace(0.3, 3, 5)):
            rows.append({"run_id": f"c{budget:.0e}_{j}", "objective": "clm", "n_params": n, "tokens": budget / (6 * n),
                         "flops": budget, "loss": 3 - 0.1 * np.log10(budget) + 0.05 * np.log(n) ** 2 / 100,
                         "budget": budget})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("column, factor", [("tokens", 1e-3), ("n_params", 1e-6), ("flops", 1e9)])
def test_a_column_in_another_unit_is_named_in_the_warning(column, factor):
    runs = chinchilla_like_runs()
    runs[column] *= factor
    if column == "flops":
        runs["budget"] *= factor
    (note,) = fit_all(runs, None, fit_settings(bootstrap=0, backtest=False))["objectives"]["clm"]["notes"]
    size = "1e+09x too large" if column == "flops" else f"{1 / factor:.3g}x too small"
    assert f"most likely the {column} column is in another unit, about {size}" in note


# ---- flags below their floor are refused, naming the flag ---------------------------------------------------------

def test_min_points_per_budget_below_three_is_refused_naming_the_flag(tmp_path, capsys, runs):
    code, out = _fit(tmp_path, ["--bootstrap", "0", "--min-points-per-budget", "0"], runs, capsys)
    assert code == 2 and "--min-points-per-budget 0 is below its floor 3" in out.err


# ---- predict far beyond the fitted range says so ------------------------------------------------------------------

def test_predict_far_beyond_the_largest_fitted_budget_warns_with_the_factor(tmp_path, capsys, runs):
    fit = fit_all(runs, None, fit_settings(bootstrap=20, backtest=False))
    write_fit(fit, tmp_path / "fit.json")
    assert cli_main(["predict", "--fit", str(tmp_path / "fit.json"), "--flops", "1e300", "--objective", "clm"]) == 0
    out = capsys.readouterr()
    assert "1e+280x the largest budget fitted (1e+20 FLOPs)" in out.err and "far outside the fitted range" in out.err
    assert cli_main(["predict", "--fit", str(tmp_path / "fit.json"), "--flops", "1e21", "--objective", "clm"]) == 0
    out = capsys.readouterr()
    assert "10x the largest budget fitted" in out.out and "warning" not in out.err


# ---- cross-check: the help's form works, a minimal runs.csv works --------------------------------------------------

def test_cross_check_takes_the_helps_form_and_a_runs_table_without_budget(tmp_path, capsys, runs):
    for label in ("cosine", "wsd"):
        (tmp_path / label).mkdir()
        write_fit(fit_all(runs, None, fit_settings(bootstrap=0, backtest=False)), tmp_path / label / "fit.json")
        runs[["run_id", "objective", "n_params", "flops", "loss"]].to_csv(tmp_path / label / "runs.csv", index=False)
    assert cli_main(["cross-check", "--fit", f"cosine={tmp_path}/cosine/fit.json", f"wsd={tmp_path}/wsd/fit.json",
                     "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "cross_check.json").read_text())
    assert len(result["objectives"]["clm"]["points"]) == len(runs)
    runs[["run_id", "objective", "n_params", "flops"]].to_csv(tmp_path / "wsd" / "runs.csv", index=False)
    assert cli_main(["cross-check", "--fit", f"cosine={tmp_path}/cosine/fit.json", "--fit",
                     f"wsd={tmp_path}/wsd/fit.json", "--out", str(tmp_path / "out")]) == 2
    assert f"{tmp_path}/wsd/runs.csv lacks the column(s) loss" in capsys.readouterr().err


# ---- import-curves on a binary file names the file ---------------------------------------------------------------

@pytest.mark.parametrize("content", [b"PK\x03\x04\x14\x00\x08\x08\x00\x00\xff\xfe\x9c\x80 binary",
                                     b"Wall time,Step,Value\n1,2\x00\x00,3\n"])
def test_a_binary_csv_is_an_error_naming_the_file(tmp_path, content):
    path = tmp_path / "run.csv"
    path.write_bytes(content)
    with pytest.raises(PlmscaleError, match=rf"{path}: not a text file"):
        read_scalar_csv(path, "Step", "Value")


# ---- the fit table: every parametric constant with its interval; the paper row only where it belongs ---------------

def test_fit_table_prints_parametric_constants_and_the_paper_row_only_for_protein_runs(tmp_path, capsys, runs):
    code, out = _fit(tmp_path, ["--bootstrap", "20"], runs, capsys)
    assert code == 0 and "paper" not in out.out  # a runs table of unknown origin: no protein comparison
    parametric = json.loads((tmp_path / "fit.json").read_text())["objectives"]["clm"]["parametric"]
    for name in ("E", "A", "B", "alpha", "beta"):
        low, high = parametric[f"{name}_ci"]
        assert low <= high and f"{name} {parametric[name]:.4g} [{low:.4g}, {high:.4g}]" in out.out
    code, out = _fit(tmp_path, ["--bootstrap", "0", "--paper"], runs, capsys)
    assert code == 0 and "clm       paper" in out.out
    code, out = _fit(tmp_path, ["--bootstrap", "0"], runs.assign(source="own"), capsys)
    assert code == 0 and "clm       paper" in out.out  # runs plmscale trained: a protein study


# ---- epochs per run, and a warning when IsoFLOP runs repeat their data -------------------------------------------

def test_collect_records_epochs_and_fit_names_the_runs_that_repeat_their_data(tmp_path, runs, caplog):
    metrics = tmp_path / "r1" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"run_id": "r1", "objective": "clm", "model": "n1k", "n_params": 1000, "tokens": 5e6,
                                   "flops": 3e10, "budget": 3e10, "final_valid_loss": 2.5, "init_from": None}))
    collected, _ = collect_runs([metrics], train_tokens=2e6)
    assert collected["epochs"].tolist() == [2.5]

    epochs = np.where(runs["budget"] == 1e20, 20.8, 0.5)
    with caplog.at_level("WARNING", logger="plmscale.scaling.fit"):
        notes = fit_all(runs.assign(epochs=epochs), None,
                        fit_settings(bootstrap=0, backtest=False))["objectives"]["clm"]["notes"]
    (note,) = notes
    repeated = runs.loc[runs["budget"] == 1e20, "run_id"]
    assert f"{len(repeated)} IsoFLOP run(s) repeat their training data, up to 20.8 epochs" in note
    assert all(run_id in note for run_id in repeated)
    assert any("repeat their training data" in r.getMessage() for r in caplog.records)


def test_train_split_tokens_read_from_the_manifest_and_a_bad_one_named(tmp_path):
    """collect's epochs divide by one pass over the train split, read from its manifest.json: the residues plus
    <cls> and <eos> per sequence, the count `plmscale plan` and the repetition subsets use too."""
    from plmscale.data.shards import read_split_pass_tokens as train_split_tokens
    from plmscale.grid.plan import train_split_tokens as plan_split_tokens

    manifest = tmp_path / "data" / "shards" / "train" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"n_tokens": 2_000_000, "n_sequences": 10_000}))
    assert train_split_tokens(manifest) == 2_020_000
    assert plan_split_tokens(tmp_path) == 2_020_000  # plmscale plan's epochs: the same count
    manifest.write_text(json.dumps({"n_tokens": 0, "n_sequences": 1}))
    with pytest.raises(PlmscaleError, match=f"{manifest}: n_tokens is 0, not a positive count"):
        train_split_tokens(manifest)
    manifest.write_text(json.dumps({"n_tokens": 5}))
    with pytest.raises(PlmscaleError, match="n_sequences is None"):
        train_split_tokens(manifest)
    # plmscale plan reads it through the same reader: a broken manifest is named, not taken for "not written yet"
    manifest.write_text("{not json")
    with pytest.raises(PlmscaleError, match=f"{manifest}:1: not valid JSON"):
        plan_split_tokens(tmp_path)
    manifest.unlink()
    assert plan_split_tokens(tmp_path) is None
