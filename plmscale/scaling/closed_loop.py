"""Closed loop: train the model the fit forecasts as compute-optimal at a held-out budget, then score it.

A scaling law earns trust by predicting a run it has not seen. For each objective and each multiple m of
config `fit.closed_loop.multiples`, C = m × the top budget of the objective's IsoFLOP design:
  1. `plan_closed_loop` takes N_opt(C) from the first *identified* method of `fit.closed_loop.methods`,
     sizes a shape of the ladder's family to it (grid.shapes.ladder_like_shape), gives it D = C / FLOPs
     per token, and builds its run spec exactly as the grid builds a run (recipe lr and batch, seed, resources).
     Without an identified method there is no forecast to test: the plan says so and nothing is trained.
     With `fit.closed_loop.layers` the same N_opt and D are planned at each listed depth (one seed for all);
     one listed depth sets the depth, two or more are a depth search.
  2. The workflow trains that spec (results/closed_loop/{objective}_x{m}/, or _x{m}_L{layers}/ per depth).
  3. `score_closed_loop` compares the observed final validation loss with every method's forecast and its
     95% bootstrap interval, identified or not (marked), and states the error in %, whether the
     observation lies inside the interval and whether it is within 2% of the forecast; of a depth search,
     the run with the lowest loss is marked `best_of_depths`.

Where fit.json selected a law family other than the parametric law (fit.json's selected_law: Farseer, or the
data-constrained law), that family takes the parametric law's place in sizing the run (the `parametric` entry
of fit.closed_loop.methods stands for the selected (N, D) law; the plan's `method` names the family), and every
record scores its forecast beside the three methods, under its own name, with `selected_law` saying which.
With the parametric law selected (or none) the records are as they were.

The parametric law L(N, D) is evaluated at the trained N and D (so is a selected family's). The IsoFLOP and
envelope laws only know the compute-optimal loss L_opt(C), which is what they forecast here: a fair test when the
run was sized by the same method (its N is that law's N_opt up to shape rounding); each record's loss_basis says
which it is.
"""

import math
from pathlib import Path


from plmscale.config import all_budgets, objective_budgets
from plmscale.errors import PlmscaleError
from plmscale.grid.spec import MIXED
from plmscale.scaling.fitfile import METHODS, FitFile, ParametricLaw, parse_fit
from plmscale.scaling.results import write_json
from plmscale.scaling.selected_law import differs_from_parametric, selected_law
from plmscale.scaling.table import DEFAULT_LOSS_COLUMN, final_loss

RECORD_VERSION = 1
WITHIN_FRACTION = 0.02  # "within 2% of the forecast loss" (issue 8's bar; stated, never tuned)
LOSS_BASIS = {
    "parametric": "L(N, D) at the trained N and D",
    "isoflop": "compute-optimal loss L_opt(C) at the law's own N_opt (the IsoFLOP law has no L(N, D))",
    "envelope": "compute-optimal loss L_opt(C) of the lower envelope (no L(N, D))",
}
SELECTED_LOSS_BASIS = "L(N, D) of the selected law family at the trained N and D"


# ---- names -------------------------------------------------------------------------------------------

def multiple_label(multiple: float) -> str:
    """3 -> "3", 10.0 -> "10", 2.5 -> "2.5": the x{label} of a closed-loop run's id and directory."""
    return f"{float(multiple):g}"


def run_label(multiple: float, layers: int | None = None) -> str:
    """(3, None) -> "3", (3, 3) -> "3_L3": the x{label} of a closed-loop run's id, directory and record."""
    return multiple_label(multiple) + (f"_L{int(layers)}" if layers else "")


def closed_loop_run_id(objective: str, multiple: float, layers: int | None = None) -> str:
    return f"fcl_{objective}_x{run_label(multiple, layers)}"


