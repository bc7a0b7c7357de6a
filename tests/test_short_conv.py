"""``type: short_conv`` (LFM2's gated short convolution) and the lfm2 / lfm2_moe importers: the build against
the analytic figures (parameters, cache bytes, FLOPs under FlopCounterMode, prefill peak), cached decode
against a full forward, the logits of transformers' Lfm2ForCausalLM, and the importers' counts against
Lfm2ForCausalLM / Lfm2MoeForCausalLM on the meta device (no published LFM2 config.json is available
offline: synthetic configs turn each knob)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kind_checks import assert_cached_decode_matches, hf_name, prefill_peaks, spec_from, tiny_model

from godprof.analytic.params import count_params
from godprof.hf import spec_from_hf_config
from godprof.kinds.short_conv import ShortConv
from godprof.measure.flops import analytic_components, count_torch
from godprof.spec import load_spec

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread

# 5 layers: conv, conv, attention, conv, attention (LFM2's pattern in small), biases on the conv mixer so
# their mapping is tested, 3 taps (LFM2's conv_L_cache).
TINY = """
name: tiny-lfm2
family: hybrid
model: {vocab_size: 97, hidden_size: 32, num_layers: 5, tie_embeddings: true}
mixers:
  conv: {type: short_conv, d_conv: 3, bias: true}
  attn: {type: attention, num_heads: 4, num_kv_heads: 2, head_dim: 8, qk_norm: true, rope_theta: 1000000}
ffns:
  mlp: {type: mlp, intermediate_size: 48}
layout:
  mixer: {default: conv, layers: {indices: [2, 4], use: attn}}
