"""The planner (plmscale.design.planner, `plmscale design`) and the next run (`plmscale predict --emit-config`)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from plmscale.cli import main as cli_main
from plmscale.config import load_config_files
from plmscale.design import planner
from plmscale.design.next_run import next_run
from plmscale.errors import PlmscaleError
from plmscale.grid.expand import expand_grid
from plmscale.grid.plan import planned_specs
from plmscale.grid.shapes import n_params, nearest_ladder_entry
from workflow_helpers import REPO

DEMO = str(REPO / "config.yaml")
FIXED_DEMO = [DEMO, str(REPO / "configs" / "demo-fixed.yaml")]  # the demo as a fixed grid of four budgets
PAPER = str(REPO / "configs" / "paper.yaml")
# The demo's own parametric law (fit.json of the 2026-12-06 demo run, CLM), a prior with a known a.
DEMO_PRIOR = planner.PriorLaw(E=2.1104, A=22.87, B=54719.0, alpha=0.5771, beta=0.9516, source="test")
NOISE = 0.01


def demo_config():
    """The demo's fixed grid: the adaptive demo's first round has three budgets, too few to vary a span."""
    return load_config_files(FIXED_DEMO)


# ---- expected widths on a known prior ------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_plan():
    """The demo grid, three runs per point, and a wider span (two budgets above, with the larger size they
    need), on a known prior with known Gaussian noise."""
    config, source = demo_config()
    candidates = {d.name: d for d in planner.candidate_designs(config)}
    designs = [candidates["config grid"], planner.Design("x3", candidates["grid budgets; ladder; cosine x3"].isoflop, {}),
               planner.Design("wider span", **{k: getattr(candidates["+2 budgets above; +1 larger size; cosine"], k)
                                               for k in ("isoflop", "ladder")})]
    return planner.plan_designs(config, DEMO_PRIOR, 1.5e12, None, noise=NOISE, tail_df=None, simulations=100,
                                designs=designs, source=source)


def test_expected_a_width_shrinks_with_replicates_and_span(demo_plan):
    rows = {row["name"]: row for row in demo_plan["rows"]}
    base = rows["config grid"]
    assert math.isfinite(base["a_width"])
    assert rows["x3"]["a_width"] < 0.85 * base["a_width"]
    assert rows["wider span"]["a_width"] < 0.85 * base["a_width"]
    assert max(rows["wider span"]["budgets"]) > 2 * max(base["budgets"])
    # ... and more of the simulated studies are identified, at a cost the plan adds up.
    assert rows["x3"]["identified_fraction"] > base["identified_fraction"]
    assert rows["x3"]["flops"] == pytest.approx(3 * base["flops"])
    assert rows["x3"]["n_runs"] == 3 * base["n_runs"]


def test_the_simulated_fits_centre_on_the_priors_exponent():
    """No noise to speak of and a grid that brackets every optimum: the studies recover the prior's a."""
    config, source = demo_config()
    plan = planner.plan_designs(config, DEMO_PRIOR, 1.5e12, None, noise=1e-4, simulations=30,
                                designs=[planner.Design("config grid", {}, {}, is_config=True)], source=source)
    row = plan["rows"][0]
    assert row["fitted_fraction"] == 1.0
    assert abs(row["a_bias"]) < 0.1  # parabolas in log N of a non-parabolic profile: a small, known bias
    assert row["a_spread"] < 0.02


def test_more_noise_gives_a_wider_expected_interval():
    config, source = demo_config()
    design = [planner.Design("config grid", {}, {}, is_config=True)]
    widths = [planner.plan_designs(config, DEMO_PRIOR, 1.5e12, None, noise=noise, simulations=60, designs=design,
                                   source=source)["rows"][0]["a_width"] for noise in (0.003, 0.02)]
    assert widths[0] < widths[1]


