"""What the GPU machine's software does to a measurement, simulated on the CPU.

The device runs torch 2.11 (whose SDPA FLOP formula rejects grouped-query attention), has no fvcore,
and times decode as production runs it (a static step, compiled into one graph). These tests patch in
that behaviour or exercise the same code paths on the CPU: the GQA-aware FLOP formula, counters that
fail without losing a measurement, the static decode step against the dynamic one, sync-free MoE
routing against the reference loop, torch.compile's graph accounting, the energy window's cache
rewind, NVML's instant power field, and SDPA's kernel plans.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

import godprof.measure.run as run_mod
from godprof.build import build_model
from godprof.build.sdpa import sdpa, sdpa_plan, static_decode_attention
from godprof.measure import CompiledWhileTimed, MeasureConfig, measure
from godprof.measure.compiled import KernelCounter, count_kernels, host_bound
from godprof.measure.sdpa_flops import sdpa_flop_mapping, sdpa_flops
from godprof.spec import load_spec, parse_spec_text

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def small(**kw) -> MeasureConfig:
    base = dict(batch=2, seq=16, new_tokens=4, dtype="fp32", warmup=0, iters=1, fvcore=False)
    return MeasureConfig(**{**base, **kw})


# --------------------------------------------------------------------------- FLOP counting


def test_sdpa_flops_counts_every_query_head():
    # Llama-3-8B's attention at 512 tokens: 32 query heads share 8 KV heads of 128
    assert sdpa_flops((1, 32, 512, 128), (1, 8, 512, 128), (1, 8, 512, 128)) == 2 * 32 * 512 * 512 * 256
    # MLA's absorbed decode: one latent "KV head" of 576 (values 512) shared by 128 heads
    assert sdpa_flops((4, 128, 1, 576), (4, 1, 1000, 576), (4, 1, 1000, 512)) == 2 * 4 * 128 * 1000 * 1088
    with pytest.raises(ValueError, match="grouped-query"):
        sdpa_flops((1, 6, 4, 8), (1, 4, 4, 8), (1, 4, 4, 8))  # 6 heads cannot share 4 KV heads
    names = {op.__name__ for op in sdpa_flop_mapping()}
    assert {"_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
            "_scaled_dot_product_flash_attention_for_cpu"} <= names  # fmt: skip


def _strict_sdpa_flop_count(query_shape, key_shape, value_shape):  # torch 2.11's check
    if query_shape[1] != key_shape[1]:
        raise AssertionError("sdpa_flop_count: query/key/value shapes are incompatible")
    b, h, s_q, d = query_shape
    return 2 * b * h * s_q * key_shape[2] * (d + value_shape[-1])


def test_gqa_measurement_completes_under_torch_2_11s_strict_formula(monkeypatch):
    import torch.utils.flop_counter as fc

    monkeypatch.setattr(fc, "sdpa_flop_count", _strict_sdpa_flop_count)
    spec = load_spec(EXAMPLES / "tiny-dense.yaml")  # GQA: 4 query heads, 2 KV heads
    assert spec.mixers["attn"].num_kv_heads < spec.mixers["attn"].num_heads
    m = measure(spec, CPU, small())
    c = m.flops.counters[0]
    assert c.available and c.matmul == m.flops.analytic_matmul  # exact, GQA attention included


def test_a_failing_counter_is_unavailable_and_the_measurement_is_kept(monkeypatch):
    import torch.utils.flop_counter as fc

    class Exploding(fc.FlopCounterMode):
        def __enter__(self):
            raise RuntimeError("formula rejected a shape\nmore")

    monkeypatch.setattr(fc, "FlopCounterMode", Exploding)
    m = measure(load_spec(EXAMPLES / "tiny-dense.yaml"), CPU, small())
    c = m.flops.counters[0]
    assert not c.available and c.reason == "counter failed: RuntimeError: formula rejected a shape"
    assert m.tpot.median_s > 0 and m.flops.error(c) is None


def test_a_crash_in_the_flop_stage_keeps_the_timings(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("analytic side failed")

    monkeypatch.setattr(run_mod, "compare_flops", boom)
    m = measure(load_spec(EXAMPLES / "tiny-dense.yaml"), CPU, small())
    assert m.flops is None and m.ttft.n == 1
    assert any("FLOP count unavailable: RuntimeError: analytic side failed" in n for n in m.notes)


def test_fvcore_absent_degrades_cleanly(monkeypatch):
    monkeypatch.setitem(sys.modules, "fvcore", None)  # import fvcore -> ImportError
    monkeypatch.setitem(sys.modules, "fvcore.nn", None)
    m = measure(load_spec(EXAMPLES / "tiny-dense.yaml"), CPU, small(fvcore=True))
    fv = m.flops.counters[1]
    assert not fv.available and "fvcore not installed" in fv.reason
    assert m.flops.error(fv) is None
    assert m.to_dict()["measured"]["flops"]["counters"][1]["matmul_error"] is None


# --------------------------------------------------------------------------- static decode


@pytest.mark.parametrize("name", ["tiny-dense", "tiny-moe", "tiny-mla"])
def test_static_decode_equals_the_dynamic_step(name):
    spec = load_spec(EXAMPLES / f"{name}.yaml")
    model = build_model(spec, device="cpu", dtype=torch.float32)
    assert model.static_decode_blockers() == []
    a, b = model.allocate_cache(2, 24), model.allocate_cache(2, 24)
    ids = torch.randint(0, spec.model.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tok = model(ids, cache=a, last_only=True).argmax(-1)
        model(ids, cache=b, last_only=True)
        for _ in range(6):
            x, y = model(tok, cache=a), model.decode_static(tok, b)
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
            tok = x.argmax(-1)
    assert b.pos == a.pos == 16 and int(b.device_pos()) == 16
    b.rewind(10)  # decoding again from the prompt's end repeats the first step exactly
    assert int(b.device_pos()) == 10
    with pytest.raises(ValueError, match="cannot rewind"):
        b.rewind(25)


def test_kinds_without_a_static_step_are_named():
    for name, blocker in (("tiny-ssm", "Mamba1Mixer"), ("deepseek-v3.2-exp", "DSAttention")):
        model = build_model(load_spec(name if "tiny" not in name else EXAMPLES / f"{name}.yaml"), device="meta")
        assert blocker in model.static_decode_blockers()
        with pytest.raises(ValueError, match="no static decode step"):
            model.decode_static(torch.zeros(1, 1, dtype=torch.long), model.allocate_cache(1, 4))


def test_static_decode_attention_masks_future_slots():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 1, 8, generator=g)
    k, v = torch.randn(2, 2, 1, 8, generator=g), torch.randn(2, 2, 1, 8, generator=g)
    kc, vc = torch.randn(2, 2, 12, 8, generator=g), torch.randn(2, 2, 12, 8, generator=g)  # garbage past pos
    out = static_decode_attention(q, k, v, kc, vc, torch.tensor(5))
    ref = sdpa(q, kc[:, :, :6], vc[:, :, :6])  # slot 5 now holds the new key
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(kc[:, :, 5:6], k)


# --------------------------------------------------------------------------- MoE routing

MOE = """
name: moe-paths
family: moe
model: {vocab_size: 64, hidden_size: 32, num_layers: 1}
mixers: {attn: {type: attention, num_heads: 4, num_kv_heads: 2}}
ffns: {moe: {type: moe, num_experts: 4, expert_intermediate_size: 16, %s}}
"""


@pytest.mark.parametrize(
    "extra", ["top_k: 2, gated: true", "top_k: 2, activation: swiglu_oai, expert_bias: true, routing: topk_softmax",
              "weight_on_input: true, top_k: 1, num_shared_experts: 1, shared_intermediate_size: 16"],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sync_free_routing_equals_the_loop(extra, dtype, monkeypatch):
    import godprof.build.kinds.moe as moe

    spec = parse_spec_text(MOE % extra)
    model = build_model(spec, device="cpu", dtype=dtype)
    layer = model.layers[0].ffn
    with torch.no_grad():
        layer.experts.b_in is not None and layer.experts.b_in.normal_(0, 0.1)
        x = torch.randn(7, 32, dtype=dtype)
        _, w, e = layer.route(x)
        ref, _ = layer._routed_loop(x, w, e)
        paths = {"grouped" if moe.grouped_mm_ok(x, layer.experts) else "gather": layer._routed_sync_free(x, w, e)}
        monkeypatch.setattr(moe, "grouped_mm_ok", lambda *a: False)
        paths["gather"] = layer._routed_sync_free(x, w, e)
    assert ("grouped" in paths) == (dtype == torch.bfloat16 and hasattr(torch, "_grouped_mm"))
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for out in paths.values():
        torch.testing.assert_close(out, ref, rtol=tol, atol=tol)


def test_moe_decode_has_no_host_sync_only_where_it_matters():
    spec = parse_spec_text(MOE % "top_k: 2, gated: true")
    layer = build_model(spec, device="cpu", dtype=torch.float32).layers[0].ffn
    x = torch.randn(3, 32)
    assert not layer._sync_free(x, 1)  # eager CPU: the loop (its memory is what the estimate models)
    assert not layer._sync_free(x.to("meta"), 1)


# --------------------------------------------------------------------------- torch.compile accounting


def test_compiled_measurement_counts_graphs_and_is_one_static_graph():
    # the "eager" backend runs dynamo (same graphs, guards and breaks as inductor) without code generation
    spec = load_spec(EXAMPLES / "tiny-moe.yaml")
    m = measure(spec, CPU, small(compile=True, compile_backend="eager", flops=False, warmup=1, iters=2))
    c = m.compile_info
    assert c["graphs"] == 1 and c["graph_breaks"] == 0 and c["static"] and c["fullgraph"]
    assert c["after_timing"] == c["after_warmup"] == c["after_energy"]
    assert m.to_dict()["config"]["compiled"]["graphs"] == 1


def test_compilation_inside_the_timed_runs_fails_loudly(monkeypatch):
    readings = iter(range(100))

    def growing():
        n = next(readings)
        return {"graphs": n, "graph_breaks": 0, "cudagraph_skips": 0}

    monkeypatch.setattr(run_mod, "dynamo_counts", growing)
    with pytest.raises(CompiledWhileTimed, match="compiled during the timed runs"):
        measure(load_spec(EXAMPLES / "tiny-dense.yaml"), CPU, small(compile=True, compile_backend="eager"))


@pytest.mark.slow
def test_inductor_compiles_the_static_step_on_cpu():
    m = measure(load_spec(EXAMPLES / "tiny-dense.yaml"), CPU, small(compile=True, flops=False, warmup=1))
    assert m.compile_info["graphs"] == 1 and m.compile_info["compile_mode"] == "default"


def test_kernel_count_and_host_bound_verdict():
    a = torch.ones(4, 4)
    n = count_kernels(lambda: (a @ a).relu().view(16).sum())
    assert n == 3  # mm, relu, sum; the view launches nothing
    with KernelCounter() as kc:
        a.t()
    assert kc.total == 0
    assert host_bound(1000, 9.5e-3, 10e-3, cuda=True)["host_bound"] is True
    assert host_bound(1000, 2e-3, 10e-3, cuda=True)["host_bound"] is False
    assert host_bound(1000, 2e-3, 10e-3, cuda=False)["host_bound"] is None
    m = measure(load_spec(EXAMPLES / "tiny-dense.yaml"), CPU, small())
    assert m.decode_info["kernels_per_step"] > 0 and m.decode_info["static"] is True


# --------------------------------------------------------------------------- energy and NVML


def test_decode_energy_window_rewinds_instead_of_prefilling():
    from godprof.measure.phases import energy_windows

    class Clocked:  # a counter that ticks 1 J every read: the window ends after min_ticks reads
        def __init__(self):
            self.mj = 0

        def read_mj(self):
            self.mj += 1000
            return self.mj

    class FakeNvml:
        def probe(self):
            return Clocked(), None, []

    spec = load_spec(EXAMPLES / "tiny-dense.yaml")
    model = build_model(spec, device="cpu", dtype=torch.float32)
    cache = model.allocate_cache(1, 10)
    calls = {"prefill": 0, "step": 0, "positions": set()}

    def prefill():
        calls["prefill"] += 1
        cache.reset()
        model(torch.zeros(1, 8, dtype=torch.long), cache=cache)
        return torch.zeros(1, 1, dtype=torch.long)

    def step(tok):
        calls["step"] += 1
        calls["positions"].add(cache.pos)
        return model.decode_static(tok, cache).argmax(-1)

    cfg = MeasureConfig(batch=1, seq=8, new_tokens=2, energy_min_s=0.0)
    dec, _ = energy_windows(CPU, cfg, FakeNvml(), cache, prefill, step, sync=lambda: None)
    assert dec.supported and calls["step"] > 2  # ran past a full cache...
    assert calls["positions"] == {8, 9}  # ...always at the timed contexts
    prefills_for_decode = calls["prefill"] - dec.units  # the prefill window ran `units` prefills
    assert prefills_for_decode >= 1  # the one before the window; never one inside it


def test_power_prefers_the_instant_field():
    from godprof.measure.nvml import Nvml

    class Value:
        uiVal = 123_456

    class Field:
        nvmlReturn = 0
        value = Value()

    nv = types.SimpleNamespace(
        NVML_FI_DEV_POWER_INSTANT=186, NVML_SUCCESS=0,
        nvmlDeviceGetFieldValues=lambda h, ids: [Field()], nvmlDeviceGetPowerUsage=lambda h: 99_000,
    )  # fmt: skip
    n = Nvml(nv, object(), "uuid")
    assert n.read_mw() == 123_456 and n.power_source == "instant"
    Field.nvmlReturn = 3  # NVML_ERROR_NOT_SUPPORTED: the 1 s average instead, and stay there
    n = Nvml(nv, object(), "uuid")
    assert n.read_mw() == 99_000 and n.power_source == "average"


# --------------------------------------------------------------------------- SDPA kernel plans


def test_sdpa_plans_avoid_the_math_kernel_on_cuda():
    f32, bf16 = torch.float32, torch.bfloat16
    assert sdpa_plan("cuda", bf16, 32, 8, 128, masked=False, is_causal=True) == "gqa"  # flash takes GQA
    assert sdpa_plan("cuda", f32, 32, 8, 128, masked=False, is_causal=True) == "expand"  # no fp32 flash
    assert sdpa_plan("cuda", bf16, 128, 1, 576, masked=False, is_causal=False) == "fold"  # MLA decode
    assert sdpa_plan("cuda", bf16, 32, 8, 128, masked=True, is_causal=False) == "expand"
    assert sdpa_plan("cpu", f32, 32, 8, 128, masked=False, is_causal=True) == "gqa"
    assert sdpa_plan("cpu", f32, 8, 8, 128, masked=True, is_causal=False) == "direct"


@pytest.mark.parametrize("plan", ["gqa", "expand", "fold"])
def test_every_sdpa_plan_computes_the_same_attention(plan):
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 8, 1, 24, generator=g)
    k, v = torch.randn(2, 1, 9, 24, generator=g), torch.randn(2, 1, 9, 16, generator=g)
    ref = torch.softmax(q @ k.transpose(-1, -2) / 24**0.5, dim=-1) @ v  # one KV head broadcast
    torch.testing.assert_close(sdpa(q, k, v, plan=plan), ref, rtol=1e-5, atol=1e-5)
