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


def _window_start(stream, window):
    """Where `window` sits in the framed stream (unique: the residues below are all distinct)."""
    matches = np.all(np.lib.stride_tricks.sliding_window_view(stream, len(window)) == window, axis=1)
    return int(np.flatnonzero(matches)[0])


def _distinct_residues(n):
    """n residue ids whose every window of 3 is unique (so a window's position is unambiguous)."""
    rng = np.random.default_rng(42)
    return rng.integers(4, 24, n).astype(np.uint8)


def test_a_crop_holds_cls_and_eos_only_at_the_proteins_real_ends():
    """Issue 27: crops framed <cls> window <eos> taught a CLM to stop at the crop length."""
    residues = _distinct_residues(100)
    stream = np.concatenate([[CLS_ID], residues, [EOS_ID]])
    seq_len = 32
    seen_starts = set()
    for seed in range(2000):  # 71 starts: each is seen (all but surely)
        out = frame(residues, seq_len, np.random.default_rng(seed))
        assert len(out) == seq_len
        start = _window_start(stream, out)
        seen_starts.add(start)
        assert (out[0] == CLS_ID) == (start == 0)
        assert (out[-1] == EOS_ID) == (start + seq_len == len(stream))
        assert CLS_ID not in out[1:] and EOS_ID not in out[:-1]
    assert seen_starts == set(range(len(stream) - seq_len + 1))  # every position, both ends included


def test_window_starts_are_uniform_over_every_position():
    residues = _distinct_residues(40)
    stream = np.concatenate([[CLS_ID], residues, [EOS_ID]])
    seq_len = 32  # 42 - 32 + 1 = 11 possible starts
    starts = np.array([_window_start(stream, frame(residues, seq_len, np.random.default_rng(s)))
                       for s in range(5500)])
    counts = np.bincount(starts, minlength=11)
    assert len(counts) == 11
    assert counts == pytest.approx(np.full(11, 500), abs=80)  # ~3.5 sd of a binomial(5500, 1/11)


def test_a_sequence_that_fits_is_framed_whole_as_before():
    residues = _distinct_residues(30)
    rng = np.random.default_rng(0)
    for length in (1, 5, 29, 30):
        out = frame(residues[:length], 32, rng)
        assert out.tolist() == [CLS_ID, *residues[:length].tolist(), EOS_ID]
    assert len(frame(residues, 31, rng)) == 31  # 32 framed tokens in a 31 window: a crop


def test_frame_keeps_the_crop_offsets_a_seed_drew_before():
    """Same offset draw as the old framing: a seed's crop starts where it did (now in the framed stream)."""
    residues = _distinct_residues(100)
    for seed in range(20):
        expected_start = int(np.random.default_rng(seed).integers(0, 100 - 30 + 1))
        out = frame(residues, 32, np.random.default_rng(seed))
        stream = np.concatenate([[CLS_ID], residues, [EOS_ID]])
        assert _window_start(stream, out) == expected_start


def test_mean_framed_length_matches_the_draws():
    sampler = SequenceSampler(corpus(), 64, {"a": 0.4, "b": 0.6})
    lengths = [len(sampler.draw(example_rng(2, TRAIN_STREAM, 1, i))) for i in range(6000)]
    assert np.mean(lengths) == pytest.approx(sampler.mean_framed_length(), rel=0.03)
    # Exactly: 0.4 * (mean of cluster means of source a) + 0.6 * 64 (source b's 100-residue proteins, cropped).
    source_a = 0.5 * 12 + 0.5 * np.mean([22 + i for i in range(9)])
    assert sampler.mean_framed_length() == pytest.approx(0.4 * source_a + 0.6 * 64)


def test_mlm_never_masks_a_special_token_and_a_middle_crop_scores_every_residue_position():
    residues = _distinct_residues(200)
    rng = np.random.default_rng(3)
    for _ in range(50):
        tokens = frame(residues, 32, rng)
        inputs, labels = mask_tokens(tokens, rng, 0.5)
        chosen = labels != IGNORE_INDEX
        assert not np.isin(tokens[chosen], [CLS_ID, EOS_ID, PAD_ID]).any()
        assert (inputs[~chosen] == tokens[~chosen]).all()


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