def closed_loop_jobs(config: dict) -> list[tuple[str, float, int | None]]:
    """(objective, multiple, layers) of every closed-loop run the config asks for; none when it is off.
    layers is None (the ladder's depth at N_opt) unless fit.closed_loop.layers lists depths: then one job
    per depth.

    It needs the study's own shards, so a fit of released curves only (fit.use_own_runs false) has none.
    """
    settings = config["fit"]["closed_loop"]
    if not settings["multiples"] or not config["fit"]["use_own_runs"]:
        return []
    if not all_budgets(config["train"]["isoflop"]):
        raise PlmscaleError("config: fit.closed_loop.multiples scale the top IsoFLOP budget, but "
                            "train.isoflop.budgets is empty; add budgets or set fit.closed_loop.multiples: []")
    # Mixed runs are compared with single-objective ones (scaling/mixed.py), not fitted: no loop to close.
    objectives = settings["objectives"] or [o for o in config["train"]["objectives"] if o != MIXED]
    unknown = sorted(set(objectives) - set(config["train"]["objectives"]))
    if unknown:
        raise PlmscaleError(f"config: fit.closed_loop.objectives {unknown} are not trained "
                            f"(train.objectives is {config['train']['objectives']}); remove them")
    labels = [multiple_label(m) for m in settings["multiples"]]
    if len(set(labels)) != len(labels):
        raise PlmscaleError(f"config: fit.closed_loop.multiples {settings['multiples']} repeats a multiple; "
                            "list each once")
    depths = settings.get("layers") or [None]
    if len(set(depths)) != len(depths):
        raise PlmscaleError(f"config: fit.closed_loop.layers {depths} repeats a depth; list each once")
    return [(objective, float(m), depth) for objective in objectives for m in settings["multiples"]
            for depth in depths]


# ---- what a fit says at a budget ---------------------------------------------------------------------

def identification(fit: FitFile, objective: str, method: str) -> tuple[bool, list[str]]:
    """(identified, reasons) of one method; a fit.json without the verdict counts as identified."""
    entry = fit.method(objective, method)
    if entry.law is None:
        return False, [f"not fitted: {entry.error}"]
    return entry.identified is not False, list(entry.reasons)


def top_budget(fit: FitFile, objective: str) -> float | None:
    """The largest budget of the objective's IsoFLOP design as fit.json records it (None if it has none)."""
    optima = fit.method(objective, "isoflop").optima
    return max((o.budget for o in optima), default=None)


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def method_forecast(fit: FitFile, objective: str, method: str, flops: float, n_params: float | None = None,
                    tokens: float | None = None) -> dict:
    """One method's forecast at C = flops, whether it is identified or not (the verdict comes with it).

    {"identified", "verdict_in_fit", "reasons", "n_opt", "n_opt_ci", "loss", "loss_ci", "loss_basis"}
    (verdict_in_fit false: fit.json predates identification, the method counts as identified); with n_params and
    tokens the parametric loss is L(N, D) there, otherwise (and for the power laws always) L_opt(C).
    """
    identified, reasons = identification(fit, objective, method)
    out = {"identified": identified, "verdict_in_fit": fit.method(objective, method).identified is not None,
           "reasons": reasons,
           "n_opt": None, "n_opt_ci": None, "loss": None,
           "loss_ci": None, "loss_basis": None}
    law = fit.method(objective, method).law
    if law is None:
        return out
    if isinstance(law, ParametricLaw) and law.flops_per_param_token is None:
        out["reasons"] = reasons + ["fit.json lacks flops_per_param_token: no N_opt at a budget"]
        return out
    forecast = law.forecast(flops)
    out.update(n_opt=forecast["n_opt"], n_opt_ci=forecast["n_opt_ci"], loss_basis=LOSS_BASIS[method])
    if isinstance(law, ParametricLaw) and n_params is not None and tokens is not None:
        out["loss"], out["loss_ci"] = law.loss_at(n_params, tokens)
    elif isinstance(law, ParametricLaw):
        out.update(loss=forecast["loss"], loss_ci=forecast["loss_ci"], loss_basis="compute-optimal loss L_opt(C)")
    elif law.has_loss_law:  # loss_floor + k_l·C^s where the fit has a floor, a pure power law before
        out.update(loss=forecast["loss"], loss_ci=forecast["loss_ci"])
    else:
        out["loss_basis"] = None
    out["n_opt"], out["loss"] = _finite(out["n_opt"]), _finite(out["loss"])
    return out


