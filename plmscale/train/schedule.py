"""Learning rate: the paper's peak-lr-by-size table, linear warm-up, cosine decay over the run's own steps.

The schedule is a pure function of the step, so "scheduler state" in a checkpoint is just the step.
"""

import math

import numpy as np

# (non-embedding parameters, peak lr) anchors from DESIGN.md (Cheng et al. 2024); log-linear in N
# between anchors, clamped outside.
PEAK_LR_ANCHORS = ((50e6, 6e-4), (100e6, 5.5e-4), (200e6, 5e-4), (470e6, 4e-4), (880e6, 3.5e-4), (1e9, 3e-4))


def peak_lr_for_size(n_params: float) -> float:
    sizes = np.log([n for n, _ in PEAK_LR_ANCHORS])
    rates = [lr for _, lr in PEAK_LR_ANCHORS]
    return float(np.interp(math.log(max(n_params, 1.0)), sizes, rates))


def warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    return 0 if warmup_fraction <= 0 else max(1, int(round(warmup_fraction * total_steps)))


def lr_at(step: int, total_steps: int, peak_lr: float, warmup_fraction: float = 0.025,
          min_lr_ratio: float = 0.1) -> float:
    """lr of update number `step` (0-based) in a run of exactly total_steps updates.

    Linear warm-up to peak_lr over warmup_fraction of the steps, then cosine to peak_lr·min_lr_ratio,
    reached at the last step.
    """
    warm = warmup_steps(total_steps, warmup_fraction)
    if step < warm:
        return peak_lr * (step + 1) / warm
    decay_steps = max(1, total_steps - 1 - warm)
    progress = min(1.0, (step - warm) / decay_steps)
    floor = peak_lr * min_lr_ratio
    return floor + (peak_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
