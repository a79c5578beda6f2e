"""Check a shard directory before a run trains on it: every file's sha256 against the manifest, and every
token byte a residue of the vocabulary.

Hashing a large shard set costs minutes, and every run of a grid reads the same shards, so the result is
remembered in a stamp file beside the manifest (`.verified.json`): per file, its size, mtime_ns and the
sha256 that was checked. A file whose size and mtime_ns match its stamp entry (and whose manifest sha256 is
the one stamped) is taken as checked; any other is hashed again. The hole: a change that keeps a file's size
and mtime (a bit flipped in place with the timestamp restored) is not seen by this check; only
`plmscale inspect-shards --verify`, which hashes everything every time, sees it.

The vocabulary check runs whenever a .bin file is (re)hashed: a vectorised look-up over the memory map, in
chunks, naming the shard and the byte offset of the first token that is not a residue. Without it, a bad
byte would surface as an IndexError inside the embedding, many steps in.
"""

import json
import logging
import os

import numpy as np

from plmscale.alphabet import RESIDUE_IDS, TOKENS
from plmscale.errors import PlmscaleError

log = logging.getLogger(__name__)

STAMP = ".verified.json"
_CHUNK = 1 << 26  # bytes per look-up: bounded memory whatever the shard's size
_IS_RESIDUE = np.zeros(256, dtype=bool)
_IS_RESIDUE[RESIDUE_IDS] = True


def manifest_files(manifest: dict) -> list:
    """(file name, sha256 the manifest gives) for every file of a shard directory."""
    files = [(s["bin"], s["sha256_bin"]) for s in manifest["shards"]]
    files += [(s["idx"], s["sha256_idx"]) for s in manifest["shards"]]
    files += [(a["file"], a["sha256"]) for a in manifest["arrays"].values()]
    return files


def first_non_residue(path) -> tuple | None:
    """(byte offset, value) of the first byte of a .bin file that is not a residue token id, or None."""
    if os.path.getsize(path) == 0:
        return None
    tokens = np.memmap(path, dtype=np.uint8, mode="r")
    for start in range(0, len(tokens), _CHUNK):
        bad = ~_IS_RESIDUE[tokens[start:start + _CHUNK]]
        if bad.any():
            offset = start + int(bad.argmax())
            return offset, int(tokens[offset])
    return None


def _read_stamp(path) -> dict:
    try:
        with open(path) as handle:
            stamp = json.load(handle)
        return stamp if isinstance(stamp, dict) else {}
    except (OSError, ValueError):  # none yet, or unreadable: everything is checked again
        return {}


def _rerun_hint(directory) -> str:
    return (f"the shards in {directory} changed after they were written; delete {directory} and run "
            "snakemake again to tokenize the split anew")


def verify_shard_files(directory, manifest: dict) -> int:
    """Check every file of a shard directory that changed since its last check (module docstring); raise a
    PlmscaleError naming the file on a problem. Returns how many files were hashed (0: all stamped)."""
    from plmscale.data.atomic import write_json
    from plmscale.provenance import sha256_file

    directory = str(directory)
    stamp_path = os.path.join(directory, STAMP)
    stamped = _read_stamp(stamp_path)
    checked, hashed = {}, 0
    for name, expected in manifest_files(manifest):
        path = os.path.join(directory, name)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise PlmscaleError(f"{path} is missing: the manifest lists it; {_rerun_hint(directory)}") from None
        entry = {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": expected}
        if stamped.get(name) != entry:
            if name.endswith(".bin"):
                bad = first_non_residue(path)
                if bad is not None:
                    offset, value = bad
                    what = f"token id {value} ({TOKENS[value]!r})" if value < len(TOKENS) else \
                        f"byte {value}, outside the vocabulary of {len(TOKENS)} tokens"
                    raise PlmscaleError(f"{path}, byte offset {offset}: {what} is not a residue; "
                                        f"{_rerun_hint(directory)}")
            if sha256_file(path) != expected:
                raise PlmscaleError(f"{path}: sha256 differs from {os.path.join(directory, 'manifest.json')}; "
                                    f"{_rerun_hint(directory)}")
            hashed += 1
        checked[name] = entry
    if hashed:
        try:
            write_json(stamp_path, checked)
        except OSError as error:  # a read-only results folder: check again next time, train anyway
            log.warning("could not record the shard check in %s (%s); the next run checks again", stamp_path,
                        error)
        log.info("%s: %d shard files checked against the manifest", directory, hashed)
    return hashed
