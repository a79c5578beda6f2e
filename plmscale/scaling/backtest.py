"""Backtests: does a fit forecast budgets it has not seen? Rollout and leave-one-budget-out, per method.

A fit earns trust by forecasting data it was not fitted to. Two checks, for the IsoFLOP fit and the
parametric fit of one objective's runs table (a validated table; transfer and incomplete runs are left
out as by every fit):

Rollout: fit on every IsoFLOP budget but the top one (and, for the parametric fit, on no run at or above
that budget's compute), forecast the top budget's compute-optimal loss and model size, and compare with
what the top budget observed: the vertex of its parabola (loss against log N), or, where the top budget
has no usable vertex, its best run (then `observed.source` says so: the best run of a grid only bounds
the optimum). The forecast interval comes from a bootstrap of the reduced fit (runs resampled within
their budget, as in the fit stage); the observed vertex gets its own bootstrap interval, and the error's
interval pairs forecast and observed draws, so that both uncertainties count. The IsoFLOP loss forecast
uses the law named by `loss_law` (see isoflop.LOSS_LAWS; fit.json's is the saturating one).

Leave-one-budget-out (LOBO): refit without each budget in turn and forecast every target in
`fit.predict_flops`. The spread of those forecasts is the forecast's sensitivity to any single budget.
For the IsoFLOP fit only bracketed budgets are left out (the others do not enter the fit); for the
parametric fit every IsoFLOP budget is.

`backtest(runs, predict_flops, n_boot, seed, min_points)` returns JSON-ready plain values (floats, ints,
bools, strings, lists, None for a missing or non-finite number):

    {"isoflop": {"rollout": ROLLOUT, "leave_one_budget_out": LOBO},
     "parametric": {"rollout": ROLLOUT, "leave_one_budget_out": LOBO},
     "settings": {"n_boot", "seed", "min_points_per_budget", "ci_level", "isoflop_loss_law"}}

    ROLLOUT = {"held_out_budget": C,                      # FLOPs of the top IsoFLOP budget
               "fitted_budgets": [C, ...],                # budgets the reduced fit used
               "n_runs_fitted": int,
               "observed": {"n_opt", "loss", "source": "parabola vertex" | "best run (...)",
                            "n_opt_ci", "loss_ci"},       # intervals [low, high] or None
               "forecast": {"n_opt", "loss", "n_opt_ci", "loss_ci"},
               "loss_error_pct": 100·(forecast − observed)/observed, "loss_error_pct_ci": [low, high],
               "n_opt_log_error": ln(forecast/observed),  "n_opt_log_error_ci": [low, high],
               "n_opt_ratio": forecast/observed,
               "loss_inside_interval": bool, "n_opt_inside_interval": bool,  # observed within forecast CI
               "loss_consistent": bool, "n_opt_consistent": bool,            # 0 within the error's CI
               "bootstrap": {"n", "n_failed"},            # forecast draws that failed (left out of the CIs)
               "loss_law": "how the loss was forecast"}
        (the *_inside_interval and *_consistent flags and every *_ci are None without a bootstrap)
        or {"held_out_budget": C or None, "error": "why no rollout could be made"}

    LOBO = {"targets": [C, ...],
            "full": [{"flops", "n_opt", "loss"}, ...],            # the all-budgets fit, per target
            "left_out": [{"budget": C, "a": exponent, "forecasts": [{"flops", "n_opt", "loss"}, ...]}
                         or {"budget": C, "error": "why this refit failed"}, ...],
            "sensitivity": [{"flops", "n_opt_min", "n_opt_max", "n_opt_ratio" (max/min),
                             "loss_min", "loss_max", "loss_spread_pct" (100·(max − min)/full-fit loss)}],
            "full_a", "a_min", "a_max": allocation exponent of the full fit and range over the refits,
            "n_refits": refits that succeeded, "loss_law" (IsoFLOP only)}
        or {"targets": [...], "error": "why"}

Losses are in the table's units (nats); n_opt is in the table's parameter count convention.
"""

import numpy as np

from plmscale.errors import PlmscaleError
from plmscale.scaling import bootstrap as boot
from plmscale.scaling import data_constrained, farseer, isoflop, parametric
from plmscale.scaling.isoflop import LOSS_LAWS, fit_loss_law, loss_at  # noqa: F401 (backtest's API)
from plmscale.scaling.scatter_rollout import scatter_rollout
from plmscale.scaling.table import budget_groups, scratch_runs, validate_runs

