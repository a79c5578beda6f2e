"""All fits for all objectives in one call: the content of results/scaling/fit.json."""

import hashlib
import logging
from dataclasses import fields

import numpy as np
import pandas as pd

from plmscale.errors import PlmscaleError
from plmscale.scaling import bootstrap as boot
from plmscale.scaling import backtest as backtests
from plmscale.scaling import costs, data_constrained, envelope, farseer, fit_workers, isoflop, parametric
from plmscale.scaling.compare import compare_objectives
from plmscale.scaling.fitfile import FIT_VERSION, METHODS, check_method
from plmscale.scaling.identify import (Criteria, backtest_verdict, identify, identify_data_constrained,
                                       identify_farseer)
from plmscale.scaling.published import PUBLISHED
from plmscale.scaling.settings import FitSettings
from plmscale.scaling.table import (DEFAULT_LOSS_COLUMN, OBJECTIVES, budget_groups, scratch_runs, validate_curves,
                                    validate_runs, with_loss_column)
from plmscale.scaling.transfer import analyse_transfer

log = logging.getLogger(__name__)

# flops / (n_params · tokens) of a table in FLOPs: 6 by the 6·N·D convention, somewhat more where the
# FLOPs count attention or embeddings. Far outside this range the flops column is in another unit
# (GFLOPs, PFLOP-days) or counts something else, and every law in C would be off by that factor.
PLAUSIBLE_FLOPS_PER_PARAM_TOKEN = (4.0, 20.0)


# Tokens per parameter of a real scaling study: Chinchilla's optimum is ~20; IsoFLOP grids span roughly
# 1 to 10^4 either side of it (tiny demo models see more). Outside this range a column is in another unit.
PLAUSIBLE_TOKENS_PER_PARAM = (0.1, 1e5)


def flops_unit_note(kappa: float, tokens_per_param: float, objective: str) -> str | None:
    """A warning when the median FLOPs per parameter per token is far from 6·N·D's 6, naming the column
    that is most likely in another unit. A factor f off 6 comes from flops (tokens per parameter as they
    are), n_params (the true tokens per parameter are the table's / f) or tokens (the table's × f): the
    columns whose correction leaves plausible tokens per parameter are named, likeliest first."""
    low, high = PLAUSIBLE_FLOPS_PER_PARAM_TOKEN
    if low <= kappa <= high:
        return None
    factor = kappa / 6.0
    implied = {"flops": tokens_per_param, "n_params": tokens_per_param / factor, "tokens": tokens_per_param * factor}
    lowest, highest = PLAUSIBLE_TOKENS_PER_PARAM
    suspects = sorted((c for c, r in implied.items() if lowest <= r <= highest),
                      key=lambda c: abs(np.log(implied[c] / 20.0)))
    if suspects:
        column = suspects[0]
        too_large = (factor > 1) == (column == "flops")  # flops too large, or n_params / tokens too small
        size = f"{max(factor, 1 / factor):.3g}x too {'large' if too_large else 'small'}"
        blame = (f"most likely the {column} column is in another unit, about {size}"
                 + (f" (fixing it gives {implied[column]:.3g} tokens per parameter)" if column != "flops" else "")
                 + (f"; else {' or '.join(suspects[1:])}" if len(suspects) > 1 else ""))
    else:
        blame = "no single column explains it: check the units of the flops, n_params and tokens columns"
    return (f"{objective}: median flops / (n_params * tokens) is {kappa:.3g}, not about 6 (plausible: {low:g} to "
            f"{high:g}) at {tokens_per_param:.3g} tokens per parameter; {blame}. Laws and predictions in C are "
            "off by the same factor")


# An IsoFLOP run that sees its data more than once is not the run the law is about (unique-data scaling):
# past about 4 epochs repeated tokens are worth clearly less than new ones (Muennighoff et al. 2023), and
# any repetition shifts the optimum towards larger models.
MAX_ISOFLOP_EPOCHS = 1.0


