"""Dense decoders of 2024-26: gemma3_text, phi3, olmo2, cohere2, starcoder2, smollm3, exaone4, seed_oss.

What is read, and where each quirk comes from in transformers' modelling code (keys a config leaves out
take the defaults of its transformers configuration class):

- gemma3_text (Gemma3Config's text model too, through its ``text_config``): Gemma 2's sandwich norms,
  sqrt(hidden) embedding scale and tied head, plus per-head q/k RMSNorms; local (sliding) and global
  layers from ``layer_types`` or every ``sliding_window_pattern``-th layer global (default 6: 5 local to
  1 global), local rotary at ``rope_local_base_freq`` (10k), global at ``rope_theta`` (1M); the softmax
  scale ``query_pre_attn_scalar ** -0.5``. Gemma's RMSNorm multiplies by (1 + w): the same parameters.
  Not read, as transformers' Gemma3Attention does not apply it: ``attn_logit_softcapping``; not modelled
  (no parameters): ``final_logit_softcapping`` (null in the published configs).
- phi3: fused qkv_proj and gate_up_proj (the same weights as separate q/k/v and gate/up projections),
  no biases, ``partial_rotary_factor`` (Phi-4-mini rotates 96 of 128), ``sliding_window`` on every layer
  when set, tied head when ``tie_word_embeddings`` (Phi-4-mini).
- olmo2: norms after each branch instead of before it (``post_norm``), RMSNorms over the full q and k
  projections (``qk_norm: full``).
- cohere2: one LayerNorm without bias shared by attention and MLP run in parallel, sliding-window layers
  with rotary and every ``sliding_window_pattern``-th layer (default 4) global without positions (NoPE;
  with ``sliding_window`` null no layer has a window or rotary),
  ``logit_scale``, tied head; head_dim is hidden / heads unless the file gives one (Cohere2Config sets
  hidden / heads, then the file's keys are applied over it). Its rotary pairs adjacent features
  (interleaved) where godprof's build pairs the two halves: the same parameters and FLOPs.
- starcoder2: ``use_bias`` on q/k/v/o and on the plain (ungated) MLP, LayerNorm with bias,
  ``sliding_window`` on every layer when set, tied head.
- smollm3: Llama with no rotary on the layers ``no_rope_layers`` marks 0 (default: every
  ``no_rope_layer_interval``-th layer, 4), sliding windows only with ``use_sliding_window`` on the layers
  ``layer_types`` marks, tied head.
- exaone4: ``post_norm`` blocks, per-head q/k RMSNorms; with a ``sliding_window`` the layers
  ``layer_types`` (or ``sliding_window_pattern``, every 4th global) marks are local with rotary and the
  global ones have no positions; without one every layer is global with rotary.
- seed_oss: q/k/v biases (``attention_bias``, default true) without an o bias (``attention_out_bias``),
  head_dim 128 unless given.

Left out, as everywhere in the importer: rope scaling (no parameters).
"""

from __future__ import annotations

import math
from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config

