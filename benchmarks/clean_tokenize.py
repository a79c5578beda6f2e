"""Benchmark: clean + tokenize of a gzip FASTA corpus, against two baselines on the same file.

    python benchmarks/clean_tokenize.py --sizes 1000000 10000000 --workdir /tmp/plmscale-bench

For each corpus size (generated unless --fasta is given: lognormal lengths, mean ~300, UniProt
background composition, UniRef-style headers, wrapped at 60), prints residues/s of
  zcat FILE > /dev/null                     (baseline 1: just decompressing)
  clean, then tokenize (the workflow's own functions, clean_fasta and tokenize_split: raw.gz ->
                         clean.gz; split-format .gz -> shards)
  single pass (raw.gz -> clean policy -> shards, no intermediate gzip). Benchmark-only on purpose: the
                         workflow cannot fuse the two, because dedup, cluster and split sit between them;
                         it shows what the reader + shard writer cost without the intermediate codec.
  transformers.EsmTokenizer                 (baseline 2, on a sample; vocab from plmscale.alphabet)
Each stage runs in its own subprocess so its peak RSS is its own; compare sizes to see that memory
does not grow with the corpus. Each stage also reports its CPU seconds (all threads): on a shared
machine those are steadier than wall time.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from plmscale.alphabet import ENCODE_TABLE, TOKENS  # noqa: E402
from plmscale.data.clean import BatchVerdict, clean_fasta  # noqa: E402
from plmscale.data.fasta import read_fasta_batches  # noqa: E402
from plmscale.data.gzio import open_write  # noqa: E402
from plmscale.data.shards import ShardWriter  # noqa: E402
from plmscale.data.split import sidecar_paths  # noqa: E402
from plmscale.data.tokenize import tokenize_split  # noqa: E402

AMINO = b"ARNDCQEGHILKMFPSTWYV"
# UniProtKB/Swiss-Prot background composition (%), same order as AMINO
BACKGROUND = np.array([8.25, 5.53, 4.06, 5.45, 1.37, 3.93, 6.75, 7.07, 2.27, 5.96,
                       9.66, 5.84, 2.42, 3.86, 4.70, 6.56, 5.34, 1.08, 2.92, 6.87])
MIN_LEN, MAX_LEN = 30, 1022


def generate(path, n, seed=0):
    rng = np.random.default_rng(seed)
    pool = np.frombuffer(AMINO, np.uint8)[rng.choice(20, size=32 << 20, p=BACKGROUND / BACKGROUND.sum())].tobytes()
    with open_write(path, level=2) as out:
        done = 0
        while done < n:
            m = min(100_000, n - done)
            lengths = np.clip(rng.lognormal(np.log(300) - 0.18, 0.6, m).astype(np.int64), 20, 5000)
            starts = rng.integers(0, len(pool) - 5000, m)
            parts = []
            for k, (length, start) in enumerate(zip(lengths.tolist(), starts.tolist())):
                seq = pool[start:start + length]
                if (done + k) % 1000 == 999:
                    seq = seq[:10] + b"J" + seq[11:]  # a few records outside the alphabet
                acc = done + k
                parts.append(b">UniRef50_A%08d Uncharacterized protein n=1 Tax=Homo sapiens TaxID=9606 "
                             b"RepID=A%08d\n" % (acc, acc))
                parts.append(b"\n".join([seq[i:i + 60] for i in range(0, length, 60)]))
                parts.append(b"\n")
            out.write(b"".join(parts))
            done += m


def to_split_format(clean_path, split_path):
    """Stand-in for dedup/cluster/split (not timed): `>id` records plus the split stage's id sidecars."""
    k = 0
    with open_write(split_path) as out:
        for batch in read_fasta_batches(clean_path, check_duplicate_ids=False):
            offsets, seq = batch.offsets.tolist(), batch.seq
            out.write(b"".join(b">%s\n%s\n" % (rid, seq[offsets[i]:offsets[i + 1]])
                               for i, rid in enumerate(batch.ids)))
            k += len(batch)
    cluster_path, source_path = sidecar_paths(split_path)
    np.save(cluster_path, np.arange(k, dtype="<i8"))
    np.save(source_path, np.zeros(k, dtype="<i2"))


