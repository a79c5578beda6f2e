"""A run's TensorBoard scalars, written live into its output folder next to curve.csv when the
`tensorboard` package is installed (the `watch` extra, which `make` installs), so
`tensorboard --logdir results/runs` shows a grid while it trains, one TensorBoard run per grid point.

Tags: loss/train, loss/valid, lr, speed/tokens_per_second and speed/mfu against the training step, and
loss/valid_vs_megaflops against the run's FLOPs (its budget definition) in units of 1e6 — the layout of the
curves Cheng et al. released (loss against compute; they used gigaFLOPs, too coarse for the demo's runs), so
`plmscale import-curves` reads a study's event files as it reads theirs (configs/demo-runs-import.yaml).
TensorBoard steps are 64-bit integers: megaFLOPs reach 9e24 FLOPs, beyond any study's run.

Without the package, or where the folder cannot be written, the run trains as before and says so once:
these files are for watching, never part of a result.
"""

import logging
import warnings

log = logging.getLogger(__name__)

FLOPS_STEP_UNIT = 1e6
VALID_VS_FLOPS_TAG = "loss/valid_vs_megaflops"
STEP_TAGS = {"train_loss": "loss/train", "valid_loss": "loss/valid", "lr": "lr",
             "tokens_per_second": "speed/tokens_per_second", "mfu": "speed/mfu"}


class ScalarLog:
    def __init__(self, run_dir, resume_step: int = 0):
        self.writer = None
        try:
            with warnings.catch_warnings():  # its import touches deprecated torch.jit names
                warnings.simplefilter("ignore", DeprecationWarning)
                from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard is not installed: no event files for this run (pip install tensorboard, or "
                     "the `watch` extra)")
            return
        try:
            # purge_step: a resumed run drops the events a killed attempt wrote past its checkpoint
            self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=resume_step or None, flush_secs=30)
        except OSError as error:
            log.warning("no TensorBoard event files for this run: cannot write in %s (%s)", run_dir, error)

    def write(self, step: int, flops: float, **values) -> None:
        """One step's scalars: train_loss, valid_loss, lr, tokens_per_second, mfu (None: not logged)."""
        if self.writer is None:
            return
        for key, value in values.items():
            if value is not None:
                self.writer.add_scalar(STEP_TAGS[key], float(value), step)
        if values.get("valid_loss") is not None:
            self.writer.add_scalar(VALID_VS_FLOPS_TAG, float(values["valid_loss"]), int(round(flops / FLOPS_STEP_UNIT)))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
