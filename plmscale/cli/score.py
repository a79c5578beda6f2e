"""`plmscale score FASTA --run RUN`: the command line of plmscale.export.score."""

import argparse
import csv
import sys
from contextlib import nullcontext

from plmscale.errors import PlmscaleError
from plmscale.export.score import DEFAULT_BATCH_TOKENS, check_fasta_path, columns, log, score_fasta


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fasta", metavar="FASTA", help="sequences to score (plain or gzip FASTA)")
    parser.add_argument("--run", required=True,
                        help="run id (with --results), a run's final.pt, or a directory from `plmscale export`")
    parser.add_argument("--results", default="results", help="results folder of the workflow (default: results)")
    parser.add_argument("--metrics", default=None, help="the run's metrics.json, when --run is a moved final.pt")
    parser.add_argument("--out", default=None, help="write the table here (TSV) instead of stdout")
    parser.add_argument("--batch-tokens", type=int, default=DEFAULT_BATCH_TOKENS,
                        help=f"tokens per forward pass (default {DEFAULT_BATCH_TOKENS})")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def main(args: argparse.Namespace) -> int:
    import torch

    from plmscale.data.atomic import atomic_path
    from plmscale.export.runs import load_run
    from plmscale.logging_setup import log_to_file

    log_to_file()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_tokens < 1:
        raise PlmscaleError(f"--batch-tokens {args.batch_tokens}: give a positive number")
    check_fasta_path(args.fasta)  # before loading the model: a wrong path is the cheaper mistake to report
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_run(args.run, args.results, args.metrics)
    loaded.model.to(device)
    log.info("scoring with %s (%s, context %d residues; longer sequences in windows)", loaded.run_id,
             loaded.objective, loaded.max_residues)
    with (atomic_path(args.out) if args.out else nullcontext()) as target:
        with (open(target, "w", newline="") if target else nullcontext(sys.stdout)) as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(columns(loaded.objective))
            score_fasta(loaded, args.fasta, lambda s: writer.writerow(
                [s.record_id, s.length, s.n_scored, repr(s.log_likelihood), repr(s.mean), repr(s.perplexity),
                 s.windows]), args.batch_tokens, device)
    return 0
