"""Repeated vs unique data: the data-constrained law of Muennighoff et al. 2023 fitted to the repetition study.

A run that draws D tokens from U unique ones has seen R = D / U - 1 repeated epochs. Muennighoff et al.
model what the repeats are worth as effective data

    D' = U + U · R* · (1 − exp(−R / R*))          (D' = D while D <= U)

so the first repeats are worth almost as much as new data and their value decays with half-life ~0.69·R*
epochs; R* is their R*_D (the model-side R*_N is not needed at a fixed size). Given a unique-data law of
each model size fitted on the mixture runs, L(D) = E + B / D^β (same size, same token budgets), R* is the
value for which the repeated runs' losses equal L(D'), one R* per objective shared by all sizes.

Everything here is a small pure function over tables (runs: one row per run; points: one row per
(run, tokens, loss)), in the spirit of Epoch AI's Chinchilla replication; `write_repetition` is the file
layer. The interval is a residual bootstrap: refit the laws and R* on the fitted values plus redrawn log-
residuals (the design, i.e. the runs and their token counts, stays as it is).

Identification: R* is searched in [R_STAR_MIN, R_STAR_MAX]. When repetition never hurts within the budgets,
the best R* is the upper end: the data say only that R* is large, and the report gives a lower bound (the
bootstrap's 2.5th percentile) instead of a value.
"""

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize

from plmscale.config import read_json_object
from plmscale.data.atomic import write_text
from plmscale.errors import PlmscaleError

log = logging.getLogger(__name__)

R_STAR_MIN, R_STAR_MAX = 0.01, 1.0e4
N_BOOTSTRAP = 200
CONFIDENCE = 0.95
MIN_MIX_POINTS = 3  # a law with three constants needs more than two points


# --------------------------------------------------------------------------------------------- the law

def effective_data(tokens, unique_tokens, r_star):
    """Muennighoff's D' for D = tokens drawn from U = unique_tokens with decay constant R* (arrays broadcast)."""
    tokens = np.asarray(tokens, dtype=float)
    unique = np.asarray(unique_tokens, dtype=float)
    repeats = np.maximum(tokens / unique - 1.0, 0.0)
    repeated_value = unique * r_star * -np.expm1(-repeats / r_star)
    return np.where(tokens <= unique, tokens, unique + repeated_value)


def unique_law(tokens, law: dict):
    """L(D) = E + B / D^β of one model size trained on unique data."""
    return law["E"] + law["B"] * np.asarray(tokens, dtype=float) ** -law["beta"]


BETA_GRID = np.geomspace(0.02, 3.0, 120)


def _linear_start(log_d, losses, e_max):
    """The best (E, B, β) over a grid of β: for a fixed β the law is linear in (E, B), solved by least squares
    on relative residuals (≈ log residuals); E is kept in [0, e_max]. A cheap, global start for the polish."""
    best, best_cost = None, math.inf
    for beta in BETA_GRID:
        x = np.exp(-beta * log_d)
        design = np.column_stack([np.ones_like(x), x]) / losses[:, None]
        (e, b), *_ = np.linalg.lstsq(design, np.ones_like(losses), rcond=None)
        if not 0.0 <= e <= e_max:  # the constrained optimum sits on a bound of E: refit B alone there
            e = min(max(e, 0.0), e_max)
            b = float(np.sum(x * (losses - e) / losses ** 2) / np.sum(x ** 2 / losses ** 2))
        if b <= 0:
            continue
        cost = float(np.sum((np.log(e + b * x) - np.log(losses)) ** 2))
        if cost < best_cost:
            best, best_cost = (float(e), float(np.log(b)), float(beta)), cost
    return best


