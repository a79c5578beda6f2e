"""Mixed CLM+MLM training against each objective alone, at equal compute (issue 24 §4; docs/mixed.md).

A mixed run (train.objectives mixed) is one model trained on CLM and MLM batches and validated on both. It is
compared with the CLM and the MLM runs of the same size and the same token target (so the same FLOPs: every
run counts FLOPs the same way): per objective evaluated, the mixed runs' mean validation loss on it minus the
single-objective runs' mean loss, beside the spread of each side over its seeds (replicates). The paper
(Cheng et al. 2024) found mixing worse than either objective alone; the verdict says whether these runs agree,
and a difference inside the seed noise is called that, not a finding.

Pure functions over a table (one row per run: run_id, objective, model, n_params, target_tokens, tokens, flops,
budget, seed, loss_clm, loss_mlm), so a synthetic table tests them; `comparison_table` builds it from the
runs' metrics.json records.
"""

import math

import pandas as pd

from plmscale.errors import PlmscaleError
from plmscale.grid.spec import MIXED
from plmscale.run_metrics import read_metrics
from plmscale.scaling.results import write_json

EVALUATED = ("clm", "mlm")
TABLE_COLUMNS = ("run_id", "objective", "model", "n_params", "target_tokens", "tokens", "flops", "budget", "seed",
                 "mlm_fraction", "loss_clm", "loss_mlm")
# A difference is called a difference when it is this many of its standard errors (seed spread of both
# sides) away from zero; with two seeds a side this is a screen, not a test, and mixed.json says so.
NOISE_MULTIPLE = 2.0


def comparison_runs(specs) -> list:
    """The runs a comparison needs, from a grid's run specs (anything with run_id, objective, model, tokens,
    init_from): every mixed run, and every CLM or MLM run from scratch of the same size and token target."""
    points = {(s.model, int(s.tokens)) for s in specs if s.objective == MIXED}
    return [s.run_id for s in specs
            if s.objective == MIXED or (not s.init_from and (s.model, int(s.tokens)) in points)]


def comparison_table(records) -> pd.DataFrame:
    """One row per run from metrics.json records (dicts, as run_metrics.read_metrics(...).to_dict()): a CLM
    run's loss is its loss_clm, an MLM run's its loss_mlm, a mixed run has both (valid_loss_by_objective)."""
    rows = []
    for m in records:
        losses = {"clm": None, "mlm": None}
        if m["objective"] == MIXED:
            by_objective = m.get("valid_loss_by_objective") or {}
            missing = [o for o in EVALUATED if by_objective.get(o) is None]
            if missing:
                raise PlmscaleError(f"run {m['run_id']}: a mixed run's metrics.json lacks valid_loss_by_objective "
                                    f"{', '.join(missing)}; rerun the training job with the current plmscale")
            losses.update({o: float(by_objective[o]) for o in EVALUATED})
        elif m["objective"] in EVALUATED:
            losses[m["objective"]] = float(m["final_valid_loss"])
        else:
            raise PlmscaleError(f"run {m['run_id']}: objective {m['objective']!r} is not clm, mlm or mixed")
        rows.append({"run_id": m["run_id"], "objective": m["objective"], "model": m["model"],
                     "n_params": int(m["n_params"]), "target_tokens": int(m.get("target_tokens") or m["tokens"]),
                     "tokens": int(m["tokens"]), "flops": float(m["flops"]), "budget": m.get("budget"),
                     "seed": m.get("seed"), "mlm_fraction": (m.get("mixed") or {}).get("mlm_fraction"),
                     "loss_clm": losses["clm"], "loss_mlm": losses["mlm"]})
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _side(runs: pd.DataFrame, column: str) -> dict:
    """One side of a comparison: its runs, their losses, the mean and the seed sd (None with one run)."""
    losses = runs[column].astype(float).to_numpy()
    return {"runs": runs["run_id"].tolist(), "losses": [float(v) for v in losses], "mean": float(losses.mean()),
            "seed_sd": float(losses.std(ddof=1)) if len(losses) > 1 else None,
            "seed_range": float(losses.max() - losses.min()),
            "flops": float(runs["flops"].mean())}


