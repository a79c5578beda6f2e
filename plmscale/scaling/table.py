"""The runs table every fit reads, checked once so that a bad table fails loudly instead of fitting NaNs."""

import numpy as np
import pandas as pd

from plmscale.errors import PlmscaleError

REQUIRED_COLUMNS = ("run_id", "objective", "n_params", "tokens", "flops", "loss")
CURVE_COLUMNS = ("run_id", "objective", "n_params", "flops", "tokens", "loss")
OBJECTIVES = ("clm", "mlm")
# Runs whose log10 FLOPs lie within this many decades of a neighbour share a budget when the table has
# no `budget` column: about ±6%, tighter than the half-decade budget ladders used in practice.
BUDGET_GROUPING_DEX = 0.05


def _list_ids(ids, limit=8):
    ids = [str(i) for i in ids]
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def _check_columns(df, required, source):
    if df is None or len(df) == 0:
        raise PlmscaleError(f"{source}: the table is empty; it needs one row per run with columns "
                            f"{', '.join(required)}")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise PlmscaleError(f"{source}: missing column(s) {', '.join(missing)}; the table needs "
                            f"{', '.join(required)} (extra columns are allowed)")


def _check_numbers(df, source, columns_positive, id_column="run_id"):
    for column in columns_positive:
        values = pd.to_numeric(df[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            raise PlmscaleError(f"{source}: column {column} is missing, NaN or infinite for run(s) "
                                f"{_list_ids(df.loc[bad, id_column].unique())}; fix or drop these rows")
        nonpos = values.to_numpy(dtype=float) <= 0
        if nonpos.any():
            raise PlmscaleError(f"{source}: column {column} must be > 0 but is not for run(s) "
                                f"{_list_ids(df.loc[nonpos, id_column].unique())}")
        df[column] = values.astype(float)


def validate_runs(df, source="runs table"):
    """Return a cleaned copy of a runs table or raise PlmscaleError saying exactly what is wrong.

    Required columns: run_id, objective (clm|mlm), n_params, tokens, flops, loss (all > 0 and finite).
    Optional: budget (float or empty; empty = not an IsoFLOP run), init_from (non-empty = transfer run),
    kind (transfer|scratch), pair, source.
    """
    _check_columns(df, REQUIRED_COLUMNS, source)
    df = df.copy()
    df["run_id"] = df["run_id"].astype(str)
    duplicated = df["run_id"][df["run_id"].duplicated()]
    if len(duplicated):
        raise PlmscaleError(f"{source}: run_id must be unique; repeated: {_list_ids(duplicated.unique())}")
    df["objective"] = df["objective"].astype(str).str.strip().str.lower()
    bad_objective = ~df["objective"].isin(OBJECTIVES)
    if bad_objective.any():
        raise PlmscaleError(f"{source}: objective must be 'clm' or 'mlm'; got "
                            f"{sorted(df.loc[bad_objective, 'objective'].unique())} for run(s) "
                            f"{_list_ids(df.loc[bad_objective, 'run_id'])}")
    _check_numbers(df, source, ("n_params", "tokens", "flops", "loss"))
    if "budget" in df.columns:
        budget = pd.to_numeric(df["budget"].replace("", np.nan), errors="coerce")
        bad = budget.notna() & ~(budget > 0)
        if bad.any():
            raise PlmscaleError(f"{source}: budget must be a positive number or empty; run(s) "
                                f"{_list_ids(df.loc[bad, 'run_id'])}")
        df["budget"] = budget.astype(float)
    if "init_from" in df.columns:
        df["init_from"] = df["init_from"].fillna("").astype(str).str.strip().replace("nan", "")
    else:
        df["init_from"] = ""
    return df.reset_index(drop=True)


def validate_curves(df, source="curves table"):
    """Long-format training curves: run_id, objective, n_params, flops, tokens, loss (> 0, finite)."""
    _check_columns(df, CURVE_COLUMNS, source)
    df = df.copy()
    df["run_id"] = df["run_id"].astype(str)
    df["objective"] = df["objective"].astype(str).str.strip().str.lower()
    bad_objective = ~df["objective"].isin(OBJECTIVES)
    if bad_objective.any():
        raise PlmscaleError(f"{source}: objective must be 'clm' or 'mlm' for run(s) "
                            f"{_list_ids(df.loc[bad_objective, 'run_id'].unique())}")
    _check_numbers(df, source, ("n_params", "flops", "tokens", "loss"))
    return df.reset_index(drop=True)


def scratch_runs(df):
    """Runs whose final loss measures a from-scratch schedule that finished: the points of a scaling law.

    Left out: transfer runs (non-empty init_from, or kind "transfer"), runs an importer marked
    "incomplete" (logs end before the budget: the schedule did not finish), and rows whose `metric`
    column says the loss is not a validation loss.
    """
    mask = df["init_from"].astype(str) == ""
    if "kind" in df.columns:
        mask &= ~df["kind"].fillna("").astype(str).str.lower().isin(["transfer", "incomplete"])
    if "design" in df.columns:
        mask &= df["design"].fillna("").astype(str).str.lower() != "incomplete"
    if "metric" in df.columns:
        mask &= df["metric"].fillna("valid").astype(str).str.lower().isin(["valid", ""])
    return df[mask]


def budget_groups(df):
    """Budget (FLOPs) of each IsoFLOP run, as a float Series aligned with df (NaN = not an IsoFLOP run).

    With a `budget` column, that column decides: an empty budget marks a run outside the IsoFLOP design
    (e.g. a long run). Without one, runs are grouped by FLOPs: sorted log10 FLOPs are cut wherever the
    gap to the next run exceeds BUDGET_GROUPING_DEX, and a group's budget is its geometric-mean FLOPs.
    """
    if "budget" in df.columns:
        return df["budget"].astype(float)
    log_c = np.log10(df["flops"].to_numpy(dtype=float))
    order = np.argsort(log_c, kind="stable")
    group = np.zeros(len(df), dtype=int)
    current = 0
    for previous, index in zip(order[:-1], order[1:]):
        if log_c[index] - log_c[previous] > BUDGET_GROUPING_DEX:
            current += 1
        group[index] = current
    budgets = np.empty(len(df))
    for g in np.unique(group):
        members = group == g
        budgets[members] = 10 ** log_c[members].mean()
    return pd.Series(budgets, index=df.index, name="budget")


def require_budgets(df, min_budgets=2, source="runs table"):
    budgets = budget_groups(df).dropna()
    if budgets.nunique() < min_budgets:
        raise PlmscaleError(f"{source}: IsoFLOP fitting needs runs at {min_budgets} or more compute "
                            f"budgets; found {budgets.nunique()} — add runs at other budgets")
