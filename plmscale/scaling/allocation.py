"""Compute-optimal allocation under a cost model: N_opt, D_opt and the loss of a law in (N, D) at a budget
counted in any currency (plmscale.scaling.costs), numerically, for every law family.

A law family plugs in as a LossLaw: a callable loss(params, n, d) that broadcasts over rows of constants (the
shape of farseer.loss) and its constants, the point fit's and the bootstrap's (FAMILY_LAWS reads them from a
fit.json entry). Intervals are the percentiles over the bootstrap draws' own optima.

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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from plmscale.arithmetic import FLOPS_DEFINITIONS, ModelShape
from plmscale.errors import PlmscaleError
from plmscale.grid.shapes import ladder_like_shape
from plmscale.scaling.bootstrap import interval
from plmscale.scaling import data_constrained, farseer
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


PARAMETRIC_NAMES = ("E", "A", "B", "alpha", "beta")


def parametric_loss(params, n_params, tokens):
    """L = E + A/N^alpha + B/D^beta for constants (..., 5) in PARAMETRIC_NAMES order; broadcasts like farseer.loss."""
    p = np.asarray(params, float)
    E, A, B, alpha, beta = (p[..., i] for i in range(5))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return E + A / n_params ** alpha + B / tokens ** beta


@dataclass(frozen=True)
class LossLaw:
    """A law L(N, D) to allocate: loss(params, n, d) over constants params (..., p), broadcasting against n and d;
    point (p,) the fit's constants, draws (K, p) the bootstrap's (None without). optimum_6nd, where given, is the
    law's closed-form 6nd optimum (N, D) at a FLOPs budget (the search's centre); else it is searched for."""
    family: str
    loss: Callable
    point: np.ndarray
    draws: np.ndarray | None = None
    optimum_6nd: Callable | None = None


def parametric_constants(entry: dict):
    """(point (5,), draws (K, 5) or None) of a parametric fit.json entry; draws with a failed refit left out."""
    point = np.array([float(entry[k]) for k in PARAMETRIC_NAMES])
    draws = (entry.get("bootstrap") or {}).get("draws") or {}
    if not set(PARAMETRIC_NAMES) <= set(draws):
        return point, None
    arrays = np.array([[np.nan if v is None else v for v in draws[k]] for k in PARAMETRIC_NAMES], float).T
    keep = np.isfinite(arrays).all(1)
    return point, arrays[keep] if keep.any() else None


def theta_constants(entry: dict):
    """(point, draws or None) of an entry that stores its constants as `theta` and its refits as
    bootstrap.thetas (one row per draw, null where it failed): Farseer's layout."""
    point = np.asarray(entry["theta"], float)
    rows = [row for row in ((entry.get("bootstrap") or {}).get("thetas") or []) if row is not None]
    draws = np.asarray(rows, float).reshape(-1, len(point)) if rows else None
    if draws is not None:
        draws = draws[np.isfinite(draws).all(1)]
    return point, draws if draws is not None and len(draws) else None


def _parametric_optimum_6nd(point):
    def optimum(flops):
        n, d, _ = optimal_allocation(*point, flops, 6.0)
        return float(n), float(d)
    return optimum


# The (N, D) law families allocation knows: name -> (loss(params, n, d), constants of its fit.json entry).
# A new family plugs in with one line (e.g. "data_constrained": (data_constrained.loss, its constants reader)).
def data_constrained_constants(entry: dict):
    """(point, draws or None) of a data_constrained entry (constants by name, draws per constant); allocated
    with unlimited unique data, where it is the Chinchilla form with its own constants."""
    point = np.array([entry[name] for name in data_constrained.PARAM_NAMES], float)
    draws = data_constrained.stored_draws(entry)
    if draws is not None:
        draws = draws[np.isfinite(draws).all(1)]
    return point, draws if draws is not None and len(draws) else None


FAMILY_LAWS = {
    "parametric": (parametric_loss, parametric_constants),
    "farseer": (farseer.loss, theta_constants),
    "data_constrained": (data_constrained.loss, data_constrained_constants),
}


def loss_law(family: str, entry: dict) -> LossLaw:
    """The LossLaw of a family's fit.json entry; an unknown family is an error listing the known ones."""
    if family not in FAMILY_LAWS:
        raise ValueError(f"no allocation for law family {family!r} (known: {', '.join(FAMILY_LAWS)})")
    loss, constants = FAMILY_LAWS[family]
    point, draws = constants(entry)
    closed_form = _parametric_optimum_6nd(tuple(map(float, point))) if family == "parametric" else None
    return LossLaw(family, loss, point, draws, closed_form)


