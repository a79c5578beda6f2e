"""`plmscale design --config CFG --target-flops C [--prior fit.json | --prior published | --runs runs.csv]
--study-budget FLOPS [--simulations K] [--out DIR]`: the planner (plmscale.design.planner) — candidate IsoFLOP
designs around the config's grid, each simulated and costed; a table, a figure and the chosen design as a
config fragment. `plmscale design replay ...` runs plmscale.cli.design_replay (selection strategies replayed
on a finished pool)."""

import argparse
import importlib
import json
import math
import sys
from pathlib import Path

import pandas as pd
import yaml

from plmscale.config import load_config_files, read_json_object
from plmscale.data.atomic import write_text
from plmscale.errors import PlmscaleError
from plmscale.design import planner
from plmscale.design.round_files import adaptive_enabled
from plmscale.grid.plan import train_split_tokens

REPLAY_MODULE = "plmscale.cli.design_replay"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", nargs="+", default=["config.yaml"],
                        help="config file(s) whose grid is planned (default: config.yaml; several are merged left "
                             "to right, as snakemake --configfile merges them)")
    parser.add_argument("--target-flops", type=float, help="the budget C the study should forecast (required)")
    parser.add_argument("--prior", help="the prior law L(N, D): a fit.json (the law it selected, the parametric one "
                                        "unless another family was) or `published` "
                                        "(Cheng et al.'s); default with --runs: the law fitted to those runs")
    parser.add_argument("--runs", help="a runs table (runs.csv): the prior law fitted to it (unless --prior), and "
                                       "the run-to-run noise measured from its replicates where it has them")
    parser.add_argument("--study-budget", type=float,
                        help="FLOPs (train.flops_definition) the study may spend; the chosen design fits in it")
    parser.add_argument("--objective", choices=["clm", "mlm"], help="objective to simulate (default: the grid's first)")
    parser.add_argument("--noise", type=float,
                        help="run-to-run noise of one loss as a relative core sd, e.g. 0.005 (default: measured from "
                             f"--runs replicates, else {planner.DEFAULT_NOISE * 100:.2f}%%, docs/planner.md)")
    parser.add_argument("--noise-tails", type=float, default=planner.DEFAULT_TAIL_DF, metavar="DF",
                        help=f"degrees of freedom of the noise's Student-t tails (default {planner.DEFAULT_TAIL_DF:g}; "
                             "inf: Gaussian)")
    parser.add_argument("--simulations", type=int, default=planner.DEFAULT_SIMULATIONS,
                        help=f"simulated studies per design (default {planner.DEFAULT_SIMULATIONS})")
    parser.add_argument("--adaptive-simulations", type=int, default=planner.ADAPTIVE_SIMULATIONS, metavar="K",
                        help="with train.isoflop.adaptive on: whole adaptive studies simulated, rounds and all, for "
                             f"the config's own row (default {planner.ADAPTIVE_SIMULATIONS}; 0: its first round only)")
    parser.add_argument("--results", default="results",
                        help="results folder whose train-split manifest (data/shards/train/manifest.json) gives the "
                             "split's tokens, to count each design's epochs (default: results; skipped if absent)")
    parser.add_argument("--train-tokens", type=float,
                        help="the train split's tokens, instead of reading them from --results (e.g. planning for "
                             "a corpus not tokenized yet)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulations (default 0)")
    parser.add_argument("--out", default="results/design",
                        help="folder for design.json, design_planner.png and chosen.yaml (default: results/design)")
    # `plmscale design replay ...`: everything after the word goes to the replay command's own parser.
    parser.add_argument("subcommand", nargs=argparse.REMAINDER, metavar="replay ...",
                        help="`replay POOL.csv ...`: replay run-selection strategies on a finished pool "
                             "(plmscale design replay --help)")


def run_replay(argv) -> int:
    """`plmscale design replay ARGS`, handed to plmscale.cli.design_replay (imported only here)."""
    try:
        module = importlib.import_module(REPLAY_MODULE)
    except ModuleNotFoundError as error:
        if error.name != REPLAY_MODULE:
            raise
        raise PlmscaleError(f"`plmscale design replay` is not part of this installation ({REPLAY_MODULE} is "
                            "missing); update plmscale") from None
    parser = argparse.ArgumentParser(prog="plmscale design replay",
                                     description="replay run-selection strategies on a finished pool of runs")
    module.configure_parser(parser)
    return int(module.main(parser.parse_args(argv)) or 0)


def _read_runs(args):
    if not args.runs:
        return None
    try:
        return pd.read_csv(args.runs)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise PlmscaleError(f"--runs {args.runs}: cannot read the runs table ({error})") from None


