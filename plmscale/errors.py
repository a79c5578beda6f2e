"""Errors meant for the person running the workflow, not for a traceback reader."""

import contextlib
from pathlib import Path


class PlmscaleError(Exception):
    """A problem the user can fix: the message names the file (and line) and says what to do."""


@contextlib.contextmanager
def naming_the_file(path, what="file"):
    """An OSError inside the block (disk full, a read-only results folder) becomes a PlmscaleError that names
    the file being written: a bare "[Errno 28] No space left on device" says neither which file nor where."""
    try:
        yield
    except OSError as error:
        raise PlmscaleError(f"could not write {what} {path}: {error.strerror or error}; free disk space or make "
                            f"{Path(path).parent} writable, then rerun") from error
