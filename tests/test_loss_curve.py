"""The loss-curve law with lr annealing (plmscale.scaling.loss_curve, .curve_law, `plmscale curve-law`):
the areas by hand, the fit on curves drawn from the law itself, prediction across schedules, and the
refusals of curves that lack the lr of every update."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plmscale import lr_schedule
from plmscale.cli import main as cli_main
from plmscale.errors import PlmscaleError
from plmscale.scaling import curve_law, loss_curve
from plmscale.train import schedule as train_schedule

TRUTH = (2.0, 1.0, 0.5, 0.03)  # L0, A, alpha, C: ~0.1-0.2 nats above L0, ~0.1 nats of annealing
PEAK = 5e-3
DEMO_CONFIG = str(Path(__file__).resolve().parent.parent / "config.yaml")


def _family(total_steps=(2000, 4000, 8000), warmup=50, decay_fraction=0.2, every=250):
    """A WSD family's branches as training would record them: steps, lr per update, evaluation steps."""
    runs = []
    for steps in total_steps:
        lrs = loss_curve.schedule_lrs("wsd", steps, PEAK, warmup_fraction=0.0, min_lr_ratio=0.0,
                                      decay_fraction=decay_fraction, warmup=warmup)
        decay_start = steps - max(1, round(decay_fraction * steps))
        evals = np.unique(np.r_[np.arange(every, steps + 1, every), decay_start, steps])
        runs.append((f"b{steps}", lrs, evals))
    return runs


def _law_losses(lrs, steps, rng=None, noise=0.0):
    s1, s2 = loss_curve.lr_areas(lrs)
    losses = loss_curve.law_loss(TRUTH, s1[steps - 1], s2[steps - 1])
    return losses if rng is None else losses * np.exp(noise * rng.standard_normal(len(losses)))


def _curves(runs, rng=None, noise=0.0, shape="clm_x"):
    return [loss_curve.RunCurve(run_id, shape, lrs, evals, _law_losses(lrs, evals, rng, noise))
            for run_id, lrs, evals in runs]


def test_areas_of_a_six_step_schedule_by_hand():
    # warm-up to the peak at update 2, flat, then drops of 0.2, 0.4, 0.2; lambda 0.5
    lrs = [0.5, 1.0, 1.0, 0.8, 0.4, 0.2]
    s1, s2 = loss_curve.lr_areas(lrs, decay_factor=0.5)
    assert s1 == pytest.approx([0.5, 1.5, 2.5, 3.3, 3.7, 3.9])
    # momentum m: 0, 0 (the warm-up's rise is not annealing), 0, 0.2, 0.5*0.2+0.4 = 0.5, 0.25+0.2 = 0.45
    assert s2 == pytest.approx([0.0, 0.0, 0.0, 0.2, 0.7, 1.15])
    # lambda 0 (no momentum): S2 is the lr's drop from the peak so far
    assert loss_curve.lr_areas(lrs, decay_factor=0.0)[1] == pytest.approx([0, 0, 0, 0.2, 0.6, 0.8])


def test_the_lr_of_a_run_is_the_one_training_applies():
    assert train_schedule.lr_at is lr_schedule.lr_at and train_schedule.wsd_lr_at is lr_schedule.wsd_lr_at
    cosine = loss_curve.schedule_lrs("cosine", 40, 1e-3, warmup_fraction=0.05, min_lr_ratio=0.1)
    assert cosine.tolist() == [lr_schedule.lr_at(k, 40, 1e-3, 0.05, 0.1) for k in range(40)]
    wsd = loss_curve.schedule_lrs("wsd", 40, 1e-3, warmup_fraction=0.05, min_lr_ratio=0.0, decay_fraction=0.2)
    assert wsd.tolist() == [lr_schedule.wsd_lr_at(k, 40, 32, 2, 1e-3, 0.0) for k in range(40)]


def test_fit_recovers_the_constants_of_noise_free_curves():
    fit = loss_curve.fit_curve_law(_curves(_family()))
    assert (fit.L0, fit.A, fit.alpha, fit.C) == pytest.approx(TRUTH, rel=1e-3)
    assert fit.rmse_log < 1e-5 and fit.n_in_best_basin >= 1


