"""Mixed CLM+MLM training (objective mixed, train.mixed): which objective each optimizer step trains, and
what a mixed run reports as its single validation loss.

The schedule is a pure function of the step: step s trains on an MLM batch when floor((s+1)·f) >
floor(s·f), f the run's mlm_fraction, else on a CLM batch. Every prefix of the run holds floor(k·f) MLM
steps of its first k (the share is exact at every checkpoint, not only at the end), the kinds are spread
evenly (f = 0.5 alternates CLM, MLM), and nothing is drawn at random: a rerun or a resumed run trains the
same kind at every step. A step's examples are drawn from the same (seed, stream, step, index) generators
whatever its kind, so the schedule adds no randomness either.
"""

import math

from plmscale.grid.spec import MIXED

SINGLE_OBJECTIVES = ("clm", "mlm")


def step_objective(step: int, mlm_fraction: float) -> str:
    """"mlm" or "clm": the batch kind of optimizer step `step` (0-based) of a mixed run."""
    return "mlm" if math.floor((step + 1) * mlm_fraction) > math.floor(step * mlm_fraction) else "clm"


def mlm_steps(steps: int, mlm_fraction: float) -> int:
    """MLM steps among the first `steps` of a mixed run (floor(steps·f): what step_objective gives)."""
    return math.floor(steps * mlm_fraction)


def evaluated_objectives(objective: str) -> tuple:
    """The objectives a run is validated on: its own, or both for a mixed run."""
    return SINGLE_OBJECTIVES if objective == MIXED else (objective,)


def mixed_loss(losses: dict, mlm_fraction: float) -> float:
    """A mixed run's single validation loss (final_valid_loss, curve.csv's valid_loss): the loss of the
    objective it trains, (1-f)·CLM + f·MLM. The comparison uses its per-objective losses instead."""
    return (1.0 - mlm_fraction) * losses["clm"] + mlm_fraction * losses["mlm"]
