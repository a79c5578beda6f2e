"""Write a file so that it either appears complete or not at all.

Snakemake treats an existing output as done; a crash halfway through writing must therefore leave no
file under the final name. Everything is written to a hidden sibling `.NAME.tmp-PID` and renamed (atomic
on POSIX). A kill -9 leaves that sibling behind; `remove_stale_temporaries` clears such leftovers of dead
processes on the next run.
"""

import io
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from plmscale.data.gzio import open_write
from plmscale.errors import PlmscaleError, write_error

# Every temporary of the data stage ends in ".tmp-<pid>" (files and folders alike).
_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)$")


def temporary_name(path) -> Path:
    """The hidden sibling a file is written to before it is renamed into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(directory) -> list:
    """Delete `.NAME.tmp-PID` files and folders in `directory` whose process is gone (a killed run's
    leftovers); return what was removed. A live process's temporaries (another job) are left alone."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        match = _TEMPORARY.match(entry.name)
        if not match or int(match.group(1)) == os.getpid() or _process_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextmanager
def atomic_path(path):
    """Yield a temporary sibling path; it replaces `path` only if the block finishes without error. A
    failure to write (disk full, read-only folder) is a PlmscaleError naming `path`."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        translated = write_error(path, error, tmp=tmp)
        if translated is error:
            raise
        raise translated from error
    finally:
        if tmp.exists() or tmp.is_symlink():
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
def write_gzip_bytes(path):
    """A binary handle whose content lands in `path` as reproducible gzip."""
    with atomic_path(path) as tmp, open_write(tmp) as handle:
        yield handle


@contextmanager
def write_text(path):
    """A plain text handle written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        yield handle


@contextmanager
def write_binary(path):
    """A plain binary handle written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle


def write_json(path, obj, sort_keys=True) -> None:
    """obj as indented JSON, atomically, ending in a newline."""
    with write_text(path) as handle:
        json.dump(obj, handle, indent=2, sort_keys=sort_keys)
        handle.write("\n")


class DeferredFile:
    """A binary file written under its temporary name and published later by commit(), or dropped by
    discard(): for outputs that must appear together (a shard directory), where one `with` block per file
    does not fit."""

    def __init__(self, path):
        self.final = Path(path)
        self.tmp = temporary_name(self.final)
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.tmp, "wb")
        except OSError as error:
            raise write_error(self.final, error, tmp=self.tmp) from error

    def write(self, data):
        try:
            self.handle.write(data)
        except OSError as error:
            raise write_error(self.final, error, tmp=self.tmp) from error

    def close(self):
        if not self.handle.closed:
            try:
                self.handle.close()  # flushes: where a full disk shows
            except OSError as error:
                raise write_error(self.final, error, tmp=self.tmp) from error

    def commit(self):
        self.close()
        try:
            os.replace(self.tmp, self.final)
        except OSError as error:
            raise write_error(self.final, error, tmp=self.tmp) from error

    def discard(self):
        try:
            self.close()
        except PlmscaleError:  # the write already failed; what matters now is removing the temporary
            pass
        self.tmp.unlink(missing_ok=True)


def scratch_dir(near) -> Path:
    """A hidden temporary folder next to `near` for a step's scratch files (same disk as the outputs);
    cleared by remove_stale_temporaries if the process is killed."""
    near = Path(near)
    near.parent.mkdir(parents=True, exist_ok=True)
    path = near.parent / f".{near.name}.scratch.tmp-{os.getpid()}"
    path.mkdir(exist_ok=True)
    return path
