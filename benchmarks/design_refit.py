"""Which IsoFLOP design identifies the frontier? Refit subsets of finished runs, no training.

Reads every CLM run of a workflow's results/runs/*/metrics.json, and for each design (a set of budgets and a
tokens-per-parameter window, as train.isoflop selects sizes) refits the IsoFLOP law with fit.json's own code
(plmscale.scaling.fit.fit_all, residual bootstrap) and prints the exponent a, the width of its 95% interval,
whether the fit is identified, the sizes per budget, N_opt per budget, and what the design's runs cost
(the sum of their measured wall_seconds, so the machine and load of the run that made them).

Used for docs/demo-design.md §7: the runs of one demo directory, grown with extra budgets, refitted under
each candidate design before config.yaml adopted one. Two bootstrap seeds show how much the interval itself
moves.

    python benchmarks/design_refit.py /tmp/demo/results/runs \
        --design 3.125e10,6.25e10,1.25e11,2.5e11,5e11 --design 2.5e11,5e11,1e12 --window 25 4000
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plmscale.scaling.collect import read_metrics, run_row  # noqa: E402
from plmscale.scaling.fit import fit_all  # noqa: E402
from plmscale.scaling.settings import FitSettings  # noqa: E402

COLUMNS = ["run_id", "objective", "n_params", "tokens", "flops", "loss", "budget"]


def read_runs(runs_dir: Path) -> pd.DataFrame:
    """CLM IsoFLOP grid points as the collect step classifies them (no transfer, repetition or extra runs),
    with each run's wall seconds."""
    rows = []
    for path in sorted(runs_dir.glob("*/metrics.json")):
        metrics = read_metrics(path)
        row = run_row(metrics)
        if row["objective"] == "clm" and row["design"] == "isoflop":
            rows.append({**{key: row[key] for key in COLUMNS}, "wall_seconds": metrics["wall_seconds"]})
    if not rows:
        raise SystemExit(f"{runs_dir}: no CLM grid runs (*/metrics.json with a budget) found")
    return pd.DataFrame(rows)


def refit(runs: pd.DataFrame, budgets, window, seed: int, bootstrap: int) -> str:
    ratio = runs["tokens"] / runs["n_params"]
    chosen = runs[runs["budget"].isin(budgets) & (ratio >= window[0]) & (ratio <= window[1])]
    missing = sorted(set(budgets) - set(chosen["budget"]))
    if missing:
        return f"no runs at {missing}"
    fit = fit_all(chosen.drop(columns="wall_seconds"), None, FitSettings.from_fit_section(
        {"bootstrap": bootstrap, "seed": seed, "backtest": False, "isoflop_bootstrap": "residuals"}))["objectives"]["clm"]["isoflop"]
    sizes = chosen.groupby("budget").size().tolist()
    cost = f"{chosen['wall_seconds'].sum():.0f} run-s"
    if "a_ci" not in fit:
        return f"not fitted ({'; '.join(fit.get('reasons', []))}) sizes {sizes} cost {cost}"
    lo, hi = fit["a_ci"]
    n_opt = ", ".join(f"{o['n_opt'] / 1e3:.1f}k" for o in fit["optima"] if o.get("kept"))
    return (f"a {fit['a']:.3f} [{lo:.3f}, {hi:.3f}] width {hi - lo:.3f} identified {fit['identified']} "
            f"sizes {sizes} N_opt {n_opt} cost {cost}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_dir", type=Path, help="a workflow's results/runs")
    parser.add_argument("--design", action="append", required=True,
                        help="comma-separated budgets (FLOPs); repeat for several designs")
    parser.add_argument("--window", nargs=2, type=float, action="append", metavar=("MIN", "MAX"),
                        help="tokens-per-parameter window (repeatable; default 25 4000, config.yaml's)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args(argv)
    runs = read_runs(args.runs_dir)
    budgets = ", ".join(f"{b:g}" for b in sorted(runs["budget"].unique()))
    print(f"{len(runs)} CLM grid runs in {args.runs_dir}, budgets {budgets}")
    for design in args.design:
        budgets = [float(b) for b in design.split(",")]
        for window in args.window or [(25.0, 4000.0)]:
            for seed in args.seeds:
                print(f"budgets {design} window {window[0]:g}-{window[1]:g} seed {seed}: "
                      f"{refit(runs, budgets, window, seed, args.bootstrap)}", flush=True)


if __name__ == "__main__":
    main()