# Sizes transformers' configuration classes give a config that leaves them out (Gemma 3 wrappers' text
# configs leave out vocab_size: the 27B's embedding is 262,208 rows).
SIZE_DEFAULTS: dict[str, dict[str, int]] = {
    "gemma3_text": {"vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
                    "num_attention_heads": 8, "num_key_value_heads": 4},
    "phi3": {"vocab_size": 32064, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
             "num_attention_heads": 32},
    "olmo2": {"vocab_size": 50304, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
              "num_attention_heads": 32},
    "cohere2": {"vocab_size": 256000, "hidden_size": 8192, "intermediate_size": 22528, "num_hidden_layers": 40,
                "num_attention_heads": 64},
    "starcoder2": {"vocab_size": 49152, "hidden_size": 3072, "intermediate_size": 12288, "num_hidden_layers": 30,
                   "num_attention_heads": 24, "num_key_value_heads": 2},
    "smollm3": {"vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                "num_attention_heads": 16, "num_key_value_heads": 4},
    "exaone4": {"vocab_size": 102400, "hidden_size": 4096, "intermediate_size": 16384, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 32},
    "seed_oss": {"vocab_size": 155136, "hidden_size": 4096, "intermediate_size": 27648, "num_hidden_layers": 64,
                 "num_attention_heads": 80, "num_key_value_heads": 8},
}  # fmt: skip


def _sized(c: Config, model_type: str) -> Config:
    """``c`` with transformers' default sizes for the keys it leaves out (a null stays null)."""
    return Config({**SIZE_DEFAULTS[model_type], **c.data}, c.source, c.prefix)


def _named(per_layer: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Distinct mixer entries by name and each layer's name; a single entry is called ``attn``."""
    mixers: dict[str, dict[str, Any]] = {}
    for name, entry in per_layer:
        assert mixers.setdefault(name, entry) == entry, name
    names = [name for name, _ in per_layer]
    if len(mixers) == 1:
        return {"attn": next(iter(mixers.values()))}, ["attn"] * len(names)
    return mixers, names


def _theta(c: Config, layer_type: str, key: str, default: float) -> float:
    """Rotary theta of one layer type: ``rope_parameters[layer_type].rope_theta`` (transformers 5 files),
    else the legacy top-level key (``rope_theta`` / ``rope_local_base_freq``)."""
    rp = c.data.get("rope_parameters")
    if isinstance(rp, dict) and isinstance(rp.get(layer_type), dict) and "rope_theta" in rp[layer_type]:
        sub = Config(rp[layer_type], c.source, f"{c.prefix}rope_parameters.{layer_type}.")
        return sub.float("rope_theta")
    if isinstance(rp, dict) and "rope_theta" in rp and key == "rope_theta":
        return c.rope_theta(default)
    return c.float(key, default)


def _without_rope(attn: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attn.items() if k not in ("rope_theta", "rotary_dim")} | {"rope": False}


def _gemma3_text(c: Config) -> dict[str, Any]:
    c = _sized(c, "gemma3_text")
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    if c.bool("use_bidirectional_attention", False):
        c.bad("use_bidirectional_attention", "bidirectional (non-causal) attention is not supported")
    bias = c.bool("attention_bias", False)
    attn = h.attention(c, hidden, head_dim_default=256, qkv_bias=bias, o_bias=bias, qk_norm=True)
    scale = c.float("query_pre_attn_scalar", 256) ** -0.5
    if not math.isclose(scale, attn["head_dim"] ** -0.5, rel_tol=1e-12):
        attn["scale"] = scale
    window = c.opt_int("sliding_window", 4096)
    types = h.layer_types(c, n, 6)
    local = {**attn, "rope_theta": _theta(c, h.SLIDING, "rope_local_base_freq", 10000.0)}
    if window is not None:
        local["sliding_window"] = window
    glob = {**attn, "rope_theta": _theta(c, h.FULL, "rope_theta", 1_000_000.0)}
    mixers, names = _named([("local", local) if t == h.SLIDING else ("global", glob) for t in types])
    act = c.activation(("hidden_activation", "hidden_act"), "gelu_pytorch_tanh")
    model = h.gemma_model(c, hidden, n)
    ffns = {"mlp": h.mlp(c.int("intermediate_size"), activation=act)}
    desc = "Gemma 3: local/global attention, per-head q/k norms, sandwich norms"
    return h.doc("dense", model, mixers, ffns, names, None, desc)


def _phi3(c: Config) -> dict[str, Any]:
    c = _sized(c, "phi3")
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    attn = h.attention(c, hidden, rotary_fraction=c.partial_rotary(1.0), sliding_window=c.opt_int("sliding_window"))
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    ffns = {"mlp": h.mlp(c.int("intermediate_size"), activation=c.activation("hidden_act", "silu"))}
    desc = "Phi-3/Phi-4: fused qkv and gate_up projections (counted as separate ones), partial rotary"
    return h.doc("dense", model, {"attn": attn}, ffns, ["attn"] * n, None, desc)


def _olmo2(c: Config) -> dict[str, Any]:
    c = _sized(c, "olmo2")
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    bias = c.bool("attention_bias", False)
    attn = h.attention(c, hidden, qkv_bias=bias, o_bias=bias)
    attn["qk_norm"] = "full"
    model = h.model(c, hidden=hidden, layers=n, tie_default=False, post_norm=True)
    ffns = {"mlp": h.mlp(c.int("intermediate_size"), activation=c.activation("hidden_act", "silu"))}
    desc = "OLMo 2: norms after each branch, RMSNorm over the full q and k projections"
    return h.doc("dense", model, {"attn": attn}, ffns, ["attn"] * n, None, desc)


def _cohere2(c: Config) -> dict[str, Any]:
    c = _sized(c, "cohere2")
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    bias = c.bool("attention_bias", False)
    attn = h.attention(c, hidden, qkv_bias=bias, o_bias=bias)
    window = c.opt_int("sliding_window", 4096)
    types = h.layer_types(c, n, 4)
    local = {**attn, "sliding_window": window}
    glob = _without_rope(attn)
    # Cohere2Attention rotates only where it has a window: without one every layer is global NoPE
    mixers, names = _named([("local", local) if t == h.SLIDING and window else ("global", glob) for t in types])
    model = h.model(
        c,
        hidden=hidden,
        layers=n,
        tie_default=True,
        norm="layernorm",
        norm_bias=False,
        parallel_residual=True,
        parallel_shared_norm=True,
        logit_scale=c.float("logit_scale", 0.0625),
    )
    ffns = {"mlp": h.mlp(c.int("intermediate_size"), activation=c.activation("hidden_act", "silu"))}
    desc = "Cohere 2: parallel attention and MLP under one LayerNorm, sliding-window layers, global NoPE layers"
    return h.doc("dense", model, mixers, ffns, names, None, desc)


def _starcoder2(c: Config) -> dict[str, Any]:
    c = _sized(c, "starcoder2")
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    bias = c.bool("use_bias", True)
    attn = h.attention(c, hidden, qkv_bias=bias, o_bias=bias, sliding_window=c.opt_int("sliding_window"))
    model = h.model(c, hidden=hidden, layers=n, tie_default=True, norm="layernorm")
    act = c.activation("hidden_act", "gelu_pytorch_tanh")
    ffns = {"mlp": h.mlp(c.int("intermediate_size"), gated=False, activation=act, bias=bias)}
    desc = "StarCoder2: biases on every projection, LayerNorm, plain GELU MLP, sliding window"
    return h.doc("dense", model, {"attn": attn}, ffns, ["attn"] * n, None, desc)


def _smollm3(c: Config) -> dict[str, Any]:
    c = _sized(c, "smollm3")
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    bias = c.bool("attention_bias", False)
    attn = h.attention(c, hidden, qkv_bias=bias, o_bias=bias, rope_theta_default=2_000_000.0)
    rope = c.int_list("no_rope_layers")
    if not rope:
        interval = c.int("no_rope_layer_interval", 4)
        rope = [int((i + 1) % interval != 0) for i in range(n)]
    elif len(rope) != n:
        c.bad("no_rope_layers", f"has {len(rope)} entries for {n} layers")
    window = c.opt_int("sliding_window") if c.bool("use_sliding_window", False) else None
    types = c.str_list("layer_types")
    if types is None:  # SmolLM3Config: windows on the NoPE layers
        types = [h.SLIDING if window is not None and not r else h.FULL for r in rope]
    elif len(types) != n:
        c.bad("layer_types", f"has {len(types)} entries for {n} layers")
    per_layer = []
    for r, t in zip(rope, types, strict=True):
        entry, name = (attn, "attn") if r else (_without_rope(attn), "nope")
        if window is not None and t == h.SLIDING:
            entry, name = {**entry, "sliding_window": window}, f"{name}_local"
        per_layer.append((name, entry))
    mixers, names = _named(per_layer)
    model = h.model(c, hidden=hidden, layers=n, tie_default=True)
    act = c.activation("hidden_act", "silu")
    ffns = {"mlp": h.mlp(c.int("intermediate_size"), activation=act, bias=c.bool("mlp_bias", False))}
    desc = "SmolLM3: Llama-style with no positions (NoPE) on every few layers"
    return h.doc("dense", model, mixers, ffns, names, None, desc)


def _exaone4(c: Config) -> dict[str, Any]:
    c = _sized(c, "exaone4")
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    attn = h.attention(c, hidden, qk_norm=True)
    window = c.opt_int("sliding_window", 4096)
    if window is None:
        types = c.str_list("layer_types") or [h.FULL] * n
        if len(types) != n:
            c.bad("layer_types", f"has {len(types)} entries for {n} layers")
        mixers, names = {"attn": attn}, ["attn"] * n
    else:
        types = h.layer_types(c, n, 4)
        local = {**attn, "sliding_window": window}
        mixers, names = _named([("local", local) if t == h.SLIDING else ("global", _without_rope(attn)) for t in types])
    model = h.model(c, hidden=hidden, layers=n, tie_default=False, post_norm=True)
    ffns = {"mlp": h.mlp(c.int("intermediate_size"), activation=c.activation("hidden_act", "silu"))}
    desc = "EXAONE 4: norms after each branch, per-head q/k norms, local layers and global NoPE layers"
    return h.doc("dense", model, mixers, ffns, names, None, desc)


def _seed_oss(c: Config) -> dict[str, Any]:
    c = _sized(c, "seed_oss")
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    attn = h.attention(
        c,
        hidden,
        head_dim_default=128,
        qkv_bias=c.bool("attention_bias", True),
        o_bias=c.bool("attention_out_bias", False),
    )
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    act = c.activation("hidden_act", "silu")
    ffns = {"mlp": h.mlp(c.int("intermediate_size"), activation=act, bias=c.bool("mlp_bias", False))}
    desc = "Seed-OSS: Llama-style with q/k/v biases and no o bias"
    return h.doc("dense", model, {"attn": attn}, ffns, ["attn"] * n, None, desc)


MODEL_TYPES = {
    "gemma3_text": _gemma3_text,
    "phi3": _phi3,
    "olmo2": _olmo2,
    "starcoder2": _starcoder2,
    "smollm3": _smollm3,
    # No published config.json of these was reachable offline: checked against transformers on synthetic
    # configs only (tests/test_hf_dense_variants.py; tests/test_hf_transformers.py lists why).
    "cohere2": _cohere2,
    "exaone4": _exaone4,
    "seed_oss": _seed_oss,
}
