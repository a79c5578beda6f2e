"""`plmscale export RUN`: a finished run as safetensors + config others can load (plmscale.export.files)."""

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from plmscale.export.files import DTYPES

    parser.add_argument("run", metavar="RUN", help="run id (with --results) or path to a run's final.pt")
    parser.add_argument("--results", default="results", help="results folder of the workflow (default: results)")
    parser.add_argument("--metrics", default=None,
                        help="the run's metrics.json, when RUN is a final.pt away from its results folder")
    parser.add_argument("--out", default=None, help="output directory (default: RESULTS/export/RUN_ID)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="weights dtype (default: float32)")


def main(args: argparse.Namespace) -> int:
    from plmscale.export.files import export_run
    from plmscale.logging_setup import log_to_file

    log_to_file()
    out_dir = export_run(args.run, args.out, args.results, args.metrics, args.dtype)
    print(out_dir)
    return 0
