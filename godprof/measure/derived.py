"""Figures derived from a measurement: throughput, achieved bandwidth and FLOP/s, MBU/MFU against the
GPU database, and the roofline's own TTFT/TPOT for the same workload."""

from __future__ import annotations

from typing import Any

from godprof.analytic import roofline as R
from godprof.analytic.estimate import Estimate
from godprof.measure.config import MeasureConfig
from godprof.measure.stats import TimingStats
from godprof.spec import Spec


def derived(
    spec: Spec,
    est: Estimate,
    cfg: MeasureConfig,
    device: dict[str, Any],
    ttft: TimingStats,
    tpot: TimingStats,
    notes: list[str],
) -> dict[str, Any]:
    """Throughput, achieved bandwidth, MBU/MFU and the roofline's own TTFT/TPOT for the same workload."""
    counts = est.params
    dt = cfg.dtype_name
    ctx = cfg.decode_context
    step_bytes = R.decode_bytes(spec, counts, cfg.batch, ctx, dt)
    step_flops = R.decode_flops(spec, counts, cfg.batch, ctx)
    prefill_flops = R.prefill_flops(spec, counts, cfg.batch, cfg.seq, "causal")
    bw = step_bytes / tpot.median_s
    out: dict[str, Any] = {
        "decode_tokens_per_s": cfg.batch / tpot.median_s,
        "prefill_tokens_per_s": cfg.batch * cfg.seq / ttft.median_s,
        "achieved_bandwidth_bytes_per_s": bw,
        "achieved_decode_flops_per_s": step_flops / tpot.median_s,
        "achieved_prefill_flops_per_s": prefill_flops / ttft.median_s,
        "mbu": None,
        "mfu_decode": None,
        "mfu_prefill": None,
        "roofline": {
            "gpu": None,
            "decode_bytes": step_bytes,
            "decode_flops": step_flops,
            "prefill_flops_causal": prefill_flops,
            "decode_context": ctx,
            "ttft_s": None,  # expected (per-operation efficiency model)
            "tpot_s": None,
            "ttft_bound_s": None,  # speed of light: 100% of the datasheet, never beaten by a measurement
            "tpot_bound_s": None,
        },
    }
    if device["type"] != "cuda":
        return out
    from godprof.gpus import find_gpu_for_device

    gpu = find_gpu_for_device(device["name"])
    if gpu is None:
        notes.append(f"{device['name']!r} is not in the GPU database: MBU, MFU and roofline times are null "
                     "(add a YAML under godprof/data/gpus to get them)")  # fmt: skip
        return out
    peak = gpu.peak_flops(dt)
    out["mbu"] = bw / gpu.hbm_bandwidth_bytes_per_s
    out["mfu_decode"] = out["achieved_decode_flops_per_s"] / peak
    out["mfu_prefill"] = out["achieved_prefill_flops_per_s"] / peak
    roof = out["roofline"]
    roof["gpu"] = gpu.key
    roof["peak_flops_per_s"] = peak
    roof["hbm_bandwidth_bytes_per_s"] = gpu.hbm_bandwidth_bytes_per_s
    roof["ttft_s"] = R.prefill_time_s(spec, counts, gpu, cfg.batch, cfg.seq, dt)
    roof["tpot_s"] = R.decode_step_time_s(spec, counts, gpu, cfg.batch, ctx, dt)
    roof["ttft_bound_s"] = R.prefill_bound_s(spec, counts, gpu, cfg.batch, cfg.seq, dt)
    roof["tpot_bound_s"] = R.decode_bound_s(spec, counts, gpu, cfg.batch, ctx, dt)
    for what, measured in (("TTFT", ttft.median_s), ("TPOT", tpot.median_s)):
        bound = roof[f"{what.lower()}_bound_s"]
        if measured < bound:
            notes.append(
                f"measured {what} {measured * 1e3:.3f} ms beats the speed-of-light bound {bound * 1e3:.3f} ms: "
                "the GPU's datasheet figures or the model's counts are off"
            )
    if gpu.measured is not None and gpu.measured.bandwidth_bytes_per_s:
        out["bandwidth_vs_measured_copy"] = bw / gpu.measured.bandwidth_bytes_per_s
    return out