def selected_forecast(fit: FitFile, objective: str, flops: float, n_params: float | None = None,
                      tokens: float | None = None) -> dict:
    """method_forecast's record for the law family fit.json selected (selected_law.py): N_opt(C) from its
    compute-optimal allocation; its loss L(N, D) at the trained N and D where given, else L_opt(C)."""
    law = selected_law(fit, objective)
    identified = law.usable
    out = {"identified": identified, "verdict_in_fit": law.entry.get("identified") is not None,
           "reasons": list(law.entry.get("reasons") or []), "n_opt": None, "n_opt_ci": None, "loss": None,
           "loss_ci": None, "loss_basis": None, "selected_because": law.why}
    if law.law is None or law.kappa is None:
        out["reasons"] = out["reasons"] + [law.why_unusable]
        return out
    forecast = law.forecast(flops)
    out.update(n_opt=_finite(forecast["n_opt"]), n_opt_ci=forecast["n_opt_ci"])
    if n_params is not None and tokens is not None:
        loss, loss_ci = law.loss_at(n_params, tokens)
        out.update(loss=_finite(loss), loss_ci=loss_ci, loss_basis=SELECTED_LOSS_BASIS)
    else:
        out.update(loss=_finite(forecast["loss"]), loss_ci=forecast["loss_ci"],
                   loss_basis="compute-optimal loss L_opt(C) of the selected law family")
    return out


def _forecast_of(fit: FitFile, objective: str, method: str, flops: float, n_params=None, tokens=None):
    """(name, forecast) of a fit.closed_loop.methods entry: `parametric` is the selected law family where fit.json
    selected another one."""
    if method == "parametric" and differs_from_parametric(fit, objective):
        return selected_law(fit, objective).family, selected_forecast(fit, objective, flops, n_params, tokens)
    return method, method_forecast(fit, objective, method, flops, n_params, tokens)


def choose_forecast(fit, objective: str, multiple: float, methods, fallback_budget: float | None = None) -> dict:
    """C = multiple × top IsoFLOP budget and the N_opt(C) of the first identified method in `methods` (its
    `parametric` is the selected law family where fit.json selected another: _forecast_of).

    Returns {"objective", "multiple", "top_budget", "flops", "method", "n_opt", "n_opt_ci", "reason",
    "considered": {method: {"identified", "reasons"}}}; "method" is None (and "reason" says why) when no
    listed method is identified with a finite N_opt: then there is no forecast to train.
    """
    fit = parse_fit(fit)
    top = (top_budget(fit, objective) if objective in fit.objectives else None) or fallback_budget
    if not top:
        raise PlmscaleError(f"{fit.source}: objectives.{objective}.isoflop records no budget, and no fallback "
                            "was given; the closed loop scales the top IsoFLOP budget of the grid")
    flops = float(multiple) * float(top)
    choice = {"objective": objective, "multiple": float(multiple), "top_budget": float(top), "flops": flops,
              "method": None, "n_opt": None, "n_opt_ci": None, "reason": None, "considered": {}}
    if objective not in fit.objectives:
        # Not an error: a fit.json from before this objective was added is read while the DAG is built.
        choice["reason"] = f"{fit.source} has no {objective} fit: no forecast to train"
        return choice
    for listed in methods:
        method, forecast = _forecast_of(fit, objective, listed, flops)
        choice["considered"][method] = {"identified": forecast["identified"], "reasons": forecast["reasons"]}
        if forecast["identified"] and forecast["n_opt"] and forecast["n_opt"] > 0:
            choice.update(method=method, n_opt=forecast["n_opt"], n_opt_ci=forecast["n_opt_ci"])
            return choice
    why = "; ".join(f"{m}: {'; '.join(v['reasons'])}" if v["reasons"]
                    else f"{m}: {'no finite N_opt' if v['identified'] else 'not identified'}"
                    for m, v in choice["considered"].items())
    choice["reason"] = f"no identified method among {list(methods)} forecasts N_opt at C = {flops:.3g} ({why})"
    return choice


# ---- the run to train --------------------------------------------------------------------------------

