"""Memory and FLOPs against hand-derived figures."""

from __future__ import annotations

import pytest
from spec_docs import TINY_GQA, TINY_GQA_MATMUL, TINY_GQA_TOTAL, TINY_MAMBA2, TINY_MLA, spec

from godprof.analytic import Workload, count_params, estimate
from godprof.analytic.flops import attended_pairs
from godprof.analytic.memory import kv_cache_bytes, ssm_state_bytes, weights_bytes
from godprof.dtypes import get_dtype
from godprof.spec import load_spec

BF16 = get_dtype("bf16")


def test_llama_3_8b_kv_per_token():
    e = estimate(load_spec("llama-3-8b"), Workload(seq=4096))
    # 32 layers x (K + V) x 8 KV heads x 128 x 2 bytes
    assert e.memory["kv_bytes_per_token"] == 131_072
    assert e.memory["kv_cache_bytes"] == 4096 * 131_072
    assert e.memory["weights_bytes"] == 2 * 8_030_261_248
    assert e.memory["ssm_state_bytes"] == 0


def test_weights_by_dtype():
    c = count_params(spec(TINY_GQA))
    assert weights_bytes(c, get_dtype("fp32")) == 4 * TINY_GQA_TOTAL
    assert weights_bytes(c, get_dtype("fp16")) == 2 * TINY_GQA_TOTAL
    # int4, group 8: layer Linears 3 x (3072 + 4608) = 23040 weights -> 11520 bytes; scales per Linear
    # n_out x ceil(n_in / 8): q 32*4, k 16*4, v 16*4, o 32*4, gate 48*4, up 48*4, down 32*6 = 960 per
    # layer, x3 = 2880 fp16 scales = 5760 bytes; the rest (26512 - 23040 = 3472) in bf16 = 6944 bytes
    assert weights_bytes(c, get_dtype("int4"), group_size=8) == 11520 + 5760 + 6944
    # fp8: 23040 bytes + 21 tensors x 4-byte scale + 6944
    assert weights_bytes(c, get_dtype("fp8")) == 23040 + 21 * 4 + 6944


def test_kv_cache_gqa_mla_window_and_state():
    gqa = spec(TINY_GQA)
    # 3 layers x 2 x 2 KV heads x 8 x 2 bytes = 192 bytes per token; batch 3, context 10
    assert kv_cache_bytes(gqa, 3, 10, BF16) == 3 * 10 * 192
    mla = spec(TINY_MLA)
    # latent 6 + rope key 2 = 8 values per token, 1 layer, fp32
    assert kv_cache_bytes(mla, 2, 5, get_dtype("fp32")) == 2 * 5 * 8 * 4
    windowed = spec(TINY_GQA.replace("qk_norm: true", "qk_norm: true, sliding_window: 4"))
    assert kv_cache_bytes(windowed, 1, 3, BF16) == 3 * 192
    assert kv_cache_bytes(windowed, 1, 100, BF16) == 4 * 192
    m2 = spec(TINY_MAMBA2)
    # 2 layers x 512 state values x 2 bytes, per sequence, whatever the context
    assert ssm_state_bytes(m2, 1, BF16) == 2048
    assert ssm_state_bytes(m2, 5, BF16) == 5 * 2048
    e1 = estimate(m2, Workload(seq=16, context=16))
    e2 = estimate(m2, Workload(seq=16, context=1 << 20))
    assert e1.memory["ssm_state_bytes"] == e2.memory["ssm_state_bytes"] == 2048
    assert e1.memory["kv_cache_bytes"] == e2.memory["kv_cache_bytes"] == 0


@pytest.mark.parametrize(("seq", "window"), [(1, None), (7, None), (10, 4), (10, 10), (10, 30), (33, 1)])
def test_attended_pairs_match_brute_force(seq, window):
    brute = sum(1 for i in range(seq) for j in range(seq) if j <= i and (window is None or i - j < window))
    assert attended_pairs(seq, window, "causal") == brute
    assert attended_pairs(seq, window, "full") == seq * seq


