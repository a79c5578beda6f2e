"""Launching one run on several processes: the torchrun command line, on one node or across Slurm nodes.

A process per GPU, or train.distributed.cpu_processes_per_node of them on a CPU study (gloo); the same
command either way. One node: `torchrun --standalone --nproc-per-node K ...`.
Several nodes (a Slurm allocation): the job's batch step runs `srun` with one task per node; each
task is `python -m plmscale.train.launch`, which reads its own node's Slurm environment and execs
torchrun with a c10d rendezvous on the first host of SLURM_JOB_NODELIST:
    torchrun --nnodes N --nproc-per-node K --node-rank $SLURM_NODEID
             --rdzv-backend c10d --rdzv-endpoint <first host>:<port> --rdzv-id $SLURM_JOB_ID
             --rdzv-conf is_host=<1 on node rank 0, else 0> ...
The port is the job's own (MASTER_PORT, else derived from the job id): two jobs whose first host is the same
node must not share a rendezvous store, or the first to finish takes the other's store down with it.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys

from plmscale.errors import PlmscaleError

# Ports 15000-24999, below Linux's ephemeral range (32768-60999): one per job id modulo 10,000.
RDZV_PORT_BASE, RDZV_PORT_SPAN = 15000, 10000
# torchrun as a module of the running interpreter: works whether or not the environment's bin/ is on PATH.
TORCHRUN = (sys.executable, "-m", "torch.distributed.run")


def _split_top_level(text: str) -> list[str]:
    """Split "a[1-2,4],b" at commas outside brackets."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise ValueError(f"unbalanced brackets in Slurm node list {text!r}")
    parts.append("".join(current))
    return [p for p in parts if p]


