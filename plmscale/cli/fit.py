"""`plmscale fit RUNS.csv [--curves CURVES.csv] [--config CONFIG.yaml] --out DIR`: every scaling fit,
identified and backtested, written to DIR/fit.json. The config's `fit` section supplies predict_flops
(the backtest's leave-one-budget-out targets), identify, parametric and the defaults of the flags; without
a config, the schema's defaults do."""

import argparse
import logging
from pathlib import Path

import pandas as pd

from plmscale.config import load_config, load_schema, read_yaml
from plmscale.errors import PlmscaleError
from plmscale.provenance import sha256_file
from plmscale.scaling.compare import comparison_lines
from plmscale.scaling.fit import LAW_FAMILIES, fit_all
from plmscale.scaling.fitfile import METHODS, write_fit
from plmscale.scaling.settings import FitSettings
from plmscale.scaling.summary import rollout_summary, summary_table

# The flags that override a key of the config's fit section (each named as its key).
FIT_FLAGS = ("bootstrap", "seed", "min_points_per_budget", "loss_column", "law_families")


def read_table(path, what):
    try:
        return pd.read_csv(path, low_memory=False)
    except FileNotFoundError:
        raise PlmscaleError(f"{what} {path} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise PlmscaleError(f"{what} {path} is not a readable CSV table: {error}") from None


def check_flag_floors(args) -> None:
    """A flag below the schema's minimum is refused naming the flag (the config validation would name
    fit.<key>, which the user did not write)."""
    schema = load_schema()["properties"]["fit"]["properties"]
    for key in FIT_FLAGS:
        value, floor = getattr(args, key, None), schema[key].get("minimum")
        if value is not None and floor is not None and value < floor:
            why = " (a parabola needs 3 model sizes per budget)" if key == "min_points_per_budget" else ""
            raise PlmscaleError(f"--{key.replace('_', '-')} {value} is below its floor {floor}{why}; "
                                f"give {floor} or more")


def fit_settings(args) -> FitSettings:
    """The config's fit section (validated, schema defaults filled in) with the flags given applied; with
    a config, also its train.objectives, so fit.json says what the workflow's fit says of an objective
    outside the IsoFLOP grid."""
    check_flag_floors(args)
    config = read_yaml(args.config) if args.config else {}
    section = dict(config.get("fit") or {})
    section.update({key: getattr(args, key) for key in FIT_FLAGS if getattr(args, key, None) is not None})
    if args.config:
        return FitSettings.from_config(load_config({**config, "fit": section}, source=str(args.config)))
    return FitSettings.from_fit_section(section, source="from plmscale fit's flags")


def run_fit(runs_path, curves_path, out_dir, settings: FitSettings):
    runs = read_table(runs_path, "runs table")
    curves = read_table(curves_path, "curves table") if curves_path else None
    fit = fit_all(runs, curves, settings, source=str(runs_path), curves_source=str(curves_path))
    fit["inputs"] = {"runs": {"path": str(runs_path), "sha256": sha256_file(runs_path)}}
    if curves_path:
        fit["inputs"]["curves"] = {"path": str(curves_path), "sha256": sha256_file(curves_path)}
    return runs, fit, write_fit(fit, Path(out_dir) / "fit.json")


def is_protein_study(runs, args) -> bool:
    """The protein paper's exponents are a fair comparison for a plmscale study (a config, or runs this
    package trained) or on request; not for a text table such as Chinchilla's."""
    return args.paper or args.config is not None or ("source" in runs and (runs["source"] == "own").any())


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUNS.csv",
                        help="table with run_id, objective (clm|mlm), n_params, tokens, flops, loss; optional "
                             "budget (the nominal IsoFLOP budget of each run; docs/fitting.md)")
    parser.add_argument("--curves", metavar="CURVES.csv", help="training curves (long format) for the envelope fit")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for fit.json")
    parser.add_argument("--config", metavar="CONFIG.yaml",
                        help="plmscale config whose fit section gives predict_flops, identify, parametric and "
                             "the defaults of the flags below (e.g. configs/paper-logs.yaml)")
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples (default: the config's fit.bootstrap)")
    parser.add_argument("--seed", type=int, help="bootstrap seed (default: the config's fit.seed)")
    parser.add_argument("--min-points-per-budget", type=int,
                        help="model sizes an IsoFLOP budget needs to be fitted, 3 or more "
                             "(default: the config's fit.min_points_per_budget)")
    parser.add_argument("--loss-column", metavar="COLUMN",
                        help="runs table column fitted as the loss: loss, or valid_loss_id_<bin> for one identity "
                             "bin (default: the config's fit.loss_column; docs/ood.md)")
    parser.add_argument("--law-families", nargs="+", choices=LAW_FAMILIES, metavar="FAMILY",
                        help=f"law families fitted and selected among ({', '.join(LAW_FAMILIES)}; default: the "
                             "config's fit.law_families, parametric alone: farseer's fit costs ~2-5x)")
    parser.add_argument("--paper", action="store_true",
                        help="print the protein paper's exponents under each objective (the default for a "
                             "plmscale study: with --config, or for runs plmscale trained)")


def unselected_notes(fit, settings: FitSettings, runs) -> list:
    """A note per objective for which no law family passed where families that could were not fitted: the
    user may not know they exist. The data-constrained law needs a unique_tokens column."""
    if not settings.backtest:
        return []
    notes = []
    for objective, entry in fit["objectives"].items():
        if "law_selection" not in entry or entry.get("selected_law") is not None:
            continue
        fitted = [family for family in LAW_FAMILIES if family in entry["law_selection"]["families"]]
        left = [family for family in LAW_FAMILIES if family not in fitted
                and (family != "data_constrained" or "unique_tokens" in runs.columns)]
        if left:
            notes.append(f"note: {objective}: no law family fitted ({', '.join(fitted)}) passes identification and its "
                         f"rollout backtest; {', '.join(left)} may forecast these runs better: --law-families "
                         f"{' '.join(fitted + left)} (docs/laws.md)")
    return notes


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    settings = fit_settings(args)
    runs, fit, path = run_fit(args.runs, args.curves, args.out, settings)
    print(summary_table(fit, with_paper=is_protein_study(runs, args)))
    rollouts = rollout_summary(fit)
    if rollouts:
        print(rollouts)
    for line in comparison_lines(fit.get("comparison")):
        print(line)
    for line in unselected_notes(fit, settings, runs):
        print(line)
    failed = [f"{o}/{m}" for o, ms in fit["objectives"].items() for m in METHODS if "error" in ms[m]]
    if failed:
        print(f"note: not fitted for lack of data: {', '.join(failed)} (reasons above and in fit.json)")
    print(f"wrote {path}")
    return 0
