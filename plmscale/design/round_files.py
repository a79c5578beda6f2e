"""Adaptive rounds in the workflow: a round's decision (rounds.next_round) turned into run specs the train rule
trains, the round files that hold them (results/scaling/design/round_<k>.json), and design.json.

A round's runs are named `ad<k>_<objective>_<model>_c<budget>[_r<replicate>]`: the `ad<k>_` prefix keeps them
apart from the grid's ids (`<objective>_<model>_c<budget>`) and from each other's rounds. Their specs are made
by the grid's own builder (recipe, seed from the run id, resources), written into the round file and read back
from it, so a rerun trains exactly what the round decided.
"""

import json
import re

import pandas as pd

from plmscale.config import all_budgets
from plmscale.design.rounds import AdaptiveSettings, fit_summary, isoflop_flops_spent, next_round, objective_done
from plmscale.errors import PlmscaleError
from plmscale.grid.expand import GridBuilder, expand_grid, format_number
from plmscale.grid.resources import gpu_hours
from plmscale.grid.spec import RunSpec
from plmscale.scaling.identify import Criteria

ROUND_FILE = "results/scaling/design/round_{k}.json"
ROUND_DIR = "results/scaling/design/round_{k}"  # the study after round k (0: the grid): runs.csv, fit.json
ADAPTIVE_RUN_ID = re.compile(r"ad([0-9]+)_(clm|mlm)_.+")
DESIGN_VERSION = 1


def adaptive_enabled(config: dict) -> bool:
    return bool(config["train"]["isoflop"]["adaptive"]["enabled"])


def check_adaptive(config: dict, where: str = "config") -> None:
    """Refuse settings the rounds cannot honour, naming the key."""
    if not adaptive_enabled(config):
        return
    iso = config["train"]["isoflop"]
    if iso["schedule"] != "cosine":
        raise PlmscaleError(f"{where}: train.isoflop.adaptive needs train.isoflop.schedule cosine (a round adds "
                            "single runs; a WSD branch needs its size's trunk); set adaptive.enabled false or "
                            "schedule cosine")
    if not config["fit"]["use_own_runs"]:
        raise PlmscaleError(f"{where}: train.isoflop.adaptive needs fit.use_own_runs true (it adds runs to train)")
    if not all_budgets(iso):
        raise PlmscaleError(f"{where}: train.isoflop.adaptive needs train.isoflop.budgets (a grid to start from)")
    if iso["adaptive"]["study_gpu_hours"] is not None and config["train"]["device"] == "cpu":
        raise PlmscaleError(f"{where}: train.isoflop.adaptive.study_gpu_hours counts the GPU-hours the plan requests, "
                            "and train.device 'cpu' requests none; bound the study with study_flops instead, or "
                            "set train.device cuda")


def round_of(run_id: str) -> int | None:
    """The round that added this run, or None for a grid run."""
    match = ADAPTIVE_RUN_ID.fullmatch(run_id)
    return int(match.group(1)) if match else None


def adaptive_run_id(round_index: int, run: dict) -> str:
    base = f"ad{round_index}_{run['objective']}_{run['model']}_c{format_number(run['budget'])}"
    return base if run["replicate"] == 1 else f"{base}_r{run['replicate']}"


def planned_gpu_hours(config: dict, source=None):
    """run dict (objective, model, shape, tokens, budget) -> the GPU-hours its job would request."""
    builder = GridBuilder(config, source)

    def of(run):
        builder.add_shape(run["model"], run["shape"])
        spec = builder.make("ad0_cost", run["objective"], run["model"], run["tokens"], budget=run["budget"])
        return gpu_hours(spec.resources)
    return of


def gpu_hours_spent(config: dict, runs: pd.DataFrame, earlier_rounds, source=None) -> float:
    """GPU-hours requested by the study's IsoFLOP runs in `runs`: the grid's specs and the earlier rounds'."""
    resources = {spec.run_id: spec.resources for spec in expand_grid(config, source) if spec.budget is not None}
    for record in earlier_rounds:
        resources.update({run["run_id"]: run["spec"]["resources"] for run in record["runs_added"]})
    return float(sum(gpu_hours(resources[run_id]) for run_id in runs["run_id"] if run_id in resources))


