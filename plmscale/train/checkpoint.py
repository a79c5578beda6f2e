"""Checkpoints: everything a killed run needs to continue as if nothing happened, loadable safely.

Layout: results/checkpoints/{run_id}/last.pt (rolling, replaced atomically) and final.pt (the finished
model's weights, the input of a transfer run). Not declared Snakemake outputs: Snakemake deletes the outputs
of a failed job, and a checkpoint exists precisely for a failed job.

Every file holds only tensors, numbers, strings, lists and dicts, so it loads with
torch.load(weights_only=True): a checkpoint is never a way to run code. RNG states are stored as tensors
and lists for that reason.
"""

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

from plmscale.data.atomic import atomic_path
from plmscale.errors import PlmscaleError, naming_the_file

log = logging.getLogger(__name__)

LAST, FINAL = "last.pt", "final.pt"
# 2: rotary embeddings rotate by token position (43aa279). A version-1 checkpoint holds a model trained
# without position information: resuming it would mix two models in one curve, so it is ignored.
FORMAT_VERSION = 2


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(obj: dict, path) -> None:
    """torch.save through a temporary sibling and a rename: a kill mid-write leaves the old file intact, and a
    failed write (disk full, read-only folder) is an error that names the checkpoint."""
    path = Path(path)
    with naming_the_file(path, "checkpoint"), atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            try:
                torch.save(obj, handle)
            except RuntimeError as error:  # torch's stream writer reports a failed write as a RuntimeError
                raise OSError(str(error)) from error
            handle.flush()
            os.fsync(handle.fileno())


def load(path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which, and what to do
        raise PlmscaleError(f"{path}: cannot read checkpoint ({error}); {unreadable_remedy(path)}") from error


def unreadable_remedy(path) -> str:
    """What retrains the file: a rolling last.pt is simply deleted; a final.pt is not a declared output
    (Snakemake deletes failed outputs), so deleting it alone leaves metrics.json saying the run is done."""
    path = Path(path)
    if path.name == LAST:
        return "delete the file: the run then starts over when Snakemake runs it"
    if path.name == FINAL:
        runs = path.parent.parent.parent / "runs" / path.parent.name
        return (f"retrain the run: delete its directory {runs}/ (deleting only {path.name} leaves its "
                f"metrics.json, and Snakemake thinks the run is done), or run snakemake --forcerun "
                f"{runs / 'metrics.json'}")
    return "delete the file and run snakemake again: the job that writes it runs again"


def load_resumable(directory, config_hash: str) -> dict | None:
    """The last checkpoint of this exact run, or None (no checkpoint, or one left by other settings)."""
    path = Path(directory) / LAST
    if not path.exists():
        return None
    state = load(path)
    if state.get("format_version") != FORMAT_VERSION or state.get("config_hash") != config_hash:
        # The run's settings changed since (that is why Snakemake reruns it): start over, don't mix.
        log.warning("%s was written with other settings; ignoring it and training from scratch", path)
        return None
    return state
