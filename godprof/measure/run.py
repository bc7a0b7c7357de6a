"""``measure``: build a spec on a device with random weights and measure memory, latency, energy and FLOPs.

What is measured, and how:

- memory. CUDA: torch's allocator stats (current and peak allocated / reserved, alloc retries, OOMs),
  peaks reset per phase (weights, cache, prefill, decode), and NVML device and process memory (which
  include the CUDA context the allocator does not see). CPU: exact tensor bytes: parameters and
  cache storages, and the peak of live transient tensor bytes during prefill and decode from a
  dispatch-mode tracker (``godprof.measure.memory.LiveTensorBytes``).
- latency. TTFT: a prefill of ``seq`` tokens for ``batch`` sequences into a fresh cache, plus the
  greedy choice of the first token. TPOT: one decode step (``batch`` new tokens at context
  seq+1 .. seq+new_tokens). Every timed iteration runs one prefill and ``new_tokens`` decode steps after
  ``warmup`` untimed ones; medians and p10/p90 over all samples. CUDA events on CUDA (the GPU
  timeline, launch gaps included); ``time.perf_counter`` on CPU, where ops are synchronous.
- throughput and roofline use: decode tokens/s = batch / TPOT; achieved bandwidth = the roofline's
  ``decode_bytes`` (weights touched + KV cache + SSM state) at the median decode context / TPOT; MBU
  and MFU against the card's datasheet peaks from the GPU database (null when the card is not in it).
- energy (CUDA only): average power over a window of repeated decode steps (and one of prefills) from
  NVML's energy counter, else sampled power (``godprof.measure.energy``); J/token = power x TPOT /
  batch (decode) and power x TTFT / (batch x seq) (prefill). Null with the reason when unsupported.
- FLOPs: one forward (no cache, last-position logits, as in the prefill) counted by FlopCounterMode and
  fvcore (``godprof.measure.flops``).
- the estimate beside it: ``godprof.analytic.estimate`` for the same batch, seq, dtype and cache length
  (seq + new_tokens), with last-position logits and ``attention_flops="full"`` (what the counters see).

Memory is measured on the first, eager, prefill and decode. With ``--compile`` the decode step is
compiled during a warm-up run (at least one), so compilation never lands in a timed step; the JSON
records how many graphs (and graph breaks) torch.compile produced.

Nothing here changes any device setting (clocks, power limits, modes); it only reads them.
"""

from __future__ import annotations

import gc
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from godprof.analytic import Workload, estimate
from godprof.analytic import roofline as R
from godprof.analytic.estimate import Estimate
from godprof.dtypes import get_dtype
from godprof.errors import GodprofError
from godprof.measure.energy import EnergyResult, measure_window, unsupported
from godprof.measure.flops import FlopComparison, compare_flops
from godprof.measure.memory import (
    CudaPhase,
    LiveTensorBytes,
    cuda_phase,
    cuda_reset_peaks,
    fused_attention,
    module_bytes,
)
from godprof.measure.stats import TimingStats
from godprof.spec import Spec

SCHEMA = "godprof.measure/1"
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

Progress = Callable[[str, int, int], None]  # (task description, completed, total)


class NoDevice(GodprofError):
    """The requested device does not exist (no CUDA, bad index)."""


class DoesNotFit(GodprofError):
    """The model and workload need more device memory than is free."""

    def __init__(self, needed_bytes: int, free_bytes: int, total_bytes: int, device: str, detail: str = ""):
        from godprof.report.format import fmt_bytes

        self.needed_bytes, self.free_bytes, self.total_bytes = needed_bytes, free_bytes, total_bytes
        msg = (
            f"does not fit on {device}: the estimate needs {fmt_bytes(needed_bytes)} "
            f"({needed_bytes:,} B) and {fmt_bytes(free_bytes)} of {fmt_bytes(total_bytes)} is free"
        )
        super().__init__(msg + (f" ({detail})" if detail else ""))


class CompileFailed(GodprofError):
    """torch.compile could not compile the decode step."""


