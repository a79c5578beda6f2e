"""Compute-optimal allocation under a cost model: N_opt, D_opt and the loss of a law in (N, D) at a budget
counted in any currency (plmscale.scaling.costs), numerically.

A law in (N, D) does not depend on how compute is counted; the allocation does. For a model of N
non-embedding parameters the shape is the ladder-like shape of that size (plmscale.grid.shapes), its cost per
token c(N) follows from the cost model, D = C / c(N), and N_opt minimises L(N, C / c(N)) over a fine grid of
log N (refined by a parabola through the best grid point and its neighbours). Under 6nd, c(N) = 6N and the
result is the closed form of plmscale.scaling.parametric.optimal_allocation; where c(N)/6N falls with N (every
other definition: embeddings, attention and logits weigh most on small models) N_opt moves up.

For a smooth c(N), the part of a FLOPs definition that is not 6N (c_shape - 6·N_shape of the shape for N, a cubic
in log N through its exact values: smooth_overhead) is added to the exact 6N: the shape's own count differs from N
by up to grid.shapes.COUNT_TOLERANCE, and its steps in width would make c(N) a sawtooth.
"""

import math

import numpy as np

from plmscale.arithmetic import FLOPS_DEFINITIONS, ModelShape
from plmscale.errors import PlmscaleError
from plmscale.grid.shapes import ladder_like_shape
from plmscale.scaling.bootstrap import interval
from plmscale.scaling.costs import MEASURED, MeasuredCost
from plmscale.scaling.log_grid import refined_argmin
from plmscale.scaling.parametric import optimal_allocation

GRID_POINTS_PER_DECADE = 100
# The search spans this many decades either side of the 6nd optimum (the cost models above move it far less).
SEARCH_DECADES = 3.0
OVERHEAD_SAMPLE_STEP = 10  # exact shapes at every 10th grid size (10 per decade), smoothed between them


def search_grid(n_centre: float, decades: float = SEARCH_DECADES) -> np.ndarray:
    """Log-spaced sizes around n_centre."""
    points = int(2 * decades * GRID_POINTS_PER_DECADE) + 1
    return np.logspace(math.log10(n_centre) - decades, math.log10(n_centre) + decades, points)


def overhead_per_token(n_params: float, ladder: dict, seq_len: int, definition: str) -> float:
    """A FLOPs definition's cost per token beyond 6·N for the ladder-like shape of n_params; NaN where no shape
    of the ladder's family has that size (too small for its depth)."""
    if definition == "6nd":
        return 0.0
    try:
        shape = ModelShape.from_dict(ladder_like_shape(float(n_params), ladder))
    except ValueError:
        return math.nan
    return shape.flops_per_token(seq_len, definition) - shape.flops_per_token(seq_len, "6nd")


def smooth_overhead(n_grid, ladder: dict, seq_len: int, definition: str) -> np.ndarray:
    """overhead_per_token on n_grid, smoothed: a cubic in log N through its values at every
    OVERHEAD_SAMPLE_STEP-th size. The ladder-like shapes are discrete (d_model and ffn_dim in steps), which
    makes the exact overhead a sawtooth in N; at the flat optimum of L a sawtooth of 1% moves N_opt by several
    percent, so the allocation takes the trend. NaN outside the sizes a shape exists for."""
    n_grid = np.asarray(n_grid, float)
    if definition == "6nd":
        return np.zeros_like(n_grid)
    sample = n_grid[::OVERHEAD_SAMPLE_STEP]
    exact = np.array([overhead_per_token(n, ladder, seq_len, definition) for n in sample])
    known = np.isfinite(exact) & (exact > 0)
    if known.sum() < 4:
        raise ValueError(f"no ladder-like shapes around N = {n_grid[0]:.3g} … {n_grid[-1]:.3g} to count "
                         f"{definition} FLOPs on")
    coefficients = np.polyfit(np.log(sample[known]), np.log(exact[known]), 3)
    smooth = np.exp(np.polyval(coefficients, np.log(n_grid)))
    inside = (n_grid >= sample[known].min()) & (n_grid <= sample[known].max())
    return np.where(inside, smooth, np.nan)


