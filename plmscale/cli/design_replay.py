"""`plmscale design replay POOL.csv --targets TARGETS.csv --budget-fraction F --strategy S [--strategy S2 | all]
--repeats K --out DIR`: replay run-selection strategies on a pool of finished runs and judge their forecasts of
larger runs (plmscale.design.replay), and say how close any selection of that budget could come
(plmscale.design.replay_bound); writes DIR/replay.json and prints a table."""

import argparse
from pathlib import Path

from plmscale.design import replay as rp
from plmscale.design import replay_bound, replay_verdict
from plmscale.errors import PlmscaleError, write_error
from plmscale.scaling.results import write_json


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pool", metavar="POOL.csv",
                        help="finished runs to select from: run_id, n_params, tokens, flops, loss "
                             "(optional unique_tokens, replicate; extra columns are ignored)")
    parser.add_argument("--targets", required=True, metavar="TARGETS.csv",
                        help="larger runs to forecast, never selected: run_id, n_params, tokens, loss")
    parser.add_argument("--budget-fraction", type=float, required=True, metavar="F",
                        help="share of the pool's total FLOPs a strategy may spend, e.g. 0.05")
    parser.add_argument("--strategy", action="append", metavar="S",
                        help=f"{', '.join(rp.STRATEGIES)} or all (default); may be given several times")
    parser.add_argument("--repeats", type=int, default=1, metavar="K",
                        help="replays per strategy (different seeds for random; the others are deterministic)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random strategy's draws")
    parser.add_argument("--verdicts", action="store_true",
                        help="also ask plmscale's fit stage whether it would forecast with each replay's law "
                             "(~2-7 s per replay); the whole pool's verdict is always given")
    parser.add_argument("--bar", type=float, default=0.05, metavar="R2GAP",
                        help="also report the smallest budget fraction whose best selection is expected within "
                             "this R² gap of the whole pool's fit (default 0.05; first order, at the pool's law)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for replay.json")


def format_result(result) -> str:
    """The table the command prints: per strategy F, mean |error|, R², (with --verdicts) the share of its
    replays plmscale would forecast with and (where `expected` is in the result: replay_bound) its expected R²
    gap; then the whole pool's verdict in a sentence, and the best selection's expected gap and the budget
    fraction the bar needs."""
    expected = result.get("expected")
    lines = [f"{'strategy':<10} {'F':>6} {'mean |error| %':>15} {'R²':>8} {'plmscale forecasts':>19}"
             + (f" {'expected R² gap':>16}" if expected else "")]
    all_runs = result["all_runs"]
    rows = list(result["strategies"].items()) + [("all runs", all_runs)]
    for name, entry in rows:
        gap = f" {expected['r2_gap'][name]:>16.3f}" if expected and name in expected["r2_gap"] else ""
        r2 = "n/a" if entry["r2"] is None else f"{entry['r2']:.3f}"
        if "forecast_share" in entry:
            share = f"{entry['forecast_share']:.0%} of replays"
        elif "verdict" in entry:
            share = "yes" if entry["verdict"]["forecasts"] else "no"
        else:
            share = "not asked"
        lines.append(f"{name:<10} {entry['budget_fraction']:>6g} {entry['mean_abs_pct_error']:>15.3f} {r2:>8} "
                     f"{share:>19}{gap}")
    if "verdict" in all_runs:
        lines.append(replay_verdict.summary_line(all_runs["verdict"]))
    if expected:
        best = expected["best_selection"]
        lines.append(f"expected R² gap: the forecasts' variance alone, to first order, at the whole pool's law with "
                     f"the noise its residuals show ({expected['noise'] * 100:.2f}%); a law that misfits the pool "
                     f"adds bias on top. The best selection found within this budget ({best['n_selected']} runs) is "
                     f"expected {best['r2_gap']:.3f} below the all-runs R²: no strategy is expected to do better.")
        meeting = expected.get("fraction_meeting")
        if meeting:
            lines.append(f"The best selection is expected within {meeting['r2_gap']:g} of the all-runs R² from about "
                         f"F = {meeting['budget_fraction']:.3g} of the pool's FLOPs.")
    return "\n".join(lines)


def main(args) -> int:
    if not 0 < args.bar < 1:
        raise PlmscaleError(f"--bar is an R² gap and must be in (0, 1), got {args.bar}")
    pool = rp.read_table(args.pool, "pool table")
    targets = rp.read_table(args.targets, "targets table")
    pool, targets = rp.validate_pool_and_targets(pool, targets, f"pool table {args.pool}",
                                                 f"targets table {args.targets}")
    result = rp.replay(pool, targets, args.strategy or ["all"], args.budget_fraction, args.repeats, args.seed,
                       verdicts="every" if args.verdicts else "all_runs")
    result["expected"] = replay_bound.expected(pool, targets, result, args.bar)
    path = Path(args.out) / "replay.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(path, error, "replay result", any_error=True) from None
    write_json(result, path)
    print(format_result(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # `python -m plmscale.cli.design_replay` (plmscale design replay hands over to main)
    import sys

    parser = argparse.ArgumentParser(prog="plmscale design replay", description=__doc__)
    configure_parser(parser)
    try:
        sys.exit(main(parser.parse_args()))
    except PlmscaleError as error:
        print(f"plmscale design replay: error: {error}", file=sys.stderr)
        sys.exit(2)
