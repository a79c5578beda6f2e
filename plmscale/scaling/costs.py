"""Cost models: what a token of training costs a model of a given shape, in the currency a budget is counted in.

- "6nd": the paper's C = 6·N·D (N without embeddings);
- "with_attention": 6·N + 12·L·d·T (attention scores and values);
- "chinchilla": Hoffmann et al. 2022's count with embeddings, attention and logits
  (plmscale.arithmetic.flops_per_token_chinchilla);
- "measured": seconds per token on one device, fitted from the runs' own wall time (MeasuredCost).

The FLOPs definitions are exact per shape (plmscale.arithmetic); the measured model is a cost law,
seconds/token = c0 + c1 · chinchilla FLOPs per token, fitted per device by least squares over the runs of
that device: tiny CPU models are bound by per-step overhead, which c0 absorbs.

The measured laws are a measurement of the machine, like results/benchmarks/: the workflow's rule
measured_cost writes them to results/scaling/measured_cost.json ({device: {device, c0, c1, n_runs, r2}}),
apart from fit.json and runs.csv, which two runs from scratch write identically.
"""

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from plmscale.arithmetic import FLOPS_DEFINITIONS, ModelShape
from plmscale.config import read_json_object
from plmscale.errors import PlmscaleError

log = logging.getLogger(__name__)

MEASURED = "measured"
COST_MODELS = (*FLOPS_DEFINITIONS, MEASURED)
# The columns of the runs' timings (plmscale.scaling.collect.run_timings) the measured law reads.
MEASURED_COLUMNS = ("tokens", "flops_chinchilla", "wall_seconds", "device")
# The measured law needs at least this many runs of one device with distinct per-token FLOPs.
MIN_MEASURED_RUNS = 3
# Where the workflow writes the measured laws (rule measured_cost), and its default beside a fit.json.
MEASURED_COST_FILE = "measured_cost.json"
MEASURED_COST_WRITER = ("the workflow's rule measured_cost writes it from the runs' metrics.json "
                        "(snakemake results/scaling/measured_cost.json)")


def flops_per_token(shape: dict, seq_len: int, definition: str) -> float:
    """Training FLOPs per token of a ladder entry under one FLOPs definition; an unknown one is an error."""
    if definition not in FLOPS_DEFINITIONS:
        raise PlmscaleError(f"cost model {definition!r} is not a FLOPs definition (one of "
                            f"{', '.join(FLOPS_DEFINITIONS)}); the measured model needs a MeasuredCost")
    return ModelShape.from_dict(shape).flops_per_token(seq_len, definition)


def ratio_rows(ladder: dict, seq_len: int) -> list[dict]:
    """Per ladder entry: N, 6·N per token, and each other definition's FLOPs per token over 6·N."""
    rows = []
    for name, entry in ladder.items():
        shape = ModelShape.from_dict(entry)
        base = shape.flops_per_token(seq_len, "6nd")
        rows.append({"model": name, "n_params": shape.n_params(), "flops_per_token_6nd": base,
                     **{f"{d}/6nd": shape.flops_per_token(seq_len, d) / base for d in FLOPS_DEFINITIONS
                        if d != "6nd"}})
    return rows


def format_ratio_table(ladder: dict, seq_len: int) -> str:
    """The ratio of each cost model to 6ND per ladder shape, as text (`plmscale plan --costs`)."""
    rows = ratio_rows(ladder, seq_len)
    ratio_keys = [k for k in rows[0] if k.endswith("/6nd")] if rows else []
    header = ("model", "N", "6N/token", *ratio_keys)
    cells = [(r["model"], f"{r['n_params']:,}", f"{r['flops_per_token_6nd']:.4g}",
              *(f"{r[k]:.3f}" for k in ratio_keys)) for r in rows]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    lines = [f"cost per token against the paper's 6·N (seq_len {seq_len}; chinchilla: Hoffmann et al. 2022 App. F "
             "with embeddings, attention and logits)"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *cells]]
    return "\n".join(lines)


@dataclass(frozen=True)
class MeasuredCost:
    """seconds/token = c0 + c1 · chinchilla FLOPs per token, on one device, from n_runs runs."""
    device: str
    c0: float
    c1: float
    n_runs: int
    r2: float

    def seconds_per_token(self, chinchilla_flops_per_token):
        return self.c0 + self.c1 * np.asarray(chinchilla_flops_per_token, float)

    def to_dict(self) -> dict:
        return asdict(self)


