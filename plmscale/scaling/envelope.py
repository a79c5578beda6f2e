"""Envelope fit (Chinchilla approach 1): the lower envelope of all training curves over FLOPs.

log10 C is cut into bins of BIN_DEX decades; in each bin the lowest-loss point over all curves gives
(C, N, D, L); N_opt = k_n·C^a, D_opt = k_d·C^b and L = k_l·C^s are fitted to those points in log space.
A bin won by the smallest or largest model of the ladder is dropped: there the envelope only says "the
edge of the grid", not where the optimum is. Like the IsoFLOP code, the arithmetic is batched over
bootstrap weight rows (counts per run).
"""

import numpy as np

from plmscale.errors import PlmscaleError
from plmscale.scaling.power_law import power_law_fit_batch

BIN_DEX = 0.1
# The first part of every curve is warm-up: a point there is nobody's optimum, and skipping it keeps
# noisy early evaluations out of the envelope.
SKIP_FRACTION = 0.1


def envelope_design(curves, bin_dex=BIN_DEX, skip_fraction=SKIP_FRACTION):
    """Index the curves once: bin of every retained point and the run it belongs to."""
    if len(curves) == 0:
        raise PlmscaleError("envelope fit: no training-curve points for this objective")
    curves = curves.sort_values(["run_id", "flops"], kind="stable")
    run_ids, run_index = np.unique(curves["run_id"].to_numpy(str), return_inverse=True)
    flops = curves["flops"].to_numpy(float)
    # position of each point within its run's compute range
    run_max = np.zeros(len(run_ids))
    np.maximum.at(run_max, run_index, flops)
    keep = flops >= skip_fraction * run_max[run_index]
    flops, run_index = flops[keep], run_index[keep]
    sub = curves[keep]
    log_c = np.log10(flops)
    bins = np.floor(log_c / bin_dex).astype(int)
    run_n = np.zeros(len(run_ids))
    run_n[run_index] = sub["n_params"].to_numpy(float)
    return {"run_ids": run_ids, "run_index": run_index, "bins": bins, "log_c": log_c,
            "n": sub["n_params"].to_numpy(float), "tokens": sub["tokens"].to_numpy(float),
            "loss": sub["loss"].to_numpy(float), "flops": flops, "run_n": run_n, "bin_dex": bin_dex}


def envelope_batch(design, run_counts):
    """Envelope points and power laws for each weight row in run_counts (B, n_runs of the design).

    Returns (laws dict of (B,) arrays, winners (B, n_bins) point indices or -1, bin ids).
    """
    counts = np.asarray(run_counts, float)
    included_runs = counts > 0
    # The ladder's edges in each resample: smallest and largest model present.
    n_masked_lo = np.where(included_runs, design["run_n"], np.inf).min(1)
    n_masked_hi = np.where(included_runs, design["run_n"], -np.inf).max(1)
    bin_ids = np.unique(design["bins"])
    winners = np.full((counts.shape[0], len(bin_ids)), -1)
    for j, bin_id in enumerate(bin_ids):
        points = np.flatnonzero(design["bins"] == bin_id)
        loss = np.where(included_runs[:, design["run_index"][points]], design["loss"][points], np.inf)
        best = np.argmin(loss, 1)
        found = np.isfinite(loss[np.arange(len(best)), best])
        winner = points[best]
        n_win = design["n"][winner]
        at_edge = (n_win <= n_masked_lo) | (n_win >= n_masked_hi)
        winners[:, j] = np.where(found & ~at_edge, winner, -1)
    valid = winners >= 0
    safe = np.where(valid, winners, 0)
    log_c = np.log(design["flops"][safe])
    # Each row has its own C values, so fit row by row on the shared batched solver via weights.
    laws = {}
    for name, values in (("n", design["n"]), ("d", design["tokens"]), ("l", design["loss"])):
        log_y = np.where(valid, np.log(values[safe]), np.nan)
        log_k, slope = power_law_fit_batch(log_c, log_y, valid)
        laws[name] = (np.exp(log_k), slope)
    out = {"k_n": laws["n"][0], "a": laws["n"][1], "k_d": laws["d"][0], "b": laws["d"][1],
           "k_l": laws["l"][0], "s": laws["l"][1], "n_points": valid.sum(1)}
    return out, winners, bin_ids


