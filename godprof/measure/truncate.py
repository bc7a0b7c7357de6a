"""Measure a model on fewer layers than it has and extrapolate to its full depth (``--layers N``).

Two measurements through ``godprof.measure.measure``: the truncated model (every layer kind kept in
proportion, ``godprof.analytic.truncate``) and the same model with no layers (embeddings, final norm,
lm_head). Full-depth figures:

- TTFT, TPOT and decode J/token: base + (truncated - base) x the phase's analytic cost ratio
  (``analytic.truncate.extrapolate``; exactly L / N with one layer kind).
- forward FLOPs: the FlopCounterMode count of each kept layer kind times c_k / n_k, plus lm_head
  (``extrapolate_by_kind``); compared with the full spec's analytic count, which it should equal exactly.
- memory: the full spec's exact analytic weights and cache, plus the working set measured on the
  truncated model (the prefill/decode transient peak: one block is live at a time, so it does not grow
  with depth).

Left out: anything that grows with depth outside the blocks' cost (none in the build), and on CUDA the
allocator's fragmentation at full size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from godprof.analytic import Workload, estimate
from godprof.analytic import roofline as R
from godprof.analytic.estimate import Estimate
from godprof.analytic.params import count_params
from godprof.analytic.truncate import Truncation, extrapolate, extrapolate_by_kind, no_layers, truncate
from godprof.measure import MeasureConfig, Measurement, measure
from godprof.spec import Spec

Progress = Callable[[str, int, int], None]  # (task description, completed, total), as measure takes


@dataclass
class TruncatedMeasurement:
    """A truncated measurement, its no-layer base and the full-depth figures drawn from them."""

    truncation: Truncation
    measured: Measurement  # the truncated model
    base: Measurement  # the model with no layers
    full_estimate: Estimate  # the full spec under the same workload
    extrapolated: dict[str, Any]

    @property
    def note(self) -> str:
        return self.truncation.note

    def to_dict(self) -> dict[str, Any]:
        d = self.measured.to_dict()
        d["truncation"] = self.truncation.to_dict()
        d["full_estimate"] = self.full_estimate.to_dict()
        d["extrapolated"] = dict(self.extrapolated)
        d["base"] = {"ttft_s": self.base.ttft.median_s, "tpot_s": self.base.tpot.median_s,
                     "energy_j_per_token": self.base.energy_j_per_token}  # fmt: skip
        return d


def full_workload(cfg: MeasureConfig, flash: bool) -> Workload:
    """The workload ``measure`` estimates with (full attention FLOPs, last-position logits)."""
    return Workload(batch=cfg.batch, seq=cfg.seq, context=cfg.max_len, dtype=cfg.dtype_name,
                    attention_flops="full", logits="last", flash_attention=flash)  # fmt: skip


def working_set_bytes(m: Measurement) -> int:
    """Transient bytes the measured model held above its weights and cache at its peak."""
    mem = m.memory
    return max(0, m.peak_memory_bytes - mem["weights_bytes"] - mem.get("buffers_bytes", 0) - mem["cache_bytes"])


def measure_truncated(
    spec: Spec, layers: int, dev: Any, cfg: MeasureConfig, progress: Progress | None = None
) -> TruncatedMeasurement:
    """Measure ``spec`` cut to ``layers`` layers and its no-layer base; extrapolate to full depth."""
    t = truncate(spec, layers)
    m = measure(t.truncated, dev, cfg, progress)
    base_cfg = replace(cfg, flops=False, fvcore=False)
    b = measure(no_layers(spec), dev, base_cfg, progress)
    from godprof.measure.memory import fused_attention

    est = estimate(spec, full_workload(cfg, fused_attention(spec, dev)))
    return TruncatedMeasurement(t, m, b, est, extrapolated_figures(t, m, b, est, cfg))


def extrapolated_figures(
    t: Truncation, m: Measurement, b: Measurement, est: Estimate, cfg: MeasureConfig
) -> dict[str, Any]:
    """Full-depth TTFT, TPOT, J/token, FLOPs and peak memory (module docstring), each beside the full
    spec's estimate where there is one."""
    specs = (t.full, t.truncated, no_layers(t.full))
    counts = [count_params(s) for s in specs]
    ctx = cfg.decode_context
    dt = cfg.dtype_name
    dec = [R.decode_bytes(s, c, cfg.batch, ctx, dt) for s, c in zip(specs, counts, strict=True)]
    pre = [R.prefill_flops(s, c, cfg.batch, cfg.seq, "causal") for s, c in zip(specs, counts, strict=True)]
    out: dict[str, Any] = {"note": t.note}
    out["warnings"] = [
        f"{what}: the {t.layers} layers' time is within the noise of the no-layer base; the whole time was "
        "scaled by the analytic cost ratio instead"
        for what, mt, bt in (("TTFT", m.ttft, b.ttft), ("TPOT", m.tpot, b.tpot))
        if mt.median_s <= bt.median_s
    ]
    out["ttft_s"] = extrapolate(m.ttft.median_s, b.ttft.median_s, *pre)
    out["tpot_s"] = extrapolate(m.tpot.median_s, b.tpot.median_s, *dec)
    j, jb = m.energy_j_per_token, b.energy_j_per_token
    out["energy_j_per_token"] = None if j is None or jb is None else extrapolate(j, jb, *dec)
    flops = None
    if m.flops is not None and m.flops.counters and m.flops.counters[0].available:
        c0 = m.flops.counters[0]
        comps = {k: v for k, v in c0.by_component.items() if k != "lm_head"}
        counted = extrapolate_by_kind(t, comps, c0.by_component.get("lm_head", 0))
        from godprof.measure.flops import ssm_matmul_flops

        analytic = est.flops["forward"] + ssm_matmul_flops(t.full, cfg.batch, cfg.seq)
        flops = {"counted_extrapolated": int(counted) if counted.denominator == 1 else float(counted),
                 "analytic": analytic, "equal": counted == analytic}  # fmt: skip
    out["flops_forward"] = flops
    ws = working_set_bytes(m)
    mem = est.memory
    fixed = mem["weights_bytes"] + mem["kv_cache_bytes"] + mem["ssm_state_bytes"]
    out["memory"] = {
        "weights_bytes": mem["weights_bytes"],
        "cache_bytes": mem["kv_cache_bytes"] + mem["ssm_state_bytes"],
        "working_set_bytes_measured": ws,
        "peak_bytes": fixed + ws,
        "estimate_peak_bytes": mem["total_bytes"],
    }
    roof = m.derived.get("roofline", {})
    out["roofline_full"] = None
    if roof.get("gpu"):
        from godprof.gpus import load_gpu

        gpu = load_gpu(roof["gpu"])
        c = counts[0]
        out["roofline_full"] = {"ttft_s": R.prefill_time_s(t.full, c, gpu, cfg.batch, cfg.seq, dt),
                                "tpot_s": R.decode_step_time_s(t.full, c, gpu, cfg.batch, ctx, dt)}  # fmt: skip
    return out


