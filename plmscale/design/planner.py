"""The planner: which IsoFLOP design to train, judged before anything is trained.

For each candidate design (budgets, span, sizes per budget, replicates, cosine or WSD; made around the
config's own grid) the planner expands the grid exactly as the workflow would (its cost in FLOPs of
train.flops_definition, and GPU-hours from the plan's resource estimates on a GPU config), then simulates
K studies: every grid point's loss from a prior law L(N, D) = E + A/N^α + B/D^β times exp(σ·z) run-to-run
noise (z heavy-tailed by default: Student-t, see DEFAULT_NOISE), fitted by the IsoFLOP method the fit stage uses (scaling/isoflop.py, the same batched arithmetic
and the same bootstrap scheme, fit.isoflop_bootstrap), and judged by the IsoFLOP checks of
scaling/identify.py that depend on the design. All K studies and their bootstrap draws are one batch.

What a row reports: the expected width of a's 95% bootstrap interval (the median over the simulated
studies; a study without an interval counts as infinitely wide), the spread of a, N_opt(C) and the
compute-optimal loss at the target C over the studies (what the study could have measured instead), and
the fraction of studies whose IsoFLOP fit would be identified. The parametric law is not refitted here
(an L-BFGS-B fit per study and draw is not affordable on 2 cores); its prior is the truth the IsoFLOP
fits are scored against. A prior from a fit.json is the law it selected (fit.json's selected_law: a Farseer or
data-constrained law where one forecast better than the Chinchilla form, FamilyPrior), the parametric law otherwise.
"""

import copy
import dataclasses
import math

import numpy as np
import pandas as pd
from scipy import stats

from plmscale.config import objective_budgets
from plmscale.design.round_files import adaptive_enabled
from plmscale.design.simulate_rounds import ADAPTIVE_SIMULATIONS, grid_table, simulate_adaptive
from plmscale.errors import PlmscaleError
from plmscale.grid import shapes
from plmscale.grid.expand import expand_grid
from plmscale.grid.resources import gpu_hours
from plmscale.grid.wsd import grid_cost
from plmscale.scaling import isoflop
from plmscale.scaling.bootstrap import draw_counts
from plmscale.scaling.identify import Criteria
from plmscale.scaling.parametric import fit_parametric, optimal_allocation
from plmscale.scaling.published import PUBLISHED
from plmscale.scaling.selected_law import SelectedLaw, differs_from_parametric, selected_law
from plmscale.scaling.table import scratch_runs, validate_runs

# Run-to-run noise of one final loss when the runs give no replicates to measure it: a core sd (the sd of a
# Gaussian with the same median absolute deviation) and Student-t tails. On the demo the paired seed-to-seed
# differences are small with rare large ones, which a Gaussian cannot give (docs/trust.md).
DEFAULT_NOISE = 0.0046
DEFAULT_TAIL_DF = 3.0
DEFAULT_NOISE_SOURCE = ("default 0.46% core sd, Student-t tails (3 degrees of freedom): docs/trust.md's demo "
                        "replicates (master seed 1236, replicates 2, 2026-12-02) had a median seed-to-seed "
                        "difference of 0.44% per grid point, i.e. 0.44% / (0.674 * sqrt 2) per run, and single "
                        "differences of 3.3% and 4.5% (7 and 10 core sds: tails no Gaussian has)")
# median |z| of a standard Gaussian: scales a robust spread to an sd and back.
GAUSSIAN_MAD = 0.6744897501960817
DEFAULT_SIMULATIONS = 200
# Bootstrap draws per simulated study: the fit's own count (fit.bootstrap) up to this many; a 95% percentile
# interval from 200 draws is within a few % of the one from 1,000.
MAX_DRAWS = 200
CI_TAIL = 2.5  # percent in each tail of a 95% interval


