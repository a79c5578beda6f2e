"""The workflow through profiles/slurm on a real (one-node, loopback) Slurm cluster.

tests/slurm_cluster.sh brings up munged, MariaDB, slurmdbd, slurmctld and slurmd; the demo data stage and
a two-run CPU grid then run once locally and once as Slurm jobs, in two copies of the workflow. Every job
that is not a local rule must show up in Slurm's accounting as a completed job of this run, and the
results must be the same: shard manifests and files byte for byte, training metrics number for number.
"""

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from plmscale.data.shard_check import STAMP
from workflow_helpers import default_config_with, workflow_copy

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "tests" / "slurm_cluster.sh"
CANNOT_INSTALL = 3  # slurm-cluster.sh's exit status when Slurm is missing and apt-get is not usable

# The demo corpus, smaller, and a grid of two tiny CLM runs on the CPU: the whole DAG in about a minute.
TINY = {
    # The demo's 5%/2.5% held out need thousands of clusters; this corpus has a few dozen.
    "data": {"demo": {"n_families": 20, "members_per_family": 6, "floor_sequences": 0},
             "split": {"valid_fraction": 0.1, "test_fraction": 0.05}},
    "train": {
        "ladder": {"t1": {"layers": 1, "d_model": 16, "heads": 2},
                   "t2": {"layers": 2, "d_model": 16, "heads": 2}},
        "isoflop": {"budgets": [], "adaptive": {"enabled": False}},  # explicit runs only: no grid, no rounds
        "transfer": [],
        "runs": [{"objective": "clm", "model": "t1", "tokens": 8192},
                 {"objective": "clm", "model": "t2", "tokens": 8192}],
        "seq_len": 64, "batch_tokens": 1024, "micro_batch_size": 8, "eval_every_steps": 4,
        "eval_tokens": 1024, "checkpoint_every_steps": 1000, "device": "cpu", "precision": "fp32",
        "threads": 1,
        "repetition": {"source": None},  # the demo's repetition study needs more data than this corpus has
    },
    "fit": {"bootstrap": 10, "closed_loop": {"multiples": []}},  # no IsoFLOP grid: no closed loop
    "export": {"runs": []},  # the demo exports runs of its own grid, not of this one
}
# Fields of metrics.json that measure the machine, not the training.
TIMING_KEYS = {"wall_seconds", "tokens_per_second", "achieved_flops_per_second", "mfu",
               "peak_flops_per_second"}
DATA_TARGETS = [f"results/data/shards/{split}/manifest.json" for split in ("train", "valid", "test")]


@pytest.fixture(scope="session")
def slurm_env():
    """Environment pointing at a running test cluster; starts it (and stops it afterwards) if needed."""
    running = subprocess.run(["bash", str(CLUSTER_SCRIPT), "status"], capture_output=True).returncode == 0
    if not running:
        started = subprocess.run(["bash", str(CLUSTER_SCRIPT), "start"], capture_output=True, text=True,
                                 timeout=900)
        if started.returncode == CANNOT_INSTALL:
            pytest.skip("Slurm packages are missing and cannot be installed here (needs apt-get as root): "
                        + started.stderr.strip().splitlines()[-1])
        if started.returncode != 0:
            subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop"], capture_output=True)
            pytest.fail(f"the test cluster did not start:\n{started.stdout}\n{started.stderr}")
    exports = subprocess.run(["bash", str(CLUSTER_SCRIPT), "env"], capture_output=True, text=True,
                             check=True).stdout
    env = dict(os.environ)
    env.update(re.findall(r"export (\w+)=(\S+)", exports))
    # The jobs run `python -m snakemake` and the workflow's tools: the same environment as this process.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PLMSCALE_SLURM_PARTITION"] = "debug"
    env["PLMSCALE_SLURM_ACCOUNT"] = "plmscale"  # the account slurm-cluster.sh registers for root
    env.pop("PLMSCALE_SLURM_GPU_PARTITION", None)
    yield env
    if not running:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop"], capture_output=True)


def run_ids(config: dict) -> list[str]:
    """The grid's run ids, as the workflow expands the config."""
    from plmscale.config import load_config
    from plmscale.grid import expand_grid

    return [spec.run_id for spec in expand_grid(load_config(config))]


# One CPU for the jobs that would take both: the two clean and three tokenize jobs then run side by side
# on the 2-CPU test node. Both runs use it, so their results stay comparable.
SMALL_THREADS = ["--set-threads", "clean=1", "tokenize=1"]


def start_snakemake(workdir: Path, targets, *args, env=None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "snakemake", *targets, *args]
    process = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    process.workdir = Path(workdir)  # where finish() looks for the failed jobs' Slurm logs
    return process


def failed_job_logs(workdir: Path, lines=20) -> str:
    """The tail of every Slurm job log under workdir that records a failure, C++ stack frames left out: a CI
    report then shows why a job failed, not only that it did (the logs are gone with the CI machine)."""
    tails = []
    for path in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")):
        text = path.read_text(errors="replace")
        if "Error in rule" in text or "Traceback" in text:
            kept = [line for line in text.splitlines() if line.strip() and not line.startswith("frame #")]
            # The errors themselves (the job's last lines are Snakemake's epilogue), each once, then the tail.
            errors = list(dict.fromkeys(line for line in kept if re.search(r"Error\b|error:|CANCELLED|Killed", line)))
            tails.append(f"--- {path.relative_to(workdir)}: its error lines, then its last {lines} lines\n"
                         + "\n".join(errors[:20] + ["..."] + kept[-lines:]))
    return "\n".join(tails)


