"""The loss-curve law (plmscale.scaling.loss_curve) applied to a study: the runs' curves in, one law per
shape fitted, the final loss of other schedules and lengths out (`plmscale curve-law`,
benchmarks/curve_law_check.py).

A shape is an objective and a model (CLM and MLM losses follow different laws; so do sizes). Only
from-scratch runs that finished are fitted (table.scratch_runs): a transfer run's curve starts from
another run's weights, which the law does not describe.

A target is a schedule and a length for a shape: by default the run of every fitted run's own length
under the requested schedule (the cosine twin of each WSD branch), plus any extra token counts asked for.
Its lr per update comes from plmscale.lr_schedule with the config's train.warmup_fraction and
train.min_lr_ratio (the recipe's where the config leaves them null) and, for wsd, train.isoflop.decay_fraction;
its peak lr is the one the shape's runs trained with (their largest lr: the recipe's lr depends on the size,
not the length); its updates are tokens / the tokens per update the shape's runs measured.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from plmscale.errors import PlmscaleError
from plmscale.scaling import loss_curve
from plmscale.scaling.table import scratch_runs, text_column

SCHEDULES = ("cosine", "wsd")


def shape_key(objective: str, model: str, n_params) -> str:
    """What one law is fitted per: objective and model name (the parameter count where no name is given)."""
    return f"{objective}_{model}" if model else f"{objective}_n{int(n_params)}"


def shapes_of_runs(runs: pd.DataFrame) -> dict:
    """run id -> shape key for the runs table's rows."""
    models = text_column(runs, "model")
    return {str(run_id): shape_key(str(objective), model, n_params)
            for run_id, objective, model, n_params in zip(runs["run_id"], runs["objective"], models, runs["n_params"])}


def load_curves(curves_path, runs: pd.DataFrame, runs_source: str = "runs table") -> list:
    """RunCurves of the runs table's from-scratch runs. curves_path: a folder of run folders (results/runs:
    <run id>/curve.csv as training writes it) or a long CSV (run_id, step, lr, loss; one row per update)."""
    fitted = scratch_runs(runs)
    if fitted.empty:
        raise PlmscaleError(f"{runs_source}: no from-scratch run to fit the loss-curve law to")
    shapes = shapes_of_runs(fitted)
    curves_path = Path(curves_path)
    if curves_path.is_dir():
        return [loss_curve.read_run_curve(curves_path / run_id / "curve.csv", run_id, shape)
                for run_id, shape in sorted(shapes.items())]
    try:
        table = pd.read_csv(curves_path, low_memory=False)
    except FileNotFoundError:
        raise PlmscaleError(f"{curves_path}: no such curves file or runs folder") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise PlmscaleError(f"{curves_path}: not a readable CSV ({error})") from None
    curves = loss_curve.curves_from_table(table, shapes, str(curves_path))
    missing = sorted(set(shapes) - {curve.run_id for curve in curves})
    if missing:
        raise PlmscaleError(f"{curves_path}: no curve for run(s) {', '.join(missing)} of {runs_source}")
    return [curve for curve in curves if curve.run_id in shapes]


@dataclasses.dataclass
class Target:
    """A run to predict: a shape's law, a schedule, a length."""

    shape: str
    schedule: str
    steps: int
    tokens: float
    peak_lr: float
    basis: str | None          # the observed run of this length (None for an extra token count)
    observed_loss: float | None  # that run's final loss under its own schedule


def schedule_settings(config: dict) -> dict:
    """The keys of a validated config (plmscale.config.load_config) that shape a schedule."""
    train = config["train"]
    return {"warmup_fraction": float(train["warmup_fraction"]), "min_lr_ratio": float(train["min_lr_ratio"]),
            "decay_fraction": float(train["isoflop"]["decay_fraction"])}


