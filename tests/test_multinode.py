"""A grid point across two real Slurm nodes: plmscale's own multi-node launch, on one machine.

`scripts/slurm-cluster.sh start --nodes 2` brings up node1 and node2, each a network namespace with its own
address, host name and slurmd (docs/cluster.md). Through `snakemake --profile profiles/slurm`, the demo's data
stage (but the identity search) and two CPU grid points planned across both nodes (train.distributed.cpu_nodes: 2,
FSDP over gloo) run
as Slurm jobs: the data jobs spread over the nodes, each grid point is ONE job on node[1-2] whose batch step
srun's `python -m plmscale.train.launch` on every node, which execs `torchrun --nnodes 2 --node-rank
$SLURM_NODEID` with its c10d rendezvous on node1. Checked against the same run on one node with the same world
size (two processes under `torchrun --standalone`), and against itself when node2 dies half-way: Slurm requeues
the job and training resumes from its last checkpoint, to the same numbers.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from plmscale.config import load_config
from plmscale.grid import expand_grid
from plmscale.train.checkpoint import LAST
from plmscale.train.launch import run_training_job
from test_slurm import (DATA_TARGETS, SMALL_THREADS, TINY, finish, jobs_per_rule, sacct_jobs, snakemake,
                        start_snakemake, training_numbers)
from workflow_helpers import default_config_with, merged, workflow_copy

pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.multinode]

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "scripts" / "slurm-cluster.sh"
CANNOT_INSTALL, NO_NAMESPACES = 3, 4  # slurm-cluster.sh's exit statuses: no Slurm, no network namespaces
# Its own directory and ports, so that the one-node cluster of test_slurm.py may run beside it.
CLUSTER = {"PLMSCALE_SLURM_DIR": os.path.join(tempfile.gettempdir(), "plmscale-slurm-2nodes"),
           "PLMSCALE_SLURM_PORT": "16917"}

TWO_NODES = {"strategy": "fsdp", "cpu_nodes": 2, "cpu_processes_per_node": 1}
# The tiny corpus of test_slurm.py; one run long enough to be killed half-way (64 steps, a checkpoint every 4)
# and a short one, both across the two nodes.
# No identity search: one Slurm job less in the chain before training (the one-node test runs it).
CONFIG = merged(TINY, {"data": {"identity": {"enabled": False}}, "train": {
    "ladder": {"t1": {"layers": 1, "d_model": 16, "heads": 2}},
    "runs": [{"objective": "clm", "model": "t1", "tokens": 65536},
             {"objective": "mlm", "model": "t1", "tokens": 8192}],
    "eval_every_steps": 16, "checkpoint_every_steps": 4, "distributed": TWO_NODES}})
SLURM_ARGS = ["--profile", "profiles/slurm", *SMALL_THREADS, "--jobs", "4", "--retries", "0",
              "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs"]


def cluster(command: str, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER_SCRIPT), command, *args], capture_output=True, text=True,
                          env={**os.environ, **CLUSTER, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def two_nodes():
    """Environment pointing at a running two-node cluster; starts it (and stops it afterwards) if needed."""
    running = cluster("status").returncode == 0
    if not running:
        started = cluster("start", "--nodes", "2", timeout=900)
        if started.returncode in (CANNOT_INSTALL, NO_NAMESPACES):
            pytest.skip("no two-node cluster here: " + " ".join(started.stderr.split()))
        if started.returncode != 0:
            cluster("stop")
            pytest.fail(f"the two-node cluster did not start:\n{started.stdout}\n{started.stderr}")
    exports = cluster("env").stdout
    env = dict(os.environ)
    env.update(re.findall(r"export (\w+)=(\S+)", exports))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PLMSCALE_SLURM_PARTITION"] = "debug"
    env["PLMSCALE_SLURM_ACCOUNT"] = "plmscale"
    env.pop("PLMSCALE_SLURM_GPU_PARTITION", None)
    yield env
    if not running:
        cluster("stop")


def specs(config: dict) -> dict:
    return {spec.run_id: spec for spec in expand_grid(load_config(config))}


def sacct_nodes(job_ids, env) -> dict:
    """Job id -> the node list Slurm ran it on."""
    out = subprocess.run(["sacct", "-X", "--parsable2", "--noheader", "--jobs", ",".join(job_ids),
                          "--format", "JobIDRaw,NodeList"], capture_output=True, text=True, env=env,
                         check=True).stdout
    return dict(line.split("|") for line in out.splitlines() if line.strip())


@pytest.fixture(scope="module")
def two_node_study(two_nodes, tmp_path_factory):
    """The demo's data stage and both grid points through profiles/slurm on the two nodes: (workdir, log, sacct
    rows). Only the identity search is left out (one Slurm job less in the chain; test_slurm.py runs it)."""
    workdir = workflow_copy(tmp_path_factory.mktemp("two_nodes") / "wf", default_config_with(CONFIG),
                            extra_parts=["plmscale"])
    targets = DATA_TARGETS + [f"results/runs/{run}/metrics.json" for run in specs(default_config_with(CONFIG))]
    log = snakemake(workdir, targets, *SLURM_ARGS, env=two_nodes)
    run_uuid = re.search(r"SLURM run ID: (\S+)", log).group(1)
    return workdir, log, sacct_jobs(run_uuid, two_nodes)


def test_grid_point_spans_both_nodes_and_equals_one_node_run(two_nodes, two_node_study, tmp_path):
    workdir, log, jobs = two_node_study
    assert all(job["state"] == "COMPLETED" and job["exit_code"] == "0:0" for job in jobs), jobs
    nodes = sacct_nodes([job["job_id"] for job in jobs], two_nodes)
    train_jobs = [job["job_id"] for job in jobs if job["comment"].startswith("rule_train_")]
    data_jobs = [job["job_id"] for job in jobs if not job["comment"].startswith("rule_train_")]
    assert len(train_jobs) == 2 and all(nodes[job] == "node[1-2]" for job in train_jobs), (jobs, nodes)
    # The data stage's jobs (cleaning per source, dedup, clustering, the split, tokenize per split) run as Slurm
    # jobs spread over both nodes: the partition places each job on the least loaded node.
    submitted = jobs_per_rule(log)
    assert submitted["tokenize"] == 3 and submitted["train"] == 2, submitted
    assert all(submitted[rule] >= 1 for rule in ("clean", "dedup", "cluster", "split")), submitted
    assert {nodes[job] for job in data_jobs} == {"node1", "node2"}, nodes

    config = default_config_with(CONFIG)
    planned = specs(config)
    run = next(run_id for run_id, spec in planned.items() if spec.tokens == 65536)
    slurm_log = next((workdir / ".snakemake" / "slurm_logs").glob(f"rule_train/*{run}*/*.log")).read_text()
    # torchrun on each node, its node rank from SLURM_NODEID, the rendezvous on the first host (node1).
    launches = dict(re.findall(r"plmscale.train.launch on (node\d): .*--node-rank (\d) ", slurm_log))
    assert launches == {"node1": "0", "node2": "1"}, slurm_log[-3000:]
    # Each job's own port (15000 + job id mod 10,000): the two grid points run at once on the same two nodes, and
    # a shared port had the short run's end take the long run's rendezvous store down (CI, 2026-12-07).
    endpoints = set(re.findall(r"--rdzv-backend c10d --rdzv-endpoint node1:(\d+) --rdzv-id (\d+)", slurm_log))
    assert [(int(port), int(job)) for port, job in endpoints] == [(15000 + int(job) % 10000, int(job))
                                                                  for _, job in endpoints], endpoints
    assert len(endpoints) == 1 and set(re.findall(r"--rdzv-conf is_host=(\d)", slurm_log)) == {"0", "1"}

    # The same run with the same world size on one node: two processes under torchrun --standalone.
    one_node = specs(merged(config, {"train": {"distributed": {**TWO_NODES, "cpu_nodes": 1,
                                                                "cpu_processes_per_node": 2}}}))[run]
    assert one_node.training_dict() == planned[run].training_dict()
    assert one_node.resources["nodes"] == 1 and one_node.resources["processes_per_node"] == 2
    shards = workdir / "results" / "data" / "shards"
    run_training_job(one_node.to_dict(), shards / "train", shards / "valid", tmp_path / "run", tmp_path / "ckpt",
                     threads=one_node.resources["cpus"], processes_per_node=2, nodes=1)
    assert training_numbers(tmp_path / "run") == training_numbers(workdir / "results" / "runs" / run)


def test_node_failure_requeues_and_resumes_to_the_same_result(two_nodes, two_node_study):
    """node2's slurmd killed and the node DOWN half-way: Slurm requeues the job, which resumes from last.pt."""
    workdir, _, _ = two_node_study
    planned = specs(default_config_with(CONFIG))
    run = next(run_id for run_id, spec in planned.items() if spec.tokens == 65536)
    run_dir, checkpoints = workdir / "results" / "runs" / run, workdir / "results" / "checkpoints" / run
    uninterrupted = training_numbers(run_dir)
    shutil.rmtree(run_dir)
    shutil.rmtree(checkpoints)

    process = start_snakemake(workdir, [f"results/runs/{run}/metrics.json"], *SLURM_ARGS, env=two_nodes)
    try:
        deadline = time.monotonic() + 300
        while not (checkpoints / LAST).exists():
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.1)
        killed = cluster("kill-node", "node2")
        assert killed.returncode == 0, killed.stderr
        job_id = requeued_job(two_nodes)
        back = cluster("start-node", "node2")
        assert back.returncode == 0, back.stderr
        finish(process)
    finally:
        if process.poll() is None:
            process.kill()
        cluster("start-node", "node2")  # the next test finds both nodes up whatever happened here

    attempts = subprocess.run(["sacct", "--duplicates", "-X", "--parsable2", "--noheader", "--jobs", job_id,
                               "--format", "State,NodeList"], capture_output=True, text=True, env=two_nodes,
                              check=True).stdout.split()
    assert attempts[0].startswith("NODE_FAIL|") and attempts[-1] == "COMPLETED|node[1-2]", attempts
    slurm_log = next((workdir / ".snakemake" / "slurm_logs").glob(f"rule_train/*{run}*/{job_id}.log")).read_text()
    resumed = [int(step) for step in re.findall(rf"resumed {run} at step (\d+)/", slurm_log)]
    assert resumed and resumed[-1] > 0, slurm_log[-3000:]
    assert training_numbers(run_dir) == uninterrupted


