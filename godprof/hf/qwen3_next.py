"""Qwen3-Next: Gated DeltaNet linear attention beside gated softmax attention, with a 512-expert MoE.

What is read, and where each quirk comes from in transformers' ``models/qwen3_next``:

- ``layer_types`` (``linear_attention`` / ``full_attention``), or when absent every
  ``full_attention_interval``-th layer full (``(i + 1) % interval == 0``, default 4; Qwen3NextConfig).
- linear layers: ``Qwen3NextGatedDeltaNet`` (``type: gated_deltanet``) from ``linear_num_key_heads``,
  ``linear_num_value_heads``, ``linear_key_head_dim``, ``linear_value_head_dim``, ``linear_conv_kernel_dim``.
- full layers: ``Qwen3NextAttention``, whose q_proj also yields a per-head output gate
  (``output_gate: true``), per-head q/k RMSNorm, rotary on ``partial_rotary_factor`` (default 0.25) of
  ``head_dim`` (default 256), q/k/v/o biases with ``attention_bias``.
- FFNs as Qwen2-MoE: routed experts on layers where ``(i + 1) % decoder_sparse_step == 0`` and ``i`` is
  not in ``mlp_only_layers`` (a dense MLP of ``intermediate_size`` otherwise), softmax top-k with
  ``norm_topk_prob`` (default true here), an always-on shared expert of ``shared_expert_intermediate_size``
  behind a sigmoid gate.
- multi-token prediction (``num_nextn_predict_layers`` / ``mtp_num_hidden_layers`` when a config has it;
  vLLM's Qwen3NextMTP): ``fc`` (2h -> h), three norms and full-attention MoE decoder layers, sharing the
  model's embedding and head; transformers skips the checkpoint's ``mtp.*`` weights, so it is counted apart.

Qwen3-Next's RMSNorms scale by 1 + weight (zero-centred): the same parameter count.
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config

LINEAR, FULL = "linear_attention", "full_attention"


def _layer_types(c: Config, n: int) -> list[str]:
    types = h.given_layer_types(c, n, (LINEAR, FULL))
    if types is None:
        interval = c.int("full_attention_interval", 4)
        return [FULL if (i + 1) % interval == 0 else LINEAR for i in range(n)]
    return types


def _qwen3_next(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    act = c.activation("hidden_act", "silu")
    bias = c.bool("attention_bias", False)
    attn = h.attention(
        c, hidden, head_dim_default=256, qkv_bias=bias, o_bias=bias, qk_norm=True,
        rotary_fraction=c.partial_rotary(0.25), rope_theta_default=10000.0,
    )  # fmt: skip
    attn["output_gate"] = True
    gdn = {
        "type": "gated_deltanet",
        "num_key_heads": c.int("linear_num_key_heads", 16),
        "num_value_heads": c.int("linear_num_value_heads", 32),
        "key_head_dim": c.int("linear_key_head_dim", 128),
        "value_head_dim": c.int("linear_value_head_dim", 128),
        "d_conv": c.int("linear_conv_kernel_dim", 4),
    }
    types = _layer_types(c, n)
    layer_mixers = ["attn" if t == FULL else "gdn" for t in types]
    mixers = {k: v for k, v in (("gdn", gdn), ("attn", attn)) if k in layer_mixers}
    experts = c.int("num_experts", 512, minimum=0)
    step = c.int("decoder_sparse_step", 1)
    mlp_only = set(c.int_list("mlp_only_layers"))
    layer_ffns = ["moe" if (i not in mlp_only and experts > 0 and (i + 1) % step == 0) else "mlp" for i in range(n)]
    ffns: dict[str, dict[str, Any]] = {}
    if "mlp" in layer_ffns:
        ffns["mlp"] = h.mlp(c.int("intermediate_size", 5632), activation=act)
    moe = h.moe(
        experts or 1, c.int("num_experts_per_tok", 10), c.int("moe_intermediate_size", 512), activation=act,
        shared=1, shared_inter=c.int("shared_expert_intermediate_size", 512), shared_gate=True,
    )  # fmt: skip
    if not c.bool("norm_topk_prob", True):
        moe["norm_topk_prob"] = False
    if "moe" in layer_ffns:
        ffns["moe"] = moe
    has_attn, has_gdn = "attn" in mixers, "gdn" in mixers
    family = "hybrid" if has_attn and has_gdn else "linear" if has_gdn else "moe" if "moe" in ffns else "dense"
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    out = h.doc(
        family, model, mixers, ffns, layer_mixers, layer_ffns,
        "hybrid of Gated DeltaNet linear attention and gated softmax attention, MoE with a gated shared expert",
    )  # fmt: skip
    mtp_layers = c.opt_int(("num_nextn_predict_layers", "mtp_num_hidden_layers"), minimum=0)
    if mtp_layers:
        out["mixers"].setdefault("attn", attn)
        out["ffns"].setdefault("moe", moe)
        out["mtp"] = {"layers": mtp_layers, "mixer": "attn", "ffn": "moe", "own_embeddings": False}
    return out


MODEL_TYPES = {"qwen3_next": _qwen3_next}
