"""FLOP counters on the built tiny models vs the analytic count, for every family.

torch's FlopCounterMode and fvcore's FlopCountAnalysis count one forward (no cache) of the built model;
the analytic side is ``forward`` with attention "full" (SDPA is counted over the whole seq x seq) plus
the SSM scan terms the build runs as matrix products (``ssm_matmul_flops``). Every family (Mamba-2's chunked
SSD included, with its inter-chunk state passing) agrees *exactly* with FlopCounterMode (integer
equality) and within fvcore's einsum rounding.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from godprof.build import build_model
from godprof.measure.flops import (
    analytic_components,
    compare_flops,
    count_fvcore,
    count_torch,
    ssm_matmul_flops,
)
from godprof.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = sorted(p.stem for p in EXAMPLES.glob("tiny-*.yaml"))
B, S = 2, 32  # 32 tokens: four of tiny-ssm2's 8-token chunks
HAVE_FVCORE = importlib.util.find_spec("fvcore") is not None


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny ops on 2 shared CI cores run faster and steadier on one thread (OpenMP spin-waits otherwise).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def comparisons():
    out = {}
    for name in TINY:
        spec = load_spec(EXAMPLES / f"{name}.yaml")
        model = build_model(spec, device="cpu", dtype=torch.float32)
        out[name] = (spec, compare_flops(model, spec, B, S, last_only=True))
    return out


def test_every_family_has_a_tiny_example():
    families = {load_spec(EXAMPLES / f"{n}.yaml").family for n in TINY}
    assert {"dense", "moe", "ssm", "hybrid"} <= families
    kinds = {type(m).__name__ for n in TINY for m in load_spec(EXAMPLES / f"{n}.yaml").mixers.values()}
    assert {"Attention", "MLA", "Mamba1", "Mamba2"} <= kinds


def test_dense_hand_count():
    # tiny-dense: h 64, 4 heads / 2 kv heads of 16, SwiGLU 172, vocab 512, 4 layers; B = 2, S = 32.
    # Per layer matmul weights: q 64x64 + k, v 64x32 each + o 64x64 = 12,288; MLP 3 x 64 x 172 = 33,024.
    # Linear: 2 x 4 x 45,312 x 64 tokens = 23,199,744. lm_head on the last position: 2 x 512 x 64 x 2 = 131,072.
    # SDPA, full 32 x 32: 2 x B x heads x 32 x 32 x (16 + 16) = 524,288 per layer, 2,097,152 in all.
    spec = load_spec(EXAMPLES / "tiny-dense.yaml")
    model = build_model(spec, device="cpu", dtype=torch.float32)
    ids = torch.randint(0, 512, (B, S))
    c = count_torch(model, spec, ids, last_only=True)
    assert c.matmul == 23_199_744 + 131_072 + 2_097_152 == 25_427_968
    # On CPU SDPA runs as aten._scaled_dot_product_flash_attention_for_cpu, which torch's counter does
    # not know: the formula registered here is what makes attention count at all.
    assert c.by_operator["_scaled_dot_product_flash_attention_for_cpu"] == 2_097_152
    assert c.by_component == {"mixer:attn": 4 * (2 * 12_288 * 64 + 524_288), "ffn:mlp": 4 * 2 * 33_024 * 64,
                              "lm_head": 131_072}  # fmt: skip
    f = count_fvcore(model, spec, ids, last_only=True)
    assert f.matmul == 25_427_968  # fvcore's MACs x 2
    assert f.by_operator == {"linear": 23_330_816, "scaled_dot_product_attention": 2_097_152}
    assert "aten::silu" in f.unsupported_ops  # what fvcore cannot see is reported, not hidden
    # All logits: the lm_head runs on 64 rows instead of 2: + 2 x 512 x 64 x 62 = 4,063,232.
    assert count_torch(model, spec, ids, last_only=False).matmul == 25_427_968 + 4_063_232


@pytest.mark.parametrize("name", TINY)
def test_torch_counter_is_exact(comparisons, name):
    spec, c = comparisons[name]
    torch_c = c.counters[0]
    assert torch_c.counter == "torch.FlopCounterMode"
    # to the FLOP, Mamba-2's inter-chunk state passing included
    assert torch_c.matmul == c.analytic_matmul
    assert c.error(torch_c) == 0
    # the depthwise conv is counted apart and matches the analytic conv exactly (the build pads by hand,
    # so the conv runs over exactly seq outputs)
    assert torch_c.by_category["conv"] == c.analytic_conv
    assert torch_c.by_category["other"] == 0


@pytest.mark.parametrize("name", TINY)
def test_counters_within_one_percent(comparisons, name):
    spec, c = comparisons[name]
    for counter in c.counters:
        if counter.counter.startswith("fvcore") and not HAVE_FVCORE:  # optional: the GPU image has none
            assert not counter.available and "not installed" in (counter.reason or "")
            continue
        assert counter.available, counter.reason
        # fvcore prices generic einsums from numpy's printed 3-digit figure: exact elsewhere
        assert abs(c.error(counter)) < 0.01, (counter.counter, c.error(counter))
        if counter.counter.startswith("torch") or "einsum" not in counter.by_operator:
            assert counter.matmul == c.analytic_matmul


def test_ssd_scan_hand_count():
    # tiny-ssm2: 4 layers, 8 heads of 16, 2 groups, d_state 16, chunk 8; B = 2, seq 32 -> c = 4 chunks.
    # Per token per layer: 2 x (2 groups x 8 x 16 + 8 heads x 8 x 16) + 4 x 8 x 16 x 16
    # = 2 x (256 + 1,024) + 8,192 = 10,752; x 64 tokens x 4 layers = 2,752,512.
    # State passing, (c + 1)^2 = 25: 2 x B x 8 x 25 x 16 x 16 = 204,800 per layer; 819,200 for 4 layers.
    spec = load_spec(EXAMPLES / "tiny-ssm2.yaml")
    assert ssm_matmul_flops(spec, 2, 32) == 2_752_512 + 819_200 == 3_571_712
    # Without the state passing the analytic figure was 819,200 short of FlopCounterMode, 4.6% of the
    # forward; now the two are equal (test_torch_counter_is_exact). A seq that is not a multiple of the
    # chunk computes its last chunk whole: seq 30 -> still 4 chunks of 8, the same 32 token slots.
    assert ssm_matmul_flops(spec, 2, 30) == 3_571_712
    # Mamba-1 (tiny-ssm: d_inner 128, d_state 16, 4 layers): only y = C.h is a matmul,
    # 2 x 128 x 16 = 4,096 per token per layer.
    assert ssm_matmul_flops(load_spec(EXAMPLES / "tiny-ssm.yaml"), 2, 32) == 4_096 * 64 * 4


@pytest.mark.parametrize("name", TINY)
def test_components_match_and_sum_to_forward(comparisons, name):
    spec, c = comparisons[name]
    comps = analytic_components(spec, B, S, last_only=True)
    assert sum(comps.values()) == c.analytic_matmul  # split by component = the whole analytic figure
    torch_c = c.counters[0]
    for key, value in comps.items():
        assert torch_c.by_component[key] == value, key
    assert set(torch_c.by_component) == set(comps)


def test_fvcore_trace_failure_is_reported_not_raised():
    class Broken(torch.nn.Module):
        def forward(self, input_ids, last_only=False):
            raise RuntimeError("cannot trace this")

    spec = load_spec(EXAMPLES / "tiny-dense.yaml")
    r = count_fvcore(Broken(), spec, torch.zeros(1, 4, dtype=torch.long), last_only=True)
    assert not r.available and "cannot trace this" in (r.reason or "")