def requeued_job(env, timeout=60) -> str:
    """The training job's id, once Slurm has put it back in the queue after the node failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "--noheader", "--format", "%i|%T|%k"], capture_output=True, text=True,
                             env=env).stdout
        for line in out.splitlines():
            job_id, state, comment = line.split("|", 2)
            if comment.startswith("rule_train_") and state in ("PENDING", "REQUEUED"):
                return job_id
        time.sleep(0.5)
    raise AssertionError(f"no requeued training job after {timeout} s:\n{out}")


def test_without_root_two_nodes_are_refused_with_the_reason(tmp_path):
    """Where namespaces cannot be made, start --nodes 2 says why and exits 4 (the fixture above skips on it)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to run the script as another user (setpriv)")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {**os.environ, "PLMSCALE_SLURM_DIR": str(tmp_path / "cluster"), "PLMSCALE_SLURM_PORT": "16997"}
    refused = subprocess.run([*nobody, "bash", str(CLUSTER_SCRIPT), "start", "--nodes", "2"], capture_output=True,
                             text=True, env=env, timeout=60)
    if refused.returncode == CANNOT_INSTALL:
        pytest.skip("Slurm is not installed here")
    assert refused.returncode == NO_NAMESPACES and "needs root" in refused.stderr, refused.stderr
    assert not (tmp_path / "cluster").exists()
