"""Cross-check the config.json importer against transformers itself.

For every supported model_type, a fixture under tests/fixtures/hf/ holds the published config.json
values (its ``_source`` key names the URL). transformers builds the model from the same dict on the
``meta`` device (no weights, no download, no initialisation cost) and we assert:

- godprof's analytic total == sum of transformers' *parameters* (buffers such as DeepSeek-V3's
  ``e_score_correction_bias`` or GPT-2's causal mask are not parameters and are not counted);
- godprof's active == that total minus the routed experts a token does not use,
  (num_experts - top_k) x (one expert's parameters), summed over transformers' expert modules;
- the per-layer structure agrees: the number of layers holding routed experts and the number of
  attention layers are read from the built modules, so a layout bug cannot hide behind a total that
  happens to match.

Small synthetic variants (2-6 layers, narrow widths) then exercise the config knobs the published
configs leave at their defaults: biases, tied heads, mlp_only_layers, decoder_sparse_step,
first_k_dense_replace, q_lora_rank null, layer periods and offsets, partial rotary, parallel
residual on/off, Mamba-2 groups.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from godprof.analytic import count_params  # noqa: E402
from godprof.hf import SUPPORTED_MODEL_TYPES, spec_from_hf_config  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "hf"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))

# Supported model_types with no published config.json among the fixtures: no public copy was reachable
# from this offline workplace (gated or unmirrored repositories; the copies found were trimmed or
# re-saved with other keys). Each is checked against transformers on synthetic configs instead
# (tests/test_hf_dense_variants.py, tests/test_hf_moe_variants.py).
NO_PUBLISHED_FIXTURE = {
    "llama4_text": "meta-llama repositories are gated; mirrored copies drop no_rope_layers and other keys",
    "cohere2": "only an abliterated re-save of c4ai-command-r7b was found",
    "exaone4": "only quantized re-saves of EXAONE-4.0 were found",
    "seed_oss": "ByteDance-Seed's repositories hold the README, not config.json",
    "ernie4_5_moe": "the copies found add _attn_implementation or num_experts_per_tok",
    "phimoe": "only modified derivatives of Phi-3.5-MoE were found",
    "hunyuan_v1_moe": "Tencent's published A13B config names the remote-code model_type 'hunyuan' (its fixture)",
    "granitemoehybrid": "no published Granite-4.0-H config.json was reachable offline",
    "minimax": "MiniMaxAI publishes MiniMax-Text-01 with the remote-code model_type; no -hf config.json offline",
    "lfm2": "no published LiquidAI LFM2 config.json was reachable offline (checked on synthetic configs)",
    "lfm2_moe": "no published LiquidAI LFM2-8B-A1B config.json was reachable offline (synthetic configs)",
    "rwkv": "no published RWKV-4 config.json was reachable offline (tests/test_rwkv.py: synthetic configs)",
    "falcon_h1": "no published tiiuae Falcon-H1 config.json was reachable offline (synthetic configs: test_parallel)",
    "zamba2": "Zyphra's configs in transformers' format were not reachable offline; the one public copy found "
    "(Zamba2-7B in Zyphra's pre-transformers keys) lacks n_mamba_heads (synthetic configs: test_zamba2)",
}
# transformers' class for a published remote-code model_type with the same modules


def _hunyuan_remote_code(cfg: dict[str, Any]) -> dict[str, Any]:
    """Tencent's remote-code keys as transformers' hunyuan_v1_moe reads them: head_dim is named
    attention_head_dim, and its NTK-alpha rope_scaling (no parameters) is not transformers' format."""
    out = {k: v for k, v in cfg.items() if k != "rope_scaling"}
    out.setdefault("head_dim", cfg.get("attention_head_dim"))
    return {**out, "model_type": "hunyuan_v1_moe"}


TRANSFORMERS_CONFIG = {"hunyuan": _hunyuan_remote_code}