@dataclass(frozen=True)
class MeasureConfig:
    batch: int = 1
    seq: int = 512
    new_tokens: int = 32
    dtype: str = "bf16"
    warmup: int = 2
    iters: int = 10
    compile: bool = False
    energy: bool = True
    energy_min_s: float = 1.0
    flops: bool = True
    fvcore: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch", "seq", "new_tokens", "iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        name = get_dtype(self.dtype).name
        if name not in TORCH_DTYPES:
            raise ValueError(f"measure builds fp32, bf16 or fp16 weights, not {name} (estimate covers {name})")

    @property
    def dtype_name(self) -> str:
        return get_dtype(self.dtype).name

    @property
    def max_len(self) -> int:
        """Cache length: the prompt plus every generated token."""
        return self.seq + self.new_tokens

    @property
    def decode_context(self) -> int:
        """The median context of the timed decode steps (they see seq+1 .. seq+new_tokens keys)."""
        return self.seq + (self.new_tokens + 1) // 2


@dataclass
class Measurement:
    spec: Spec
    config: MeasureConfig
    estimate: Estimate
    device: dict[str, Any]
    params: int
    memory: dict[str, Any]
    peak_memory_bytes: int
    ttft: TimingStats
    tpot: TimingStats
    energy_decode: EnergyResult
    energy_prefill: EnergyResult
    flops: FlopComparison | None
    derived: dict[str, Any] = field(default_factory=dict)  # throughput, bandwidth, MBU/MFU, roofline times
    notes: list[str] = field(default_factory=list)
    compile_info: dict[str, int] | None = None  # graphs and graph breaks torch.compile produced

    @property
    def energy_j_per_token(self) -> float | None:
        return self.energy_decode.joules_for(self.tpot.median_s / self.config.batch)

    @property
    def flops_forward(self) -> int | None:
        if self.flops is None:
            return None
        return self.flops.counters[0].matmul

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        prefill_j = self.energy_prefill.joules_for(self.ttft.median_s / (c.batch * c.seq))
        return {
            "schema": SCHEMA,
            "estimate": self.estimate.to_dict(),
            "config": {
                "batch": c.batch,
                "seq": c.seq,
                "new_tokens": c.new_tokens,
                "dtype": c.dtype_name,
                "warmup": c.warmup,
                "iters": c.iters,
                "compile": c.compile,
                "cache_len": c.max_len,
                "decode_context": c.decode_context,
                "compiled": self.compile_info,
            },  # fmt: skip
            "measured": {
                "device": self.device,
                "params": self.params,
                "peak_memory_bytes": self.peak_memory_bytes,
                "memory": self.memory,
                "ttft_s": self.ttft.median_s,
                "tpot_s": self.tpot.median_s,
                "ttft": self.ttft.to_dict(),
                "tpot": self.tpot.to_dict(),
                "tokens_per_s": self.derived["decode_tokens_per_s"],
                "prefill_tokens_per_s": self.derived["prefill_tokens_per_s"],
                "achieved_bandwidth_bytes_per_s": self.derived["achieved_bandwidth_bytes_per_s"],
                "mbu": self.derived["mbu"],
                "mfu_decode": self.derived["mfu_decode"],
                "mfu_prefill": self.derived["mfu_prefill"],
                "flops_forward": self.flops_forward,
                "flops": None if self.flops is None else self.flops.to_dict(),
                "energy_j_per_token": self.energy_j_per_token,
                "energy_prefill_j_per_token": prefill_j,
                "energy": {"decode": self.energy_decode.to_dict(), "prefill": self.energy_prefill.to_dict()},
            },
            "roofline": self.derived["roofline"],
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- device


def resolve_device(device: str | None, gpu: int | None) -> torch.device:
    """``--gpu N`` -> cuda:N; ``--device cpu|cuda|cuda:N``; neither -> cuda:0 when CUDA exists.

    Raises NoDevice for a missing CUDA or an index out of range, ValueError for an unknown device.
    """
    if gpu is not None and device is not None and device != f"cuda:{gpu}":
        raise ValueError(f"--gpu {gpu} and --device {device} disagree; give one of them")
    if gpu is not None:
        if gpu < 0:
            raise ValueError(f"--gpu must be >= 0, got {gpu}")
        dev = torch.device("cuda", gpu)
    elif device is None:
        if not torch.cuda.is_available():
            raise NoDevice("no CUDA device is available; use --device cpu to measure on the CPU")
        dev = torch.device("cuda", 0)
    else:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"measure runs on cpu or cuda, not {dev.type}")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", 0)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NoDevice(f"{dev} requested but CUDA is not available (torch {torch.__version__}, "
                           f"built with CUDA {torch.version.cuda or 'none'})")  # fmt: skip
        n = torch.cuda.device_count()
        if dev.index >= n:
            raise NoDevice(f"no GPU {dev.index}: {n} CUDA device(s) visible (indices 0..{n - 1})")
    return dev


