"""Tables for a measurement: estimate | measured | error, latency, FLOPs by component, memory, energy.

Renderers only build ``godprof.report.table.Table`` objects; the CLI prints them. Error is
(estimate - measured) / measured: how far the estimate is from what the hardware did.
"""

from __future__ import annotations

from typing import Any

from godprof.measure.run import Measurement
from godprof.report.format import fmt_bytes, fmt_flops, fmt_int, fmt_params, fmt_pct, fmt_rate, fmt_seconds
from godprof.report.table import Table


def rel_error(estimate: float | None, measured: float | None) -> float | None:
    """(estimate - measured) / measured; None when either is missing or measured is 0."""
    if estimate is None or measured is None or measured == 0:
        return None
    return (estimate - measured) / measured


def _spread(s: Any) -> str:
    return f"{fmt_seconds(s.median_s)} ({fmt_seconds(s.p10_s)} – {fmt_seconds(s.p90_s)})"


def _header(m: Measurement) -> str:
    c, d = m.config, m.device
    where = d["name"] if d["type"] == "cuda" else f"CPU ({d['name']}, {d['threads']} threads)"
    return (
        f"{m.spec.name} ({m.spec.family}) on {where} · {c.dtype_name} · batch {c.batch} · seq {c.seq:,} · "
        f"{c.new_tokens} new tokens · {c.iters} iters after {c.warmup} warm-up" + (" · compiled" if c.compile else "")
    )


def comparison_table(m: Measurement) -> Table:
    """The side-by-side view: every quantity that has both an estimate and a measurement."""
    e = m.estimate
    mem = e.memory
    c = m.config
    roof = m.derived["roofline"]
    t = Table(f"{_header(m)}\nEstimate vs measured", ["quantity", "estimate", "measured", "error"])

    def row(label: str, est: float | None, meas: float | None, fmt: Any, meas_text: str | None = None) -> None:
        t.add(label, fmt(est), meas_text if meas_text is not None else fmt(meas), fmt_pct(rel_error(est, meas)))

    row("parameters", e.params.total, m.params, fmt_params)
    row("weights", mem["weights_bytes"], m.memory["weights_bytes"], fmt_bytes)
    row("KV cache + SSM state", mem["kv_cache_bytes"] + mem["ssm_state_bytes"], m.memory["cache_bytes"], fmt_bytes)
    row("prefill activations (peak)", mem["activations_bytes"], activation_peak(m), fmt_bytes)
    row("peak memory", mem["total_bytes"], m.peak_memory_bytes, fmt_bytes)
    row("TTFT (expected)", roof["ttft_s"], m.ttft.median_s, fmt_seconds, _spread(m.ttft))
    row("TTFT (speed of light)", roof.get("ttft_bound_s"), m.ttft.median_s, fmt_seconds, _spread(m.ttft))
    row("TPOT (expected)", roof["tpot_s"], m.tpot.median_s, fmt_seconds, _spread(m.tpot))
    row("TPOT (speed of light)", roof.get("tpot_bound_s"), m.tpot.median_s, fmt_seconds, _spread(m.tpot))
    est_tps = c.batch / roof["tpot_s"] if roof["tpot_s"] else None
    row("decode tokens/s", est_tps, m.derived["decode_tokens_per_s"], lambda x: fmt_rate(x, "tok/s"))
    if m.flops is not None:
        for cr in m.flops.counters:
            label = f"forward FLOPs ({cr.label} counter)"
            if cr.available:
                row(label, m.flops.analytic_matmul, cr.matmul, fmt_flops)
            else:
                t.add(label, fmt_flops(m.flops.analytic_matmul), f"unavailable: {cr.reason}", "-")
    j = m.energy_j_per_token
    t.add("energy per decoded token", "-", "-" if j is None else f"{j:.4g} J", "-")
    if m.energy_decode.supported is False:
        t.rows[-1][2] = "not supported"
    t.caption = (
        "error = (estimate - measured) / measured. Timings: median (p10 – p90). "
        + (
            "Roofline times need the GPU in the database. "
            if roof["ttft_s"] is None
            else "Expected: the per-operation efficiency model; speed of light: 100% of the datasheet. "
        )
        + ("CPU memory is exact tensor bytes." if m.device["type"] == "cpu" else "GPU memory: allocator peaks.")
    )
    return t


