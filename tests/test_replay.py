"""Replay of run-selection strategies (plmscale.design.replay, `plmscale design replay`) on synthetic pools."""

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from plmscale.cli import design_replay
from plmscale.design import replay as rp
from plmscale.errors import PlmscaleError
from scaling_synthetic import isoflop_runs, loss_of

LAW = {"E": 1.9, "A": np.exp(5.5), "B": np.exp(7.5), "alpha": 0.34, "beta": 0.31}
POOL_BUDGETS = 10.0 ** np.arange(17, 19.6, 0.5)  # 6 budgets, 1e17 .. 3e19
TARGET_BUDGETS = (1e21,)
ENTRY_KEYS = {"budget_fraction", "repeats", "mean_abs_pct_error", "r2", "per_target"}
TARGET_KEYS = {"n_params", "tokens", "observed", "forecast", "forecast_ci"}


def synthetic(seed, law=LAW, noise=0.005, sizes=6):
    rng = np.random.default_rng(seed)
    pool = isoflop_runs(law, rng, noise=noise, sizes_per_budget=sizes, spread=6.0, budgets=POOL_BUDGETS)
    targets = isoflop_runs(law, rng, noise=noise, sizes_per_budget=5, spread=3.0, budgets=TARGET_BUDGETS)
    return rp.validate_pool_and_targets(pool, targets)


@pytest.fixture(scope="module")
def pool_and_targets():
    return synthetic(0)


@pytest.mark.parametrize("strategy", rp.STRATEGIES)
def test_a_strategy_spends_at_most_its_budget_and_never_selects_a_target(pool_and_targets, strategy):
    pool, targets = pool_and_targets
    fraction = 0.05
    result = rp.replay_once(pool, targets, strategy, fraction, np.random.default_rng(1))
    selected = result["selected"]
    cheapest = pool.sort_values("flops", kind="stable")["run_id"].head(rp.N_INITIAL)
    assert set(cheapest) <= set(selected)  # every strategy starts from the cheapest few
    assert len(set(selected)) == len(selected)
    assert set(selected) <= set(pool["run_id"]) and not set(selected) & set(targets["run_id"])
    spent = pool.set_index("run_id").loc[selected, "flops"].sum()
    assert spent <= fraction * pool["flops"].sum() * (1 + 1e-12)
    assert result["flops_fraction"] == pytest.approx(spent / pool["flops"].sum())
    assert len(selected) > rp.N_INITIAL  # the budget bought runs beyond the initial ones
    # Nothing affordable is left unbought: the strategy stops only when no further run fits the budget.
    left = fraction * pool["flops"].sum() - spent
    assert (pool.loc[~pool["run_id"].isin(selected), "flops"] > left).all()


def test_the_all_runs_fit_recovers_a_known_law():
    pool, targets = synthetic(3, noise=0.0)
    result = rp.replay(pool, targets, ["cheapest"], 0.05)
    all_runs = result["all_runs"]
    assert all_runs["mean_abs_pct_error"] < 0.05
    for row in all_runs["per_target"]:
        truth = loss_of(LAW, row["n_params"], row["tokens"])
        assert row["forecast"] == pytest.approx(truth, rel=5e-4)
        assert row["forecast_ci"][0] <= row["forecast"] <= row["forecast_ci"][1]
    theta = rp.grid_fit(pool)
    assert np.exp(theta[0]) == pytest.approx(LAW["E"], rel=0.02)
    assert theta[3] == pytest.approx(LAW["alpha"], rel=0.03) and theta[4] == pytest.approx(LAW["beta"], rel=0.03)


