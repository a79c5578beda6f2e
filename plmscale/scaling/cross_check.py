"""Two fits of the same study side by side: e.g. a cosine IsoFLOP grid and its WSD twin (docs/wsd.md).

`plmscale cross-check --fit cosine=A/fit.json --fit wsd=B/fit.json --out DIR` (plmscale.cli.cross_check)
reads each fit.json and the runs.csv next to it and writes DIR/cross_check.json, DIR/cross_check.md (the
tables) and DIR/cross_check.png (the IsoFLOP profiles of both grids on one figure); in the workflow, fit.cross_check does the same into
results/scaling/ and the report (rules/cross_check.smk). It compares, per objective:
- every grid point both grids trained (same run id): final loss of each and the difference;
- per budget: the IsoFLOP vertex N_opt (and the best grid size), whether the budget was bracketed;
- the exponent a of N_opt ∝ C^a with its interval, and whether the method was identified.
Nothing is judged here: the figures are laid out so that a reader (and docs/wsd.md) can.
"""

import json
import math
from pathlib import Path

import pandas as pd

from plmscale.config import read_json_object
from plmscale.errors import PlmscaleError
from plmscale.scaling.table import budget_groups

# The columns of the runs table beside a fit.json that a cross-check reads; `budget` (each run's nominal
# IsoFLOP budget) may be left out when `flops` is there: the runs are then grouped as `plmscale fit` does.
RUNS_COLUMNS = ("run_id", "objective", "n_params", "loss")


def read_fit_and_runs(fit_path) -> tuple[dict, pd.DataFrame | None]:
    fit_path = Path(fit_path)
    fit = read_json_object(fit_path, "fit file", hint="; run the fit first (snakemake results/scaling/fit.json)")
    runs_path = fit_path.with_name("runs.csv")
    return fit, (read_runs(runs_path) if runs_path.exists() else None)


