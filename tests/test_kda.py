"""``type: kda`` (Kimi Delta Attention) and the Kimi Linear importer.

The build against the analytic kind (parameters, cache bytes, FLOPs, prefill working set), cached decode
against a full forward, the logits against transformers' KimiLinearForCausalLM on a tiny config (our
weights copied in by name), and the importer's counts against transformers on the meta device for the
published Kimi-Linear-48B-A3B config.json.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from kind_checks import hf_name, prefill_peaks

from godprof.analytic import Workload, count_params
from godprof.analytic import flops as F
from godprof.analytic.memory import kv_cache_bytes, ssm_state_bytes
from godprof.build import build_model
from godprof.build.kinds.kda import kda_chunked, kda_step
from godprof.dtypes import get_dtype
from godprof.kinds import MIXER_KINDS
from godprof.kinds.kda import KDA
from godprof.measure.flops import analytic_components, count_torch, ssm_matmul_flops
from godprof.spec import load_spec, parse_spec_text

BF16 = get_dtype("bf16")
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread

KIMI_JSON = Path(__file__).parent / "fixtures" / "hf" / "kimi-linear-48b-a3b.json"
if not KIMI_JSON.exists():
    KIMI_JSON = KIMI_JSON.parent / "unsupported" / KIMI_JSON.name

# Kimi Linear in miniature: KDA, MLA on layer 3, a dense first layer, sigmoid-routed MoE with a shared expert
HYBRID = """
name: tiny-kimi
family: hybrid
model: {vocab_size: 97, hidden_size: 32, num_layers: 4}
mixers:
  kda: {type: kda, num_heads: 2, head_dim: 8, chunk_size: 4}
  mla: {type: mla, num_heads: 2, kv_lora_rank: 16, qk_nope_head_dim: 8, qk_rope_head_dim: 4, v_head_dim: 8}
ffns:
  mlp: {type: mlp, intermediate_size: 40}
  moe: {type: moe, num_experts: 4, top_k: 2, expert_intermediate_size: 12, num_shared_experts: 1,
        routing: sigmoid, score_bias: buffer, routed_scaling_factor: 2.5}
layout:
  mixer: {default: kda, layers: {indices: [3], use: mla}}
  ffn: {default: moe, first: {count: 1, use: mlp}}
