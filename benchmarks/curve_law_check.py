"""Does the loss-curve law, fitted on a WSD grid's curves, predict the cosine grid's final losses? (issue 23)

    python benchmarks/curve_law_check.py --wsd WSD_RESULTS --cosine COSINE_RESULTS [--config config.yaml]

WSD_RESULTS and COSINE_RESULTS are the results/ folders of the demo trained as a WSD grid (config.yaml +
configs/demo-wsd.yaml) and as its cosine grid (config.yaml): each has scaling/runs.csv and runs/<id>/curve.csv.
Per shape (objective, model), the law is fitted on the WSD branches' curves (each carries its trunk's curve up
to its decay start, so the trunks come along); each branch's cosine twin (same run id: same budget, size,
tokens, batch, peak lr) is predicted from the cosine schedule of the config (train.warmup_fraction,
min_lr_ratio) over the branch's updates, and compared with the cosine run's final loss. Printed: the
per-run table (with the WSD loss itself as the naive prediction, the baseline the law must beat), the
per-budget best grid size and the IsoFLOP parabola's N_opt (cosine observed, law-predicted, WSD observed).
"""

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from markdown_table import markdown_table  # noqa: E402  (benchmarks/, this script's directory)
from plmscale.config import load_config_files  # noqa: E402
from plmscale.provenance import cpu_model  # noqa: E402
from plmscale.scaling import curve_law, loss_curve  # noqa: E402
from plmscale.scaling.isoflop import isoflop_optima  # noqa: E402
from plmscale.scaling.table import scratch_runs, text_column, validate_runs  # noqa: E402


def grid_runs(results: Path, schedule: str) -> pd.DataFrame:
    """The IsoFLOP grid points of a results folder trained with `schedule` (from scratch, with a budget)."""
    runs = scratch_runs(validate_runs(pd.read_csv(results / "scaling" / "runs.csv"), str(results)))
    runs = runs[runs["budget"].notna() & (text_column(runs, "schedule").replace("", "cosine") == schedule)]
    if runs.empty:
        raise SystemExit(f"{results}/scaling/runs.csv: no {schedule} IsoFLOP run")
    return runs.reset_index(drop=True)


def optima(runs: pd.DataFrame, loss_column: str) -> dict:
    """budget -> (best grid size, parabola N_opt or None) with `loss_column` as the loss."""
    table = runs.assign(loss=runs[loss_column]).dropna(subset=["loss"])
    best = table.loc[table.groupby("budget")["loss"].idxmin()].set_index("budget")["n_params"].to_dict()
    fitted = isoflop_optima(table[["run_id", "objective", "n_params", "tokens", "flops", "loss", "budget"]])
    n_opt = {entry["budget"]: entry["n_opt"] if entry["kept"] else None for entry in fitted["optima"]}
    return {budget: (int(best[budget]), n_opt.get(budget)) for budget in sorted(best)}


def final_train_loss(results: Path, run_id: str) -> float:
    """A run's mean batch loss over its last TRAIN_WINDOW updates (what a law fitted to train losses predicts)."""
    curve = pd.read_csv(results / "runs" / run_id / "curve.csv")
    return float(curve.sort_values("step")["train_loss"].tail(loss_curve.TRAIN_WINDOW).mean())


def observed_losses(results: Path, runs: pd.DataFrame, points: str) -> list:
    """Each run's final validation loss (runs.csv), or with points "train" its last updates' mean train loss."""
    if points == "valid":
        return runs["loss"].tolist()
    return [final_train_loss(results, run_id) for run_id in runs["run_id"]]


def law_table(fits: dict, refused: dict) -> list:
    rows = [[shape, f"{fit.L0:.4f}", f"{fit.A:.4g}", f"{fit.alpha:.3f}", f"{fit.C:.4g}", fit.n_points,
             len(fit.run_ids), f"{fit.rmse_log:.4f}", f"{fit.n_in_best_basin}/{fit.n_starts}",
             ", ".join(fit.at_bounds) or "none"]
            for shape, fit in fits.items()]
    lines = [markdown_table(["shape", "L0", "A", "alpha", "C", "points", "curves", "rms log error",
                             "starts in best basin", "at a bound"], rows)]
    return lines + [f"\nno law for {shape}: {reason}" for shape, reason in refused.items()]


