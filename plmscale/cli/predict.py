"""`plmscale predict --fit fit.json --flops 1.7e22 --objective mlm [--json] [--ladder configs/paper.yaml]`:
compute-optimal model size, tokens and loss for a budget, with 95% intervals (plmscale.scaling.predict),
and what the workflow's closed loop measured, where it ran."""

import argparse
import sys
from pathlib import Path

from plmscale.config import read_json_object
from plmscale.errors import PlmscaleError
from plmscale.scaling.closed_loop import validation_lines
from plmscale.scaling.fitfile import read_fit
from plmscale.scaling.predict import load_ladder, predict, predict_run
from plmscale.scaling.results import json_text


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
    parser.add_argument("--flops", type=float, help="compute budget in FLOPs, e.g. 1.7e22 (or --n-params/--tokens)")
    parser.add_argument("--objective", required=True, choices=["clm", "mlm"])
    parser.add_argument("--ladder", help="config with train.ladder (or a name -> n_params mapping): "
                                         "report the nearest model shape")
    parser.add_argument("--json", action="store_true", help="print the prediction as JSON")
    add_run_arguments(parser)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("one run", "the loss of a given run (N, D) under the selected law and each law "
                                                 "family, instead of the optimum at a budget")
    group.add_argument("--n-params", type=float, help="the run's parameters (the fit's count: without embeddings)")
    group.add_argument("--tokens", type=float, help="the run's training tokens D")
    group.add_argument("--unique-tokens", type=float,
                       help="unique tokens U the run sees (D/U epochs): noted where below --tokens")


def run_prediction_text(result) -> str:
    """predict_run's result as lines: the selected law's loss, then every family with its verdict."""
    lines = [f"{result['objective'].upper()} run of N = {result['n_params']:.3g} parameters on D = "
             f"{result['tokens']:.3g} tokens (95% bootstrap intervals)",
             f"  selected law: {result['law'] or 'none'}  loss {_fmt(result['loss'], result['loss_ci'], 4)}"]
    for name, row in result["families"].items():
        verdict = "identified" if row["identified"] else "not identified"
        lines.append(f"  {name:<10} loss {_fmt(row['loss'], row['loss_ci'], 4)}  {verdict}")
        lines.extend(f"  {'':<10}   {reason}" for reason in row["reasons"])
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
    if args.flops is None:
        raise PlmscaleError("give the budget as --flops FLOPS, or a run as --n-params N --tokens D")
    fit = read_fit(args.fit)
    ladder = load_ladder(args.ladder) if args.ladder else None
    result = predict(fit, args.flops, args.objective, ladder)
    far = (result.get("extrapolation") or {}).get("warning")
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
    if far:
        print(f"warning: {far}", file=sys.stderr)
    return 0