METHODS = ("isoflop", "parametric")
# Methods backtested on request (methods=...): rollout only, their refits cost ~0.1 s each.
OPTIONAL_METHODS = ("farseer", "data_constrained")
# The reduced IsoFLOP fit needs a power law through at least this many bracketed budgets.
MIN_FIT_BUDGETS = 2
# The parametric law has 5 constants.
MIN_PARAMETRIC_RUNS = 5


def backtest(runs, predict_flops=(), n_boot=200, seed=0, min_points=3, methods=METHODS, loss_law="saturating",
             source="runs table", parametric_drop_highest_loss=0, isoflop_bootstrap="runs", scatter=False):
    """Rollout and leave-one-budget-out for each method on one objective's runs; see the module docstring.

    scatter: the runs are a scatter of N and D, not an IsoFLOP grid (fit.scatter_reason): the law families'
    rollouts hold out the top compute quantile instead of a top budget (scatter_rollout.py).

    isoflop_bootstrap: the IsoFLOP intervals' scheme, as the fit stage's fit.isoflop_bootstrap (runs |
    residuals: bootstrap.isoflop_residual_losses).
    parametric_drop_highest_loss: as the fit stage's fit.parametric.drop_highest_loss, every parametric
    refit leaves out the k highest-loss runs among those it is given."""
    runs = validate_runs(runs, source)
    objectives = runs["objective"].unique()
    if len(objectives) != 1:
        raise PlmscaleError(f"{source}: backtest reads one objective's runs at a time; got "
                            f"{', '.join(sorted(objectives))}")
    unknown = set(methods) - set(METHODS) - set(OPTIONAL_METHODS)
    if unknown:
        raise PlmscaleError(f"backtest: unknown method(s) {', '.join(sorted(unknown))}; known: {', '.join(METHODS)}")
    if loss_law not in LOSS_LAWS:
        raise PlmscaleError(f"backtest: unknown IsoFLOP loss law {loss_law!r}; known: {', '.join(LOSS_LAWS)}")
    targets = [float(c) for c in predict_flops]
    if any(not (np.isfinite(c) and c > 0) for c in targets):
        raise PlmscaleError(f"fit.predict_flops must be positive numbers of FLOPs; got {list(predict_flops)}")
    scratch = scratch_runs(runs).reset_index(drop=True)
    out = {"settings": {"n_boot": int(n_boot), "seed": int(seed), "min_points_per_budget": int(min_points),
                        "ci_level": boot.CI_LEVEL, "isoflop_loss_law": loss_law,
                        "parametric_drop_highest_loss": int(parametric_drop_highest_loss),
                        "isoflop_bootstrap": isoflop_bootstrap}}
    rng = np.random.default_rng(seed)
    study = _Study(scratch, min_points, n_boot, rng, loss_law, int(parametric_drop_highest_loss), isoflop_bootstrap,
                   scatter)
    if "isoflop" in methods:
        out["isoflop"] = {"rollout": study.rollout_isoflop(),
                          "leave_one_budget_out": study.lobo_isoflop(targets)}
    if "parametric" in methods:
        out["parametric"] = {"rollout": study.rollout_parametric(),
                             "leave_one_budget_out": study.lobo_parametric(targets)}
    if "farseer" in methods:
        out["farseer"] = {"rollout": study.rollout_farseer()}
    if "data_constrained" in methods:
        out["data_constrained"] = {"rollout": study.rollout_data_constrained()}
    return out


def rollouts(runs, methods=("parametric", "farseer"), n_boot=0, seed=0, min_points=3, source="runs table",
             scatter=False):
    """Only the rollouts (no leave-one-budget-out) of one objective's runs: {method: ROLLOUT}. Cheap
    without a bootstrap: what law selection ranks (held_out_runs), for studies of the selection itself."""
    scratch = scratch_runs(validate_runs(runs, source, group_budgets=not scatter)).reset_index(drop=True)
    if scatter:
        scratch = scratch.assign(budget=np.nan)
    study = _Study(scratch, min_points, n_boot, np.random.default_rng(seed), "saturating", scatter=scatter)
    return {method: getattr(study, f"rollout_{method}")() for method in methods}


