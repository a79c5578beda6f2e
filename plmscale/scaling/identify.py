"""Is a fit identified? A verdict per method, with the reasons in sentences a researcher can act on.

A fit is *identified* when its data pin down the quantities a forecast uses: the optimum is bracketed,
the optimiser stopped inside its box, the bootstrap refits agree, and the exponents are physical. An
unidentified fit still has numbers, but they say more about the grid, the optimiser's bounds or the noise
than about the model family, so it should make no prediction and draw no line.

`identify(method, entry, criteria)` reads one method's entry as `fit.fit_objective` returns it
("isoflop", "envelope" or "parametric") and returns

    {"identified": bool,
     "reasons": [str, ...],   # the checks that failed; empty exactly when identified
     "notes": [str, ...]}     # observations that did not fail a check (e.g. a dropped budget when
                              # enough others remain), kept so that nothing is silent

plus, for IsoFLOP entries, "bracketed_budgets" and "n_budgets" (how many budgets gave a bracketed
optimum, out of how many). The checks and their defaults are the fields of `Criteria`; docs/trust.md
explains each one.
"""

from dataclasses import dataclass, fields

import numpy as np

from plmscale.errors import PlmscaleError
from plmscale.scaling import bootstrap as boot
from plmscale.scaling import data_constrained, isoflop, parametric
from plmscale.scaling.table import scratch_runs, validate_runs

# Allocation exponents whose interval width is checked. For the IsoFLOP and parametric fits b = 1 − a by
# construction (C = κ·N·D), so b's interval is a's mirrored and checking it again would repeat a reason;
# the envelope fits N and D to separate points, so its b is a separate estimate.
CHECKED_EXPONENTS = {"isoflop": ("a",), "envelope": ("a", "b"), "parametric": ("a",)}
# The optimiser's coordinates: log E, log A, log B, α, β (parametric.BOUNDS is in this order).
PARAMETRIC_COORDINATES = (("E", True), ("A", True), ("B", True), ("alpha", False), ("beta", False))


