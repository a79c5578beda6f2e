"""Synthetic scaling experiments from known constants, shared by the scaling tests."""

import numpy as np
import pandas as pd

BUDGETS = 10.0 ** np.arange(18, 21.01, 0.5)  # 7 budgets, 1e18 … 1e21 in half decades


def random_law(rng):
    return {"E": rng.uniform(1.6, 2.4), "A": np.exp(rng.uniform(4, 7)), "B": np.exp(rng.uniform(6, 9)),
            "alpha": rng.uniform(0.28, 0.42), "beta": rng.uniform(0.26, 0.40)}


def true_n_opt(law, flops, kappa=6.0):
    alpha, beta = law["alpha"], law["beta"]
    g = (alpha * law["A"] / (beta * law["B"])) ** (1 / (alpha + beta))
    return g * (flops / kappa) ** (beta / (alpha + beta))


def loss_of(law, n, d):
    return law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]


def isoflop_runs(law, rng, noise=0.005, sizes_per_budget=8, spread=6.0, objective="clm", budgets=BUDGETS,
                 with_curves=False, curve_points=20):
    """~8 sizes per budget, log-spaced within spread× either side of the true optimum."""
    rows, curves = [], []
    for budget in budgets:
        centre = true_n_opt(law, budget)
        offsets = np.linspace(-np.log(spread), np.log(spread), sizes_per_budget)
        for j, n in enumerate(centre * np.exp(offsets + rng.normal(0, 0.05, sizes_per_budget))):
            n = float(round(n))
            d = budget / (6 * n)
            run_id = f"{objective}_c{budget:.0e}_{j}"
            rows.append({"run_id": run_id, "objective": objective, "n_params": n, "tokens": d, "flops": budget,
                         "loss": loss_of(law, n, d) * np.exp(rng.normal(0, noise)), "budget": budget})
            if with_curves:
                fractions = np.linspace(0.1, 1.0, curve_points)
                dd = d * fractions
                curves.append(pd.DataFrame({"run_id": run_id, "objective": objective, "n_params": n,
                                            "flops": 6 * n * dd, "tokens": dd,
                                            "loss": loss_of(law, n, dd) * np.exp(rng.normal(0, noise, curve_points))}))
    runs = pd.DataFrame(rows)
    if with_curves:
        curves = pd.concat(curves, ignore_index=True)
        # the last curve point is the run's final loss
        last = curves.groupby("run_id").tail(1).set_index("run_id")["loss"]
        runs["loss"] = runs["run_id"].map(last)
        return runs, curves
    return runs


def fit_settings(grid_objectives=None, **fit_section):
    """FitSettings from the few fit-section keys a test sets; the config schema fills in the rest."""
    from plmscale.scaling.settings import FitSettings

    return FitSettings.from_fit_section(fit_section, grid_objectives)