def repeated_data_note(scratch, budgets, objective: str) -> str | None:
    """A warning naming the IsoFLOP runs (a budget, from scratch) whose runs.csv `epochs` exceed
    MAX_ISOFLOP_EPOCHS; None without the column or without such runs."""
    if "epochs" not in scratch.columns:
        return None
    epochs = pd.to_numeric(scratch["epochs"], errors="coerce")
    repeated = scratch[budgets.notna().to_numpy() & (epochs > MAX_ISOFLOP_EPOCHS).to_numpy()]
    if len(repeated) == 0:
        return None
    worst = epochs.loc[repeated.index].max()
    shown = ", ".join(f"{row.run_id} ({float(row.epochs):.3g})" for row in repeated.head(8).itertuples())
    more = f" and {len(repeated) - 8} more" if len(repeated) > 8 else ""
    return (f"{objective}: {len(repeated)} IsoFLOP run(s) repeat their training data, up to {worst:.3g} epochs "
            f"(more than {MAX_ISOFLOP_EPOCHS:g}): {shown}{more}. The laws assume unique data; add data (sources, "
            "a larger split) or lower the budgets, or read the fit as one of repeated data")


def scatter_reason(runs, min_points) -> str | None:
    """Why one objective's runs are a scatter of N and D rather than an IsoFLOP grid, or None. A table with a
    budget column states its design and is never a scatter. Without one, the runs form a grid where their
    FLOPs group into budgets (table.budget_groups) and at least half of them lie in budgets of min_points (at
    least 3) runs; runs spread evenly in FLOPs, or mostly alone at their FLOPs, have no IsoFLOP budgets to bin
    them into (a grid of one budget is still a grid, whose IsoFLOP fit says it needs 2)."""
    if "budget" in runs.columns:
        return None
    scratch = scratch_runs(runs)
    if len(scratch) == 0:
        return None
    low, high = scratch["flops"].min(), scratch["flops"].max()
    spread = f"{len(scratch)} runs from {low:.3g} to {high:.3g} FLOPs ({high / low:.3g}x) and no budget column"
    try:
        budgets = budget_groups(scratch)
    except PlmscaleError:
        return f"{spread}, spread in FLOPs rather than grouped at common budgets"
    per_budget = budgets.map(budgets.value_counts())
    in_budgets = int((per_budget >= max(3, min_points)).sum())
    if 2 * in_budgets < len(scratch):
        return (f"{spread}, only {in_budgets} of them in groups of {max(3, min_points)} or more at a common FLOPs "
                "budget")
    return None


def table_sha256(*frames):
    digest = hashlib.sha256()
    for frame in frames:
        if frame is not None:
            digest.update(frame.to_csv(index=False).encode())
    return digest.hexdigest()


def _draw_lists(draws, keys):
    """Bootstrap draws as JSON lists, NaN (failed refit) as null, never rounded."""
    return {key: [None if not np.isfinite(v) else float(v) for v in np.asarray(draws[key], float)]
            for key in keys}


def _with_intervals(entry, draws, keys, exponent_keys=("a", "b")):
    failed = ~np.isfinite(np.asarray(draws[exponent_keys[0]], float))
    for key in exponent_keys:
        entry[f"{key}_ci"] = boot.interval(draws[key])
    entry["bootstrap"] = {"n": int(len(failed)), "n_failed": int(failed.sum()), "level": boot.CI_LEVEL,
                          "draws": _draw_lists(draws, keys)}
    return entry


def _safe(method, objective, function):
    """A method that cannot be fitted records why instead of sinking the whole fit; so does one whose
    constants fit.json's reader would refuse (e.g. a non-finite exponent on degenerate data)."""
    try:
        entry = function()
        check_method(method, entry, f"{objective} {method} fit")
        return entry
    except PlmscaleError as error:
        log.warning("%s %s: %s", objective, method, error)
        return {"error": str(error)}