class _Study:
    """One objective's scratch runs with their IsoFLOP design and per-budget parabolas, computed once."""

    def __init__(self, scratch, min_points, n_boot, rng, loss_law, drop_highest_loss=0, isoflop_bootstrap="runs",
                 scatter=False):
        self.scratch = scratch
        self.scatter = scatter
        self.drop_highest_loss = drop_highest_loss
        self.min_points = min_points
        self.n_boot = int(n_boot)
        self.rng = rng
        self.loss_law = loss_law
        self.designs = isoflop.budget_designs(scratch, min_points) if len(scratch) else []
        ones = np.ones((1, len(scratch)))
        self.per_budget = [isoflop.fit_budgets_batch(d, ones, min_points) for d in self.designs]
        self.bracketed = [int(r["reason"][0]) == isoflop.OK for r in self.per_budget]
        self.budgets = budget_groups(scratch).to_numpy(float) if len(scratch) else np.array([])
        # Bootstrap strata as in the fit stage: the runs of one budget are redrawn among themselves.
        self.strata = np.where(np.isnan(self.budgets), "outside IsoFLOP design", self.budgets.astype(str))
        # Bootstrap of every budget's parabola, shared by the observed top vertex and the IsoFLOP rollout.
        if self.n_boot and self.designs:
            if isoflop_bootstrap == "residuals":
                losses, _ = boot.isoflop_residual_losses(scratch, self.n_boot, rng, min_points)
                counts = np.ones((self.n_boot, len(scratch)))
            else:
                losses, counts = None, boot.draw_counts(self.strata, self.n_boot, rng)
            self.per_budget_draws = [isoflop.fit_budgets_batch(d, counts, min_points, losses) for d in self.designs]
        else:
            self.per_budget_draws = None
        self._observed = None

    # ----- what the top budget observed -------------------------------------------------------------
    def top_error(self):
        if len(self.designs) < 2:
            return (f"rollout needs runs at 2 or more IsoFLOP budgets (the top one is held out); found "
                    f"{len(self.designs)}")
        return None

    def observed(self):
        """The top budget's optimum: point values, intervals, and its bootstrap draws (None if none)."""
        if self._observed is None:
            self._observed = self._observe_top()
        return self._observed

    def _observe_top(self):
        top, result = self.designs[-1], self.per_budget[-1]
        code = int(result["reason"][0])
        if code == isoflop.OK:
            observed = {"n_opt": float(np.exp(result["log_n_opt"][0])), "loss": float(result["loss_opt"][0]),
                        "source": "parabola vertex", "n_opt_ci": None, "loss_ci": None}
            draws = None
            if self.per_budget_draws is not None:
                top_draws = self.per_budget_draws[-1]
                ok = top_draws["reason"] == isoflop.OK
                # exp of the usable draws only: a failed draw's log N can be huge (overflow warnings)
                draws = (np.exp(np.where(ok, top_draws["log_n_opt"], np.nan)),
                         np.where(ok, top_draws["loss_opt"], np.nan))
                observed["n_opt_ci"], observed["loss_ci"] = boot.interval(draws[0]), boot.interval(draws[1])
            return observed, draws
        edge = "largest" if result["edge"][0] > 0 else "smallest"
        why = isoflop.REASONS[code].format(min_points=max(3, self.min_points), edge=edge)
        # A grid's best run is no optimum: it has no interval, and only the point is compared.
        return ({"n_opt": float(np.exp(result["raw_log_n"][0])), "loss": float(result["raw_loss"][0]),
                 "source": f"best run (no usable vertex at {top['budget']:.3g}: {why})",
                 "n_opt_ci": None, "loss_ci": None}, None)

    # ----- rollout ----------------------------------------------------------------------------------
    def rollout_isoflop(self):
        error = self.top_error()
        if error:
            return {"held_out_budget": self._top_budget(), "error": error}
        below, kept = self.designs[:-1], self.bracketed[:-1]
        top = self.designs[-1]["budget"]
        if sum(kept) < MIN_FIT_BUDGETS:
            return {"held_out_budget": top,
                    "error": f"only {sum(kept)} of the {len(below)} budgets below the top one ({top:.3g}) "
                             f"bracketed an optimum (need {MIN_FIT_BUDGETS} to fit a power law)"}
        forecast_n, forecast_loss, law = _isoflop_forecast(below, self.per_budget[:-1], top, self.loss_law)
        draws = None
        if self.per_budget_draws is not None:
            draw_n, draw_loss, _ = _isoflop_forecast(below, self.per_budget_draws[:-1], top, self.loss_law)
            draws = (draw_n, draw_loss)
        fitted = [d["budget"] for d, ok in zip(below, kept) if ok]
        n_runs = int(sum(len(d["positions"]) for d, ok in zip(below, kept) if ok))
        out = self._score(top, fitted, n_runs, forecast_n[0], forecast_loss[0], draws)
        out["loss_law"] = law
        return out

    def rollout_parametric(self):
        if self.scatter:
            return scatter_rollout(self.scratch, "parametric", self.n_boot, self.rng, self.drop_highest_loss)
        error = self.top_error()
        if error:
            return {"held_out_budget": self._top_budget(), "error": error}
        top = self.designs[-1]
        reduced = self._below_top_mask()
        if reduced.sum() - self.drop_highest_loss < MIN_PARAMETRIC_RUNS:
            return {"held_out_budget": top["budget"],
                    "error": f"only {int(reduced.sum())} runs below the top budget ({top['budget']:.3g}), "
                             f"{self.drop_highest_loss} of them to drop as outliers; the "
                             f"parametric law needs {MIN_PARAMETRIC_RUNS}"}
        reduced[np.flatnonzero(reduced)[parametric.highest_loss_mask(self.scratch["loss"][reduced],
                                                                      self.drop_highest_loss)]] = False
        runs = self.scratch[reduced]
        n, d, loss = (runs[c].to_numpy(float) for c in ("n_params", "tokens", "loss"))
        point = parametric.fit_parametric(n, d, loss)
        kappa = _kappa(runs)
        forecast_n, _, forecast_loss = parametric.optimal_allocation(
            point["E"], point["A"], point["B"], point["alpha"], point["beta"], top["budget"], kappa)
        draws = None
        if self.n_boot:
            counts = boot.draw_counts(self.strata[reduced], self.n_boot, self.rng)
            refits = boot.parametric_draws(n, d, loss, counts, point)
            with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                draw_n, _, draw_loss = parametric.optimal_allocation(
                    refits["E"], refits["A"], refits["B"], refits["alpha"], refits["beta"], top["budget"], kappa)
            draws = (draw_n, draw_loss)
        fitted = sorted({float(b) for b in self.budgets[reduced] if np.isfinite(b)})
        out = self._score(top["budget"], fitted, int(reduced.sum()), forecast_n, forecast_loss, draws)
        out["loss_law"] = "L = E + A/N^alpha + B/D^beta at its compute-optimal allocation"
        out["held_out_runs"] = self._held_out_run_errors(
            lambda n, d: parametric.loss_of(point, n, d))
        return out

    def _held_out_run_errors(self, predict):
        """The reduced law's forecast of every run of the held-out top budget (not only its optimum):
        {"n_runs", "rms_pct", "mean_pct"}, errors 100·(forecast − observed)/observed. Law selection ranks
        families by rms_pct: it uses all the held-out runs, not one vertex with its own noise."""
        runs = self.scratch.iloc[self.designs[-1]["positions"]]
        n, d, loss = (runs[c].to_numpy(float) for c in ("n_params", "tokens", "loss"))
        with np.errstate(over="ignore", invalid="ignore"):
            errors = 100 * (np.asarray(predict(n, d), float) - loss) / loss
        finite = np.isfinite(errors).all()
        return {"n_runs": int(len(errors)), "rms_pct": _plain(np.sqrt(np.mean(errors ** 2))) if finite else None,
                "mean_pct": _plain(errors.mean()) if finite else None}

    def rollout_farseer(self):
        """The Farseer law fitted below the top budget (the parametric rollout's runs), its numerical
        compute-optimal loss at the top budget against what that budget observed."""
        if self.scatter:
            return scatter_rollout(self.scratch, "farseer", self.n_boot, self.rng, self.drop_highest_loss)
        below = self._below_top("Farseer", farseer.MIN_RUNS)
        if isinstance(below, dict):
            return below
        top, reduced, n, d, loss, kappa = below
        point = farseer.fit_farseer(n, d, loss)
        forecast_n, _, forecast_loss = farseer.optimal_allocation(point["theta"], top["budget"], kappa)
        draws = None
        n_boot = min(self.n_boot, farseer.MAX_BOOTSTRAP)
        if n_boot:
            counts = boot.draw_counts(self.strata[reduced], n_boot, self.rng)
            thetas = farseer.bootstrap_thetas(point, n, d, loss, counts)
            draw_n, _, draw_loss = farseer.optimal_allocation(thetas, top["budget"], kappa)
            draws = (draw_n, draw_loss)
        return self._family_score(top, reduced, forecast_n, forecast_loss, draws, n_boot, {},
                                  "Farseer L(N, D) at its numerical compute-optimal allocation",
                                  lambda n, d: farseer.loss(point["theta"], n, d))

    def rollout_data_constrained(self):
        """The data-constrained law fitted below the top budget (the parametric rollout's runs), its numerical
        compute-optimal loss at the top budget for the top budget's unique tokens (their median where its runs
        differ; unlimited where they have none) against what that budget observed; every held-out run is
        forecast with its own unique tokens."""
        if self.scatter:
            return scatter_rollout(self.scratch, "data_constrained", self.n_boot, self.rng, self.drop_highest_loss)
        below = self._below_top("data-constrained", data_constrained.MIN_RUNS)
        if isinstance(below, dict):
            return below
        top, reduced, n, d, loss, kappa = below
        try:
            unique = data_constrained.unique_tokens_of(self.scratch)
            point = data_constrained.fit_data_constrained(n, d, unique[reduced], loss)
        except PlmscaleError as error:
            return {"held_out_budget": top["budget"], "error": f"below the top budget: {error}"}
        held_out_unique = unique[top["positions"]]
        top_unique = float(np.median(held_out_unique)) if np.isfinite(held_out_unique).any() else None
        forecast_n, _, forecast_loss = data_constrained.optimal_allocation(point, top["budget"], kappa, top_unique)
        draws = None
        n_boot = min(self.n_boot, data_constrained.MAX_BOOTSTRAP)
        if n_boot:
            counts = boot.draw_counts(self.strata[reduced], n_boot, self.rng)
            params = data_constrained.bootstrap_params(point, n, d, unique[reduced], loss, counts)
            draw_n, _, draw_loss = data_constrained.optimal_allocation(params, top["budget"], kappa, top_unique)
            draws = (draw_n, draw_loss)
        return self._family_score(top, reduced, forecast_n, forecast_loss, draws, n_boot,
                                  {"unique_tokens": top_unique},
                                  "the data-constrained L(N, D, U) at its numerical compute-optimal allocation for U",
                                  lambda n, d: data_constrained.loss(point, n, d, held_out_unique))

    def _below_top(self, law_name, min_runs):
        """What a law family's rollout fits: (the top budget's design, the mask of the runs below it, their N, D,
        loss and κ), or the rollout's error entry (a dict) where there is no top budget or too few runs below."""
        error = self.top_error()
        if error:
            return {"held_out_budget": self._top_budget(), "error": error}
        top = self.designs[-1]
        reduced = self._below_top_mask()
        if reduced.sum() < min_runs:
            return {"held_out_budget": top["budget"],
                    "error": f"only {int(reduced.sum())} runs below the top budget ({top['budget']:.3g}); the "
                             f"{law_name} law needs {min_runs}"}
        runs = self.scratch[reduced]
        n, d, loss = (runs[c].to_numpy(float) for c in ("n_params", "tokens", "loss"))
        return top, reduced, n, d, loss, _kappa(runs)

    def _family_score(self, top, reduced, forecast_n, forecast_loss, draws, n_boot, extra, loss_law, predict):
        """A law family's rollout entry: _score's, its (capped) bootstrap size, extra keys, the loss law, and every
        held-out run's error under predict(n, d)."""
        fitted = sorted({float(b) for b in self.budgets[reduced] if np.isfinite(b)})
        out = self._score(top["budget"], fitted, int(reduced.sum()), forecast_n, forecast_loss, draws)
        out["bootstrap"]["n"] = n_boot
        out.update(extra)
        out["loss_law"] = loss_law
        out["held_out_runs"] = self._held_out_run_errors(predict)
        return out

    def _score(self, top, fitted, n_runs, forecast_n, forecast_loss, draws):
        """Forecast against observation; error intervals pair forecast and observed bootstrap draws."""
        observed, observed_draws = self.observed()
        n_ci = loss_ci = error_ci = log_error_ci = None
        n_failed = 0
        if draws is not None:
            draw_n, draw_loss = draws
            failed = ~(np.isfinite(draw_n) & np.isfinite(draw_loss) & (draw_n > 0))
            n_failed = int(failed.sum())
            draw_n, draw_loss = np.where(failed, np.nan, draw_n), np.where(failed, np.nan, draw_loss)
            n_ci, loss_ci = boot.interval(draw_n), boot.interval(draw_loss)
            # Both sides are estimates: the error's interval pairs independent forecast and observed draws
            # (a best-run observation has none, so only the forecast's spread enters).
            obs_n, obs_loss = observed_draws if observed_draws is not None else (observed["n_opt"], observed["loss"])
            if observed_draws is not None and len(obs_n) > len(draw_n):  # a capped bootstrap (Farseer's)
                obs_n, obs_loss = obs_n[:len(draw_n)], obs_loss[:len(draw_n)]
            with np.errstate(invalid="ignore", divide="ignore"):
                error_ci = boot.interval(100 * (draw_loss - obs_loss) / obs_loss)
                log_error_ci = boot.interval(np.log(draw_n / obs_n))
        return {
            "held_out_budget": float(top), "fitted_budgets": [float(b) for b in fitted], "n_runs_fitted": n_runs,
            "observed": {key: _plain(value) for key, value in observed.items()},
            "forecast": {"n_opt": _plain(forecast_n), "loss": _plain(forecast_loss),
                         "n_opt_ci": n_ci, "loss_ci": loss_ci},
            "loss_error_pct": _plain(100 * (forecast_loss - observed["loss"]) / observed["loss"]),
            "loss_error_pct_ci": error_ci,
            "n_opt_log_error": _plain(np.log(forecast_n / observed["n_opt"])),
            "n_opt_log_error_ci": log_error_ci,
            "n_opt_ratio": _plain(forecast_n / observed["n_opt"]),
            "loss_inside_interval": _inside(observed["loss"], loss_ci),
            "n_opt_inside_interval": _inside(observed["n_opt"], n_ci),
            "loss_consistent": _inside(0.0, error_ci),
            "n_opt_consistent": _inside(0.0, log_error_ci),
            "bootstrap": {"n": self.n_boot, "n_failed": n_failed},
        }

    def _top_budget(self):
        return float(self.designs[-1]["budget"]) if self.designs else None

    def _below_top_mask(self):
        """Runs the parametric rollout may see: below the top budget's compute and not in its group."""
        top = self.designs[-1]
        flops = self.scratch["flops"].to_numpy(float)
        in_top = np.zeros(len(self.scratch), bool)
        in_top[top["positions"]] = True
        return ~in_top & (flops < flops[top["positions"]].min())

    # ----- leave one budget out ---------------------------------------------------------------------
    def lobo_isoflop(self, targets):
        kept = [j for j, ok in enumerate(self.bracketed) if ok]
        if len(kept) < MIN_FIT_BUDGETS:
            return {"targets": targets, "error": f"only {len(kept)} IsoFLOP budget(s) bracketed an optimum "
                                                 f"(need {MIN_FIT_BUDGETS}): there is no fit to perturb"}

        def forecast(indices):
            designs = [self.designs[j] for j in indices]
            per_budget = [self.per_budget[j] for j in indices]
            laws = isoflop.laws_from_optima(designs, per_budget, loss_law=None)
            if laws["n_budgets"][0] < MIN_FIT_BUDGETS or not np.isfinite(laws["a"][0]):
                raise PlmscaleError(f"only {int(laws['n_budgets'][0])} bracketed budget(s) left (need "
                                    f"{MIN_FIT_BUDGETS})")
            out = []
            for c in targets:
                n_opt, loss, _ = _isoflop_forecast(designs, per_budget, c, self.loss_law)
                out.append({"flops": c, "n_opt": _plain(n_opt[0]), "loss": _plain(loss[0])})
            return float(laws["a"][0]), out

        result = _lobo(targets, [self.designs[j]["budget"] for j in kept],
                       forecast(kept), [lambda j=j: forecast([k for k in kept if k != j]) for j in kept])
        result["loss_law"] = _isoflop_forecast([self.designs[j] for j in kept], [self.per_budget[j] for j in kept],
                                               1.0, self.loss_law)[2]
        return result

    def lobo_parametric(self, targets):
        if len(self.scratch) < MIN_PARAMETRIC_RUNS:
            return {"targets": targets, "error": f"{len(self.scratch)} scratch runs; the parametric law needs "
                                                 f"{MIN_PARAMETRIC_RUNS}"}
        if len(self.designs) < 2:
            return {"targets": targets, "error": f"{len(self.designs)} IsoFLOP budget(s): nothing to leave out"}

        def forecast(mask):
            runs = self.scratch[mask]
            if len(runs) - self.drop_highest_loss < MIN_PARAMETRIC_RUNS:
                raise PlmscaleError(f"only {len(runs) - self.drop_highest_loss} runs left (need "
                                    f"{MIN_PARAMETRIC_RUNS})")
            runs = runs[~parametric.highest_loss_mask(runs["loss"], self.drop_highest_loss)]
            fit = parametric.fit_parametric(runs["n_params"], runs["tokens"], runs["loss"])
            kappa = _kappa(runs)
            out = []
            for c in targets:
                n_opt, _, loss = parametric.optimal_allocation(fit["E"], fit["A"], fit["B"], fit["alpha"],
                                                               fit["beta"], c, kappa)
                out.append({"flops": c, "n_opt": _plain(n_opt), "loss": _plain(loss)})
            return fit["a"], out

        def without(design):
            mask = np.ones(len(self.scratch), bool)
            mask[design["positions"]] = False
            return mask

        return _lobo(targets, [d["budget"] for d in self.designs], forecast(np.ones(len(self.scratch), bool)),
                     [lambda d=d: forecast(without(d)) for d in self.designs])


