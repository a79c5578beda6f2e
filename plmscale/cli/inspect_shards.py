"""`plmscale inspect-shards DIR`: summarise a shard directory and decode a few sequences (plmscale.data.inspect)."""

import argparse

from plmscale.alphabet import decode
from plmscale.data.inspect import summary_lines
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
