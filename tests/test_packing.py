"""Packed sequences with document masking: same loss as padding, no attention across documents, positions
restarting per sequence, a packer that keeps every sequence once, and packed training runs that resume."""

import numpy as np
import pytest
import torch

from plmscale.alphabet import PAD_ID
import plmscale.model as model_module
from plmscale.model import Rotary, build_model


def _tokens(batch, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, 24, (batch, length), generator=g)


# ---- rotary positions ------------------------------------------------------------------------------------------
def test_rotary_scores_depend_on_relative_position_of_each_token():
    # Shaped as the attention layer calls it: (B, T, q/k, heads, head_dim). Every token carries the same q and k,
    # so a score can only vary through the positions.
    rotary = Rotary(head_dim=8, max_len=16)
    g = torch.Generator().manual_seed(0)
    qk = torch.randn(1, 1, 2, 1, 8, generator=g).expand(1, 12, 2, 1, 8)
    q, k = rotary(qk).unbind(2)
    scores = torch.einsum("bihd,bjhd->ij", q, k)
    for offset in (-3, 0, 2, 5):
        diagonal = torch.diagonal(scores, offset)
        torch.testing.assert_close(diagonal, diagonal[0].expand_as(diagonal), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(torch.diagonal(scores, 0)[0], torch.diagonal(scores, 3)[0])


def test_mlm_model_sees_token_order():
    # Regression: the rotary table was indexed by the q/k axis instead of the token axis, so no position
    # reached attention and a bidirectional model was blind to residue order.
    torch.manual_seed(0)
    model = build_model({"layers": 2, "d_model": 32, "heads": 2}).eval()
    with torch.no_grad():  # sharper attention than at init, so that order has a visible effect
        for block in model.blocks:
            block.attn.qkv.weight.mul_(30)
    tokens = _tokens(1, 10)
    order = torch.arange(9, -1, -1)
    with torch.no_grad():
        reversed_then_logits = model(tokens[:, order], causal=False)[0]
        logits_then_reversed = model(tokens, causal=False)[0, order]
    assert not torch.allclose(reversed_then_logits, logits_then_reversed, atol=1e-2)


# ---- packed vs padded model ------------------------------------------------------------------------------------
def _examples(objective, lengths, seq_len=48, seed=0):
    from plmscale.train.masking import causal_labels, mask_tokens
    from plmscale.train.sampler import frame

    rng = np.random.default_rng(seed)
    examples = []
    for length in lengths:
        tokens = frame(rng.integers(4, 24, length), seq_len, rng)
        examples.append(mask_tokens(tokens, rng, 0.3) if objective == "mlm" else (tokens, causal_labels(tokens)))
    return examples


def _loss_and_labels(model, batches, causal):
    loss = sum(float(model(b.tokens, causal, **b.model_kwargs())[1]) for b in batches)
    return loss, sum(b.n_labels for b in batches)


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_packed_loss_per_token_equals_padded(objective):
    from plmscale.train.packing import micro_batches

    torch.manual_seed(0)
    model = build_model({"layers": 2, "d_model": 32, "heads": 2}).eval()
    examples = _examples(objective, [30, 5, 12, 40, 3, 20, 8, 17])
    padded = micro_batches(examples, 3, 48, packed=False)
    packed = micro_batches(examples, 2, 48, packed=True)
    assert any(len(set(row.tolist())) > 2 for b in packed for row in b.doc_ids)  # a row with several sequences
    assert any((b.tokens == PAD_ID).any() for b in packed)  # and a padded tail
    with torch.no_grad():
        padded_loss, padded_labels = _loss_and_labels(model, padded, objective == "clm")
        packed_loss, packed_labels = _loss_and_labels(model, packed, objective == "clm")
    assert packed_labels == padded_labels > 0
    assert packed_loss / packed_labels == pytest.approx(padded_loss / padded_labels, abs=1e-5)


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_full_width_rows_give_the_loss_of_rows_padded_to_the_longest(objective):
    """What a compiled run trains on (train.compile: every padded row seq_len wide, one shape): the same
    batches, labels and loss as rows padded to the batch's longest sequence."""
    from plmscale.train.packing import micro_batches

    torch.manual_seed(0)
    model = build_model({"layers": 2, "d_model": 32, "heads": 2}).eval()
    examples = _examples(objective, [30, 5, 12, 40, 3, 20, 8, 17])
    longest = micro_batches(examples, 3, 48, packed=False)
    full = micro_batches(examples, 3, 48, packed=False, full_width=True)
    assert {b.tokens.shape[1] for b in full} == {48} and {b.tokens.shape[1] for b in longest} != {48}
    for narrow, wide in zip(longest, full, strict=True):
        width = narrow.tokens.shape[1]
        assert torch.equal(wide.tokens[:, :width], narrow.tokens) and (wide.tokens[:, width:] == PAD_ID).all()
        assert wide.n_labels == narrow.n_labels
    with torch.no_grad():
        assert _loss_and_labels(model, full, objective == "clm")[0] == pytest.approx(
            _loss_and_labels(model, longest, objective == "clm")[0], rel=1e-5)


def _model_and_one_packed_row(lengths):
    """A small seeded model, CLM examples of these lengths, and all of them packed into one 48-token row."""
    from plmscale.train.packing import collate_packed

    torch.manual_seed(0)
    model = build_model({"layers": 2, "d_model": 32, "heads": 2}).eval()
    examples = _examples("clm", lengths)
    return model, examples, collate_packed(examples, [list(range(len(lengths)))], 48)


@pytest.mark.parametrize("causal", [True, False])
def test_packed_logits_of_each_sequence_equal_its_own_row(causal):
    model, examples, packed = _model_and_one_packed_row([10, 20, 6])
    with torch.no_grad():
        logits = model(packed.tokens, causal, doc_ids=packed.doc_ids, positions=packed.positions)[0]
        at = 0
        for inputs, _ in examples:
            alone = model(torch.from_numpy(inputs)[None], causal)[0]
            torch.testing.assert_close(logits[at:at + len(inputs)], alone, atol=1e-5, rtol=1e-5)
            at += len(inputs)


@pytest.mark.parametrize("causal", [True, False])
def test_no_token_attends_across_documents(causal):
    model, _, packed = _model_and_one_packed_row([12, 9, 15])
    changed = packed.tokens.clone()
    middle = packed.doc_ids == 1
    changed[middle] = (changed[middle] - 4 + 7) % 20 + 4  # another sequence in the middle document
    with torch.no_grad():
        before = model(packed.tokens, causal, doc_ids=packed.doc_ids)
        after = model(changed, causal, doc_ids=packed.doc_ids)
    others = ~middle[0]
    assert torch.equal(before[0, others], after[0, others])
    assert not torch.allclose(before[0, middle[0]], after[0, middle[0]])


def test_a_compiled_model_builds_the_document_mask_eagerly_and_an_eager_one_never_loads_dynamo():
    """Transformer.compile marks the mask builder for torch.compile to skip (it is built once per
    micro-batch and passed in); the marker imports torch._dynamo, so eager models go without it."""
    torch.manual_seed(0)
    model = build_model({"layers": 1, "d_model": 8, "heads": 2, "ffn_dim": 16}, max_len=16)
    assert not getattr(model._document_mask, "_torchdynamo_disable", False)
    model.compile()
    assert model._document_mask._torchdynamo_disable
    doc_ids = torch.tensor([[0, 0, 1, 1, 1, 2, 2, 2]])
    assert torch.equal(model._document_mask(doc_ids, True, 4), model_module.document_mask(doc_ids, True, 4))


def test_positions_restart_at_each_sequence_and_follow_from_document_ids():
    from plmscale.model import positions_from_doc_ids
    from plmscale.train.packing import collate_packed

    examples = _examples("clm", [3, 1, 5])
    packed = collate_packed(examples, [[0, 1], [2]], 12)
    assert packed.positions.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3],
                                         [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4]]
    assert packed.doc_ids.tolist() == [[0] * 5 + [1] * 3 + [2] * 4, [0] * 7 + [1] * 5]
    assert torch.equal(positions_from_doc_ids(packed.doc_ids), packed.positions)


