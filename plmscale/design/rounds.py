"""Adaptive IsoFLOP rounds: after a round of runs is trained and fitted, which runs come next, and why.

`next_round(runs, fit, settings, round_index, spent)` is a pure function of the runs table (runs.csv), the fit
of those runs (fit.json as a dict) and the settings: the same runs give the same decision (everything is
sorted; nothing reads the clock). The rules (issue 22 §1, docs/design.md):

1. a budget whose optimum is not bracketed (lowest loss at the grid's edge, vertex outside the sampled sizes,
   fewer than 3 sizes) gets the next size on its open side: the ladder's next rung, or beyond the ladder a new
   shape made by the ladder's own shape rule (grid.shapes.ladder_like_shape) one ladder step further, even
   outside the tokens-per-parameter window of the grid (down to `min_tokens_per_param`);
2. a bracketed budget whose vertex is uncertain (its curvature within the runs' scatter, or its vertex's 95%
   interval wider than `max_vertex_width` in ln N) gets a fourth size on the side its vertex leans to when it
   has only three, else replicates of the three points that decide it;
3. an objective whose budgets are all bracketed but whose exponent a has an interval wider than the target
   gets a new budget `budget_factor` above the top one (below the lowest when the study's FLOPs cannot pay
   for that), with `sizes_per_new_budget` sizes around the N_opt its law forecasts there;
4. stop when every fitted objective is identified with a's interval at most `target_a_width`, when
   `max_rounds` rounds were made, or when the study's FLOPs (`study_flops`) are spent.

A run is added only while the study's FLOPs allow it, and only if it is long enough (`min_tokens_per_param`) and
does not repeat the train split more than `max_epochs` times (on a corpus too small for the budgets the small
models win by repeating their data, and rule 1 would follow them into ever more repetition). A run that is not
added is listed under `skipped` with its reason, so nothing the rules wanted is dropped silently, and a round
that can add nothing says why in its stop reason.
"""

import math
import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from plmscale.design import information
from plmscale.grid import shapes
from plmscale.scaling.identify import curvature_significance
from plmscale.scaling.table import BUDGET_TOLERANCE_DEX, scratch_runs, validate_runs

Z_95 = 1.959964
SPAN_TOLERANCE = 1.01  # budgets are nominal; 16x written as 3.125e10..5e11 must count as 16x


@dataclass(frozen=True)
class AdaptiveSettings:
    """train.isoflop.adaptive (schemas/config.schema.yaml documents each key), plus what the rules need from
    the rest of the config: the ladder's shapes (and shapes earlier rounds derived), the sequence length and
    FLOPs definition that turn a budget into tokens, the fitted objectives, and the curvature test of
    fit.identify."""

    shapes: dict  # model name -> shape dict (ladder entries and shapes earlier rounds made)
    ladder: tuple  # the ladder's names, the rule's base for new shapes
    seq_len: int
    flops_definition: str
    objectives: tuple
    max_rounds: int = 3
    target_a_width: float = 0.25
    study_flops: float | None = None
    max_vertex_width: float = 1.0
    budget_factor: float = 2.0
    sizes_per_new_budget: int = 4
    min_tokens_per_param: float = 4.0
    max_epochs: float | None = None  # most passes over the train split an added run may make (None: no limit)
    train_tokens: float | None = None  # the train split's tokens (None: unknown, epochs not checked)
    min_curvature_t: float = 2.0
    min_bracketed_budgets: int = 2
    min_budget_span: float = 1.0
    extend_below: bool = True  # a new budget may go below the lowest one (cheap, but small models' own regime)
    pooled_residuals: bool = False
    study_gpu_hours: float | None = None
    gpu_hours_of: object = None  # run dict -> the GPU-hours its planned job requests (round_files builds it)  # fit.isoflop_bootstrap: residuals (a 3-size budget's vertex gets pooled noise)

    def flops_per_token(self, model: str) -> float:
        return shapes.flops_per_token(self.shapes[model], self.seq_len, self.flops_definition)

    def n_params(self, model: str) -> int:
        return shapes.n_params(self.shapes[model])


