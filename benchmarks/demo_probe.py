"""IsoFLOP probe of the demo corpus with plmscale's own trainer: is there a bracketed optimum per budget?

Trains a small grid (objective x budget x model size x seed) with plmscale.train.loop.train_run, one torch
thread per run, and prints per-run loss, tokens, wall time and achieved FLOP/s, then one IsoFLOP table per
objective and seed (final validation loss per size per budget, * at each budget's minimum) and the margins
of the minimum over its neighbours. Peak LR per run: lr_ref * (N / n_ref)^(-1/3), cosine to min_lr_ratio.

Data: by default the demo corpus is generated in memory (data.demo settings from the flags) and its
members split by planted family (valid_fraction of families held out), which is what the workflow's
MMseqs2 + cluster split recovers (tests/test_mmseqs.py). With --shards DIR the real data stage's shards are
used instead (DIR/train and DIR/valid, e.g. results/data/shards of a workflow run).

    python benchmarks/demo_probe.py --objectives clm --budgets 2.5e11 5e11 1e12 --sizes n7k n14k n25k n55k \
        1e12:n14k,n25k,n55k,n100k --seeds 0 --jobs 2 --out /tmp/probe
"""

import argparse
import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plmscale.data import demo  # noqa: E402
from plmscale.data.shards import MemoryShards  # noqa: E402

LADDER = {  # config.yaml's demo ladder, and rungs on either side of it
    "n1.3k": {"layers": 2, "d_model": 8, "heads": 2, "ffn_dim": 16},
    "n2k": {"layers": 2, "d_model": 8, "heads": 2, "ffn_dim": 32},
    "n3.5k": {"layers": 2, "d_model": 12, "heads": 2, "ffn_dim": 32},
    "n7k": {"layers": 2, "d_model": 16, "heads": 2, "ffn_dim": 48},
    "n14k": {"layers": 2, "d_model": 24, "heads": 2, "ffn_dim": 64},
    "n25k": {"layers": 2, "d_model": 32, "heads": 2, "ffn_dim": 88},
    "n55k": {"layers": 2, "d_model": 48, "heads": 2, "ffn_dim": 128},
    "n100k": {"layers": 2, "d_model": 64, "heads": 2, "ffn_dim": 176},
    "n220k": {"layers": 2, "d_model": 96, "heads": 2, "ffn_dim": 256},
}


def memory_split(settings: dict, valid_fraction: float):
    """(train, valid) readers: members of the generated corpus, whole families per split by a stable hash."""
    corpus = demo.generate(**settings)
    families = sorted({r.family for records in corpus.values() for r in records if r.kind == "member"})
    family_index = {f: i for i, f in enumerate(families)}
    held_out = {f for f in families
                if int(hashlib.sha256(f"probe:{f}".encode()).hexdigest()[:8], 16) / 16 ** 8 < valid_fraction}
    parts = {"train": ([], [], []), "valid": ([], [], [])}
    for s, source in enumerate(demo.SOURCES):
        for r in corpus[source]:
            if r.kind != "member":
                continue
            seqs, clusters, sources = parts["valid" if r.family in held_out else "train"]
            seqs.append(r.sequence)
            clusters.append(family_index[r.family])
            sources.append(s)
    return {name: MemoryShards(*columns, demo.SOURCES) for name, columns in parts.items()}


