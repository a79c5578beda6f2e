"""`plmscale predict --fit fit.json --flops 1.7e22 --objective mlm [--json] [--ladder configs/paper.yaml]`:
compute-optimal model size, tokens and loss for a budget, with 95% intervals (plmscale.scaling.predict),
and what the workflow's closed loop measured, where it ran."""

import argparse
import sys
from pathlib import Path

from plmscale.config import read_json_object
from plmscale.scaling.closed_loop import validation_lines
from plmscale.scaling.fitfile import read_fit
from plmscale.scaling.predict import load_ladder, predict
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
    parser.add_argument("--flops", required=True, type=float, help="compute budget in FLOPs, e.g. 1.7e22")
    parser.add_argument("--objective", required=True, choices=["clm", "mlm"])
    parser.add_argument("--ladder", help="config with train.ladder (or a name -> n_params mapping): "
                                         "report the nearest model shape")
    parser.add_argument("--json", action="store_true", help="print the prediction as JSON")


def main(args: argparse.Namespace) -> int:
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
