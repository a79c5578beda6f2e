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

import numpy as np

from plmscale.scaling.table import SCALING_ROLES, TRANSFER, transfer_partners, with_roles

SAME_BUDGET_DEX = 0.05


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
