"""Benchmark: run-selection strategies replayed on finished pools (plmscale.design.replay), at several budget
fractions F, against the all-runs fit of the same pool, in three stages:

    python benchmarks/replay_strategies.py [--stages selection heldout released]
        [--fractions 0.01 0.05 0.10] [--repeats 10] [--selection 8] [--synthetic 12] [--rolling 1 2 3]
        [--data ../shared/published/ScalingProteinLM/data] [--markdown docs/replay-measured.md]

- selection: choose plmscale's strategy settings (cost power p in --cost-powers, exchange on/off) on
  --selection synthetic pools drawn from --selection-seed. The rule, fixed before any run: the variant with
  the lowest mean absolute % error averaged over the fractions and pools wins ("beats random on average");
  a tie keeps the shipped default. The script prints the winner; the default (replay.COST_POWER,
  replay.EXCHANGE_ROUNDS) changes only by hand, only when the winner differs.
- heldout: every strategy, plmscale's with its shipped default, on --synthetic fresh pools drawn from
  --synthetic-seed (disjoint from the selection's and from the earlier table's seed 0).
- released: the authors' released curves (Cheng et al. 2024), imported as configs/paper-logs.yaml does,
  per objective one rolling-origin pool per k in --rolling: hold out the top k IsoFLOP budgets (targets: their
  runs and every larger run, flops >= TARGET_SHARE x the k-th budget), the pool is every earlier run
  (replay.rolling_origin_splits); figures are means over the k.

Synthetic pools: known laws (E, A, B, α, β drawn as tests/scaling_synthetic.py draws them) with 0.5% log-normal
noise: an IsoFLOP grid of 7 half-decade budgets 1e17..1e20, 8 sizes each within 6x of the true optimum;
targets: 5 sizes within 3x of the optimum at 1e21 and at 1e22 (noisy too).

Verdicts (--verdicts, --heldout-verdicts): plmscale's fit stage is asked whether it would forecast with the law
fitted to all of a pool's runs, and with the law each designed strategy's selection fits (design/replay_verdict.py;
~2-7 s per fit); "plmscale forecasts" is the share of those it would. The released stage's notes say, per pool,
why the fit stage refuses the whole pool's law where it does, and judge the bar on the pools it does not refuse.

Random's figures are means over --repeats seeds; the deterministic strategies replay once per pool. Every
figure is a mean over the stage's pools. "beats random" compares the mean absolute % error (in brackets: the
share of random's repeats, per pool, with a larger error than the strategy's, averaged over pools); "R² gap"
is the all-runs fit's R² minus the strategy's, ± its standard error over the pools.
"""

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from markdown_table import publish  # noqa: E402  (benchmarks/, this script's directory)
from plmscale.design import replay as rp  # noqa: E402
from plmscale.design import replay_verdict  # noqa: E402
from plmscale.provenance import cpu_model  # noqa: E402

TARGET_SHARE = 0.9
SYNTHETIC_BUDGETS = 10.0 ** np.arange(17, 20.01, 0.5)
SYNTHETIC_TARGET_BUDGETS = (1e21, 1e22)


def released_runs(data_dir, import_config):
    """{objective: scratch runs (run_id, n_params, tokens, flops, loss, budget)} of the released curves."""
    from plmscale.scaling.importer import import_curves, load_import_config
    from plmscale.scaling.table import scratch_runs, validate_runs

    runs, _ = import_curves(data_dir, load_import_config(import_config))
    scratch = scratch_runs(validate_runs(runs))
    columns = ["run_id", "n_params", "tokens", "flops", "loss", "budget"]
    return {objective: group[columns].reset_index(drop=True) for objective, group in scratch.groupby("objective")}


def _optimal_n(law, flops):
    g = (law["alpha"] * law["A"] / (law["beta"] * law["B"])) ** (1 / (law["alpha"] + law["beta"]))
    return g * (flops / 6) ** (law["beta"] / (law["alpha"] + law["beta"]))


