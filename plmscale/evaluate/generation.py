"""Generation that is measured: samples of CLM runs of several sizes against natural held-out sequences.

For each run, n sequences are sampled (plmscale.export.generate, a fixed seed) and compared with n natural
sequences of the test split and n background sequences (residues drawn independently from the UniProt
composition: the chance level of every metric). All three sets have the same lengths, pair by pair:

- lengths: n test records are drawn at random (seed) and cut to their first `context` residues (the runs'
  shortest context, seq_len - 2): the natural set. Sample i of every run is cut to the length of natural
  sequence i, unless the model ended it earlier with <eos> (its own choice, kept and counted). Sampling starts
  from <cls>, so samples are protein starts, as the natural set's cuts are.

Metrics of each set (n sequences):
- diversity: clusters at 50% identity (MMseqs2 easy-cluster, the data stage's coverage and cov-mode) / n. n
  copies of one sequence give 1/n; n unrelated sequences give 1.
- novelty: each sequence's best identity to the train split (MMseqs2 search with data.identity's settings:
  exact identity, the query covered by >= coverage, e-value <= evalue). A sequence without a hit passing
  those thresholds is novel: identity 0 in the median; fractions at >= 0.5 and >= 0.9 identity.
- planted content (demo corpus only, its truth known: plmscale.evaluate.demo_truth): sequences containing at least `min_motifs` distinct
  motifs of the demo library (plmscale.evaluate.motifs defines an occurrence), distinct motifs per sequence,
  distinct motifs over the whole set; and family hits: sequences whose best train hit is at >= 50% identity
  and is a member of a planted family (demo/{source}.truth.tsv). For another corpus these fields are absent
  and `planted.note` says why.
"""

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from plmscale.alphabet import decode
from plmscale.data.atomic import write_json, write_text
from plmscale.data.demo import LETTER_CODES, RESIDUES
from plmscale.data.identity import read_identity_table, search_identity
from plmscale.data.linefasta import read_records, record_id
from plmscale.data.mmseqs import cluster_sequences, fresh_work_dir
from plmscale.errors import PlmscaleError
from plmscale.evaluate.demo_truth import DemoTruth
from plmscale.evaluate.motifs import MotifScanner, allowed_mismatches

log = logging.getLogger(__name__)

NATURAL, BACKGROUND = "natural", "background"
FAMILY_IDENTITY = 0.5
NOVELTY_EDGES = (0.5, 0.9)
# easy-cluster's cascade (prefilter at rising sensitivity, three steps by default) saves time on millions of
# sequences; on a set of a few hundred each step is a fixed cost (~2 s of CPU), so one step at the final
# sensitivity: as sensitive, a third of the time (measured 2026-12-07: 2.0 s vs 5.9 s CPU for 24 sequences).
SINGLE_STEP = ("--cluster-steps", "1")
SAMPLE_COLUMNS = ("set", "id", "length", "stop", "best_hit", "identity", "n_motifs", "family_hit")


@dataclass(frozen=True)
class GenerationSettings:
    """What generation-metrics samples and how it compares (the config's generation section, plus the MMseqs2
    settings of the data stage it reuses)."""
    n_samples: int = 200
    seed: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    min_motifs: int = 3
    # diversity: clustering of each set, as data.cluster does (coverage, cov_mode, sensitivity)
    cluster_min_seq_id: float = 0.5
    cluster_coverage: float = 0.8
    cluster_cov_mode: int = 0
    cluster_sensitivity: float = 4.0
    # novelty: search against the train split, as data.identity does
    search_sensitivity: float = 4.0
    search_coverage: float = 0.8
    search_cov_mode: int = 2
    search_evalue: float = 1e-3
    threads: int = 1
    mem_mb: int | None = None

    @classmethod
    def from_config(cls, config: dict) -> "GenerationSettings":
        """From a validated config: generation.{n_samples, seed, temperature, top_p, min_motifs, threads,
        mem_mb}, data.cluster's coverage, cov_mode and sensitivity, data.identity's search settings."""
        section, cluster, identity = config["generation"], config["data"]["cluster"], config["data"]["identity"]
        return cls(n_samples=section["n_samples"], seed=section["seed"], temperature=section["temperature"],
                   top_p=section["top_p"], min_motifs=section["min_motifs"],
                   cluster_coverage=cluster["coverage"], cluster_cov_mode=cluster["cov_mode"],
                   cluster_sensitivity=cluster["sensitivity"],
                   search_sensitivity=identity["sensitivity"], search_coverage=identity["coverage"],
                   search_cov_mode=identity["cov_mode"], search_evalue=identity["evalue"],
                   threads=section["threads"], mem_mb=section["mem_mb"])


