"""Transfer between objectives (e.g. CLM pre-training, then MLM): what the pre-training bought.

For each transfer run (role "transfer"), paired with its from-scratch partner (table.transfer_partners:
the `pair` column, else a scratch run of the same objective and size):
- loss gap: scratch loss − transfer loss (positive: transfer helped);
- effective tokens: the tokens a scratch run of that size would need to reach the transfer run's loss,
  read off the scratch run's own curve by interpolation in log D (or, where the curve never gets that low
  or there are no curves, by solving the fitted parametric law of the objective for D);
- effectively transferred tokens: effective tokens − tokens the transfer run itself trained on.
The best CLM share of a fixed budget needs several runs of one total budget with different shares of
pre-training compute; where the table has none, the output says so.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from plmscale.config import read_json_object
from plmscale.data.atomic import write_text
from plmscale.errors import PlmscaleError
from plmscale.scaling.bootstrap import interval
from plmscale.scaling.collect import read_curve, read_metrics
from plmscale.scaling.table import SCALING_ROLES, TRANSFER, transfer_partners, with_roles

SAME_BUDGET_DEX = 0.05
log = logging.getLogger(__name__)


def tokens_to_reach(target_loss, curve_tokens, curve_loss):
    """First crossing of target_loss by a (tokens, loss) curve, interpolated linearly in log tokens."""
    order = np.argsort(curve_tokens)
    tokens, loss = np.asarray(curve_tokens, float)[order], np.asarray(curve_loss, float)[order]
    below = np.flatnonzero(loss <= target_loss)
    if len(below) == 0:
        return None
    j = below[0]
    if j == 0:
        return float(tokens[0])
    t0, t1, l0, l1 = np.log(tokens[j - 1]), np.log(tokens[j]), loss[j - 1], loss[j]
    fraction = (l0 - target_loss) / (l0 - l1) if l0 != l1 else 1.0
    return float(np.exp(t0 + fraction * (t1 - t0)))


def tokens_from_law(target_loss, n_params, law):
    """Solve E + A/N^α + B/D^β = target for D (None where the law never gets that low at this N)."""
    if not law or "error" in law:
        return None
    rest = target_loss - law["E"] - law["A"] / n_params ** law["alpha"]
    if rest <= 0:
        return None
    return float((law["B"] / rest) ** (1 / law["beta"]))


def analyse_transfer(runs, curves=None, parametric_laws=None):
    """Transfer summary over a validated runs table (all runs, scratch and transfer)."""
    runs = with_roles(runs)
    transfer = runs[runs["role"] == TRANSFER]
    if len(transfer) == 0:
        return {"error": "no transfer runs in the table (a transfer run has a non-empty init_from "
                         "or kind == 'transfer')"}
    scratch = runs[runs["role"].isin(SCALING_ROLES)]
    by_id = runs.set_index("run_id")
    partners = transfer_partners(runs)
    pairs = []
    for _, run in transfer.iterrows():
        partner_id = partners[run["run_id"]]
        partner = None if partner_id is None else by_id.loc[partner_id]
        entry = {"run_id": run["run_id"], "objective": run["objective"], "n_params": float(run["n_params"]),
                 "tokens": float(run["tokens"]), "flops": float(run["flops"]), "loss": float(run["loss"]),
                 "init_from": run["init_from"] or None}
        source = by_id.loc[run["init_from"]] if run["init_from"] in by_id.index else None
        if source is not None:
            entry.update({"source_objective": source["objective"], "source_tokens": float(source["tokens"]),
                          "source_flops": float(source["flops"])})
        if partner is None:
            entry["note"] = "no scratch run of the same objective and size to compare with"
            pairs.append(entry)
            continue
        entry.update({"scratch_run_id": partner_id, "scratch_loss": float(partner["loss"]),
                      "scratch_tokens": float(partner["tokens"]),
                      "loss_gap": float(partner["loss"] - run["loss"])})
        effective, how = None, None
        if curves is not None:
            curve = curves[curves["run_id"] == partner_id]
            if len(curve):
                effective = tokens_to_reach(run["loss"], curve["tokens"], curve["loss"])
                how = "scratch curve" if effective is not None else None
        if effective is None and parametric_laws:
            effective = tokens_from_law(run["loss"], run["n_params"], parametric_laws.get(run["objective"]))
            how = "parametric law of the objective" if effective is not None else None
        entry["effective_tokens"] = effective
        entry["effective_tokens_from"] = how or "not reachable: the scratch curve and law stay above this loss"
        entry["transferred_tokens"] = None if effective is None else float(effective - run["tokens"])
        pairs.append(entry)
    return {"pairs": pairs, "best_clm_share": best_share(runs, transfer, scratch)}


def best_share(runs, transfer, scratch):
    """Per total budget with ≥ 2 different pre-training shares: the share with the lowest final loss."""
    by_id = runs.set_index("run_id")
    candidates = []
    for _, run in transfer.iterrows():
        if run["init_from"] in by_id.index:
            source_flops = float(by_id.loc[run["init_from"], "flops"])
            total = source_flops + float(run["flops"])
            candidates.append((run["objective"], run["n_params"], total, source_flops / total, run["loss"],
                               run["run_id"]))
    for _, run in scratch.iterrows():
        candidates.append((run["objective"], run["n_params"], float(run["flops"]), 0.0, run["loss"],
                           run["run_id"]))
    groups = {}
    for objective, n, total, share, loss, run_id in candidates:
        key = (objective, round(np.log10(total) / SAME_BUDGET_DEX))
        groups.setdefault(key, []).append((share, loss, run_id, total))
    results = []
    for (objective, _), members in sorted(groups.items()):
        shares = {round(m[0], 4) for m in members}
        if len(shares) < 2 or max(shares) == 0:
            continue
        best = min(members, key=lambda m: m[1])
        results.append({"objective": objective, "total_flops": float(np.exp(np.mean(np.log([m[3] for m in members])))),
                        "best_share": float(best[0]), "best_run_id": best[2],
                        "runs": [{"run_id": m[2], "share": float(m[0]), "loss": float(m[1])} for m in members]})
    if not results:
        return {"note": "insufficient data: needs 2 or more runs of one total budget with different "
                        "shares of pre-training compute (transfer runs whose init_from names a run in the "
                        "table, plus scratch runs of the same budget)"}
    return {"budgets": results}


# ------------------------------------------------------------------------------------- the transfer sweep
# train.transfer_sweep (plmscale.grid.transfer_sweep): per size, one total budget C split between CLM pre-training
# (share s) and MLM (1 − s); share 0 is MLM from scratch with all of C. Two questions, each a small pure function
# over the sweep's table (one row per MLM run: model, n_params, share, replicate, tokens, pretrain_tokens, loss):
#
# 1. The best share. A parabola in s through the sweep's losses; its minimum over the swept range is the best
#    share. Interval: a residual bootstrap (refit on fitted losses plus redrawn residuals), because the design has
#    one run per share: redrawing runs would drop shares and leave parabolas undetermined (the same reason the
#    IsoFLOP fit uses fit.isoflop_bootstrap: residuals). Residuals are pooled over sizes (each size alone has 2
#    spare degrees of freedom at 5 shares) and inflated by sqrt(n / (n − 3)) for the coefficients they fed.
#    Replicates, where present, are more points at the same share: they enter the parabola and its residuals.
# 2. Effectively transferred tokens (Hernandez et al. 2021): D_T = D_E − D_MLM, where D_E is the tokens the
#    from-scratch MLM run of that size (and replicate) needs to reach the transfer run's final loss, read off its
#    curve.csv by interpolation in log tokens. A transfer run below the curve's lowest loss has D_E beyond the
#    curve: D_T is then only bounded below (by the scratch run's tokens − D_MLM) and left out of the law. A
#    curve point inside a cosine schedule is above what a run trained to that length reaches, so D_E (and D_T)
#    from a curve leans high. The law D_T = k · D_pre^α · N^β (D_pre: the CLM tokens) is a least-squares line in
#    logs (β only with ≥ 2 sizes), with a residual-bootstrap interval on every constant.

SHARE_PARABOLA_COEFFICIENTS = 3
SWEEP_COLUMNS = ["run_id", "model", "n_params", "share", "replicate", "total_flops", "tokens", "pretrain_tokens",
                 "loss"]


def sweep_table(plan, metrics: dict) -> pd.DataFrame:
    """The sweep's table: the plan's rows (plmscale.grid.transfer_sweep.transfer_sweep_plan) with each MLM run's
    final valid loss and trained tokens, and its CLM source's trained tokens (pretrain_tokens, 0 at share 0),
    from metrics (run_id -> metrics.json as a dict)."""
    rows = []
    for row in plan:
        run = metrics[row["run_id"]]
        source = metrics.get(row["source_run_id"]) if row["source_run_id"] else None
        pretrain = 0.0 if not row["source_run_id"] else float(source["tokens"] if source else row["source_tokens"])
        rows.append({**{k: row[k] for k in ("run_id", "model", "n_params", "share", "replicate", "total_flops")},
                     "tokens": float(run["tokens"]), "pretrain_tokens": pretrain,
                     "loss": float(run["final_valid_loss"])})
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def share_parabola(shares, losses):
    """Least-squares (c0, c1, c2) of loss = c0 + c1·s + c2·s² (losses may be (B, n): one fit per row)."""
    shares = np.asarray(shares, float)
    design = np.stack([np.ones_like(shares), shares, shares ** 2], 1)
    coefficients, *_ = np.linalg.lstsq(design, np.atleast_2d(losses).T, rcond=None)
    return coefficients.T  # (B, 3)


def parabola_minimum(coefficients, low, high):
    """Where each parabola is lowest on [low, high]: its vertex when it curves up and lies inside, else the lower
    end of the range. coefficients (B, 3) -> (B,)."""
    c1, c2 = coefficients[:, 1], coefficients[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(c2 > 0, -c1 / (2 * c2), np.nan)
    inside = np.isfinite(vertex) & (vertex > low) & (vertex < high)
    value = lambda s: coefficients[:, 0] + c1 * s + c2 * s * s
    edge = np.where(value(low) <= value(high), low, high)
    return np.where(inside, vertex, edge), inside


def best_share_fits(table, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per model (and `pooled` over sizes, on loss relative to the size's from-scratch loss): the raw best share
    (lowest mean loss), the parabola's best share with its residual-bootstrap interval, and whether it is
    identified (curving up, its vertex strictly inside the swept shares)."""
    table = table.copy()
    scratch = table[table["share"] == 0].groupby("model")["loss"].mean()
    table["relative_loss"] = table["loss"] / table["model"].map(scratch)
    groups = dict(list(table.groupby("model", sort=False)))
    fits = {model: _parabola_fit(group["share"], group["loss"]) for model, group in groups.items()}
    # Relative residuals pooled over sizes, rescaled to each size's loss level for its bootstrap.
    pooled_relative = [fit["residuals"] / groups[model]["loss"].mean() for model, fit in fits.items()]
    relative = np.concatenate(pooled_relative) if pooled_relative else np.array([])
    rng = np.random.default_rng(seed)
    result = {"by_model": {}, "relative_residual_sd": float(np.sqrt(np.mean(relative ** 2))) if len(relative) else None}
    for model, group in groups.items():
        entry = _best_share_entry(group["share"], group["loss"], fits[model], relative * group["loss"].mean(),
                                  n_boot, rng)
        result["by_model"][model] = {"n_params": float(group["n_params"].iloc[0]), **entry}
    if len(groups) > 1 and table["relative_loss"].notna().all():
        fit = _parabola_fit(table["share"], table["relative_loss"])
        result["pooled"] = {"value": "loss / the size's from-scratch loss, all sizes in one parabola",
                            **_best_share_entry(table["share"], table["relative_loss"], fit, fit["residuals"],
                                                n_boot, rng)}
    return result


