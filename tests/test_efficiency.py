"""The speed-of-light bound and the expected time of the per-operation efficiency model.

The bound is the old roofline at 100% of the datasheet (so it keeps the property that godprof's dense
decode speed of light equals aiconfigurator's SOL figure); the expected time is never below it; its
operations add up to the pass's FLOPs and bytes; MoE and MLA steps fall further below speed of light
than the flat 60% / 80% factors said (aiconfigurator measures MLA at ~1% and MoE at ~19% of SOL on
8xH200); the efficiencies are data with sources, overridable per card; JSON carries both figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from godprof.analytic import count_params
from godprof.analytic import efficiency as E
from godprof.analytic import roofline as R
from godprof.cli.main import app
from godprof.errors import SpecError
from godprof.gpus import load_gpu, load_gpu_file
from godprof.kinds import MIXER_KINDS
from godprof.spec import load_spec

H100, H200 = load_gpu("h100"), load_gpu("h200")
SOL = R.Efficiency(1.0, 1.0)
SPECS = ["llama-3-8b", "mixtral-8x7b", "deepseek-v3", "deepseek-v3.2-exp", "mamba-2.8b", "jamba-v0.1",
         "qwen3-next-80b-a3b", "gpt-oss-20b", "gemma-2-9b", "zamba2-7b"]  # fmt: skip


@pytest.fixture(scope="module", params=SPECS)
def spec_counts(request):
    s = load_spec(request.param)
    return s, count_params(s)


@pytest.mark.parametrize("gpu,dtype", [(H100, "bf16"), (H200, "fp8"), (load_gpu("a100-80gb"), "int4")])
def test_expected_never_below_bound_and_ops_add_up(spec_counts, gpu, dtype):
    s, c = spec_counts
    for batch, ctx in ((1, 1), (1, 4096), (7, 32768), (256, 2048)):
        for step, flops, nbytes in (
            (R.decode_step(s, c, gpu, batch, ctx, dtype), R.decode_flops(s, c, batch, ctx),
             R.decode_bytes(s, c, batch, ctx, dtype)),
            (R.prefill_step(s, c, gpu, batch, min(ctx, 8192), dtype), R.prefill_flops(s, c, batch, min(ctx, 8192)),
             R.prefill_bytes(s, c, batch, min(ctx, 8192), dtype)),
        ):  # fmt: skip
            assert step.expected_s >= step.bound_s > 0
            assert 0 < step.sol_percent <= 100
            assert sum(o.flops for o in step.ops) == pytest.approx(flops, rel=1e-9)
            assert sum(o.bytes for o in step.ops) == pytest.approx(nbytes, rel=1e-9)
            for o in step.ops:
                assert o.expected_s >= o.bound_s * (1 - 1e-12)


def test_bound_is_the_old_roofline_at_full_efficiency(spec_counts):
    s, c = spec_counts
    peak, bw = H100.peak_flops("bf16"), H100.hbm_bandwidth_bytes_per_s
    for batch, ctx in ((1, 8192), (64, 2048)):
        old = R.decode_step_time_s(s, c, H100, batch, ctx, eff=SOL)
        by_hand = max(R.decode_flops(s, c, batch, ctx) / peak, R.decode_bytes(s, c, batch, ctx) / bw)
        assert R.decode_bound_s(s, c, H100, batch, ctx) == pytest.approx(old, rel=1e-12)
        assert R.decode_step(s, c, H100, batch, ctx).bound_s == pytest.approx(by_hand, rel=1e-12)
        old_p = R.prefill_time_s(s, c, H100, batch, ctx, eff=SOL)
        assert R.prefill_step(s, c, H100, batch, ctx).bound_s == pytest.approx(old_p, rel=1e-12)
        assert R.prefill_bound_s(s, c, H100, batch, ctx) == pytest.approx(old_p, rel=1e-12)


def test_llama_decode_speed_of_light_by_hand():
    """aiconfigurator's SOL for dense decode was within 0.1% of this figure: weights + KV over bandwidth."""
    s = load_spec("llama-3-8b")
    c = count_params(s)
    assert R.decode_bound_s(s, c, H100, 1, 8192) == pytest.approx(16_083_599_360 / 3.35e12, rel=1e-12)
    d = R.decode_step(s, c, H100, 1, 8192)
    assert d.bound_by == "memory"
    # expected: 129 GEMM kernels (4 per layer + lm_head) and 32 attention + 128 small kernels of fixed cost
    m = E.model_for(H100)
    ops = {o.op: o for o in d.ops}
    gemm = ops["gemm"]
    assert gemm.expected_s == pytest.approx(129 * m.gemm.kernel_fixed_s + gemm.bytes / (3.35e12 * m.gemm.bandwidth))
    assert ops["fixed"].expected_s == pytest.approx(32 * m.layer_small_kernels * m.gemm.kernel_fixed_s)
    assert 55 < d.sol_percent < 90


