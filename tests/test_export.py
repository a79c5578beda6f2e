"""`plmscale export`: the files load in transformers (CLM) and in plmscale's own loader with plmscale's logits."""

import json
import os

import numpy as np
import pytest
import torch
import yaml

from plmscale.alphabet import CLS_ID, EOS_ID, PAD_ID, TOKENS, encode
from plmscale.errors import PlmscaleError
from plmscale.model import Rotary, build_model
from workflow_helpers import SNAKEMAKE, default_config_with, planned_rules, run_snakemake, workflow_copy

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
               "tokens": 123_456, "flops": 6.0 * model.n_params() * 123_456, "budget": None, "init_from": None,
               "final_valid_loss": 2.3456,
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


# --- transformers loads a CLM export ---

@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_clm_export_loads_in_transformers_with_identical_logits(tmp_path, attention):
    transformers = pytest.importorskip("transformers")
    from plmscale.export.files import export_run

    model = write_finished_run(tmp_path / "results", "clm_r1", "clm")
    out = export_run("clm_r1", results=tmp_path / "results")
    assert out == tmp_path / "results" / "export" / "clm_r1"
    hf = transformers.LlamaForCausalLM.from_pretrained(out, attn_implementation=attention).eval()
    assert hf.dtype == torch.float32
    assert hf.config.model_type == "llama" and hf.config.tie_word_embeddings
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    tokens = protein_batch()
    real = tokens != PAD_ID
    assert not real.all()  # rows of several lengths: right padding is exercised
    with torch.no_grad():
        ours = model(tokens, causal=True)
        theirs = hf(input_ids=tokens, attention_mask=real.long()).logits
    assert (ours - theirs)[real].abs().max() <= 1e-5


def test_exported_file_reads_with_the_safetensors_package_and_back(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from plmscale.export.safetensors_io import read_safetensors, write_safetensors

    tensors = {"a": torch.randn(3, 5), "b.c": torch.randn(7).to(torch.bfloat16), "e": torch.arange(4),
               "f": torch.randn(2, 2).to(torch.float16)[:, 0]}  # a non-contiguous view
    write_safetensors(tensors, tmp_path / "ours.safetensors", {"format": "pt"})
    theirs = safetensors_torch.load_file(tmp_path / "ours.safetensors")
    assert theirs.keys() == tensors.keys() and all(torch.equal(theirs[k], tensors[k]) for k in tensors)
    safetensors_torch.save_file({k: v.contiguous() for k, v in tensors.items()}, tmp_path / "theirs.safetensors",
                                metadata={"x": "y"})
    back, metadata = read_safetensors(tmp_path / "theirs.safetensors")
    assert metadata == {"x": "y"} and all(torch.equal(back[k], tensors[k]) for k in tensors)


# --- plmscale's own loader ---

@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_load_exported_gives_identical_logits(tmp_path, objective):
    from plmscale.export import load_exported
    from plmscale.export.files import export_run

    model = write_finished_run(tmp_path / "results", "run", objective)
    out = export_run("run", tmp_path / "elsewhere", results=tmp_path / "results")
    loaded = load_exported(out)
    tokens = protein_batch()
    with torch.no_grad():
        assert torch.equal(loaded(tokens, causal=objective == "clm"), model(tokens, causal=objective == "clm"))
    config = json.loads((out / "config.json").read_text())
    assert config["plmscale"]["objective"] == objective and config["plmscale"]["seq_len"] == 128
    # A masked model must not pose as a causal Llama: no transformers architecture is named.
    assert config["architectures"] == (["LlamaForCausalLM"] if objective == "clm" else [])


def test_bfloat16_export_loads_as_the_rounded_weights(tmp_path):
    from plmscale.export import load_exported
    from plmscale.export.files import export_run

    model = write_finished_run(tmp_path / "results", "run")
    out = export_run("run", results=tmp_path / "results", dtype="bfloat16")
    loaded = load_exported(out)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor.to(torch.bfloat16).float()), name
    assert (out / "model.safetensors").stat().st_size < 0.6 * sum(t.numel() * 4 for t in model.state_dict().values())