# ---- the prior law ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PriorLaw:
    """L(N, D) = E + A/N^alpha + B/D^beta, where it came from, and what it says is true."""
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str
    notes: tuple = ()

    def loss(self, n_params, tokens):
        return self.E + self.A / np.asarray(n_params, float) ** self.alpha + self.B / np.asarray(tokens, float) ** self.beta

    @property
    def a(self) -> float:
        """N_opt ∝ C^a of this law: a = beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    def optimum(self, flops: float, kappa: float) -> tuple:
        """(N_opt, loss) at C = kappa·N·D."""
        n_opt, _, loss = optimal_allocation(self.E, self.A, self.B, self.alpha, self.beta, flops, kappa)
        return float(n_opt), float(loss)

    def describe(self) -> str:
        return (f"L = {self.E:.4g} + {self.A:.4g}/N^{self.alpha:.4g} + {self.B:.4g}/D^{self.beta:.4g} "
                f"(a = {self.a:.3f}; {self.source})")


@dataclasses.dataclass(frozen=True)
class FamilyPrior:
    """A prior law of another family than the Chinchilla form: the one fit.json selected for the objective
    (Farseer, the data-constrained law with unlimited data), read through scaling.selected_law. It answers
    what PriorLaw answers: the loss of any (N, D), a, and the compute-optimal point at a budget."""
    law: SelectedLaw
    source: str
    notes: tuple = ()

    def loss(self, n_params, tokens):
        return self.law.point_loss(np.asarray(n_params, float), np.asarray(tokens, float))

    @property
    def a(self) -> float:
        """fit.json's allocation exponent of the family (Farseer's is local, at its largest fitted budget)."""
        return self.law.a if self.law.a is not None else math.nan

    def optimum(self, flops: float, kappa: float) -> tuple:
        """(N_opt, loss) at C = kappa·N·D, found numerically."""
        n_opt, _, loss = self.law.optimum(flops, kappa)
        return n_opt, loss

    def describe(self) -> str:
        local = ", local at the top fitted budget" if self.law.family == "farseer" else ""
        return f"the {self.law.family} law (a = {self.a:.3f}{local}; {self.source})"


def _prior(constants: dict, source: str, notes=()) -> PriorLaw:
    try:
        values = {key: float(constants[key]) for key in ("E", "A", "B", "alpha", "beta")}
    except (KeyError, TypeError, ValueError) as error:
        raise PlmscaleError(f"{source}: the parametric law needs E, A, B, alpha and beta ({error})") from None
    if not (values["alpha"] > 0 and values["beta"] > 0 and values["A"] > 0 and values["B"] > 0
            and values["E"] >= 0 and all(math.isfinite(v) for v in values.values())):
        raise PlmscaleError(f"{source}: the parametric law {values} is not a usable prior (A, B, alpha, beta "
                            "must be positive, E >= 0)")
    return PriorLaw(**values, source=source, notes=tuple(notes))


def prior_published(objective: str) -> PriorLaw:
    return _prior(PUBLISHED[objective]["parametric"], f"published {objective.upper()} law, {PUBLISHED['source']}")


def prior_from_fit(fit: dict, objective: str, where: str = "fit.json") -> PriorLaw | FamilyPrior:
    """The law fit.json selected for one objective (read as a dict): the parametric law, unless the file
    selected another family (scaling.selected_law), whose law is then the prior and says so. A parametric law
    that is not identified is used with a note saying so."""
    if differs_from_parametric(fit, objective):
        law = selected_law(fit, objective, where)
        if not law.usable:
            raise PlmscaleError(f"{where}: the selected {objective} law ({law.family}) cannot be evaluated "
                                f"({law.why_unusable}); pass --prior published or --runs RUNS.csv instead")
        note = f"{where} selected the {law.family} law for {objective} ({law.why}): the prior is that law"
        return FamilyPrior(law, f"{objective} {law.family} law of {where}, selected", (note,))
    entry = ((fit.get("objectives") or {}).get(objective) or {}).get("parametric")
    if not entry:
        raise PlmscaleError(f"{where} has no {objective} parametric fit (objectives.{objective}.parametric); "
                            f"pass --prior published or --runs RUNS.csv instead")
    if "error" in entry:
        raise PlmscaleError(f"{where}: the {objective} parametric fit failed ({entry['error']}); pass "
                            "--prior published or --runs RUNS.csv instead")
    notes = []
    if entry.get("identified") is False:
        notes.append(f"the prior law in {where} is not identified ({'; '.join(entry.get('reasons', []))}): "
                     "the planner's widths are only as good as this prior")
    return _prior(entry, f"{objective} parametric law of {where}", notes)


def prior_from_runs(runs: pd.DataFrame, objective: str, where: str = "runs table") -> PriorLaw:
    """The parametric law fitted to the objective's scratch runs (the fit stage's fit, no bootstrap)."""
    scratch = _objective_runs(runs, objective, where)
    if len(scratch) < 5:
        raise PlmscaleError(f"{where}: {len(scratch)} {objective} runs from scratch; the parametric prior needs 5 "
                            "or more (or pass --prior published / --prior fit.json)")
    entry = fit_parametric(scratch["n_params"], scratch["tokens"], scratch["loss"])
    return _prior(entry, f"{objective} parametric law fitted to {where} ({len(scratch)} runs)")


def _objective_runs(runs, objective, where):
    table = validate_runs(runs, where)
    return scratch_runs(table[table["objective"] == objective]).reset_index(drop=True)


def measured_noise(runs: pd.DataFrame, objective: str, where: str = "runs table"):
    """(core sd of one run's relative loss noise, source sentence) from replicates in a runs table: runs of
    one objective with the same n_params and tokens (a replicate column or `_r2` ids group the same way).
    Robust, as DEFAULT_NOISE is: the median absolute deviation of log-loss from its group's mean (scaled by
    sqrt(n / (n - 1)) for the mean it was taken from) over the Gaussian's 0.674, so one lucky run does not set
    the noise of every other; the plain pooled sd is reported beside it. None without replicates."""
    scratch = _objective_runs(runs, objective, where)
    keys = [scratch["n_params"].astype(float).round(6), scratch["tokens"].astype(float).round(0)]
    log_loss = np.log(scratch["loss"].astype(float))
    sizes = log_loss.groupby(keys).transform("size")
    replicated = (sizes >= 2).to_numpy()
    if not replicated.any():
        return None
    deviation = (log_loss - log_loss.groupby(keys).transform("mean")).to_numpy()[replicated]
    n = sizes.to_numpy()[replicated]
    sigma = float(np.median(np.abs(deviation) * np.sqrt(n / (n - 1))) / GAUSSIAN_MAD)
    groups = int(pd.Series(list(zip(*(k[replicated] for k in keys)))).nunique())
    pooled_sd = float(np.sqrt((deviation ** 2).sum() / (len(deviation) - groups)))
    return sigma, (f"measured {sigma:.2%} core sd (median absolute deviation; plain pooled sd {pooled_sd:.2%}) over "
                   f"{groups} replicated grid points of {where} ({len(deviation) - groups} degrees of freedom), "
                   f"Student-t tails ({DEFAULT_TAIL_DF:g} degrees of freedom) assumed")


# The train.isoflop keys a design sets; its fragment writes them all, so it reads on its own.
FRAGMENT_KEYS = ("budgets", "models", "replicates", "schedule")


# ---- candidate designs --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Design:
    """A variant of the config's IsoFLOP grid: train.isoflop keys it sets and ladder shapes it adds."""
    name: str
    isoflop: dict
    ladder: dict
    is_config: bool = False