# ---- the packer ------------------------------------------------------------------------------------------------
def test_packer_places_every_sequence_exactly_once_within_seq_len():
    from plmscale.train.packing import pack_rows

    rng = np.random.default_rng(4)
    lengths = rng.integers(3, 129, 300)
    rows = pack_rows(lengths, 128)
    placed = sorted(i for row in rows for i in row)
    assert placed == list(range(300))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    assert rows == pack_rows(lengths, 128)  # deterministic
    # First fit: a sequence never sits in a later row while an earlier row still has room for it (room
    # only shrinks, so the final room bounds the room at placement time).
    room = [128 - sum(lengths[i] for i in row) for row in rows]
    for r, row in enumerate(rows):
        assert all(room[earlier] < lengths[i] for i in row for earlier in range(r))
    assert sum(lengths) / (128 * len(rows)) > 0.9  # rows are nearly full


def test_packer_refuses_a_sequence_longer_than_a_row():
    from plmscale.errors import PlmscaleError
    from plmscale.train.packing import pack_rows

    with pytest.raises(PlmscaleError, match="seq_len 16"):
        pack_rows([10, 17], 16)


def test_packed_batches_hold_the_same_tokens_and_labels_as_padded():
    from plmscale.train.packing import micro_batches

    examples = _examples("mlm", [30, 5, 46, 12, 3, 20, 8, 17, 40])
    padded = micro_batches(examples, 4, 48, packed=False)
    packed = micro_batches(examples, 2, 48, packed=True)
    real = sum(len(inputs) for inputs, _ in examples)  # D: framed tokens, <cls>/<eos> included, no <pad>
    assert sum(b.n_real_tokens for b in packed) == sum(b.n_real_tokens for b in padded) == real
    assert sum(b.n_labels for b in packed) == sum(b.n_labels for b in padded)
    assert all(b.tokens.shape[1] == 48 and b.tokens.shape[0] <= 2 for b in packed)
    # Every example appears as one contiguous document, with its own labels.
    found = []
    for b in packed:
        for row in range(b.tokens.shape[0]):
            for doc in b.doc_ids[row].unique().tolist():
                where = b.doc_ids[row] == doc
                tokens = b.tokens[row][where].numpy()
                if (tokens != PAD_ID).any():
                    found.append((tokens.tolist(), b.labels[row][where].numpy().tolist()))
    assert sorted(found) == sorted((i.tolist(), t.tolist()) for i, t in examples)