def plan_closed_loop(config: dict, fit, objective: str, multiple: float, source: str | None = None,
                     layers: int | None = None) -> dict:
    """The closed-loop run for (objective, multiple, layers): the forecast it tests and the spec that trains
    it. layers None: as deep as the ladder entry nearest N_opt; else that depth at the same N_opt.

    JSON-ready: the choice (choose_forecast) plus "run_id", and when a forecast exists "shape", "n_params",
    "tokens", "nearest_ladder_entry", "spec" (RunSpec.training_dict: what decides the model) and
    "resources" (the planner's estimate, as for a grid run); "spec" is None when nothing is to be trained.
    """
    # Imported here: the grid imports torch-free modules only, but the scaling stage need not load it at all.
    from plmscale.grid import shapes
    from plmscale.grid.expand import GridBuilder, run_seed

    settings = config["fit"]["closed_loop"]
    budgets = [float(b) for b in objective_budgets(config["train"]["isoflop"], objective)]
    choice = choose_forecast(fit, objective, multiple, settings["methods"], max(budgets, default=None))
    # One listed depth sets the depth; only two or more are a search (scored against each other).
    depths = settings.get("layers") or []
    plan = {"version": RECORD_VERSION, **choice, "run_id": closed_loop_run_id(objective, multiple, layers),
            "layers_requested": layers, "depths_searched": depths if len(depths) > 1 else None, "spec": None}
    if choice["method"] is None:
        return plan
    ladder = config["train"]["ladder"]
    nearest = shapes.nearest_ladder_entry(choice["n_opt"], ladder)
    shape = shapes.normalise_shape(shapes.ladder_like_shape(choice["n_opt"], ladder, layers=layers))
    per_token = shapes.flops_per_token(shape, config["train"]["seq_len"], config["train"]["flops_definition"])
    tokens = round(choice["flops"] / per_token)
    builder = GridBuilder(config, source)
    model = f"{nearest}-like" + (f"-L{layers}" if layers else "")
    builder.add_shape(model, shape)
    # One seed for every depth of a search (the run without a depth's): the depths see the same batches, so
    # their difference is the depth's, not the data order's (common random numbers).
    seed = run_seed(config["seed"], closed_loop_run_id(objective, multiple))
    spec = builder.make(plan["run_id"], objective, model, tokens, budget=choice["flops"], seed=seed)
    plan.update(shape=shape, n_params=spec.n_params, tokens=tokens, nearest_ladder_entry=nearest)
    if tokens < spec.batch_tokens:
        plan["reason"] = (f"the forecast N_opt {choice['n_opt']:.3g} leaves {tokens} tokens at C = "
                          f"{choice['flops']:.3g}, less than one batch ({spec.batch_tokens}): nothing to train")
        return plan
    plan.update(spec=spec.training_dict(), resources=spec.resources)
    return plan


def write_not_trained(plan: dict, out_dir) -> None:
    """The outputs of a closed-loop job with no forecast to train: metrics.json says why (trained: false),
    curve.csv has its header only, provenance.json holds the plan. The workflow needs every file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json({"run_id": plan["run_id"], "trained": False, "reason": plan["reason"]}, out_dir / "metrics.json")
    (out_dir / "curve.csv").write_text("step,tokens,flops,train_loss,valid_loss,lr\n")
    write_json({"run_id": plan["run_id"], "plan": plan}, out_dir / "provenance.json", with_provenance=True)


# ---- scoring -----------------------------------------------------------------------------------------

def score_run(fit, plan: dict, metrics: dict) -> dict:
    """One closed-loop run against every method's forecast (identified or not, marked), and the selected law
    family's where fit.json selected one other than the parametric law (`selected_law` names it)."""
    fit = parse_fit(fit)
    record = {key: plan.get(key) for key in ("run_id", "objective", "multiple", "top_budget", "flops", "method",
                                             "n_opt", "n_opt_ci", "reason", "nearest_ladder_entry",
                                             "depths_searched")}
    record["forecast_method"] = record.pop("method")
    trained = plan.get("spec") is not None and metrics.get("trained", True) is not False
    record["trained"] = trained
    # The loss the fit was fitted on (fit.loss_column: the valid loss, or one identity bin's).
    loss_column = fit.data.get("settings", {}).get("loss_column", DEFAULT_LOSS_COLUMN)
    observed = _finite(final_loss(metrics, loss_column)) if trained else None
    n_params = metrics.get("n_params") if trained else None
    tokens = metrics.get("tokens") if trained else None
    if trained:
        record.update(shape=metrics.get("shape"), n_params=n_params, tokens=tokens,
                      trained_flops=metrics.get("flops"), observed_loss=observed)
    record["methods"] = {}
    forecasts = [(method, method_forecast(fit, plan["objective"], method, plan["flops"], n_params, tokens))
                 for method in METHODS]
    if differs_from_parametric(fit, plan["objective"]):
        family = selected_law(fit, plan["objective"]).family
        record["selected_law"] = family
        forecasts.append((family, selected_forecast(fit, plan["objective"], plan["flops"], n_params, tokens)))
    for method, forecast in forecasts:
        entry = dict(forecast)
        entry["error_pct"] = entry["inside_interval"] = entry["within_2pct"] = None
        if observed is not None and forecast["loss"]:
            entry["error_pct"] = 100.0 * (observed - forecast["loss"]) / forecast["loss"]
            entry["within_2pct"] = abs(observed - forecast["loss"]) <= WITHIN_FRACTION * forecast["loss"]
            if forecast["loss_ci"]:
                low, high = forecast["loss_ci"]
                entry["inside_interval"] = low <= observed <= high
        record["methods"][method] = entry
    return record


