"""The runs and curves tables of the scaling stage: their columns, the role of every run, the pairing of
transfer runs with their from-scratch partners, validation and writing. Every other module reads these
facts from here instead of re-deriving them.

runs.csv  : run_id, objective, n_params, tokens, flops, loss, budget, source, init_from, role, pair
            (+ whatever the producer adds: kind, design, model, schedule, trunk, label, file, ...;
            schedule wsd + trunk: a branch of a warmup-stable-decay grid, plmscale.grid.wsd)
curves.csv: run_id, objective, n_params, flops, tokens, loss, role (+ kind, design)

role: main              from scratch, part of the scaling study (IsoFLOP, long and off-grid runs)
      transfer          started from another run's checkpoint (non-empty init_from)
      transfer-baseline from scratch, trained only as the partner of a transfer run
      incomplete        stopped before its schedule ended (its final loss overstates the budget's loss)
pair: on a transfer run, the run_id of its from-scratch partner; on that partner, its own run_id.

Own runs trained with the identity table (plmscale.data.identity, docs/ood.md) add, per identity-to-train
bin of the valid split (e.g. no_hit, <0.5, 0.5-0.9, >=0.9):
valid_loss_id_<bin>       the final model's loss on the valid sequences of that bin (empty without a table)
valid_tokens_id_<bin>     real tokens that loss was measured on
valid_sequences_id_<bin>  valid sequences in the bin
A fit uses `loss` unless fit.loss_column names one of the valid_loss_id_<bin> columns (with_loss_column).

Own runs also carry what they cost (COST_COLUMNS; optional, an imported table may lack them): flops_6nd,
flops_with_attention, flops_chinchilla (the run's tokens under each FLOPs definition, plmscale.arithmetic).
Their wall time and device measure the machine, not the result, and stay out of runs.csv, which two runs
from scratch write byte-identically: collect.run_timings reads them from metrics.json (TIMING_COLUMNS) for
the measured cost law (results/scaling/measured_cost.json, plmscale.scaling.costs).
"""

import logging

import numpy as np
import pandas as pd

from plmscale.data.atomic import atomic_path
from plmscale.errors import PlmscaleError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("run_id", "objective", "n_params", "tokens", "flops", "loss")
RUN_COLUMNS = ["run_id", "objective", "n_params", "tokens", "flops", "loss", "budget", "source", "init_from",
               "role", "pair"]
# Optional per-run costs (see the module docstring), in this order after the producer's own columns.
COST_COLUMNS = ("flops_6nd", "flops_with_attention", "flops_chinchilla")
# What a run took on its machine (collect.run_timings): never in runs.csv, which must not depend on the machine.
TIMING_COLUMNS = ("run_id", "tokens", "flops_chinchilla", "wall_seconds", "device")
CURVE_COLUMNS = ("run_id", "objective", "n_params", "flops", "tokens", "loss")
OBJECTIVES = ("clm", "mlm")
MAIN, TRANSFER, TRANSFER_BASELINE, INCOMPLETE = "main", "transfer", "transfer-baseline", "incomplete"
ROLES = (MAIN, TRANSFER, TRANSFER_BASELINE, INCOMPLETE)
# Runs whose final loss measures a from-scratch schedule that finished: the points of a scaling law.
SCALING_ROLES = (MAIN, TRANSFER_BASELINE)
# Runs of the main study as the figures show it: the side runs of transfer experiments left out.
MAIN_STUDY_ROLES = (MAIN, INCOMPLETE)
# Per identity bin (see the module docstring): column prefix -> the metrics.json key it comes from.
IDENTITY_LOSS_PREFIX, IDENTITY_TOKENS_PREFIX, IDENTITY_SEQUENCES_PREFIX = (
    "valid_loss_id_", "valid_tokens_id_", "valid_sequences_id_")
IDENTITY_COLUMN_PREFIXES = {IDENTITY_LOSS_PREFIX: "valid_loss_by_identity",
                            IDENTITY_TOKENS_PREFIX: "valid_tokens_by_identity",
                            IDENTITY_SEQUENCES_PREFIX: "valid_sequences_by_identity"}