def cost_per_token(n_grid, ladder: dict, seq_len: int, cost_model: str, measured: MeasuredCost | None = None):
    """c(N) on n_grid: FLOPs per token under a FLOPs definition, or seconds per token under the measured law."""
    n_grid = np.asarray(n_grid, float)
    definition = "chinchilla" if cost_model == MEASURED else cost_model
    if definition not in FLOPS_DEFINITIONS:
        raise ValueError(f"unknown cost model {cost_model!r} "
                         f"(expected one of {', '.join((*FLOPS_DEFINITIONS, MEASURED))})")
    flops = 6.0 * n_grid + smooth_overhead(n_grid, ladder, seq_len, definition)
    if cost_model != MEASURED:
        return flops
    if measured is None:
        raise ValueError("the measured cost model needs a fitted MeasuredCost (costs.fit_measured_cost)")
    return measured.seconds_per_token(flops)


def cost_at(n_params: float, ladder: dict, seq_len: int, cost_model: str, measured: MeasuredCost | None = None):
    """c(N) at one size, from the same smoothed curve the search uses (cost_per_token on a grid around it)."""
    grid = search_grid(n_params, decades=0.5)
    return float(np.exp(np.interp(math.log(n_params), np.log(grid),
                                  np.log(cost_per_token(grid, ladder, seq_len, cost_model, measured)))))


def minimise_on_grid(n_grid, cost, budget, E, A, B, alpha, beta):
    """(n_opt, d_opt, loss), elementwise over arrays of law constants (bootstrap draws): the best point of
    L(N, budget / c(N)) on the grid, refined by a parabola in log N through it and its neighbours."""
    constants = [np.atleast_1d(np.asarray(v, float))[:, None] for v in (E, A, B, alpha, beta)]
    E, A, B, alpha, beta = constants
    log_n = np.log(n_grid)
    tokens = budget / np.asarray(cost, float)[None, :]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        loss = E + A / n_grid[None, :] ** alpha + B / tokens ** beta
    log_opt, _ = refined_argmin(loss, log_n)
    # c at the refined point, interpolated in log N between grid points
    log_cost = np.interp(log_opt, log_n, np.log(np.asarray(cost, float)))
    n_opt = np.exp(log_opt)
    d_opt = budget / np.exp(log_cost)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        l_opt = E[:, 0] + A[:, 0] / n_opt ** alpha[:, 0] + B[:, 0] / d_opt ** beta[:, 0]
    return n_opt, d_opt, l_opt


def law_constants(entry: dict):
    """(point constants, draws or None) of a parametric fit.json entry."""
    point = tuple(float(entry[k]) for k in ("E", "A", "B", "alpha", "beta"))
    draws = (entry.get("bootstrap") or {}).get("draws") or {}
    if not {"E", "A", "B", "alpha", "beta"} <= set(draws):
        return point, None
    arrays = [np.array([np.nan if v is None else v for v in draws[k]], float) for k in ("E", "A", "B", "alpha", "beta")]
    keep = np.all([np.isfinite(a) for a in arrays], axis=0)
    return point, tuple(a[keep] for a in arrays) if keep.any() else None


def allocate(entry: dict, budget: float, ladder: dict, seq_len: int, cost_model: str,
             measured: MeasuredCost | None = None, n_centre: float | None = None) -> dict:
    """{budget, n_opt, d_opt, loss and their intervals from the law's bootstrap draws (None without)} of a
    parametric fit.json entry at a budget in the cost model's currency (FLOPs, or device-seconds measured)."""
    point, draws = law_constants(entry)
    if n_centre is None:  # the 6nd optimum of a FLOPs budget (a seconds budget passes its own centre)
        n_centre = float(optimal_allocation(*point, budget, 6.0)[0])
    n_grid = search_grid(n_centre)
    cost = cost_per_token(n_grid, ladder, seq_len, cost_model, measured)
    keep = np.isfinite(cost) & (cost > 0)
    n_grid, cost = n_grid[keep], cost[keep]
    n_opt, d_opt, loss = (float(v[0]) for v in minimise_on_grid(n_grid, cost, budget, *point))
    out = {"budget": float(budget), "n_opt": n_opt, "d_opt": d_opt, "loss": loss,
           "n_opt_ci": None, "d_opt_ci": None, "loss_ci": None}
    if draws is not None:
        n, d, l = minimise_on_grid(n_grid, cost, budget, *draws)
        out.update(n_opt_ci=interval(n), d_opt_ci=interval(d), loss_ci=interval(l))
    return out