def fit_envelope(curves, bin_dex=BIN_DEX, skip_fraction=SKIP_FRACTION):
    """Point estimate over one objective's scratch-run curves (a validated long table)."""
    design = envelope_design(curves, bin_dex, skip_fraction)
    laws, winners, bin_ids = envelope_batch(design, np.ones((1, len(design["run_ids"]))))
    points = []
    for j, bin_id in enumerate(bin_ids):
        w = winners[0, j]
        if w < 0:
            continue
        points.append({"bin_log10_flops": float(bin_id * bin_dex), "flops": float(design["flops"][w]),
                       "n_params": float(design["n"][w]), "tokens": float(design["tokens"][w]),
                       "loss": float(design["loss"][w]), "run_id": str(design["run_ids"][design["run_index"][w]])})
    out = {"bin_dex": bin_dex, "skip_fraction": skip_fraction, "n_bins": int(len(bin_ids)),
           "n_bins_dropped_at_grid_edge": int(len(bin_ids) - len(points)), "points": points}
    if len(points) < 2 or not np.isfinite(laws["a"][0]):
        out["error"] = (f"envelope: only {len(points)} FLOPs bin(s) won by a model inside the ladder "
                        "(need 2); add curves of more model sizes")
        return out
    out.update({key: float(value[0]) for key, value in laws.items() if key != "n_points"})
    return out


def recounted_curves(curves, cost_per_token):
    """The curves with each point's compute counted in another cost model: its tokens × its run's cost per token
    (cost_per_token: run_id -> cost, a mapping or a Series). Points of runs without a cost are left out."""
    per_point = curves["run_id"].astype(str).map(lambda run: cost_per_token.get(run, np.nan)).to_numpy(float)
    keep = np.isfinite(per_point) & (per_point > 0)
    out = curves[keep].copy()
    out["flops"] = out["tokens"].to_numpy(float) * per_point[keep]
    return out


# What each cost model's envelope keeps in fit.json (its points and draws stay out: the main entry has them).
BY_COST_MODEL_KEYS = ("k_n", "a", "k_d", "b", "k_l", "s")


def envelope_by_cost_model(curves, costs_per_token: dict, run_ids=None, run_counts=None, bin_dex=BIN_DEX,
                           skip_fraction=SKIP_FRACTION) -> dict:
    """The envelope refitted with compute counted in each cost model: {model: {k_n, a, k_d, b, k_l, s, n_points,
    n_runs, and with run_counts "draws": {a, b: (B,) arrays}} or {"error": why}}. costs_per_token: {model:
    {run_id: cost per token}}.

    run_counts (B, len(run_ids)): the bootstrap's run counts of the envelope in the study's own count, over
    run_ids (that envelope design's runs); each model's draws reuse them, so its interval comes from the very
    same resamples (a run a model lacks a cost for is left out of its envelope)."""
    out = {}
    for model, per_token in costs_per_token.items():
        recounted = recounted_curves(curves, per_token)
        if len(recounted) == 0:
            out[model] = {"error": f"no curve point has a {model} cost per token"}
            continue
        entry = fit_envelope(recounted, bin_dex, skip_fraction)
        if "error" in entry:
            out[model] = {"error": entry["error"]}
            continue
        row = {key: entry[key] for key in BY_COST_MODEL_KEYS}
        row.update(n_points=len(entry["points"]), n_runs=int(recounted["run_id"].nunique()))
        if run_counts is not None and run_ids is not None:
            design = envelope_design(recounted, bin_dex, skip_fraction)
            columns = np.searchsorted(np.asarray(run_ids, str), design["run_ids"])
            laws, _, _ = envelope_batch(design, np.asarray(run_counts)[:, columns])
            row["draws"] = {"a": laws["a"], "b": laws["b"]}
        out[model] = row
    return out
