"""How far the compute-optimal answer moves between cost models (issue 28; docs/costs.md). No training.

(a) --refit RESULTS: one finished study refitted under 6nd, chinchilla and measured cost (its fit.json,
    runs.csv, curves.csv, measured_cost.json and closed_loop.json): per method that can be recounted, the
    exponent a with its 95% interval and N_opt at 1e13 and at the closed loop's budget. The parametric law is
    fit.json's; the Farseer law is fitted here (the demo's fit.law_families leaves it out); the envelope is
    refitted with each curve point's compute counted under the model (plmscale.scaling.envelope), its interval
    from a bootstrap over runs. Measured budgets are the device-seconds the 6nd optimum takes.
(b) --grid NAME RESULTS [RESULTS ...]: the IsoFLOP exponent of grids laid out in different FLOPs definitions
    (one results dir per master seed), each in its own count, and the difference between grids beside the
    seed-to-seed spread within each.

    python benchmarks/cost_models.py --refit /work/runs/cosine/results \\
        --grid 6nd /work/runs/cosine/results /work/runs/cosine-1235/results \\
        --grid chinchilla /work/runs/chinchilla/results /work/runs/chinchilla-1235/results
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plmscale.config import load_config_files  # noqa: E402
from plmscale.scaling import allocation, bootstrap, costs, envelope, farseer  # noqa: E402
from plmscale.scaling.table import budget_groups, scratch_runs  # noqa: E402

COST_MODELS = ("6nd", "chinchilla", "measured")
BUDGETS_FLOPS = (1e13,)


def fmt(value, ci=None, digits=3):
    if value is None or not np.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}g}"
    return text + (f" [{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]" if ci else "")


def read(results: Path, name: str):
    path = results / "scaling" / name
    if not path.exists():
        sys.exit(f"{path} is missing: give the results directory of a finished study")
    return json.loads(path.read_text()) if name.endswith(".json") else pd.read_csv(path, low_memory=False)


def closed_loop_flops(results: Path, objective: str) -> float | None:
    path = results / "scaling" / "closed_loop.json"
    if not path.exists():
        return None
    entries = (json.loads(path.read_text()).get("objectives") or {}).get(objective) or {}
    return next((float(e["flops"]) for e in entries.values() if isinstance(e, dict) and e.get("flops")), None)


def farseer_law(runs: pd.DataFrame, n_boot: int, seed: int):
    """Farseer's law fitted on the scratch runs with a bootstrap over runs within budgets, as fit.py does."""
    scratch = scratch_runs(runs).reset_index(drop=True)
    budgets = budget_groups(scratch)
    strata = np.where(budgets.isna(), "outside IsoFLOP design", budgets.astype(str))
    counts = bootstrap.draw_counts(strata, n_boot, np.random.default_rng(seed))
    kappa = float(np.median(scratch["flops"] / (scratch["n_params"] * scratch["tokens"])))
    entry = farseer.fit_entry(scratch["n_params"], scratch["tokens"], scratch["loss"], kappa, counts,
                              reference_flops=float(scratch["flops"].max()))
    return allocation.loss_law("farseer", entry)


def law_rows(name, law, budgets, ladder, seq_len, measured):
    rows = []
    for model in COST_MODELS:
        cells = [name, model]
        for flops in budgets:
            result = allocation.exponent_and_optimum(law, flops, ladder, seq_len, model, measured)
            cells += [fmt(result["a"], result["a_ci"]), fmt(result["n_opt"], result["n_opt_ci"])]
        rows.append(cells)
    return rows


def envelope_rows(runs, curves, measured, n_boot, seed):
    """The envelope under each cost model, a with its interval (bootstrap over runs, the same draws for each)."""
    scratch = scratch_runs(runs)
    own = curves[curves["run_id"].isin(set(scratch["run_id"]))]
    per_token = costs.flops_per_token_by_run(scratch)
    per_token = {"6nd": per_token["6nd"], "chinchilla": per_token["chinchilla"],
                 "measured": costs.measured_seconds_per_token_by_run(scratch, measured)}
    design = envelope.envelope_design(own)
    n_runs = len(design["run_ids"])
    counts = np.random.default_rng(seed).multinomial(n_runs, np.full(n_runs, 1 / n_runs), size=n_boot)
    fitted = envelope.envelope_by_cost_model(own, per_token, design["run_ids"], counts)
    rows = []
    for model in COST_MODELS:
        law = fitted[model]
        if "error" in law:
            rows.append(["envelope", model, law["error"]])
            continue
        rows.append(["envelope", model, fmt(law["a"], bootstrap.interval(law["draws"]["a"])),
                     f"{law['n_points']} bins"])
    return rows


