"""`plmscale train`: one grid point from a run-spec JSON (what the train rule and torchrun call)."""

import argparse
import json

from plmscale.grid.spec import read_spec


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", required=True, help="run spec JSON (a RunSpec as written by the grid)")
    # --train-dir/--valid-dir/--out-dir: the spellings plmscale.train.launch's torchrun workers use.
    parser.add_argument("--train-shards", "--train-dir", dest="train_shards", required=True,
                        help="training shard directory")
    parser.add_argument("--valid-shards", "--valid-dir", dest="valid_shards", required=True,
                        help="validation shard directory")
    parser.add_argument("--out", "--out-dir", dest="out", required=True,
                        help="run directory: metrics.json, curve.csv, provenance.json")
    parser.add_argument("--checkpoint-dir", required=True, help="where checkpoints live (not a workflow output)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the spec's)")
    parser.add_argument("--init-weights", default=None,
                        help="final.pt of the source run of a transfer run (default: next to --checkpoint-dir)")
    parser.add_argument("--log", default=None, help="also write the log to this file")


def main(args: argparse.Namespace) -> int:
    from plmscale.logging_setup import log_to_file
    from plmscale.train.loop import train_run  # torch: loaded only for this command

    log_to_file(args.log)
    spec = read_spec(args.spec)
    metrics = train_run(spec, args.train_shards, args.valid_shards, args.out, args.checkpoint_dir,
                        threads=args.threads, init_weights=args.init_weights)
    if metrics is not None:
        print(json.dumps({k: metrics[k] for k in ("run_id", "steps", "tokens", "final_valid_loss")}))
    return 0
