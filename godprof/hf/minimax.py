"""MiniMax-Text-01: lightning attention beside softmax attention (7:1 in the release), MoE on every layer.

What is read, and where each quirk comes from in transformers' ``models/minimax``:

- ``layer_types`` (``linear_attention`` / ``full_attention``), or when absent transformers' default, full
  on even layers (``(i + 1) % 2``; MiniMaxConfig). The remote-code ``attn_type_list`` (1 = full) is not
  read by transformers, so a config with it and no ``layer_types`` is refused rather than guessed.
- linear layers: ``MiniMaxLightningAttention`` (``type: lightning``) with ``num_attention_heads``,
  ``head_dim`` (default hidden / heads) and ``block_size`` (default 256); its slopes are buffers.
- full layers: ``MiniMaxAttention``, Mistral-style GQA without biases, ``sliding_window`` when set,
  rope_theta default 1e6. transformers rotates the whole head; the remote-code ``rotary_dim`` (64 of 128
  in MiniMax-Text-01) is written when a config gives it (no parameters either way).
- FFNs: ``MiniMaxSparseMoeBlock`` on every layer, ``num_local_experts`` (default 8) gated experts of
  ``intermediate_size``, softmax top-``num_experts_per_tok`` renormalised, no shared expert.
- ``tie_word_embeddings`` default false.

Not represented (no parameters): the decoder layer adds its residual from the *normed* input, scaled by
``*_alpha_factor`` / ``*_beta_factor`` (MiniMax's DeepNorm-like post-norm); godprof's block adds it from
the raw input. Counts, state and FLOPs are unaffected.
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config

LINEAR, FULL = "linear_attention", "full_attention"


def _layer_types(c: Config, n: int) -> list[str]:
    types = h.given_layer_types(c, n, (LINEAR, FULL))
    if types is None:
        if c.has("attn_type_list"):
            c.bad("attn_type_list", "transformers' MiniMaxConfig does not read it; give layer_types")
        return [FULL if (i + 1) % 2 else LINEAR for i in range(n)]
    return types


def _minimax(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    act = c.activation("hidden_act", "silu")
    rotary = c.opt_int("rotary_dim") if c.has("rotary_dim") else None
    attn = h.attention(c, hidden, rotary_dim=rotary, rope_theta_default=1000000.0)
    window = c.opt_int("sliding_window") if c.has("sliding_window") else None
    if window:
        attn["sliding_window"] = window
    lightning = {
        "type": "lightning",
        "num_heads": attn["num_heads"],
        "head_dim": attn["head_dim"],
        "block_size": c.int("block_size", 256),
    }
    if act != "silu":
        c.bad("hidden_act", f"lightning attention's qkv activation is SiLU in godprof, not {act}")
    types = _layer_types(c, n)
    layer_mixers = ["attn" if t == FULL else "lightning" for t in types]
    mixers = {k: v for k, v in (("lightning", lightning), ("attn", attn)) if k in layer_mixers}
    moe = h.moe(c.int("num_local_experts", 8), c.int("num_experts_per_tok", 2), c.int("intermediate_size", 14336))
    has_attn, has_linear = "attn" in mixers, "lightning" in mixers
    family = "hybrid" if has_attn and has_linear else "linear" if has_linear else "moe"
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    return h.doc(
        family, model, mixers, {"moe": moe}, layer_mixers, ["moe"] * n,
        "hybrid of lightning attention (linear, per-head decay) and softmax attention, MoE on every layer",
    )  # fmt: skip


MODEL_TYPES = {"minimax": _minimax}
