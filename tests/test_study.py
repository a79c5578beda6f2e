"""Per-objective IsoFLOP budgets (train.isoflop.budgets as {clm: [...], mlm: [...]}) and the study preset
(configs/study.yaml): which runs exist, that a plain list is unchanged, and errors that name the key."""

import copy
from pathlib import Path

import pytest

from plmscale.config import all_budgets, load_config, load_config_files, objective_budgets
from plmscale.design import planner
from plmscale.design.round_files import adaptive_settings, check_adaptive
from plmscale.errors import PlmscaleError
from plmscale.grid import expand_grid
from plmscale.scaling.closed_loop import closed_loop_jobs

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "config.yaml"
STUDY = REPO / "configs" / "study.yaml"

LADDER = {
    "n1M": {"layers": 4, "d_model": 128, "heads": 2},
    "n3M": {"layers": 8, "d_model": 192, "heads": 3},
    "n10M": {"layers": 8, "d_model": 320, "heads": 5},
}


def make_config(budgets, objectives=("clm", "mlm")):
    return load_config({"train": {"objectives": list(objectives), "ladder": copy.deepcopy(LADDER),
                                  "isoflop": {"budgets": budgets}}})


def budgets_of(specs):
    """{objective: sorted budgets} of a grid's IsoFLOP runs."""
    out = {}
    for spec in specs:
        if spec.budget is not None:
            out.setdefault(spec.objective, set()).add(spec.budget)
    return {objective: sorted(values) for objective, values in out.items()}


def test_a_mapping_gives_each_objective_its_own_budgets():
    config = make_config({"clm": [1e16, 3e16], "mlm": [3e16, 1e17]})
    specs = expand_grid(config)
    assert budgets_of(specs) == {"clm": [1e16, 3e16], "mlm": [3e16, 1e17]}
    assert objective_budgets(config["train"]["isoflop"], "mlm") == [3e16, 1e17]
    assert all_budgets(config["train"]["isoflop"]) == [1e16, 3e16, 1e17]
    # the ids are the grid's as always: objective, size, budget
    assert "mlm_n3M_c1e17" in {s.run_id for s in specs} and "clm_n3M_c1e17" not in {s.run_id for s in specs}


def test_a_list_trains_every_objective_at_every_budget_exactly_as_the_same_mapping():
    listed = expand_grid(make_config([1e16, 3e16, 1e17]))
    mapped = expand_grid(make_config({"clm": [1e16, 3e16, 1e17], "mlm": [1e16, 3e16, 1e17]}))
    assert [s.to_dict() for s in listed] == [s.to_dict() for s in mapped]
    assert budgets_of(listed) == {"clm": [1e16, 3e16, 1e17], "mlm": [1e16, 3e16, 1e17]}


def test_an_objective_without_budgets_is_an_error_that_says_what_to_add():
    with pytest.raises(PlmscaleError, match=r"train\.isoflop\.budgets .*without an entry for mlm.*add e\.g\. `mlm:"):
        make_config({"clm": [1e16]})


def test_budgets_for_an_objective_not_trained_are_an_error():
    with pytest.raises(PlmscaleError, match=r"train\.isoflop\.budgets\.mlm .*add mlm to train\.objectives"):
        make_config({"clm": [1e16], "mlm": [1e17]}, objectives=["clm"])


@pytest.mark.parametrize("budgets", [{"clm": 1e16, "mlm": [1e17]}, {"clm": [1e16], "mlm": [-1.0]},
                                     {"clm": [1e16], "mlm": [1e17], "esm": [1e17]}])
def test_a_malformed_mapping_is_refused_by_the_schema(budgets):
    with pytest.raises(PlmscaleError, match=r"at train/isoflop/budgets"):
        make_config(budgets)


def test_an_empty_entry_trains_no_isoflop_runs_of_that_objective():
    specs = expand_grid(make_config({"clm": [1e16], "mlm": []}))
    assert budgets_of(specs) == {"clm": [1e16]}


def test_a_budget_with_no_run_names_its_objectives_entry():
    with pytest.raises(PlmscaleError, match=r"train\.isoflop\.budgets\.mlm 1e\+?0?9 has no run"):
        expand_grid(make_config({"clm": [1e16], "mlm": [1e9]}))


def test_the_planner_varies_the_planned_objectives_budgets_only():
    config = make_config({"clm": [1e16, 3e16], "mlm": [3e16, 1e17]})
    designs = planner.candidate_designs(config, "mlm")
    assert designs[0].is_config
    for design in designs[1:]:
        budgets = design.isoflop["budgets"]
        assert budgets["clm"] == [1e16, 3e16]
    above = next(d for d in designs if d.name.startswith("+1 budget above"))
    assert above.isoflop["budgets"]["mlm"][-1] > 1e17
    plan = planner.plan_designs(config, planner.prior_published("mlm"), 1e18, None, objective="mlm",
                                simulations=4, designs=designs[:1])
    assert plan["rows"][0]["budgets"] == [3e16, 1e17]


