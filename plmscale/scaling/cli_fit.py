"""`plmscale fit RUNS.csv [--curves CURVES.csv] --out DIR`: every scaling fit, written to DIR/fit.json."""

import argparse
import logging
from pathlib import Path

import pandas as pd

from plmscale.errors import PlmscaleError
from plmscale.provenance import sha256_file
from plmscale.scaling.fit import fit_all
from plmscale.scaling.fitfile import METHODS, write_fit


def read_table(path, what):
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise PlmscaleError(f"{what} {path} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise PlmscaleError(f"{what} {path} is not a readable CSV table: {error}") from None


def _ci(ci):
    return "[   n/a   ,   n/a   ]" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def summary_table(fit) -> str:
    """objective × method: a [95% CI], b [95% CI], plus why a method is missing."""
    lines = [f"{'objective':<9} {'method':<10} {'a':>6} {'95% CI':>16}   {'b':>6} {'95% CI':>16}"]
    for objective, methods in fit["objectives"].items():
        for method in METHODS:
            entry = methods[method]
            if "error" in entry:
                lines.append(f"{objective:<9} {method:<10} not fitted: {entry['error']}")
                continue
            lines.append(f"{objective:<9} {method:<10} {entry['a']:6.3f} {_ci(entry.get('a_ci')):>16}   "
                         f"{entry['b']:6.3f} {_ci(entry.get('b_ci')):>16}")
        published = fit["published"].get(objective)
        if published:
            lines.append(f"{objective:<9} {'paper':<10} {published['a']:6.3f} {'':>16}   {published['b']:6.3f}")
    return "\n".join(lines)


def run_fit(runs_path, curves_path=None, out_dir=".", bootstrap=1000, seed=0, min_points_per_budget=3):
    runs = read_table(runs_path, "runs table")
    curves = read_table(curves_path, "curves table") if curves_path else None
    fit = fit_all(runs, curves, bootstrap=bootstrap, seed=seed, min_points_per_budget=min_points_per_budget,
                  source=str(runs_path), curves_source=str(curves_path))
    fit["inputs"] = {"runs": {"path": str(runs_path), "sha256": sha256_file(runs_path)}}
    if curves_path:
        fit["inputs"]["curves"] = {"path": str(curves_path), "sha256": sha256_file(curves_path)}
    return fit, write_fit(fit, Path(out_dir) / "fit.json")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUNS.csv",
                        help="table with run_id, objective (clm|mlm), n_params, tokens, flops, loss")
    parser.add_argument("--curves", metavar="CURVES.csv", help="training curves (long format) for the envelope fit")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for fit.json")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default %(default)s)")
    parser.add_argument("--min-points-per-budget", type=int, default=3,
                        help="model sizes an IsoFLOP budget needs to be fitted (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.bootstrap < 0:
        raise PlmscaleError("--bootstrap must be 0 or more")
    fit, path = run_fit(args.runs, args.curves, args.out, args.bootstrap, args.seed, args.min_points_per_budget)
    print(summary_table(fit))
    failed = [f"{o}/{m}" for o, ms in fit["objectives"].items() for m in METHODS if "error" in ms[m]]
    if failed:
        print(f"note: not fitted for lack of data: {', '.join(failed)} (reasons above and in fit.json)")
    print(f"wrote {path}")
    return 0
