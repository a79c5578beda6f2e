"""The loss-curve law with learning-rate annealing (Tissue et al. 2024, arXiv 2408.11029), fitted on whole
training curves of one model shape, and used to predict the loss of a schedule or length nobody trained.

    L(s) = L0 + A · S1(s)^(−α) − C · S2(s)

where s counts optimizer updates and η_i is the lr of update i (i = 1 … s), and

- S1(s) = Σ_{i=1..s} η_i, the forward area: the area under the lr curve up to s. Warm-up updates count
  with their (small) lr: they move the weights too.
- S2(s) = Σ_{i=1..s} m_i with m_i = λ · m_{i−1} + (η_{i−1} − η_i), m_0 = 0: the annealing area with
  momentum. Each lr drop enters m and keeps acting, fading by the decay factor λ per update, so the loss
  drop of an annealing lags the lr and a long decay gains more than the lr area it removes. λ = 0.999
  (DECAY_FACTOR), the paper's value (a parameter of every function here). S2 starts at the
  warm-up's peak (the first update with the run's largest lr): a warm-up's rising lr is not annealing (the
  literal sum would count it as negative annealing). The law describes the loss after warm-up; only
  points after it are fitted.
- L0, A, α, C: constants of one model shape (the law has no N in it: one law per shape). A, C ≥ 0; L0 between
  0 and the highest loss fitted (not the lowest: an annealed loss may end below L0). A constant that stops
  at a bound is named in the fit's `at_bounds`: the curves did not identify it.

Fitting (`fit_curve_law`): every validation point after warm-up of every curve of the shape (or windowed
means of the batch losses: `fit_points`); a point shared by several curves (a WSD trunk's evaluations appear
in each of its branches' curves) counts once. The
objective is the Huber loss (δ = 1e-3) of log(predicted) − log(observed), as for the other laws of
plmscale.scaling, minimised with L-BFGS-B from a grid of starts (α × L0); A and C of each start come from
a bounded linear least-squares fit given α and L0. The result reports how many starts reached the best
basin.

Predicting (`predict_curve`, `predict_final`): the lr of the target run per update (`schedule_lrs`: the
very functions training applies, plmscale.lr_schedule), its S1 and S2, then the law.

Input curves (`read_run_curve`, `curves_from_table`) must give the lr of EVERY update up to the last
loss: S1 and S2 are sums over all of them, so a table of validation points alone (the collected
scaling/curves.csv) is not enough, and is refused with a message naming the file.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import lsq_linear, minimize
from scipy.signal import lfilter

from plmscale.errors import PlmscaleError
from plmscale.grid.wsd import decay_steps
from plmscale.lr_schedule import lr_at, warmup_steps, wsd_lr_at
from plmscale.scaling.collect import read_curve_file

DECAY_FACTOR = 0.999
HUBER_DELTA = 1e-3
ALPHA_STARTS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5)
L0_START_FRACTIONS = (0.0, 0.5, 0.8, 0.95)  # L0 as a share of the lowest observed loss
ALPHA_BOUNDS = (1e-3, 4.0)
# Two starts share the best basin when their objectives agree to this (relative) and L0 and α to BASIN_PARAM_TOL.
BASIN_REL_OBJECTIVE = 1e-4
BASIN_PARAM_TOL = 1e-2
MIN_POINTS = 4  # four constants
POINTS = ("valid", "train")  # what a law is fitted to: validation losses, or windowed means of the batch losses
TRAIN_WINDOW = 200  # updates per train-loss point: a demo batch's loss scatters ~0.1 nats, its mean over 200 ~0.007
FEWER_POINTS_HINT = {"valid": "evaluate more often: train.eval_every_steps, or fit the train losses: points train",
                     "train": f"runs of more than warm-up + {TRAIN_WINDOW} updates, or more runs of this size"}
WINDOW_STATES = 9  # states a window's mean law is taken over (the law is smooth within 200 updates)


# ---- the lr areas ------------------------------------------------------------------------------------------

def lr_areas(lrs, decay_factor: float = DECAY_FACTOR) -> tuple[np.ndarray, np.ndarray]:
    """(S1, S2) after each update: element k is the area after update k + 1 (lrs[k] is update k + 1's lr)."""
    lrs = np.asarray(lrs, dtype=float)
    if lrs.ndim != 1 or len(lrs) == 0 or not np.all(np.isfinite(lrs)) or np.any(lrs < 0):
        raise ValueError("lrs must be a non-empty 1-D array of finite, non-negative learning rates")
    if not 0.0 <= decay_factor < 1.0:
        raise ValueError(f"decay_factor must be in [0, 1), got {decay_factor}")
    s1 = np.cumsum(lrs)
    drops = np.zeros_like(lrs)
    drops[1:] = lrs[:-1] - lrs[1:]
    drops[:int(np.argmax(lrs)) + 1] = 0.0  # up to the warm-up's peak: not annealing
    momentum = lfilter([1.0], [1.0, -decay_factor], drops)  # m_k = λ·m_{k-1} + drop_k
    return s1, np.cumsum(momentum)


def warmup_end(lrs) -> int:
    """Updates up to and including the first one at the run's largest lr (the warm-up's peak)."""
    return int(np.argmax(np.asarray(lrs, dtype=float))) + 1


# ---- the lr of a run from its schedule ----------------------------------------------------------------------

def schedule_lrs(schedule: str, total_steps: int, peak_lr: float, *, warmup_fraction: float, min_lr_ratio: float,
                 decay_fraction: float | None = None, warmup: int | None = None,
                 decay_start: int | None = None) -> np.ndarray:
    """The lr of every update (index k: update k + 1) of a run as training computes it (plmscale.lr_schedule).

    cosine: warm-up over warmup_fraction of total_steps, cosine to peak·min_lr_ratio (train.warmup_fraction,
    train.min_lr_ratio). wsd: warm-up of `warmup` updates (default: warmup_fraction of this run's steps; a WSD
    family shares the warm-up of its smallest budget), constant, then 1-sqrt decay from `decay_start`
    (default: the last decay_fraction of the steps, rounded as the WSD grid rounds it).
    """
    total_steps = int(total_steps)
    if total_steps < 1:
        raise PlmscaleError(f"a schedule needs at least one update, got total_steps {total_steps}")
    if schedule == "cosine":
        return np.array([lr_at(k, total_steps, peak_lr, warmup_fraction, min_lr_ratio) for k in range(total_steps)])
    if schedule != "wsd":
        raise PlmscaleError(f"schedule {schedule!r} is not cosine or wsd")
    if warmup is None:
        warmup = warmup_steps(total_steps, warmup_fraction)
    if decay_start is None:
        if decay_fraction is None:
            raise PlmscaleError("a wsd schedule needs decay_fraction (train.isoflop.decay_fraction) or decay_start")
        decay_start = total_steps - decay_steps(total_steps, decay_fraction)
    return np.array([wsd_lr_at(k, total_steps, decay_start, warmup, peak_lr, min_lr_ratio)
                     for k in range(total_steps)])


# ---- curves in ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class RunCurve:
    """One run's training curve: the lr of every update and its losses at some steps."""

    run_id: str
    shape: str                 # what one law is fitted per: the model name, or the parameter count
    lrs: np.ndarray            # lrs[k]: the lr of update k + 1
    steps: np.ndarray          # steps (updates done, 1-based) at which a loss was measured
    losses: np.ndarray         # the validation loss at each of those steps
    train_losses: np.ndarray | None = None  # train_losses[k]: the batch loss of update k + 1 (before it)

    @property
    def total_steps(self) -> int:
        return len(self.lrs)

    @property
    def peak_lr(self) -> float:
        return float(np.max(self.lrs))

    @property
    def final_loss(self) -> float:
        return float(self.losses[np.argmax(self.steps)])

    def final_train_loss(self, window: int = TRAIN_WINDOW) -> float | None:
        """The mean batch loss of the last `window` updates (None without train losses)."""
        return None if self.train_losses is None else float(np.nanmean(self.train_losses[-window:]))


def _curve_from_rows(run_id, shape, step, lr, loss, where: str, train_loss=None) -> RunCurve:
    """A RunCurve from per-step rows (step, lr, loss or NaN, optionally train_loss); `where` names the source
    in errors."""
    step = pd.to_numeric(pd.Series(step), errors="coerce").to_numpy(float)
    lr = pd.to_numeric(pd.Series(lr), errors="coerce").to_numpy(float)
    loss = pd.to_numeric(pd.Series(loss), errors="coerce").to_numpy(float)
    if np.isnan(step).any():
        raise PlmscaleError(f"{where}: run {run_id}: column step has empty or non-numeric values")
    order = np.argsort(step, kind="stable")
    step, lr, loss = step[order], lr[order], loss[order]
    if train_loss is not None:
        train_loss = pd.to_numeric(pd.Series(train_loss), errors="coerce").to_numpy(float)[order]
    expected = np.arange(1, len(step) + 1)
    if len(step) == 0 or not np.array_equal(step, expected):
        gap = next((int(e) for s, e in zip(step, expected) if s != e), len(step) + 1)
        raise PlmscaleError(
            f"{where}: run {run_id}: the loss-curve law needs the lr of every update, but the rows are not the "
            f"steps 1, 2, ... {len(step)} (first missing or repeated step: {gap}); use the run's own curve.csv "
            f"(results/runs/<run id>/curve.csv), which has one row per update")
    if np.isnan(lr).any() or np.any(lr < 0):
        bad = int(step[np.isnan(lr) | (lr < 0)][0])
        raise PlmscaleError(f"{where}: run {run_id}: lr is empty, negative or not a number at step {bad}; the "
                            f"loss-curve law needs the lr of every update")
    measured = np.isfinite(loss)
    if not measured.any():
        raise PlmscaleError(f"{where}: run {run_id}: no loss value (valid_loss / loss column) to fit")
    if np.any(loss[measured] <= 0):
        raise PlmscaleError(f"{where}: run {run_id}: losses must be positive")
    return RunCurve(run_id=str(run_id), shape=str(shape), lrs=lr, steps=step[measured].astype(int),
                    losses=loss[measured], train_losses=train_loss)


def read_run_curve(path, run_id: str | None = None, shape: str | None = None) -> RunCurve:
    """A run's curve.csv as training writes it (step, tokens, flops, train_loss, valid_loss, lr: one row per
    update, valid_loss where it was evaluated). run_id and shape default to the run's folder name."""
    path = Path(path)
    curve = read_curve_file(path)
    missing = [column for column in ("step", "lr", "valid_loss") if column not in curve.columns]
    if missing:
        raise PlmscaleError(f"{path}: column(s) {', '.join(missing)} missing; the loss-curve law needs the lr of "
                            f"every update and the validation loss (a curve.csv written by plmscale training has "
                            f"step, tokens, flops, train_loss, valid_loss, lr)")
    run_id = run_id or path.parent.name
    return _curve_from_rows(run_id, shape or run_id, curve["step"], curve["lr"], curve["valid_loss"], str(path),
                            curve["train_loss"] if "train_loss" in curve.columns else None)


def curves_from_table(df: pd.DataFrame, shape_of: dict | None = None, source: str = "curves table") -> list:
    """RunCurves from a long table with columns run_id, step, lr and loss (or valid_loss): one row per update
    of each run, loss empty where the run was not evaluated. shape_of: run id -> shape (default: the
    n_params column, else the run id)."""
    loss_column = "loss" if "loss" in df.columns else "valid_loss"
    missing = [column for column in ("run_id", "step", "lr", loss_column) if column not in df.columns]
    if missing:
        raise PlmscaleError(
            f"{source}: column(s) {', '.join(missing)} missing. The loss-curve law needs the lr of every update "
            f"(columns run_id, step, lr, loss; one row per update); the collected scaling/curves.csv keeps only "
            f"validation points without lr: pass the runs' folder (results/runs, whose <run id>/curve.csv files "
            f"record step and lr) instead")
    curves = []
    for run_id, rows in df.groupby(df["run_id"].astype(str), sort=True):
        if shape_of and run_id in shape_of:
            shape = shape_of[run_id]
        elif "n_params" in rows.columns:
            shape = str(int(rows["n_params"].iloc[0]))
        else:
            shape = run_id
        curves.append(_curve_from_rows(run_id, shape, rows["step"], rows["lr"], rows[loss_column], source))
    return curves


# ---- the law and its fit ------------------------------------------------------------------------------------

@dataclasses.dataclass
class CurveLawFit:
    """The law of one shape: L(s) = L0 + A·S1^(−α) − C·S2, S2 with decay factor λ."""

    shape: str
    L0: float
    A: float
    alpha: float
    C: float
    decay_factor: float
    n_points: int              # points fitted (after warm-up, shared points once)
    run_ids: list              # the curves it was fitted on
    n_starts: int
    n_in_best_basin: int
    rmse_log: float            # root mean square of log(predicted) − log(observed) over the fitted points
    points: str = "valid"      # what it was fitted to: validation losses or windowed train losses (fit_points)
    at_bounds: list = dataclasses.field(default_factory=list)  # constants stopped at a bound: not identified

    def loss(self, s1, s2):
        return law_loss((self.L0, self.A, self.alpha, self.C), s1, s2)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def law_loss(params, s1, s2):
    L0, A, alpha, C = params
    return L0 + A * np.power(np.asarray(s1, float), -alpha) - C * np.asarray(s2, float)


def _huber(r, delta=HUBER_DELTA):
    absr = np.abs(r)
    return np.where(absr <= delta, 0.5 * r * r, delta * (absr - 0.5 * delta))


def fit_points(curves, decay_factor: float = DECAY_FACTOR, points: str = "valid",
               window: int = TRAIN_WINDOW) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S1, S2, loss) of the points the law is fitted to, after warm-up: S1 and S2 (P, K) hold the areas of the
    K states a point averages over (K = 1 for a validation loss), loss (P,). A point several curves share (a
    WSD trunk's part of each branch's curve: same steps, loss and areas) counts once.

    points "valid": every validation loss, at the areas after its step's updates. points "train": the mean
    batch loss over windows of `window` updates (steps k·window+1 … (k+1)·window, aligned so that branches
    share their trunk's windows, plus each run's last `window` updates), against the law's mean over the
    states the batches met (the batch loss of update s is measured after s − 1 updates; WINDOW_STATES of
    them, evenly spaced). Dense where validation is sparse, but a train loss: its law predicts train loss.
    """
    if points not in POINTS:
        raise PlmscaleError(f"points {points!r} is not one of {', '.join(POINTS)}")
    rows = {}
    for curve in curves:
        s1, s2 = lr_areas(curve.lrs, decay_factor)
        start = warmup_end(curve.lrs)
        if points == "valid":
            for step, loss in zip(curve.steps, curve.losses):
                if start < step <= len(s1):
                    key = (int(step), int(step), float(loss), float(s1[step - 1]), float(s2[step - 1]))
                    rows[key] = (s1[step - 1:step], s2[step - 1:step])
            continue
        if curve.train_losses is None:
            raise PlmscaleError(f"run {curve.run_id}: no train_loss per update to fit the law to (points: train)")
        for first, last in _windows(len(curve.lrs), start, window):
            losses = curve.train_losses[first - 1:last]
            if np.all(np.isfinite(losses)):
                states = _window_states(first, last)
                key = (first, last, float(losses.mean()), float(s1[states].sum()), float(s2[states].sum()))
                rows[key] = (s1[states], s2[states])
    if not rows:
        return np.empty((0, 1)), np.empty((0, 1)), np.empty(0)
    keys = sorted(rows)
    return (np.array([rows[key][0] for key in keys]), np.array([rows[key][1] for key in keys]),
            np.array([key[2] for key in keys]))


def _windows(total: int, warmup: int, window: int):
    """(first, last) steps of the aligned windows after the warm-up, then the run's last `window` steps."""
    found = [(k * window + 1, (k + 1) * window) for k in range(total // window) if k * window + 1 > warmup + 1]
    if total - window + 1 > warmup + 1 and (not found or found[-1][1] != total):
        found.append((total - window + 1, total))
    return found


def _window_states(first: int, last: int) -> np.ndarray:
    """Indices into the areas of the states the batches of steps first … last met (after step − 1 updates)."""
    return np.round(np.linspace(first - 1, last - 1, WINDOW_STATES)).astype(int) - 1


def final_window_loss(fit, lrs, window: int = TRAIN_WINDOW) -> float:
    """The law's mean batch loss over a run's last `window` updates (a law fitted to train losses)."""
    s1, s2 = lr_areas(lrs, fit.decay_factor)
    states = _window_states(max(2, len(lrs) - window + 1), len(lrs))
    return float(np.mean(fit.loss(s1[states], s2[states])))


def _mean_law(theta, s1n, s2n):
    """The law on scaled areas, theta = (L0, A', α, C'), averaged over each point's states."""
    return (theta[0] + theta[1] * np.power(s1n, -theta[2]) - theta[3] * s2n).mean(axis=1)


def _objective(theta, s1n, s2n, log_loss):
    pred = _mean_law(theta, s1n, s2n)
    if np.any(pred <= 0):
        return 1e6 * (1.0 + float(np.sum(np.clip(-pred, 0, None))))
    return float(np.sum(_huber(np.log(pred) - log_loss))) / HUBER_DELTA


def fit_curve_law(curves, decay_factor: float = DECAY_FACTOR, shape: str | None = None,
                  points: str = "valid") -> CurveLawFit:
    """The law of one shape from its curves (RunCurve list), fitted to their validation losses or (points
    "train") to their windowed train losses (fit_points)."""
    curves = list(curves)
    shape = shape if shape is not None else (curves[0].shape if curves else "")
    s1, s2, loss = fit_points(curves, decay_factor, points)
    if len(loss) < MIN_POINTS:
        raise PlmscaleError(
            f"shape {shape}: {len(loss)} {points} point(s) after warm-up in runs "
            f"{', '.join(c.run_id for c in curves) or 'none'}; the loss-curve law has 4 constants and needs at "
            f"least {MIN_POINTS} ({FEWER_POINTS_HINT[points]})")
    # areas scaled to their maximum (conditioning); A and C are scaled back at the end
    s1_scale, s2_scale = float(s1.max()), float(s2.max()) or 1.0
    s1n, s2n, log_loss = s1 / s1_scale, s2 / s2_scale, np.log(loss)
    low = float(loss.min())
    # L0 below the highest loss: an annealed loss may end below L0 (the C·S2 term), so not below the lowest
    bounds = [(0.0, float(loss.max())), (0.0, None), ALPHA_BOUNDS, (0.0, None)]
    solutions = []
    for alpha in ALPHA_STARTS:
        for fraction in L0_START_FRACTIONS:
            L0 = fraction * low
            # loss − L0 = A'·mean(S1n^-α) − C'·mean(S2n): A' and C' of the start by bounded least squares
            design = np.column_stack([np.power(s1n, -alpha).mean(axis=1), -s2n.mean(axis=1)])
            linear = lsq_linear(design, loss - L0, bounds=(0.0, np.inf))
            start = np.array([L0, linear.x[0], alpha, linear.x[1]])
            result = minimize(_objective, start, args=(s1n, s2n, log_loss), method="L-BFGS-B", bounds=bounds)
            solutions.append((float(result.fun), result.x))
    values = np.array([value for value, _ in solutions])
    best_value, best = min(solutions, key=lambda item: item[0])
    in_basin = sum(1 for value, theta in solutions
                   if value <= best_value + BASIN_REL_OBJECTIVE * max(abs(best_value), 1e-12)
                   and abs(theta[0] - best[0]) <= BASIN_PARAM_TOL * (1 + abs(best[0]))
                   and abs(theta[2] - best[2]) <= BASIN_PARAM_TOL * (1 + abs(best[2])))
    L0, A_scaled, alpha, C_scaled = (float(x) for x in best)
    A, C = A_scaled * s1_scale ** alpha, C_scaled / s2_scale
    residual = np.log(_mean_law(best, s1n, s2n)) - log_loss
    at_bounds = [name for name, value, (lower, upper) in zip(("L0", "A", "alpha", "C"), best, bounds)
                 if np.isclose(value, lower, rtol=0, atol=1e-9) or (upper is not None and np.isclose(value, upper))]
    return CurveLawFit(shape=str(shape), L0=L0, A=A, alpha=alpha, C=C, decay_factor=decay_factor,
                       n_points=int(len(loss)), run_ids=[c.run_id for c in curves], n_starts=int(len(values)),
                       n_in_best_basin=int(in_basin), rmse_log=float(np.sqrt(np.mean(residual ** 2))), points=points,
                       at_bounds=at_bounds)


def fit_per_shape(curves, decay_factor: float = DECAY_FACTOR, points: str = "valid") -> tuple[dict, dict]:
    """({shape: CurveLawFit}, {shape: why it was not fitted}): one law per model shape (its constants depend
    on N). A shape whose curves cannot carry the law is refused with its reason; the others are fitted."""
    by_shape = {}
    for curve in curves:
        by_shape.setdefault(curve.shape, []).append(curve)
    fits, refused = {}, {}
    for shape, group in sorted(by_shape.items()):
        try:
            fits[shape] = fit_curve_law(group, decay_factor, shape, points)
        except PlmscaleError as error:
            refused[shape] = str(error)
    return fits, refused


def predict_curve(fit: CurveLawFit, lrs, steps=None) -> np.ndarray:
    """The law's loss after each update of a run with these lrs (or at the given 1-based steps)."""
    s1, s2 = lr_areas(lrs, fit.decay_factor)
    if steps is None:
        return fit.loss(s1, s2)
    index = np.asarray(steps, dtype=int) - 1
    return fit.loss(s1[index], s2[index])


def predict_final(fit: CurveLawFit, lrs) -> float:
    """The law's loss at the end of a run with these lrs: its validation loss after the last update, or for
    a law fitted to train losses, the mean batch loss of its last TRAIN_WINDOW updates."""
    if fit.points == "train":
        return final_window_loss(fit, lrs)
    s1, s2 = lr_areas(lrs, fit.decay_factor)
    return float(fit.loss(s1[-1:], s2[-1:])[0])
