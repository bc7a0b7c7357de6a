"""The PyTorch build against the analytic engine, and the cache paths against a full forward.

Exactness: the built model has exactly ``count_params(spec).total`` parameters (every spec in specs/
and examples/, plus random specs), and its cache exactly ``kv_cache_bytes + ssm_state_bytes``.
Correctness: incremental decode and chunked prefill through the static cache reproduce the logits of
one full forward over the same tokens (float32), for every mixer family.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from godprof.analytic import count_params
from godprof.analytic.memory import kv_cache_bytes, ssm_state_bytes
from godprof.build import build_model
from godprof.build.kinds.mamba1 import selective_scan
from godprof.build.kinds.mamba2 import ssd_chunked
from godprof.dtypes import get_dtype
from godprof.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread


def _spec_files() -> list[Path]:
    """Every architecture spec in specs/ and examples/ (examples/ also holds workload and swarm files)."""
    files = sorted((ROOT / "specs").glob("*.yaml")) + sorted(EXAMPLES.glob("*.yaml"))
    out = []
    for f in files:
        doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and "mixers" in doc and "model" in doc:
            out.append(f)
    return out


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights are counted once


# --------------------------------------------------------------------------- (a) exact parameter counts


@pytest.mark.parametrize("path", _spec_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_built_params_equal_analytic(path: Path) -> None:
    spec = load_spec(path)
    model = build_model(spec, "meta")
    assert _n_params(model) == count_params(spec).total


def test_tiny_examples_exist_and_are_small() -> None:
    names = {p.stem for p in EXAMPLES.glob("tiny-*.yaml")}
    assert {"tiny-dense", "tiny-moe", "tiny-ssm", "tiny-ssm2", "tiny-hybrid", "tiny-mla"} <= names
    for name in names:
        spec = load_spec(EXAMPLES / f"{name}.yaml")
        assert spec.source == "synthetic" and spec.description
        assert count_params(spec).total < 1_000_000


def test_hand_counted_tiny_dense() -> None:
    """tiny-dense by hand: embedding 512*64 = 32768, lm_head 32768, final norm 64; per layer
    q 64*64 + k 64*32 + v 64*32 + o 64*64 = 12288, MLP 3*64*172 = 33024, two norms 128 -> 45440;
    4 layers = 181760. Total 32768*2 + 64 + 181760 = 247360."""
    model = build_model(load_spec(EXAMPLES / "tiny-dense.yaml"), "meta")
    assert _n_params(model) == 247_360


def test_build_on_device_and_dtype() -> None:
    spec = load_spec(EXAMPLES / "tiny-hybrid.yaml")
    model = build_model(spec, "cpu", torch.bfloat16)
    assert not model.training
    assert all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in model.parameters())
    assert all(torch.isfinite(p.float()).all() for p in model.parameters())
    meta = build_model(spec, "meta")
    assert all(p.is_meta for p in meta.parameters())
    # a forward on meta runs without values (MoE spreads tokens evenly) and gives the right shape
    logits = meta(torch.zeros(2, 7, dtype=torch.long, device="meta"))
    assert logits.shape == (2, 7, spec.model.vocab_size)


def test_tied_embeddings_share_storage() -> None:
    spec = load_spec(EXAMPLES / "tiny-ssm.yaml")
    model = build_model(spec, "cpu", torch.float32)
    assert model.lm_head is None
    # 512 x 64 embedding counted once: total params = count_params, which has lm_head 0
    assert count_params(spec).by_component["lm_head"] == 0
    assert _n_params(model) == count_params(spec).total


# --------------------------------------------------------------------------- (c) cache bytes

WINDOWED = """
name: tiny-windowed
family: dense
description: Gemma-2-like alternation of sliding-window and global attention, sandwich norms, qk-norm.
source: synthetic
model: {vocab_size: 256, hidden_size: 48, num_layers: 4, norm: rmsnorm, sandwich_norm: true,
        embedding_multiplier: 6.928, tie_embeddings: true}
