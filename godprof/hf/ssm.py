"""State-space stacks and hybrids: mamba, falcon_mamba, mamba2, jamba, bamba.

What is read, and where each quirk comes from in transformers' modelling code:

- mamba / falcon_mamba: ``intermediate_size`` when given overrides ``expand * hidden_size``;
  ``time_step_rank`` ``auto`` = ceil(hidden / 16); Falcon-Mamba's B/C/dt RMSNorms have no weights.
- mamba2: ``num_heads * head_dim`` must equal ``expand * hidden_size`` (transformers sizes the mixer
  from both); gated RMSNorm before out_proj.
- jamba: attention on layers ``i % attn_layer_period == attn_layer_offset`` (no positional
  encoding), MoE on ``i % expert_layer_period == expert_layer_offset``, Mamba-1 elsewhere with
  RMSNorms on dt, B and C.
- bamba: attention on ``attn_layer_indices`` with rotary over half of each head, Mamba-2 elsewhere
  (``mamba_d_head`` ``auto`` = expand * hidden / mamba_n_heads), a gated MLP after every mixer.

Left out: quantization configs, rope scaling (no parameters), multimodal wrappers (``text_config``).
"""

from __future__ import annotations

import math
from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config


def _mamba1_mixer(c: Config, hidden: int, *, prefix: str = "", inner_norms: bool = False) -> dict[str, Any]:
    """Mamba-1 mixer keys: plain (mamba, falcon_mamba) or ``mamba_``-prefixed (jamba)."""
    if prefix:
        inner = int(c.float("mamba_expand", 2) * hidden)
        state = c.int("mamba_d_state", 16)
        conv = c.int("mamba_d_conv", 4)
        dt_key, conv_bias_key, bias_key = "mamba_dt_rank", "mamba_conv_bias", "mamba_proj_bias"
    else:
        inner = (
            c.int("intermediate_size")
            if c.data.get("intermediate_size") is not None
            else int(c.float("expand", 2) * hidden)
        )
        state = c.int("state_size", 16)
        conv = c.int("conv_kernel", 4)
        dt_key, conv_bias_key, bias_key = "time_step_rank", "use_conv_bias", "use_bias"
    dt = c.data.get(dt_key, "auto")
    dt_rank = math.ceil(hidden / 16) if dt == "auto" else c.int(dt_key)
    d: dict[str, Any] = {"type": "mamba1", "d_inner": inner, "d_state": state, "d_conv": conv, "dt_rank": dt_rank}
    if not c.bool(conv_bias_key, True):
        d["conv_bias"] = False
    if c.bool(bias_key, False):
        d["proj_bias"] = True
    if inner_norms:
        d["inner_norms"] = True
    return d


def _mamba(c: Config, falcon: bool = False) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    mixer = _mamba1_mixer(c, hidden)
    model = h.model(c, hidden=hidden, layers=n, tie_default=True, max_pos_key=None)
    what = "Falcon-Mamba: Mamba-1 with weightless B/C/dt RMSNorms" if falcon else "Mamba-1 stack"
    return h.doc("ssm", model, {"mamba": mixer}, None, ["mamba"] * n, None, f"{what}, no attention, no MLP")


def _falcon_mamba(c: Config) -> dict[str, Any]:
    return _mamba(c, falcon=True)


def _mamba2_mixer(c: Config, hidden: int, *, bamba: bool = False) -> dict[str, Any]:
    if bamba:
        inner = int(c.float("mamba_expand", 2) * hidden)
        heads = c.int("mamba_n_heads", 128)
        raw = c.data.get("mamba_d_head", "auto")
        head_dim = inner // heads if raw == "auto" else c.int("mamba_d_head")
        keys = ("mamba_n_heads", "mamba_n_groups", "mamba_d_state", "mamba_d_conv", "mamba_chunk_size",
                "mamba_conv_bias", "mamba_proj_bias")  # fmt: skip
        groups, state, conv, chunk = c.int(keys[1], 1), c.int(keys[2], 256), c.int(keys[3], 4), c.int(keys[4], 256)
    else:
        inner = int(c.float("expand", 2) * hidden)
        heads = c.int("num_heads", 128)
        head_dim = c.int("head_dim", 64)
        keys = ("num_heads", "n_groups", "state_size", "conv_kernel", "chunk_size", "use_conv_bias", "use_bias")
        groups, state, conv, chunk = c.int(keys[1], 8), c.int(keys[2], 128), c.int(keys[3], 4), c.int(keys[4], 256)
    if heads * head_dim != inner:
        c.bad(keys[0], f"{heads} heads x head_dim {head_dim} != expand x hidden_size = {inner}")
    d: dict[str, Any] = {
        "type": "mamba2", "d_inner": inner, "d_state": state, "d_conv": conv, "head_dim": head_dim,
        "n_groups": groups, "chunk_size": chunk,
    }  # fmt: skip
    if not c.bool(keys[5], True):
        d["conv_bias"] = False
    if c.bool(keys[6], False):
        d["proj_bias"] = True
    return d