def envelope_by_cost_model(curves, scratch, design=None, run_counts=None):
    """The envelope's `by_cost_model`: refitted under each FLOPs definition runs.csv carries (envelope.py), its
    intervals from the main envelope's bootstrap run counts; {"skipped": why} for a table without the columns."""
    per_token = costs.flops_per_token_by_run(scratch)
    if not per_token:
        return {"skipped": "the runs table has no per-definition FLOPs columns "
                           f"({', '.join(costs.DEFINITION_COLUMNS.values())}) to count the curves in"}
    by_model = envelope.envelope_by_cost_model(curves, per_token, None if design is None else design["run_ids"],
                                               run_counts, design["bin_dex"] if design else envelope.BIN_DEX)
    for law in by_model.values():
        draws = law.pop("draws", None)
        if draws is not None:
            law.update(a_ci=boot.interval(draws["a"]), b_ci=boot.interval(draws["b"]))
    return by_model


ISOFLOP_LAW_KEYS = ("k_n", "a", "k_d", "b", "k_l", "s")


def isoflop_entry(scratch, min_points, counts, rng, isoflop_bootstrap="runs", definition=None):
    """fit.json's `isoflop` entry of one objective's scratch runs: the budgets' optima and laws, with bootstrap
    intervals when `counts` (draw_counts' (n_boot, runs) array) is given. The fit stage and the planner's
    simulated adaptive rounds (design/simulate_rounds.py) both fit through here."""
    entry = isoflop.isoflop_optima(scratch, min_points)
    entry["loss_law"] = ("L_opt = loss_floor + k_l * C^s (vertex losses of the kept budgets, loss_floor >= 0; "
                         "a pure power law, loss_floor = 0, with only 2 budgets)")
    if "error" not in entry and counts is not None:
        if isoflop_bootstrap == "residuals":
            losses, residual_sd = boot.isoflop_residual_losses(scratch, len(counts), rng, min_points)
            draws = boot.isoflop_draws(scratch, np.ones_like(counts), min_points, losses)
        else:
            draws = boot.isoflop_draws(scratch, counts, min_points)
        _with_intervals(entry, draws, ISOFLOP_LAW_KEYS + ("loss_floor",))
        entry["bootstrap"]["scheme"] = isoflop_bootstrap
        if isoflop_bootstrap == "residuals":
            entry["bootstrap"]["residual_sd"] = residual_sd
    if "error" not in entry and definition is not None:
        entry.update(definition, cost_models=isoflop.cost_model_note(definition["flops_definition"]))
    return entry