mixers:
  local: {type: attention, num_heads: 4, num_kv_heads: 2, head_dim: 12, sliding_window: 4, qk_norm: true,
          rotary_dim: 8, o_bias: true}
  global: {type: attention, num_heads: 4, num_kv_heads: 2, head_dim: 12, qk_norm: true, rope_theta: 500000}
ffns:
  mlp: {type: mlp, intermediate_size: 96, activation: gelu_tanh}
layout:
  mixer: {default: local, every: {period: 2, offset: 1, use: global}}
"""

NEOX = """
name: tiny-neox
family: dense
description: GPT-NeoX/GPT-J-like block - parallel residual with a shared LayerNorm, partial rotary, plain
  GELU MLP with biases, learned positions on top, lm_head bias, MQA.
source: synthetic
model: {vocab_size: 256, hidden_size: 48, num_layers: 3, norm: layernorm, parallel_residual: true,
        parallel_shared_norm: true, position_embedding: learned, max_position_embeddings: 64,
        lm_head_bias: true}
mixers:
  attn: {type: attention, num_heads: 4, num_kv_heads: 1, head_dim: 12, rotary_dim: 4, qkv_bias: true,
         o_bias: true}
ffns:
  mlp: {type: mlp, intermediate_size: 96, gated: false, activation: gelu, bias: true}
"""

MLA_FULL_Q = """
name: tiny-mla-q
family: dense
description: MLA with a full q projection (DeepSeek-V2-Lite style), biases, parallel separate norms.
source: synthetic
model: {vocab_size: 256, hidden_size: 48, num_layers: 2, norm: layernorm, norm_bias: false,
        parallel_residual: true}
mixers:
  mla: {type: mla, num_heads: 3, kv_lora_rank: 16, qk_nope_head_dim: 8, qk_rope_head_dim: 4, v_head_dim: 10,
        bias: true, rope_theta: 20000}
ffns:
  mlp: {type: mlp, intermediate_size: 64, activation: relu}
