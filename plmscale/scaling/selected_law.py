"""The law family fit.json selected for an objective, as one law that its readers use alike.

fit.json's `objectives.<o>.selected_law` names the (N, D) law family that forecast the held-out top budget best
among the identified ones (fit.select_law, docs/laws.md). The figures, the closed loop and the planner's prior
read the law through `selected_law(fit, objective)`: the family's constants and bootstrap draws, its loss at any
(N, D) (and U, for the data-constrained law), and its compute-optimal N, D and loss at a budget (the Chinchilla
form's closed form; a numerical search for the others).

A fit.json that selects no law (written before selection, fit.backtest off, a scatter without a rollout, or no
family identified) falls back to the parametric law, which is what every reader used before selection: `why`
says so, and `named_by_fit` is False.
"""

import math
from dataclasses import dataclass

import numpy as np

from plmscale.errors import PlmscaleError
from plmscale.scaling import data_constrained, farseer, parametric
from plmscale.scaling.allocation import LossLaw, loss_law
from plmscale.scaling.bootstrap import interval

DEFAULT_FAMILY = "parametric"
FAMILIES = ("parametric", "data_constrained", "farseer")  # fit.LAW_FAMILIES, the families selection ranks


def _objective_entry(fit_data: dict, objective: str, source: str) -> dict:
    objectives = fit_data.get("objectives") or {}
    if objective not in objectives:
        raise PlmscaleError(f"{source} has no {objective} fit (objectives: {', '.join(objectives) or 'none'}); "
                            "fit runs of that objective first")
    return objectives[objective]


def selected_family(fit_data: dict, objective: str, source: str = "fit.json") -> tuple[str, str, bool]:
    """(family, why, named_by_fit) of one objective: fit.json's selected_law where it names a family the file
    holds, else the parametric law with the reason no law was selected."""
    entry = _objective_entry(fit_data, objective, source)
    selection = entry.get("law_selection") or {}
    selected = entry.get("selected_law")
    if selected in FAMILIES and isinstance(entry.get(selected), dict):
        return selected, selection.get("why") or f"{source} selects {selected}", True
    why = selection.get("why") or (f"{source} selects no law (written before law selection, or with "
                                   "fit.backtest off)")
    return DEFAULT_FAMILY, f"{why}; the parametric law is used", False


