"""Small training corpora for the training tests: demo protein families as shard readers and specs."""

import numpy as np

from plmscale.data.shards import MemoryShards  # noqa: F401  (the tests import it from here)


def demo_split(n_families=24, members_per_family=6, seed=3, max_length=200):
    """(train, valid) MemoryShards from the demo generator: families are clusters, whole families held out."""
    from plmscale.data.demo import generate

    records = generate(seed=seed, n_families=n_families, members_per_family=members_per_family,
                       n_exact_duplicates=0, n_malformed=0, min_length=30, max_length=max_length)
    sources = sorted(records)
    rows = []
    for s, source in enumerate(sources):
        for r in records[source]:
            if r.kind == "member":
                rows.append((r.sequence.upper()[:max_length], r.family, s))
    families = sorted({f for _, f, _ in rows})
    family_index = {f: i for i, f in enumerate(families)}
    valid_families = set(families[::6])

    def build(keep):
        chosen = [row for row in rows if keep(row[1])]
        clusters = sorted({f for _, f, _ in chosen})
        dense = {f: i for i, f in enumerate(clusters)}
        return MemoryShards([q for q, _, _ in chosen], [dense[f] for _, f, _ in chosen],
                            [s for _, _, s in chosen], sources)

    del family_index
    return build(lambda f: f not in valid_families), build(lambda f: f in valid_families)


def tiny_spec(objective="clm", tokens=20_000, run_id=None, **train):
    settings = dict(seq_len=64, batch_tokens=512, micro_batch_size=4, lr=3e-3, warmup_fraction=0.1,
                    eval_every_steps=5, eval_tokens=2000, checkpoint_every_steps=5, device="cpu",
                    precision="fp32", seed=11)
    settings.update(train)
    return {"run_id": run_id or f"{objective}_tiny", "objective": objective, "model": "tiny",
            "shape": {"layers": 2, "d_model": 32, "heads": 2}, "tokens": tokens, "budget": None,
            "init_from": None, "resources": {"gpus": 0}, **settings}


def member_split(n_families=6, members_per_family=8, seed=5, max_length=120):
    """(train, valid): one member of every family held out, so a model can learn the families."""
    from plmscale.data.demo import generate

    records = generate(seed=seed, n_families=n_families, members_per_family=members_per_family,
                       n_exact_duplicates=0, n_malformed=0, min_length=30, max_length=max_length)
    sources = sorted(records)
    train, valid, seen = [], [], set()
    for s, source in enumerate(sources):
        for r in records[source]:
            if r.kind != "member":
                continue
            row = (r.sequence.upper()[:max_length], r.family, s)
            (train if (r.family, s) in seen else valid).append(row)
            seen.add((r.family, s))
    families = {f: i for i, f in enumerate(sorted({f for _, f, _ in train}))}

    def build(rows):
        return MemoryShards([q for q, _, _ in rows], [families[f] for _, f, _ in rows], [s for _, _, s in rows],
                            sources)

    return build(train), build(valid)


def unigram_entropy(train, valid) -> float:
    """Cross-entropy (nats) of valid residues under train's residue frequencies: the no-context baseline."""
    counts = np.bincount(np.concatenate([train[i] for i in range(len(train))]), minlength=33) + 1.0
    p = counts / counts.sum()
    tokens = np.concatenate([valid[i] for i in range(len(valid))])
    return float(-np.log(p[tokens]).mean())


def write_shards(memory: MemoryShards, directory, split="train", max_tokens_per_shard=2000):
    """Write a MemoryShards as real shards (plmscale.data.shards) and return the directory."""
    from plmscale.data.shards import ShardWriter

    writer = ShardWriter(directory, split, memory.sources, max_tokens_per_shard)
    tokens = np.concatenate([memory[i] for i in range(len(memory))]).astype(np.uint8)
    writer.add(tokens, memory.lengths, memory.cluster_ids, memory.source_ids)
    writer.close()
    return directory


def shard_dirs(tmp_path, memory_pair):
    train, valid = memory_pair
    return (write_shards(train, tmp_path / "shards" / "train", "train"),
            write_shards(valid, tmp_path / "shards" / "valid", "valid"))
