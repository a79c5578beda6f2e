"""`plmscale fit RUNS.csv [--curves CURVES.csv] [--config CONFIG.yaml] --out DIR`: every scaling fit,
identified and backtested, written to DIR/fit.json. The config's `fit` section supplies predict_flops
(the backtest's leave-one-budget-out targets), identify, parametric and the defaults of the flags."""

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
        return pd.read_csv(path, low_memory=False)
    except FileNotFoundError:
        raise PlmscaleError(f"{what} {path} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise PlmscaleError(f"{what} {path} is not a readable CSV table: {error}") from None


def _ci(ci):
    return "[   n/a   ,   n/a   ]" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def summary_table(fit) -> str:
    """objective × method: a [95% CI], b [95% CI], identified or why not, plus why a method is missing."""
    lines = [f"{'objective':<9} {'method':<10} {'a':>6} {'95% CI':>16}   {'b':>6} {'95% CI':>16}   identified"]
    for objective, methods in fit["objectives"].items():
        for method in METHODS:
            entry = methods[method]
            if "error" in entry:
                lines.append(f"{objective:<9} {method:<10} not fitted: {entry['error']}")
                continue
            verdict = {True: "yes", False: "NO: " + "; ".join(entry.get("reasons", [])[:1]),
                       None: "not judged"}[entry.get("identified")]
            lines.append(f"{objective:<9} {method:<10} {entry['a']:6.3f} {_ci(entry.get('a_ci')):>16}   "
                         f"{entry['b']:6.3f} {_ci(entry.get('b_ci')):>16}   {verdict}")
        published = fit["published"].get(objective)
        if published:
            lines.append(f"{objective:<9} {'paper':<10} {published['a']:6.3f} {'':>16}   {published['b']:6.3f}")
    return "\n".join(lines)


def rollout_summary(fit) -> str:
    """One line per objective and backtested method: the rollout's loss and N_opt errors with intervals."""
    lines = []
    for objective, methods in fit["objectives"].items():
        for method, result in (methods.get("backtest") or {}).items():
            if method == "settings" or not isinstance(result, dict):
                continue
            head = f"rollout {objective:<4} {method:<10}"
            if "skipped" in result:
                if method != "envelope":
                    lines.append(f"{head} none: {result['skipped']}")
                continue
            rollout = result["rollout"]
            if "error" in rollout:
                lines.append(f"{head} none: {rollout['error']}")
                continue
            loss = _signed(rollout["loss_error_pct"], rollout.get("loss_error_pct_ci"), "%")
            n_opt = _signed(rollout["n_opt_log_error"], rollout.get("n_opt_log_error_ci"))
            observed = rollout["observed"]["source"].split(" (")[0]
            lines.append(f"{head} fit below {rollout['held_out_budget']:.3g} FLOPs, forecast it: loss {loss}, "
                         f"N_opt x{rollout['n_opt_ratio']:.3g} (ln {n_opt}) vs the observed {observed}")
    return "\n".join(lines)


def _signed(value, ci=None, unit=""):
    if value is None:
        return "n/a"
    text = f"{value:+.2f}{unit}"
    return text + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def fit_settings(config_path=None) -> dict:
    """The `fit` section of a plmscale config (validated, defaults filled in), or the defaults alone. With a
    config, also `grid_objectives` (its train.objectives), so fit.json says what the workflow's fit says of
    an objective outside the IsoFLOP grid."""
    from plmscale.config import load_config, read_yaml

    config = read_yaml(config_path) if config_path else {}
    loaded = load_config(config, source=str(config_path) if config_path else None)
    settings = dict(loaded["fit"])
    if config_path:
        settings["grid_objectives"] = loaded["train"]["objectives"]
    return settings


def run_fit(runs_path, curves_path=None, out_dir=".", bootstrap=1000, seed=0, min_points_per_budget=3,
            settings=None):
    """settings: a config's `fit` section (fit_settings) for predict_flops, identify, parametric, backtest,
    and the grid's objectives."""
    settings = settings or {}
    runs = read_table(runs_path, "runs table")
    curves = read_table(curves_path, "curves table") if curves_path else None
    fit = fit_all(runs, curves, bootstrap=bootstrap, seed=seed, min_points_per_budget=min_points_per_budget,
                  source=str(runs_path), curves_source=str(curves_path),
                  predict_flops=settings.get("predict_flops"), identify_criteria=settings.get("identify"),
                  drop_highest_loss=(settings.get("parametric") or {}).get("drop_highest_loss", 0),
                  run_backtest=settings.get("backtest", True),
                  isoflop_bootstrap=settings.get("isoflop_bootstrap", "runs"),
                  loss_column=settings.get("loss_column", "loss"), grid_objectives=settings.get("grid_objectives"))
    fit["inputs"] = {"runs": {"path": str(runs_path), "sha256": sha256_file(runs_path)}}
    if curves_path:
        fit["inputs"]["curves"] = {"path": str(curves_path), "sha256": sha256_file(curves_path)}
    return fit, write_fit(fit, Path(out_dir) / "fit.json")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUNS.csv",
                        help="table with run_id, objective (clm|mlm), n_params, tokens, flops, loss")
    parser.add_argument("--curves", metavar="CURVES.csv", help="training curves (long format) for the envelope fit")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for fit.json")
    parser.add_argument("--config", metavar="CONFIG.yaml",
                        help="plmscale config whose fit section gives predict_flops, identify, parametric and "
                             "the defaults of the flags below (e.g. configs/paper-logs.yaml)")
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples (default: the config's, else 1000)")
    parser.add_argument("--seed", type=int, help="bootstrap seed (default: the config's, else 0)")
    parser.add_argument("--min-points-per-budget", type=int,
                        help="model sizes an IsoFLOP budget needs to be fitted (default: the config's, else 3)")
    parser.add_argument("--loss-column", metavar="COLUMN",
                        help="runs table column fitted as the loss: loss, or valid_loss_id_<bin> for one identity "
                             "bin (default: the config's fit.loss_column, else loss; docs/ood.md)")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    settings = fit_settings(args.config)
    bootstrap = settings["bootstrap"] if args.bootstrap is None else args.bootstrap
    seed = settings["seed"] if args.seed is None else args.seed
    min_points = settings["min_points_per_budget"] if args.min_points_per_budget is None else args.min_points_per_budget
    if bootstrap < 0:
        raise PlmscaleError("--bootstrap must be 0 or more")
    if args.loss_column is not None:
        settings = {**settings, "loss_column": args.loss_column}
    fit, path = run_fit(args.runs, args.curves, args.out, bootstrap, seed, min_points, settings)
    print(summary_table(fit))
    rollouts = rollout_summary(fit)
    if rollouts:
        print(rollouts)
    failed = [f"{o}/{m}" for o, ms in fit["objectives"].items() for m in METHODS if "error" in ms[m]]
    if failed:
        print(f"note: not fitted for lack of data: {', '.join(failed)} (reasons above and in fit.json)")
    print(f"wrote {path}")
    return 0
