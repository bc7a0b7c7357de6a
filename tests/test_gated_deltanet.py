"""``type: gated_deltanet`` (Gated DeltaNet, Qwen3-Next's linear attention) and attention's ``output_gate``:
the build against the analytic figures (parameters, cache bytes, FLOPs under FlopCounterMode), cached
decode against a full forward, and the logits of transformers' Qwen3NextForCausalLM."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kind_checks import assert_cached_decode_matches, hf_name, prefill_peaks, spec_from, tiny_model

from godprof.analytic.params import count_params
from godprof.kinds.gated_deltanet import GatedDeltaNet
from godprof.measure.flops import analytic_components, count_torch, ssm_matmul_flops

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread

# 4 layers: three Gated DeltaNet, one gated attention (Qwen3-Next's 3:1), a dense MLP and a MoE with a
# shared expert behind a sigmoid gate; chunks of 4 so a short prompt spans several chunks.
TINY = """
name: tiny-qwen3-next
family: hybrid
model: {vocab_size: 97, hidden_size: 32, num_layers: 4}
mixers:
  gdn: {type: gated_deltanet, num_key_heads: 2, num_value_heads: 4, key_head_dim: 8, value_head_dim: 6,
        d_conv: 4, chunk_size: 4}
  attn: {type: attention, num_heads: 4, num_kv_heads: 2, head_dim: 8, qk_norm: true, rotary_dim: 4,
         rope_theta: 10000000, output_gate: true}
ffns:
  mlp: {type: mlp, intermediate_size: 40}
  moe: {type: moe, num_experts: 4, top_k: 2, expert_intermediate_size: 16, num_shared_experts: 1,
        shared_intermediate_size: 24, shared_expert_gate: true}
layout:
  mixer: {default: gdn, every: {period: 4, offset: 3, use: attn}}
  ffn: {default: moe, first: {count: 1, use: mlp}}
"""


def _spec(text: str = TINY):
    return spec_from(text)


_model = tiny_model


def test_params_and_cache_bytes_equal_the_analytic_figures() -> None:
    spec = _spec()
    model = _model(spec)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).total
    gdn = spec.mixers["gdn"]
    # hidden 32: qkvz 32 x (2 x 16 + 2 x 24) + ba 32 x 8 + conv 56 x 4 + dt_bias, A_log 2 x 4 + out 24 x 32; norm 6
    p = gdn.params(32)
    assert p.total == 2_560 + 256 + 224 + 8 + 768 + 6 and p.by_component["norms"] == 6
    cache = model.allocate_cache(3, 50)
    state = [t for i, layer in enumerate(spec.layer_mixers) if layer == "gdn" for t in cache.layer_state(i, 3)]
    assert sum(t.numel() for t in state) == 3 * 3 * gdn.state_elements() == 3 * 3 * (56 * 4 + 4 * 8 * 6)
    attn = spec.mixers["attn"]
    assert attn.params(32).by_component["attention"] == 32 * 64 + 2 * 32 * 16 + 32 * 32  # q_proj with its gate


def test_cached_decode_equals_full_forward() -> None:
    """Prefill 9 tokens (chunks of 4: two whole and one padded), then pieces of 1, 3 and 6 tokens; every
    step's logits equal the full forward's (fp32)."""
    assert_cached_decode_matches(tiny_model(spec_from(TINY)), pieces=(9, 1, 3, 6), first=5)


@pytest.mark.parametrize("seq", [16, 13, 3])
def test_flop_counter_equals_analytic(seq: int) -> None:
    """FlopCounterMode over one forward: each component's matmuls (the rule's chunk products inside the
    Gated DeltaNet mixer) equal the analytic ones, the conv its own key; 13 tokens pad the last chunk."""
    spec = _spec()
    model = _model(spec)
    ids = torch.randint(0, 97, (2, seq), generator=torch.Generator().manual_seed(1))
    c = count_torch(model, spec, ids, last_only=True)
    assert c.by_component == analytic_components(spec, 2, seq, last_only=True)
    gdn: GatedDeltaNet = spec.mixers["gdn"]
    assert c.by_category["conv"] == 3 * gdn.conv_flops_per_token() * 2 * seq
    assert c.by_category["other"] == 0
    # the recurrence's matmul share, by hand: Q = min(4, seq), c chunks, 4 value heads, d_k 8, d_v 6
    q = min(4, seq)
    slots = -(-seq // q) * q
    per_slot = 4 * q * 8 + 2 * q * 6 + 6 * 8 * 6
    assert ssm_matmul_flops(spec, 2, seq) == 3 * 2 * 4 * slots * per_slot
    # the triangular solves are in the scan figure, not in what the counter sees
    assert gdn.scan_flops(2, seq) - gdn.scan_matmul_flops(2, seq) == 2 * 4 * (slots // q) * q * (q - 1) * 14


def test_qwen3_next_state_per_sequence() -> None:
    """Qwen3-Next's defaults: conv over 2 x 2,048 + 4,096 channels x 4, state 32 x 128 x 128."""
    g = GatedDeltaNet()
    assert g.state_elements() == 8_192 * 4 + 32 * 128 * 128 == 557_056


