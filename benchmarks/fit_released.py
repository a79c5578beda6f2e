"""Benchmark: the full scaling fit of the released curves of Cheng et al. 2024 (all methods, bootstrap).

    python benchmarks/fit_released.py [--config configs/paper-logs.yaml] [--bootstrap 1000]
        [--threads 2] [--baseline-starts 45] [--append docs/benchmarks.md]

The curves are the config's inputs: fit.curves_dir and fit.import_config of --config (relative paths from the
repository root, as the workflow reads them); --data overrides the curves' folder.

Measured: the fit with every law family (fit.law_families: parametric, data_constrained, farseer: fitted,
backtested, selected) with --workers processes sharing its objectives and Farseer / data-constrained bootstrap
refits (fit_workers), which issue 23 asks to stay under 60 s on 2 cores; in the same run, as baselines, the same
fit with one worker (its fit.json numbers must be identical, or the benchmark fails) and the default fit (the parametric family
alone); wall and CPU seconds of each, the workers' CPU included (the machine is shared: wall time carries the
other jobs' load, CPU time much less).

Baselines of the parametric optimiser (named, measured in the same run):
- "naive multistart" = scipy.optimize.minimize (L-BFGS-B, analytic gradient) from every one of the 4,500
  grid starts with no vectorised pre-screen, as a plain loop. It is timed on --baseline-starts evenly
  spaced grid starts for the CLM runs and extrapolated linearly to 4,500 starts × 2 objectives (clearly
  labelled as an extrapolation); its bootstrap would cost that again per resample, so the comparison is
  with our whole fit's parametric point estimate only.
- "pre-screen + L-BFGS-B" = the previous refinement: the same grid pre-screen, then one L-BFGS-B run per
  refined start (N_REFINE of them), one after another; timed in full for both objectives (point estimate).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plmscale.provenance import cpu_model  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs/paper-logs.yaml"),
                        help="the fit's config: its fit.curves_dir and fit.import_config are the inputs")
    parser.add_argument("--data", help="the released curves' folder (default: the config's fit.curves_dir)")
    parser.add_argument("--families", default="parametric,data_constrained,farseer",
                        help="fit.law_families of the measured fit (comma-separated)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="CPU cores to use (pinned with sched_setaffinity)")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes refitting the Farseer / data-constrained bootstrap (fit_workers)")
    parser.add_argument("--baseline-starts", type=int, default=45)
    parser.add_argument("--append", help="append a 'Scaling fits' section to this markdown file")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[:args.threads]
        os.sched_setaffinity(0, cpus)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

    import numpy as np
    from plmscale.scaling import parametric, fit_workers
    from plmscale.scaling.fit import fit_all
    from plmscale.scaling.settings import FitSettings
    from plmscale.scaling.importer import import_curves, load_import_config
    from plmscale.scaling.predict import predict
    from plmscale.scaling.table import scratch_runs, validate_runs

    from plmscale.config import read_yaml

    fit_section = (read_yaml(args.config, what="config") or {}).get("fit") or {}
    data = Path(args.data) if args.data else ROOT / fit_section["curves_dir"]
    import_config = ROOT / fit_section["import_config"]
    families = [f for f in args.families.split(",") if f]
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    runs, curves = import_curves(data, load_import_config(import_config))
    t_import = time.perf_counter() - t0

    def timed_fit(law_families, workers):
        os.environ[fit_workers.WORKERS_ENV] = str(workers)
        cpu, wall = _cpu_seconds(), time.perf_counter()
        result = fit_all(runs, curves, FitSettings.from_fit_section(
            {"bootstrap": args.bootstrap, "seed": 0, "law_families": law_families,
             "predict_flops": fit_section.get("predict_flops") or {}}))
        # CPU seconds of this process and its workers (reaped when each batch of work ends).
        return result, time.perf_counter() - wall, _cpu_seconds() - cpu

    families_fit, t_families, cpu_families = timed_fit(families, args.workers)
    serial_fit, t_serial, cpu_serial = timed_fit(families, 1)
    if json.dumps(serial_fit, default=float) != json.dumps(families_fit, default=float):
        raise SystemExit(f"the fit with {args.workers} workers differs from the fit with one")
    fit, t_fit, cpu_fit = timed_fit(["parametric"], 1)
    load_fits = os.getloadavg()[0]

    scratch = scratch_runs(validate_runs(runs))
    clm = scratch.query("objective == 'clm'")
    logs = [np.log(clm[c].to_numpy(float)) for c in ("n_params", "tokens", "loss")]
    grid = parametric.chinchilla_grid()
    subset = grid[np.linspace(0, len(grid) - 1, args.baseline_starts).astype(int)]
    t0 = time.perf_counter()
    for start in subset:
        parametric.minimise_from(start, *logs)
    t_subset = time.perf_counter() - t0
    t_baseline = t_subset / len(subset) * len(grid) * 2

    # The previous refinement (one L-BFGS-B run per pre-screened start), both objectives.
    t0 = time.perf_counter()
    previous = {}
    for objective, rows in scratch.groupby("objective"):
        obj_logs = [np.log(rows[c].to_numpy(float)) for c in ("n_params", "tokens", "loss")]
        order = np.argsort(parametric.objective_batch(grid, *obj_logs), kind="stable")[:parametric.N_REFINE]
        previous[objective] = min(parametric.minimise_from(grid[i], *obj_logs)[1] for i in order)
    t_previous = time.perf_counter() - t0

    config_path = Path(args.config).resolve()
    shown_config = config_path.relative_to(ROOT) if config_path.is_relative_to(ROOT) else config_path
    lines = ["## Scaling fits", "",
             f"Full fit of the released curves of Cheng et al. 2024 ({len(runs)} runs, {len(curves)} curve points,"
             f" read through {shown_config}"
             f"'s fit.curves_dir; IsoFLOP + envelope + the law families for CLM and MLM with backtests and law "
             f"selection, {args.bootstrap} bootstrap resamples) on {args.threads} cores ({cpu_model()}; load average "
             f"{load_start:.1f} at the start, {load_fits:.1f} after the two fits, {os.getloadavg()[0]:.1f} at the end "
             "— other jobs share this machine; CPU seconds are this process's and its workers').", "",
             "| what | wall seconds | CPU seconds |", "|---|---|---|",
             f"| import of the TensorBoard CSVs | {t_import:.1f} | |",
             f"| **plmscale fit, all methods, law families {', '.join(families)}, {args.bootstrap} bootstraps, "
             f"{args.workers} workers** | **{t_families:.1f}** | {cpu_families:.1f} |",
             f"| baseline: the same fit with one worker (as before fit_workers; the same fit.json numbers, "
             f"checked) | {t_serial:.1f} | {cpu_serial:.1f} |",
             f"| baseline: the default fit (the parametric family alone), {args.bootstrap} bootstraps "
             f"| {t_fit:.1f} | {cpu_fit:.1f} |",
             f"| baseline \"pre-screen + L-BFGS-B\" (the previous refinement): L-BFGS-B from the "
             f"{parametric.N_REFINE} best grid starts one at a time × 2 objectives, point estimate only "
             f"| {t_previous:.1f} | |",
             f"| baseline \"naive multistart\": L-BFGS-B from all 4,500 grid starts × 2 objectives, no "
             f"pre-screen, point estimate only (timed on {len(subset)} starts: {t_subset:.1f} s, extrapolated) "
             f"| {t_baseline:.0f} (extrapolated) | |", ""]
    lines += family_lines(families_fit) + [""]
    for objective, methods in fit["objectives"].items():
        for method in ("isoflop", "envelope", "parametric"):
            e = methods[method]
            if "error" in e:
                lines.append(f"- {objective} {method}: not fitted ({e['error']})")
                continue
            ci = e.get("a_ci") or [float("nan")] * 2
            lines.append(f"- {objective} {method}: a = {e['a']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]")
    for objective, methods in fit["objectives"].items():
        p = methods["parametric"]
        if "error" not in p:
            lines.append(f"- {objective} parametric: objective {p['objective']:.10g} (L-BFGS-B baseline from the "
                         f"same starts: {previous[objective]:.10g}); {p['starts_in_best_basin']} of "
                         f"{p['n_refined']} refined starts in the best basin, {p['n_converged']} converged; "
                         f"bootstrap refits not converged within {parametric.MAX_ITER_WARM} iterations: "
                         f"{p['bootstrap']['n_unconverged']} of {p['bootstrap']['n']}")
    for objective, flops in (("clm", 1.34e22), ("mlm", 1.7e22)):
        if objective in fit["objectives"]:
            for method, v in predict(fit, flops, objective)["methods"].items():
                if v["n_opt"] is not None:
                    ci = v["n_opt_ci"] or [float("nan")] * 2
                    lines.append(f"- {objective} N_opt at {flops:.3g} ({method}): {v['n_opt']:.3g} "
                                 f"[{ci[0]:.3g}, {ci[1]:.3g}]")
    lines += ["", "Reproduce: `python benchmarks/fit_released.py --bootstrap 1000 --threads 2 "
              "--append docs/benchmarks.md` (the inputs: configs/paper-logs.yaml's fit.curves_dir)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        path = Path(args.append)
        old = path.read_text() if path.exists() else "# Benchmarks\n"
        if "## Scaling fits" in old:  # replace our own section only, leave the others alone
            head, _, rest = old.partition("## Scaling fits")
            tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
            old = head.rstrip() + "\n\n" + tail.lstrip("\n")
        path.write_text(old.rstrip() + "\n\n" + text)


def _cpu_seconds():
    """This process's CPU seconds and its reaped children's (fit_workers' workers end with each batch of work)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def family_lines(fit):
    """Per objective: the selected law and each family's verdict and rollout backtest."""
    lines = []
    for objective, entry in fit["objectives"].items():
        lines.append(f"- {objective} selected law: {entry.get('selected_law')} "
                     f"({(entry.get('law_selection') or {}).get('why')})")
        for family in ("parametric", "data_constrained", "farseer"):
            if family not in entry:
                continue
            verdict = "identified" if entry[family].get("identified") else \
                f"not identified: {(entry[family].get('reasons') or ['no reason'])[0]}"
            rollout = ((entry.get("backtest") or {}).get(family) or {}).get("rollout") or {}
            if "loss_error_pct" in rollout and rollout["loss_error_pct"] is not None:
                ci = rollout.get("loss_error_pct_ci") or [float("nan")] * 2
                rms = (rollout.get("held_out_runs") or {}).get("rms_pct")
                shown = (f"rollout loss error {rollout['loss_error_pct']:+.2f}% [{ci[0]:+.2f}, {ci[1]:+.2f}], "
                         f"held-out runs' RMS {rms:.2f}%" if rms is not None else "")
            else:
                skipped = ((entry.get("backtest") or {}).get(family) or {}).get("skipped") or rollout.get("error")
                shown = f"no rollout ({skipped})"
            a = entry[family].get("a")
            lines.append(f"  - {family}: a = {a:.3f}; {verdict}; {shown}" if isinstance(a, float)
                         else f"  - {family}: {verdict}; {shown}")
    return lines


if __name__ == "__main__":
    main()
