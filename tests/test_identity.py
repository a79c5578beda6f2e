"""Out-of-distribution evaluation by identity to the training set (docs/ood.md): the MMseqs2 identity step
and its bins, the final per-bin loss of a training run, the runs.csv columns, fitting on a bin, the plot and
the workflow's DAG."""

import gzip
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from plmscale.data import identity
from plmscale.data.identity import (NO_HIT, assign_bins, best_hits, bin_labels, bin_order, check_edges,
                                    read_identity_table, search_identity)
from plmscale.errors import PlmscaleError

needs_mmseqs = pytest.mark.skipif(shutil.which("mmseqs") is None, reason="needs the mmseqs binary")
AMINO = "ACDEFGHIKLMNPQRSTVWY"


# ---- bins -------------------------------------------------------------------------------------------------

def test_bin_labels_and_edges():
    assert bin_labels([0.5, 0.9]) == ["no_hit", "<0.5", "0.5-0.9", ">=0.9"]
    assert bin_labels([0.3]) == ["no_hit", "<0.3", ">=0.3"]
    # An identity on an edge belongs to the bin above it; no hit (NaN) to no_hit.
    got = assign_bins(np.array([np.nan, 0.0, 0.499, 0.5, 0.899, 0.9, 1.0]), [0.5, 0.9])
    assert list(got) == ["no_hit", "<0.5", "<0.5", "0.5-0.9", "0.5-0.9", ">=0.9", ">=0.9"]
    labels = bin_labels([0.3, 0.5, 0.9])
    assert sorted(reversed(labels), key=bin_order) == labels
    for bad in ([], [0.9, 0.5], [0.5, 0.5], [0, 0.5], [1.5]):
        with pytest.raises(PlmscaleError, match="data.identity.bins"):
            check_edges(bad)


def test_best_hit_is_the_highest_identity_whatever_the_chunking(tmp_path, monkeypatch):
    hits = tmp_path / "hits.tsv"
    # query target fident bits, in no particular order; query 2 has no hit.
    hits.write_text("0\t5\t0.40\t90\n0\t3\t0.70\t60\n1\t8\t0.95\t200\n0\t4\t0.70\t80\n"
                    "3\t1\t0.55\t50\n3\t0\t0.55\t50\n1\t2\t0.30\t300\n")
    expected_identity = [0.70, 0.95, np.nan, 0.55]
    expected_target = [4, 8, -1, 0]  # ties: higher bits (query 0), then the earlier train record (query 3)
    for chunk in (1, 2, 3, 1000):
        monkeypatch.setattr(identity, "RESULT_CHUNK_ROWS", chunk)
        ident, target = best_hits(hits, 4)
        np.testing.assert_allclose(ident, expected_identity)
        assert list(target) == expected_target


# ---- the step, with the real MMseqs2 ---------------------------------------------------------------------

def _mutate(sequence, fraction, rng):
    """The sequence with `fraction` of its positions substituted by a different residue."""
    letters = list(sequence)
    for i in rng.choice(len(letters), size=round(fraction * len(letters)), replace=False):
        letters[i] = rng.choice([a for a in AMINO if a != letters[i]])
    return "".join(letters)