def as_loss_law(law) -> LossLaw:
    """A LossLaw as it is, or a parametric fit.json entry (a dict with E, A, B, alpha, beta) as one."""
    return law if isinstance(law, LossLaw) else loss_law("parametric", law)


# Where no closed form gives the 6nd optimum, it is searched for over this range of N (a demo's 1e2 to 1e14).
CENTRE_SEARCH_RANGE = (1e2, 1e14)
CENTRE_POINTS_PER_DECADE = 40


def optimum_6nd(law: LossLaw, flops: float) -> tuple[float, float]:
    """(N, D) minimising the point law at C = 6·N·D: the closed form where the family has one, else a log grid
    over CENTRE_SEARCH_RANGE; (nan, nan) where the minimum lies at an end of that range."""
    if law.optimum_6nd is not None:
        return law.optimum_6nd(flops)
    low, high = (math.log10(v) for v in CENTRE_SEARCH_RANGE)
    n_grid = np.logspace(low, high, int((high - low) * CENTRE_POINTS_PER_DECADE) + 1)
    n, d, _ = minimise_on_grid(n_grid, 6.0 * n_grid, flops, law.loss, law.point[None, :])
    return float(n[0]), float(d[0])


def minimise_on_grid(n_grid, cost, budget, loss, params):
    """(n_opt, d_opt, loss) per row of constants params (K, p) of loss(params, n, d): the best point of
    L(N, budget / c(N)) on the grid, refined by a parabola in log N through it and its neighbours; NaN where
    the best point is an end of the grid (no interior optimum there)."""
    params = np.atleast_2d(np.asarray(params, float))
    log_n = np.log(n_grid)
    tokens = budget / np.asarray(cost, float)[None, :]
    values = loss(params[:, None, :], n_grid[None, :], tokens)
    log_opt, at_end = refined_argmin(values, log_n)
    # c at the refined point, interpolated in log N between grid points
    log_cost = np.interp(log_opt, log_n, np.log(np.asarray(cost, float)))
    n_opt = np.exp(log_opt)
    d_opt = budget / np.exp(log_cost)
    l_opt = loss(params, n_opt, d_opt)
    return tuple(np.where(at_end, np.nan, v) for v in (n_opt, d_opt, l_opt))


def _costed_grid(n_centre, ladder, seq_len, cost_model, measured):
    """The search grid around n_centre and c(N) on it, sizes without a cost (no ladder-like shape) left out."""
    if not (np.isfinite(n_centre) and n_centre > 0):
        raise ValueError("the law has no 6nd optimum inside "
                         f"{CENTRE_SEARCH_RANGE[0]:.0e} … {CENTRE_SEARCH_RANGE[1]:.0e} parameters to search around")
    n_grid = search_grid(n_centre)
    cost = cost_per_token(n_grid, ladder, seq_len, cost_model, measured)
    keep = np.isfinite(cost) & (cost > 0)
    return n_grid[keep], cost[keep]


# The local allocation exponent a = dlog N_opt / dlog C is measured over budgets this many decades either side.
EXPONENT_HALF_SPAN_DEX = 0.05


def _optimum_and_exponent(n_grid, cost, budget, law_loss, params):
    """(n_opt, d_opt, loss, a) per row of params at budget; a = dlog N_opt / dlog budget over budgets
    EXPONENT_HALF_SPAN_DEX either side."""
    step = 10 ** EXPONENT_HALF_SPAN_DEX
    n_low = minimise_on_grid(n_grid, cost, budget / step, law_loss, params)[0]
    n_opt, d_opt, loss = minimise_on_grid(n_grid, cost, budget, law_loss, params)
    n_high = minimise_on_grid(n_grid, cost, budget * step, law_loss, params)[0]
    return n_opt, d_opt, loss, (np.log(n_high) - np.log(n_low)) / (2 * math.log(step))


def _or_none(value: float) -> float | None:
    """A value, or None where it is not finite (no interior optimum: null in fit.json)."""
    return value if math.isfinite(value) else None


