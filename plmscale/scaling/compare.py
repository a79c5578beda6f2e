"""CLM against MLM from a study's own runs (issue 24): the difference of their IsoFLOP exponents
a_MLM − a_CLM, and at the largest budget both grids reach, MLM's compute-optimal N and D as a ratio to CLM's
and the difference of their compute-optimal losses, each with a 95% interval, and a sentence on whether the
study reproduces the paper's ordering (Cheng et al. 2024: MLM's N_opt grows faster with compute, 0.776
against 0.578).

Intervals come from the two fits' bootstrap draws taken together draw by draw. The objectives are separate
training runs resampled in separate streams, so their errors are independent and draw i of one may be paired
with draw i of the other; a draw where either refit failed is left out.
"""

import numpy as np

from plmscale.scaling.bootstrap import interval

METHOD = "isoflop"


def _draws(entry, key):
    values = ((entry.get("bootstrap") or {}).get("draws") or {}).get(key)
    return None if values is None else np.array([np.nan if v is None else v for v in values], float)


def _at_budget(entry, flops, source):
    """(N_opt, D_opt, loss) at flops from an IsoFLOP entry's constants, or from its draws (source='draws')."""
    get = (lambda key: _draws(entry, key)) if source == "draws" else (lambda key: float(entry[key]))
    values = {key: get(key) for key in ("k_n", "a", "k_d", "b", "k_l", "s", "loss_floor")}
    if any(v is None for v in values.values()):
        return None
    return (values["k_n"] * flops ** values["a"], values["k_d"] * flops ** values["b"],
            values["loss_floor"] + values["k_l"] * flops ** values["s"])


def _paired(first, second, combine):
    if first is None or second is None:
        return None
    size = min(len(first), len(second))
    return interval(combine(first[:size], second[:size]))


def ordering_sentence(difference, difference_ci, published) -> str:
    paper = f"the paper's a_MLM − a_CLM is {published['mlm']['a'] - published['clm']['a']:+.3f} (0.776 vs 0.578)"
    if difference_ci is None:
        return f"a_MLM − a_CLM = {difference:+.3f} without an interval; {paper}"
    low, high = difference_ci
    if low > 0:
        verdict = "reproduces the paper's ordering: MLM's compute-optimal size grows faster with compute than CLM's"
    elif high < 0:
        verdict = ("reverses the paper's ordering: here CLM's compute-optimal size grows faster with compute "
                   "than MLM's")
    else:
        verdict = "cannot tell the two exponents apart (the interval of the difference holds 0)"
    return f"a_MLM − a_CLM = {difference:+.3f} [{low:+.3f}, {high:+.3f}]: this study {verdict}; {paper}"


def compare_objectives(objectives: dict, published: dict) -> dict:
    """fit.json's `comparison`: {"method", "available", and either "reasons" or the difference of the
    exponents, the budget compared at, MLM/CLM ratios of N_opt and D_opt, the loss difference, "sentence"}."""
    reasons = []
    for name in ("clm", "mlm"):
        entry = (objectives.get(name) or {}).get(METHOD)
        if entry is None:
            reasons.append(f"no {name} runs in the table")
        elif not entry.get("identified"):
            why = (entry.get("reasons") or [entry.get("error", "not identified")])[0]
            reasons.append(f"the {name} {METHOD} fit is not identified: {why}")
    if reasons:
        return {"method": METHOD, "available": False, "reasons": reasons}
    clm, mlm = objectives["clm"][METHOD], objectives["mlm"][METHOD]
    budget = float(min(max(clm["budgets"]), max(mlm["budgets"])))
    # With per-objective budgets (train.isoflop.budgets as a mapping) the grids may not overlap: then no budget
    # is reached by both, and the optima at the lower grid's top are an extrapolation of the other grid's law.
    outside = [name for name, entry in (("clm", clm), ("mlm", mlm)) if budget < min(entry["budgets"])]
    difference = float(mlm["a"] - clm["a"])
    difference_ci = _paired(_draws(mlm, "a"), _draws(clm, "a"), np.subtract)
    point_clm, point_mlm = _at_budget(clm, budget, "point"), _at_budget(mlm, budget, "point")
    draws_clm, draws_mlm = _at_budget(clm, budget, "draws"), _at_budget(mlm, budget, "draws")

    def ratio_or_difference(i, combine):
        ci = None if draws_clm is None or draws_mlm is None else _paired(draws_mlm[i], draws_clm[i], combine)
        return float(combine(point_mlm[i], point_clm[i])), ci

    n_ratio, n_ratio_ci = ratio_or_difference(0, np.divide)
    d_ratio, d_ratio_ci = ratio_or_difference(1, np.divide)
    loss_difference, loss_difference_ci = ratio_or_difference(2, np.subtract)
    record = {"method": METHOD, "available": True,
              "a_clm": float(clm["a"]), "a_mlm": float(mlm["a"]),
              "a_difference": difference, "a_difference_ci": difference_ci,
              "budget": budget,
              "n_opt_ratio": n_ratio, "n_opt_ratio_ci": n_ratio_ci,
              "d_opt_ratio": d_ratio, "d_opt_ratio_ci": d_ratio_ci,
              "loss_difference": loss_difference, "loss_difference_ci": loss_difference_ci,
              "sentence": ordering_sentence(difference, difference_ci, published)}
    if outside:  # only then: grids that share a budget keep fit.json as it was
        record["budget_below_grid_of"] = outside
    return record


def comparison_lines(comparison: dict | None) -> list[str]:
    """The comparison as text for `plmscale fit` and the fit rule's log."""
    if not comparison:
        return []
    if not comparison["available"]:
        return ["CLM vs MLM: not compared: " + "; ".join(comparison["reasons"])]

    def ci(values):
        return f" [{values[0]:.3g}, {values[1]:.3g}]" if values else ""

    return ["CLM vs MLM: " + comparison["sentence"],
            f"  at {comparison['budget']:.3g} FLOPs: MLM's N_opt is {comparison['n_opt_ratio']:.3g}x CLM's"
            f"{ci(comparison['n_opt_ratio_ci'])}, D_opt {comparison['d_opt_ratio']:.3g}x{ci(comparison['d_opt_ratio_ci'])},"
            f" loss {comparison['loss_difference']:+.3g} nats{ci(comparison['loss_difference_ci'])}"
            + "".join(f" ({name.upper()}'s grid starts above it: its optimum there is extrapolated)"
                      for name in comparison.get("budget_below_grid_of", []))]
