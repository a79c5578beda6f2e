"""A fit's objectives and its Farseer / data-constrained bootstrap refits shared out among worker processes
(fit_workers): the same fit.json numbers for one worker and for two, and the workers' log records kept."""

import json
import logging
import os

import numpy as np
import pandas as pd
import pytest

from plmscale.errors import PlmscaleError
from plmscale.scaling import bootstrap as boot
from plmscale.scaling import data_constrained, farseer, fit_workers
from plmscale.scaling.fit import fit_all
from scaling_synthetic import fit_settings, isoflop_runs, random_law
from test_data_constrained import PAPER_TRUTH, data_constrained_runs
from test_laws import FARSEER_TRUTH, farseer_runs

N_RESAMPLES = 16  # two workers get 8 each (fit_workers.MIN_ROWS_PER_WORKER)


def bootstrap_refits(workers, monkeypatch):
    """Farseer's and the data-constrained law's bootstrap refits (warm-started from the truth) by `workers`
    processes."""
    monkeypatch.setenv(fit_workers.WORKERS_ENV, str(workers))
    assert fit_workers.workers() == workers
    runs = farseer_runs(FARSEER_TRUTH, np.random.default_rng(0), budgets=[1e18, 1e19, 1e20])
    n, d, loss = (runs[c].to_numpy(float) for c in ("n_params", "tokens", "loss"))
    counts = boot.draw_counts(runs["budget"].astype(str), N_RESAMPLES, np.random.default_rng(0))
    thetas = farseer.bootstrap_thetas({"theta": [FARSEER_TRUTH[k] for k in farseer.PARAM_NAMES]}, n, d, loss, counts)
    runs = data_constrained_runs(PAPER_TRUTH, np.random.default_rng(1))
    n, d, unique, loss = (runs[c].to_numpy(float) for c in ("n_params", "tokens", "unique_tokens", "loss"))
    counts = boot.draw_counts(runs["budget"].astype(str), N_RESAMPLES, np.random.default_rng(1))
    truth = [np.log(PAPER_TRUTH[k]) for k in ("E", "A", "B")] + [PAPER_TRUTH["alpha"], PAPER_TRUTH["beta"]] + [
        np.log(PAPER_TRUTH[k]) for k in ("r_star_d", "r_star_n")]
    params = data_constrained.bootstrap_params({"theta": truth}, n, d, unique, loss, counts)
    return thetas, params


def test_one_and_two_workers_give_identical_bootstrap_refits(monkeypatch):
    thetas, params = bootstrap_refits(1, monkeypatch)
    assert thetas.shape == (N_RESAMPLES, 9) and params.shape == (N_RESAMPLES, 7) and np.isfinite(thetas).all()
    two_thetas, two_params = bootstrap_refits(2, monkeypatch)
    assert np.array_equal(two_thetas, thetas) and np.array_equal(two_params, params)  # bit for bit


def two_objectives_fit(workers, monkeypatch):
    monkeypatch.setenv(fit_workers.WORKERS_ENV, str(workers))
    rng = np.random.default_rng(7)
    runs = [isoflop_runs(random_law(rng), rng, objective=o, budgets=[1e18, 1e19, 1e20]) for o in ("clm", "mlm")]
    fit = fit_all(pd.concat(runs, ignore_index=True), None, fit_settings(bootstrap=10, backtest=False))
    return json.dumps(fit, sort_keys=True, default=float)


def test_one_and_two_workers_give_identical_fit_json_for_two_objectives(monkeypatch):
    one = two_objectives_fit(1, monkeypatch)
    assert two_objectives_fit(2, monkeypatch) == one
    assert set(json.loads(one)["objectives"]) == {"clm", "mlm"}


def pid_and_warning(label):
    logging.getLogger("plmscale.scaling.fit").warning("objective %s fitted", label)
    return os.getpid()


def test_work_runs_in_a_second_process_and_its_log_records_reach_this_one(monkeypatch, caplog):
    monkeypatch.setenv(fit_workers.WORKERS_ENV, "2")
    with caplog.at_level("WARNING", logger="plmscale.scaling.fit"):
        here, there = fit_workers.map_calls(pid_and_warning, [("clm",), ("mlm",)])
    assert here == os.getpid() and there != here
    assert [r.getMessage() for r in caplog.records] == ["objective clm fitted", "objective mlm fitted"]


def test_a_bad_worker_count_names_the_variable(monkeypatch):
    monkeypatch.setenv(fit_workers.WORKERS_ENV, "two")
    with pytest.raises(PlmscaleError, match="PLMSCALE_FIT_WORKERS must be a whole number >= 1"):
        fit_workers.workers()


def test_by_default_a_second_worker_only_where_the_machine_has_a_cpu_free(monkeypatch):
    monkeypatch.delenv(fit_workers.WORKERS_ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 1.0, 1.0))  # this fit alone on 2 CPUs
    assert fit_workers.workers() == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))  # both CPUs busy with other jobs
    assert fit_workers.workers() == 1
    monkeypatch.setenv(fit_workers.WORKERS_ENV, "2")  # asked for: two, whatever the load
    assert fit_workers.workers() == 2
