"""Learning rate over a run: linear warm-up, then cosine decay over the run's own steps (`lr_at`), or
warm-up, a constant phase and a short 1-sqrt decay at the end (`wsd_lr_at`, the WSD grid's branches).

A base-layer leaf without torch: training applies these schedules (plmscale.train.schedule), and the
loss-curve law (plmscale.scaling.loss_curve) rebuilds a run's lr per step from them to predict the loss
of a schedule nobody trained. The peak lr comes from the run spec (its recipe's law of N,
plmscale.arithmetic).

The schedule is a pure function of the step, so "scheduler state" in a checkpoint is just the step.
"""

import math


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


def wsd_lr_at(step: int, total_steps: int, decay_start: int, warmup: int, peak_lr: float,
              min_lr_ratio: float = 0.0) -> float:
    """Warmup-stable-decay: lr of update number `step` (0-based) of a run that ends after total_steps updates.

    Linear warm-up to peak_lr over `warmup` updates, peak_lr until update decay_start, then 1-sqrt decay
    (lr = floor + (peak - floor)·(1 - sqrt(progress))) reaching peak_lr·min_lr_ratio at the last update.
    A WSD trunk never decays: it calls this with decay_start = total_steps. The shape is the one of
    Hägele et al. 2024 and OLMo's ladder; the sqrt keeps lr high for longer than a linear decay.
    """
    if not 0 <= warmup <= decay_start <= total_steps:
        raise ValueError(f"WSD schedule needs 0 <= warmup ({warmup}) <= decay_start ({decay_start}) "
                         f"<= total_steps ({total_steps})")
    if step < warmup:
        return peak_lr * (step + 1) / warmup
    if step < decay_start:
        return peak_lr
    progress = min(1.0, (step - decay_start + 1) / (total_steps - decay_start))
    floor = peak_lr * min_lr_ratio
    return floor + (peak_lr - floor) * (1.0 - math.sqrt(progress))