def test_the_choice_is_the_narrowest_width_within_the_study_budget(demo_plan):
    config, source = demo_config()
    rows = demo_plan["rows"]
    base_cost = rows[0]["flops"]
    designs = [planner.Design("config grid", {}, {}, is_config=True), planner.Design("x3", {"replicates": 3}, {})]
    within = planner.plan_designs(config, DEMO_PRIOR, 1.5e12, 1.5 * base_cost, noise=NOISE, tail_df=None,
                                  simulations=100, designs=designs, source=source)
    assert within["rows"][within["chosen"]]["name"] == "config grid"  # x3 costs 3x: out of budget
    unlimited = planner.plan_designs(config, DEMO_PRIOR, 1.5e12, None, noise=NOISE, tail_df=None, simulations=100,
                                     designs=designs, source=source)
    assert unlimited["rows"][unlimited["chosen"]]["name"] == "x3"
    nothing = planner.plan_designs(config, DEMO_PRIOR, 1.5e12, 0.5 * base_cost, noise=NOISE, tail_df=None,
                                   simulations=100, designs=designs, source=source)
    assert nothing["chosen"] is None and "within the study budget" in nothing["chosen_why"]


def test_a_choice_that_seldom_identifies_a_says_so():
    """Huge noise: every design's expected interval is wide and seldom identified; the narrowest of them is still
    chosen, but the reason says that no design here is expected to identify the exponent."""
    config, source = demo_config()
    design = [planner.Design("config grid", {}, {}, is_config=True)]
    noisy = planner.plan_designs(config, DEMO_PRIOR, 1.5e12, None, noise=0.2, tail_df=None, simulations=20,
                                 designs=design, source=source)
    assert noisy["chosen"] == 0 and noisy["rows"][0]["identified_fraction"] < 0.5
    assert "no design here is expected to identify the exponent" in noisy["chosen_why"]
    quiet = planner.plan_designs(config, DEMO_PRIOR, 1.5e12, None, noise=1e-4, tail_df=None, simulations=20,
                                 designs=design, source=source)
    assert quiet["rows"][0]["identified_fraction"] >= 0.5 and "expected to identify" not in quiet["chosen_why"]


def test_a_design_whose_runs_repeat_a_small_train_split_past_max_epochs_is_not_chosen(demo_plan):
    """With the train split's size known, each row gives its runs' most passes over it; the wider span (its
    top budgets' runs read more tokens) is narrower, but on a split too small for it the grid is chosen and the
    notes say why."""
    config, source = demo_config()
    rows = {row["name"]: row for row in demo_plan["rows"]}
    assert all(row["epochs"] is None for row in rows.values())
    assert any("epochs not checked" in note for note in demo_plan["notes"])
    grid_tokens = max(s.tokens for s in _isoflop_points(config, source))
    designs = [planner.Design("config grid", {}, {}, is_config=True),
               *[d for d in planner.candidate_designs(config) if d.name == "+2 budgets above; +1 larger size; cosine"]]
    train_tokens = grid_tokens / 3.5  # the grid's longest run: 3.5 epochs, within max_epochs 4
    plan = planner.plan_designs(config, DEMO_PRIOR, 1.5e12, None, noise=NOISE, tail_df=None, simulations=100,
                                designs=designs, source=source, train_tokens=train_tokens)
    grid, wider = plan["rows"]
    assert grid["epochs"] == pytest.approx(3.5)
    assert wider["epochs"] > config["train"]["isoflop"]["adaptive"]["max_epochs"]
    assert wider["a_width"] < grid["a_width"]  # it would have been chosen ...
    assert plan["chosen"] == 0  # ... but its runs repeat the data
    assert any("1 of 2 designs have runs that pass over the train split" in note for note in plan["notes"])
    assert "epochs" in planner.format_plan(plan)
    from plmscale.plots.design_planner import plot_design_planner  # the figure crosses the design out
    labels = plot_design_planner(plan).axes[0].get_legend_handles_labels()[1]
    assert "repeats the train split > 4 times: not chosen" in labels
    none = planner.plan_designs(config, DEMO_PRIOR, 1.5e12, None, noise=NOISE, tail_df=None, simulations=20,
                                designs=designs, source=source, train_tokens=grid_tokens / 10)
    assert none["chosen"] is None and "more than 4 times" in none["chosen_why"]
    assert any("the config's own grid is one of them: add data" in note for note in none["notes"])


