"""The budget of `plmscale predict` in another currency and the allocation under a cost model: --gpu-hours,
--device, --mfu, --cost-model, --measured, --config (plmscale.scaling.costs, docs/costs.md)."""

import argparse
from pathlib import Path

from plmscale.arithmetic import FLOPS_DEFINITIONS
from plmscale.config import load_config, load_config_files
from plmscale.errors import PlmscaleError
from plmscale.scaling.allocation import FAMILY_LAWS, stored_or_computed
from plmscale.scaling.costs import (MEASURED, MEASURED_COST_FILE, gpu_hours_to_flops, measured_law,
                                    read_measured_cost)


def format_estimate(value, ci=None, digits=3):
    """A value with its interval as text ("n/a" for none; "[no interval]" where it has none)."""
    if value is None:
        return "n/a"
    text = f"{value:.{digits}g}"
    return text + (f" [{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]" if ci else " [no interval]")


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
        exponent = f"  a {format_estimate(row['a'], row.get('a_ci'))}" if row.get("a") is not None else ""
        lines += [f"{family} law with the budget counted in {model}: {budget}",
                  f"  N_opt {format_estimate(row['n_opt'], row.get('n_opt_ci'))}  "
                  f"D_opt {format_estimate(row['d_opt'], row.get('d_opt_ci'))}  "
                  f"loss {format_estimate(row['loss'], row.get('loss_ci'), 4)}{exponent}"]
    return lines