"""


def _inline(text: str):
    return parse_spec(yaml.safe_load(text), "inline")


@pytest.mark.parametrize(
    "spec_ref",
    ["tiny-dense", "tiny-mla", "tiny-ssm", "tiny-ssm2", "tiny-hybrid", "tiny-moe", WINDOWED],
    ids=lambda s: s if s.startswith("tiny") else "windowed",
)
@pytest.mark.parametrize(("batch", "max_len", "dtype"), [(1, 3, "fp32"), (2, 37, "bf16"), (3, 128, "fp16")])
def test_cache_bytes_equal_analytic(spec_ref: str, batch: int, max_len: int, dtype: str) -> None:
    spec = load_spec(EXAMPLES / f"{spec_ref}.yaml") if spec_ref.startswith("tiny") else _inline(spec_ref)
    model = build_model(spec, "meta")
    tdt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    cache = model.allocate_cache(batch, max_len, dtype=tdt)
    dt = get_dtype(dtype)
    assert cache.nbytes() == kv_cache_bytes(spec, batch, max_len, dt) + ssm_state_bytes(spec, batch, dt)


def test_sliding_window_cache_holds_window_slots() -> None:
    """Windowed layers keep min(max_len, window) = 4 slots, global ones max_len = 37. Per token and layer,
    K and V are 2 kv heads x 12 = 24 values each: (2 x 4 + 2 x 37) x 48 x batch 2 x 2 bytes (bf16)."""
    model = build_model(_inline(WINDOWED), "meta")
    cache = model.allocate_cache(2, 37, dtype=torch.bfloat16)
    assert [st[0].shape[2] for st in cache.layers] == [4, 37, 4, 37]
    assert cache.nbytes() == (2 * 4 + 2 * 37) * 48 * 2 * 2


def test_cache_bytes_of_a_big_model_on_meta() -> None:
    """llama-3-8b, batch 4, 8192 tokens, bf16: 32 layers x 2 x 8 kv heads x 128 x 8192 x 4 x 2 bytes
    = 4 GiB (the standard figure: 128 KiB per token per sequence)."""
    spec = load_spec("llama-3-8b")
    cache = build_model(spec, "meta").allocate_cache(4, 8192, dtype=torch.bfloat16)
    assert cache.nbytes() == 32 * 2 * 8 * 128 * 8192 * 4 * 2 == 4 * 2**30
    assert cache.nbytes() == kv_cache_bytes(spec, 4, 8192, get_dtype("bf16"))


# --------------------------------------------------------------------------- (d, e) cache paths == forward

TOL = {"atol": 1e-4, "rtol": 1e-4}
FAMILIES = {
    "dense-gqa": "tiny-dense",
    "sliding-window": WINDOWED,
    "neox-parallel": NEOX,
    "mla": "tiny-mla",
    "mla-full-q": MLA_FULL_Q,
    "moe-shared-gate": "tiny-moe",
    "mamba1": "tiny-ssm",
    "mamba2": "tiny-ssm2",
    "hybrid": "tiny-hybrid",
}


def _float_model(ref: str):
    spec = load_spec(EXAMPLES / f"{ref}.yaml") if ref.startswith("tiny") else _inline(ref)
    torch.manual_seed(0)
    # a wider init than the default 0.02 so every branch moves the logits well above the tolerance
    return spec, build_model(spec, "cpu", torch.float32, init_std=0.15, seed=1)


def _ids(spec, batch: int, seq: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randint(0, spec.model.vocab_size, (batch, seq), generator=g)


@pytest.mark.parametrize("family", list(FAMILIES))
@torch.no_grad()
def test_incremental_decode_matches_full_forward(family: str) -> None:
    """Prefill 3 tokens, then decode 10 one at a time (13 tokens: longer than the sliding window of 4,
    not a multiple of Mamba-2's chunk of 8); logits equal a single cache-free forward."""
    spec, model = _float_model(FAMILIES[family])
    ids = _ids(spec, 2, 13)
    full = model(ids)  # [2, 13, V]
    cache = model.allocate_cache(2, 16)
    steps = [model(ids[:, :3], cache=cache)]
    for t in range(3, 13):
        steps.append(model(ids[:, t : t + 1], cache=cache))
    assert cache.pos == 13
    inc = torch.cat(steps, dim=1)
    torch.testing.assert_close(inc, full, **TOL)
    # the test can fail: the last logits depend on the context far beyond the tolerance
    cache.reset()
    alone = model(ids[:, 12:13], cache=cache)
    assert (alone - full[:, 12:13]).abs().max() > 1e-2


@pytest.mark.parametrize("family", list(FAMILIES))
@torch.no_grad()
def test_chunked_prefill_matches_one_prefill(family: str) -> None:
    """5 tokens then 7 (then 1) through a cache that is reused after reset() (stale contents)."""
    spec, model = _float_model(FAMILIES[family])
    ids = _ids(spec, 3, 13)
    cache = model.allocate_cache(3, 13)
    model(_ids(spec, 3, 9).flip(0), cache=cache)  # dirty the cache first
    cache.reset()
    one = model(ids[:, :12], cache=cache)
    cache.reset()
    a = model(ids[:, :5], cache=cache)
    b = model(ids[:, 5:12], cache=cache)
    torch.testing.assert_close(torch.cat((a, b), dim=1), one, **TOL)
    last = model(ids[:, 12:], cache=cache, last_only=True)
    assert last.shape == (3, 1, spec.model.vocab_size)
    torch.testing.assert_close(last, model(ids)[:, -1:], **TOL)


@torch.no_grad()
def test_smaller_batch_uses_a_prefix_of_the_cache_and_overflow_raises() -> None:
    spec, model = _float_model("tiny-dense")
    ids = _ids(spec, 2, 6)
    cache = model.allocate_cache(4, 6)
    torch.testing.assert_close(model(ids, cache=cache), model(ids), **TOL)
    with pytest.raises(ValueError, match="cache holds 6 tokens"):
        model(ids[:, :1], cache=cache)


# --------------------------------------------------------------------------- scans against naive loops


def test_selective_scan_matches_sequential_recurrence_with_large_dt() -> None:
    """Large dt x |A| (decays down to e^-80 per token) would overflow a cumulative-product scan; the
    log-depth scan never divides, so it matches the token-by-token recurrence in float64."""
    g = torch.Generator().manual_seed(0)
    B, S, di, n = 2, 300, 3, 4  # S > 256 spans two chunks
    u = torch.randn(B, S, di, generator=g, dtype=torch.float64)
    dt = torch.rand(B, S, di, generator=g, dtype=torch.float64) * 5.0
    A = -torch.arange(1, n + 1, dtype=torch.float64).repeat(di, 1) * 4.0  # [di, n]
    Bm = torch.randn(B, S, n, generator=g, dtype=torch.float64)
    Cm = torch.randn(B, S, n, generator=g, dtype=torch.float64)
    h0 = torch.randn(B, di, n, generator=g, dtype=torch.float64)
    y, hT = selective_scan(u, dt, A, Bm, Cm, h0)
    h = h0.clone()
    ref = []
    for t in range(S):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * u[:, t])[..., None] * Bm[:, t, None, :]
        ref.append(torch.einsum("bdn,bn->bd", h, Cm[:, t]))
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), torch.stack(ref, 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hT.double(), h, rtol=1e-5, atol=1e-6)


