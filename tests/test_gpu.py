"""CUDA paths of `godprof measure` (marked gpu: skipped without CUDA, see conftest.py).

Covers: building on cuda:0 in bf16, allocator phases and NVML readings, CUDA-event timings, energy
(NVML counter, power sampling, or a documented absence), the GPU-database match and MBU/MFU, a real
CUDA out-of-memory turned into "does not fit" with the memory released, a bad GPU index, and
torch.compile of the decode step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from godprof.cli.main import app
from godprof.measure import DoesNotFit, MeasureConfig, measure, resolve_device
from godprof.spec import load_spec, parse_spec_text

pytestmark = pytest.mark.gpu

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()


@pytest.fixture(scope="module")
def dense():
    spec = load_spec(EXAMPLES / "tiny-dense.yaml")
    cfg = MeasureConfig(batch=4, seq=256, new_tokens=16, dtype="bf16", warmup=2, iters=5, energy_min_s=1.0)
    return measure(spec, resolve_device(None, 0), cfg)


def test_cuda_memory_phases_are_exact_where_they_can_be(dense):
    m, est = dense, dense.estimate
    assert m.params == est.params.total
    assert m.memory["weights_bytes"] == est.memory["weights_bytes"] == 2 * m.params  # bf16
    assert m.memory["cache_bytes"] == est.memory["kv_cache_bytes"] + est.memory["ssm_state_bytes"]
    ph = m.memory["phases"]
    assert set(ph) == {"weights_and_cache", "prefill", "decode"}
    # after weights and cache, the allocator holds at least those bytes (it rounds blocks up to 512 B)
    held = ph["weights_and_cache"]["allocated_bytes"] - m.memory["baseline_allocated_bytes"]
    assert held >= m.memory["weights_bytes"] + m.memory["cache_bytes"]
    assert ph["prefill"]["peak_allocated_bytes"] >= ph["weights_and_cache"]["allocated_bytes"]
    assert m.peak_memory_bytes >= m.memory["weights_bytes"] + m.memory["cache_bytes"]
    for p in ph.values():
        assert p["peak_reserved_bytes"] >= p["peak_allocated_bytes"]
        assert p["ooms"] == 0
    nv = m.memory["nvml"]
    if nv is not None and nv["after_prefill"] is not None:  # NVML sees the context too: more than torch does
        assert nv["after_prefill"]["device_used_bytes"] >= ph["prefill"]["reserved_bytes"]
        if nv["after_prefill"]["process_used_bytes"] is not None:
            assert nv["after_prefill"]["process_used_bytes"] >= ph["prefill"]["reserved_bytes"]


def test_cuda_event_timings(dense):
    assert dense.ttft.n == 5 and dense.tpot.n == 5 * 16
    for s in (dense.ttft, dense.tpot):
        assert 0 < s.min_s <= s.p10_s <= s.median_s <= s.p90_s <= s.max_s < 10
    d = dense.to_dict()["measured"]
    assert d["tokens_per_s"] == pytest.approx(4 / d["tpot_s"])


def test_device_record_and_gpu_database(dense):
    dev = dense.device
    assert dev["type"] == "cuda" and dev["name"] == torch.cuda.get_device_name(0)
    assert dev["torch"] == torch.__version__ and dev["cuda"] == torch.version.cuda
    if "nvml" not in dev:  # NVML opened (otherwise "nvml" holds the reason): driver and clocks were read
        assert dev["driver"]
        assert dev["sm_clock_mhz"] is None or dev["sm_clock_mhz"] > 0
    if dev["gpu_db"] is None:
        assert dense.derived["mbu"] is None and any("not in the GPU database" in n for n in dense.notes)
    else:
        assert 0 < dense.derived["mbu"] < 1.5 and 0 < dense.derived["mfu_prefill"] < 1


def test_energy_measured_or_plainly_unsupported(dense):
    e = dense.energy_decode
    if e.supported:
        assert e.method in ("nvml-energy-counter", "nvml-power-sampling")
        assert e.window_s >= 0.9 and e.joules > 0
        if torch.cuda.get_device_capability(0)[0] >= 9:  # Hopper's sensor needs a longer window
            assert e.window_s >= 2.9
        assert 5 < e.power_w < 2000  # watts: a working GPU, not a unit mix-up
        j = dense.energy_j_per_token
        assert j == pytest.approx(e.power_w * dense.tpot.median_s / 4)
    else:
        assert e.reason and dense.energy_j_per_token is None


def test_flop_counters_on_cuda(dense):
    f = dense.flops
    assert f is not None
    torch_c = f.counters[0]
    assert torch_c.available, torch_c.reason
    assert torch_c.matmul == f.analytic_matmul  # godprof's GQA-aware formula prices the CUDA SDPA kernels
    fv = f.counters[1]
    if fv.available:  # fvcore is optional (the GPU image has none)
        assert abs(f.error(fv)) < 0.01
    else:
        assert fv.reason


def test_cublas_workspace_is_its_own_row_and_requested_bytes_are_read(dense):
    mem = dense.memory
    assert mem["cublas_workspace_bytes"] >= 0 and mem["cuda_context_bytes"] > 0
    # the workspace is created before the baseline, so the prefill's peak above weights + cache holds
    # activations only: the first measurement in a process is measured like the later ones
    ph = mem["phases"]
    assert ph["prefill"]["peak_requested_bytes"] <= ph["prefill"]["peak_allocated_bytes"]
    assert mem["peak_requested_bytes"] <= mem["peak_allocated_bytes"]
    if "device" in mem:
        d = mem["device"]
        assert d["nvml_peak_device_used_bytes"] >= d["before_model_bytes"]
        assert d["expected_bytes"] == d["estimate_bytes"] + d["before_model_bytes"]


def test_decode_is_static_and_reports_launches(dense):
    d = dense.decode_info
    assert d["static"] is True and d["kernels_per_step"] > 0
    assert isinstance(d["host_bound"], bool) and d["host_s_per_step"] > 0


def test_mla_decode_and_fp32_gqa_run_without_the_math_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from godprof.build import build_model

    dev = torch.device("cuda", 0)
    for name, dtype in (("tiny-mla", torch.bfloat16), ("tiny-dense", torch.float32)):
        spec = load_spec(EXAMPLES / f"{name}.yaml")
        model = build_model(spec, device=dev, dtype=dtype)
        cache = model.allocate_cache(2, 40)
        ids = torch.randint(0, spec.model.vocab_size, (2, 32), device=dev)
        backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
        with torch.no_grad(), sdpa_kernel(backends):  # no math: a fallback would raise "no available kernel"
            tok = model(ids, cache=cache, last_only=True).argmax(-1)
            model(tok, cache=cache)  # the dynamic step (MLA: heads folded into query rows)
            model.decode_static(tok, cache)  # the static step (a [1, T] mask over the whole cache)


def test_peak_memory_estimate_on_a_real_size_model():
    """Peak allocated vs the estimate for a 1B-class dense spec.

    Bound 10%: the activation term is a model (godprof.analytic.memory), and on the CPU the tracker
    measured the tiny models' prefill transients above it (tiny-dense fp32: 241 KiB vs 177 KiB). The
    issue's 2% target is checked and reported by benchmarks/measure_bench.py, not asserted here.
    """
    spec = parse_spec_text(
        """
