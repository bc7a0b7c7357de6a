"""Falcon-H1 (``falcon_h1``): attention and Mamba-2 side by side in every layer, as one ``type: parallel``
mixer, then a gated MLP.

What is read, and where each quirk comes from in transformers' ``models/falcon_h1/modeling_falcon_h1.py``:

- Layer (``FalconH1DecoderLayer``): one RMSNorm, then ``mamba(h) x ssm_out_multiplier +
  self_attn(h x attention_in_multiplier) x attention_out_multiplier`` (``FalconH1Mixer`` multiplies its
  own input by ``ssm_in_multiplier``), the residual add, a second RMSNorm and the MLP. godprof writes the
  pair as ``{type: parallel, of: [attention, mamba2], in_multipliers, out_multipliers}``.
- Attention (``FalconH1Attention``): ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``
  (default hidden / heads), rotary over the whole head at ``rope_theta``, ``attention_bias`` on q, k, v
  and o. ``key_multiplier`` scales k before the scores, which is the softmax scale
  head_dim^-0.5 x key_multiplier (written as ``scale``; the cached keys differ by that factor, the
  outputs do not).
- Mamba-2 (``FalconH1Mixer``): ``mamba_d_ssm`` wide (default 1024; ``mamba_expand`` x hidden when it is
  null), ``mamba_n_heads`` heads of ``mamba_d_head`` (``auto``: width / heads), ``mamba_n_groups``,
  ``mamba_d_state``, ``mamba_d_conv``, ``mamba_chunk_size``, ``mamba_conv_bias``; ``mamba_proj_bias`` on
  in_proj and ``projectors_bias`` on out_proj (godprof's one ``proj_bias``: the two must agree);
  ``mamba_rms_norm`` (default false) adds the grouped gated RMSNorm, else y x SiLU(z).
- MLP (``FalconH1MLP``): gated, ``hidden_act``, ``intermediate_size``, ``mlp_bias``.
- Model: ``embedding_multiplier`` and ``lm_head_multiplier`` (``logit_scale``); the head is untied unless
  ``tie_word_embeddings``.

No parameters and no spec key, so named in the description and left out of the build: ``ssm_multipliers``
(the muP vector, a non-persistent buffer ``mup_vector`` that scales in_proj's [z, x, B, C, dt] outputs),
``mlp_multipliers`` (gate and down_proj outputs), ``mamba_norm_before_gate`` (with ``mamba_rms_norm``
transformers normalises y before the gate by default; godprof's gated norm normalises y x SiLU(z)),
``time_step_limit`` (dt clamp). Left out: rope scaling (no parameters).
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config


def _mamba(c: Config, hidden: int) -> dict[str, Any]:
    inner = c.opt_int("mamba_d_ssm", 1024)
    if inner is None:
        inner = int(c.float("mamba_expand", 2) * hidden)
    heads = c.int("mamba_n_heads", 128)
    raw = c.data.get("mamba_d_head", "auto")
    head_dim = inner // heads if raw in ("auto", None) else c.int("mamba_d_head")
    if heads * head_dim != inner:
        c.bad("mamba_n_heads", f"{heads} heads x mamba_d_head {head_dim} != the Mamba width {inner}")
    in_bias, out_bias = c.bool("mamba_proj_bias", False), c.bool("projectors_bias", False)
    if in_bias != out_bias:
        c.bad("projectors_bias", f"differs from mamba_proj_bias ({in_bias}); godprof's Mamba-2 has one proj_bias")
    d: dict[str, Any] = {
        "type": "mamba2", "d_inner": inner, "d_state": c.int("mamba_d_state", 256), "d_conv": c.int("mamba_d_conv", 4),
        "head_dim": head_dim, "n_groups": c.int("mamba_n_groups", 1), "chunk_size": c.int("mamba_chunk_size", 256),
        "gated_norm": c.bool("mamba_rms_norm", False),
    }  # fmt: skip
    if not c.bool("mamba_conv_bias", True):
        d["conv_bias"] = False
    if in_bias:
        d["proj_bias"] = True
    return d


def _falcon_h1(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size", 4096)
    n = c.int("num_hidden_layers", 32)
    bias = c.bool("attention_bias", False)
    heads = {"num_attention_heads": 32, "num_key_value_heads": 8}  # FalconH1Config's defaults
    attn = h.attention(Config({**heads, **c.data}, c.source, c.prefix), hidden, qkv_bias=bias, o_bias=bias)
    key_mult = c.float("key_multiplier", 1.0)
    if key_mult != 1.0:
        attn["scale"] = attn["head_dim"] ** -0.5 * key_mult
    mamba = _mamba(c, hidden)
    mixer: dict[str, Any] = {"type": "parallel", "of": [attn, mamba]}
    ins = [c.float("attention_in_multiplier", 1.0), c.float("ssm_in_multiplier", 1.0)]
    outs = [c.float("attention_out_multiplier", 1.0), c.float("ssm_out_multiplier", 1.0)]
    if ins != [1.0, 1.0]:
        mixer["in_multipliers"] = ins
    if outs != [1.0, 1.0]:
        mixer["out_multipliers"] = outs
    mlp = h.mlp(c.int("intermediate_size", 14336), activation=c.activation("hidden_act", "silu"),
                bias=c.bool("mlp_bias", False))  # fmt: skip
    extra: dict[str, Any] = {}
    emb = c.float("embedding_multiplier", 1.0)
    if emb != 1.0:
        extra["embedding_multiplier"] = emb
    head = c.float("lm_head_multiplier", 1.0)
    if head != 1.0:
        extra["logit_scale"] = head
    model = h.model(c, hidden=hidden, layers=n, tie_default=False, **extra)
    ones = (None, [1.0] * 5, [1.0] * 2)
    notes = [f"{k} {c.data[k]}" for k in ("ssm_multipliers", "mlp_multipliers") if c.data.get(k) not in ones]
    if mamba["gated_norm"] and c.bool("mamba_norm_before_gate", True):
        notes.append("mamba_norm_before_gate (the build gates before its norm)")
    note = f"; not built (no parameters): {', '.join(notes)}" if notes else ""
    desc = f"Falcon-H1: attention and Mamba-2 in parallel in every layer, outputs summed, then a gated MLP{note}"
    return h.doc("hybrid", model, {"hybrid": mixer}, {"mlp": mlp}, ["hybrid"] * n, None, desc)


MODEL_TYPES = {"falcon_h1": _falcon_h1}