def _parabola_fit(shares, losses) -> dict:
    """The parabola through (shares, losses), its fitted values, and its residuals inflated by sqrt(n / (n − 3))
    for the coefficients they fed (none where there is no spare degree of freedom)."""
    shares, losses = np.asarray(shares, float), np.asarray(losses, float)
    coefficients = share_parabola(shares, losses)[0]
    fitted = coefficients[0] + coefficients[1] * shares + coefficients[2] * shares ** 2
    n = len(shares)
    spare = n > SHARE_PARABOLA_COEFFICIENTS and len(np.unique(shares)) >= SHARE_PARABOLA_COEFFICIENTS
    residuals = (losses - fitted) * np.sqrt(n / (n - SHARE_PARABOLA_COEFFICIENTS)) if spare else np.array([])
    return {"coefficients": coefficients, "fitted": fitted, "residuals": residuals}


def _best_share_entry(shares, values, fit, residuals, n_boot, rng) -> dict:
    shares, values = np.asarray(shares, float), np.asarray(values, float)
    low, high = float(shares.min()), float(shares.max())
    coefficients = fit["coefficients"]
    means = {share: float(values[shares == share].mean()) for share in sorted(set(shares))}
    raw_best = min(means, key=means.get)
    best, inside = parabola_minimum(coefficients[None, :], low, high)
    entry = {"values": {f"{share:g}": value for share, value in means.items()}, "raw_best_share": float(raw_best),
             "parabola": [float(c) for c in coefficients], "best_share": float(best[0]),
             "vertex_inside": bool(inside[0]), "interval": None, "draws_inside": None}
    if n_boot and len(residuals):
        draws = fit["fitted"] + rng.choice(residuals, size=(n_boot, len(shares)), replace=True)
        best_draws, inside_draws = parabola_minimum(share_parabola(shares, draws), low, high)
        entry["interval"] = interval(best_draws)
        entry["draws_inside"] = float(np.mean(inside_draws))
    reasons = []
    if len(means) < SHARE_PARABOLA_COEFFICIENTS:
        reasons.append(f"{len(means)} share(s): a parabola needs at least {SHARE_PARABOLA_COEFFICIENTS}")
    elif coefficients[2] <= 0:
        reasons.append("the losses do not curve up in the share (no minimum inside)")
    elif not inside[0]:
        reasons.append(f"the parabola's vertex {-coefficients[1] / (2 * coefficients[2]):.3g} lies outside the "
                       f"swept shares ({low:g}, {high:g}): the best share is at the edge")
    if not len(residuals):
        reasons.append("no spare degrees of freedom for an interval (a parabola needs more than 3 runs)")
    elif entry["interval"] and not reasons and (entry["interval"][0] <= low or entry["interval"][1] >= high):
        reasons.append(f"the interval {entry['interval'][0]:.2g}-{entry['interval'][1]:.2g} reaches the edge of the "
                       f"swept shares ({low:g}, {high:g}): refits put the best share at the edge too; add "
                       f"replicates or shares")
    entry["identified"] = not reasons
    entry["reasons"] = reasons
    return entry