def test_packing_setting_resolves_per_device():
    from plmscale.errors import PlmscaleError
    from plmscale.grid.spec import RunSpec
    from plmscale.train.packing import CPU_PACK_BELOW_FILL, resolve_packing
    from train_fixtures import tiny_spec

    assert resolve_packing("auto", "cuda") is True and resolve_packing("auto", "cuda", 0.99) is True
    assert resolve_packing("auto", "cpu", CPU_PACK_BELOW_FILL / 2) is True  # short proteins, long rows
    assert resolve_packing("auto", "cpu", 0.99) is False  # rows already full of cropped sequences
    assert resolve_packing("auto", "cpu", np.float64(0.1)) is True  # a plain bool: metrics.json holds it
    assert resolve_packing(False, "cuda") is False and resolve_packing(True, "cpu") is True
    with pytest.raises(PlmscaleError, match="train.packing"):
        resolve_packing("yes", "cpu")
    assert RunSpec.from_dict(tiny_spec()).train.packing == "auto"
    assert RunSpec.from_dict(tiny_spec(packing=False)).train.packing is False


# ---- training runs ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from train_fixtures import member_split, shard_dirs

    return shard_dirs(tmp_path_factory.mktemp("packing"), member_split(n_families=4))


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_packed_run_reads_the_same_tokens_and_resumes_identically(shards, tmp_path, objective):
    from plmscale.train import train_run
    from train_fixtures import tiny_spec

    spec = tiny_spec(objective, tokens=8000, checkpoint_every_steps=4, packing=True)
    full = train_run(spec, *shards, tmp_path / "full", tmp_path / "ck_full", threads=1)
    padded = train_run({**spec, "packing": False}, *shards, tmp_path / "padded", tmp_path / "ck_padded", threads=1)
    assert full["packing"] is True and padded["packing"] is False
    # Same examples per step: the same real tokens (D), and the same losses up to float rounding.
    assert full["tokens"] == padded["tokens"] and full["steps"] == padded["steps"]
    assert full["final_valid_loss"] == pytest.approx(padded["final_valid_loss"], rel=1e-3)
    assert train_run(spec, *shards, tmp_path / "half", tmp_path / "ck", threads=1, stop_after_steps=6) is None
    assert torch.load(tmp_path / "ck" / "last.pt", weights_only=True)["step"] == 4
    resumed = train_run(spec, *shards, tmp_path / "half", tmp_path / "ck", threads=1)
    assert resumed["tokens"] == full["tokens"] and resumed["steps"] == full["steps"]
    assert resumed["final_valid_loss"] == full["final_valid_loss"]


