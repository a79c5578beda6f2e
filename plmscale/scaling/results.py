"""Writing the scaling stage's JSON results: fit.json (with provenance) and predictions.json."""

import json
import math
from pathlib import Path

import numpy as np

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


def write_json(obj: dict, path, with_provenance=False) -> None:
    obj = dict(obj)
    if with_provenance:
        obj["provenance"] = provenance()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        json.dump(json_ready(obj), handle, indent=1, allow_nan=False)
        handle.write("\n")


def predict_budgets(fit: dict, flops_by_objective: dict, ladder: dict | None = None) -> dict:
    """{objective: [predict(fit, C, objective) for C in the config's budgets]} for the objectives fitted."""
    from plmscale.scaling.predict import ladder_sizes, predict  # the numerical side lives with the fits

    ladder = ladder_sizes(ladder) if ladder else None
    out = {}
    for objective, budgets in (flops_by_objective or {}).items():
        if objective not in (fit.get("objectives") or {}):
            continue
        out[objective] = [predict(fit, float(flops), objective, ladder=ladder or None) for flops in budgets]
    return out
