"""What one grid point costs: GPUs (and how to use them), memory, wall time — from its FLOPs.

The numbers are estimates for a scheduler, not measurements: runtime = FLOPs / (GPUs · peak · MFU)
at an assumed MFU, memory = optimizer state + activations. They decide three things:
  - the strategy: "none" (one GPU), "ddp" (state replicated on every GPU), "fsdp" (state sharded,
    when the replicated state does not fit one GPU);
  - the GPU count: the smallest that fits the memory and keeps the runtime under max_runtime_min;
  - the Slurm request: GPUs per node, nodes, CPUs, host memory, time limit.
A CPU study (train.device cpu) runs one process unless train.distributed.cpu_nodes or
cpu_processes_per_node ask for more: then the same torchrun launch as for GPUs, with gloo.
"""

import math

from plmscale.alphabet import VOCAB_SIZE
from plmscale.errors import PlmscaleError

GIB = 2**30

# Dense bf16 peak FLOP/s of known accelerators (per device), matched against the CUDA device name by
# training (an unknown GPU is taken as an H100) and by name in `plmscale predict --device`.
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12,
                  "V100": 125e12}

# Bytes of training state per parameter with AdamW in mixed precision: fp32 weights (4) + fp32 grads (4)
# + Adam first and second moments (4 + 4). bf16 autocast keeps the weights in fp32.
STATE_BYTES_PER_PARAM = 16

# Activation bytes kept for the backward pass, per token, per layer, per unit of d_model, in 16-bit
# without recomputation: Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
# Transformer Models", eq. 2) count 34·s·b·h per layer plus 5·a·s²·b for the attention matrix, which
# fused attention (flash / SDPA) never stores. Our GLU block keeps a little more in the MLP (three
# ffn-wide tensors at 8/3·d instead of two at 4·d) and no dropout masks: about the same 34.
ACTIVATION_BYTES_PER_TOKEN_LAYER_WIDTH = 34

# Per GPU: CUDA context, cuBLAS/NCCL workspaces, allocator fragmentation. A fraction of the card plus a
# fixed amount is kept free before anything is planned into it.
GPU_MEMORY_HEADROOM_FRACTION = 0.10
GPU_MEMORY_FIXED_OVERHEAD = 2 * GIB

# Evaluation costs a forward pass (~1/3 of a training step's FLOPs per token).
EVAL_FLOPS_FRACTION = 1 / 3


def total_compute(spec) -> float:
    """FLOPs of the whole job: training at the real per-token cost (6N plus attention scores, whatever a
    budget counts) plus periodic evaluation."""
    per_token = spec.model_shape.flops_per_token(spec.train.seq_len, "with_attention")
    steps = max(1, math.ceil(spec.tokens / spec.batch_tokens))
    evaluations = steps // spec.train.eval_every_steps + 1
    return per_token * spec.tokens + EVAL_FLOPS_FRACTION * per_token * spec.train.eval_tokens * evaluations


def state_bytes(spec) -> float:
    return STATE_BYTES_PER_PARAM * spec.n_params_with_embeddings


def activation_bytes(spec, bytes_per_value: int = 2) -> float:
    """Activations of one micro batch on one device (16-bit on GPU; pass 4 for fp32 on CPU)."""
    shape = spec.model_shape
    tokens = spec.train.micro_batch_size * spec.train.seq_len
    blocks = tokens * shape.layers * shape.d_model * ACTIVATION_BYTES_PER_TOKEN_LAYER_WIDTH
    # The logits and their gradient in fp32 (the loss is computed in fp32), plus the 16-bit copy.
    logits = tokens * VOCAB_SIZE * (4 + 4 + 2)
    return blocks * bytes_per_value / 2 + logits


def gpu_counts(gpus_per_node: int, limit: int) -> list[int]:
    """GPU counts worth asking for: powers of two on one node, then whole nodes doubling.

    Powers of two keep the global batch divisible into equal micro batches on every GPU.
    """
    counts = [g for g in (1, 2, 4, 8, 16, 32, 64, 128, 256) if g <= min(gpus_per_node, limit)]
    nodes = 2
    while gpus_per_node * nodes <= limit:
        counts.append(gpus_per_node * nodes)
        nodes *= 2
    return counts or [1]


