"""One prepared GPU check: the real training loop on CUDA, resume after interruption, and throughput/MFU.

    PYTHONPATH=. bash benchmarks/gpu_check.sh [OUT.json]          # on a GPU machine, < 8 minutes on an H200
    PYTHONPATH=. bash benchmarks/gpu_check.sh --dry-run [OUT.json] # same code path, tiny, on CPU, < 1 minute

Writes a JSON file (the path given, else $OUT/gpu_check.json when $OUT is set, else ./gpu_check.json) and
prints a summary. Sections:
- environment: torch, device, whether FlexAttention is there (packed rows use it on CUDA);
- matmul: this device's bf16 matmul rate measured here (a big torch.matmul loop): the peak MFU is read against;
- packing_equivalence: loss per token of packed rows (document masking) vs padded rows, same sequences, same
  weights, fp32 and bf16: the packed path's numerics on this device;
- smoke: `train_run` (the real loop) on CUDA, bf16, packed, CLM and MLM, a few hundred steps on demo-corpus
  shards made here in memory: finite, falling loss;
- resume: the same run stopped after its first checkpoints (stop_after_steps) and resumed, vs uninterrupted;
- throughput: ~35M/~150M/~650M (ESM-2 shapes), seq_len 1024, bf16, packed vs padded, torch.compile off and
  on: real tokens/s (<pad> excluded) and useful MFU = (6·N per real token + attention over each token's own
  sequence, 12·L·d·length) / measured matmul rate; also against the nominal bf16 peak. Target: useful MFU at
  650M >= 50%. A compile that exceeds its time budget, and anything past the total budget, is skipped and
  listed under "skipped".

Imports only plmscale modules that need torch and numpy (and PyYAML, for the schema's defaults): the device
machine has no snakemake and no jsonschema (tests/test_gpu_check.py runs it with those imports blocked).
"""

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from plmscale.alphabet import PAD_ID  # noqa: E402
from plmscale.arithmetic import ModelShape  # noqa: E402
from plmscale.data.shards import MemoryShards  # noqa: E402
from plmscale.model import build_model, flex_attention_api, flex_attention_works  # noqa: E402
from plmscale.train.loop import GPU_PEAK_FLOPS, train_run  # noqa: E402
from plmscale.train.packing import micro_batches  # noqa: E402
from plmscale.train.sampler import TRAIN_STREAM, SequenceSampler, make_example  # noqa: E402

ESM2_SHAPES = {"35M": {"layers": 12, "d_model": 480, "heads": 20},
               "150M": {"layers": 30, "d_model": 640, "heads": 20},
               "650M": {"layers": 33, "d_model": 1280, "heads": 20}}
MFU_TARGET_650M = 0.50