def isoflop_flops_spent(runs: pd.DataFrame) -> float:
    """FLOPs of the study's IsoFLOP runs (from scratch, with a budget): what the rounds' budget counts."""
    scratch = scratch_runs(validate_runs(runs))
    budgets = pd.to_numeric(scratch.get("budget"), errors="coerce") if "budget" in scratch else None
    if budgets is None:
        return 0.0
    return float(pd.to_numeric(scratch["flops"])[budgets.notna()].sum())


def fit_summary(fit: dict, objectives) -> dict:
    """Per fitted objective, what the rounds decide on: the IsoFLOP verdict, a and its interval, brackets."""
    out = {}
    for objective in sorted(objectives):
        iso = ((fit.get("objectives") or {}).get(objective) or {}).get("isoflop") or {}
        ci = iso.get("a_ci")
        out[objective] = {
            "identified": bool(iso.get("identified")),
            "a": iso.get("a"), "a_ci": ci,
            "a_width": (ci[1] - ci[0]) if ci else None,
            "bracketed_budgets": iso.get("bracketed_budgets"), "n_budgets": iso.get("n_budgets"),
            "budget_span": _span([o["budget"] for o in iso.get("optima") or [] if o.get("kept")]),
            "reasons": list(iso.get("reasons") or []),
        }
    return out


def next_round(runs: pd.DataFrame, fit: dict, settings: AdaptiveSettings, round_index: int, spent: float,
               spent_gpu_hours: float = 0.0) -> dict:
    """The decision of round `round_index` (1 = the first after the grid) from the runs so far and their fit.

    Returns {"round", "runs_added": [{objective, model, shape, n_params, budget, tokens, flops, replicate,
    why}], "skipped": [same, with the reason it was not added], "flops", "spent_before", "stop": reason or
    None, "fit": fit_summary}. `spent`: FLOPs of the study's IsoFLOP runs so far (isoflop_flops_spent);
    `spent_gpu_hours`: the GPU-hours their jobs requested (with study_gpu_hours)."""
    settings = dataclasses.replace(settings, shapes=dict(settings.shapes))  # new shapes join a copy
    summary = fit_summary(fit, settings.objectives)
    record = {"round": int(round_index), "runs_added": [], "skipped": [], "flops": 0.0,
              "spent_before": float(spent), "stop": None, "fit": summary}
    limits = _limits(settings, spent, spent_gpu_hours)
    if settings.study_gpu_hours is not None:
        record.update(gpu_hours=0.0, gpu_hours_spent_before=float(spent_gpu_hours))
    done = {o: objective_done(s, settings.target_a_width, settings.min_budget_span) for o, s in summary.items()}
    if all(done.values()):
        record["stop"] = (f"identified: every fitted objective's IsoFLOP fit is identified with a's 95% interval at "
                          f"most {settings.target_a_width:g} wide (" + "; ".join(
                              f"{o}: {summary[o]['a_width']:.3f}" for o in sorted(summary)) + ")"
                          + (f" over budgets spanning at least {settings.min_budget_span:g}x"
                             if settings.min_budget_span > 1 else ""))
        return record
    if round_index > settings.max_rounds:
        record["stop"] = f"max_rounds: {settings.max_rounds} round(s) made (train.isoflop.adaptive.max_rounds)"
        return record
    for limit in limits:
        if limit.left <= 0:
            record["stop"] = (f"study budget spent: {limit.spent:.4g} of {limit.limit:.4g} {limit.unit} "
                              f"(train.isoflop.adaptive.{limit.key})")
            return record
    # rule 3 weighs runs by the scarcest budget's unit: GPU-hours when the study is bounded in them
    ranking = limits[-1] if limits else _Limit("FLOPs", "study_flops", math.inf, spent, lambda run: run["flops"])
    wanted, refused = [], set()
    for objective in sorted(summary):
        if not done[objective]:
            wanted += _objective_actions(runs, fit, settings, objective, summary[objective], ranking)
    # Each wanted item lists alternative groups, best first (a new budget above the span, else below it); a group
    # is all or nothing (a new budget's sizes). The first alternative that is long enough and affordable is added.
    for alternatives in wanted:
        refusals = []
        for group in alternatives:
            short = [run for run in group if too_short(settings, run)]
            repeated = [run for run in group if too_repeated(settings, run)]
            dear = [limit for limit in limits if limit.cost_of(group) > limit.left]
            if short:
                refusals.append((group, lambda run: (
                    f"{run['tokens'] / run['n_params']:.3g} tokens per parameter, below "
                    f"train.isoflop.adaptive.min_tokens_per_param {settings.min_tokens_per_param:g} (too short a "
                    "run to be a point of the law)")))
                refused.add("short")
            elif repeated:
                refusals.append((group, lambda run: (
                    f"{run['tokens'] / settings.train_tokens:.3g} epochs of the train split's "
                    f"{settings.train_tokens:.4g} tokens, above train.isoflop.adaptive.max_epochs "
                    f"{settings.max_epochs:g} (the laws assume unique data)")))
                refused.add("repeated")
            elif dear:
                refusals.append((group, lambda run, group=group, limit=dear[0]: (
                    f"it costs {limit.cost_of(group):.4g} {limit.unit} and {max(limit.left, 0):.4g} of "
                    f"train.isoflop.adaptive.{limit.key} are left")))
                refused.add("dear")
            else:
                record["runs_added"] += group
                for limit in limits:
                    limit.left -= limit.cost_of(group)
                break
        else:
            record["skipped"] += [{**run, "why": f"{run['why']}; not added: {because(run)}"}
                                  for group, because in refusals for run in group]
    record["runs_added"] = _unique_points(record["runs_added"])
    record["flops"] = float(sum(run["flops"] for run in record["runs_added"]))
    if settings.study_gpu_hours is not None:
        record["gpu_hours"] = float(sum(settings.gpu_hours_of(run) for run in record["runs_added"]))
    if not record["runs_added"]:
        unfinished = ", ".join(o for o in sorted(done) if not done[o])
        record["stop"] = (_refusal_stop(record["skipped"], refused, settings) if record["skipped"] else
                          f"no run would help: the rules find nothing to add for {unfinished} "
                          "(see the fit's reasons)")
    return record