@dataclass
class SequenceSet:
    label: str
    kind: str  # "model", "natural" or "background"
    ids: list
    sequences: list
    stops: list  # "eos" (the model ended it), "length" (cut to its natural partner's length), "natural", ...
    run: dict | None = None  # a model's facts: run_id, n_params, final_valid_loss, tokens, flops


# ---- inputs --------------------------------------------------------------------------------------------------

def natural_set(test_fasta, n: int, context: int, seed: int) -> SequenceSet:
    """n records of the test split drawn at random (seed; reservoir sampling, one pass, memory n), in file
    order, each cut to its first `context` residues."""
    rng = np.random.default_rng([int(seed), 24])
    chosen = []  # (record number, id, sequence)
    for number, (header, sequence) in enumerate(read_records(test_fasta)):
        if len(chosen) < n:
            chosen.append((number, record_id(header), sequence[:context]))
        else:
            slot = int(rng.integers(number + 1))
            if slot < n:
                chosen[slot] = (number, record_id(header), sequence[:context])
    chosen.sort()
    return SequenceSet(NATURAL, "natural", [c[1] for c in chosen], [c[2] for c in chosen],
                       ["natural"] * len(chosen))


def background_set(lengths, seed: int) -> SequenceSet:
    """Residues drawn independently from the UniProt background composition, one sequence per length."""
    rng = np.random.default_rng([int(seed), 25])
    sequences = [LETTER_CODES[RESIDUES.draw(rng, int(n))].tobytes().decode("ascii") for n in lengths]
    return SequenceSet(BACKGROUND, "background", [f"{BACKGROUND}{i}" for i in range(len(lengths))], sequences,
                       ["length"] * len(lengths))


def run_facts(loaded) -> dict:
    metrics = loaded.metrics or {}
    return {"run_id": loaded.run_id, "n_params": metrics.get("n_params"),
            "final_valid_loss": metrics.get("final_valid_loss"), "tokens": metrics.get("tokens"),
            "flops": metrics.get("flops"), "seq_len": loaded.seq_len}


def sample_set(loaded, lengths, settings: GenerationSettings) -> SequenceSet:
    """Samples of a CLM run, sample i cut to lengths[i] residues unless the model ended it sooner with <eos>."""
    from plmscale.export.generate import sample

    longest = min(max(lengths), loaded.max_residues)
    drawn = sample(loaded, len(lengths), max_length=longest, temperature=settings.temperature,
                   top_p=settings.top_p, seed=settings.seed)
    sequences, stops = [], []
    for (residues, ended), length in zip(drawn, lengths):
        ended_first = ended and len(residues) <= length
        sequences.append(decode(residues[:length]))
        stops.append("eos" if ended_first else "length")
    ids = [f"{loaded.run_id}_sample{i}" for i in range(len(lengths))]
    return SequenceSet(loaded.run_id, "model", ids, sequences, stops, run_facts(loaded))


# ---- metrics: pure functions --------------------------------------------------------------------------------

def diversity(n_clusters: int, n_sequences: int) -> dict:
    return {"clusters": int(n_clusters), "clusters_per_sequence": n_clusters / n_sequences if n_sequences else None}