def read_runs(path) -> pd.DataFrame:
    """The runs table beside a fit.json, with a `budget` per run; an unreadable table or a missing column
    is an error that names the file and the column."""
    try:
        runs = pd.read_csv(path, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise PlmscaleError(f"runs table {path} is not a readable CSV table: {error}") from None
    missing = [column for column in RUNS_COLUMNS if column not in runs.columns]
    if "budget" not in runs.columns and "flops" not in runs.columns:
        missing.append("budget (or flops)")
    if missing:
        raise PlmscaleError(f"runs table {path} lacks the column(s) {', '.join(missing)}; a cross-check needs "
                            f"{', '.join(RUNS_COLUMNS)} and budget or flops per run")
    if "budget" not in runs.columns:
        runs = runs.assign(budget=pd.concat([budget_groups(group, source=str(path))
                                             for _, group in runs.groupby("objective", sort=False)]))
    return runs


def _isoflop_summary(fit: dict, objective: str) -> dict | None:
    iso = (fit.get("objectives", {}).get(objective) or {}).get("isoflop")
    if not iso:
        return None
    budgets = {float(o["budget"]): {"n_opt": o.get("n_opt"), "raw_n_opt": o.get("raw_n_opt"),
                                    "loss_opt": o.get("loss_opt"), "bracketed": bool(o.get("kept"))}
               for o in iso.get("optima", [])}
    return {"a": iso.get("a"), "a_ci": iso.get("a_ci"), "identified": iso.get("identified"),
            "reasons": iso.get("reasons") or [], "error": iso.get("error"), "budgets": budgets}


def compare(fits: dict) -> dict:
    """fits: label -> (fit.json dict, runs DataFrame or None), two labels in reading order."""
    if len(fits) != 2:
        raise PlmscaleError(f"a cross-check compares exactly two fits; got {len(fits)} ({', '.join(fits)})")
    (label_a, (fit_a, runs_a)), (label_b, (fit_b, runs_b)) = fits.items()
    objectives = sorted(set(fit_a.get("objectives", {})) & set(fit_b.get("objectives", {})))
    out = {"labels": [label_a, label_b], "objectives": {}}
    for objective in objectives:
        a, b = _isoflop_summary(fit_a, objective), _isoflop_summary(fit_b, objective)
        if a is None or b is None or not (a["budgets"] or b["budgets"]):
            continue  # e.g. an objective with no IsoFLOP grid (the demo's MLM)
        budgets = []
        for budget in sorted(set(a["budgets"]) | set(b["budgets"])):
            row = {"budget": budget, label_a: a["budgets"].get(budget), label_b: b["budgets"].get(budget)}
            n_a, n_b = (row[label_a] or {}).get("n_opt"), (row[label_b] or {}).get("n_opt")
            row["n_opt_ratio"] = n_b / n_a if n_a and n_b else None
            budgets.append(row)
        entry = {"isoflop": {label_a: {k: a[k] for k in ("a", "a_ci", "identified", "reasons", "error")},
                             label_b: {k: b[k] for k in ("a", "a_ci", "identified", "reasons", "error")}},
                 "budgets": budgets, "points": _points(objective, label_a, runs_a, label_b, runs_b)}
        ci_a, ci_b = a["a_ci"], b["a_ci"]
        entry["a_difference"] = (b["a"] - a["a"]) if a["a"] is not None and b["a"] is not None else None
        entry["a_intervals_overlap"] = (ci_a[0] <= ci_b[1] and ci_b[0] <= ci_a[1]) if ci_a and ci_b else None
        out["objectives"][objective] = entry
    return out


def _points(objective, label_a, runs_a, label_b, runs_b) -> list:
    """Grid points (IsoFLOP runs) both tables hold, with their final losses."""
    if runs_a is None or runs_b is None:
        return []

    def isoflop(runs):
        runs = runs[(runs["objective"] == objective) & runs["budget"].notna()]
        return runs.set_index("run_id")

    a, b = isoflop(runs_a), isoflop(runs_b)
    rows = []
    for run_id in sorted(set(a.index) & set(b.index), key=lambda r: (a.loc[r, "budget"], a.loc[r, "n_params"])):
        loss_a, loss_b = float(a.loc[run_id, "loss"]), float(b.loc[run_id, "loss"])
        rows.append({"run_id": run_id, "budget": float(a.loc[run_id, "budget"]), "n_params": int(a.loc[run_id, "n_params"]),
                     label_a: loss_a, label_b: loss_b, "difference": loss_b - loss_a})
    return rows


def _fmt(value, spec=".4g"):
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def markdown(result: dict) -> str:
    label_a, label_b = result["labels"]
    lines = []
    for objective, entry in result["objectives"].items():
        lines.append(f"### {objective.upper()}: {label_a} vs {label_b}\n")
        if entry["points"]:
            lines.append(f"| run | budget | N | loss {label_a} | loss {label_b} | {label_b} − {label_a} |")
            lines.append("|---|---:|---:|---:|---:|---:|")
            for p in entry["points"]:
                lines.append(f"| {p['run_id']} | {p['budget']:.3g} | {p['n_params']:,} | {p[label_a]:.4f} | "
                             f"{p[label_b]:.4f} | {p['difference']:+.4f} |")
            diffs = [p["difference"] for p in entry["points"]]
            lines.append(f"\nmean difference {sum(diffs) / len(diffs):+.4f}, range [{min(diffs):+.4f}, "
                         f"{max(diffs):+.4f}] nats over {len(diffs)} points\n")
        lines.append(f"| budget | N_opt {label_a} | N_opt {label_b} | ratio | best grid N {label_a} | "
                     f"best grid N {label_b} | bracketed {label_a} / {label_b} |")
        lines.append("|---:|---:|---:|---:|---:|---:|---|")
        for row in entry["budgets"]:
            ra, rb = row[label_a] or {}, row[label_b] or {}
            lines.append(f"| {row['budget']:.3g} | {_fmt(ra.get('n_opt'), ',.0f')} | {_fmt(rb.get('n_opt'), ',.0f')} | "
                         f"{_fmt(row['n_opt_ratio'], '.2f')} | {_fmt(ra.get('raw_n_opt'), ',.0f')} | "
                         f"{_fmt(rb.get('raw_n_opt'), ',.0f')} | {ra.get('bracketed')} / {rb.get('bracketed')} |")
        lines.append("")
        for label in (label_a, label_b):
            iso = entry["isoflop"][label]
            ci = iso["a_ci"]
            lines.append(f"- {label}: a = {_fmt(iso['a'], '.3f')}" +
                         (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") +
                         f", identified: {iso['identified']}" +
                         (f" ({'; '.join(iso['reasons'])})" if iso["reasons"] else
                          f" ({iso['error']})" if iso["error"] else ""))
        if entry["a_difference"] is not None:
            lines.append(f"- a({label_b}) − a({label_a}) = {entry['a_difference']:+.3f}; intervals overlap: "
                         f"{entry['a_intervals_overlap']}")
        lines.append("")
    return "\n".join(lines)


def write_all(fits: dict, out) -> dict:
    """cross_check.{json,md} in `out` for fits (label -> (fit.json dict, runs)); returns the result, from which
    plmscale.plots.cross_check draws cross_check.png."""
    result = compare(fits)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cross_check.json").write_text(json.dumps(result, indent=1, default=float))
    (out / "cross_check.md").write_text(markdown(result))
    return result

