"""Warmup-stable-decay grids: the schedule, the grid's trunks and branches, their cost, a trunk and two
branches trained for real, and the workflow's DAG (trunk before branches)."""

import copy
import csv
import math

import pytest
import yaml

from plmscale.config import load_config
from plmscale.grid import expand_grid
from plmscale.grid import wsd
from plmscale.train.loop import train_run
from plmscale.train.schedule import wsd_lr_at
from tests.train_fixtures import demo_split, tiny_spec
from tests.workflow_helpers import REPO, fixed_demo_config_with, planned_rules, run_snakemake, workflow_copy


# ---- the schedule -------------------------------------------------------------------------------------

def test_wsd_schedule_warms_up_holds_and_decays_with_1_minus_sqrt_to_the_floor_at_the_last_step():
    peak, total, start, warm = 1e-3, 100, 80, 10
    lrs = [wsd_lr_at(step, total, start, warm, peak, min_lr_ratio=0.1) for step in range(total)]
    assert lrs[0] == pytest.approx(peak / warm) and lrs[warm - 1] == pytest.approx(peak)
    assert all(lr == peak for lr in lrs[warm:start])
    assert lrs[-1] == pytest.approx(0.1 * peak)
    decay = lrs[start:]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    # halfway through the decay the 1-sqrt shape sits at 1 - sqrt(1/2) of the way from peak to floor
    assert lrs[start + 9] == pytest.approx(0.1 * peak + 0.9 * peak * (1 - math.sqrt(10 / 20)))


def test_a_trunk_never_decays():
    assert [wsd_lr_at(s, 50, 50, 5, 2.0) for s in range(5, 50)] == [2.0] * 45


def test_wsd_schedule_refuses_a_decay_before_the_warm_up_ends():
    with pytest.raises(ValueError, match="warmup"):
        wsd_lr_at(0, 100, 5, 10, 1.0)


# ---- the grid -----------------------------------------------------------------------------------------

def demo_config(schedule):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["train"]["isoflop"]["schedule"] = schedule
    return load_config(config)


def test_wsd_grid_has_one_trunk_per_size_and_the_cosine_grid_points_as_branches():
    cosine = expand_grid(demo_config("cosine"))
    specs = expand_grid(demo_config("wsd"), trunks=True)
    trunks = [s for s in specs if s.wsd_role == "trunk"]
    branches = {s.run_id: s for s in specs if s.wsd_role == "branch"}
    iso = [s for s in cosine if s.budget is not None]
    assert sorted(branches) == sorted(s.run_id for s in iso)
    assert sorted(t.model for t in trunks) == sorted({s.model for s in iso})
    assert not any(s.wsd_role == "trunk" for s in expand_grid(demo_config("wsd")))  # not grid points
    for point in iso:
        branch = branches[point.run_id]
        assert (branch.tokens, branch.budget, branch.flops) == (point.tokens, point.budget, point.flops)
    for trunk in trunks:
        family = [b for b in branches.values() if b.wsd["trunk"] == trunk.run_id]
        assert len(family) == len(trunk.wsd["branches"]) >= 1
        assert {b.model for b in family} == {trunk.model}
        # one data stream, lr and batch for the whole family: branches continue the trunk's trajectory
        assert {(b.seed, b.lr, b.batch_tokens) for b in family} == {(trunk.seed, trunk.lr, trunk.batch_tokens)}
        top = max(b.tokens for b in family)
        assert trunk.tokens == round(0.8 * top)


def test_decay_fraction_outside_olmos_range_is_a_config_error():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["train"]["isoflop"].update(schedule="wsd", decay_fraction=0.5)
    with pytest.raises(Exception, match="decay_fraction"):
        load_config(config)


