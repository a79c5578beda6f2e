"""What generating the demo corpus costs, with the weighted draws plmscale.categorical makes against numpy's
Generator.choice(p=...) (the baseline: what the generator used before), and the entropy floor beside it.

Both variants generate the config's corpus (data.demo of config.yaml, or --families for a smaller one) in
alternating rounds, one process, so that a busy machine slows both alike; their output must be identical
(the script checks it: a faster generator that changed the corpus would change every figure of the demo).
The floor (rule demo_floor) is timed once: since it has its own rule it runs beside the corpus, so the
demo waits for the longer of the two, not their sum.

    python benchmarks/demo_corpus.py --rounds 2 --markdown docs/benchmarks.md
"""

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plmscale.config import load_config  # noqa: E402
from plmscale.data import demo  # noqa: E402
from plmscale.provenance import cpu_model  # noqa: E402

from markdown_table import publish  # noqa: E402  (benchmarks/, this script's directory)

BASELINE = "Generator.choice(p=...) (baseline)"
CURRENT = "Categorical (plmscale.categorical)"


def _choice_draw(rng, size=None):
    return rng.choice(len(demo.LETTERS), size=size, p=demo.FREQUENCIES)


def generate(settings, clean, baseline: bool):
    """(seconds, records) of one generation; baseline draws residues through numpy's choice."""
    with mock.patch.object(demo.RESIDUES, "draw", _choice_draw) if baseline else contextlib.nullcontext():
        started = time.perf_counter()
        records = demo.generate(min_length=clean["min_length"], max_length=clean["max_length"] or 1022,
                                **settings)
        return time.perf_counter() - started, records


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--families", type=int, default=None, help="n_families (default: the config's)")
    parser.add_argument("--markdown", default=None, help="append the table to this file")
    args = parser.parse_args()
    config = load_config(Path(__file__).resolve().parent.parent / "config.yaml")
    options = dict(config["data"]["demo"])
    floor_settings = {key: options.pop(key) for key in demo.FLOOR_KEYS}
    if args.families:
        options["n_families"] = args.families
    times = {BASELINE: [], CURRENT: []}
    outputs = {}
    for _ in range(args.rounds):
        for name in (BASELINE, CURRENT):
            seconds, records = generate(options, config["data"]["clean"], name == BASELINE)
            times[name].append(seconds)
            outputs[name] = {source: [(r.seq_id, r.sequence) for r in items] for source, items in records.items()}
    if outputs[BASELINE] != outputs[CURRENT]:
        raise SystemExit("the two generators wrote different corpora: the Categorical draws are not numpy's")
    started = time.perf_counter()
    demo.entropy_floor(options["seed"], options["family_divergence"],
                       **{key: options[key] for key in demo.LIBRARY_KEYS}, **floor_settings)
    floor_seconds = time.perf_counter() - started
    records = sum(len(items) for items in outputs[CURRENT].values())
    base = statistics.median(times[BASELINE])
    lines = [f"Machine: {cpu_model()}, 1 process; {options['n_families']:,} families, {records:,} records; "
             f"median of {args.rounds} alternating rounds; 1-minute load average {os.getloadavg()[0]:.1f} at "
             "the end; both generators wrote the same records.", "",
             "| step | seconds | speed vs baseline |", "|---|---:|---:|"]
    for name in (BASELINE, CURRENT):
        median = statistics.median(times[name])
        lines.append(f"| generate, {name} | {median:.1f} | {base / median:.2f}x |")
    lines.append(f"| entropy floor (its own rule, beside the corpus) | {floor_seconds:.1f} | |")
    publish("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