DEFAULT_LOSS_COLUMN = "loss"
# A scratch run within this relative size of a transfer run has the same model (parameter counts of one
# shape differ slightly between exports).
SAME_SIZE_REL = 0.02
# Without a `budget` column, runs share a budget when each lies within this many decades (about ±12%) of
# the group's centre (geometric-mean FLOPs): far tighter than the half-decade budget ladders used in
# practice, loose enough for token counts rounded to whole batches.
BUDGET_TOLERANCE_DEX = 0.05


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


def _as_numbers(df, column, source, id_column="run_id") -> pd.Series:
    """df[column] as floats, empty cells as NaN; a cell that holds text which is not a number (`1e18x`)
    is an error naming the column and the run, never a silent NaN."""
    values = pd.to_numeric(df[column], errors="coerce")
    garbled = values.isna() & (text_column(df, column) != "")
    if garbled.any():
        first = df.index[garbled][0]
        raise PlmscaleError(f"{source}: column {column} holds {str(df.at[first, column])!r}, which is not a "
                            f"number, for run(s) {_list_ids(df.loc[garbled, id_column].unique())}; fix the value")
    return values.astype(float)


def _check_numbers(df, source, columns_positive, id_column="run_id"):
    for column in columns_positive:
        values = _as_numbers(df, column, source, id_column)
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            raise PlmscaleError(f"{source}: column {column} is missing, NaN or infinite for run(s) "
                                f"{_list_ids(df.loc[bad, id_column].unique())}; fix or drop these rows")
        nonpos = values.to_numpy(dtype=float) <= 0
        if nonpos.any():
            raise PlmscaleError(f"{source}: column {column} must be > 0 but is not for run(s) "
                                f"{_list_ids(df.loc[nonpos, id_column].unique())}")
        df[column] = values


def validate_runs(df, source="runs table", group_budgets=True):
    """Return a cleaned copy of a runs table or raise PlmscaleError saying exactly what is wrong.
    group_budgets=False: a table without a budget column is not refused where its FLOPs do not group into
    IsoFLOP budgets (the fit treats such an objective as a scatter of N and D).

    Required columns: run_id, objective (clm|mlm), n_params, tokens, flops, loss (all > 0 and finite).
    Optional: budget (float or empty; empty = not an IsoFLOP run), init_from (non-empty = transfer run),
    role (derived from init_from/kind/design where absent), pair, source.
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
        budget = _as_numbers(df, "budget", source)
        bad = budget.notna() & ~((budget > 0) & np.isfinite(budget))
        if bad.any():
            raise PlmscaleError(f"{source}: budget must be a positive finite number or empty; run(s) "
                                f"{_list_ids(df.loc[bad, 'run_id'])}")
        df["budget"] = budget
    df["init_from"] = text_column(df, "init_from")
    df = with_roles(df, source).reset_index(drop=True)
    if "budget" not in df.columns and group_budgets:
        for objective, group in df.groupby("objective", sort=False):
            budget_groups(scratch_runs(group), source=f"{source} ({objective} runs)")  # refuses a too-wide group
    return df


def identity_columns(metrics: dict) -> dict:
    """The per-bin columns of one run from its metrics.json ({} when it was trained without the table)."""
    return {f"{prefix}{label}": value for prefix, key in IDENTITY_COLUMN_PREFIXES.items()
            for label, value in (metrics.get(key) or {}).items()}


def final_loss(metrics: dict, loss_column=DEFAULT_LOSS_COLUMN):
    """A run's final loss in the sense of loss_column (fit.loss_column): final_valid_loss for `loss`, the
    bin's entry of valid_loss_by_identity for valid_loss_id_<bin> (None where the run has none)."""
    if loss_column == DEFAULT_LOSS_COLUMN:
        return metrics.get("final_valid_loss")
    return (metrics.get(IDENTITY_COLUMN_PREFIXES[IDENTITY_LOSS_PREFIX]) or {}).get(loss_column[len(IDENTITY_LOSS_PREFIX):])


def identity_bins(df) -> list:
    """Bins with a loss column in a runs table, in bin order (no_hit, then rising identity)."""
    from plmscale.data.identity import ordered_bins

    return ordered_bins(c[len(IDENTITY_LOSS_PREFIX):] for c in df.columns if str(c).startswith(IDENTITY_LOSS_PREFIX))