def fit_objective(runs, curves, n_boot, rng, min_points, drop_highest_loss=0, isoflop_bootstrap="runs",
                  no_curves_reason="envelope fit needs training curves (--curves CURVES.csv)",
                  law_families=("parametric",), scatter=None):
    """IsoFLOP, envelope and parametric fits (with bootstrap) for one objective's runs.

    scatter: scatter_reason's sentence where the runs are no IsoFLOP grid: the IsoFLOP method then records
    that it does not apply (every run counts as outside an IsoFLOP design), and the law families fit the runs.

    drop_highest_loss: the parametric fit leaves out this many highest-loss runs (outliers far above the
    frontier pull a Huber fit less than a squared one, but still pull); the entry lists them.
    isoflop_bootstrap: "runs" (redraw runs within each budget) or "residuals" (keep every run, redraw the
    parabolas' pooled residuals: bootstrap.isoflop_residual_losses; for grids of few sizes per budget)."""
    scratch = scratch_runs(runs).reset_index(drop=True)
    if len(scratch) == 0:
        message = "no scratch runs for this objective"
        return {method: {"error": message} for method in METHODS}
    budgets = budget_groups(scratch)
    strata = np.where(budgets.isna(), "outside IsoFLOP design", budgets.astype(str))
    counts = boot.draw_counts(strata, n_boot, rng) if n_boot else None
    kappa = float(np.median(scratch["flops"] / (scratch["n_params"] * scratch["tokens"])))
    objective = runs["objective"].iat[0]
    tokens_per_param = float(np.median(scratch["tokens"] / scratch["n_params"]))
    notes = [note for note in [flops_unit_note(kappa, tokens_per_param, objective),
                               repeated_data_note(scratch, budgets, objective)] if note]
    for note in notes:
        log.warning(note)
    law_keys = ISOFLOP_LAW_KEYS
    # The count the budgets and curves are in (train.flops_definition): iso-compute holds in it only.
    definition = costs.detect_flops_definition(scratch, f"{objective} runs")

    def fit_isoflop():
        return isoflop_entry(scratch, min_points, counts, rng, isoflop_bootstrap, definition)

    def fit_envelope():
        if curves is None:
            raise PlmscaleError(no_curves_reason)
        own = curves[curves["run_id"].isin(set(scratch["run_id"])) |
                     ~curves["run_id"].isin(set(runs["run_id"]))]
        entry = envelope.fit_envelope(own)
        entry["loss_law"] = "L = k_l * C^s (lower envelope, no irreducible term)"
        if "error" not in entry and counts is not None:
            design = envelope.envelope_design(own, entry["bin_dex"], entry["skip_fraction"])
            run_counts = rng.multinomial(len(design["run_ids"]), np.full(len(design["run_ids"]),
                                         1 / len(design["run_ids"])), size=n_boot)
            _with_intervals(entry, boot.envelope_draws(design, run_counts), law_keys)
        if "error" not in entry:
            entry.update(definition)
            entry["by_cost_model"] = envelope_by_cost_model(own, scratch, design if counts is not None else None,
                                                            run_counts if counts is not None else None)
        return entry

    def fit_parametric():
        dropped = parametric.highest_loss_mask(scratch["loss"], int(drop_highest_loss))
        kept = scratch[~dropped]
        entry = parametric.fit_parametric(kept["n_params"], kept["tokens"], kept["loss"])
        entry["flops_per_param_token"] = kappa
        entry["loss_law"] = "L = E + A/N^alpha + B/D^beta"
        entry["drop_highest_loss"] = int(drop_highest_loss)
        entry["dropped_runs"] = [{"run_id": str(row.run_id), "loss": float(row.loss), "n_params": float(row.n_params),
                                  "tokens": float(row.tokens)} for row in scratch[dropped].itertuples()]
        if counts is not None:
            draws = boot.parametric_draws(kept["n_params"], kept["tokens"], kept["loss"], counts[:, ~dropped], entry)
            _with_intervals(entry, draws, ("E", "A", "B", "alpha", "beta", "a", "b"),
                            exponent_keys=("a", "b", "alpha", "beta", "E", "A", "B"))
            # Refits that hit the iteration cap still count (they stopped close to their optimum).
            entry["bootstrap"]["n_unconverged"] = int((~draws["converged"]).sum())
        return entry

    def fit_farseer():
        try:
            return farseer.fit_entry(scratch["n_params"], scratch["tokens"], scratch["loss"], kappa,
                                     counts, reference_flops=float(scratch["flops"].max()))
        except PlmscaleError as error:
            log.warning("%s farseer: %s", objective, error)
            return {"error": str(error)}

    def fit_data_constrained():
        return data_constrained.fit_entry(scratch, kappa, counts, source=f"{objective} runs")

    not_isoflop = {"error": f"does not apply: the runs are a scatter of N and D, not an IsoFLOP grid ({scatter}); "
                            "the law families in (N, D) fit them. Add a budget column (each run's nominal IsoFLOP "
                            "budget) to fit IsoFLOP budgets; see docs/fitting.md"}
    entry = {"isoflop": not_isoflop if scatter else _safe("isoflop", objective, fit_isoflop),
             "envelope": _safe("envelope", objective, fit_envelope),
             "parametric": _safe("parametric", objective, fit_parametric)}
    if "farseer" in law_families:  # opt-in (fit.law_families): after the others, it reuses their bootstrap counts
        entry["farseer"] = fit_farseer()
    if "data_constrained" in law_families:  # opt-in, as farseer; not fitted without repeated data (a reason)
        entry["data_constrained"] = _safe("data_constrained", objective, fit_data_constrained)
    return {**entry, "n_runs": int(len(runs)), "n_scratch_runs": int(len(scratch)), "flops_per_param_token": kappa,
            "max_run_flops": float(scratch["flops"].max()), "notes": notes}