def _kappa(runs):
    """FLOPs per parameter per token of a set of runs (6 for the 6·N·D convention)."""
    return float(np.median(runs["flops"] / (runs["n_params"] * runs["tokens"])))


def _isoflop_forecast(designs, per_budget, flops, loss_law):
    """N_opt and compute-optimal loss at `flops` from the bracketed budgets' vertices, per bootstrap row.

    Returns (n_opt (B,), loss (B,), description of the loss law used).
    """
    laws = isoflop.laws_from_optima(designs, per_budget, loss_law=None)
    with np.errstate(invalid="ignore", over="ignore"):
        n_opt = laws["k_n"] * flops ** laws["a"]
    ok = np.stack([r["reason"] == isoflop.OK for r in per_budget], 1)
    losses = np.stack([r["loss_opt"] for r in per_budget], 1)
    params = fit_loss_law([d["budget"] for d in designs], np.where(ok, losses, np.nan), loss_law)
    return n_opt, loss_at(params, flops), LOSS_LAWS[loss_law]


def _lobo(targets, budgets, full, refits):
    """Run the leave-one-out refits (callables returning (a, forecasts)) and summarise their spread."""
    left_out = []
    for budget, refit in zip(budgets, refits):
        try:
            a, forecasts = refit()
            left_out.append({"budget": float(budget), "a": _plain(a), "forecasts": forecasts})
        except PlmscaleError as error:
            left_out.append({"budget": float(budget), "error": str(error)})
    done = [entry for entry in left_out if "error" not in entry]
    full_a, full_forecasts = full
    sensitivity = []
    for i, target in enumerate(targets):
        n = np.array([_nan(entry["forecasts"][i]["n_opt"]) for entry in done])
        loss = np.array([_nan(entry["forecasts"][i]["loss"]) for entry in done])
        n, loss = n[np.isfinite(n)], loss[np.isfinite(loss)]
        full_loss = _nan(full_forecasts[i]["loss"])
        sensitivity.append({
            "flops": target,
            "n_opt_min": _plain(n.min()) if len(n) else None, "n_opt_max": _plain(n.max()) if len(n) else None,
            "n_opt_ratio": _plain(n.max() / n.min()) if len(n) else None,
            "loss_min": _plain(loss.min()) if len(loss) else None,
            "loss_max": _plain(loss.max()) if len(loss) else None,
            "loss_spread_pct": _plain(100 * (loss.max() - loss.min()) / full_loss) if len(loss) else None})
    exponents = [entry["a"] for entry in done if entry["a"] is not None]
    return {"targets": list(targets), "full_a": _plain(full_a), "full": full_forecasts, "left_out": left_out,
            "sensitivity": sensitivity, "a_min": min(exponents) if exponents else None,
            "a_max": max(exponents) if exponents else None, "n_refits": len(done)}


def _plain(value):
    """A JSON-ready float, None for a missing or non-finite number; strings and None pass through."""
    if value is None or isinstance(value, (str, list)):
        return value
    value = float(value)
    return value if np.isfinite(value) else None


def _nan(value):
    return np.nan if value is None else value


def _inside(value, ci):
    return None if ci is None else bool(ci[0] <= value <= ci[1])
