"""fit.json, the scaling stage's result: its schema, its one writer and its one validating reader.

Writer: `write_fit` serves `plmscale fit` and the workflow's fit rule alike: atomic, NaN/inf written as
null, numpy values as Python numbers, provenance added.

Reader: `read_fit` (a path) or `parse_fit` (a dict already loaded) returns a `FitFile` of typed laws, or
raises PlmscaleError naming the file and the key (`objectives.mlm.isoflop.k_n`) of the first value that
cannot come from a fit: a wrong type, a NaN, a non-positive constant where a power law needs a positive
one, an interval that is not [low, high] or lies far from its own point. Predictions and plots read
fit.json only through it, so a hand-edited file is refused before it turns into nan or a negative size.

Layout (version 1): {"version": 1, "objectives": {OBJECTIVE: {METHOD: entry, ...}}, "settings", "transfer",
"published", "provenance", ...}. A method entry is either a law or {"error": why, ...}:
- isoflop, envelope: k_n, a, k_d, b (N_opt = k_n·C^a, D_opt = k_d·C^b), optional k_l, s and loss_floor
  (L_opt = loss_floor + k_l·C^s; loss_floor absent = 0, a pure power law, as in the envelope and in files
  written before the IsoFLOP loss law saturated), a_ci, b_ci, bootstrap {draws: {name: [value or null,
  ...]}}, isoflop `optima`, envelope `points`;
- parametric: E, A, B, alpha, beta (L = E + A/N^alpha + B/D^beta), a, b (allocation exponents),
  flops_per_param_token, intervals and bootstrap draws as above, optional `dropped_runs`;
- data_constrained (opt-in law family, plmscale.scaling.data_constrained): E, A, B, alpha, beta, r_star_d,
  r_star_n (Muennighoff's L(N, D, U)), a, b (the unlimited-data allocation exponents), flops_per_param_token,
  intervals and bootstrap draws of every constant.
With fit.curve_law the document also has a top-level `curve_law` (curve_law.curve_law_entry: the loss-curve law
per shape and each run's fit error), read as plain data. Every method entry may carry the verdict of identify.identify: `identified` (bool), `reasons` and `notes`
(lists of sentences). A file without them (written before identification) reads as not judged
(identified None): predictions and plots treat it as before. Each objective may carry `backtest`
(backtest.backtest's result per identified method), read as plain data from FitFile.data, and
`allocation_by_cost_model` (plmscale.scaling.allocation: {cost model: [{flops, budget, n_opt, d_opt, loss,
*_ci, a, a_ci}, ...]} at fit.predict_flops, or {"skipped": why}) of the parametric law and
`allocation_by_family` ({family: the same}) of the other (N, D) law families, checked by _check_allocations.
The isoflop and envelope entries say which FLOPs definition their budgets count (`flops_definition`: a FLOPs
definition or "unknown" with a `note`); the IsoFLOP entry says why it is not relabelled under the others
(`cost_models`); the envelope carries `by_cost_model` ({cost model: its power laws with a_ci, b_ci} refitted
with the curves counted in each), checked by _check_cost_model_keys.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plmscale.errors import PlmscaleError
from plmscale.scaling import data_constrained
from plmscale.scaling.bootstrap import interval
from plmscale.scaling.parametric import optimal_allocation
from plmscale.scaling.results import json_ready, write_json

FIT_VERSION = 1
METHODS = ("isoflop", "envelope", "parametric")
# What each law needs: key -> (required, lowest allowed value or None, value must exceed the lowest).
POWER_LAW_KEYS = {"k_n": (True, 0.0, True), "a": (True, None, False), "k_d": (True, 0.0, True),
                  "b": (True, None, False), "k_l": (False, None, False), "s": (False, None, False),
                  "loss_floor": (False, 0.0, False)}
PARAMETRIC_KEYS = {"E": (True, 0.0, False), "A": (True, 0.0, True), "B": (True, 0.0, True),
                   "alpha": (True, 0.0, True), "beta": (True, 0.0, True), "a": (True, None, False),
                   "b": (True, None, False), "flops_per_param_token": (False, 0.0, True)}
DATA_CONSTRAINED_KEYS = {**{k: v for k, v in PARAMETRIC_KEYS.items() if k != "flops_per_param_token"},
                         "r_star_d": (True, 0.0, True), "r_star_n": (True, 0.0, True),
                         "flops_per_param_token": (False, 0.0, True)}
# Law families fit.json holds beside METHODS when fit.law_families lists them, read as typed laws here.
TYPED_FAMILIES = ("data_constrained",)
# A bootstrap percentile interval need not contain its point estimate (skewed resamples), but a point
# more than one interval width away from it did not come from that bootstrap: the file was edited.
INTERVAL_SLACK_WIDTHS = 1.0


def write_fit(fit: dict, path) -> Path:
    """fit.json with provenance, strict JSON (NaN/inf -> null), written atomically; returns the path."""
    write_json(fit, path, with_provenance=True)
    return Path(path)


@dataclass(frozen=True, kw_only=True)
class _Bootstrapped:
    """What every law carries from its bootstrap: 95% intervals of a and b, and the draws themselves."""
    a_ci: tuple | None = None
    b_ci: tuple | None = None
    draws: dict = field(default_factory=dict)  # name -> float array, NaN where a refit failed


@dataclass(frozen=True)
class PowerLaws(_Bootstrapped):
    """N_opt = k_n·C^a, D_opt = k_d·C^b and, where fitted, L_opt = loss_floor + k_l·C^s (IsoFLOP and
    envelope; loss_floor None = 0)."""
    k_n: float
    a: float
    k_d: float
    b: float
    k_l: float | None = None
    s: float | None = None
    loss_floor: float | None = None

    @property
    def has_loss_law(self) -> bool:
        return self.k_l is not None and self.s is not None

    def loss(self, flops):
        """L_opt at flops (a number or an array); NaN/inf where the law overflows."""
        with np.errstate(invalid="ignore", over="ignore"):
            return (self.loss_floor or 0.0) + self.k_l * np.float64(flops) ** self.s

    def constants(self, what: str) -> tuple:
        """(k, exponent) of N_opt ('n') or D_opt ('d')."""
        return (self.k_n, self.a) if what == "n" else (self.k_d, self.b)

    def forecast(self, flops) -> dict:
        """{n_opt, d_opt, loss, n_opt_ci, d_opt_ci, loss_ci} at flops; intervals from the stored draws (None
        without them), loss None without a loss law, NaN/inf where the law overflows."""
        flops, d = np.float64(flops), self.draws
        with np.errstate(invalid="ignore", over="ignore"):
            return {
                "n_opt": self.k_n * flops ** self.a, "d_opt": self.k_d * flops ** self.b,
                "loss": self.loss(flops) if self.has_loss_law else None,
                "n_opt_ci": interval(d["k_n"] * flops ** d["a"]) if {"k_n", "a"} <= set(d) else None,
                "d_opt_ci": interval(d["k_d"] * flops ** d["b"]) if {"k_d", "b"} <= set(d) else None,
                "loss_ci": (interval(d.get("loss_floor", 0.0) + d["k_l"] * flops ** d["s"])
                            if self.has_loss_law and {"k_l", "s"} <= set(d) else None)}


@dataclass(frozen=True)
class ParametricLaw(_Bootstrapped):
    """L(N, D) = E + A/N^alpha + B/D^beta with its allocation exponents a = beta/(alpha+beta), b."""
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    a: float
    b: float
    flops_per_param_token: float | None = None

    @property
    def _has_draws(self) -> bool:
        return {"E", "A", "B", "alpha", "beta"} <= set(self.draws)

    def forecast(self, flops) -> dict:
        """The compute-optimal {n_opt, d_opt, loss} at flops (C = flops_per_param_token·N·D, which must be
        known) with their intervals from the stored draws (None without them)."""
        kappa = self.flops_per_param_token
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            n_opt, d_opt, loss = optimal_allocation(self.E, self.A, self.B, self.alpha, self.beta, flops, kappa)
            out = {"n_opt": float(n_opt), "d_opt": float(d_opt), "loss": float(loss),
                   "n_opt_ci": None, "d_opt_ci": None, "loss_ci": None}
            if self._has_draws:
                d = self.draws
                n, dd, l = optimal_allocation(d["E"], d["A"], d["B"], d["alpha"], d["beta"], flops, kappa)
                out.update(n_opt_ci=interval(n), d_opt_ci=interval(dd), loss_ci=interval(l))
        return out

    def loss_at(self, n_params, tokens) -> tuple:
        """(L(N, D), its interval from the stored draws or None)."""
        d = self.draws
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            loss = self.E + self.A / n_params ** self.alpha + self.B / tokens ** self.beta
            ci = (interval(d["E"] + d["A"] / n_params ** d["alpha"] + d["B"] / tokens ** d["beta"])
                  if self._has_draws else None)
        return loss, ci


@dataclass(frozen=True)
class DataConstrainedLaw(_Bootstrapped):
    """Muennighoff's L(N, D, U) (plmscale.scaling.data_constrained) with a, b its unlimited-data exponents."""
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    r_star_d: float
    r_star_n: float
    a: float
    b: float
    flops_per_param_token: float | None = None

    def loss_at(self, n_params, tokens, unique_tokens=None) -> tuple:
        """(L(N, D, U), its interval from the stored draws or None); unique_tokens None: unlimited data."""
        constants = {name: getattr(self, name) for name in data_constrained.PARAM_NAMES}
        point = float(data_constrained.loss(constants, n_params, tokens, unique_tokens))
        if not set(data_constrained.PARAM_NAMES) <= set(self.draws):
            return point, None
        draws = np.stack([self.draws[name] for name in data_constrained.PARAM_NAMES], -1)
        return point, interval(data_constrained.loss(draws, n_params, tokens, unique_tokens))