@pytest.mark.slow
def test_flex_attention_block_mask_gives_the_boolean_masks_logits(monkeypatch):
    # The CUDA path (FlexAttention block mask from the document mask_mod), run forward-only on CPU where
    # this torch compiles flex attention: same logits as the boolean mask, causal and bidirectional.
    from plmscale.train.packing import collate_packed

    if model_module.flex_attention_api() is None:
        pytest.skip("this torch has no flex attention")
    torch.manual_seed(0)
    model = build_model({"layers": 2, "d_model": 64, "heads": 4}).eval()
    examples = _examples("clm", [100, 60, 200, 30, 90], seq_len=256)
    packed = collate_packed(examples, [[0, 1, 3], [2], [4]], 256)
    boolean_mask = model_module.document_mask
    with torch.no_grad():
        for causal in (True, False):
            expected = model(packed.tokens, causal, doc_ids=packed.doc_ids)
            monkeypatch.setattr(model_module, "document_mask",
                                lambda doc_ids, causal, head_dim=None: boolean_mask(doc_ids, causal, use_flex=True))
            flex = model(packed.tokens, causal, doc_ids=packed.doc_ids)
            monkeypatch.setattr(model_module, "document_mask", boolean_mask)
            assert not isinstance(boolean_mask(packed.doc_ids, causal, use_flex=True), torch.Tensor)
            torch.testing.assert_close(flex, expected, atol=1e-5, rtol=1e-5)


def test_auto_packs_on_cpu_only_where_rows_would_be_mostly_padding(shards, tmp_path):
    from plmscale.train import train_run
    from train_fixtures import tiny_spec

    # The fixture's proteins frame to ~110 tokens: a quarter of a 512 row, but cropped to fill a 64 row.
    long_rows = train_run(tiny_spec("clm", tokens=3000, seq_len=512, batch_tokens=4096), *shards,
                          tmp_path / "long", tmp_path / "ck_long", threads=1)
    full_rows = train_run(tiny_spec("clm", tokens=3000), *shards, tmp_path / "full", tmp_path / "ck_full", threads=1)
    assert long_rows["packing"] is True and full_rows["packing"] is False


def _varied_lengths_split():
    """(train, valid) of random proteins 10-200 residues long: packed rows then hold 1-6 sequences."""
    from plmscale.data.shards import MemoryShards

    rng = np.random.default_rng(2)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))

    def make(n):
        sequences = ["".join(rng.choice(letters, int(rng.integers(10, 201)))) for _ in range(n)]
        return MemoryShards(sequences, list(range(n)), [0] * n, ["random"])

    return make(200), make(40)


def _packed_rank(rank, world, port, spec, out):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from plmscale.train import train_run
    train_run(spec, *_varied_lengths_split(), f"{out}/out", f"{out}/ck", threads=1)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_packed_ranks_with_unequal_row_counts_match_one_process(strategy, tmp_path):
    # One packed row per micro-batch, rows of 256 and sequences of 12-202 tokens: the two ranks' halves of
    # a step need different numbers of micro-batches, and the short rank runs empty ones (FSDP's forwards
    # are collectives). Same global batch, so the same tokens and loss as one process.
    import json

    import torch.multiprocessing as mp

    from plmscale.train import train_run
    from plmscale.train.packing import micro_batches
    from plmscale.train.sampler import SequenceSampler, make_example
    from test_train_distributed import _free_port
    from train_fixtures import tiny_spec

    spec = tiny_spec("mlm", tokens=8000, seq_len=256, batch_tokens=2048, micro_batch_size=1, packing=True,
                     checkpoint_every_steps=4, eval_every_steps=4, distributed={"strategy": strategy})
    train, valid = _varied_lengths_split()
    sampler = SequenceSampler(train, 256)
    rows_per_rank = [[len(micro_batches([make_example(sampler, "mlm", 11, 0, step, rank * 4 + i, 0.15)
                                         for i in range(4)], 1, 256, True)) for rank in (0, 1)]
                     for step in range(4)]
    assert any(a != b for a, b in rows_per_rank)  # the case under test happens
    single = train_run({**spec, "distributed": {"strategy": "none"}}, train, valid, tmp_path / "single" / "out",
                       tmp_path / "single" / "ck", threads=1)
    mp.spawn(_packed_rank, args=(2, _free_port(), spec, str(tmp_path / "two")), nprocs=2, join=True)
    ranks = json.loads((tmp_path / "two" / "out" / "metrics.json").read_text())
    assert ranks["world_size"] == 2 and ranks["packing"] is True and ranks["batch_sequences"] == 8
    assert ranks["tokens"] == single["tokens"] and ranks["steps"] == single["steps"]
    assert ranks["final_valid_loss"] == pytest.approx(single["final_valid_loss"], abs=1e-5)
    assert ranks["train_loss"] == pytest.approx(single["train_loss"], abs=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_an_empty_micro_batch_adds_no_loss_and_no_gradient(causal):
    from plmscale.train.packing import empty_batch

    torch.manual_seed(0)
    model = build_model({"layers": 1, "d_model": 32, "heads": 2})
    batch = empty_batch(16)
    _, loss = model(batch.tokens, causal, **batch.model_kwargs())
    loss.backward()
    assert float(loss.detach()) == 0.0 and batch.n_labels == 0 and batch.n_real_tokens == 0
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.parameters())