def _refusal_stop(skipped, refused, settings) -> str:
    """Why a round that wanted runs added none: the budget, or what the runs it wanted would have been."""
    if refused == {"dear"}:
        return "study budget spent: no run the rules want fits what is left"
    reasons = []
    if "repeated" in refused:
        epochs = [run["tokens"] / settings.train_tokens for run in skipped if too_repeated(settings, run)]
        reasons.append(f"would repeat the train split {min(epochs):.3g}-{max(epochs):.3g} times (more than "
                       f"train.isoflop.adaptive.max_epochs {settings.max_epochs:g}): the corpus is too small for the runs "
                       "the study needs next; add data (data.sources) or lower the budgets (train.isoflop.budgets)")
    if "short" in refused:
        reasons.append(f"are shorter than train.isoflop.adaptive.min_tokens_per_param {settings.min_tokens_per_param:g}")
    if "dear" in refused:
        reasons.append("do not fit the study's budget left")
    return "no run can be added: the runs the rules want " + "; or they ".join(reasons) + " (design.json: skipped)"


@dataclass
class _Limit:
    """One bound on the study's spending: FLOPs (study_flops) or the GPU-hours its jobs request."""
    unit: str
    key: str
    limit: float
    spent: float
    cost: object  # run dict -> cost in `unit`
    left: float = math.nan

    def __post_init__(self):
        self.left = self.limit - self.spent

    def cost_of(self, group) -> float:
        return float(sum(self.cost(run) for run in group))


def _limits(settings, spent, spent_gpu_hours):
    limits = []
    if settings.study_flops is not None:
        limits.append(_Limit("FLOPs", "study_flops", settings.study_flops, spent, lambda run: run["flops"]))
    if settings.study_gpu_hours is not None:
        limits.append(_Limit("GPU-hours", "study_gpu_hours", settings.study_gpu_hours, spent_gpu_hours,
                             settings.gpu_hours_of))
    return limits


# ---- the per-objective rules ----------------------------------------------------------------------------

