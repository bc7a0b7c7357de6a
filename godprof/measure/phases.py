"""The memory pass and the energy windows of a measurement (``godprof.measure.run`` runs them in order).

CUDA memory, in the order it happens: ``cuda_baseline`` creates the cuBLAS workspace (its own row,
never an activation) and reads the CUDA context's size and the allocator baseline; ``cuda_memory_pass``
resets peaks per phase (weights and cache, prefill, decode) and reads allocated, reserved and
requested bytes (requested: exact, as the CPU tracker; allocated: rounded to 512 B blocks), and NVML's
device-used figure, which it sets against the estimate plus the context and the workspace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from godprof.analytic.estimate import Estimate
from godprof.measure.config import MeasureConfig
from godprof.measure.energy import EnergyResult, measure_window
from godprof.measure.memory import (
    CudaPhase,
    LiveTensorBytes,
    cublas_workspace_bytes,
    cuda_context_bytes,
    cuda_phase,
    cuda_reset_peaks,
)

HOPPER_MIN_ENERGY_S = 3.0  # Hopper's sensor samples ~25% of each 100 ms period (arXiv 2312.02741)


@dataclass(frozen=True)
class CudaBaseline:
    phase: CudaPhase  # allocator figures before the model exists (the workspace already in them)
    cublas_workspace_bytes: int
    context_bytes: int  # device used beyond torch's reserved pool (CUDA context, other processes)
    nvml_device_used_bytes: int | None


def cuda_baseline(dev: torch.device, dtype: torch.dtype, nvml: Any | None) -> CudaBaseline:
    workspace = cublas_workspace_bytes(dev, dtype)
    cuda_reset_peaks(dev)
    phase = cuda_phase(dev)
    m = nvml.memory() if nvml is not None else None
    return CudaBaseline(phase, workspace, cuda_context_bytes(dev), None if m is None else m.device_used_bytes)


def _nvml(nvml: Any | None) -> dict | None:
    m = nvml.memory() if nvml is not None else None
    return None if m is None else m.to_dict()


def cuda_memory_pass(
    dev: torch.device,
    est: Estimate,
    nvml: Any | None,
    base: CudaBaseline | None,
    prefill: Callable[[], torch.Tensor],
    step: Callable[[torch.Tensor], torch.Tensor],
    new_tokens: int,
    memory: dict[str, Any],
) -> int:
    """Per-phase allocator peaks and NVML readings of a cold prefill and ``new_tokens`` eager decode steps;
    fills ``memory`` and returns the peak bytes above the baseline (what the estimate's total models)."""
    assert base is not None
    phases: dict[str, CudaPhase] = {"weights_and_cache": cuda_phase(dev)}
    nvml_mem: dict[str, Any] = {"baseline": _nvml(nvml), "after_weights": _nvml(nvml)}
    cuda_reset_peaks(dev)
    tok = prefill()
    phases["prefill"] = cuda_phase(dev)
    nvml_mem["after_prefill"] = _nvml(nvml)
    cuda_reset_peaks(dev)
    for _ in range(new_tokens):
        tok = step(tok)  # memory is measured on the eager step (compiling allocates workspaces)
    nvml_mem["during_decode"] = _nvml(nvml)  # read while the decode's memory is still held
    phases["decode"] = cuda_phase(dev)
    del tok
    b = base.phase
    peak = max(p.peak_allocated_bytes for p in phases.values())
    peak_requested = max(p.peak_requested_bytes for p in phases.values())
    memory.update(
        method="torch.cuda.memory_stats (allocator) + NVML",
        baseline_allocated_bytes=b.allocated_bytes,
        cublas_workspace_bytes=base.cublas_workspace_bytes,
        cuda_context_bytes=base.context_bytes,
        phases={k: v.to_dict() for k, v in phases.items()},
        nvml={k: v for k, v in nvml_mem.items() if v is not None} or None,
        peak_allocated_bytes=peak,
        peak_requested_bytes=peak_requested,
        peak_requested_above_baseline_bytes=peak_requested - b.requested_bytes,
        peak_reserved_bytes=max(p.peak_reserved_bytes for p in phases.values()),
        alloc_retries=phases["decode"].alloc_retries,
        ooms=phases["decode"].ooms,
    )
    used = [v["device_used_bytes"] for k, v in nvml_mem.items() if v is not None and k != "baseline"]
    if used and base.nvml_device_used_bytes is not None:
        # what the device should show: the estimate, plus what was in use before the model (context,
        # workspace, other processes), plus the allocator's reserved-but-unallocated slack it keeps
        expected = est.memory["total_bytes"] + base.nvml_device_used_bytes
        memory["device"] = {
            "nvml_peak_device_used_bytes": max(used),
            "expected_bytes": expected,
            "estimate_bytes": est.memory["total_bytes"],
            "before_model_bytes": base.nvml_device_used_bytes,
            "reserved_slack_bytes": memory["peak_reserved_bytes"] - peak,
            "note": "expected = estimate + device memory in use before the model (CUDA context, cuBLAS "
            "workspace, other processes); the difference is mostly the allocator's reserved slack",
        }
    return peak - b.allocated_bytes


def cpu_memory_pass(
    prefill: Callable[[], torch.Tensor],
    step: Callable[[torch.Tensor], torch.Tensor],
    new_tokens: int,
    memory: dict[str, Any],
) -> int:
    """Exact transient tensor bytes of a prefill and ``new_tokens`` eager decode steps; returns the peak
    (parameters + buffers + cache + the larger transient peak)."""
    with LiveTensorBytes() as live_prefill:
        tok = prefill()
    # Eager decode here even with --compile: torch.compile does not trace under a dispatch mode
    # (and would then skip the function for good); the compiled step is timed later.
    with LiveTensorBytes() as live_decode:
        for _ in range(new_tokens):
            tok = step(tok)
    del tok
    memory.update(
        method="exact tensor bytes: parameters + cache storages; transient peaks from a TorchDispatchMode "
        "that tracks every aten output storage until it is freed",
        prefill_transient_peak_bytes=live_prefill.peak_bytes,
        decode_transient_peak_bytes=live_decode.peak_bytes,
    )
    fixed = memory["weights_bytes"] + memory["buffers_bytes"] + memory["cache_bytes"]
    return fixed + max(live_prefill.peak_bytes, live_decode.peak_bytes)


def energy_min_s(dev: torch.device, requested_s: float) -> float:
    """The energy window: at least ``HOPPER_MIN_ENERGY_S`` on compute capability 9.0 and newer."""
    if dev.type == "cuda" and torch.cuda.get_device_capability(dev)[0] >= 9:
        return max(requested_s, HOPPER_MIN_ENERGY_S)
    return requested_s


def energy_windows(
    dev: torch.device,
    cfg: MeasureConfig,
    nvml: Any,
    cache: Any,
    prefill: Callable[[], torch.Tensor],
    step: Callable[[torch.Tensor], torch.Tensor],
    sync: Callable[[], None],
) -> tuple[EnergyResult, EnergyResult]:
    """(decode, prefill) energy windows. Decode steps repeat at the timed contexts: when the cache is full
    its position is rewound to ``seq`` (same shapes and cost, no prefill inside the window)."""
    counter, meter, reasons = nvml.probe()
    why = "; ".join(reasons) or "NVML has neither an energy counter nor a power reading for this device"
    min_s = energy_min_s(dev, cfg.energy_min_s)
    holder = {"tok": prefill()}

    def decode_unit() -> None:
        if cache.pos >= cfg.max_len:
            cache.rewind(cfg.seq)
        holder["tok"] = step(holder["tok"])

    e_dec = measure_window(decode_unit, counter, meter, sync=sync, min_s=min_s, why_none=why)
    e_pre = measure_window(prefill, counter, meter, sync=sync, min_s=min_s, why_none=why)
    holder.clear()
    return e_dec, e_pre