def allocate(law, budget: float, ladder: dict, seq_len: int, cost_model: str,
             measured: MeasuredCost | None = None, n_centre: float | None = None) -> dict:
    """{budget, n_opt, d_opt, loss, a (the local exponent dlog N_opt / dlog budget) and their intervals from the
    law's bootstrap draws (None without)} of a LossLaw (or a parametric fit.json entry) at a budget in the cost
    model's currency (FLOPs, or device-seconds measured)."""
    law = as_loss_law(law)
    if n_centre is None:  # the 6nd optimum of a FLOPs budget (a seconds budget passes its own centre)
        n_centre = optimum_6nd(law, budget)[0]
    n_grid, cost = _costed_grid(n_centre, ladder, seq_len, cost_model, measured)
    n_opt, d_opt, loss, a = (float(v[0]) for v in _optimum_and_exponent(n_grid, cost, budget, law.loss, law.point))
    out = {"budget": float(budget), "n_opt": _or_none(n_opt), "d_opt": _or_none(d_opt), "loss": _or_none(loss),
           "n_opt_ci": None, "d_opt_ci": None, "loss_ci": None}
    if law.draws is not None:
        n, d, l, exponents = _optimum_and_exponent(n_grid, cost, budget, law.loss, law.draws)
        out.update(n_opt_ci=interval(n), d_opt_ci=interval(d), loss_ci=interval(l))
    out["a"] = _or_none(a)
    out["a_ci"] = interval(exponents) if law.draws is not None else None
    return out


def measured_seconds(law: LossLaw, flops: float, ladder: dict, seq_len: int, measured: MeasuredCost):
    """(seconds, n6): the device-seconds the 6nd optimum at a FLOPs budget takes under a measured law, and its N."""
    n6, d6 = optimum_6nd(law, flops)
    return cost_at(n6, ladder, seq_len, MEASURED, measured) * d6, n6


def allocation_by_cost_model(law, budgets, ladder: dict, seq_len: int,
                             measured: dict[str, MeasuredCost] | None = None) -> dict:
    """fit.json's allocations of one law (a LossLaw, or a parametric entry): {cost model: [allocation per budget]}.

    A FLOPs budget C is counted in each FLOPs definition. The measured model (one per device with a law)
    is given the device-seconds the 6nd optimum at C takes on that device: the same money as the paper's
    answer, spent where the measured cost says; its entries carry `flops` (C) and `budget` (seconds)."""
    law = as_loss_law(law)
    out = {definition: [{"flops": float(c), **allocate(law, float(c), ladder, seq_len, definition)}
                        for c in budgets] for definition in FLOPS_DEFINITIONS}
    for device, device_law in sorted((measured or {}).items()):
        rows = []
        for c in budgets:
            seconds, n6 = measured_seconds(law, float(c), ladder, seq_len, device_law)
            rows.append({"flops": float(c), **allocate(law, seconds, ladder, seq_len, MEASURED, device_law,
                                                       n_centre=n6), "unit": f"{device}-seconds"})
        out[f"{MEASURED}:{device}"] = rows
    return out


def _family_allocations(family: str, entry: dict, budgets, ladder: dict, seq_len: int) -> dict:
    """One family's {cost model: rows}, or {"skipped": why} where its law predicts nothing or has no shapes."""
    if not entry:
        return {"skipped": f"no {family} fit"}
    if entry.get("error") or entry.get("identified") is False:
        why = entry.get("error") or "; ".join(entry.get("reasons") or ["not identified"])
        return {"skipped": f"the {family} law predicts nothing: {why}"}
    if not ladder:
        return {"skipped": "no train.ladder: no model shapes to count costs on"}
    try:
        return allocation_by_cost_model(loss_law(family, entry), budgets, ladder, seq_len)
    except ValueError as error:  # no shape of the ladder's family near the optimum, or no 6nd optimum
        return {"skipped": f"no allocation under the cost models: {error}"}


def with_cost_allocations(fit: dict, ladder: dict, seq_len: int) -> dict:
    """fit.json (fit_all's dict) with, per objective, the allocation of each (N, D) law family at its
    fit.predict_flops budgets under each FLOPs definition, with the local exponent a: the parametric law's as
    `allocation_by_cost_model`, every other family's (FAMILY_LAWS, where the objective has a fit of it) in
    `allocation_by_family` {family: ...}. A law that predicts nothing (not identified, or failed) gets
    {"skipped": why} instead: the trust rules hold under every cost model.

    Nothing measured on the clock goes in: fit.json is identical between two runs from scratch, wall times
    are not (the measured laws are measured_cost.json's, `plmscale predict --cost-model measured` reads them)."""
    budgets = (fit.get("settings") or {}).get("predict_flops") or {}
    for objective, entry in fit["objectives"].items():
        targets = budgets.get(objective, [])
        entry["allocation_by_cost_model"] = _family_allocations("parametric", entry.get("parametric") or {},
                                                                targets, ladder, seq_len)
        others = {family: _family_allocations(family, entry[family], targets, ladder, seq_len)
                  for family in FAMILY_LAWS if family != "parametric" and family in entry}
        if others:
            entry["allocation_by_family"] = others
    return fit


