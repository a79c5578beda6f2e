"""`plmscale demo-corpus`: write the generated demo protein corpus and its entropy floor (plmscale.data.demo)."""

import argparse
import logging
from pathlib import Path

from plmscale.data.demo import DEFAULTS, FLOOR_FILE, write_demo_corpus, write_demo_floor


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True,
                        help="directory for {source}.fasta.gz, {source}.truth.tsv and floor.json")
    for name, default in DEFAULTS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    parser.add_argument("--min-length", type=int, default=30, help="the clean step's min_length")
    parser.add_argument("--max-length", type=int, default=1022, help="the clean step's max_length")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = {name: getattr(args, name) for name in DEFAULTS}
    write_demo_corpus(args.out, min_length=args.min_length, max_length=args.max_length, **settings)
    write_demo_floor(Path(args.out) / FLOOR_FILE, min_length=args.min_length, max_length=args.max_length,
                     **settings)
    return 0