def fit_unique_law(tokens, losses) -> dict | None:
    """Least squares on log-loss of L = E + B / D^β (0 <= E < min loss), polished from the best start of a
    β grid; None when there are too few distinct token counts."""
    tokens, losses = np.asarray(tokens, dtype=float), np.asarray(losses, dtype=float)
    if len(np.unique(tokens)) < MIN_MIX_POINTS:
        return None
    log_d, log_l = np.log(tokens), np.log(losses)
    e_max = float(losses.min()) * (1 - 1e-6)
    start = _linear_start(log_d, losses, e_max)
    if start is None:  # losses rise with D everywhere: no decreasing law describes them
        return None

    def residuals(theta):
        e, log_b, beta = theta
        return np.log(e + np.exp(log_b - beta * log_d)) - log_l

    lower, upper = np.array([0.0, -50.0, 1e-3]), np.array([e_max, 100.0, 3.0])
    result = optimize.least_squares(residuals, np.clip(start, lower, upper), bounds=(lower, upper))
    e, log_b, beta = result.x
    return {"E": float(e), "B": float(np.exp(log_b)), "beta": float(beta), "n_points": int(len(tokens)),
            "rmse_log": float(np.sqrt(np.mean(result.fun ** 2)))}


def _r_star_sse(log_r_star, repeated: list) -> float:
    """Sum of squared log-loss residuals of the repeated points under D'(R*), each with its own size's law."""
    total = 0.0
    for tokens, unique, log_losses, law in repeated:
        predicted = unique_law(effective_data(tokens, unique, math.exp(log_r_star)), law)
        total += float(np.sum((np.log(predicted) - log_losses) ** 2))
    return total


def fit_r_star(repeated: list) -> float:
    """R* minimising the repeated points' squared log-residuals: a log-spaced scan of the whole range, then a
    bounded refinement around the best cell. `repeated`: [(tokens, unique_tokens, log_losses, law), ...]."""
    lo, hi = math.log(R_STAR_MIN), math.log(R_STAR_MAX)
    scan = np.linspace(lo, hi, 161)
    sse = np.array([_r_star_sse(x, repeated) for x in scan])
    i = int(np.argmin(sse))
    if i in (0, len(scan) - 1):
        return float(math.exp(scan[i]))
    refined = optimize.minimize_scalar(_r_star_sse, bounds=(scan[i - 1], scan[i + 1]), args=(repeated,),
                                       method="bounded", options={"xatol": 1e-4})
    return float(math.exp(refined.x if refined.fun <= sse[i] else scan[i]))


def profile_interval(repeated: list, variance: float, level: float = CONFIDENCE) -> list:
    """The R* whose squared log-residuals stay within chi2(1)·variance of the best (laws held fixed): an
    interval that, unlike the bootstrap's, still bounds R* from one side when the best R* is a search end."""
    from scipy.stats import chi2
    scan = np.linspace(math.log(R_STAR_MIN), math.log(R_STAR_MAX), 161)
    sse = np.array([_r_star_sse(x, repeated) for x in scan])
    inside = scan[sse <= sse.min() + chi2.ppf(level, 1) * max(variance, 1e-300)]
    return [float(math.exp(inside.min())), float(math.exp(inside.max()))]


# ---------------------------------------------------------------------------------------------- tables

def points_table(runs: pd.DataFrame, curves: pd.DataFrame | None, mode: str) -> pd.DataFrame:
    """(objective, model, kind, unique_tokens, tokens, loss) rows to fit: each run's final loss (mode
    "final": one point per run, the proper points of a law) or every validation point of its curve (mode
    "curve": loss against tokens within runs of one schedule; cheaper, an approximation)."""
    keys = ["run_id", "objective", "model", "kind", "unique_tokens"]
    if mode == "final":
        return runs[keys + ["tokens", "loss"]].reset_index(drop=True)
    if mode != "curve":
        raise PlmscaleError(f"train.repetition.fit_points {mode!r} is not final or curve")
    if curves is None or curves.empty:
        raise PlmscaleError("fit_points curve needs the runs' curve.csv files; none were read")
    return curves.merge(runs[keys], on="run_id")[keys + ["tokens", "loss"]].reset_index(drop=True)


def _design(points: pd.DataFrame, objective: str):
    """Per model: (mix tokens, mix losses), and the repeated points with R > 0 as arrays."""
    mine = points[points["objective"] == objective]
    models = sorted(mine["model"].unique())
    mix = {m: mine[(mine["model"] == m) & (mine["kind"] == "mix")] for m in models}
    rep = {m: mine[(mine["model"] == m) & (mine["kind"] == "rep")
                   & (mine["tokens"] > mine["unique_tokens"])] for m in models}
    return models, mix, rep