def _mamba2(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    mixer = _mamba2_mixer(c, hidden)
    model = h.model(c, hidden=hidden, layers=n, tie_default=False, max_pos_key=None)
    return h.doc(
        "ssm", model, {"mamba2": mixer}, None, ["mamba2"] * n, None, "Mamba-2 (SSD) stack, no attention, no MLP"
    )


def _jamba(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    act = c.activation("hidden_act", "silu")
    attn = h.attention(c, hidden, rope=False)
    a_period, a_offset = c.int("attn_layer_period", 8), c.int("attn_layer_offset", 4, minimum=0)
    e_period, e_offset = c.int("expert_layer_period", 2), c.int("expert_layer_offset", 1, minimum=0)
    if a_offset >= a_period:
        c.bad("attn_layer_offset", f"must be smaller than attn_layer_period ({a_period})")
    if e_offset >= e_period:
        c.bad("expert_layer_offset", f"must be smaller than expert_layer_period ({e_period})")
    experts = c.int("num_experts", 16)
    layer_mixers = ["attn" if i % a_period == a_offset else "mamba" for i in range(n)]
    layer_ffns = ["moe" if experts > 1 and i % e_period == e_offset else "mlp" for i in range(n)]
    mixers = {k: v for k, v in (("attn", attn), ("mamba", _mamba1_mixer(c, hidden, prefix="mamba_", inner_norms=True)))
              if k in layer_mixers}  # fmt: skip
    inter = c.int("intermediate_size")
    ffns: dict[str, dict[str, Any]] = {}
    if "mlp" in layer_ffns:
        ffns["mlp"] = h.mlp(inter, activation=act)
    if "moe" in layer_ffns:
        ffns["moe"] = h.moe(experts, c.int("num_experts_per_tok", 2), inter, activation=act)
    family = "hybrid" if len(mixers) > 1 else ("ssm" if "mamba" in mixers else ("moe" if "moe" in ffns else "dense"))
    if family == "ssm" and "moe" in ffns:
        family = "moe"
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    return h.doc(family, model, mixers, ffns, layer_mixers, layer_ffns, "Jamba: attention/Mamba-1 hybrid with MoE")


def _bamba(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    bias = c.bool("attention_bias", False)
    attn = h.attention(c, hidden, qkv_bias=bias, o_bias=bias, rotary_fraction=0.5)
    indices = set(c.int_list("attn_layer_indices"))
    bad = sorted(i for i in indices if not 0 <= i < n)
    if bad:
        c.bad("attn_layer_indices", f"layer index {bad[0]} is out of range 0..{n - 1}")
    layer_mixers = ["attn" if i in indices else "mamba2" for i in range(n)]
    mixers = {k: v for k, v in (("attn", attn), ("mamba2", _mamba2_mixer(c, hidden, bamba=True))) if k in layer_mixers}
    ffns = {"mlp": h.mlp(c.int("intermediate_size"), activation=c.activation("hidden_act", "silu"),
                        bias=c.bool("mlp_bias", False))}  # fmt: skip
    family = "hybrid" if len(mixers) > 1 else ("ssm" if "mamba2" in mixers else "dense")
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    return h.doc(family, model, mixers, ffns, layer_mixers, None, "Bamba: Mamba-2 hybrid with a few attention layers")


MODEL_TYPES = {
    "mamba": _mamba,
    "falcon_mamba": _falcon_mamba,
    "mamba2": _mamba2,
    "jamba": _jamba,
    "bamba": _bamba,
}