def _objective_actions(runs, fit, settings, objective, summary, ranking):
    """What one unfinished objective wants: a list of items, each a list of alternative groups of runs (a single
    run is one group of one; a new budget is its sizes above the span, else below it)."""
    iso = ((fit.get("objectives") or {}).get(objective) or {}).get("isoflop") or {}
    table = _objective_table(runs, objective)
    if table.empty:
        return []
    optima = {float(o["budget"]): o for o in iso.get("optima") or []}
    significance = curvature_significance(table)
    short_of_brackets = (summary["bracketed_budgets"] or 0) < settings.min_bracketed_budgets
    # a 3-size budget's vertex is measured by the residuals other budgets pool (fit.isoflop_bootstrap: residuals)
    pooled = settings.pooled_residuals and any(len(points) > 3 for _, points in _budget_points(table))
    groups, bracket_fixes, measured = [], False, []
    for budget, points in _budget_points(table):
        optimum = _match_budget(optima, budget)
        runs_here, open_side = _bracket_actions(settings, objective, budget, points, optimum)
        if open_side:
            bracket_fixes = True
            groups += [[[run]] for run in runs_here]
            continue
        test = _match_budget(significance, budget)
        automatic, replicates = _vertex_actions(settings, objective, budget, points, optimum, test,
                                                short_of_brackets, pooled)
        groups += [[[run]] for run in automatic]
        if replicates:
            measured.append((budget, points, replicates))
    width = summary["a_width"]
    wide = width is None or width > settings.target_a_width
    if bracket_fixes or (summary["bracketed_budgets"] or 0) < 2:
        return groups
    if (summary["budget_span"] or 0) < settings.min_budget_span / SPAN_TOLERANCE:
        # a short span can give a narrow interval around a biased exponent: widen it before trusting a width
        new_budgets = _new_budget_groups(settings, objective, table, iso, width, span=summary["budget_span"])
        return groups + ([new_budgets] if new_budgets else [])
    if wide or not summary["identified"]:
        groups += _information_groups(settings, objective, table, iso, measured, summary, ranking)
    return groups


def _information_groups(settings, objective, table, iso, measured, summary, ranking):
    """Rule 3: the runs that narrow a's interval most per FLOP (design.information): replicates of a budget's
    deciding points, or a new budget above or below the span. Without a usable vertex model (fewer than two
    budgets with a finite vertex variance, or none the fit's interval can be scaled to) a new budget above the
    span, else below it, as a fixed rule."""
    width = summary["a_width"]
    target = settings.target_a_width
    if width is not None and width <= target:  # identified-wide is not the problem: not identified is
        target = 0.7 * width
    variances = _vertex_variances(measured)
    vertices = [information.Vertex(budget, variances[budget], int(replicates[0]["replicate"]) - 1)
                for budget, _, replicates in measured if math.isfinite(variances[budget])]
    new_budgets = _new_budget_groups(settings, objective, table, iso, width)
    model_width = information.width(vertices)
    if len(vertices) < 2 or not math.isfinite(model_width) or model_width <= 0 or width is None:
        return [new_budgets] if new_budgets else []
    actions, groups_of = [], {}
    for budget, _, replicates in measured:
        if math.isfinite(variances[budget]):
            action = information.Action("replicate", budget, ranking.cost_of(replicates))
            actions.append(action)
            groups_of[action] = replicates
    for group in new_budgets:
        action = information.Action("new_budget", group[0]["budget"], ranking.cost_of(group),
                                    information.typical_variance(vertices))
        actions.append(action)
        groups_of[action] = group
    chosen, steps = information.choose(vertices, actions, width, target, ranking.left)
    shown = f"{width:.3f} wide" + ("" if summary["identified"] else ", not identified")
    items = []
    for action, step in zip(chosen, steps):
        because = (f"a's 95% interval is {shown} (aim {target:.3g}): the most certainty per {ranking.unit[:-1]} "
                   f"(predicted width {step['predicted_width']:.3f} after it)")
        items.append([[{**run, "why": f"{run['why']}; {because}"} for run in groups_of[action]]])
    if not chosen:  # nothing the model rates affordable and useful: the fixed rule, so the study says why
        return [new_budgets] if new_budgets else []
    return items


def _vertex_variances(measured):
    """Each budget's vertex variance in (ln N)^2: the delta method on its least-squares parabola, with the
    residual variance pooled over the budgets (one budget's one or two residual degrees of freedom make its own
    estimate too noisy to rank budgets by)."""
    fits = {budget: _parabola(points) for budget, points, _ in measured}
    dof = sum(max(fit[3], 0) for fit in fits.values())
    pooled = sum(fit[2] for fit in fits.values()) / dof if dof > 0 else math.nan
    if not pooled > 0:  # no residual to go by: no budget's vertex is measured
        return {budget: math.inf for budget in fits}
    return {budget: _vertex_variance(X, coef, pooled) for budget, (X, coef, _, _) in fits.items()}