@dataclass(frozen=True)
class Optimum:
    """One IsoFLOP budget: its parabola's vertex (None where no parabola was fitted) and its runs."""
    budget: float
    n_opt: float | None
    d_opt: float | None
    loss_opt: float | None
    curvature: float | None
    kept: bool
    run_ids: tuple


@dataclass(frozen=True)
class EnvelopePoint:
    flops: float
    loss: float


@dataclass(frozen=True)
class MethodFit:
    """One method's entry: a law, or the reason it could not be fitted (error), with identify's verdict
    (identified None: the file predates identification)."""
    method: str
    law: PowerLaws | ParametricLaw | DataConstrainedLaw | None = None
    error: str | None = None
    loss_law: str | None = None
    optima: tuple = ()
    points: tuple = ()
    identified: bool | None = None
    reasons: tuple = ()

    @property
    def usable(self) -> bool:
        """A law that may predict and be drawn: fitted, and not judged unidentified."""
        return self.law is not None and self.identified is not False

    @property
    def why_unusable(self) -> str | None:
        """A short sentence for a plot or a prediction: why this method shows nothing (None: it is usable)."""
        if self.law is None:
            # identify's first reason is the short form of a fit error ("only 1 of 3 IsoFLOP budgets ...")
            first = self.reasons[0] if self.reasons else f"not fitted: {self.error}"
            return first if first.startswith("not fitted: ") else f"not fitted: {first}"
        if self.identified is False:
            return f"not identified: {self.reasons[0] if self.reasons else 'no reason recorded'}"
        return None


