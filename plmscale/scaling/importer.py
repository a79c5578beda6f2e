"""Import training curves exported from TensorBoard (`Wall time,Step,Value`) into the scaling tables.

Nothing here knows one group's folder layout: an *import config* (a YAML such as
configs/paper-logs-import.yaml) says which files are which objective, where the model size comes from,
the unit of the FLOPs column, which runs are IsoFLOP runs and which are transfer runs. The result is the
same pair of tables `collect` makes from our own runs:

- runs   (one row per run): the columns of plmscale.scaling.table (source="imported"; `role` and `pair`
         as defined there), plus kind ("transfer" | "scratch" | "" for the main runs), design (isoflop |
         off_grid | incomplete | long | transfer | scratch), label, name, file, source_flops, transfer_budget.
- curves (long format): run_id, objective, n_params, flops, tokens, loss, role, kind, design.

A run's final loss is the last point of its curve by default (the end of its learning-rate schedule,
which is what a compute-optimal law is about); `final_loss: min` takes the best point instead.
"""

import csv
import glob
import hashlib
import io
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from plmscale.arithmetic import FLOPS_PER_PARAM_TOKEN
from plmscale.config import read_yaml
from plmscale.errors import PlmscaleError
from plmscale.scaling.table import with_roles

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- config

def load_import_config(path) -> dict:
    """Read an import config YAML; errors name the file."""
    config = read_yaml(path, "import config", hint=" (see configs/paper-logs-import.yaml)")
    if not isinstance(config, dict) or not config.get("groups"):
        raise PlmscaleError(f"import config {path}: needs a non-empty 'groups' list of {{glob, objective}}")
    config.setdefault("_source", str(path))
    return config


def _number(value, what, config) -> float:
    # PyYAML reads `1e18` (no dot) as a string; accept both spellings.
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PlmscaleError(f"import config {config.get('_source', '')}: {what} must be a number, got {value!r}") from None


@dataclass
class _Format:
    header: list
    flops_column: str
    loss_column: str
    flops_unit: float
    flops_per_param_token: float
    tag: str | None = None  # the scalar read from TensorBoard event files (a CSV export holds one already)

    @classmethod
    def from_config(cls, config):
        fmt = config.get("format", {}) or {}
        return cls(
            header=list(fmt.get("header", ["Wall time", "Step", "Value"])),
            flops_column=fmt.get("flops_column", "Step"),
            loss_column=fmt.get("loss_column", "Value"),
            flops_unit=_number(fmt.get("flops_unit", 1.0), "format.flops_unit", config),
            flops_per_param_token=_number(fmt.get("flops_per_param_token", FLOPS_PER_PARAM_TOKEN), "format.flops_per_param_token", config),
            tag=fmt.get("tag"),
        )


# ------------------------------------------------------------------------------------------ reading one file

def _text(path: Path, header) -> str:
    """A scalar export's text; a binary file (NUL bytes, or bytes that are not UTF-8) is an error naming it."""
    try:
        text = path.read_bytes().decode("utf-8")
        if "\x00" not in text:
            return text
    except UnicodeDecodeError:
        pass
    raise PlmscaleError(f"{path}: not a text file (it holds NUL bytes or bytes that are not UTF-8 text); expected "
                        f"a TensorBoard scalar export, a CSV with a header line {header}. Is it a binary or "
                        "compressed file named .csv? Export it again or exclude it in the import config")


