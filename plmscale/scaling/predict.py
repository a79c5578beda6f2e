"""Compute-optimal model size, tokens and loss for a budget, from fit.json, with 95% intervals.

`plmscale predict --fit fit.json --flops 1.7e22 --objective mlm [--json] [--ladder configs/paper.yaml]`
The intervals come from the bootstrap draws stored in fit.json: every draw's law is evaluated at the
budget, then the percentile interval is taken (constants are never rounded on the way).
"""

import argparse
import math
import sys
from pathlib import Path

import yaml

from plmscale.arithmetic import ModelShape
from plmscale.config import read_json_object
from plmscale.errors import PlmscaleError
from plmscale.scaling.closed_loop import validation_lines
from plmscale.scaling.fitfile import METHODS, FitFile, ParametricLaw, parse_fit, read_fit
from plmscale.scaling.results import json_text


def _parametric_forecast(law: ParametricLaw, flops, where) -> dict:
    if law.flops_per_param_token is None:
        raise PlmscaleError(f"{where}.flops_per_param_token is missing: the parametric law cannot turn "
                            "FLOPs into N and D without it; rerun `plmscale fit`")
    return law.forecast(flops)


def _finite(value):
    return None if value is None or not math.isfinite(value) else float(value)


def predict(fit, flops: float, objective: str, ladder=None) -> dict:
    """{"objective", "flops", "methods": {METHOD: {"n_opt", "d_opt", "loss", "n_opt_ci", "d_opt_ci"}}}.

    fit: a FitFile (fitfile.read_fit) or a fit.json dict, validated here. A method that was not fitted,
    or that fit.json marks as not identified, gives null values and says why in details.note (a method
    without a loss law gives a null loss). With a ladder (name -> n_params), the result also carries
    "nearest" {METHOD: name} and "details" (loss intervals, notes) — keys that the JSON output of the CLI
    leaves out to keep its documented shape.
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
    out = {"objective": objective, "flops": float(flops), "methods": methods, "details": details}
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
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise PlmscaleError(f"ladder file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise PlmscaleError(f"ladder file {path} is not valid YAML/JSON: {error}") from None
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


def _fmt(value, ci=None, digits=3):
    if value is None:
        return "n/a"
    text = f"{value:.{digits}g}"
    return text + (f" [{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]" if ci else " [no interval]")


def format_prediction(result) -> str:
    lines = [f"{result['objective'].upper()} at C = {result['flops']:.3g} FLOPs (95% bootstrap intervals)"]
    for method, values in result["methods"].items():
        detail = result["details"].get(method, {})
        if values["n_opt"] is None:
            lines.append(f"  {method:<10} no prediction: {detail.get('note', 'not fitted')}")
            for reason in detail.get("reasons", [])[1:]:
                lines.append(f"  {'':<10}   also: {reason}")
            continue
        line = (f"  {method:<10} N_opt {_fmt(values['n_opt'], values['n_opt_ci'])}  "
                f"D_opt {_fmt(values['d_opt'], values['d_opt_ci'])}  "
                f"loss {_fmt(values['loss'], detail.get('loss_ci'), 4)}")
        if "nearest" in result:
            near = result["nearest"][method]
            line += f"  nearest ladder shape {near['name']} ({near['n_params']:.3g} params)"
        lines.append(line)
        if detail.get("note"):
            lines.append(f"  {'':<10} note: {detail['note']}")
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fit", required=True, help="fit.json written by `plmscale fit` or the workflow")
    parser.add_argument("--flops", required=True, type=float, help="compute budget in FLOPs, e.g. 1.7e22")
    parser.add_argument("--objective", required=True, choices=["clm", "mlm"])
    parser.add_argument("--ladder", help="config with train.ladder (or a name -> n_params mapping): "
                                         "report the nearest model shape")
    parser.add_argument("--json", action="store_true", help="print the prediction as JSON")


def main(args: argparse.Namespace) -> int:
    fit = read_fit(args.fit)
    ladder = load_ladder(args.ladder) if args.ladder else None
    result = predict(fit, args.flops, args.objective, ladder)
    if args.json:
        print(json_text({key: result[key] for key in ("objective", "flops", "methods")}))
        # The JSON keeps its documented shape; why a method is null goes to stderr.
        for method, values in result["methods"].items():
            if values["n_opt"] is None and result["details"].get(method, {}).get("note"):
                print(f"note: {method}: {result['details'][method]['note']}", file=sys.stderr)
    else:
        print(format_prediction(result))
        validation = Path(args.fit).with_name("closed_loop.json")  # the workflow's closed loop, if it ran
        if validation.exists():
            print("\n".join(validation_lines(read_json_object(validation, "closed-loop record"),
                                             args.objective, fit=fit)))
    return 0
