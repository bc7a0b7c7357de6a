"""Kimi Linear (Moonshot AI): Kimi Delta Attention (``type: kda``) in most layers, MLA (full attention,
NoPE) in the rest, a dense MLP first and MoE with shared experts after.

What is read, and where each quirk comes from in transformers' modelling code (models/kimi_linear):

- Which layers are KDA: ``layer_types`` when given (``full_attention`` / ``linear_attention``), else the
  checkpoint's ``linear_attn_config.full_attn_layers`` and ``kda_layers`` (1-indexed; a layer in neither
  list is built as KDA, as transformers does), else every 4th layer from layer 4 on (``i and i % 4 == 0``)
  is full attention.
- KDA: ``linear_attn_config.num_heads`` / ``head_dim`` / ``short_conv_kernel_size`` (or the top-level
  ``linear_num_heads``, ``linear_head_dim``, ``linear_conv_kernel_dim``; defaults 32, 128, 4). Its two
  low-rank gates have rank head_dim (KimiLinearForgetGate's f_a_proj, g_a_proj).
- MLA: ``q_lora_rank`` (null: one q_proj, the default), ``kv_lora_rank``, ``qk_nope_head_dim``,
  ``qk_rope_head_dim``, ``v_head_dim``, ``attention_bias``. transformers applies no rotary to the
  ``qk_rope_head_dim`` key part (``mla_use_nope``): the entry says ``rope: false``.
- Dense MLP (``intermediate_size``) on the layers ``mlp_layer_types`` marks ``dense``, by default the
  first ``first_k_dense_replace`` (1); ``moe_layer_freq`` is not read (transformers does not).
- MoE: ``num_experts`` (alias ``num_local_experts``, 256), ``num_experts_per_token`` (alias
  ``num_experts_per_tok``, 8), ``moe_intermediate_size``, ``num_shared_experts`` (alias
  ``n_shared_experts``, 1: one MLP of num_shared x moe_intermediate_size). Routing as KimiLinearTopkRouter:
  sigmoid scores plus the ``e_score_correction_bias`` buffer choose the experts, group-limited when
  ``num_expert_group`` (alias ``n_group``) > 1, renormalised when ``moe_renormalize`` (alias
  ``norm_topk_prob``), scaled by ``routed_scaling_factor`` (2.446): ``common.sigmoid_routing``.
  The checkpoint's key names are transformers' ``attribute_map`` targets; both spellings are read.
- The head is never tied: KimiLinearForCausalLM declares no tied weights, whatever
  ``tie_word_embeddings`` says.
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config

# transformers' attribute_map for KimiLinearConfig: the name sigmoid_routing reads -> the checkpoint's
_ALIASES = {
    "norm_topk_prob": "moe_renormalize",
    "n_group": "num_expert_group",
    "num_local_experts": "num_experts",
    "num_experts_per_tok": "num_experts_per_token",
    "n_shared_experts": "num_shared_experts",
    "max_position_embeddings": "model_max_length",
}
_FULL, _LINEAR = "full_attention", "linear_attention"


def _layer_types(c: Config, lin: dict[str, Any], n: int) -> list[str]:
    types = c.str_list("layer_types")
    if types is not None:
        if len(types) != n or set(types) - {_FULL, _LINEAR}:
            c.bad("layer_types", f"expected {n} entries of {_FULL!r} or {_LINEAR!r}, got {types!r}")
        return types
    if "full_attn_layers" in lin and "kda_layers" in lin:
        full = lin["full_attn_layers"]
        if not isinstance(full, list) or any(not isinstance(i, int) or not 1 <= i <= n for i in full):
            c.bad("linear_attn_config.full_attn_layers", f"expected 1-indexed layer numbers in 1..{n}, got {full!r}")
        return [_FULL if i + 1 in full else _LINEAR for i in range(n)]
    return [_FULL if i and i % 4 == 0 else _LINEAR for i in range(n)]


def _mlp_types(c: Config, n: int) -> list[str]:
    types = c.str_list("mlp_layer_types")
    if types is None:
        dense = min(c.int("first_k_dense_replace", 1, minimum=0), n)
        types = ["dense"] * dense + ["sparse"] * (n - dense)
    if len(types) != n or set(types) - {"dense", "sparse"}:
        c.bad("mlp_layer_types", f"expected {n} entries of 'dense' or 'sparse', got {types!r}")
    return types


def _kimi_linear(c0: Config) -> dict[str, Any]:
    data = dict(c0.data)
    for ours, theirs in _ALIASES.items():
        if theirs in data:
            data[ours] = data[theirs]
    c = Config(data, c0.source, c0.prefix)
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    act = c.activation("hidden_act", "silu")
    lin = data.get("linear_attn_config") or {}
    if not isinstance(lin, dict):
        c.bad("linear_attn_config", f"expected a mapping, got {lin!r}")
    lc = Config(lin, c.source, c.prefix + "linear_attn_config.")
    kda = {
        "type": "kda",
        "num_heads": lc.int("num_heads", c.int("linear_num_heads", 32)),
        "head_dim": lc.int("head_dim", c.int("linear_head_dim", 128)),
    }
    conv = lc.int("short_conv_kernel_size", c.int("linear_conv_kernel_dim", 4))
    if conv != 4:
        kda["d_conv"] = conv
    mla: dict[str, Any] = {
        "type": "mla",
        "num_heads": c.int("num_attention_heads", 32),
        "q_lora_rank": c.opt_int("q_lora_rank", None),
        "kv_lora_rank": c.int("kv_lora_rank", 512),
        "qk_nope_head_dim": c.int("qk_nope_head_dim", 128),
        "qk_rope_head_dim": c.int("qk_rope_head_dim", 64),
        "v_head_dim": c.int("v_head_dim", 128),
        "rope": False,
    }
    if c.bool("attention_bias", False):
        mla["bias"] = True
    types = _layer_types(c, lin, n)
    layer_mixers = ["mla" if t == _FULL else "kda" for t in types]
    mixers = {k: v for k, v in (("kda", kda), ("mla", mla)) if k in layer_mixers}
    layer_ffns = ["moe" if t == "sparse" else "mlp" for t in _mlp_types(c, n)]
    ffns: dict[str, dict[str, Any]] = {}
    if "mlp" in layer_ffns:
        ffns["mlp"] = h.mlp(c.int("intermediate_size", 9216), activation=act)
    if "moe" in layer_ffns:
        inter = c.int("moe_intermediate_size", 1024)
        shared = c.int("n_shared_experts", 1, minimum=0)
        ffns["moe"] = h.moe(
            c.int("num_local_experts", 256), c.int("num_experts_per_tok", 8), inter, activation=act, shared=shared
        )
        h.sigmoid_routing(c, ffns["moe"], groups=(1, 1), scale=2.446)
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    model["tie_embeddings"] = False  # KimiLinearForCausalLM ties nothing (_tied_weights_keys = {})
    attn, linear = "mla" in mixers, "kda" in mixers
    family = "hybrid" if attn and linear else "linear" if linear else "moe" if "moe" in ffns else "dense"
    nope = " (NoPE)" if attn else ""
    return h.doc(
        family,
        model,
        mixers,
        ffns,
        layer_mixers,
        layer_ffns,
        f"Kimi Linear: Kimi Delta Attention with MLA{nope} in {layer_mixers.count('mla')} of {n} layers, "
        "MoE with shared experts and sigmoid routing after dense first layers",
    )


MODEL_TYPES = {"kimi_linear": _kimi_linear}
