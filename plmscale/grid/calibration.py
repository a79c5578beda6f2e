"""LR calibration: a short sweep of the peak lr at a few anchor sizes, and the recipe constant it implies.

Each anchor size trains `tokens_per_param`·N tokens at the small-scale law's lr (train.small_scale, the law
being refitted) times each of `lr_factors` (train.lr_calibration); batch and schedule are the study's. Per size, the best lr is the vertex of a parabola in log lr through the lowest
loss and its two neighbours (the lowest point itself when it sits at the sweep's edge: the sweep then did
not bracket the optimum). The small-scale recipe's law lr = lr_ref·(N/n_ref)^lr_exponent is refitted with
its exponent fixed: log lr_ref is the mean of log best_lr − lr_exponent·log(N/n_ref) over the bracketed
sizes. With two or more bracketed sizes the free exponent is reported too, as a check of the fixed one.
"""

import json
import math

import numpy as np

from plmscale.data.atomic import write_text
from plmscale.errors import PlmscaleError
from plmscale import recipe as recipes
from plmscale.grid import shapes
from plmscale.grid.expand import GridBuilder, format_number
from plmscale.grid.spec import RunSpec
from plmscale.run_metrics import read_metrics

RUN_PREFIX = "lrcal_"


def anchor_models(train: dict, where: str = "config") -> list[str]:
    """The ladder names swept: train.lr_calibration.models, or the smallest, a middle and the largest."""
    chosen = train["lr_calibration"]["models"]
    by_size = sorted(train["ladder"], key=lambda name: shapes.n_params(train["ladder"][name]))
    if chosen is None:
        return sorted({by_size[0], by_size[len(by_size) // 2], by_size[-1]}, key=by_size.index) if by_size else []
    unknown = sorted(set(chosen) - set(by_size))
    if unknown:
        raise PlmscaleError(f"{where}: train.lr_calibration.models {unknown} are not in train.ladder {by_size}")
    return sorted(set(chosen), key=by_size.index)


def calibration_specs(config: dict, source: str | None = None) -> list[RunSpec]:
    """The sweep's runs (none unless train.lr_calibration.enabled): one per anchor size and lr factor."""
    train = config["train"]
    settings = train["lr_calibration"]
    if not settings["enabled"]:
        return []
    builder = GridBuilder(config, source)
    law = recipes.make_recipe("small-scale", train["small_scale"], builder.where)
    specs = []
    for model in anchor_models(train, builder.where):
        n = shapes.n_params(builder.shapes[model])
        tokens = max(round(settings["tokens_per_param"] * n), 1)
        for factor in settings["lr_factors"]:
            run_id = f"{RUN_PREFIX}{model}_x{format_number(factor)}"
            specs.append(builder.make(run_id, settings["objective"], model, tokens,
                                      lr=law.peak_lr(n) * factor))
    return specs


def best_lr(lrs, losses) -> tuple[float, bool]:
    """(best lr, bracketed): the parabola vertex in log lr around the lowest loss, when it is interior."""
    order = np.argsort(lrs)
    log_lr, loss = np.log(np.asarray(lrs, dtype=float)[order]), np.asarray(losses, dtype=float)[order]
    i = int(np.nanargmin(loss))
    if i == 0 or i == len(loss) - 1:
        return float(np.exp(log_lr[i])), False
    a, b, _ = np.polyfit(log_lr[i - 1:i + 2], loss[i - 1:i + 2], 2)
    vertex = -b / (2 * a) if a > 0 else log_lr[i]
    return float(np.exp(np.clip(vertex, log_lr[i - 1], log_lr[i + 1]))), True


def fit_lr_constant(anchors: list[dict], n_ref: float, exponent: float) -> dict:
    """anchors: [{model, n_params, lrs, losses}] -> per-size optima and the refitted lr_ref (None if no
    size bracketed its optimum)."""
    rows = []
    for anchor in anchors:
        lr, bracketed = best_lr(anchor["lrs"], anchor["losses"])
        rows.append({**anchor, "best_lr": lr, "bracketed": bracketed})
    good = [r for r in rows if r["bracketed"]]
    result = {"n_ref": n_ref, "lr_exponent": exponent, "anchors": rows, "lr_ref": None, "fitted_exponent": None,
              "identified": bool(good)}
    if good:
        logs = [math.log(r["best_lr"]) - exponent * math.log(r["n_params"] / n_ref) for r in good]
        result["lr_ref"] = float(math.exp(sum(logs) / len(logs)))
    if len({r["n_params"] for r in good}) >= 2:
        slope, _ = np.polyfit(np.log([r["n_params"] for r in good]), np.log([r["best_lr"] for r in good]), 1)
        result["fitted_exponent"] = float(slope)
    edges = [r["model"] for r in rows if not r["bracketed"]]
    result["advice"] = (
        (f"set train.small_scale.lr_ref: {result['lr_ref']:.3g} (recipe small-scale)" if good else
         "no size bracketed its optimum: widen train.lr_calibration.lr_factors")
        + (f"; optimum at the sweep's edge for {edges}" if edges else ""))
    return result


def collect_anchors(metrics_paths) -> list[dict]:
    """The sweep's metrics.json files grouped by size: [{model, n_params, lrs, losses}]."""
    by_model = {}
    for path in metrics_paths:
        metrics = read_metrics(path)
        entry = by_model.setdefault(metrics.model, {"model": metrics.model, "n_params": metrics.n_params,
                                                    "lrs": [], "losses": []})
        entry["lrs"].append(float(metrics.peak_lr))
        entry["losses"].append(float(metrics.final_valid_loss))
    return sorted(by_model.values(), key=lambda a: a["n_params"])


def write_calibration(metrics_paths, train: dict, json_path) -> dict:
    """rule calibrate_lr: the sweep's metrics -> lr.json (optima, refitted lr_ref, advice); returns it for
    the figure (plmscale.plots.calibration)."""
    small = train["small_scale"]
    result = fit_lr_constant(collect_anchors(metrics_paths), small["n_ref"], small["lr_exponent"])
    result["recipe_lr_ref"] = small["lr_ref"]
    with write_text(json_path) as handle:
        json.dump(result, handle, indent=2)
    return result
