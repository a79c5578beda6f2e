"""Gather our own training runs (results/runs/*/metrics.json + curve.csv) into the scaling tables, and merge
them with imported ones.

The columns, the `role` of each run and the `pair` of each transfer run are those of plmscale.scaling.table
(own runs add kind: "transfer" or "", design: isoflop | long | transfer, model, and schedule: cosine | wsd
with trunk: the WSD trunk a branch decayed from, empty otherwise).

`loss` is the run's final validation loss and `flops` the budget's FLOPs definition (what the training
stage wrote as `flops`), so an IsoFLOP run lands on its budget. `epochs` and `unique_tokens` say how much data a
run had (run_epochs, run_unique_tokens): the data-constrained law family (fit.law_families) reads the latter.
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from plmscale import run_metrics
from plmscale.data.shards import read_split_pass_tokens
from plmscale.errors import PlmscaleError
from plmscale.arithmetic import FLOPS_DEFINITIONS, ModelShape
from plmscale.grid.spec import MIXED
from plmscale.scaling.table import (COST_COLUMNS, CURVE_COLUMNS, IDENTITY_COLUMN_PREFIXES, RUN_COLUMNS, TIMING_COLUMNS,
                                    identity_bins, identity_columns, with_pairs, with_roles)

log = logging.getLogger(__name__)

METRICS_KEYS = ("run_id", "objective", "n_params", "tokens", "flops", "budget", "final_valid_loss", "init_from")
CURVE_FILE_COLUMNS = ("step", "tokens", "flops", "train_loss", "valid_loss")


def read_metrics(path) -> dict:
    path = Path(path)
    metrics = run_metrics.read_metrics(path).to_dict()
    missing = [k for k in METRICS_KEYS if k not in metrics]
    if missing:
        raise PlmscaleError(f"{path}: metrics lack key(s) {', '.join(missing)} (needed by the scaling fit); "
                            "rerun the training job with the current plmscale")
    loss = metrics["final_valid_loss"]
    if loss is None or not np.isfinite(float(loss)):
        raise PlmscaleError(f"{path}: final_valid_loss is {loss!r}; the run diverged or never evaluated — "
                            "fix or remove the run before fitting")
    return metrics


def _kind_and_design(metrics: dict) -> dict:
    """The producer's labels of an own run (its role is derived from them, see table.derive_roles)."""
    if metrics.get("init_from"):
        return {"kind": "transfer", "design": "transfer"}
    return {"kind": "", "design": "isoflop" if metrics.get("budget") not in (None, "") else "long"}


def run_epochs(metrics: dict, train_tokens: float | None) -> float | None:
    """Passes over its training data a run made: the run's own count where it trained on a subset
    (metrics.json epochs = tokens / unique_tokens), else tokens / the train split's tokens (None unknown)."""
    if metrics.get("epochs") is not None:
        return float(metrics["epochs"])
    return float(metrics["tokens"]) / train_tokens if train_tokens else None


def run_unique_tokens(metrics: dict, train_tokens: float | None) -> float | None:
    """The unique tokens U of a run for the data-constrained law (runs.csv's unique_tokens): min(D, the tokens it
    draws from). A repetition run draws from its subset (metrics.json unique_tokens), any other run from the
    whole train split (its manifest's n_tokens); None where neither is known (an empty cell: unique data).
    The sampler draws with replacement, so U is the data a run had, as in Muennighoff et al., not a count of
    the distinct tokens it happened to see; min(D, ·) is the law's own U_D, so the law reads both alike."""
    available = metrics.get("unique_tokens") or train_tokens
    return min(float(metrics["tokens"]), float(available)) if available else None