def _fit_once(models, mix_losses: dict, rep_losses: dict, mix, rep):
    """Laws per size and the shared R* for one set of (possibly resampled) losses; None when not fittable."""
    laws, repeated = {}, []
    for m in models:
        if rep[m].empty:
            continue
        law = fit_unique_law(mix[m]["tokens"].to_numpy(), mix_losses[m])
        if law is None:
            continue
        laws[m] = law
        repeated.append((rep[m]["tokens"].to_numpy(float), rep[m]["unique_tokens"].to_numpy(float),
                         np.log(rep_losses[m]), law))
    if not repeated:
        return None, laws, repeated
    return fit_r_star(repeated), laws, repeated


def _interval(values, level=CONFIDENCE):
    values = np.log(np.asarray(values, dtype=float))
    tail = (1 - level) / 2 * 100
    return [float(np.exp(np.percentile(values, tail))), float(np.exp(np.percentile(values, 100 - tail)))]


def _status(r_star: float, interval, profile) -> tuple[str, str, dict | None]:
    """identified | bounded_below | bounded_above, why, and the one bound both the reason and the figure
    state ({"side": "below" | "above", "value"}; None when identified). A bound is the looser of the
    bootstrap's and the profile interval's inner ends (the bootstrap's percentiles sit on the search end
    when every refit does)."""
    top, bottom = R_STAR_MAX * 0.99, R_STAR_MIN * 1.01
    lower = {"side": "below", "value": float(min(interval[0], profile[0]))}
    upper = {"side": "above", "value": float(max(interval[1], profile[1]))}
    if r_star >= top:
        return "bounded_below", (f"repetition does not hurt within these budgets (the best R* is the search's upper "
                                 f"end, {R_STAR_MAX:g}): R* is only bounded below, R* > {lower['value']:.3g} "
                                 f"({CONFIDENCE:.0%})"), lower
    if interval[1] >= top or profile[1] >= top:
        return "bounded_below", (f"R* = {r_star:.3g} but its interval reaches the search's upper end: only "
                                 f"R* > {lower['value']:.3g} is supported; train more epochs to pin it"), lower
    if r_star <= bottom or interval[0] <= bottom or profile[0] <= bottom:
        return "bounded_above", (f"repeated data is worth at most its unique tokens (R* at the search's lower end "
                                 f"{R_STAR_MIN:g}): R* < {upper['value']:.3g}; the restricted source "
                                 f"may differ from the mixture, not only repeat"), upper
    return "identified", "", None


def mixture_refusal(runs: pd.DataFrame, mixture_sources=None, train_tokens=None) -> str | None:
    """Why the mixture runs cannot stand for unique, more diverse data than the repeated source (None when
    they can). mixture_sources, train_tokens: the train split's sources and tokens (its manifest.json)."""
    repeated = sorted(set(runs.loc[runs["kind"] == "rep", "source"].dropna()))
    if mixture_sources is not None and repeated and set(mixture_sources) <= set(repeated):
        return (f"the mixture is the train split of {', '.join(sorted(mixture_sources))} alone, the very source the "
                f"repeated runs restrict ({', '.join(repeated)}): it is no more diverse, so the study compares "
                "repetition with repetition; add other sources to data.sources, or read no R* from it")
    mix_tokens = runs.loc[runs["kind"] == "mix", "tokens"]
    if train_tokens and len(mix_tokens) and mix_tokens.max() > train_tokens:
        return (f"the mixture runs repeat their own data: up to {mix_tokens.max() / train_tokens:.3g} epochs of the "
                f"train split ({train_tokens:.3g} tokens), so its law is no unique-data law; lower "
                "train.repetition.tokens below the split's size or add data")
    return None


