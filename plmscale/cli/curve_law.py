"""`plmscale curve-law --curves RUNS_DIR|CURVES.csv --runs RUNS.csv --config CONFIG.yaml
[--schedule cosine|wsd] [--tokens T ...] [--points valid|train] [--json] [--out FILE]`: the loss-curve law
with lr annealing (Tissue et al. 2024) fitted per shape on the runs' whole training curves, and the final loss
it predicts for another schedule or length (plmscale.scaling.curve_law; docs/loss-curves.md)."""

import json

from plmscale.cli.fit import read_table
from plmscale.config import load_config_files
from plmscale.data.atomic import write_text
from plmscale.errors import naming_the_file
from plmscale.scaling import loss_curve
from plmscale.scaling.curve_law import SCHEDULES, curve_law_report, format_report
from plmscale.scaling.table import validate_runs


def configure_parser(parser) -> None:
    parser.add_argument("--curves", required=True, metavar="RUNS_DIR|CURVES.csv",
                        help="the runs' folder (results/runs: each <run id>/curve.csv records the lr of every "
                             "update), or a long CSV with run_id, step, lr, loss (one row per update)")
    parser.add_argument("--runs", required=True, metavar="RUNS.csv",
                        help="the runs table (results/scaling/runs.csv): which runs to fit, their objective, "
                             "model and tokens")
    parser.add_argument("--config", required=True, nargs="+", metavar="CONFIG.yaml",
                        help="the study's config (several files merge left to right): train.warmup_fraction, "
                             "min_lr_ratio and isoflop.decay_fraction shape the predicted schedule")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                        help="the schedule to predict each run's final loss under (default cosine)")
    parser.add_argument("--tokens", type=float, action="append", default=[], metavar="T",
                        help="also predict each shape's final loss at T tokens (repeatable)")
    parser.add_argument("--decay-factor", type=float, default=loss_curve.DECAY_FACTOR,
                        help=f"lambda, the decay of S2's momentum per update (default {loss_curve.DECAY_FACTOR})")
    parser.add_argument("--points", choices=loss_curve.POINTS, default="valid",
                        help="fit to the validation losses (default; predicts final validation loss) or to windowed "
                             "means of the batch losses (denser; predicts the last updates' mean train loss)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", metavar="FILE", help="also write the report as JSON to FILE")


def main(args) -> int:
    config, source = load_config_files(args.config)
    runs = validate_runs(read_table(args.runs, "runs table"), source=str(args.runs))
    report = curve_law_report(args.curves, runs, config, schedule=args.schedule, extra_tokens=args.tokens,
                              decay_factor=args.decay_factor, points=args.points,
                              runs_source=str(args.runs))
    report["inputs"] = {"curves": str(args.curves), "runs": str(args.runs), "config": source}
    text = json.dumps(report, indent=2)
    if args.out:
        with naming_the_file(args.out, "curve-law report"), write_text(args.out) as handle:
            handle.write(text + "\n")
    print(text if args.json else format_report(report))
    return 0