@dataclass(frozen=True)
class FitFile:
    source: str
    version: int
    objectives: dict  # objective -> {method: MethodFit}
    data: dict  # the whole document, for the parts nothing reads as typed values (settings, transfer)

    def method(self, objective: str, method: str) -> MethodFit:
        methods = self.objectives.get(objective, {})
        return methods.get(method) or MethodFit(method, error=f"{method} is missing from {self.source}")


# ----------------------------------------------------------------------------------------------- reader

class _Checker:
    """Type and range checks whose errors name the file and the key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, problem: str, value) -> None:
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        raise PlmscaleError(f"{self.source}: {key} {problem}, got {shown[:80]}; rerun `plmscale fit` (or the "
                            "workflow's fit rule) instead of editing fit.json")

    def mapping(self, value, key: str) -> dict:
        if not isinstance(value, dict):
            self.fail(key, "must be a JSON object", value)
        return value

    def sequence(self, value, key: str) -> list:
        if not isinstance(value, list):
            self.fail(key, "must be a JSON list", value)
        return value

    def text(self, value, key: str) -> str:
        if not isinstance(value, str):
            self.fail(key, "must be a string", value)
        return value

    def number(self, value, key: str, lowest=None, strict=False, allow_null=False) -> float | None:
        if value is None and allow_null:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, "must be a number", value)
        value = float(value)
        if not math.isfinite(value):
            self.fail(key, "must be a finite number", value)
        if lowest is not None and (value <= lowest if strict else value < lowest):
            self.fail(key, f"must be {'>' if strict else '>='} {lowest:g}", value)
        return value

    def constants(self, entry: dict, spec: dict, key: str) -> dict:
        values = {}
        for name, (required, lowest, strict) in spec.items():
            if name not in entry or entry[name] is None:
                if required:
                    self.fail(f"{key}.{name}", "is missing (a fitted law needs it)", entry.get(name))
                values[name] = None
                continue
            values[name] = self.number(entry[name], f"{key}.{name}", lowest, strict)
        return values

    def interval(self, entry: dict, name: str, key: str, point: float | None = None) -> tuple | None:
        """entry[name_ci] as (low, high); with a point, also refuse a point far outside it."""
        value = entry.get(f"{name}_ci")
        if value is None:
            return None
        where = f"{key}.{name}_ci"
        pair = self.sequence(value, where)
        if len(pair) != 2:
            self.fail(where, "must be [low, high]", value)
        low, high = (self.number(v, where) for v in pair)
        if low > high:
            self.fail(where, "must be [low, high] with low <= high", value)
        slack = INTERVAL_SLACK_WIDTHS * (high - low)
        if point is not None and not low - slack <= point <= high + slack:
            self.fail(f"{key}.{name}", f"lies far outside its own interval {name}_ci [{low:.4g}, {high:.4g}]",
                      point)
        return low, high

    def draws(self, entry: dict, key: str) -> dict:
        stored = entry.get("bootstrap")
        if stored is None:
            return {}
        stored = self.mapping(stored, f"{key}.bootstrap")
        if stored.get("draws") is None:
            return {}
        draws = self.mapping(stored["draws"], f"{key}.bootstrap.draws")
        arrays, length = {}, None
        for name, values in draws.items():
            where = f"{key}.bootstrap.draws.{name}"
            values = self.sequence(values, where)
            if length is not None and len(values) != length:
                self.fail(where, f"must hold as many draws as the others ({length})", len(values))
            length = len(values)
            # null marks a failed refit; it stays out of the intervals as NaN
            arrays[name] = np.array([np.nan if v is None else self.number(v, where) for v in values], float)
        return arrays


def _parse_power_laws(check: _Checker, entry: dict, key: str) -> PowerLaws:
    values = check.constants(entry, POWER_LAW_KEYS, key)
    if (values["k_l"] is None) != (values["s"] is None):
        values["k_l"] = values["s"] = None  # half a loss law is no loss law
    return PowerLaws(**values, a_ci=check.interval(entry, "a", key, values["a"]),
                     b_ci=check.interval(entry, "b", key, values["b"]), draws=check.draws(entry, key))


def _parse_parametric(check: _Checker, entry: dict, key: str) -> ParametricLaw:
    values = check.constants(entry, PARAMETRIC_KEYS, key)
    # Parametric intervals are checked for shape only: when resamples switch between the objective's
    # basins, the point of the full-data fit may lie outside the percentile interval legitimately.
    return ParametricLaw(**values, a_ci=check.interval(entry, "a", key), b_ci=check.interval(entry, "b", key),
                         draws=check.draws(entry, key))


def _parse_data_constrained(check: _Checker, entry: dict, key: str) -> DataConstrainedLaw:
    values = check.constants(entry, DATA_CONSTRAINED_KEYS, key)
    # Intervals are checked for shape only, as the parametric law's (resamples may switch basins).
    for name in data_constrained.PARAM_NAMES:
        check.interval(entry, name, key)
    return DataConstrainedLaw(**values, a_ci=check.interval(entry, "a", key), b_ci=check.interval(entry, "b", key),
                              draws=check.draws(entry, key))


def _parse_optima(check: _Checker, entry: dict, key: str) -> tuple:
    optima = []
    for i, item in enumerate(check.sequence(entry.get("optima") or [], f"{key}.optima")):
        where = f"{key}.optima[{i}]"
        item = check.mapping(item, where)
        kept = item.get("kept", True)
        if not isinstance(kept, bool):
            check.fail(f"{where}.kept", "must be true or false", kept)
        run_ids = check.sequence(item.get("run_ids") or [], f"{where}.run_ids")
        optima.append(Optimum(
            budget=check.number(item.get("budget"), f"{where}.budget", 0.0, strict=True),
            n_opt=check.number(item.get("n_opt"), f"{where}.n_opt", 0.0, strict=True, allow_null=True),
            d_opt=check.number(item.get("d_opt"), f"{where}.d_opt", 0.0, strict=True, allow_null=True),
            loss_opt=check.number(item.get("loss_opt"), f"{where}.loss_opt", allow_null=True),
            curvature=check.number(item.get("curvature"), f"{where}.curvature", allow_null=True),
            kept=kept, run_ids=tuple(str(r) for r in run_ids)))
    return tuple(optima)


def _parse_points(check: _Checker, entry: dict, key: str) -> tuple:
    points = []
    for i, item in enumerate(check.sequence(entry.get("points") or [], f"{key}.points")):
        where = f"{key}.points[{i}]"
        item = check.mapping(item, where)
        points.append(EnvelopePoint(check.number(item.get("flops"), f"{where}.flops", 0.0, strict=True),
                                    check.number(item.get("loss"), f"{where}.loss", 0.0, strict=True)))
    return tuple(points)


def parse_method(check: _Checker, method: str, entry, key: str) -> MethodFit:
    entry = check.mapping(entry, key)
    loss_law = entry.get("loss_law")
    if loss_law is not None:
        check.text(loss_law, f"{key}.loss_law")
    optima = _parse_optima(check, entry, key) if method == "isoflop" else ()
    points = _parse_points(check, entry, key) if method == "envelope" else ()
    identified = entry.get("identified")
    if identified is not None and not isinstance(identified, bool):
        check.fail(f"{key}.identified", "must be true or false", identified)
    reasons = tuple(check.text(r, f"{key}.reasons") for r in check.sequence(entry.get("reasons") or [],
                                                                             f"{key}.reasons"))
    if identified is False and not reasons:
        check.fail(f"{key}.reasons", "must say why a method is not identified", entry.get("reasons"))
    if entry.get("error") is not None:
        return MethodFit(method, error=check.text(entry["error"], f"{key}.error"), optima=optima, points=points,
                         identified=identified, reasons=reasons)
    parse = {"parametric": _parse_parametric, "data_constrained": _parse_data_constrained}.get(method,
                                                                                            _parse_power_laws)
    law = parse(check, entry, key)
    return MethodFit(method, law=law, loss_law=loss_law, optima=optima, points=points, identified=identified,
                     reasons=reasons)


def check_method(method: str, entry: dict, source: str) -> None:
    """Raise PlmscaleError where a freshly fitted entry is not one the reader accepts (the fit records
    the reason as that method's error instead of writing a law nobody can use). Checked as written:
    NaN becomes null on the way into the file."""
    parse_method(_Checker(source), method, json_ready(entry), method)


def parse_fit(data, source: str = "fit.json") -> FitFile:
    """A fit.json document (already loaded) -> FitFile, or PlmscaleError naming source and key."""
    if isinstance(data, FitFile):
        return data
    check = _Checker(source)
    data = check.mapping(data, "the document")
    version = data.get("version")
    if version != FIT_VERSION:
        raise PlmscaleError(f"{source}: version is {version!r}; this plmscale reads version {FIT_VERSION} "
                            "(rerun `plmscale fit`)")
    objectives = {}
    for objective, methods in check.mapping(data.get("objectives"), "objectives").items():
        methods = check.mapping(methods, f"objectives.{objective}")
        objectives[objective] = {method: parse_method(check, method, methods[method],
                                                      f"objectives.{objective}.{method}")
                                 for method in METHODS + TYPED_FAMILIES if method in methods}
        if "allocation_by_cost_model" in methods:
            _check_allocations(check, methods["allocation_by_cost_model"],
                               f"objectives.{objective}.allocation_by_cost_model")
        for family, by_model in (methods.get("allocation_by_family") or {}).items():
            _check_allocations(check, by_model, f"objectives.{objective}.allocation_by_family.{family}")
        for method in ("isoflop", "envelope"):
            _check_cost_model_keys(check, methods.get(method), f"objectives.{objective}.{method}")
    return FitFile(source=str(source), version=version, objectives=objectives, data=data)


def _check_allocations(check: _Checker, value, key: str) -> None:
    """Each cost model's rows: a positive budget, N_opt and D_opt (null where the law gave none) and a loss."""
    for model, rows in check.mapping(value, key).items():
        if model == "skipped":
            check.text(rows, f"{key}.skipped")
            continue
        for i, row in enumerate(check.sequence(rows, f"{key}.{model}")):
            row = check.mapping(row, f"{key}.{model}[{i}]")
            for name in ("flops", "budget", "n_opt", "d_opt"):
                check.number(row.get(name), f"{key}.{model}[{i}].{name}", 0.0, strict=True,
                             allow_null=name not in ("flops", "budget"))
            check.number(row.get("loss"), f"{key}.{model}[{i}].loss", allow_null=True)
            check.number(row.get("a"), f"{key}.{model}[{i}].a", allow_null=True)
            check.interval(row, "a", f"{key}.{model}[{i}]")


def _check_cost_model_keys(check: _Checker, entry, key: str) -> None:
    """An IsoFLOP or envelope entry's flops_definition (text) and the envelope's by_cost_model: per cost model a
    power law (positive k_n, k_d; a, b and their intervals [low, high]) or {"error": why}; or {"skipped": why}."""
    if not isinstance(entry, dict):
        return
    if "flops_definition" in entry:
        check.text(entry["flops_definition"], f"{key}.flops_definition")
    if "by_cost_model" not in entry:
        return
    where = f"{key}.by_cost_model"
    for model, law in check.mapping(entry["by_cost_model"], where).items():
        if model == "skipped":
            check.text(law, f"{where}.skipped")
            continue
        law = check.mapping(law, f"{where}.{model}")
        if "error" in law:
            check.text(law["error"], f"{where}.{model}.error")
            continue
        values = check.constants(law, POWER_LAW_KEYS, f"{where}.{model}")
        for name in ("a", "b"):
            check.interval(law, name, f"{where}.{model}", values[name])


def read_fit(path) -> FitFile:
    """Load and validate fit.json; every problem is a PlmscaleError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PlmscaleError(f"fit file {path} does not exist: run `plmscale fit` first") from None
    except (IsADirectoryError, UnicodeDecodeError) as error:
        raise PlmscaleError(f"fit file {path} is not readable as text: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise PlmscaleError(f"fit file {path} is not valid JSON (line {error.lineno}): {error.msg}") from None
    return parse_fit(data, str(path))
