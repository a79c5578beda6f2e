"""metrics.json, what every training run writes and collect, the fits, the plots and export read: one typed
record (RunMetrics), versioned, with one writer and one validating reader.

The readable definition for users is schemas/metrics.schema.json; the reader checks a file against it (required
keys, types, no unknown keys), and tests/test_train_loop.py holds the dataclass and the schema to each other.
A file from before the version key existed has the same content as version 1 and is read as such.
"""

import dataclasses
import json
from pathlib import Path

from plmscale.config import read_json_object
from plmscale.data.atomic import write_text
from plmscale.errors import PlmscaleError

METRICS_VERSION = 1
VERSION_KEY = "metrics_version"
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "metrics.schema.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunMetrics:
    """One finished run, fields in the order metrics.json lists them. Those without a default are what every
    reader needs (a record written by hand, e.g. in a test, may hold only them); a plmscale run writes all."""

    run_id: str
    objective: str  # "clm", "mlm" or "mixed"
    model: str  # the ladder label
    shape: dict | None = None
    n_params: int  # non-embedding parameters (N of the scaling laws)
    n_params_with_embeddings: int | None = None
    tokens: int  # tokens processed (D)
    target_tokens: int | None = None
    flops: float  # under the study's budget definition (flops_definition)
    flops_definition: str | None = None
    flops_6nd: float | None = None
    flops_with_attention: float | None = None
    flops_chinchilla: float | None = None  # Hoffmann et al.'s count (plmscale.arithmetic)
    budget: float | None  # the IsoFLOP budget this run belongs to; None for explicit and transfer runs
    final_valid_loss: float | None  # a mixed run: the mix-weighted mean of valid_loss_by_objective
    best_valid_loss: float | None = None
    train_loss: float | None = None
    steps: int | None = None
    batch_sequences: int | None = None
    seq_len: int | None = None
    peak_lr: float | None = None
    wall_seconds: float | None = None
    tokens_per_second: float | None = None
    achieved_flops_per_second: float | None = None
    peak_flops_per_second: float | None = None
    mfu: float | None = None
    device: str | None = None
    world_size: int | None = None
    strategy: str | None = None
    precision: str | None = None
    packing: bool | None = None
    config_hash: str | None = None
    versions: dict | None = None
    init_from: str | None  # the source run of a transfer run
    seed: int | None = None
    cropped_sequences: int | None = None
    recipe: str | None = None
    recipe_sha256: str | None = None
    schedule: str | None = None
    # Written only when they apply (absent, not null, otherwise):
    valid_loss_by_identity: dict | None = None  # the valid split by identity to train (train/identity_eval)
    valid_tokens_by_identity: dict | None = None
    valid_sequences_by_identity: dict | None = None
    identity_table: str | None = None
    subset: dict | None = None  # the repetition study's restricted data, and its epochs D / U
    unique_tokens: int | None = None
    epochs: float | None = None
    wsd: dict | None = None  # a WSD trunk or branch
    mixed: dict | None = None  # a mixed run: mlm_fraction, mlm_steps, clm_steps
    valid_loss_by_objective: dict | None = None  # a mixed run: {"clm": loss, "mlm": loss}

    def to_dict(self) -> dict:
        """The JSON object: the version first, then the fields in order; an optional field that is not set
        (None: a conditional one that does not apply, or one a hand-written record leaves out) is left out."""
        return {VERSION_KEY: METRICS_VERSION, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                                                  if f.name in REQUIRED or getattr(self, f.name) is not None}}

    @classmethod
    def from_dict(cls, data: dict, where: str = "metrics") -> "RunMetrics":
        check_against_schema(data, where)
        return cls(**{key: value for key, value in data.items() if key != VERSION_KEY})


REQUIRED = tuple(f.name for f in dataclasses.fields(RunMetrics) if f.default is dataclasses.MISSING)

# JSON schema "type" -> the Python values that are of that type (bool is not a number in JSON).
_JSON_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def load_schema() -> dict:
    with open(SCHEMA_PATH) as handle:
        return json.load(handle)


def check_against_schema(data: dict, where: str) -> None:
    """The schema's top-level rules (required keys, each key's type and enum, no unknown keys, the version),
    checked without the jsonschema package (a bare GPU machine reads metrics too)."""
    schema = load_schema()
    version = data.get(VERSION_KEY, METRICS_VERSION)  # no key: written before versioning, the same as v1
    if version != METRICS_VERSION:
        raise PlmscaleError(f"{where}: {VERSION_KEY} {version!r} is not the version this plmscale reads "
                            f"({METRICS_VERSION}); rerun the training job with this plmscale")
    missing = [key for key in schema["required"] if key not in data]
    if missing:
        raise PlmscaleError(f"{where}: metrics lack key(s) {', '.join(missing)}; not the metrics.json of a "
                            f"finished run — rerun the training job with the current plmscale")
    properties = schema["properties"]
    unknown = sorted(set(data) - set(properties))
    if unknown:
        raise PlmscaleError(f"{where}: unknown metrics key(s) {', '.join(unknown)} (see schemas/metrics.schema.json)"
                            f"; rerun the training job with the current plmscale")
    for key, value in data.items():
        rule = properties[key]
        types = rule["type"] if isinstance(rule["type"], list) else [rule["type"]]
        if not any(_JSON_TYPES[t](value) for t in types):
            raise PlmscaleError(f"{where}: {key} is {value!r}, not {' or '.join(types)} "
                                f"(schemas/metrics.schema.json); rerun the training job")
        if "enum" in rule and value not in rule["enum"]:
            raise PlmscaleError(f"{where}: {key} is {value!r}, not one of {rule['enum']}")


def read_metrics(path) -> RunMetrics:
    """A run's metrics.json, checked; a missing, malformed or invalid file is an error that names the file
    and the key."""
    data = read_json_object(path, "metrics file", hint="; did the training job finish? rerun it")
    return RunMetrics.from_dict(data, where=str(path))


def write_metrics(path, metrics: RunMetrics) -> None:
    """metrics.json, atomically (a killed job leaves no half file); a failed write names the file."""
    with write_text(path) as handle:
        json.dump(metrics.to_dict(), handle, indent=2)
