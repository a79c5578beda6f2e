"""How long are the proteins a CLM generates, against the natural proteins it was trained to imitate?

A CLM trained on crops framed `<cls> window <eos>` learned to stop at the crop length: every sample was
seq_len - 2 residues with stop=eos (issue 27). With crops that carry <eos> only at a protein's real end, a
sample should end (<eos>) within the context about as often as a natural protein is that short, and its
length among those that end should follow the natural lengths. Baseline, measured in the same run: the
validation split's own proteins (held out from training), cut to the same context.

    .venv/bin/python benchmarks/generation_lengths.py --results results --run clm_n25k_c5e11 -n 500
"""

import argparse

import numpy as np

from plmscale.alphabet import TOKEN_TO_ID
from plmscale.data.shards import ShardReader
from plmscale.export.generate import sample
from plmscale.export.runs import load_run
from markdown_table import publish

M_ID = TOKEN_TO_ID["M"]


def summary(lengths: np.ndarray, ended: np.ndarray, starts_with_m: np.ndarray) -> dict:
    done = lengths[ended]
    return {"n": len(lengths), "ended": float(ended.mean()), "starts_M": float(starts_with_m.mean()),
            "median_ended": float(np.median(done)) if len(done) else float("nan"),
            "quartiles_ended": (np.percentile(done, [25, 75]).tolist() if len(done) else [float("nan")] * 2),
            "at_limit": float((lengths == lengths.max()).mean()) if len(lengths) else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results")
    parser.add_argument("--run", action="append", required=True, help="a CLM run id (repeat for several)")
    parser.add_argument("-n", type=int, default=500, help="samples per run (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", default=None, help="append the table to this file")
    args = parser.parse_args()

    rows, baselines = [], set()
    valid = ShardReader(f"{args.results}/data/shards/valid")
    natural = np.asarray(valid.lengths)
    first = np.array([int(valid[i][0]) for i in range(len(valid))])
    for run_id in args.run:
        loaded = load_run(run_id, args.results)
        limit = loaded.max_residues
        if limit not in baselines:  # the natural proteins cut to this context
            baselines.add(limit)
            rows.append(("natural (valid split)", limit,
                         summary(np.minimum(natural, limit), natural <= limit, first == M_ID)))
        samples = sample(loaded, args.n, temperature=1.0, seed=args.seed)
        lengths = np.array([len(s) for s, _ in samples])
        ended = np.array([bool(e) for _, e in samples])
        starts_m = np.array([len(s) > 0 and int(s[0]) == M_ID for s, _ in samples])
        rows.append((f"{run_id} samples", limit, summary(lengths, ended, starts_m)))

    lines = ["| sequences | context (residues) | n | end within context | median length of those | "
             "quartiles | start with M |", "|---|---|---|---|---|---|---|"]
    for name, limit, s in rows:
        q = s["quartiles_ended"]
        lines.append(f"| {name} | {limit} | {s['n']} | {s['ended']:.1%} | {s['median_ended']:.0f} | "
                     f"{q[0]:.0f}-{q[1]:.0f} | {s['starts_M']:.1%} |")
    publish("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