def device_info(dev: torch.device, nvml: Any | None, nvml_reason: str | None) -> dict[str, Any]:
    """Device name, driver, torch / CUDA versions, clocks (read only) and the GPU-database match."""
    info: dict[str, Any] = {
        "type": dev.type,
        "index": dev.index,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "host": platform.node(),
    }
    if dev.type == "cpu":
        info.update(
            name=platform.processor() or platform.machine() or "cpu",
            machine=platform.machine(),
            threads=torch.get_num_threads(),
            cpu_count=os.cpu_count(),
            gpu_db=None,
        )
        return info
    p = torch.cuda.get_device_properties(dev)
    info.update(
        name=torch.cuda.get_device_name(dev),
        capability=f"{p.major}.{p.minor}",
        multiprocessors=p.multi_processor_count,
        memory_bytes=int(p.total_memory),
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    )
    if nvml is not None:
        info.update(nvml.info())
    else:
        info["nvml"] = nvml_reason
    from godprof.gpus import find_gpu_for_device

    g = find_gpu_for_device(info["name"])
    info["gpu_db"] = None if g is None else g.key
    return info


# --------------------------------------------------------------------------- timing


class _Marks:
    """Timestamps on the device timeline: CUDA events on CUDA, perf_counter on CPU."""

    def __init__(self, dev: torch.device):
        self.dev = dev
        self.cuda = dev.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.dev)

    def seconds(self, a: Any, b: Any) -> float:
        return a.elapsed_time(b) / 1e3 if self.cuda else b - a


# --------------------------------------------------------------------------- the measurement


def _host_memory() -> tuple[int | None, int | None]:
    """(available, total) RAM in bytes from /proc/meminfo (Linux); (None, None) elsewhere."""
    try:
        info = dict(line.split(":", 1) for line in open("/proc/meminfo", encoding="ascii").read().splitlines())
        kib = {k: int(v.split()[0]) * 1024 for k, v in info.items() if k in ("MemAvailable", "MemTotal")}
        return kib.get("MemAvailable"), kib.get("MemTotal")
    except (OSError, ValueError):
        return None, None


def _release(dev: torch.device) -> None:
    """Free what the measurement held: collect cycles, then return cached blocks to the driver."""
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def measure(spec: Spec, dev: torch.device, cfg: MeasureConfig, progress: Progress | None = None) -> Measurement:
    """Build ``spec`` on ``dev`` and measure it (see the module docstring). Raises DoesNotFit on CUDA OOM
    (after releasing the model's memory), CompileFailed when ``--compile`` cannot compile."""
    report = progress or (lambda task, done, total: None)
    w = Workload(batch=cfg.batch, seq=cfg.seq, context=cfg.max_len, dtype=cfg.dtype_name,
                 attention_flops="full", logits="last", flash_attention=fused_attention(spec, dev))  # fmt: skip
    est = estimate(spec, w)
    needed = est.memory["total_bytes"]
    cuda = dev.type == "cuda"
    nvml = None
    nvml_reason: str | None = "no NVML on CPU" if not cuda else None
    if cuda:
        torch.cuda.set_device(dev)
        free, total = torch.cuda.mem_get_info(dev)
        fixed = est.memory["weights_bytes"] + est.memory["kv_cache_bytes"] + est.memory["ssm_state_bytes"]
        if fixed > free:
            raise DoesNotFit(needed, free, total, str(dev), "weights and cache alone exceed the free memory")
        from godprof.measure.nvml import Nvml

        nvml, nvml_reason = Nvml.open(dev.index or 0)
    else:
        avail, total = _host_memory()
        fixed = est.memory["weights_bytes"] + est.memory["kv_cache_bytes"] + est.memory["ssm_state_bytes"]
        if avail is not None and fixed > avail:
            raise DoesNotFit(needed, avail, total or 0, "cpu", "weights and cache alone exceed the available RAM")
    state: dict[str, Any] = {}
    oom: str | None = None
    try:
        return _measure(spec, dev, cfg, est, nvml, nvml_reason, state, report)
    except torch.OutOfMemoryError as e:
        oom = _first_line(e)
    finally:
        state.clear()
        _release(dev)
        if nvml is not None:
            nvml.close()
    # Out of the except block the traceback, and the frames holding the model and cache, are gone.
    _release(dev)
    free, total = torch.cuda.mem_get_info(dev) if cuda else (0, 0)
    raise DoesNotFit(needed, free, total, str(dev), oom or "out of memory")


