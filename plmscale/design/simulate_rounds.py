"""The planner's view of an adaptive study: simulate the rounds themselves, not only their first grid.

An adaptive config's own grid is only its first round; what the study ends with depends on what the rounds
add. Here each simulated study draws its grid's losses from the prior law with run-to-run noise, fits them
as the fit stage fits the IsoFLOP method (scaling.fit.isoflop_entry, the same bootstrap scheme) and judges
them (scaling.identify), asks the workflow's own rule (design.rounds.next_round) what to add, draws the added
runs' losses, and repeats until the rule stops. Rounds are sequential, so studies run one after another
(a few hundred ms each on the demo); the planner simulates fewer of them than of a fixed design.

A config that trains several objectives shares one study budget among them, and the workflow's rounds
decide for all of them at once. Where the planner has a prior law for another objective too, that
objective's grid and rounds are simulated beside the main one's (`others`); one without a prior is counted
by its first grid's FLOPs only (`other_flops`), which makes the study's simulated spend a lower bound.

Not simulated, as for fixed designs (docs/planner.md): the rollout backtest and the other methods' checks,
which refused some measured studies that the IsoFLOP checks alone accept.
"""

import dataclasses
import math

import numpy as np
import pandas as pd

from plmscale.design.round_files import adaptive_run_id, adaptive_settings
from plmscale.design.rounds import fit_summary, isoflop_flops_spent, next_round, objective_done
from plmscale.scaling.bootstrap import draw_counts
from plmscale.scaling.fit import isoflop_entry
from plmscale.scaling.identify import identify

# Simulated adaptive studies per plan (each is a loop of fits): the quartiles of 40 are stable to a few %.
ADAPTIVE_SIMULATIONS = 40


def grid_table(specs, objective: str) -> pd.DataFrame:
    """The first round's runs of one objective as the fit sees them (loss to be drawn)."""
    rows = [{"run_id": s.run_id, "objective": s.objective, "model": s.model, "n_params": float(s.n_params),
             "tokens": float(s.tokens), "flops": float(s.flops), "loss": np.nan, "budget": float(s.budget)}
            for s in specs if s.objective == objective]
    return pd.DataFrame(rows, columns=["run_id", "objective", "model", "n_params", "tokens", "flops", "loss",
                                       "budget"])


def simulated_fit(runs: pd.DataFrame, objective: str, *, n_boot: int, scheme: str, min_points: int, criteria,
                  rng) -> dict:
    """fit.json's shape with the one entry the rounds decide on: objectives[objective]["isoflop"]."""
    counts = draw_counts(runs["budget"].astype(str).to_numpy(), n_boot, rng)
    entry = isoflop_entry(runs, min_points, counts, rng, scheme)
    if "error" in entry:
        entry.update(identified=False, reasons=[entry["error"]])
    else:
        entry.update(identify("isoflop", entry, criteria, runs=runs))
    return {"objectives": {objective: {"isoflop": entry}}}


def _draw_losses(runs: pd.DataFrame, priors: dict, noise_of) -> np.ndarray:
    """Each run's loss from its objective's prior law, times its run-to-run noise."""
    loss = np.empty(len(runs))
    for objective, prior in priors.items():
        mine = (runs["objective"] == objective).to_numpy()
        if mine.any():
            loss[mine] = (prior.loss(runs["n_params"].to_numpy()[mine], runs["tokens"].to_numpy()[mine])
                          * np.exp(noise_of(int(mine.sum()))))
    return loss


