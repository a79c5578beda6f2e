"""The final model's validation loss per identity-to-training bin (plmscale.data.identity, docs/ood.md).

The identity step writes results/data/identity/valid.tsv, one row per valid sequence in the valid shards'
order. A run finds it from its valid shard directory by the workflow's layout (<data>/shards/valid ->
<data>/identity/valid.tsv; the train rule lists the table as an input so it exists and is current); a
run without it (tests, a config with data.identity.enabled false) reports no per-bin losses.

Each bin's evaluation set is built like the run's own validation set (loop.build_eval_set: same framing,
masking and seeds, capped at eval_tokens real tokens, every sequence once when the bin holds fewer), from
the valid sequences of that bin only. It is built at set-up, so a table that does not match the shards
fails the run before it trains, and evaluated once, after the last step.
"""

import logging
from pathlib import Path

import numpy as np

from plmscale.data.identity import NOT_SEARCHED, ordered_bins, read_identity_table
from plmscale.errors import PlmscaleError
from plmscale.train.subset import SubsetReader

log = logging.getLogger(__name__)


def table_for_shards(valid_dir) -> Path | None:
    """<data>/identity/<split>.tsv for shards in <data>/shards/<split>, or None (in-memory shards, no table)."""
    if hasattr(valid_dir, "lengths"):
        return None
    valid_dir = Path(valid_dir)
    path = valid_dir.parent.parent / "identity" / f"{valid_dir.name}.tsv"
    return path if path.exists() else None


def bin_indices(table, reader, where) -> dict:
    """{bin: indices into the shards}, after checking that the table describes exactly these sequences."""
    lengths = np.asarray(reader.lengths, dtype=np.int64)
    if len(table) != len(lengths):
        raise PlmscaleError(f"{where} lists {len(table)} sequences but the valid shards hold {len(lengths)}: "
                            "the identity table is older than the split; rerun the identity step")
    differ = np.flatnonzero(table["length"].to_numpy(dtype=np.int64) != lengths)
    if len(differ):
        raise PlmscaleError(f"{where}: row {int(differ[0]) + 2} ({table['seq_id'].iat[differ[0]]}) has length "
                            f"{int(table['length'].iat[differ[0]])}, the valid shards' sequence there "
                            f"{int(lengths[differ[0]])}: the table does not match the shards; rerun the "
                            "identity step")
    labels = table["bin"].to_numpy(dtype=object)
    # Sequences outside data.identity.max_queries' sample have no bin to be evaluated in.
    return {label: np.flatnonzero(labels == label) for label in ordered_bins(labels) if label != NOT_SEARCHED}


def bin_eval_sets(valid_reader, valid_dir, make_sampler, make_eval_set) -> dict | None:
    """{"table": path, "sets": {bin: (eval batches or None, valid sequences in the bin)}}, or None when
    valid_dir has no identity table.

    make_sampler(reader, where): a SequenceSampler made as the run's validation sampler is (seq_len,
    source weights, by_cluster); make_eval_set(sampler): batches built as the run's own eval set is.
    """
    path = table_for_shards(valid_dir)
    if path is None:
        return None
    table = read_identity_table(path)
    sets = {}
    for label, indices in bin_indices(table, valid_reader, path).items():
        try:
            sampler = make_sampler(SubsetReader(valid_reader, indices, f"identity bin {label}"), f"{path} bin {label}")
        except PlmscaleError as error:  # e.g. the bin holds only sources the run gives no weight
            log.warning("identity bin %s is not evaluated: %s", label, error)
            sets[label] = (None, len(indices))
            continue
        sets[label] = (make_eval_set(sampler), len(indices))
    log.info("identity bins of %s: %s valid sequences", path, {k: n for k, (_, n) in sets.items()})
    return {"table": str(path), "sets": sets}


def evaluate_bins(identity_sets, evaluate) -> dict:
    """metrics.json entries: valid_loss_by_identity, valid_tokens_by_identity (real tokens evaluated) and
    valid_sequences_by_identity (valid sequences in the bin); {} without a table.

    evaluate(batches) -> mean loss per label over those batches (the run's own evaluate)."""
    if not identity_sets:
        return {}
    losses, tokens, sequences = {}, {}, {}
    for label, (batches, n_sequences) in identity_sets["sets"].items():
        losses[label] = float(evaluate(batches)) if batches else None
        tokens[label] = int(sum(batch.n_real_tokens for batch in batches)) if batches else 0
        sequences[label] = int(n_sequences)
    log.info("final valid loss by identity to train: %s", losses)
    return {"valid_loss_by_identity": losses, "valid_tokens_by_identity": tokens,
            "valid_sequences_by_identity": sequences, "identity_table": identity_sets["table"]}
