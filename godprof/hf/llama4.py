"""Llama 4 (Scout, Maverick): chunked local attention with RoPE interleaved with global NoPE attention,
sigmoid-routed experts plus a shared expert, MoE on every layer or every other one.

What is read, and where each quirk comes from in transformers' ``models/llama4`` (modeling_llama4.py,
configuration_llama4.py); ``llama4`` multimodal checkpoints import their ``text_config`` (model_type
``llama4_text``) through the generic wrapper rule in ``godprof.hf``:

- ``Llama4TextAttention``: GQA, ``head_dim`` (default 128), ``attention_bias`` on q, k, v and o. A layer
  uses RoPE where ``no_rope_layers[i]`` is 1 (despite the name; default: every layer but each
  ``no_rope_layer_interval``-th, 4), NoPE elsewhere. RoPE layers attend within chunks of
  ``attention_chunk_size`` (8192; ``layer_types`` marks them ``chunked_attention`` when given) and, with
  ``use_qk_norm`` (default true), L2-normalise q and k per head (``Llama4TextL2Norm``, no weight). NoPE
  layers see all tokens; their query temperature tuning (``attn_temperature_tuning``) scales q by
  1 + ``attn_scale`` x log(1 + floor((pos + 1) / ``floor_scale``)), no parameters, not modelled. Its
  rotary pairs adjacent features (complex view); godprof's build pairs halves, the same attention up to a
  fixed permutation of the q and k projection rows.
- ``Llama4TextMoe`` on the layers in ``moe_layers`` (default every ``interleave_moe_layer_step``-th, 1):
  ``Llama4Router`` Linear(h, E) without bias, top-k logits then their sigmoid (``routing: sigmoid``,
  ``norm_topk_prob: false``), the score multiplying each expert's *input* (``weight_on_input``),
  ``Llama4TextExperts`` of ``intermediate_size`` and one shared expert ``Llama4TextMLP`` of the same size,
  ungated. Other layers: a dense ``Llama4TextMLP`` of ``intermediate_size_mlp``.
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config


def _llama4_text(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    act = c.activation("hidden_act", "silu")
    bias = c.bool("attention_bias", False)
    attn = h.attention(c, hidden, head_dim_default=128, qkv_bias=bias, o_bias=bias, rope_theta_default=5e5)
    interval = c.int("no_rope_layer_interval", 4)
    uses_rope = c.int_list("no_rope_layers") or [int((i + 1) % interval != 0) for i in range(n)]
    if len(uses_rope) != n:
        c.bad("no_rope_layers", f"has {len(uses_rope)} entries for {n} layers")
    chunk = c.opt_int("attention_chunk_size", 8192)
    types = c.str_list("layer_types")
    if types is None:
        types = ["chunked_attention" if r and chunk is not None else "full_attention" for r in uses_rope]
    elif len(types) != n:
        c.bad("layer_types", f"has {len(types)} entries for {n} layers")
    qk_norm = c.bool("use_qk_norm", True)
    mixers: dict[str, dict[str, Any]] = {}
    layer_mixers = []
    for r, t in zip(uses_rope, types, strict=True):
        m = dict(attn)
        if not r:
            m = {k: v for k, v in m.items() if k not in ("rope_theta", "rotary_dim")}
            m["rope"] = False
        elif qk_norm:  # transformers builds the L2 norm on RoPE layers only
            m["qk_norm"] = "l2"
        if t == "chunked_attention":
            if chunk is None:
                c.bad("attention_chunk_size", "layer_types has chunked_attention layers but no chunk size")
            m["attention_chunk"] = chunk
        name = ("local" if t == "chunked_attention" else "global") + ("" if r else "_nope")
        mixers.setdefault(name, m)
        layer_mixers.append(name)
    if len(mixers) == 1:
        only = next(iter(mixers))
        mixers = {"attn": mixers[only]}
        layer_mixers = ["attn"] * n
    step = c.int("interleave_moe_layer_step", 1)
    listed = c.data.get("moe_layers") is not None
    moe_layers = set(c.int_list("moe_layers") if listed else range(step - 1, n, step))
    layer_ffns = ["moe" if i in moe_layers else "mlp" for i in range(n)]
    inter = c.int("intermediate_size", 8192)
    ffns: dict[str, dict[str, Any]] = {}
    if "mlp" in layer_ffns:
        ffns["mlp"] = h.mlp(c.int("intermediate_size_mlp", 16384), activation=act)
    if "moe" in layer_ffns:
        moe = h.moe(c.int("num_local_experts", 16), c.int("num_experts_per_tok", 1), inter, activation=act, shared=1)
        moe.update(routing="sigmoid", norm_topk_prob=False, weight_on_input=True)
        ffns["moe"] = moe
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    return h.doc(
        "moe" if "moe" in ffns else "dense", model, mixers, ffns, layer_mixers, layer_ffns,
        "MoE decoder (chunked local RoPE attention with L2 qk-norm interleaved with global NoPE attention; "
        "sigmoid-routed experts scaling their input, one shared expert)",
    )  # fmt: skip


# No published Llama 4 config.json was reachable offline (the repositories are gated; the copies found
# were trimmed): checked against transformers on synthetic configs and the model cards' figures, as a text
# model and through the llama4 wrapper (tests/test_hf_moe_variants.py).
MODEL_TYPES = {"llama4_text": _llama4_text}