def run_costs(metrics: dict) -> dict:
    """The run's COST_COLUMNS: as its metrics.json records them; a FLOPs definition it lacks (a run trained
    before flops_chinchilla existed) is computed from its shape, seq_len and tokens, which define it
    exactly; None where those are unknown too."""
    costs = {column: metrics.get(column) for column in COST_COLUMNS}
    if metrics.get("shape") and metrics.get("seq_len"):
        shape = ModelShape.from_dict(metrics["shape"])
        for definition in FLOPS_DEFINITIONS:
            if costs[f"flops_{definition}"] is None:
                costs[f"flops_{definition}"] = (float(metrics["tokens"])
                                                * shape.flops_per_token(int(metrics["seq_len"]), definition))
    return costs


def run_row(metrics: dict, train_tokens: float | None = None) -> dict:
    init_from = metrics.get("init_from") or None
    budget = metrics.get("budget")
    return {
        "run_id": str(metrics["run_id"]), "objective": metrics["objective"], "n_params": int(metrics["n_params"]),
        "tokens": float(metrics["tokens"]), "flops": float(metrics["flops"]),
        "loss": float(metrics["final_valid_loss"]),
        "budget": float(budget) if budget not in (None, "") else None,
        "epochs": run_epochs(metrics, train_tokens), "unique_tokens": run_unique_tokens(metrics, train_tokens),
        "source": "own", "init_from": init_from, **_kind_and_design(metrics), "model": metrics.get("model"),
        # a WSD branch is a grid point like a cosine run; these say how it was trained
        "schedule": metrics.get("schedule", "cosine"), "trunk": (metrics.get("wsd") or {}).get("trunk", ""),
        **run_costs(metrics),  # what the run cost under every FLOPs definition (its wall time: run_timings)
        **identity_columns(metrics),
    }


def run_timings(metrics_paths) -> pd.DataFrame:
    """What each run took on its machine (TIMING_COLUMNS: run_id, tokens, flops_chinchilla, wall_seconds,
    device), read from its metrics.json, for the measured cost law (costs.fit_measured_cost). Kept out of
    runs.csv: wall time differs between machines and reruns, the runs table must not. A run that recorded
    no wall time or device has them empty (the law skips it)."""
    rows = []
    for path in sorted(Path(p) for p in metrics_paths):
        metrics = read_metrics(path)
        rows.append({"run_id": str(metrics["run_id"]), "tokens": float(metrics["tokens"]),
                     "flops_chinchilla": run_costs(metrics)["flops_chinchilla"],
                     "wall_seconds": metrics.get("wall_seconds"), "device": metrics.get("device")})
    return pd.DataFrame(rows, columns=list(TIMING_COLUMNS))


def read_curve_file(path) -> pd.DataFrame:
    """A run's curve.csv as training writes it, as a table; a missing or unreadable file names itself."""
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise PlmscaleError(f"{path}: curve file does not exist; did the training job finish?") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise PlmscaleError(f"{path}: not a readable CSV ({error})") from None


def read_curve(path, metrics: dict) -> pd.DataFrame:
    """A run's curve.csv as long rows (validation points only; the FLOPs column as written by training)."""
    path = Path(path)
    curve = read_curve_file(path)
    missing = [c for c in CURVE_FILE_COLUMNS if c not in curve.columns]
    if missing:
        raise PlmscaleError(f"{path}: column(s) {', '.join(missing)} missing; expected {', '.join(CURVE_FILE_COLUMNS)}")
    valid = pd.to_numeric(curve["valid_loss"], errors="coerce")
    kept = curve[valid.notna()]
    return pd.DataFrame({
        "run_id": str(metrics["run_id"]), "objective": metrics["objective"], "n_params": int(metrics["n_params"]),
        "flops": kept["flops"].astype(float).to_numpy(), "tokens": kept["tokens"].astype(float).to_numpy(),
        "loss": valid[valid.notna()].astype(float).to_numpy(), **_kind_and_design(metrics)})


