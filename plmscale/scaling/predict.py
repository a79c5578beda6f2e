"""Compute-optimal model size, tokens and loss for a budget, from fit.json, with 95% intervals.

The intervals come from the bootstrap draws stored in fit.json: every draw's law is evaluated at the
budget, then the percentile interval is taken (constants are never rounded on the way).
"""

import math

from plmscale.arithmetic import ModelShape
from plmscale.config import read_yaml
from plmscale.errors import PlmscaleError
from plmscale.scaling import farseer
from plmscale.scaling.fitfile import METHODS, FitFile, ParametricLaw, parse_fit


def _parametric_forecast(law: ParametricLaw, flops, where) -> dict:
    if law.flops_per_param_token is None:
        raise PlmscaleError(f"{where}.flops_per_param_token is missing: the parametric law cannot turn "
                            "FLOPs into N and D without it; rerun `plmscale fit`")
    return law.forecast(flops)


# A forecast this many times beyond the largest budget the fit saw is flagged: its intervals cover the
# bootstrap's spread, not whether the law still holds that far out (Marin's closed loop checked 320x).
EXTRAPOLATION_WARNING_FACTOR = 100.0


def largest_fitted_flops(fit: FitFile, objective: str) -> float | None:
    """The largest compute of the runs behind an objective's fit (fit.json's max_run_flops; for an older
    fit.json, its largest IsoFLOP budget or envelope point), or None where the file does not say."""
    recorded = (fit.data.get("objectives", {}).get(objective) or {}).get("max_run_flops")
    if isinstance(recorded, (int, float)) and recorded > 0:
        return float(recorded)
    seen = [o.budget for o in fit.method(objective, "isoflop").optima]
    seen += [p.flops for p in fit.method(objective, "envelope").points]
    return max(seen) if seen else None


def extrapolation(fit: FitFile, flops: float, objective: str) -> dict | None:
    """{"largest_fitted_flops", "factor", "warning"?}: how far a budget lies beyond the fitted range."""
    largest = largest_fitted_flops(fit, objective)
    if largest is None:
        return None
    out = {"largest_fitted_flops": largest, "factor": flops / largest}
    if out["factor"] > EXTRAPOLATION_WARNING_FACTOR:
        out["warning"] = (f"C = {flops:.3g} FLOPs is {out['factor']:.3g}x the largest budget fitted "
                          f"({largest:.3g} FLOPs), far outside the fitted range (more than "
                          f"{EXTRAPOLATION_WARNING_FACTOR:g}x): the intervals show the bootstrap's spread, not "
                          "whether the law holds that far out; validate at a larger budget first")
    return out


def _finite(value):
    return None if value is None or not math.isfinite(value) else float(value)