def allocation_by_cost_model(entry: dict, budgets, ladder: dict, seq_len: int,
                             measured: dict[str, MeasuredCost] | None = None) -> dict:
    """fit.json's `allocation_by_cost_model` of one objective: {cost model: [allocation per budget]}.

    A FLOPs budget C is counted in each FLOPs definition. The measured model (one per device with a law)
    is given the device-seconds the 6nd optimum at C takes on that device: the same money as the paper's
    answer, spent where the measured cost says; its entries carry `flops` (C) and `budget` (seconds)."""
    out = {definition: [{"flops": float(c), **allocate(entry, float(c), ladder, seq_len, definition)}
                        for c in budgets] for definition in FLOPS_DEFINITIONS}
    point, _ = law_constants(entry)
    for device, law in sorted((measured or {}).items()):
        rows = []
        for c in budgets:
            n6, d6, _ = (float(v) for v in optimal_allocation(*point, float(c), 6.0))
            seconds = cost_at(n6, ladder, seq_len, MEASURED, law) * d6
            rows.append({"flops": float(c), **allocate(entry, seconds, ladder, seq_len, MEASURED, law, n_centre=n6),
                         "unit": f"{device}-seconds"})
        out[f"{MEASURED}:{device}"] = rows
    return out


def with_cost_allocations(fit: dict, ladder: dict, seq_len: int) -> dict:
    """fit.json (fit_all's dict) with, per objective whose parametric law is identified (or not judged),
    `allocation_by_cost_model` at its fit.predict_flops budgets under each FLOPs definition. An objective
    whose law predicts nothing gets {"skipped": why} instead: the trust rules hold under every cost model.

    Nothing measured on the clock goes in: fit.json is identical between two runs from scratch, wall times
    are not (the measured laws are measured_cost.json's, `plmscale predict --cost-model measured` reads them)."""
    budgets = (fit.get("settings") or {}).get("predict_flops") or {}
    for objective, entry in fit["objectives"].items():
        law = entry.get("parametric") or {}
        if law.get("error") or law.get("identified") is False:
            why = law.get("error") or "; ".join(law.get("reasons") or ["not identified"])
            entry["allocation_by_cost_model"] = {"skipped": f"the parametric law predicts nothing: {why}"}
            continue
        if not ladder:
            entry["allocation_by_cost_model"] = {"skipped": "no train.ladder: no model shapes to count costs on"}
            continue
        try:
            entry["allocation_by_cost_model"] = allocation_by_cost_model(law, budgets.get(objective, []), ladder,
                                                                         seq_len)
        except ValueError as error:  # no shape of the ladder's family near the optimum
            entry["allocation_by_cost_model"] = {"skipped": f"no allocation under the cost models: {error}"}
    return fit


