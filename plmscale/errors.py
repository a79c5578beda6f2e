"""Errors meant for the person running the workflow, not for a traceback reader."""

import contextlib
import errno
from pathlib import Path


class PlmscaleError(Exception):
    """A problem the user can fix: the message names the file (and line) and says what to do."""


# OSErrors that are about the place written to, whichever file the call named (a full disk names none).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM, errno.ENOTDIR}
_WRITE_HINTS = {errno.ENOSPC: "free disk space there", errno.EDQUOT: "free space within your disk quota",
                errno.EROFS: "give a writable results folder", errno.EACCES: "make the folder writable for you",
                errno.EPERM: "make the folder writable for you",
                errno.ENOTDIR: "a file stands where a folder of that path should be: move it away"}


def write_error(path, error: OSError, what: str = "", tmp=None, any_error: bool = False) -> Exception:
    """A PlmscaleError naming the file being written (`what` says what it is) and the cause, for an OSError
    of writing it. Other OSErrors (reading an input inside the same block) are returned unchanged, unless
    any_error: the caller knows the block only writes. A bare "[Errno 28] No space left on device" says
    neither which file nor where."""
    named = {str(p) for p in (path, tmp, Path(path).parent) if p is not None}
    if not any_error and error.errno not in _WRITE_ERRNOS and (
            error.filename is None or str(error.filename) not in named):
        return error
    hint = _WRITE_HINTS.get(error.errno, f"check that {Path(path).parent} is writable and has space")
    label = f"{what} {path}" if what else str(path)
    return PlmscaleError(f"could not write {label}: {error.strerror or error}; {hint}, then run again")


@contextlib.contextmanager
def naming_the_file(path, what="file"):
    """Any OSError inside the block, which only writes `path`, becomes a PlmscaleError naming it (write_error)."""
    try:
        yield
    except OSError as error:
        raise write_error(path, error, what, any_error=True) from error
