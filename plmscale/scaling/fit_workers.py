"""A fit's independent pieces of work in worker processes: the objectives of a table, and the bootstrap refits that
run one L-BFGS-B fit per resample (Farseer, data-constrained). The same numbers for any number of workers.

- Objectives (fit.fit_all): CLM and MLM are fitted from their own runs with their own seeded random stream, so
  each objective's fit.json entry is a pure function of its inputs; map_calls runs them side by side.
- Bootstrap refits (map_rows): the parametric law refits all resamples at once as batched numpy arithmetic, but
  Farseer's 9 and the data-constrained law's 7 constants are refitted one resample at a time (~0.1 s each), and on
  the released curves those refits are most of a fit's time. Each is a pure function of the point fit, the runs
  and one resample's counts (drawn beforehand from the caller's seeded generator), so the rows are cut into
  contiguous chunks and put back in row order.

In both, the calling process does the first share itself while the workers do the others, and each piece runs the
same arithmetic, single-threaded, wherever it runs: results are identical for one worker and for several.

Workers: MAX_WORKERS where the CPUs this process may use are free (by the 1-minute load average: under load a second
process only adds the fork's cost, docs/benchmarks.md), else 1; or the environment variable PLMSCALE_FIT_WORKERS (1
does everything in the calling process). An objective's worker shares its refits out in turn; a refit worker does all its
work itself. The workers
are forked from the calling process for each batch of work and end with it: a fork copies the loaded modules (and
the logging set-up as it is now), where spawn and forkserver would import the main script again in each worker,
and the fit stage's main script is a Snakemake script whose top level runs the whole fit. (The fit stage is
single-threaded, OPENBLAS_NUM_THREADS=1, so no lock is held across the fork.) A worker's log records are handed to
the calling process's loggers, so they reach its log file, stderr or a test's caplog as if logged there. Where
there is no fork (Windows) everything runs in the calling process.
"""

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from plmscale.errors import PlmscaleError

WORKERS_ENV = "PLMSCALE_FIT_WORKERS"
MAX_WORKERS = 2
# Fewer rows than this per worker are refitted in the calling process: handing them out costs more than it saves.
MIN_ROWS_PER_WORKER = 8

# What this process is a worker for: an objective's worker ("calls") still shares its bootstrap refits out, so
# that a table's two objectives and each one's refits all run side by side; a refit worker ("rows") shares nothing.
_worker_for = None


def workers() -> int:
    """How many processes share a piece of a fit's work (the calling one included)."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if value and (not value.isdigit() or int(value) < 1):
        raise PlmscaleError(f"environment variable {WORKERS_ENV} must be a whole number >= 1 (the processes that "
                            f"share a fit's objectives and bootstrap refits); got {value!r}")
    if _worker_for == "rows" or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if value:
        return int(value)
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # Only CPUs that other jobs leave free (the 1-minute load average, less this process): on a busy machine a
    # second process adds the fork's cost and gains no CPU time.
    free = available - max(0.0, os.getloadavg()[0] - 1.0) if hasattr(os, "getloadavg") else available
    return max(1, min(MAX_WORKERS, available, int(free + 0.5)))


def map_calls(function, calls):
    """[function(*args) for args in calls], in order, the calls shared out among workers(). function must be
    importable by name (a module-level function), its arguments and results picklable."""
    calls = list(calls)
    n_workers = 1 if _worker_for else min(workers(), len(calls))
    shares = np.array_split(np.arange(len(calls)), max(1, n_workers))
    parts = _shared_out(_calls, function, [[calls[i] for i in share] for share in shares], "calls")
    return [result for part in parts for result in part]


def map_rows(function, rows, *shared):
    """[function(row, *shared) for row in rows] as an array, in row order, the rows shared out among workers()."""
    rows = np.asarray(rows)
    chunks = np.array_split(rows, max(1, min(workers(), len(rows) // MIN_ROWS_PER_WORKER)))
    return np.concatenate(_shared_out(_rows, function, [(chunk, shared) for chunk in chunks], "rows"))


def _shared_out(runner, function, shares, kind):
    """[runner(function, share) for share in shares]: the first share here, the others in forked workers, whose log
    records are handed to this process's loggers (as if logged here, in order)."""
    if len(shares) == 1:
        return [runner(function, shares[0])]
    context = multiprocessing.get_context("fork")  # forked now: the workers see this process's state as it is
    with ProcessPoolExecutor(max_workers=len(shares) - 1, mp_context=context, initializer=_start_worker,
                             initargs=(kind,)) as pool:
        futures = [pool.submit(_logged, runner, function, share) for share in shares[1:]]
        results = [runner(function, shares[0])]
        for future in futures:
            result, records = future.result()
            for record in records:
                logger = logging.getLogger(record.name)
                if logger.isEnabledFor(record.levelno):
                    logger.handle(record)
            results.append(result)
    return results


def _calls(function, calls):
    return [function(*args) for args in calls]


def _rows(function, share):
    rows, shared = share
    return np.array([function(row, *shared) for row in rows])


class _Collector(logging.Handler):
    def __init__(self):
        super().__init__(logging.NOTSET)
        self.records = []

    def emit(self, record):
        record.msg, record.args = record.getMessage(), None  # plain text: the arguments need not pickle
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.records.append(record)


def _logged(runner, function, share):
    """In a worker: runner's result and the log records it emitted, kept from the handlers copied by the fork (the
    calling process hands them to its own)."""
    root = logging.getLogger()
    collector, kept = _Collector(), root.handlers[:]
    root.handlers = [collector]
    try:
        return runner(function, share), collector.records
    finally:
        root.handlers = kept


def _start_worker(kind):
    global _worker_for
    _worker_for = kind
