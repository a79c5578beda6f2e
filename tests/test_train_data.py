"""Sampling, framing, masking and the learning-rate schedule of the training stage."""

import numpy as np
import pytest

from plmscale.alphabet import CLS_ID, EOS_ID, MASK_ID, PAD_ID, STANDARD_RESIDUES, TOKEN_TO_ID
from plmscale.errors import PlmscaleError
from plmscale.model import IGNORE_INDEX
from plmscale.train.masking import causal_labels, mask_tokens
from plmscale.train.sampler import (TRAIN_STREAM, SequenceSampler, collate, example_rng, frame,
                                    make_example)
from plmscale.arithmetic import peak_lr_cheng2024 as peak_lr_for_size
from plmscale.train.schedule import lr_at, warmup_steps
from train_fixtures import MemoryShards


def corpus():
    # source 0 ("a"): cluster 0 has 1 member, cluster 1 has 9; source 1 ("b"): cluster 2 has 2 members.
    seqs = ["A" * 10] + ["L" * (20 + i) for i in range(9)] + ["W" * 100, "W" * 100]
    return MemoryShards(seqs, [0] + [1] * 9 + [2, 2], [0] * 10 + [1, 1], ["a", "b"])


def draws(sampler, n=4000):
    return [sampler.pick(example_rng(1, TRAIN_STREAM, 0, i)) for i in range(n)]


def test_source_weights_then_clusters_uniformly():
    sampler = SequenceSampler(corpus(), 64, {"a": 0.25, "b": 0.75})
    picks = np.array(draws(sampler))
    from_b = np.isin(picks, [10, 11]).mean()
    assert from_b == pytest.approx(0.75, abs=0.03)
    in_a = picks[picks < 10]
    assert (in_a == 0).mean() == pytest.approx(0.5, abs=0.04)  # the singleton cluster: half of source a


def test_without_clusters_members_are_uniform_and_no_weights_means_natural_mix():
    sampler = SequenceSampler(corpus(), 64, None, by_cluster=False)
    picks = np.array(draws(sampler))
    assert (picks == 0).mean() == pytest.approx(1 / 12, abs=0.015)


def test_source_missing_from_weights_is_never_drawn_and_all_zero_is_an_error():
    picks = np.array(draws(SequenceSampler(corpus(), 64, {"a": 1.0})))
    assert picks.max() < 10
    with pytest.raises(PlmscaleError, match="positive weight"):
        SequenceSampler(corpus(), 64, {"c": 1.0})


def test_draws_are_a_pure_function_of_seed_step_index():
    sampler = SequenceSampler(corpus(), 16, {"a": 1, "b": 1})
    one = make_example(sampler, "mlm", 5, TRAIN_STREAM, 7, 3, 0.15)
    two = make_example(sampler, "mlm", 5, TRAIN_STREAM, 7, 3, 0.15)
    assert all(np.array_equal(x, y) for x, y in zip(one, two))
    other = [make_example(sampler, "mlm", 5, TRAIN_STREAM, 8, i, 0.15)[0] for i in range(8)]
    assert any(len(o) != len(one[0]) or not np.array_equal(o, one[0]) for o in other)


def test_frame_crops_to_seq_len_with_cls_and_eos():
    rng = np.random.default_rng(0)
    residues = np.arange(4, 24, dtype=np.uint8).repeat(5)  # 100 residues
    out = frame(residues, 32, rng)
    assert len(out) == 32 and out[0] == CLS_ID and out[-1] == EOS_ID
    window = out[1:-1]
    start = int(np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(residues, 30) == window, axis=1))[0])
    assert 0 <= start <= 70
    starts = {tuple(frame(residues, 32, np.random.default_rng(s))[1:3]) for s in range(20)}
    assert len(starts) > 1  # random crops
    short = frame(residues[:5], 32, rng)
    assert len(short) == 7


def test_mean_framed_length_matches_the_draws():
    sampler = SequenceSampler(corpus(), 64, {"a": 0.4, "b": 0.6})
    lengths = [len(sampler.draw(example_rng(2, TRAIN_STREAM, 1, i))) for i in range(6000)]
    assert np.mean(lengths) == pytest.approx(sampler.mean_framed_length(), rel=0.03)


