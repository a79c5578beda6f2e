"""`plmscale predict --fit fit.json --flops 1.7e22 --objective mlm [--json] [--ladder configs/paper.yaml]`:
compute-optimal model size, tokens and loss for a budget, with 95% intervals (plmscale.scaling.predict),
and what the workflow's closed loop measured, where it ran."""

import argparse
import sys
from pathlib import Path

from plmscale.arithmetic import FLOPS_DEFINITIONS
from plmscale.config import load_config, load_config_files, read_json_object
from plmscale.design.next_run import emit_next_run_config
from plmscale.errors import PlmscaleError
from plmscale.scaling.allocation import FAMILY_LAWS, stored_or_computed
from plmscale.scaling.costs import (MEASURED, MEASURED_COST_FILE, gpu_hours_to_flops, measured_law,
                                    read_measured_cost)
from plmscale.scaling.closed_loop import validation_lines
from plmscale.scaling.fitfile import read_fit
from plmscale.scaling.predict import load_ladder, predict, predict_run
from plmscale.scaling.results import json_text
from plmscale.scaling.selected_law import selected_law


def _fmt(value, ci=None, digits=3):
    if value is None:
        return "n/a"
    text = f"{value:.{digits}g}"
    return text + (f" [{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]" if ci else " [no interval]")


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


def add_cost_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cost models", "the budget in another currency, and the allocation under a "
                                                     "cost model (plmscale.scaling.costs, docs/costs.md)")
    group.add_argument("--cost-model", type=cost_model_name, metavar="{" + ",".join(FLOPS_DEFINITIONS) + ","
                       + f"{MEASURED}[:DEVICE]" + "}",
                       help="also report each (N, D) law family's N_opt, D_opt, loss and local exponent a with the "
                            "budget counted in this cost model (measured: seconds on DEVICE, cpu or cuda, default cpu "
                            "for --device cpu and cuda otherwise; its law from --measured)")
    group.add_argument("--measured", metavar="PATH",
                       help=f"the measured cost laws (default: {MEASURED_COST_FILE} beside --fit; the workflow's rule "
                            "measured_cost writes it)")
    group.add_argument("--gpu-hours", type=float,
                       help="the budget as GPU-hours on --device, converted to FLOPs at its peak and --mfu")
    group.add_argument("--device", default="h100",
                       help="accelerator of --gpu-hours (h100, h200, a100, ...; default h100), or cpu for the "
                            "measured cost model")
    group.add_argument("--mfu", type=float,
                       help="assumed model FLOPs utilisation (default: train.resources.assumed_mfu of the schema, 0.4)")
    group.add_argument("--config", dest="cost_config",
                       help="config whose train.ladder and train.seq_len give the shapes to count costs on, where "
                            "fit.json stores no allocation at this budget (always for measured)")


def cost_model_name(text: str) -> str:
    """--cost-model: a FLOPs definition, measured, or measured:DEVICE."""
    model, _, device = text.partition(":")
    if text in FLOPS_DEFINITIONS or (model == MEASURED and (device or ":" not in text)):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a cost model: use one of {', '.join(FLOPS_DEFINITIONS)}, "
                                     f"{MEASURED} or {MEASURED}:DEVICE")


def budget_from_cost_arguments(args) -> list[str]:
    """Set args.flops from --gpu-hours (lines that say how), or check that one budget is given."""
    if (args.flops is None) == (args.gpu_hours is None):
        raise PlmscaleError("give the budget as --flops FLOPS or as --gpu-hours H (with --device), not both; "
                            "or a run as --n-params N --tokens D")
    if args.gpu_hours is None:
        return []
    mfu = args.mfu if args.mfu is not None else load_config({})["train"]["resources"]["assumed_mfu"]
    converted = gpu_hours_to_flops(args.gpu_hours, args.device, mfu)
    args.flops = converted["flops"]
    return [f"{args.gpu_hours:g} GPU-hours on {converted['device']} = {args.flops:.3g} FLOPs at its peak "
            f"{converted['peak_flops_per_second']:.3g} FLOP/s and an assumed MFU of {mfu:g} (the plan's throughput "
            "model, plmscale/grid/resources.py; the FLOPs it runs are 6N plus attention: with_attention)"]


def cost_model_allocations(args, fit) -> tuple[str, dict]:
    """(the cost model's name, {family: its allocation row, or {"error": why}}) of every (N, D) law family the
    objective has, with the budget counted in --cost-model; an error when no family gives one."""
    model = args.cost_model
    seconds = measured = None
    if model.partition(":")[0] == MEASURED:
        device = model.partition(":")[2] or ("cpu" if args.device.lower() == "cpu" else "cuda")
        model = f"{MEASURED}:{device}"
        seconds = args.gpu_hours * 3600.0 if args.gpu_hours is not None else None
        # a machine measurement, kept apart from fit.json (docs/costs.md)
        path = args.measured or Path(args.fit).with_name(MEASURED_COST_FILE)
        measured = measured_law(read_measured_cost(path), device, where=str(path))
    ladder = seq_len = None
    if args.cost_config:
        config, _ = load_config_files([args.cost_config])
        ladder, seq_len = config["train"]["ladder"], config["train"]["seq_len"]
    entry = fit.data["objectives"].get(args.objective) or {}
    families = [family for family in FAMILY_LAWS if family == "parametric" or family in entry]
    rows, first_error = {}, None
    for family in families:
        try:
            rows[family] = stored_or_computed(fit.data, args.objective, args.flops, model, ladder, seq_len, seconds,
                                              where=args.fit, measured=measured, family=family)
        except PlmscaleError as error:
            rows[family] = {"error": str(error)}
            first_error = first_error or error
    if first_error is not None and all("error" in row for row in rows.values()):
        raise first_error
    return model, rows


def cost_model_lines(model: str, rows: dict, seconds_given: bool) -> list[str]:
    """Each family's allocation with the budget counted in the cost model, as text."""
    lines = []
    for family, row in rows.items():
        if "error" in row:
            lines.append(f"{family} law with the budget counted in {model}: no allocation: {row['error']}")
            continue
        budget = f"{row['budget']:.3g} {row.get('unit', model + ' FLOPs')}"
        if "unit" in row and not seconds_given:
            budget += " (the seconds the 6nd optimum takes)"
        exponent = f"  a {_fmt(row['a'], row.get('a_ci'))}" if row.get("a") is not None else ""
        lines += [f"{family} law with the budget counted in {model}: {budget}",
                  f"  N_opt {_fmt(row['n_opt'], row.get('n_opt_ci'))}  "
                  f"D_opt {_fmt(row['d_opt'], row.get('d_opt_ci'))}  "
                  f"loss {_fmt(row['loss'], row.get('loss_ci'), 4)}{exponent}"]
    return lines


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
    if args.emit_config:
        print(emit_next_run_config(args.fit, args.flops, args.objective, args.cost_config or "config.yaml",
                                   args.emit_config), file=sys.stderr if args.json else sys.stdout)
    return 0