def test_forward_decode_train_flops_tiny_gqa():
    s = spec(TINY_GQA)
    w = Workload(batch=2, seq=4)
    f = estimate(s, w).flops
    # linear: 2 x 24640 x 8 tokens = 394,240. causal pairs 4*5/2 = 10; per layer
    # 2 x batch 2 x heads 4 x 10 x (8 + 8) = 2,560; 3 layers = 7,680
    assert TINY_GQA_MATMUL == 24640
    assert f["forward"] == 394_240 + 7_680
    full = estimate(s, Workload(batch=2, seq=4, attention_flops="full")).flops
    # full: 16 pairs -> 2*2*4*16*16 = 4,096 per layer, x3 = 12,288
    assert full["forward"] == 394_240 + 12_288
    # decode at context 4: 2 x 24640 + 3 layers x 2 x 4 heads x 4 keys x 16 = 49,280 + 1,536
    assert f["decode_per_token"] == 50_816
    # train per token at seq 4: forward(1, 4) = 2*24640*4 + 3,840 = 200,960; x3 / 4 = 150,720
    assert f["train_per_token"] == 150_720
    assert estimate(s, Workload(batch=2, seq=4, recompute="full")).flops["train_per_token"] == 200_960
    # logits for the last position only: lm_head (50*32) runs on 2 of 8 rows
    last = estimate(s, Workload(batch=2, seq=4, logits="last")).flops
    assert last["forward"] == f["forward"] - 2 * 50 * 32 * 6


def test_mla_decode_attends_in_latent_space():
    s = spec(TINY_MLA)
    c = count_params(s)
    f = estimate(s, Workload(seq=8, context=5)).flops
    # absorbed decode: per key 2 heads x ((6 + 2) + 6) x 2 FLOPs
    assert f["decode_per_token"] == 2 * c.matmul_per_token + 2 * 2 * 5 * (8 + 6)
    # prefill decompresses: qk 4 + 2 = 6, v 3; causal pairs of 8 = 36
    assert f["forward"] == 2 * c.matmul_per_token * 8 + 2 * 2 * 36 * (6 + 3)


def test_ssm_scan_and_conv_are_separate_keys():
    s = spec(TINY_MAMBA2)
    c = count_params(s)
    f = estimate(s, Workload(seq=8)).flops
    assert f["forward"] == 2 * c.matmul_per_token * 8  # no attention, no scan inside forward
    # conv: 2 x conv_dim 64 x d_conv 4 x 2 layers x 8 tokens
    assert f["conv"] == 2 * 64 * 4 * 2 * 8
    # SSD chunk 4, seq 8 -> c = 2 chunks. Per token: 2 x (groups 2 x 4 x 8 + heads 4 x 4 x 8)
    # + 4 x heads 4 x head_dim 8 x d_state 8 = 2 x 192 + 1024 = 1408; x 2 layers x 8 tokens = 22,528.
    # State passing between chunks, per layer and sequence: the (c + 1) x (c + 1) = 3 x 3 chunk-decay
    # matrix times the 3 states, 2 x heads 4 x 9 x head_dim 8 x d_state 8 = 4,608; x 2 layers = 9,216.
    assert f["ssm_scan"] == 1408 * 2 * 8 + 4608 * 2 == 31_744
    # seq 7 still runs 2 chunks of 4 (the last one whole): the same 8 token slots, the same FLOPs
    assert estimate(s, Workload(seq=7)).flops["ssm_scan"] == 31_744