def test_the_variance_gain_is_the_drop_of_the_recomputed_forecast_variance(pool_and_targets):
    """Sherman–Morrison in _variance_gain against the summed variance recomputed with the candidate added."""
    pool, targets = pool_and_targets
    theta = rp.grid_fit(pool)
    jac = rp.log_loss_jacobian(theta, pool["n_params"], pool["tokens"])
    targets_jac = rp.log_loss_jacobian(theta, targets["n_params"], targets["tokens"])
    chosen = np.arange(0, len(pool), 3)  # runs of every budget: a well-conditioned information matrix
    candidates = np.setdiff1d(np.arange(len(pool)), chosen)
    gains = rp._variance_gain(rp._inverse_information(jac[chosen]), jac[candidates], targets_jac)
    before = rp._summed_variance(jac[chosen].T @ jac[chosen], targets_jac)
    for gain, c in zip(gains, candidates):
        rows = jac[np.append(chosen, c)]
        assert gain == pytest.approx(before - rp._summed_variance(rows.T @ rows, targets_jac), rel=1e-3)


def test_the_exchange_lowers_the_forecast_variance_within_the_budget(pool_and_targets):
    pool, targets = pool_and_targets
    theta = rp.grid_fit(pool)
    budget = 0.05 * pool["flops"].sum()
    greedy, _ = rp.select_runs(pool, targets, "cheapest", 0.05)
    exchanged = rp.exchange(theta, pool, targets, greedy, budget)
    jac = rp.log_loss_jacobian(theta, pool["n_params"], pool["tokens"])
    targets_jac = rp.log_loss_jacobian(theta, targets["n_params"], targets["tokens"])

    def variance(rows):
        return rp._summed_variance(jac[rows].T @ jac[rows], targets_jac)

    assert variance(exchanged) < 0.9 * variance(greedy)  # cheapest-first is a poor design for far targets
    assert pool["flops"].to_numpy()[exchanged].sum() <= budget
    assert list(exchanged[:rp.N_INITIAL]) == list(greedy[:rp.N_INITIAL])  # the initial runs stay


def test_plmscale_without_cost_weighting_or_exchange_is_v_optimal(pool_and_targets):
    """The strategy's settings reach its greedy step: at cost^0 with no exchange its picks are v-optimal's,
    and replay.json records the settings it ran with."""
    pool, targets = pool_and_targets
    v_optimal, _ = rp.select_runs(pool, targets, "v-optimal", 0.05)
    bare, _ = rp.select_runs(pool, targets, "plmscale", 0.05, cost_power=0, exchange_rounds=0)
    default, _ = rp.select_runs(pool, targets, "plmscale", 0.05)
    assert list(bare) == list(v_optimal)
    assert list(default) != list(v_optimal)
    settings = rp.replay(pool, targets, ["cheapest"], 0.05, cost_power=0.25, exchange_rounds=0)["settings"]
    assert settings["plmscale_strategy"] == {"cost_power": 0.25, "exchange_rounds": 0}


def test_rolling_origin_splits_hold_out_the_top_k_budgets():
    """Pool k holds the runs before the top k IsoFLOP budgets; its targets are those budgets' runs and every
    larger run (budget empty), each run in exactly one of the two."""
    runs = pd.DataFrame({"run_id": [f"r{i}" for i in range(7)],
                         "flops": [1e18, 1.01e18, 1e19, 0.99e19, 1e20, 3e19, 5e20],
                         "budget": [1e18, 1e18, 1e19, 1e19, 1e20, np.nan, np.nan]})
    splits = rp.rolling_origin_splits(runs, (1, 2))
    assert [k for k, _, _ in splits] == [1, 2]
    assert [sorted(t["run_id"]) for _, _, t in splits] == [["r4", "r6"], ["r2", "r3", "r4", "r5", "r6"]]
    assert [sorted(p["run_id"]) for _, p, _ in splits] == [["r0", "r1", "r2", "r3", "r5"], ["r0", "r1"]]
    with pytest.raises(PlmscaleError, match="cannot hold out the top 3 of 3 IsoFLOP budgets"):
        rp.rolling_origin_splits(runs, (3,))
    with pytest.raises(PlmscaleError, match="need a budget column"):
        rp.rolling_origin_splits(runs.drop(columns="budget"), (1,))