def spec_for(objective, size, budget, seed, args):
    from plmscale.model import ModelShape, build_model
    shape = LADDER[size]
    n_params = build_model(ModelShape.from_dict(shape), max_len=args.seq_len).n_params(non_embedding=True)
    tokens = int(budget / (6 * n_params))
    lr = args.lr_ref * (n_params / args.n_ref) ** (-1 / 3)
    return {"run_id": f"{objective}_{size}_c{budget:.3g}_s{seed}", "objective": objective, "shape": shape,
            "model": size, "tokens": tokens, "budget": budget, "seed": seed, "seq_len": args.seq_len,
            "batch_tokens": args.batch_tokens, "micro_batch_size": max(1, args.batch_tokens // args.seq_len),
            "lr": lr, "warmup_fraction": args.warmup_fraction, "min_lr_ratio": args.min_lr_ratio,
            "eval_every_steps": 10 ** 9, "eval_tokens": args.eval_tokens, "checkpoint_every_steps": 10 ** 9,
            "device": "cpu", "precision": "fp32", "threads": 1, "flops_definition": "6nd",
            "source_weights": {"reference": 0.4, "metagenomic": 0.6}}


_READERS = {}


def _init_worker(args_dict):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    torch.set_num_threads(1)
    args = argparse.Namespace(**args_dict)
    if args.shards:
        from plmscale.data.shards import ShardReader
        _READERS.update(train=ShardReader(Path(args.shards) / "train"), valid=ShardReader(Path(args.shards) / "valid"))
    else:
        _READERS.update(memory_split(corpus_settings(args), args.valid_fraction))


def _train(spec_and_out):
    import logging
    logging.disable(logging.INFO)
    from plmscale.train.loop import train_run
    spec, out = spec_and_out
    started = time.time()
    metrics = train_run(spec, _READERS["train"], _READERS["valid"], Path(out) / spec["run_id"],
                        Path(out) / "ckpt" / spec["run_id"], threads=1)
    metrics["probe_wall_seconds"] = time.time() - started
    return {k: metrics[k] for k in ("run_id", "objective", "model", "n_params", "tokens", "flops", "budget",
                                    "final_valid_loss", "train_loss", "steps", "peak_lr", "probe_wall_seconds",
                                    "achieved_flops_per_second", "seed")}


def _split_summary():
    return {name: {"sequences": len(reader), "residues": int(np.sum(reader.lengths)),
                   "clusters": int(len(np.unique(reader.cluster_ids)))} for name, reader in _READERS.items()}


def corpus_settings(args) -> dict:
    keys = ("seed", "n_families", "members_per_family", "family_divergence", "indel_rate", "n_motifs",
            "motif_zipf", "motif_min_length", "motif_max_length", "linker_mean")
    return {k: getattr(args, "corpus_" + k) for k in keys} | {"n_exact_duplicates": 0, "n_malformed": 0}


def isoflop_tables(rows):
    lines = []
    for objective in sorted({r["objective"] for r in rows}):
        for seed in sorted({r["seed"] for r in rows}):
            mine = [r for r in rows if r["objective"] == objective and r["seed"] == seed]
            if not mine:
                continue
            sizes = sorted({r["model"] for r in mine}, key=lambda m: list(LADDER).index(m))
            budgets = sorted({r["budget"] for r in mine})
            lines.append(f"\n{objective} seed {seed}: final valid loss (nats/token); * = minimum of its budget")
            lines.append("| budget | " + " | ".join(sizes) + " | bracketed | margin below / above |")
            lines.append("|---" * (len(sizes) + 3) + "|")
            for budget in budgets:
                at = {r["model"]: r["final_valid_loss"] for r in mine if r["budget"] == budget}
                present = [m for m in sizes if m in at]
                best = min(present, key=lambda m: at[m])
                i = present.index(best)
                below = at[present[i - 1]] - at[best] if i > 0 else math.nan
                above = at[present[i + 1]] - at[best] if i + 1 < len(present) else math.nan
                cells = [(f"{at[m]:.4f}" + ("*" if m == best else "")) if m in at else "" for m in sizes]
                lines.append(f"| {budget:.3g} | " + " | ".join(cells) +
                             f" | {'yes' if 0 < i < len(present) - 1 else 'no'} | {below:+.4f} / {above:+.4f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objectives", nargs="+", default=["clm"])
    parser.add_argument("--budgets", nargs="+", type=float, default=[2.5e11, 5e11, 1e12])
    parser.add_argument("--sizes", nargs="+", default=["n7k", "n14k", "n25k", "n55k"],
                        help="ladder names, or budget:name,name,... to give one budget its own sizes")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (one thread each)")
    parser.add_argument("--out", default="/tmp/demo_probe")
    parser.add_argument("--shards", help="use the data stage's shards (DIR/train, DIR/valid) instead")
    parser.add_argument("--valid-fraction", type=float, default=0.1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-tokens", type=int, default=512)
    parser.add_argument("--lr-ref", type=float, default=5e-3)
    parser.add_argument("--n-ref", type=float, default=5e4)
    parser.add_argument("--warmup-fraction", type=float, default=0.05)
    parser.add_argument("--min-lr-ratio", type=float, default=0.0)
    parser.add_argument("--eval-tokens", type=int, default=65536)
    # Corpus flags default to the generator's defaults, but the size to config.yaml's demo corpus.
    corpus_defaults = {**demo.DEFAULTS, "n_families": 12000, "members_per_family": 4}
    for name, default in corpus_defaults.items():
        if name not in demo.FLOOR_KEYS and name not in ("n_exact_duplicates", "n_malformed"):
            parser.add_argument("--corpus-" + name.replace("_", "-"), type=type(default), default=default)
    args = parser.parse_args()

    per_budget = {}
    plain = [s for s in args.sizes if ":" not in s]
    for item in args.sizes:
        if ":" in item:
            budget, names = item.split(":")
            per_budget[float(budget)] = names.split(",")
    runs = [(o, m, b, s) for s in args.seeds for o in args.objectives for b in args.budgets
            for m in per_budget.get(b, plain)]
    specs = [(spec_for(o, m, b, s, args), args.out) for o, m, b, s in runs]
    specs.sort(key=lambda item: -item[0]["tokens"])   # longest first: the pool ends together
    started = time.time()
    rows = []
    with ProcessPoolExecutor(args.jobs, initializer=_init_worker, initargs=(vars(args),)) as pool:
        for row in pool.map(_train, specs):
            rows.append(row)
            print(f"{row['run_id']:28s} N={row['n_params']:7d} D={row['tokens']:9d} "
                  f"D/N={row['tokens'] / row['n_params']:6.1f} loss={row['final_valid_loss']:.4f} "
                  f"train={row['train_loss']:.4f} lr={row['peak_lr']:.2e} "
                  f"wall={row['probe_wall_seconds']:6.1f}s {row['achieved_flops_per_second'] / 1e9:5.2f} GFLOP/s",
                  flush=True)
        split = pool.submit(_split_summary).result()
    total = time.time() - started
    largest = max(rows, key=lambda r: r["tokens"])
    print(f"\ndata: {split}; the largest run ({largest['run_id']}) reads {largest['tokens']} tokens "
          f"= {largest['tokens'] / split['train']['residues']:.2f} x the train split's residues")
    print(f"\n{len(rows)} runs, {sum(r['flops'] for r in rows):.3g} FLOPs (6ND), {total:.0f} s wall with "
          f"{args.jobs} jobs, {sum(r['probe_wall_seconds'] for r in rows):.0f} run-seconds")
    print(isoflop_tables(rows))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with open(Path(args.out) / "probe.json", "w") as handle:
        json.dump({"args": vars(args), "rows": rows, "split": split, "wall_seconds": total}, handle, indent=1)


if __name__ == "__main__":
    main()