def test_mlm_masking_statistics():
    rng = np.random.default_rng(0)
    tokens = np.concatenate([[CLS_ID], rng.integers(4, 24, 200_000), [EOS_ID], [PAD_ID] * 10])
    inputs, labels = mask_tokens(tokens, rng, 0.15)
    chosen = labels != IGNORE_INDEX
    assert chosen.mean() * len(tokens) / 200_000 == pytest.approx(0.15, abs=0.003)
    assert not chosen[[0, 200_001]].any() and not chosen[-10:].any()
    assert inputs[0] == CLS_ID and inputs[200_001] == EOS_ID and (inputs[-10:] == PAD_ID).all()
    masked = inputs[chosen] == MASK_ID
    kept = inputs[chosen] == tokens[chosen]
    randomised = ~masked & ~kept
    assert masked.mean() == pytest.approx(0.8, abs=0.01)
    assert kept.mean() == pytest.approx(0.1 + 0.1 / 20, abs=0.01)  # a random residue may equal the original
    assert randomised.mean() == pytest.approx(0.1 * 19 / 20, abs=0.01)
    standard = {TOKEN_TO_ID[c] for c in STANDARD_RESIDUES}
    assert set(np.unique(inputs[chosen][randomised])) <= standard
    assert (labels[chosen] == tokens[chosen]).all()


def test_causal_labels_shift_and_ignore_padding():
    labels = causal_labels(np.array([CLS_ID, 5, 6, EOS_ID, PAD_ID]))
    assert labels.tolist() == [5, 6, EOS_ID, IGNORE_INDEX, IGNORE_INDEX]


def test_collate_pads_to_the_longest_row():
    tokens, labels = collate([(np.array([0, 5, 2]), np.array([5, 2, -100])), (np.array([0, 2]), np.array([2, -100]))])
    assert tokens.tolist() == [[0, 5, 2], [0, 2, PAD_ID]]
    assert labels.tolist() == [[5, 2, -100], [2, -100, -100]]


def test_schedule_warms_up_then_decays_to_the_floor_at_the_last_step():
    total, peak = 200, 1e-3
    lrs = [lr_at(s, total, peak, 0.025, 0.1) for s in range(total)]
    warm = warmup_steps(total, 0.025)
    assert warm == 5
    assert lrs[0] == pytest.approx(peak / 5) and lrs[warm - 1] == pytest.approx(peak)
    assert lrs[warm] == pytest.approx(peak)
    assert lrs[-1] == pytest.approx(peak * 0.1)
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1:]))  # monotone cosine
    middle = warm + (total - 1 - warm) // 2
    assert lrs[middle] == pytest.approx(peak * 0.55, rel=0.02)
    assert lr_at(0, 1, peak, 0.0, 0.1) == pytest.approx(peak)


def test_peak_lr_follows_the_size_table():
    assert peak_lr_for_size(3e6) == pytest.approx(6e-4)
    assert peak_lr_for_size(100e6) == pytest.approx(5.5e-4)
    assert peak_lr_for_size(470e6) == pytest.approx(4e-4)
    assert peak_lr_for_size(10e9) == pytest.approx(3e-4)
    assert 5e-4 < peak_lr_for_size(150e6) < 5.5e-4


def test_long_proteins_are_cropped_deterministically_and_counted():
    """corpus(): source b holds two 100-residue proteins; at seq_len 64 every draw of them is a crop."""
    sampler = SequenceSampler(corpus(), 64, {"a": 0.4, "b": 0.6})
    first = [make_example(sampler, "clm", 5, TRAIN_STREAM, 3, i, 0.15)[0] for i in range(400)]
    assert sampler.n_drawn == 400
    assert sampler.n_cropped == sum(len(x) == 64 for x in first) > 0
    assert sampler.n_cropped / 400 == pytest.approx(sampler.expected_cropped_fraction(), abs=0.08)
    assert sampler.expected_cropped_fraction() == pytest.approx(0.6)
    again = SequenceSampler(corpus(), 64, {"a": 0.4, "b": 0.6})
    second = [make_example(again, "clm", 5, TRAIN_STREAM, 3, i, 0.15)[0] for i in range(400)]
    assert all(np.array_equal(x, y) for x, y in zip(first, second))  # same (seed, step, index), same window