# The opt-in law families (fit.law_families) beside the three methods every fit has, backtested by rollout only.
OPTIONAL_FAMILIES = backtests.OPTIONAL_METHODS


def judge_objective(entry, runs, criteria):
    """identify's verdict written into every method entry of one objective (identified, reasons, notes)."""
    for method in METHODS:
        verdict = identify(method, entry[method], criteria, runs=runs)
        entry[method].update(verdict)
    if "farseer" in entry:
        entry["farseer"].update(identify_farseer(entry["farseer"], criteria))
    if "data_constrained" in entry:
        entry["data_constrained"].update(identify_data_constrained(entry["data_constrained"], criteria))
    return entry


def mark_outside_grid(entry, objective, grid_objectives):
    """An objective the IsoFLOP grid does not train: the first reason of every unidentified method says so
    (runs added by hand, e.g. train.runs at several budgets, may still identify a law)."""
    why = (f"{objective} is not in the IsoFLOP grid (train.objectives is {list(grid_objectives)}): its "
           f"{entry['n_runs']} run(s) are extra or transfer runs, not an IsoFLOP design")
    entry["in_isoflop_grid"] = False
    for method in METHODS + tuple(f for f in OPTIONAL_FAMILIES if f in entry):
        if not entry[method].get("identified"):
            entry[method]["reasons"] = [why] + list(entry[method].get("reasons", []))
    return entry


def backtest_objective(entry, runs, targets, n_boot, seed, min_points, drop_highest_loss=0, isoflop_bootstrap="runs",
                       scatter=False):
    """backtest.backtest for the identified methods it covers (IsoFLOP, parametric); the others record
    why they were not backtested. Plain JSON, stored as the objective's `backtest`. scatter: the runs are no
    IsoFLOP grid, and the law families' rollouts hold out the top compute quantile (scatter_rollout.py)."""
    methods = [m for m in backtests.METHODS if entry[m].get("identified")]
    skipped = {m: {"skipped": f"not identified: {entry[m]['reasons'][0]}" if entry[m].get("reasons")
                   else "not identified"} for m in backtests.METHODS if m not in methods}
    result = backtests.backtest(runs, targets, n_boot=n_boot, seed=seed, min_points=min_points, methods=methods,
                                parametric_drop_highest_loss=drop_highest_loss, isoflop_bootstrap=isoflop_bootstrap,
                                scatter=scatter)
    result.update(skipped)
    result["envelope"] = {"skipped": "the backtest covers the IsoFLOP and parametric fits"}
    for family in OPTIONAL_FAMILIES:
        if family not in entry:
            continue
        if entry[family].get("identified"):
            result[family] = backtests.backtest(runs, (), n_boot=n_boot, seed=seed, min_points=min_points,
                                                methods=(family,), scatter=scatter)[family]
        else:
            reasons = entry[family].get("reasons")
            result[family] = {"skipped": f"not identified: {reasons[0]}" if reasons else "not identified"}
    return result


# The law families that forecast the loss of any (N, D) (the data-constrained law: of any (N, D, U)), and so
# compete in selection: fewest constants first (5, 7, 9).
LAW_FAMILIES = ("parametric", "data_constrained", "farseer")
# A family with more constants replaces a simpler identified one only when it forecasts the held-out runs
# with an RMS error at most this fraction of the simpler one's. Farseer's law can mimic the Chinchilla
# form, so on a Chinchilla table both forecast about equally well and a single held-out budget's noise
# would pick either. Measured (tests/test_laws.py, 10 tables each): Farseer's RMS error over Chinchilla's
# is 0.22-0.75 on tables drawn from Farseer's law, 0.71-2.36 on tables drawn from a Chinchilla law.
SELECTION_MARGIN = 0.8