"""

# the same without MLA: a linear-attention model (what transformers' Kimi matches logit for logit)
LINEAR = (
    HYBRID.replace("family: hybrid", "family: linear")
    .replace(
        "  mla: {type: mla, num_heads: 2, kv_lora_rank: 16, qk_nope_head_dim: 8, qk_rope_head_dim: 4, v_head_dim: 8}\n",
        "",
    )
    .replace("  mixer: {default: kda, layers: {indices: [3], use: mla}}\n", "")
)


def _spec(text: str = HYBRID):
    return parse_spec_text(text, "inline")


def test_registered_and_parsed() -> None:
    assert MIXER_KINDS["kda"] is KDA
    k = _spec().mixers["kda"]
    assert isinstance(k, KDA) and k.category == "linear" and k.rank == 8 and k.d_conv == 4


def test_hand_count() -> None:
    # hidden 32, 2 heads of 8 (D = 16), rank 8, conv 4: q/k/v 3 x 32 x 16 = 1,536; conv 48 x 4 = 192;
    # f_a 32 x 8 + f_b 8 x 16 = 384; dt_bias 16 + A_log 2 = 18; b_proj 32 x 2 = 64; g_a/g_b 384;
    # o_norm 8; o_proj 16 x 32 = 512 -> 3,098
    k = _spec().mixers["kda"]
    p = k.params(32)
    assert p.total == 3_098 and p.by_component["norms"] == 8
    assert p.matmul == 1_536 + 384 + 64 + 384 + 512
    assert k.state_elements() == 48 * 4 + 2 * 8 * 8 == 320
    assert k.conv_flops_per_token() == 2 * 48 * 4
    assert k.scan_decode_flops() == 7 * 2 * 64
    # seq 10, chunk 4: 3 chunks (the last padded); per head and chunk 6 Q^2 d + 6 Q d^2 = 768 + 1,536
    assert k.scan_matmul_flops(2, 10) == 2 * 2 * 3 * 2_304
    assert k.scan_flops(2, 10) == k.scan_matmul_flops(2, 10) + 2 * 2 * 3 * (4 * 16 * 8 + 20)


def test_build_params_and_cache_bytes_equal_analytic() -> None:
    spec = _spec()
    model = build_model(spec, "cpu", torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).total
    cache = model.allocate_cache(batch=3, max_len=50)
    kda_bytes = sum(t.nbytes for i, s in enumerate(cache.layers) if spec.layer_mixers[i] == "kda" for t in s)
    assert kda_bytes == ssm_state_bytes(spec, 3, BF16) == 3 * 3 * 320 * 2
    total = sum(t.nbytes for s in cache.layers for t in s)
    assert total == kda_bytes + kv_cache_bytes(spec, 3, 50, BF16)


def test_state_constant_in_context() -> None:
    lin = _spec(LINEAR)
    assert lin.family == "linear" and all(m == "kda" for m in lin.layer_mixers)
    for ctx in (1_000, 1_000_000):
        assert kv_cache_bytes(lin, 4, ctx, BF16) == 0
    assert ssm_state_bytes(lin, 4, BF16) == 4 * 4 * 320 * 2  # batch x layers x elements x 2 bytes
    assert F.ssm_decode_flops_per_token(lin) == 4 * 7 * 2 * 64


@torch.no_grad()
@pytest.mark.parametrize("prefill", [1, 6, 9])
def test_cached_decode_equals_full_forward(prefill: int) -> None:
    """Prefill (chunk 4: several chunks, the last one padded), a multi-token continuation, then one token at
    a time, against one full forward without a cache; fp32."""
    spec = _spec()
    model = build_model(spec, "cpu", torch.float32, init_std=0.15, seed=1)
    ids = torch.randint(0, 97, (2, 19), generator=torch.Generator().manual_seed(0))
    full = model(ids)
    cache = model.allocate_cache(2, 24)
    outs = [model(ids[:, :prefill], cache=cache), model(ids[:, prefill : prefill + 5], cache=cache)]
    outs += [model(ids[:, i : i + 1], cache=cache) for i in range(prefill + 5, 19)]
    got = torch.cat(outs, dim=1)
    assert full.abs().max() > 0.5
    torch.testing.assert_close(got, full, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_chunked_equals_recurrent_reference() -> None:
    """The chunked form (chunks of 1, 3, 8 and the whole sequence) against the token-by-token recurrence,
    with strong decays (A up to 16) and a nonzero initial state."""
    g = torch.Generator().manual_seed(4)
    b, H, L, d = 2, 3, 13, 8
    q, k = (torch.nn.functional.normalize(torch.randn(b, H, L, d, generator=g), dim=-1) for _ in range(2))
    v = torch.randn(b, H, L, d, generator=g)
    gd = -16 * torch.rand(b, H, L, d, generator=g)
    beta = torch.rand(b, H, L, generator=g)
    h0 = torch.randn(b, H, d, d, generator=g)
    S, ref = h0, []
    for t in range(L):
        o, S = kda_step(q[:, :, t], k[:, :, t], v[:, :, t], gd[:, :, t], beta[:, :, t], S)
        ref.append(o)
    ref_o = torch.stack(ref, dim=2)
    for chunk in (1, 3, 8, L):
        o, fin = kda_chunked(q, k, v, gd, beta, chunk, h0)
        torch.testing.assert_close(o, ref_o, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fin, S, atol=1e-5, rtol=1e-5)


def test_flop_counter_equals_analytic() -> None:
    spec = _spec()
    model = build_model(spec, "cpu", torch.float32)
    B, S = 2, 10  # 3 chunks of 4, the last padded
    ids = torch.randint(0, 97, (B, S))
    c = count_torch(model, spec, ids, last_only=True)
    comps = analytic_components(spec, B, S, last_only=True)
    assert c.by_component == comps
    kda_scan = 3 * spec.mixers["kda"].scan_matmul_flops(B, S)
    assert ssm_matmul_flops(spec, B, S) == kda_scan > 0
    forward = F.forward_flops(spec, count_params(spec), Workload(batch=B, seq=S, logits="last", attention_flops="full"))
    assert c.matmul == forward + kda_scan
    assert c.by_category["conv"] == F.conv_flops(spec, B, S)
    assert c.by_category["other"] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [4, 16, 64])
def test_prefill_peak_estimate_equals_the_build(dtype: torch.dtype, chunk: int) -> None:
    """The analytic prefill working set against the live-tensor peak of a prefill, as
    tests/test_activation_fidelity.py measures the tiny examples (within 2%; today within 1%)."""
    spec = _spec(HYBRID.replace("chunk_size: 4", f"chunk_size: {chunk}"))
    model = build_model(spec, "cpu", dtype)
    for batch, seq in ((1, 64), (4, 200)):
        measured, est = prefill_peaks(model, spec, batch, seq)
        assert abs(est / measured - 1) <= 0.02, (batch, seq, est, measured)


# --------------------------------------------------------------------------- transformers

transformers = pytest.importorskip("transformers")


_RULES = (
        ("mixer.f_a_proj.", "self_attn.forget_gate.f_a_proj."),
        ("mixer.f_b_proj.", "self_attn.forget_gate.f_b_proj."),
        ("mixer.dt_bias", "self_attn.forget_gate.dt_bias"),
        ("mixer.A_log", "self_attn.forget_gate.A_log"),
        ("mixer_norm.", "input_layernorm."),
        ("ffn_norm.", "post_attention_layernorm."),
        ("mixer.", "self_attn."),
        ("ffn.router.", "mlp.gate."),
        ("ffn.experts.w_in", "mlp.experts.gate_up_proj"),
        ("ffn.experts.w_out", "mlp.experts.down_proj"),
        ("ffn.shared.", "mlp.shared_experts."),
        ("ffn.", "mlp."),
    )  # fmt: skip


def _hf_name(name: str) -> str:
    return hf_name(name, _RULES)


@torch.no_grad()
@pytest.mark.parametrize("with_mla", [False, True], ids=["kda-only", "kda-and-nope-mla"])
def test_logits_match_transformers(with_mla: bool) -> None:
    """KDA layers (chunk 4 over 11 tokens, so three chunks in transformers' 64-token chunk too: the chunk
    size changes nothing), a dense first layer and sigmoid-routed MoE with a shared expert; and with an MLA
    layer without rotary (``rope: false``), as Kimi Linear's full-attention layers are."""
    nope = HYBRID.replace("v_head_dim: 8}", "v_head_dim: 8, rope: false}")
    spec = _spec(nope if with_mla else LINEAR)
    ours = build_model(spec, "cpu", torch.float32, init_std=0.15, seed=2)
    cfg = transformers.KimiLinearConfig(
        vocab_size=97, hidden_size=32, intermediate_size=40, moe_intermediate_size=12, num_hidden_layers=4,
        linear_attn_config={"head_dim": 8, "num_heads": 2, "short_conv_kernel_size": 4},
        layer_types=["linear_attention"] * 3 + ["full_attention" if with_mla else "linear_attention"],
        mlp_layer_types=["dense"] + ["sparse"] * 3, num_local_experts=4, num_attention_heads=2, q_lora_rank=None,
        kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8,
        num_experts_per_tok=2, n_shared_experts=1, routed_scaling_factor=2.5, n_group=1, topk_group=1,
        rms_norm_eps=1e-5, tie_word_embeddings=False, pad_token_id=None, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.KimiLinearForCausalLM(cfg).eval()
    theirs = dict(hf.named_parameters())
    mapped = {_hf_name(n): p for n, p in ours.named_parameters()}
    assert set(mapped) == set(theirs), set(mapped) ^ set(theirs)
    for n, p in mapped.items():
        theirs[n].copy_(p.view(theirs[n].shape))
    # a nonzero score bias on both sides, so the choosing bias is exercised
    for i in range(1, 4):
        bias = torch.randn(4, generator=torch.Generator().manual_seed(i)) * 0.1
        ours.layers[i].ffn.score_bias.copy_(bias)
        hf.model.layers[i].mlp.gate.e_score_correction_bias.copy_(bias)
    ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = hf(input_ids=ids, use_cache=False).logits
    got = ours(ids)
    assert got.abs().max() > 0.5
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=2e-4)