def test_the_study_preset_gives_mlm_larger_budgets_than_clm_and_closes_the_clm_loop():
    config, source = load_config_files([DEMO, STUDY])
    iso = config["train"]["isoflop"]
    specs = expand_grid(config, source)
    budgets = budgets_of(specs)
    assert set(budgets) == {"clm", "mlm"}
    # MLM's profiles are measurable from ~5e11 up (docs/demo-design.md §7): its grid starts where CLM's ends
    assert min(budgets["mlm"]) >= 5e11 > max(budgets["clm"])
    assert max(budgets["mlm"]) / min(budgets["mlm"]) >= iso["adaptive"]["min_budget_span"]
    for objective, values in budgets.items():
        for budget in values:
            sizes = [s for s in specs if s.objective == objective and s.budget == budget]
            assert len(sizes) >= 3, (objective, budget)
    check_adaptive(config, source)
    assert adaptive_settings(config, source=source).objectives == ("clm", "mlm")
    assert iso["adaptive"]["target_a_width"] <= 0.35
    assert {job[0] for job in closed_loop_jobs(config)} == {"clm"}


def _identified(a, budgets):
    return {"isoflop": {"identified": True, "a": a, "k_n": 1.0, "b": 1 - a, "k_d": 1 / 6, "k_l": 1.0, "s": -0.05,
                        "loss_floor": 1.5, "budgets": budgets}}


def test_grids_that_do_not_overlap_say_the_compared_budget_is_extrapolated():
    from plmscale.scaling.compare import compare_objectives, comparison_lines
    from plmscale.scaling.published import PUBLISHED
    disjoint = compare_objectives({"clm": _identified(0.45, [3e10, 1.2e11]), "mlm": _identified(0.7, [5e11, 4e12])},
                                  PUBLISHED)
    assert disjoint["budget"] == 1.2e11 and disjoint["budget_below_grid_of"] == ["mlm"]
    assert "MLM's grid starts above it" in comparison_lines(disjoint)[1]
    touching = compare_objectives({"clm": _identified(0.45, [3e10, 5e11]), "mlm": _identified(0.7, [5e11, 4e12])},
                                  PUBLISHED)
    assert touching["budget"] == 5e11 and "budget_below_grid_of" not in touching


@pytest.mark.slow
def test_the_workflow_plans_each_objectives_own_budgets_for_the_study_preset(tmp_path):
    """Snakemake itself (common.smk, the rules' input functions) takes the per-objective mapping: a dry run of
    `make study`'s configs plans MLM runs only from 5e11 and CLM runs only below it."""
    from workflow_helpers import planned_run_ids, run_snakemake, workflow_copy

    workdir = workflow_copy(tmp_path / "wf", extra_parts=("config.yaml",))
    output = run_snakemake(workdir, "-n", "--configfile", "config.yaml", "configs/study.yaml")
    planned = {run_id for run_id in planned_run_ids(output) if run_id.startswith(("clm_", "mlm_"))}
    config, source = load_config_files([DEMO, STUDY])
    expected = {s.run_id for s in expand_grid(config, source) if s.budget is not None}
    assert planned == expected
    assert "mlm_n7k_c5e11" in planned and "clm_n2k_c3.125e10" in planned
    assert not any(r.startswith("mlm_") and r.endswith(("c3.125e10", "c6.25e10", "c1.25e11")) for r in planned)


def make_window_config(min_tpp, max_tpp, budgets=(1e15, 3e15, 1e16)):
    return load_config({"train": {"objectives": ["clm", "mlm"], "ladder": copy.deepcopy(LADDER),
                                  "isoflop": {"budgets": list(budgets), "min_tokens_per_param": min_tpp,
                                              "max_tokens_per_param": max_tpp}}})


def ratios_of(specs, objective):
    """{run_id: D/N} of one objective's IsoFLOP runs."""
    return {s.run_id: s.tokens / s.n_params for s in specs if s.objective == objective and s.budget is not None}


def test_a_per_objective_window_keeps_each_objectives_runs_inside_its_own_bounds():
    shared = expand_grid(make_window_config(1, 100))
    wider = expand_grid(make_window_config({"clm": 1, "mlm": 1}, {"clm": 100, "mlm": 1000}))
    # CLM's runs are those of the shared window; MLM's window is wider, so it trains every shared run and more
    assert ratios_of(wider, "clm") == ratios_of(shared, "clm")
    assert set(ratios_of(shared, "mlm")) < set(ratios_of(wider, "mlm"))
    assert all(1 <= r <= 100 for r in ratios_of(wider, "clm").values())
    assert all(1 <= r <= 1000 for r in ratios_of(wider, "mlm").values())
    assert max(ratios_of(wider, "mlm").values()) > 100
    # the same number for every objective is the plain setting
    same = expand_grid(make_window_config({"clm": 1, "mlm": 1}, {"clm": 100, "mlm": 100}))
    assert [s.to_dict() for s in same] == [s.to_dict() for s in shared]


def test_a_window_mapping_must_name_exactly_the_trained_objectives():
    with pytest.raises(PlmscaleError, match=r"train\.isoflop\.max_tokens_per_param .*without an entry for mlm.*"
                                            r"add e\.g\. `mlm: 2000`"):
        make_window_config(1, {"clm": 100})
    with pytest.raises(PlmscaleError, match=r"train\.isoflop\.min_tokens_per_param\.mixed .*add mixed to "
                                            r"train\.objectives"):
        make_window_config({"clm": 1, "mlm": 1, "mixed": 1}, 100)
    with pytest.raises(PlmscaleError, match=r"at train/isoflop/max_tokens_per_param"):
        make_window_config(1, {"clm": -5, "mlm": 100})


def test_an_empty_budget_names_its_objectives_window():
    with pytest.raises(PlmscaleError, match=r"budgets 1e\+16 has no run: .*window \[1, 1\.5\]"):
        expand_grid(make_window_config({"clm": 1, "mlm": 1}, {"clm": 100, "mlm": 1.5}, budgets=[1e16]))