def test_training_memory_mixed_precision_adamw():
    s = spec(TINY_GQA)
    e = estimate(s, Workload(mode="train", seq=4))
    n = TINY_GQA_TOTAL
    assert e.memory["weights_bytes"] == 2 * n
    assert e.memory["gradients_bytes"] == 2 * n
    assert e.memory["optimizer_bytes"] == 12 * n  # fp32 master + m + v
    assert e.memory["kv_cache_bytes"] == 0
    eight = estimate(s, Workload(mode="train", seq=4, optimizer="adamw8bit")).memory
    assert eight["optimizer_bytes"] == 4 * n + 2 * n + 2 * 4 * -(-n // 2048)
    sgd = estimate(s, Workload(mode="train", seq=4, optimizer="sgd", dtype="fp32")).memory
    assert sgd["optimizer_bytes"] == 4 * n  # momentum only: fp32 training needs no master copy
    assert sgd["gradients_bytes"] == 4 * n


def test_recomputation_and_flash_reduce_training_activations():
    s = load_spec("llama-3-8b")
    base = dict(mode="train", seq=4096, flash_attention=False)
    none = estimate(s, Workload(**base, recompute="none")).memory["activations_bytes"]
    sel = estimate(s, Workload(**base, recompute="selective")).memory["activations_bytes"]
    full = estimate(s, Workload(**base, recompute="full")).memory["activations_bytes"]
    flash = estimate(s, Workload(mode="train", seq=4096)).memory["activations_bytes"]
    assert full < sel < none
    assert flash < none
    # selective drops exactly the attention probabilities: 32 layers x 32 heads x seq per token, bf16
    assert none - sel == 4096 * 32 * 32 * 4096 * 2


def test_inference_activation_logits_dominate_prefill_of_large_vocab():
    s = load_spec("llama-3-8b")
    a = estimate(s, Workload(seq=4096)).memory["activations_bytes"]
    # rotary tables 2 x context 4096 x 128 dims in bf16 = 2,097,152, plus the head: final hidden states
    # 4096 x 4096 in bf16 + logits 4096 x 128256 in bf16 and the sampler's fp32 copy
    assert a == 2 * 4096 * 128 * 2 + 4096 * 4096 * 2 + 4096 * 128256 * (2 + 4) == 3_187_671_040
    last = estimate(s, Workload(seq=4096, logits="last")).memory["activations_bytes"]
    assert last < a


def test_inference_activation_peak_hand_derived():
    # tiny-gqa: h 32, 4 heads / 2 kv heads of 8 (full rotary), SwiGLU 48, vocab 50; batch 2 x seq 4 = 8
    # tokens, bf16 (2 bytes), context 4.
    s = spec(TINY_GQA)
    w = Workload(batch=2, seq=4, logits="last")
    # rotary tables: cos + sin, 4 positions x 8 dims = 64 values -> 128 bytes
    # mixer, rotating q: normed input 8 x 32 = 256, q 8 x 32 = 256, k and v 8 x 16 = 128 each (768), plus
    #   rotated half, q*cos, rotated*sin, sum: 4 x 256 = 1,024 -> 1,792 values = 3,584 bytes
    #   (rotating k: 768 + rotated q 256 + 4 x 128 = 1,536; attention: 768 + q 256 + out 256 +
    #   max(fp32 lse 2 x 4 x 4 x 4 = 128 bytes, o_proj output 512 bytes) -> 2,560 bytes)
    # FFN: residual sum 256 + normed 256 + max(3 x 8 x 48, 8 x (48 + 32)) = 1,152 -> 1,664 values = 3,328
    # per-head qk norm on q: normed input, q, k, v (768 values = 1,536 bytes) + q's fp32 copy and its square
    #   (2 x 4 x 256 = 2,048 bytes) + fp32 statistics for 32 head rows (128 bytes) -> 3,712 bytes
    # body: block input 256 values (512 bytes) + max(3,712, 3,584, 3,328) = 4,224 bytes (the CPU live-tensor
    #   peak of the build is exactly this)
    # head (last logits): 2 x 32 hidden x 2 + 2 x 50 logits x (2 + fp32 copy 4) = 728 bytes
    assert estimate(s, w).memory["activations_bytes"] == 128 + 4224 == 4352
    # fp32: the same values at 4 bytes (no fp32 copies to make): 256 + 4 x (256 + 1,792) = 8,448
    w32 = Workload(batch=2, seq=4, logits="last", dtype="fp32")
    assert estimate(s, w32).memory["activations_bytes"] == 8448
    # no flash: PyTorch's math kernel holds one scaled q copy 8 x 32, the 4 x 4 mask and two fp32
    # 2 x 4 x 4 x 4 score tensors (fp32: 4 x (256 + 16 + 256) = 2,112 bytes), and fp32 copies of q, k, v in
    # bf16 (4 x (256 + 128 + 128) = 2,048): attention 2 x 768 + 4,160 = 5,696 > 3,584
    nf = Workload(batch=2, seq=4, logits="last", flash_attention=False)
    assert estimate(s, nf).memory["activations_bytes"] == 128 + 512 + 5696
