"""OpenAI gpt-oss: alternating sliding-window / full attention with sinks, biased experts with a clamped
SwiGLU.

What is read, and where each quirk comes from in transformers' ``models/gpt_oss`` (modeling_gpt_oss.py,
configuration_gpt_oss.py):

- ``GptOssAttention``: q, k, v and o biases (``attention_bias``, default true), ``head_dim`` (default 64)
  independent of ``hidden_size``, one learned sink logit per head (``sinks`` [heads], a Parameter), rotary
  on the whole head (rope scaling, YaRN in the released configs, has no parameters and is not read), a
  ``sliding_window`` (128) on the layers ``layer_types`` marks ``sliding_attention`` (by default the even
  layers, ``(i + 1) % 2``).
- ``GptOssMLP``: a router ``GptOssTopKRouter`` (weight [E, h] and bias [E]; top-k of the logits, softmax
  over those k: ``routing: topk_softmax``) and ``GptOssExperts``: ``gate_up_proj`` [E, h, 2I] with
  ``gate_up_proj_bias`` [E, 2I] (gate and up columns interleaved) and ``down_proj`` [E, I, h] with
  ``down_proj_bias`` [E, h], activation ``swiglu_oai`` (``swiglu_alpha`` 1.702, ``swiglu_limit`` 7; other
  values are refused: the activation has them as constants). No shared experts, no dense layers.
- ``quantization_config`` (MXFP4 experts in the released checkpoints) is a weight format, not
  architecture: not read here.
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config
from godprof.kinds.mlp import SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT


def _gpt_oss(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    bias = c.bool("attention_bias", True)
    attn = h.attention(c, hidden, head_dim_default=64, qkv_bias=bias, o_bias=bias, rope_theta_default=150000.0)
    attn["sinks"] = True
    window = c.opt_int("sliding_window", 128)
    types = h.layer_types(c, n, 2)  # alternating, local first
    mixers, layer_mixers = h.split_attention(attn, window, [t == h.SLIDING for t in types])
    for key, want in (("swiglu_alpha", SWIGLU_OAI_ALPHA), ("swiglu_limit", SWIGLU_OAI_LIMIT)):
        if c.float(key, want) != want:
            c.bad(key, f"only gpt-oss's {want} is supported (the swiglu_oai activation has it as a constant)")
    experts = c.int(("num_local_experts", "num_experts"), 128)
    moe = h.moe(experts, c.int("num_experts_per_tok", 4), c.int("intermediate_size", 2880), activation="swiglu_oai")
    moe.update(expert_bias=True, router_bias=True, routing="topk_softmax")
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    return h.doc(
        "moe", model, mixers, {"moe": moe}, layer_mixers, None,
        "MoE decoder (attention sinks, alternating 128-token sliding window and full attention, biased "
        "experts with gpt-oss's clamped SwiGLU)",
    )  # fmt: skip


MODEL_TYPES = {"gpt_oss": _gpt_oss}