def transferred_tokens(table, curves) -> pd.DataFrame:
    """Per transfer run (share > 0): effective tokens D_E read off the from-scratch run's curve (same model and
    replicate), D_T = D_E − tokens, and how D_E was found. Beyond the curve (the transfer run ends lower than the
    scratch run ever got), D_E is None and transferred_lower_bound = scratch tokens − tokens."""
    rows = []
    scratch = table[table["share"] == 0].set_index(["model", "replicate"])
    for _, run in table[table["share"] > 0].iterrows():
        entry = {"run_id": run["run_id"], "effective_tokens": None, "transferred_tokens": None,
                 "transferred_lower_bound": None}
        key = (run["model"], run["replicate"])
        if key not in scratch.index:
            entry["effective_tokens_from"] = "no from-scratch run of this size and replicate"
            rows.append(entry)
            continue
        partner = scratch.loc[key]
        entry["scratch_run_id"], entry["scratch_loss"] = partner["run_id"], float(partner["loss"])
        curve = curves[curves["run_id"] == partner["run_id"]]
        if not len(curve):
            entry["effective_tokens_from"] = f"{partner['run_id']} has no validation curve"
        elif run["loss"] < curve["loss"].min():
            entry["effective_tokens_from"] = (f"beyond the curve: the transfer run's loss {run['loss']:.4f} is below the "
                                              f"lowest of {partner['run_id']} ({curve['loss'].min():.4f})")
            entry["transferred_lower_bound"] = float(curve["tokens"].max() - run["tokens"])
        else:
            effective = tokens_to_reach(run["loss"], curve["tokens"].to_numpy(), curve["loss"].to_numpy())
            entry["effective_tokens"] = effective
            entry["transferred_tokens"] = float(effective - run["tokens"])
            first = float(curve["tokens"].min())
            entry["effective_tokens_from"] = (f"before the curve's first point ({first:.3g} tokens): an upper bound"
                                              if effective <= first else "scratch curve (log-token interpolation)")
        rows.append(entry)
    return pd.DataFrame(rows)


