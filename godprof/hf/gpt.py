"""GPT-2, GPT-NeoX and GPT-J: LayerNorm, plain GELU MLPs, learned or partial rotary positions.

What is read, and where each quirk comes from in transformers' modelling code:

- gpt2 / gpt_neox / gptj: LayerNorm with bias, plain GELU MLPs with biases; GPT-2's learned
  positions and tied head; GPT-NeoX's partial rotary (``rotary_pct``) and parallel residual with two
  norms; GPT-J's parallel block with one shared norm, partial ``rotary_dim`` and lm_head bias.
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config


def _gpt2(c: Config) -> dict[str, Any]:
    hidden = c.int(("n_embd", "hidden_size"))
    n = c.int(("n_layer", "num_hidden_layers"))
    heads = c.int(("n_head", "num_attention_heads"))
    if hidden % heads:
        c.bad("n_head", f"n_embd {hidden} is not divisible by {heads} heads")
    attn = {
        "type": "attention", "num_heads": heads, "num_kv_heads": heads, "head_dim": hidden // heads,
        "qkv_bias": True, "o_bias": True, "rope": False,
    }  # fmt: skip
    if c.bool("add_cross_attention", False):
        c.bad("add_cross_attention", "cross-attention (encoder-decoder GPT-2) is not supported")
    inner = c.opt_int("n_inner") or 4 * hidden
    model = h.model(
        c,
        hidden=hidden,
        layers=n,
        tie_default=True,
        norm="layernorm",
        max_pos_key=("n_positions", "max_position_embeddings"),
        position_embedding="learned",
    )
    model.setdefault("max_position_embeddings", 1024)
    ffns = {"mlp": h.mlp(inner, gated=False, activation=c.activation("activation_function", "gelu_new"), bias=True)}
    return h.doc(
        "dense", model, {"attn": attn}, ffns, ["attn"] * n, None, "GPT-2: learned positions, LayerNorm, biases"
    )


def _gpt_neox(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    bias = c.bool("attention_bias", True)
    attn = h.attention(c, hidden, kv_key=None, qkv_bias=bias, o_bias=bias, rotary_fraction=c.partial_rotary(0.25))
    model = h.model(c, hidden=hidden, layers=n, tie_default=False, norm="layernorm")
    if c.bool("use_parallel_residual", True):
        model["parallel_residual"] = True
    ffns = {
        "mlp": h.mlp(c.int("intermediate_size"), gated=False, activation=c.activation("hidden_act", "gelu"), bias=True)
    }
    return h.doc(
        "dense", model, {"attn": attn}, ffns, ["attn"] * n, None, "GPT-NeoX: partial rotary, parallel residual"
    )


def _gptj(c: Config) -> dict[str, Any]:
    hidden = c.int(("n_embd", "hidden_size"))
    n = c.int(("n_layer", "num_hidden_layers"))
    heads = c.int(("n_head", "num_attention_heads"))
    if hidden % heads:
        c.bad("n_head", f"n_embd {hidden} is not divisible by {heads} heads")
    attn: dict[str, Any] = {"type": "attention", "num_heads": heads, "num_kv_heads": heads, "head_dim": hidden // heads}
    rot = c.opt_int("rotary_dim", 64)
    if rot is not None and rot != hidden // heads:
        attn["rotary_dim"] = rot
    attn["rope_theta"] = 10000.0
    inner = c.opt_int("n_inner") or 4 * hidden
    model = h.model(
        c,
        hidden=hidden,
        layers=n,
        tie_default=False,
        norm="layernorm",
        max_pos_key=("n_positions", "max_position_embeddings"),
        parallel_residual=True,
        parallel_shared_norm=True,
        lm_head_bias=True,
    )
    ffns = {"mlp": h.mlp(inner, gated=False, activation=c.activation("activation_function", "gelu_new"), bias=True)}
    return h.doc("dense", model, {"attn": attn}, ffns, ["attn"] * n, None, "GPT-J: parallel block with one shared norm")


MODEL_TYPES = {
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "gptj": _gptj,
}