def test_export_writes_vocabulary_tokenizer_and_model_card(tmp_path):
    from plmscale.export.files import export_run

    model = write_finished_run(tmp_path / "results", "clm_card")
    out = export_run("clm_card", results=tmp_path / "results")
    assert (out / "vocab.txt").read_text().splitlines() == list(TOKENS)
    card = (out / "README.md").read_text()
    for fact in ("CLM", f"{model.n_params():,}", "123,456", "2.3456", "test-recipe", "LlamaForCausalLM",
                 "load_exported"):
        assert fact in card, fact
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    sequence = "MKTAYIAKQRXBZUO"
    assert tokenizer.encode(sequence).ids == [CLS_ID, *encode(sequence).tolist(), EOS_ID]
    assert tokenizer.decode(tokenizer.encode(sequence).ids) == sequence


def test_export_replaces_an_earlier_export_but_nothing_else(tmp_path):
    from plmscale.export.files import export_run

    write_finished_run(tmp_path / "results", "run")
    out = export_run("run", results=tmp_path / "results")
    (out / "stale.txt").write_text("from an earlier export")
    assert export_run("run", results=tmp_path / "results") == out and not (out / "stale.txt").exists()
    keep = tmp_path / "my_notes"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(PlmscaleError, match="my_notes exists and is not an earlier export"):
        export_run("run", keep, results=tmp_path / "results")
    assert (keep / "notes.txt").read_text() == "mine"


def test_export_of_a_bad_path_names_the_file_and_what_to_do(tmp_path):
    from plmscale.export.files import export_run

    results = tmp_path / "results"
    with pytest.raises(PlmscaleError, match=r"checkpoints/absent/final.pt does not exist.*train it first.*--results"):
        export_run("absent", results=results)
    with pytest.raises(PlmscaleError, match=r"moved/final.pt does not exist; give the final.pt of a finished run"):
        export_run(tmp_path / "moved" / "final.pt")
    write_finished_run(results, "run")
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "final.pt").write_bytes((results / "checkpoints" / "run" / "final.pt").read_bytes())
    with pytest.raises(PlmscaleError, match=r"no metrics.json for .*moved/final.pt.*pass --metrics"):
        export_run(moved / "final.pt")
    out = export_run(moved / "final.pt", tmp_path / "out", metrics=results / "runs" / "run" / "metrics.json")
    assert (out / "model.safetensors").is_file()
    (moved / "final.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PlmscaleError, match=r"moved/final.pt: cannot read checkpoint"):
        export_run(moved / "final.pt", tmp_path / "out2", metrics=results / "runs" / "run" / "metrics.json")


def test_truncated_export_is_named_when_loading(tmp_path):
    from plmscale.export import load_exported
    from plmscale.export.files import export_run

    write_finished_run(tmp_path / "results", "run")
    out = export_run("run", results=tmp_path / "results")
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(PlmscaleError, match=r"model.safetensors: not a readable safetensors file"):
        load_exported(out)
    with pytest.raises(PlmscaleError, match=r"config.json does not exist"):
        load_exported(tmp_path / "results")


def test_export_command(tmp_path, capsys):
    from plmscale.cli import main

    write_finished_run(tmp_path / "results", "run", "mlm")
    assert main(["export", "run", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "x")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "x")
    assert main(["export", "other", "--results", str(tmp_path / "results")]) == 2
    assert "other/final.pt does not exist" in capsys.readouterr().err


def test_a_tensor_without_a_llama_name_is_never_dropped():
    from plmscale.export.llama import to_llama_names

    model = random_model()
    state = dict(model.state_dict(), **{"blocks.0.attn.new_gate": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"blocks.0.attn.new_gate.*extend plmscale/export/llama.py"):
        to_llama_names(state, model.shape)


@pytest.mark.slow  # starts Snakemake: a DAG build of seconds; the fast set (-m "not slow") starts none
@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="needs snakemake next to the Python running pytest")
def test_the_workflow_plans_the_configured_exports_and_refuses_an_unknown_run(tmp_path):
    workdir = workflow_copy(tmp_path / "wf", default_config_with({}))
    jobs = planned_rules(run_snakemake(workdir, "--dry-run"))
    # The demo exports a CLM grid point (sampled too) and the CLM->MLM transfer run (an MLM: not sampled).
    assert jobs["export_run"] == 2 and jobs["sample_sequences"] == 1
    (workdir / "config.yaml").write_text(yaml.safe_dump(default_config_with({"export": {"runs": ["clm_n99k"]}})))
    output = run_snakemake(workdir, "--dry-run", check=False)
    assert "export.runs names clm_n99k, not a run of this study" in output