def read_scalar_csv(path, x_column: str, y_column: str, expected_header=None):
    """Read a TensorBoard scalar export: (x, y) float arrays sorted by x. Bad input raises with file:line."""
    path = Path(path)
    xs, ys = [], []
    with io.StringIO(_text(path, expected_header or [x_column, y_column]), newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise PlmscaleError(f"{path}: empty file; expected a header line "
                                f"{expected_header or [x_column, y_column]}") from None
        header = [h.strip() for h in header]
        if expected_header and header != list(expected_header):
            raise PlmscaleError(f"{path}:1: header {header} is not the expected {list(expected_header)} "
                                "(set format.header in the import config if your exports differ)")
        try:
            ix, iy = header.index(x_column), header.index(y_column)
        except ValueError:
            raise PlmscaleError(f"{path}:1: header {header} lacks column {x_column!r} or {y_column!r}") from None
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise PlmscaleError(f"{path}:{line}: {len(fields)} fields, expected {len(header)} like the header")
            try:
                x, y = float(fields[ix]), float(fields[iy])
            except ValueError:
                raise PlmscaleError(f"{path}:{line}: {x_column}={fields[ix]!r} / {y_column}={fields[iy]!r} "
                                    "is not a number") from None
            if not (math.isfinite(x) and math.isfinite(y)):
                raise PlmscaleError(f"{path}:{line}: non-finite value ({x_column}={x}, {y_column}={y}); "
                                    "remove the diverged points or the file")
            if x < 0 or y <= 0:
                raise PlmscaleError(f"{path}:{line}: {x_column} must be >= 0 and {y_column} > 0, got {x}, {y}")
            xs.append(x)
            ys.append(y)
    if not xs:
        raise PlmscaleError(f"{path}: no data rows after the header")
    x, y = np.asarray(xs), np.asarray(ys)
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def is_event_file(path: Path) -> bool:
    return ".tfevents." in Path(path).name


def read_scalar_events(path, tag: str | None, source: str = "import config"):
    """One scalar of the TensorBoard run that an event file belongs to (all event files of its folder) as
    (step, value) float arrays sorted by step, checked as a CSV export is (what TensorBoard's own CSV export
    of that tag holds). Needs the tensorboard package."""
    path = Path(path)
    if not tag:
        raise PlmscaleError(f"{path}: a TensorBoard event file; set format.tag in the {source} to the scalar to "
                            "read (plmscale's runs: loss/valid_vs_megaflops)")
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        raise PlmscaleError(f"{path}: reading TensorBoard event files needs the tensorboard package (pip install "
                            "tensorboard, or plmscale's `watch` extra); or export the scalar as CSV") from None
    # The run's whole folder: a resumed run adds a file, and TensorBoard's loader drops the points a killed
    # attempt wrote past the checkpoint it resumed from, as TensorBoard shows them.
    events = EventAccumulator(str(path.parent), size_guidance={"scalars": 0})
    try:
        events.Reload()
    except Exception as error:  # a truncated or foreign file: the reader's own error, with the file
        raise PlmscaleError(f"{path}: not a readable TensorBoard event file ({error})") from None
    tags = events.Tags().get("scalars", [])
    if tag not in tags:
        raise PlmscaleError(f"{path}: no scalar {tag!r} (it has {sorted(tags)}); set format.tag in the {source}")
    points = events.Scalars(tag)
    x = np.array([p.step for p in points], float)
    y = np.array([p.value for p in points], float)
    bad = ~np.isfinite(y) | (y <= 0) | (x < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise PlmscaleError(f"{path}: tag {tag!r} step {x[i]:.0f} has value {y[i]}; a loss must be finite and > 0")
    if not len(x):
        raise PlmscaleError(f"{path}: scalar {tag!r} has no points")
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def read_scalars(path, fmt: "_Format", source: str = "import config"):
    """A curve from a CSV export or, by its name, a TensorBoard event file."""
    if is_event_file(path):
        return read_scalar_events(path, fmt.tag, source)
    return read_scalar_csv(path, fmt.flops_column, fmt.loss_column, fmt.header)


def _curve_key(values: np.ndarray) -> str:
    """Identity of a curve by its loss values (wall times differ between twin exports)."""
    return hashlib.sha256(np.round(values, 7).tobytes()).hexdigest()


def _run_name(path: Path, config) -> str:
    """From the file name (run_name_regex's `name` group, else its stem), or with run_name_from: folder the
    folder that holds the file (TensorBoard writes one folder per run, its files named by time and host)."""
    if config.get("run_name_from", "file") == "folder":
        return path.parent.name
    pattern = config.get("run_name_regex")
    if pattern:
        match = re.search(pattern, path.name)
        if match:
            return match.group("name")
    return path.stem


def _clean_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")


def _final_loss(loss: np.ndarray, how: str, config) -> float:
    if how == "last":
        return float(loss[-1])
    if how == "min":
        return float(loss.min())
    raise PlmscaleError(f"import config {config.get('_source', '')}: final_loss must be 'last' or 'min', got {how!r}")


def _size_lookup(label, config, aliases=None):
    size_map = {str(k): int(v) for k, v in (config.get("size_map") or {}).items()}
    label = str(label)
    label = (aliases or {}).get(label, label)
    if label in size_map:
        return label, size_map[label]
    for key, value in size_map.items():  # 1b -> 1B, 2.4b -> 2.4B
        if key.lower() == label.lower():
            return key, value
    return label, None


def _snap_to_size_map(n: float, config, tolerance: float):
    best = None
    for label, value in (config.get("size_map") or {}).items():
        distance = abs(int(value) - n) / int(value)
        if distance <= tolerance and (best is None or distance < best[2]):
            best = (str(label), int(value), distance)
    return (best[0], best[1]) if best else (None, int(round(n)))


# -------------------------------------------------------------------------------------------- the import

@dataclass
class _Curve:
    file: str
    name: str
    objective: str
    label: str
    n_params: int
    flops: np.ndarray
    loss: np.ndarray
    kind: str
    budget: float | None = None
    extra: dict = field(default_factory=dict)


def _budget_from_name(name, config):
    pattern = config.get("budget_regex")
    if not pattern:
        return None
    match = re.search(pattern, name)
    return float(match.group("budget")) if match else None


def _excluded(path: Path, name: str, config) -> str | None:
    for pattern in config.get("exclude_file_regex") or []:
        if re.search(pattern, path.name):
            return f"file name matches exclude_file_regex {pattern!r}"
    for pattern in config.get("exclude_name_regex") or []:
        if re.search(pattern, name):
            return f"run name matches exclude_name_regex {pattern!r}"
    return None


def _glob(root: Path, pattern: str):
    return sorted(Path(p) for p in glob.glob(str(root / pattern)))


def _main_curves(root: Path, config, fmt: _Format, report: dict):
    allowed = config.get("isoflop_budgets")
    allowed = None if allowed is None else [_number(b, "isoflop_budgets", config) for b in allowed]
    on_unknown = config.get("unknown_size", "skip")
    min_fraction = _number(config.get("min_budget_fraction", 0.0), "min_budget_fraction", config)
    seen = {}
    curves = []
    for group in config["groups"]:
        objective = group.get("objective")
        if objective not in ("clm", "mlm"):
            raise PlmscaleError(f"import config {config.get('_source', '')}: group {group.get('glob')!r} needs "
                                f"objective clm or mlm, got {objective!r}")
        files = _glob(root, group["glob"])
        if not files:
            log.warning("group %s matched no files under %s", group["glob"], root)
        event_folders = set()
        for path in files:
            if is_event_file(path):  # one curve per run folder, however many event files it holds
                if path.parent in event_folders:
                    continue
                event_folders.add(path.parent)
            rel = str(path.relative_to(root))
            name = _run_name(path, config)
            why = _excluded(path, name, config)
            if why:
                report["excluded"].append((rel, why))
                continue
            label = _size_label(path, name, group, config)
            label, n_params = _size_lookup(label, config) if label else (label, None)
            if n_params is None:
                message = (f"{path}: size label {label!r} (from the {group.get('size_from', 'folder')}) is not in "
                           "size_map of the import config")
                if on_unknown == "error":
                    raise PlmscaleError(message + "; add it, or set unknown_size: skip")
                report["unknown_size"].append((rel, label))
                continue
            flops, loss = read_scalars(path, fmt, f"import config {config.get('_source', '')}")
            flops = flops * fmt.flops_unit
            key = _curve_key(loss)
            if config.get("drop_identical_curves", True) and key in seen:
                report["duplicates"].append((rel, seen[key]))
                continue
            seen[key] = rel
            budget = _budget_from_name(name, config)
            if budget is None:
                kind = "long"
            elif allowed is not None and not any(math.isclose(budget, b, rel_tol=1e-6) for b in allowed):
                kind, budget = "off_grid", None
            elif flops[-1] < min_fraction * budget:
                # Stopped before its schedule ended: its last loss overstates what the budget buys.
                kind, planned, budget = "incomplete", budget, None
                report["incomplete"].append((rel, float(flops[-1] / planned)))
            else:
                kind = "isoflop"
            curves.append(_Curve(rel, name, objective, label, n_params, flops, loss, kind, budget))
    return curves, seen


def _size_label(path: Path, name: str, group: dict, config) -> str | None:
    size_from = group.get("size_from", "folder")
    pattern = group.get("size_regex", r"(?P<label>[0-9.]+[MB])")
    if size_from == "folder":
        text = path.parent.name
    elif size_from == "name":
        text = name
    else:
        raise PlmscaleError(f"import config {config.get('_source', '')}: size_from must be folder or name, "
                            f"got {size_from!r}")
    match = re.search(pattern, text)
    return match.group("label") if match else None


def _tokens_index(root: Path, transfer: dict, fmt: _Format) -> dict:
    """Loss curve identity -> (tokens, loss) of the loss-vs-tokens companion exports."""
    index = {}
    for pattern in transfer.get("tokens_globs") or []:
        for path in _glob(root, pattern):
            tokens, loss = read_scalar_csv(path, fmt.flops_column, fmt.loss_column, fmt.header)
            index.setdefault(_curve_key(loss), tokens)
    return index


def _transfer_curves(root: Path, config, fmt: _Format, main_keys: dict, report: dict):
    transfer = config.get("transfer") or {}
    if not transfer.get("groups"):
        return []
    tokens_index = _tokens_index(root, transfer, fmt)
    aliases = {str(k): str(v) for k, v in (transfer.get("label_aliases") or {}).items()}
    tolerance = float(transfer.get("snap_tolerance", 0.03))
    metrics = transfer.get("metric_regex") or {}
    # Training loss is not comparable with validation loss: by default only validation curves come in.
    keep_metrics = list(transfer.get("metrics") or ["valid"])
    curves = []
    for group in transfer["groups"]:
        for path in _glob(root, group["glob"]):
            rel = str(path.relative_to(root))
            name = _run_name(path, config)
            match = re.search(group["name_regex"], name)
            if not match:
                report["unmatched_transfer"].append(rel)
                continue
            fields = match.groupdict()
            flops, loss = read_scalar_csv(path, fmt.flops_column, fmt.loss_column, fmt.header)
            flops = flops * fmt.flops_unit
            key = _curve_key(loss)
            tokens = tokens_index.get(key)
            if tokens is not None and len(tokens) == len(flops):
                # The same run exported against tokens: N follows from C = 6·N·D, no label needed.
                n_estimate = float(np.median(flops[1:] / (fmt.flops_per_param_token * tokens[1:])))
                label, n_params = _snap_to_size_map(n_estimate, config, tolerance)
                label = label or fields.get("label")
                size_source = "tokens"
            else:
                label, n_params = _size_lookup(fields.get("label"), config, aliases)
                size_source = "label"
            if n_params is None:
                report["unknown_size"].append((rel, label))
                continue
            metric = next((m for m, pattern in metrics.items() if re.search(pattern, path.name)), "valid")
            if metric not in keep_metrics:
                report["excluded"].append((rel, f"logs {metric} loss (transfer.metrics keeps {keep_metrics})"))
                continue
            extra = {
                "metric": metric,
                "size_source": size_source,
                "transfer_budget": float(fields["budget"]) if fields.get("budget") else None,
                "source_flops": float(fields["source_flops"]) if fields.get("source_flops") else None,
                "source_objective": group.get("source_objective"),
                "same_as": main_keys.get(key),
            }
            curves.append(_Curve(rel, name, group["objective"], label, n_params, flops, loss, group["kind"],
                                 None, extra))
    return curves


def _pair_transfer(curves, main_curves, report):
    """Give every transfer run its from-scratch partner: same objective, size, budget and loss metric.

    A partner from the transfer folders comes first; otherwise an IsoFLOP run of the same objective, size
    and budget (validation loss) from the main groups stands in.
    """
    scratch = [c for c in curves if c.kind == "scratch"]
    for run in (c for c in curves if c.kind == "transfer"):
        wanted = (run.objective, run.n_params, run.extra["transfer_budget"])
        partner = next((s for s in scratch if (s.objective, s.n_params, s.extra["transfer_budget"]) == wanted
                        ), None)
        if partner is not None:
            run.extra["pair"] = partner
            partner.extra["pair"] = run
            continue
        # Otherwise an IsoFLOP run of the same objective, size and budget stands in.
        partner = next((m for m in main_curves if m.kind == "isoflop" and (m.objective, m.n_params) == wanted[:2]
                        and math.isclose(m.budget, wanted[2], rel_tol=1e-6)), None)
        if partner is not None:
            run.extra["pair"] = partner
        else:
            report["unpaired_transfer"].append(run.file)


def _resolve(curve, main_by_file: dict):
    """A scratch baseline that duplicates a main run's curve stands for that main run."""
    if curve.kind == "scratch" and curve.extra.get("same_as"):
        return main_by_file[curve.extra["same_as"]]
    return curve


def _run_id(curve: _Curve) -> str:
    prefix = {"transfer": "t", "scratch": "s"}.get(curve.kind, "")
    return _clean_id(f"{prefix}{curve.objective}_{curve.label}_{curve.name}")


def import_curves(curves_dir, import_config: dict):
    """Read every curve the import config describes under curves_dir -> (runs_df, curves_df)."""
    root = Path(curves_dir)
    if not root.is_dir():
        raise PlmscaleError(f"curves directory {root} does not exist: clone cxysteven/ScalingProteinLM and point "
                            "fit.curves_dir (or the DIR argument) at its data/ folder")
    fmt = _Format.from_config(import_config)
    how = import_config.get("final_loss", "last")
    report = {"excluded": [], "unknown_size": [], "duplicates": [], "unmatched_transfer": [],
              "unpaired_transfer": [], "incomplete": []}
    main, main_keys = _main_curves(root, import_config, fmt, report)
    if not main:
        raise PlmscaleError(f"no curves found under {root} with the globs of import config "
                            f"{import_config.get('_source', '')}: is the directory the released data/ folder?")
    transfer = _transfer_curves(root, import_config, fmt, main_keys, report)
    _pair_transfer(transfer, main, report)

    # A scratch baseline that is the very curve of a main run is that run: pair with it, add no twin row.
    main_by_file = {c.file: c for c in main}
    emitted = main + [c for c in transfer if not (c.kind == "scratch" and c.extra.get("same_as"))]
    ids = {}
    for curve in emitted:
        run_id = _run_id(curve)
        if run_id in ids:  # same name in two folders: keep both, disambiguated
            run_id = f"{run_id}.{len([k for k in ids if k.startswith(run_id)])}"
        ids[run_id] = curve
    id_of = {id(curve): run_id for run_id, curve in ids.items()}
    pair_key = {}  # id(curve) -> run id of the from-scratch partner (table.py: the `pair` column)
    for curve in ids.values():
        if curve.kind == "transfer" and curve.extra.get("pair") is not None:
            partner = _resolve(curve.extra["pair"], main_by_file)
            pair_key[id(curve)] = pair_key[id(partner)] = id_of[id(partner)]

    rows, curve_frames = [], []
    for run_id, curve in ids.items():
        tokens = curve.flops / (fmt.flops_per_param_token * curve.n_params)
        final = int(np.argmin(curve.loss)) if how == "min" else len(curve.loss) - 1
        _final_loss(curve.loss, how, import_config)  # validates the setting
        row = {
            "run_id": run_id, "objective": curve.objective, "n_params": int(curve.n_params),
            "tokens": float(tokens[final]), "flops": float(curve.flops[final]), "loss": float(curve.loss[final]),
            "budget": curve.budget, "source": "imported",
            "init_from": (f"{curve.extra['source_objective']}@{curve.extra['source_flops']:.3g}"
                          if curve.kind == "transfer" and curve.extra.get("source_flops") else None),
            "kind": curve.kind if curve.kind in ("transfer", "scratch") else "", "design": curve.kind,
            "label": curve.label, "name": curve.name, "file": curve.file, "pair": pair_key.get(id(curve)),
            "transfer_budget": curve.extra.get("transfer_budget"),
            "source_flops": curve.extra.get("source_flops"),
        }
        rows.append(row)
        curve_frames.append(pd.DataFrame({
            "run_id": run_id, "objective": curve.objective, "n_params": int(curve.n_params),
            "flops": curve.flops, "tokens": tokens, "loss": curve.loss,
            "kind": curve.kind if curve.kind in ("transfer", "scratch") else "", "design": curve.kind}))
    runs = with_roles(pd.DataFrame(rows), f"runs imported from {root}")
    curves = with_roles(pd.concat(curve_frames, ignore_index=True), f"curves imported from {root}")
    _log_report(runs, report)
    runs.attrs["import_report"] = report
    return runs, curves


def _log_report(runs: pd.DataFrame, report: dict) -> None:
    for objective, group in runs.groupby("objective"):
        kinds = group["design"].value_counts().to_dict()
        budgets = sorted(group["budget"].dropna().unique())
        log.info("%s: %d runs %s; IsoFLOP budgets %s", objective, len(group), kinds,
                 ", ".join(f"{b:.0e}" for b in budgets))
    for rel, why in report["excluded"]:
        log.info("excluded %s: %s", rel, why)
    for rel, label in report["unknown_size"]:
        log.warning("skipped %s: size label %r not in size_map", rel, label)
    for rel, first in report["duplicates"]:
        log.info("skipped %s: same curve as %s", rel, first)
    for rel, fraction in report["incomplete"]:
        log.warning("IsoFLOP run %s stopped at %.0f%% of its budget: kept as kind 'incomplete', "
                    "outside the IsoFLOP profiles", rel, 100 * fraction)
    for rel in report["unmatched_transfer"]:
        log.warning("skipped %s: run name does not match its transfer group's name_regex", rel)
    for rel in report["unpaired_transfer"]:
        log.warning("transfer run %s has no from-scratch partner with the same size, budget and metric", rel)