def _ratio(values) -> float | None:
    """Geometric mean step of sorted positive values (None for fewer than 2)."""
    values = sorted(float(v) for v in values)
    return (values[-1] / values[0]) ** (1 / (len(values) - 1)) if len(values) > 1 else None


def _round_budget(value: float) -> float:
    return float(f"{value:.4g}")


def _shape_name(n: float, ladder: dict) -> str:
    """A ladder label for a planned shape, e.g. n109k, unused in the ladder."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3), ("", 1)):
        if n >= scale:
            base = f"n{n / scale:.3g}{unit}"
            break
    name, index = base, 2
    while name in ladder:
        name, index = f"{base}_{index}", index + 1
    return name


def candidate_designs(config: dict, objective: str | None = None) -> list:
    """The config's own grid (first, marked) and variants around it: span (one or two budgets above the
    top, the lowest dropped, geometric midpoints inserted), sizes per budget (one ladder shape above the
    largest, one below the smallest too), replicates 1-3, and the WSD schedule (one seed per point).

    With per-objective budgets (a train.isoflop.budgets mapping) the spans vary `objective`'s budgets (default:
    the first of train.objectives) and keep the other objectives' as they are."""
    train = config["train"]
    iso = train["isoflop"]
    objective = objective or train["objectives"][0]
    per_objective = isinstance(iso["budgets"], dict)
    budgets = sorted(float(b) for b in objective_budgets(iso, objective))
    if not budgets:
        key = f"train.isoflop.budgets.{objective}" if per_objective else "train.isoflop.budgets"
        raise PlmscaleError(f"config: {key} is empty; the planner varies an IsoFLOP grid")
    step = _ratio(budgets) or 10 ** 0.5
    spans = {"grid budgets": budgets,
             "+1 budget above": budgets + [_round_budget(budgets[-1] * step)],
             "+2 budgets above": budgets + [_round_budget(budgets[-1] * step), _round_budget(budgets[-1] * step ** 2)]}
    if len(budgets) >= 3:
        spans["lowest budget dropped"] = budgets[1:]
    if len(budgets) >= 2:
        midpoints = [_round_budget(math.sqrt(lo * hi)) for lo, hi in zip(budgets, budgets[1:])]
        spans["midpoints added"] = sorted(budgets + midpoints)

    ladder = train["ladder"]
    models = list(iso["models"]) if iso["models"] is not None else list(ladder)
    sizes = sorted(shapes.n_params(ladder[m]) for m in models)
    size_step = _ratio(sizes) or 2.0
    larger = shapes.ladder_like_shape(sizes[-1] * size_step, ladder)
    smaller = shapes.ladder_like_shape(sizes[0] / size_step, ladder)
    larger_name = _shape_name(shapes.n_params(larger), ladder)
    smaller_name = _shape_name(shapes.n_params(smaller), {**ladder, larger_name: larger})
    ladders = {"ladder": {}, "+1 larger size": {larger_name: larger},
               "+1 larger, +1 smaller size": {larger_name: larger, smaller_name: smaller}}

    designs = [Design("config grid", {}, {}, is_config=True)]
    for span_name, span in spans.items():
        for ladder_name, added in ladders.items():
            grid_models = None if iso["models"] is None and not added else models + list(added)
            for schedule, replicates in (("cosine", 1), ("cosine", 2), ("cosine", 3), ("wsd", 1)):
                overrides = {"budgets": {**iso["budgets"], objective: span} if per_objective else span,
                             "replicates": replicates, "schedule": schedule, "models": grid_models}
                own = {**iso["budgets"], objective: budgets} if per_objective else budgets
                if not added and overrides == {**{key: iso[key] for key in FRAGMENT_KEYS}, "budgets": own}:
                    continue  # the config's own grid is already the first row
                name = f"{span_name}; {ladder_name}; {schedule}" + (f" x{replicates}" if replicates > 1 else "")
                designs.append(Design(name, overrides, added))
    return designs


