"""Dense GQA decoders: llama, mistral, qwen2, qwen3, gemma2.

What is read, and where each quirk comes from in transformers' modelling code:

- llama / mistral / mixtral / qwen2 / qwen3: GQA attention, ``head_dim`` explicit or
  ``hidden_size // num_attention_heads`` (Qwen3 defaults to 128 when absent); Llama's
  ``attention_bias`` on q, k, v and o and ``mlp_bias``; Qwen2's q/k/v biases without an o bias;
  Qwen3's per-head q/k RMSNorm; sliding windows (Mistral v0.1 on every layer; Qwen2/3 only when
  ``use_sliding_window`` and from ``max_window_layers`` on).
- gemma2: sandwich norms (four RMSNorms per layer), tied embeddings by default, sliding window on
  the layers ``layer_types`` marks (even layers by default), embeddings scaled by sqrt(hidden), scores
  soft-capped at ``attn_logit_softcapping`` and scaled by ``query_pre_attn_scalar ** -0.5`` (no
  parameters; the final-logit soft-capping is not modelled).
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config


def _llama_like(c: Config, kind: str) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    act = c.activation("hidden_act", "silu")
    head_default = 128 if kind == "qwen3" else None
    sliding: list[bool]
    if kind == "llama":
        bias = c.bool("attention_bias", False)
        attn = h.attention(c, hidden, qkv_bias=bias, o_bias=bias)
        mlp_bias = c.bool("mlp_bias", False)
        window, sliding = None, [False] * n
    elif kind == "mistral":
        window = c.opt_int("sliding_window", 4096)
        attn = h.attention(c, hidden)
        mlp_bias = False
        sliding = [window is not None] * n
    elif kind == "qwen2":
        attn = h.attention(c, hidden, qkv_bias=True, rope_theta_default=10000.0)
        mlp_bias = False
        window, sliding = h.sliding_layers(c, n)
    else:  # qwen3
        bias = c.bool("attention_bias", False)
        attn = h.attention(c, hidden, qkv_bias=bias, o_bias=bias, head_dim_default=head_default, qk_norm=True)
        mlp_bias = False
        window, sliding = h.sliding_layers(c, n)
    mixers, layer_mixers = h.split_attention(attn, window, sliding)
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    ffns = {"mlp": h.mlp(c.int("intermediate_size"), activation=act, bias=mlp_bias)}
    return h.doc("dense", model, mixers, ffns, layer_mixers, None, "dense decoder (GQA attention, gated MLP)")


def _llama(c: Config) -> dict[str, Any]:
    return _llama_like(c, "llama")


def _mistral(c: Config) -> dict[str, Any]:
    return _llama_like(c, "mistral")


def _qwen2(c: Config) -> dict[str, Any]:
    return _llama_like(c, "qwen2")


def _qwen3(c: Config) -> dict[str, Any]:
    return _llama_like(c, "qwen3")


def _gemma2(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    bias = c.bool("attention_bias", False)
    attn = h.attention(c, hidden, head_dim_default=256, qkv_bias=bias, o_bias=bias)
    scalar = c.float("query_pre_attn_scalar", 256)  # softmax scale scalar**-0.5, not head_dim**-0.5
    if scalar != attn["head_dim"]:
        attn["scale"] = round(scalar**-0.5, 12)
    softcap = c.data.get("attn_logit_softcapping", 50.0)
    if softcap is not None:
        attn["softcap"] = c.float("attn_logit_softcapping", 50.0)
    window = c.opt_int("sliding_window", 4096)
    types = h.layer_types(c, n, 2)  # even layers local by default
    mixers, layer_mixers = h.split_attention(attn, window, [t == h.SLIDING for t in types])
    act = c.activation(("hidden_activation", "hidden_act"), "gelu_pytorch_tanh")
    model = h.gemma_model(c, hidden, n)
    ffns = {"mlp": h.mlp(c.int("intermediate_size"), activation=act)}
    return h.doc("dense", model, mixers, ffns, layer_mixers, None, "Gemma-2: sandwich norms, local/global attention")


MODEL_TYPES = {
    "llama": _llama,
    "mistral": _mistral,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "gemma2": _gemma2,
}