def test_a_wsd_family_predicts_the_cosine_runs_of_the_same_law():
    rng = np.random.default_rng(7)
    fit = loss_curve.fit_curve_law(_curves(_family(), rng, noise=0.002))
    for steps in (2000, 4000, 8000):
        cosine = loss_curve.schedule_lrs("cosine", steps, PEAK, warmup_fraction=0.025, min_lr_ratio=0.0)
        s1, s2 = loss_curve.lr_areas(cosine)
        true_final = loss_curve.law_loss(TRUTH, s1[-1], s2[-1])
        assert loss_curve.predict_final(fit, cosine) == pytest.approx(true_final, rel=5e-3)
    # and the whole curve, step by step, without noise
    exact = loss_curve.fit_curve_law(_curves(_family()))
    cosine = loss_curve.schedule_lrs("cosine", 3000, PEAK, warmup_fraction=0.025, min_lr_ratio=0.1)
    steps = np.arange(200, 3001, 100)
    assert loss_curve.predict_curve(exact, cosine, steps) == pytest.approx(_law_losses(cosine, steps), rel=1e-4)


def test_points_shared_by_branches_count_once():
    run_id, lrs, evals = _family(total_steps=(4000,))[0]
    losses = _law_losses(lrs, evals)
    twice = [loss_curve.RunCurve("a", "s", lrs, evals, losses), loss_curve.RunCurve("b", "s", lrs, evals, losses)]
    assert len(loss_curve.fit_points(twice)[2]) == len(loss_curve.fit_points(twice[:1])[2])
    # points inside the warm-up are not fitted
    assert len(loss_curve.fit_points(twice[:1])[2]) == int(np.sum(evals > 50))


def test_too_few_points_is_refused_naming_the_shape_and_runs():
    run_id, lrs, evals = _family(total_steps=(2000,), every=1000)[0]
    curve = loss_curve.RunCurve(run_id, "clm_n7k", lrs, evals, _law_losses(lrs, evals))
    with pytest.raises(PlmscaleError, match=r"clm_n7k.*b2000.*eval_every_steps"):
        loss_curve.fit_curve_law([curve])


def _write_run(folder, run_id, lrs, evals, losses, with_lr=True):
    valid = np.full(len(lrs), np.nan)
    valid[evals - 1] = losses
    table = pd.DataFrame({"step": np.arange(1, len(lrs) + 1), "tokens": 512 * np.arange(1, len(lrs) + 1),
                          "flops": 0.0, "train_loss": 2.5, "valid_loss": valid})
    if with_lr:
        table["lr"] = lrs
    (folder / run_id).mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / run_id / "curve.csv", index=False)
    return folder / run_id / "curve.csv"


def test_a_curve_without_lr_is_refused_naming_the_file(tmp_path):
    run_id, lrs, evals = _family(total_steps=(2000,))[0]
    path = _write_run(tmp_path, run_id, lrs, evals, _law_losses(lrs, evals), with_lr=False)
    with pytest.raises(PlmscaleError, match=rf"{path}.*lr.*missing|{path}: column\(s\) lr missing"):
        loss_curve.read_run_curve(path)
    # a table of validation points only (the collected scaling/curves.csv) names the file and the way out
    collected = pd.DataFrame({"run_id": run_id, "objective": "clm", "n_params": 7000, "flops": 1.0,
                              "tokens": 512.0 * evals, "loss": _law_losses(lrs, evals)})
    with pytest.raises(PlmscaleError, match=r"curves\.csv: column\(s\) step, lr missing.*results/runs"):
        loss_curve.curves_from_table(collected, source="results/scaling/curves.csv")
    # rows that skip updates cannot give S1: refused with the first missing step
    sparse = collected.assign(step=evals, lr=lrs[evals - 1])
    with pytest.raises(PlmscaleError, match=r"my.csv: run b2000: .*every update.*first missing or repeated step: 1"):
        loss_curve.curves_from_table(sparse, source="my.csv")