def test_moe_and_mla_fall_further_below_speed_of_light_than_dense():
    """Direction of aiconfigurator's measurements (MLA ~1%, MoE ~19% of SOL on 8xH200): the MLA and grouped
    GEMM operations sit further below speed of light than the flat 80% bandwidth factor and than a dense
    model's GEMMs, and DeepSeek-V3's expected decode is slower than the flat-factor roofline said."""
    dsv3 = load_spec("deepseek-v3")
    c = count_params(dsv3)
    step = R.decode_step(dsv3, c, H200, 1, 4096, "fp8")
    ops = {o.op: o for o in step.ops}
    assert set(ops) >= {"attention:mla", "grouped_gemm", "gemm"}
    sol = {k: o.bound_s / o.expected_s for k, o in ops.items() if o.expected_s}
    assert sol["attention:mla"] < 0.3 < 0.8
    assert sol["grouped_gemm"] < 0.8
    flat = R.decode_step_time_s(dsv3, c, H200, 1, 4096, "fp8", eff=R.DEFAULT_EFFICIENCY)
    assert step.expected_s > 1.3 * flat
    llama = load_spec("llama-3-70b")
    lc = count_params(llama)
    dense = R.decode_step(llama, lc, H200, 1, 4096, "fp8")
    assert step.sol_percent < dense.sol_percent
    assert R.decode_step_time_s(llama, lc, H200, 1, 4096, "fp8") < 1.2 * R.decode_step_time_s(
        llama, lc, H200, 1, 4096, "fp8", eff=R.DEFAULT_EFFICIENCY
    )  # dense stays near where aiconfigurator agreed (0.75-1.23x)


def test_gemm_curve_saturates():
    g = E.default_model().gemm
    assert g.compute(1) < 0.01 < g.compute(128) < g.compute(4096) < g.compute_max <= 1
    assert g.compute(g.m_half_tokens) == pytest.approx(g.compute_max / 2)


def test_every_kind_names_a_known_efficiency_class():
    model = E.default_model()
    for kind in MIXER_KINDS.values():
        assert kind.efficiency_class in E.ATTENTION_CLASSES, kind.type
        assert model.attention_for(kind.efficiency_class) is model.attention[kind.efficiency_class]
    assert MIXER_KINDS["mla"].efficiency_class == "mla" and MIXER_KINDS["mamba2"].efficiency_class == "scan"


def test_defaults_carry_sources_and_valid_fractions():
    m = E.default_model()
    assert all(src.strip() for src in m.sources.values())
    assert {"gemm", "grouped_gemm", "layer", "moe", "allreduce", "alltoall", "attention.mla"} <= set(m.sources)
    for a in m.attention.values():
        assert 0 < a.compute <= 1 and 0 < a.bandwidth <= 1


def test_communication_times():
    m = E.default_model()
    link = 450e9
    assert E.allreduce_time_s(1e6, 1, link, m) == 0.0 == E.alltoall_time_s(1e6, 1, link, m)
    t = E.allreduce_time_s(64e6, 8, link, m)
    assert t == pytest.approx(m.allreduce_latency_s + 2 * 7 / 8 * 64e6 / (link * m.allreduce_bus_bandwidth))
    assert t >= E.allreduce_bound_s(64e6, 8, link)
    assert E.alltoall_time_s(64e6, 8, link, m) > E.alltoall_time_s(32e6, 8, link, m)


GPU_FILE = """name: Test card
source: https://example.com/datasheet
memory_gib: 80
hbm_bandwidth_gb_per_s: 3350
peak_tflops: {bf16: 989.4}
"""


def test_gpu_file_efficiency_overrides(tmp_path: Path):
    p = tmp_path / "card.yaml"
    p.write_text(GPU_FILE + "efficiency:\n  source: my own kernels\n  gemm: {bandwidth: 0.5}\n"
                 "  attention: {mla: {compute: 0.2}}\n")  # fmt: skip
    g = load_gpu_file(p)
    m = E.model_for(g)
    assert m.gemm.bandwidth == 0.5 and m.attention["mla"].compute == 0.2
    assert m.gemm.compute_max == E.default_model().gemm.compute_max  # untouched keys keep the defaults
    s = load_spec("llama-3-8b")
    c = count_params(s)
    assert R.decode_step_time_s(s, c, g, 1, 4096) > R.decode_step_time_s(s, c, H100, 1, 4096)


@pytest.mark.parametrize(
    "body,needle",
    [
        ("  source: x\n  gemm: {bandwidth: 1.5}\n", "efficiency.gemm.bandwidth"),
        ("  gemm: {bandwidth: 0.5}\n", "efficiency.source"),
        ("  source: x\n  attention: {paged: {compute: 0.5}}\n", "efficiency.attention.paged"),
        ("  source: x\n  gemm: {speed: 2}\n", "efficiency.gemm.speed"),
    ],
)
def test_gpu_file_efficiency_errors(tmp_path: Path, body: str, needle: str):
    p = tmp_path / "card.yaml"
    p.write_text(GPU_FILE + "efficiency:\n" + body)
    with pytest.raises(SpecError, match=needle.replace(".", r"\.")):
        load_gpu_file(p)


def test_json_has_bound_and_expected():
    r = CliRunner().invoke(app, ["compare", "llama-3-8b", "deepseek-v3", "--gpu", "h200", "--context", "4096",
                                 "--format", "json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    recs = doc if isinstance(doc, list) else doc.get("records", doc.get("specs"))
    for d in recs:
        rl = d["roofline"]
        assert rl["ttft_expected_s"] == rl["ttft_s"] >= rl["ttft_bound_s"] > 0
        assert rl["tpot_expected_s"] == rl["tpot_s"] >= rl["tpot_bound_s"] > 0
        assert rl["tpot_sol_percent"] == pytest.approx(100 * rl["tpot_bound_s"] / rl["tpot_s"])
    r = CliRunner().invoke(app, ["sweep", "llama-3-8b", "--gpu", "h100", "--context", "1Ki..8Ki", "--points", "3",
                                 "--format", "json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    for p in json.loads(r.output)["points"]:
        assert p["tpot_s"] >= p["tpot_bound_s"] > 0 and p["ttft_s"] >= p["ttft_bound_s"] > 0
        assert 0 < p["tpot_sol_percent"] <= 100
