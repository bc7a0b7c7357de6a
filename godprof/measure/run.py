"""``measure``: build a spec on a device with random weights and measure memory, latency, energy and FLOPs.

What is measured, and how:

- memory. CUDA: the cuBLAS workspace is created first and reported as its own row; then torch's
  allocator stats (current and peak allocated / reserved / requested, alloc retries, OOMs), peaks
  reset per phase (weights, prefill, decode), and NVML device memory against the estimate plus the
  CUDA context (``godprof.measure.phases``). CPU: exact tensor bytes: parameters and cache storages,
  and the peak of live transient tensor bytes during prefill and decode from a dispatch-mode tracker
  (``godprof.measure.memory.LiveTensorBytes``).
- latency. TTFT: a prefill of ``seq`` tokens for ``batch`` sequences into a fresh cache, plus the
  greedy choice of the first token. TPOT: one decode step (``batch`` new tokens at context
  seq+1 .. seq+new_tokens), the static-shape step where every layer kind allows it
  (``godprof.measure.compiled.DecodeStep``). Every timed iteration runs one prefill and ``new_tokens``
  decode steps after ``warmup`` untimed ones; medians and p10/p90 over all samples. CUDA events on
  CUDA (the GPU timeline, launch gaps included); ``time.perf_counter`` on CPU, where ops are
  synchronous. Beside each step, the host time ``step()`` took to return: with the kernels one eager
  step launches, it says whether eager decode is host-bound.
- throughput and roofline use: decode tokens/s = batch / TPOT; achieved bandwidth = the roofline's
  ``decode_bytes`` (weights touched + KV cache + SSM state) at the median decode context / TPOT; MBU
  and MFU against the card's datasheet peaks from the GPU database (null when the card is not in it).
- energy (CUDA only): average power over a window of repeated decode steps (the cache position
  rewound to ``seq`` when full, never a prefill inside the window) and one of prefills, from NVML's
  energy counter, else sampled instant power (``godprof.measure.energy``); at least 3 s on Hopper and
  newer, whose power sensor samples part of each 100 ms. J/token = power x TPOT / batch (decode) and
  power x TTFT / (batch x seq) (prefill). Null with the reason when unsupported.
- FLOPs: one forward (no cache, last-position logits, as in the prefill) counted by FlopCounterMode and
  fvcore (``godprof.measure.flops``); a counter that fails is "unavailable" with its reason.
- the estimate beside it: ``godprof.analytic.estimate`` for the same batch, seq, dtype and cache length
  (seq + new_tokens), with last-position logits and ``attention_flops="full"`` (what the counters see).

Memory is measured on the first, eager, prefill and decode. With ``--compile`` the decode step is
compiled during a warm-up run (at least one); torch.compile's counters are read after warm-up, after
timing and after the energy window, and any compilation inside the last two raises
``CompiledWhileTimed`` instead of reporting timings that include it. ``--kernels fused`` swaps in
fused kernels where a layer kind has them (``godprof.measure.kernels``); the result records which ran.

Nothing here changes any device setting (clocks, power limits, modes); it only reads them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from godprof.analytic import Workload, estimate
from godprof.analytic.estimate import Estimate
from godprof.measure.compiled import (
    DecodeStep,
    compile_session,
    count_kernels,
    counts_grew,
    dynamo_counts,
    host_bound,
)
from godprof.measure.config import (
    SCHEMA,
    TORCH_DTYPES,
    CompiledWhileTimed,
    CompileFailed,
    DoesNotFit,
    MeasureConfig,
    Measurement,
    NoDevice,
)
from godprof.measure.derived import derived
from godprof.measure.device import Marks, device_info, host_memory, release, resolve_device
from godprof.measure.energy import unsupported
from godprof.measure.flops import compare_flops
from godprof.measure.memory import fused_attention, module_bytes
from godprof.measure.phases import cpu_memory_pass, cuda_baseline, cuda_memory_pass, energy_windows
from godprof.measure.stats import TimingStats
from godprof.spec import Spec

__all__ = [
    "SCHEMA",
    "CompileFailed",
    "CompiledWhileTimed",
    "DoesNotFit",
    "MeasureConfig",
    "Measurement",
    "NoDevice",
    "measure",
    "resolve_device",
]

Progress = Callable[[str, int, int], None]  # (task description, completed, total)


def measure(spec: Spec, dev: torch.device, cfg: MeasureConfig, progress: Progress | None = None) -> Measurement:
    """Build ``spec`` on ``dev`` and measure it (see the module docstring). Raises DoesNotFit on CUDA OOM
    (after releasing the model's memory), CompileFailed when ``--compile`` cannot compile, and
    CompiledWhileTimed when compilation happened inside a timed region."""
    report = progress or (lambda task, done, total: None)
    w = Workload(batch=cfg.batch, seq=cfg.seq, context=cfg.max_len, dtype=cfg.dtype_name,
                 attention_flops="full", logits="last", flash_attention=fused_attention(spec, dev))  # fmt: skip
    est = estimate(spec, w)
    needed = est.memory["total_bytes"]
    cuda = dev.type == "cuda"
    nvml = None
    nvml_reason: str | None = "no NVML on CPU" if not cuda else None
    fixed = est.memory["weights_bytes"] + est.memory["kv_cache_bytes"] + est.memory["ssm_state_bytes"]
    if cuda:
        torch.cuda.set_device(dev)
        free, total = torch.cuda.mem_get_info(dev)
        if fixed > free:
            raise DoesNotFit(needed, free, total, str(dev), "weights and cache alone exceed the free memory")
        from godprof.measure.nvml import Nvml

        nvml, nvml_reason = Nvml.open(dev.index or 0)
    else:
        avail, total = host_memory()
        if avail is not None and fixed > avail:
            raise DoesNotFit(needed, avail, total or 0, "cpu", "weights and cache alone exceed the available RAM")
    state: dict[str, Any] = {}
    oom: str | None = None
    try:
        with compile_session(cfg.compile):
            return _measure(spec, dev, cfg, est, nvml, nvml_reason, state, report)
    except torch.OutOfMemoryError as e:
        oom = _first_line(e)
    except CompileFailed:
        raise
    except Exception as e:  # an OOM inside inductor arrives wrapped (BackendCompilerFailed)
        if not isinstance(e.__cause__, torch.OutOfMemoryError):
            raise
        oom = _first_line(e.__cause__)
    finally:
        state.clear()
        release(dev)
        if nvml is not None:
            nvml.close()
    # Out of the except block the traceback, and the frames holding the model and cache, are gone.
    release(dev)
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
    from godprof.measure.kernels import select_kernels

    cuda = dev.type == "cuda"
    dtype = TORCH_DTYPES[cfg.dtype_name]
    marks = Marks(dev)
    notes: list[str] = []
    steps = 6
    report("building the model on the device", 0, steps)
    base = cuda_baseline(dev, dtype, nvml) if cuda else None  # cuBLAS workspace first, then the baseline
    model = state["model"] = build_model(spec, device=dev, dtype=dtype, seed=cfg.seed)
    kernels = select_kernels(model, cfg.kernels, dev, notes)
    params = sum(p.numel() for p in model.parameters())
    weights_bytes, buffer_bytes = module_bytes(model)
    cache = state["cache"] = model.allocate_cache(cfg.batch, cfg.max_len)
    cache_bytes = cache.nbytes()
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    ids = torch.randint(0, spec.model.vocab_size, (cfg.batch, cfg.seq), generator=g).to(dev)
    memory: dict[str, Any] = {"weights_bytes": weights_bytes, "buffers_bytes": buffer_bytes, "cache_bytes": cache_bytes}

    @torch.no_grad()
    def prefill() -> torch.Tensor:
        cache.reset()
        logits = model(ids, cache=cache, last_only=True)  # [B, 1, V]
        return logits[:, -1].float().argmax(-1, keepdim=True)  # [B, 1]; fp32 logits as a sampler takes them

    try:
        step = DecodeStep(model, cache, dev, cfg.compile, cfg.compile_backend)
    except Exception as e:
        raise CompileFailed(f"torch.compile failed: {_first_line(e)}; run without --compile") from None
    host_s: list[float] = []

    def generate(timed: bool) -> tuple[float, list[float]]:
        marks.sync()
        m0 = marks.mark()
        tok = prefill()
        ms = [marks.mark()]
        for _ in range(cfg.new_tokens):
            t0 = time.perf_counter()
            tok = step(tok)
            if timed:
                host_s.append(time.perf_counter() - t0)
            ms.append(marks.mark())
        marks.sync()
        if not timed:
            return 0.0, []
        return marks.seconds(m0, ms[0]), [marks.seconds(a, b) for a, b in zip(ms, ms[1:], strict=False)]

    # ---- memory pass (first run, eager: peaks of a cold prefill and decode), then one counted eager step
    report("measuring memory", 1, steps)
    if cuda:
        peak_memory = cuda_memory_pass(dev, est, nvml, base, prefill, step.eager, cfg.new_tokens, memory)
    else:
        peak_memory = cpu_memory_pass(prefill, step.eager, cfg.new_tokens, memory)
    cache.rewind(cfg.seq)
    first_tok = torch.zeros(cfg.batch, 1, dtype=torch.long, device=dev)
    kernels_per_step = count_kernels(lambda: step.eager(first_tok))

    # ---- warm-up (at least one with --compile, so compilation never lands in a timed step) and timing
    warmup = max(cfg.warmup, 1 if cfg.compile else 0)
    graphs_before = dynamo_counts()
    for i in range(warmup):
        report(f"warm-up {i + 1}/{warmup}" + (" (compiling)" if cfg.compile and i == 0 else ""), 2, steps)
        try:
            generate(timed=False)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:
            if cfg.compile:
                raise CompileFailed(f"torch.compile failed: {_first_line(e)}; run without --compile") from e
            raise
    after_warmup = dynamo_counts()
    ttft: list[float] = []
    tpot: list[float] = []
    for i in range(cfg.iters):
        report(f"timing {i + 1}/{cfg.iters}", 3, steps)
        a, b = generate(timed=True)
        ttft.append(a)
        tpot.extend(b)
    after_timing = dynamo_counts()
    _check_no_compile(cfg, after_warmup, after_timing, "the timed runs")
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
        e_dec, e_pre = energy_windows(dev, cfg, nvml, cache, prefill, step, marks.sync)
        if nvml.power_source is not None:
            device["power_source"] = nvml.power_source
    compile_info = None
    if cfg.compile:
        after_energy = dynamo_counts()
        _check_no_compile(cfg, after_timing, after_energy, "the energy window")
        grew = {k: after_warmup[k] - graphs_before[k] for k in after_warmup}
        compile_info = {**grew, **step.describe(), "after_warmup": after_warmup, "after_timing": after_timing,
                        "after_energy": after_energy, "compiled_while_timed": False}  # fmt: skip
        if grew["graphs"] == 0:
            notes.append("torch.compile captured no graph: the decode step ran eagerly")
        elif grew["graph_breaks"]:
            notes.append(f"torch.compile: {grew['graphs']} graph(s) with {grew['graph_breaks']} graph break(s) "
                         f"in the decode step ({step.fullgraph_error or 'fullgraph was not possible'})")  # fmt: skip
        if grew["cudagraph_skips"]:
            notes.append("inductor skipped CUDA graphs for the decode step (see TORCH_LOGS=perf_hints)")

    # ---- FLOPs (a failure here never loses the measurement above)
    flops = None
    if cfg.flops:
        report("counting FLOPs (FlopCounterMode, fvcore)", 5, steps)
        try:
            flops = compare_flops(model, spec, cfg.batch, cfg.seq, last_only=True, fvcore=cfg.fvcore, seed=cfg.seed)
        except torch.OutOfMemoryError as e:
            release(dev)
            notes.append(f"FLOP count unavailable: {_first_line(e)}")
        except Exception as e:
            notes.append(f"FLOP count unavailable: {_first_line(e)}")
    report("done", 6, steps)

    host_median_s = TimingStats.of(host_s).median_s
    decode_info = {**step.describe(), **host_bound(kernels_per_step, host_median_s, tpot_stats.median_s, cuda)}
    _decode_notes(decode_info, cfg, notes)
    out = derived(spec, est, cfg, device, ttft_stats, tpot_stats, notes)
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
        derived=out,
        notes=notes,
        compile_info=compile_info,
        decode_info=decode_info,
        kernels=kernels,
    )


def _check_no_compile(cfg: MeasureConfig, before: dict[str, int], after: dict[str, int], where: str) -> None:
    """Raise CompiledWhileTimed when torch.compile compiled anything between two readings."""
    if not cfg.compile:
        return
    grew = counts_grew(before, after)
    if grew:
        what = ", ".join(f"{v} new {k}" for k, v in grew.items())
        raise CompiledWhileTimed(
            f"torch.compile compiled during {where} ({what}): those timings would include compilation; "
            "raise --warmup, or run without --compile"
        )


def _decode_notes(info: dict[str, Any], cfg: MeasureConfig, notes: list[str]) -> None:
    if not info["static"]:
        why = ", ".join(info["not_static_because"] or [])
        notes.append(f"decode ran the dynamic-shape step ({why} cannot take the position as a device tensor)"
                     + (": torch.compile guards on the position; no CUDA graph" if cfg.compile else ""))  # fmt: skip
    if info["host_bound"]:
        per = info["host_s_per_kernel"]
        notes.append(
            f"decode is host-bound: the CPU needed {info['host_s_per_step'] * 1e3:.2f} ms to launch one step's "
            f"~{info['kernels_per_step'] or 0:,} kernels ({(per or 0) * 1e6:.1f} us each) against a "
            f"{info['device_s_per_step'] * 1e3:.2f} ms step: TPOT measures launch cost"
            + ("" if cfg.compile else "; --compile captures the step as one CUDA graph")
        )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"
