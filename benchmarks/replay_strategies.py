"""Benchmark: run-selection strategies replayed on finished pools (plmscale.design.replay), at several budget
fractions F, against the all-runs fit of the same pool.

    python benchmarks/replay_strategies.py [--data ../shared/published/ScalingProteinLM/data]
        [--fractions 0.01 0.05 0.10] [--repeats 20] [--synthetic 10] [--markdown docs/replay.md]

Pools:
- released: the authors' released curves (Cheng et al. 2024), imported as configs/paper-logs.yaml does,
  one pool per objective: the scratch runs below the top IsoFLOP budget; targets: the top budget's runs and
  every larger run (flops >= TARGET_SHARE x the top budget).
- synthetic: tables drawn from known laws (E, A, B, α, β drawn as tests/scaling_synthetic.py draws them)
  with 0.5% log-normal noise: an IsoFLOP grid of 7 half-decade budgets 1e17..1e20, 8 sizes each within 6x
  of the true optimum; targets: 5 sizes within 3x of the optimum at 1e21 and at 1e22 (noisy too).

Random's figures are means over --repeats seeds; the deterministic strategies replay once per pool. On the
synthetic pools every strategy's figures are means over the --synthetic pools. "beats random" compares the
mean absolute % error (in brackets: the share of random's repeats, per pool, with a larger error than the
strategy's, averaged over pools); "R² gap" is the all-runs fit's R² minus the strategy's.
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
from plmscale.provenance import cpu_model  # noqa: E402

TARGET_SHARE = 0.9
SYNTHETIC_BUDGETS = 10.0 ** np.arange(17, 20.01, 0.5)
SYNTHETIC_TARGET_BUDGETS = (1e21, 1e22)


def released_pools(data_dir, import_config):
    from plmscale.scaling.importer import import_curves, load_import_config
    from plmscale.scaling.table import scratch_runs, validate_runs

    runs, _ = import_curves(data_dir, load_import_config(import_config))
    scratch = scratch_runs(validate_runs(runs))
    pools = {}
    for objective, group in scratch.groupby("objective"):
        top = group["budget"].max()
        is_target = group["flops"] >= TARGET_SHARE * top
        columns = ["run_id", "n_params", "tokens", "flops", "loss"]
        pools[f"released {objective}"] = (group.loc[~is_target, columns].reset_index(drop=True),
                                          group.loc[is_target, columns].reset_index(drop=True))
    return pools


def _optimal_n(law, flops):
    g = (law["alpha"] * law["A"] / (law["beta"] * law["B"])) ** (1 / (law["alpha"] + law["beta"]))
    return g * (flops / 6) ** (law["beta"] / (law["alpha"] + law["beta"]))


def synthetic_pool(rng, noise=0.005):
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

    return grid(SYNTHETIC_BUDGETS, 8, 6.0, "pool"), grid(SYNTHETIC_TARGET_BUDGETS, 5, 3.0, "target"), law


def measure(pool, targets, strategies, fractions, repeats, seed=0, cost_powers=()):
    """{F: replay result} and the seconds spent. Each of cost_powers adds plmscale's strategy replayed with
    that COST_POWER, as strategy "plmscale (cost^p)"."""
    start = time.perf_counter()
    results = {f: rp.replay(pool, targets, strategies, f, repeats, seed) for f in fractions}
    default = rp.COST_POWER
    try:
        for power in cost_powers:
            rp.COST_POWER = power
            for f in fractions:
                results[f]["strategies"][f"plmscale (cost^{power:g})"] = rp.replay(
                    pool, targets, ["plmscale"], f, 1, seed)["strategies"]["plmscale"]
    finally:
        rp.COST_POWER = default
    return results, time.perf_counter() - start


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
            gap = np.mean(all_r2) - r2
            beaten = np.mean([_share_of_random_beaten(r[f]["strategies"], e)
                              for r, e in zip(results_per_pool, entries)])
            verdict = "—" if s == "random" else f"{'yes' if err < random_err else 'no'} ({beaten:.0%})"
            rows.append(f"| {name} | {f:g} | {s} | {spent:.3f} | {picked:.1f} | {err:.2f} | {r2:.3f} | {verdict} | "
                        f"{gap:+.3f} |")
        rows.append(f"| {name} | {f:g} | *all runs* | 1 | all | {all_err:.2f} | {np.mean(all_r2):.3f} | | |")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/published/ScalingProteinLM/data"))
    parser.add_argument("--import-config", default=str(ROOT / "configs/paper-logs-import.yaml"))
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.10])
    parser.add_argument("--strategies", nargs="+", default=list(rp.STRATEGIES))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--synthetic", type=int, default=10, help="number of synthetic pools")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cost-powers", type=float, nargs="*", default=[0.0, 0.25],
                        help="also replay plmscale's strategy with these COST_POWER values (its default: "
                             f"{rp.COST_POWER})")
    parser.add_argument("--markdown", help="append the table to this markdown file")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

    header = ["| pool | F | strategy | FLOPs spent | runs | mean abs % error | R² | beats random | "
              "R² gap to all runs |",
              "|---|---|---|---|---|---|---|---|---|"]
    rows, timings = [], []
    shown = args.strategies + [f"plmscale (cost^{p:g})" for p in args.cost_powers]
    if args.data and Path(args.data).exists():
        for name, (pool, targets) in released_pools(args.data, args.import_config).items():
            results, seconds = measure(pool, targets, args.strategies, args.fractions, args.repeats, args.seed,
                                       args.cost_powers)
            timings.append(f"{name}: {len(pool)} pool runs, {len(targets)} targets, {seconds:.1f} s")
            rows += table_rows(name, [results], shown, args.fractions)
    rng = np.random.default_rng(args.seed)
    synthetic, seconds = [], 0.0
    for _ in range(args.synthetic):
        pool, targets, _ = synthetic_pool(rng)
        results, spent = measure(pool, targets, args.strategies, args.fractions, args.repeats, args.seed,
                                 args.cost_powers)
        synthetic.append(results)
        seconds += spent
    if synthetic:
        timings.append(f"synthetic: {args.synthetic} pools of {len(pool)} runs, {len(targets)} targets, "
                       f"{seconds:.1f} s")
        rows += table_rows(f"synthetic (x{args.synthetic})", synthetic, shown, args.fractions)
    load = os.getloadavg()[0]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([f"### Replay of selection strategies ({stamp}; {cpu_model()}, {platform.machine()}, "
                      f"load {load:.1f}; {args.repeats} random repeats)", "", *header, *rows, "",
                      "Time: " + "; ".join(timings) + "."])
    publish(text, args.markdown)


if __name__ == "__main__":
    main()