def fit_measured_cost(runs: pd.DataFrame, source: str = "run timings") -> dict[str, MeasuredCost]:
    """The measured cost law per device, least squares over that device's runs (rows of collect.run_timings
    with tokens, flops_chinchilla, wall_seconds and device; others are skipped and logged, the count used is
    in n_runs).

    A device with fewer than MIN_MEASURED_RUNS usable runs, or with one shape only, gets no law (it is left
    out); a table without the columns is an error naming them."""
    missing = [c for c in MEASURED_COLUMNS if c not in runs.columns]
    if missing:
        raise PlmscaleError(f"{source}: column(s) {', '.join(missing)} missing, needed by the measured cost model; "
                            "read the runs' metrics.json with plmscale.scaling.collect.run_timings")
    table = pd.DataFrame({"device": runs["device"],
                          **{c: pd.to_numeric(runs[c], errors="coerce")
                             for c in ("tokens", "flops_chinchilla", "wall_seconds")}})
    usable = ((table["tokens"] > 0) & (table["wall_seconds"] > 0) & (table["flops_chinchilla"] > 0)
              & table["device"].notna() & (table["device"].astype(str) != ""))
    if (~usable).any():
        log.warning("%s: %d of %d runs lack tokens, flops_chinchilla, wall_seconds or device; the measured cost "
                    "law leaves them out", source, int((~usable).sum()), len(table))
    table = table[usable]
    laws = {}
    for device, group in table.groupby(table["device"].astype(str), sort=True):
        per_token_flops = (group["flops_chinchilla"] / group["tokens"]).to_numpy()
        seconds = (group["wall_seconds"] / group["tokens"]).to_numpy()
        if len(group) < MIN_MEASURED_RUNS or np.ptp(per_token_flops) <= 0:
            log.warning("%s: device %s has %d timed run(s) of %d distinct shape(s); a measured cost law needs "
                        "%d runs and 2 shapes: none fitted", source, device, len(group),
                        len(np.unique(per_token_flops)), MIN_MEASURED_RUNS)
            continue
        design = np.column_stack([np.ones_like(per_token_flops), per_token_flops])
        (c0, c1), *_ = np.linalg.lstsq(design, seconds, rcond=None)
        residual = seconds - design @ np.array([c0, c1])
        total = np.sum((seconds - seconds.mean()) ** 2)
        r2 = 1.0 - np.sum(residual ** 2) / total if total > 0 else 1.0
        laws[device] = MeasuredCost(device=device, c0=float(c0), c1=float(c1), n_runs=int(len(group)), r2=float(r2))
        log.info("measured cost on %s: seconds/token = %.3g + %.3g * chinchilla FLOPs/token (%d runs, R2 %.3f)",
                 device, c0, c1, len(group), r2)
    return laws


def measured_cost_record(laws: dict[str, MeasuredCost]) -> dict:
    """measured_cost.json's content: {device: {device, c0, c1, n_runs, r2}}, devices in order."""
    return {device: laws[device].to_dict() for device in sorted(laws)}


def read_measured_cost(path) -> dict[str, MeasuredCost]:
    """The measured laws of a measured_cost.json; a missing file is an error naming it and the rule that
    writes it, an entry without numeric c0 and c1 an error naming its key."""
    record = read_json_object(path, "measured cost laws", hint=f"; {MEASURED_COST_WRITER}, or give --measured PATH")
    laws = {}
    for device, entry in record.items():
        values = entry if isinstance(entry, dict) else {}
        numbers = {key: values.get(key) for key in ("c0", "c1", "r2")}
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers.values()):
            raise PlmscaleError(f"measured cost laws {path}: entry {device!r} needs numbers c0, c1 and r2, got "
                                f"{entry!r}; {MEASURED_COST_WRITER}")
        laws[str(device)] = MeasuredCost(device=str(device), c0=float(numbers["c0"]), c1=float(numbers["c1"]),
                                         n_runs=int(values.get("n_runs") or 0), r2=float(numbers["r2"]))
    return laws


def measured_law(laws: dict[str, MeasuredCost], device: str, where: str) -> MeasuredCost:
    """The law of one device; a device without one is an error listing those that have one."""
    if device not in laws:
        known = ", ".join(sorted(laws)) or f"none: no device has {MIN_MEASURED_RUNS} timed runs of distinct shapes"
        raise PlmscaleError(f"{where}: no measured cost law for device {device!r} (it has {known}); train runs "
                            "on that device and run the rule measured_cost again")
    return laws[device]


