"""`plmscale predict --fit fit.json --flops 1.7e22 --objective mlm [--json] [--ladder configs/paper.yaml]`:
compute-optimal model size, tokens and loss for a budget, with 95% intervals (plmscale.scaling.predict),
and what the workflow's closed loop measured, where it ran."""

import argparse
import sys
from pathlib import Path

from plmscale.cli.predict_costs import (add_cost_arguments, budget_from_cost_arguments, cost_model_allocations,
                                        cost_model_lines)
from plmscale.cli.predict_costs import format_estimate as _fmt
from plmscale.config import read_json_object
from plmscale.design.next_run import emit_next_run_config
from plmscale.errors import PlmscaleError
from plmscale.scaling.closed_loop import validation_lines
from plmscale.scaling.fitfile import read_fit
from plmscale.scaling.predict import load_ladder, predict, predict_run
from plmscale.scaling.results import json_text
from plmscale.scaling.selected_law import selected_law


def format_prediction(result) -> str:
    lines = [f"{result['objective'].upper()} at C = {result['flops']:.3g} FLOPs (95% bootstrap intervals)"]
    reach = result.get("extrapolation")
    if reach:
        lines[0] += f", {reach['factor']:.3g}x the largest budget fitted ({reach['largest_fitted_flops']:.3g} FLOPs)"
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
    parser.add_argument("--flops", type=float,
                        help="compute budget in FLOPs, e.g. 1.7e22 (or --gpu-hours; or a run: --n-params/--tokens)")
    parser.add_argument("--objective", required=True, choices=["clm", "mlm"])
    parser.add_argument("--ladder", help="config with train.ladder (or a name -> n_params mapping): "
                                         "report the nearest model shape")
    parser.add_argument("--json", action="store_true", help="print the prediction as JSON")
    parser.add_argument("--emit-config", metavar="OUT.yaml",
                        help="also write a config overlay that trains the forecast optimum at --flops with the workflow "
                             "(shape, tokens, recipe and resources as the closed loop plans them; the config from "
                             "--config, default config.yaml)")
    add_cost_arguments(parser)
    add_run_arguments(parser)


def selected_law_forecast(fit, objective: str, flops: float) -> dict:
    """The law fit.json selected for the objective at C = flops: {"family", "named_by_fit", "why", and the
    forecast (n_opt, d_opt, loss with intervals) or "not_usable" with why}."""
    law = selected_law(fit, objective)
    out = {"family": law.family, "named_by_fit": law.named_by_fit, "why": law.why}
    if not law.usable:
        return {**out, "not_usable": law.why_unusable}
    return {**out, **law.forecast(flops)}


def selected_law_line(chosen: dict) -> str:
    head = f"  selected law: {chosen['family']}" + ("" if chosen["named_by_fit"] else " (no law selected: the fallback)")
    if "not_usable" in chosen:
        return f"{head}: no prediction: {chosen['not_usable']}"
    return (f"{head}  N_opt {_fmt(chosen['n_opt'], chosen['n_opt_ci'])}  D_opt {_fmt(chosen['d_opt'], chosen['d_opt_ci'])}"
            f"  loss {_fmt(chosen['loss'], chosen['loss_ci'], 4)}  ({chosen['why']})")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("one run", "the loss of a given run (N, D) under the selected law and each law "
                                                 "family, instead of the optimum at a budget")
    group.add_argument("--n-params", type=float, help="the run's parameters (the fit's count: without embeddings)")
    group.add_argument("--tokens", type=float, help="the run's training tokens D")
    group.add_argument("--unique-tokens", type=float,
                       help="unique tokens U the run draws its D tokens from (D/U epochs; default: unlimited): the "
                            "data_constrained family's loss uses it, the other families assume D unique tokens")