def _write_fasta(path, records):
    with gzip.open(path, "wt") as handle:
        for seq_id, sequence in records:
            handle.write(f">{seq_id}\n{sequence}\n")
    return path


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A train split of random proteins; valid/test records made from them to land in each bin."""
    rng = np.random.default_rng(1)
    train = [(f"UniRef50_T{i}", "".join(rng.choice(list(AMINO), 300))) for i in range(40)]
    # (id, sequence, intended bin): 4% / 30% / 62% of positions substituted -> ~0.96, ~0.7, ~0.4 identity.
    valid = [("v_close", _mutate(train[0][1], 0.04, rng), ">=0.9"),
             ("v_mid", _mutate(train[1][1], 0.30, rng), "0.5-0.9"),
             ("v_far", _mutate(train[2][1], 0.62, rng), "<0.5"),
             ("v_novel", "".join(rng.choice(list(AMINO), 280)), "no_hit"),
             ("v_mid2", _mutate(train[3][1][:200], 0.25, rng), "0.5-0.9")]
    # Ids MMseqs2 would parse as accessions: they must come back unchanged.
    test = [("sp|P1|t_close", _mutate(train[5][1], 0.02, rng), ">=0.9"),
            ("ref|t_novel", "".join(rng.choice(list(AMINO), 250)), "no_hit")]
    where = tmp_path_factory.mktemp("identity")
    fastas = {"valid": _write_fasta(where / "valid.fasta.gz", [r[:2] for r in valid]),
              "test": _write_fasta(where / "test.fasta.gz", [r[:2] for r in test])}
    tables = {split: where / f"out/{split}.tsv" for split in ("valid", "test")}
    summary = search_identity(_write_fasta(where / "train.fasta.gz", train), fastas, tables,
                              where / "out/summary.json", edges=[0.5, 0.9], sensitivity=7.5, threads=2,
                              mem_mb=2000)
    return {"valid": valid, "test": test, "train": train, "tables": tables, "summary": summary, "where": where}


@needs_mmseqs
def test_each_constructed_sequence_lands_in_its_bin(searched):
    for split in ("valid", "test"):
        table = read_identity_table(searched["tables"][split])
        # Every record exactly once, in the split FASTA's order, with its length.
        assert list(table["seq_id"]) == [r[0] for r in searched[split]]
        assert list(table["length"]) == [len(r[1]) for r in searched[split]]
        assert list(table["bin"]) == [r[2] for r in searched[split]]
        hits = table[table["bin"] != NO_HIT]
        train_ids = {r[0] for r in searched["train"]}
        assert set(hits["best_hit"]) <= train_ids and hits["identity"].between(0, 1).all()
        assert table.loc[table["bin"] == NO_HIT, "identity"].isna().all()
    valid = read_identity_table(searched["tables"]["valid"]).set_index("seq_id")
    assert valid.loc["v_close", "best_hit"] == "UniRef50_T0"
    assert valid.loc["v_far", "best_hit"] == "UniRef50_T2"


@needs_mmseqs
def test_summary_counts_add_up_to_each_split(searched):
    summary = json.loads((searched["where"] / "out/summary.json").read_text())
    assert summary == json.loads(json.dumps(searched["summary"]))
    assert summary["bins"] == ["no_hit", "<0.5", "0.5-0.9", ">=0.9"]
    assert summary["n_train_sequences"] == len(searched["train"])
    for split in ("valid", "test"):
        counts = summary["splits"][split]["counts"]
        assert sum(counts.values()) == summary["splits"][split]["n_sequences"] == len(searched[split])
        assert counts == {label: sum(r[2] == label for r in searched[split]) for label in summary["bins"]}
    assert not list(searched["where"].glob("out/.mmseqs.tmp-*"))  # MMseqs2's temporaries are gone


@needs_mmseqs
def test_max_queries_searches_a_deterministic_sample_and_says_so(searched, tmp_path):
    """Issue 26: a bounded search. Every record keeps its row (the training checks the table against the
    shards); the sample's bins are those of the full search; the sample depends on the ids only."""
    where = searched["where"]
    fastas = {split: where / f"{split}.fasta.gz" for split in ("valid", "test")}
    valid_reversed = _write_fasta(tmp_path / "valid_reversed.fasta.gz", [r[:2] for r in searched["valid"][::-1]])
    samples = []
    for name, valid in (("a", fastas["valid"]), ("b", valid_reversed)):
        tables = {split: tmp_path / name / f"{split}.tsv" for split in fastas}
        summary = search_identity(where / "train.fasta.gz", {"valid": valid, "test": fastas["test"]}, tables,
                                  tmp_path / name / "summary.json", edges=[0.5, 0.9], sensitivity=7.5, threads=2,
                                  mem_mb=2000, max_queries=3)
        table = read_identity_table(tables["valid"])
        assert len(table) == len(searched["valid"]) and (table["bin"] == identity.NOT_SEARCHED).sum() == 2
        full = {r[0]: r[2] for r in searched["valid"]}
        sample = table[table["bin"] != identity.NOT_SEARCHED]
        assert all(full[seq_id] == label for seq_id, label in zip(sample["seq_id"], sample["bin"]))
        assert table.loc[table["bin"] == identity.NOT_SEARCHED, "best_hit"].eq("").all()
        samples.append(set(sample["seq_id"]))
        valid_summary = summary["splits"]["valid"]
        assert valid_summary["n_searched"] == 3 and valid_summary["max_queries"] == 3
        assert valid_summary["counts"][identity.NOT_SEARCHED] == 2
        assert sum(valid_summary["counts"].values()) == valid_summary["n_sequences"] == 5
        assert math.isclose(sum(valid_summary["fractions"].values()), 1)
        # The test split holds fewer records than max_queries: all searched, as without a sample.
        assert summary["splits"]["test"]["n_searched"] == 2
        assert identity.NOT_SEARCHED not in summary["splits"]["test"]["counts"]
    assert samples[0] == samples[1]


