"""Finding a finished run's weights and facts, and building its model: the common ground of export, score
and generate.

A run is named in one of three ways:
- a run id: RESULTS/checkpoints/{run}/final.pt and RESULTS/runs/{run}/metrics.json (as the workflow writes);
- a path to a final.pt (its metrics.json is looked for next to it, then in the workflow's runs/ folder);
- an export directory (config.json + model.safetensors, as `plmscale export` writes), for score and generate.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from plmscale import run_metrics
from plmscale.errors import PlmscaleError
from plmscale.export.llama import from_llama_names, shape_from_config

FINAL = "final.pt"
METRICS = "metrics.json"
CONFIG, WEIGHTS = "config.json", "model.safetensors"


@dataclass
class RunFiles:
    run_id: str
    checkpoint: Path
    metrics: Path


@dataclass
class LoadedRun:
    """A model ready for inference (eval mode, CPU) and what it was trained for."""
    run_id: str
    model: object  # plmscale.model.Transformer
    objective: str  # "clm" or "mlm"
    seq_len: int  # the trained context: <cls> + residues + <eos>
    metrics: dict = field(default_factory=dict)

    @property
    def max_residues(self) -> int:
        return self.seq_len - 2


def locate_run(run, results="results", metrics=None) -> RunFiles:
    """The final.pt and metrics.json of a run id or a final.pt path; a missing file is an error naming it.

    metrics: an explicit metrics.json (for a final.pt copied away from its results folder)."""
    path = Path(run)
    if path.suffix == ".pt" or path.is_file():
        checkpoint, run_id = path, path.parent.name
        # checkpoints/{run}/final.pt sits beside runs/{run}/metrics.json in a results folder.
        candidates = [path.parent / METRICS, path.parent.parent.parent / "runs" / run_id / METRICS]
        missing = f"{checkpoint} does not exist; give the final.pt of a finished run, or its run id"
        hint = f"; put the run's metrics.json next to {path.name} or pass --metrics"
    else:
        run_id = str(run)
        checkpoint = Path(results) / "checkpoints" / run_id / FINAL
        candidates = [Path(results) / "runs" / run_id / METRICS]
        missing = (f"{checkpoint} does not exist: {run_id!r} is not a finished run of the results folder "
                   f"{results} (train it first, or pass --results DIR, or the path of a final.pt)")
        hint = "; the run has not finished writing its outputs (train it again)"
    if not checkpoint.is_file():
        raise PlmscaleError(missing)
    if metrics is not None:
        candidates = [Path(metrics)]
        hint = ""
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise PlmscaleError(f"no metrics.json for {checkpoint} (looked for {', '.join(map(str, candidates))})"
                            f"{hint}")
    return RunFiles(run_id, checkpoint, found)


def read_metrics(path) -> dict:
    """The run's metrics.json (plmscale.run_metrics), with the model's shape and context it needs to load."""
    metrics = run_metrics.read_metrics(path)
    for key in ("shape", "seq_len"):
        if getattr(metrics, key) is None:
            raise PlmscaleError(f"{path} has no {key!r}: not the metrics.json of a finished plmscale run")
    return metrics.to_dict()


def load_checkpoint_run(files: RunFiles) -> LoadedRun:
    from plmscale.model import build_model
    from plmscale.train import checkpoint as ckpt

    metrics = read_metrics(files.metrics)
    state = ckpt.load(files.checkpoint)
    if not isinstance(state, dict) or "model" not in state:
        raise PlmscaleError(f"{files.checkpoint} holds no model weights: not a plmscale final.pt")
    shape = state.get("shape") or metrics["shape"]
    model = build_model(shape, max_len=int(metrics["seq_len"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise PlmscaleError(f"{files.checkpoint} does not fit the shape {shape} it names ({error})") from None
    model.eval()
    return LoadedRun(state.get("run_id") or metrics.get("run_id") or files.run_id, model, metrics["objective"],
                     int(metrics["seq_len"]), metrics)


def is_export_dir(path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def load_run(run, results="results", metrics=None) -> LoadedRun:
    """A LoadedRun from a run id, a final.pt path or an export directory."""
    if is_export_dir(run):
        return load_exported_run(run)
    if Path(run).is_dir():
        raise PlmscaleError(f"{run} is a directory but not an export ({CONFIG} and {WEIGHTS} are not both in it); "
                            f"give an export directory, a run id or a final.pt")
    return load_checkpoint_run(locate_run(run, results, metrics))


def load_exported_run(directory) -> LoadedRun:
    import torch

    from plmscale.export.safetensors_io import read_safetensors
    from plmscale.model import build_model

    directory = Path(directory)
    config = read_config(directory)
    info = config.get("plmscale")
    if not isinstance(info, dict) or info.get("objective") not in ("clm", "mlm"):
        raise PlmscaleError(f"{directory / CONFIG} has no plmscale block with the objective; is this a "
                            f"directory written by `plmscale export`?")
    shape = shape_from_config(config, where=str(directory / CONFIG))
    tensors, _ = read_safetensors(directory / WEIGHTS)
    state = from_llama_names(tensors, shape, where=str(directory / WEIGHTS))
    seq_len = int(info.get("seq_len") or config.get("max_position_embeddings") or 1024)
    model = build_model(shape, max_len=seq_len)
    try:
        model.load_state_dict({name: tensor.to(torch.float32) for name, tensor in state.items()})
    except RuntimeError as error:
        raise PlmscaleError(f"{directory / WEIGHTS} does not match the shape in config.json ({error}); export "
                            f"the run again") from None
    model.eval()
    return LoadedRun(str(info.get("run_id") or directory.name), model, info["objective"], seq_len, dict(info))


def read_config(directory) -> dict:
    path = Path(directory) / CONFIG
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise PlmscaleError(f"{path} does not exist; is {directory} a directory written by `plmscale export`?") \
            from None
    except json.JSONDecodeError as error:
        raise PlmscaleError(f"{path}:{error.lineno}: not valid JSON ({error.msg}); export the run again") from None