def choose_law(families):
    """The rule of select_law over {family: {"identified", "held_out_rms_pct"}} (LAW_FAMILIES order):
    (selected family or None, why)."""
    candidates = [f for f in LAW_FAMILIES if f in families and families[f]["identified"]
                  and families[f]["held_out_rms_pct"] is not None]
    if not candidates:
        return None, "no law family is identified with a rollout backtest to rank it"
    best = candidates[0]
    for family in candidates[1:]:
        if families[family]["held_out_rms_pct"] <= SELECTION_MARGIN * families[best]["held_out_rms_pct"]:
            best = family
    errors = ", ".join(f"{f} {families[f]['held_out_rms_pct']:.2f}%" for f in candidates)
    return best, (f"RMS error on the held-out top budget's runs among the identified families: {errors}; a family "
                  f"with more constants is chosen only at <= {SELECTION_MARGIN:g}x the simpler one's error")


def select_law(entry):
    """The law family that forecast the held-out top budget's runs best (RMS error of the rollout,
    backtest.py's held_out_runs) among those identified, the backtest included (choose_law's rule):
    {"selected_law": name or None, "law_selection": {"families": {family: {identified, held_out_rms_pct,
    loss_error_pct, loss_error_pct_ci}}, "why": sentence}}."""
    table = {}
    for family in LAW_FAMILIES:
        if family not in entry:
            continue
        rollout = ((entry.get("backtest") or {}).get(family) or {}).get("rollout") or {}
        table[family] = {"identified": bool(entry[family].get("identified")),
                         "held_out_rms_pct": (rollout.get("held_out_runs") or {}).get("rms_pct"),
                         "loss_error_pct": rollout.get("loss_error_pct"),
                         "loss_error_pct_ci": rollout.get("loss_error_pct_ci")}
    selected, why = choose_law(table)
    held_out = next((r["held_out"] for r in (((entry.get("backtest") or {}).get(f) or {}).get("rollout") or {}
                                             for f in table) if r.get("held_out")), None)
    if held_out:  # a scatter's rollout held out its top compute quantile, not a top budget
        why = why.replace("the held-out top budget's runs", f"the held-out runs ({held_out})")
    return {"selected_law": selected, "law_selection": {"families": table, "why": why}}


def judge_backtest(entry):
    """The rollout backtest joins the verdict of every method it covers: a biased rollout is a reason
    (the method is no longer identified), a rollout that could not be made a note."""
    for method in backtests.METHODS + tuple(m for m in backtests.OPTIONAL_METHODS if m in entry):
        if not entry[method].get("identified"):
            continue
        reasons, notes = backtest_verdict(method, entry["backtest"].get(method))
        entry[method]["notes"] = list(entry[method].get("notes", [])) + notes
        if reasons:
            entry[method]["reasons"] = list(entry[method].get("reasons", [])) + reasons
            entry[method]["identified"] = False
    return entry