def _objective_comparison(mixed: pd.DataFrame, single: pd.DataFrame, objective: str) -> dict:
    column = f"loss_{objective}"
    if single.empty:
        return {"compared": False, "reason": f"no {objective} run of this size and token target; add one (train."
                                             f"objectives or train.runs) to compare"}
    m, s = _side(mixed, column), _side(single, column)
    difference = m["mean"] - s["mean"]
    se = None
    if m["seed_sd"] is not None and s["seed_sd"] is not None:
        se = math.sqrt(m["seed_sd"] ** 2 / len(m["losses"]) + s["seed_sd"] ** 2 / len(s["losses"]))
    if se is None:
        verdict = "no seed spread (one run a side): add replicates (train.isoflop.replicates)"
    elif abs(difference) <= NOISE_MULTIPLE * se:
        verdict = "within seed noise"
    else:
        verdict = "mixed worse" if difference > 0 else "mixed better"
    return {"compared": True, "single": s, "mixed": m, "difference": difference, "difference_se": se,
            "difference_in_se": None if not se else difference / se, "verdict": verdict,
            "flops_ratio": m["flops"] / s["flops"]}


def compare_mixed(table: pd.DataFrame) -> dict:
    """mixed.json's content: per (size, token target) with a mixed run, per objective evaluated, mixed minus
    single with the seed spread of both sides, and a sentence on the paper's finding."""
    table = pd.DataFrame(table)
    mixed_runs = table[table["objective"] == MIXED]
    if mixed_runs.empty:
        raise PlmscaleError("no mixed run to compare: name mixed in train.objectives or train.runs "
                            "(configs/mixed.yaml)")
    comparisons = []
    for (model, target), mixed in mixed_runs.groupby(["model", "target_tokens"], sort=False):
        point = table[(table["model"] == model) & (table["target_tokens"] == target)]
        budgets = {b for b in point["budget"] if b is not None and not (isinstance(b, float) and math.isnan(b))}
        comparisons.append({
            "model": model, "n_params": int(mixed["n_params"].iat[0]), "target_tokens": int(target),
            "budget": budgets.pop() if len(budgets) == 1 else None,
            "mlm_fraction": sorted({float(f) for f in mixed["mlm_fraction"].dropna()}),
            "objectives": {o: _objective_comparison(mixed, point[point["objective"] == o], o) for o in EVALUATED}})
    comparisons.sort(key=lambda c: (c["n_params"], c["target_tokens"]))
    return {"noise_multiple": NOISE_MULTIPLE,
            "method": ("per size and token target (equal FLOPs), per objective evaluated: mean loss of the mixed "
                       "runs minus that of the single-objective runs; difference_se from both sides' seed sd "
                       f"(sd/sqrt(n) combined); a difference beyond {NOISE_MULTIPLE:g} se is called one"),
            "comparisons": comparisons, **_verdict(comparisons)}


def _verdict(comparisons) -> dict:
    """reproduces_paper (True: mixed worse than each objective alone beyond noise at every size; False: better
    than one beyond noise somewhere; None: otherwise) and the sentence that says it with the figures."""
    parts, verdicts = [], []
    for c in comparisons:
        budget = f"{c['budget']:.3g} FLOPs" if c["budget"] else f"{c['target_tokens']:.3g} tokens"
        for objective, entry in c["objectives"].items():
            if not entry["compared"]:
                continue
            verdicts.append(entry["verdict"])
            sd = "/".join("n/a" if side["seed_sd"] is None else f"{side['seed_sd']:.3f}"
                          for side in (entry["mixed"], entry["single"]))
            parts.append(f"{c['model']} at {budget} on {objective.upper()}: {entry['difference']:+.3f} nats "
                         f"(seed sd mixed/single {sd}; {entry['verdict']})")
    if not verdicts:
        return {"reproduces_paper": None, "sentence": "no mixed run has a single-objective run to compare with"}
    if all(v == "mixed worse" for v in verdicts):
        reproduces, ending = True, "mixing is worse than either objective alone, as the paper found"
    elif any(v == "mixed better" for v in verdicts):
        reproduces, ending = False, ("mixing beats a single objective somewhere, against the paper's finding "
                                     "that it is worse than either alone")
    else:
        reproduces, ending = None, ("not all differences exceed the seed noise, so these runs neither confirm "
                                    "nor contradict the paper's finding that mixing is worse than either alone")
    return {"reproduces_paper": reproduces,
            "sentence": f"Mixed minus single objective at equal compute: {'; '.join(parts)}. {ending[0].upper()}"
                        f"{ending[1:]}."}


def write_mixed(metrics_paths, path) -> dict:
    """The compare_mixed rule: the runs' metrics.json files -> mixed.json (written atomically); returns it."""
    records = [read_metrics(p).to_dict() for p in sorted(str(p) for p in metrics_paths)]
    result = compare_mixed(comparison_table(records))
    write_json(result, path)
    return result
