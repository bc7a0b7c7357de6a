"""Zamba2 (``zamba2``): Mamba-2 layers, some of which run a shared attention + MLP block first.

What is read, and where each quirk comes from in transformers' ``models/zamba2``:

- Layers (``Zamba2Model.get_layers``): one per entry of ``layers_block_type`` (``layer_types``; the
  legacy ``mamba`` is ``linear_attention``), whatever ``num_hidden_layers`` says; absent, the config's
  default 54-entry list. A ``linear_attention`` layer is RMSNorm + Mamba-2 with a residual
  (``Zamba2MambaDecoderLayer``); a ``hybrid`` layer (``Zamba2HybridLayer``) is a ``type: shared_block``
  mixer around that Mamba-2. The hybrid layers cycle through ``num_mem_blocks`` shared blocks (block id =
  hybrid-layer count mod ``num_mem_blocks``, as the weight ties and adapter slots do): godprof writes one
  mixer entry per block, ``shared0``, ``shared1``..., each its own ``share``.
- Shared block (``Zamba2AttentionDecoderLayer``): RMSNorm over 2 x hidden; attention from 2 x hidden with
  ``num_attention_heads`` heads of head_dim 2 x hidden / heads (``attention_head_dim``) and
  ``num_key_value_heads`` (default: the heads), no biases, softmax scale (head_dim / 2)^-0.5, rotary over
  the whole head only with ``use_mem_rope`` (``rope_parameters.rope_theta``); RMSNorm; gated MLP of
  ``intermediate_size`` (default 4 x hidden) with ``hidden_act`` and ``add_bias_linear`` biases. Per use:
  ``adapter_rank`` LoRA adapters on gate_up_proj (always) and on q, k, v with
  ``use_shared_attention_adapter``; the ``linear`` hidden -> hidden.
- Mamba-2 (``Zamba2MambaMixer``): ``mamba_expand`` x hidden wide, ``n_mamba_heads`` heads (head_dim =
  width / heads), ``mamba_ngroups``, ``mamba_d_state``, ``mamba_d_conv``, ``chunk_size``; the conv always
  has a bias (``use_conv_bias`` is not read); ``add_bias_linear`` on in_proj and out_proj; the grouped
  gated RMSNorm.
- Model: the head is tied unless ``tie_word_embeddings`` is false; final RMSNorm.

Left out (no parameters): ``time_step_min`` (transformers clamps dt from below; the build does not),
``use_long_context`` (rescaled rotary, longer ``max_position_embeddings``).
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config

MAMBA, HYBRID = "linear_attention", "hybrid"
_LEGACY = {"mamba": MAMBA}


def _default_types() -> list[str]:
    """``Zamba2Config``'s layer list when the config gives none (54 layers, 9 of them hybrid)."""
    return [MAMBA] + ([MAMBA] * 5 + [HYBRID]) * 7 + [MAMBA] * 4 + [HYBRID] + [MAMBA] * 3 + [HYBRID] + [MAMBA] * 2


def _mamba(c: Config, hidden: int) -> dict[str, Any]:
    inner = int(c.float("mamba_expand", 2) * hidden)
    heads = c.int("n_mamba_heads", 8)
    if inner % heads:
        c.bad("n_mamba_heads", f"{heads} heads do not divide the Mamba width {inner}")
    d: dict[str, Any] = {
        "type": "mamba2", "d_inner": inner, "d_state": c.int("mamba_d_state", 64), "d_conv": c.int("mamba_d_conv", 4),
        "head_dim": inner // heads, "n_groups": c.int("mamba_ngroups", 1), "chunk_size": c.int("chunk_size", 256),
    }  # fmt: skip
    if c.bool("add_bias_linear", False):
        d["proj_bias"] = True
    return d


def _zamba2(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size", 2560)
    raw = c.str_list("layers_block_type") or c.str_list("layer_types")
    types = [_LEGACY.get(t, t) for t in raw] if raw is not None else _default_types()
    for i, t in enumerate(types):
        if t not in (MAMBA, HYBRID):
            c.bad("layers_block_type", f"entry {i} is {t!r}; expected 'mamba' / 'linear_attention' or 'hybrid'")
    heads = c.int("num_attention_heads", 32)
    kv = c.opt_int("num_key_value_heads") or heads
    if (2 * hidden) % heads:
        c.bad("num_attention_heads", f"{heads} heads do not divide the shared block's width 2 x {hidden}")
    head_dim = 2 * hidden // heads
    scale = (head_dim / 2) ** -0.5  # Zamba2Attention.scaling
    attn: dict[str, Any] = {"type": "attention", "num_heads": heads, "head_dim": head_dim, "scale": scale}
    if kv != heads:
        attn["num_kv_heads"] = kv
    if c.bool("use_mem_rope", False):
        attn["rope_theta"] = c.rope_theta(10000.0)
    else:
        attn["rope"] = False
    mamba = _mamba(c, hidden)
    bias = c.bool("add_bias_linear", False)
    blocks = c.int("num_mem_blocks", 1)
    adapters = c.bool("use_shared_attention_adapter", False)
    mixers: dict[str, dict[str, Any]] = {}
    if MAMBA in types:
        mixers["mamba"] = mamba
    names: list[str] = []
    uses = 0
    for t in types:
        if t == MAMBA:
            names.append("mamba")
            continue
        name = f"shared{uses % blocks}"
        uses += 1
        names.append(name)
        if name not in mixers:
            entry: dict[str, Any] = {
                "type": "shared_block", "share": f"block{uses - 1}", "attention": attn, "inner": mamba,
                "intermediate_size": c.int("intermediate_size", 4 * hidden),
                "activation": c.activation("hidden_act", "gelu"), "adapter_rank": c.int("adapter_rank", 128),
            }  # fmt: skip
            if bias:
                entry["mlp_bias"] = True
            if adapters:
                entry["attention_adapters"] = True
            mixers[name] = entry
    defaults = Config({"vocab_size": 32000, **c.data}, c.source, c.prefix)  # Zamba2Config's vocabulary
    model = h.model(defaults, hidden=hidden, layers=len(types), tie_default=True)
    desc = (
        f"Zamba2: {len(types)} Mamba-2 layers, {uses} of them behind one of {min(blocks, uses)} shared attention + "
        f"MLP blocks (weights counted once, per-use LoRA adapters and projections each time)"
    )
    family = "hybrid" if uses else "ssm"
    return h.doc(family, model, mixers, None, names, None, desc)


MODEL_TYPES = {"zamba2": _zamba2}