def test_branch_points_sit_at_each_budget_minus_its_decay():
    family = {"trunk": "clm_x_trunk", "decay_fraction": 0.2,
              "branches": {"clm_x_c1": 1000, "clm_x_c2": 2000, "clm_x_c4": 4000}}
    points = wsd.branch_points(family, steps_for_tokens=lambda tokens: tokens // 10, warmup_fraction=0.05)
    assert points.total == {"clm_x_c1": 100, "clm_x_c2": 200, "clm_x_c4": 400}
    assert points.decay_start == {"clm_x_c1": 80, "clm_x_c2": 160, "clm_x_c4": 320}
    assert points.trunk_steps == 320
    assert points.warmup == 5  # of the smallest budget's steps: no branch warms up for more than 5%


def test_branch_points_refuse_a_budget_that_would_decay_during_warm_up():
    family = {"trunk": "t", "decay_fraction": 0.2, "branches": {"small": 100, "big": 10_000}}
    with pytest.raises(Exception, match="warm-up"):
        wsd.branch_points(family, steps_for_tokens=lambda tokens: tokens // 10, warmup_fraction=0.9)


# ---- cost ---------------------------------------------------------------------------------------------

def test_wsd_saving_matches_the_arithmetic_of_shared_trunks():
    # 3 budgets at x2: cosine trains 1 + 1/2 + 1/4 = 1.75 D_max; WSD 0.8 D_max + 0.2 * 1.75 D_max
    assert wsd.geometric_saving(2.0, 3, 0.2) == pytest.approx(1 - (0.8 + 0.2 * 1.75) / 1.75)
    # many budgets: (1 - f)/ratio: 40% at x2, ~25% at half a decade (the figures)
    assert wsd.geometric_saving(2.0, 60, 0.2) == pytest.approx(0.40, abs=1e-6)
    assert wsd.geometric_saving(10 ** 0.5, 60, 0.2) == pytest.approx(0.8 / 10 ** 0.5, abs=1e-6)
    assert 0.24 < wsd.geometric_saving(10 ** 0.5, 60, 0.2) < 0.26
    assert wsd.geometric_saving(2.0, 1, 0.2) == pytest.approx(0.0)  # one budget: nothing shared


def test_plan_prints_the_wsd_grid_cost_against_cosine_runs(tmp_path, capsys):
    from plmscale.cli import main
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["train"]["isoflop"]["schedule"] = "wsd"
    path = tmp_path / "wsd.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["plan", "--config", str(path), "--results", str(tmp_path)])
    out = capsys.readouterr().out
    cost = wsd.grid_cost(expand_grid(load_config(config)))
    # per size: trunk (1-f)·D_max + f·ΣD against ΣD, FLOPs = tokens x the size's FLOPs per token
    points = [s for s in expand_grid(demo_config("cosine")) if s.budget is not None]
    f = load_config(config)["train"]["isoflop"]["decay_fraction"]
    by_size = {}
    for point in points:
        by_size.setdefault(point.model, []).append(point)
    trained = sum(((1 - f) * max(p.tokens for p in family) + f * sum(p.tokens for p in family))
                  * family[0].flops_per_token for family in by_size.values())
    cosine = sum(p.flops for p in points)
    assert len(cost.families) == len(by_size) and cost.cosine_flops == pytest.approx(cosine)
    assert cost.wsd_flops == pytest.approx(trained) and cost.saving == pytest.approx(1 - trained / cosine)
    assert 0.1 < cost.saving < 0.5  # the demo's sizes sit in 1-4 budgets each: a real saving, not all of it
    assert f"{cost.saving:.1%} saved" in out and "clm_n14k_trunk" in out


def test_plan_merges_an_overlay_config(tmp_path, capsys):
    from plmscale.cli import main
    main(["plan", "--config", str(REPO / "config.yaml"), str(REPO / "configs" / "demo-wsd.yaml")])
    assert "WSD total" in capsys.readouterr().out


# ---- a trunk and two branches, trained ----------------------------------------------------------------

@pytest.fixture(scope="module")
def shards():
    return demo_split(n_families=12, members_per_family=4)


def family_specs(**train):
    record = {"trunk": "clm_tiny_trunk", "decay_fraction": 0.2,
              "branches": {"clm_tiny_c1": 8000, "clm_tiny_c2": 16000}}
    settings = dict(checkpoint_every_steps=2, eval_every_steps=1000, min_lr_ratio=0.0, **train)
    trunk = tiny_spec("clm", tokens=12800, run_id="clm_tiny_trunk", wsd={"role": "trunk", **record}, **settings)
    branches = {run_id: tiny_spec("clm", tokens=tokens, run_id=run_id, wsd={"role": "branch", **record},
                                  **settings) for run_id, tokens in record["branches"].items()}
    return trunk, branches


def read_curve(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained_family(shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("wsd")
    trunk, branches = family_specs()
    trunk_metrics = train_run(trunk, *shards, root / "trunks" / "clm_tiny_trunk", root / "ck" / "clm_tiny_trunk",
                              threads=1)
    metrics = {run_id: train_run(spec, *shards, root / "runs" / run_id, root / "ck" / run_id, threads=1)
               for run_id, spec in branches.items()}
    return root, trunk_metrics, metrics


def test_trunk_writes_one_state_per_branch_at_its_decay_start(trained_family):
    root, trunk_metrics, metrics = trained_family
    states = sorted(p.name for p in (root / "ck" / "clm_tiny_trunk").glob("branch_*.pt"))
    assert states == ["branch_clm_tiny_c1.pt", "branch_clm_tiny_c2.pt"]
    assert not list((root / "ck" / "clm_tiny_trunk").glob("branch_points/*"))  # moved, not copied
    assert trunk_metrics["steps"] == max(m["wsd"]["decay_start_step"] for m in metrics.values())
    assert not (root / "ck" / "clm_tiny_trunk" / "last.pt").exists()


def test_branch_follows_the_trunk_to_its_decay_start_then_decays_to_the_floor(trained_family):
    root, _, metrics = trained_family
    trunk_curve = read_curve(root / "trunks" / "clm_tiny_trunk" / "curve.csv")
    for run_id, m in metrics.items():
        curve = read_curve(root / "runs" / run_id / "curve.csv")
        start = m["wsd"]["decay_start_step"]
        assert len(curve) == m["steps"] and start < m["steps"]
        assert curve[:start] == trunk_curve[:start]  # the very same trajectory, row for row
        lrs = [float(row["lr"]) for row in curve]
        assert lrs[start - 1] == pytest.approx(m["peak_lr"])
        assert all(a > b for a, b in zip(lrs[start - 1:], lrs[start:]))
        assert lrs[-1] == pytest.approx(0.0)
        # tokens and FLOPs of the whole trajectory: the grid point's compute, trunk part included
        assert m["tokens"] == int(curve[-1]["tokens"]) and m["flops"] == pytest.approx(float(curve[-1]["flops"]))
        assert abs(m["tokens"] / m["target_tokens"] - 1) < 0.1
        assert m["schedule"] == "wsd" and m["wsd"]["trunk"] == "clm_tiny_trunk"
    # the longer budget decays later and ends lower than the trunk's loss at its own branch point
    assert metrics["clm_tiny_c2"]["wsd"]["decay_start_step"] > metrics["clm_tiny_c1"]["wsd"]["decay_start_step"]


def test_decay_improves_on_the_constant_lr_trunk(trained_family):
    root, _, metrics = trained_family
    m = metrics["clm_tiny_c2"]
    curve = read_curve(root / "runs" / "clm_tiny_c2" / "curve.csv")
    at_branch = float(curve[m["wsd"]["decay_start_step"] - 1]["valid_loss"])  # the trunk evaluates there
    assert m["final_valid_loss"] < at_branch


def test_interrupted_trunk_and_branch_resume_to_the_uninterrupted_result(trained_family, shards, tmp_path):
    root, _, metrics = trained_family
    trunk, branches = family_specs()
    ck = tmp_path / "ck"
    assert train_run(trunk, *shards, tmp_path / "trunk", ck / "clm_tiny_trunk", threads=1,
                     stop_after_steps=metrics["clm_tiny_c1"]["wsd"]["decay_start_step"] + 5) is None
    train_run(trunk, *shards, tmp_path / "trunk", ck / "clm_tiny_trunk", threads=1)
    spec = branches["clm_tiny_c2"]
    start = metrics["clm_tiny_c2"]["wsd"]["decay_start_step"]
    assert train_run(spec, *shards, tmp_path / "b", ck / "clm_tiny_c2", threads=1, stop_after_steps=start + 3) is None
    assert (ck / "clm_tiny_c2" / "last.pt").exists()
    resumed = train_run(spec, *shards, tmp_path / "b", ck / "clm_tiny_c2", threads=1)
    assert resumed["final_valid_loss"] == metrics["clm_tiny_c2"]["final_valid_loss"]
    assert (tmp_path / "b" / "curve.csv").read_text() == (root / "runs" / "clm_tiny_c2" / "curve.csv").read_text()


def test_branch_without_its_trunk_state_says_what_to_train(shards, tmp_path):
    _, branches = family_specs()
    with pytest.raises(Exception, match="clm_tiny_trunk first"):
        train_run(branches["clm_tiny_c1"], *shards, tmp_path / "o", tmp_path / "ck" / "clm_tiny_c1", threads=1)


# ---- the workflow -------------------------------------------------------------------------------------

@pytest.mark.slow  # starts Snakemake: a DAG build of seconds; the fast set (-m "not slow") starts none
def test_dry_run_plans_trunks_before_their_branches_and_the_cross_check(tmp_path):
    other = tmp_path / "cosine" / "fit.json"
    other.parent.mkdir()
    other.write_text("{}")
    config = fixed_demo_config_with({"train": {"isoflop": {"schedule": "wsd"}},
                                  "fit": {"cross_check": {"fit": str(other), "label": "cosine", "this_label": "wsd"}}})
    workdir = workflow_copy(tmp_path / "wf", copy.deepcopy(config))
    output = run_snakemake(workdir, "--dry-run", targets=["results/scaling/cross_check.md"])
    rules = planned_rules(output)
    specs = expand_grid(load_config(config), trunks=True)
    trunks = [s for s in specs if s.wsd_role == "trunk"]
    assert {r for r in rules if r.startswith("train_trunk_")} == {f"train_trunk_{t.run_id.replace('.', '_')}"
                                                                  for t in trunks}
    # one trunk per model size of the grid (the demo's six)
    sizes = {s.model for s in specs if s.wsd_role != "trunk"}
    assert all(rules[f"train_trunk_{t.run_id.replace('.', '_')}"] == 1 for t in trunks)
    assert sorted(t.model for t in trunks) == sorted(sizes) and len(sizes) == 6
    assert rules["train"] == len(specs) - len(trunks) and rules["cross_check"] == 1
    # each branch job reads its trunk's state at its decay start, which only the trunk's job writes
    branch_job = output[output.index("output: results/runs/clm_n14k_c5e11/metrics.json") - 400:]
    assert "results/checkpoints/clm_n14k_trunk/branch_clm_n14k_c5e11.pt" in branch_job.split("output:")[0]
    trunk_job = output[output.index("rule train_trunk_clm_n14k_trunk:"):][:1500]
    assert "results/checkpoints/clm_n14k_trunk/branch_clm_n14k_c5e11.pt" in trunk_job.split("log:")[0]


# ---- collect and the cross-check -----------------------------------------------------------------------

def test_collect_marks_branches_with_their_schedule_and_trunk(trained_family):
    from plmscale.scaling.collect import collect_runs
    root, _, metrics = trained_family
    runs, _ = collect_runs(sorted((root / "runs").glob("*/metrics.json")), sorted((root / "runs").glob("*/curve.csv")))
    assert list(runs["schedule"]) == ["wsd", "wsd"] and list(runs["trunk"]) == ["clm_tiny_trunk"] * 2
    assert sorted(runs["flops"]) == sorted(m["flops"] for m in metrics.values())


def fake_fit(a, ci, n_opts, kept=(True, True)):
    optima = [{"budget": b, "n_opt": n, "raw_n_opt": n, "loss_opt": 2.0, "kept": k}
              for b, n, k in zip((1e11, 2e11), n_opts, kept)]
    return {"objectives": {"clm": {"isoflop": {"a": a, "a_ci": ci, "identified": True, "reasons": [],
                                               "optima": optima}}}}


def fake_runs(losses):
    return __import__("pandas").DataFrame(
        [{"run_id": f"clm_n{n}_c{b:g}", "objective": "clm", "budget": b, "n_params": n, "loss": loss}
         for (b, n), loss in losses.items()])


def cosine_and_wsd_fits():
    """Two fits of one two-budget grid; the WSD one's optimum at 2e11 is not bracketed."""
    cosine = (fake_fit(0.5, [0.4, 0.6], (1000, 1400)), fake_runs({(1e11, 1000): 2.5, (2e11, 1000): 2.4}))
    wsd_fit = (fake_fit(0.7, [0.65, 0.75], (1100, 1800), kept=(True, False)),
               fake_runs({(1e11, 1000): 2.52, (2e11, 1000): 2.38}))
    return {"cosine": cosine, "wsd": wsd_fit}


def test_cross_check_lays_two_fits_side_by_side(tmp_path):
    from plmscale.scaling import cross_check
    fits = cosine_and_wsd_fits()
    result = cross_check.compare(fits)
    clm = result["objectives"]["clm"]
    assert [round(p["difference"], 6) for p in clm["points"]] == [0.02, -0.02]
    assert [round(r["n_opt_ratio"], 6) for r in clm["budgets"]] == [1.1, round(1800 / 1400, 6)]
    assert clm["budgets"][1]["wsd"]["bracketed"] is False
    assert clm["a_difference"] == pytest.approx(0.2) and clm["a_intervals_overlap"] is False
    text = cross_check.markdown(result)
    assert "a = 0.700 [0.650, 0.750]" in text and "+0.0200" in text
    with pytest.raises(Exception, match="exactly two"):
        cross_check.compare({"cosine": fits["cosine"]})


def test_cross_check_plot_leaves_unbracketed_vertices_open(tmp_path):
    from plmscale.plots.cross_check import plot_cross_check
    from plmscale.scaling import cross_check
    fits = cosine_and_wsd_fits()
    figure = plot_cross_check(cross_check.compare(fits), tmp_path / "cross_check.png")
    assert (tmp_path / "cross_check.png").stat().st_size > 0
    faces = {line.get_gid(): line.get_markerfacecolor() for line in figure.axes[0].lines
             if (line.get_gid() or "").startswith("vertex")}
    assert faces["vertex wsd 2e+11"] == "none"                      # its optimum sits at the grid's edge
    assert "none" not in (faces["vertex wsd 1e+11"], faces["vertex cosine 2e+11"], faces["vertex cosine 1e+11"])