def _round_up_mb(value_bytes: float, step_mb: int = 1024) -> int:
    return int(math.ceil(value_bytes / 2**20 / step_mb) * step_mb)


def estimate_resources(spec, train: dict, where: str = "config") -> dict:
    """Resources of one run (a plmscale.grid.RunSpec) under config.train's `resources` and `distributed`."""
    res = train["resources"]
    margin = res.get("runtime_margin", 1.25)
    compute = total_compute(spec)
    if train["device"] == "cpu":
        return _cpu_resources(spec, train, compute, margin, where)

    per_node = train["distributed"]["gpus_per_node_max"]
    requested = train["distributed"]["strategy"]
    usable = res["gpu_mem_gb"] * GIB * (1 - GPU_MEMORY_HEADROOM_FRACTION) - GPU_MEMORY_FIXED_OVERHEAD
    state = state_bytes(spec)
    activations = activation_bytes(spec)
    room_for_state = usable - activations
    if room_for_state <= 0:
        raise PlmscaleError(
            f"{where}: run {spec.run_id} needs ~{activations / GIB:.1f} GiB of activations per GPU "
            f"(micro_batch_size {spec.train.micro_batch_size} × seq_len {spec.train.seq_len}) but a GPU has "
            f"~{usable / GIB:.1f} GiB usable; lower train.micro_batch_size")
    # Every GPU needs at least one micro batch per optimizer step.
    data_parallel_limit = max(1, spec.batch_tokens // (spec.train.micro_batch_size * spec.train.seq_len))
    limit = min(res.get("max_gpus", 64), data_parallel_limit)
    counts = gpu_counts(per_node, limit)

    fits_replicated = state <= room_for_state
    if requested == "ddp" and not fits_replicated:
        raise PlmscaleError(
            f"{where}: run {spec.run_id} needs ~{(state + activations) / GIB:.0f} GiB per GPU with its "
            f"state replicated (DDP); set train.distributed.strategy to fsdp or auto")
    sharded = requested == "fsdp" or (requested == "auto" and not fits_replicated)

    def memory_ok(gpus):
        return (state / gpus if sharded else state) <= room_for_state

    def runtime_min(gpus):
        seconds = compute / (gpus * res["gpu_peak_flops"] * res["assumed_mfu"]) * margin
        return max(res["min_runtime_min"], int(math.ceil(seconds / 60)))

    fitting = [g for g in counts if memory_ok(g)]
    if not fitting:
        raise PlmscaleError(
            f"{where}: run {spec.run_id} does not fit even sharded over {counts[-1]} GPUs "
            f"(~{state / GIB:.0f} GiB of state); raise train.resources.max_gpus or lower micro_batch_size")
    within_time = [g for g in fitting if runtime_min(g) <= res.get("max_runtime_min", 2880)]
    gpus = within_time[0] if within_time else fitting[-1]
    nodes = max(1, math.ceil(gpus / per_node))
    gpus_per_node = gpus // nodes
    strategy = "fsdp" if sharded else ("ddp" if gpus > 1 else "none")

    per_gpu_bytes = (state / gpus if sharded else state) + activations
    # Host memory per node: a data loader and pinned buffers per GPU, plus room for a full checkpoint
    # (weights and optimizer state): rank 0 gathers and writes the whole state, sharded run or not
    # (plmscale.train.distributed.full_state), and Slurm's --mem is the same on every node.
    staged = state
    mem_mb = _round_up_mb(8 * GIB + 4 * GIB * gpus_per_node + staged)
    return {
        "device": "cuda", "gpus": gpus, "nodes": nodes, "gpus_per_node": gpus_per_node,
        "strategy": strategy, "runtime_min": runtime_min(gpus), "mem_mb": mem_mb,
        "cpus": res["cpus_per_gpu"] * gpus_per_node, "gpu_model": res.get("gpu_model"),
        "gpu_mem_estimate_gb": round(per_gpu_bytes / GIB, 2),
        "over_max_runtime": not within_time,
        "compute_flops": compute,
    }


def _cpu_resources(spec, train: dict, compute: float, margin: float, where: str) -> dict:
    """One process with train.threads threads, or train.distributed.cpu_nodes × cpu_processes_per_node processes
    of train.threads threads each (gloo, DDP unless strategy says fsdp), the global batch unchanged."""
    res = train["resources"]
    nodes, per_node = train["distributed"]["cpu_nodes"], train["distributed"]["cpu_processes_per_node"]
    world = nodes * per_node
    threads = train["threads"]
    strategy = "none"
    if world > 1:
        micro_batches = max(1, spec.batch_tokens // (spec.train.micro_batch_size * spec.train.seq_len))
        if world > micro_batches:
            raise PlmscaleError(
                f"{where}: run {spec.run_id} is planned on {world} CPU processes (train.distributed.cpu_nodes "
                f"{nodes} × cpu_processes_per_node {per_node}) but its batch of {spec.batch_tokens} tokens holds "
                f"{micro_batches} micro batch(es) of train.micro_batch_size {spec.train.micro_batch_size} × seq_len "
                f"{spec.train.seq_len}, one per process at least; use fewer processes or a smaller micro_batch_size")
        requested = train["distributed"]["strategy"]
        strategy = requested if requested in ("ddp", "fsdp") else "ddp"
    seconds = compute / (world * threads * res.get("cpu_flops_per_thread", 2e10)) * margin
    runtime = max(res["min_runtime_min"], int(math.ceil(seconds / 60)))
    # fp32 on CPU: state plus activations at 4 bytes, plus the interpreter, torch and a data buffer, per process.
    mem = (state_bytes(spec) + activation_bytes(spec, bytes_per_value=4) + 1.5 * GIB) * per_node
    planned = {
        "device": "cpu", "gpus": 0, "nodes": nodes, "gpus_per_node": 0, "strategy": strategy,
        "runtime_min": runtime, "mem_mb": _round_up_mb(mem, 512), "cpus": threads * per_node, "gpu_model": None,
        "gpu_mem_estimate_gb": 0.0, "over_max_runtime": runtime > res.get("max_runtime_min", 2880),
        "compute_flops": compute,
    }
    if world > 1:  # written only when set, so a one-process plan (and the files that record it) stays as it was
        planned["processes_per_node"] = per_node
    return planned


def processes_per_node(res: dict) -> int:
    """Training processes a run starts on each of its nodes: one per GPU, else the CPU plan's count (1 by default)."""
    return res["gpus_per_node"] or res.get("processes_per_node", 1)


def gpu_hours(res: dict) -> float:
    """The GPU-hours a planned job requests: its GPUs times its time limit (0 for a CPU job)."""
    return float(res["gpus"]) * float(res["runtime_min"]) / 60.0


def snakemake_resources(res: dict) -> dict:
    """A run's estimate in the resource names Snakemake and its Slurm plugin read; None drops a key.

    One node: `gpu` (the plugin's --gpus, and `--resources gpu=K` locally) and `gpu_model`. Several nodes:
    one task per node, `mpi="srun"` so the plugin does not wrap the job script in `srun -n1` (the script
    starts torchrun on every node itself), and the per-node GPUs through slurm_extra, because the plugin
    turns `tasks` into --ntasks-per-gpu when `gpu` is set. `processes_per_node` is for the job itself
    (workflow_scripts/train.py): how many torchrun workers to start on each node.
    """
    single_gpu_node = res["gpus"] > 0 and res["nodes"] == 1
    multi_node = res["nodes"] > 1
    per_node = f"{res['gpu_model']}:{res['gpus_per_node']}" if res["gpu_model"] else res["gpus_per_node"]
    node_extra = "--ntasks-per-node=1" + (f" --gpus-per-node={per_node}" if res["gpus_per_node"] else "")
    return {
        "mem_mb": res["mem_mb"],
        "runtime": res["runtime_min"],
        "cpus_per_task": res["cpus"],
        "gpu": res["gpus"] if single_gpu_node else None,
        "gpu_model": res["gpu_model"] if single_gpu_node and res["gpu_model"] else None,
        "gpus_per_node": res["gpus_per_node"],
        "processes_per_node": processes_per_node(res),
        "nodes": res["nodes"] if multi_node else None,
        "tasks": res["nodes"] if multi_node else None,
        "mpi": "srun" if multi_node else None,
        "slurm_extra": node_extra if multi_node else None,
    }
