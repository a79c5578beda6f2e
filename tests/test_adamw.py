"""plmscale.train.adamw: torch's fused AdamW kernel without torch.optim must give torch.optim's numbers bit
for bit, keep its state-dict layout, and keep torch._dynamo out of a CPU training process."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from plmscale.model import build_model
from plmscale.train import adamw
from plmscale.train import distributed as distr
from plmscale.train.loop import make_optimizer, param_groups

SHAPE = {"layers": 2, "d_model": 16, "heads": 2, "ffn_dim": 48}
BETAS = (0.9, 0.95)


def model_and_batches(seed=0, steps=6):
    torch.manual_seed(seed)
    model = build_model(SHAPE, max_len=32)
    batches = [torch.randint(4, 24, (3, 32), generator=torch.Generator().manual_seed(100 + i)) for i in range(steps)]
    return model, batches


def train(model, optimizer, batches, lrs):
    for tokens, lr in zip(batches, lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        _, loss = model(tokens, causal=True, labels=tokens)
        (loss / tokens.numel()).backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def torch_adamw(model, lr=3e-3):
    return torch.optim.AdamW(param_groups(model, 0.1), lr=lr, betas=BETAS, fused=True)


def fused_adamw(model, lr=3e-3):
    return adamw.FusedAdamW(param_groups(model, 0.1), lr=lr, betas=BETAS)


LRS = [3e-3, 2.5e-3, 2e-3, 1e-3, 5e-4, 1e-4]


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key], b[key]), key
        elif isinstance(a[key], dict):
            assert_same_state(a[key], b[key])
        else:
            assert a[key] == b[key], key


def test_same_weights_and_state_as_torch_optim_bit_for_bit():
    reference, batches = model_and_batches()
    ours, _ = model_and_batches()
    optimizer_ref, optimizer_ours = torch_adamw(reference), fused_adamw(ours)
    train(reference, optimizer_ref, batches, LRS)
    train(ours, optimizer_ours, batches, LRS)
    for (name, p), (_, q) in zip(reference.named_parameters(), ours.named_parameters()):
        assert torch.equal(p, q), name
    expected, got = optimizer_ref.state_dict(), optimizer_ours.state_dict()
    assert got["param_groups"] == expected["param_groups"]
    assert got["state"].keys() == expected["state"].keys()
    for number in expected["state"]:
        assert_same_state(got["state"][number], expected["state"][number])


def test_a_parameter_without_gradient_is_left_alone_as_torch_does():
    reference, batches = model_and_batches()
    ours, _ = model_and_batches()
    for model in (reference, ours):
        model.final_norm.weight.requires_grad_(False)
    optimizer_ref, optimizer_ours = torch_adamw(reference), fused_adamw(ours)
    train(reference, optimizer_ref, batches[:3], LRS)
    train(ours, optimizer_ours, batches[:3], LRS)
    assert torch.equal(ours.final_norm.weight, torch.ones_like(ours.final_norm.weight))
    assert ours.final_norm.weight not in optimizer_ours.state
    for p, q in zip(reference.parameters(), ours.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("saved_by, loaded_by", [(torch_adamw, fused_adamw), (fused_adamw, torch_adamw),
                                                 (fused_adamw, fused_adamw)])
def test_state_dicts_load_either_way_and_training_continues_identically(saved_by, loaded_by):
    """A run checkpointed by one optimizer resumes under the other exactly as if never interrupted."""
    uninterrupted, batches = model_and_batches()
    train(uninterrupted, torch_adamw(uninterrupted), batches, LRS)

    first, _ = model_and_batches()
    optimizer = saved_by(first)
    train(first, optimizer, batches[:3], LRS[:3])
    model_state, optim_state = distr.full_state(first, optimizer)

    resumed, _ = model_and_batches(seed=99)  # other weights: everything must come from the state
    optimizer = loaded_by(resumed, lr=1.0)
    distr.load_full_state(resumed, model_state, optimizer, optim_state)
    train(resumed, optimizer, batches[3:], LRS[3:])
    for p, q in zip(uninterrupted.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_one_process_state_has_the_layout_of_torch_distributed_checkpoint():
    """Checkpoints stay portable between one process and torchrun: the plain path writes what
    torch.distributed.checkpoint's full state dicts hold."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)
    model, batches = model_and_batches()
    optimizer = torch_adamw(model)
    train(model, optimizer, batches[:2], LRS[:2])
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state, optim_state = distr.full_state(model, optimizer)
    assert_same_state(model_state, get_model_state_dict(model, options=options))
    expected = get_optimizer_state_dict(model, optimizer, options=options)
    assert optim_state["param_groups"] == expected["param_groups"]
    assert_same_state(optim_state["state"], expected["state"])
    assert set(optim_state["state"]) == {name for name, _ in model.named_parameters()}


def test_make_optimizer_uses_the_kernel_directly_only_for_one_cpu_process():
    model, _ = model_and_batches()
    one = distr.DistContext()
    two = distr.DistContext(rank=0, world=2)
    assert isinstance(make_optimizer(param_groups(model, 0.1), 1e-3, BETAS, one, "none"), adamw.FusedAdamW)
    ddp = make_optimizer(param_groups(model, 0.1), 1e-3, BETAS, two, "ddp")
    assert isinstance(ddp, torch.optim.AdamW) and ddp.defaults["fused"]


def test_rejects_parameters_the_cpu_kernel_path_is_not_for():
    with pytest.raises(ValueError, match="torch.optim.AdamW"):
        adamw.FusedAdamW([{"params": [torch.nn.Parameter(torch.ones(2, dtype=torch.bfloat16))]}], 1e-3, BETAS)


def test_a_cpu_training_process_never_imports_torch_dynamo(tmp_path):
    """The start-up cost this module exists to avoid (~2 s of CPU per run): set up a model, take a step
    and write a checkpoint-style state in a fresh interpreter, then look at what was imported."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        import torch
        import plmscale.train.launch, plmscale.train.loop as loop
        from plmscale.model import build_model
        from plmscale.train import distributed as distr
        model = build_model({SHAPE!r}, max_len=32)
        optimizer = loop.make_optimizer(loop.param_groups(model, 0.1), 1e-3, (0.9, 0.95), distr.DistContext(), "none")
        tokens = torch.randint(4, 24, (2, 32))
        _, loss = model(tokens, causal=True, labels=tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
        optimizer.step()
        distr.full_state(model, optimizer)
        print(sorted(m for m in ("torch._dynamo", "torch.distributed.checkpoint") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