def test_curve_law_command_predicts_the_cosine_twin_of_each_branch(tmp_path, capsys):
    rng = np.random.default_rng(3)
    rows = []
    for run_id, lrs, evals in _family():
        losses = _law_losses(lrs, evals, rng, noise=0.001)
        _write_run(tmp_path / "runs", run_id, lrs, evals, losses)
        rows.append({"run_id": run_id, "objective": "clm", "model": "n7k", "n_params": 7000,
                     "tokens": 512.0 * len(lrs), "flops": 6 * 7000 * 512.0 * len(lrs), "loss": losses[-1]})
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    (tmp_path / "cfg.yaml").write_text("train: {warmup_fraction: 0.025, min_lr_ratio: 0.0}\n")
    code = cli_main(["curve-law", "--curves", str(tmp_path / "runs"), "--runs", str(tmp_path / "runs.csv"),
                     "--config", DEMO_CONFIG, str(tmp_path / "cfg.yaml"), "--tokens", "1024000", "--json",
                     "--out", str(tmp_path / "law.json")])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "law.json").read_text())
    assert list(report["laws"]) == ["clm_n7k"]
    assert report["laws"]["clm_n7k"]["alpha"] == pytest.approx(TRUTH[2], rel=0.1)
    predictions = {row["basis_run"]: row for row in report["predictions"]}
    assert set(predictions) == {"b2000", "b4000", "b8000", None}
    assert predictions[None]["steps"] == 2000  # 1,024,000 tokens at 512 per update
    for run_id, row in predictions.items():
        cosine = loss_curve.schedule_lrs("cosine", row["steps"], PEAK, warmup_fraction=0.025, min_lr_ratio=0.0)
        s1, s2 = loss_curve.lr_areas(cosine)
        assert row["schedule"] == "cosine" and row["peak_lr"] == pytest.approx(PEAK)
        assert row["predicted_loss"] == pytest.approx(loss_curve.law_loss(TRUTH, s1[-1], s2[-1]), rel=3e-3)


def test_curve_law_command_refuses_the_collected_curves_table(tmp_path, capsys):
    pd.DataFrame({"run_id": ["a"], "objective": ["clm"], "n_params": [7000], "tokens": [1e6], "flops": [4.2e10],
                  "loss": [2.3]}).to_csv(tmp_path / "runs.csv", index=False)
    pd.DataFrame({"run_id": ["a"], "objective": ["clm"], "n_params": [7000], "flops": [4.2e10], "tokens": [1e6],
                  "loss": [2.3]}).to_csv(tmp_path / "curves.csv", index=False)
    code = cli_main(["curve-law", "--curves", str(tmp_path / "curves.csv"), "--runs", str(tmp_path / "runs.csv"),
                     "--config", DEMO_CONFIG])
    assert code == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / 'curves.csv'}: column(s) step, lr missing" in error and "results/runs" in error


def test_shapes_split_objectives_and_models():
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "objective": ["clm", "mlm", "clm"], "model": ["n7k", "n7k", ""],
                         "n_params": [7000, 7000, 14000]})
    assert curve_law.shapes_of_runs(runs) == {"a": "clm_n7k", "b": "mlm_n7k", "c": "clm_n14000"}


def test_a_shape_too_short_for_the_law_is_refused_and_the_others_fitted():
    curves = _curves(_family(), shape="clm_n7k")
    run_id, lrs, evals = _family(total_steps=(2000,), every=1000)[0]
    curves.append(loss_curve.RunCurve("mlm_run", "mlm_n7k", lrs, evals, _law_losses(lrs, evals)))
    fits, refused = loss_curve.fit_per_shape(curves)
    assert list(fits) == ["clm_n7k"] and list(refused) == ["mlm_n7k"]
    assert "needs at least 4 (evaluate more often" in refused["mlm_n7k"]
    rows = curve_law.predict_targets(fits, [curve_law.Target("mlm_n7k", "cosine", 2000, 1e6, PEAK, "mlm_run", 2.3)],
                                     {"warmup_fraction": 0.05, "min_lr_ratio": 0.0, "decay_fraction": 0.2})
    assert rows[0]["predicted_loss"] is None