def synthetic_pool(rng, noise=0.005, target_budgets=SYNTHETIC_TARGET_BUDGETS):
    """(pool, targets, law) drawn from a random Chinchilla law (the ranges of tests/scaling_synthetic.py)."""
    law = {"E": rng.uniform(1.6, 2.4), "A": np.exp(rng.uniform(4, 7)), "B": np.exp(rng.uniform(6, 9)),
           "alpha": rng.uniform(0.28, 0.42), "beta": rng.uniform(0.26, 0.40)}

    def grid(budgets, sizes, spread, prefix):
        rows = []
        for budget in budgets:
            for j, offset in enumerate(np.linspace(-np.log(spread), np.log(spread), sizes)):
                n = float(round(_optimal_n(law, budget) * np.exp(offset)))
                d = budget / (6 * n)
                loss = law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]
                loss *= np.exp(rng.normal(0, noise))
                rows.append({"run_id": f"{prefix}_{budget:.0e}_{j}", "n_params": n, "tokens": d, "flops": budget,
                             "loss": loss})
        return pd.DataFrame(rows)

    return grid(SYNTHETIC_BUDGETS, 8, 6.0, "pool"), grid(target_budgets, 5, 3.0, "target"), law


def measure(pool, targets, strategies, fractions, repeats, seed=0, variants=(), verdicts=None):
    """{F: replay result} and the seconds spent. Each variant (label, cost_power, exchange_rounds) adds
    plmscale's strategy replayed with those settings, as strategy `label`. verdicts: None, "all_runs" (the fit
    stage's verdict on the whole pool) or "every" (also on every selection of the deterministic strategies;
    random's ten repeats per F would cost ~2-7 s each, so they are not asked). The whole pool's verdict is
    asked once, not once per F."""
    start = time.perf_counter()
    pool_verdict = replay_verdict.verdict(pool) if verdicts else None
    results = {}
    for f in fractions:
        if verdicts == "every":
            designed = [s for s in strategies if s in rp.DETERMINISTIC]
            results[f] = rp.replay(pool, targets, designed, f, repeats, seed, verdicts="every",
                                   pool_verdict=pool_verdict)
            others = [s for s in strategies if s not in rp.DETERMINISTIC]
            if others:
                results[f]["strategies"].update(rp.replay(pool, targets, others, f, repeats, seed)["strategies"])
            results[f]["strategies"] = {s: results[f]["strategies"][s] for s in strategies}
        else:
            results[f] = rp.replay(pool, targets, strategies, f, repeats, seed, verdicts=verdicts,
                                   pool_verdict=pool_verdict)
    for label, power, rounds in variants:
        for f in fractions:
            results[f]["strategies"][label] = rp.replay(pool, targets, ["plmscale"], f, 1, seed, power,
                                                        rounds)["strategies"]["plmscale"]
    return results, time.perf_counter() - start


def plmscale_variants(cost_powers):
    """[(label, cost_power, exchange_rounds)]: every cost power with the exchange on (the default number
    of rounds) and off."""
    return [(f"plmscale (cost^{p:g}, {'exchange' if rounds else 'no exchange'})", p, rounds)
            for p in cost_powers for rounds in (rp.EXCHANGE_ROUNDS, 0)]


def choose_variant(results_per_pool, variants, fractions):
    """The selection rule: the variant with the lowest mean absolute % error averaged over fractions and
    pools; a tie keeps the shipped default. Returns (label, cost_power, exchange_rounds, {label: error})."""
    errors = {label: float(np.mean([r[f]["strategies"][label]["mean_abs_pct_error"]
                                    for r in results_per_pool for f in fractions])) for label, _, _ in variants}
    default = next(v for v in variants if v[1] == rp.COST_POWER and v[2] == rp.EXCHANGE_ROUNDS)
    best = min(variants, key=lambda v: (round(errors[v[0]], 6), v != default))
    return (*best, errors)


def _share_of_random_beaten(strategies, entry):
    """Share of random's repeats on one pool whose error is above this strategy's mean error there."""
    random_errors = [p["mean_abs_pct_error"] for p in strategies["random"]["per_repeat"]]
    return float(np.mean([e > entry["mean_abs_pct_error"] for e in random_errors]))