def _cell(value, spec=".4f"):
    return "" if value is None or not np.isfinite(value) else format(value, spec)


def comparison(table: pd.DataFrame, baseline: str | None) -> tuple[list, dict]:
    """The per-run table and the per-budget optima of `table` (run_id, budget, n_params, cosine_loss,
    predicted_loss and, when `baseline` names it, baseline_loss: a naive prediction to beat)."""
    table = table.sort_values(["budget", "n_params"]).reset_index(drop=True)
    error = 100 * (table["predicted_loss"].astype(float) / table["cosine_loss"] - 1)
    naive = 100 * (table["baseline_loss"] / table["cosine_loss"] - 1) if baseline else None
    rows = []
    for i, row in table.iterrows():
        cells = [row.run_id, f"{row.budget:.4g}", f"{int(row.n_params):,}", _cell(row.cosine_loss),
                 _cell(row.predicted_loss), _cell(error[i], "+.2f")]
        if baseline:
            cells += [_cell(row.baseline_loss), _cell(naive[i], "+.2f")]
        rows.append(cells)
    header = ["run", "budget", "N", "cosine loss (observed)", "law's prediction", "error %"]
    if baseline:
        header += [f"{baseline} loss", f"{baseline} as the prediction: error %"]
    lines = [markdown_table(header, rows)]
    law_abs = error.abs().dropna()
    line = (f"\nlaw: mean error {error.mean():+.2f}%, mean |error| {law_abs.mean():.2f}%, max |error| "
            f"{law_abs.max():.2f}% over {len(law_abs)} runs")
    if baseline:
        line += (f"; {baseline} loss as it is: mean {naive.mean():+.2f}%, mean |error| {naive.abs().mean():.2f}%, "
                 f"max |error| {naive.abs().max():.2f}%")
    lines.append(line)

    columns = [("cosine", "cosine_loss"), ("law", "predicted_loss")]
    columns += [(baseline, "baseline_loss")] if baseline else []
    by_budget = {name: optima(table, column) for name, column in columns}
    optimum_rows, matches = [], 0
    for budget in sorted(by_budget["cosine"]):
        cells = [f"{budget:.4g}"]
        for name, _ in columns:
            best, n_opt = by_budget[name].get(budget, (None, None))
            cells += [f"{best:,}" if best else "", f"{n_opt:,.0f}" if n_opt else "not bracketed"]
        same = by_budget["law"].get(budget, (None,))[0] == by_budget["cosine"][budget][0]
        matches += same
        optimum_rows.append(cells + ["yes" if same else "no"])
    header = ["budget"] + [f"{kind} {name}" for name, _ in columns for kind in ("best size", "N_opt")]
    lines += ["", markdown_table(header + ["law picks cosine's best size"], optimum_rows),
              f"\nthe law's best size matches the cosine grid's at {matches} of {len(optimum_rows)} budgets"]
    summary = {"runs": len(law_abs), "law_mean_error_pct": float(error.mean()),
               "law_mean_abs_error_pct": float(law_abs.mean()), "budgets_matching": matches,
               "budgets": len(optimum_rows)}
    if baseline:
        summary["baseline_mean_abs_error_pct"] = float(naive.abs().mean())
    return lines, summary


def _heading(what: str, points: str, settings: dict, decay_factor: float, seconds: float) -> str:
    compared = ("final validation loss" if points == "valid" else
                f"final train loss (mean batch loss of the last {loss_curve.TRAIN_WINDOW} updates)")
    return (f"{what}; law fitted to {points} losses, decay factor {decay_factor}, {seconds:.1f} s; cosine schedule: "
            f"warm-up {settings['warmup_fraction']:g} of the steps, lr to {settings['min_lr_ratio']:g}·peak; "
            f"compared: {compared}")


