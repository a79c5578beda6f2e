"""plmscale's own verdict on a law a replay fits: would the fit stage forecast with it?

A replay forecasts its targets with the parametric law fitted to a selection of pool runs. plmscale's fit stage
does not forecast with every law it fits: identification (constants at an optimiser bound, an exponent's interval
too wide) and the rollout backtest (fit below the top budget, forecast it) refuse a law, and then fit.json selects
no (N, D) law (docs/trust.md). `verdict(runs)` runs that fit stage (scaling.fit.fit_all, the parametric family,
VERDICT_BOOTSTRAP resamples) on a replay's runs and says whether plmscale would forecast with the result.

Why a replay needs it: the issue's bar compares a strategy's forecasts with the fit on the whole pool. Where
plmscale refuses the whole pool's law (five of the six rolling-origin pools of the released curves,
docs/replay-measured.md), that comparison is between forecasts plmscale itself would not make; the verdict says so in
replay.json instead of leaving a reader to take those figures as plmscale's.

Cost: one fit of the fit stage, ~2-7 s on tens of runs (the bootstrap and the rollout's bootstrap), against
~0.2 s for a replay's own grid fit; so the all-runs verdict is cheap for a replay, and verdicts for every
replay are asked for (`--verdicts`).
"""

import logging
from contextlib import contextmanager

import pandas as pd

from plmscale.errors import PlmscaleError

VERDICT_BOOTSTRAP = 100
LAW = "parametric"
# The columns the fit stage reads from a replay's runs; anything else a pool carries (replicate, unique_tokens,
# init_from) is left out, because the replay's own fit uses every pool run as a run from scratch.
RUN_COLUMNS = ("run_id", "n_params", "tokens", "flops", "loss", "budget")


@contextmanager
def _quiet_fit_stage():
    """The fit stage's warnings speak to `plmscale fit`'s user (no --curves, no envelope fit); a replay's
    verdicts would repeat them once per replay, so they are held below ERROR while a verdict is made."""
    logger = logging.getLogger("plmscale.scaling")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _fit_table(runs: pd.DataFrame) -> pd.DataFrame:
    table = runs[[c for c in RUN_COLUMNS if c in runs.columns]].copy()
    table["objective"] = "clm"  # a label the fit stage requires; the law does not depend on it
    return table


def verdict(runs: pd.DataFrame, bootstrap: int = VERDICT_BOOTSTRAP, seed: int = 0) -> dict:
    """{"forecasts": bool, "identified", "reasons": [...], "rollout_loss_error_pct", "rollout_loss_error_pct_ci"}
    for the parametric law the fit stage fits to these runs. forecasts: fit.json would select that law (identified,
    and its rollout backtest does not refuse it); reasons: why not, in the fit stage's words (empty when it would)."""
    from plmscale.scaling.fit import fit_all
    from plmscale.scaling.settings import FitSettings

    settings = FitSettings.from_fit_section({"bootstrap": int(bootstrap), "seed": int(seed), "law_families": [LAW]})
    try:
        with _quiet_fit_stage():
            entry = fit_all(_fit_table(runs), None, settings, source="replay runs")["objectives"]["clm"]
    except PlmscaleError as error:
        return {"forecasts": False, "identified": None, "reasons": [f"the fit stage could not fit these runs: {error}"],
                "rollout_loss_error_pct": None, "rollout_loss_error_pct_ci": None}
    law = entry.get(LAW) or {}
    rollout = ((entry.get("backtest") or {}).get(LAW) or {}).get("rollout") or {}
    forecasts = entry.get("selected_law") == LAW
    reasons = [] if forecasts else list(law.get("reasons") or [])
    if not forecasts and not reasons:
        reasons = [law.get("error") or (entry.get("law_selection") or {}).get("why") or "no law selected"]
    # the backtest's values are JSON-ready already (floats, None for a missing or non-finite one)
    return {"forecasts": bool(forecasts), "identified": law.get("identified"), "reasons": reasons,
            "rollout_loss_error_pct": rollout.get("loss_error_pct"),
            "rollout_loss_error_pct_ci": rollout.get("loss_error_pct_ci")}


def summary_line(all_runs_verdict: dict) -> str:
    """One sentence on the whole pool's verdict, for the command's output and the benchmark's notes."""
    if all_runs_verdict["forecasts"]:
        return "all runs: plmscale's fit stage would forecast with this law (identified, rollout not refused)"
    return ("all runs: plmscale's fit stage would NOT forecast with this law (" + all_runs_verdict["reasons"][0]
            + "); every figure above compares forecasts plmscale refuses to make on this pool")
