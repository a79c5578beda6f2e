"""The demo corpus's planted answer for generation metrics: its motif library (rebuilt from data.demo's
settings) and the family of every record, keyed as the split FASTA names records ("source|seq_id")."""

import json
from dataclasses import dataclass
from pathlib import Path

from plmscale.data.demo import LIBRARY_KEYS, MotifLibrary
from plmscale.errors import PlmscaleError


@dataclass(frozen=True)
class DemoTruth:
    """The demo corpus's planted answer: its motif library and the family of every record."""
    library: MotifLibrary
    family_of: dict  # "source|seq_id" (as the split FASTA names records) -> family ("" for none)


def load_demo_truth(library_settings: dict, truth_tables: dict) -> DemoTruth:
    """library_settings: data.demo's settings (seed and the library keys); truth_tables: {source name: path
    of the demo corpus's truth.tsv behind that source}."""
    library = MotifLibrary.draw(library_settings["seed"], **{k: library_settings[k] for k in LIBRARY_KEYS})
    family_of = {}
    for source, path in truth_tables.items():
        try:
            with open(path) as handle:
                header = handle.readline().rstrip("\n").split("\t")
                if header[:2] != ["seq_id", "family"]:
                    raise PlmscaleError(f"{path}: not a demo truth table (header {header}); delete it and rerun "
                                        f"the demo_corpus rule")
                for line in handle:
                    seq_id, family = line.rstrip("\n").split("\t")[:2]
                    family_of[f"{source}|{seq_id}"] = family
        except FileNotFoundError:
            raise PlmscaleError(f"{path} does not exist: the truth table of demo source {source!r}; rerun the "
                                f"demo_corpus rule") from None
    return DemoTruth(library, family_of)


def demo_truth_of_study(data_dir, sources: dict | None = None, demo_settings: dict | None = None):
    """(DemoTruth or None, why not) for a workflow's results/data folder.

    sources: {source name: url} of the config (None: the split's sources, each taken to be the demo corpus of
    its name when data_dir/demo/<name>.truth.tsv exists); demo_settings: data.demo of the config (None: the
    settings recorded in data_dir/demo/floor.json). Planted content is measured only when every source is a
    generated demo corpus: a hit to a record of another source has no known family."""
    data_dir = Path(data_dir)
    if sources is None:
        names = _recorded(data_dir / "split" / "stats.json", "sources",
                          "is missing or has no 'sources'; run the split step (or pass --config to name the sources)")
        sources = {name: f"demo:{name}" if (data_dir / "demo" / f"{name}.truth.tsv").is_file() else "?"
                   for name in names}
    not_demo = sorted(name for name, url in sources.items() if not str(url).startswith("demo:"))
    if not_demo:
        return None, (f"not a demo corpus (source(s) {', '.join(not_demo)} are not generated): planted motifs and "
                      f"families are known only for the demo corpus, so those fields are absent")
    if demo_settings is None:
        demo_settings = _recorded(data_dir / "demo" / "floor.json", "settings",
                                  "is missing or records no 'settings': the demo library cannot be rebuilt; rerun "
                                  "the demo_floor rule or pass --config")
    tables = {name: data_dir / "demo" / f"{str(url)[len('demo:'):]}.truth.tsv" for name, url in sources.items()}
    return load_demo_truth(demo_settings, tables), ""


def _recorded(path: Path, key: str, otherwise: str):
    """path's JSON value at key; a PlmscaleError `<path> <otherwise>` where the file or the key is missing."""
    try:
        return json.loads(path.read_text())[key]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        raise PlmscaleError(f"{path} {otherwise}") from None