"""


# conv layers only (a "linear" family model), so the prefill peak is the short conv's own
CONV_ONLY = """
name: tiny-conv
family: linear
model: {vocab_size: 17, hidden_size: 64, num_layers: 2}
mixers: {conv: {type: short_conv, d_conv: 4}}
ffns: {mlp: {type: mlp, intermediate_size: 16}}
"""


def _spec(text: str = TINY):
    return spec_from(text)


_model = tiny_model


def test_params_and_cache_bytes_equal_the_analytic_figures() -> None:
    spec = _spec()
    model = _model(spec)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).total
    conv: ShortConv = spec.mixers["conv"]
    # hidden 32: in_proj 32 x 96 + 96, conv 32 x 3 + 32, out_proj 32 x 32 + 32
    p = conv.params(32)
    assert p.total == 3_072 + 96 + 96 + 32 + 1_024 + 32 == 4_352 and p.by_component["ssm"] == p.total
    assert ShortConv(channels=32).params(32).total == 3_072 + 96 + 1_024
    cache = model.allocate_cache(3, 50)
    state = [t for i, layer in enumerate(spec.layer_mixers) if layer == "conv" for t in cache.layer_state(i, 3)]
    assert sum(t.numel() for t in state) == 3 * 3 * conv.state_elements() == 3 * 3 * 32 * 3
    assert conv.kv_elements_per_token() == 0


def test_cached_decode_equals_full_forward() -> None:
    """Prefill 7 tokens, then pieces of 1, 2 (shorter than the conv window) and 5; then token by token
    from a 1-token prompt: every step's logits equal the full forward's (fp32)."""
    assert_cached_decode_matches(tiny_model(spec_from(TINY)), pieces=(7, 1, 2, 5), first=0)


@pytest.mark.parametrize("seq", [1, 2, 11])
def test_flop_counter_equals_analytic(seq: int) -> None:
    """FlopCounterMode over one forward: each component's matmuls equal the analytic ones; the depthwise
    conv is the analytic ``conv`` key (2 x hidden x taps per token), nothing else is counted."""
    spec = _spec()
    model = _model(spec)
    ids = torch.randint(0, 97, (2, seq), generator=torch.Generator().manual_seed(1))
    c = count_torch(model, spec, ids, last_only=True)
    assert c.by_component == analytic_components(spec, 2, seq, last_only=True)
    conv: ShortConv = spec.mixers["conv"]
    assert conv.conv_flops_per_token() == 2 * 32 * 3
    assert c.by_category["conv"] == 3 * conv.conv_flops_per_token() * 2 * seq
    assert c.by_category["other"] == 0
    # by hand: in_proj 32 x 96 and out_proj 32 x 32 per token and conv layer
    assert c.by_component["mixer:conv"] == 3 * 2 * (32 * 96 + 32 * 32) * 2 * seq


@settings(max_examples=30, deadline=None)
@given(
    seq=st.integers(1, 1 << 20),
    more=st.integers(1, 1 << 20),
    hidden=st.sampled_from([16, 1024, 2048]),
    taps=st.integers(2, 8),
)
def test_state_is_constant_in_context(seq: int, more: int, hidden: int, taps: int) -> None:
    """No KV cache, no scan; the state is the conv window and the conv costs the same per token at any
    context (decode: one conv step)."""
    k = ShortConv(channels=hidden, d_conv=taps)
    assert k.kv_elements_per_token() == 0 and k.decode_read_elements(seq) == 0
    assert k.state_elements() == hidden * taps
    assert k.decode_attention_flops(seq) == k.decode_attention_flops(seq + more) == 0
    assert k.scan_flops(1, seq) == k.scan_decode_flops() == 0
    assert k.conv_flops_per_token() == 2 * hidden * taps


@pytest.mark.parametrize("text", [TINY, CONV_ONLY], ids=["hybrid", "conv-only"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_peak_within_five_percent_of_measured(dtype: torch.dtype, text: str) -> None:
    """The analytic prefill activation peak against the live-tensor peak of the build on CPU (on the
    conv-only model it is the conv step's, equal to the byte on torch 2.13)."""
    spec = _spec(text)
    model = _model(spec, dtype)
    short = ((2, 5),) if text is CONV_ONLY else ()  # 5 tokens: the hybrid's peak is then attention's, not ours
    for batch, seq in ((1, 64), (4, 200), *short):
        measured, est = prefill_peaks(model, spec, batch, seq)
        assert abs(est - measured) / measured <= 0.05, (batch, seq, est, measured)


# ---------------------------------------------------------------------------- against transformers


_RULES = (
        ("mixer_norm.", "operator_norm."),
        ("ffn_norm.", "ffn_norm."),
        ("mixer.in_proj.", "conv.in_proj."),
        ("mixer.conv.", "conv.conv."),
        ("mixer.out_proj.", "conv.out_proj."),
        ("mixer.o_proj.", "self_attn.out_proj."),
        ("mixer.q_norm.", "self_attn.q_layernorm."),
        ("mixer.k_norm.", "self_attn.k_layernorm."),
        ("mixer.", "self_attn."),
        ("ffn.gate_proj.", "feed_forward.w1."),
        ("ffn.up_proj.", "feed_forward.w3."),
        ("ffn.down_proj.", "feed_forward.w2."),
    )  # fmt: skip


def _hf_name(name: str) -> str:
    return hf_name(name, _RULES, {"norm.weight": "model.embedding_norm.weight"})


@torch.no_grad()
def test_logits_equal_transformers_lfm2() -> None:
    """Our weights copied into Lfm2ForCausalLM by name (conv biases and norms away from their init, so
    their mapping is tested); transformers sizes its MLP from block_ff_dim 72 -> int(2 x 72 / 3) = 48."""
    transformers = pytest.importorskip("transformers")
    spec = _spec()
    model = _model(spec)
    g = torch.Generator().manual_seed(5)
    for n, p in model.named_parameters():
        if n.endswith("norm.weight"):
            p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
        elif n.endswith("bias"):
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    cfg = transformers.Lfm2Config(
        vocab_size=97, hidden_size=32, intermediate_size=72, num_hidden_layers=5, num_attention_heads=4,
        num_key_value_heads=2, conv_bias=True, conv_L_cache=3, block_multiple_of=16,
        layer_types=["conv", "conv", "full_attention", "conv", "full_attention"],
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, norm_eps=1e-5, tie_word_embeddings=True,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.Lfm2ForCausalLM(cfg).eval()
    theirs = dict(hf.named_parameters())  # the tied head is yielded once, as the embedding
    mapped = {_hf_name(n): p for n, p in model.named_parameters()}
    assert set(mapped) == set(theirs), set(mapped) ^ set(theirs)
    for hn, p in mapped.items():
        assert theirs[hn].shape == p.shape, hn
        theirs[hn].copy_(p)
    ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = hf(input_ids=ids, use_cache=False).logits
    got = model(ids)
    assert got.abs().max() > 0.5
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=2e-4)


# ---------------------------------------------------------------------------- importers on the meta device

_LFM2: dict[str, Any] = {
    "model_type": "lfm2", "vocab_size": 1000, "hidden_size": 128, "num_hidden_layers": 6, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 512,
    "layer_types": ["conv", "conv", "full_attention", "conv", "full_attention", "conv"],
}  # fmt: skip
_LFM2_MOE: dict[str, Any] = {
    "model_type": "lfm2_moe", "vocab_size": 1000, "hidden_size": 128, "num_hidden_layers": 5,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 320, "moe_intermediate_size": 48,
    "num_experts": 8, "num_experts_per_tok": 2,
    "layer_types": ["conv", "full_attention", "conv", "conv", "full_attention"],
}  # fmt: skip

VARIANTS: dict[str, dict[str, Any]] = {
    # LFM2-1.2B's published keys in small: legacy block_ff_dim beside intermediate_size (block_ff_dim wins),
    # legacy tie_embedding, auto-adjusted MLP rounded to 256
    "lfm2-legacy-keys": {**_LFM2, "block_ff_dim": 768, "block_ffn_dim_multiplier": 1.0, "tie_embedding": True,
                         "block_auto_adjust_ff_dim": True, "block_multiple_of": 256, "conv_L_cache": 3},
    # multiplier 1.5 and a multiple of 64: int(1.5 x int(2 x 512 / 3)) = 511 -> 512
    "lfm2-multiplier": {**_LFM2, "block_ffn_dim_multiplier": 1.5, "block_multiple_of": 64},
    # no auto adjustment, biased conv mixers, 4 taps, untied head, a wider head than hidden / heads
    "lfm2-plain-mlp-bias": {**_LFM2, "block_auto_adjust_ff_dim": False, "conv_bias": True, "conv_L_cache": 4,
                            "tie_word_embeddings": False, "head_dim": 48},
    # no layer_types: attention on full_attn_idxs
    "lfm2-full-attn-idxs": {**{k: v for k, v in _LFM2.items() if k != "layer_types"}, "full_attn_idxs": [1, 4]},
    # neither: every layer attention (a dense model)
    "lfm2-all-attention": {k: v for k, v in _LFM2.items() if k != "layer_types"},
    # lfm2_moe: 2 dense layers (of intermediate_size as given), then MoE with the expert-bias buffer
    "lfm2-moe-default": _LFM2_MOE,
    # no dense layers, no expert bias, 3 of 8 experts, untied, conv biases
    "lfm2-moe-all-moe": {**_LFM2_MOE, "num_dense_layers": 0, "use_expert_bias": False, "num_experts_per_tok": 3,
                         "tie_word_embeddings": False, "conv_bias": True},
    # legacy tie_embedding false beside tie_word_embeddings true, 1 dense layer, routed scaling
    "lfm2-moe-legacy-tie": {**_LFM2_MOE, "num_dense_layers": 1, "tie_embedding": False, "tie_word_embeddings": True,
                            "routed_scaling_factor": 2.5, "norm_topk_prob": False},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_importer_counts_equal_transformers(name: str) -> None:
    pytest.importorskip("transformers")
    from test_hf_transformers import _check

    _check(VARIANTS[name], name)


def test_importer_reads_the_lfm2_knobs() -> None:
    s = spec_from_hf_config(VARIANTS["lfm2-legacy-keys"], "x")
    assert s.ffns["mlp"].intermediate_size == 512 and s.family == "hybrid" and s.model.tie_embeddings
    assert spec_from_hf_config(VARIANTS["lfm2-multiplier"], "x").ffns["mlp"].intermediate_size == 512
    # a null multiplier (Lfm2MLP's other branch; transformers 5's strict config no longer accepts one): the
    # 2/3 only (341), no rounding
    no_mult = {**_LFM2, "block_ffn_dim_multiplier": None}
    assert spec_from_hf_config(no_mult, "x").ffns["mlp"].intermediate_size == 341
    s = spec_from_hf_config(VARIANTS["lfm2-plain-mlp-bias"], "x")
    assert s.ffns["mlp"].intermediate_size == 512 and s.mixers["conv"] == ShortConv(channels=128, d_conv=4, bias=True)
    s = spec_from_hf_config(VARIANTS["lfm2-full-attn-idxs"], "x")
    assert [s.mixers[m].category for m in s.layer_mixers] == ["linear", "attention", "linear", "linear", "attention",
                                                              "linear"]  # fmt: skip
    assert spec_from_hf_config(VARIANTS["lfm2-all-attention"], "x").family == "dense"
    s = spec_from_hf_config(VARIANTS["lfm2-moe-default"], "x")
    moe = s.ffns["moe"]
    assert s.layer_ffns == ("mlp", "mlp", "moe", "moe", "moe") and s.ffns["mlp"].intermediate_size == 320
    assert (moe.routing, moe.score_bias, moe.num_experts, moe.top_k) == ("sigmoid", "buffer", 8, 2)
    s = spec_from_hf_config(VARIANTS["lfm2-moe-legacy-tie"], "x")
    assert not s.model.tie_embeddings and s.ffns["moe"].routed_scaling_factor == 2.5
    assert spec_from_hf_config(VARIANTS["lfm2-moe-all-moe"], "x").ffns["moe"].score_bias == "none"


def test_importer_errors_name_the_key() -> None:
    from godprof.errors import SpecError

    bad = {**_LFM2, "layer_types": ["conv", "mamba", "conv", "conv", "conv", "conv"]}
    with pytest.raises(SpecError, match="layer_types"):
        spec_from_hf_config(bad, "x")
    with pytest.raises(SpecError, match="layer_types"):
        spec_from_hf_config({**_LFM2, "layer_types": ["conv"] * 5}, "x")
    with pytest.raises(SpecError, match="layer_types"):
        spec_from_hf_config({k: v for k, v in _LFM2_MOE.items() if k != "layer_types"}, "x")


# LiquidAI/LFM2-1.2B's config.json keys (https://huggingface.co/LiquidAI/LFM2-1.2B; as re-saved in
# https://huggingface.co/saranshagarwal2020/p-vector/blob/main/config.json)
LFM2_1_2B: dict[str, Any] = {
    "model_type": "lfm2", "block_auto_adjust_ff_dim": True, "block_dim": 2048, "block_ff_dim": 12288,
    "block_ffn_dim_multiplier": 1.0, "block_multiple_of": 256, "conv_L_cache": 3, "conv_bias": False,
    "hidden_size": 2048, "intermediate_size": 12288, "max_position_embeddings": 128000, "norm_eps": 1e-05,
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "rope_theta": 1000000.0,
    "tie_embedding": True, "vocab_size": 65536,
    "layer_types": ["conv", "conv", "full_attention", "conv", "conv", "full_attention", "conv", "conv",
                    "full_attention", "conv", "full_attention", "conv", "full_attention", "conv", "full_attention",
                    "conv"],
}  # fmt: skip


def test_bundled_spec_equals_the_config_import_and_transformers() -> None:
    """specs/lfm2-1.2b.yaml against the import of LFM2-1.2B's config keys, and both against the model card's
    1,170,340,608 and Lfm2ForCausalLM on the meta device. State per sequence: 10 conv layers x 2048 x 3."""
    spec = load_spec("lfm2-1.2b")
    imported = spec_from_hf_config(LFM2_1_2B, "lfm2-1.2b.json")
    a, b = count_params(spec), count_params(imported)
    assert (a.total, a.active, a.matmul_per_token) == (b.total, b.active, b.matmul_per_token)
    assert a.total == 1_170_340_608 == spec.published.params_total
    assert [spec.mixers[m].category for m in spec.layer_mixers] == [
        imported.mixers[m].category for m in imported.layer_mixers
    ]
    state = sum(spec.mixers[m].state_elements() for m in spec.layer_mixers)
    assert state == 10 * 2048 * 3 == 61_440  # 122,880 bytes per sequence at bf16
    if pytest.importorskip("transformers"):
        from test_hf_transformers import _check

        _check(LFM2_1_2B, "lfm2-1.2b.json")