def family_entry(fit_data: dict, objective: str, family: str) -> tuple[dict, object]:
    """(the family's law entry, its stored allocations or None) of one objective in fit.json."""
    entry = (fit_data.get("objectives") or {}).get(objective) or {}
    stored = (entry.get("allocation_by_cost_model") if family == "parametric"
              else (entry.get("allocation_by_family") or {}).get(family))
    return entry.get(family) or {}, stored


def stored_or_computed(fit_data: dict, objective: str, flops: float | None, cost_model: str, ladder: dict | None = None,
                       seq_len: int | None = None, seconds: float | None = None, where: str = "fit.json",
                       measured: MeasuredCost | None = None, family: str = "parametric") -> dict:
    """One allocation of a law family of fit.json for `plmscale predict --cost-model`: the row fit.json stores
    for this cost model at these FLOPs, else computed (needs the ladder and seq_len). cost_model is a FLOPs
    definition or "measured:DEVICE", whose law is `measured` (costs.read_measured_cost: fit.json holds none);
    a measured budget is `seconds` if given, else the seconds the 6nd optimum at `flops` takes. A law that
    predicts nothing is an error saying why."""
    law, stored = family_entry(fit_data, objective, family)
    if not law or law.get("error") or law.get("identified") is False:
        why = law.get("error") or "; ".join(law.get("reasons") or [f"no {family} law"])
        raise PlmscaleError(f"{where}: objectives.{objective}.{family} predicts nothing ({why}); no allocation "
                            "under any cost model")
    is_measured = cost_model.startswith(f"{MEASURED}:")
    # fit.json stores FLOPs allocations only (an older file's measured rows came from another machine's clock)
    stored = None if is_measured or not isinstance(stored, dict) else stored.get(cost_model)
    if seconds is None and isinstance(stored, list):
        for row in stored:
            if flops is not None and math.isclose(row["flops"], flops, rel_tol=1e-9):
                return row
    if not ladder or not seq_len:
        what = ("the measured cost model is computed from the measured law, never stored" if is_measured
                else f"{where} stores no {cost_model} allocation of the {family} law for {objective} at this budget")
        raise PlmscaleError(f"{what}; give --config CONFIG (its train.ladder and train.seq_len define the shapes "
                            "to count on)")
    law = loss_law(family, law)
    if not is_measured:
        return {"flops": flops, **allocate(law, flops, ladder, seq_len, cost_model)}
    device = cost_model.split(":", 1)[1]
    if measured is None or measured.device != device:
        raise ValueError(f"cost model {cost_model!r} needs that device's MeasuredCost (costs.read_measured_cost)")
    if seconds is None:
        seconds, n_centre = measured_seconds(law, flops, ladder, seq_len, measured)
    elif flops:
        n_centre = optimum_6nd(law, flops)[0]
    else:  # a seconds budget alone: centre on the 6nd optimum at the FLOPs those seconds buy
        n_centre = optimum_6nd(law, seconds / measured.c1)[0]
    return {"flops": flops, **allocate(law, seconds, ladder, seq_len, MEASURED, measured, n_centre=n_centre),
            "unit": f"{device}-seconds"}


def exponent_and_optimum(law, flops: float, ladder: dict, seq_len: int, cost_model: str,
                         measured: MeasuredCost | None = None) -> dict:
    """At a FLOPs budget (for measured: the seconds the 6nd optimum takes), N_opt and the local exponent
    a = dlog N_opt / dlog budget under a cost model, each with its bootstrap interval (draws of the law)."""
    law = as_loss_law(law)
    if cost_model == MEASURED:
        budget, n6 = measured_seconds(law, flops, ladder, seq_len, measured)
    else:
        budget, n6 = flops, optimum_6nd(law, flops)[0]
    row = allocate(law, budget, ladder, seq_len, cost_model, measured, n_centre=n6)
    return {"cost_model": cost_model, "flops": float(flops), "budget": float(budget), "a": row["a"],
            "n_opt": row["n_opt"], "a_ci": row["a_ci"], "n_opt_ci": row["n_opt_ci"]}