def adaptive_settings(config: dict, earlier_rounds=(), source=None, train_tokens=None) -> AdaptiveSettings:
    """The rules' settings from a validated config and the shapes earlier rounds made. train_tokens: the train
    split's tokens (its manifest), for max_epochs; None where not known (the planner before the data stage)."""
    train, adaptive = config["train"], config["train"]["isoflop"]["adaptive"]
    shapes = {name: dict(entry) for name, entry in train["ladder"].items()}
    models = train["isoflop"]["models"] or list(train["ladder"])
    for record in earlier_rounds:
        for run in record["runs_added"]:
            shapes.setdefault(run["model"], dict(run["shape"]))
    criteria = Criteria.from_config(config["fit"]["identify"])
    return AdaptiveSettings(
        shapes=shapes, ladder=tuple(models), seq_len=int(train["seq_len"]),
        flops_definition=train["flops_definition"], objectives=tuple(sorted(train["objectives"])),
        max_rounds=int(adaptive["max_rounds"]), target_a_width=float(adaptive["target_a_width"]),
        study_flops=None if adaptive["study_flops"] is None else float(adaptive["study_flops"]),
        max_vertex_width=float(adaptive["max_vertex_width"]), budget_factor=float(adaptive["budget_factor"]),
        sizes_per_new_budget=int(adaptive["sizes_per_new_budget"]),
        min_tokens_per_param=float(adaptive["min_tokens_per_param"]),
        max_epochs=None if adaptive["max_epochs"] is None else float(adaptive["max_epochs"]),
        train_tokens=None if train_tokens is None else float(train_tokens), min_curvature_t=criteria.min_curvature_t,
        min_bracketed_budgets=criteria.min_bracketed_budgets,
        min_budget_span=float(adaptive["min_budget_span"]), extend_below=bool(adaptive["extend_below"]),
        pooled_residuals=config["fit"]["isoflop_bootstrap"] == "residuals",
        study_gpu_hours=None if adaptive["study_gpu_hours"] is None else float(adaptive["study_gpu_hours"]),
        gpu_hours_of=planned_gpu_hours(config, source) if adaptive["study_gpu_hours"] is not None else None)


def plan_round(config: dict, runs: pd.DataFrame, fit: dict, earlier_rounds, round_index: int,
               source: str | None = None, train_tokens: float | None = None) -> dict:
    """Round `round_index`'s record: the decision, each added run with its run id and full spec.
    train_tokens: the train split's tokens, which max_epochs is counted in (None: not checked)."""
    earlier_rounds = list(earlier_rounds)
    stopped = [r for r in earlier_rounds if r.get("stop")]
    if stopped:  # a round after a stop decides nothing (the workflow does not ask for one)
        raise PlmscaleError(f"round {round_index}: round {stopped[0]['round']} already stopped the study")
    settings = adaptive_settings(config, earlier_rounds, source, train_tokens)
    spent_hours = (gpu_hours_spent(config, runs, earlier_rounds, source)
                   if settings.study_gpu_hours is not None else 0.0)
    record = next_round(runs, fit, settings, round_index, isoflop_flops_spent(runs), spent_hours)
    builder = GridBuilder(config, source)
    for run in record["runs_added"]:
        builder.add_shape(run["model"], run["shape"])
        run["run_id"] = adaptive_run_id(round_index, run)
        run["spec"] = builder.make(run["run_id"], run["objective"], run["model"], run["tokens"],
                                   budget=run["budget"]).to_dict()
    return {"version": DESIGN_VERSION, **record}


def round_specs(record: dict, where: str = "round file") -> dict:
    """{run_id: RunSpec} of the runs a round file adds."""
    return {run["run_id"]: RunSpec.from_dict(run["spec"], where=f"{where}: run {run['run_id']}")
            for run in record.get("runs_added", [])}


def read_round(path) -> dict:
    try:
        with open(path) as handle:
            record = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise PlmscaleError(f"round file {path} is unreadable ({error}); delete it and rerun the workflow, "
                            "which decides the round again from its fit") from None
    if not isinstance(record, dict) or "runs_added" not in record:
        raise PlmscaleError(f"round file {path} holds no round (no runs_added); delete it and rerun")
    return record


def design_record(config: dict, rounds, final_fit: dict) -> dict:
    """design.json: the settings, every round (its decision, runs added, why, FLOPs, the summary of the fit it
    was decided from), the fit after the last round, and how the study ended. rounds: the records in order."""
    objectives = sorted(config["train"]["objectives"])
    grid_flops = rounds[0]["spent_before"] if rounds else None
    added = sum(r["flops"] for r in rounds)
    last = rounds[-1] if rounds else None
    stop = last.get("stop") if last else None
    final = fit_summary(final_fit, objectives)
    if last is not None and stop is None:
        adaptive = config["train"]["isoflop"]["adaptive"]
        met = all(objective_done(final[o], adaptive["target_a_width"], adaptive["min_budget_span"]) for o in final)
        widths = "; ".join(f"{o}: {'no interval' if final[o]['a_width'] is None else format(final[o]['a_width'], '.3f')}"
                           for o in sorted(final))
        stop = (f"max_rounds: {adaptive['max_rounds']} round(s) made (train.isoflop.adaptive.max_rounds); the fit "
                f"after the last round's runs is final and " + ("meets" if met else "does not meet") +
                f" the stop rule (identified, a's interval at most {adaptive['target_a_width']:g} wide: {widths})")
    return {
        "version": DESIGN_VERSION,
        "settings": dict(config["train"]["isoflop"]["adaptive"]),
        "grid_flops": grid_flops,
        "added_flops": float(added),
        "total_flops": None if grid_flops is None else float(grid_flops + added),
        "n_runs_added": int(sum(len(r["runs_added"]) for r in rounds)),
        "stop": stop,
        "rounds": [{**{k: v for k, v in record.items() if k not in ("version", "fit")},
                    "runs_added": [{k: v for k, v in run.items() if k != "spec"} for run in record["runs_added"]],
                    "fit_before": record["fit"]}
                   for record in rounds],
        "final_fit": final,
    }
