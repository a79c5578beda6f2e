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
    return logging.getLogger("plmscale")