def novelty(identity) -> dict:
    """Best identity to train per sequence (NaN = no hit: novel, counted as identity 0 in the median)."""
    identity = np.asarray(identity, dtype=np.float64)
    if not len(identity):
        return {"median_best_identity": None, "no_hit": None, "at_least_0.5": None, "at_least_0.9": None}
    filled = np.nan_to_num(identity, nan=0.0)
    out = {"median_best_identity": float(np.median(filled)), "no_hit": float(np.mean(np.isnan(identity)))}
    for edge in NOVELTY_EDGES:
        out[f"at_least_{edge:g}"] = float(np.mean(filled >= edge))
    return out


def family_hits(best_hits, identity, family_of: dict) -> np.ndarray:
    """Whether each sequence's best train hit is at >= FAMILY_IDENTITY and a member of a planted family."""
    identity = np.nan_to_num(np.asarray(identity, dtype=np.float64), nan=0.0)
    return np.array([bool(family_of.get(hit, "")) and ident >= FAMILY_IDENTITY
                     for hit, ident in zip(best_hits, identity)], dtype=bool)


def planted_content(motifs_per_sequence, hits_family, lengths, min_motifs: int) -> dict:
    """Summary of the motifs each sequence contains (arrays of motif indices) and its family hits."""
    counts = np.array([len(m) for m in motifs_per_sequence], dtype=np.int64)
    residues = int(np.sum(lengths))
    every = set().union(*(set(m.tolist()) for m in motifs_per_sequence)) if len(counts) else set()
    return {
        f"with_at_least_{min_motifs}_motifs": float(np.mean(counts >= min_motifs)) if len(counts) else None,
        "motifs_per_sequence": float(counts.mean()) if len(counts) else None,
        "motifs_per_100_residues": 100.0 * counts.sum() / residues if residues else None,
        "distinct_motifs_in_set": len(every),
        # The library is ordered by usage (motif k is the (k+1)-th most common): how far into the tail a set reaches.
        "rarest_motif_rank": max(every) + 1 if every else None,
        "family_hits": float(np.mean(hits_family)) if len(counts) else None,
    }


# ---- the measurement ----------------------------------------------------------------------------------------

