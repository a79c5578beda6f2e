"""`plmscale generate --run RUN -n 10`: the command line of plmscale.export.generate."""

import argparse
import os
import sys

from plmscale.export.generate import check_settings, log, write_samples


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True,
                        help="a CLM run: run id (with --results), its final.pt, or a `plmscale export` directory")
    parser.add_argument("--results", default="results", help="results folder of the workflow (default: results)")
    parser.add_argument("--metrics", default=None, help="the run's metrics.json, when --run is a moved final.pt")
    parser.add_argument("-n", type=int, default=10, help="number of sequences (default 10)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="most residues per sequence (default and limit: the run's context, seq_len - 2)")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = greedy (default 1)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1: off)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one, logged)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu: bit-for-bit reproducible)")


def main(args: argparse.Namespace) -> int:
    from plmscale.export.runs import load_run
    from plmscale.logging_setup import log_to_file

    log_to_file()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    loaded = load_run(args.run, args.results, args.metrics)
    check_settings(loaded, args.n, args.max_length, args.temperature, args.top_p)  # before any output
    loaded.model.to(args.device)
    log.info("sampling %d sequences from %s with seed %d", args.n, loaded.run_id, seed)

    def write(text):
        sys.stdout.write(text)
        sys.stdout.flush()  # a batch is on its way as soon as it is sampled

    write_samples(write, loaded, args.n, seed, max_length=args.max_length, temperature=args.temperature,
                  top_p=args.top_p, device=args.device)
    return 0