def _kimi_counts(cfg: dict, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int, int, int]:
    """(godprof total, active; transformers total, active) for a kimi_linear config.json."""
    import godprof.hf as hf_mod
    from godprof.hf import kimi_linear

    monkeypatch.setitem(hf_mod.CONVERTERS, "kimi_linear", kimi_linear.MODEL_TYPES["kimi_linear"])
    c = count_params(hf_mod.spec_from_hf_config(cfg, "kimi.json"))
    clean = {k: v for k, v in cfg.items() if not k.startswith("_")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_cfg = transformers.AutoConfig.for_model(**clean)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(hf_cfg)
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    for m in model.modules():
        if type(m).__name__.endswith("Experts"):
            inactive += (
                sum(p.numel() for p in m.parameters()) // m.num_experts * (m.num_experts - hf_cfg.num_experts_per_tok)
            )
    return c.total, c.active, total, total - inactive


def test_published_config_counts_equal_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = json.loads(KIMI_JSON.read_text(encoding="utf-8"))
    ours_total, ours_active, total, active = _kimi_counts(cfg, monkeypatch)
    assert (ours_total, ours_active) == (total, active) == (49_122_675_072, 3_484_453_248)
    assert count_params(load_spec("kimi-linear-48b-a3b")).total == total


def test_config_variants_equal_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults (no linear_attn_config: attention on every 4th layer), q_lora_rank, two dense layers, two
    shared experts, grouped routing and a wider conv, with transformers' own key names."""
    base = {
        "model_type": "kimi_linear", "vocab_size": 300, "hidden_size": 64, "intermediate_size": 96,
        "moe_intermediate_size": 16, "num_hidden_layers": 6, "num_attention_heads": 4, "kv_lora_rank": 32,
        "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "linear_num_heads": 4,
        "linear_head_dim": 16, "num_local_experts": 8, "num_experts_per_tok": 2, "pad_token_id": 0,
    }  # fmt: skip
    variants = [
        base,
        {**base, "q_lora_rank": 24, "first_k_dense_replace": 2, "n_shared_experts": 2, "n_group": 2,
         "topk_group": 1, "linear_conv_kernel_dim": 3, "attention_bias": True},
        {**base, "linear_attn_config": {"full_attn_layers": [2, 6], "kda_layers": [1, 3, 4, 5], "head_dim": 8,
                                        "num_heads": 4, "short_conv_kernel_size": 4}, "tie_word_embeddings": True},
    ]  # fmt: skip
    for cfg in variants:
        ours_total, ours_active, total, active = _kimi_counts(cfg, monkeypatch)
        assert (ours_total, ours_active) == (total, active), cfg
