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

from plmscale.config import load_config_files  # noqa: E402
from plmscale.provenance import cpu_model  # noqa: E402
from plmscale.scaling import curve_law, loss_curve  # noqa: E402
from plmscale.scaling.isoflop import isoflop_optima  # noqa: E402
from plmscale.scaling.table import scratch_runs, text_column, validate_runs  # noqa: E402


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


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


def check(wsd: Path, cosine: Path, config_paths, decay_factor: float, points: str = "valid") -> tuple[str, dict]:
    config, _ = load_config_files(config_paths)
    settings = curve_law.schedule_settings(config)
    wsd_runs, cosine_runs = grid_runs(wsd, "wsd"), grid_runs(cosine, "cosine")
    started = time.perf_counter()
    curves = curve_law.load_curves(wsd / "runs", wsd_runs, f"{wsd}/scaling/runs.csv")
    fits, refused = loss_curve.fit_per_shape(curves, decay_factor, points)
    targets = curve_law.targets_for(curves, wsd_runs, "cosine")
    predicted = {row["basis_run"]: row for row in curve_law.predict_targets(fits, targets, settings)}
    seconds = time.perf_counter() - started

    if points == "valid":  # the final validation loss, as runs.csv has it
        cosine_loss = dict(zip(cosine_runs["run_id"], cosine_runs["loss"]))
        wsd_loss = wsd_runs["loss"].to_numpy()
    else:  # the last batches' mean train loss, from the curves
        cosine_loss = {run_id: final_train_loss(cosine, run_id) for run_id in cosine_runs["run_id"]}
        wsd_loss = [final_train_loss(wsd, run_id) for run_id in wsd_runs["run_id"]]
    table = wsd_runs[["run_id", "budget", "n_params", "tokens", "flops", "objective"]].copy()
    table["shape"] = table["run_id"].map(curve_law.shapes_of_runs(wsd_runs))
    table["wsd_loss"] = wsd_loss
    table["cosine_loss"] = table["run_id"].map(cosine_loss)
    table["predicted_loss"] = table["run_id"].map(lambda r: predicted[r]["predicted_loss"])
    table = table.sort_values(["budget", "n_params"]).reset_index(drop=True)
    compared = table.dropna(subset=["cosine_loss"])
    law_error = 100 * (compared["predicted_loss"] / compared["cosine_loss"] - 1)
    naive_error = 100 * (compared["wsd_loss"] / compared["cosine_loss"] - 1)

    what = ("final validation loss" if points == "valid" else
            f"final train loss (mean batch loss of the last {loss_curve.TRAIN_WINDOW} updates)")
    lines = [f"loss-curve law fitted to the {points} losses of {len(curves)} WSD branch curves of {wsd} "
             f"({len(fits)} shapes, decay factor {decay_factor}, {seconds:.1f} s); cosine schedule: warm-up "
             f"{settings['warmup_fraction']:g} of the steps, lr to {settings['min_lr_ratio']:g}·peak; "
             f"compared: {what}", ""]
    law_rows = [[shape, f"{fit.L0:.4f}", f"{fit.A:.4g}", f"{fit.alpha:.3f}", f"{fit.C:.4g}", fit.n_points,
                 len(fit.run_ids), f"{fit.rmse_log:.4f}", f"{fit.n_in_best_basin}/{fit.n_starts}"]
                for shape, fit in fits.items()]
    lines.append(markdown_table(["shape", "L0", "A", "alpha", "C", "points", "curves", "rms log error",
                                 "starts in best basin"], law_rows))
    for shape, reason in refused.items():
        lines.append(f"\nno law for {shape}: {reason}")
    rows = []
    for row in table.itertuples():
        has_cosine = not np.isnan(row.cosine_loss)
        law = (f"{100 * (row.predicted_loss / row.cosine_loss - 1):+.2f}"
               if has_cosine and row.predicted_loss is not None and not np.isnan(row.predicted_loss) else "")
        naive = f"{100 * (row.wsd_loss / row.cosine_loss - 1):+.2f}" if has_cosine else ""
        rows.append([row.run_id, f"{row.budget:.4g}", f"{int(row.n_params):,}",
                     f"{row.cosine_loss:.4f}" if has_cosine else "missing",
                     "" if row.predicted_loss is None or np.isnan(row.predicted_loss) else f"{row.predicted_loss:.4f}",
                     law, f"{row.wsd_loss:.4f}", naive])
    lines += ["", markdown_table(["run", "budget", "N", "cosine loss (observed)", "law's prediction", "error %",
                                  "WSD loss", "WSD as the prediction: error %"], rows)]
    law_abs = law_error.abs().dropna()
    lines.append(f"\nlaw: mean error {law_error.mean():+.2f}%, mean |error| {law_abs.mean():.2f}%, max |error| "
                 f"{law_abs.max():.2f}% over {len(law_abs)} runs; WSD loss as it is: mean {naive_error.mean():+.2f}%, "
                 f"mean |error| {naive_error.abs().mean():.2f}%, max |error| {naive_error.abs().max():.2f}%")

    by_budget = {name: optima(table, column) for name, column in
                 (("cosine", "cosine_loss"), ("law", "predicted_loss"), ("wsd", "wsd_loss"))}
    optimum_rows, matches = [], 0
    for budget in sorted(by_budget["cosine"]):
        cells = [f"{budget:.4g}"]
        for name in ("cosine", "law", "wsd"):
            best, n_opt = by_budget[name].get(budget, (None, None))
            cells += [f"{best:,}" if best else "", f"{n_opt:,.0f}" if n_opt else "not bracketed"]
        same = by_budget["law"].get(budget, (None,))[0] == by_budget["cosine"][budget][0]
        matches += same
        cells.append("yes" if same else "no")
        optimum_rows.append(cells)
    lines += ["", markdown_table(["budget", "best size cosine", "N_opt cosine", "best size law", "N_opt law",
                                  "best size WSD", "N_opt WSD", "law picks cosine's best size"], optimum_rows)]
    lines.append(f"\nthe law's best size matches the cosine grid's at {matches} of {len(optimum_rows)} budgets")
    summary = {"runs": len(law_abs), "law_mean_error_pct": float(law_error.mean()),
               "law_mean_abs_error_pct": float(law_abs.mean()),
               "wsd_mean_abs_error_pct": float(naive_error.abs().mean()),
               "budgets_matching": matches, "budgets": len(optimum_rows)}
    return "\n".join(lines), summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wsd", required=True, type=Path, help="results/ of the WSD grid")
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
    text, _ = check(args.wsd, args.cosine, args.config, args.decay_factor, args.points)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
