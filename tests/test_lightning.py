"""``type: lightning`` (MiniMax-Text-01's lightning attention) and the ``minimax`` importer: the build against
the analytic figures (parameters, state bytes, FLOPs under FlopCounterMode), cached decode against a full
forward, the logits of transformers' MiniMaxForCausalLM, and imported configs against transformers' counts
on the meta device."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kind_checks import assert_cached_decode_matches, hf_name, prefill_peaks, spec_from, tiny_model

from godprof.analytic.params import count_params
from godprof.build.kinds.lightning import LightningMixer, slope_rate
from godprof.hf import spec_from_hf_config
from godprof.kinds import MIXER_KINDS
from godprof.kinds.lightning import Lightning
from godprof.measure.flops import analytic_components, count_torch, ssm_matmul_flops
from godprof.spec import load_spec

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread

# 4 layers: three lightning, one softmax attention (MiniMax's 7:1, shortened), a MoE on every layer;
# blocks of 4 so a short prompt spans several blocks. Full rotary: transformers' MiniMax rotates the whole head.
TINY = """
name: tiny-minimax
family: hybrid
model: {vocab_size: 97, hidden_size: 32, num_layers: 4}
mixers:
  lightning: {type: lightning, num_heads: 4, head_dim: 8, block_size: 4}
  attn: {type: attention, num_heads: 4, num_kv_heads: 2, head_dim: 8, rope_theta: 1000000}
ffns:
  moe: {type: moe, num_experts: 4, top_k: 2, expert_intermediate_size: 16}
layout:
  mixer: {default: lightning, every: {period: 4, offset: 3, use: attn}}
