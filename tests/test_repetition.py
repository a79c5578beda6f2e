"""The repetition study: the restricted subset, the epoch arithmetic, Muennighoff's R* fit, the run grid, and the
workflow's plan (docs/repetition.md)."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from plmscale.config import load_config
from plmscale.errors import PlmscaleError
from plmscale.grid.repetition import repetition_run_id, repetition_specs
from plmscale.grid.spec import RunSpec
from plmscale.plots.repetition import plot_repetition
from plmscale.scaling import repetition as rep
from plmscale.train.sampler import SequenceSampler
from plmscale.train.subset import (SubsetReader, cluster_rank_keys, epochs, framed_tokens, repeated_epochs,
                                   restricted_reader, select_subset)
from train_fixtures import MemoryShards, demo_split, tiny_spec
from workflow_helpers import SNAKEMAKE, default_config_with, planned_rules, planned_run_ids, run_snakemake, workflow_copy

RESIDUES = "ACDEFGHIKLMNPQRSTVWY"


def two_source_shards(n_clusters=120, seed=0):
    """Clusters of 1-6 members with random lengths; a third of the clusters have members in both sources."""
    rng = np.random.default_rng(seed)
    sequences, clusters, sources = [], [], []
    for c in range(n_clusters):
        holders = [0, 1] if c % 3 == 0 else [int(rng.integers(0, 2))]
        for source in holders:
            for _ in range(int(rng.integers(1, 7))):
                sequences.append("".join(rng.choice(list(RESIDUES), int(rng.integers(30, 200)))))
                clusters.append(1000 + 7 * c)  # ids need not be dense
                sources.append(source)
    return MemoryShards(sequences, clusters, sources, ["reference", "metagenomic"])


# ---- the restricted subset ----------------------------------------------------------------------------

def test_subset_is_deterministic_whole_clusters_of_one_source_with_about_u_tokens():
    shards = two_source_shards()
    ids, sources, tokens = np.asarray(shards.cluster_ids), np.asarray(shards.source_ids), framed_tokens(shards.lengths)
    unique = 0.3 * tokens[sources == 0].sum()
    chosen = select_subset(shards, "reference", unique, seed=5)
    assert np.array_equal(chosen, select_subset(shards, "reference", unique, seed=5))  # reruns match
    assert not np.array_equal(chosen, select_subset(shards, "reference", unique, seed=6))  # the seed matters
    assert set(sources[chosen]) == {0}  # the named source only
    chosen_clusters = set(ids[chosen])
    whole = np.flatnonzero(np.isin(ids, list(chosen_clusters)) & (sources == 0))
    assert np.array_equal(np.sort(chosen), whole)  # every reference member of a chosen cluster
    # At least U, and less than U plus the largest cluster: clusters join until U is reached.
    total = tokens[chosen].sum()
    largest = max(tokens[(ids == c) & (sources == 0)].sum() for c in chosen_clusters)
    assert unique <= total < unique + largest


def test_cluster_order_is_a_fixed_hash_of_id_and_seed():
    keys = cluster_rank_keys(np.array([1, 2, 3, 10**12]), seed=9)
    assert keys.dtype == np.uint64 and len(set(keys.tolist())) == 4
    assert np.array_equal(keys, cluster_rank_keys(np.array([1, 2, 3, 10**12]), seed=9))
    # The same cluster keeps its key whatever else is in the split (a subset does not reshuffle when data grows).
    assert cluster_rank_keys(np.array([3]), seed=9)[0] == keys[2]


def test_subset_refuses_an_unknown_source_and_more_tokens_than_the_source_holds():
    shards = two_source_shards()
    with pytest.raises(PlmscaleError, match="not a source"):
        select_subset(shards, "uniref", 1000, seed=0)
    available = framed_tokens(shards.lengths)[np.asarray(shards.source_ids) == 1].sum()
    with pytest.raises(PlmscaleError, match="more than source 'metagenomic' holds"):
        select_subset(shards, "metagenomic", available + 1, seed=0)


def test_subset_reader_feeds_the_sampler_only_its_sequences():
    shards = two_source_shards()
    view = restricted_reader(shards, {"source": "reference", "unique_tokens": 5000, "seed": 1})
    assert isinstance(view, SubsetReader) and len(view) > 0
    assert view.unique_tokens == framed_tokens(view.lengths).sum() >= 5000
    allowed = {tuple(view[i].tolist()) for i in range(len(view))}
    sampler = SequenceSampler(view, seq_len=256, source_weights={"reference": 1.0})
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert tuple(view[sampler.pick(rng)].tolist()) in allowed


# ---- epochs and effective data ---------------------------------------------------------------------------

def test_epoch_arithmetic():
    assert epochs(2e6, 1e5) == 20.0
    assert repeated_epochs(2e6, 1e5) == 19.0
    assert repeated_epochs(5e4, 1e5) == 0.0  # less than one pass repeats nothing
    u = 1e5
    assert rep.effective_data(5e4, u, 3.0) == 5e4  # D <= U: every token is new
    assert rep.effective_data(5 * u, u, 2.0) == pytest.approx(u + 2 * u * (1 - math.exp(-2.0)))
    assert rep.effective_data(5 * u, u, 1e9) == pytest.approx(5 * u, rel=1e-6)  # R* -> inf: repeats = new data
    assert rep.effective_data(1e4 * u, u, 4.0) == pytest.approx(5 * u)  # many epochs saturate at U(1 + R*)
    d = np.array([u, 2 * u, 8 * u, 64 * u])
    values = rep.effective_data(d, u, 5.0)
    assert np.all(np.diff(values) > 0) and np.all(values <= d)


# ---- the R* fit -----------------------------------------------------------------------------------------------

LAWS = {"n10k": {"E": 1.9, "B": 40.0, "beta": 0.3}, "n40k": {"E": 1.7, "B": 60.0, "beta": 0.33}}


def synthetic_points(r_star, unique=2e5, noise=0.002, seed=0, objective="clm"):
    """Final losses of mixture runs (the law) and repeated runs (the law at D'(R*)), with log-normal noise."""
    rng = np.random.default_rng(seed)
    rows = []
    budgets = [5e5, 1e6, 2e6, 4e6, 8e6, 1.6e7]
    for model, law in LAWS.items():
        for d in budgets:
            mix = rep.unique_law(d, law)
            repeated = rep.unique_law(rep.effective_data(d, unique, r_star), law) if r_star else mix
            for kind, loss in (("mix", mix), ("rep", repeated)):
                rows.append({"run_id": f"{kind}_{model}_{d:g}", "objective": objective, "model": model, "kind": kind,
                             "unique_tokens": unique if kind == "rep" else math.inf, "tokens": d,
                             "loss": float(loss * math.exp(rng.normal(0, noise)))})
    return pd.DataFrame(rows)


def test_fit_recovers_a_planted_r_star_with_an_interval_covering_it():
    points = synthetic_points(r_star=8.0)
    entry = rep.fit_repetition(points, bootstrap=60, seed=1)["clm"]
    assert entry["status"] == "identified", entry["reason"]
    assert entry["r_star"] == pytest.approx(8.0, rel=0.35)
    low, high = entry["interval"]
    assert low < 8.0 < high and high / low < 10
    assert set(entry["laws"]) == set(LAWS)


def test_no_repetition_penalty_reports_r_star_as_only_bounded_below():
    points = synthetic_points(r_star=None)  # repeated runs as good as the mixture
    entry = rep.fit_repetition(points, bootstrap=30, seed=1)["clm"]
    assert entry["status"] == "bounded_below"
    assert "does not hurt" in entry["reason"] or "only R* >" in entry["reason"]
    assert entry["half_life_epochs"] is None


def test_the_bound_in_the_reason_is_the_one_json_carries_for_the_figure():
    entry = rep.fit_repetition(synthetic_points(r_star=None), bootstrap=30, seed=1)["clm"]
    bound = entry["r_star_bound"]
    assert bound["side"] == "below" and bound["value"] == min(entry["interval"][0], entry["profile_interval"][0])
    assert f"R* > {bound['value']:.3g}" in entry["reason"]


def _study_runs(points):
    runs = points.drop_duplicates("run_id").copy()
    runs["source"] = np.where(runs["kind"] == "rep", "reference", "mixture")
    return runs


def test_a_mixture_of_the_repeated_source_alone_is_refused_with_a_reason():
    points = synthetic_points(r_star=8.0)
    runs = _study_runs(points)
    summary = rep.repetition_summary(runs, pd.DataFrame(columns=["run_id", "tokens", "loss"]), bootstrap=5,
                                     mixture_sources=["reference"], train_tokens=1e9)
    entry = summary["objectives"]["clm"]
    assert entry["status"] == "refused" and entry["r_star"] is None
    assert "no more diverse" in entry["reason"] and "reference" in entry["reason"]
    repeated_itself = rep.repetition_summary(runs, pd.DataFrame(columns=["run_id", "tokens", "loss"]), bootstrap=5,
                                             mixture_sources=["reference", "metagenomic"], train_tokens=1e7)
    assert repeated_itself["objectives"]["clm"]["status"] == "refused"
    assert "1.6 epochs" in repeated_itself["objectives"]["clm"]["reason"]
    diverse = rep.repetition_summary(runs, pd.DataFrame(columns=["run_id", "tokens", "loss"]), bootstrap=5,
                                     mixture_sources=["reference", "metagenomic"], train_tokens=1e9)
    assert diverse["objectives"]["clm"]["status"] == "identified"


def test_too_few_budgets_for_the_unique_law_is_reported_not_fitted():
    points = synthetic_points(r_star=8.0)
    few = points[points["tokens"].isin([4e6, 8e6])]
    entry = rep.fit_repetition(few, bootstrap=5)["clm"]
    assert entry["status"] == "not_fitted" and entry["r_star"] is None and "distinct token counts" in entry["reason"]


def test_loss_gaps_compare_each_repeated_point_with_the_mixture_at_the_same_tokens():
    points = synthetic_points(r_star=4.0, noise=0.0)
    laws = {"clm": LAWS}
    gaps = rep.loss_gaps(points, laws)
    assert len(gaps) == len(points[points["kind"] == "rep"])
    by_epochs = sorted((g["epochs"], g["gap_vs_mix"]) for g in gaps if g["model"] == "n10k")
    assert all(later >= earlier for (_, earlier), (_, later) in zip(by_epochs, by_epochs[1:]))  # grows with epochs
    assert by_epochs[-1][0] == pytest.approx(1.6e7 / 2e5) and by_epochs[-1][1] > 0


def test_curve_points_join_the_runs_kind_and_unique_tokens():
    runs = pd.DataFrame([{"run_id": "a", "objective": "clm", "model": "m", "kind": "rep", "unique_tokens": 10.0,
                          "tokens": 40.0, "loss": 2.0}])
    curves = pd.DataFrame({"run_id": ["a", "a"], "tokens": [20.0, 40.0], "loss": [2.5, 2.0]})
    table = rep.points_table(runs, curves, "curve")
    assert table[["tokens", "loss"]].values.tolist() == [[20.0, 2.5], [40.0, 2.0]]
    assert set(table["kind"]) == {"rep"} and set(table["unique_tokens"]) == {10.0}
    assert len(rep.points_table(runs, curves, "final")) == 1


# ---- the runs ----------------------------------------------------------------------------------------------

def study_config(**repetition):
    settings = {"source": "reference", "unique_tokens": 1e5, "models": ["n7k"], "objectives": ["clm", "mlm"],
                "tokens": [5e4, 1e6, 2e6], "eval_every_steps": 50}
    settings.update(repetition)
    return load_config(default_config_with({"train": {"repetition": settings}}))


def test_expansion_pairs_each_repeated_run_with_a_mixture_run_of_the_same_budget():
    specs = {s.run_id: s for s in repetition_specs(study_config())}
    expected = {repetition_run_id("mix", o, "n7k", d) for o in ("clm", "mlm") for d in (5e4, 1e6, 2e6)}
    expected |= {repetition_run_id("rep", o, "n7k", d, 1e5) for o in ("clm", "mlm") for d in (1e6, 2e6)}
    assert set(specs) == expected  # no repeated run at 5e4 < U: it would not repeat anything
    assert "rep_clm_n7k_u1e5_d2e6" in specs and "mix_mlm_n7k_d1e6" in specs
    repeated, mixture = specs["rep_clm_n7k_u1e5_d2e6"], specs["mix_clm_n7k_d2e6"]
    assert repeated.subset == {"source": "reference", "unique_tokens": 1e5, "seed": 1234}
    assert repeated.source_weights == {"reference": 1.0} and mixture.subset is None
    assert len(mixture.source_weights) == 2
    for key in ("tokens", "lr", "batch_tokens", "shape", "objective"):
        assert getattr(repeated, key) == getattr(mixture, key)
    assert repeated.seed == mixture.seed and repeated.train.eval_every_steps == 50  # same initial weights
    # The subset travels through the spec's JSON form (the train rule's params); other runs' JSON is unchanged.
    assert RunSpec.from_dict(repeated.to_dict()).subset == repeated.subset
    assert "subset" not in mixture.to_dict()


def test_plan_lists_the_study_with_the_grid(tmp_path, capsys):
    import yaml
    from plmscale.cli import main
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(default_config_with({})))
    assert main(["plan", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "rep_clm_n25k_u5e4_d1e6" in out and "mix_mlm_n25k_d1e6" in out and "clm_n14k_c1.25e11" in out


def test_no_study_without_source_or_budgets_and_clear_errors():
    assert repetition_specs(study_config(source=None)) == []
    assert repetition_specs(study_config(tokens=[])) == []
    with pytest.raises(PlmscaleError, match="train.repetition.models"):
        repetition_specs(study_config(models=["n1B"]))
    with pytest.raises(PlmscaleError, match="train.repetition.source"):
        repetition_specs(study_config(source="uniref"))


def test_a_repeated_run_trains_on_the_subset_and_records_its_epochs(tmp_path):
    from plmscale.train.loop import train_run
    train, valid = demo_split(n_families=16, members_per_family=4)
    source = train.sources[0]
    spec = tiny_spec("clm", tokens=6000, run_id="rep_tiny", eval_every_steps=4)
    spec.update(subset={"source": source, "unique_tokens": 1500, "seed": 3}, source_weights={source: 1.0})
    metrics = train_run(spec, train, valid, tmp_path / "out", tmp_path / "ck", threads=1)
    assert metrics["subset"]["source"] == source
    view = restricted_reader(train, spec["subset"])
    assert metrics["unique_tokens"] == view.unique_tokens
    assert metrics["epochs"] == pytest.approx(metrics["tokens"] / view.unique_tokens)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["epochs"] == metrics["epochs"]


def test_summary_and_figure_from_run_files(tmp_path):
    points = synthetic_points(r_star=6.0)
    metrics, curves = [], []
    for row in points.itertuples():
        run = tmp_path / row.run_id
        run.mkdir()
        repeated = row.kind == "rep"
        record = {"run_id": row.run_id, "objective": row.objective, "model": row.model, "n_params": 1000,
                  "tokens": row.tokens, "flops": 6e3 * row.tokens, "budget": None, "init_from": None,
                  "final_valid_loss": row.loss}
        if repeated:
            record.update(subset={"source": "reference", "unique_tokens": row.unique_tokens, "seed": 0},
                          unique_tokens=row.unique_tokens, epochs=row.tokens / row.unique_tokens)
        (run / "metrics.json").write_text(json.dumps(record))
        (run / "curve.csv").write_text(f"step,tokens,flops,train_loss,valid_loss,lr\n1,{row.tokens / 2},1,3,"
                                       f"{row.loss + 0.1},0.001\n2,{row.tokens},1,3,{row.loss},0\n")
        metrics.append(run / "metrics.json")
        curves.append(run / "curve.csv")
    summary = rep.write_repetition(metrics, curves, tmp_path / "repetition.json", bootstrap=20)
    written = json.loads((tmp_path / "repetition.json").read_text())
    assert written["objectives"]["clm"]["status"] == summary["objectives"]["clm"]["status"] == "identified"
    assert len(written["runs"]) == len(points) and written["gaps"]

    runs, curves = rep.read_repetition_runs(metrics, curves)
    (ax,) = plot_repetition(runs, curves, summary, tmp_path / "repetition.png").axes
    assert (tmp_path / "repetition.png").stat().st_size > 0 and (tmp_path / "repetition.svg").exists()
    entry = summary["objectives"]["clm"]
    low, high = entry["interval"]
    assert ax.get_title().endswith(f"R* = {entry['r_star']:.3g} [{low:.3g}, {high:.3g}]")
    # Every run's validation curve, the repeated source dashed and the mixture solid, ending at its final loss.
    for run in runs.itertuples():
        label = f"{run.model}: mixture" if run.kind == "mix" else f"{run.model}: reference, U=200k tokens"
        same = [line for line in ax.lines if line.get_label() == label and line.get_xdata()[-1] == run.tokens]
        assert len(same) == 1 and same[0].get_linestyle() == ("--" if run.kind == "rep" else "-"), label
        assert same[0].get_ydata()[-1] == pytest.approx(run.loss)
    # Whole epoch counts are marked on the repeated curves: D = 2^k U within each curve.
    marks = {text.get_text() for text in ax.texts}
    assert {"4 ep", "8 ep", "16 ep", "32 ep", "64 ep"} <= marks and "1 ep" not in marks


def test_figure_states_the_bound_the_summary_carries(tmp_path):
    """The title quotes the summary's r_star_bound (the bound its reason gives), never one recomputed from the
    bootstrap interval (which said R* > 40.4 where the reason said R* > 112)."""
    runs = pd.DataFrame(columns=["run_id", "objective", "model", "n_params", "kind", "source", "unique_tokens",
                                 "tokens", "loss"])
    runs.loc[0] = ["mix_mlm", "mlm", "n25k", 25000, "mix", "mixture", math.inf, 1e6, 2.5]
    runs.loc[1] = ["mix_clm", "clm", "n25k", 25000, "mix", "mixture", math.inf, 1e6, 2.6]
    bounded = {"r_star": 1000.0, "interval": [40.4, 1000.0], "profile_interval": [112.0, 1000.0],
               "status": "bounded_below", "r_star_bound": {"side": "below", "value": 112.0},
               "reason": "repetition does not hurt within these budgets: R* is only bounded below, R* > 112"}
    summary = {"objectives": {"mlm": bounded,
                              "clm": {"r_star": None, "interval": None, "status": "refused", "r_star_bound": None}}}
    fig = plot_repetition(runs, pd.DataFrame(columns=["run_id", "tokens", "loss"]), summary, tmp_path / "rep.png")
    titles = {ax.get_title().split(":")[0]: ax.get_title().split("\n")[1] for ax in fig.axes}
    assert titles == {"MLM (masked)": "R* > 112 (bounded below only)", "CLM (causal)": "R* refused"}
    above = {**bounded, "status": "bounded_above", "r_star_bound": {"side": "above", "value": 1.5}}
    fig = plot_repetition(runs[runs["objective"] == "mlm"], pd.DataFrame(columns=["run_id", "tokens", "loss"]),
                          {"objectives": {"mlm": above}}, tmp_path / "rep.png")
    assert fig.axes[0].get_title().endswith("\nR* < 1.5")


# ---- the workflow -----------------------------------------------------------------------------------------

@pytest.mark.slow  # starts Snakemake: a DAG build of seconds; the fast set (-m "not slow") starts none
@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="needs snakemake next to the Python running pytest")
def test_dry_run_plans_the_demos_study_outside_the_scaling_fits(tmp_path):
    workdir = workflow_copy(tmp_path / "wf", default_config_with({}))  # the demo, config.yaml, as it is
    output = run_snakemake(workdir, "--dry-run", "--forceall")
    jobs = planned_rules(output)
    assert jobs["repetition"] == 1
    study = {"rep_clm_n25k_u5e4_d1e6", "mix_clm_n25k_d1e6", "rep_mlm_n25k_u5e4_d1e6", "mix_mlm_n25k_d1e6"}
    assert study <= planned_run_ids(output)
    # The study's runs feed only the repetition rule: collect (and so the scaling fits) never reads them.
    collect = output.split("rule collect:", 1)[1].split("\n\n", 1)[0]
    assert "rep_" not in collect and "mix_" not in collect
    assert "results/scaling/repetition.json" in output