def table_rows(name, results_per_pool, strategies, fractions):
    """Rows of the markdown table: per F and strategy the mean error and R² (means over pools)."""
    rows = []
    for f in fractions:
        all_r2 = [r[f]["all_runs"]["r2"] for r in results_per_pool]
        all_err = np.mean([r[f]["all_runs"]["mean_abs_pct_error"] for r in results_per_pool])
        random_err = np.mean([r[f]["strategies"]["random"]["mean_abs_pct_error"] for r in results_per_pool])
        for s in strategies:
            entries = [r[f]["strategies"][s] for r in results_per_pool]
            err = np.mean([e["mean_abs_pct_error"] for e in entries])
            r2 = np.mean([e["r2"] if e["r2"] is not None else np.nan for e in entries])
            spent = np.mean([np.mean([p["flops_fraction"] for p in e["per_repeat"]]) for e in entries])
            picked = np.mean([np.mean([p["n_selected"] for p in e["per_repeat"]]) for e in entries])
            gaps = np.array(all_r2, float) - np.array([e["r2"] if e["r2"] is not None else np.nan for e in entries])
            gap = np.mean(all_r2) - r2
            # the pools differ far more than the strategies: the gap's standard error over pools says how far
            # a mean over this many pools can be trusted
            gap_se = np.std(gaps, ddof=1) / np.sqrt(len(gaps)) if len(gaps) > 1 else np.nan
            beaten = np.mean([_share_of_random_beaten(r[f]["strategies"], e)
                              for r, e in zip(results_per_pool, entries)])
            verdict = "—" if s == "random" else f"{'yes' if err < random_err else 'no'} ({beaten:.0%})"
            shares = [e["forecast_share"] for e in entries if "forecast_share" in e]
            forecasts = f"{np.mean(shares):.0%}" if len(shares) == len(entries) else "—"
            rows.append(f"| {name} | {f:g} | {s} | {spent:.3f} | {picked:.1f} | {err:.2f} | {r2:.3f} | {verdict} | "
                        f"{gap:+.3f} ± {gap_se:.3f} | {forecasts} |")
        all_verdicts = [r[f]["all_runs"].get("verdict") for r in results_per_pool]
        all_forecasts = (f"{np.mean([v['forecasts'] for v in all_verdicts]):.0%}" if all(all_verdicts) else "—")
        rows.append(f"| {name} | {f:g} | *all runs* | 1 | all | {all_err:.2f} | {np.mean(all_r2):.3f} | | | "
                    f"{all_forecasts} |")
    return rows


def verdict_line(name, results_per_pool, labels):
    """The fit stage's verdict on each pool's whole law: would plmscale forecast with it, and if not, why."""
    first = min(results_per_pool[0])
    parts = []
    for label, r in zip(labels, results_per_pool):
        verdict = r[first]["all_runs"].get("verdict")
        if verdict is None:
            return ""
        parts.append(f"{label} forecasts" if verdict["forecasts"] else f"{label} refused ({verdict['reasons'][0]})")
    return f"{name}, the fit stage on all of each pool's runs: " + "; ".join(parts) + "."


def bar_where_plmscale_forecasts(name, results_per_pool, labels, fractions, strategy="plmscale"):
    """The issue's bar on the pools whose whole law the fit stage would forecast with: the strategy's mean error
    against random's per F, and the R² gap to the all-runs fit at the largest F."""
    kept = [(label, r) for label, r in zip(labels, results_per_pool)
            if (r[fractions[0]]["all_runs"].get("verdict") or {}).get("forecasts")]
    if not kept:
        return f"{name}: the fit stage refuses the whole law on every pool, so no pool can judge the bar."
    parts = []
    for f in fractions:
        mine = np.mean([r[f]["strategies"][strategy]["mean_abs_pct_error"] for _, r in kept])
        random = np.mean([r[f]["strategies"]["random"]["mean_abs_pct_error"] for _, r in kept])
        parts.append(f"F = {f:g} {mine:.2f} vs random {random:.2f}%")
    top = fractions[-1]
    gap = np.mean([r[top]["all_runs"]["r2"] - r[top]["strategies"][strategy]["r2"] for _, r in kept])
    return (f"{name}, the bar on the pools the fit stage forecasts ({', '.join(label for label, _ in kept)}): "
            f"{strategy} {'; '.join(parts)}; R² gap at F = {top:g} {gap:+.3f}.")