def activation_peak(m: Measurement) -> int | None:
    """Measured transient bytes of the prefill: CPU tracker peak; CUDA peak allocated in the prefill
    phase minus what was allocated before it (weights and cache)."""
    mem = m.memory
    if "prefill_transient_peak_bytes" in mem:
        return mem["prefill_transient_peak_bytes"]
    phases = mem.get("phases") or {}
    if "prefill" in phases and "weights_and_cache" in phases:
        return phases["prefill"]["peak_allocated_bytes"] - phases["weights_and_cache"]["allocated_bytes"]
    return None


def latency_table(m: Measurement) -> Table:
    d = m.derived
    t = Table("Latency and throughput", ["quantity", "median", "p10", "p90", "samples"])
    for label, s in (("TTFT (prefill + first token)", m.ttft), ("TPOT (one decode step)", m.tpot)):
        t.add(label, fmt_seconds(s.median_s), fmt_seconds(s.p10_s), fmt_seconds(s.p90_s), s.n)
    t.add("decode tokens/s", fmt_rate(d["decode_tokens_per_s"], "tok/s"), "", "", "")
    t.add("prefill tokens/s", fmt_rate(d["prefill_tokens_per_s"], "tok/s"), "", "", "")
    t.add("achieved bandwidth (decode)", fmt_rate(d["achieved_bandwidth_bytes_per_s"], "B/s"), "", "", "")
    t.add("MBU (decode)", _frac(d["mbu"]), "", "", "")
    t.add("MFU (decode)", _frac(d["mfu_decode"]), "", "", "")
    t.add("MFU (prefill, causal FLOPs)", _frac(d["mfu_prefill"]), "", "", "")
    roof = d["roofline"]
    dec = m.decode_info
    if dec:
        step = ("static" if dec.get("static") else "dynamic") + (f", compiled ({dec['compile_mode']})"
                                                               if dec.get("compile_mode") else ", eager")  # fmt: skip
        t.add("decode step", step, "", "", "")
        bound = {True: "host-bound", False: "device-bound", None: "-"}[dec.get("host_bound")]
        t.add("launches / host time per step", f"{dec.get('kernels_per_step') or 0:,}",
              fmt_seconds(dec.get("host_s_per_step")), bound, "")  # fmt: skip
    t.caption = (
        f"bandwidth = roofline decode bytes ({fmt_bytes(roof['decode_bytes'])}: weights touched + KV + SSM state "
        f"at context {roof['decode_context']:,}) / median TPOT"
        + ("" if d["mbu"] is not None else "; MBU/MFU need the GPU in the database")
    )
    return t