def layers_that_fit(spec: Spec, cfg: MeasureConfig, free_bytes: int, flash: bool, headroom: float = 0.1) -> int:
    """The most layers (kinds in proportion) whose estimate fits in ``free_bytes`` less ``headroom``;
    0 when not even one layer of each kind fits."""
    from godprof.analytic.truncate import TruncationError, layer_kinds

    budget = free_bytes * (1 - headroom)
    w = full_workload(cfg, flash)
    lo, hi = len(layer_kinds(spec)), spec.model.num_layers
    best = 0
    while lo <= hi:
        mid = (lo + hi) // 2
        try:
            need = estimate(truncate(spec, mid).truncated, w).memory["total_bytes"]
        except TruncationError:
            return best
        if need <= budget:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def extrapolated_table(tm: TruncatedMeasurement) -> Any:
    """Full-depth figures beside the full spec's estimate (roofline times need the GPU in the database)."""
    from godprof.measure.report import rel_error
    from godprof.report.format import fmt_bytes, fmt_flops, fmt_pct, fmt_seconds
    from godprof.report.table import Table

    x = tm.extrapolated
    t = Table(f"{tm.truncation.full.name}: full depth, {tm.note}", ["quantity", "estimate", "extrapolated", "error"])
    roof = x["roofline_full"] or {}
    t.add("TTFT (roofline)", fmt_seconds(roof.get("ttft_s")), fmt_seconds(x["ttft_s"]),
          fmt_pct(rel_error(roof.get("ttft_s"), x["ttft_s"])))  # fmt: skip
    t.add("TPOT (roofline)", fmt_seconds(roof.get("tpot_s")), fmt_seconds(x["tpot_s"]),
          fmt_pct(rel_error(roof.get("tpot_s"), x["tpot_s"])))  # fmt: skip
    j = x["energy_j_per_token"]
    t.add("energy per decoded token", "-", "not supported" if j is None else f"{j:.4g} J", "-")
    f = x["flops_forward"]
    if f is not None:
        t.add("forward FLOPs (torch counter)", fmt_flops(f["analytic"]), fmt_flops(f["counted_extrapolated"]),
              fmt_pct(rel_error(f["analytic"], f["counted_extrapolated"])))  # fmt: skip
    mem = x["memory"]
    t.add("peak memory", fmt_bytes(mem["estimate_peak_bytes"]), fmt_bytes(mem["peak_bytes"]),
          fmt_pct(rel_error(mem["estimate_peak_bytes"], mem["peak_bytes"])))  # fmt: skip
    k = tm.truncation
    kinds = ", ".join(f"{m}+{fn} {k.kept_counts[(m, fn)]}/{c}" for (m, fn), c in k.full_counts.items())
    t.caption = (
        f"Kept layers per kind (mixer+ffn kept/total): {kinds}. Times: base + (truncated - no-layer base) x "
        "the phase's analytic cost ratio; FLOPs: each kind's count x total/kept; memory: analytic weights "
        "and cache + the working set measured on the truncated model."
    )
    return t
