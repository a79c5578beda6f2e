"""Gzip in and out, fast where ISA-L is installed, and byte-identical across reruns.

Reading detects gzip by its magic bytes (a `.gz` name holding plain text, or the reverse, both work)
and decompresses in a background thread so parsing and inflating overlap on two cores. Writing
produces a gzip header with mtime 0 and no file name, so the same content gives the same bytes.
"""

import gzip
import io
import zlib

try:  # ISA-L inflates ~4x faster than zlib; optional so a bare Python still works
    from isal import igzip, igzip_threaded, isal_zlib
except ImportError:  # pragma: no cover - exercised only without isal
    igzip = igzip_threaded = isal_zlib = None

from plmscale.errors import PlmscaleError

GZIP_MAGIC = b"\x1f\x8b"
# Level 1 of ISA-L is several times faster than zlib's default for ~10% larger files: right for
# intermediate files that are read once by the next stage.
FAST_LEVEL = 1

_TRUNCATION_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error) + (
    (igzip.BadGzipFile, isal_zlib.error) if igzip is not None else ())


def is_gzip(path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def open_read(path, block_size=4 << 20):
    """A binary stream of the decompressed (or plain) content of path."""
    raw = open(path, "rb")
    if raw.read(2) != GZIP_MAGIC:
        raw.seek(0)
        return raw
    raw.seek(0)
    if igzip_threaded is not None:
        return igzip_threaded.open(raw, "rb", threads=1, block_size=block_size)
    return gzip.GzipFile(fileobj=raw, mode="rb")


def read_block(stream, size, path) -> bytes:
    """stream.read(size), turning a damaged or cut-off gzip into an error the user can act on."""
    try:
        return stream.read(size)
    except _TRUNCATION_ERRORS as error:
        raise PlmscaleError(
            f"{path}: the gzip data is truncated or corrupt ({error}); the download is probably "
            f"incomplete — delete the file and download it again") from None


def open_write(path, level=FAST_LEVEL):
    """A binary gzip writer whose bytes depend only on what is written (mtime 0, no file name)."""
    raw = open(path, "wb")
    if igzip_threaded is not None:
        # The threaded writer's header has mtime 0 and no name; compression overlaps with our work.
        return _ClosingBoth(igzip_threaded.open(raw, "wb", compresslevel=level, threads=1), raw)
    return _ClosingBoth(gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0), raw)


class _ClosingBoth(io.RawIOBase):
    """Closes the gzip layer, then the file under it (gzip wrappers leave a passed-in file open)."""

    def __init__(self, gz, raw):
        super().__init__()
        self._gz, self._raw = gz, raw

    def writable(self):
        return True

    def write(self, data):
        return self._gz.write(data)

    def close(self):
        if not self.closed:
            try:
                self._gz.close()
            finally:
                self._raw.close()
        super().close()
