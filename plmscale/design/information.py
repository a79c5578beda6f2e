"""Which runs buy the most certainty about the exponent a per FLOP (the adaptive rounds' rule 3).

The IsoFLOP exponent a is the slope of ln N_opt against ln C over the budgets' vertices, and each vertex is known
to within its own variance (the delta method on its parabola, rounds._vertex_width). For a weighted
least-squares slope, Var(a) = 1 / sum_b w_b (x_b - xbar_w)^2 with x_b = ln C_b and w_b = 1 / var_b. Two kinds of
run lower it: replicates of the points that decide a budget's vertex (its variance falls as 1 / replicates),
and a new budget (a new x, with the variance a typical budget has). They cost very different FLOPs: a replicate
at the lowest budget of the demo costs a sixteenth of one at its top budget. `choose` takes the largest drop in
Var(a) per FLOP, one action at a time, until the predicted interval reaches the target or the FLOPs run out.

The model is a guide, not the fit: it ignores the bootstrap's other terms, so its width is scaled to the fit's
own interval (`calibration`) before it is compared with the target. Pure functions; no Snakemake, no clock.
"""

import math
from dataclasses import dataclass, replace

import numpy as np

Z_95 = 1.959964
# A round's greedy path stops at the first action worth less than this share of the first one's drop in Var(a)
# per FLOP: the model only ranks actions, and the next round's fit measures what the cheap ones bought before
# the dear ones are paid for.
VALUE_CUT = 0.25


@dataclass(frozen=True)
class Vertex:
    """One budget's vertex in the model: ln C, the vertex's variance in (ln N)^2, replicates of its points."""

    budget: float
    variance: float
    replicates: int = 1


@dataclass(frozen=True)
class Action:
    """A candidate: replicate a budget's deciding points ("replicate"), or add a budget ("new_budget")."""

    kind: str
    budget: float
    cost: float
    variance: float = 0.0  # a new budget's expected vertex variance (unused for a replicate)


def slope_variance(vertices) -> float:
    """Var(a) of the weighted least-squares slope of ln N_opt on ln C; inf with fewer than two budgets."""
    if len(vertices) < 2:
        return math.inf
    x = np.log([v.budget for v in vertices])
    w = 1.0 / np.array([v.variance for v in vertices])
    center = float((w * x).sum() / w.sum())
    spread = float((w * (x - center) ** 2).sum())
    return math.inf if spread <= 0 else 1.0 / spread


def width(vertices, calibration: float = 1.0) -> float:
    """The predicted 95% interval width of a."""
    return 2 * Z_95 * math.sqrt(slope_variance(vertices)) * calibration


def calibration(vertices, fitted_width) -> float:
    """The factor that maps the model's width onto the fit's own interval width (1 when either is unknown)."""
    model = width(vertices)
    if fitted_width is None or not math.isfinite(model) or model <= 0 or not math.isfinite(fitted_width):
        return 1.0
    return float(fitted_width) / model


def apply(vertices, action):
    """The vertices after an action: a replicate round shrinks that budget's variance by r / (r + 1)."""
    if action.kind == "new_budget":
        return sorted([*vertices, Vertex(action.budget, action.variance, 1)], key=lambda v: v.budget)
    out = []
    for v in vertices:
        if math.isclose(v.budget, action.budget, rel_tol=1e-9):
            v = replace(v, variance=v.variance * v.replicates / (v.replicates + 1), replicates=v.replicates + 1)
        out.append(v)
    return out


def typical_variance(vertices) -> float:
    """A new budget's expected vertex variance: the median of the budgets measured so far."""
    return float(np.median([v.variance for v in vertices]))


def choose(vertices, actions, fitted_width, target_width, flops_left=math.inf):
    """The actions to take: the cheaper of (a) the greedy path, the action with the largest drop in Var(a) per
    FLOP, then the next, until the predicted width is at most target_width, nothing affordable helps, or the
    next action is worth less than VALUE_CUT of the first per FLOP, and
    (b) the cheapest single action that reaches the target alone (so that cheap steps which would still need
    the expensive one after them are not bought first). Each action is taken at most once.

    Returns (chosen, steps): chosen actions in order; steps one dict per action with the predicted width after
    it and its drop in Var(a) per FLOP, for the decision's record."""
    scale = calibration(vertices, fitted_width)
    if width(vertices, scale) <= target_width:
        return [], []
    path = _greedy_path(vertices, actions, scale, target_width, flops_left)
    reached = bool(path) and path[-1]["predicted_width"] <= target_width
    alone = [step for step in (_steps(vertices, [action], scale)[0] for action in actions
                                if 0 < action.cost <= flops_left)
             if step["predicted_width"] <= target_width]
    if alone:
        cheapest = min(alone, key=lambda step: (step["cost"], step["budget"]))
        if not reached or cheapest["cost"] <= sum(step["cost"] for step in path):
            return [cheapest["action"]], [_public(cheapest)]
    return [step["action"] for step in path], [_public(step) for step in path]


def _greedy_path(vertices, actions, scale, target_width, flops_left):
    state, pending, left, path = list(vertices), list(actions), flops_left, []
    while pending and width(state, scale) > target_width:
        now = slope_variance(state)
        scored = []
        for index, action in enumerate(pending):
            if 0 < action.cost <= left:
                gain = now - slope_variance(apply(state, action))
                if gain > 0:
                    # ties (equal gain per FLOP) go to the cheaper action, then the lower budget: deterministic
                    scored.append((-gain / action.cost, action.cost, action.budget, index))
        if not scored:
            break
        best = min(scored)
        if path and -best[0] < VALUE_CUT * path[0]["gain_per_flop"]:
            break  # what is left buys less than VALUE_CUT of the first step's certainty per FLOP: refit first
        action = pending.pop(best[3])
        step = _steps(state, [action], scale)[0]
        state = apply(state, action)
        left -= action.cost
        path.append(step)
    return path


def _steps(vertices, actions, scale):
    out, state = [], list(vertices)
    for action in actions:
        before = slope_variance(state)
        state = apply(state, action)
        out.append({"action": action, "kind": action.kind, "budget": action.budget, "cost": action.cost,
                    "predicted_width": width(state, scale),
                    "gain_per_flop": (before - slope_variance(state)) / action.cost})
    return out


def _public(step):
    return {key: value for key, value in step.items() if key != "action"}