def loss_gaps(points: pd.DataFrame, laws: dict) -> list:
    """Each repeated point against the mixture at the same tokens: the mixture's law there (and, where the
    mixture has a point at those tokens within 2%, that observed loss)."""
    rows = []
    for (objective, model), rep in points[points["kind"] == "rep"].groupby(["objective", "model"]):
        mix = points[(points["objective"] == objective) & (points["model"] == model) & (points["kind"] == "mix")]
        law = laws.get(objective, {}).get(model)
        for row in rep.itertuples():
            entry = {"objective": objective, "model": model, "run_id": row.run_id, "tokens": float(row.tokens),
                     "unique_tokens": float(row.unique_tokens), "epochs": float(row.tokens / row.unique_tokens),
                     "loss_repeated": float(row.loss)}
            if law is not None:
                entry["loss_mix_law"] = float(unique_law(row.tokens, law))
                entry["gap_vs_law"] = entry["loss_repeated"] - entry["loss_mix_law"]
            if not mix.empty:
                nearest = mix.iloc[int(np.argmin(np.abs(np.log(mix["tokens"].to_numpy(float) / row.tokens))))]
                if abs(math.log(nearest["tokens"] / row.tokens)) < 0.02:
                    entry["loss_mix_observed"] = float(nearest["loss"])
                    entry["gap_vs_mix"] = entry["loss_repeated"] - entry["loss_mix_observed"]
            rows.append(entry)
    return rows