def run_prediction_text(result) -> str:
    """predict_run's result as lines: the selected law's loss, then every family with its verdict."""
    unique = f" of U = {result['unique_tokens']:.3g} unique" if result.get("unique_tokens") else ""
    lines = [f"{result['objective'].upper()} run of N = {result['n_params']:.3g} parameters on D = "
             f"{result['tokens']:.3g} tokens{unique} (95% bootstrap intervals)",
             f"  selected law: {result['law'] or 'none'}  loss {_fmt(result['loss'], result['loss_ci'], 4)}"]
    for name, row in result["families"].items():
        verdict = "identified" if row["identified"] else "not identified"
        lines.append(f"  {name:<16} loss {_fmt(row['loss'], row['loss_ci'], 4)}  {verdict}")
        lines.extend(f"  {'':<16}   {reason}" for reason in row["reasons"])
    lines.extend(f"note: {note}" for note in result["notes"])
    return "\n".join(lines)


def predict_one_run(args) -> int:
    """`--n-params N --tokens D`: predict_run's answer, as JSON (the documented keys) or text."""
    if args.n_params is None or args.tokens is None:
        raise PlmscaleError("give both --n-params N and --tokens D to predict one run's loss")
    if args.flops is not None:
        raise PlmscaleError("--n-params/--tokens predict one run's loss, --flops a budget's optimum: give one or the "
                            "other")
    result = predict_run(read_fit(args.fit), args.objective, args.n_params, args.tokens, args.unique_tokens)
    if args.json:
        print(json_text({key: result[key] for key in ("law", "loss", "loss_ci", "families")}))
        for note in result["notes"]:
            print(f"note: {note}", file=sys.stderr)
    else:
        print(run_prediction_text(result))
    return 0


def main(args: argparse.Namespace) -> int:
    if args.n_params is not None or args.tokens is not None:
        return predict_one_run(args)
    budget_lines = budget_from_cost_arguments(args)
    fit = read_fit(args.fit)
    ladder = load_ladder(args.ladder) if args.ladder else None
    result = predict(fit, args.flops, args.objective, ladder)
    far = (result.get("extrapolation") or {}).get("warning")
    cost_model, cost_rows = cost_model_allocations(args, fit) if args.cost_model else (None, {})
    chosen = selected_law_forecast(fit, args.objective, args.flops)
    if args.json:
        printed = {key: result[key] for key in ("objective", "flops", "methods")}
        printed["selected_law"] = chosen
        if cost_model:
            printed["cost_model"] = {"name": cost_model, "by_family": cost_rows}
        print(json_text(printed))
        # The JSON keeps its documented shape; why a method is null goes to stderr.
        for method, values in result["methods"].items():
            if values["n_opt"] is None and result["details"].get(method, {}).get("note"):
                print(f"note: {method}: {result['details'][method]['note']}", file=sys.stderr)
    else:
        cost_lines = cost_model_lines(cost_model, cost_rows, args.gpu_hours is not None) if cost_model else []
        isoflop = (fit.data["objectives"].get(args.objective) or {}).get("isoflop") or {}
        if cost_model and isoflop.get("cost_models") and isoflop.get("flops_definition") != cost_model:
            cost_lines.append(f"isoflop law: not relabelled under {cost_model}: {isoflop['cost_models']}")
        print("\n".join([*budget_lines, format_prediction(result), selected_law_line(chosen), *cost_lines]))
        validation = Path(args.fit).with_name("closed_loop.json")  # the workflow's closed loop, if it ran
        if validation.exists():
            print("\n".join(validation_lines(read_json_object(validation, "closed-loop record"),
                                             args.objective, fit=fit)))
    if far:
        print(f"warning: {far}", file=sys.stderr)
    # What the fit noticed about its runs (e.g. runs that repeat their data), where the answer is read.
    for note in (fit.data["objectives"].get(args.objective) or {}).get("notes") or []:
        print(f"note: {note}", file=sys.stderr if args.json else sys.stdout)
    if args.emit_config:
        print(emit_next_run_config(args.fit, args.flops, args.objective, args.cost_config or "config.yaml",
                                   args.emit_config), file=sys.stderr if args.json else sys.stdout)
    return 0