"""


def _spec(text: str = TINY):
    return spec_from(text)


_model = tiny_model  # the model places each mixer's slopes


def test_registered_and_params_and_cache_bytes_equal_the_analytic_figures() -> None:
    assert MIXER_KINDS["lightning"] is Lightning
    spec = _spec()
    model = _model(spec)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).total
    lt = spec.mixers["lightning"]
    # hidden 32, 4 heads of 8: qkv 32 x 96 + gate 32 x 32 + out 32 x 32; norm 32
    p = lt.params(32)
    assert p.total == 3_072 + 1_024 + 1_024 + 32 and p.by_component["norms"] == 32
    assert p.matmul == 5 * 32 * 32
    cache = model.allocate_cache(3, 50)
    state = [t for i, layer in enumerate(spec.layer_mixers) if layer == "lightning" for t in cache.layer_state(i, 3)]
    assert sum(t.numel() for t in state) == 3 * 3 * lt.state_elements() == 3 * 3 * 4 * 8 * 8
    assert cache.nbytes() == 3 * 3 * 256 * 4 + 3 * 50 * 2 * 2 * 8 * 4  # fp32 state + the attention layer's KV


def test_slopes_follow_transformers_depth_schedule() -> None:
    """2^(-8 (h + 1) / H), scaled by 1 - layer / (layers - 1 + 1e-5) + 1e-5: the last layer decays least."""
    s0, s3 = slope_rate(8, 0, 4).flatten(), slope_rate(8, 3, 4).flatten()
    assert s0[0].item() == pytest.approx(0.5 * (1 + 1e-5))
    assert s0[-1].item() == pytest.approx(2**-8 * (1 + 1e-5))
    assert torch.all(s3 < 1e-4 * s0)


def test_cached_decode_equals_full_forward() -> None:
    """Prefill 9 tokens (blocks of 4: two whole and one partial), then pieces of 1, 3 and 6 tokens; and
    single-token decode from a 5-token prefill: every step's logits equal the full forward's (fp32)."""
    assert_cached_decode_matches(tiny_model(spec_from(TINY)), pieces=(9, 1, 3, 6), first=5)


@torch.no_grad()
def test_block_wise_prefill_equals_the_recurrence() -> None:
    """The mixer's block-wise prefill equals the token-by-token recurrence S <- e^-s S + k^T v, o = q S."""
    m = Lightning(num_heads=3, head_dim=5, block_size=4)
    mixer = LightningMixer(m, 16, {"device": torch.device("cpu"), "dtype": torch.float32})
    g = torch.Generator().manual_seed(4)
    for p in mixer.parameters():
        p.copy_(0.3 * torch.randn(p.shape, generator=g))
    mixer.place(1, 3)
    x = torch.randn(2, 11, 16, generator=g)
    whole = mixer(x, 0, None)
    state = mixer.allocate(2, 11, torch.float32, torch.device("cpu"))
    steps = torch.cat([mixer(x[:, i : i + 1], i, state) for i in range(11)], dim=1)
    torch.testing.assert_close(whole, steps, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seq", [16, 13, 3])
def test_flop_counter_equals_analytic(seq: int) -> None:
    """FlopCounterMode over one forward: each component's matmuls (the block products inside the lightning
    mixer) equal the analytic ones; 13 tokens leave a partial last block, 3 fit in one."""
    spec = _spec()
    model = _model(spec)
    ids = torch.randint(0, 97, (2, seq), generator=torch.Generator().manual_seed(1))
    c = count_torch(model, spec, ids, last_only=True)
    assert c.by_component == analytic_components(spec, 2, seq, last_only=True)
    assert c.by_category["other"] == 0 and c.by_category["conv"] == 0
    # by hand: blocks of b tokens, 4 heads of d = 8: 4 b^2 d + 4 b d^2 each, 3 lightning layers, batch 2
    blocks = [4] * (seq // 4) + ([seq % 4] if seq % 4 else [])
    per_head = sum(4 * b * b * 8 + 4 * b * 64 for b in blocks)
    assert ssm_matmul_flops(spec, 2, seq) == 3 * 2 * 4 * per_head
    lt: Lightning = spec.mixers["lightning"]
    elementwise = sum(b * b + 2 * b * 8 + 2 * 64 for b in blocks)
    assert lt.scan_flops(2, seq) - lt.scan_matmul_flops(2, seq) == 2 * 4 * elementwise


@settings(max_examples=30, deadline=None)
@given(
    seq=st.integers(1, 1 << 20),
    more=st.integers(1, 1 << 20),
    heads=st.sampled_from([1, 8, 64]),
    d=st.sampled_from([64, 128]),
    block=st.sampled_from([64, 256]),
)
def test_state_is_constant_in_context(seq: int, more: int, heads: int, d: int, block: int) -> None:
    """No KV cache and a state that does not grow with context; the scan grows linearly in whole blocks
    and a decode step costs the same at any context."""
    lt = Lightning(num_heads=heads, head_dim=d, block_size=block)
    assert lt.kv_elements_per_token() == 0 and lt.decode_read_elements(seq) == 0
    assert lt.state_elements() == heads * d * d
    assert lt.decode_attention_flops(seq) == lt.decode_attention_flops(seq + more) == 0
    assert lt.scan_decode_flops() == 5 * heads * d * d
    whole = block * (seq // block + 1)
    assert lt.scan_matmul_flops(1, whole) == (whole // block) * lt.scan_matmul_flops(1, block)
    assert lt.scan_flops(2, seq) >= lt.scan_matmul_flops(2, seq) > 0


@torch.no_grad()
def test_built_state_is_constant_in_context() -> None:
    """The built mixer's cache has the same bytes for 8 and 8,000 tokens of room."""
    spec = _spec()
    model = _model(spec)
    small, large = model.allocate_cache(1, 8), model.allocate_cache(1, 8_000)
    lt = [i for i, m in enumerate(spec.layer_mixers) if m == "lightning"]
    for i in lt:
        assert [t.shape for t in small.layer_state(i, 1)] == [t.shape for t in large.layer_state(i, 1)]


# lightning-dominated: 8 heads of 16 (4x the width) beside a small MLP, blocks of 64
WIDE = """
name: wide-lightning
family: linear
model: {vocab_size: 97, hidden_size: 32, num_layers: 2}
mixers:
  lt: {type: lightning, num_heads: 8, head_dim: 16, block_size: 64}
ffns:
  mlp: {type: mlp, intermediate_size: 16}
"""


@pytest.mark.parametrize("text", [TINY, WIDE], ids=["tiny", "wide"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_peak_within_ten_percent_of_measured(text: str, dtype: torch.dtype) -> None:
    """The analytic prefill activation peak against the live-tensor peak of the build on CPU."""
    spec = _spec(text)
    model = _model(spec, dtype)
    for batch, seq in ((1, 7), (1, 64), (4, 200)):
        measured, est = prefill_peaks(model, spec, batch, seq)
        assert abs(est - measured) / measured <= 0.10, (batch, seq, est, measured)


# ---------------------------------------------------------------------------- against transformers


_RULES = (
        ("mixer_norm.", "input_layernorm."),
        ("ffn_norm.", "post_attention_layernorm."),
        ("mixer.", "self_attn."),
        ("ffn.router.", "mlp.gate."),
        ("ffn.experts.w_in", "mlp.experts.gate_up_proj"),
        ("ffn.experts.w_out", "mlp.experts.down_proj"),
    )  # fmt: skip


def _hf_name(name: str) -> str:
    return hf_name(name, _RULES)


def _pre_norm_layer(self: Any, hidden_states: torch.Tensor, position_embeddings: Any = None,
                    attention_mask: Any = None, position_ids: Any = None, cache: Any = None,
                    use_cache: bool | None = False, **kwargs: Any) -> torch.Tensor:  # fmt: skip
    """MiniMaxDecoderLayer with godprof's block wiring, x + mix(n1(x)) then + ffn(n2(.)): MiniMax adds the
    residual from the normed input times alpha, which godprof's blocks do not model (no parameters)."""
    h, _ = self.self_attn(
        hidden_states=self.input_layernorm(hidden_states), position_embeddings=position_embeddings,
        attention_mask=attention_mask, position_ids=position_ids, cache=cache, use_cache=use_cache, **kwargs,
    )  # fmt: skip
    x = hidden_states + h
    return x + self.mlp(self.post_attention_layernorm(x))


@torch.no_grad()
def test_logits_equal_transformers_minimax(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our weights copied into MiniMaxForCausalLM by name, its decoder layers wired as godprof's blocks
    (see ``_pre_norm_layer``); 11 tokens in blocks of 4 (two whole, one partial) through transformers'
    prefill loop; the per-layer slopes equal its ``slope_rate`` buffers."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.minimax import modeling_minimax

    monkeypatch.setattr(modeling_minimax.MiniMaxDecoderLayer, "forward", _pre_norm_layer)
    spec = _spec()
    model = _model(spec)
    g = torch.Generator().manual_seed(5)
    for n, p in model.named_parameters():  # norms away from 1, so their mapping is tested
        if n.endswith("norm.weight"):
            p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
    cfg = transformers.MiniMaxConfig(
        vocab_size=97, hidden_size=32, intermediate_size=16, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, num_local_experts=4, num_experts_per_tok=2, block_size=4,
        layer_types=["linear_attention"] * 3 + ["full_attention"], rope_theta=1000000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.MiniMaxForCausalLM(cfg).eval()
    theirs = dict(hf.named_parameters())
    mapped = {_hf_name(n): p for n, p in model.named_parameters()}
    assert set(mapped) == set(theirs), set(mapped) ^ set(theirs)
    for hn, p in mapped.items():
        assert theirs[hn].shape == p.shape, hn
        theirs[hn].copy_(p)
    buffers = dict(hf.named_buffers())
    for n, b in model.named_buffers():
        if n.endswith("slope_rate"):
            torch.testing.assert_close(b, buffers[_hf_name(n)].float())
    ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = hf(input_ids=ids, use_cache=False).logits
    got = model(ids)
    assert got.abs().max() > 0.5
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=2e-4)


_SMALL: dict[str, Any] = {"model_type": "minimax", "hidden_size": 64, "vocab_size": 500, "num_attention_heads": 4,
                          "num_key_value_heads": 2, "intermediate_size": 48, "num_local_experts": 4}  # fmt: skip
VARIANTS: dict[str, dict[str, Any]] = {
    # transformers' default alternation (full on even layers), head_dim from hidden / heads
    "default-alternation": {**_SMALL, "num_hidden_layers": 4},
    # the release's 7:1 pattern over 8 layers, a head wider than hidden / heads, top-2 of 8, tied head
    "seven-to-one": {
        **_SMALL, "num_hidden_layers": 8, "head_dim": 32, "num_local_experts": 8, "tie_word_embeddings": True,
        "layer_types": ["linear_attention"] * 7 + ["full_attention"],
    },
    # lightning only, top-1, another block size
    "all-linear": {**_SMALL, "num_hidden_layers": 2, "num_experts_per_tok": 1, "block_size": 64,
                   "layer_types": ["linear_attention"] * 2},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_importer_matches_transformers_on_meta(name: str) -> None:
    """Total and active parameters equal MiniMaxForCausalLM's on the meta device; the same layers are
    lightning, softmax attention and MoE."""
    pytest.importorskip("transformers")
    from test_hf_transformers import _build, _decoder_layers, _hf_counts

    cfg = VARIANTS[name]
    spec = spec_from_hf_config(cfg, name)
    ours = count_params(spec)
    model, hf_cfg = _build(cfg)
    total, active, moe_layers = _hf_counts(model, hf_cfg)
    assert (ours.total, ours.active) == (total, active)
    assert moe_layers == spec.model.num_layers
    theirs = [type(layer.self_attn).__name__ for layer in _decoder_layers(model)]
    kinds = {"lightning": "MiniMaxLightningAttention", "attention": "MiniMaxAttention"}
    assert [kinds[spec.mixers[m].type] for m in spec.layer_mixers] == theirs
    lt = [spec.mixers[m] for m in spec.layer_mixers if spec.mixers[m].type == "lightning"]
    assert all(m.block_size == cfg.get("block_size", 256) for m in lt)


def test_importer_refuses_attn_type_list_without_layer_types() -> None:
    from godprof.errors import SpecError

    cfg = {**_SMALL, "num_hidden_layers": 2, "attn_type_list": [0, 1]}
    with pytest.raises(SpecError, match="attn_type_list"):
        spec_from_hf_config(cfg, "remote-code.json")


def test_bundled_spec_counts_and_state() -> None:
    """specs/minimax-text-01.yaml: 456.09B total, 48.40B active (45.94B without embedding and head, the
    card's 45.9B); 70 lightning layers of 64 x 128 x 128 state: 146,800,640 bytes per sequence at bf16 at
    any context, beside 10 softmax layers' KV cache (2 x 8 x 128 per token each)."""
    spec = load_spec("minimax-text-01")
    p = count_params(spec)
    assert (p.total, p.active) == (456_089_655_296, 48_403_306_496)
    assert p.active - 2 * 200_064 * 6_144 == 45_944_920_064
    assert [spec.mixers[m].type for m in spec.layer_mixers] == (["lightning"] * 7 + ["attention"]) * 10
    assert 2 * sum(spec.mixers[m].state_elements() for m in spec.layer_mixers) == 146_800_640
    assert sum(spec.mixers[m].kv_elements_per_token() for m in spec.layer_mixers) == 10 * 2 * 8 * 128
    doc = {
        **_SMALL, "hidden_size": 6144, "vocab_size": 200064, "num_attention_heads": 64, "num_key_value_heads": 8,
        "head_dim": 128, "intermediate_size": 9216, "num_local_experts": 32, "num_hidden_layers": 80,
        "rotary_dim": 64, "layer_types": (["linear_attention"] * 7 + ["full_attention"]) * 10,
    }  # fmt: skip
    imported = count_params(spec_from_hf_config(doc, "minimax-text-01-hf"))
    assert (imported.total, imported.active) == (p.total, p.active)
