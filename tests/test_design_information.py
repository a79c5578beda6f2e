"""The adaptive rounds' cost model (plmscale.design.information): Var(a) of the vertices' slope, and which runs
buy the most certainty per FLOP."""

import math

import numpy as np
import pytest

from plmscale.design.information import (Action, Vertex, apply, calibration, choose, slope_variance,
                                         typical_variance, width)

# four budgets 2x apart, each vertex known to 0.1 in ln N (sd)
VERTICES = [Vertex(b, 0.01) for b in (1e10, 2e10, 4e10, 8e10)]


def test_slope_variance_is_the_weighted_least_squares_slope_variance():
    x = np.log([v.budget for v in VERTICES])
    expected = 0.01 / ((x - x.mean()) ** 2).sum()
    assert slope_variance(VERTICES) == pytest.approx(expected)
    assert slope_variance(VERTICES[:1]) == math.inf
    # a noisy middle budget barely matters; a noisy end budget does
    middle = [Vertex(1e10, .01), Vertex(2e10, 1.0), Vertex(4e10, .01), Vertex(8e10, .01)]
    end = [Vertex(1e10, 1.0), Vertex(2e10, .01), Vertex(4e10, .01), Vertex(8e10, .01)]
    assert slope_variance(middle) < slope_variance(end)


def test_a_replicate_halves_its_budget_s_vertex_variance_and_a_new_budget_joins():
    once = apply(VERTICES, Action("replicate", 8e10, 3 * 8e10))
    assert once[-1].variance == pytest.approx(0.005) and once[-1].replicates == 2
    twice = apply(once, Action("replicate", 8e10, 3 * 8e10))
    assert twice[-1].variance == pytest.approx(0.01 / 3)  # r/(r+1): one run -> a mean of three
    more = apply(VERTICES, Action("new_budget", 1.6e11, 4 * 1.6e11, typical_variance(VERTICES)))
    assert [v.budget for v in more] == [1e10, 2e10, 4e10, 8e10, 1.6e11]
    assert slope_variance(more) < slope_variance(VERTICES)


def test_calibration_maps_the_model_onto_the_fit_s_own_width():
    scale = calibration(VERTICES, 0.5)
    assert width(VERTICES, scale) == pytest.approx(0.5)
    assert calibration(VERTICES, None) == 1.0


def test_the_cheapest_action_that_reaches_the_target_beats_a_dearer_greedy_path():
    fitted = width(VERTICES)
    below = Action("new_budget", 5e9, 4 * 5e9, 0.01)
    above = Action("new_budget", 1.6e11, 4 * 1.6e11, 0.01)
    replicate_top = Action("replicate", 8e10, 3 * 8e10)
    target = width(apply(VERTICES, below)) * 1.001  # the budget below reaches it alone
    chosen, steps = choose(VERTICES, [above, replicate_top, below], fitted, target)
    assert chosen == [below] and steps[0]["predicted_width"] <= target


def test_an_action_the_study_cannot_pay_for_is_not_chosen_and_nothing_is_chosen_when_the_target_is_met():
    fitted = width(VERTICES)
    above = Action("new_budget", 1.6e11, 4 * 1.6e11, 0.01)
    chosen, _ = choose(VERTICES, [above], fitted, fitted / 2, flops_left=1e11)
    assert chosen == []
    assert choose(VERTICES, [above], fitted, fitted * 1.1) == ([], [])


def test_the_greedy_path_takes_cheap_certainty_first_and_stops_when_the_rest_is_worth_little():
    fitted = width(VERTICES)
    cheap = [Action("replicate", v.budget, 3 * v.budget) for v in VERTICES]
    chosen, steps = choose(VERTICES, cheap, fitted, 0.0)  # an unreachable target: the value cut ends it
    gains = [step["gain_per_flop"] for step in steps]
    assert chosen and chosen[0].budget == 1e10  # the cheapest end budget first
    assert gains == sorted(gains, reverse=True)
    assert len(chosen) < len(cheap) or gains[-1] >= 0.25 * gains[0]
