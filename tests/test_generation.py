"""Generation that is measured (plmscale.evaluate): the metrics on sets whose answer is known — copies of
training sequences, natural held-out family members, residues drawn at random, one sequence repeated — on a
small demo corpus, with MMseqs2 doing the clustering and the search as in the workflow."""

import json
import shutil

import pytest
import yaml

from plmscale.config import load_config

from plmscale.data.demo import LETTERS, MotifLibrary, generate
from plmscale.errors import PlmscaleError
from plmscale.evaluate.demo_truth import DemoTruth
from plmscale.evaluate.generation import (BACKGROUND, NATURAL, GenerationSettings, SequenceSet,
                                          background_set, diversity, measure_generation, measure_sets, novelty,
                                          planted_content)
from plmscale.evaluate.motifs import MotifScanner, allowed_mismatches

needs_mmseqs = pytest.mark.skipif(shutil.which("mmseqs") is None, reason="needs MMseqs2 (mmseqs) on PATH")
LIBRARY = dict(n_motifs=60, motif_zipf=1.2, motif_min_length=6, motif_max_length=20, linker_mean=3.0)
N = 24
CUT = 126


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small demo corpus: families 0-9 are train, 10-13 held out (test); truth as the split FASTA names ids."""
    where = tmp_path_factory.mktemp("corpus")
    records = generate(seed=5, n_families=14, members_per_family=6, n_exact_duplicates=0, n_malformed=0, **LIBRARY)
    members = [(source, r) for source, part in records.items() for r in part if r.kind == "member"]
    held_out = {f"fam{f:04d}" for f in range(10, 14)}  # metagenomic-only families (demo._family_roles)
    train = [(source, r) for source, r in members if r.family not in held_out]
    test = [(source, r) for source, r in members if r.family in held_out]
    for name, part in (("train", train), ("test", test)):
        with open(where / f"{name}.fasta", "w") as handle:
            handle.writelines(f">{source}|{r.seq_id}\n{r.sequence}\n" for source, r in part)
    truth = DemoTruth(MotifLibrary.draw(5, **LIBRARY), {f"{source}|{r.seq_id}": r.family for source, r in members})
    return {"dir": where, "train": [r.sequence for _, r in train], "test": [r.sequence for _, r in test],
            "truth": truth}


def known_sets(corpus):
    copies = [s[:CUT] for s in corpus["train"][:N]]
    natural = [s[:CUT] for s in corpus["test"][:N]]
    lengths = [len(s) for s in natural]
    identical = [natural[0]] * N
    return [SequenceSet("copies", "model", [f"copy{i}" for i in range(N)], copies, ["length"] * N),
            SequenceSet(NATURAL, "natural", [f"nat{i}" for i in range(N)], natural, ["natural"] * N),
            background_set(lengths, seed=1),
            SequenceSet("identical", "model", [f"same{i}" for i in range(N)], identical, ["length"] * N)]


@pytest.fixture(scope="module")
def measured(corpus, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    sets = known_sets(corpus)
    settings = GenerationSettings(n_samples=N, cluster_sensitivity=4.0, search_sensitivity=4.0, threads=1)
    results = measure_sets(sets, corpus["dir"] / "train.fasta", settings, corpus["truth"], work, work / "mmseqs.log")
    lengths = {s.label: [len(x) for x in s.sequences] for s in sets}
    return {label: {"diversity": diversity(r["clusters"], N), "novelty": novelty(r["identity"]),
                    "planted": planted_content(r["motifs"], r["family_hit"], lengths[label], 3)}
            for label, r in results.items()}


@needs_mmseqs
def test_copies_of_train_sequences_are_not_novel_and_carry_natural_motif_content(measured):
    copies, natural = measured["copies"], measured[NATURAL]
    assert copies["novelty"]["median_best_identity"] == pytest.approx(1.0)
    assert copies["novelty"]["at_least_0.9"] == 1.0 and copies["planted"]["family_hits"] == 1.0
    # Held-out families are new motif chains from the same library: as many motifs as training members carry.
    assert natural["planted"]["motifs_per_sequence"] > 1.0
    assert copies["planted"]["motifs_per_sequence"] == pytest.approx(natural["planted"]["motifs_per_sequence"],
                                                                     rel=0.5)
    assert natural["novelty"]["at_least_0.9"] == 0.0


@needs_mmseqs
def test_random_residues_carry_no_motifs_and_hit_no_training_sequence(measured):
    background = measured[BACKGROUND]
    assert background["planted"]["motifs_per_sequence"] < 0.1
    assert background["planted"]["family_hits"] == 0.0
    assert background["novelty"]["at_least_0.5"] == 0.0 and background["novelty"]["no_hit"] >= 0.9
    assert background["diversity"]["clusters_per_sequence"] == 1.0


@needs_mmseqs
def test_n_identical_samples_make_one_cluster(measured):
    assert measured["identical"]["diversity"] == {"clusters": 1, "clusters_per_sequence": 1 / N}


def test_a_motif_is_found_within_its_allowed_mismatches_and_not_beyond():
    library = MotifLibrary.draw(3, **LIBRARY)
    index, motif = next((i, m) for i, m in enumerate(library.motifs) if len(m) >= 12)
    allowed = allowed_mismatches(len(motif))
    assert allowed == (len(motif) - 6) // 3 >= 2

    def with_mismatches(k):
        changed = motif.copy()
        changed[:k] = (changed[:k] + 1) % len(LETTERS)  # another residue at each of the first k positions
        return "X" * 5 + "".join(LETTERS[changed]) + "X" * 5  # X matches no motif residue

    found = MotifScanner(library).distinct_motifs([with_mismatches(allowed), with_mismatches(allowed + 1)])
    assert index in found[0] and index not in found[1]


def tiny_run(run_id="clm_tiny", objective="clm"):
    import torch

    from plmscale.export.runs import LoadedRun
    from plmscale.model import build_model

    torch.manual_seed(0)
    model = build_model({"layers": 1, "d_model": 16, "heads": 2, "ffn_dim": 32}, max_len=40).eval()
    return LoadedRun(run_id, model, objective, 40, {"n_params": 1000, "final_valid_loss": 3.0})


@needs_mmseqs
def test_measure_generation_pairs_lengths_writes_every_sequence_and_marks_a_non_demo_corpus(corpus, tmp_path):
    out = tmp_path / "generation.json"
    settings = GenerationSettings(n_samples=6, threads=1)
    summary = measure_generation([tiny_run()], corpus["dir"] / "train.fasta", corpus["dir"] / "test.fasta", out,
                                 settings, truth=None, not_demo_reason="not a demo corpus (test)")
    assert [s["label"] for s in summary["sets"]] == ["clm_tiny", NATURAL, BACKGROUND]
    assert summary["planted"] == {"measured": False, "note": "not a demo corpus (test)"}
    assert all("planted" not in s for s in summary["sets"]) and summary["context_residues"] == 38
    rows = (tmp_path / "generation.samples.tsv").read_text().splitlines()[1:]
    assert len(rows) == 3 * 6
    by_set = {}
    for row in rows:
        fields = row.split("\t")
        by_set.setdefault(fields[0], []).append((int(fields[2]), fields[3]))
    natural_lengths = [n for n, _ in by_set[NATURAL]]
    assert max(natural_lengths) <= 38 and [n for n, _ in by_set[BACKGROUND]] == natural_lengths
    # A sample is as long as its natural partner unless the model ended it first.
    assert all(n == m or (stop == "eos" and n < m) for (n, stop), m in zip(by_set["clm_tiny"], natural_lengths))
    assert json.loads(out.read_text()) == summary


def test_an_mlm_run_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(PlmscaleError, match="only CLM runs generate"):
        measure_generation([tiny_run("mlm_tiny", "mlm")], tmp_path / "train", tmp_path / "test",
                           tmp_path / "g.json", GenerationSettings())


def test_the_figure_draws_each_run_against_the_natural_line(tmp_path):
    from plmscale.plots.generation import plot_generation

    def entry(label, kind, value, run=None):
        out = {"label": label, "kind": kind, "diversity": {"clusters_per_sequence": value},
               "novelty": {"median_best_identity": value, "at_least_0.5": value},
               "planted": {"with_at_least_3_motifs": value, "motifs_per_sequence": value}}
        return dict(out, run=run) if run else out

    summary = {"n_samples": 10, "planted": {"measured": True, "min_motifs": 3}, "sets": [
        entry("a", "model", 0.2, {"n_params": 1e4, "final_valid_loss": 2.3}),
        entry("b", "model", 0.4, {"n_params": 5e4, "final_valid_loss": 2.2}),
        entry(NATURAL, "natural", 0.7), entry(BACKGROUND, "background", 0.0)]}
    fig = plot_generation(summary, tmp_path / "generation.png")
    assert len(fig.axes) == 10 and (tmp_path / "generation.png").exists()
    ax = fig.axes[0]
    run_line = next(line for line in ax.lines if line.get_label() == "CLM samples")
    assert list(run_line.get_xdata()) == [1e4, 5e4] and list(run_line.get_ydata()) == [0.2, 0.4]
    natural = next(line for line in ax.lines if line.get_label() == "natural held-out (test)")
    assert list(natural.get_ydata()) == [0.7, 0.7]


@pytest.mark.slow  # starts Snakemake: a DAG build of seconds
def test_the_workflow_plans_generation_from_the_config_and_refuses_an_mlm_run(tmp_path):
    from workflow_helpers import (SNAKEMAKE, fixed_demo_config_with, planned_rules, run_snakemake,
                                  workflow_copy)

    if not SNAKEMAKE.exists():
        pytest.skip("needs snakemake next to the Python running pytest")
    runs = ["clm_n7k_c5e11", "clm_n14k_c5e11", "clm_n25k_c5e11"]
    workdir = workflow_copy(tmp_path / "wf", fixed_demo_config_with({"generation": {"runs": runs}}))
    jobs = planned_rules(run_snakemake(workdir, "--dry-run"))
    assert jobs["generation_metrics"] == 1 and jobs["plot_generation"] == 1
    (workdir / "config.yaml").write_text(yaml.safe_dump(fixed_demo_config_with({"generation": {"runs": ["mlm_n14k_d2e6"]}})))
    output = run_snakemake(workdir, "--dry-run", check=False)
    assert "generation.runs names mlm_n14k_d2e6, not a CLM run of this study" in output


def test_the_generation_overlay_names_clm_runs_of_the_demo_top_budget():
    from pathlib import Path

    from plmscale.config import load_config_files
    from plmscale.grid import expand_grid

    root = Path(__file__).resolve().parent.parent
    config, _ = load_config_files([root / "config.yaml", root / "configs" / "generation.yaml"])
    specs = {spec.run_id: spec for spec in expand_grid(config)}
    runs = config["generation"]["runs"]
    assert len(runs) >= 3 and all(specs[r].objective == "clm" for r in runs)
    assert {specs[r].budget for r in runs} == {max(config["train"]["isoflop"]["budgets"])}
    assert load_config(root / "config.yaml")["generation"]["runs"] == []  # the demo itself does not sample


def test_the_demo_truth_is_found_from_a_results_folder_and_refused_for_another_corpus(tmp_path):
    from plmscale.evaluate.demo_truth import demo_truth_of_study

    (tmp_path / "split").mkdir()
    (tmp_path / "demo").mkdir()
    (tmp_path / "split" / "stats.json").write_text(json.dumps({"sources": ["reference", "metagenomic"]}))
    (tmp_path / "demo" / "floor.json").write_text(json.dumps({"settings": dict(seed=5, **LIBRARY)}))
    for source, prefix in (("reference", "ref"), ("metagenomic", "mg")):
        (tmp_path / "demo" / f"{source}.truth.tsv").write_text(
            f"seq_id\tfamily\tsubfamily\tkind\texpected\n{prefix}00000\tfam0001\tfam0001.s0\tmember\tkept\n")
    truth, note = demo_truth_of_study(tmp_path)
    assert note == "" and truth.family_of == {"reference|ref00000": "fam0001", "metagenomic|mg00000": "fam0001"}
    assert [list(m) for m in truth.library.motifs] == [list(m) for m in MotifLibrary.draw(5, **LIBRARY).motifs]
    truth, note = demo_truth_of_study(tmp_path, sources={"reference": "demo:reference", "uniref": "https://x"})
    assert truth is None and "source(s) uniref are not generated" in note
    (tmp_path / "demo" / "metagenomic.truth.tsv").unlink()  # a split source without a truth table: not demo
    assert demo_truth_of_study(tmp_path)[0] is None
