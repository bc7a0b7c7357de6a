"""Liquid AI's LFM2 hybrids: lfm2 (LFM2-350M ... 2.6B) and lfm2_moe (LFM2-8B-A1B).

What is read, and where each quirk comes from in transformers' modelling code:

- Layers (``Lfm2DecoderLayer``): each one token mixer and one FFN, each after an RMSNorm
  (``operator_norm``, ``ffn_norm``), and a final RMSNorm (named ``embedding_norm`` but applied after the
  last layer). ``layer_types`` says which layers are ``conv`` (any other name is attention, as
  ``is_attention_layer`` reads it; transformers' legacy ``attention`` means ``full_attention``). lfm2
  without ``layer_types`` takes attention on ``full_attn_idxs`` (every layer when that is absent too,
  ``Lfm2Config.__post_init__``); lfm2_moe has no such fallback (transformers needs ``layer_types``).
- Conv layers (``Lfm2ShortConv``): ``type: short_conv`` over the hidden size, ``conv_L_cache`` taps
  (default 3); ``conv_bias`` (default false) puts biases on in_proj, the conv and out_proj together.
- Attention (``Lfm2Attention``): q/k/v/out projections without biases, per-head RMSNorm on q and k
  (``q_layernorm``/``k_layernorm``), rotary over the whole head (``rope_theta`` 1e6 by default),
  ``head_dim`` = hidden / heads unless given; 32 heads and 8 KV heads by default.
- lfm2's MLP (``Lfm2MLP``: SwiGLU w1/w3/w2): ``intermediate_size`` (a legacy ``block_ff_dim`` key wins,
  as ``__post_init__`` pops it over the field) sized, when ``block_auto_adjust_ff_dim`` (default true),
  as int(2 x size / 3), then, when ``block_ffn_dim_multiplier`` is not null (default 1.0), int(multiplier x
  that) rounded up to a multiple of ``block_multiple_of`` (default 256). LFM2-1.2B: 12,288 -> 8,192.
- lfm2_moe: the first ``num_dense_layers`` (default 2) layers have a SwiGLU MLP of ``intermediate_size``
  as given (``Lfm2MoeMLP``: no auto adjustment); the rest a MoE (``Lfm2MoeSparseMoeBlock``) of
  ``num_experts`` (32) gated experts of ``moe_intermediate_size`` (1792), top ``num_experts_per_tok`` (4),
  no shared expert. Routing (``Lfm2MoeTopKRouter``): sigmoid scores; with ``use_expert_bias`` (default
  true) an ``expert_bias`` buffer (no parameters) is added to choose the experts, the weights are the
  chosen sigmoid scores, renormalised when ``norm_topk_prob`` and times ``routed_scaling_factor``.
- Both tie the head to the embeddings by default; a legacy ``tie_embedding`` key wins over
  ``tie_word_embeddings`` (``__post_init__`` pops it).

Left out: rope scaling (no parameters).
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config

CONV, ATTN = "conv", "full_attention"


def _layer_types(c: Config, n: int, fallback: bool) -> list[str]:
    """Each layer's kind, ``conv`` or ``full_attention``, as transformers decides it."""
    raw = c.str_list("layer_types")
    if raw is None:
        if not fallback:
            c.bad("layer_types", "missing; transformers' Lfm2MoeConfig needs the per-layer list")
        attn = set(c.int_list("full_attn_idxs") if c.data.get("full_attn_idxs") is not None else range(n))
        return [ATTN if i in attn else CONV for i in range(n)]
    types = [ATTN if t == "attention" else t for t in raw]
    bad = sorted(set(types) - {CONV, ATTN})
    if bad:
        c.bad("layer_types", f"unsupported layer types {bad}; supported: {CONV}, {ATTN}")
    if len(types) != n:
        c.bad("layer_types", f"has {len(types)} entries for {n} layers")
    return types


def _tie(c: Config) -> bool:
    if c.data.get("tie_embedding") is not None:
        return c.bool("tie_embedding", True)
    return c.bool("tie_word_embeddings", True)


def lfm2_ffn_size(c: Config, default: int) -> int:
    """Lfm2MLP's width from the config (see the module docstring)."""
    size = c.int(("block_ff_dim", "intermediate_size"), default)
    if c.bool("block_auto_adjust_ff_dim", True):
        size = int(2 * size / 3)
        if c.data.get("block_ffn_dim_multiplier", 1.0) is not None:
            mult = c.float("block_ffn_dim_multiplier", 1.0)
            m = c.int("block_multiple_of", 256)
            size = m * ((int(mult * size) + m - 1) // m)
    return size


def _mixers(c: Config, hidden: int, types: list[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    mixers: dict[str, dict[str, Any]] = {}
    if CONV in types:
        conv: dict[str, Any] = {"type": "short_conv", "d_conv": c.int("conv_L_cache", 3)}
        if c.bool("conv_bias", False):
            conv["bias"] = True
        mixers["conv"] = conv
    if ATTN in types:
        mixers["attn"] = h.attention(c, hidden, rope_theta_default=1000000.0, qk_norm=True)
    return mixers, ["conv" if t == CONV else "attn" for t in types]


def _family(types: list[str], moe: bool) -> str:
    if CONV in types and ATTN in types:
        return "hybrid"
    if moe:
        return "moe"
    return "linear" if CONV in types else "dense"


def _lfm2(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size", 2560)
    n = c.int("num_hidden_layers", 32)
    types = _layer_types(c, n, fallback=True)
    mixers, layer_mixers = _mixers(c, hidden, types)
    inter = lfm2_ffn_size(c, 12288)
    model = h.model(c, hidden=hidden, layers=n, tie_default=True)
    model["tie_embeddings"] = _tie(c)
    desc = (f"LFM2: {types.count(CONV)} gated short-convolution and {types.count(ATTN)} attention layers "
            f"(per-head qk norm), SwiGLU MLP of {inter}")  # fmt: skip
    return h.doc(_family(types, False), model, mixers, {"mlp": h.mlp(inter)}, layer_mixers, None, desc)


def _lfm2_moe(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size", 2048)
    n = c.int("num_hidden_layers", 32)
    types = _layer_types(c, n, fallback=False)
    mixers, layer_mixers = _mixers(c, hidden, types)
    dense = min(c.int("num_dense_layers", 2, minimum=0), n)
    ffns: dict[str, dict[str, Any]] = {}
    if dense:
        ffns["mlp"] = h.mlp(c.int("intermediate_size", 7168))
    if dense < n:
        moe = h.moe(c.int("num_experts", 32), c.int("num_experts_per_tok", 4), c.int("moe_intermediate_size", 1792))
        h.sigmoid_routing(c, moe, groups=(1, 1), scale=1.0)
        if not c.bool("use_expert_bias", True):
            moe["score_bias"] = "none"
        ffns["moe"] = moe
    layer_ffns = ["mlp" if i < dense else "moe" for i in range(n)]
    model = h.model(c, hidden=hidden, layers=n, tie_default=True)
    model["tie_embeddings"] = _tie(c)
    desc = (f"LFM2-MoE: {types.count(CONV)} gated short-convolution and {types.count(ATTN)} attention layers "
            f"(per-head qk norm); {dense} dense SwiGLU layers, then MoE with sigmoid routing")  # fmt: skip
    return h.doc(_family(types, dense < n), model, mixers, ffns, layer_mixers, layer_ffns, desc)


MODEL_TYPES = {
    "lfm2": _lfm2,
    "lfm2_moe": _lfm2_moe,
}