def _measure(
    spec: Spec,
    dev: torch.device,
    cfg: MeasureConfig,
    est: Estimate,
    nvml: Any | None,
    nvml_reason: str | None,
    state: dict[str, Any],
    report: Progress,
) -> Measurement:
    from godprof.build import build_model

    cuda = dev.type == "cuda"
    marks = _Marks(dev)
    notes: list[str] = []
    steps = 6
    report("building the model on the device", 0, steps)
    if cuda:
        cuda_reset_peaks(dev)
        base = cuda_phase(dev)
    model = state["model"] = build_model(spec, device=dev, dtype=TORCH_DTYPES[cfg.dtype_name], seed=cfg.seed)
    params = sum(p.numel() for p in model.parameters())
    weights_bytes, buffer_bytes = module_bytes(model)
    cache = state["cache"] = model.allocate_cache(cfg.batch, cfg.max_len)
    cache_bytes = cache.nbytes()
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    ids = torch.randint(0, spec.model.vocab_size, (cfg.batch, cfg.seq), generator=g).to(dev)

    memory: dict[str, Any] = {
        "weights_bytes": weights_bytes,
        "buffers_bytes": buffer_bytes,
        "cache_bytes": cache_bytes,
    }
    phases: dict[str, CudaPhase] = {}
    nvml_mem: dict[str, Any] = {}
    if cuda:
        phases["weights_and_cache"] = cuda_phase(dev)
        if nvml is not None:
            m = nvml.memory()
            nvml_mem["after_weights"] = None if m is None else m.to_dict()

    @torch.no_grad()
    def prefill() -> torch.Tensor:
        cache.reset()
        logits = model(ids, cache=cache, last_only=True)  # [B, 1, V]
        return logits[:, -1].float().argmax(-1, keepdim=True)  # [B, 1]; fp32 logits as a sampler takes them

    @torch.no_grad()
    def eager_step(tok: torch.Tensor) -> torch.Tensor:
        logits = model(tok, cache=cache)  # [B, 1, V]
        return logits[:, -1].argmax(-1, keepdim=True)

    step = eager_step
    if cfg.compile:
        step = torch.compile(eager_step)

    def generate(timed: bool) -> tuple[float, list[float]]:
        marks.sync()
        m0 = marks.mark()
        tok = prefill()
        ms = [marks.mark()]
        for _ in range(cfg.new_tokens):
            tok = step(tok)
            ms.append(marks.mark())
        marks.sync()
        if not timed:
            return 0.0, []
        return marks.seconds(m0, ms[0]), [marks.seconds(a, b) for a, b in zip(ms, ms[1:], strict=False)]

    # ---- memory pass (first run, eager: peaks of a cold prefill and decode)
    report("measuring memory", 1, steps)
    if cuda:
        cuda_reset_peaks(dev)
        tok = prefill()
        phases["prefill"] = cuda_phase(dev)
        if nvml is not None:
            m = nvml.memory()
            nvml_mem["after_prefill"] = None if m is None else m.to_dict()
        cuda_reset_peaks(dev)
        for _ in range(cfg.new_tokens):
            tok = eager_step(tok)  # memory is measured on the eager step (compiling allocates workspaces)
        if nvml is not None:  # read while the decode's memory is still held
            m = nvml.memory()
            nvml_mem["during_decode"] = None if m is None else m.to_dict()
        phases["decode"] = cuda_phase(dev)
        peak = max(p.peak_allocated_bytes for p in phases.values())
        memory.update(
            method="torch.cuda.memory_stats (allocator) + NVML",
            baseline_allocated_bytes=base.allocated_bytes,
            phases={k: v.to_dict() for k, v in phases.items()},
            nvml=nvml_mem or None,
            peak_allocated_bytes=peak,
            peak_reserved_bytes=max(p.peak_reserved_bytes for p in phases.values()),
            alloc_retries=phases["decode"].alloc_retries,
            ooms=phases["decode"].ooms,
        )
        peak_memory = peak - base.allocated_bytes
    else:
        with LiveTensorBytes() as live_prefill:
            tok = prefill()
        live_prefill_peak = live_prefill.peak_bytes
        del live_prefill
        # Eager decode here even with --compile: torch.compile does not trace under a dispatch mode
        # (and would then skip the function for good); the compiled step is timed below.
        with LiveTensorBytes() as live_decode:
            for _ in range(cfg.new_tokens):
                tok = eager_step(tok)
        memory.update(
            method="exact tensor bytes: parameters + cache storages; transient peaks from a TorchDispatchMode "
            "that tracks every aten output storage until it is freed",
            prefill_transient_peak_bytes=live_prefill_peak,
            decode_transient_peak_bytes=live_decode.peak_bytes,
        )
        peak_memory = weights_bytes + buffer_bytes + cache_bytes + max(live_prefill_peak, live_decode.peak_bytes)
        del live_decode
    del tok

    # ---- warm-up (at least one with --compile, so compilation never lands in a timed step) and timing
    warmup = max(cfg.warmup, 1 if cfg.compile else 0)
    graphs_before = _dynamo_graphs()
    for i in range(warmup):
        report(f"warm-up {i + 1}/{warmup}" + (" (compiling)" if cfg.compile and i == 0 else ""), 2, steps)
        try:
            generate(timed=False)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:
            if cfg.compile:
                raise CompileFailed(f"torch.compile failed: {_first_line(e)}; run without --compile") from None
            raise
    compile_info = None
    if cfg.compile:
        graphs, breaks = (a - b for a, b in zip(_dynamo_graphs(), graphs_before, strict=True))
        compile_info = {"graphs": graphs, "graph_breaks": breaks}
        if graphs == 0:
            notes.append("torch.compile produced no graph: the decode step ran eagerly")
        elif breaks:
            notes.append(f"torch.compile: {graphs} graph(s) with {breaks} graph break(s) in the decode step")
    ttft: list[float] = []
    tpot: list[float] = []
    for i in range(cfg.iters):
        report(f"timing {i + 1}/{cfg.iters}", 3, steps)
        a, b = generate(timed=True)
        ttft.append(a)
        tpot.extend(b)
    ttft_stats, tpot_stats = TimingStats.of(ttft), TimingStats.of(tpot)
    device = device_info(dev, nvml, nvml_reason)  # clocks read now, right after the timed runs

    # ---- energy
    report("measuring energy", 4, steps)
    if not cuda:
        e_dec = e_pre = unsupported("not supported on CPU (no NVML energy counter or power reading)")
    elif not cfg.energy:
        e_dec = e_pre = unsupported("skipped (--no-energy)")
    elif nvml is None:
        e_dec = e_pre = unsupported(nvml_reason or "NVML unavailable")
    else:
        counter, meter, reasons = nvml.probe()
        why = "; ".join(reasons) or "NVML has neither an energy counter nor a power reading for this device"
        holder = {"tok": prefill()}

        def decode_unit() -> None:
            if cache.pos >= cfg.max_len:
                holder["tok"] = prefill()  # cache full: start again (kept out of J/token, see docstring)
            holder["tok"] = step(holder["tok"])

        e_dec = measure_window(decode_unit, counter, meter, sync=marks.sync, min_s=cfg.energy_min_s, why_none=why)
        e_pre = measure_window(prefill, counter, meter, sync=marks.sync, min_s=cfg.energy_min_s, why_none=why)
        holder.clear()

    # ---- FLOPs
    flops = None
    if cfg.flops:
        report("counting FLOPs (FlopCounterMode, fvcore)", 5, steps)
        flops = compare_flops(model, spec, cfg.batch, cfg.seq, last_only=True, fvcore=cfg.fvcore, seed=cfg.seed)
    report("done", 6, steps)

    derived = _derived(spec, est, cfg, device, ttft_stats, tpot_stats, notes)
    if params != est.params.total:
        notes.append(f"built parameters ({params:,}) differ from the analytic total ({est.params.total:,})")
    return Measurement(
        spec=spec,
        config=cfg,
        estimate=est,
        device=device,
        params=params,
        memory=memory,
        peak_memory_bytes=int(peak_memory),
        ttft=ttft_stats,
        tpot=tpot_stats,
        energy_decode=e_dec,
        energy_prefill=e_pre,
        flops=flops,
        derived=derived,
        notes=notes,
        compile_info=compile_info,
    )


def _dynamo_graphs() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far in this process, from torch._dynamo's counters."""
    try:
        from torch._dynamo.utils import counters
    except Exception:
        return 0, 0
    return int(counters["stats"].get("unique_graphs", 0)), int(sum(counters["graph_break"].values()))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _derived(
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
            "ttft_s": None,
            "tpot_s": None,
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
    if gpu.measured is not None and gpu.measured.bandwidth_bytes_per_s:
        out["bandwidth_vs_measured_copy"] = bw / gpu.measured.bandwidth_bytes_per_s
    return out