def predict(fit, flops: float, objective: str, ladder=None) -> dict:
    """{"objective", "flops", "methods": {METHOD: {"n_opt", "d_opt", "loss", "n_opt_ci", "d_opt_ci"}}}.

    fit: a FitFile (fitfile.read_fit) or a fit.json dict, validated here. A method that was not fitted,
    or that fit.json marks as not identified, gives null values and says why in details.note (a method
    without a loss law gives a null loss). With a ladder (name -> n_params), the result also carries
    "nearest" {METHOD: name} and "details" (loss intervals, notes) — keys that the JSON output of the CLI
    leaves out to keep its documented shape. "extrapolation" says how far flops lies beyond the largest
    fitted budget (a "warning" past EXTRAPOLATION_WARNING_FACTOR).
    """
    if not (isinstance(flops, (int, float)) and math.isfinite(flops) and flops > 0):
        raise PlmscaleError(f"--flops must be a positive number, got {flops!r}")
    fit: FitFile = parse_fit(fit)
    if objective not in fit.objectives:
        raise PlmscaleError(f"the fit has no {objective!r} objective (has: {', '.join(fit.objectives) or 'none'}); "
                            "fit runs of that objective first")
    methods, details, nearest = {}, {}, {}
    for method in METHODS:
        entry = fit.method(objective, method)
        if not entry.usable:
            # An unidentified law still has numbers; they describe the grid or the optimiser, not the model.
            methods[method] = {"n_opt": None, "d_opt": None, "loss": None, "n_opt_ci": None, "d_opt_ci": None}
            details[method] = {"note": entry.why_unusable, "identified": entry.identified,
                               "reasons": list(entry.reasons)}
            continue
        if method == "parametric":
            forecast = _parametric_forecast(entry.law, flops, f"{fit.source}: objectives.{objective}.parametric")
        else:
            forecast = entry.law.forecast(flops)
        n, d, loss = _finite(forecast["n_opt"]), _finite(forecast["d_opt"]), _finite(forecast["loss"])
        n_ci, d_ci, loss_ci = forecast["n_opt_ci"], forecast["d_opt_ci"], forecast["loss_ci"]
        methods[method] = {"n_opt": n, "d_opt": d, "loss": loss, "n_opt_ci": n_ci, "d_opt_ci": d_ci}
        details[method] = {"loss_ci": loss_ci, "loss_law": entry.loss_law, "identified": entry.identified}
        notes = []
        if n is None or d is None:
            notes.append("the law overflows at this budget: no finite N_opt/D_opt")
        if loss is None:
            notes.append("this method has no loss law: loss is null")
        if n is not None and n_ci and not n_ci[0] <= n <= n_ci[1]:
            notes.append("N_opt lies outside its bootstrap interval (skewed resamples)")
        if notes:
            details[method]["note"] = "; ".join(notes)
        if ladder and n is not None:
            nearest[method] = nearest_shape(ladder, n)
    out = {"objective": objective, "flops": float(flops), "methods": methods, "details": details,
           "extrapolation": extrapolation(fit, float(flops), objective)}
    if ladder:
        out["nearest"] = nearest
    return out


def nearest_shape(ladder: dict, n_params: float) -> dict:
    """The ladder entry closest to n_params in log space: {"name", "n_params"}."""
    name = min(ladder, key=lambda k: abs(math.log(ladder[k] / n_params)))
    return {"name": name, "n_params": int(ladder[name])}


def load_ladder(path) -> dict:
    """name -> non-embedding parameter count, from a config (train.ladder shapes) or a plain mapping.

    Shapes ({layers, d_model, heads, ffn_dim?}) are counted with plmscale.arithmetic.ModelShape; a value may
    also be a number or {n_params: number}.
    """
    data = read_yaml(path, what="ladder file")
    if isinstance(data, dict) and isinstance(data.get("train"), dict) and "ladder" in data["train"]:
        data = data["train"]["ladder"]
    elif isinstance(data, dict) and "ladder" in data:
        data = data["ladder"]
    if not isinstance(data, dict) or not data:
        raise PlmscaleError(f"ladder file {path}: expected train.ladder (name -> shape) or a mapping "
                            "name -> n_params")
    return ladder_sizes(data, where=f"ladder file {path}")


def ladder_sizes(ladder: dict, where: str = "train.ladder") -> dict:
    """name -> non-embedding parameters for a ladder whose values are shapes, counts or {n_params}."""
    sizes = {}
    for name, value in ladder.items():
        if isinstance(value, (int, float)):
            sizes[name] = float(value)
        elif isinstance(value, dict) and "n_params" in value:
            sizes[name] = float(value["n_params"])
        elif isinstance(value, dict) and {"layers", "d_model", "heads"} <= set(value):
            try:
                sizes[name] = float(ModelShape.from_dict(value).n_params())
            except ValueError as error:
                raise PlmscaleError(f"{where}: shape {name}: {error}") from None
        else:
            raise PlmscaleError(f"{where}: entry {name!r} is neither a shape "
                                "{layers, d_model, heads} nor a parameter count")
    return sizes



def predict_budgets(fit, flops_by_objective: dict, ladder: dict | None = None) -> dict:
    """{objective: [predict(fit, C, objective) for C in the config's budgets]} for the objectives fitted.

    fit: a FitFile (fitfile.read_fit) or a fit.json dict, validated on the way in."""
    fit = parse_fit(fit)
    ladder = ladder_sizes(ladder) if ladder else None
    out = {}
    for objective, budgets in (flops_by_objective or {}).items():
        if objective not in fit.objectives:
            continue
        out[objective] = [predict(fit, float(flops), objective, ladder=ladder or None) for flops in budgets]
    return out


