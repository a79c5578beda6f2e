"""Writing the scaling stage's JSON results (fit.json through fitfile.write_fit, predictions.json): the
lowest layer of the stage, importing none of it."""

import json
import math

import numpy as np

from plmscale.data.atomic import write_text
from plmscale.provenance import provenance


def json_ready(value):
    """NaN/inf -> null and numpy scalars -> Python numbers, so the file is strict JSON any tool reads."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_ready(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(obj) -> str:
    """Strict JSON (see json_ready), indented as every file of the stage."""
    return json.dumps(json_ready(obj), indent=1, allow_nan=False)


def write_json(obj: dict, path, with_provenance=False) -> None:
    """obj as strict JSON, written atomically (a crash leaves no half-written result)."""
    obj = dict(obj)
    if with_provenance:
        obj["provenance"] = provenance()
    with write_text(path) as handle:
        handle.write(json_text(obj) + "\n")