def fit_repetition(points: pd.DataFrame, bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> dict:
    """Per objective: the unique-data law of each size, R* with its bootstrap interval, and its status."""
    rng = np.random.default_rng(seed)
    result = {}
    for objective in sorted(points["objective"].unique()):
        models, mix, rep = _design(points, objective)
        mix_losses = {m: mix[m]["loss"].to_numpy(float) for m in models}
        rep_losses = {m: rep[m]["loss"].to_numpy(float) for m in models}
        r_star, laws, repeated = _fit_once(models, mix_losses, rep_losses, mix, rep)
        entry = {"laws": laws, "models": models,
                 "n_repeated_points": int(sum(len(rep[m]) for m in models)),
                 "max_epochs": float(max([(rep[m]["tokens"] / rep[m]["unique_tokens"]).max()
                                          for m in models if not rep[m].empty], default=0.0))}
        if r_star is None:
            why = ("no repeated run goes beyond one epoch (tokens <= unique_tokens)" if entry["n_repeated_points"] == 0
                   else f"no size has a unique-data law: the mixture runs need >= {MIN_MIX_POINTS} distinct token "
                        f"counts (more train.repetition.tokens, or fit_points: curve)")
            result[objective] = {**entry, "r_star": None, "interval": None, "r_star_bound": None,
                                 "status": "not_fitted", "reason": why}
            continue
        # Residual bootstrap: fitted values (law at the mix points; law at D'(R*) at the repeated ones) plus
        # log-residuals redrawn within each arm of the objective.
        fitted_mix = {m: unique_law(mix[m]["tokens"].to_numpy(float), laws[m]) for m in laws}
        fitted_rep = {m: unique_law(effective_data(rep[m]["tokens"].to_numpy(float),
                                                   rep[m]["unique_tokens"].to_numpy(float), r_star), laws[m])
                      for m in laws}
        res_mix = np.concatenate([np.log(mix_losses[m]) - np.log(fitted_mix[m]) for m in laws])
        res_rep = np.concatenate([np.log(rep_losses[m]) - np.log(fitted_rep[m]) for m in laws])
        draws = []
        for _ in range(int(bootstrap)):
            new_mix = {m: fitted_mix[m] * np.exp(rng.choice(res_mix, len(fitted_mix[m]))) for m in laws}
            new_rep = {m: fitted_rep[m] * np.exp(rng.choice(res_rep, len(fitted_rep[m]))) for m in laws}
            drawn, _, _ = _fit_once(list(laws), new_mix, new_rep, mix, rep)
            if drawn is not None:
                draws.append(drawn)
        interval = _interval(draws) if draws else [r_star, r_star]
        # Residual variance of both arms (3 constants per law, 1 for R*) for the profile interval.
        n_free = max(len(res_mix) + len(res_rep) - 3 * len(laws) - 1, 1)
        profile = profile_interval(repeated, float(np.sum(res_mix ** 2) + np.sum(res_rep ** 2)) / n_free)
        status, reason, bound = _status(r_star, interval, profile)
        entry.update({"r_star": r_star, "interval": interval, "profile_interval": profile, "confidence": CONFIDENCE,
                      "n_bootstrap": len(draws), "status": status, "reason": reason, "r_star_bound": bound,
                      "half_life_epochs": r_star * math.log(2) if status == "identified" else None})
        result[objective] = entry
    return result


# --------------------------------------------------------------------------------------- file layer

def read_repetition_runs(metrics_paths, curve_paths=()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The study's runs (one row each: kind rep|mix, unique_tokens, final loss) and their validation curves."""
    from plmscale.scaling.collect import read_metrics
    rows, curves = [], []
    for path in metrics_paths:
        metrics = read_metrics(path)
        subset = metrics.get("subset")
        rows.append({"run_id": metrics["run_id"], "objective": metrics["objective"], "model": metrics.get("model"),
                     "n_params": int(metrics["n_params"]), "kind": "rep" if subset else "mix",
                     "source": subset["source"] if subset else "mixture",
                     "unique_tokens": float(metrics["unique_tokens"]) if subset else math.inf,
                     "tokens": float(metrics["tokens"]), "loss": float(metrics["final_valid_loss"]),
                     "epochs": float(metrics["epochs"]) if subset else None,
                     "wall_seconds": float(metrics.get("wall_seconds", math.nan))})
    for path in curve_paths:
        run_id = Path(path).parent.name
        curve = pd.read_csv(path)
        curve = curve[pd.to_numeric(curve["valid_loss"], errors="coerce").notna()]
        curves.append(pd.DataFrame({"run_id": run_id, "tokens": curve["tokens"].astype(float),
                                    "loss": curve["valid_loss"].astype(float)}))
    runs = pd.DataFrame(rows)
    curves = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["run_id", "tokens", "loss"])
    return runs, curves


def read_mixture(train_manifest) -> tuple[list | None, float | None]:
    """(sources, tokens) of the train split the mixture runs read, from its manifest.json."""
    if not train_manifest:
        return None, None
    manifest = read_json_object(train_manifest, "train split manifest", hint="; rerun the tokenize step")
    return manifest.get("sources"), manifest.get("n_tokens")


def repetition_summary(runs, curves, fit_points="final", bootstrap=N_BOOTSTRAP, seed=0, mixture_sources=None,
                       train_tokens=None) -> dict:
    """Per objective the fit of R* (fit_repetition), or, where the mixture is no more diverse than the
    repeated source or repeats itself (mixture_refusal), status "refused" and why."""
    points = points_table(runs, curves, fit_points)
    refusal = mixture_refusal(runs, mixture_sources, train_tokens)
    if refusal:
        fits = {objective: {"laws": {},
                            "models": sorted(points.loc[points["objective"] == objective, "model"].unique()),
                            "r_star": None, "interval": None, "r_star_bound": None, "status": "refused",
                            "reason": refusal} for objective in sorted(points["objective"].unique())}
    else:
        fits = fit_repetition(points, bootstrap, seed)
    laws = {objective: entry["laws"] for objective, entry in fits.items()}
    return {
        "law": "D' = U + U*R*(1 - exp(-R/R*)), R = D/U - 1 (Muennighoff et al. 2023, R*_D); "
               "L(D) = E + B/D^beta per size, fitted on the mixture runs",
        "fit_points": fit_points, "r_star_search": [R_STAR_MIN, R_STAR_MAX],
        "objectives": fits, "gaps": loss_gaps(points, laws),
        "runs": json.loads(runs.to_json(orient="records")),
    }


def write_repetition(metrics_paths, curve_paths, out_json, fit_points="final", bootstrap=N_BOOTSTRAP, seed=0,
                     train_manifest=None) -> dict:
    """repetition.json from the study's run files; returns the summary (plmscale.plots.repetition draws it).
    train_manifest (the train split's manifest.json) lets the study refuse a mixture that is no more diverse
    than the repeated source."""
    runs, curves = read_repetition_runs(metrics_paths, curve_paths)
    sources, train_tokens = read_mixture(train_manifest)
    summary = repetition_summary(runs, curves, fit_points, bootstrap, seed, sources, train_tokens)
    for objective, entry in summary["objectives"].items():
        shown = "n/a" if entry["r_star"] is None else f"{entry['r_star']:.3g} {entry['interval']}"
        log.info("%s: R* %s (%s) %s", objective, shown, entry["status"], entry["reason"])
    with write_text(out_json) as handle:
        json.dump(summary, handle, indent=2, default=float)
    return summary


def read_repetition(path) -> dict:
    return read_json_object(path, "repetition summary", hint="; rerun the repetition rule")
