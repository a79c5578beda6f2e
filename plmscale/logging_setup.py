"""One way to send a step's log to the file Snakemake's `log:` names, and to stderr."""

import logging
import sys
from pathlib import Path


def log_to_file(path=None, level=logging.INFO) -> logging.Logger:
    handlers = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger = logging.getLogger("plmscale")
    if path:
        _log_uncaught_errors(logger)
    return logger


def _log_uncaught_errors(logger: logging.Logger) -> None:
    """An error that ends the step is written to its log file as its last line (otherwise it reaches only
    stderr, which Snakemake and Slurm keep elsewhere): `plmscale status` reads a failed run's reason there."""
    previous = sys.excepthook

    def hook(kind, error, traceback):
        if not issubclass(kind, KeyboardInterrupt):
            logger.error("failed: %s: %s", kind.__name__, error)
        previous(kind, error, traceback)

    sys.excepthook = hook