def refused_selections_line(name, results_per_pool, fractions, strategy="plmscale"):
    """How often the fit stage refuses the strategy's own selection, and the R² gap at the largest F over the
    pools where it does not (the forecasts a user of plmscale would be given)."""
    top = fractions[-1]
    entries = [(r[top]["strategies"][strategy], r[top]["all_runs"]) for r in results_per_pool]
    if not all("forecast_share" in e for e, _ in entries):
        return ""
    kept = [all_runs["r2"] - e["r2"] for e, all_runs in entries if e["forecast_share"] == 1.0 and e["r2"] is not None]
    gap = f"{np.mean(kept):+.3f} ± {np.std(kept, ddof=1) / np.sqrt(len(kept)):.3f}" if len(kept) > 1 else "n/a"
    return (f"{name}, F = {top:g}: the fit stage refuses {strategy}'s selection on {len(entries) - len(kept)} of "
            f"{len(entries)} pools; on the {len(kept)} it forecasts with, the R² gap to all runs is {gap}.")


def _synthetic_results(count, pool_seed, strategies, args, variants=(), verdicts=None):
    rng = np.random.default_rng(pool_seed)
    results, seconds = [], 0.0
    for _ in range(count):
        pool, targets, _ = synthetic_pool(rng)
        measured, spent = measure(pool, targets, strategies, args.fractions, args.repeats, args.seed, variants,
                                  verdicts)
        results.append(measured)
        seconds += spent
    return results, f"{count} pools of {len(pool)} runs, {len(targets)} targets, {seconds:.1f} s"


