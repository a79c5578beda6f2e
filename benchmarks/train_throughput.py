"""Training throughput of the plmscale model against HuggingFace ESM, and this machine's matmul peak.

CPU (default): one MLM training step (forward, backward, AdamW) on a batch of 8 x 512 tokens, for
plmscale's Transformer and HuggingFace `EsmForMaskedLM` built locally from an `EsmConfig` of the ESM-2 8M
shape (6 layers, 320 wide, 20 heads, SDPA attention; nothing downloaded), in fp32 and in bf16 autocast.
Comparison at equal shape (layers, width, heads) and near-equal parameters: ESM's 4·d GELU MLP (1280) vs
plmscale's SwiGLU at 8/3·d rounded to 64 (896), i.e. 5% MORE non-embedding weights on the plmscale side.
The two models are timed in alternating rounds, so a busy machine slows both alike. The same run measures
the machine's fp32 and bf16 matmul peak and reports each model's achieved FLOP/s as a fraction of it
(FLOPs per token = 6·N + 12·L·d·T, N counted from each module without embeddings).

CUDA (--device cuda): tokens/s and MFU of plmscale at 35M/150M/650M ESM-2 shapes, seq 1024, bf16.

    python benchmarks/train_throughput.py --threads 2 --markdown docs/benchmarks.md
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plmscale.provenance import cpu_model  # noqa: E402

from plmscale.model import ModelShape, Transformer, flops_per_token_with_attention  # noqa: E402
from plmscale.train.loop import GPU_PEAK_FLOPS  # noqa: E402
from plmscale.train.masking import mask_tokens  # noqa: E402

GPU_SHAPES = {"35M": (12, 480, 20), "150M": (30, 640, 20), "650M": (33, 1280, 20)}


def matmul_peak(dtype, size=2048, seconds=2.0) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * size ** 3 * n / (time.perf_counter() - start)


def mlm_batch(batch, seq_len, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    tokens = np.concatenate([np.zeros((batch, 1)), rng.integers(4, 24, (batch, seq_len - 2)),
                             np.full((batch, 1), 2)], axis=1).astype(np.int64)
    pairs = [mask_tokens(row, rng, 0.15) for row in tokens]
    return torch.tensor(np.stack([p[0] for p in pairs])), torch.tensor(np.stack([p[1] for p in pairs]))


def hf_esm(layers, width, heads, ffn):
    from transformers import EsmConfig, EsmForMaskedLM
    config = EsmConfig(vocab_size=33, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                       intermediate_size=ffn, position_embedding_type="rotary", max_position_embeddings=1026,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=1,
                       mask_token_id=32, token_dropout=True, emb_layer_norm_before=False,
                       attn_implementation="sdpa")
    model = EsmForMaskedLM(config)
    model.train()
    n = sum(p.numel() for name, p in model.named_parameters()
            if "embeddings" not in name and "lm_head.decoder" not in name and "lm_head.bias" not in name)
    return model, n


class Trainer:
    """One model, its optimizer and a step function with or without bf16 autocast."""

    def __init__(self, name, model, n_params, shape, bf16, device, compile_model=False):
        self.name, self.model, self.n_params, self.bf16, self.device = name, model.to(device), n_params, bf16, device
        self.shape = shape
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
        self.is_hf = not isinstance(model, Transformer)
        if compile_model:
            self.model.compile()
        self.times = []

    def step(self, tokens, labels):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if self.is_hf:
                loss = self.model(input_ids=tokens, labels=labels).loss
            else:
                _, loss = self.model(tokens, causal=False, labels=labels)
                loss = loss / (labels != -100).sum()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def timed(self, tokens, labels, steps):
        for _ in range(steps):
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            self.step(tokens, labels)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - start)

    def summary(self, tokens_per_step, seq_len, peak):
        seconds = statistics.median(self.times)
        tps = tokens_per_step / seconds
        layers, width = self.shape
        achieved = tps * flops_per_token_with_attention(self.n_params, layers, width, seq_len)
        return {"model": self.name, "n_params": self.n_params, "precision": "bf16" if self.bf16 else "fp32",
                "step_seconds_median": seconds, "steps": len(self.times), "tokens_per_second": tps,
                "achieved_gflops": achieved / 1e9, "fraction_of_peak": achieved / peak}


def run_cpu(args):
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    tokens, labels = mlm_batch(args.batch, args.seq_len)
    layers, width, heads, esm_ffn = 6, 320, 20, 1280
    results = []
    for precision in args.precisions:
        bf16 = precision == "bf16"
        torch.manual_seed(0)
        hf_model, hf_n = hf_esm(layers, width, heads, esm_ffn)
        shape = ModelShape(layers, width, heads)
        ours = Transformer(shape, max_len=args.seq_len)
        trainers = [Trainer("HF EsmForMaskedLM (sdpa)", hf_model, hf_n, (layers, width), bf16, device),
                    Trainer("plmscale Transformer", ours, ours.n_params(), (layers, width), bf16, device,
                            compile_model=args.compile)]
        for trainer in trainers:  # warm-up (and compilation) outside the timing
            trainer.timed(tokens, labels, args.warmup)
            trainer.times.clear()
        for _ in range(args.rounds):  # alternate, so machine load hits both alike
            for trainer in trainers:
                trainer.timed(tokens, labels, args.steps_per_round)
        rows = [t.summary(args.batch * args.seq_len, args.seq_len, peaks[precision]) for t in trainers]
        rows[1]["speedup_vs_hf"] = rows[1]["tokens_per_second"] / rows[0]["tokens_per_second"]
        results += rows
        print(json.dumps(rows, indent=1), flush=True)
    return {"device": "cpu", "threads": args.threads, "cpu": cpu_model(), "load_average": os.getloadavg(),
            "matmul_peak_gflops": {k: v / 1e9 for k, v in peaks.items()}, "batch": args.batch,
            "seq_len": args.seq_len, "compile": args.compile, "torch": torch.__version__, "results": results}


def run_cuda(args):
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in GPU_PEAK_FLOPS.items() if k in name), args.peak_flops)
    torch.backends.cuda.matmul.allow_tf32 = True
    results = []
    for label in args.sizes:
        layers, width, heads = GPU_SHAPES[label]
        shape = ModelShape(layers, width, heads)
        model = Transformer(shape, max_len=args.seq_len)
        trainer = Trainer(f"plmscale {label}", model, model.n_params(), (layers, width), True, device,
                          compile_model=args.compile)
        tokens, labels = (t.to(device) for t in mlm_batch(args.batch, args.seq_len))
        trainer.timed(tokens, labels, args.warmup)
        trainer.times.clear()
        trainer.timed(tokens, labels, args.rounds * args.steps_per_round)
        row = trainer.summary(args.batch * args.seq_len, args.seq_len, peak)
        row["mfu"] = row.pop("fraction_of_peak")
        row["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
        results.append(row)
        print(json.dumps(row), flush=True)
        del model, trainer
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return {"device": name, "peak_flops": peak, "batch": args.batch, "seq_len": args.seq_len,
            "compile": args.compile, "torch": torch.__version__, "results": results}


def markdown(report) -> str:
    lines = ["## Training throughput", "",
             f"`benchmarks/train_throughput.py`, {report['cpu']}, {report['threads']} threads, torch "
             f"{report['torch']}, batch {report['batch']} x {report['seq_len']} tokens, one MLM training step "
             f"(forward, backward, AdamW), median step time over alternating rounds; 1-minute load average "
             f"during the run {report['load_average'][0]:.1f} (other jobs shared the machine).",
             f"Measured matmul peak in the same run: fp32 {report['matmul_peak_gflops']['fp32']:.0f} GFLOP/s, "
             f"bf16 {report['matmul_peak_gflops']['bf16']:.0f} GFLOP/s.",
             "Same shape (6 layers, 320 wide, 20 heads); ESM's GELU MLP is 1280 wide, plmscale's SwiGLU 896 "
             "(near-equal parameters, plmscale 5% more). FLOPs per token 6N + 12·L·d·T.", "",
             "| model | precision | non-emb. params | tokens/s | GFLOP/s | fraction of matmul peak | vs HF |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in report["results"]:
        speed = f"{row['speedup_vs_hf']:.2f}x" if "speedup_vs_hf" in row else "1.00x"
        lines.append(f"| {row['model']} | {row['precision']} | {row['n_params']:,} | {row['tokens_per_second']:,.0f} "
                     f"| {row['achieved_gflops']:.1f} | {row['fraction_of_peak']:.1%} | {speed} |")
    lines += ["", "GPU (35M/150M/650M at seq 1024, bf16): `--device cuda`; not measured here (no GPU was "
              "available to this run), so no GPU figures are claimed.", ""]
    return "\n".join(lines)


def append_section(path, text):
    """Replace our section if present, else append: other sections of the file are left untouched."""
    path = Path(path)
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    start = old.find("## Training throughput")
    if start >= 0:
        end = old.find("\n## ", start + 1)
        old = old[:start] + (old[end + 1:] if end >= 0 else "")
    path.write_text(old.rstrip("\n") + "\n\n" + text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=None, help="default 512 on CPU, 1024 on CUDA")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--sizes", nargs="+", default=list(GPU_SHAPES), choices=list(GPU_SHAPES))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps-per-round", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the plmscale model")
    parser.add_argument("--peak-flops", type=float, default=989e12, help="GPU peak when the name is unknown")
    parser.add_argument("--json", default=None, help="write the report here")
    parser.add_argument("--markdown", default=None, help="append/replace the section in this markdown file")
    args = parser.parse_args(argv)
    args.seq_len = args.seq_len or (1024 if args.device == "cuda" else 512)
    report = run_cuda(args) if args.device == "cuda" else run_cpu(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.markdown and args.device == "cpu":
        append_section(args.markdown, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