def test_simulated_rounds_count_the_other_objectives_grid_and_refuse_repeated_runs():
    """A CLM+MLM adaptive study: the rounds' study budget counts both objectives' runs, so a budget the CLM grid
    alone leaves room in is spent before any CLM round; and a train split too small for any added run stops
    the rounds with the max_epochs reason, as the workflow's design_round does."""
    from plmscale.design.simulate_rounds import grid_table, simulate_study
    from plmscale.scaling.identify import Criteria
    config, source = load_config_files([DEMO])
    points = [s for s in _isoflop_points(config, source) if s.objective == "clm"]
    grid = grid_table(points, "clm")
    own = float(grid["flops"].sum())
    config["train"]["isoflop"]["adaptive"]["study_flops"] = 1.5 * own
    fit = config["fit"]
    kwargs = dict(n_boot=50, scheme=fit["isoflop_bootstrap"], min_points=fit["min_points_per_budget"],
                  criteria=Criteria.from_config(fit.get("identify")), source=source)

    def study(rng_seed, **extra):
        rng = np.random.default_rng(rng_seed)
        return simulate_study(config, grid, DEMO_PRIOR, lambda n: 0.02 * rng.standard_normal(n), "clm", rng=rng,
                              **kwargs, **extra)

    alone = study(0)
    assert alone["runs_added"] > 0  # a noisy first round: the rounds add runs within 1.5x the grid's FLOPs
    shared = study(0, other_flops=own)  # an MLM grid as large as the CLM's: the study budget is spent
    assert shared["runs_added"] == 0 and shared["stop"] == "study budget spent"
    assert shared["flops"] == pytest.approx(2 * own)
    small = study(0, train_tokens=grid["tokens"].min() / 100)  # every run the rules want repeats the split
    assert small["runs_added"] == 0 and small["stop"] == "no run can be added"


def test_a_second_objectives_rounds_are_simulated_with_its_own_prior_and_share_the_study_budget():
    """A CLM+MLM adaptive study where the MLM law's optimum lies far above its grid: simulated together, the
    rounds add MLM runs on the open side and the study spends more than the CLM rounds with the MLM grid
    counted alone (the lower bound the planner falls back to without an MLM prior)."""
    from plmscale.design.simulate_rounds import grid_table, simulate_study
    from plmscale.scaling.identify import Criteria
    config, source = load_config_files([DEMO])
    config["train"]["objectives"] = ["clm", "mlm"]
    points = _isoflop_points(config, source)
    clm, mlm = grid_table(points, "clm"), grid_table(points, "mlm")
    assert len(mlm) == len(clm) > 0
    config["train"]["isoflop"]["adaptive"]["study_flops"] = 20 * float(clm["flops"].sum() + mlm["flops"].sum())
    # A 30x larger A moves N_opt up by 30^(1/(alpha+beta)) ~ 9x: beyond every MLM budget's largest size.
    mlm_prior = planner.PriorLaw(E=2.4, A=30 * DEMO_PRIOR.A, B=DEMO_PRIOR.B, alpha=DEMO_PRIOR.alpha,
                                 beta=DEMO_PRIOR.beta, source="test: optimum above the grid")
    fit = config["fit"]
    kwargs = dict(n_boot=50, scheme=fit["isoflop_bootstrap"], min_points=fit["min_points_per_budget"],
                  criteria=Criteria.from_config(fit.get("identify")), source=source)

    def study(**extra):
        rng = np.random.default_rng(4)
        return simulate_study(config, clm, DEMO_PRIOR, lambda n: 0.005 * rng.standard_normal(n), "clm", rng=rng,
                              **kwargs, **extra)

    alone = study(other_flops=float(mlm["flops"].sum()))
    joint = study(others={"mlm": (mlm, mlm_prior)})
    assert list(alone["runs_added_per_objective"]) == ["clm"]
    assert joint["runs_added_per_objective"]["mlm"] > 0
    assert joint["flops"] > alone["flops"] >= float(clm["flops"].sum() + mlm["flops"].sum())

    plan = planner.plan_designs(config, DEMO_PRIOR, 1e14, None, noise=0.005, simulations=20,
                                designs=planner.candidate_designs(config)[:1], source=source,
                                adaptive_simulations=2, other_priors={"mlm": mlm_prior})
    adaptive = plan["rows"][0]["adaptive"]
    assert adaptive["objectives_simulated"] == ["clm", "mlm"]
    assert all(s["runs_added_per_objective"]["mlm"] > 0 for s in adaptive["studies"])
    assert any("simulated for clm, mlm together" in note for note in plan["notes"])
    assert " (clm " in planner.format_plan(plan) and ", mlm " in planner.format_plan(plan)
    unsimulated = planner.plan_designs(config, DEMO_PRIOR, 1e14, None, noise=0.005, simulations=20,
                                       designs=planner.candidate_designs(config)[:1], source=source,
                                       adaptive_simulations=2)
    assert any("no prior law for mlm" in note for note in unsimulated["notes"])