def gpu_hours_to_flops(gpu_hours: float, device: str, mfu: float) -> dict:
    """H GPU-hours on a named accelerator as FLOPs through the plan's throughput model
    (plmscale.grid.resources: dense bf16 peak × assumed MFU): {flops, peak_flops_per_second, mfu, device}."""
    from plmscale.grid.resources import GPU_PEAK_FLOPS
    if not (gpu_hours > 0 and np.isfinite(gpu_hours)):
        raise PlmscaleError(f"--gpu-hours must be a positive number, got {gpu_hours!r}")
    if not 0 < mfu <= 1:
        raise PlmscaleError(f"--mfu must be in (0, 1], got {mfu!r}")
    name = next((key for key in GPU_PEAK_FLOPS if key.lower() == device.lower()), None)
    if name is None:
        raise PlmscaleError(f"--device {device!r} is not a known accelerator (known: "
                            f"{', '.join(k.lower() for k in GPU_PEAK_FLOPS)}, plmscale/grid/resources.py)")
    peak = GPU_PEAK_FLOPS[name]
    return {"flops": gpu_hours * 3600.0 * peak * mfu, "peak_flops_per_second": peak, "mfu": mfu, "device": name}


# runs.csv's per-definition FLOPs columns (plmscale.scaling.table.COST_COLUMNS), by definition.
DEFINITION_COLUMNS = {definition: f"flops_{definition}" for definition in FLOPS_DEFINITIONS}
UNKNOWN_DEFINITION = "unknown"
# The flops column equals one of the per-definition columns to this relative tolerance (runs.csv's rounding).
DEFINITION_REL_TOL = 1e-6


def detect_flops_definition(runs: pd.DataFrame, what: str = "runs table") -> dict:
    """The FLOPs definition a table's `flops` column counts (the one its grid was laid out in,
    train.flops_definition): {"flops_definition": name, or "unknown" with a "note" saying why}.

    The column must equal, to DEFINITION_REL_TOL, the same per-definition column (flops_6nd, flops_with_attention,
    flops_chinchilla) in every row; a table without those columns (an imported one), or whose rows match
    different definitions or none, is "unknown"."""
    present = {d: c for d, c in DEFINITION_COLUMNS.items() if c in runs.columns}
    if not present:
        return {"flops_definition": UNKNOWN_DEFINITION,
                "note": f"{what} has no per-definition FLOPs columns ({', '.join(DEFINITION_COLUMNS.values())}; "
                        "an imported table): its flops column counts whatever its source counted"}
    flops = pd.to_numeric(runs["flops"], errors="coerce").to_numpy(float)
    matches = {d: np.isclose(flops, pd.to_numeric(runs[c], errors="coerce").to_numpy(float),
                             rtol=DEFINITION_REL_TOL, atol=0.0) for d, c in present.items()}
    for definition, match in matches.items():
        if len(flops) and match.all():
            return {"flops_definition": definition}
    counts = ", ".join(f"{int(m.sum())} of {len(flops)} rows match {present[d]}" for d, m in matches.items())
    return {"flops_definition": UNKNOWN_DEFINITION,
            "note": f"{what}: the flops column equals no single FLOPs definition in every row ({counts}): runs "
                    "laid out in different definitions are mixed, or flops was edited"}


def flops_per_token_by_run(runs: pd.DataFrame) -> dict:
    """{definition: {run_id: FLOPs per token}} from runs.csv's per-definition columns (the envelope refitted per
    cost model counts each curve point's tokens at its run's rate); only the definitions the table carries, and
    per definition only the runs with a positive count."""
    out = {}
    tokens = pd.to_numeric(runs["tokens"], errors="coerce").to_numpy(float)
    for definition, column in DEFINITION_COLUMNS.items():
        if column not in runs.columns:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            per_token = pd.to_numeric(runs[column], errors="coerce").to_numpy(float) / tokens
        usable = np.isfinite(per_token) & (per_token > 0)
        out[definition] = dict(zip(runs["run_id"].astype(str)[usable], per_token[usable]))
    return out


def measured_seconds_per_token_by_run(runs: pd.DataFrame, law: MeasuredCost) -> dict:
    """{run_id: seconds per token} of each run under a measured cost law (from its chinchilla FLOPs per token)."""
    chinchilla = flops_per_token_by_run(runs).get("chinchilla", {})
    return {run: float(law.seconds_per_token(value)) for run, value in chinchilla.items()}
