"""`plmscale status`: where a study stands, from its results and logs (the same on Slurm: no queue query)."""

import json
import sys
from dataclasses import asdict
from pathlib import Path

from plmscale.config import load_config_files
from plmscale.design.round_files import adaptive_enabled, read_round, round_specs
from plmscale.grid.plan import planned_specs
from plmscale.grid.status import STALE_AFTER_SECONDS, format_status, study_status, summary


def configure_parser(parser) -> None:
    parser.add_argument("--config", nargs="+", default=["config.yaml"],
                        help="config file(s) the study runs with, merged left to right (default: config.yaml)")
    parser.add_argument("--results", default="results", help="the study's results folder (default: results)")
    parser.add_argument("--logs", default="logs", help="the study's logs folder (default: logs)")
    parser.add_argument("--png", default=None,
                        help="where to draw the IsoFLOP runs so far once two budgets have finished "
                             "(default: RESULTS/status.png)")
    parser.add_argument("--stale-after", type=float, default=STALE_AFTER_SECONDS,
                        help="seconds without a log line after which an unfinished run counts as stalled "
                             f"(default: {STALE_AFTER_SECONDS:g})")
    parser.add_argument("--json", action="store_true", help="print every run's state and the totals as JSON")


def adaptive_round_specs(config: dict, results) -> list:
    """The runs the adaptive rounds decided so far (their round files under RESULTS/scaling/design/): planned
    too, though no config lists them."""
    if not adaptive_enabled(config):
        return []
    paths = sorted(Path(results, "scaling", "design").glob("round_*.json"),
                   key=lambda p: int(p.stem.split("_")[1]) if p.stem.split("_")[1].isdigit() else 0)
    return [spec for path in paths for spec in round_specs(read_round(path), where=str(path)).values()]


def main(args) -> int:
    config, source = load_config_files(args.config)
    specs = planned_specs(config, source) + adaptive_round_specs(config, args.results)
    statuses = study_status(specs, args.results, args.logs, stale_after=args.stale_after)
    totals = summary(statuses)
    png = None
    if len(totals["finished_budgets"]) >= 2:
        from plmscale.plots.status import plot_study_progress  # matplotlib only when there is a picture
        png = Path(args.png or Path(args.results) / "status.png")
        plot_study_progress(statuses, png)
    if args.json:
        json.dump({"summary": totals, "runs": [asdict(s) for s in statuses], "png": str(png) if png else None},
                  sys.stdout, indent=1)
        print()
    else:
        print(format_status(statuses))
        print(f"IsoFLOP runs so far: {png}" if png else
              f"IsoFLOP picture: once two budgets have finished ({len(totals['finished_budgets'])} so far)")
    return 0
