"""The MoE importers (godprof.hf.gpt_oss, .llama4, .glm, .moe_more) against transformers on small configs.

The published configs (tests/fixtures/hf/) leave most knobs at their defaults; these variants (2-6 layers,
narrow widths) turn them: attention biases, tied heads, explicit and default layer patterns, NoPE and
chunk lists, MoE intervals and dense first layers, group-limited routing, per-layer top-k lists, clipping,
shared experts. Each must equal transformers' model built on the meta device, total and active, with the
same MoE and attention layers (``test_hf_transformers._check``). Model types without a published
fixture (ERNIE 4.5, PhiMoE, Llama 4) are checked here only.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_hf_transformers import _build, _check, _hf_counts  # noqa: E402

from godprof.analytic import count_params  # noqa: E402
from godprof.errors import SpecError  # noqa: E402
from godprof.hf import spec_from_hf_config  # noqa: E402
from godprof.spec import parse_spec  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
_SMALL: dict[str, Any] = {"hidden_size": 128, "vocab_size": 1000, "num_attention_heads": 4}


def _fixture(stem: str) -> dict[str, Any]:
    """A published config from tests/fixtures/hf/ (or hf-incoming/ while it waits there)."""
    for folder in ("hf", "hf-incoming"):
        p = FIXTURES / folder / f"{stem}.json"
        if p.is_file():
            return json.loads(p.read_text(encoding="utf-8"))
    pytest.skip(f"no {stem}.json among the fixtures")


def _llama4_text(**changes: Any) -> dict[str, Any]:
    cfg = {
        "model_type": "llama4_text", **_SMALL, "intermediate_size": 64, "intermediate_size_mlp": 192,
        "num_hidden_layers": 4, "num_key_value_heads": 2, "head_dim": 32, "num_local_experts": 4,
        "num_experts_per_tok": 1, "attention_chunk_size": 16, "rope_theta": 500000.0,
    }  # fmt: skip
    return {**cfg, **changes}


VARIANTS: dict[str, dict[str, Any]] = {
    # gpt-oss without attention biases, tied, head_dim absent (64), default alternation of windows
    "gpt-oss-plain-tied": {
        "model_type": "gpt_oss", **_SMALL, "intermediate_size": 96, "num_hidden_layers": 3, "num_key_value_heads": 2,
        "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 16,
        "attention_bias": False, "tie_word_embeddings": True,
    },
    # gpt-oss with explicit layer_types (full, full, sliding) and a wider head than hidden / heads
    "gpt-oss-layer-types": {
        "model_type": "gpt_oss", **_SMALL, "intermediate_size": 64, "num_hidden_layers": 3, "num_key_value_heads": 1,
        "head_dim": 48, "num_local_experts": 8, "num_experts_per_tok": 3, "sliding_window": 8,
        "layer_types": ["full_attention", "full_attention", "sliding_attention"],
    },
    # Llama 4 Scout-like: MoE on every layer, RoPE+chunk on 3 of 4 layers with the L2 qk norm
    "llama4-scout-like": _llama4_text(),
    # Llama 4 Maverick-like: MoE on every other layer (dense MLPs of intermediate_size_mlp between), no qk norm
    "llama4-maverick-like": _llama4_text(num_hidden_layers=6, interleave_moe_layer_step=2, use_qk_norm=False),
    # explicit moe_layers and no_rope_layers, no chunking, biases, tied head, head_dim absent (128)
    "llama4-explicit-lists": {
        **{k: v for k, v in _llama4_text().items() if k != "head_dim"}, "moe_layers": [0, 2],
        "no_rope_layers": [1, 0, 1, 1], "attention_chunk_size": None, "attention_bias": True,
        "tie_word_embeddings": True,
    },
    # GLM-4.5 (not Air): per-head qk norm; plus 2 dense layers, 4 groups of which 2, scaling, 2 shared experts
    "glm4-moe-qk-norm-groups": {
        "model_type": "glm4_moe", **_SMALL, "intermediate_size": 256, "moe_intermediate_size": 32,
        "num_hidden_layers": 4, "num_key_value_heads": 2, "head_dim": 64, "partial_rotary_factor": 0.5,
        "use_qk_norm": True, "attention_bias": False, "n_routed_experts": 8, "num_experts_per_tok": 2,
        "n_shared_experts": 2, "n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5,
        "first_k_dense_replace": 2, "num_nextn_predict_layers": 2, "tie_word_embeddings": True,
    },
    # GLM with no dense layer, full rotary, q/k/v biases, no MTP
    "glm4-moe-all-sparse": {
        "model_type": "glm4_moe", **_SMALL, "intermediate_size": 256, "moe_intermediate_size": 48,
        "num_hidden_layers": 2, "num_key_value_heads": 4, "partial_rotary_factor": 1.0, "attention_bias": True,
        "n_routed_experts": 4, "num_experts_per_tok": 2, "first_k_dense_replace": 0, "num_nextn_predict_layers": 0,
    },
    # OLMoE with GQA, clipping, attention biases, renormalised top-k and a tied head
    "olmoe-gqa-clip-bias": {
        "model_type": "olmoe", **_SMALL, "intermediate_size": 64, "num_hidden_layers": 2, "num_key_value_heads": 2,
        "num_experts": 8, "num_experts_per_tok": 2, "clip_qkv": 8.0, "attention_bias": True, "norm_topk_prob": True,
        "tie_word_embeddings": True,
    },
    # Hunyuan with a per-layer top-k list, biases and an explicit head_dim
    "hunyuan-per-layer-topk": {
        "model_type": "hunyuan_v1_moe", **_SMALL, "intermediate_size": 64, "num_hidden_layers": 3,
        "num_key_value_heads": 2, "head_dim": 48, "num_experts": 4, "moe_topk": [2, 1, 2], "attention_bias": True,
    },
    # ERNIE 4.5 with biases everywhere (no shared experts then), MoE on every 2nd layer of 1..4, KV heads default 4
    "ernie-interval-bias": {
        "model_type": "ernie4_5_moe", **_SMALL, "num_attention_heads": 8, "intermediate_size": 256,
        "num_hidden_layers": 6, "moe_intermediate_size": 32, "moe_num_experts": 8, "moe_k": 2,
        "moe_num_shared_experts": 0, "moe_layer_start_index": 1, "moe_layer_end_index": 4, "moe_layer_interval": 2,
        "use_bias": True, "tie_word_embeddings": False,
    },
    # ERNIE 4.5 with shared experts from layer 0, tied head (the default)
    "ernie-shared": {
        "model_type": "ernie4_5_moe", **_SMALL, "intermediate_size": 256, "num_hidden_layers": 3,
        "num_key_value_heads": 2, "moe_intermediate_size": 32, "moe_num_experts": 4, "moe_k": 2,
        "moe_num_shared_experts": 2, "moe_layer_start_index": 0,
    },
    # PhiMoE with a window on every layer, lm_head bias, no attention bias, tied head
    "phimoe-window-head-bias": {
        "model_type": "phimoe", **_SMALL, "intermediate_size": 64, "num_hidden_layers": 2, "num_key_value_heads": 2,
        "num_local_experts": 4, "sliding_window": 32, "lm_head_bias": True, "attention_bias": False,
        "tie_word_embeddings": True,
    },
    # PhiMoE with biased attention and an untied head
    "phimoe-biases": {
        "model_type": "phimoe", **_SMALL, "intermediate_size": 64, "num_hidden_layers": 2, "num_key_value_heads": 4,
        "num_local_experts": 4, "attention_bias": True,
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_moe_knobs_match_transformers(name: str) -> None:
    _check(VARIANTS[name], name)


def test_llama4_wrapper_imports_its_text_model() -> None:
    """A ``llama4`` multimodal config: godprof imports its ``text_config`` (llama4_text); transformers'
    causal-LM class for it builds the same text model."""
    cfg = {
        "model_type": "llama4", "tie_word_embeddings": False,
        "text_config": _llama4_text(num_hidden_layers=4, interleave_moe_layer_step=2),
        "vision_config": {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                          "intermediate_size": 128, "vision_output_dim": 64, "projector_input_dim": 64,
                          "projector_output_dim": 64},
    }  # fmt: skip
    spec = spec_from_hf_config(cfg, "llama4.json")
    assert "llama4_text" in (spec.description or "") and "not counted" in (spec.description or "")
    assert spec.layer_ffns == ("mlp", "moe", "mlp", "moe")
    assert [spec.mixers[m].rope for m in spec.layer_mixers] == [True, True, True, False]
    model, _ = _build(cfg)
    assert type(model).__name__ == "Llama4ForCausalLM"
    _check(cfg, "llama4-wrapper")


def _counts_only(cfg: dict[str, Any], source: str) -> tuple[int, int]:
    """Total and active against transformers (meta device) without the layer-structure checks."""
    ours = count_params(spec_from_hf_config(cfg, source))
    model, hf_cfg = _build(cfg)
    total, active, moe_layers = _hf_counts(model, hf_cfg)
    assert (ours.total, ours.active) == (total, active), source
    return total, active


def test_dbrx_published_config_matches_transformers() -> None:
    """databricks/dbrx-instruct: 131.6B total (the announcement's 132B), 36.5B active (36B)."""
    cfg = _fixture("dbrx")
    assert _counts_only(cfg, "dbrx.json") == (131_596_523_520, 36_469_708_800)
    spec = spec_from_hf_config(cfg, "dbrx.json")
    attn, moe = spec.mixers["attn"], spec.ffns["moe"]
    assert (attn.num_kv_heads, attn.clip_qkv, attn.rope_theta) == (8, 8.0, 500000.0)
    assert (moe.num_experts, moe.top_k, moe.expert_intermediate_size, moe.norm_topk_prob) == (16, 4, 10752, True)
    assert (spec.model.norm, spec.model.norm_bias) == ("layernorm", False)


def test_dbrx_knobs_match_transformers() -> None:
    """No clipping, no renormalisation of the top-k weights, 4 KV heads."""
    cfg = {
        "model_type": "dbrx", "d_model": 128, "n_heads": 4, "n_layers": 2, "max_seq_len": 64, "vocab_size": 1000,
        "attn_config": {"kv_n_heads": 4, "rope_theta": 10000.0},
        "ffn_config": {"ffn_hidden_size": 64, "moe_num_experts": 4, "moe_top_k": 2,
                       "moe_normalize_expert_weights": None},
    }  # fmt: skip
    _counts_only(cfg, "dbrx-small")
    assert spec_from_hf_config(cfg, "x").ffns["moe"].norm_topk_prob is False


def test_hunyuan_a13b_architecture_matches_transformers() -> None:
    """Tencent's published Hunyuan-A13B config (model_type ``hunyuan``, remote code) read as transformers'
    ``hunyuan_v1_moe``: 64 experts of 3072, top-8 per layer as a list, one shared MLP, tied head."""
    cfg = copy.deepcopy(_fixture("hunyuan-a13b"))
    cfg["model_type"] = "hunyuan_v1_moe"
    del cfg["rope_scaling"]  # Hunyuan's NTK-alpha scaling (no parameters) is not transformers' rope_parameters
    assert spec_from_hf_config(cfg, "x").mixers["attn"].head_dim == cfg["attention_head_dim"] == 128
    cfg["head_dim"] = cfg["attention_head_dim"]  # transformers reads head_dim only
    total, active = _counts_only(cfg, "hunyuan-a13b")
    assert (total, active) == (count_params(spec_from_hf_config(cfg, "x")).total, active)
    assert 79e9 < total < 81e9 and 12.5e9 < active < 13.5e9  # "80B total, 13B active"


PINNED = {  # exact counts of the published configs, equal to transformers' (test_hf_transformers)
    "gpt-oss-120b": (116_829_156_672, 5_711_982_912),
    "gpt-oss-20b": (20_914_757_184, 4_187_440_704),
    "glm-4.5-air": (106_852_245_504, 13_424_123_904),
    "olmoe-1b-7b": (6_919_161_856, 1_282_017_280),
}


@pytest.mark.parametrize("stem", sorted(PINNED))
def test_pinned_counts(stem: str) -> None:
    c = count_params(spec_from_hf_config(_fixture(stem), stem))
    assert (c.total, c.active) == PINNED[stem]


def test_glm_multi_token_prediction_layer_is_counted_apart() -> None:
    """GLM-4.5-Air's MTP layer (num_nextn_predict_layers 1), by hand: attention 109,066,240 (q 4096 x
    12288 + k, v 4096 x 1024 each, with biases; o 12288 x 4096), MoE 2,232,418,304 (router 4096 x 128, 128
    experts and 1 shared of 3 x 4096 x 1408), 2 block norms 8,192; then enorm, hnorm and the output norm
    12,288, eh_proj 8192 x 4096 = 33,554,432 and the embedding and head copies 2 x 151552 x 4096 =
    1,241,513,984: 3,616,573,440, outside the 106.85B."""
    spec = spec_from_hf_config(_fixture("glm-4.5-air"), "glm-4.5-air.json")
    assert spec.mtp is not None and (spec.mtp.layers, spec.mtp.mixer, spec.mtp.ffn) == (1, "attn", "moe")
    c = count_params(spec)
    assert c.mtp_total == 3_616_573_440 and c.total == PINNED["glm-4.5-air"][0]
    assert count_params(spec, include_mtp=True).total == c.total + 3_616_573_440
    off = spec_from_hf_config({**_fixture("glm-4.5-air"), "num_nextn_predict_layers": 0}, "x")
    assert off.mtp is None


def test_routing_read_from_the_configs() -> None:
    oss = spec_from_hf_config(_fixture("gpt-oss-120b"), "x")
    m = oss.ffns["moe"]
    assert (m.routing, m.activation, m.expert_bias, m.router_bias) == ("topk_softmax", "swiglu_oai", True, True)
    assert oss.layer_mixers[:4] == ("local", "global", "local", "global")
    assert oss.mixers["local"].sliding_window == 128 and oss.mixers["global"].sinks
    glm = spec_from_hf_config(_fixture("glm-4.5-air"), "x").ffns["moe"]
    assert (glm.routing, glm.score_bias, glm.norm_topk_prob, glm.n_group) == ("sigmoid", "buffer", True, 1)
    olmoe = spec_from_hf_config(_fixture("olmoe-1b-7b"), "x")
    assert olmoe.ffns["moe"].norm_topk_prob is False and olmoe.mixers["attn"].qk_norm == "full"
    l4 = spec_from_hf_config(VARIANTS["llama4-scout-like"], "x")
    moe = l4.ffns["moe"]
    assert (moe.routing, moe.norm_topk_prob, moe.weight_on_input, moe.num_shared_experts) == ("sigmoid", False, True, 1)
    assert l4.mixers["local"].qk_norm == "l2" and l4.mixers["local"].attention_chunk == 16
    ernie = spec_from_hf_config(VARIANTS["ernie-shared"], "x").ffns["moe"]
    assert ernie.score_bias == "parameter"
    phi = spec_from_hf_config(VARIANTS["phimoe-biases"], "x")
    assert (phi.ffns["moe"].routing, phi.ffns["moe"].jitter_eps, phi.model.norm) == ("sparsemixer", 0.01, "layernorm")
    hy = spec_from_hf_config(VARIANTS["hunyuan-per-layer-topk"], "x")
    assert hy.layer_ffns == ("moe_top2", "moe_top1", "moe_top2")


@pytest.mark.parametrize(
    ("base", "change", "key"),
    [
        ("gpt-oss-plain-tied", {"swiglu_limit": 10.0}, "swiglu_limit"),
        ("phimoe-biases", {"num_experts_per_tok": 3}, "num_experts_per_tok"),
        ("hunyuan-per-layer-topk", {"moe_intermediate_size": [64, 32, 64]}, "moe_intermediate_size"),
        ("hunyuan-per-layer-topk", {"moe_topk": [2, 1]}, "moe_topk"),
        ("ernie-shared", {"use_bias": True}, "use_bias"),
        ("olmoe-gqa-clip-bias", {"head_dim": 64}, "head_dim"),
        ("llama4-scout-like", {"no_rope_layers": [1, 0]}, "no_rope_layers"),
    ],
)
def test_configs_godprof_cannot_represent_are_refused(base: str, change: dict[str, Any], key: str) -> None:
    with pytest.raises(SpecError) as e:
        spec_from_hf_config({**VARIANTS[base], **change}, "bad.json")
    assert key in str(e.value)


def test_dbrx_other_expert_weight_norms_are_refused() -> None:
    cfg = {"model_type": "dbrx", "d_model": 64, "n_heads": 4, "n_layers": 1, "vocab_size": 100,
           "ffn_config": {"moe_normalize_expert_weights": 2.0}}  # fmt: skip
    with pytest.raises(SpecError, match="moe_normalize_expert_weights"):
        spec_from_hf_config(cfg, "bad.json")


def test_hundreds_of_experts_count_in_constant_time() -> None:
    """One expert's count times E: 100,000 experts in 200 layers count as fast as 8 (no per-expert objects)."""

    def spec(experts: int):
        return parse_spec({
            "name": "wide", "family": "moe", "model": {"vocab_size": 1000, "hidden_size": 256, "num_layers": 200},
            "mixers": {"attn": {"type": "attention", "num_heads": 4}},
            "ffns": {"moe": {"type": "moe", "num_experts": experts, "top_k": 4, "expert_intermediate_size": 64,
                             "routing": "sigmoid", "score_bias": "parameter", "n_group": 4, "topk_group": 2}},
        })  # fmt: skip

    t0 = time.perf_counter()
    c = count_params(spec(100_000))
    assert time.perf_counter() - t0 < 1.0
    per_expert = 3 * 256 * 64
    assert c.total - count_params(spec(8)).total == 200 * (100_000 - 8) * (per_expert + 256 + 1)


def test_moe_routing_keys_are_validated() -> None:
    """Routing options apply to the routings that have them, groups must split the experts, and the
    clamped SwiGLU needs a gate."""
    moe = {"type": "moe", "num_experts": 6, "top_k": 2, "expert_intermediate_size": 4}
    doc = {"name": "x", "family": "moe", "model": {"vocab_size": 10, "hidden_size": 8, "num_layers": 1},
           "mixers": {"a": {"type": "attention", "num_heads": 2}}}  # fmt: skip
    cases = {
        "norm_topk_prob: applies to routing softmax or sigmoid": {"routing": "topk_softmax", "norm_topk_prob": False},
        "jitter_eps: applies to routing sparsemixer": {"jitter_eps": 0.1},
        "n_group: 6 experts do not split into 4 groups": {"n_group": 4},
        "n_group: group scores sum each group's 2 best": {"n_group": 6},
        "top_k: top_k (3) exceeds the 2 experts": {"num_experts": 8, "top_k": 3, "n_group": 4, "topk_group": 1},
        "top_k: sparsemixer routing picks exactly 2": {"routing": "sparsemixer", "top_k": 3},
        "activation: swiglu_oai is a gated activation": {"activation": "swiglu_oai", "gated": False},
        "score_bias: must be one of none, buffer, parameter": {"score_bias": "yes"},
    }
    for message, change in cases.items():
        with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_spec({**doc, "ffns": {"m": {**moe, **change}}})


@pytest.mark.parametrize(
    ("name", "stem"), [("gpt-oss-120b", "gpt-oss-120b"), ("gpt-oss-20b", "gpt-oss-20b"), ("glm-4.5-air", "glm-4.5-air")]
)
def test_bundled_spec_equals_its_config_json_import(name: str, stem: str) -> None:
    """The bundled specs written from these published configs count exactly as their import, MTP included."""
    from godprof.spec import load_spec

    spec, imported = load_spec(name), spec_from_hf_config(_fixture(stem), stem)
    a, b = count_params(spec), count_params(imported)
    assert (a.total, a.active, a.matmul_per_token, a.mtp_total) == (b.total, b.active, b.matmul_per_token, b.mtp_total)
    assert spec.ffns["moe"] == imported.ffns["moe"]
    assert [spec.mixers[m] for m in spec.layer_mixers] == [imported.mixers[m] for m in imported.layer_mixers]


LLAMA4_CARDS = {  # text_config values of the released Llama 4 checkpoints (no fixture of them is bundled yet)
    "llama-4-scout": {"num_local_experts": 16, "interleave_moe_layer_step": 1, "use_qk_norm": True,
                      "max_position_embeddings": 10485760},
    "llama-4-maverick": {"num_local_experts": 128, "interleave_moe_layer_step": 2, "use_qk_norm": False,
                         "max_position_embeddings": 1048576},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(LLAMA4_CARDS))
def test_llama4_bundled_specs_match_transformers(name: str) -> None:
    """The Llama 4 specs, written from the model cards, against transformers' Llama4ForCausalLM built (on the
    meta device) from the same text_config values."""
    from godprof.spec import load_spec

    cfg = {
        "model_type": "llama4_text", "hidden_size": 5120, "intermediate_size": 8192, "intermediate_size_mlp": 16384,
        "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
        "vocab_size": 202048, "num_experts_per_tok": 1, "attention_chunk_size": 8192, "rope_theta": 500000.0,
        "tie_word_embeddings": False, **LLAMA4_CARDS[name],
    }  # fmt: skip
    _check(cfg, name)
    a, b = count_params(load_spec(name)), count_params(spec_from_hf_config(cfg, name))
    assert (a.total, a.active, a.matmul_per_token) == (b.total, b.active, b.matmul_per_token)
