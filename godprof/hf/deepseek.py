"""DeepSeek-V2/V3/V3.2: MLA attention (V3.2: DeepSeek Sparse Attention), fine-grained routed experts plus
shared experts.

What is read, and where each quirk comes from in transformers' modelling code:

- deepseek_v2 / deepseek_v3: MLA (``q_lora_rank`` null = full q projection), ``n_shared_experts``
  shared experts, dense MLP on the first ``first_k_dense_replace`` layers and, following DeepSeek's
  reference code, on layers with ``i % moe_layer_freq != 0`` (transformers ignores
  ``moe_layer_freq``; every released config has 1). DeepSeek-V3's multi-token-prediction layers
  (``num_nextn_predict_layers``) are not part of the causal LM: they become the spec's ``mtp`` section,
  counted apart.
- deepseek_v32 (DeepSeek-V3.2-Exp, DeepSeek-V3.2; transformers' DeepseekV32Config): DeepSeek-V3 with a
  lightning indexer in every attention layer, written as ``type: dsa`` with ``index_n_heads`` (64),
  ``index_head_dim`` (128) and ``index_topk`` (2048). q always goes through ``q_lora_rank`` (1536; null
  is an error: transformers has no full-q path and the indexer reads the q latent). Dense MLPs on the
  layers ``mlp_layer_types`` marks ``dense``, by default the first ``first_k_dense_replace`` (3);
  ``moe_layer_freq`` is not read (neither transformers nor DeepSeek's V3.2 reference has it).
  ``num_experts`` is read as ``n_routed_experts`` (transformers' alias). MTP layers are not counted.
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
    v32 = kind == "deepseek_v32"
    mla: dict[str, Any] = {
        "type": "dsa" if v32 else "mla",
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
    if v32:
        if mla["q_lora_rank"] is None:
            c.bad("q_lora_rank", "DeepSeek-V3.2 needs a q latent: its indexer reads it (transformers has no full q)")
        mla["index_n_heads"] = c.int("index_n_heads", 64)
        mla["index_head_dim"] = c.int("index_head_dim", 128)
        mla["index_topk"] = c.int("index_topk", 2048)
    default_routed = {"deepseek_v2": 64, "deepseek_v3": 256, "deepseek_v32": 256}[kind]
    alias = v32 and c.data.get("num_experts") is not None  # transformers' DeepseekV32Config reroutes it
    routed = c.opt_int("num_experts" if alias else "n_routed_experts", default_routed)
    if v32:
        layer_ffns = _v32_layer_ffns(c, n, routed)
    else:
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
        if kind != "deepseek_v2":  # V2 routes by softmax (its group-limited greedy variant is not modelled)
            h.sigmoid_routing(c, ffns["moe"], groups=(8, 4), scale=2.5)
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    name = "dsa" if v32 else "mla"
    what = "DeepSeek Sparse Attention (MLA plus a lightning indexer)" if v32 else "MLA attention"
    doc = h.doc(
        "moe" if "moe" in ffns else "dense",
        model,
        {name: mla},
        ffns,
        [name] * n,
        layer_ffns,
        f"{what}, fine-grained routed experts plus shared experts, dense first layers",
    )
    mtp = c.int("num_nextn_predict_layers", 0, minimum=0)
    if mtp:  # DeepSeek's MTP block: one more layer like the last one (counted apart: transformers omits it)
        doc["mtp"] = {"layers": mtp, "mixer": name, "ffn": layer_ffns[-1]}
    return doc


def _v32_layer_ffns(c: Config, n: int, routed: int | None) -> list[str]:
    """transformers' DeepseekV32Config.mlp_layer_types: given, or the first first_k_dense_replace dense."""
    types = c.str_list("mlp_layer_types")
    if types is None:
        dense = min(c.int("first_k_dense_replace", 3, minimum=0), n)
        types = ["dense"] * dense + ["sparse"] * (n - dense)
    if len(types) != n or set(types) - {"dense", "sparse"}:
        c.bad("mlp_layer_types", f"expected {n} entries of 'dense' or 'sparse', got {types!r}")
    if "sparse" in types and not routed:
        c.bad("n_routed_experts", "sparse layers need routed experts")
    return ["moe" if t == "sparse" else "mlp" for t in types]


def _deepseek_v2(c: Config) -> dict[str, Any]:
    return _deepseek(c, "deepseek_v2")


def _deepseek_v3(c: Config) -> dict[str, Any]:
    return _deepseek(c, "deepseek_v3")


def _deepseek_v32(c: Config) -> dict[str, Any]:
    return _deepseek(c, "deepseek_v32")


MODEL_TYPES = {
    "deepseek_v2": _deepseek_v2,
    "deepseek_v3": _deepseek_v3,
    "deepseek_v32": _deepseek_v32,
}