def objective_done(summary: dict, target_a_width: float, min_budget_span: float = 1.0) -> bool:
    """One objective's entry of fit_summary meets the stop rule: identified, a's interval at most
    target_a_width wide, over bracketed budgets spanning at least min_budget_span."""
    return bool(summary["identified"] and summary["a_width"] is not None and summary["a_width"] <= target_a_width
                and (summary["budget_span"] or 0) >= min_budget_span / SPAN_TOLERANCE)


def _span(budgets):
    return float(max(budgets) / min(budgets)) if budgets else None


def _objective_table(runs, objective):
    scratch = scratch_runs(validate_runs(runs))
    table = scratch[scratch["objective"] == objective]
    if "budget" not in table:
        return table.iloc[0:0]
    budget = pd.to_numeric(table["budget"], errors="coerce")
    return table[budget.notna()].assign(budget=budget[budget.notna()]).sort_values(["budget", "n_params", "run_id"])


def _budget_points(table):
    """(budget, points) per budget, smallest first; points: one row per size (mean loss over replicates),
    with the model name, the number of runs and the run ids, smallest size first."""
    for budget, group in table.groupby("budget", sort=True):
        points = (group.groupby("n_params", sort=True)
                  .agg(loss=("loss", "mean"), runs=("run_id", "count"),
                       model=("model", "first") if "model" in group else ("run_id", "first"))
                  .reset_index())
        yield float(budget), points


def _match_budget(by_budget, budget):
    for key in sorted(by_budget):
        if abs(math.log10(float(key) / budget)) <= BUDGET_TOLERANCE_DEX:
            return by_budget[key]
    return None


def _bracket_actions(settings, objective, budget, points, optimum):
    """(runs, True) when the budget's optimum is not bracketed: the next size on its open side (both sides
    with fewer than 3 sizes); ([], False) when it is."""
    sizes = points["n_params"].tolist()
    lowest = int(np.argmin(points["loss"].to_numpy()))
    where = f"budget {budget:.4g}"
    if len(sizes) < 3:
        why = f"{where}: only {len(sizes)} size(s), a parabola needs 3"
        return [run for run in (_open_side_run(settings, objective, budget, sizes, +1, why),
                                _open_side_run(settings, objective, budget, sizes, -1, why)) if run], True
    if lowest == len(sizes) - 1:
        side, why = +1, f"{where}: lowest loss at the largest size ({sizes[-1]:.4g}): the optimum is not bracketed"
    elif lowest == 0:
        side, why = -1, f"{where}: lowest loss at the smallest size ({sizes[0]:.4g}): the optimum is not bracketed"
    elif optimum is not None and not optimum.get("kept") and optimum.get("n_opt") and \
            optimum.get("curvature") is not None and optimum["curvature"] > 0:
        side = +1 if optimum["n_opt"] > sizes[-1] else -1
        why = (f"{where}: parabola vertex {optimum['n_opt']:.4g} outside the sampled sizes "
               f"({sizes[0]:.4g} … {sizes[-1]:.4g})")
    else:
        return [], False
    run = _open_side_run(settings, objective, budget, sizes, side, why)
    return ([run] if run else []), True


def _open_side_run(settings, objective, budget, sizes, side, why):
    model = _next_size(settings, sizes[-1] if side > 0 else sizes[0], side)
    if model is None:
        return None
    what = "larger" if side > 0 else "smaller"
    return _run(settings, objective, model, budget, 1, f"{why}; next size on the open ({what}) side")