def check(wsd: Path, cosine: Path, config_paths, decay_factor: float, points: str = "valid") -> tuple[str, dict]:
    """From the WSD grid's curves, the cosine grid's final losses."""
    config, _ = load_config_files(config_paths)
    settings = curve_law.schedule_settings(config)
    wsd_runs, cosine_runs = grid_runs(wsd, "wsd"), grid_runs(cosine, "cosine")
    started = time.perf_counter()
    curves = curve_law.load_curves(wsd / "runs", wsd_runs, f"{wsd}/scaling/runs.csv")
    fits, refused = loss_curve.fit_per_shape(curves, decay_factor, points)
    targets = curve_law.targets_for(curves, wsd_runs, "cosine")
    predicted = {row["basis_run"]: row["predicted_loss"] for row in curve_law.predict_targets(fits, targets, settings)}
    seconds = time.perf_counter() - started
    cosine_loss = dict(zip(cosine_runs["run_id"], observed_losses(cosine, cosine_runs, points)))
    table = wsd_runs[["run_id", "objective", "budget", "n_params", "tokens", "flops"]].assign(
        baseline_loss=observed_losses(wsd, wsd_runs, points),
        cosine_loss=wsd_runs["run_id"].map(cosine_loss).astype(float),
        predicted_loss=[predicted[run_id] for run_id in wsd_runs["run_id"]])
    lines = [_heading(f"{len(curves)} WSD branch curves of {wsd} ({len(fits)} shapes) -> the cosine runs of {cosine}",
                      points, settings, decay_factor, seconds), ""]
    lines += law_table(fits, refused)
    more, summary = comparison(table, "WSD")
    return "\n".join(lines + [""] + more), summary


def check_lengths(cosine: Path, config_paths, decay_factor: float, points: str = "valid") -> tuple[str, dict]:
    """Within the cosine grid: each run's final loss from the law of the other runs of its shape (other
    lengths of the same size), leave one run out."""
    config, _ = load_config_files(config_paths)
    settings = curve_law.schedule_settings(config)
    runs = grid_runs(cosine, "cosine")
    started = time.perf_counter()
    curves = curve_law.load_curves(cosine / "runs", runs, f"{cosine}/scaling/runs.csv")
    predicted, refused = {}, {}
    for curve in curves:
        others = [other for other in curves if other.shape == curve.shape and other.run_id != curve.run_id]
        try:
            fit = loss_curve.fit_curve_law(others, decay_factor, curve.shape, points)
        except Exception as error:  # noqa: BLE001 - a shape too short to fit is reported, not fatal
            refused[curve.run_id] = str(error)
            continue
        target = curve_law.Target(curve.shape, "cosine", curve.total_steps, 0.0, curve.peak_lr, curve.run_id, None)
        predicted[curve.run_id] = loss_curve.predict_final(fit, curve_law.target_lrs(target, settings))
    seconds = time.perf_counter() - started
    table = runs[["run_id", "objective", "budget", "n_params", "tokens", "flops"]].assign(
        cosine_loss=observed_losses(cosine, runs, points),
        predicted_loss=[predicted.get(run_id, np.nan) for run_id in runs["run_id"]])
    lines = [_heading(f"leave one run out within the cosine grid of {cosine}: each run from the other lengths "
                      f"of its size", points, settings, decay_factor, seconds), ""]
    lines += [f"no prediction for {run_id}: {reason}" for run_id, reason in refused.items()]
    more, summary = comparison(table, None)
    return "\n".join(lines + [""] + more), summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wsd", type=Path, help="results/ of the WSD grid (without it: leave one run out within the "
                                                 "cosine grid, each run predicted from the other lengths of its size)")
    parser.add_argument("--cosine", required=True, type=Path, help="results/ of the cosine grid")
    parser.add_argument("--config", nargs="+", default=[str(Path(__file__).resolve().parent.parent / "config.yaml")],
                        help="the config whose cosine schedule is predicted (default: the demo's config.yaml)")
    parser.add_argument("--decay-factor", type=float, default=loss_curve.DECAY_FACTOR)
    parser.add_argument("--points", choices=loss_curve.POINTS, default="valid",
                        help="fit to validation losses and compare final validation losses (default), or fit to "
                             "windowed train losses and compare the last updates' mean train loss")
    args = parser.parse_args(argv)
    print(f"# curve_law_check {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
          f"{platform.node()} ({cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()})")
    if args.wsd:
        text, _ = check(args.wsd, args.cosine, args.config, args.decay_factor, args.points)
    else:
        text, _ = check_lengths(args.cosine, args.config, args.decay_factor, args.points)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