def per_pool_line(name, results_per_pool, labels, fractions, strategy="plmscale"):
    """One line per pool kind: the strategy's and random's mean error on each pool, per F, so a mean over
    pools can be checked against the pools it averages."""
    parts = []
    for f in fractions:
        pairs = ", ".join(f"{label} {r[f]['strategies'][strategy]['mean_abs_pct_error']:.2f} vs "
                          f"{r[f]['strategies']['random']['mean_abs_pct_error']:.2f}"
                          for label, r in zip(labels, results_per_pool))
        parts.append(f"F = {f:g}: {pairs}")
    return f"{name}, {strategy} vs random mean abs % error per pool: " + "; ".join(parts) + "."


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", choices=("selection", "heldout", "released"),
                        default=["selection", "heldout", "released"])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/published/ScalingProteinLM/data"))
    parser.add_argument("--import-config", default=str(ROOT / "configs/paper-logs-import.yaml"))
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.10])
    parser.add_argument("--strategies", nargs="+", default=list(rp.STRATEGIES))
    parser.add_argument("--repeats", type=int, default=10, help="random's seeds per pool")
    parser.add_argument("--seed", type=int, default=0, help="seed of random's draws")
    parser.add_argument("--selection", type=int, default=8, help="synthetic pools of the selection stage")
    parser.add_argument("--selection-seed", type=int, default=1, help="seed of the selection stage's pools")
    parser.add_argument("--cost-powers", type=float, nargs="+", default=[0.0, 0.25, 0.5],
                        help="cost powers the selection stage compares (each with the exchange on and off)")
    parser.add_argument("--synthetic", type=int, default=12, help="synthetic pools of the held-out stage")
    parser.add_argument("--synthetic-seed", type=int, default=2, help="seed of the held-out stage's pools")
    parser.add_argument("--rolling", type=int, nargs="+", default=[1, 2, 3],
                        help="released stage: one pool per k, holding out the top k IsoFLOP budgets")
    parser.add_argument("--verdicts", choices=("none", "all_runs", "every"), default="every",
                        help="ask plmscale's fit stage whether it would forecast with each pool's whole law "
                             "(all_runs) and with each designed strategy's selection too (every); the held-out "
                             "stage asks at most all_runs per pool unless --heldout-verdicts every")
    parser.add_argument("--heldout-verdicts", choices=("none", "all_runs", "every"), default="all_runs")
    parser.add_argument("--markdown", help="append the tables to this markdown file")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

    header = ["| pool | F | strategy | FLOPs spent | runs | mean abs % error | R² | beats random | "
              "R² gap to all runs | plmscale forecasts |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    sections = []

    def section(title, rows, timings, notes=()):
        load = os.getloadavg()[0]
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        sections.append("\n".join([f"### {title} ({stamp}; {cpu_model()}, {platform.machine()}, load {load:.1f}; "
                                   f"{args.repeats} random repeats)", "", *header, *rows, "", *notes,
                                   "Time: " + "; ".join(timings) + "."]))
        print(sections[-1], file=sys.stderr, flush=True)  # progress; the tables go to stdout at the end

    default = (f"cost^{rp.COST_POWER:g}, exchange {rp.EXCHANGE_ROUNDS} rounds" if rp.EXCHANGE_ROUNDS
               else f"cost^{rp.COST_POWER:g}, no exchange")
    if "selection" in args.stages:
        variants = plmscale_variants(args.cost_powers)
        results, timing = _synthetic_results(args.selection, args.selection_seed, ["random"], args, variants)
        label, power, rounds, errors = choose_variant(results, variants, args.fractions)
        ranking = ", ".join(f"{name} {error:.3f}" for name, error in sorted(errors.items(), key=lambda e: e[1]))
        verdict = ("the shipped default" if (power, rounds) == (rp.COST_POWER, rp.EXCHANGE_ROUNDS)
                   else f"NOT the shipped default ({default}): set replay.COST_POWER = {power:g}, "
                        f"EXCHANGE_ROUNDS = {rounds}")
        section(f"Selection set: plmscale's settings on {args.selection} synthetic pools (seed {args.selection_seed})",
                table_rows(f"selection (x{args.selection})", results, ["random"] + [v[0] for v in variants],
                           args.fractions),
                [f"selection: {timing}"],
                [f"Mean abs % error over F and pools: {ranking}. Chosen: {label}, {verdict}.", ""])
    if "heldout" in args.stages:
        verdicts = None if args.heldout_verdicts == "none" else args.heldout_verdicts
        results, timing = _synthetic_results(args.synthetic, args.synthetic_seed, args.strategies, args, (), verdicts)
        section(f"Held-out set: every strategy on {args.synthetic} fresh synthetic pools (seed "
                f"{args.synthetic_seed}; plmscale = {default})",
                table_rows(f"held-out (x{args.synthetic})", results, args.strategies, args.fractions),
                [f"held-out: {timing}"],
                [line for line in [refused_selections_line(f"held-out (x{args.synthetic})", results, args.fractions)]
                 if line] + [""])
    if "released" in args.stages and args.data and Path(args.data).exists():
        rows, timings, notes = [], [], []
        for objective, runs in released_runs(args.data, args.import_config).items():
            results, seconds, sizes = [], 0.0, []
            for k, pool, targets in rp.rolling_origin_splits(runs, args.rolling, TARGET_SHARE, f"released {objective}"):
                measured, spent = measure(pool, targets, args.strategies, args.fractions, args.repeats, args.seed,
                                          verdicts=None if args.verdicts == "none" else args.verdicts)
                results.append(measured)
                seconds += spent
                sizes.append(f"k={k}: {len(pool)} pool runs, {len(targets)} targets")
            timings.append(f"released {objective} ({'; '.join(sizes)}): {seconds:.1f} s")
            rows += table_rows(f"released {objective} (k={','.join(map(str, args.rolling))})", results,
                               args.strategies, args.fractions)
            labels = [f"k={k}" for k in args.rolling]
            if "plmscale" in args.strategies and "random" in args.strategies:
                notes += [per_pool_line(f"released {objective}", results, labels, args.fractions), ""]
                if args.verdicts != "none":
                    notes += [verdict_line(f"released {objective}", results, labels), "",
                              bar_where_plmscale_forecasts(f"released {objective}", results, labels,
                                                           args.fractions), ""]
        section(f"Released curves: rolling-origin pools, the top k IsoFLOP budgets held out (plmscale = {default})",
                rows, timings, notes)
    publish("\n\n".join(sections), args.markdown)


if __name__ == "__main__":
    main()