def fit_transfer_law(pretrain_tokens, n_params, transferred, n_boot: int = 1000, seed: int = 0) -> dict:
    """D_T = k · D_pre^α · N^β by least squares in logs, over points with D_T > 0 (β only with ≥ 2 sizes), with a
    residual-bootstrap interval on k, α and β. Returns {"error": ...} where there are too few points."""
    d_pre, n, d_t = (np.asarray(v, float) for v in (pretrain_tokens, n_params, transferred))
    keep = np.isfinite(d_t) & (d_t > 0) & (d_pre > 0)
    sizes = np.unique(n[keep])
    columns = [np.ones(keep.sum()), np.log(d_pre[keep])] + ([np.log(n[keep])] if len(sizes) >= 2 else [])
    design = np.stack(columns, 1)
    if keep.sum() <= design.shape[1] or len(np.unique(d_pre[keep])) < 2:
        return {"error": f"{int(keep.sum())} transfer run(s) with a positive D_T read off a curve, over "
                         f"{len(np.unique(d_pre[keep]))} pre-training length(s): the law needs more points than its "
                         f"{design.shape[1]} constants and 2 pre-training lengths",
                "n_points": int(keep.sum())}
    y = np.log(d_t[keep])
    coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
    fitted = design @ coefficients
    spare = len(y) - design.shape[1]
    residuals = (y - fitted) * np.sqrt(len(y) / spare)
    law = {"k": float(np.exp(coefficients[0])), "alpha": float(coefficients[1]),
           "beta": float(coefficients[2]) if design.shape[1] == 3 else None,
           "n_points": int(len(y)), "n_sizes": int(len(sizes)),
           "log_residual_sd": float(np.sqrt(np.sum((y - fitted) ** 2) / spare)),
           "form": "D_T = k * D_pre^alpha * N^beta" if design.shape[1] == 3 else
                   "D_T = k * D_pre^alpha (one size: no N term)"}
    if n_boot:
        rng = np.random.default_rng(seed)
        draws = fitted[None, :] + rng.choice(residuals, size=(n_boot, len(y)), replace=True)
        refits, *_ = np.linalg.lstsq(design, draws.T, rcond=None)
        law["intervals"] = {"log_k": interval(refits[0]), "alpha": interval(refits[1]),
                            "beta": interval(refits[2]) if design.shape[1] == 3 else None}
    return law