# ---- the config's own row --------------------------------------------------------------------------------

def _isoflop_points(config, source):
    return [s for s in planned_specs(config, source) if s.budget is not None and s.init_from is None
            and s.wsd_role != "trunk"]


@pytest.mark.parametrize("path", [DEMO, PAPER])
def test_the_config_grid_row_is_the_configs_run_list_and_cost(path):
    config, source = load_config_files([path])
    designs = planner.candidate_designs(config)
    assert designs[0].is_config and sum(d.is_config for d in designs) == 1
    plan = planner.plan_designs(config, DEMO_PRIOR if path == DEMO else planner.prior_published("clm"), 1e22, None,
                                noise=NOISE, simulations=20, designs=designs[:1], source=source,
                                adaptive_simulations=2)
    row = plan["rows"][0]
    points = _isoflop_points(config, source)
    adaptive = config["train"]["isoflop"]["adaptive"]
    if adaptive["enabled"]:  # the demo: whole studies simulated to the rounds' stop, beside the first round
        assert row["adaptive"]["simulations"] == len(row["adaptive"]["studies"]) == 2
        for study in row["adaptive"]["studies"]:
            assert row["flops"] <= study["flops"] <= adaptive["study_flops"]
            assert study["stop"] in ("identified", "max_rounds", "study budget spent", "no run would help",
                                     "no run can be added")
            assert study["rounds_with_runs"] <= adaptive["max_rounds"]
        assert "adaptive rounds on (the config's row above is its first round): 2 studies" in planner.format_plan(plan)
        json.dumps(planner.plan_json(plan), allow_nan=False)
    else:
        assert "adaptive" not in row
    assert row["is_config"] and row["n_runs"] == len(points)
    assert row["flops"] == pytest.approx(sum(s.flops for s in points))
    assert sorted(row["budgets"]) == sorted(config["train"]["isoflop"]["budgets"])
    if config["train"]["device"] == "cpu":
        assert row["gpu_hours"] is None
    else:  # the plan's GPU-hour estimate of the same runs
        assert row["gpu_hours"] == pytest.approx(sum(s.resources["gpus"] * s.resources["runtime_min"] / 60
                                                     for s in points))


def test_candidates_vary_span_sizes_replicates_and_schedule_without_repeating_the_config():
    config, _ = demo_config()
    designs = planner.candidate_designs(config)
    names = [d.name for d in designs]
    assert len(names) == len(set(names))
    assert {d.isoflop.get("replicates") for d in designs[1:]} == {1, 2, 3}
    assert {d.isoflop.get("schedule") for d in designs[1:]} == {"cosine", "wsd"}
    assert any(len(d.isoflop["budgets"]) > 4 and max(d.isoflop["budgets"]) > 5e11 for d in designs[1:])
    assert any(d.ladder for d in designs)
    iso = config["train"]["isoflop"]
    assert not any(not d.ladder and all(d.isoflop[k] == iso[k] for k in planner.FRAGMENT_KEYS) for d in designs[1:])


# ---- the fragment ----------------------------------------------------------------------------------------