def _frac(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def flops_table(m: Measurement) -> Table | None:
    """Analytic vs counted matmul FLOPs per component, plus the convolution row."""
    f = m.flops
    if f is None:
        return None
    cols = ["component", "analytic"]
    avail = [c for c in f.counters if c.available]
    for c in avail:
        cols += [c.label, "error"]
    t = Table(f"Forward FLOPs, {f.batch} x {f.seq:,} tokens, last-position logits (1 MAC = 2 FLOPs)", cols)
    comps = list(f.analytic_components)
    for c in avail:
        comps += [k for k in c.by_component if k not in comps]
    for comp in comps:
        a = f.analytic_components.get(comp, 0)
        cells = [comp, fmt_flops(a)]
        for c in avail:
            v = c.by_component.get(comp, 0)
            cells += [fmt_flops(v), fmt_pct(rel_error(a, v))]
        t.add(*cells)
    cells = ["matmul total", fmt_flops(f.analytic_matmul)]
    for c in avail:
        cells += [fmt_flops(c.matmul), fmt_pct(rel_error(f.analytic_matmul, c.matmul))]
    t.add(*cells)
    t.highlight.add((len(t.rows) - 1, 1))
    if f.analytic_conv:
        cells = ["depthwise conv1d (apart)", fmt_flops(f.analytic_conv)]
        for c in avail:
            v = c.by_category.get("conv", 0)
            cells += [fmt_flops(v), fmt_pct(rel_error(f.analytic_conv, v))]
        t.add(*cells)
    notes = ["analytic = forward (full seq x seq attention, what SDPA is counted as)"]
    if f.analytic_ssm_matmul:
        notes[0] += f" + SSM scan matmuls ({fmt_flops(f.analytic_ssm_matmul)})"
    unseen = f.analytic_ssm_scan - f.analytic_ssm_matmul
    if unseen:
        notes.append(f"elementwise SSM scan not seen by counters: {fmt_flops(unseen)} (analytic)")
    for c in f.counters:
        if not c.available:
            notes.append(f"{c.counter} unavailable: {c.reason}")
    t.caption = (
        "; ".join(notes) + ". torch = FlopCounterMode, fvcore = FlopCountAnalysis (MACs doubled). Counters do not "
        "see norms, activations, softmax, rotary, MoE routing."
    )
    return t


def memory_table(m: Measurement) -> Table | None:
    """CUDA allocator phases and NVML readings (None on CPU, where the comparison table says it all)."""
    phases = m.memory.get("phases")
    if not phases:
        mem = m.memory
        t = Table("Memory (exact tensor bytes)", ["item", "size", "bytes"])
        for label, key in (
            ("parameters", "weights_bytes"),
            ("buffers", "buffers_bytes"),
            ("cache (KV + SSM state)", "cache_bytes"),
            ("prefill transient peak", "prefill_transient_peak_bytes"),
            ("decode transient peak", "decode_transient_peak_bytes"),
        ):
            t.add(label, fmt_bytes(mem.get(key)), fmt_int(mem.get(key)))
        t.add("peak", fmt_bytes(m.peak_memory_bytes), fmt_int(m.peak_memory_bytes))
        t.caption = mem.get("method")
        return t
    t = Table("GPU memory by phase", ["phase", "allocated", "peak allocated", "peak reserved", "NVML device used",
                                       "NVML this process"])  # fmt: skip
    nv = m.memory.get("nvml") or {}
    nv_key = {"weights_and_cache": "after_weights", "prefill": "after_prefill", "decode": "during_decode"}
    for name, p in phases.items():
        n = nv.get(nv_key.get(name, ""), None) or {}
        t.add(name.replace("_", " "), fmt_bytes(p["allocated_bytes"]), fmt_bytes(p["peak_allocated_bytes"]),
              fmt_bytes(p["peak_reserved_bytes"]), fmt_bytes(n.get("device_used_bytes")),
              fmt_bytes(n.get("process_used_bytes")))  # fmt: skip
    mem = m.memory
    t.add("cuBLAS workspace (before baseline)", fmt_bytes(mem.get("cublas_workspace_bytes")), "", "", "", "")
    t.add("CUDA context + other processes", fmt_bytes(mem.get("cuda_context_bytes")), "", "", "", "")
    dev = mem.get("device")
    if dev:
        t.add("NVML peak vs estimate + before", fmt_bytes(dev["expected_bytes"]), "", "",
              fmt_bytes(dev["nvml_peak_device_used_bytes"]), "")  # fmt: skip
    t.caption = (
        f"peak requested {fmt_bytes(mem.get('peak_requested_bytes'))} (exact) vs allocated "
        f"{fmt_bytes(mem.get('peak_allocated_bytes'))} (512 B blocks); alloc retries {mem.get('alloc_retries', 0)}, "
        f"OOMs {mem.get('ooms', 0)}; NVML figures include the CUDA context and other processes' memory (device) "
        "that the allocator does not see"
    )
    return t


def energy_table(m: Measurement) -> Table:
    t = Table("Energy", ["workload", "method", "power", "window", "ticks", "J per token"])
    c = m.config
    for label, r, secs in (
        ("decode", m.energy_decode, m.tpot.median_s / c.batch),
        ("prefill", m.energy_prefill, m.ttft.median_s / (c.batch * c.seq)),
    ):
        if not r.supported:
            t.add(label, "not supported", "-", "-", "-", "-")
            continue
        j = r.joules_for(secs)
        t.add(label, r.method or "-", f"{r.power_w:.1f} W", f"{r.window_s:.2f} s", r.ticks, f"{j:.4g} J")
    reasons = {r.reason for r in (m.energy_decode, m.energy_prefill) if r.reason}
    t.caption = "; ".join(sorted(reasons)) if reasons else "J/token = average power over the window x time per token"
    return t


def device_table(m: Measurement) -> Table:
    d = m.device
    t = Table("Device", ["item", "value"])
    keys = ("name", "type", "index", "capability", "multiprocessors", "memory_bytes", "driver", "cuda_driver",
            "torch", "cuda", "cudnn", "sm_clock_mhz", "memory_clock_mhz", "max_sm_clock_mhz", "power_limit_w",
            "gpu_db", "threads", "nvml")  # fmt: skip
    for k in keys:
        if k in d and d[k] is not None:
            v = fmt_bytes(d[k]) if k == "memory_bytes" else d[k]
            t.add(k.replace("_", " "), v)
    return t


def measure_tables(m: Measurement) -> list[Table]:
    out = [comparison_table(m), latency_table(m)]
    for extra in (flops_table(m), memory_table(m)):
        if extra is not None:
            out.append(extra)
    out += [energy_table(m), device_table(m)]
    if m.notes:
        n = Table("Notes", ["note"])
        for line in m.notes:
            n.add(line)
        out.append(n)
    return out