def _vertex_actions(settings, objective, budget, points, optimum, test, short_of_brackets, pooled):
    """(automatic runs, replicate candidates) for a bracketed budget. Automatic: a fourth size when three leave
    no residual and no other budget's residuals measure its vertex (`pooled`), replicates when the parabola has
    no minimum, when its vertex is wider than max_vertex_width, or when its curvature is within the scatter
    while the objective lacks bracketed budgets. Otherwise its deciding points' replicates are a candidate that
    rule 3 weighs by cost (information.choose)."""
    sizes = points["n_params"].tolist()
    where = f"budget {budget:.4g}"
    deciding = points.nsmallest(3, "loss").sort_values("n_params")

    def replicate(reason):
        return [_run(settings, objective, str(row.model), budget, int(row.runs) + 1,
                     f"{where}: {reason}; a replicate of a point that decides the vertex")
                for row in deciding.itertuples()]

    if optimum is None or not optimum.get("kept"):  # bracketed by its runs, yet the parabola has no minimum
        return replicate("lowest loss inside the sizes but the parabola has no minimum there"), []
    if (test is None or test.get("t") is None) and pooled:
        return [], replicate("3 sizes, its vertex judged by the residuals the other budgets pool")
    if test is None or test.get("t") is None:  # three sizes: no residual, so nothing measures the vertex
        side = +1 if math.log(optimum["n_opt"]) > math.log(sizes[1]) else -1
        model = _next_size(settings, sizes[-1] if side > 0 else sizes[0], side)
        why = f"{where}: {len(sizes)} sizes leave no residual to judge the vertex by; a size on its side"
        return ([_run(settings, objective, model, budget, 1, why)] if model else []), []
    width = _vertex_width(points, optimum)
    if width > settings.max_vertex_width:
        return replicate(f"vertex interval {width:.2f} wide in ln N (limit {settings.max_vertex_width:g})"), []
    if test["t"] < settings.min_curvature_t and short_of_brackets:
        return replicate(f"curvature t = {test['t']:.2f} < {settings.min_curvature_t:g} and the objective has too "
                         "few bracketed budgets"), []
    return [], replicate(f"vertex interval {width:.2f} wide in ln N")


def _vertex_width(points, optimum):
    """95% interval width of the budget's vertex in ln N (delta method on the least-squares parabola)."""
    X, coef, residual, dof = _parabola(points)
    if dof <= 0:
        return math.inf
    return 2 * Z_95 * math.sqrt(_vertex_variance(X, coef, residual / dof))