def score_closed_loop(fit, runs) -> dict:
    """closed_loop.json: {"version", "within_fraction", "objectives": {objective: {"x{label}": score_run}}}.

    runs: (plan, metrics) pairs, one per closed-loop job. With a depth search (fit.closed_loop.layers) each
    record of a multiple says whether it is the best of its depths (`best_of_depths`): the lowest observed
    loss, the compute-optimal model of those tried, which is what an L_opt(C) forecast describes.
    """
    fit = parse_fit(fit)
    objectives = {}
    for plan, metrics in runs:
        label = run_label(plan["multiple"], plan.get("layers_requested"))
        objectives.setdefault(plan["objective"], {})[f"x{label}"] = score_run(fit, plan, metrics)
    for records in objectives.values():
        searched = {}
        for record in records.values():
            if record.get("depths_searched"):
                searched.setdefault(record["multiple"], []).append(record)
        for group in searched.values():
            observed = [r for r in group if r.get("observed_loss") is not None]
            best = min(observed, key=lambda r: r["observed_loss"]) if observed else None
            for record in group:
                record["best_of_depths"] = record is best
    return {"version": RECORD_VERSION, "within_fraction": WITHIN_FRACTION, "ci_level": 0.95,
            "fit_inputs_sha256": fit.data.get("inputs_sha256"), "objectives": objectives}


# ---- text and plot -----------------------------------------------------------------------------------

def _loss_text(value, ci) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else " [no interval]")


def _in_order(validation: dict, objective: str) -> list:
    """(label, record) of one objective by budget, the depths of a budget in label order."""
    records = (validation.get("objectives") or {}).get(objective, {})
    return sorted(records.items(), key=lambda item: (item[1]["flops"], item[0]))


def _depth_note(record: dict) -> str:
    if not record.get("depths_searched"):
        return ""
    depths = ", ".join(str(d) for d in record["depths_searched"])
    return f" (best of depths {depths})" if record.get("best_of_depths") else f" (one of depths {depths})"


def validation_lines(validation: dict, objective: str, fit=None) -> list[str]:
    """Lines for `plmscale predict`: "validated at C = ..." per closed-loop run of this objective.

    With the fit being reported on (a FitFile or fit.json dict), a record scored against another fit's
    tables says so first: its forecasts are not this fit's."""
    lines = []
    if fit is not None and (validation.get("objectives") or {}).get(objective):
        ours = parse_fit(fit).data.get("inputs_sha256")
        if ours != validation.get("fit_inputs_sha256"):
            lines.append("note: the closed loop below scored a fit of other run tables (inputs_sha256 differs); "
                         "rerun the workflow's closed_loop_score")
    for label, record in _in_order(validation, objective):
        head = f"validated at C = {record['flops']:.3g} FLOPs ({record['multiple']:g}x the top grid budget)"
        if not record["trained"]:
            lines.append(f"{head}: not trained, {record.get('reason')}")
            continue
        depth = (f", {record['shape']['layers']} layers" if record.get("shape") else "") + _depth_note(record)
        lines.append(f"{head}: trained N = {record['n_params']:.3g}, D = {record['tokens']:.3g}{depth}, "
                     f"observed loss {record['observed_loss']:.4g} (run {record['run_id']}, sized by "
                     f"{record['forecast_method']})")
        for method, entry in record["methods"].items():
            mark = "" if entry["identified"] else " (not identified)"
            if entry["loss"] is None:
                lines.append(f"  {method:<10}{mark} no loss forecast")
                continue
            parts = [f"forecast {_loss_text(entry['loss'], entry['loss_ci'])}", f"error {entry['error_pct']:+.2f}%"]
            if entry["inside_interval"] is not None:
                parts.append(f"{'inside' if entry['inside_interval'] else 'outside'} the interval")
            within_pct = 100 * validation.get("within_fraction", WITHIN_FRACTION)
            parts.append(f"{'within' if entry['within_2pct'] else 'not within'} {within_pct:g}%")
            lines.append(f"  {method:<10}{mark} " + ", ".join(parts))
    return lines