def test_ssd_chunked_matches_sequential_recurrence() -> None:
    """SSD over 11 tokens in chunks of 4 (padded), 4 heads in 2 groups, from a nonzero state."""
    g = torch.Generator().manual_seed(1)
    B, L, H, P, G, N = 2, 11, 4, 3, 2, 5
    x = torch.randn(B, L, H, P, generator=g, dtype=torch.float64)
    dt = torch.rand(B, L, H, generator=g, dtype=torch.float64)
    A = -torch.rand(H, generator=g, dtype=torch.float64) * 3
    Bm = torch.randn(B, L, G, N, generator=g, dtype=torch.float64)
    Cm = torch.randn(B, L, G, N, generator=g, dtype=torch.float64)
    h0 = torch.randn(B, H, P, N, generator=g, dtype=torch.float64)
    y, hT = ssd_chunked(x, dt, A, Bm, Cm, 4, h0)
    h = h0.clone()
    Bh, Ch = Bm.repeat_interleave(H // G, dim=2), Cm.repeat_interleave(H // G, dim=2)  # [B, L, H, N]
    ref = []
    for t in range(L):
        h = h * torch.exp(dt[:, t] * A)[..., None, None] + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None]
        ref.append(torch.einsum("bhpn,bhn->bhp", h, Ch[:, t]))
    torch.testing.assert_close(y, torch.stack(ref, 1), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(hT, h, rtol=1e-9, atol=1e-9)


def test_mla_decode_uses_latent_attention() -> None:
    """The decode step attends over the cached latents (kv_b_proj absorbed): it never calls kv_b_proj."""
    spec, model = _float_model("tiny-mla")
    calls = []
    hooks = [b.mixer.kv_b_proj.register_forward_hook(lambda *a: calls.append(1)) for b in model.layers]
    with torch.no_grad():
        cache = model.allocate_cache(1, 8)
        model(_ids(spec, 1, 4), cache=cache)
        assert len(calls) == spec.model.num_layers  # prefill decompresses K/V once per layer
        model(_ids(spec, 1, 1), cache=cache)
    assert len(calls) == spec.model.num_layers
    for h in hooks:
        h.remove()


def test_rope_frequencies() -> None:
    """Rotary pairs feature i with i + rd/2 and turns them by pos x theta^(-2i/rd): at position 1 the
    first pair turns by 1 rad, the last (i = rd/2 - 1 = 3 for rd 8, theta 10000) by 10000^(-6/8)."""
    from godprof.build.layers import apply_rope, rope_cos_sin

    cos, sin = rope_cos_sin(torch.arange(2), 8, 10000.0, torch.float64)
    x = torch.zeros(1, 1, 2, 10, dtype=torch.float64)
    x[..., 0] = 1.0  # feature 0 (pairs with 4)
    x[..., 3] = 1.0  # feature 3 (pairs with 7)
    x[..., 9] = 5.0  # beyond rotary_dim: untouched
    out = apply_rope(x, cos, sin)[0, 0, 1]
    assert out[0].item() == pytest.approx(math.cos(1.0)) and out[4].item() == pytest.approx(math.sin(1.0))
    angle = 10000.0 ** (-6 / 8)
    assert out[3].item() == pytest.approx(math.cos(angle)) and out[7].item() == pytest.approx(math.sin(angle))
    assert out[9].item() == 5.0


def test_dtype_names_and_errors() -> None:
    spec = load_spec(EXAMPLES / "tiny-dense.yaml")
    model = build_model(spec, "meta", "float16")
    assert model.dtype == torch.float16
    assert model.allocate_cache(1, 4, "bf16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp32, bf16 or fp16, not int4"):
        build_model(spec, "meta", "int4")


@torch.no_grad()
def test_learned_positions_limit_is_a_clear_error() -> None:
    spec, model = _float_model(NEOX)  # max_position_embeddings: 64
    with pytest.raises(ValueError, match="learned positions stop at 64"):
        model(torch.zeros(1, 65, dtype=torch.long))


# --------------------------------------------------------------------------- FLOPs of the built model


@pytest.mark.parametrize(
    "ref",
    ["tiny-dense", "tiny-moe", "tiny-mla", WINDOWED, NEOX],
    ids=lambda s: yaml.safe_load(s)["name"] if "\n" in s else s,
)
@torch.no_grad()
def test_counted_flops_equal_analytic(ref: str) -> None:
    """torch's FlopCounterMode over a prefill (16 tokens) and a decode step equals ``forward_flops`` with
    the ``full`` attention convention and ``decode_flops_per_token``: the model runs exactly the matmuls
    the analytic engine counts (top-k experts only, absorbed MLA decode). SDPA runs on the math backend,
    whose matmuls the counter sees (it does not count the CPU flash kernel)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from godprof.analytic import Workload
    from godprof.analytic.flops import decode_flops_per_token, forward_flops

    spec, model = _float_model(ref)
    counts = count_params(spec)
    B, S = 2, 16
    ids = _ids(spec, B, S)
    with sdpa_kernel(SDPBackend.MATH):
        prefill = FlopCounterMode(display=False)
        with prefill:
            model(ids)
        cache = model.allocate_cache(B, S + 1)
        model(ids, cache=cache)
        decode = FlopCounterMode(display=False)
        with decode:
            model(ids[:, :1], cache=cache)
    assert prefill.get_total_flops() == forward_flops(spec, counts, Workload(batch=B, seq=S, attention_flops="full"))
    assert decode.get_total_flops() == B * decode_flops_per_token(spec, counts, S + 1)


@pytest.mark.parametrize("ref", ["tiny-dense", "tiny-mla", "tiny-hybrid"])
@torch.no_grad()
def test_traceable_for_fvcore(ref: str) -> None:
    """fvcore counts FLOPs on a torch.jit.trace of the model, where shapes are tensors: SDPA flags must
    still be Python bools. The trace replays the same logits."""
    import warnings

    spec, model = _float_model(ref)

    class LastOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.m(ids, last_only=True)

    ids = _ids(spec, 2, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(LastOnly(), (ids,), check_trace=False)
    torch.testing.assert_close(traced(ids), model(ids, last_only=True), **TOL)