class Settings:
    """Sizes, steps and time budgets of one mode (GPU, or the CPU dry run)."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run
        self.device = "cpu" if dry_run else "cuda"
        self.precision = "fp32" if dry_run else "bf16"
        self.demo_families = 40 if dry_run else 400
        self.matmul_size, self.matmul_seconds = (256, 0.3) if dry_run else (8192, 5.0)
        # smoke/resume runs: shape, seq_len, sequences per step, steps
        self.run_shape = {"layers": 2, "d_model": 32, "heads": 2} if dry_run else {"layers": 6, "d_model": 320,
                                                                                 "heads": 20}
        self.run_seq_len = 64 if dry_run else 512
        self.run_batch_seqs, self.run_micro = (8, 4) if dry_run else (64, 64)
        self.smoke_steps = 8 if dry_run else 300
        self.resume_steps, self.resume_every, self.resume_stop = (8, 3, 4) if dry_run else (120, 40, 60)
        # throughput
        self.shapes = ({"tiny-a": {"layers": 2, "d_model": 32, "heads": 2},
                        "tiny-b": {"layers": 2, "d_model": 64, "heads": 4}} if dry_run else ESM2_SHAPES)
        self.seq_len = 128 if dry_run else 1024
        # rows (packed) or sequences (padded) per step: ~16-64k tokens, well inside an H200's memory
        self.micro = {"tiny-a": 4, "tiny-b": 4, "35M": 64, "150M": 32, "650M": 16}
        self.warmup_steps, self.timed_steps = (1, 2) if dry_run else (3, 8)
        self.compile_options = [False] if dry_run else [False, True]
        self.compile_budget_s = 120.0  # compile + warm-up of one config; not started with less time left
        self.total_budget_s = 50.0 if dry_run else 330.0  # new work starts only before this; ends < 8 min


# ---- data ------------------------------------------------------------------------------------------------------
def demo_shards(n_families: int, seed: int) -> MemoryShards:
    """Demo-corpus proteins as an in-memory shard reader: families are clusters."""
    from plmscale.data.demo import generate

    records = generate(seed=seed, n_families=n_families, members_per_family=4, n_exact_duplicates=0,
                       n_malformed=0)
    sources = sorted(records)
    rows = [(r.sequence.upper(), r.family, s) for s, source in enumerate(sources) for r in records[source]
            if r.kind == "member"]
    families = {f: i for i, f in enumerate(sorted({f for _, f, _ in rows}))}
    return MemoryShards([q for q, _, _ in rows], [families[f] for _, f, _ in rows], [s for _, _, s in rows],
                        sources)


def examples_for(sampler, objective, count, step, seed=0):
    return [make_example(sampler, objective, seed, TRAIN_STREAM, step, i, 0.15) for i in range(count)]


# ---- sections --------------------------------------------------------------------------------------------------
def environment(cfg: Settings) -> dict:
    info = {"dry_run": cfg.dry_run, "torch": torch.__version__, "python": platform.python_version(),
            "numpy": np.__version__, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "device": cfg.device, "cuda_available": torch.cuda.is_available()}
    if cfg.device == "cuda":
        head_dims = sorted({ModelShape.from_dict(s).head_dim for s in [cfg.run_shape, *cfg.shapes.values()]})
        info.update(device_name=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    flex_attention=flex_attention_api() is not None,
                    # which packed rows get FlexAttention (else the boolean-mask fallback), per head width
                    flex_attention_bf16_by_head_dim={d: flex_attention_works(d, torch.bfloat16, "cuda")
                                                     for d in head_dims},
                    memory_gib=torch.cuda.get_device_properties(0).total_memory / 2 ** 30)
    else:
        info.update(device_name=platform.processor() or "cpu", threads=torch.get_num_threads(),
                    flex_attention=False)
    return info


def matmul_rate(cfg: Settings) -> dict:
    dtype = torch.float32 if cfg.dry_run else torch.bfloat16
    size = cfg.matmul_size
    a = torch.randn(size, size, device=cfg.device, dtype=dtype)
    b = torch.randn(size, size, device=cfg.device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(cfg)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < cfg.matmul_seconds:
        for _ in range(10):
            a @ b
        n += 10
        sync(cfg)
    rate = 2 * size ** 3 * n / (time.perf_counter() - started)
    nominal = None
    if cfg.device == "cuda":
        name = torch.cuda.get_device_name(0)
        nominal = next((v for k, v in GPU_PEAK_FLOPS.items() if k in name), None)
    return {"dtype": str(dtype).replace("torch.", ""), "size": size, "flops_per_second": rate,
            "nominal_bf16_peak": nominal}


def packing_equivalence(cfg: Settings, shards) -> dict:
    """Packed vs padded loss per token, same sequences and weights, on this device."""
    sampler = SequenceSampler(shards, cfg.seq_len)
    out = {}
    torch.manual_seed(0)
    model = build_model(cfg.run_shape, max_len=cfg.seq_len).to(cfg.device).eval()
    dtypes = [torch.float32] + ([torch.bfloat16] if cfg.device == "cuda" else [])
    for objective in ("clm", "mlm"):
        examples = examples_for(sampler, objective, 16, step=0)
        layouts = {packed: micro_batches(examples, 4, cfg.seq_len, packed) for packed in (False, True)}
        for dtype in dtypes:
            per_token = {}
            for packed, batches in layouts.items():
                total, labels = 0.0, 0
                with torch.no_grad(), torch.autocast(cfg.device, dtype=dtype, enabled=dtype != torch.float32):
                    for batch in batches:
                        batch = batch.to(cfg.device)
                        total += float(model(batch.tokens, objective == "clm", **batch.model_kwargs())[1])
                        labels += batch.n_labels
                per_token[packed] = total / labels
            key = f"{objective}_{str(dtype).replace('torch.', '')}"
            out[key] = {"padded": per_token[False], "packed": per_token[True],
                        "abs_diff": abs(per_token[True] - per_token[False])}
    return out


def run_spec(cfg: Settings, objective: str, run_id: str, **overrides) -> dict:
    """A run spec for the loop; its tokens are set by with_tokens_for_steps."""
    spec = {"run_id": run_id, "objective": objective, "model": "gpu-check", "shape": cfg.run_shape,
            "tokens": 0, "budget": None, "init_from": None, "resources": {"gpus": 1}, "seed": 5,
            "seq_len": cfg.run_seq_len, "batch_tokens": cfg.run_batch_seqs * cfg.run_seq_len,
            "micro_batch_size": cfg.run_micro, "lr": 1e-3, "warmup_fraction": 0.05, "eval_every_steps": 50,
            "eval_tokens": 20_000 if not cfg.dry_run else 1000, "checkpoint_every_steps": 10 ** 6,
            "device": cfg.device, "precision": cfg.precision, "packing": True, "threads": 1}
    spec.update(overrides)
    return spec


def with_tokens_for_steps(spec: dict, shards, steps: int) -> dict:
    """tokens such that the loop plans exactly `steps` steps (it plans ceil(D / (sequences · mean length)))."""
    mean_framed = SequenceSampler(shards, spec["seq_len"]).mean_framed_length()
    sequences = max(1, round(spec["batch_tokens"] / spec["seq_len"]))
    return {**spec, "tokens": int((steps - 0.5) * sequences * mean_framed)}


def smoke(cfg: Settings, train, valid, workdir) -> dict:
    out = {}
    for objective in ("clm", "mlm"):
        spec = with_tokens_for_steps(run_spec(cfg, objective, f"smoke_{objective}"), train,
                                     cfg.smoke_steps)
        started = time.perf_counter()
        metrics = train_run(spec, train, valid, workdir / f"smoke_{objective}", workdir / "ck" / spec["run_id"],
                            threads=1)
        first_train = read_first_train_loss(workdir / f"smoke_{objective}" / "curve.csv")
        out[objective] = {key: metrics[key] for key in ("steps", "tokens", "train_loss", "final_valid_loss",
                                                        "tokens_per_second", "mfu", "packing", "precision",
                                                        "device")}
        out[objective].update(first_train_loss=first_train, wall_seconds=time.perf_counter() - started,
                              finite=math.isfinite(metrics["final_valid_loss"]),
                              loss_fell=metrics["train_loss"] < first_train)
    return out


def read_first_train_loss(curve: Path) -> float:
    import csv
    with open(curve) as handle:
        return float(next(csv.DictReader(handle))["train_loss"])


def resume(cfg: Settings, train, valid, workdir) -> dict:
    spec = with_tokens_for_steps(run_spec(cfg, "mlm", "resume_mlm",
                                          checkpoint_every_steps=cfg.resume_every), train, cfg.resume_steps)
    full = train_run(spec, train, valid, workdir / "resume_full", workdir / "ck" / "resume_full", threads=1)
    stopped = train_run(spec, train, valid, workdir / "resume_half", workdir / "ck" / "resume_half", threads=1,
                        stop_after_steps=cfg.resume_stop)
    checkpoint_step = int(torch.load(workdir / "ck" / "resume_half" / "last.pt", weights_only=True)["step"])
    resumed = train_run(spec, train, valid, workdir / "resume_half", workdir / "ck" / "resume_half", threads=1)
    return {"steps": full["steps"], "stopped_after": cfg.resume_stop, "stopped_returned": stopped,
            "resumed_from_step": checkpoint_step,
            "uninterrupted_final_valid_loss": full["final_valid_loss"],
            "resumed_final_valid_loss": resumed["final_valid_loss"],
            "abs_diff": abs(full["final_valid_loss"] - resumed["final_valid_loss"]),
            "identical": full["final_valid_loss"] == resumed["final_valid_loss"],
            "same_tokens": full["tokens"] == resumed["tokens"]}


def throughput(cfg: Settings, shards, peak: float, nominal: float | None, deadline: float) -> tuple[list, list]:
    rows, skipped = [], []
    sampler = SequenceSampler(shards, cfg.seq_len)
    for use_compile in cfg.compile_options:
        for size, shape_dict in cfg.shapes.items():
            for packed in (False, True):
                name = f"{size} {'packed' if packed else 'padded'} compile={'on' if use_compile else 'off'}"
                if time.perf_counter() > deadline:
                    skipped.append(f"{name}: total time budget spent")
                    continue
                if use_compile and deadline - time.perf_counter() < cfg.compile_budget_s:
                    skipped.append(f"{name}: less time left than a compile's budget ({cfg.compile_budget_s:.0f} s)")
                    continue
                try:
                    rows.append(time_config(cfg, sampler, size, shape_dict, packed, use_compile, peak, nominal,
                                            deadline))
                    print(f"  {summarise_row(rows[-1])}", flush=True)
                except _Skipped as reason:
                    skipped.append(f"{name}: {reason}")
                except torch.OutOfMemoryError:
                    skipped.append(f"{name}: out of memory at micro-batch {cfg.micro[size]}")
                except Exception as error:  # one config failing (a kernel, a compile) must not end the rest
                    skipped.append(f"{name}: failed, {type(error).__name__}: {str(error)[:300]}")
                finally:
                    if cfg.device == "cuda":
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
    return rows, skipped


class _Skipped(Exception):
    pass


def time_config(cfg, sampler, size, shape_dict, packed, use_compile, peak, nominal, deadline) -> dict:
    shape = ModelShape.from_dict(shape_dict)
    torch.manual_seed(0)
    model = build_model(shape, max_len=cfg.seq_len).to(cfg.device)
    n_params = model.n_params()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cfg.device == "cuda" or None)
    if use_compile:
        model.compile()
    micro = cfg.micro[size]
    bf16 = cfg.precision == "bf16"

    def batch_for(step):
        """One micro-batch as training makes it: micro sequences padded, or micro packed rows."""
        if not packed:
            return micro_batches(examples_for(sampler, "mlm", micro, step), micro, cfg.seq_len, False)[0]
        count = micro * max(1, int(cfg.seq_len / sampler.mean_framed_length()))
        while True:
            batches = micro_batches(examples_for(sampler, "mlm", count, step), micro, cfg.seq_len, True)
            if len(batches) > 1:  # the first micro-batch is then micro full rows
                return batches[0]
            count *= 2

    def train_step(batch):
        with torch.autocast(cfg.device, dtype=torch.bfloat16, enabled=bf16):
            _, loss = model(batch.tokens, causal=False, **batch.model_kwargs())
        (loss / max(batch.n_labels, 1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    batches = [batch_for(step).to(cfg.device) for step in range(cfg.warmup_steps + cfg.timed_steps)]
    started = time.perf_counter()
    for batch in batches[:cfg.warmup_steps]:
        train_step(batch)
        sync(cfg)
        spent = time.perf_counter() - started
        if use_compile and spent > cfg.compile_budget_s:
            raise _Skipped(f"compile and warm-up took {spent:.0f} s, over the {cfg.compile_budget_s:.0f} s budget")
        if time.perf_counter() > deadline:
            raise _Skipped("total time budget spent during warm-up")
    warmup_seconds = time.perf_counter() - started
    real_tokens, useful_attention_flops, started = 0, 0.0, time.perf_counter()
    for batch in batches[cfg.warmup_steps:]:
        train_step(batch)
        real_tokens += batch.n_real_tokens
        useful_attention_flops += attention_flops(batch, shape)
    sync(cfg)
    seconds = time.perf_counter() - started
    useful_flops = 6.0 * n_params * real_tokens + useful_attention_flops
    row = {"size": size, "shape": shape.to_dict(), "n_params": n_params, "packed": packed, "compile": use_compile,
           "micro_batch": micro, "seq_len": cfg.seq_len, "timed_steps": cfg.timed_steps,
           "warmup_seconds": warmup_seconds, "seconds": seconds, "real_tokens": real_tokens,
           "real_tokens_per_second": real_tokens / seconds,
           "row_fill": real_tokens / sum(b.tokens.numel() for b in batches[cfg.warmup_steps:]),
           "useful_flops_per_second": useful_flops / seconds, "useful_mfu": useful_flops / seconds / peak,
           "useful_mfu_vs_nominal": useful_flops / seconds / nominal if nominal else None}
    if cfg.device == "cuda":
        row["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    del model, optimizer
    return row


def attention_flops(batch, shape: ModelShape) -> float:
    """12·L·d per token per attended token over each real sequence: Σ length² (no credit for pads)."""
    tokens = batch.tokens.cpu()
    if batch.doc_ids is None:
        lengths = (tokens != PAD_ID).sum(dim=1).double()
    else:
        doc_ids = batch.doc_ids.cpu()
        lengths = torch.cat([torch.bincount(doc_ids[r][tokens[r] != PAD_ID]).double() for r in range(len(tokens))])
    return 12.0 * shape.layers * shape.d_model * float((lengths ** 2).sum())


def sync(cfg):
    if cfg.device == "cuda":
        torch.cuda.synchronize()


# ---- report ----------------------------------------------------------------------------------------------------
def summarise_row(row) -> str:
    return (f"{row['size']:>6} {'packed' if row['packed'] else 'padded'} compile={'on ' if row['compile'] else 'off'} "
            f"{row['real_tokens_per_second']:>12,.0f} real tok/s  useful MFU {row['useful_mfu']:6.1%}  "
            f"fill {row['row_fill']:.0%}")


def summary(report) -> str:
    lines = [f"GPU check ({'dry run, CPU' if report['environment']['dry_run'] else 'CUDA'}): "
             f"{report['environment']['device_name']}, torch {report['environment']['torch']}"]
    matmul = report.get("matmul")
    if matmul:
        lines.append(f"matmul {matmul['dtype']} {matmul['size']}^3: {matmul['flops_per_second'] / 1e12:.3f} TFLOP/s "
                     f"measured (nominal {matmul['nominal_bf16_peak'] or 'n/a'})")
    for key, value in report.get("packing_equivalence", {}).items():
        lines.append(f"packed vs padded loss/token {key}: {value['packed']:.6f} vs {value['padded']:.6f} "
                     f"(diff {value['abs_diff']:.2e})")
    for objective, value in report.get("smoke", {}).items():
        lines.append(f"smoke {objective}: {value['steps']} steps, loss {value['first_train_loss']:.3f} -> "
                     f"{value['train_loss']:.3f}, valid {value['final_valid_loss']:.3f}, "
                     f"{value['tokens_per_second']:,.0f} tok/s, packing={value['packing']}")
    if "resume" in report:
        r = report["resume"]
        lines.append(f"resume: stopped at {r['stopped_after']}, resumed from step {r['resumed_from_step']}: final "
                     f"valid {r['resumed_final_valid_loss']:.6f} vs {r['uninterrupted_final_valid_loss']:.6f} "
                     f"uninterrupted (identical={r['identical']})")
    for row in report.get("throughput", []):
        lines.append("  " + summarise_row(row))
    target = report.get("mfu_target")
    if target:
        lines.append(f"useful MFU at {target['size']} (best config): "
                     + (f"{target['best']:.1%}" if target["best"] is not None else "not measured")
                     + f" vs target {target['target']:.0%}: {'MET' if target['met'] else 'NOT MET'}")
    for item in report.get("skipped", []):
        lines.append(f"skipped: {item}")
    for section, error in report.get("errors", {}).items():
        lines.append(f"ERROR in {section}: {error.splitlines()[-1]}")
    return "\n".join(lines)


def output_path(arg) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_check.json"
    return Path("gpu_check.json")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", help="JSON file to write (default $OUT/gpu_check.json or ./gpu_check.json)")
    parser.add_argument("--dry-run", action="store_true", default=os.environ.get("GPU_CHECK_DRY_RUN") == "1",
                        help="tiny sizes on CPU, compile off: the same code path in under a minute")
    args = parser.parse_args(argv)
    cfg = Settings(args.dry_run)
    if not cfg.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --dry-run")
    if cfg.dry_run:
        torch.set_num_threads(1)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
    started = time.perf_counter()
    deadline = started + cfg.total_budget_s
    path = output_path(args.out)
    report = {"environment": environment(cfg), "errors": {}, "skipped": []}

    def section(name, function, *args):
        print(f"[{time.perf_counter() - started:6.1f} s] {name}", flush=True)
        try:
            report[name] = function(*args)
        except Exception:  # one failing section must not hide the others' figures
            report["errors"][name] = traceback.format_exc()
            print(report["errors"][name], file=sys.stderr, flush=True)
        write(path, report)

    shards = demo_shards(cfg.demo_families, seed=7)
    valid = demo_shards(max(8, cfg.demo_families // 10), seed=8)
    section("matmul", matmul_rate, cfg)
    peak = report.get("matmul", {}).get("flops_per_second") or float("nan")
    nominal = report.get("matmul", {}).get("nominal_bf16_peak")
    section("packing_equivalence", packing_equivalence, cfg, shards)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as workdir:
        section("smoke", smoke, cfg, shards, valid, Path(workdir))
        section("resume", resume, cfg, shards, valid, Path(workdir))
    print(f"[{time.perf_counter() - started:6.1f} s] throughput", flush=True)
    try:
        report["throughput"], skipped = throughput(cfg, shards, peak, nominal, deadline)
        report["skipped"] += skipped
    except Exception:
        report["errors"]["throughput"] = traceback.format_exc()
    largest = list(cfg.shapes)[-1]
    best = [row["useful_mfu"] for row in report.get("throughput", []) if row["size"] == largest]
    report["mfu_target"] = {"size": largest, "target": MFU_TARGET_650M, "best": max(best) if best else None,
                            "met": bool(best) and max(best) >= MFU_TARGET_650M}
    report["seconds"] = time.perf_counter() - started
    write(path, report)
    print(summary(report), flush=True)
    print(f"figures written to {path}", flush=True)
    return report


def write(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