_BRACKET = re.compile(r"^(?P<prefix>[^\[]*)\[(?P<ranges>[^\]]+)\](?P<rest>.*)$")


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compact host list as host names: "gpu[01-03,07],login1" -> gpu01 gpu02 gpu03 gpu07 login1.

    Zero padding follows the range's first number; several bracket groups ("r[1-2]n[1-2]") expand as a
    product, in Slurm's order.
    """
    hosts = []
    for part in _split_top_level(nodelist.strip()):
        match = _BRACKET.match(part)
        if not match:
            hosts.append(part)
            continue
        for item in match["ranges"].split(","):
            if "-" in item:
                start, end = item.split("-", 1)
                numbers = range(int(start), int(end) + 1)
                width = len(start)
            else:
                numbers, width = [int(item)], len(item)
            for number in numbers:
                hosts.extend(expand_nodelist(f"{match['prefix']}{number:0{width}d}{match['rest']}"))
    return hosts


def first_host(env: dict) -> str:
    """The rendezvous host: MASTER_ADDR if set, else the first host of the job's node list.

    `scontrol show hostnames` is Slurm's own expansion and is used when available; the parser above is
    the fallback (and what the tests check).
    """
    if env.get("MASTER_ADDR"):
        return env["MASTER_ADDR"]
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise PlmscaleError("a multi-node run needs SLURM_JOB_NODELIST (run it inside a Slurm "
                            "allocation) or MASTER_ADDR set to the first node's address")
    if shutil.which("scontrol") and env.get("PLMSCALE_PARSE_NODELIST") != "1":
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                                 text=True, timeout=30, check=True).stdout.split()
            if out:
                return out[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return expand_nodelist(nodelist)[0]


def slurm_job_id(env: dict) -> str | None:
    """The Slurm job id of the environment (SLURM_JOB_ID, or the older SLURM_JOBID), or None outside a job."""
    return env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID") or None


def rendezvous_port(env: dict) -> int:
    """The job's rendezvous port: MASTER_PORT if set, else one derived from the Slurm job id.

    A fixed port is shared by every job whose first node is the same host (several small jobs on one node,
    or a job beside another's tail): the second job's agents would join the first job's store and fail
    when that job ends (seen in tests/test_multinode.py with two grid points on the same two nodes).
    """
    if env.get("MASTER_PORT"):
        return int(env["MASTER_PORT"])
    job_id = slurm_job_id(env)
    if not job_id or not job_id.isdigit():
        raise PlmscaleError("a multi-node run needs SLURM_JOB_ID (run it inside a Slurm allocation) or "
                            "MASTER_PORT set to a free port on the first node")
    return RDZV_PORT_BASE + int(job_id) % RDZV_PORT_SPAN


def torchrun_command(spec: dict, nodes: int, processes_per_node: int, script_args: list[str],
                     env: dict | None = None) -> list[str]:
    """The torchrun argv that starts this node's share of a run's processes.

    `script_args` follow torchrun's own options, e.g. ["-m", "plmscale.cli", "train", "--spec", path].
    """
    env = dict(os.environ if env is None else env)
    if nodes < 1 or processes_per_node < 1:
        raise ValueError("nodes and processes_per_node must be at least 1")
    command = [*TORCHRUN]
    if nodes == 1:
        command += ["--standalone", "--nnodes", "1", "--nproc-per-node", str(processes_per_node)]
    else:
        node_rank = env.get("SLURM_NODEID") or env.get("NODE_RANK")
        if node_rank is None:
            raise PlmscaleError(f"run {spec.get('run_id')} spans {nodes} nodes: start it with srun inside "
                                f"a Slurm allocation (SLURM_NODEID names each node's rank)")
        rdzv_id = slurm_job_id(env) or spec.get("run_id", "plmscale")
        # Node rank 0 hosts the store, named rather than guessed from host names (torchrun's guess fails where
        # a node's name does not resolve to its own address), and with no fallback: if the port is taken, the
        # run fails with that error instead of joining whatever store listens there.
        is_host = 1 if str(node_rank) == "0" else 0
        command += ["--nnodes", str(nodes), "--nproc-per-node", str(processes_per_node),
                    "--node-rank", str(node_rank), "--rdzv-backend", "c10d",
                    "--rdzv-endpoint", f"{first_host(env)}:{rendezvous_port(env)}", "--rdzv-id", str(rdzv_id),
                    "--rdzv-conf", f"is_host={is_host}"]
    return command + list(script_args)


def launch_command(spec: dict, nodes: int, processes_per_node: int, script_args: list[str],
                   env: dict | None = None) -> list[str]:
    """What the job's first process runs: torchrun directly on one node, srun of this module on several."""
    if nodes == 1:
        return torchrun_command(spec, 1, processes_per_node, script_args, env)
    env = dict(os.environ if env is None else env)
    if not slurm_job_id(env):
        raise PlmscaleError(
            f"run {spec.get('run_id')} is planned across {nodes} nodes (train.distributed.cpu_nodes, or more GPUs "
            f"than train.distributed.gpus_per_node_max): run the workflow on a Slurm cluster "
            f"(--profile profiles/slurm), or plan the run on one node")
    return ["srun", "--nodes", str(nodes), "--ntasks-per-node", "1", "--kill-on-bad-exit=1",
            sys.executable, "-m", "plmscale.train.launch", "--run-id", str(spec.get("run_id", "run")),
            "--nodes", str(nodes), "--processes-per-node", str(processes_per_node), "--", *script_args]


def worker_args(spec_path, train_dir, valid_dir, out_dir, checkpoint_dir, threads) -> list[str]:
    """What every torchrun worker runs: `plmscale train` on the spec file the job wrote."""
    return ["-m", "plmscale.cli", "train", "--spec", str(spec_path), "--train-dir", str(train_dir),
            "--valid-dir", str(valid_dir), "--out-dir", str(out_dir), "--checkpoint-dir", str(checkpoint_dir),
            "--threads", str(threads)]


def run_training_job(spec: dict, train_dir, valid_dir, out_dir, checkpoint_dir, threads: int,
                     processes_per_node: int = 1, nodes: int = 1) -> None:
    """One grid point as a job: in this process when it is one process, under torchrun when several
    (a process per GPU, or the CPU plan's processes; plmscale.grid.resources.processes_per_node).

    The spec is written to out_dir/spec.json first: the run directory then says what was trained, and
    torchrun's workers read it from there.
    """
    import json
    from pathlib import Path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path = out_dir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
    if processes_per_node * nodes <= 1:
        from plmscale.train.loop import train_run
        train_run(spec, train_dir, valid_dir, out_dir, checkpoint_dir, threads)
        return
    # Each worker gets an equal share of the job's CPUs for its data path and intra-op threads.
    per_worker = max(1, int(threads) // max(1, processes_per_node))
    command = launch_command(spec, nodes, processes_per_node,
                             worker_args(spec_path, train_dir, valid_dir, out_dir, checkpoint_dir, per_worker))
    import logging
    logging.getLogger(__name__).info("launching %s", " ".join(command))
    env = dict(os.environ, OMP_NUM_THREADS=str(per_worker))
    completed = subprocess.run(command, env=env)
    if completed.returncode != 0:
        raise PlmscaleError(f"run {spec.get('run_id')}: torchrun exited with status {completed.returncode}; "
                            f"the workers' errors are in the job log above this line")


def main(argv=None) -> int:
    """Per-node entry point under srun: build this node's torchrun command and replace this process."""
    parser = argparse.ArgumentParser(description="start this node's torchrun for a multi-node run")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--processes-per-node", type=int, required=True)
    parser.add_argument("script_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    script_args = args.script_args[1:] if args.script_args[:1] == ["--"] else args.script_args
    command = torchrun_command({"run_id": args.run_id}, args.nodes, args.processes_per_node, script_args)
    # In the job's log, one line per node: which node took which rank, and where the rendezvous is.
    print(f"plmscale.train.launch on {socket.gethostname()}: {' '.join(command)}", file=sys.stderr, flush=True)
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
