"""The dense importers of godprof.hf.dense against transformers on small synthetic configs.

The published configs (tests/fixtures/hf/) leave most knobs at their defaults; these variants (2-6 layers,
narrow widths) turn them: biases, tied or untied heads, explicit ``layer_types`` and window patterns,
partial rotary, NoPE intervals, softmax scale and soft-capping, nested ``rope_parameters``. Each must
equal transformers' model built on the meta device, total and active, with the same number of attention
layers (``test_hf_transformers._check``). Model types without a published fixture (Cohere 2,
EXAONE 4, Seed-OSS) are checked here only.

A Gemma 3 multimodal wrapper (its ``text_config`` imported, the vision tower left out) is checked the
same way, against transformers' wrapper class (``test_hf_transformers._build`` counts its language model
and head).
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_hf_transformers import _check  # noqa: E402

from godprof.analytic import count_params  # noqa: E402
from godprof.hf import spec_from_hf_config  # noqa: E402

_SMALL: dict[str, Any] = {
    "hidden_size": 128, "intermediate_size": 320, "vocab_size": 1000, "num_attention_heads": 4, "pad_token_id": 0,
}  # fmt: skip


def _types(n: int, full: set[int]) -> list[str]:
    return ["full_attention" if i in full else "sliding_attention" for i in range(n)]


VARIANTS: dict[str, dict[str, Any]] = {
    # Gemma 3: every 3rd layer global, untied, biases, a softmax scale other than head_dim^-0.5
    "gemma3-pattern-scale": {
        "model_type": "gemma3_text", **_SMALL, "num_hidden_layers": 6, "num_key_value_heads": 2, "head_dim": 48,
        "sliding_window_pattern": 3, "sliding_window": 64, "query_pre_attn_scalar": 32,
        "attention_bias": True, "tie_word_embeddings": False, "rope_theta": 500000.0, "rope_local_base_freq": 5000.0,
    },
    # Gemma 3 as transformers 5 writes it: layer_types and per-layer-type rope_parameters
    "gemma3-layer-types-rope-parameters": {
        "model_type": "gemma3_text", **_SMALL, "num_hidden_layers": 4, "num_key_value_heads": 1, "head_dim": 32,
        "layer_types": _types(4, {0, 3}), "sliding_window": 32,
        "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
    },
    # Phi-3: half rotary, tied head, MHA (num_key_value_heads absent), a window on every layer
    "phi3-partial-tied-window": {
        "model_type": "phi3", **_SMALL, "num_hidden_layers": 2, "partial_rotary_factor": 0.5,
        "tie_word_embeddings": True, "sliding_window": 48,
    },
    # OLMo 2 with GQA, biases and a tied head: full-width k norm over 2 kv heads
    "olmo2-gqa-bias-tied": {
        "model_type": "olmo2", **_SMALL, "num_hidden_layers": 2, "num_key_value_heads": 2, "attention_bias": True,
        "tie_word_embeddings": True,
    },
    # StarCoder2 without biases, untied, no window
    "starcoder2-no-bias": {
        "model_type": "starcoder2", **_SMALL, "num_hidden_layers": 2, "num_key_value_heads": 2, "use_bias": False,
        "tie_word_embeddings": False, "sliding_window": None,
    },
    # SmolLM3: NoPE every 3rd layer from the interval, windows on the NoPE layers, biases, untied
    "smollm3-interval-window": {
        "model_type": "smollm3", **_SMALL, "num_hidden_layers": 6, "num_key_value_heads": 2,
        "no_rope_layer_interval": 3, "use_sliding_window": True, "sliding_window": 64, "attention_bias": True,
        "mlp_bias": True, "tie_word_embeddings": False,
    },
    # Cohere 2: explicit layer types, biases, untied, its own logit scale
    "cohere2-layer-types": {
        "model_type": "cohere2", **_SMALL, "num_hidden_layers": 4, "num_key_value_heads": 2,
        "layer_types": _types(4, {1}), "sliding_window": 64, "attention_bias": True, "tie_word_embeddings": False,
        "logit_scale": 0.25,
    },
    # Cohere 2 with the default pattern of 4 and a head_dim narrower than hidden / heads
    "cohere2-pattern": {
        "model_type": "cohere2", **_SMALL, "num_hidden_layers": 8, "num_key_value_heads": 1, "head_dim": 16,
    },
    # EXAONE 4 hybrid: every 3rd layer global NoPE
    "exaone4-pattern": {
        "model_type": "exaone4", **_SMALL, "num_hidden_layers": 6, "num_key_value_heads": 2, "sliding_window": 64,
        "sliding_window_pattern": 3, "tie_word_embeddings": True,
    },
    # EXAONE 4 with a string pattern beside the layer list (the 32B's form) and an explicit head_dim
    "exaone4-layer-types": {
        "model_type": "exaone4", **_SMALL, "num_hidden_layers": 4, "num_key_value_heads": 2, "head_dim": 48,
        "sliding_window": 32, "sliding_window_pattern": "LLLG", "layer_types": _types(4, {3}),
    },
    # EXAONE 4 without windows (the 1.2B's form): every layer global with rotary
    "exaone4-no-window": {
        "model_type": "exaone4", **_SMALL, "num_hidden_layers": 2, "num_key_value_heads": 4, "sliding_window": None,
        "layer_types": ["full_attention"] * 2,
    },
    # Seed-OSS with an o bias too, head_dim null (hidden / heads), MLP biases
    "seed-oss-out-bias": {
        "model_type": "seed_oss", **_SMALL, "num_hidden_layers": 2, "num_key_value_heads": 2, "head_dim": None,
        "attention_out_bias": True, "mlp_bias": True,
    },
    # Seed-OSS defaults: q/k/v biases, no o bias, head_dim 128 (wider than hidden / heads)
    "seed-oss-defaults": {"model_type": "seed_oss", **_SMALL, "num_hidden_layers": 2, "num_key_value_heads": 1},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_dense_knobs_match_transformers(name: str) -> None:
    _check(VARIANTS[name], name)


def test_gemma3_wrapper_counts_its_text_model_with_a_tied_head() -> None:
    """A Gemma 3 multimodal config: only the text model is counted, its head tied (Gemma3Config and
    Gemma3TextConfig both default to tie_word_embeddings true); transformers' wrapper agrees."""
    text = {**VARIANTS["gemma3-layer-types-rope-parameters"]}
    cfg = {
        "model_type": "gemma3", "text_config": text, "mm_tokens_per_image": 4,
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                          "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
    }  # fmt: skip
    spec = spec_from_hf_config(cfg, "gemma3-wrapper")
    assert spec.model.tie_embeddings and "vision" in (spec.description or "")
    assert count_params(spec).total == count_params(spec_from_hf_config(text, "text")).total
    _check(cfg, "gemma3-wrapper")


