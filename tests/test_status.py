"""`plmscale status` (issue 25 §2): a study's state read from its files, as a user watching it sees it."""

import json
import os
import subprocess
import sys
import time

import pytest

from plmscale.cli import main as cli_main
from plmscale.config import load_config
from plmscale.grid.plan import planned_specs
from plmscale.grid.status import log_path, output_dir, run_status, study_status, summary
from plmscale.run_metrics import RunMetrics, write_metrics
from workflow_helpers import default_config_with

CONFIG = default_config_with({})


def _specs():
    return planned_specs(load_config(CONFIG, "test config"))


def _grid(specs, budget):
    return [s for s in specs if s.budget == budget]


def _finish(spec, results, loss):
    write_metrics(output_dir(spec, results) / "metrics.json",
                  RunMetrics(run_id=spec.run_id, objective=spec.objective, model=spec.model, n_params=spec.n_params,
                             tokens=spec.tokens, flops=spec.flops, budget=spec.budget, final_valid_loss=loss,
                             init_from=spec.init_from, steps=100))


def _log(spec, logs, lines, age_seconds=0.0):
    path = log_path(spec, logs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    stamp = time.time() - age_seconds
    os.utime(path, (stamp, stamp))
    return path


def _stamped(seconds_after_start: float, message: str, level="INFO") -> str:
    moment = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1_700_000_000 + seconds_after_start))
    return f"{moment},000 {level} plmscale.train.loop: {message}"


def test_each_state_is_read_from_the_files(tmp_path):
    results, logs = tmp_path / "results", tmp_path / "logs"
    done, running, failed, stalled, pending = _specs()[:5]
    _finish(done, results, 2.41)
    _log(running, logs, [_stamped(0, "r: {...}, 2090 non-embedding params, 1000 steps of 4 sequences"),
                         _stamped(10, "step 100/1000 tokens 51200 train 2.9 valid 2.9 lr 0.01"),
                         _stamped(40, "step 400/1000 tokens 204800 train 2.7 lr 0.01, 6.8e+03 tokens/s")])
    _log(failed, logs, [_stamped(0, "f: {...}, 2090 non-embedding params, 1000 steps of 4 sequences"),
                        _stamped(5, "failed: PlmscaleError: train shards missing", level="ERROR")])
    _log(stalled, logs, [_stamped(0, "s: {...}, 2090 non-embedding params, 1000 steps of 4 sequences"),
                         _stamped(20, "step 200/1000 tokens 102400 train 2.8 valid 2.8 lr 0.01")], age_seconds=3600)
    states = {s.run_id: s for s in study_status([done, running, failed, stalled, pending], results, logs)}
    assert states[done.run_id].state == "done" and states[done.run_id].loss == pytest.approx(2.41)
    now_running = states[running.run_id]
    # 400 steps in 40 s since the start line: 0.1 s per step, 600 steps to go
    assert (now_running.state, now_running.step, now_running.total_steps) == ("running", 400, 1000)
    assert now_running.eta_seconds == pytest.approx(60.0)
    assert states[failed.run_id].state == "failed"
    assert "PlmscaleError: train shards missing" in states[failed.run_id].last_line
    assert states[stalled.run_id].state == "stalled" and states[stalled.run_id].step == 200
    assert states[pending.run_id].state == "pending"


def test_a_resumed_run_measures_its_pace_from_the_resume(tmp_path):
    spec = _specs()[0]
    _log(spec, tmp_path / "logs", [_stamped(0, "r: {...}, 2090 non-embedding params, 1000 steps of 4 sequences"),
                                   _stamped(100, "step 100/1000 tokens 1 train 2.9 valid 2.9 lr 0.01"),
                                   _stamped(500, f"resumed {spec.run_id} at step 500/1000 (256000 tokens)"),
                                   _stamped(510, "step 600/1000 tokens 1 train 2.7 lr 0.01, 1e4 tokens/s")])
    status = run_status(spec, tmp_path / "results", tmp_path / "logs", now=time.time())
    assert status.step == 600 and status.eta_seconds == pytest.approx(40.0)  # 0.1 s per step since the resume


def test_totals_count_flops_and_finished_budgets(tmp_path):
    specs = _specs()
    budgets = sorted({s.budget for s in specs if s.budget is not None})
    for spec in _grid(specs, budgets[0]) + _grid(specs, budgets[1])[:1]:
        _finish(spec, tmp_path, 2.5)
    totals = summary(study_status(specs, tmp_path, tmp_path / "logs"))
    done_flops = sum(s.flops for s in _grid(specs, budgets[0]) + _grid(specs, budgets[1])[:1])
    assert totals["flops_done"] == pytest.approx(done_flops)
    assert totals["flops_planned"] == pytest.approx(sum(s.flops for s in specs))
    assert totals["finished_budgets"] == [{"objective": "clm", "budget": budgets[0]}]
    assert totals["counts"]["done"] == len(_grid(specs, budgets[0])) + 1
    assert sum(totals["counts"].values()) == len(specs)


def test_status_command_draws_the_isoflop_runs_once_two_budgets_finish(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(CONFIG))
    specs = _specs()
    budgets = sorted({s.budget for s in specs if s.budget is not None})
    for spec in _grid(specs, budgets[0]):
        _finish(spec, tmp_path / "results", 2.5 + spec.n_params * 1e-6)
    args = ["status", "--config", str(config), "--results", str(tmp_path / "results"), "--logs", str(tmp_path / "logs")]
    assert cli_main(args) == 0
    assert "once two budgets have finished (1 so far)" in capsys.readouterr().out
    for spec in _grid(specs, budgets[1]):
        _finish(spec, tmp_path / "results", 2.4)
    assert cli_main(args + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["png"] == str(tmp_path / "results" / "status.png") and (tmp_path / "results" / "status.png").exists()
    assert {r["run_id"] for r in report["runs"] if r["state"] == "done"} == \
        {s.run_id for s in _grid(specs, budgets[0]) + _grid(specs, budgets[1])}


def test_an_uncaught_error_is_the_last_line_of_the_step_log(tmp_path):
    log = tmp_path / "step.log"
    code = ("from plmscale.logging_setup import log_to_file\n"
            f"log_to_file({str(log)!r})\n"
            "from plmscale.errors import PlmscaleError\n"
            "raise PlmscaleError('the shards are missing: run the data stage')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" in result.stderr  # the error still reaches stderr whole
    last = log.read_text().splitlines()[-1]
    assert " ERROR " in last and last.endswith("failed: PlmscaleError: the shards are missing: run the data stage")


def test_runs_the_adaptive_rounds_added_are_part_of_the_study(tmp_path, capsys):
    config = default_config_with({"train": {"isoflop": {"adaptive": {"enabled": True}}}})
    (tmp_path / "config.yaml").write_text(json.dumps(config))
    spec = _specs()[-1].to_dict()
    added = {**spec, "run_id": "ad1_clm_n55k_c5e11"}
    round_file = tmp_path / "results" / "scaling" / "design" / "round_1.json"
    round_file.parent.mkdir(parents=True)
    round_file.write_text(json.dumps({"round": 1, "runs_added": [{"run_id": added["run_id"], "spec": added}]}))
    assert cli_main(["status", "--config", str(tmp_path / "config.yaml"), "--results", str(tmp_path / "results"),
                     "--logs", str(tmp_path / "logs"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"run_id": "ad1_clm_n55k_c5e11", "state": "pending"}.items() <= \
        next(r for r in report["runs"] if r["run_id"] == "ad1_clm_n55k_c5e11").items()
    assert report["summary"]["runs"] == len(_specs()) + 1