def table(header, rows) -> str:
    widths = [max(len(str(r[i])) if i < len(r) else 0 for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(list(r) + [""] * (len(header) - len(r))) for r in rows)])


def refit(results: Path, config_path: str, objective: str, n_boot: int, seed: int, with_farseer: bool) -> str:
    fit, runs, curves = read(results, "fit.json"), read(results, "runs.csv"), read(results, "curves.csv")
    runs, curves = runs[runs["objective"] == objective], curves[curves["objective"] == objective]
    measured = costs.measured_law(costs.read_measured_cost(results / "scaling" / costs.MEASURED_COST_FILE), "cpu",
                                  str(results))
    config, _ = load_config_files([config_path])
    ladder, seq_len = config["train"]["ladder"], config["train"]["seq_len"]
    loop = closed_loop_flops(results, objective)
    budgets = ((loop,) if loop else ()) + BUDGETS_FLOPS
    out = [f"{results}: {objective.upper()}, {len(scratch_runs(runs))} scratch runs; measured law on cpu: "
           f"seconds/token = {measured.c0:.3g} + {measured.c1:.3g} * chinchilla FLOPs/token "
           f"({measured.n_runs} runs, R2 {measured.r2:.2f}); 95% intervals. Measured budgets: the cpu-seconds "
           "the 6nd optimum takes."]
    header = ["method", "cost model"]
    for flops in budgets:
        header += [f"a at {flops:.3g}", f"N_opt at {flops:.3g}"]
    rows = law_rows("parametric", allocation.loss_law("parametric", fit["objectives"][objective]["parametric"]),
                    budgets, ladder, seq_len, measured)
    if with_farseer:
        rows += law_rows("farseer (fitted here)", farseer_law(runs, n_boot, seed), budgets, ladder, seq_len, measured)
    out.append(table(header, rows))
    out.append(table(["method", "cost model", "a (N_opt ∝ C^a over the curves)", "points"],
                     envelope_rows(runs, curves, measured, n_boot, seed)))
    return "\n\n".join(out)


def grids(named: list[list[str]], objective: str) -> str:
    """The IsoFLOP exponent per grid and seed, the difference of the grids' means and the seed spread."""
    rows, by_grid = [], {}
    for name, *dirs in named:
        for folder in dirs:
            results = Path(folder)
            fit, runs = read(results, "fit.json"), read(results, "runs.csv")
            iso = fit["objectives"][objective]["isoflop"]
            definition = costs.detect_flops_definition(scratch_runs(runs[runs["objective"] == objective]))
            a = iso.get("a")
            by_grid.setdefault(name, []).append(a)
            rows.append([name, str(results), definition["flops_definition"], fmt(a, iso.get("a_ci")),
                         {True: "yes", False: "no: " + "; ".join(iso.get("reasons", [])[:1]),
                          None: "not judged"}[iso.get("identified")]])
    out = [table(["grid", "results", "budgets counted in", "IsoFLOP a [95% CI]", "identified"], rows)]
    names = list(by_grid)
    for name in names:
        values = np.array([v for v in by_grid[name] if v is not None], float)
        spread = f"seed spread (max - min) {np.ptp(values):.3f} over {len(values)} seeds" if len(values) > 1 else \
            "one seed: no seed spread"
        out.append(f"{name}: mean a {values.mean():.3f}; {spread}")
    if len(names) == 2:
        first, second = (np.array([v for v in by_grid[n] if v is not None], float) for n in names)
        out.append(f"difference {names[1]} - {names[0]}: {second.mean() - first.mean():+.3f} (means over "
                   f"{len(second)} and {len(first)} seeds)")
        pairs = [b - a for a, b in zip(by_grid[names[0]], by_grid[names[1]]) if a is not None and b is not None]
        if pairs:
            out.append("per seed: " + ", ".join(f"{p:+.3f}" for p in pairs))
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refit", type=Path, help="results directory of a finished study to refit per cost model")
    parser.add_argument("--config", default="config.yaml", help="config whose train.ladder and seq_len give shapes")
    parser.add_argument("--grid", nargs="+", action="append", default=[], metavar=("NAME", "RESULTS"),
                        help="a grid's name and its results directories (one per seed); give two --grid")
    parser.add_argument("--objective", default="clm")
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-farseer", action="store_true", help="leave the Farseer refit out (it takes ~1 min)")
    args = parser.parse_args(argv)
    if args.refit:
        print(refit(args.refit, args.config, args.objective, args.bootstrap, args.seed, not args.no_farseer))
    if args.grid:
        print("\n" + grids(args.grid, args.objective))
    return 0


if __name__ == "__main__":
    sys.exit(main())