@dataclass(frozen=True)
class SelectedLaw:
    """One objective's law family as fit.json holds it: its entry, constants (LossLaw), verdict and kappa."""
    objective: str
    family: str
    why: str                 # why this family (fit.json's law_selection.why, or why the parametric fallback)
    named_by_fit: bool       # fit.json's selected_law names it (False: the parametric fallback)
    entry: dict              # the family's fit.json entry
    law: LossLaw | None      # None where the family was not fitted
    kappa: float | None      # FLOPs per parameter per token of the runs it was fitted on

    @property
    def usable(self) -> bool:
        """Fitted, with a known kappa, and not judged unidentified."""
        return self.law is not None and self.kappa is not None and self.entry.get("identified") is not False

    @property
    def why_unusable(self) -> str | None:
        if self.law is None:
            return f"not fitted: {self.entry.get('error') or 'no entry'}"
        if self.kappa is None:
            return "fit.json lacks flops_per_param_token: no N_opt at a budget"
        if self.entry.get("identified") is False:
            reasons = self.entry.get("reasons") or ["no reason recorded"]
            return f"not identified: {reasons[0]}"
        return None

    @property
    def a(self) -> float | None:
        """The allocation exponent fit.json records (the Farseer law's is local, at its largest budget)."""
        value = self.entry.get("a")
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    @property
    def label(self) -> str:
        """'farseer (selected law)', or the family's name alone for the parametric law."""
        return f"{self.family} (selected law)" if self.named_by_fit and self.family != DEFAULT_FAMILY else self.family

    def _loss(self, params, n_params, tokens, unique_tokens=None):
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            if self.family == "data_constrained":
                return data_constrained.loss(params, n_params, tokens, unique_tokens)
            return self.law.loss(params, n_params, tokens)

    def point_loss(self, n_params, tokens, unique_tokens=None):
        """L(N, D) of the point law, broadcast over arrays (no interval)."""
        return self._loss(self.law.point, n_params, tokens, unique_tokens)

    def loss_at(self, n_params, tokens, unique_tokens=None) -> tuple:
        """(L(N, D), its bootstrap interval or None); U only for the data-constrained law (None: unlimited)."""
        point = float(self._loss(self.law.point, n_params, tokens, unique_tokens))
        if self.law.draws is None:
            return point, None
        return point, interval(self._loss(self.law.draws, n_params, tokens, unique_tokens))

    def _optimum(self, params, flops, unique_tokens=None, kappa=None):
        """(n_opt, d_opt, loss) per row of constants (K, p) at C = kappa·N·D (kappa: the fit's by default)."""
        params = np.atleast_2d(params)
        kappa = self.kappa if kappa is None else kappa
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            if self.family == "parametric":
                return parametric.optimal_allocation(*(params[:, i] for i in range(5)), flops, kappa)
            if self.family == "farseer":
                return farseer.optimal_allocation(params, flops, kappa)
            return data_constrained.optimal_allocation(params, flops, kappa, unique_tokens)

    def optimum(self, flops: float, kappa: float | None = None, unique_tokens=None) -> tuple:
        """(N_opt, D_opt, loss) of the point law at C = kappa·N·D (kappa: the fit's unless given); NaN where the
        law has no interior optimum."""
        n, d, loss = self._optimum(self.law.point, flops, unique_tokens, kappa)
        return tuple(float(np.asarray(v).ravel()[0]) for v in (n, d, loss))

    def forecast(self, flops: float, unique_tokens=None) -> dict:
        """{n_opt, d_opt, loss, n_opt_ci, d_opt_ci, loss_ci} at C = flops (the shape of fitfile's forecasts):
        the point law's compute-optimal allocation, intervals from the bootstrap draws (None without)."""
        n, d, loss = self.optimum(flops, unique_tokens=unique_tokens)
        out = {"n_opt": n, "d_opt": d, "loss": loss, "n_opt_ci": None, "d_opt_ci": None, "loss_ci": None}
        if self.law.draws is not None:
            draws_n, draws_d, draws_loss = self._optimum(self.law.draws, flops, unique_tokens)
            out.update(n_opt_ci=interval(draws_n), d_opt_ci=interval(draws_d), loss_ci=interval(draws_loss))
        return out

    def frontier(self, flops_grid) -> tuple:
        """(N_opt, D_opt) of the point law over an array of budgets (NaN where it has no interior optimum)."""
        flops_grid = np.asarray(flops_grid, float)
        if self.family == "parametric":
            n, d, _ = self._optimum(self.law.point, flops_grid)
            return np.asarray(n, float).ravel(), np.asarray(d, float).ravel()
        rows = np.array([self.optimum(c)[:2] for c in flops_grid], float).reshape(-1, 2)
        return rows[:, 0], rows[:, 1]


def family_law(fit_data: dict, objective: str, family: str, why: str = "", named_by_fit: bool = False,
               source: str = "fit.json") -> SelectedLaw:
    """One family's law of an objective (selected or not), fitted or with why it is not."""
    entry = _objective_entry(fit_data, objective, source).get(family) or {"error": f"no {family} fit in {source}"}
    law = None if entry.get("error") else loss_law(family, entry)
    kappa = entry.get("flops_per_param_token")
    kappa = float(kappa) if isinstance(kappa, (int, float)) and kappa > 0 else None
    return SelectedLaw(objective, family, why, named_by_fit, entry, law, kappa)


def selected_law(fit, objective: str, source: str | None = None) -> SelectedLaw:
    """The law fit.json selected for an objective (selected_family), ready to evaluate. fit: a fit.json dict or a
    FitFile (fitfile.parse_fit)."""
    data = getattr(fit, "data", fit)
    source = source or getattr(fit, "source", "fit.json")
    family, why, named = selected_family(data, objective, source)
    return family_law(data, objective, family, why, named, source)


def differs_from_parametric(fit, objective: str) -> bool:
    """Whether fit.json selected a family other than the parametric law for this objective: the readers that used
    the parametric law then use (and name) the selected one; otherwise they keep their parametric output."""
    data = getattr(fit, "data", fit)
    if objective not in (data.get("objectives") or {}):
        return False
    family, _, named = selected_family(data, objective)
    return named and family != DEFAULT_FAMILY