def design_config(config: dict, design: Design) -> dict:
    """The config of a design: the validated base config with the design's keys set (values the schema
    accepts by construction; not validated again, which would read the schema once per design)."""
    merged = copy.deepcopy(config)
    merged["train"]["isoflop"].update(copy.deepcopy(design.isoflop))
    merged["train"]["ladder"].update(copy.deepcopy(design.ladder))
    return merged


# ---- cost ---------------------------------------------------------------------------------------------

def isoflop_points(specs) -> list:
    """The IsoFLOP grid points among a grid's run specs (WSD branches included, trunks, explicit and
    transfer runs left out)."""
    return [s for s in specs if s.budget is not None and s.init_from is None and s.wsd_role != "trunk"]


def design_cost(specs, config: dict) -> dict:
    """What an IsoFLOP design costs to train: FLOPs in train.flops_definition (a WSD grid: trunks plus
    decays, what is trained) and GPU-hours from the plan's estimates (None on a CPU config)."""
    points = isoflop_points(specs)
    trained = [s for s in specs if (s.budget is not None and s.init_from is None) or s.wsd_role == "trunk"]
    if config["train"]["isoflop"]["schedule"] == "wsd":
        flops = grid_cost(specs).wsd_flops
    else:
        flops = float(sum(s.flops for s in points))
    gpu = config["train"]["device"] != "cpu"
    hours = sum(gpu_hours(s.resources) for s in trained) if gpu else None
    return {"flops": float(flops), "gpu_hours": hours, "n_runs": len(points)}


# ---- simulated studies --------------------------------------------------------------------------------