def with_loss_column(df, column=DEFAULT_LOSS_COLUMN, source="runs table"):
    """A copy of df whose `loss` is `column` (fit.loss_column): loss itself, or one bin's valid_loss_id_<bin>."""
    if column == DEFAULT_LOSS_COLUMN:
        return df
    if column not in df.columns:
        bins = [f"{IDENTITY_LOSS_PREFIX}{b}" for b in identity_bins(df)]
        choices = (f"one of {', '.join(bins)}" if bins else
                   "a valid_loss_id_<bin> column: none here, runs get them when trained with the identity table "
                   "(data.identity.enabled)")
        raise PlmscaleError(f"fit.loss_column {column!r} is not a column of {source}; use "
                            f"{DEFAULT_LOSS_COLUMN!r} or {choices}")
    values = _as_numbers(df, column, source)
    missing = values.isna()
    if missing.all():
        raise PlmscaleError(f"fit.loss_column {column!r}: the column is empty for every run of {source} (the bin "
                            "holds no evaluated sequences, or the runs predate the identity table); pick another bin")
    out = df.copy()
    out["loss"] = values
    if missing.any():
        # Imported runs (released curves) and runs trained without the table have no per-bin loss.
        log.warning("fit.loss_column %s: left out %d run(s) without a value: %s", column, int(missing.sum()),
                    _list_ids(df.loc[missing, "run_id"]))
        out = out[~missing]
    return out


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
    return with_roles(df, source).reset_index(drop=True)


def text_column(df, column) -> pd.Series:
    """A text column with missing values (empty, NaN, None) as "", or all "" where the column is absent."""
    if column not in df.columns:
        return pd.Series("", index=df.index, dtype=object)
    text = df[column].astype(object).where(df[column].notna(), "").astype(str).str.strip()
    return text.replace({"nan": "", "None": ""})


def derive_roles(df) -> pd.Series:
    """The role of every row from what its producer recorded: init_from, and kind/design of the importer."""
    kind = text_column(df, "kind").str.lower()
    design = text_column(df, "design").str.lower()
    role = pd.Series(MAIN, index=df.index, dtype=object)
    role[(kind == "scratch") | (design == "scratch")] = TRANSFER_BASELINE
    role[(kind == "incomplete") | (design == "incomplete")] = INCOMPLETE
    role[(text_column(df, "init_from") != "") | (kind == "transfer") | (design == "transfer")] = TRANSFER
    return role


def with_roles(df, source="runs table") -> pd.DataFrame:
    """A copy of df with a `role` column: kept where the producer wrote one, derived where it is missing
    (a table written by hand or by an older plmscale)."""
    df = df.copy()
    given = text_column(df, "role").str.lower()
    bad = (given != "") & ~given.isin(ROLES)
    if bad.any():
        raise PlmscaleError(f"{source}: column role must be one of {', '.join(ROLES)} (or empty); got "
                            f"{sorted(given[bad].unique())} for run(s) {_list_ids(df.loc[bad, 'run_id'].unique())}")
    df["role"] = given.where(given != "", derive_roles(df))
    return df


def scratch_runs(df):
    """Runs whose final loss measures a from-scratch schedule that finished: the points of a scaling law.

    Left out: transfer runs, runs that stopped before their schedule ended (role incomplete), and rows
    whose `metric` column says the loss is not a validation loss.
    """
    mask = with_roles(df)["role"].isin(SCALING_ROLES)
    if "metric" in df.columns:
        mask &= df["metric"].fillna("valid").astype(str).str.lower().isin(["valid", ""])
    return df[mask]


def main_study(df):
    """Rows (of a runs or curves table) of the main study: the side runs of transfer experiments left out."""
    return df[with_roles(df)["role"].isin(MAIN_STUDY_ROLES)]


def transfer_partners(runs) -> dict:
    """run_id of each transfer run -> run_id of its from-scratch partner, or None where it has none.

    The `pair` column decides where it names a partner (the importer matched budget and loss metric);
    otherwise the partner is a from-scratch run of the same objective and size (within SAME_SIZE_REL),
    the one closest in tokens: the same schedule length is the fairest baseline. Tables written before
    `pair` named the partner share a key between the two rows instead; that key is followed too.
    """
    runs = with_roles(runs)
    ids = runs["run_id"].astype(str)
    pair = text_column(runs, "pair")
    is_scratch = runs["role"].isin(SCALING_ROLES)
    scratch_ids = set(ids[is_scratch])
    partners = {}
    for index in runs.index[runs["role"] == TRANSFER]:
        run_id, named = ids[index], pair[index]
        if named in scratch_ids:
            partners[run_id] = named
            continue
        sharing = ids[is_scratch & (pair == named)] if named else []
        if len(sharing):
            partners[run_id] = sharing.iloc[0]
            continue
        run = runs.loc[index]
        same = runs[is_scratch & (runs["objective"] == run["objective"]) &
                    (np.abs(runs["n_params"].astype(float) / float(run["n_params"]) - 1) <= SAME_SIZE_REL)]
        if len(same) == 0:
            partners[run_id] = None
            continue
        gap = np.abs(np.log(same["tokens"].to_numpy(float) / float(run["tokens"])))
        partners[run_id] = str(same["run_id"].iloc[int(np.argmin(gap))])
    return partners


