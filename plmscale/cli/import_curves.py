"""`plmscale import-curves DIR --out runs.csv [--curves-out curves.csv] [--config IMPORT.yaml]`: released
training curves (TensorBoard CSV exports) into the scaling tables (plmscale.scaling.importer)."""

import argparse
import logging

from plmscale.scaling.importer import import_curves, load_import_config
from plmscale.scaling.table import write_tables


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("curves_dir", metavar="DIR", help="folder of TensorBoard CSV exports (e.g. ScalingProteinLM's data/)")
    parser.add_argument("--config", default="configs/paper-logs-import.yaml",
                        help="import config: globs, objectives, size map, units (default: %(default)s)")
    parser.add_argument("--out", required=True, help="runs table to write (runs.csv)")
    parser.add_argument("--curves-out", help="also write the whole curves in long format (curves.csv)")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    runs, curves = import_curves(args.curves_dir, load_import_config(args.config))
    write_tables(runs, curves, args.out, args.curves_out)
    print(f"wrote {len(runs)} runs to {args.out}" + (f" and {len(curves)} curve points to {args.curves_out}"
                                                     if args.curves_out else ""))
    return 0