@needs_mmseqs
def test_an_empty_query_split_gives_an_empty_table(tmp_path):
    train = _write_fasta(tmp_path / "train.fasta.gz", [("a", "MKV" * 40)])
    empty = _write_fasta(tmp_path / "test.fasta.gz", [])
    summary = search_identity(train, {"test": empty}, {"test": tmp_path / "test.tsv"}, tmp_path / "s.json")
    assert summary["splits"]["test"]["n_sequences"] == 0
    assert len(read_identity_table(tmp_path / "test.tsv")) == 0


# ---- the per-bin loss of a training run --------------------------------------------------------------------

def _identity_table(path, valid, bins):
    """A table for the valid shards: the given bin label per sequence, in shard order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"seq_id": [f"s{i}" for i in range(len(valid))], "length": valid.lengths,
                  "best_hit": ["" if b == NO_HIT else "t0" for b in bins],
                  "identity": [np.nan if b == NO_HIT else 0.7 for b in bins], "bin": bins}
                 ).to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    """Shards laid out as the workflow lays them out: <data>/shards/{train,valid}."""
    from train_fixtures import demo_split, write_shards

    train, valid = demo_split()
    root = tmp_path_factory.mktemp("data")
    write_shards(train, root / "shards/train", "train")
    write_shards(valid, root / "shards/valid", "valid")
    return root, valid


@pytest.mark.parametrize("objective, eval_tokens", [("clm", 400), ("mlm", 5000)])
def test_a_run_reports_a_finite_loss_per_bin(data_dirs, tmp_path, objective, eval_tokens):
    from train_fixtures import tiny_spec

    from plmscale.train import train_run

    root, valid = data_dirs
    labels = ["no_hit", "<0.5", "0.5-0.9", ">=0.9"]
    bins = [labels[i % 3] for i in range(len(valid))]  # >=0.9 holds nothing: it gets no entry
    table = _identity_table(root / "identity/valid.tsv", valid, bins)
    try:
        metrics = train_run(tiny_spec(objective, tokens=6000, eval_tokens=eval_tokens), root / "shards/train",
                            root / "shards/valid", tmp_path / "run", tmp_path / "ckpt", threads=1)
    finally:
        table.unlink()
    losses = metrics["valid_loss_by_identity"]
    assert list(losses) == ["no_hit", "<0.5", "0.5-0.9"]
    assert all(math.isfinite(v) and 0 < v < 10 for v in losses.values())
    assert metrics["valid_sequences_by_identity"] == {b: bins.count(b) for b in losses}
    # Each bin's eval set is built like the run's own: eval_tokens real tokens (up to one sequence past the
    # cap), or every sequence of the bin once, framed to seq_len 64, when the bin holds fewer.
    tokens = metrics["valid_tokens_by_identity"]
    for label, n in tokens.items():
        framed = sum(min(length, 62) + 2 for length, b in zip(valid.lengths, bins) if b == label)
        assert n == framed if framed <= eval_tokens else eval_tokens <= n <= eval_tokens + 64, (label, n, framed)
    written = json.loads((tmp_path / "run/metrics.json").read_text())
    assert written["valid_loss_by_identity"] == losses
    assert written["identity_table"].endswith("identity/valid.tsv")


def test_unsearched_sequences_form_no_evaluation_bin(data_dirs, tmp_path):
    from plmscale.train.identity_eval import bin_indices

    _, valid = data_dirs
    bins = [(">=0.9", NO_HIT, identity.NOT_SEARCHED)[i % 3] for i in range(len(valid.lengths))]
    table = read_identity_table(_identity_table(tmp_path / "valid.tsv", valid, bins))
    indices = bin_indices(table, valid, "valid.tsv")
    assert list(indices) == [NO_HIT, ">=0.9"]
    assert sum(len(v) for v in indices.values()) == sum(b != identity.NOT_SEARCHED for b in bins)


def test_a_run_without_the_table_reports_no_bins(data_dirs, tmp_path):
    from train_fixtures import tiny_spec

    from plmscale.train import train_run

    root, _ = data_dirs
    metrics = train_run(tiny_spec(tokens=2000), root / "shards/train", root / "shards/valid", tmp_path / "run",
                        tmp_path / "ckpt", threads=1)
    assert "valid_loss_by_identity" not in metrics and math.isfinite(metrics["final_valid_loss"])


def test_a_table_that_does_not_match_the_shards_fails_before_training(data_dirs, tmp_path):
    from train_fixtures import tiny_spec

    from plmscale.train import train_run

    root, valid = data_dirs
    table = _identity_table(root / "identity/valid.tsv", valid, ["<0.5"] * len(valid))
    frame = pd.read_csv(table, sep="\t", keep_default_na=False)
    try:
        frame.iloc[:-1].to_csv(table, sep="\t", index=False)  # one record short: an older split
        with pytest.raises(PlmscaleError, match="rerun the identity step"):
            train_run(tiny_spec(tokens=2000), root / "shards/train", root / "shards/valid", tmp_path / "run",
                      tmp_path / "ckpt", threads=1)
        frame.loc[3, "length"] += 1  # same count, another sequence
        frame.to_csv(table, sep="\t", index=False)
        with pytest.raises(PlmscaleError, match="does not match the shards"):
            train_run(tiny_spec(tokens=2000), root / "shards/train", root / "shards/valid", tmp_path / "run",
                      tmp_path / "ckpt", threads=1)
    finally:
        table.unlink()
    assert not (tmp_path / "run/metrics.json").exists()


# ---- runs.csv, the fit, the plot -------------------------------------------------------------------------

BINS = ["no_hit", "<0.5", "0.5-0.9", ">=0.9"]
OFFSETS = {"no_hit": 0.6, "<0.5": 0.4, "0.5-0.9": 0.2, ">=0.9": 0.05}


def _write_run(root, run_id, n_params, tokens, budget, loss, with_bins=True):
    folder = root / run_id
    folder.mkdir(parents=True)
    metrics = {"run_id": run_id, "objective": "clm", "model": "m", "n_params": n_params, "tokens": tokens,
               "flops": 6 * n_params * tokens, "budget": budget, "final_valid_loss": loss, "init_from": None}
    if with_bins:
        metrics["valid_loss_by_identity"] = {b: loss + OFFSETS[b] for b in BINS}
        metrics["valid_tokens_by_identity"] = {b: 4096 for b in BINS}
        metrics["valid_sequences_by_identity"] = {"no_hit": 30, "<0.5": 200, "0.5-0.9": 50, ">=0.9": 3}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder / "metrics.json"


def test_runs_table_gets_a_column_per_bin(tmp_path):
    from plmscale.scaling.collect import collect_runs

    with_bins = _write_run(tmp_path, "clm_a", 1e6, 2e8, 1.2e15, 2.6)
    without = _write_run(tmp_path, "clm_b", 2e6, 1e8, 1.2e15, 2.7, with_bins=False)
    runs, _ = collect_runs([with_bins, without])
    loss_columns = [c for c in runs.columns if c.startswith("valid_loss_id_")]
    assert loss_columns == [f"valid_loss_id_{b}" for b in BINS]  # in bin order
    by_id = runs.set_index("run_id")
    assert by_id.loc["clm_a", "valid_loss_id_<0.5"] == pytest.approx(3.0)
    assert by_id.loc["clm_a", "valid_sequences_id_>=0.9"] == 3
    assert by_id.loc["clm_a", "valid_tokens_id_no_hit"] == 4096
    assert by_id.loc[["clm_b"], loss_columns].isna().all().all()
    # Without any table, the runs table is as before.
    alone, _ = collect_runs([without])
    assert not [c for c in alone.columns if "_id_" in c]


def _synthetic_runs():
    from scaling_synthetic import BUDGETS, isoflop_runs

    law = {"E": 1.8, "A": 400.0, "B": 900.0, "alpha": 0.34, "beta": 0.28}
    runs = isoflop_runs(law, np.random.default_rng(3), budgets=BUDGETS[:4], sizes_per_budget=6)
    for label in BINS:
        runs[f"valid_loss_id_{label}"] = runs["loss"] + OFFSETS[label]
    return runs


def test_fit_on_a_bin_fits_that_column():
    from plmscale.scaling.fit import fit_all
    from plmscale.scaling.settings import FitSettings

    runs = _synthetic_runs()
    section = dict(bootstrap=0, backtest=False, identify={"require_bootstrap": False})
    plain = fit_all(runs, None, FitSettings.from_fit_section(section))
    on_bin = fit_all(runs, None, FitSettings.from_fit_section({**section, "loss_column": "valid_loss_id_<0.5"}))
    assert on_bin["settings"]["loss_column"] == "valid_loss_id_<0.5"
    # The bin's loss is the valid loss + 0.4 here: the same optima, the parametric floor E raised by 0.4.
    assert on_bin["objectives"]["clm"]["parametric"]["E"] == pytest.approx(
        plain["objectives"]["clm"]["parametric"]["E"] + 0.4, abs=0.02)
    assert on_bin["objectives"]["clm"]["isoflop"]["a"] == pytest.approx(plain["objectives"]["clm"]["isoflop"]["a"])
    assert "fit.loss_column" in on_bin["objectives"]["clm"]["envelope"]["error"]


def test_fit_loss_column_must_name_a_bin_column():
    from plmscale.scaling.fit import fit_all
    from plmscale.scaling.settings import FitSettings
    from plmscale.scaling.table import with_loss_column

    runs = _synthetic_runs()
    with pytest.raises(PlmscaleError, match=r"valid_loss_id_<0\.3.*one of valid_loss_id_no_hit, valid_loss_id_<0\.5"):
        fit_all(runs, None, FitSettings.from_fit_section(
            {"bootstrap": 0, "backtest": False, "loss_column": "valid_loss_id_<0.3"}))
    with pytest.raises(PlmscaleError, match="none here"):
        with_loss_column(runs[["run_id", "objective", "n_params", "tokens", "flops", "loss"]], "valid_loss_id_<0.5")
    runs["valid_loss_id_>=0.9"] = np.nan
    with pytest.raises(PlmscaleError, match="empty for every run"):
        with_loss_column(runs, "valid_loss_id_>=0.9")


def test_fit_loss_column_is_a_config_key():
    from plmscale.config import load_config

    assert load_config({})["fit"]["loss_column"] == "loss"
    assert load_config({"fit": {"loss_column": "valid_loss_id_<0.5"}})["fit"]["loss_column"] == "valid_loss_id_<0.5"
    with pytest.raises(PlmscaleError, match="loss_column"):
        load_config({"fit": {"loss_column": "final_loss"}})


def test_loss_by_identity_plot(tmp_path):
    from plmscale.plots import plot_loss_by_identity

    runs = _synthetic_runs()
    runs["valid_sequences_id_<0.5"] = 200
    fig = plot_loss_by_identity(runs, tmp_path / "loss_by_identity.png")
    panels = [ax for ax in fig.axes if ax.lines]
    assert len(panels) == len(BINS)  # one objective (CLM) x four bins
    assert "200 valid seqs" in fig.axes[1].get_title() and "identity <0.5" in fig.axes[1].get_title()
    assert all(len(ax.lines) == 4 for ax in panels)  # a line per budget
    for suffix in (".png", ".svg", ".pdf"):
        assert (tmp_path / f"loss_by_identity{suffix}").exists()


def test_loss_by_identity_without_bins_says_why_and_what_to_set(tmp_path):
    """The plot rule always declares loss_by_identity.png: without bins it states why, not a blank placeholder."""
    from plmscale.plots import plot_loss_by_identity

    runs = _synthetic_runs()
    untabled = plot_loss_by_identity(runs[["run_id", "objective", "n_params", "tokens", "flops", "loss"]],
                                     tmp_path / "none.png")
    (note,) = untabled.axes[0].texts
    assert note.get_text().replace("\n", " ").startswith("no identity bins: runs.csv has no valid_loss_id_<bin> column")
    assert "data.identity.enabled: true" in note.get_text().replace("\n", " ")
    assert untabled.axes[0].get_title() == "Final validation loss by identity to the training set"
    assert (tmp_path / "none.png").exists()
    bin_columns = [c for c in runs.columns if c.startswith("valid_loss_id_")]
    empty = plot_loss_by_identity(runs.assign(**{c: float("nan") for c in bin_columns}), tmp_path / "empty.png")
    text = empty.axes[0].texts[0].get_text().replace("\n", " ")
    assert text.startswith("no identity bins: the valid_loss_id_<bin> columns (no_hit, <0.5, 0.5-0.9, >=0.9) are empty")


# ---- the workflow --------------------------------------------------------------------------------------

@pytest.mark.slow  # starts Snakemake: a DAG build of seconds; the fast set (-m "not slow") starts none
@pytest.mark.skipif(shutil.which("mmseqs") is None, reason="needs the mmseqs binary")
def test_workflow_plans_the_identity_step_before_training(tmp_path):
    import yaml
    from workflow_helpers import REPO, SNAKEMAKE, planned_rules, run_snakemake, workflow_copy

    if not SNAKEMAKE.exists():
        pytest.skip("needs snakemake next to the Python running pytest")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    work = workflow_copy(tmp_path / "wf", config)
    output = run_snakemake(work, "--dry-run", "--forceall")
    assert planned_rules(output)["identity"] == 1
    jobs = output.split("\n\n")
    identity_job = next(j for j in jobs if "rule identity:" in j)
    assert "results/data/identity/valid.tsv" in identity_job and "results/data/split/train.fasta.gz" in identity_job
    train_job = next(j for j in jobs if "rule train:" in j)
    assert "results/data/identity/valid.tsv" in train_job  # every run waits for the table
    # data.identity.enabled false: no identity step, and training does not wait for one.
    config["data"]["identity"] = {"enabled": False}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    output = run_snakemake(work, "--dry-run", "--forceall")
    assert "identity" not in planned_rules(output) and "results/data/identity" not in output
    config["data"]["identity"] = {"bins": [0.9, 0.5]}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    assert "data.identity.bins must be increasing" in run_snakemake(work, "--dry-run", check=False)


def test_closed_loop_scores_the_loss_the_fit_was_fitted_on():
    from test_closed_loop import _trained, demo_config, hand_made_fit

    from plmscale.scaling import closed_loop as cl

    fit = hand_made_fit()
    plan = cl.plan_closed_loop(demo_config(), fit, "clm", 3)
    metrics = {**_trained(plan, 2.5), "valid_loss_by_identity": {"<0.5": 2.9, ">=0.9": 2.2}}
    assert cl.score_run(fit, plan, metrics)["observed_loss"] == 2.5
    fit = {**fit, "settings": {**fit.get("settings", {}), "loss_column": "valid_loss_id_<0.5"}}
    assert cl.score_run(fit, plan, metrics)["observed_loss"] == 2.9


@needs_mmseqs
def test_too_little_memory_names_the_key_to_raise_first(tmp_path):
    """Issue 27: the error quoted MMseqs2's log but did not lead with data.identity.mem_mb."""
    rng = np.random.default_rng(4)
    train = _write_fasta(tmp_path / "train.fasta.gz",
                         [(f"t{i}", "".join(rng.choice(list(AMINO), 200))) for i in range(300)])
    valid = _write_fasta(tmp_path / "valid.fasta.gz",
                         [(f"v{i}", "".join(rng.choice(list(AMINO), 200))) for i in range(50)])
    with pytest.raises(PlmscaleError) as caught:  # 300 MB of the job: MMseqs2 gets --split-memory-limit 64M
        search_identity(train, {"valid": valid}, {"valid": tmp_path / "valid.tsv"}, tmp_path / "summary.json",
                        sensitivity=2, mem_mb=1)
    first_line = str(caught.value).splitlines()[0]
    assert first_line == "MMseqs2 ran out of memory: raise data.identity.mem_mb (now 1 MB) in the config, e.g. double it."