def stored_or_computed(fit_data: dict, objective: str, flops: float | None, cost_model: str, ladder: dict | None = None,
                       seq_len: int | None = None, seconds: float | None = None, where: str = "fit.json",
                       measured: MeasuredCost | None = None) -> dict:
    """One allocation of fit.json's parametric law for `plmscale predict --cost-model`: the row fit.json stores
    for this cost model at these FLOPs, else computed (needs the ladder and seq_len). cost_model is a FLOPs
    definition or "measured:DEVICE", whose law is `measured` (costs.read_measured_cost: fit.json holds none);
    a measured budget is `seconds` if given, else the seconds the 6nd optimum at `flops` takes. A law that
    predicts nothing is an error saying why."""
    entry = ((fit_data.get("objectives") or {}).get(objective) or {})
    law = entry.get("parametric") or {}
    if not law or law.get("error") or law.get("identified") is False:
        why = law.get("error") or "; ".join(law.get("reasons") or ["no parametric law"])
        raise PlmscaleError(f"{where}: objectives.{objective}.parametric predicts nothing ({why}); no allocation "
                            "under any cost model")
    is_measured = cost_model.startswith(f"{MEASURED}:")
    # fit.json stores FLOPs allocations only (an older file's measured rows came from another machine's clock)
    stored = None if is_measured else (entry.get("allocation_by_cost_model") or {}).get(cost_model)
    if seconds is None and isinstance(stored, list):
        for row in stored:
            if flops is not None and math.isclose(row["flops"], flops, rel_tol=1e-9):
                return row
    if not ladder or not seq_len:
        what = ("the measured cost model is computed from the measured law, never stored" if is_measured
                else f"{where} stores no {cost_model} allocation for {objective} at this budget")
        raise PlmscaleError(f"{what}; give --config CONFIG (its train.ladder and train.seq_len define the shapes "
                            "to count on)")
    if not is_measured:
        return {"flops": flops, **allocate(law, flops, ladder, seq_len, cost_model)}
    device = cost_model.split(":", 1)[1]
    if measured is None or measured.device != device:
        raise ValueError(f"cost model {cost_model!r} needs that device's MeasuredCost (costs.read_measured_cost)")
    point, _ = law_constants(law)
    n_centre = float(optimal_allocation(*point, flops, 6.0)[0]) if flops else None
    if seconds is None:
        n6, d6, _ = (float(v) for v in optimal_allocation(*point, flops, 6.0))
        seconds = cost_at(n6, ladder, seq_len, MEASURED, measured) * d6
    if n_centre is None:  # a seconds budget alone: centre on the 6nd optimum at the FLOPs those seconds buy
        n_centre = float(optimal_allocation(*point, seconds / measured.c1, 6.0)[0])
    return {"flops": flops, **allocate(law, seconds, ladder, seq_len, MEASURED, measured, n_centre=n_centre),
            "unit": f"{device}-seconds"}


# The local allocation exponent a = dlog N_opt / dlog C is measured over budgets this many decades either side.
EXPONENT_HALF_SPAN_DEX = 0.05


def exponent_and_optimum(entry: dict, flops: float, ladder: dict, seq_len: int, cost_model: str,
                         measured: MeasuredCost | None = None) -> dict:
    """At a FLOPs budget (for measured: the seconds the 6nd optimum takes), N_opt and the local exponent
    a = dlog N_opt / dlog budget under a cost model, each with its bootstrap interval (draws of the law)."""
    point, draws = law_constants(entry)
    n6, d6, _ = (float(v) for v in optimal_allocation(*point, flops, 6.0))
    budget = cost_at(n6, ladder, seq_len, MEASURED, measured) * d6 if cost_model == MEASURED else flops
    n_grid = search_grid(n6)
    cost = cost_per_token(n_grid, ladder, seq_len, cost_model, measured)
    keep = np.isfinite(cost) & (cost > 0)
    n_grid, cost = n_grid[keep], cost[keep]
    step = 10 ** EXPONENT_HALF_SPAN_DEX
    out = {"cost_model": cost_model, "flops": float(flops), "budget": float(budget)}
    for label, constants in (("", point), ("_draws", draws)):
        if constants is None:
            continue
        n_low = minimise_on_grid(n_grid, cost, budget / step, *constants)[0]
        n_mid = minimise_on_grid(n_grid, cost, budget, *constants)[0]
        n_high = minimise_on_grid(n_grid, cost, budget * step, *constants)[0]
        a = (np.log(n_high) - np.log(n_low)) / (2 * math.log(step))
        if label:
            out.update(a_ci=interval(a), n_opt_ci=interval(n_mid))
        else:
            out.update(a=float(a[0]), n_opt=float(n_mid[0]))
    return out
