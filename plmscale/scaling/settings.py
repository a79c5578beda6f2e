"""The config's `fit` section as one typed, immutable object, built once and passed whole.

Every default comes from schemas/config.schema.yaml through plmscale.config's validation; nothing here
restates one. The workflow builds FitSettings from the validated config, `plmscale fit` from a config
file and its flags, a test from the few keys it changes (FitSettings.from_fit_section({"bootstrap": 0})).
"""

from dataclasses import dataclass

from plmscale.config import load_config
from plmscale.scaling.identify import Criteria

# The keys of the fit section a fit reads: the fit rule's params, so that editing another key of the
# section (closed_loop, cross_check, curves_dir) does not refit.
FIT_KEYS = ("bootstrap", "seed", "min_points_per_budget", "predict_flops", "identify", "parametric", "backtest",
            "isoflop_bootstrap", "loss_column", "law_families")
# Opt-in keys, in the fit rule's params only when switched on: a new one then leaves every existing fit (whose
# params Snakemake compares) as it was.
OPT_IN_KEYS = ("curve_law",)


def fit_keys(fit_section: dict) -> dict:
    """The part of a validated fit section that FitSettings reads."""
    return {**{key: fit_section[key] for key in FIT_KEYS},
            **{key: fit_section[key] for key in OPT_IN_KEYS if fit_section.get(key)}}


@dataclass(frozen=True)
class FitSettings:
    bootstrap: int                   # bootstrap resamples (0: no intervals)
    seed: int
    min_points_per_budget: int       # model sizes an IsoFLOP budget needs to be fitted
    predict_flops: dict              # {objective: (FLOPs, ...)}: the backtest's leave-one-budget-out targets
    identify: Criteria               # when a fit counts as identified
    drop_highest_loss: int           # runs the parametric fit leaves out (fit.parametric.drop_highest_loss)
    backtest: bool
    isoflop_bootstrap: str           # runs | residuals
    loss_column: str                 # the runs table's column fitted as the loss
    law_families: tuple              # law families fitted and selected among (parametric, farseer, data_constrained)
    curve_law: bool                  # fit the loss-curve law on the runs' curve.csv (fit.json's curve_law)
    grid_objectives: tuple | None    # train.objectives; None: no grid known (a runs table alone)

    @classmethod
    def from_config(cls, config: dict) -> "FitSettings":
        """From a config validated by plmscale.config.load_config (defaults filled in)."""
        return cls._from_filled(config["fit"], config["train"]["objectives"])

    @classmethod
    def from_fit_section(cls, section: dict | None = None, grid_objectives=None, source=None) -> "FitSettings":
        """From a `fit` section, whole or partial: validated and filled with the schema's defaults."""
        config = load_config({"fit": dict(section or {})}, source=source)
        return cls._from_filled(config["fit"], grid_objectives)

    @classmethod
    def _from_filled(cls, fit: dict, grid_objectives) -> "FitSettings":
        return cls(bootstrap=int(fit["bootstrap"]), seed=int(fit["seed"]),
                   min_points_per_budget=int(fit["min_points_per_budget"]),
                   predict_flops={o: tuple(float(c) for c in v) for o, v in fit["predict_flops"].items()},
                   identify=Criteria.from_config(fit["identify"]),
                   drop_highest_loss=int(fit["parametric"]["drop_highest_loss"]),
                   backtest=bool(fit["backtest"]), isoflop_bootstrap=fit["isoflop_bootstrap"],
                   loss_column=fit["loss_column"], law_families=tuple(fit["law_families"]),
                   curve_law=bool(fit.get("curve_law", False)),
                   grid_objectives=None if grid_objectives is None else tuple(grid_objectives))
