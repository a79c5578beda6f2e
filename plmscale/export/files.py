"""A finished run as files others can load (`plmscale export RUN`, plmscale.cli.export), and the loader for them.

The export directory holds
- model.safetensors: the weights under Llama's tensor names (plmscale.export.llama);
- config.json: a transformers LlamaConfig for a CLM run (LlamaForCausalLM.from_pretrained loads the folder
  with identical logits), the same numbers without an architecture for an MLM run, and a "plmscale" block
  (objective, context, run facts) either way;
- vocab.txt: the 33 tokens, line i = token id i (ESM-2 order), and tokenizer.json for the `tokenizers` library;
- README.md: a model card (what was trained, on how many tokens, to what loss, and how to load it).

load_exported(directory) -> Transformer needs only torch and plmscale, for both objectives.
"""

import json
import logging
import os
import shutil
from pathlib import Path

from plmscale.alphabet import CLS_ID, EOS_ID, MASK_ID, PAD_ID, TOKENS, UNK_ID
from plmscale.errors import PlmscaleError
from plmscale.export.llama import config_dict, to_llama_names
from plmscale.export.runs import CONFIG, WEIGHTS, LoadedRun, load_checkpoint_run, load_exported_run, locate_run

log = logging.getLogger("plmscale.export")

VOCAB, TOKENIZER, CARD = "vocab.txt", "tokenizer.json", "README.md"
DTYPES = ("float32", "bfloat16", "float16")
# Facts of the run carried into config.json's "plmscale" block and the model card.
RUN_FACTS = ("run_id", "model", "n_params", "n_params_with_embeddings", "tokens", "flops", "final_valid_loss",
             "best_valid_loss", "recipe", "recipe_sha256", "peak_lr", "seed", "init_from", "config_hash")


def export_run(run, out_dir=None, results="results", metrics=None, dtype="float32") -> Path:
    """Write the export directory of a finished run (default RESULTS/export/{run_id}); returns its path."""
    import torch

    from plmscale.export.safetensors_io import write_safetensors

    if dtype not in DTYPES:
        raise PlmscaleError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    files = locate_run(run, results, metrics)
    loaded = load_checkpoint_run(files)
    out_dir = Path(out_dir) if out_dir else Path(results) / "export" / loaded.run_id
    facts = {key: loaded.metrics[key] for key in RUN_FACTS if key in loaded.metrics}
    facts["run_id"] = loaded.run_id
    facts.setdefault("n_params", loaded.model.n_params())
    facts.setdefault("n_params_with_embeddings", loaded.model.n_params(non_embedding=False))
    shape = loaded.model.shape
    state = {name: tensor.to(getattr(torch, dtype)) for name, tensor in loaded.model.state_dict().items()}
    tensors = to_llama_names(state, shape)
    config = config_dict(shape, loaded.objective, loaded.seq_len, dtype, facts)

    _check_replaceable(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        # "format": "pt" is what transformers' loader expects in the metadata of a PyTorch checkpoint.
        write_safetensors(tensors, tmp / WEIGHTS, metadata={"format": "pt", "plmscale_run_id": loaded.run_id})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        (tmp / VOCAB).write_text("".join(token + "\n" for token in TOKENS))
        (tmp / TOKENIZER).write_text(json.dumps(tokenizer_json(), indent=1) + "\n")
        (tmp / CARD).write_text(model_card(loaded, facts, config))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s (%s, %d parameters) to %s", loaded.run_id, loaded.objective,
             loaded.model.n_params(non_embedding=False), out_dir)
    return out_dir


def _check_replaceable(out_dir: Path) -> None:
    """An existing output directory is replaced only when it is an earlier export (or empty)."""
    if not out_dir.exists():
        return
    if out_dir.is_dir() and (not any(out_dir.iterdir()) or (out_dir / WEIGHTS).is_file()):
        return
    raise PlmscaleError(f"{out_dir} exists and is not an earlier export (no {WEIGHTS}); choose another --out "
                        f"or remove it")


def load_exported(directory):
    """The plmscale Transformer (eval mode, CPU, fp32) of an export directory; torch and plmscale only.

    Call it as model(tokens, causal=config["plmscale"]["objective"] == "clm"); tokens are ids of vocab.txt,
    framed <cls> residues <eos> as in training.
    """
    return load_exported_run(directory).model


