"""The `plmscale` command: one module per subcommand, plmscale.cli.<command> (dashes as underscores), with
`configure_parser(parser)` and `main(args) -> int`; the logic stays in the library modules they call."""

import argparse
import importlib
import sys

from plmscale import __version__
from plmscale.errors import PlmscaleError

# name -> (module defining configure_parser(parser) and main(args) -> int, one-line help)
COMMANDS = {
    "demo-corpus": ("plmscale.cli.demo_corpus", "write the generated demo protein corpus"),
    "inspect-shards": ("plmscale.cli.inspect_shards", "summarise a shard directory and decode a few sequences"),
    "plan": ("plmscale.cli.plan", "list the training grid of a config: run ids, FLOPs, resources"),
    "status": ("plmscale.cli.status", "where a study stands: runs done, running (ETA), failed, pending"),
    "train": ("plmscale.cli.train", "train one grid point from a run spec"),
    "import-curves": ("plmscale.cli.import_curves", "import released training curves into runs.csv"),
    "fit": ("plmscale.cli.fit", "fit scaling laws to a runs table"),
    "predict": ("plmscale.cli.predict", "compute-optimal model size and tokens for a budget"),
    "export": ("plmscale.cli.export", "write a finished run as safetensors + config others can load"),
    "score": ("plmscale.cli.score", "per-sequence log-likelihood (CLM) or pseudo-perplexity (MLM) of a FASTA"),
    "generate": ("plmscale.cli.generate", "sample protein sequences from a CLM run as FASTA"),
    "generation-metrics": ("plmscale.cli.generation_metrics",
                           "diversity, novelty and planted content of CLM samples against natural held-out sequences"),
    "cross-check": ("plmscale.cli.cross_check", "two fits side by side (e.g. a cosine and a WSD grid)"),
    "design": ("plmscale.cli.design", "plan an IsoFLOP design before training: simulated interval widths and costs"),
    "curve-law": ("plmscale.cli.curve_law", "fit the loss-curve law per shape; predict other schedules' final loss"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plmscale", description="Compute-optimal scaling studies of protein "
                                     "language models: the workflow's steps as commands.")
    parser.add_argument("--version", action="version", version=f"plmscale {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)  # imported lazily: `fit` need not load torch
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    # First pass finds the command; its module then adds its own arguments.
    command = next((a for a in argv if a in COMMANDS), None)
    if command is not None:
        module = importlib.import_module(COMMANDS[command][0])
        sub_parser = parser._subparsers._group_actions[0].choices[command]
        module.configure_parser(sub_parser)
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.main(args) or 0)
    except PlmscaleError as error:
        print(f"plmscale {args.command}: error: {error}", file=sys.stderr)
        return 2

