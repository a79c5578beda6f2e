"""Training stage: sample, mask, schedule, train, checkpoint, one grid point per call of `train_run`."""

from plmscale.train.loop import train_run

__all__ = ["train_run"]