def test_windowed_train_losses_recover_the_law_of_the_batches():
    curves = []
    for run_id, lrs, evals in _family():
        s1, s2 = loss_curve.lr_areas(lrs)
        before = np.r_[np.nan, loss_curve.law_loss(TRUTH, s1[:-1], s2[:-1])]  # batch s sees the state after s - 1
        curves.append(loss_curve.RunCurve(run_id, "clm_x", lrs, evals[-1:], before[-1:], train_losses=before))
    points = loss_curve.fit_points(curves, points="train")
    # 200-update windows from step 201: the 8000-step run's 39, plus those of the shorter runs after their
    # decay starts (3,200: 4 windows; 1,600: 2); the windows before them are the same batches, counted once
    assert len(points[2]) == 39 + 4 + 2
    fit = loss_curve.fit_curve_law(curves, points="train")
    assert fit.points == "train" and (fit.L0, fit.alpha) == pytest.approx(TRUTH[::2], rel=2e-2)
    cosine = loss_curve.schedule_lrs("cosine", 6000, PEAK, warmup_fraction=0.025, min_lr_ratio=0.0)
    s1, s2 = loss_curve.lr_areas(cosine)
    last_batches = loss_curve.law_loss(TRUTH, s1[-201:-1], s2[-201:-1]).mean()
    assert loss_curve.predict_final(fit, cosine) == pytest.approx(last_batches, rel=1e-3)


def test_constants_the_curves_do_not_identify_are_named():
    curves = [loss_curve.RunCurve(run_id, "s", lrs, evals, np.full(len(evals), 2.5)) for run_id, lrs, evals in _family()]
    fit = loss_curve.fit_curve_law(curves)  # a flat curve: no power law, no annealing gain
    assert fit.L0 == pytest.approx(2.5, rel=1e-3) and {"A", "C"} <= set(fit.at_bounds)
    assert loss_curve.fit_curve_law(_curves(_family())).at_bounds == []


def test_fit_json_curve_law_entry_fits_the_own_runs_curves(tmp_path):
    """fit.curve_law: the fit rule's curve_law entry: the law per shape on the own from-scratch runs' curve.csv,
    each run's fit error; imported runs (no lr) and runs without a file are left out, the latter named."""
    rng = np.random.default_rng(4)
    rows, paths = [], []
    for run_id, lrs, evals in _family():
        losses = _law_losses(lrs, evals, rng, noise=0.001)
        paths.append(_write_run(tmp_path / "runs", run_id, lrs, evals, losses))
        rows.append({"run_id": run_id, "objective": "clm", "model": "n7k", "n_params": 7000, "source": "own",
                     "tokens": 512.0 * len(lrs), "flops": 6 * 7000 * 512.0 * len(lrs), "loss": losses[-1]})
    rows.append({**rows[0], "run_id": "gone", "loss": 2.4})  # trained, but its curve.csv was not given
    rows.append({**rows[0], "run_id": "clm_13M_imported", "source": "imported"})
    entry = curve_law.curve_law_entry(paths, pd.DataFrame(rows))
    assert list(entry["shapes"]) == ["clm_n7k"] and entry["refused"] == {}
    assert entry["shapes"]["clm_n7k"]["alpha"] == pytest.approx(TRUTH[2], rel=0.1)
    assert sorted(entry["runs"]) == ["b2000", "b4000", "b8000"] and entry["runs_without_curve"] == ["gone"]
    for errors in entry["runs"].values():
        assert errors["shape"] == "clm_n7k" and errors["n_points"] > 5
        assert errors["rms_error_pct"] < 0.5 and abs(errors["final_error_pct"]) < 0.5
    assert "error" in curve_law.curve_law_entry([], pd.DataFrame(rows))


def test_the_curve_law_is_opt_in_and_out_of_the_fit_params_when_off():
    from plmscale.config import load_config
    from plmscale.scaling.settings import FitSettings, fit_keys

    off = load_config({})["fit"]
    assert "curve_law" not in fit_keys(off)  # an existing fit's params (and so its outputs) stay as they were
    assert FitSettings.from_fit_section(fit_keys(off)).curve_law is False
    on = load_config({"fit": {"curve_law": True}})["fit"]
    assert fit_keys(on)["curve_law"] is True and FitSettings.from_fit_section(fit_keys(on)).curve_law is True
