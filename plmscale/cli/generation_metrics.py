"""`plmscale generation-metrics --runs RUN... --n N --out generation.json`: samples of CLM runs measured against
natural held-out sequences (plmscale.evaluate.generation): diversity, novelty and, on the demo corpus, planted
motifs and families. The train/test splits and the demo truth come from the results folder's data/; MMseqs2's
settings from --config's data.cluster and data.identity (default: the schema's defaults)."""

import argparse
import dataclasses
from pathlib import Path

from plmscale.errors import PlmscaleError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", nargs="+", required=True,
                        help="CLM runs: run ids (with --results), final.pt paths or `plmscale export` directories")
    parser.add_argument("--n", type=int, default=None, help="sequences per run and per baseline (default 200)")
    parser.add_argument("--out", default="generation.json",
                        help="summary JSON; <stem>.samples.fasta and <stem>.samples.tsv are written beside it")
    parser.add_argument("--results", default="results", help="results folder of the workflow (default: results)")
    parser.add_argument("--data", default=None, help="the workflow's data folder (default: RESULTS/data): "
                        "split/train.fasta.gz, split/test.fasta.gz and, for the demo, demo/")
    parser.add_argument("--config", default=None, help="the study's config: generation, data.cluster, "
                        "data.identity and the demo's sources and settings (default: the schema's defaults)")
    parser.add_argument("--seed", type=int, default=None, help="seed of sampling and the natural draw (default 0)")
    parser.add_argument("--threads", type=int, default=None, help="MMseqs2 threads (default 2)")


def main(args: argparse.Namespace) -> int:
    from plmscale.config import load_config
    from plmscale.evaluate.demo_truth import demo_truth_of_study
    from plmscale.evaluate.generation import GenerationSettings, measure_generation
    from plmscale.export.runs import load_run
    from plmscale.logging_setup import log_to_file

    import torch

    log_to_file()
    torch.set_num_threads(1)  # the grid's tiny models sample fastest on one thread; MMseqs2 gets --threads
    config = load_config(args.config) if args.config else load_config({})
    overrides = {key: value for key, value in (("n_samples", args.n), ("seed", args.seed),
                                               ("threads", args.threads)) if value is not None}
    for key, value in overrides.items():
        if value < (0 if key == "seed" else 1):
            raise PlmscaleError(f"--{'n' if key == 'n_samples' else key} {value}: give a positive number")
    settings = dataclasses.replace(GenerationSettings.from_config(config), **overrides)
    data = Path(args.data) if args.data else Path(args.results) / "data"
    train, test = data / "split" / "train.fasta.gz", data / "split" / "test.fasta.gz"
    for path in (train, test):
        if not path.is_file():
            raise PlmscaleError(f"{path} does not exist; run the workflow's split step, or pass --data (or "
                                f"--results) naming the folder that holds split/")
    sources = ({s["name"]: s["url"] for s in config["data"]["sources"]} if args.config else None)
    truth, reason = demo_truth_of_study(data, sources, config["data"]["demo"] if args.config else None)
    loaded = [load_run(run, args.results) for run in args.runs]
    summary = measure_generation(loaded, train, test, args.out, settings, truth, reason)
    print(format_table(summary))
    return 0


def format_table(summary: dict) -> str:
    """One line per set: size, loss, diversity, novelty, planted content."""
    k = summary["planted"].get("min_motifs")
    head = f"{'set':<24}{'N':>9}{'loss':>8}{'clust/n':>9}{'med id':>8}{'>=0.5':>7}{'>=0.9':>7}"
    if k:
        head += f"{f'>={k} mot':>9}{'mot/seq':>9}{'family':>8}"
    lines = [head]
    for entry in summary["sets"]:
        run = entry.get("run") or {}
        n_params = f"{run['n_params']:,}" if run.get("n_params") else "-"
        loss = f"{run['final_valid_loss']:.3f}" if run.get("final_valid_loss") is not None else "-"
        nov = entry["novelty"]
        line = (f"{entry['label']:<24}{n_params:>9}{loss:>8}{entry['diversity']['clusters_per_sequence']:>9.3f}"
                f"{nov['median_best_identity']:>8.3f}{nov['at_least_0.5']:>7.3f}{nov['at_least_0.9']:>7.3f}")
        if k:
            planted = entry["planted"]
            line += (f"{planted[f'with_at_least_{k}_motifs']:>9.3f}{planted['motifs_per_sequence']:>9.2f}"
                     f"{planted['family_hits']:>8.3f}")
        lines.append(line)
    if not k:
        lines.append(summary["planted"]["note"])
    return "\n".join(lines)