def objective_entry(objective, subset, sub_curves, settings: FitSettings, no_curves_reason):
    """fit.json's entry of one objective's runs (and curves, or None): every method fitted, judged, backtested,
    and the law selected."""
    # An independent, reproducible stream per objective: adding MLM runs leaves the CLM draws alone.
    sub_rng = np.random.default_rng([settings.seed, OBJECTIVES.index(objective)])
    drop_highest_loss = settings.drop_highest_loss
    scatter = scatter_reason(subset, settings.min_points_per_budget)
    if scatter:  # no IsoFLOP budgets: every run counts as outside an IsoFLOP design
        subset = subset.assign(budget=np.nan)
    entry = fit_objective(subset, sub_curves, settings.bootstrap, sub_rng, settings.min_points_per_budget,
                          drop_highest_loss, settings.isoflop_bootstrap, no_curves_reason,
                          settings.law_families, scatter)
    judge_objective(entry, subset, settings.identify)
    if settings.grid_objectives is not None and objective not in settings.grid_objectives:
        mark_outside_grid(entry, objective, settings.grid_objectives)
    if settings.backtest:
        entry["backtest"] = backtest_objective(entry, subset, settings.predict_flops.get(objective, []),
                                               settings.bootstrap, settings.seed, settings.min_points_per_budget,
                                               drop_highest_loss, settings.isoflop_bootstrap, bool(scatter))
        judge_backtest(entry)
        entry.update(select_law(entry))
    return entry


def fit_all(runs_df, curves_df, settings: FitSettings, source="runs table", curves_source="curves table"):
    """Every method for every objective present, judged (identify) and backtested; see docs for the
    fit.json layout this returns. settings: the config's fit section (FitSettings).

    settings.predict_flops are the backtest's leave-one-budget-out targets. A loss_column other than
    `loss` (a bin's loss, valid_loss_id_<bin>) exists only at the end of a run: the curves, which hold the
    whole validation loss, are then left out, and with them the envelope fit.
    settings.grid_objectives (train.objectives) are the objectives the IsoFLOP grid trains. An objective
    with runs but no grid (the demo's MLM: one run from scratch, one transfer run) gets that as its first
    reason, so fit.json says why it has no law rather than only that a fit failed.
    """
    criteria = settings.identify
    loss_column = settings.loss_column
    drop_highest_loss = settings.drop_highest_loss
    no_curves_reason = "envelope fit needs training curves (--curves CURVES.csv)"
    if loss_column != DEFAULT_LOSS_COLUMN:
        runs_df = with_loss_column(runs_df, loss_column, source)
        curves_df = None
        no_curves_reason = (f"not fitted: fit.loss_column is {loss_column}, a loss measured at the end of each run "
                            "only, and the envelope needs whole curves of that loss")
    runs = validate_runs(runs_df, source, group_budgets=False)  # scatter_reason decides, per objective
    curves = validate_curves(curves_df, curves_source) if curves_df is not None else None
    present = [o for o in OBJECTIVES if (runs["objective"] == o).any()]
    # Each objective's entry depends on its own runs and random stream only: fitted side by side (fit_workers).
    entries = fit_workers.map_calls(objective_entry, [
        (objective, runs[runs["objective"] == objective],
         curves[curves["objective"] == objective] if curves is not None else None, settings, no_curves_reason)
        for objective in present])
    objectives = dict(zip(present, entries))
    # The transfer analysis may solve a parametric law for effective tokens: only an identified one.
    laws = {o: v["parametric"] for o, v in objectives.items() if v["parametric"].get("identified")}
    return {"version": FIT_VERSION, "inputs_sha256": table_sha256(runs_df, curves_df),
            "settings": {"bootstrap": settings.bootstrap, "seed": settings.seed,
                         "min_points_per_budget": settings.min_points_per_budget,
                         "ci_level": boot.CI_LEVEL, "huber_delta": parametric.HUBER_DELTA,
                         "parametric_grid_starts": int(len(parametric.chinchilla_grid())),
                         "parametric_refined_starts": parametric.N_REFINE,
                         "parametric_drop_highest_loss": drop_highest_loss,
                         "isoflop_bootstrap": settings.isoflop_bootstrap, "loss_column": loss_column,
                         "identify": {f.name: getattr(criteria, f.name) for f in fields(Criteria)},
                         "predict_flops": {o: list(v) for o, v in settings.predict_flops.items()}},
            "objectives": objectives,
            "transfer": analyse_transfer(runs, curves, laws),
            "comparison": compare_objectives(objectives, PUBLISHED),
            "published": PUBLISHED}