def measure_generation(loaded_runs, train_fasta, test_fasta, out_json, settings: GenerationSettings,
                       truth: DemoTruth | None = None, not_demo_reason: str = "", tmp_root=None,
                       mmseqs_log=None) -> dict:
    """Sample every CLM run of loaded_runs (plmscale.export.runs.LoadedRun), measure them, the natural and the
    background sets; write out_json, and beside it <stem>.samples.fasta (every sequence) and <stem>.samples.tsv
    (one row per sequence: its length, stop, best train hit, identity, motifs, family hit). Returns the summary."""
    if not loaded_runs:
        raise PlmscaleError("generation: no runs to sample; name CLM runs (generation.runs, or --runs)")
    for loaded in loaded_runs:
        if loaded.objective != "clm":
            raise PlmscaleError(f"generation: run {loaded.run_id} is an {loaded.objective.upper()} run; only CLM "
                                f"runs generate (remove it from generation.runs / --runs)")
        if loaded.run_id in (NATURAL, BACKGROUND):
            raise PlmscaleError(f"generation: a run may not be called {loaded.run_id!r} (the baselines' name)")
    labels = [loaded.run_id for loaded in loaded_runs]
    if len(set(labels)) != len(labels):
        raise PlmscaleError(f"generation: runs named twice: {sorted({x for x in labels if labels.count(x) > 1})}")
    if settings.n_samples < 1:
        raise PlmscaleError(f"generation.n_samples {settings.n_samples}: give at least 1")

    context = min(loaded.max_residues for loaded in loaded_runs)
    natural = natural_set(test_fasta, settings.n_samples, context, settings.seed)
    if not natural.sequences:
        raise PlmscaleError(f"{test_fasta}: the test split is empty; generation needs natural held-out sequences")
    if len(natural.sequences) < settings.n_samples:
        log.warning("the test split %s has %d records, fewer than n_samples %d: every set has %d sequences",
                    test_fasta, len(natural.sequences), settings.n_samples, len(natural.sequences))
    lengths = [len(s) for s in natural.sequences]
    sets = []
    for loaded in loaded_runs:
        log.info("sampling %d sequences from %s", len(lengths), loaded.run_id)
        sets.append(sample_set(loaded, lengths, settings))
    sets += [natural, background_set(lengths, settings.seed)]

    out_json = Path(out_json)
    work = fresh_work_dir(tmp_root, beside=out_json)
    try:
        results = measure_sets(sets, train_fasta, settings, truth, work, mmseqs_log or
                                out_json.with_name(out_json.stem + ".mmseqs.log"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = _summary(sets, results, settings, truth, not_demo_reason, len(lengths), context)
    stem = out_json.with_name(out_json.stem)
    _write_samples_fasta(f"{stem}.samples.fasta", sets)
    _write_samples_table(f"{stem}.samples.tsv", sets, results, truth is not None)
    write_json(out_json, summary)
    return summary


def measure_sets(sets, train_fasta, settings, truth, work, mmseqs_log) -> dict:
    """Per set: number of clusters, best hits and identities to train, motifs and family hits (demo)."""
    fastas = {}
    for number, sequence_set in enumerate(sets):
        fastas[sequence_set.label] = work / f"set{number}.fasta"
        with open(fastas[sequence_set.label], "w") as handle:
            handle.writelines(f">{i}\n{s}\n" for i, s in zip(sequence_set.ids, sequence_set.sequences))
    results = {s.label: {} for s in sets}
    for number, sequence_set in enumerate(sets):
        folder = work / f"cluster{number}"
        folder.mkdir()
        stats = cluster_sequences(fastas[sequence_set.label], folder / "clusters.tsv", folder / "sizes.tsv",
                                  folder / "stats.json", method="cluster", min_seq_id=settings.cluster_min_seq_id,
                                  coverage=settings.cluster_coverage, cov_mode=settings.cluster_cov_mode,
                                  sensitivity=settings.cluster_sensitivity, extra_args=SINGLE_STEP,
                                  threads=settings.threads, mem_mb=settings.mem_mb, tmp_root=folder,
                                  mmseqs_log=folder / "mmseqs.log")
        results[sequence_set.label]["clusters"] = stats["n_clusters"]
    tables = {label: work / f"identity{number}.tsv" for number, label in enumerate(fastas)}
    search_identity(train_fasta, fastas, tables, work / "identity.json", edges=NOVELTY_EDGES,
                    sensitivity=settings.search_sensitivity, coverage=settings.search_coverage,
                    cov_mode=settings.search_cov_mode, evalue=settings.search_evalue, threads=settings.threads,
                    mem_mb=settings.mem_mb, tmp_root=work, mmseqs_log=mmseqs_log)
    scanner = MotifScanner(truth.library) if truth is not None else None
    for sequence_set in sets:
        table = read_identity_table(tables[sequence_set.label])
        if list(table["seq_id"]) != list(sequence_set.ids):
            raise PlmscaleError(f"the identity search returned other records than the {sequence_set.label} set's; "
                                f"this is a bug, please report it")
        entry = results[sequence_set.label]
        entry["best_hit"] = list(table["best_hit"])
        entry["identity"] = table["identity"].to_numpy(dtype=np.float64)
        if scanner is not None:
            entry["motifs"] = scanner.distinct_motifs(sequence_set.sequences)
            entry["family_hit"] = family_hits(entry["best_hit"], entry["identity"], truth.family_of)
    return results


def _summary(sets, results, settings, truth, not_demo_reason, n, context) -> dict:
    entries = []
    for sequence_set in sets:
        result = results[sequence_set.label]
        lengths = np.array([len(s) for s in sequence_set.sequences])
        entry = {"label": sequence_set.label, "kind": sequence_set.kind, "n": len(lengths),
                 "mean_length": float(lengths.mean()),
                 "ended_with_eos": float(np.mean([s == "eos" for s in sequence_set.stops])),
                 "diversity": diversity(result["clusters"], len(lengths)),
                 "novelty": novelty(result["identity"])}
        if sequence_set.run is not None:
            entry["run"] = sequence_set.run
        if truth is not None:
            entry["planted"] = planted_content(result["motifs"], result["family_hit"], lengths, settings.min_motifs)
        entries.append(entry)
    if truth is not None:
        planted = {"measured": True, "min_motifs": settings.min_motifs, "family_identity": FAMILY_IDENTITY,
                   "occurrence": "a window of the motif's length, no gaps, with at most floor((length - 6) / 3) "
                                 f"mismatches ({', '.join(f'{k}: {allowed_mismatches(k)}' for k in (6, 9, 12, 15, 18))}"
                                 "); each motif counted once per sequence",
                   "library_motifs": len(truth.library.motifs)}
    else:
        planted = {"measured": False, "note": not_demo_reason or "not a demo corpus: no planted truth to compare with"}
    return {
        "n_samples": n, "n_samples_requested": settings.n_samples, "context_residues": context,
        "lengths": "natural: n test records drawn at random (seed), cut to their first context_residues; sample i "
                   "of every run cut to natural sequence i's length unless the model ended it with <eos> first; "
                   "background: the same lengths",
        "novelty_definition": "best identity (MMseqs2 search, exact identity) to the train split; no hit (e-value "
                              f"above {settings.search_evalue:g} or less than {settings.search_coverage:g} of the "
                              "sequence covered) counts as novel, identity 0",
        "diversity_definition": f"clusters at {settings.cluster_min_seq_id:g} identity (easy-cluster, coverage "
                                f"{settings.cluster_coverage:g}, cov-mode {settings.cluster_cov_mode}) / n",
        "settings": asdict(settings), "planted": planted, "sets": entries,
    }


def _write_samples_fasta(path, sets) -> None:
    with write_text(path) as handle:
        for sequence_set in sets:
            for seq_id, sequence, stop in zip(sequence_set.ids, sequence_set.sequences, sequence_set.stops):
                handle.write(f">{seq_id} set={sequence_set.label} length={len(sequence)} stop={stop}\n{sequence}\n")


def _write_samples_table(path, sets, results, planted: bool) -> None:
    with write_text(path) as handle:
        handle.write("\t".join(SAMPLE_COLUMNS) + "\n")
        for sequence_set in sets:
            result = results[sequence_set.label]
            for k, (seq_id, sequence, stop) in enumerate(zip(sequence_set.ids, sequence_set.sequences,
                                                            sequence_set.stops)):
                identity = result["identity"][k]
                motifs = str(len(result["motifs"][k])) if planted else ""
                family = str(int(result["family_hit"][k])) if planted else ""
                handle.write("\t".join([sequence_set.label, seq_id, str(len(sequence)), stop, result["best_hit"][k],
                                        "" if np.isnan(identity) else f"{identity:.4g}", motifs, family]) + "\n")


def read_generation(path) -> dict:
    """generation.json, checked to hold the sets a figure needs."""
    import json

    try:
        with open(path) as handle:
            summary = json.load(handle)
    except FileNotFoundError:
        raise PlmscaleError(f"{path} does not exist; run `plmscale generation-metrics` or the workflow's "
                            f"generation_metrics rule") from None
    except json.JSONDecodeError as error:
        raise PlmscaleError(f"{path}:{error.lineno}: not valid JSON ({error.msg}); delete it and measure again") \
            from None
    if not isinstance(summary, dict) or not isinstance(summary.get("sets"), list):
        raise PlmscaleError(f"{path}: not a generation.json (no 'sets' list); delete it and measure again")
    return summary

