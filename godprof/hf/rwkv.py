"""RWKV-4: the ``rwkv`` model_type (transformers' models/rwkv).

What is read, and where each quirk comes from in transformers' modelling code:

- Blocks (``RwkvBlock``): ``ln1`` before the time mix and ``ln2`` before the channel mix, LayerNorms with
  bias (``norm: layernorm``); ``ln_out`` after the last block (the final norm); layer 0 also holds
  ``pre_ln``, a LayerNorm on the embeddings, counted in layer 0's time mix (``pre_norm: true``, its own
  mixer entry ``time_mix_0``; see ``godprof.kinds.rwkv``).
- Time mix (``RwkvSelfAttention``): ``type: rwkv_time_mix`` with ``attention_hidden_size`` (None or absent:
  hidden, as ``RwkvConfig.__post_init__`` sets it; written only when it differs).
- Channel mix (``RwkvFeedForward``): ``type: rwkv_channel_mix`` of ``intermediate_size`` (None or absent:
  4 x hidden).
- The head (``RwkvForCausalLM.head``, no bias) is untied unless ``tie_word_embeddings`` (default false).
  No position embeddings (``context_length`` bounds the CUDA kernel only).

Left out: ``rescale_every`` (halves the residual stream and the output/value weights at inference: no
parameters), ``layer_norm_epsilon``.
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config


def _rwkv(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size", 4096)
    n = c.int("num_hidden_layers", 32)
    att = c.opt_int("attention_hidden_size")
    inter = c.opt_int("intermediate_size") or 4 * hidden
    mix: dict[str, Any] = {"type": "rwkv_time_mix"}
    if att is not None and att != hidden:
        mix["attention_hidden_size"] = att
    mixers = {"time_mix_0": {**mix, "pre_norm": True}}
    if n > 1:
        mixers["time_mix"] = mix
    model = h.model(c, hidden=hidden, layers=n, tie_default=False, norm="layernorm", max_pos_key=None)
    layer_mixers = ["time_mix_0"] + ["time_mix"] * (n - 1)
    desc = f"RWKV-4: {n} blocks of WKV time mix (width {att or hidden}) and channel mix of {inter}"
    ffns = {"channel_mix": {"type": "rwkv_channel_mix", "intermediate_size": inter}}
    return h.doc("linear", model, mixers, ffns, layer_mixers, None, desc)


MODEL_TYPES = {"rwkv": _rwkv}