def test_the_chosen_fragment_round_trips_through_the_config_loader(tmp_path):
    """`plmscale design` writes chosen.yaml; merged over the config (as snakemake --configfile does) it expands
    to exactly the chosen design's grid, a new ladder shape included."""
    config, source = demo_config()
    larger = [d for d in planner.candidate_designs(config) if d.ladder and "+2 budgets above" in d.name
              and d.isoflop["replicates"] == 2][0]
    plan = planner.plan_designs(config, DEMO_PRIOR, 1.5e12, None, noise=NOISE, simulations=20, designs=[larger],
                                source=source)
    assert plan["chosen"] == 0
    from plmscale.cli.design import fragment_text
    path = tmp_path / "chosen.yaml"
    path.write_text(fragment_text(plan, FIXED_DEMO))
    merged, merged_source = load_config_files([*FIXED_DEMO, path])
    expected = _isoflop_points(planner.design_config(config, larger), source)
    got = _isoflop_points(merged, merged_source)
    assert [(s.run_id, s.tokens) for s in got] == [(s.run_id, s.tokens) for s in expected]
    assert len(got) == plan["rows"][0]["n_runs"]
    assert any(s.model in larger.ladder for s in got)  # the added size trains at the new budgets
    assert any(s.run_id.endswith("_r2") for s in got)


