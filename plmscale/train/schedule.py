"""The lr schedules training applies: they live in plmscale.lr_schedule (torch-free, below every layer), so
that the scaling layer's loss-curve law computes the very lr a run trained with."""

from plmscale.lr_schedule import lr_at, warmup_steps, wsd_lr_at

__all__ = ["lr_at", "warmup_steps", "wsd_lr_at"]
