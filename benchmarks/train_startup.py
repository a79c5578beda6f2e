"""CPU seconds a one-process CPU training job spends outside its steps: start Python, import the trainer,
build a demo model and its AdamW, take one step, and gather the checkpoint state.

The demo trains ~30 runs of one to five minutes, so this fixed cost counts. Two ways, in alternating rounds
(fresh interpreters each time): the trainer as it is (plmscale.train.adamw's fused AdamW without
torch.optim, plain state dicts in one process), and the baseline, the same job through torch.optim.AdamW
(fused) and torch.distributed.checkpoint's full state dicts, which is what the trainer did before; building
the torch.optim optimizer imports torch._dynamo.
Prints a table; --markdown appends it to a file.

    python benchmarks/train_startup.py --markdown docs/benchmarks.md
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plmscale.provenance import cpu_model  # noqa: E402

from markdown_table import publish  # noqa: E402  (benchmarks/, this script's directory)

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "torch.optim.AdamW + torch.distributed.checkpoint (baseline)"
COMMON = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(ROOT)!r})
    import torch
    import plmscale.train.launch
    from plmscale.model import build_model
    from plmscale.train import distributed as distr
    from plmscale.train import loop
    torch.set_num_threads(1)
    model = build_model({{"layers": 2, "d_model": 16, "heads": 2, "ffn_dim": 48}}, max_len=128)
    groups = loop.param_groups(model, 0.1)
""")
STEP = textwrap.dedent("""
    tokens = torch.randint(4, 24, (4, 128))
    _, loss = model(tokens, causal=True, labels=tokens)
    (loss / tokens.numel()).backward()
    torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
""")
VARIANTS = {
    BASELINE: COMMON + textwrap.dedent("""
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)
        optimizer = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), fused=True)
    """) + STEP + textwrap.dedent("""
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)
    """),
    "plmscale trainer (adamw.FusedAdamW, plain state dicts)": COMMON + textwrap.dedent("""
        optimizer = loop.make_optimizer(groups, 1e-3, (0.9, 0.95), distr.DistContext(), "none")
    """) + STEP + "distr.full_state(model, optimizer)\n",
}


def child_cpu_seconds(script: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one fresh interpreter running script."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    for script in VARIANTS.values():  # warm the page cache before timing anything
        child_cpu_seconds(script)
    cpu = {name: [] for name in VARIANTS}
    wall = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, script in VARIANTS.items():
            c, w = child_cpu_seconds(script)
            cpu[name].append(c)
            wall[name].append(w)
    base = statistics.median(cpu[BASELINE])
    rows = [f"| {name} | {statistics.median(cpu[name]):.2f} | {statistics.median(wall[name]):.2f} | "
            f"{base - statistics.median(cpu[name]):+.2f} |" for name in VARIANTS]
    lines = [f"Machine: {cpu_model()}, Python {sys.version.split()[0]}; a fresh interpreter per job, median of "
             f"{args.rounds} alternating rounds; 1-minute load average {os.getloadavg()[0]:.1f} at the end.", "",
             "| job set-up and tear-down (imports, model, AdamW, one step, checkpoint state) | CPU s | wall s | "
             "CPU s saved vs baseline |", "|---|---:|---:|---:|", *rows]
    publish("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