@settings(max_examples=30, deadline=None)
@given(
    seq=st.integers(1, 1 << 20),
    more=st.integers(1, 1 << 20),
    kh=st.sampled_from([1, 2, 16]),
    r=st.sampled_from([1, 2]),
    chunk=st.sampled_from([16, 64]),
)
def test_state_is_constant_in_context(seq: int, more: int, kh: int, r: int, chunk: int) -> None:
    """No KV cache and a state that does not grow with context; the scan grows linearly in whole chunks."""
    g = GatedDeltaNet(num_key_heads=kh, num_value_heads=kh * r, chunk_size=chunk)
    assert g.kv_elements_per_token() == 0 and g.decode_read_elements(seq) == 0
    assert g.state_elements() == g.conv_dim * 4 + kh * r * 128 * 128
    assert g.decode_attention_flops(seq) == g.decode_attention_flops(seq + more) == 0
    if seq >= chunk:
        whole = chunk * (seq // chunk + 1)
        assert g.scan_matmul_flops(1, whole) == (whole // chunk) * g.scan_matmul_flops(1, chunk)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_peak_within_five_percent_of_measured(dtype: torch.dtype) -> None:
    """The analytic prefill activation peak against the live-tensor peak of the build on CPU."""
    spec = _spec()
    model = _model(spec, dtype)
    for batch, seq in ((1, 64), (4, 200)):
        measured, est = prefill_peaks(model, spec, batch, seq)
        assert abs(est - measured) / measured <= 0.05, (batch, seq, est, measured)


# ---------------------------------------------------------------------------- against transformers

ZERO_CENTRED = ("input_layernorm.", "post_attention_layernorm.", "q_norm.", "k_norm.")


_RULES = (
        ("mixer_norm.", "input_layernorm."),
        ("ffn_norm.", "post_attention_layernorm."),
        ("mixer.in_proj", "linear_attn.in_proj"),
        ("mixer.conv1d.", "linear_attn.conv1d."),
        ("mixer.dt_bias", "linear_attn.dt_bias"),
        ("mixer.A_log", "linear_attn.A_log"),
        ("mixer.norm.", "linear_attn.norm."),
        ("mixer.out_proj.", "linear_attn.out_proj."),
        ("mixer.", "self_attn."),
        ("ffn.router.", "mlp.gate."),
        ("ffn.experts.w_in", "mlp.experts.gate_up_proj"),
        ("ffn.experts.w_out", "mlp.experts.down_proj"),
        ("ffn.shared_gate.", "mlp.shared_expert_gate."),
        ("ffn.shared.", "mlp.shared_expert."),
        ("ffn.", "mlp."),
    )  # fmt: skip


def _hf_name(name: str) -> str:
    return hf_name(name, _RULES)


@torch.no_grad()
def test_logits_equal_transformers_qwen3_next() -> None:
    """Our weights copied into Qwen3NextForCausalLM by name (its RMSNorms hold weight - 1: they scale by
    1 + weight; the gated norm does not); 11 tokens in chunks of 4 (transformers' chunked fallback runs
    with its default chunk of 64, so the chunking itself is checked against the whole-sequence form)."""
    transformers = pytest.importorskip("transformers")
    spec = _spec()
    model = _model(spec)
    g = torch.Generator().manual_seed(5)
    for n, p in model.named_parameters():  # norms away from 1, so their mapping is tested
        if n.endswith("norm.weight"):
            p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
    cfg = transformers.Qwen3NextConfig(
        vocab_size=97, hidden_size=32, intermediate_size=40, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, partial_rotary_factor=0.5, rope_theta=10000000.0,
        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=6,
        linear_conv_kernel_dim=4, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
        shared_expert_intermediate_size=24, mlp_only_layers=[0], decoder_sparse_step=1, norm_topk_prob=True,
        full_attention_interval=4, rms_norm_eps=1e-5, tie_word_embeddings=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.Qwen3NextForCausalLM(cfg).eval()
    theirs = dict(hf.named_parameters())
    mapped = {_hf_name(n): (n, p) for n, p in model.named_parameters()}
    assert set(mapped) == set(theirs), set(mapped) ^ set(theirs)
    for hn, (_, p) in mapped.items():
        assert theirs[hn].shape == p.shape, hn
        centred = any(z in hn for z in ZERO_CENTRED) or hn == "model.norm.weight"
        theirs[hn].copy_(p - 1.0 if centred else p)
    ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = hf(input_ids=ids, use_cache=False).logits
    got = model(ids)
    assert got.abs().max() > 0.5
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=2e-4)


def test_bundled_spec_equals_the_published_config_import() -> None:
    """specs/qwen3-next-80b-a3b.yaml against tests/fixtures/hf/qwen3-next-80b-a3b.json (whose counts
    tests/test_hf_transformers.py checks against Qwen3NextForCausalLM on the meta device)."""
    from pathlib import Path

    from godprof.hf import spec_from_config_file
    from godprof.spec import load_spec

    spec = load_spec("qwen3-next-80b-a3b")
    imported = spec_from_config_file(Path(__file__).parent / "fixtures" / "hf" / "qwen3-next-80b-a3b.json")
    a, b = count_params(spec), count_params(imported)
    assert (a.total, a.active, a.matmul_per_token) == (b.total, b.active, b.matmul_per_token)
    assert (a.total, a.active) == (79_674_391_296, 3_874_929_408)
    assert [spec.mixers[m].type for m in spec.layer_mixers] == (["gated_deltanet"] * 3 + ["attention"]) * 12
    # state per sequence: 36 Gated DeltaNet layers x (8,192 x 4 conv + 32 x 128 x 128) elements
    assert sum(spec.mixers[m].state_elements() for m in spec.layer_mixers) == 36 * 557_056
