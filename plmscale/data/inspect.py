"""`plmscale inspect-shards DIR`: what a shard directory holds, and a few sequences as text."""

import argparse


from plmscale.alphabet import decode
from plmscale.data.shards import ShardReader
from plmscale.errors import PlmscaleError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="a split's shard directory, e.g. results/data/shards/train")
    parser.add_argument("-n", "--num", type=int, default=5, help="sequences to decode (default 5)")
    parser.add_argument("--verify", action="store_true", help="recompute every sha256 in the manifest")
    parser.add_argument("--width", type=int, default=80, help="characters of each sequence to print")


def main(args: argparse.Namespace) -> int:
    reader = ShardReader(args.directory)
    for line in summary_lines(reader):
        print(line)
    if args.verify:
        problems = reader.verify()
        if problems:
            raise PlmscaleError(f"{args.directory}: files do not match the manifest: " + "; ".join(problems)
                                + " — delete the directory and rerun the tokenize step")
        print(f"sha256: all {2 * len(reader.manifest['shards']) + 2} files match the manifest")
    n = min(max(args.num, 0), len(reader))
    if n:
        print(f"first {n} sequences:")
    for i in range(n):
        text = decode(reader[i])
        shown = text if len(text) <= args.width else text[:args.width] + "..."
        print(f"  [{i}] cluster={int(reader.cluster_ids[i])} source={reader.sources[int(reader.source_ids[i])]} "
              f"length={len(text)}  {shown}")
    return 0


def summary_lines(reader: ShardReader) -> list:
    m = reader.manifest
    lengths = reader.lengths
    lines = [
        f"split:      {m['split']}  ({reader.directory})",
        f"sequences:  {m['n_sequences']:,}",
        f"tokens:     {m['n_tokens']:,} residues"
        + (f"  (length min {int(lengths.min())}, mean {float(lengths.mean()):.1f}, max {int(lengths.max())})"
           if len(lengths) else ""),
        f"clusters:   {m['n_clusters']:,}",
        f"shards:     {len(m['shards'])}  ("
        + ", ".join(f"{s['bin']}: {s['n_sequences']:,} seq" for s in m["shards"][:4])
        + (", ..." if len(m["shards"]) > 4 else "") + ")",
        "sources:",
    ]
    for name in m["sources"]:
        counts = m["per_source"][name]
        share = counts["n_tokens"] / m["n_tokens"] if m["n_tokens"] else 0.0
        lines.append(f"  {name}: {counts['n_sequences']:,} sequences, {counts['n_tokens']:,} tokens ({share:.1%})")
    return lines