def _law_left_out(measured) -> dict:
    """What the law's points leave out, and what that means for reading it."""
    if not len(measured):
        return {"left_out_beyond_curve": 0, "left_out_not_positive": 0, "caveats": [], "identified": False}
    beyond = int(measured["transferred_lower_bound"].notna().sum())
    not_positive = int((pd.to_numeric(measured["transferred_tokens"], errors="coerce") <= 0).sum())
    caveats = []  # each one leaves the law's points a biased subset of the sweep: it is then not identified
    if not_positive:
        caveats.append(f"{not_positive} of {len(measured)} transfer runs transferred no tokens (D_T <= 0: worse than "
                       f"from scratch at their own MLM tokens) and have no logarithm: the law describes only the "
                       f"runs where transfer helped")
    if beyond:
        caveats.append(f"{beyond} of {len(measured)} transfer runs ended below the from-scratch curve: their D_T is "
                       f"a lower bound, left out")
    return {"left_out_beyond_curve": beyond, "left_out_not_positive": not_positive, "caveats": caveats,
            "identified": not caveats}


def transfer_sweep_summary(table, curves, n_boot: int = 1000, seed: int = 0) -> dict:
    """transfer.json's content from the sweep's table and its MLM runs' curves (run_id, tokens, loss)."""
    ett = transferred_tokens(table, curves)
    runs = table.merge(ett, on="run_id", how="left") if len(ett) else table.assign(effective_tokens=None)
    records = []
    for _, run in runs.sort_values(["n_params", "replicate", "share"]).iterrows():
        record = {k: _plain(run.get(k)) for k in [*SWEEP_COLUMNS, "scratch_run_id", "scratch_loss",
                                                  "effective_tokens", "effective_tokens_from", "transferred_tokens",
                                                  "transferred_lower_bound"] if k in run.index}
        if record.get("scratch_loss") is not None:
            record["loss_gap"] = record["scratch_loss"] - record["loss"]
        records.append(record)
    measured = runs[runs["share"] > 0] if len(ett) else runs.iloc[:0]
    law = fit_transfer_law(measured["pretrain_tokens"], measured["n_params"],
                           pd.to_numeric(measured["transferred_tokens"], errors="coerce"), n_boot, seed) if len(measured) else \
        {"error": "no transfer runs (shares above 0) in the sweep"}
    law.update(_law_left_out(measured))
    law["identified"] = law["identified"] and "error" not in law
    return {"total_flops": float(table["total_flops"].iloc[0]), "shares": sorted(float(s) for s in table["share"].unique()),
            "models": list(dict.fromkeys(table["model"])),
            "method": {"best_share": "parabola in the CLM share through each size's final MLM losses; 95% interval "
                                     "from a residual bootstrap (residuals pooled over sizes); 'pooled' fits all sizes "
                                     "on loss relative to their from-scratch loss",
                       "transferred_tokens": "D_T = D_E - D_MLM, D_E read off the from-scratch run's curve.csv "
                                             "(log-token interpolation; a cosine curve's inner points lean D_E high); "
                                             "runs beyond the curve give a lower bound only and are left out of the "
                                             "law D_T = k * D_pre^alpha * N^beta (least squares in logs, residual "
                                             "bootstrap)"},
            "best_share": best_share_fits(table, n_boot, seed), "runs": records, "transfer_law": law}