def _config(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _build(cfg: dict[str, Any]) -> tuple[Any, Any]:
    """transformers' causal LM for ``cfg`` on the meta device, and its config object."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    clean = {k: v for k, v in cfg.items() if not k.startswith("_")}
    if clean["model_type"] in TRANSFORMERS_CONFIG:
        clean = TRANSFORMERS_CONFIG[clean["model_type"]](clean)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_cfg = AutoConfig.for_model(**clean)
        if isinstance(cfg.get("text_config"), dict) and cfg["model_type"] not in SUPPORTED_MODEL_TYPES:
            # a multimodal wrapper (Gemma 3, Mistral 3): godprof imports its text model, so compare with the
            # causal LM transformers builds from the text_config (the head tied as that config says: the
            # wrapper's own default can differ, e.g. Mistral3Config ties where Mistral-Small-3.1 ships an
            # lm_head)
            hf_cfg = hf_cfg.get_text_config()
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_cfg)
    return model, hf_cfg


def _expert_modules(model: Any) -> list[Any]:
    """transformers >= 5 stores each layer's routed experts as one ``*Experts`` module of fused 3-D
    weights with a ``num_experts`` attribute (Mixtral, Qwen2/3-MoE, DeepSeek-V2/V3, Jamba, gpt-oss, Llama 4,
    GLM-4.5, OLMoE, ERNIE 4.5, Hunyuan, PhiMoE; DBRX's holds its w1/v1/w2 in a child module)."""
    return [m for m in model.modules() if type(m).__name__.endswith("Experts") and hasattr(m, "num_experts")]


def _hf_counts(model: Any, hf_cfg: Any) -> tuple[int, int, int]:
    """(total parameters, active parameters, layers with routed experts) of a built model. A layer's top-k is
    its MoE block's (``top_k``, or its ``gate``'s / ``router``'s: Hunyuan's per-layer ``moe_topk``; a
    wrapper's outer config has none), else the config's ``num_experts_per_tok``."""
    total = sum(p.numel() for p in model.parameters())  # shared (tied) tensors are yielded once
    inactive = 0
    experts = _expert_modules(model)
    parent = {id(child): mod for mod in model.modules() for child in mod.children()}
    for m in experts:
        block = parent[id(m)]
        ks = [getattr(x, "top_k", None) for x in (block, getattr(block, "gate", None), getattr(block, "router", None))]
        top_k = next((k for k in ks if isinstance(k, int)), None) or hf_cfg.num_experts_per_tok
        one = sum(p.numel() for p in m.parameters()) // m.num_experts
        inactive += one * (m.num_experts - top_k)
    return total, total - inactive, len(experts)


def _check(cfg: dict[str, Any], source: str) -> None:
    spec = spec_from_hf_config(cfg, source)
    ours = count_params(spec)
    model, hf_cfg = _build(cfg)
    total, active, moe_layers = _hf_counts(model, hf_cfg)
    assert ours.total == total, f"{source}: godprof {ours.total:,} != transformers {total:,}"
    assert ours.active == active, f"{source}: active godprof {ours.active:,} != transformers {active:,}"
    assert sum(1 for f in spec.layer_ffns if spec.ffns[f] is not None and spec.ffns[f].type == "moe") == moe_layers
    ours_attn = sum(1 for m in spec.layer_mixers if "attention" in spec.mixers[m].categories)
    hf_attn = sum(1 for layer in _decoder_layers(model) if _has_attention(layer))
    assert ours_attn == hf_attn, f"{source}: {ours_attn} attention layers, transformers has {hf_attn}"


def _decoder_layers(model: Any) -> list[Any]:
    for name, mod in model.named_modules():
        if name.endswith((".layers", ".h", ".blocks")) and isinstance(mod, torch.nn.ModuleList):
            return list(mod)
    raise AssertionError("no decoder layer list found")


def _has_attention(layer: Any) -> bool:
    """A decoder layer with an attention module (DBRX keeps it inside ``norm_attn_norm``; Granite-4.0-H
    sets ``self_attn`` to None on Mamba layers; a Nemotron-H block's one ``mixer`` may be attention)."""
    inner = getattr(layer, "norm_attn_norm", layer)
    if type(getattr(inner, "self_attn", None)).__name__.endswith("DeltaAttention"):  # Kimi Linear's KDA layers
        return False
    if type(getattr(inner, "mixer", None)).__name__.endswith("Attention"):
        return True
    return any(getattr(inner, a, None) is not None for a in ("self_attn", "attn", "attention", "shared_transformer"))


def _text_model_type(cfg: dict[str, Any]) -> str:
    """A fixture's model_type, or its text model's for a multimodal wrapper."""
    text = cfg.get("text_config")
    return (
        text["model_type"]
        if isinstance(text, dict) and cfg["model_type"] not in SUPPORTED_MODEL_TYPES
        else cfg["model_type"]
    )


def test_every_supported_model_type_has_a_fixture() -> None:
    types = {_text_model_type(_config(p)) for p in FIXTURE_FILES}
    assert not types & set(NO_PUBLISHED_FIXTURE), "a fixture arrived: drop the type from NO_PUBLISHED_FIXTURE"
    assert sorted(types | set(NO_PUBLISHED_FIXTURE)) == sorted(SUPPORTED_MODEL_TYPES)
    for p in FIXTURE_FILES:
        assert _config(p)["_source"].startswith("https://"), p.name


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[p.stem for p in FIXTURE_FILES])
def test_published_config_matches_transformers(path: Path) -> None:
    _check(_config(path), str(path))


# Exact figures the transformers build gives for the published configs (same numbers the test above
# derives live); pinned so a regression in either side shows up with the model's name on it.
PINNED = {
    "llama-3-8b": (8_030_261_248, 8_030_261_248),
    "llama-3.1-405b": (405_853_388_800, 405_853_388_800),
    "mixtral-8x22b-v0.1": (140_630_071_296, 39_161_468_928),
    "mixtral-8x7b-v0.1": (46_702_792_704, 12_879_925_248),
    "deepseek-v3": (671_026_404_352, 37_552_282_624),  # MTP layer excluded, as in the 671B
    "deepseek-v4": (284_332_230_231, 13_799_622_231),  # V4-Flash ("284B, 13B active"), MTP layer excluded
    "deepseek-v4-pro": (1_572_997_179_491, 49_779_058_787),  # V4-Pro ("1.6T, 49B active"), MTP excluded
    "qwen3-30b-a3b": (30_532_122_624, 3_353_032_704),
    "jamba-v0.1": (51_570_323_328, 12_110_311_296),
    "falcon-mamba-7b": (7_272_665_088, 7_272_665_088),
    "gemma-2-9b": (9_241_705_984, 9_241_705_984),  # Gemma 2 report: 8,324,201,984 + 917,504,000
    "gpt2": (124_439_808, 124_439_808),
}


@pytest.mark.parametrize("stem", sorted(PINNED))
def test_pinned_counts(stem: str) -> None:
    path = FIXTURES / f"{stem}.json"
    c = count_params(spec_from_hf_config(_config(path), str(path)))
    assert (c.total, c.active) == PINNED[stem]


def _variant(stem: str, **changes: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(_config(FIXTURES / f"{stem}.json"))
    cfg.update(changes)
    return cfg


_SMALL = {"hidden_size": 256, "intermediate_size": 512, "vocab_size": 1000, "num_attention_heads": 8}

VARIANTS: dict[str, dict[str, Any]] = {
    # Llama with every bias on, tied head, explicit head_dim wider than hidden/heads
    "llama-biases-tied": _variant(
        "llama-3-8b", **_SMALL, num_hidden_layers=2, num_key_value_heads=2, head_dim=64, attention_bias=True,
        mlp_bias=True, tie_word_embeddings=True,
    ),
    # Mistral with no sliding window and a derived head_dim
    "mistral-no-window": _variant("mistral-7b-v0.1", **_SMALL, num_hidden_layers=2, num_key_value_heads=4,
                                  sliding_window=None),
    # Qwen2 with a sliding window from layer 2 on (mixer split into global/local)
    "qwen2-window": _variant("qwen2.5-7b", **_SMALL, num_hidden_layers=4, num_key_value_heads=2,
                             use_sliding_window=True, sliding_window=64, max_window_layers=2),
    # Qwen2-MoE: dense layer 0 (mlp_only_layers), experts on every 2nd layer, shared expert + gate
    "qwen2-moe-sparse-step": _variant(
        "qwen1.5-moe-a2.7b", **_SMALL, num_hidden_layers=6, num_key_value_heads=8, num_experts=6,
        num_experts_per_tok=2, moe_intermediate_size=64, shared_expert_intermediate_size=128,
        decoder_sparse_step=2, mlp_only_layers=[3], qkv_bias=False,
    ),
    # Qwen3 dense with attention_bias (q, k, v and o)
    "qwen3-bias": _variant("qwen3-0.6b", **_SMALL, num_hidden_layers=2, num_key_value_heads=4, head_dim=48,
                           attention_bias=True, tie_word_embeddings=False),
    # Qwen3-MoE with a dense first layer
    "qwen3-moe-mlp-only": _variant(
        "qwen3-30b-a3b", **_SMALL, num_hidden_layers=3, num_key_value_heads=2, num_experts=8,
        num_experts_per_tok=2, moe_intermediate_size=64, mlp_only_layers=[0],
    ),
    # DeepSeek-V2 with q_lora_rank set, two dense first layers, attention biases
    "deepseek-v2-qlora": _variant(
        "deepseek-v2-lite", **_SMALL, num_hidden_layers=4, q_lora_rank=96, kv_lora_rank=64, qk_nope_head_dim=32,
        qk_rope_head_dim=16, v_head_dim=32, n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=64,
        n_shared_experts=2, first_k_dense_replace=2, attention_bias=True,
    ),
    # DeepSeek-V3 shrunk: 8 routed in 2 groups, 1 dense layer, 3 shared experts
    "deepseek-v3-small": _variant(
        "deepseek-v3", **_SMALL, num_hidden_layers=3, q_lora_rank=64, kv_lora_rank=32, qk_nope_head_dim=16,
        qk_rope_head_dim=16, v_head_dim=16, n_routed_experts=8, n_group=2, topk_group=1, num_experts_per_tok=2,
        moe_intermediate_size=32, n_shared_experts=3, first_k_dense_replace=1,
    ),
    # DeepSeek-V4 shrunk: legacy compress_ratios (cut to 5 layers), one hash layer, 3 streams, small indexer
    "deepseek-v4-small": _variant(
        "deepseek-v4", hidden_size=128, vocab_size=1000, num_attention_heads=4, head_dim=32, qk_rope_head_dim=8,
        q_lora_rank=48, o_groups=2, o_lora_rank=24, index_n_heads=4, index_head_dim=16, index_topk=4,
        n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=40, num_hidden_layers=5,
        compress_ratios=[0, 4, 128, 4, 128, 0], num_hash_layers=1, hc_mult=3, sliding_window=8,
    ),
    # DeepSeek-V4 with transformers' own keys: layer_types, mlp_layer_types, compress_rates, sigmoid scores
    "deepseek-v4-layer-types": _variant(
        "deepseek-v4-pro", hidden_size=96, vocab_size=700, num_attention_heads=4, head_dim=24,
        qk_rope_head_dim=None, partial_rotary_factor=0.5, q_lora_rank=32, o_groups=4, o_lora_rank=16,
        index_n_heads=2, index_head_dim=12, n_routed_experts=6, num_experts_per_tok=3, moe_intermediate_size=24,
        num_hidden_layers=3, compress_ratios=None, num_hash_layers=None, scoring_func="sigmoid", hc_mult=2,
        layer_types=["compressed_sparse_attention", "sliding_attention", "heavily_compressed_attention"],
        mlp_layer_types=["moe", "hash_moe", "moe"],
        compress_rates={"compressed_sparse_attention": 2, "heavily_compressed_attention": 16},
    ),
    # Gemma-2 untied, with attention biases and an explicit layer_types list
    "gemma2-layer-types": _variant(
        "gemma-2-9b", **_SMALL, num_hidden_layers=4, num_key_value_heads=4, head_dim=32, attention_bias=True,
        tie_word_embeddings=False,
        layer_types=["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
    ),
    # GPT-2 with an explicit n_inner and an untied head
    "gpt2-inner-untied": _variant("gpt2", n_embd=128, n_head=4, n_layer=2, n_inner=320, vocab_size=1000,
                                  tie_word_embeddings=False),
    # GPT-NeoX sequential residual (still two norms), no attention biases, tied head, half rotary
    "neox-sequential": _variant(
        "gpt-neox-20b", **_SMALL, num_hidden_layers=2, use_parallel_residual=False, attention_bias=False,
        tie_word_embeddings=True, rotary_pct=0.5,
    ),
    # GPT-J with the whole head rotated (rotary_dim == head_dim) and an explicit n_inner
    "gptj-full-rotary": _variant("gpt-j-6b", n_embd=128, n_head=4, n_layer=2, rotary_dim=32, n_inner=256,
                                 vocab_size=1000),
    # Mamba-1: expand without an explicit intermediate size, dt rank auto, biases on, untied
    "mamba-expand": {
        "model_type": "mamba", "hidden_size": 96, "num_hidden_layers": 2, "vocab_size": 500, "expand": 3,
        "time_step_rank": "auto", "use_bias": True, "use_conv_bias": False, "tie_word_embeddings": False,
    },
    # Mamba-2 with 4 groups, biases, tied head
    "mamba2-groups": {
        "model_type": "mamba2", "hidden_size": 128, "num_hidden_layers": 2, "vocab_size": 500, "expand": 2,
        "num_heads": 8, "head_dim": 32, "n_groups": 4, "state_size": 16, "use_bias": True,
        "tie_word_embeddings": True,
    },
    # Jamba with attention every 3rd layer (offset 1), experts every 3rd (offset 2), auto dt rank
    "jamba-periods": _variant(
        "jamba-v0.1", **_SMALL, num_hidden_layers=6, num_key_value_heads=4, num_experts=4, num_experts_per_tok=2,
        attn_layer_period=3, attn_layer_offset=1, expert_layer_period=3, expert_layer_offset=2,
        mamba_dt_rank="auto", mamba_proj_bias=True,
    ),
    # Bamba with d_head auto, two groups, MLP bias and attention on layers 0 and 3
    "bamba-auto-head": _variant(
        "bamba-9b", **_SMALL, num_hidden_layers=4, num_key_value_heads=4, attn_layer_indices=[0, 3],
        mamba_n_heads=8, mamba_d_head="auto", mamba_n_groups=2, mamba_d_state=16, mlp_bias=True,
    ),
    # Zamba2: two shared blocks cycled over four hybrid layers, attention adapters, rotary, GQA, biases
    "zamba2-shared-blocks": {
        "model_type": "zamba2", "hidden_size": 128, "vocab_size": 500, "num_attention_heads": 8,
        "num_key_value_heads": 8, "intermediate_size": 192, "n_mamba_heads": 8, "mamba_ngroups": 2,
        "mamba_d_state": 16, "num_mem_blocks": 2, "adapter_rank": 8, "use_shared_attention_adapter": True,
        "use_mem_rope": True, "add_bias_linear": True, "num_hidden_layers": 7,
        "layers_block_type": ["mamba", "hybrid", "hybrid", "mamba", "hybrid", "mamba", "hybrid"],
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_config_knobs_match_transformers(name: str) -> None:
    _check(VARIANTS[name], name)