def simulate_study(config: dict, grid: pd.DataFrame, prior, noise_of, objective: str, *, n_boot: int, scheme: str,
                   min_points: int, criteria, rng, source=None, train_tokens=None, other_flops: float = 0.0,
                   others: dict | None = None) -> dict:
    """One adaptive study from its first grid to the rule's stop. noise_of(n) -> n relative noise draws.
    train_tokens: the train split's tokens, for the rounds' max_epochs (None: not checked). others: {objective:
    (its first grid, its prior law)} simulated beside `objective`, rounds and all, as the workflow decides
    for every objective at once. other_flops: the FLOPs of the config's objectives that are not simulated
    (their first grids), which the study budget counts too. The measures are `objective`'s; `flops` and
    `runs_added` count every objective."""
    others = others or {}
    priors = {objective: prior, **{name: law for name, (_, law) in others.items()}}
    runs = pd.concat([grid, *(table for table, _ in others.values())], ignore_index=True)
    first_round = len(runs)
    runs["loss"] = _draw_losses(runs, priors, noise_of)
    earlier = []
    while True:
        fit = {"objectives": {}}
        for name in priors:
            mine = runs[runs["objective"] == name].reset_index(drop=True)
            fit["objectives"].update(simulated_fit(mine, name, n_boot=n_boot, scheme=scheme, min_points=min_points,
                                                   criteria=criteria, rng=rng)["objectives"])
        settings = dataclasses.replace(adaptive_settings(config, earlier, source, train_tokens),
                                       objectives=tuple(priors))
        record = next_round(runs, fit, settings, len(earlier) + 1, isoflop_flops_spent(runs) + other_flops)
        earlier.append(record)
        if record["stop"]:
            break
        added = pd.DataFrame([{"run_id": adaptive_run_id(record["round"], run), "objective": run["objective"],
                               "model": run["model"], "n_params": float(run["n_params"]),
                               "tokens": float(run["tokens"]), "flops": float(run["flops"]),
                               "budget": float(run["budget"])} for run in record["runs_added"]])
        added["loss"] = _draw_losses(added, priors, noise_of)
        runs = pd.concat([runs, added[runs.columns]], ignore_index=True)
    final = fit_summary(fit, [objective])[objective]
    adaptive = config["train"]["isoflop"]["adaptive"]
    added_runs = runs.iloc[first_round:]
    return {"a": final["a"], "a_width": final["a_width"], "identified": final["identified"],
            "meets_stop_rule": objective_done(final, adaptive["target_a_width"], adaptive["min_budget_span"]),
            "flops": isoflop_flops_spent(runs) + other_flops,
            "rounds_with_runs": sum(bool(r["runs_added"]) for r in earlier),
            "runs_added": len(added_runs),
            "runs_added_per_objective": {name: int((added_runs["objective"] == name).sum()) for name in priors},
            "stop": record["stop"].split(":")[0]}


def simulate_adaptive(config: dict, grid: pd.DataFrame, prior, noise_of, objective: str, *, simulations: int,
                      n_boot: int, scheme: str, min_points: int, criteria, rng, source=None, train_tokens=None,
                      other_flops: float = 0.0, others: dict | None = None) -> dict:
    """Measures of `simulations` adaptive studies: a's final interval width (median, quartiles; inf where a
    study ends without one), the share identified and the share meeting the stop rule, FLOPs spent (median,
    quartiles, mean; every objective's runs) and rounds. `studies` keeps each study's outcome. others and
    other_flops: as simulate_study's."""
    studies = [simulate_study(config, grid, prior, noise_of, objective, n_boot=n_boot, scheme=scheme,
                              min_points=min_points, criteria=criteria, rng=rng, source=source,
                              train_tokens=train_tokens, other_flops=other_flops, others=others)
               for _ in range(int(simulations))]
    width = np.array([math.inf if s["a_width"] is None else s["a_width"] for s in studies])
    flops = np.array([s["flops"] for s in studies])
    stops = pd.Series([s["stop"] for s in studies]).value_counts()
    names = studies[0]["runs_added_per_objective"] if studies else [objective]
    per_objective = {name: float(np.mean([s["runs_added_per_objective"][name] for s in studies])) for name in names}
    return {
        "simulations": len(studies),
        "a_width": float(np.median(width)),
        "a_width_quartiles": [float(q) for q in np.percentile(width, [25, 75], method="nearest")],
        "identified_fraction": float(np.mean([s["identified"] for s in studies])),
        "meets_stop_rule_fraction": float(np.mean([s["meets_stop_rule"] for s in studies])),
        "flops": float(np.median(flops)), "flops_mean": float(flops.mean()),
        "flops_quartiles": [float(q) for q in np.percentile(flops, [25, 75], method="nearest")],
        "rounds_with_runs": float(np.mean([s["rounds_with_runs"] for s in studies])),
        "runs_added": float(np.mean([s["runs_added"] for s in studies])),
        "objectives_simulated": list(per_objective),
        "runs_added_per_objective": per_objective,
        "stops": {str(k): int(v) for k, v in sorted(stops.items())},
        "studies": studies,
    }