def _prior_law(args, runs, objective: str):
    if args.prior == "published":
        return planner.prior_published(objective)
    if args.prior:
        return planner.prior_from_fit(read_json_object(args.prior, "fit.json"), objective, args.prior)
    if runs is not None:
        return planner.prior_from_runs(runs, objective, args.runs)
    raise PlmscaleError("give the prior law: --prior fit.json (a finished fit), --prior published (the paper's) "
                        "or --runs runs.csv (fitted to those runs)")


def other_priors(args, runs, objectives, objective: str) -> dict:
    """{objective: prior law} for the config's other objectives, from the same --prior / --runs (runs: that
    table, read once), so an adaptive study's rounds are simulated for all of them; one the source has no law
    for is said and left out."""
    priors = {}
    for name in objectives:
        if name == objective:
            continue
        try:
            priors[name] = _prior_law(args, runs, name)
        except PlmscaleError as error:
            print(f"plmscale design: {name}'s adaptive rounds are not simulated: {error}", file=sys.stderr)
    return priors


def resolve_prior(args, runs, objective: str):
    """(prior law, noise, noise source) from --prior / --runs (runs: that table, read) / --noise."""
    prior = _prior_law(args, runs, objective)
    measured = planner.measured_noise(runs, objective, args.runs) if runs is not None else None
    if args.noise is not None:
        return prior, args.noise, f"given: {args.noise:.2%} core sd (--noise)"
    if measured is not None:
        return prior, *measured
    return prior, planner.DEFAULT_NOISE, planner.DEFAULT_NOISE_SOURCE


def resolve_train_tokens(args) -> float | None:
    """The train split's tokens: --train-tokens, else the manifest under --results (None where absent)."""
    if args.train_tokens is not None:
        if not (args.train_tokens > 0 and math.isfinite(args.train_tokens)):
            raise PlmscaleError(f"--train-tokens {args.train_tokens!r}: give the train split's tokens, a positive count")
        return float(args.train_tokens)
    return train_split_tokens(args.results)


def fragment_text(plan: dict, config_files) -> str:
    row = plan["rows"][plan["chosen"]]
    header = [f"# The design plmscale design chose for {plan['objective'].upper()} at C = {plan['target_flops']:.3g}: "
              f"{row['name']}",
              f"# {plan['chosen_why']}; {row['n_runs']} IsoFLOP runs, {row['flops']:.3g} FLOPs, "
              f"{row['identified_fraction']:.0%} of {plan['simulations']} simulated studies identified.",
              f"# prior: {plan['prior']}",
              f"# Use: snakemake --configfile {' '.join(config_files)} THIS_FILE"]
    return "\n".join(header) + "\n" + yaml.safe_dump(row["fragment"], sort_keys=False)


def main(args) -> int:
    if args.subcommand:
        if args.subcommand[0] != "replay":
            raise PlmscaleError(f"unknown design sub-command {args.subcommand[0]!r}: the planner takes options only "
                                "(--config, --target-flops, ...), and `plmscale design replay ...` replays strategies")
        return run_replay(args.subcommand[1:])
    if args.target_flops is None:
        raise PlmscaleError("give --target-flops C: the budget the study's forecast is for")
    if args.simulations < 20:
        raise PlmscaleError(f"--simulations {args.simulations}: at least 20 studies are needed for a 95% range")
    if args.adaptive_simulations < 0:
        raise PlmscaleError(f"--adaptive-simulations {args.adaptive_simulations}: give 0 or more studies")
    config, source = load_config_files(args.config)
    objective = args.objective or config["train"]["objectives"][0]
    runs = _read_runs(args)
    prior, noise, noise_source = resolve_prior(args, runs, objective)
    train_tokens = resolve_train_tokens(args)
    simulates_rounds = adaptive_enabled(config) and args.adaptive_simulations
    others = other_priors(args, runs, config["train"]["objectives"], objective) if simulates_rounds else {}
    plan = planner.plan_designs(config, prior, args.target_flops, args.study_budget, objective=objective, noise=noise,
                                noise_source=noise_source, tail_df=args.noise_tails, simulations=args.simulations,
                                seed=args.seed, source=source, adaptive_simulations=args.adaptive_simulations,
                                train_tokens=train_tokens, other_priors=others)
    print(planner.format_plan(plan))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with write_text(out / "design.json") as handle:
        json.dump(planner.plan_json(plan), handle, indent=1)
        handle.write("\n")
    from plmscale.plots.design_planner import plot_design_planner  # matplotlib only when drawing
    plot_design_planner(plan, out / "design_planner.png")
    written = [out / "design.json", out / "design_planner.png"]
    if plan["chosen"] is not None:
        with write_text(out / "chosen.yaml") as handle:
            handle.write(fragment_text(plan, args.config))
        written.append(out / "chosen.yaml")
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    return 0