@pytest.mark.parametrize("framing", ["protein_ends", "every_crop"])
def test_a_clm_trained_on_crops_does_not_learn_to_stop_at_the_crop_length(tmp_path, framing):
    """Issue 27: with every crop framed <cls> window <eos>, a CLM put <eos> at the crop length (every sample
    was seq_len - 2 residues long). Proteins of 60-90 residues at seq_len 16: after training, the start of a
    protein, <cls> + 14 residues, must not predict <eos>: no protein of the data ends there (measured: p(<eos>)
    0.9995 with the old framing, 0.0009 now). The old framing, kept as train.sampling.crop_framing:
    every_crop, still shows the fault: the test tells the two apart."""
    import json

    import torch

    from plmscale.export.runs import load_run
    from plmscale.train import train_run
    from train_fixtures import tiny_spec

    rng = np.random.default_rng(0)
    letters = np.array(list(STANDARD_RESIDUES))
    proteins = ["M" + "".join(rng.choice(letters, int(rng.integers(60, 90)))) for _ in range(64)]
    shards = MemoryShards(proteins, list(range(64)), [0] * 64, ["a"])
    spec = tiny_spec(tokens=40_000, seq_len=16, batch_tokens=128, micro_batch_size=8, eval_every_steps=1000,
                     eval_tokens=200, checkpoint_every_steps=1000, lr=5e-3, warmup_fraction=0.05,
                     sampling={"by_cluster": True, "crop_framing": framing})
    train_run(spec, shards, shards, tmp_path / "run", tmp_path / "ckpt", threads=1)
    loaded = load_run(tmp_path / "ckpt" / "final.pt", metrics=tmp_path / "run" / "metrics.json")
    starts = torch.tensor([[CLS_ID, *shards[i][:14].tolist()] for i in range(16)], dtype=torch.long)
    with torch.no_grad():
        p_eos = torch.softmax(loaded.model(starts, causal=True)[:, -1].float(), dim=-1)[:, EOS_ID]
    if framing == "protein_ends":
        assert float(p_eos.max()) < 0.2
    else:
        assert float(p_eos.min()) > 0.5
    assert json.loads((tmp_path / "run" / "provenance.json").read_text())["effective_source_mix"] == {"a": 1.0}


def test_every_crop_framing_is_the_old_framing_on_the_same_offsets():
    """train.sampling.crop_framing: every_crop reproduces the framing of plmscale before the fix exactly
    (<cls> + seq_len - 2 residues from the same drawn offset + <eos>), so earlier results can be rerun."""
    residues = _distinct_residues(100)
    for seed in range(20):
        start = int(np.random.default_rng(seed).integers(0, 100 - 30 + 1))
        old = np.concatenate([[CLS_ID], residues[start:start + 30], [EOS_ID]])
        np.testing.assert_array_equal(frame(residues, 32, np.random.default_rng(seed), "every_crop"), old)
    short = residues[:20]
    np.testing.assert_array_equal(frame(short, 32, np.random.default_rng(0), "every_crop"),
                                  frame(short, 32, np.random.default_rng(0)))
    with pytest.raises(PlmscaleError, match="crop_framing"):
        frame(residues, 32, np.random.default_rng(0), "sometimes")


def test_a_weighted_source_without_sequences_is_warned_about_and_the_effective_mix_recorded(caplog):
    """Issue 27: a source emptied by dedup kept its weight while the sampler drew 0% from it, silently."""
    caplog.set_level("WARNING")
    shards = MemoryShards(["MKVL", "GGHH", "WWAA"], [0, 1, 2], [0, 0, 0], ["kept", "emptied", "other"])
    sampler = SequenceSampler(shards, 64, {"kept": 0.2, "emptied": 0.5, "other": 0.3}, where="train shards")
    assert sampler.effective_mix == {"kept": 1.0, "emptied": 0.0, "other": 0.0}
    assert "train shards: source(s) emptied, other have a weight in data.sources but no sequence" in caplog.text
    two = MemoryShards(["MKVL", "GGHH"], [0, 1], [0, 1], ["a", "b"])
    assert SequenceSampler(two, 64, {"a": 1, "b": 3}).effective_mix == {"a": 0.25, "b": 0.75}
