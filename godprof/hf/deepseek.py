"""DeepSeek-V2/V3: MLA attention, fine-grained routed experts plus shared experts.

What is read, and where each quirk comes from in transformers' modelling code:

- deepseek_v2 / deepseek_v3: MLA (``q_lora_rank`` null = full q projection), ``n_shared_experts``
  shared experts, dense MLP on the first ``first_k_dense_replace`` layers and, following DeepSeek's
  reference code, on layers with ``i % moe_layer_freq != 0`` (transformers ignores
  ``moe_layer_freq``; every released config has 1). DeepSeek-V3's multi-token-prediction layers
  (``num_nextn_predict_layers``) are not part of the causal LM and are not counted.
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config


def _deepseek(c: Config, kind: str) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    act = c.activation("hidden_act", "silu")
    if c.bool("mlp_bias", False):
        c.bad(
            "mlp_bias",
            "biased DeepSeek MLPs are not supported (shared experts would carry biases the routed ones lack)",
        )
    mla: dict[str, Any] = {
        "type": "mla",
        "num_heads": c.int("num_attention_heads"),
        "q_lora_rank": c.opt_int("q_lora_rank", 1536),
        "kv_lora_rank": c.int("kv_lora_rank", 512),
        "qk_nope_head_dim": c.int("qk_nope_head_dim", 128),
        "qk_rope_head_dim": c.int("qk_rope_head_dim", 64),
        "v_head_dim": c.int("v_head_dim", 128),
    }
    if c.bool("attention_bias", False):
        mla["bias"] = True
    mla["rope_theta"] = c.rope_theta(10000.0)
    routed = c.opt_int("n_routed_experts", 64 if kind == "deepseek_v2" else 256)
    first_dense = c.int("first_k_dense_replace", 0 if kind == "deepseek_v2" else 3, minimum=0)
    freq = c.int("moe_layer_freq", 1)
    layer_ffns = ["moe" if routed and i >= first_dense and i % freq == 0 else "mlp" for i in range(n)]
    ffns: dict[str, dict[str, Any]] = {}
    if "mlp" in layer_ffns:
        ffns["mlp"] = h.mlp(c.int("intermediate_size"), activation=act)
    if "moe" in layer_ffns:
        assert routed is not None
        inter = c.int("moe_intermediate_size")
        shared = c.opt_int("n_shared_experts", 2 if kind == "deepseek_v2" else 1, minimum=0) or 0
        ffns["moe"] = h.moe(routed, c.int("num_experts_per_tok"), inter, activation=act, shared=shared)
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    return h.doc(
        "moe" if "moe" in ffns else "dense",
        model,
        {"mla": mla},
        ffns,
        ["mla"] * n,
        layer_ffns,
        "MLA attention, fine-grained routed experts plus shared experts, dense first layers",
    )


def _deepseek_v2(c: Config) -> dict[str, Any]:
    return _deepseek(c, "deepseek_v2")


def _deepseek_v3(c: Config) -> dict[str, Any]:
    return _deepseek(c, "deepseek_v3")


MODEL_TYPES = {
    "deepseek_v2": _deepseek_v2,
    "deepseek_v3": _deepseek_v3,
}
