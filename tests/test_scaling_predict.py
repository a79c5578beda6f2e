"""predict(): JSON shape, intervals, ladder; `plmscale fit` -> `plmscale predict` round trip."""

import json

import numpy as np
import pytest

from plmscale.cli import main as cli_main
from plmscale.scaling.fit import fit_all
from plmscale.scaling.predict import load_ladder, nearest_shape, predict
from scaling_synthetic import fit_settings, isoflop_runs, random_law, true_n_opt


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(7)
    law = random_law(rng)
    runs, curves = isoflop_runs(law, rng, noise=0.005, with_curves=True)
    return law, runs, curves


@pytest.fixture(scope="module")
def fit(synthetic):
    law, runs, curves = synthetic
    return fit_all(runs, curves, fit_settings(bootstrap=200, seed=0))


def test_predict_json_shape(fit):
    result = predict(fit, 1.7e22, "clm")
    assert set(result) >= {"objective", "flops", "methods"}
    assert set(result["methods"]) == {"isoflop", "envelope", "parametric"}
    for values in result["methods"].values():
        assert set(values) == {"n_opt", "d_opt", "loss", "n_opt_ci", "d_opt_ci"}
        low, high = values["n_opt_ci"]
        assert low <= values["n_opt"] <= high
        assert values["d_opt_ci"][0] <= values["d_opt"] <= values["d_opt_ci"][1]


def test_predictions_track_the_true_optimum(synthetic, fit):
    law, _, _ = synthetic
    truth = true_n_opt(law, 1e22)
    for method in ("isoflop", "parametric"):
        n_opt = predict(fit, 1e22, "clm")["methods"][method]["n_opt"]
        assert n_opt == pytest.approx(truth, rel=0.4)


def test_unfitted_method_gives_nulls(fit):
    broken = json.loads(json.dumps(fit))
    broken["objectives"]["clm"]["envelope"] = {"error": "envelope fit needs training curves"}
    result = predict(broken, 1e21, "clm")
    assert result["methods"]["envelope"]["n_opt"] is None
    assert "not fitted" in result["details"]["envelope"]["note"]


def test_missing_objective_is_a_clear_error(fit):
    from plmscale.errors import PlmscaleError
    with pytest.raises(PlmscaleError, match="no 'mlm' objective"):
        predict(fit, 1e21, "mlm")


def test_ladder_from_mapping_and_shapes(tmp_path):
    path = tmp_path / "ladder.yaml"
    path.write_text("n1M: 1000000\nn5M: {n_params: 5000000}\n")
    ladder = load_ladder(path)
    assert nearest_shape(ladder, 3e6)["name"] == "n5M"
    config = tmp_path / "config.yaml"
    config.write_text("train:\n  ladder:\n    small: {layers: 2, d_model: 64, heads: 2}\n")
    assert load_ladder(config)["small"] > 0