@pytest.mark.slow
def test_designed_strategies_beat_random_on_mean_error():
    """Over three synthetic pools (fixed seeds) at F = 0.05, v-optimal and plmscale forecast the targets
    with a lower mean error than random's mean over 4 seeds."""
    errors = {"random": [], "v-optimal": [], "plmscale": []}
    for seed in (11, 12, 13):
        pool, targets = synthetic(seed)
        result = rp.replay(pool, targets, list(errors), 0.05, repeats=4)["strategies"]
        for strategy in errors:
            errors[strategy].append(result[strategy]["mean_abs_pct_error"])
    assert np.mean(errors["v-optimal"]) < np.mean(errors["random"])
    assert np.mean(errors["plmscale"]) < np.mean(errors["random"])


def _write(tmp_path, pool, targets):
    pool_path, targets_path = tmp_path / "pool.csv", tmp_path / "targets.csv"
    pool.to_csv(pool_path, index=False)
    targets.to_csv(targets_path, index=False)
    return pool_path, targets_path


def _args(pool_path, targets_path, out, strategies=("random", "cheapest"), fraction=0.05, repeats=2):
    parser = argparse.ArgumentParser()
    design_replay.configure_parser(parser)
    argv = [str(pool_path), "--targets", str(targets_path), "--budget-fraction", str(fraction),
            "--repeats", str(repeats), "--out", str(out)]
    for strategy in strategies:
        argv += ["--strategy", strategy]
    return parser.parse_args(argv)


def test_replay_json_has_the_specified_keys(tmp_path, pool_and_targets, capsys):
    pool, targets = pool_and_targets
    pool_path, targets_path = _write(tmp_path, pool, targets)
    assert design_replay.main(_args(pool_path, targets_path, tmp_path / "out")) == 0
    result = json.loads((tmp_path / "out" / "replay.json").read_text())
    assert set(result["strategies"]) == {"random", "cheapest"}
    for entry in list(result["strategies"].values()) + [result["all_runs"]]:
        assert ENTRY_KEYS <= set(entry)
        assert len(entry["per_target"]) == len(targets)
        for row in entry["per_target"]:
            assert TARGET_KEYS <= set(row)
            low, high = row["forecast_ci"]
            assert low <= row["forecast"] <= high
    assert result["strategies"]["random"]["budget_fraction"] == 0.05
    assert result["strategies"]["random"]["repeats"] == 2
    assert result["all_runs"]["budget_fraction"] == 1.0
    observed = sorted(row["observed"] for row in result["all_runs"]["per_target"])
    assert observed == pytest.approx(sorted(targets["loss"]))
    assert "random" in capsys.readouterr().out


def test_strategy_all_replays_every_strategy():
    assert rp.expand_strategies(["all"]) == list(rp.STRATEGIES)
    assert rp.expand_strategies(["v-optimal", "random"]) == ["random", "v-optimal"]
    with pytest.raises(PlmscaleError, match="unknown strategy best"):
        rp.expand_strategies(["best"])


