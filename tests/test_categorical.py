"""Categorical draws exactly what numpy's Generator.choice(n, size, p=p) draws, and leaves the generator in
the same state: the demo corpus and the trainer's source mixture use it in place of choice, and their
outputs must not move (a changed corpus or batch order would change every figure of the demo)."""
import numpy as np
import pytest

from plmscale.categorical import Categorical
from plmscale.data.demo import FREQUENCIES


@pytest.mark.parametrize("probabilities", [FREQUENCIES, [0.6, 0.4], [0.1, 0.0, 0.3, 0.6], [1.0]])
def test_draws_and_generator_state_match_numpy_choice(probabilities):
    probabilities = np.asarray(probabilities, dtype=float)
    categorical = Categorical(probabilities)
    for seed in range(50):
        ours, numpys = np.random.default_rng(seed), np.random.default_rng(seed)
        for size in (None, 0, 1, 7, 300):
            expected = numpys.choice(len(probabilities), size=size, p=probabilities)
            got = categorical.draw(ours, size)
            if size is None:
                assert isinstance(got, int) and got == int(expected)
            else:
                assert got.dtype == expected.dtype and np.array_equal(got, expected)
        assert ours.bit_generator.state == numpys.bit_generator.state


def test_zero_probability_is_never_drawn():
    draws = Categorical([0.5, 0.0, 0.5]).draw(np.random.default_rng(0), 10_000)
    assert set(np.unique(draws)) == {0, 2}