def finish(process: subprocess.Popen) -> str:
    log, _ = process.communicate(timeout=600)
    if process.returncode != 0 and getattr(process, "workdir", None):
        log += "\n" + failed_job_logs(process.workdir)
    assert process.returncode == 0, f"{' '.join(process.args)} failed:\n{log[-12000:]}"
    return log


def snakemake(workdir: Path, targets, *args, env=None) -> str:
    return finish(start_snakemake(workdir, targets, *args, env=env))


def jobs_per_rule(log: str, kind: str = "rule") -> Counter:
    """Jobs per rule announced in a Snakemake log; with a cluster executor, local rules say "localrule"."""
    return Counter(m.group(1) for m in re.finditer(rf"^{kind} (\w+):$", log, re.MULTILINE))


def sacct_jobs(run_uuid: str, env) -> list[dict]:
    out = subprocess.run(["sacct", "-X", "--parsable2", "--noheader", "--starttime", "now-1days",
                          "--name", run_uuid, "--format", "JobIDRaw,State,ExitCode,Comment%200"],
                         capture_output=True, text=True, env=env, check=True).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return [dict(zip(("job_id", "state", "exit_code", "comment"), row)) for row in rows]


def file_digests(directory: Path) -> dict:
    """sha256 of every data file; the training jobs' shard-verification stamp (plmscale.data.shard_check.STAMP,
    a cache of file sizes and mtimes, which differ between two machines by nature) is not data."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != STAMP}


def training_numbers(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k not in TIMING_KEYS}
    with open(run_dir / "curve.csv", newline="") as handle:
        curve = [{k: row[k] for k in ("step", "tokens", "train_loss", "valid_loss")} for row in
                 csv.DictReader(handle)]
    return {"metrics": numbers, "curve": curve}


def test_workflow_on_slurm_matches_local_run(slurm_env, tmp_path):
    config = default_config_with(TINY)
    # plmscale travels with the copies: Slurm jobs start in the workflow directory.
    local = workflow_copy(tmp_path / "local", config, extra_parts=["plmscale"])
    on_slurm = workflow_copy(tmp_path / "slurm", config, extra_parts=["plmscale"])
    runs = run_ids(config)
    assert runs, "the tiny grid expanded to no runs"
    targets = DATA_TARGETS + [f"results/runs/{run}/metrics.json" for run in runs]
    dag = jobs_per_rule(snakemake(on_slurm, targets, "--dry-run", "--cores", "1", *SMALL_THREADS))
    assert dag["train"] == len(runs) and dag["tokenize"] == 3, dag

    # The local run works while the Slurm run mostly waits for the plugin's status checks.
    local_run = start_snakemake(local, targets, "--cores", "2", *SMALL_THREADS)
    log = snakemake(
        on_slurm, targets, "--profile", "profiles/slurm", *SMALL_THREADS,
        "--jobs", "4", "--retries", "0",
        # First status check after 1 s instead of a real cluster's 40 s (the plugin adds 10 s per check
        # that finds nothing finished).
        "--slurm-init-seconds-before-status-checks", "1",
        "--slurm-keep-successful-logs",
        env=slurm_env)
    finish(local_run)

    # Every job of the DAG ran, either as a declared local rule (the demo corpus and its floor; downloads: they
    # need the submit host's network) or as a Slurm job of this run that completed.
    expected = jobs_per_rule(log)
    local_jobs = jobs_per_rule(log, "localrule")
    assert expected + local_jobs == dag, (expected, local_jobs, dag)
    assert set(local_jobs) <= {"demo_corpus", "demo_floor", "download"}, local_jobs
    run_uuid = re.search(r"SLURM run ID: (\S+)", log).group(1)
    jobs = sacct_jobs(run_uuid, slurm_env)
    assert all(job["state"] == "COMPLETED" and job["exit_code"] == "0:0" for job in jobs), jobs
    ran = Counter(re.match(r"rule_(\w+?)(_wildcards_.*)?$", job["comment"]).group(1) for job in jobs)
    assert ran == expected, f"Slurm ran {dict(ran)}, the DAG has {dict(expected)}"
    slurm_logs = on_slurm / ".snakemake" / "slurm_logs"  # one directory per rule: rule_<name>/...
    logs = Counter(p.relative_to(slurm_logs).parts[0].removeprefix("rule_") for p in slurm_logs.rglob("*.log"))
    assert logs == expected, f"plugin logs {dict(logs)}, the DAG has {dict(expected)}"

    # Same results: shards byte for byte, training number for number.
    shards_local = file_digests(local / "results" / "data" / "shards")
    assert shards_local and shards_local == file_digests(on_slurm / "results" / "data" / "shards")
    for run in runs:
        assert training_numbers(local / "results" / "runs" / run) == \
            training_numbers(on_slurm / "results" / "runs" / run), run