@pytest.mark.parametrize("damage, table, message", [
    (lambda p, t: (p.drop(columns="flops"), t), "pool", r"pool\.csv: missing column\(s\) flops"),
    (lambda p, t: (p.assign(loss=p["loss"].astype(object).where(p.index != 3, "2.5x")), t), "pool",
     r"pool\.csv: column loss must be a positive finite number.*\(\'2\.5x\'\)"),
    (lambda p, t: (p, t.assign(tokens=-1.0)), "targets", r"targets\.csv: column tokens must be a positive"),
    (lambda p, t: (p, t.assign(run_id=p["run_id"].iloc[:len(t)].to_numpy())), "targets",
     r"targets\.csv: run\(s\) .* are in the pool too"),
    (lambda p, t: (p.head(4), t), "pool", r"pool\.csv: 4 runs; a replay needs more than 5"),
    (lambda p, t: (p.iloc[:0], t), "pool", r"pool\.csv: the table is empty"),
    (lambda p, t: (p.assign(objective=np.where(p.index % 2, "clm", "mlm")), t), "pool",
     r"pool\.csv holds clm, mlm.*replay one objective at a time"),
])
def test_a_bad_table_is_an_error_naming_the_file(tmp_path, pool_and_targets, damage, table, message):
    pool, targets = damage(*pool_and_targets)
    pool_path, targets_path = _write(tmp_path, pool, targets)
    with pytest.raises(PlmscaleError, match=message):
        design_replay.main(_args(pool_path, targets_path, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_bad_arguments_and_missing_files_are_errors(tmp_path, pool_and_targets):
    pool_path, targets_path = _write(tmp_path, *pool_and_targets)
    with pytest.raises(PlmscaleError, match=r"targets table .*nowhere\.csv: no such file"):
        design_replay.main(_args(pool_path, tmp_path / "nowhere.csv", tmp_path / "out"))
    with pytest.raises(PlmscaleError, match=r"--budget-fraction must be in \(0, 1\], got 1.5"):
        design_replay.main(_args(pool_path, targets_path, tmp_path / "out", fraction=1.5))
    with pytest.raises(PlmscaleError, match="unknown strategy clever"):
        design_replay.main(_args(pool_path, targets_path, tmp_path / "out", strategies=["clever"]))
    with pytest.raises(PlmscaleError, match="--repeats must be at least 1"):
        design_replay.main(_args(pool_path, targets_path, tmp_path / "out", repeats=0))


# ----------------------------------------------------------------------------- the fit stage's verdict

def _broken_at_scale(pool, shift=0.97):
    """The pool with its top budget's losses 3% below the law: a law fitted below it is biased at scale."""
    top = pool["flops"] >= pool["flops"].max() * 0.9
    return pool.assign(loss=np.where(top, pool["loss"] * shift, pool["loss"]))


def test_the_fit_stage_forecasts_with_the_law_of_a_pool_drawn_from_it(pool_and_targets):
    pool, targets = pool_and_targets
    verdict = rp.replay(pool, targets, ["cheapest"], 0.05, verdicts="all_runs")["all_runs"]["verdict"]
    assert verdict["forecasts"] is True and verdict["identified"] is True and verdict["reasons"] == []
    low, high = verdict["rollout_loss_error_pct_ci"]
    assert low <= 0 <= high


def test_a_pool_whose_top_budget_leaves_the_law_is_refused_and_the_command_says_so(tmp_path, pool_and_targets,
                                                                                 capsys):
    pool, targets = pool_and_targets
    pool_path, targets_path = _write(tmp_path, _broken_at_scale(pool), targets)
    assert design_replay.main(_args(pool_path, targets_path, tmp_path / "out", strategies=["cheapest"])) == 0
    verdict = json.loads((tmp_path / "out" / "replay.json").read_text())["all_runs"]["verdict"]
    assert verdict["forecasts"] is False
    assert "rollout" in verdict["reasons"][0] and verdict["rollout_loss_error_pct"] > 1.0
    out = capsys.readouterr().out
    assert "would NOT forecast with this law" in out and "biased at larger scale" in out


def test_every_replay_can_carry_the_fit_stages_verdict(pool_and_targets):
    pool, targets = pool_and_targets
    result = rp.replay(pool, targets, ["random", "plmscale"], 0.05, repeats=2, verdicts="every")
    assert result["settings"]["verdicts"] == "every"
    for entry in result["strategies"].values():
        verdicts = [p["verdict"] for p in entry["per_repeat"]]
        assert len(verdicts) == 2 and all(isinstance(v["forecasts"], bool) for v in verdicts)
        assert entry["forecast_share"] == np.mean([v["forecasts"] for v in verdicts])
    # 5 runs of the smallest budgets cannot be backtested (no budget below the top to fit): never forecast
    tiny = rp.replay_once(pool, targets, "cheapest", 1e-6, with_verdict=True)
    assert len(tiny["selected"]) == rp.N_INITIAL and tiny["verdict"]["forecasts"] is False
    assert tiny["verdict"]["reasons"]
    with pytest.raises(PlmscaleError, match="verdicts must be one of"):
        rp.replay(pool, targets, ["cheapest"], 0.05, verdicts="some")
    # a caller replaying several budget fractions hands the whole pool's verdict over instead of refitting it
    known = result["all_runs"]["verdict"]
    again = rp.replay(pool, targets, ["cheapest"], 0.10, verdicts="all_runs", pool_verdict=known)
    assert again["all_runs"]["verdict"] is known
