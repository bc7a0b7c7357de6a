"""Roofline latency and memory fit, against numbers derived by hand from the published architectures.

llama-3-8b: hidden 4096, 32 layers, 32 heads / 8 KV heads of 128, MLP 14336, vocab 128256, untied.
  matmul weights per token = 32 x (2 x 4096^2 + 2 x 4096 x 1024 + 3 x 4096 x 14336) + 128256 x 4096
                           = 32 x 218,103,808 + 525,336,576 = 7,504,658,432
  KV per token = 32 layers x 2 x 8 x 128 x 2 B = 131,072 B
mixtral-8x7b: 32 layers of 8 experts of 3 x 4096 x 14336 = 176,160,768 params (352,321,536 B in bf16), top-2.
mamba-2.8b: 64 Mamba-1 layers, d_inner 5120, d_state 16, d_conv 4, tied embeddings:
  state per sequence = 64 x 5120 x (4 + 16) x 2 B = 13,107,200 B.
"""

from __future__ import annotations

import dataclasses

import pytest

from godprof.analytic import count_params
from godprof.analytic import efficiency as E
from godprof.analytic import inference_memory as IM
from godprof.analytic import memory as M
from godprof.analytic import roofline as R
from godprof.dtypes import get_dtype
from godprof.gpus import Measured, load_gpu
from godprof.spec import load_spec

H100 = load_gpu("h100")
BF16 = get_dtype("bf16")
FLAT = R.DEFAULT_EFFICIENCY  # the flat-factor roofline (--compute-eff 0.6 --bandwidth-eff 0.8)


@pytest.fixture(scope="module")
def llama():
    s = load_spec("llama-3-8b")
    return s, count_params(s)


@pytest.fixture(scope="module")
def mixtral():
    s = load_spec("mixtral-8x7b")
    return s, count_params(s)


@pytest.fixture(scope="module")
def mamba():
    s = load_spec("mamba-2.8b")
    return s, count_params(s)


def test_expected_experts_touched():
    assert R.expected_experts_touched(8, 2, 1) == pytest.approx(2.0)  # one token: exactly its top-k
    assert R.expected_experts_touched(8, 2, 2) == pytest.approx(3.5)  # 8 x (1 - (6/8)^2) = 8 x 7/16
    assert R.expected_experts_touched(8, 2, 0) == 0.0
    assert R.expected_experts_touched(8, 2, 10_000) == pytest.approx(8.0)
    assert R.expected_experts_touched(256, 8, 64) == pytest.approx(256 * (1 - (1 - 8 / 256) ** 64))  # ~222.6
    assert R.expected_experts_touched(4, 4, 3) == 4.0


def test_llama_decode_bytes_and_time_by_hand(llama):
    s, c = llama
    # weights 8,030,261,248 x 2 B, less the untied embedding table (525,336,576 x 2 B) plus the one row read
    weights = 8_030_261_248 * 2 - 525_336_576 * 2 + 4096 * 2  # 15,009,857,536
    kv = 8192 * 131_072  # 1 GiB at 8k context
    assert R.decode_bytes(s, c, 1, 8192) == weights + kv == 16_083_599_360
    # flat factors: 16,083,599,360 B / (3.35e12 B/s x 0.8) = 6.0013 ms
    assert R.decode_step_time_s(s, c, H100, 1, 8192, eff=FLAT) == pytest.approx(16_083_599_360 / 2.68e12)
    # speed of light: 16,083,599,360 B / 3.35e12 B/s = 4.8011 ms; the expected time is slower
    assert R.decode_bound_s(s, c, H100, 1, 8192) == pytest.approx(16_083_599_360 / 3.35e12)
    assert R.decode_step_time_s(s, c, H100, 1, 8192) > R.decode_bound_s(s, c, H100, 1, 8192)
    assert R.decode_bound(s, c, H100, 1, 8192) == "memory"
    # decode FLOPs per token at 8k: 2 x 7,504,658,432 + 32 layers x 2 x 32 heads x 8192 keys x 256
    assert R.decode_flops(s, c, 1, 8192) == 2 * 7_504_658_432 + 32 * 2 * 32 * 8192 * 256