name: dense-1b
family: dense
model: {vocab_size: 32000, hidden_size: 2048, num_layers: 16}
mixers: {attn: {type: attention, num_heads: 16, num_kv_heads: 4}}
ffns: {mlp: {type: mlp, intermediate_size: 5632}}
"""
    )
    free, _ = torch.cuda.mem_get_info(0)
    if free < 16 << 30:
        pytest.skip("needs 16 GiB free")
    m = measure(spec, resolve_device(None, 0), MeasureConfig(batch=8, seq=2048, new_tokens=8, iters=2, warmup=1,
                                                              energy=False, fvcore=False))  # fmt: skip
    est = m.estimate.memory["total_bytes"]
    err = (est - m.peak_memory_bytes) / m.peak_memory_bytes
    print(f"peak allocated {m.peak_memory_bytes:,} B, estimate {est:,} B, error {err:+.2%}")
    assert abs(err) < 0.10


def _huge_activation_spec(tmp_path: Path) -> tuple[Path, int, int]:
    # One Mamba-1 layer: ~0.4 B parameters (0.85 GB bf16) and 655 KB of state per sequence, but the
    # prefill's first tensor (batch x seq x 8192 bf16) is sized below to 1.5 x the free memory.
    free, _ = torch.cuda.mem_get_info(0)
    seq = 65536
    batch = int(1.5 * free / (seq * 8192 * 2)) + 1
    p = tmp_path / "huge.yaml"
    p.write_text(
        "name: huge-activations\nfamily: ssm\nmodel: {vocab_size: 256, hidden_size: 8192, num_layers: 1, "
        "tie_embeddings: true}\nmixers: {m: {type: mamba1, d_state: 16, expand: 2}}\n"
    )
    return p, batch, seq


def test_real_cuda_oom_becomes_does_not_fit_and_memory_is_released(tmp_path):
    path, batch, seq = _huge_activation_spec(tmp_path)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(0)
    with pytest.raises(DoesNotFit) as info:
        measure(load_spec(path), resolve_device(None, 0), MeasureConfig(batch=batch, seq=seq, new_tokens=1, iters=1,
                                                                        warmup=0, energy=False))  # fmt: skip
    assert "does not fit" in str(info.value) and "out of memory" in str(info.value)
    assert info.value.needed_bytes > info.value.free_bytes
    assert torch.cuda.memory_allocated(0) <= before + (1 << 20)  # the model and cache were freed
    r = runner.invoke(app, ["measure", str(path), "--gpu", "0", "--batch", str(batch), "--seq", str(seq),
                            "--iters", "1", "--warmup", "0", "--new-tokens", "1", "--no-energy"])  # fmt: skip
    assert r.exit_code == 3, r.output
    assert "does not fit" in r.stderr


def test_bad_gpu_index_exits_4():
    r = runner.invoke(app, ["measure", str(EXAMPLES / "tiny-dense.yaml"), "--gpu", str(torch.cuda.device_count())])
    assert r.exit_code == 4
    assert "no GPU" in r.stderr


def test_cli_json_and_compile_on_cuda():
    r = runner.invoke(app, ["measure", str(EXAMPLES / "tiny-moe.yaml"), "--gpu", "0", "--format", "json", "--seq",
                            "64", "--new-tokens", "8", "--iters", "3", "--compile", "--no-energy"])  # fmt: skip
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    m = d["measured"]
    assert d["config"]["compile"] is True and d["config"]["dtype"] == "bf16"
    assert m["params"]["total"] == d["estimate"]["params"]["total"]
    assert m["ttft"]["p10_s"] <= m["ttft_s"] <= m["ttft"]["p90_s"]
    assert m["energy_j_per_token"] is None and m["energy"]["decode"]["reason"] == "skipped (--no-energy)"
    c = d["config"]["compiled"]
    # one static step captured as a CUDA graph; nothing compiled inside the timed runs (else exit 2)
    assert c["static"] is True and c["compile_mode"] == "reduce-overhead" and c["graphs"] >= 1
    assert c["after_timing"]["graphs"] == c["after_warmup"]["graphs"]
    assert m["decode"]["static"] is True