def single_pass(raw_path, out_dir):
    """Raw .gz -> clean policy -> shards in one read (what a fused stage could do)."""
    residues = 0
    with ShardWriter(out_dir, "train", ["bench"], 100_000_000) as writer:
        for batch in read_fasta_batches(raw_path):
            verdict = BatchVerdict(batch, MIN_LEN, MAX_LEN, strict=False)
            lengths = batch.lengths
            tokens = verdict.tokens  # bytes: the shard writer takes them without a copy
            if not verdict.all_kept:
                token_keep = np.repeat(verdict.keep, lengths)
                tokens = np.frombuffer(tokens, dtype=np.uint8)[token_keep].tobytes()
                lengths = lengths[verdict.keep]
            n = len(lengths)
            writer.add(tokens, lengths, np.arange(writer.n_sequences, writer.n_sequences + n), np.zeros(n, np.int16))
            residues += len(tokens)
        writer.close()
    return residues


def peak_rss_mb():
    """VmHWM of this process: unlike ru_maxrss it is not inherited from the parent across fork/exec."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_stage(args):
    """Subprocess entry: run one stage, print {seconds, residues, peak_rss_mb} as JSON."""
    t0 = time.perf_counter()
    if args.stage == "clean":
        stats = clean_fasta(args.input, args.output, args.output + ".stats.json", "bench", MIN_LEN, MAX_LEN, False)
        residues = stats["kept_residues"]
    elif args.stage == "tokenize":
        residues = tokenize_split(args.input, args.output, "train", ["bench"], 100_000_000)["n_tokens"]
    elif args.stage == "single":
        residues = single_pass(args.input, args.output)
    seconds = time.perf_counter() - t0
    if args.stage == "esm":  # times only the tokenizer call, not reading the sample
        residues, seconds = esm_baseline(args.input, args.sample)
    rss = peak_rss_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)  # CPU of all threads: less sensitive to a busy machine
    print(json.dumps({"stage": args.stage, "seconds": seconds, "residues": residues, "peak_rss_mb": rss,
                      "cpu_s": usage.ru_utime + usage.ru_stime}))


def esm_baseline(fasta, sample):
    from transformers import EsmTokenizer
    vocab = os.path.join(os.path.dirname(os.path.abspath(fasta)), "esm_vocab.txt")
    with open(vocab, "w") as handle:
        handle.write("\n".join(TOKENS) + "\n")
    tokenizer = EsmTokenizer(vocab_file=vocab)
    seqs = []
    for batch in read_fasta_batches(fasta, check_duplicate_ids=False):
        seqs += [batch.sequence(i).decode() for i in range(min(len(batch), sample - len(seqs)))]
        if len(seqs) >= sample:
            break
    t0 = time.perf_counter()
    ids = tokenizer(seqs, add_special_tokens=False)["input_ids"]
    seconds = time.perf_counter() - t0
    # sanity: the same ids as ours
    assert ids[0] == list(seqs[0].encode().translate(ENCODE_TABLE))
    return sum(map(len, seqs)), seconds


def stage(name, input_path, output, extra=()):
    cmd = [sys.executable, os.path.abspath(__file__), "--stage", name, "--input", str(input_path),
           "--output", str(output), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(fasta, workdir, esm_sample):
    results = {}
    size_gz = os.path.getsize(fasta)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["zcat", fasta], stdout=subprocess.DEVNULL, check=True)
    zcat_s = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    zcat_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    clean = stage("clean", fasta, os.path.join(workdir, "clean.fasta.gz"))
    split_path = os.path.join(workdir, "train.fasta.gz")
    to_split_format(os.path.join(workdir, "clean.fasta.gz"), split_path)
    tok = stage("tokenize", split_path, os.path.join(workdir, "shards_two_stage"))
    single = stage("single", fasta, os.path.join(workdir, "shards_single"))
    assert tok["residues"] == single["residues"] == clean["residues"]
    # zcat's rate is counted in the same residues (the kept ones) so the ratios compare like with like
    residues = clean["residues"]
    results.update(gz_mb=size_gz / 1e6, residues=residues, zcat_s=zcat_s, zcat_cpu_s=zcat_cpu,
                   clean=clean, tokenize=tok, single=single,
                   load_average=[round(x, 2) for x in load_before + os.getloadavg()])
    if esm_sample:
        results["esm"] = stage("esm", fasta, workdir, ["--sample", str(esm_sample)])
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000], help="corpus sizes (sequences)")
    parser.add_argument("--fasta", help="use this .gz instead of generating (one size only)")
    parser.add_argument("--workdir", default="/tmp/plmscale-bench")
    parser.add_argument("--esm-sample", type=int, default=20_000)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--sample", type=int, default=20_000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        return run_stage(args)
    rows = []
    for k, n in enumerate([None] if args.fasta else args.sizes):
        workdir = os.path.join(args.workdir, f"n{n}" if n else "given")
        os.makedirs(workdir, exist_ok=True)
        fasta = args.fasta or os.path.join(workdir, "raw.fasta.gz")
        if not args.fasta and not os.path.exists(fasta):
            print(f"generating {n:,} sequences -> {fasta}", flush=True)
            generate(fasta + ".part", n)
            os.replace(fasta + ".part", fasta)
        r = measure(fasta, workdir, args.esm_sample if k == 0 else 0)
        rows.append((n, r))
        res = r["residues"]
        two = r["clean"]["seconds"] + r["tokenize"]["seconds"]
        zrate = res / r["zcat_s"]
        print(f"\n== {n or fasta}: {r['gz_mb']:.0f} MB gz, {res:,} residues kept; load average "
              f"{r['load_average'][0]:.1f} before, {r['load_average'][3]:.1f} after")
        print(f"zcat > /dev/null           {r['zcat_s']:7.2f} s  {zrate / 1e6:7.1f} M residues/s  "
              f"               cpu {r['zcat_cpu_s']:6.2f} s")
        two_cpu = r["clean"]["cpu_s"] + r["tokenize"]["cpu_s"]
        for label, secs, cpu, rss in (
                ("clean (stage 1)", r["clean"]["seconds"], r["clean"]["cpu_s"], r["clean"]["peak_rss_mb"]),
                ("tokenize (stage 2)", r["tokenize"]["seconds"], r["tokenize"]["cpu_s"], r["tokenize"]["peak_rss_mb"]),
                ("clean + tokenize", two, two_cpu, max(r["clean"]["peak_rss_mb"], r["tokenize"]["peak_rss_mb"])),
                ("single pass", r["single"]["seconds"], r["single"]["cpu_s"], r["single"]["peak_rss_mb"])):
            print(f"{label:26s} {secs:7.2f} s  {res / secs / 1e6:7.1f} M residues/s  "
                  f"{res / secs / zrate:5.2f}x zcat  cpu {cpu:6.2f} s  peak RSS {rss:6.0f} MB")
        if "esm" in r:
            esm_rate = r["esm"]["residues"] / r["esm"]["seconds"]
            print(f"EsmTokenizer (sample)      {esm_rate / 1e6:7.2f} M residues/s; clean+tokenize is "
                  f"{res / two / esm_rate:.0f}x, single pass {res / r['single']['seconds'] / esm_rate:.0f}x faster")
    print("\n" + json.dumps([{"n": n, **r} for n, r in rows], indent=1, default=str))


if __name__ == "__main__":
    main()