def _plain(value):
    """A JSON value: numpy scalars as Python numbers, NaN as None."""
    if value is None:
        return None
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    return value


def write_transfer_sweep(plan, metrics_paths, curve_paths, out_json, n_boot: int = 1000, seed: int = 0) -> dict:
    """transfer.json from the sweep's run files (MLM runs and their CLM sources; curves of the MLM runs, at least
    the from-scratch ones); returns the summary (plmscale.plots.transfer.plot_transfer_sweep draws it)."""
    metrics = {str(m["run_id"]): m for m in map(read_metrics, metrics_paths)}
    missing = [row["run_id"] for row in plan if row["run_id"] not in metrics]
    if missing:
        raise PlmscaleError(f"transfer sweep: no metrics.json for {', '.join(missing)}; train them first (rule train)")
    mlm_ids = {row["run_id"] for row in plan}
    curves = [read_curve(path, metrics[str(run_id)]) for path in curve_paths
              if (run_id := Path(path).parent.name) in mlm_ids]
    curves = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["run_id", "tokens", "loss"])
    summary = transfer_sweep_summary(sweep_table(plan, metrics), curves, n_boot, seed)
    for model, entry in summary["best_share"]["by_model"].items():
        log.info("%s: best CLM share %.3g %s (raw %.3g)%s", model, entry["best_share"], entry["interval"],
                 entry["raw_best_share"], "" if entry["identified"] else f": {'; '.join(entry['reasons'])}")
    with write_text(out_json) as handle:
        json.dump(summary, handle, indent=2)
        handle.write("\n")
    return summary


def read_transfer_sweep(path) -> dict:
    return read_json_object(path, "transfer sweep summary", hint="; rerun the transfer_sweep rule")
