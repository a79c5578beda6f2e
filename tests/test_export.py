"""`plmscale export`: the files load in transformers (CLM) and in plmscale's own loader with plmscale's logits."""

import json
import os

import numpy as np
import pytest
import torch

from plmscale.alphabet import CLS_ID, EOS_ID, PAD_ID, TOKENS, encode
from plmscale.errors import PlmscaleError
from plmscale.model import Rotary, build_model

# Nothing is ever downloaded: set before transformers / huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

SHAPE = {"layers": 3, "d_model": 64, "heads": 4}


def random_model(shape=SHAPE, seed=0, seq_len=128):
    """A model whose weights are large enough that attention is far from uniform, so a wrong position or head
    layout changes the logits by a lot, not by rounding."""
    torch.manual_seed(seed)
    model = build_model(shape, max_len=seq_len)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.2 * torch.randn_like(param))
            else:
                param.normal_(0, 0.15)
    return model.eval()


def write_finished_run(results, run_id, objective="clm", shape=SHAPE, seq_len=128, seed=0):
    """The two files a finished workflow run leaves: checkpoints/{run}/final.pt and runs/{run}/metrics.json."""
    from plmscale.train import checkpoint as ckpt

    model = random_model(shape, seed, seq_len)
    (results / "checkpoints" / run_id).mkdir(parents=True)
    (results / "runs" / run_id).mkdir(parents=True)
    ckpt.save({"run_id": run_id, "shape": model.shape.to_dict(), "model": model.state_dict()},
              results / "checkpoints" / run_id / "final.pt")
    metrics = {"run_id": run_id, "objective": objective, "model": "test", "shape": model.shape.to_dict(),
               "n_params": model.n_params(), "n_params_with_embeddings": model.n_params(non_embedding=False),
               "tokens": 123_456, "flops": 6.0 * model.n_params() * 123_456, "final_valid_loss": 2.3456,
               "seq_len": seq_len, "recipe": "test-recipe", "seed": seed}
    (results / "runs" / run_id / "metrics.json").write_text(json.dumps(metrics))
    return model


def protein_batch(n=6, seed=1, min_length=20, max_length=90):
    """Framed, right-padded token ids of demo protein sequences (real-looking residue statistics)."""
    from plmscale.data.demo import generate

    records = generate(seed=seed, n_families=4, members_per_family=3, n_exact_duplicates=0, n_malformed=0,
                       min_length=min_length, max_length=max_length)
    sequences = [r.sequence for source in sorted(records) for r in records[source] if r.kind == "member"][:n]
    rows = [np.concatenate([[CLS_ID], encode(s), [EOS_ID]]).astype(np.int64) for s in sequences]
    tokens = torch.full((len(rows), max(len(r) for r in rows)), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = torch.from_numpy(row)
    return tokens


# --- the rotary positions (a regression: q and k were rotated along the q/k axis, not along positions) ---

def test_rotary_position_reaches_attention():
    """Bidirectional attention without position information is blind to order; with rotary it is not."""
    model = random_model()
    tokens = protein_batch(n=1)
    permutation = torch.randperm(tokens.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        permuted_after = model(tokens, causal=False)[:, permutation]
        permuted_before = model(tokens[:, permutation], causal=False)
    assert (permuted_after - permuted_before).abs().max() > 0.1


def test_fused_rotation_equals_rotating_q_and_k_by_position():
    model = random_model()
    attention = model.blocks[0].attn
    x = torch.randn(2, 17, SHAPE["d_model"])
    heads, head_dim = attention.heads, attention.head_dim
    q, k, v = attention.qkv(x).view(2, 17, 3, heads, head_dim).unbind(2)
    rotary = Rotary(head_dim)
    q, k = rotary(q), rotary(k)  # (B, T, H, hd): positions on axis -3, as Rotary documents
    reference = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                                 v.transpose(1, 2), is_causal=True)
    expected = attention.out(reference.transpose(1, 2).reshape(2, 17, SHAPE["d_model"]))
    with torch.no_grad():
        assert (attention(x, causal=True) - expected).abs().max() < 1e-5