@dataclass(frozen=True)
class Criteria:
    """Thresholds of the identification checks (config `fit.identify`; docs/trust.md says why these).

    min_bracketed_budgets: IsoFLOP budgets whose parabola has a vertex inside the sampled sizes, with
        positive curvature and the best run not at the grid edge; a power law through fewer is not a law.
    max_exponent_ci_width: widest acceptable 95% bootstrap interval of an allocation exponent (a, and b
        where fitted separately). 0.5 still spans "Chinchilla" to "Kaplan"; a demo should aim for 0.25.
    max_failed_bootstrap_fraction: share of bootstrap refits that may fail (no bracketed optimum left,
        non-finite parametric refit) before the interval is the interval of a selected, biased subset.
    bound_tolerance: a parametric constant counts as "at an optimiser bound" when it lies within this
        fraction of the box width of a bound, in the optimiser's coordinates (log E/A/B, α, β).
    min_starts_in_best_basin: refined grid starts (of parametric.N_REFINE) that must reach the best basin;
        a basin found by one or two starts may be a lucky one among several near-equal minima.
    require_bootstrap: without bootstrap draws there is no interval, so nothing says the fit is stable.
    min_curvature_t: a bracketed IsoFLOP budget counts only when its parabola's curvature is this many
        standard errors above 0 (needs the runs; about a one-sided 95% test): noise alone brackets
        "optima" on a flat profile.
    """

    min_bracketed_budgets: int = 2
    max_exponent_ci_width: float = 0.5
    max_failed_bootstrap_fraction: float = 0.10
    bound_tolerance: float = 1e-3
    min_starts_in_best_basin: int = 3
    require_bootstrap: bool = True
    min_curvature_t: float = 2.0

    @classmethod
    def from_config(cls, mapping, where="fit.identify"):
        """Criteria from a config mapping (missing keys keep their defaults); unknown keys are errors."""
        if mapping is None:
            return cls()
        if not isinstance(mapping, dict):
            raise PlmscaleError(f"{where} must be a mapping of criterion -> value, got {type(mapping).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(mapping) - set(known))
        if unknown:
            raise PlmscaleError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
        values = {}
        for key, value in mapping.items():
            default = getattr(cls, key)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise PlmscaleError(f"{where}.{key} must be true or false, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise PlmscaleError(f"{where}.{key} must be a number >= 0, got {value!r}")
            elif isinstance(default, int) and value != int(value):
                raise PlmscaleError(f"{where}.{key} must be a whole number, got {value!r}")
            values[key] = type(default)(value)
        return cls(**values)


def identify(method, entry, criteria=None, runs=None):
    """Verdict for one method's fit entry; see the module docstring for the returned dict.

    runs: the objective's runs table the entry was fitted to (optional). With it, each bracketed IsoFLOP
    budget must also show a curvature that stands out from its runs' scatter (Criteria.min_curvature_t).
    """
    criteria = criteria or Criteria()
    if method not in CHECKED_EXPONENTS:
        raise PlmscaleError(f"identify: unknown method {method!r}; expected one of {', '.join(CHECKED_EXPONENTS)}")
    if not isinstance(entry, dict):
        raise PlmscaleError(f"identify: the {method} entry must be a dict as fit.json holds it")
    reasons, notes = [], []
    verdict = {}
    if method == "isoflop" and "optima" in entry:
        verdict.update(_check_brackets(entry, criteria, reasons, notes, runs))
    if "error" in entry:
        # An IsoFLOP error with per-budget optima is already explained by the bracket check.
        if not (method == "isoflop" and reasons):
            reasons.append(f"not fitted: {entry['error']}")
        return {"identified": False, "reasons": reasons, "notes": notes, **verdict}
    if method == "parametric":
        _check_parametric(entry, criteria, reasons, notes)
    _check_bootstrap(method, entry, criteria, reasons)
    _check_physical(method, entry, reasons)
    if method in ("isoflop", "envelope"):
        _check_loss_falls(entry, reasons)
    return {"identified": not reasons, "reasons": reasons, "notes": notes, **verdict}


def identify_objective(objective_entry, criteria=None, runs=None):
    """{method: verdict} for every method present in one objective's entry of fit.json."""
    return {method: identify(method, objective_entry[method], criteria, runs)
            for method in CHECKED_EXPONENTS if method in objective_entry}


def _check_brackets(entry, criteria, reasons, notes, runs):
    optima = entry["optima"]
    kept = [optimum for optimum in optima if optimum.get("kept")]
    dropped = [f"budget {d['budget']:.3g} dropped: {d['reason']}" for d in entry.get("dropped_budgets", [])]
    if runs is not None:
        significance = curvature_significance(runs, [optimum["budget"] for optimum in kept])
        weak = []
        for optimum in kept:
            test = significance.get(optimum["budget"])
            if test is None or test["t"] is None:
                notes.append(f"budget {optimum['budget']:.3g}: {optimum.get('n_sizes', 3)} sizes leave no "
                             "residual to test the curvature against")
            elif test["t"] < criteria.min_curvature_t:
                weak.append(optimum)
                dropped.append(f"budget {optimum['budget']:.3g} not counted: curvature {test['curvature']:.3g} "
                               f"± {test['curvature_se']:.2g} per (ln N)^2 (t = {test['t']:.1f} < "
                               f"{criteria.min_curvature_t:g}): the minimum is within the runs' scatter")
        kept = [optimum for optimum in kept if optimum not in weak]
    if len(kept) < criteria.min_bracketed_budgets:
        reasons.append(f"only {len(kept)} of {len(optima)} IsoFLOP budgets bracketed an optimum "
                       f"(need {criteria.min_bracketed_budgets})")
        reasons.extend(dropped)
    else:
        notes.extend(dropped)
    return {"bracketed_budgets": int(len(kept)), "n_budgets": int(len(optima))}


def curvature_significance(runs, budgets=None):
    """Per IsoFLOP budget: the loss parabola's curvature in ln N, its standard error and t = curvature/se.

    runs: one objective's runs table (scratch runs are selected here); budgets: which budgets (default all).
    Returns {budget: {"curvature", "curvature_se", "t", "dof"}}; se and t are None where the parabola has
    no residual degree of freedom (3 runs). Ordinary least squares, as the fit's parabola.
    """
    scratch = scratch_runs(validate_runs(runs)).reset_index(drop=True)
    out = {}
    for design in isoflop.budget_designs(scratch, 3):
        if budgets is not None and not any(np.isclose(design["budget"], b, rtol=1e-9) for b in budgets):
            continue
        x = design["log_n"] - design["log_n"].mean()
        X = np.stack([np.ones_like(x), x, x * x], 1)
        dof = len(x) - 3
        if dof < 0 or np.linalg.matrix_rank(X) < 3:
            continue
        coef = np.linalg.lstsq(X, design["loss"], rcond=None)[0]
        entry = {"curvature": float(coef[2]), "curvature_se": None, "t": None, "dof": int(dof)}
        if dof > 0:
            variance = float(((design["loss"] - X @ coef) ** 2).sum() / dof)
            se = float(np.sqrt(variance * np.linalg.inv(X.T @ X)[2, 2]))
            entry["curvature_se"] = se
            entry["t"] = float(coef[2] / se) if se > 0 else float("inf")
        key = next((b for b in (budgets or []) if np.isclose(design["budget"], b, rtol=1e-9)), design["budget"])
        out[key] = entry
    return out


def _bound_reasons(entry, theta, bounds, criteria) -> list[str]:
    """A reason for each Chinchilla constant (E, A, B, alpha, beta; optimiser coordinates theta, logs for
    E, A, B) that sits within criteria.bound_tolerance of its optimiser bound: the data do not determine it."""
    reasons = []
    for (name, logged), value, (low, high) in zip(PARAMETRIC_COORDINATES, theta, bounds):
        tolerance = criteria.bound_tolerance * (high - low)
        for bound, side in ((low, "lower"), (high, "upper")):
            if abs(value - bound) <= tolerance:
                where = f"log {name} = {bound:g}" if logged else f"{name} = {bound:g}"
                reasons.append(f"{name} = {entry[name]:.4g} sits at the optimiser's {side} bound ({where}): "
                               "the data do not determine it")
    return reasons


def _check_parametric(entry, criteria, reasons, notes):
    theta = entry.get("theta")
    if theta is None:
        theta = [np.log(entry[name]) if logged else entry[name] for name, logged in PARAMETRIC_COORDINATES]
    reasons.extend(_bound_reasons(entry, theta, parametric.BOUNDS, criteria))
    in_basin, refined = entry.get("starts_in_best_basin"), entry.get("n_refined")
    if in_basin is not None and in_basin < criteria.min_starts_in_best_basin:
        reasons.append(f"only {in_basin} of {refined} refined starts reached the best basin "
                       f"(need {criteria.min_starts_in_best_basin}): another minimum may fit as well")
    if entry.get("best_converged") is False:
        notes.append(f"the best start stopped at the iteration cap ({entry.get('max_iterations')}) before its "
                     "stopping rule")


def _check_bootstrap(method, entry, criteria, reasons):
    resamples = entry.get("bootstrap")
    if not resamples or not resamples.get("n"):
        if criteria.require_bootstrap:
            reasons.append("no bootstrap (bootstrap = 0): nothing measures how stable the fit is")
        return
    n, failed = int(resamples["n"]), int(resamples.get("n_failed", 0))
    if failed > criteria.max_failed_bootstrap_fraction * n:
        reasons.append(f"{failed} of {n} bootstrap refits failed ({100 * failed / n:.0f}%, limit "
                       f"{100 * criteria.max_failed_bootstrap_fraction:.0f}%)")
    for key in CHECKED_EXPONENTS.get(method, ("a",)):  # farseer: its local a (b = 1 - a)
        ci = entry.get(f"{key}_ci")
        if ci is None:
            reasons.append(f"no interval for exponent {key}: fewer than 10 bootstrap refits succeeded")
        elif ci[1] - ci[0] > criteria.max_exponent_ci_width:
            reasons.append(f"95% interval of exponent {key} is [{ci[0]:.3f}, {ci[1]:.3f}], {ci[1] - ci[0]:.3f} "
                           f"wide (limit {criteria.max_exponent_ci_width:g})")
    for key in sorted(k[:-3] for k in entry if k.endswith("_ci")):
        value, ci = entry.get(key), entry[f"{key}_ci"]
        if ci is not None and isinstance(value, (int, float)) and not ci[0] <= value <= ci[1]:
            reasons.append(f"{key} = {value:.4g} lies outside its own 95% interval [{ci[0]:.4g}, {ci[1]:.4g}]: "
                           "the resamples disagree with the fit")


def _check_physical(method, entry, reasons):
    for key in ("a", "b"):
        value = entry.get(key)
        if value is None or not np.isfinite(value):
            reasons.append(f"exponent {key} is missing or not finite")
        elif not 0 < value < 1:
            reasons.append(f"exponent {key} = {value:.3f} is outside (0, 1): N_opt and D_opt cannot both grow "
                           "with compute")


def _check_loss_falls(entry, reasons):
    """The compute-optimal loss must fall with compute, beyond doubt where draws exist.

    L_opt = loss_floor + k_l·C^s falls exactly when k_l·s < 0 (for a pure power law k_l > 0, so when
    s < 0; the saturating law's s is negative by construction, so then k_l > 0). The check reads the
    sign of k_l·s in the fit and in every bootstrap draw (files without k_l draws: s alone)."""
    s, k_l = entry.get("s"), entry.get("k_l", 1.0)
    draws = (entry.get("bootstrap") or {}).get("draws") or {}
    if draws.get("s") is not None:
        s_draws = np.array([np.nan if v is None else v for v in draws["s"]], float)
        k_draws = (np.array([np.nan if v is None else v for v in draws["k_l"]], float)
                   if draws.get("k_l") is not None else np.ones_like(s_draws))
        slope_sign = np.sign(k_draws * s_draws)
        finite = slope_sign[np.isfinite(slope_sign)]
        if len(finite) >= 10 and (finite >= 0).mean() > (1 - boot.CI_LEVEL) / 2:
            reasons.append(f"the compute-optimal loss does not fall significantly with compute: in "
                           f"{100 * (finite >= 0).mean():.0f}% of the bootstrap refits it stays flat or rises "
                           f"(allowed: {100 * (1 - boot.CI_LEVEL) / 2:.1f}%); loss exponent s = {s:.4f}")
            return
    if s is not None and k_l is not None and np.isfinite(s) and np.isfinite(k_l) and k_l * s >= 0:
        reasons.append(f"the compute-optimal loss does not fall with compute (loss exponent s = {s:.4f}, "
                       f"k_l = {k_l:.3g})")


# What a method's rollout must forecast without bias to stay identified: the quantity its law is for. The
# laws in (N, D) are loss laws; the IsoFLOP law is an allocation law (N_opt = k·C^a), whose loss at C is a
# separate curve through the vertex losses: a bias there is a note, not a refusal of the allocation.
BACKTEST_JUDGES = {"isoflop": "n_opt", "parametric": "loss", "farseer": "loss", "data_constrained": "loss"}


def backtest_verdict(method, backtest_entry):
    """Does a method's own rollout backtest let it forecast? Returns (reasons, notes) to add to its verdict.

    backtest_entry: the method's entry of the objective's `backtest` (backtest.backtest), or None. A rollout
    (fit below the top IsoFLOP budget, forecast it) whose error interval excludes 0 says the law is biased
    at larger scale: a reason, so that predictions, plots and the closed loop stop using it. Which error
    counts is BACKTEST_JUDGES[method] (loss for the (N, D) laws, N_opt for the IsoFLOP allocation); a biased
    IsoFLOP loss forecast is a note. A rollout that could not be made (too few budgets, no bootstrap) is a
    note: nothing was shown either way. Where the top budget has no vertex its best run only bounds the
    optimum from above, so a loss forecast significantly *below* it is no evidence of bias (a note)."""
    rollout = (backtest_entry or {}).get("rollout")
    if rollout is None:
        skipped = (backtest_entry or {}).get("skipped")
        return [], [f"no rollout backtest: {skipped}" if skipped else "no rollout backtest (fit.backtest is off)"]
    if "error" in rollout:
        return [], [f"rollout backtest not made: {rollout['error']}"]
    held_out = rollout["held_out_budget"]
    forecast = rollout.get("forecast") or {}
    if forecast.get(BACKTEST_JUDGES[method]) is None:
        what = "compute-optimal loss" if BACKTEST_JUDGES[method] == "loss" else "N_opt"
        return [f"not identified for forecasting: fitted below the top budget, it forecasts no finite {what} "
                f"at the held-out top budget ({held_out:.3g} FLOPs)"], []
    reasons, notes = [], []
    # A grid's top budget without a vertex is observed by its best run, which only bounds the optimum from above.
    # A scatter's rollout (held_out) compares each held-out run with the law at that run's own N and D: no bound.
    best_run = (not rollout.get("held_out")
                and not str((rollout.get("observed") or {}).get("source", "")).startswith("parabola vertex"))
    for quantity in ("loss", "n_opt"):
        if quantity == "loss":
            error, ci = rollout.get("loss_error_pct"), rollout.get("loss_error_pct_ci")
            shown = None if error is None or ci is None else f"{error:+.2f}% [{ci[0]:+.2f}, {ci[1]:+.2f}]"
            what = "loss"
        else:
            error, ci = rollout.get("n_opt_log_error"), rollout.get("n_opt_log_error_ci")
            shown = None if error is None or ci is None else f"{error:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}] in ln N"
            what = "compute-optimal model size"
        judged = quantity == BACKTEST_JUDGES[method]
        if shown is None:
            if judged:
                notes.append(f"rollout backtest has no {what} error interval (no bootstrap): its bias is not judged")
            continue
        if ci[0] <= 0 <= ci[1]:
            continue
        if rollout.get("held_out"):  # a scatter's rollout: the top compute quantile held out (scatter_rollout.py)
            sentence = (f"its rollout backtest (fit below {rollout['held_out']}, held out) forecasts their mean "
                        f"{what} {shown} off")
        else:
            sentence = (f"its rollout backtest (fit below the top budget, {held_out:.3g} FLOPs held out) forecasts "
                        f"the held-out top budget's {what} {shown} off")
        if quantity == "loss" and best_run and ci[1] < 0:
            notes.append(f"{sentence}, below its best run, which only bounds the optimum from above: not judged "
                         "as a bias")
        elif judged:
            reasons.append(f"not identified for forecasting: {sentence}: biased at larger scale")
        elif quantity == "loss":
            notes.append(f"{sentence}: its loss at C (the curve through the vertex losses) is biased at larger "
                         "scale; its allocation is judged by the N_opt rollout")
    return reasons, notes


def identify_farseer(entry, criteria=None):
    """Verdict for fit.json's `farseer` entry (farseer.fit_entry). Its 9 constants trade against each other
    (a flat valley), so they are not checked one by one; what a forecast uses is: the local allocation
    exponent a at the largest budget fitted, physical and with a narrow enough interval, and bootstrap refits
    that succeed. How many starts reached the best objective is a note."""
    criteria = criteria or Criteria()
    if "error" in entry:
        return {"identified": False, "reasons": [f"not fitted: {entry['error']}"], "notes": []}
    reasons = []
    notes = [f"{entry['starts_in_best_basin']} of {entry['n_starts']} starts reached the best objective"]
    _check_bootstrap("farseer", entry, criteria, reasons)
    _check_physical("farseer", {"a": entry.get("a"), "b": entry.get("b")}, reasons)
    return {"identified": not reasons, "reasons": reasons, "notes": notes}


def identify_data_constrained(entry, criteria=None):
    """Verdict for fit.json's `data_constrained` entry (data_constrained.fit_entry): the Chinchilla part's
    constants inside the optimiser's box, enough starts in the best basin, bootstrap refits that succeed, the
    (unlimited-data) allocation exponents physical with a narrow enough interval. A decay constant R* at its
    bound, or one no run constrains (no repeated run, no run with more parameters than its unique data can
    use), is a note: the forecasts inside the table's range do not depend on it, and it bounds R* from one side."""
    criteria = criteria or Criteria()
    if "error" in entry:
        return {"identified": False, "reasons": [f"not fitted: {entry['error']}"], "notes": []}
    reasons = []
    notes = [f"{entry['starts_in_best_basin']} of {entry['n_starts']} starts reached the best objective"]
    theta = entry["theta"]
    reasons.extend(_bound_reasons(entry, theta, data_constrained.BOUNDS, criteria))
    if entry["starts_in_best_basin"] < criteria.min_starts_in_best_basin:
        reasons.append(f"only {entry['starts_in_best_basin']} of {entry['n_starts']} starts reached the best "
                       f"basin (need {criteria.min_starts_in_best_basin}): another minimum may fit as well")
    constrained = {"r_star_d": entry.get("n_repeated_runs"), "r_star_n": entry.get("n_excess_param_runs")}
    for (name, label), value in zip((("r_star_d", "R*_D"), ("r_star_n", "R*_N")), theta[5:]):
        low, high = data_constrained.R_STAR_BOUNDS
        if not constrained[name]:
            notes.append(f"{label} = {entry[name]:.3g} is not constrained: no run "
                         + ("repeats its data" if name == "r_star_d" else
                            "has more parameters than its unique data can use (N > N_of_U)"))
        elif value - low <= criteria.bound_tolerance * (high - low):
            notes.append(f"{label} sits at its lower bound ({entry[name]:.3g} epochs): repeats are worth nothing")
        elif high - value <= criteria.bound_tolerance * (high - low):
            notes.append(f"{label} sits at its upper bound ({entry[name]:.3g} epochs): within these runs a repeat "
                         "is worth a new token; only a lower bound is known")
    if entry.get("n_runs_without_unique_tokens"):
        notes.append(f"{entry['n_runs_without_unique_tokens']} run(s) have no unique_tokens value and count as "
                     "trained on unique data")
    _check_bootstrap("data_constrained", {k: v for k, v in entry.items()
                                          if k in ("bootstrap", "a", "b", "a_ci", "b_ci")}, criteria, reasons)
    _check_physical("data_constrained", entry, reasons)
    return {"identified": not reasons, "reasons": reasons, "notes": notes}