def targets_for(curves, runs: pd.DataFrame, schedule: str, extra_tokens=(), points: str = "valid") -> list:
    """Every fitted run's own length under `schedule`, then each extra token count per shape. A target's
    observed loss is its run's final validation loss, or with points "train" its last updates' mean batch
    loss (what a law fitted to train losses predicts)."""
    if schedule not in SCHEDULES:
        raise PlmscaleError(f"schedule {schedule!r} is not one of {', '.join(SCHEDULES)}")
    tokens_of = dict(zip(runs["run_id"].astype(str), runs["tokens"].astype(float)))
    targets, per_update = [], {}
    for curve in sorted(curves, key=lambda c: (c.shape, c.total_steps)):
        tokens = tokens_of[curve.run_id]
        per_update.setdefault(curve.shape, []).append((curve.total_steps, tokens, curve.peak_lr))
        observed = curve.final_loss if points == "valid" else curve.final_train_loss()
        targets.append(Target(curve.shape, schedule, curve.total_steps, tokens, curve.peak_lr, curve.run_id, observed))
    for shape, observed in sorted(per_update.items()):
        steps, tokens, peak_lr = max(observed)  # the longest run measures tokens per update best
        for extra in extra_tokens:
            targets.append(Target(shape, schedule, max(1, int(round(float(extra) * steps / tokens))), float(extra),
                                  peak_lr, None, None))
    return targets


def target_lrs(target: Target, settings: dict) -> np.ndarray:
    return loss_curve.schedule_lrs(target.schedule, target.steps, target.peak_lr,
                                   warmup_fraction=settings["warmup_fraction"],
                                   min_lr_ratio=settings["min_lr_ratio"], decay_fraction=settings["decay_fraction"])


def predict_targets(fits: dict, targets, settings: dict) -> list:
    """One row per target: what it is, the observed run's loss (if any) and the law's prediction (None where
    the shape has no law: see the report's `refused`)."""
    rows = []
    for target in targets:
        fit = fits.get(target.shape)
        predicted = None if fit is None else loss_curve.predict_final(fit, target_lrs(target, settings))
        rows.append({"shape": target.shape, "basis_run": target.basis, "schedule": target.schedule,
                     "steps": target.steps, "tokens": target.tokens, "peak_lr": target.peak_lr,
                     "observed_loss": target.observed_loss,
                     "predicted_loss": predicted})
    return rows


def curve_law_report(curves_path, runs: pd.DataFrame, config: dict, schedule: str = "cosine", extra_tokens=(),
                     decay_factor: float = loss_curve.DECAY_FACTOR, points: str = "valid",
                     runs_source: str = "runs table") -> dict:
    """Fit the law per shape and predict the targets: {"decay_factor", "schedule", "laws": {shape: constants},
    "refused": {shape: reason}, "predictions": [rows]}."""
    curves = load_curves(curves_path, runs, runs_source)
    fits, refused = loss_curve.fit_per_shape(curves, decay_factor, points)
    rows = predict_targets(fits, targets_for(curves, runs, schedule, extra_tokens, points), schedule_settings(config))
    return {"decay_factor": decay_factor, "schedule": schedule, "points": points,
            "laws": {shape: fit.to_dict() for shape, fit in fits.items()}, "refused": refused, "predictions": rows}


def format_report(report: dict) -> str:
    """The report as text: the law of each shape, then one line per prediction."""
    lines = [f"loss-curve law L = L0 + A*S1^-alpha - C*S2 (decay factor {report['decay_factor']}), fitted to "
             f"{report['points']} losses, one per shape:"]
    for shape, law in report["laws"].items():
        lines.append(f"  {shape}: L0 {law['L0']:.4f}  A {law['A']:.4g}  alpha {law['alpha']:.3f}  C {law['C']:.4g}  "
                     f"({law['n_points']} points of {len(law['run_ids'])} run(s); rms log error {law['rmse_log']:.4f}; "
                     f"{law['n_in_best_basin']}/{law['n_starts']} starts in the best basin"
                     + (f"; at a bound, not identified: {', '.join(law['at_bounds'])}" if law["at_bounds"] else "") + ")")
    for shape, reason in report.get("refused", {}).items():
        lines.append(f"  {shape}: no law: {reason}")
    what = ("validation loss" if report["points"] == "valid"
            else f"train loss (mean of the last {loss_curve.TRAIN_WINDOW} updates' batches)")
    lines.append(f"predicted final {what} under the {report['schedule']} schedule:")
    lines.append(f"  {'shape':<14} {'length of':<22} {'steps':>8} {'tokens':>11} {'observed':>9} {'predicted':>9}")
    for row in report["predictions"]:
        observed = "" if row["observed_loss"] is None else f"{row['observed_loss']:.4f}"
        predicted = "-" if row["predicted_loss"] is None else f"{row['predicted_loss']:.4f}"
        lines.append(f"  {row['shape']:<14} {row['basis_run'] or '(tokens asked)':<22} {row['steps']:>8} "
                     f"{row['tokens']:>11.4g} {observed:>9} {predicted:>9}")
    lines.append("  (observed: the same quantity of the run under the schedule it trained with)")
    return "\n".join(lines)


