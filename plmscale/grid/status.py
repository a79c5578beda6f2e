"""Where a study stands, from its files alone (results/ and logs/), so it reads the same on a workstation
and on Slurm: every planned run is done (its metrics.json), running (its log moved recently), failed (its
log ends in an error), stalled (a log that stopped moving without an error: a killed or preempted job) or
pending (no log yet). `plmscale status` prints it (plmscale.cli.status)."""

import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from plmscale.errors import PlmscaleError
from plmscale.run_metrics import read_metrics

STATES = ("done", "running", "stalled", "failed", "pending")
# A log untouched this long without an error is a job that stopped (killed, preempted, node lost), not one
# that runs: training logs progress every train.loop.PROGRESS_EVERY_SECONDS (30 s) and at each evaluation.
STALE_AFTER_SECONDS = 900.0
# The last bytes of a log read for its state: the last progress and error lines, never the whole file.
TAIL_BYTES = 16_384

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) ")
_STEP = re.compile(r"\bstep (\d+)/(\d+)\b")
_START = re.compile(r"\d+ non-embedding params, (\d+) steps|resumed \S+ at step (\d+)/(\d+)")


@dataclass
class RunStatus:
    run_id: str
    objective: str
    model: str
    budget: float | None
    flops: float
    state: str
    n_params: float
    tokens: float
    loss: float | None = None  # final validation loss, once done
    step: int | None = None
    total_steps: int | None = None
    eta_seconds: float | None = None
    last_line: str | None = None  # the log's last line: the error of a failed run, the progress of a running one
    log: str | None = None


def output_dir(spec, results="results") -> Path:
    """Where a run writes metrics.json: a WSD trunk under trunks/, every other run under runs/."""
    return Path(results) / ("trunks" if spec.wsd_role == "trunk" else "runs") / spec.run_id


def log_path(spec, logs="logs") -> Path:
    return Path(logs) / ("trunks" if spec.wsd_role == "trunk" else "runs") / spec.run_id / "train.log"


def _tail_lines(path: Path) -> list[str]:
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - TAIL_BYTES))
        text = handle.read().decode("utf-8", errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[1:] if size > TAIL_BYTES and len(lines) > 1 else lines  # the first may be cut mid-line


def _stamp(line: str) -> float | None:
    match = _STAMP.match(line)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(match.group(2)) / 1000


def _is_error(line: str) -> bool:
    match = _STAMP.match(line)
    if match:
        return match.group(3) in ("ERROR", "CRITICAL")
    return bool(re.match(r"^(Traceback|\w+(\.\w+)*(Error|Exception)\b)", line))


def progress(lines: list[str]) -> tuple[int | None, int | None, float | None]:
    """(step, total steps, seconds per step) from a training log's lines: the last `step S/T` line, and the
    rate since the run's start (or resume) line, both timestamped by logging_setup's format."""
    step = total = rate = None
    start_time = start_step = None
    for line in lines:
        stamp = _stamp(line)
        if stamp is None:
            continue
        started = _START.search(line)
        if started:
            start_time, start_step = stamp, int(started.group(2)) if started.group(2) else 0
        found = _STEP.search(line)
        if found:
            step, total = int(found.group(1)), int(found.group(2))
            if start_time is not None and step > start_step:
                rate = (stamp - start_time) / (step - start_step)
    return step, total, rate


def run_status(spec, results="results", logs="logs", now: float | None = None,
               stale_after: float = STALE_AFTER_SECONDS) -> RunStatus:
    """The state of one planned run from its files."""
    now = time.time() if now is None else now
    status = RunStatus(run_id=spec.run_id, objective=spec.objective, model=spec.model, budget=spec.budget,
                       flops=float(spec.flops), state="pending", n_params=float(spec.n_params),
                       tokens=float(spec.tokens))
    metrics_path = output_dir(spec, results) / "metrics.json"
    log = log_path(spec, logs)
    status.log = str(log) if log.exists() else None
    if metrics_path.exists():
        try:
            metrics = read_metrics(metrics_path)
        except PlmscaleError as error:  # a half-read or foreign file: say so, do not count it as done
            status.state, status.last_line = "failed", str(error)
            return status
        status.state, status.loss = "done", metrics.final_valid_loss
        status.step = status.total_steps = metrics.steps
        return status
    if not log.exists():
        return status
    lines = _tail_lines(log)
    status.last_line = lines[-1] if lines else None
    status.step, status.total_steps, seconds_per_step = progress(lines)
    if any(_is_error(line) for line in lines[-5:]):
        status.state = "failed"
        status.last_line = next(line for line in reversed(lines) if _is_error(line))
    elif now - log.stat().st_mtime > stale_after:
        status.state = "stalled"
    else:
        status.state = "running"
        if seconds_per_step and status.step is not None and status.total_steps:
            status.eta_seconds = seconds_per_step * (status.total_steps - status.step)
    return status


def study_status(specs, results="results", logs="logs", now: float | None = None,
                 stale_after: float = STALE_AFTER_SECONDS) -> list[RunStatus]:
    return [run_status(spec, results, logs, now, stale_after) for spec in specs]


def summary(statuses: list[RunStatus]) -> dict:
    """Counts per state, FLOPs done against planned, and the IsoFLOP budgets whose runs are all done."""
    counts = {state: sum(s.state == state for s in statuses) for state in STATES}
    budgets = {}
    for s in statuses:
        if s.budget is not None:
            budgets.setdefault((s.objective, s.budget), []).append(s.state == "done")
    finished = sorted(key for key, done in budgets.items() if all(done))
    return {"runs": len(statuses), "counts": counts,
            "flops_done": sum(s.flops for s in statuses if s.state == "done"),
            "flops_planned": sum(s.flops for s in statuses),
            "finished_budgets": [{"objective": o, "budget": b} for o, b in finished],
            "budgets": len(budgets)}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_status(statuses: list[RunStatus], width: int = 100) -> str:
    """A table of every run not yet done (with its step, ETA or last log line) and one line per state."""
    totals = summary(statuses)
    counts = totals["counts"]
    lines = [", ".join(f"{counts[state]} {state}" for state in STATES if counts[state]) + f" of {totals['runs']} runs;"
             f" {totals['flops_done']:.3g} of {totals['flops_planned']:.3g} planned FLOPs done "
             f"({100 * totals['flops_done'] / totals['flops_planned'] if totals['flops_planned'] else 0:.0f}%)"]
    order = {"failed": 0, "stalled": 1, "running": 2, "pending": 3}
    # the plan's order within a state: smallest budgets first, as the workflow tends to run them
    open_runs = [s for _, s in sorted(((order[s.state], i), s) for i, s in enumerate(statuses) if s.state != "done")]
    for s in open_runs:
        if s.state == "running":
            where = f"step {s.step}/{s.total_steps}" if s.step is not None else "starting"
            detail = f"{where}" + (f", ETA {_duration(s.eta_seconds)}" if s.eta_seconds is not None else "")
        elif s.state == "pending":
            detail = f"{s.flops:.3g} FLOPs"
        else:
            detail = (s.last_line or "") + (f" (log: {s.log})" if s.log else "")
        row = f"  {s.state:<8} {s.run_id:<28} {detail}"
        lines.append(row if len(row) <= width or s.state in ("failed", "stalled") else row[:width - 3] + "...")
    done = totals["finished_budgets"]
    if done:
        lines.append("finished budgets: " + ", ".join(f"{d['objective']} {d['budget']:.3g}" for d in done))
    return "\n".join(lines)