def test_cli_round_trip(tmp_path, synthetic, capsys):
    _, runs, curves = synthetic
    runs.to_csv(tmp_path / "runs.csv", index=False)
    curves.to_csv(tmp_path / "curves.csv", index=False)
    out = tmp_path / "fit"
    assert cli_main(["fit", str(tmp_path / "runs.csv"), "--curves", str(tmp_path / "curves.csv"),
                     "--out", str(out), "--bootstrap", "20", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "isoflop" in printed and "parametric" in printed and "fit.json" in printed
    fit = json.loads((out / "fit.json").read_text())
    assert fit["objectives"]["clm"]["isoflop"]["a_ci"] is not None
    assert cli_main(["predict", "--fit", str(out / "fit.json"), "--flops", "1.34e22", "--objective", "clm",
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"objective", "flops", "methods", "selected_law"}
    assert result["flops"] == 1.34e22
    # the law fit.json selected (or the parametric fallback, and why), at the same budget
    chosen = result["selected_law"]
    selected = fit["objectives"]["clm"].get("selected_law")
    assert chosen["family"] == (selected or "parametric") and chosen["named_by_fit"] == bool(selected)
    assert chosen["why"] and ("n_opt" in chosen or chosen["not_usable"])
    if "n_opt" in chosen and chosen["family"] == "parametric":
        assert chosen["n_opt"] == pytest.approx(result["methods"]["parametric"]["n_opt"], rel=1e-6)
    assert cli_main(["predict", "--fit", str(out / "fit.json"), "--flops", "1.34e22", "--objective", "clm"]) == 0
    text = capsys.readouterr().out
    assert "N_opt" in text and f"  selected law: {chosen['family']}" in text


def test_cli_errors_are_clear(tmp_path, capsys):
    (tmp_path / "runs.csv").write_text("run_id,objective,n_params,tokens,flops,loss\n")
    assert cli_main(["fit", str(tmp_path / "runs.csv"), "--out", str(tmp_path)]) == 2
    assert "empty" in capsys.readouterr().err
    assert cli_main(["predict", "--fit", str(tmp_path / "none.json"), "--flops", "1e21", "--objective", "clm"]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------ hand-edited fit.json

def _set(document, path, value):
    *parents, last = path.split(".")
    for key in parents:
        document = document[key]
    document[last] = value


@pytest.mark.parametrize("key, value, problem", [
    ("objectives.clm.isoflop.a", float("nan"), "finite"),
    ("objectives.clm.isoflop.k_n", -1, "> 0"),
    ("objectives.clm.parametric.alpha", 0, "> 0"),
    ("objectives.clm.envelope.b", "0.5", "number"),
    ("objectives.clm.isoflop", [1, 2], "JSON object"),
    ("objectives.clm.isoflop.a", 0.99, "outside its own interval"),
    ("objectives.clm.isoflop.a_ci", [0.6, 0.5], "low <= high"),
    ("objectives.clm.parametric.bootstrap", {"draws": {"E": "many"}}, "list"),
    ("objectives", {"clm": "fitted"}, "JSON object"),
    ("version", 2, "version"),
])
def test_predict_refuses_a_hand_edited_fit(tmp_path, capsys, fit, key, value, problem):
    """Clear refusal (exit 2, file and key named), never a traceback, nan or a negative size."""
    edited = json.loads(json.dumps(fit))
    _set(edited, key, value)
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(edited))  # json.dumps writes NaN as the bare token NaN, as an editor would
    code = cli_main(["predict", "--fit", str(path), "--flops", "1e22", "--objective", "clm", "--json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert str(path) in captured.err and key.rsplit(".", 1)[-1] in captured.err and problem in captured.err


def test_predict_json_is_strict_where_a_law_overflows(tmp_path, capsys, fit):
    """A valid but extreme law gives null (and a note), never a bare NaN/Infinity in --json."""
    edited = json.loads(json.dumps(fit))
    iso = edited["objectives"]["clm"]["isoflop"]
    iso["a"], iso["a_ci"], iso["k_n"] = 40.0, [39.0, 41.0], 1e10
    iso["bootstrap"]["draws"]["a"] = [40.0] * len(iso["bootstrap"]["draws"]["a"])
    (tmp_path / "fit.json").write_text(json.dumps(edited))
    assert cli_main(["predict", "--fit", str(tmp_path / "fit.json"), "--flops", "1e22", "--objective", "clm",
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out, parse_constant=lambda token: pytest.fail(f"bare {token}"))
    assert result["methods"]["isoflop"]["n_opt"] is None
    assert result["methods"]["parametric"]["n_opt"] > 0


def test_predict_prints_what_the_fit_noticed_about_its_runs(tmp_path, synthetic, capsys):
    # runs that repeat their data: the fit's note must reach the user where the answer is read, not only fit.json
    _, runs, _ = synthetic
    runs.assign(epochs=3.0).to_csv(tmp_path / "runs.csv", index=False)
    out = tmp_path / "fit"
    assert cli_main(["fit", str(tmp_path / "runs.csv"), "--out", str(out), "--bootstrap", "20", "--seed", "3"]) == 0
    capsys.readouterr()
    note = "repeat their training data, up to 3 epochs"
    assert any(note in n for n in json.loads((out / "fit.json").read_text())["objectives"]["clm"]["notes"])
    assert cli_main(["predict", "--fit", str(out / "fit.json"), "--flops", "1e22", "--objective", "clm"]) == 0
    assert f"note: clm: {len(runs)} IsoFLOP run(s) {note}" in capsys.readouterr().out
    assert cli_main(["predict", "--fit", str(out / "fit.json"), "--flops", "1e22", "--objective", "clm", "--json"]) == 0
    captured = capsys.readouterr()
    assert set(json.loads(captured.out)) == {"objective", "flops", "methods", "selected_law"} and note in captured.err
