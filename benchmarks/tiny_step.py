"""What one optimizer step of a demo-sized model costs on CPU, and what the fused AdamW kernel, calling it
without torch.optim, and torch.compile save.

The demo's models (2 layers, 2k-55k non-embedding parameters) are bound by the fixed cost of a step, not
by FLOPs, so a run costs its number of steps. This times the step the trainer takes (forward and backward of
a 512-token CLM batch, gradient clipping, AdamW, zero_grad) four ways, in alternating rounds so that a busy
machine slows all alike, one thread: AdamW's single-tensor path on CPU (what the trainer used first: the
baseline), the fused kernel through torch.optim (plmscale.train.loop.optimizer_kernel), the same kernel
called directly (plmscale.train.adamw, what a one-process CPU run uses), and the fused kernel with the model
compiled (train.compile; off in the demo, docs/benchmarks.md says why). It also times AdamW's step alone,
and the compiled variant's first step (the compilation; a warm inductor cache in /tmp makes later runs of
a shape far cheaper).
Prints a table; --markdown appends it to a file.

    python benchmarks/tiny_step.py --markdown docs/benchmarks.md
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plmscale.config import load_config  # noqa: E402
from plmscale.model import build_model  # noqa: E402
from plmscale.provenance import cpu_model  # noqa: E402

from markdown_table import publish  # noqa: E402  (benchmarks/, this script's directory)
from plmscale.train.adamw import FusedAdamW  # noqa: E402
from plmscale.train.loop import optimizer_kernel  # noqa: E402

LADDER = load_config(Path(__file__).resolve().parent.parent / "config.yaml")["train"]["ladder"]  # the demo's
DEFAULT_SIZES = ["n2k", "n7k", "n25k", "n55k"]
FUSED = optimizer_kernel(torch.device("cpu"), "none")
BASELINE = "single-tensor AdamW (baseline)"


def torch_adamw(kernel):
    return lambda params: torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), **kernel)


# name: (optimizer from parameters, compiled)
VARIANTS = {BASELINE: (torch_adamw({"foreach": False}), False), "fused AdamW": (torch_adamw(FUSED), False),
            "fused kernel, no torch.optim": (lambda params: FusedAdamW([{"params": params}], lr=1e-3,
                                                                       betas=(0.9, 0.95)), False),
            "fused AdamW + compile": (torch_adamw(FUSED), True)}


def make_step(shape, make_optimizer, compiled=False, batch=4, seq_len=128):
    torch.manual_seed(0)
    model = build_model(shape, max_len=seq_len)
    optimizer = make_optimizer(list(model.parameters()))
    tokens = torch.randint(4, 24, (batch, seq_len))
    forward = torch.compile(model) if compiled else model

    def step():
        _, loss = forward(tokens, causal=True, labels=tokens)
        (loss / tokens.numel()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def optimizer_only():  # AdamW on gradients of one backward, kept (zero_grad would leave nothing to update)
        if next(model.parameters()).grad is None:
            _, loss = model(tokens, causal=True, labels=tokens)
            (loss / tokens.numel()).backward()
        optimizer.step()

    return model, step, optimizer_only


def time_ms(function, repeats):
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, choices=list(LADDER))
    parser.add_argument("--steps", type=int, default=200, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for size in args.sizes:
        steps = {name: make_step(LADDER[size], optimizer, compiled) for name, (optimizer, compiled) in VARIANTS.items()}
        n_params = steps[BASELINE][0].n_params()
        first_step = {}
        for name, (_, step, _) in steps.items():
            first_step[name] = time_ms(step, 1) / 1e3  # the compiled variant compiles here
            time_ms(step, 20)  # warm-up: allocator, first-call dispatch
        whole = {name: [] for name in VARIANTS}
        alone = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name, (model, step, optimizer_only) in steps.items():
                whole[name].append(time_ms(step, args.steps))
                optimizer_only()  # the one backward it needs, outside the timing
                alone[name].append(time_ms(optimizer_only, args.steps))
                model.zero_grad(set_to_none=True)
        base = statistics.median(whole[BASELINE])
        for name in VARIANTS:
            step_ms = statistics.median(whole[name])
            rows.append(f"| {size} | {LADDER[size]['layers']} | {n_params:,} | {name} | {step_ms:.2f} | "
                        f"{statistics.median(alone[name]):.2f} | {base / step_ms:.2f}x | {first_step[name]:.1f} |")
    load = os.getloadavg()[0]
    lines = [f"Machine: {cpu_model()}, 1 thread, torch {torch.__version__}; one CLM step of 4 x 128 tokens; median "
             f"of {args.rounds} alternating rounds of {args.steps} steps; 1-minute load average {load:.1f} at the end.",
             "", "| model | layers | N (non-emb.) | step | ms per step | ms in AdamW alone | step speed vs baseline "
             "| first step, s |", "|---|---:|---:|---|---:|---:|---:|---:|", *rows]
    publish("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
