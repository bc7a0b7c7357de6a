"""Sparse MoE decoders with GQA attention: mixtral, qwen2_moe, qwen3_moe.

What is read, and where each quirk comes from in transformers' modelling code:

- mixtral: the attention of ``godprof.hf.llama`` (GQA, an optional window on every layer) with
  ``num_local_experts`` routed SwiGLU experts, top ``num_experts_per_tok``.
- qwen2_moe / qwen3_moe: routed experts on layers where ``(i + 1) % decoder_sparse_step == 0`` and
  ``i`` is not in ``mlp_only_layers`` (a dense MLP of ``intermediate_size`` otherwise); Qwen2-MoE's
  always-on shared expert of ``shared_expert_intermediate_size`` with its sigmoid gate.
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config


def _mixtral(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    window = c.opt_int("sliding_window")
    attn = h.attention(c, hidden, rope_theta_default=1e6)
    mixers, layer_mixers = h.split_attention(attn, window, [window is not None] * n)
    experts = c.int(("num_local_experts", "num_experts"), 8)
    moe = h.moe(
        experts,
        c.int("num_experts_per_tok", 2),
        c.int("intermediate_size"),
        activation=c.activation("hidden_act", "silu"),
    )
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    return h.doc(
        "moe", model, mixers, {"moe": moe}, layer_mixers, None, "sparse MoE decoder (top-k routed SwiGLU experts)"
    )


def _qwen_moe(c: Config, kind: str) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    act = c.activation("hidden_act", "silu")
    if kind == "qwen2_moe":
        attn = h.attention(c, hidden, qkv_bias=c.bool("qkv_bias", True))
        experts = c.int(("num_experts", "num_local_experts"), 60, minimum=0)
        top_k = c.int("num_experts_per_tok", 4)
        inter = c.int("moe_intermediate_size", 1408)
        shared_inter = c.int("shared_expert_intermediate_size", 5632)
        moe = h.moe(experts or 1, top_k, inter, activation=act, shared=1, shared_inter=shared_inter, shared_gate=True)
    else:
        bias = c.bool("attention_bias", False)
        attn = h.attention(c, hidden, qkv_bias=bias, o_bias=bias, qk_norm=True)
        experts = c.int(("num_experts", "num_local_experts"), 128, minimum=0)
        top_k = c.int("num_experts_per_tok", 8)
        moe = h.moe(experts or 1, top_k, c.int("moe_intermediate_size", 768), activation=act)
    if not c.bool("norm_topk_prob", False):  # transformers' default: the top-k weights are not renormalised
        moe["norm_topk_prob"] = False
    window, sliding = h.sliding_layers(c, n)
    mixers, layer_mixers = h.split_attention(attn, window, sliding)
    step = c.int("decoder_sparse_step", 1)
    mlp_only = set(c.int_list("mlp_only_layers"))
    layer_ffns = ["moe" if (i not in mlp_only and experts > 0 and (i + 1) % step == 0) else "mlp" for i in range(n)]
    ffns: dict[str, dict[str, Any]] = {}
    if "mlp" in layer_ffns:
        ffns["mlp"] = h.mlp(c.int("intermediate_size"), activation=act)
    if "moe" in layer_ffns:
        ffns["moe"] = moe
    family = "moe" if "moe" in ffns else "dense"
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    what = "shared expert with a sigmoid gate" if kind == "qwen2_moe" else "no shared expert, q/k norms"
    return h.doc(family, model, mixers, ffns, layer_mixers, layer_ffns, f"MoE decoder ({what})")


def _qwen2_moe(c: Config) -> dict[str, Any]:
    return _qwen_moe(c, "qwen2_moe")


def _qwen3_moe(c: Config) -> dict[str, Any]:
    return _qwen_moe(c, "qwen3_moe")


MODEL_TYPES = {
    "mixtral": _mixtral,
    "qwen2_moe": _qwen2_moe,
    "qwen3_moe": _qwen3_moe,
}
