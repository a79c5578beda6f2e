"""Several processes, one run: torchrun environment, DDP or FSDP2 wrapping, reductions, full state dicts.

Under torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment) the process group is nccl on CUDA and
gloo on CPU. Strategy (resolved by the grid from its memory estimate): "none" (one process), "ddp"
(replicated weights, averaged gradients) or "fsdp" (FSDP2 `fully_shard` per block, then the root: weights,
gradients and optimizer state sharded across ranks).

Checkpoints hold the FULL (unsharded) state, gathered with torch.distributed.checkpoint.state_dict: one
portable file whatever the strategy or world size, loaded by every rank. Simple and safe for the sizes a
node's CPU memory holds; a 10B-parameter run would want sharded torch.distributed.checkpoint files instead.
"""

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

STRATEGIES = ("none", "ddp", "fsdp")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(preference: str = "auto") -> str:
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return preference


def setup(device_preference: str = "auto") -> DistContext:
    """Join the process group torchrun describes (no-op for a single process)."""
    kind = resolve_device(device_preference)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if kind == "cuda" else torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=30))
    return DistContext(rank, world, local_rank, device)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, strategy: str, ctx: DistContext) -> nn.Module:
    if not ctx.distributed or strategy == "none":
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    raise ValueError(f"unknown distributed strategy {strategy!r}; expected one of {STRATEGIES}")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def sync_gradients(model: nn.Module, enabled: bool):
    """Context for one micro-batch: skip the gradient all-reduce on all but the last micro-batch (DDP)."""
    import contextlib
    if not enabled and hasattr(model, "no_sync"):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter only on the last one
        model.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.distributed:
        values = values.to(ctx.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def full_state(model: nn.Module, optimizer=None) -> tuple[dict, dict | None]:
    """Unsharded, CPU, plain-tensor state of model (and optimizer), whatever the wrapping: parameter names
    as keys, the layout of torch.distributed.checkpoint's full state dicts.

    A collective under FSDP: every rank must call it. One process reads the plain state dicts directly
    (torch.distributed.checkpoint costs ~1 s of imports, and takes only torch.optim optimizers).
    """
    if not _in_process_group():
        model_state = {name: value.detach().cpu() for name, value in unwrap(model).state_dict().items()}
        return model_state, None if optimizer is None else named_optimizer_state(model, optimizer)
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    optim_state = get_optimizer_state_dict(model, optimizer, options=options) if optimizer is not None else None
    return model_state, optim_state


def load_full_state(model: nn.Module, model_state: dict, optimizer=None, optim_state=None) -> None:
    if not _in_process_group():
        unwrap(model).load_state_dict(model_state)
        if optimizer is not None and optim_state is not None:
            load_named_optimizer_state(model, optimizer, optim_state)
        return
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)
    set_model_state_dict(model, model_state, options=StateDictOptions(full_state_dict=True))
    if optimizer is not None and optim_state is not None:
        set_optimizer_state_dict(model, optimizer, optim_state, options=StateDictOptions(full_state_dict=True))


def _in_process_group() -> bool:
    return dist.is_available() and dist.is_initialized()


def _parameter_names(model: nn.Module, optimizer) -> list[str]:
    """The names of the optimizer's parameters, in its numbering (group order)."""
    names = {param: name for name, param in unwrap(model).named_parameters()}
    return [names[param] for group in optimizer.param_groups for param in group["params"]]


def named_optimizer_state(model: nn.Module, optimizer) -> dict:
    """optimizer.state_dict() with parameter names instead of numbers, tensors on the CPU."""
    numbered, names = optimizer.state_dict(), _parameter_names(model, optimizer)

    def cpu(value):
        return value.detach().cpu() if isinstance(value, torch.Tensor) else value

    return {"state": {names[number]: {key: cpu(value) for key, value in state.items()}
                      for number, state in numbered["state"].items()},
            "param_groups": [{**group, "params": [names[number] for number in group["params"]]}
                             for group in numbered["param_groups"]]}


def load_named_optimizer_state(model: nn.Module, optimizer, state: dict) -> None:
    numbers = {name: number for number, name in enumerate(_parameter_names(model, optimizer))}
    optimizer.load_state_dict({
        "state": {numbers[name]: param_state for name, param_state in state["state"].items()},
        "param_groups": [{**group, "params": [numbers[name] for name in group["params"]]}
                         for group in state["param_groups"]]})