def test_design_command_writes_table_figure_and_fragment(tmp_path, capsys):
    runs = tmp_path / "runs.csv"
    rng = np.random.default_rng(3)
    rows = []
    for budget, sizes in ((3.125e10, (3.5e3, 7e3, 14e3)), (1.25e11, (7e3, 14e3, 25e3)), (5e11, (14e3, 25e3, 55e3))):
        for n in sizes:
            d = budget / (6 * n)
            for replicate in (1, 2):
                loss = DEMO_PRIOR.loss(n, d) * math.exp(0.02 * rng.standard_normal())
                rows.append({"run_id": f"clm_{n:g}_c{budget:g}_r{replicate}", "objective": "clm", "n_params": n,
                             "tokens": d, "flops": budget, "loss": loss, "budget": budget})
    pd.DataFrame(rows).to_csv(runs, index=False)
    out = tmp_path / "design"
    code = cli_main(["design", "--config", DEMO, "--target-flops", "1.5e12", "--runs", str(runs),
                     "--study-budget", "6e12", "--simulations", "20", "--adaptive-simulations", "0",
                     "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "measured" in text and "replicated grid points" in text  # the noise came from the replicates
    assert "parametric law fitted to" in text  # and the prior law from the runs
    assert " *  config grid" in text or ">*  config grid" in text
    record = json.loads((out / "design.json").read_text())
    assert record["rows"][0]["is_config"] and record["chosen"] is not None
    assert (out / "design_planner.png").exists()
    fragment = yaml.safe_load((out / "chosen.yaml").read_text())
    assert set(fragment["train"]["isoflop"]) == set(planner.FRAGMENT_KEYS)


def test_measured_noise_is_a_robust_core_sd_of_the_replicates():
    rng = np.random.default_rng(1)
    rows = [{"run_id": f"r{i}_{k}", "objective": "clm", "n_params": 1e4 * (i + 1), "tokens": 1e6, "flops": 6e10 * (i + 1),
             "budget": 6e10 * (i + 1), "loss": 2.0 * math.exp(0.02 * rng.standard_normal())}
            for i in range(300) for k in range(3)]
    sigma, source = planner.measured_noise(pd.DataFrame(rows), "clm")
    assert sigma == pytest.approx(0.02, rel=0.15)
    assert "300 replicated grid points" in source and "600 degrees of freedom" in source
    # A few lucky runs (the demo's 3-4% outliers) move the plain sd, not the core sd the planner uses.
    for row in rows[:18:3]:  # one run in each of six grid points
        row["loss"] *= 0.8
    lucky, source = planner.measured_noise(pd.DataFrame(rows), "clm")
    assert lucky == pytest.approx(sigma, rel=0.05)
    assert float(source.split("plain pooled sd ")[1].split("%")[0]) > 130 * sigma
    single = pd.DataFrame([{**r, "run_id": f"x{i}"} for i, r in enumerate(rows[::3])])
    assert planner.measured_noise(single, "clm") is None


def test_heavy_tailed_noise_keeps_the_core_sd():
    rng = np.random.default_rng(0)
    gaussian = planner.run_noise(rng, 200_000, 0.01, None)
    tailed = planner.run_noise(rng, 200_000, 0.01, 3.0)
    assert np.median(np.abs(tailed)) == pytest.approx(np.median(np.abs(gaussian)), rel=0.02)
    assert np.mean(np.abs(tailed) > 0.04) > 10 * np.mean(np.abs(gaussian) > 0.04)


def test_design_needs_a_prior_and_a_target(capsys):
    assert cli_main(["design", "--config", DEMO, "--target-flops", "1e12"]) == 2
    assert "--prior" in capsys.readouterr().err
    assert cli_main(["design", "--config", DEMO, "--prior", "published"]) == 2
    assert "--target-flops" in capsys.readouterr().err


def test_design_replay_is_dispatched_to_its_module(monkeypatch, capsys):
    import sys
    import types
    calls = {}
    module = types.ModuleType("plmscale.cli.design_replay")
    module.configure_parser = lambda parser: (parser.add_argument("pool"), parser.add_argument("--targets"))
    module.main = lambda args: calls.setdefault("args", args) and 0
    monkeypatch.setitem(sys.modules, "plmscale.cli.design_replay", module)
    assert cli_main(["design", "replay", "pool.csv", "--targets", "t.csv"]) == 0
    assert calls["args"].pool == "pool.csv" and calls["args"].targets == "t.csv"
    monkeypatch.setitem(sys.modules, "plmscale.cli.design_replay", None)  # the module is missing
    assert cli_main(["design", "replay", "pool.csv"]) == 2
    assert "design_replay" in capsys.readouterr().err


# ---- predict --emit-config ----------------------------------------------------------------------------------

ISO = {"k_n": 0.5, "a": 0.5, "k_d": 1 / 3, "b": 0.5, "k_l": 40.0, "s": -0.05}


def isoflop_only_fit(identified=True):
    """A fit.json with a known IsoFLOP law N_opt = 0.5·C^0.5 (parametric not fitted)."""
    rng = np.random.default_rng(0)
    draws = {key: list(value * (1 + 0.01 * rng.standard_normal(200))) for key, value in ISO.items()}
    isoflop = {**ISO, "a_ci": [0.49, 0.51], "b_ci": [0.49, 0.51], "loss_law": "L_opt = k_l * C^s",
               "bootstrap": {"draws": draws}, "identified": identified,
               "reasons": [] if identified else ["only 1 of 4 IsoFLOP budgets bracketed an optimum (need 2)"],
               "optima": [{"budget": b, "n_opt": ISO["k_n"] * b ** 0.5, "d_opt": ISO["k_d"] * b ** 0.5, "loss_opt": 2.5,
                           "curvature": 0.1, "kept": True, "run_ids": []} for b in (3.125e10, 6.25e10, 1.25e11, 5e11)]}
    return {"version": 1, "objectives": {"clm": {"isoflop": isoflop, "parametric": {"error": "not fitted"},
                                                 "envelope": {"error": "envelope fit needs training curves"}}}}


def test_emit_config_overlay_adds_exactly_the_forecast_run(tmp_path, capsys):
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps(isoflop_only_fit()))
    out = tmp_path / "next.yaml"
    flops = 1.6e10  # N_opt = 0.5·C^0.5 = 63.2k: past the ladder's largest size (n55k)
    assert cli_main(["predict", "--fit", str(fit), "--flops", str(flops), "--objective", "clm",
                     "--config", DEMO, "--emit-config", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    base, base_source = load_config_files([DEMO])
    merged, merged_source = load_config_files([DEMO, out])
    before = {s.run_id: s for s in expand_grid(base, base_source)}
    after = {s.run_id: s for s in expand_grid(merged, merged_source)}
    added = sorted(set(after) - set(before))
    assert len(added) == 1 and set(before) <= set(after)
    run = after[added[0]]
    n_opt = 0.5 * flops ** 0.5
    assert abs(run.n_params - n_opt) / n_opt < 0.02  # the forecast N, to the ladder-like shape's rounding
    assert run.model.startswith(nearest_ladder_entry(n_opt, base["train"]["ladder"]))
    assert run.tokens == round(flops / (6 * run.n_params))
    assert run.objective == "clm" and run.budget is None
    # The demo's closed loop trains at fit.closed_loop.layers: [3] (the ladder's 2 layers fell short at 3x).
    assert base["fit"]["closed_loop"]["layers"] == [3] and run.shape["layers"] == 3


def test_emit_config_without_a_closed_loop_depth_takes_the_ladders(tmp_path):
    no_depth = tmp_path / "no_depth.yaml"
    no_depth.write_text("fit:\n  closed_loop: {multiples: [3], layers: null}\n")
    config, source = load_config_files([DEMO, no_depth])
    plan = next_run(config, isoflop_only_fit(), "clm", 1.6e10, source)
    assert plan["shape"]["layers"] == config["train"]["ladder"]["n55k"]["layers"] == 2
    assert plan["model"] == "n55k-like"


def test_emit_config_refuses_an_unidentified_fit(tmp_path, capsys):
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps(isoflop_only_fit(identified=False)))
    out = tmp_path / "next.yaml"
    assert cli_main(["predict", "--fit", str(fit), "--flops", "1.6e10", "--objective", "clm",
                     "--config", DEMO, "--emit-config", str(out)]) == 2
    assert "bracketed" in capsys.readouterr().err and not out.exists()


def test_next_run_keeps_the_isoflop_grid_when_the_ladder_grows():
    """The new shape must not join the IsoFLOP grid (models: null means every ladder entry)."""
    config, source = demo_config()
    plan = next_run(config, isoflop_only_fit(), "clm", 1.6e10, source)
    assert plan["overlay"]["train"]["isoflop"]["models"] == list(config["train"]["ladder"])
    assert plan["overlay"]["train"]["runs"][:-1] == config["train"]["runs"]
    assert n_params(plan["shape"]) == plan["n_params"]
    with pytest.raises(PlmscaleError, match="positive"):
        next_run(config, isoflop_only_fit(), "clm", 0.0, source)


def test_a_design_with_one_budget_is_a_row_without_an_interval():
    config, source = demo_config()
    one = planner.Design("one budget", {"budgets": [1.25e11]}, {})
    # Without 1.25e11 the transfer run (train.transfer) has no source: that design is left out, with the reason.
    orphan = planner.Design("no transfer source", {"budgets": [5e11]}, {})
    plan = planner.plan_designs(config, DEMO_PRIOR, 1.5e12, None, simulations=20, designs=[one, orphan], source=source)
    assert len(plan["rows"]) == 1 and any("'no transfer source' left out" in note and "transfer" in note
                                          for note in plan["notes"])
    row = plan["rows"][0]
    assert row["a_width"] == math.inf and row["identified_fraction"] == 0.0 and "2 or more" in row["why"]
    assert plan["chosen"] is None
    assert json.loads(json.dumps(planner.plan_json(plan)))["rows"][0]["a_width"] is None


def test_priors_from_fit_json_and_published(tmp_path):
    fit = {"objectives": {"clm": {"parametric": {"E": 2.11, "A": 22.9, "B": 5.5e4, "alpha": 0.58, "beta": 0.95,
                                                 "identified": False, "reasons": ["E sits at its lower bound"]}}}}
    prior = planner.prior_from_fit(fit, "clm", "fit.json")
    assert prior.a == pytest.approx(0.95 / (0.58 + 0.95))
    assert any("not identified" in note and "E sits at its lower bound" in note for note in prior.notes)
    with pytest.raises(PlmscaleError, match=r"objectives\.mlm\.parametric.*--prior published"):
        planner.prior_from_fit(fit, "mlm", "fit.json")
    published = planner.prior_published("clm")
    assert published.a == pytest.approx(0.4956 / (0.3666 + 0.4956)) and "2411.02142" in published.source