def collect_runs(metrics_paths, curve_paths=(), train_tokens=None):
    """metrics.json files (and their curve.csv files, matched by folder) -> (runs_df, curves_df).
    train_tokens: the train split's tokens (shards.read_split_pass_tokens), for each run's epochs."""
    metrics_paths = [Path(p) for p in metrics_paths]
    curve_by_dir = {Path(p).parent: Path(p) for p in curve_paths}
    rows, curves, mixed = [], [], []
    for path in sorted(metrics_paths):
        metrics = read_metrics(path)
        if metrics["objective"] == MIXED:  # no point of a CLM or an MLM law: plmscale.scaling.mixed compares it
            mixed.append(metrics["run_id"])
            continue
        rows.append(run_row(metrics, train_tokens))
        curve_path = curve_by_dir.get(path.parent)
        if curve_path is not None:
            curves.append(read_curve(curve_path, metrics))
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS + ["epochs", "unique_tokens", "kind", "design", "model", "schedule",
                                                     "trunk",
                                                     *COST_COLUMNS] + _identity_column_names(rows))
    duplicated = runs["run_id"][runs["run_id"].duplicated()]
    if len(duplicated):
        raise PlmscaleError(f"run id(s) {sorted(duplicated.unique())} appear in more than one metrics.json")
    runs = with_pairs(with_roles(runs, "own runs"))
    curves_df = (pd.concat(curves, ignore_index=True) if curves
                 else pd.DataFrame(columns=[*CURVE_COLUMNS, "kind", "design"]))
    curves_df = with_roles(curves_df, "own curves")
    if mixed:
        log.info("left out %d mixed run(s) (%s): the scaling fits take clm and mlm runs; mixed runs are compared "
                 "with them in results/scaling/mixed.json", len(mixed), ", ".join(mixed))
    log.info("collected %d own runs (%d with curves)", len(runs), len(curves))
    return runs, curves_df


def _identity_column_names(rows) -> list:
    """The per-bin columns any row has, grouped by quantity (loss, tokens, sequences), bins in order."""
    bins = identity_bins(pd.DataFrame(columns=sorted({key for row in rows for key in row})))
    return [f"{prefix}{label}" for prefix in IDENTITY_COLUMN_PREFIXES for label in bins]


def merge_tables(*pairs):
    """Concatenate (runs, curves) pairs, e.g. own + imported; run ids must not collide."""
    run_frames = [r for r, _ in pairs if r is not None and len(r)]
    curve_frames = [c for _, c in pairs if c is not None and len(c)]
    runs = (pd.concat(run_frames, ignore_index=True, sort=False) if run_frames
            else pd.DataFrame(columns=RUN_COLUMNS))
    curves = (pd.concat(curve_frames, ignore_index=True, sort=False) if curve_frames
              else pd.DataFrame(columns=[*CURVE_COLUMNS, "role"]))
    duplicated = runs["run_id"][runs["run_id"].duplicated()]
    if len(duplicated):
        raise PlmscaleError(f"run id(s) {sorted(duplicated.unique())[:8]} occur in both own and imported runs; "
                            "rename one side (imported ids can be changed through the import config)")
    return runs, curves


def collect_and_merge(metrics_paths, curve_paths, imported_runs=None, imported_curves=None, train_manifest=None):
    """The collect step: own runs (if any) plus the imported tables (if given) -> (runs_df, curves_df).
    train_manifest: the train split's manifest.json, for the own runs' epochs (empty without it)."""
    pairs = []
    if metrics_paths:
        train_tokens = read_split_pass_tokens(train_manifest) if train_manifest else None
        pairs.append(collect_runs(metrics_paths, curve_paths, train_tokens))
    if imported_runs:
        imported = pd.read_csv(imported_runs, low_memory=False)
        curves = pd.read_csv(imported_curves, low_memory=False) if imported_curves else None
        pairs.append((imported, curves))
    if not pairs:
        raise PlmscaleError("nothing to collect: no own runs (fit.use_own_runs, train grid) and no imported "
                            "curves (fit.curves_dir)")
    runs, curves = merge_tables(*pairs)
    # Imported tables written by an older plmscale have no role column: derive it the same way.
    runs, curves = with_roles(runs, imported_runs or "runs"), with_roles(curves, imported_curves or "curves")
    log.info("runs table: %d runs (%s)", len(runs), runs["source"].value_counts().to_dict())
    return runs, curves