def test_layouts_read_from_the_configs() -> None:
    """The per-layer choices behind the counts: which layers are local, which have no rotary."""

    def kinds(name: str) -> list[str]:
        spec = spec_from_hf_config(VARIANTS[name], name)
        return [
            ("W" if spec.mixers[m].sliding_window else "-") + ("R" if spec.mixers[m].rope else "N")
            for m in spec.layer_mixers
        ]

    assert kinds("gemma3-pattern-scale") == ["WR", "WR", "-R"] * 2
    assert kinds("smollm3-interval-window") == ["-R", "-R", "WN"] * 2
    assert kinds("cohere2-layer-types") == ["WR", "-N", "WR", "WR"]
    assert kinds("exaone4-pattern") == ["WR", "WR", "-N"] * 2
    assert kinds("exaone4-no-window") == ["-R", "-R"]
    g = spec_from_hf_config(VARIANTS["gemma3-pattern-scale"], "g")
    local, glob = g.mixers["local"], g.mixers["global"]
    assert (local.rope_theta, glob.rope_theta) == (5000.0, 500000.0)
    assert local.scale == glob.scale == 32**-0.5 and local.qk_norm is True
    nested = spec_from_hf_config(VARIANTS["gemma3-layer-types-rope-parameters"], "n")
    assert (nested.mixers["local"].rope_theta, nested.mixers["global"].rope_theta) == (10000.0, 1000000.0)
    assert nested.mixers["local"].scale == 256**-0.5  # query_pre_attn_scalar's default, with head_dim 32
