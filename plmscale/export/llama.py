"""plmscale's transformer in Llama's vocabulary: tensor names and a transformers LlamaConfig.

The architectures agree exactly: pre-norm RMSNorm (eps 1e-6), SwiGLU, rotary embeddings in the rotate-half
convention with base 10000, no biases, tied embeddings. Three differences are only of layout:
- plmscale fuses q, k and v into one (3d, d) matrix whose rows are the q block, then k, then v, each
  head-major (view(B, T, 3, H, hd)): Llama's q_proj/k_proj/v_proj are its three row blocks, unchanged.
  transformers permutes q and k only when converting Meta's interleaved-rotary checkpoints; plmscale
  rotates halves as transformers' Llama does, so no permutation is needed (tests/test_export.py checks the
  logits).
- the SwiGLU gate and up projections are fused, gate rows first: gate_proj and up_proj are its halves.
- the output head is the embedding matrix (tie_word_embeddings), so there is no lm_head tensor.

A masked (MLM) model has the same tensors; only its attention is bidirectional, which a LlamaConfig cannot
say, so its config.json names no transformers architecture (load it with plmscale.export.load_exported).
"""

from plmscale.alphabet import CLS_ID, EOS_ID, MASK_ID, PAD_ID, VOCAB_SIZE
from plmscale.arithmetic import ModelShape
from plmscale.errors import PlmscaleError

RMS_NORM_EPS = 1e-6
ROPE_THETA = 10000.0


def to_llama_names(state: dict, shape: ModelShape) -> dict:
    """plmscale state dict -> {Llama tensor name: tensor} (views; fused matrices split, nothing copied)."""
    d, f = shape.d_model, shape.ffn_dim
    out = {"model.embed_tokens.weight": state["embed.weight"]}
    for i in range(shape.layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = state[ours + "attn.qkv.weight"].split(d, dim=0)
        gate, up = state[ours + "ffn.gate_up.weight"].split(f, dim=0)
        out.update({
            theirs + "input_layernorm.weight": state[ours + "attn_norm.weight"],
            theirs + "self_attn.q_proj.weight": q,
            theirs + "self_attn.k_proj.weight": k,
            theirs + "self_attn.v_proj.weight": v,
            theirs + "self_attn.o_proj.weight": state[ours + "attn.out.weight"],
            theirs + "post_attention_layernorm.weight": state[ours + "ffn_norm.weight"],
            theirs + "mlp.gate_proj.weight": gate,
            theirs + "mlp.up_proj.weight": up,
            theirs + "mlp.down_proj.weight": state[ours + "ffn.down.weight"],
        })
    out["model.norm.weight"] = state["final_norm.weight"]
    unmapped = sorted(set(state) - _plmscale_names(shape))
    if unmapped:  # the model gained a tensor this mapping does not know: never drop weights silently
        raise ValueError(f"no Llama name for the model's tensors {unmapped}; extend plmscale/export/llama.py")
    return out


def _plmscale_names(shape: ModelShape) -> set:
    per_block = ("attn_norm.weight", "attn.qkv.weight", "attn.out.weight", "ffn_norm.weight", "ffn.gate_up.weight",
                 "ffn.down.weight")
    return {"embed.weight", "final_norm.weight"} | {f"blocks.{i}.{name}" for i in range(shape.layers)
                                                    for name in per_block}


def from_llama_names(tensors: dict, shape: ModelShape, where: str = "weights") -> dict:
    """{Llama tensor name: tensor} -> plmscale state dict; a missing tensor is an error naming it."""
    import torch

    def take(name):
        try:
            return tensors[name]
        except KeyError:
            raise PlmscaleError(f"{where} has no tensor {name!r} ({shape.layers} layers expected from "
                                f"config.json); export the run again") from None

    state = {"embed.weight": take("model.embed_tokens.weight"), "final_norm.weight": take("model.norm.weight")}
    for i in range(shape.layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        attn, mlp = theirs + "self_attn.", theirs + "mlp."
        state.update({
            ours + "attn_norm.weight": take(theirs + "input_layernorm.weight"),
            ours + "attn.qkv.weight": torch.cat([take(attn + "q_proj.weight"), take(attn + "k_proj.weight"),
                                                 take(attn + "v_proj.weight")]),
            ours + "attn.out.weight": take(attn + "o_proj.weight"),
            ours + "ffn_norm.weight": take(theirs + "post_attention_layernorm.weight"),
            ours + "ffn.gate_up.weight": torch.cat([take(mlp + "gate_proj.weight"), take(mlp + "up_proj.weight")]),
            ours + "ffn.down.weight": take(mlp + "down_proj.weight"),
        })
    return state


def config_dict(shape: ModelShape, objective: str, seq_len: int, dtype: str, plmscale_info: dict) -> dict:
    """config.json: a transformers LlamaConfig for a causal model; the same numbers, no architecture, for MLM.

    Written by hand so that exporting needs no transformers. rope_theta is given both at the top level
    (transformers 4.x) and in rope_parameters (5.x).
    """
    config = {
        "vocab_size": VOCAB_SIZE, "hidden_size": shape.d_model, "intermediate_size": shape.ffn_dim,
        "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.heads, "head_dim": shape.head_dim, "hidden_act": "silu",
        "max_position_embeddings": int(seq_len), "rms_norm_eps": RMS_NORM_EPS, "rope_theta": ROPE_THETA,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
        "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": True,
        "initializer_range": 0.02, "pretraining_tp": 1,
        "bos_token_id": CLS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID, "mask_token_id": MASK_ID,
        "torch_dtype": dtype, "dtype": dtype,
        "plmscale": {"objective": objective, "seq_len": int(seq_len), **plmscale_info},
    }
    if objective == "clm":
        config.update({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "use_cache": True})
    else:
        config.update({"architectures": [], "is_causal": False})
    return config


def shape_from_config(config: dict, where: str = "config.json") -> ModelShape:
    try:
        shape = ModelShape(layers=int(config["num_hidden_layers"]), d_model=int(config["hidden_size"]),
                           heads=int(config["num_attention_heads"]), ffn_dim=int(config["intermediate_size"]))
    except (KeyError, TypeError, ValueError) as error:
        raise PlmscaleError(f"{where}: not a plmscale export config ({error}); export the run again") from None
    expected = {"vocab_size": VOCAB_SIZE, "num_key_value_heads": shape.heads, "tie_word_embeddings": True,
                "attention_bias": False, "mlp_bias": False}
    for key, value in expected.items():
        if key in config and config[key] != value:
            raise PlmscaleError(f"{where}: {key} is {config[key]!r}, plmscale's model needs {value!r}; this "
                                f"is not a plmscale export")
    return shape