# ---- fit.json's curve_law entry (fit.curve_law) -------------------------------------------------------------

def run_fit_errors(fit: loss_curve.CurveLawFit, curve: loss_curve.RunCurve) -> dict:
    """How well a shape's law describes one of its runs: 100·(law − observed)/observed at the validation points
    the law was fitted to (after warm-up): {"shape", "n_points", "rms_error_pct", "final_error_pct"} (the last
    point: the run's final loss)."""
    after_warmup = curve.steps > loss_curve.warmup_end(curve.lrs)
    steps, observed = curve.steps[after_warmup], curve.losses[after_warmup]
    if len(steps) == 0:
        return {"shape": curve.shape, "n_points": 0, "rms_error_pct": None, "final_error_pct": None}
    errors = 100 * (loss_curve.predict_curve(fit, curve.lrs, steps) - observed) / observed
    return {"shape": curve.shape, "n_points": int(len(steps)), "rms_error_pct": float(np.sqrt(np.mean(errors ** 2))),
            "final_error_pct": float(errors[np.argmax(steps)])}


def curve_law_entry(curve_paths, runs: pd.DataFrame, decay_factor: float = loss_curve.DECAY_FACTOR,
                    points: str = "valid", runs_source: str = "runs table") -> dict:
    """fit.json's `curve_law` (config fit.curve_law): the loss-curve law fitted per shape on the curve.csv files
    of the study's own from-scratch runs (a file's folder names its run, as results/runs/<run id>/curve.csv),
    with each run's fit error (run_fit_errors):

        {"law", "decay_factor", "points", "shapes": {shape: constants (CurveLawFit.to_dict)},
         "refused": {shape: why}, "runs": {run id: errors}, "runs_without_curve": [run id, ...]}

    or {"error": why} where no curve can be read. Imported runs have no such file (their curves hold no lr)."""
    fitted = scratch_runs(runs)
    if "source" in fitted.columns:
        fitted = fitted[fitted["source"].astype(str) == "own"]
    shapes = shapes_of_runs(fitted)
    paths = {Path(p).parent.name: Path(p) for p in curve_paths}
    found = sorted(run_id for run_id in shapes if run_id in paths)
    if not found:
        return {"error": f"no curve.csv of the {len(shapes)} own from-scratch run(s) of {runs_source} was given; "
                         "the loss-curve law needs each run's lr per update (results/runs/<run id>/curve.csv)"}
    try:
        curves = [loss_curve.read_run_curve(paths[run_id], run_id, shapes[run_id]) for run_id in found]
    except PlmscaleError as error:
        return {"error": str(error)}
    fits, refused = loss_curve.fit_per_shape(curves, decay_factor, points)
    return {"law": "L(s) = L0 + A*S1^-alpha - C*S2 (Tissue et al. 2024; docs/loss-curves.md)",
            "decay_factor": float(decay_factor), "points": points,
            "shapes": {shape: fit.to_dict() for shape, fit in fits.items()}, "refused": refused,
            "runs": {curve.run_id: run_fit_errors(fits[curve.shape], curve) for curve in curves if curve.shape in fits},
            "runs_without_curve": sorted(set(shapes) - set(found))}