def _parabola(points):
    """(X, coefficients, residual sum of squares, residual degrees of freedom) of the least-squares parabola
    of the budget's losses in centred ln N."""
    x = np.log(points["n_params"].to_numpy(float))
    x = x - x.mean()
    y = points["loss"].to_numpy(float)
    X = np.stack([np.ones_like(x), x, x * x], 1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return X, coef, float(((y - X @ coef) ** 2).sum()), len(x) - 3


def _vertex_variance(X, coef, residual_variance) -> float:
    """Var(vertex) in (ln N)^2 of a parabola (delta method; vertex = -b / (2c)); inf where it has no minimum."""
    if coef[2] <= 0:
        return math.inf
    gradient = np.array([0.0, -1 / (2 * coef[2]), coef[1] / (2 * coef[2] ** 2)])
    return max(float(residual_variance * gradient @ np.linalg.inv(X.T @ X) @ gradient), 0.0)


def _new_budget_groups(settings, objective, table, iso, width, span=None):
    """New budgets that extend the span by budget_factor, above the top budget first, then below the lowest
    (same span for budget_factor² less compute, for when the top one does not fit the study's FLOPs); each with
    its sizes around the forecast N_opt there."""
    budgets = sorted(table["budget"].unique())
    shown = "no interval" if width is None else f"{width:.3f} wide"
    candidates = [(budgets[-1] * settings.budget_factor, "above the top budget")]
    if settings.extend_below:
        candidates.append((budgets[0] / settings.budget_factor, "below the lowest budget"))
    groups = []
    for budget, where in candidates:
        n_opt = _forecast_n_opt(iso, table, budget)
        models = _sizes_around(settings, n_opt, budget)
        if len(models) < 3:
            continue
        problem = (f"a's 95% interval is {shown} (target {settings.target_a_width:g})" if span is None else
                   f"the budgets span {span:.3g}x, less than train.isoflop.adaptive.min_budget_span "
                   f"{settings.min_budget_span:g}x")
        why = (f"{problem}: a new budget {budget:.4g} {where} extends the span; sizes around its forecast N_opt "
               f"{n_opt:.4g}")
        groups.append([_run(settings, objective, model, budget, 1, why) for model in models])
    return groups


def _forecast_n_opt(iso, table, budget):
    if iso.get("k_n") and iso.get("a"):
        return float(iso["k_n"]) * budget ** float(iso["a"])
    # no law: the nearest budget's best size, moved by C^0.5
    budgets = np.array(sorted(table["budget"].unique()))
    nearest = budgets[np.argmin(np.abs(np.log(budgets / budget)))]
    here = table[table["budget"] == nearest]
    best = float(here.loc[here["loss"].idxmin(), "n_params"])
    return best * math.sqrt(budget / nearest)


def _sizes_around(settings, n_opt, budget):
    """settings.sizes_per_new_budget models nearest n_opt in ln N (ladder rungs, extended by the shape rule
    where the ladder ends), each long enough (min_tokens_per_param)."""
    pool = {}
    for name in settings.shapes:
        pool[settings.n_params(name)] = name
    # extend the pool by derived shapes until it reaches two steps past n_opt either way
    largest, smallest = max(pool), min(pool)
    while largest < n_opt * _ladder_step(settings) ** 2:
        name = _derived(settings, largest * _ladder_step(settings))
        if name is None or settings.n_params(name) <= largest:
            break
        largest = settings.n_params(name)
        pool[largest] = name
    while smallest > n_opt / _ladder_step(settings) ** 2:
        name = _derived(settings, smallest / _ladder_step(settings))
        if name is None or settings.n_params(name) >= smallest:
            break
        smallest = settings.n_params(name)
        pool[smallest] = name
    usable = [n for n in sorted(pool) if budget / settings.flops_per_token(pool[n]) / n >= settings.min_tokens_per_param]
    chosen = sorted(usable, key=lambda n: (abs(math.log(n / n_opt)), n))[:settings.sizes_per_new_budget]
    return [pool[n] for n in sorted(chosen)]


# ---- sizes and shapes -------------------------------------------------------------------------------------

def _ladder_step(settings):
    """The ladder's size ratio between neighbouring rungs (geometric mean); 2 for a one-rung ladder."""
    sizes = sorted(settings.n_params(name) for name in settings.ladder)
    if len(sizes) < 2:
        return 2.0
    return (sizes[-1] / sizes[0]) ** (1 / (len(sizes) - 1))


def _next_size(settings, n, side):
    """The known size next to n on `side` (+1 larger, -1 smaller): a ladder rung or a shape earlier rounds
    made; beyond them a new shape one ladder step away, from the ladder's shape rule."""
    known = sorted({settings.n_params(name): name for name in sorted(settings.shapes)}.items())
    beyond = [(m, name) for m, name in known if (m > n * 1.02 if side > 0 else m < n / 1.02)]
    if beyond:
        return beyond[0][1] if side > 0 else beyond[-1][1]
    step = _ladder_step(settings)
    return _derived(settings, n * step if side > 0 else n / step)


def derived_name(shape: dict) -> str:
    """A model name for a shape the rounds made: its dimensions (never a ladder name such as n25k)."""
    return f"L{shape['layers']}d{shape['d_model']}h{shape['heads']}f{shape['ffn_dim']}"


def _derived(settings, target_n):
    ladder = {name: settings.shapes[name] for name in settings.ladder}
    try:
        shape = shapes.ladder_like_shape(target_n, ladder)
    except ValueError:
        return None
    name = derived_name(shape)
    settings.shapes.setdefault(name, shape)  # known to the rest of this decision (the dict is the caller's copy)
    return name


def _run(settings, objective, model, budget, replicate, why):
    tokens = round(budget / settings.flops_per_token(model))
    return {"objective": objective, "model": model, "shape": dict(settings.shapes[model]),
            "n_params": settings.n_params(model), "budget": float(budget), "tokens": int(tokens),
            "flops": float(tokens * settings.flops_per_token(model)), "replicate": int(replicate), "why": why}


def _unique_points(added):
    """Two rules asking for the same point in one round: keep the first (the order is deterministic)."""
    seen, out = set(), []
    for run in added:
        key = (run["objective"], run["model"], run["budget"], run["replicate"])
        if key not in seen:
            seen.add(key)
            out.append(run)
    return out


def too_short(settings, run) -> bool:
    return run["tokens"] / run["n_params"] < settings.min_tokens_per_param


def too_repeated(settings, run) -> bool:
    """The run would pass over the train split more than max_epochs times (unknown split: never)."""
    return (settings.max_epochs is not None and bool(settings.train_tokens)
            and run["tokens"] / settings.train_tokens > settings.max_epochs)