def tokenizer_json() -> dict:
    """A `tokenizers` description of the vocabulary: one token per residue letter (a BPE model without
    merges splits text into characters), <unk> for anything else, and the training framing <cls> ... <eos>."""
    special = {CLS_ID, PAD_ID, EOS_ID, UNK_ID, MASK_ID} | {i for i, t in enumerate(TOKENS) if t.startswith("<")}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": TOKENS[i], "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i in sorted(special)],
        "normalizer": None, "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": TOKENS[CLS_ID], "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": TOKENS[EOS_ID], "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": TOKENS[CLS_ID], "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": TOKENS[EOS_ID], "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": TOKENS[EOS_ID], "type_id": 1}}],
            "special_tokens": {TOKENS[i]: {"id": TOKENS[i], "ids": [i], "tokens": [TOKENS[i]]}
                               for i in (CLS_ID, EOS_ID)},
        },
        "decoder": {"type": "Fuse"},
        "model": {"type": "BPE", "dropout": None, "unk_token": TOKENS[UNK_ID], "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {token: i for i, token in enumerate(TOKENS)}, "merges": []},
    }


def model_card(loaded: LoadedRun, facts: dict, config: dict) -> str:
    objective = {"clm": "causal (next-token) language model", "mlm": "masked language model"}[loaded.objective]
    shape = loaded.model.shape
    where = f"path/to/{loaded.run_id}"  # the export directory, wherever it is copied to

    def number(key, fmt="{:,}"):
        value = facts.get(key)
        return "unknown" if value is None else fmt.format(value)

    lines = [
        f"# {loaded.run_id}: a protein {objective}",
        "",
        f"Trained with plmscale (a workflow for compute-optimal scaling studies of protein language models) "
        f"as grid point `{loaded.run_id}`.",
        "",
        "| | |", "|---|---|",
        f"| objective | {loaded.objective.upper()} |",
        f"| non-embedding parameters (N) | {number('n_params')} |",
        f"| parameters with embeddings | {number('n_params_with_embeddings')} |",
        f"| shape | {shape.layers} layers, d_model {shape.d_model}, {shape.heads} heads, SwiGLU width "
        f"{shape.ffn_dim} |",
        f"| training tokens (D) | {number('tokens')} |",
        f"| training FLOPs | {number('flops', '{:.3g}')} |",
        f"| final validation loss (nats/token) | {number('final_valid_loss', '{:.4f}')} |",
        f"| recipe | {facts.get('recipe', 'unknown')} |",
        f"| context | {loaded.seq_len} tokens (`<cls>` + up to {loaded.max_residues} residues + `<eos>`) |",
        f"| weights dtype | {config['dtype']} |",
        "",
        "Architecture: pre-norm RMSNorm (eps 1e-6), SwiGLU, rotary position embeddings (rotate-half, base "
        "10000), no biases, tied input/output embedding; the tensors carry Llama's names.",
        "",
        "Tokens: vocab.txt, line i is token id i (the ESM-2 vocabulary). A sequence is framed as "
        "`<cls>` (id 0), one token per residue letter (upper case), `<eos>` (id 2); `<pad>` is 1, `<mask>` 32. "
        "tokenizer.json does the same with the `tokenizers` library.",
        "",
        "## Loading",
        "",
    ]
    if loaded.objective == "clm":
        lines += [
            "With transformers (nothing is downloaded):",
            "",
            "```python",
            "from transformers import LlamaForCausalLM, PreTrainedTokenizerFast",
            f"model = LlamaForCausalLM.from_pretrained(\"{where}\").eval()",
            f"tokenizer = PreTrainedTokenizerFast(tokenizer_file=\"{where}/tokenizer.json\")",
            "ids = tokenizer(\"MKTAYIAKQR\", return_tensors=\"pt\").input_ids  # <cls> M K ... <eos>",
            "logits = model(ids).logits",
            "```",
            "",
        ]
    else:
        lines += [
            "A masked model attends in both directions, which transformers' Llama classes do not do; load it "
            "with plmscale's plain-PyTorch loader (below).",
            "",
        ]
    causal = "True" if loaded.objective == "clm" else "False"
    lines += [
        "With plmscale only (torch, no transformers):",
        "",
        "```python",
        "from plmscale.export import load_exported",
        f"model = load_exported(\"{where}\")",
        f"logits = model(tokens, causal={causal})  # tokens: (batch, length) int64 ids of vocab.txt",
        "```",
        "",
        f"Score sequences (`plmscale score FASTA --run {where}`) or sample new ones "
        f"(`plmscale generate --run {where}`, CLM only); see plmscale's docs/export.md.",
        "",
    ]
    return "\n".join(lines)