def predict_run(fit, objective: str, n_params: float, tokens: float, unique_tokens: float | None = None) -> dict:
    """The loss of one run of N parameters trained on D tokens (drawn from unique_tokens U; None: unlimited
    data), under fit.json's selected law and each law family (Chinchilla `parametric`, `farseer`,
    `data_constrained`), with 95% intervals from the stored bootstrap draws:

        {"objective", "n_params", "tokens", "unique_tokens", "law": selected family or None, "loss", "loss_ci",
         "families": {name: {"loss", "loss_ci", "identified", "reasons"}}, "notes": [...]}

    A family that is not fitted has loss null and its reasons; an unidentified one still shows its loss
    beside its reasons (predict prints all families with their verdicts), but never becomes `law`.
    Only the data-constrained family uses U. With U below D a note says which losses assume D unique tokens:
    every family's where the data-constrained family is not fitted, else the selected law's if it is another."""
    fit = parse_fit(fit)
    for name, value in (("n_params", n_params), ("tokens", tokens)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise PlmscaleError(f"--{name.replace('_', '-')} must be a positive number, got {value!r}")
    if unique_tokens is not None and not (isinstance(unique_tokens, (int, float)) and math.isfinite(unique_tokens)
                                          and unique_tokens > 0):
        raise PlmscaleError(f"--unique-tokens must be a positive number, got {unique_tokens!r}")
    entry = fit.data.get("objectives", {}).get(objective)
    if entry is None:
        known = ", ".join(fit.data.get("objectives", {}))
        raise PlmscaleError(f"{fit.source} has no {objective} fit; objectives: {known}")
    families = {}
    parametric = fit.method(objective, "parametric")
    families["parametric"] = _family_row(entry.get("parametric", {}),
                                         parametric.law.loss_at(n_params, tokens) if parametric.law else None)
    farseer_entry = entry.get("farseer")
    if farseer_entry is not None:
        families["farseer"] = _family_row(farseer_entry, None if "error" in farseer_entry
                                          else farseer.loss_with_interval(farseer_entry, n_params, tokens))
    constrained = fit.method(objective, "data_constrained")
    if "data_constrained" in entry:
        families["data_constrained"] = _family_row(entry["data_constrained"], constrained.law.loss_at(
            n_params, tokens, unique_tokens) if constrained.law else None)
    selected = entry.get("selected_law")
    chosen = families.get(selected) if selected else None
    notes = []
    if selected is None:
        why = (entry.get("law_selection") or {}).get("why") or "fit.json selects no law (rerun `plmscale fit`)"
        notes.append(f"no selected law: {why}")
    if unique_tokens is not None and unique_tokens < tokens:
        repeats = f"the run repeats its data ({tokens / unique_tokens:.3g} epochs of {unique_tokens:.3g} unique tokens)"
        if constrained.law is None:
            notes.append(f"{repeats}; no fitted family models repetition, so every loss here assumes D unique tokens "
                         "and is optimistic (fit.law_families: data_constrained, on runs with a unique_tokens "
                         "column, models it)")
        elif selected != "data_constrained":
            notes.append(f"{repeats}; only the data_constrained family models repetition: the other families' "
                         "losses do not depend on U")
    largest = largest_fitted_flops(fit, objective)
    kappa = entry.get("flops_per_param_token") or 6.0
    if largest and kappa * n_params * tokens > EXTRAPOLATION_WARNING_FACTOR * largest:
        notes.append(f"the run's compute ({kappa * n_params * tokens:.3g} FLOPs) is more than "
                     f"{EXTRAPOLATION_WARNING_FACTOR:g}x the largest fitted ({largest:.3g}): the intervals cover the "
                     "bootstrap's spread, not whether the law holds that far out")
    return {"objective": objective, "n_params": float(n_params), "tokens": float(tokens),
            "unique_tokens": None if unique_tokens is None else float(unique_tokens), "law": selected,
            "loss": chosen["loss"] if chosen else None, "loss_ci": chosen["loss_ci"] if chosen else None,
            "families": families, "notes": notes}


def _family_row(entry: dict, loss_and_ci) -> dict:
    loss, ci = loss_and_ci if loss_and_ci is not None else (None, None)
    return {"loss": _finite(loss), "loss_ci": list(ci) if ci else None,
            "identified": entry.get("identified"), "reasons": list(entry.get("reasons", []))}
