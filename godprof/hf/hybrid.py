"""Hybrids whose config names each block's kind: nemotron_h (Nemotron-H) and granitemoehybrid
(Granite-4.0-H).

What is read, and where each quirk comes from in transformers' modelling code:

- nemotron_h (``models/nemotron_h``): each block is ONE of Mamba-2 (``M``), attention (``*``), MLP (``-``)
  or MoE (``E``), after one RMSNorm (``NemotronHBlock``), from ``layers_block_type`` (``layer_types``)
  or the older ``hybrid_override_pattern`` string; ``num_hidden_layers`` is ignored, as transformers
  does. godprof writes an MLP or MoE block as a ``type: none`` mixer with that FFN, and a Mamba or
  attention block as that mixer with a ``type: none`` FFN: one norm each. Mamba-2: ``mamba_num_heads`` x
  ``mamba_head_dim`` wide (``expand`` is not read), ``n_groups`` groups (its gated RMSNorm is grouped
  too, d_inner / n_groups per group, like godprof's build), ``use_bias`` on in_proj and out_proj
  (``mamba_proj_bias`` is not read), ``use_conv_bias``; the legacy ``mamba_n_groups``, ``mamba_d_conv``,
  ``mamba_conv_bias``, ``mamba_chunk_size`` keys win when present. Attention: no rotary, no biases
  whatever ``attention_bias`` says, ``head_dim`` defaults to 128 and ``num_key_value_heads`` to 8
  (``attention_head_dim``, a remote-code key, is not read). MLP: plain up/down with ``mlp_hidden_act``
  (``relu2``: squared ReLU), ``mlp_bias``. MoE: plain experts and one plain shared expert
  (``moe_shared_expert_intermediate_size``), sigmoid routing with a score-correction buffer, groups and
  ``routed_scaling_factor`` (DeepSeek-V3's); ``moe_latent_size`` projections are not supported. The head
  is never tied (``NemotronHForCausalLM._tied_weights_keys`` is empty).
- granitemoehybrid (``models/granitemoehybrid``): ``layer_types`` ``mamba``/``linear_attention`` or
  ``attention``/``full_attention`` (all Mamba when absent), each layer mixer + FFN with two RMSNorms.
  Mamba-2 as Bamba's mixer (``mamba_*`` keys); attention with ``attention_bias`` on q, k, v and o,
  rotary only with ``position_embedding_type: rope``, softmax scale ``attention_multiplier``; MoE
  (``num_local_experts`` > 0) of gated experts, routed by a softmax over the top-k logits, beside one gated
  shared MLP of ``shared_intermediate_size``, or that shared MLP alone when there are no experts.
  ``embedding_multiplier`` and ``logits_scaling`` (the logits are divided by it) are written to the
  model section; ``residual_multiplier`` (scales each branch before its residual add) has no parameters
  and no spec key: it is named in the description, and the build leaves it out.

Left out: MTP layers of nemotron_h (``num_nextn_predict_layers``: transformers' causal LM does not build
them), quantization configs, rope scaling (no parameters).
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config
from godprof.hf.ssm import _mamba2_mixer

# transformers' legacy layer-type names (``configuration_utils._LEGACY_LAYER_TYPE_REMAP``)
_LEGACY = {"mamba": "linear_attention", "attention": "full_attention"}
_PATTERN = {"M": "linear_attention", "*": "full_attention", "-": "mlp", "E": "moe"}
MAMBA, ATTN, MLP, MOE = "linear_attention", "full_attention", "mlp", "moe"


def _activation(c: Config, key: str, default: str) -> str:
    """A config's activation name in godprof's terms; ``relu2`` (squared ReLU) kept as is."""
    name = c.str(key, default)
    if name == "relu2":
        return "relu2"
    return c.activation(key, default)


def _family(has_attn: bool, has_ssm: bool, has_moe: bool) -> str:
    if has_attn and has_ssm:
        return "hybrid"
    if has_moe:
        return "moe"
    return "ssm" if has_ssm else "dense"


def _block_types(c: Config, allowed: set[str], key: str, default: list[str]) -> list[str]:
    """A layer-type list with the legacy names mapped, each checked against ``allowed``."""
    raw = c.str_list(key)
    types = [_LEGACY.get(t, t) for t in (raw if raw is not None else default)]
    bad = sorted(set(types) - allowed)
    if bad:
        c.bad(key, f"unsupported layer types {bad}; supported: {', '.join(sorted(allowed))}")
    if not types:
        c.bad(key, "names no layers")
    return types


def _nemotron_types(c: Config) -> list[str]:
    allowed = {MAMBA, ATTN, MLP, MOE}
    for key in ("layers_block_type", "layer_types"):
        if c.data.get(key) is not None:
            return _block_types(c, allowed, key, [])
    pattern = c.data.get("hybrid_override_pattern")
    if pattern is None:
        return [MAMBA, MOE, ATTN, MLP]  # NemotronHConfig's default layers_block_type
    if not isinstance(pattern, str) or not pattern or set(pattern) - set(_PATTERN):
        c.bad("hybrid_override_pattern", f"expected a string of {', '.join(_PATTERN)}, got {pattern!r}")
    return [_PATTERN[ch] for ch in pattern]


def _nemotron_mamba(c: Config) -> dict[str, Any]:
    heads, head_dim = c.int("mamba_num_heads", 128), c.int("mamba_head_dim", 64)
    groups = c.int(("mamba_n_groups", "n_groups"), 8)
    if heads % groups:
        c.bad("n_groups", f"{heads} Mamba heads do not split into {groups} groups")
    d: dict[str, Any] = {
        "type": "mamba2", "d_inner": heads * head_dim, "d_state": c.int("ssm_state_size", 128),
        "d_conv": c.int(("mamba_d_conv", "conv_kernel"), 4), "head_dim": head_dim, "n_groups": groups,
        "chunk_size": c.int(("mamba_chunk_size", "chunk_size"), 128),
    }  # fmt: skip
    if not c.bool(("mamba_conv_bias", "use_conv_bias"), True):
        d["conv_bias"] = False
    if c.bool("use_bias", False):
        d["proj_bias"] = True
    return d


def _nemotron_h(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    types = _nemotron_types(c)
    n = len(types)
    act = _activation(c, "mlp_hidden_act", "relu2")
    mixers: dict[str, dict[str, Any]] = {}
    ffns: dict[str, dict[str, Any]] = {}
    if MAMBA in types:
        mixers["mamba"] = _nemotron_mamba(c)
    if ATTN in types:
        attn = h.attention(c, hidden, head_dim_default=128, rope=False)
        if "num_key_value_heads" not in c.data:  # NemotronHConfig's default is 8 (null means num_heads)
            kv = 8
            if attn["num_heads"] % kv:
                c.bad("num_key_value_heads", f"absent (8 by default): {attn['num_heads']} heads are not a multiple")
            attn["num_kv_heads"] = kv
        mixers["attn"] = attn
    if MLP in types or MOE in types:
        mixers["none"] = {"type": "none"}
    if MAMBA in types or ATTN in types:
        ffns["none"] = {"type": "none"}
    if MLP in types:
        ffns["mlp"] = h.mlp(c.int("intermediate_size", 21504), gated=False, activation=act,
                            bias=c.bool("mlp_bias", False))  # fmt: skip
    if MOE in types:
        if c.data.get("moe_latent_size") is not None:
            c.bad("moe_latent_size", "latent expert projections are not supported")
        if c.bool("mlp_bias", False):
            c.bad("mlp_bias", "MoE blocks with biased shared experts are not supported")
        inter = c.int("moe_intermediate_size", 7688)
        moe = h.moe(
            c.int(("n_routed_experts", "num_local_experts"), 8), c.int("num_experts_per_tok", 2), inter,
            activation=act, shared=1, shared_inter=c.int("moe_shared_expert_intermediate_size", 7688),
        )  # fmt: skip
        moe["gated"] = False
        h.sigmoid_routing(c, moe, groups=(1, 1), scale=1.0)
        ffns["moe"] = moe
    mixer_of = {MAMBA: "mamba", ATTN: "attn", MLP: "none", MOE: "none"}
    ffn_of = {MAMBA: "none", ATTN: "none", MLP: "mlp", MOE: "moe"}
    tie = c.bool("tie_word_embeddings", False)
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    model["tie_embeddings"] = False  # NemotronHForCausalLM ties nothing, whatever the config says
    note = " (tie_word_embeddings is set, but transformers keeps the head apart)" if tie else ""
    counts = {t: types.count(t) for t in (MAMBA, ATTN, MLP, MOE) if t in types}
    what = ", ".join(f"{k} {mixer_of[t] if t in (MAMBA, ATTN) else ffn_of[t]}" for t, k in counts.items())
    desc = f"Nemotron-H: one Mamba-2, attention, MLP or MoE block per layer, one RMSNorm each ({what}){note}"
    return h.doc(
        _family(ATTN in types, MAMBA in types, MOE in types), model, mixers, ffns,
        [mixer_of[t] for t in types], [ffn_of[t] for t in types], desc,
    )  # fmt: skip


def _granitemoehybrid(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers", 32)
    types = _block_types(c, {MAMBA, ATTN}, "layer_types", [MAMBA] * n)
    if len(types) != n:
        c.bad("layer_types", f"has {len(types)} entries for {n} layers")
    bias = c.bool("attention_bias", False)
    rope = c.data.get("position_embedding_type") == "rope"
    mixers: dict[str, dict[str, Any]] = {}
    if ATTN in types:
        attn = h.attention(c, hidden, qkv_bias=bias, o_bias=bias, rope=rope)
        scale = c.float("attention_multiplier", 1.0)
        if scale != attn["head_dim"] ** -0.5:
            attn["scale"] = scale
        mixers["attn"] = attn
    if MAMBA in types:
        mixers["mamba2"] = _mamba2_mixer(c, hidden, bamba=True)
    act = c.activation("hidden_act", "silu")
    shared_inter = c.int("shared_intermediate_size", 1024)
    experts = c.int("num_local_experts", 8, minimum=0)
    if experts > 0:
        ffn = h.moe(experts, c.int("num_experts_per_tok", 2), c.int("intermediate_size", 11008), activation=act,
                    shared=1, shared_inter=shared_inter)  # fmt: skip
        ffn["routing"] = "topk_softmax"
    else:
        ffn = h.mlp(shared_inter, activation=act)
    extra: dict[str, Any] = {}
    emb = c.float("embedding_multiplier", 1.0)
    if emb != 1.0:
        extra["embedding_multiplier"] = emb
    logits = c.float("logits_scaling", 1.0)
    if logits != 1.0:
        extra["logit_scale"] = 1.0 / logits
    model = h.model(c, hidden=hidden, layers=n, tie_default=False, **extra)
    residual = c.float("residual_multiplier", 1.0)
    note = f"; residual_multiplier {residual} scales each branch (no parameters, not built)" if residual != 1.0 else ""
    rope_note = "rotary" if rope else "no positional encoding"
    desc = f"Granite-4.0-H: Mamba-2 with attention ({rope_note}) and MoE + shared MLP in every layer{note}"
    layer_mixers = ["attn" if t == ATTN else "mamba2" for t in types]
    return h.doc(
        _family(ATTN in types, MAMBA in types, experts > 0), model, mixers, {ffn["type"]: ffn},
        layer_mixers, None, desc,
    )  # fmt: skip


MODEL_TYPES = {
    "nemotron_h": _nemotron_h,
    "granitemoehybrid": _granitemoehybrid,
}
