"""Real tokens/s of packed vs padded training on CPU, in the same run, through the real training loop.

Each measurement is a short `train_run` (sampler, crops, MLM masking, micro-batches, AdamW, the loop's own
`tokens_per_second`: real tokens, i.e. all but <pad>, per second of training steps) of a ~1.8M-parameter
model, once padded (one sequence per row) and once packed (first-fit rows of seq_len, document masking),
alternating over rounds (after a discarded warm-up of each) so machine load hits both alike. Same examples
per step either way. Also real tokens per CPU-second of the steps (StepCpuTime).

Length distributions:
- demo: the demo corpus generator (plmscale.data.demo) with config.yaml's demo settings, a few hundred
  families;
- each --fasta NAME=PATH: the lengths of real proteins, read at run time. MMseqs2's example proteins
  (examples/QUERY.fasta, DB.fasta) are used when found (--fasta, or installed under a path that
  `dpkg -L mmseqs2` lists); any protein FASTA works.

    flock /work/heavy.lock python benchmarks/packing_throughput.py --threads 2 --fasta real=proteins.faa \\
        --json packing.json --markdown packing.md
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plmscale.provenance import cpu_model  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from plmscale.data.shards import MemoryShards  # noqa: E402
from plmscale.train.loop import train_run  # noqa: E402

DEFAULT_SHAPE = "4,192,4"  # layers, d_model, heads: 1.77M non-embedding parameters


def read_fasta_sequences(path) -> list[str]:
    sequences, current = [], []
    with open(path) as handle:
        for line in handle:
            if line.startswith(">"):
                if current:
                    sequences.append("".join(current))
                current = []
            else:
                current.append(line.strip().rstrip("*").upper())
    if current:
        sequences.append("".join(current))
    return [s for s in sequences if s]


def demo_sequences(n_families: int) -> list[str]:
    from plmscale.data.demo import generate
    from plmscale.config import load_config
    demo = dict(load_config(Path(__file__).resolve().parent.parent / "config.yaml")["data"]["demo"])
    for key in ("n_families", "floor_sequences", "floor_seq_len", "n_exact_duplicates", "n_malformed"):
        demo.pop(key, None)
    records = generate(n_families=n_families, n_exact_duplicates=0, n_malformed=0, **demo)
    return [r.sequence.upper() for source in sorted(records) for r in records[source] if r.kind == "member"]


def mmseqs_examples() -> dict:
    """MMseqs2's example FASTA files where the installed package ships them."""
    try:
        listed = subprocess.run(["dpkg", "-L", "mmseqs2"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return {}
    found = {}
    for line in listed.splitlines():
        name = Path(line).name
        if name in ("QUERY.fasta", "DB.fasta") and Path(line).is_file():
            found[f"mmseqs2 {name}"] = line
    return found


def corpus(sequences) -> MemoryShards:
    # One cluster per sequence and one source: the sampler then draws sequences uniformly.
    return MemoryShards(sequences, list(range(len(sequences))), [0] * len(sequences), ["bench"])


def length_summary(sequences, seq_len) -> dict:
    lengths = np.array([len(s) for s in sequences])
    framed = np.minimum(lengths, seq_len - 2) + 2
    return {"sequences": int(len(lengths)), "median_residues": float(np.median(lengths)),
            "mean_residues": float(lengths.mean()), "p90_residues": float(np.percentile(lengths, 90)),
            "cropped_fraction": float((lengths > seq_len - 2).mean()), "mean_framed_tokens": float(framed.mean())}


def measure(shards, shape, seq_len, packing, steps, batch_seqs, micro, threads, objective, workdir) -> dict:
    mean_framed = float((np.minimum(shards.lengths, seq_len - 2) + 2).mean())
    spec = {"run_id": f"bench_{objective}_{seq_len}_{'packed' if packing else 'padded'}", "objective": objective,
            "model": "bench", "shape": shape, "tokens": int(steps * batch_seqs * mean_framed), "budget": None,
            "init_from": None, "resources": {"gpus": 0}, "seq_len": seq_len, "batch_tokens": batch_seqs * seq_len,
            "micro_batch_size": micro, "lr": 1e-3, "warmup_fraction": 0.1, "eval_every_steps": 10 ** 6,
            "eval_tokens": 512, "checkpoint_every_steps": 10 ** 6, "device": "cpu", "precision": "fp32",
            "seed": 1, "packing": packing}
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    started = time.perf_counter()
    with StepCpuTime() as cpu:
        metrics = train_run(spec, shards, shards, run_dir / "out", run_dir / "ck", threads=threads)
    return {"tokens_per_second": metrics["tokens_per_second"], "tokens_per_cpu_second": metrics["tokens"] / cpu.seconds,
            "steps": metrics["steps"], "tokens": metrics["tokens"], "train_loss": metrics["train_loss"],
            "packing": metrics["packing"], "wall_seconds": time.perf_counter() - started}


class StepCpuTime:
    """CPU seconds (this process, all threads) spent in the loop's training steps. Unlike the loop's own
    wall-clock tokens_per_second, it does not count time the process waited for a core, so it still
    compares the two layouts on a machine other jobs share."""

    def __enter__(self):
        from plmscale.train import loop

        self.seconds, self._loop = 0.0, loop
        self._original = original = loop._Runner._train_step

        def timed(runner):
            before = time.process_time()
            try:
                return original(runner)
            finally:
                self.seconds += time.process_time() - before

        loop._Runner._train_step = timed
        return self

    def __exit__(self, *exc):
        self._loop._Runner._train_step = self._original


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fasta", action="append", default=[], metavar="NAME=PATH",
                        help="a protein FASTA whose length distribution to measure (repeatable)")
    parser.add_argument("--demo-families", type=int, default=400)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--objective", choices=["clm", "mlm"], default="mlm")
    parser.add_argument("--steps", type=int, default=6, help="training steps per measurement")
    parser.add_argument("--batch-sequences", type=int, default=16, help="sequences per step")
    parser.add_argument("--micro", type=int, default=8, help="micro_batch_size (sequences, or packed rows)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shape", default=DEFAULT_SHAPE, help="layers,d_model,heads")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = dict(zip(("layers", "d_model", "heads"), (int(v) for v in args.shape.split(","))))

    distributions = {"demo corpus": demo_sequences(args.demo_families)}
    fasta = dict(item.split("=", 1) for item in args.fasta) or mmseqs_examples()
    for name, path in fasta.items():
        distributions[name] = read_fasta_sequences(path)
    if not fasta:
        print("no real-protein FASTA given and MMseqs2's examples are not installed here: demo corpus only",
              file=sys.stderr)

    results = []
    with tempfile.TemporaryDirectory(prefix="packing_bench_") as workdir:
        for name, sequences in distributions.items():
            shards = corpus(sequences)
            for seq_len in args.seq_lens:
                rounds = {"padded": [], "packed": []}
                for mode in rounds:  # warm-up (allocator, kernels at these shapes), not counted
                    measure(shards, shape, seq_len, mode == "packed", 1, args.batch_sequences, args.micro,
                            args.threads, args.objective, workdir)
                for r in range(args.rounds):
                    # Alternate which goes first, so a drift in machine load hits both alike.
                    for mode in (("padded", "packed") if r % 2 == 0 else ("packed", "padded")):
                        rounds[mode].append(measure(shards, shape, seq_len, mode == "packed", args.steps,
                                                    args.batch_sequences, args.micro, args.threads,
                                                    args.objective, workdir))
                row = {"distribution": name, "seq_len": seq_len, **length_summary(sequences, seq_len)}
                for unit in ("tokens_per_second", "tokens_per_cpu_second"):
                    for mode in rounds:
                        row[f"{mode}_{unit}"] = statistics.median(r[unit] for r in rounds[mode])
                    row[f"speedup_{unit}"] = row[f"packed_{unit}"] / row[f"padded_{unit}"]
                row["rounds"] = rounds
                results.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "rounds"}), flush=True)
    from plmscale.arithmetic import ModelShape
    report = {"cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__, "shape": shape,
              "n_params": ModelShape.from_dict(shape).n_params(),
              "objective": args.objective, "steps": args.steps, "batch_sequences": args.batch_sequences,
              "micro": args.micro, "rounds": args.rounds, "load_average_after": os.getloadavg(),
              "date": time.strftime("%Y-%m-%d", time.gmtime()), "sources": {"demo corpus": "plmscale.data.demo",
                                                                            **fasta},
              "results": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.markdown:
        args.markdown.write_text(markdown(report))
    return report


def markdown(report) -> str:
    lines = ["| lengths | seq_len | median / p90 residues | cropped | mean fill | padded tok/s | packed tok/s | "
             "packed/padded (wall) | padded tok/CPU-s | packed tok/CPU-s | packed/padded (CPU) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["results"]:
        lines.append(f"| {row['distribution']} | {row['seq_len']} | {row['median_residues']:.0f} / "
                     f"{row['p90_residues']:.0f} | {row['cropped_fraction']:.1%} | "
                     f"{row['mean_framed_tokens'] / row['seq_len']:.2f} | "
                     f"{row['padded_tokens_per_second']:,.0f} | {row['packed_tokens_per_second']:,.0f} | "
                     f"{row['speedup_tokens_per_second']:.2f}x | {row['padded_tokens_per_cpu_second']:,.0f} | "
                     f"{row['packed_tokens_per_cpu_second']:,.0f} | {row['speedup_tokens_per_cpu_second']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