def with_pairs(runs) -> pd.DataFrame:
    """A copy of runs whose `pair` column names each transfer run's partner (see transfer_partners); the
    partner's own row carries its run_id."""
    partners = transfer_partners(runs)
    runs = with_roles(runs)
    pair = text_column(runs, "pair")
    ids = runs["run_id"].astype(str)
    for run_id, partner in partners.items():
        pair[ids == run_id] = partner or ""
        if partner:
            pair[ids == partner] = partner
    runs["pair"] = pair.where(pair != "", None)
    return runs


def write_tables(runs: pd.DataFrame, curves: pd.DataFrame | None, runs_path, curves_path=None) -> None:
    """runs.csv (and curves.csv) with the table columns first, each written atomically."""
    for table, path in ((runs, runs_path), (curves, curves_path)):
        if table is None or path is None:
            continue
        first = [c for c in (RUN_COLUMNS if table is runs else [*CURVE_COLUMNS, "role"]) if c in table.columns]
        ordered = table[first + [c for c in table.columns if c not in first]]
        with atomic_path(path) as tmp:
            ordered.to_csv(tmp, index=False)


def budget_groups(df, source="runs table"):
    """Budget (FLOPs) of each IsoFLOP run, as a float Series aligned with df (NaN = not an IsoFLOP run).

    With a `budget` column, that column decides: an empty budget marks a run outside the IsoFLOP design
    (e.g. a long run). Without one, runs are grouped by FLOPs around a centre: sorted log10 FLOPs are cut
    wherever two neighbours lie more than BUDGET_TOLERANCE_DEX apart, and a group's budget is its
    geometric-mean FLOPs, which every member must lie within BUDGET_TOLERANCE_DEX of. A group wider than
    that is refused, not chained into one budget (runs spread evenly in FLOPs, such as Chinchilla's, would
    otherwise merge budgets ten times apart).
    """
    if "budget" in df.columns:
        return df["budget"].astype(float)
    log_c = np.log10(df["flops"].to_numpy(dtype=float))
    order = np.argsort(log_c, kind="stable")
    cuts = np.flatnonzero(np.diff(log_c[order]) > BUDGET_TOLERANCE_DEX) + 1
    budgets = np.empty(len(df))
    for members in np.split(order, cuts):
        members = np.sort(members)  # the table's order: the same mean to the last bit as the rows give
        centre = log_c[members].mean()
        if np.abs(log_c[members] - centre).max() > BUDGET_TOLERANCE_DEX:
            low, high = 10 ** log_c[members].min(), 10 ** log_c[members].max()
            raise PlmscaleError(
                f"{source}: {len(members)} runs from {low:.3g} to {high:.3g} FLOPs ({high / low:.3g}x) have no "
                f"budget column and lie too close in FLOPs to cut apart, yet too far apart to be one IsoFLOP "
                f"budget (each run must lie within {BUDGET_TOLERANCE_DEX} dex of its budget's centre), e.g. "
                f"run(s) {_list_ids(df['run_id'].iloc[members])}. Add a `budget` column with each run's nominal "
                "IsoFLOP budget in FLOPs (empty for a run outside the IsoFLOP design); see docs/fitting.md")
        budgets[members] = 10 ** centre
    return pd.Series(budgets, index=df.index, name="budget")


def require_budgets(df, min_budgets=2, source="runs table"):
    budgets = budget_groups(df).dropna()
    if budgets.nunique() < min_budgets:
        raise PlmscaleError(f"{source}: IsoFLOP fitting needs runs at {min_budgets} or more compute "
                            f"budgets; found {budgets.nunique()} — add runs at other budgets")