def test_llama_compute_bound_at_large_batch(llama):
    s, c = llama
    b = 4096
    flops = b * (2 * 7_504_658_432 + 32 * 2 * 32 * 1 * 256)  # context 1: one key per head
    assert R.decode_flops(s, c, b, 1) == flops
    assert R.decode_bound(s, c, H100, b, 1) == "compute"
    assert R.decode_step_time_s(s, c, H100, b, 1, eff=FLAT) == pytest.approx(flops / (989.4e12 * 0.6))
    assert R.decode_bound_s(s, c, H100, b, 1) == pytest.approx(flops / 989.4e12)


def test_llama_prefill_by_hand(llama):
    s, c = llama
    seq = 8192
    linear = 2 * 7_504_658_432 * seq - 2 * 525_336_576 * (seq - 1)  # lm_head on the last position only
    attention = 32 * 2 * 32 * (seq * (seq + 1) // 2) * (128 + 128)  # causal pairs, QK^T and PV
    assert R.prefill_flops(s, c, 1, seq) == linear + attention
    t = R.prefill_time_s(s, c, H100, 1, seq, eff=FLAT)
    assert t == pytest.approx((linear + attention) / (989.4e12 * 0.6))  # ~0.222 s: compute bound
    assert R.prefill_bound_s(s, c, H100, 1, seq) == pytest.approx((linear + attention) / 989.4e12)
    full = R.prefill_flops(s, c, 1, seq, attention="full")
    assert full - (linear + attention) == 32 * 2 * 32 * (seq * seq - seq * (seq + 1) // 2) * 256


def test_mixtral_expert_traffic(mixtral):
    s, c = mixtral
    expert = 3 * 4096 * 14336 * 2  # 352,321,536 B
    base = 46_702_792_704 * 2 - 131_072_000 * 2  # all weights, less the untied embedding table
    # batch 1: 2 of 8 experts per layer are read (+ 1 embedding row)
    assert R.weights_touched_bytes(s, c, 1) == base + 4096 * 2 - 32 * 6 * expert
    # batch 2: 3.5 experts expected per layer, 4.5 left unread
    assert R.weights_touched_bytes(s, c, 2, rows=2) == base + 2 * 4096 * 2 - round(32 * 4.5 * expert)
    # a big prefill touches every expert
    assert R.weights_touched_bytes(s, c, 100_000, rows=0) == base
    # KV of 8 KV heads x 128 x 2 (K, V) x 32 layers x 2 B per token
    assert R.decode_bytes(s, c, 1, 4096) == base + 4096 * 2 - 32 * 6 * expert + 4096 * 131_072


def test_ssm_decode_bytes_flat_in_context(mamba):
    s, c = mamba
    state = 64 * 5120 * (4 + 16) * 2
    assert M.ssm_state_bytes(s, 1, BF16) == state == 13_107_200
    weights = 2_768_345_600 * 2  # tied embeddings: the lm_head reads the whole table anyway
    assert R.decode_bytes(s, c, 1, 1024) == R.decode_bytes(s, c, 1, 1 << 20) == weights + 2 * state
    assert R.decode_step_time_s(s, c, H100, 1, 1 << 20, eff=FLAT) == pytest.approx((weights + 2 * state) / 2.68e12)
    assert R.decode_bound_s(s, c, H100, 1, 1 << 20) == pytest.approx((weights + 2 * state) / 3.35e12)


def test_quantised_weights_use_weights_bytes_rules(llama):
    s, c = llama
    emb_bf16 = 525_336_576 * 2  # embeddings stay bf16 in int4 checkpoints
    touched = R.weights_touched_bytes(s, c, 1, "int4")
    assert touched == M.weights_bytes(c, get_dtype("int4")) - emb_bf16 + 4096 * 2
    assert touched < R.weights_touched_bytes(s, c, 1, "bf16") / 3
    # int4 KV defaults to bf16 (activation dtype); an explicit fp8 KV halves it
    assert R.decode_bytes(s, c, 1, 8192, "int4") - touched == 8192 * 131_072
    assert R.decode_bytes(s, c, 1, 8192, "int4", "fp8") - touched == 8192 * 65_536


def test_compute_dtype_and_rates():
    a100 = load_gpu("a100-80gb")
    assert R.compute_dtype(H100, "fp8") == "fp8"
    assert R.compute_dtype(a100, "fp8") == "bf16"  # no fp8 tensor cores on Ampere
    assert R.compute_dtype(H100, "int4") == R.compute_dtype(H100, "int8") == "bf16"  # weight-only formats
    r = R.rates(H100, "fp8")
    assert r.flops_per_s == pytest.approx(1978.9e12 * 0.6) and r.bytes_per_s == pytest.approx(3.35e12 * 0.8)
    r = R.rates(H100, "bf16", R.Efficiency(compute=0.5, bandwidth=0.9))
    assert r.flops_per_s == pytest.approx(989.4e12 * 0.5) and r.bytes_per_s == pytest.approx(3.35e12 * 0.9)
    with pytest.raises(ValueError):
        R.Efficiency(compute=0.0)


def test_measured_figures_replace_datasheet_times_efficiency(llama):
    s, c = llama
    measured = Measured(bandwidth_bytes_per_s=3.0e12, flops_per_s={"bf16": 700e12})
    cal = dataclasses.replace(H100, measured=measured)
    r = R.rates(cal, "bf16")
    assert (r.flops_per_s, r.bytes_per_s, r.basis) == (700e12, 3.0e12, "measured")
    # the per-operation model takes the measured copy bandwidth as its gemm bandwidth: 3.0 / 3.35
    assert E.model_for(cal).gemm.bandwidth == pytest.approx(3.0e12 / 3.35e12)
    assert E.model_for(cal).gemm.compute_max == pytest.approx(700e12 / 989.4e12)
    # 3.0 TB/s measured is below the default 0.90 x 3.35 TB/s: the calibrated card's decode is slower
    gemm = {o.op: o for o in R.decode_step(s, c, cal, 1, 8192).ops}["gemm"]
    fixed = (32 * 4 + 1) * E.model_for(cal).gemm.kernel_fixed_s
    assert gemm.expected_s == pytest.approx(fixed + gemm.bytes / 3.0e12)
    assert R.decode_step_time_s(s, c, cal, 1, 8192) > R.decode_step_time_s(s, c, H100, 1, 8192)
    # a dtype that was not measured falls back to datasheet x default efficiency
    assert R.rates(cal, "fp8").flops_per_s == pytest.approx(1978.9e12 * 0.6)
    # an explicit efficiency always scales the datasheet
    assert R.rates(cal, "bf16", R.Efficiency(0.5, 0.5)).bytes_per_s == pytest.approx(3.35e12 * 0.5)


def test_max_batch_and_context_are_tight(llama, mamba, mixtral):
    s, c = llama
    # the shared memory model: 80 GiB x (1 - 10% headroom) - 1 GiB of runtime overheads = 76,235,669,504 B
    mem = IM.usable_bytes(H100)
    assert mem == int(H100.memory_bytes * 0.9) - 2**30
    acts = R.activation_bytes(s, 8192)
    # each 8k sequence adds 1 GiB of KV: floor((usable - weights - one chunk of activations) / 1 GiB)
    expect = (mem - 16_060_522_496 - acts) // (8192 * 131_072)
    b = R.max_batch(s, c, H100, 8192)
    assert b == expect == 55
    assert R.serving_bytes(s, c, b, 8192) <= mem < R.serving_bytes(s, c, b + 1, 8192)
    n = R.max_context(s, c, H100)
    assert n is not None and R.serving_bytes(s, c, 1, n) <= mem < R.serving_bytes(s, c, 1, n + 1)
    assert n == (mem - 16_060_522_496 - R.activation_bytes(s, 8192)) // 131_072  # ~525k tokens
    ms, mc = mamba
    assert R.max_context(ms, mc, H100) is None  # a fixed state: memory never limits the context
    xs, xc = mixtral
    # 87 GiB of weights > 80 GiB
    assert R.max_batch(xs, xc, H100, 8192) == 0 and R.max_context(xs, xc, H100) == 0
    assert R.max_batch(xs, xc, load_gpu("h200"), 8192) > 0
    assert R.gpus_for_weights(xc, H100) == 2 and R.gpus_for_weights(c, H100) == 1
    assert R.gpus_for_weights(xc, H100, "int4") == 1