def _parabola_stats(design, losses):
    """Per study (rows of losses): the budget's OLS parabola fitted losses (K, n), residuals and the
    curvature's t statistic (NaN with no residual degree of freedom)."""
    x = design["log_n"] - design["log_n"].mean()
    X = np.stack([np.ones_like(x), x, x * x], 1)
    y = losses[:, design["positions"]]
    coef = y @ np.linalg.pinv(X).T
    fitted = coef @ X.T
    residuals = y - fitted
    dof = len(x) - 3
    if dof <= 0 or np.linalg.matrix_rank(X) < 3:  # identify's curvature test skips these budgets too
        return fitted, residuals, np.full(len(y), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt((residuals ** 2).sum(1) / dof * np.linalg.inv(X.T @ X)[2, 2])
        t = coef[:, 2] / se
    return fitted, residuals, t


def _bootstrap_rows(designs, losses, n_runs, draws, scheme, min_points, rng):
    """(counts, losses) of `draws` bootstrap resamples of every simulated study, study-major (K·draws rows);
    the fit's scheme: "runs" redraws runs within each budget, "residuals" redraws pooled parabola residuals.
    Returns None for the residual scheme where no budget has a spare degree of freedom (the fit refuses)."""
    K = len(losses)
    if scheme == "runs":
        strata = np.full(n_runs, -1)
        for index, design in enumerate(designs):
            strata[design["positions"]] = index
        return draw_counts(strata, K * draws, rng), np.repeat(losses, draws, axis=0)
    ones = np.ones((1, n_runs))
    fitted, pooled = {}, []
    for index, design in enumerate(designs):
        n_sizes = len(np.unique(np.round(design["log_n"], 9)))
        if n_sizes < 3 or isoflop.fit_budgets_batch(design, ones, min_points)["reason"][0] == isoflop.TOO_FEW:
            continue
        fit, residuals, _ = _parabola_stats(design, losses)
        fitted[index] = fit
        n = len(design["positions"])
        if n > 3:
            pooled.append(residuals * np.sqrt(n / (n - 3)))
    if not pooled:
        return None
    pool = np.concatenate(pooled, 1)  # (K, R): each study's own residuals
    resampled = np.repeat(losses, draws, axis=0)
    for index, fit in fitted.items():
        design = designs[index]
        picks = rng.integers(0, pool.shape[1], size=(K, draws, len(design["positions"])))
        noise = np.take_along_axis(pool[:, None, :], picks.reshape(K, 1, -1), 2).reshape(K, draws, -1)
        resampled[:, design["positions"]] = (fit[:, None, :] + noise).reshape(K * draws, -1)
    return np.ones_like(resampled), resampled


def _percentile_width(values, axis=None):
    low, high = np.nanpercentile(values, [CI_TAIL, 100 - CI_TAIL], axis=axis)
    return high - low


def run_noise(rng, shape, noise: float, tail_df: float | None):
    """Relative noise draws: noise · z with z Gaussian (tail_df None or inf) or Student-t with tail_df degrees
    of freedom scaled to the Gaussian's median |z|, so `noise` is the same core sd either way."""
    if tail_df is None or math.isinf(tail_df):
        return noise * rng.standard_normal(shape)
    return noise * GAUSSIAN_MAD / stats.t.ppf(0.75, tail_df) * rng.standard_t(tail_df, shape)


def simulate_studies(table: pd.DataFrame, prior: PriorLaw | FamilyPrior, noise: float, target_flops: float, *,
                     simulations: int, draws: int, scheme: str, criteria: Criteria, min_points: int, rng,
                     tail_df: float | None = DEFAULT_TAIL_DF) -> dict:
    """K simulated studies of one design (table: its runs, loss ignored), fitted and judged as the fit stage
    would. Returns the row's measures (see the module docstring)."""
    K = int(simulations)
    n_runs = len(table)
    designs = isoflop.budget_designs(table, min_points) if n_runs else []
    kappa = float(np.median(table["flops"] / (table["n_params"] * table["tokens"]))) if n_runs else 6.0
    true_n, true_loss = prior.optimum(target_flops, kappa)
    out = {"n_budgets": len(designs), "prior_a": prior.a, "true_n_opt": true_n, "true_loss": true_loss}
    if len(designs) < 2:
        return {**out, "a_width": math.inf, "a_width_quartiles": [math.inf, math.inf], "a_width_identified": None,
                "identified_fraction": 0.0, "fitted_fraction": 0.0, "a_spread": None, "a_bias": None,
                "n_opt_spread": None, "loss_spread_pct": None, "loss_bias_pct": None,
                "why": f"{len(designs)} budget(s) with runs: an IsoFLOP fit needs 2 or more"}
    clean = prior.loss(table["n_params"].to_numpy(), table["tokens"].to_numpy())
    losses = clean * np.exp(run_noise(rng, (K, n_runs), noise, tail_df))

    ones = np.ones((K, n_runs))
    per_budget = [isoflop.fit_budgets_batch(d, ones, min_points, losses) for d in designs]
    laws = isoflop.laws_from_optima(designs, per_budget, loss_law="saturating")
    a = laws["a"]
    # Budgets that count (identify's bracket check): a bracketed vertex whose curvature stands out of the
    # noise (t >= min_curvature_t; a budget of 3 sizes has no residual to test and counts).
    counted = np.zeros(K, int)
    for design, result in zip(designs, per_budget):
        t = _parabola_stats(design, losses)[2]  # NaN without a residual degree of freedom: counts, as in identify
        counted += (result["reason"] == isoflop.OK) & ~(t < criteria.min_curvature_t)

    boot = _bootstrap_rows(designs, losses, n_runs, draws, scheme, min_points, rng)
    if boot is None:
        width = np.full(K, np.inf)
        failed = np.ones(K)
        inside = np.zeros(K, bool)
        why = "the residual bootstrap needs a budget with more than 3 runs (fit.isoflop_bootstrap: residuals)"
    else:
        counts, resampled = boot
        draws_a = isoflop.laws_from_optima(
            designs, [isoflop.fit_budgets_batch(d, counts, min_points, resampled) for d in designs],
            loss_law=None)["a"].reshape(K, draws)
        finite = np.isfinite(draws_a)
        failed = 1 - finite.mean(1)
        enough = finite.sum(1) >= 10
        with np.errstate(all="ignore"):
            low, high = np.nanpercentile(np.where(enough[:, None], draws_a, 0.0), [CI_TAIL, 100 - CI_TAIL], axis=1)
        width = np.where(enough, high - low, np.inf)
        inside = enough & (a >= low) & (a <= high)
        why = None
    fitted = np.isfinite(a)
    width = np.where(fitted, width, np.inf)
    identified = (fitted & (counted >= criteria.min_bracketed_budgets) & (failed <= criteria.max_failed_bootstrap_fraction)
                  & (width <= criteria.max_exponent_ci_width) & (a > 0) & (a < 1) & (laws["b"] > 0) & (laws["b"] < 1)
                  & inside)

    with np.errstate(all="ignore"):
        n_opt = laws["k_n"] * target_flops ** a
        loss = laws["loss_floor"] + laws["k_l"] * target_flops ** laws["s"]
    usable = fitted & np.isfinite(n_opt) & (n_opt > 0)
    enough_studies = usable.sum() >= 10
    out.update({
        "a_width": float(np.median(width)),
        # Where the widths of single studies fall (inf: no interval), to set one realization against.
        "a_width_quartiles": [float(q) for q in np.percentile(width, [25, 75], method="nearest")],
        "a_width_identified": float(np.median(width[identified])) if identified.any() else None,
        "identified_fraction": float(identified.mean()),
        "fitted_fraction": float(fitted.mean()),
        "a_spread": float(_percentile_width(a[fitted])) if enough_studies else None,
        "a_bias": float(np.median(a[fitted]) - prior.a) if fitted.any() else None,
        # N_opt(C): the 95% range over the studies as a factor (high / low); loss: ±half its range in %.
        "n_opt_spread": (float(np.exp(_percentile_width(np.log(n_opt[usable])))) if enough_studies else None),
        "loss_spread_pct": (float(50 * _percentile_width(loss[usable & np.isfinite(loss)]) / true_loss)
                            if enough_studies else None),
        "loss_bias_pct": (float(100 * (np.nanmedian(loss[usable]) / true_loss - 1)) if enough_studies else None),
        "why": why,
    })
    return out


# ---- the plan -----------------------------------------------------------------------------------------

def repeats_past_limit(row: dict, max_epochs) -> bool:
    """A design row whose runs pass over the train split more than max_epochs times (unknown split or no
    limit: never); such a design is not chosen."""
    return max_epochs is not None and row.get("epochs") is not None and row["epochs"] > max_epochs


def plan_designs(config: dict, prior: PriorLaw | FamilyPrior, target_flops: float, study_budget: float | None, *,
                 objective: str | None = None, noise: float = DEFAULT_NOISE, noise_source: str = DEFAULT_NOISE_SOURCE,
                 tail_df: float | None = DEFAULT_TAIL_DF,
                 simulations: int = DEFAULT_SIMULATIONS, seed: int = 0, designs=None, source=None,
                 adaptive_simulations: int = ADAPTIVE_SIMULATIONS, train_tokens: float | None = None,
                 other_priors: dict | None = None) -> dict:
    """Every candidate design (candidate_designs unless given) costed and simulated; the chosen one.

    Returns {"objective", "target_flops", "study_budget", "prior", "noise", "noise_source", "simulations",
    "draws", "scheme", "rows": [per design: name, is_config, cost..., measures...], "chosen": index or None,
    "chosen_why", "notes"}. The choice: the narrowest expected a-interval among the cosine designs within
    the study budget (ties: the higher identified fraction, then the cheaper); WSD rows are costed, but their
    noise is assumed equal to cosine's, which the demo did not bear out (docs/wsd.md), so they are never chosen
    unless the config itself trains WSD.

    An adaptive config's own row is its first round; its `adaptive` entry simulates `adaptive_simulations`
    whole studies, rounds and all (design/simulate_rounds.py): what the study is expected to end with.

    train_tokens: the train split's tokens (its manifest), where the data stage has run. Each row then gives
    the most passes over the split any of its runs makes (`epochs`); a design whose runs pass more than
    train.isoflop.adaptive.max_epochs times is never chosen (the prior law assumes unique data, so its
    simulated widths would be wrong), and the simulated rounds refuse such runs as the workflow's do.

    other_priors: {objective: prior law} for the config's other objectives. An adaptive study simulates
    their grids and rounds beside `objective`'s, sharing the study budget as the workflow's rounds do; an
    objective without one is counted by its first grid's FLOPs only (a lower bound, said in the notes).
    """
    objective = objective or config["train"]["objectives"][0]
    if objective not in config["train"]["objectives"]:
        raise PlmscaleError(f"--objective {objective}: the config's grid trains {config['train']['objectives']} "
                            "(train.objectives)")
    if not (target_flops > 0 and math.isfinite(target_flops)):
        raise PlmscaleError(f"--target-flops must be a positive number of FLOPs, got {target_flops!r}")
    if not 0 <= noise < 0.5:
        raise PlmscaleError(f"run-to-run noise {noise!r} is not a relative sd between 0 and 0.5")
    if tail_df is not None and not tail_df > 2:
        raise PlmscaleError(f"noise tails: {tail_df!r} degrees of freedom; use more than 2 (inf: Gaussian)")
    fit = config["fit"]
    criteria = Criteria.from_config(fit.get("identify"))
    draws = int(min(max(fit["bootstrap"], 20), MAX_DRAWS))
    scheme = fit["isoflop_bootstrap"]
    min_points = fit["min_points_per_budget"]
    rows, seen, notes = [], set(), list(prior.notes)
    max_epochs = config["train"]["isoflop"]["adaptive"]["max_epochs"]
    other_priors = {name: law for name, law in (other_priors or {}).items()
                    if name != objective and name in config["train"]["objectives"]}
    unsimulated = [name for name in config["train"]["objectives"] if name != objective and name not in other_priors]
    if adaptive_enabled(config) and adaptive_simulations:
        if other_priors:
            notes.append("adaptive rounds simulated for " + ", ".join([objective, *other_priors]) + " together, "
                         "sharing the study budget; " + "; ".join(f"{name} prior: {law.describe()}"
                                                                  for name, law in other_priors.items()))
        if unsimulated:
            notes.append(f"no prior law for {', '.join(unsimulated)}: its rounds are not simulated, only its first "
                         "grid's FLOPs count against the study budget, so the simulated spend is a lower bound")
    if train_tokens is None:
        notes.append("epochs not checked: the train split's size is unknown until the data stage has run "
                     "(give --results with its train manifest, or --train-tokens)")
    for design in (designs if designs is not None else candidate_designs(config, objective)):
        variant = design_config(config, design)
        try:
            specs = expand_grid(variant, source=source, trunks=True)
        except PlmscaleError as error:
            if design.is_config:
                raise
            # e.g. a span without the budget a transfer run starts from: not a grid the config can train.
            notes.append(f"design {design.name!r} left out: {error}")
            continue
        # A variant that trains the very runs of an earlier row (e.g. a larger size no budget can use) is
        # that row again.
        trained = (variant["train"]["isoflop"]["schedule"], tuple(sorted((s.run_id, s.tokens) for s in specs)))
        if trained in seen:
            continue
        seen.add(trained)
        cost = design_cost(specs, variant)
        points = isoflop_points(specs)
        table = grid_table(points, objective)
        # The study budget counts every objective's runs: simulated (others) or by their first grid alone.
        others = {name: (grid_table(points, name), law) for name, law in other_priors.items()}
        other_flops = float(sum(s.flops for s in points if s.objective in unsimulated))
        epochs = max(s.tokens for s in points) / train_tokens if train_tokens else None
        # The same stream for every design (common random numbers): rows differ by their designs more than
        # by their draws, and adding a design changes no other row.
        rng = np.random.default_rng(seed)
        measures = simulate_studies(table, prior, noise, target_flops, simulations=simulations, draws=draws,
                                    scheme=scheme, criteria=criteria, min_points=min_points, rng=rng,
                                    tail_df=tail_df)
        if design.is_config and adaptive_enabled(variant) and adaptive_simulations:
            rounds_rng = np.random.default_rng([seed, 1])
            measures["adaptive"] = simulate_adaptive(
                variant, table, prior,
                lambda n: run_noise(rounds_rng, (n,), noise, tail_df), objective,
                simulations=adaptive_simulations, n_boot=draws, scheme=scheme, min_points=min_points,
                criteria=criteria, rng=rounds_rng, source=source, train_tokens=train_tokens,
                other_flops=other_flops, others=others)
        iso = variant["train"]["isoflop"]
        fragment = {"train": {"isoflop": {key: copy.deepcopy(iso[key]) for key in FRAGMENT_KEYS}}}
        if design.ladder:
            fragment["train"]["ladder"] = copy.deepcopy(design.ladder)
        rows.append({"name": design.name, "is_config": design.is_config, "fragment": fragment,
                     "budgets": [float(b) for b in objective_budgets(iso, objective)], "replicates": iso["replicates"],
                     "schedule": iso["schedule"], "sizes": len({s.model for s in points}), "epochs": epochs,
                     **cost, **measures})
    wsd_allowed = config["train"]["isoflop"]["schedule"] == "wsd"
    repeated = [row for row in rows if repeats_past_limit(row, max_epochs)]
    if repeated:
        own = [row for row in repeated if row["is_config"]]
        notes.append(f"{len(repeated)} of {len(rows)} designs have runs that pass over the train split's "
                     f"{train_tokens:.4g} tokens more than train.isoflop.adaptive.max_epochs {max_epochs:g} times "
                     f"(up to {max(row['epochs'] for row in repeated):.3g}); they are not chosen: the prior law assumes "
                     "unique data" + ("; the config's own grid is one of them: add data (data.sources) or lower "
                                      "the budgets" if own else ""))
    eligible = [i for i, row in enumerate(rows)
                if (study_budget is None or row["flops"] <= study_budget) and math.isfinite(row["a_width"])
                and (row["schedule"] == "cosine" or wsd_allowed) and not repeats_past_limit(row, max_epochs)]
    chosen = min(eligible, key=lambda i: (rows[i]["a_width"], -rows[i]["identified_fraction"], rows[i]["flops"]),
                 default=None)
    if chosen is None:
        why = (f"no design within the study budget {study_budget:.3g} FLOPs gives a finite expected interval of a"
               if study_budget is not None else "no design gives a finite expected interval of a")
        if repeated:
            why += f" without passing over the train split more than {max_epochs:g} times"
    else:
        why = (f"narrowest expected 95% interval of a ({rows[chosen]['a_width']:.3f}) among "
               f"{len(eligible)} designs" + (f" within {study_budget:.3g} FLOPs" if study_budget is not None else ""))
        if rows[chosen]["identified_fraction"] < 0.5:
            # the narrowest of intervals nobody would trust is no recommendation: say so beside the choice
            why += (f"; but it identifies a in only {rows[chosen]['identified_fraction']:.0%} of its simulated "
                    "studies: no design here is expected to identify the exponent; widen the budgets, the sizes or "
                    "the study budget, or check the prior")
    return {"objective": objective, "target_flops": float(target_flops), "study_budget": study_budget,
            "prior": prior.describe(), "prior_a": prior.a, "noise": noise, "noise_source": noise_source,
            "tail_df": tail_df,
            "simulations": int(simulations), "draws": draws, "scheme": scheme, "rows": rows, "chosen": chosen,
            "chosen_why": why, "notes": notes, "max_epochs": max_epochs,
            "flops_definition": config["train"]["flops_definition"]}


# ---- as text ------------------------------------------------------------------------------------------

def _num(value, spec):
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def format_plan(plan: dict) -> str:
    """The table: one row per design, the config's own marked `*`, the chosen one `>`."""
    header = ("", "design", "budgets", "sizes", "runs", f"FLOPs ({plan['flops_definition']})", "GPU-h", "epochs",
              "a width", "a spread", "identified", "N_opt x", "loss ±%")
    rows = []
    for index, row in enumerate(plan["rows"]):
        mark = (">" if index == plan["chosen"] else " ") + ("*" if row["is_config"] else " ")
        budgets = f"{len(row['budgets'])} ({min(row['budgets']):.3g}-{max(row['budgets']):.3g})"
        rows.append((mark, row["name"], budgets, str(row["sizes"]), str(row["n_runs"]), f"{row['flops']:.3g}",
                     _num(row["gpu_hours"], ",.0f"), _num(row.get("epochs"), ".3g"), _num(row["a_width"], ".3f"),
                     _num(row["a_spread"], ".3f"),
                     f"{row['identified_fraction']:.0%}", _num(row["n_opt_spread"], ".2f"),
                     _num(row["loss_spread_pct"], ".2f")))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    tails = ("Gaussian" if plan["tail_df"] is None or math.isinf(plan["tail_df"])
             else f"Student-t tails, {plan['tail_df']:g} degrees of freedom")
    lines = [f"{plan['objective'].upper()} designs, {plan['simulations']} simulated studies each "
             f"({plan['draws']} bootstrap draws, scheme {plan['scheme']}), target C = {plan['target_flops']:.3g}",
             f"prior: {plan['prior']}", f"noise: {plan['noise']:.2%} core sd, {tails}; {plan['noise_source']}",
             *[f"note: {note}" for note in plan["notes"]],
             "  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append("* the config's own grid; > the chosen design. epochs: the most passes over the train split any "
                 "of the design's runs makes (- : the split's size unknown). a width: median over the studies of a's 95% "
                 "bootstrap interval (- : most studies have none); a spread, N_opt x, loss ±%: 95% range over the "
                 f"studies of a, of N_opt(C) (high/low) and of the forecast loss at C; true a = {plan['prior_a']:.3f}")
    lines.append(f"chosen: {plan['rows'][plan['chosen']]['name']} ({plan['chosen_why']})" if plan["chosen"] is not None
                 else f"chosen: none ({plan['chosen_why']})")
    lines += [format_adaptive(row["adaptive"]) for row in plan["rows"] if row.get("adaptive")]
    return "\n".join(lines)


def _runs_per_objective(measures: dict) -> str:
    """' (clm 2.1, mlm 3.4)' where several objectives' rounds were simulated together, else ''."""
    means = measures.get("runs_added_per_objective") or {}
    if len(means) < 2:
        return ""
    return " (" + ", ".join(f"{name} {mean:.1f}" for name, mean in means.items()) + ")"


def format_adaptive(measures: dict) -> str:
    """The config's adaptive study, simulated to its stop: what it is expected to end with and spend."""
    low, high = measures["a_width_quartiles"]
    flops_low, flops_high = measures["flops_quartiles"]
    stops = ", ".join(f"{why} {count}" for why, count in measures["stops"].items())
    return (f"adaptive rounds on (the config's row above is its first round): {measures['simulations']} studies "
            f"simulated to the rounds' stop end with a's interval {_num(measures['a_width'], '.3f')} wide "
            f"(median; quartiles {_num(low, '.3f')}-{_num(high, '.3f')}), "
            f"{measures['identified_fraction']:.0%} identified, {measures['meets_stop_rule_fraction']:.0%} meeting "
            f"the stop rule, after {measures['rounds_with_runs']:.1f} rounds and {measures['runs_added']:.1f} runs "
            f"added on average{_runs_per_objective(measures)}, spending {measures['flops']:.3g} FLOPs (median; quartiles {flops_low:.3g}-"
            f"{flops_high:.3g}, mean {measures['flops_mean']:.3g}); stops: {stops}")


def plan_json(plan: dict) -> dict:
    """The plan as plain JSON (each row's design as its config fragment)."""
    def plain(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return [plain(v) for v in value] if isinstance(value, list) else value

    return {**plan, "tail_df": plain(plan["tail_df"]),
            "rows": [{k: plain(v) for k, v in r.items()} for r in plan["rows"]]}
