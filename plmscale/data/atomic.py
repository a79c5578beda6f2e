"""Write a file so that it either appears complete or not at all.

Snakemake treats an existing output as done; a crash halfway through writing must therefore leave no
file under the final name. Everything is written to a hidden sibling and renamed (atomic on POSIX).
"""

import io
import os
from contextlib import contextmanager
from pathlib import Path

from plmscale.data.gzio import open_write


@contextmanager
def atomic_path(path):
    """Yield a temporary sibling path; it replaces `path` only if the block finishes without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def write_gzip_text(path):
    """A text handle whose content lands in `path` as reproducible gzip (see gzio.open_write)."""
    with atomic_path(path) as tmp:
        text = io.TextIOWrapper(io.BufferedWriter(open_write(tmp), 1 << 20), encoding="ascii",
                                newline="\n")
        try:
            yield text
        finally:
            text.close()


@contextmanager
def write_text(path):
    """A plain text handle written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        yield handle
