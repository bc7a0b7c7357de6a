"""Sweep architectures across context lengths: one record per spec x GPU x dtype x context, with the same
figures as ``godprof.report.compare`` (and so as ``godprof estimate``) at each point."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from godprof.analytic import flops as F
from godprof.analytic import inference_memory as IM
from godprof.analytic import memory as M
from godprof.analytic import roofline as R
from godprof.analytic.params import count_params
from godprof.dtypes import DType, get_dtype
from godprof.report.compare import ACTIVATIONS_NOTE, Setup, activations_note, spec_dict, with_sol
from godprof.report.format import fmt_bytes, fmt_flops
from godprof.report.table import Table

if TYPE_CHECKING:
    from godprof.spec import Layer, Spec

SWEEP_SCHEMA = "godprof.sweep/2"  # /2: points name their gpu and dtype; ``setups`` lists each GPU x dtype

# --------------------------------------------------------------------------- sweep


def log_contexts(lo: int, hi: int, points: int | None = None) -> list[int]:
    """``points`` log-spaced integer contexts from lo to hi inclusive (duplicates after rounding dropped).

    Default: one point per doubling (1k..1M -> 11 points), at least 2 and at most 64.
    """
    if lo < 1 or hi < lo:
        raise ValueError(f"context range must satisfy 1 <= low <= high, got {lo}..{hi}")
    if points is None:
        points = min(64, max(2, round(math.log2(hi / lo)) + 1)) if hi > lo else 1
    if points < 1:
        raise ValueError(f"--points must be positive, got {points}")
    if points == 1 or hi == lo:
        return [lo] if points == 1 or hi == lo else [lo, hi]
    ratio = math.log(hi / lo) / (points - 1)
    out = sorted({min(hi, max(lo, round(lo * math.exp(ratio * i)))) for i in range(points)})
    return out


class _Layers:
    """A spec seen through a given list of layers (everything else is the wrapped spec's)."""

    def __init__(self, spec: Spec, layers: list[Layer]):
        self._spec = spec
        self._layers = layers

    def layers(self) -> list[Layer]:
        return self._layers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spec, name)


class _Grouped:
    """Per-layer sums evaluated once per distinct layer kind instead of once per layer.

    Every analytic quantity a sweep needs per point is ``const + sum over layers of f(layer)``, and layers
    with the same mixer and FFN contribute the same f. So ``q(all) = q(none) + sum_k n_k (q(one of kind k)
    - q(none))``, exactly (integers). Maxima over layers (activations) only need one layer per kind.
    An 80-layer dense model then costs one layer's work per point instead of 80.
    """

    def __init__(self, spec: Spec):
        layers = spec.layers()
        first: dict[tuple[str, str], Layer] = {}
        n: dict[tuple[str, str], int] = {}
        for lay in layers:
            key = (lay.mixer_name, lay.ffn_name)
            first.setdefault(key, lay)
            n[key] = n.get(key, 0) + 1
        self.full = cast("Spec", _Layers(spec, layers))
        self.unique = cast("Spec", _Layers(spec, list(first.values())))
        self._empty = cast("Spec", _Layers(spec, []))
        self._kinds = [(n[k], cast("Spec", _Layers(spec, [first[k]]))) for k in first]
        self._kv = [(n[k], first[k]) for k in first if M.kv_elements_per_token(first[k])]

    def sum(self, fn: Callable[[Spec], int]) -> int:
        base = fn(self._empty)
        return base + sum(n * (fn(one) - base) for n, one in self._kinds)

    def kv_cache_bytes(self, batch: int, context: int, dtype: DType) -> int:
        """== memory.kv_cache_bytes: per-layer elements x cached tokens, summed, rounded up to bytes once."""
        elements = sum(n * lay.mixer.kv_elements(context) for n, lay in self._kv)
        return dtype.cache_nbytes(batch * elements)

    def kv_read_bytes(self, batch: int, context: int, dtype: DType) -> int:
        """== memory.kv_read_bytes: what one decode step reads of the cache."""
        elements = sum(n * lay.mixer.decode_read_elements(context) for n, lay in self._kv)
        return dtype.cache_nbytes(batch * elements)


def sweep_records(spec: Spec, setup_batches: Sequence[Setup], contexts: Sequence[int]) -> list[dict[str, Any]]:
    """Per (batch, context) point: cache and serving memory, prefill and decode FLOPs, TTFT and TPOT.

    Fields agree with ``godprof estimate`` for ``Workload(batch, seq=context, context=context)`` as in
    ``compare_record``, and TTFT/TPOT with ``roofline.prefill_time_s``/``decode_step_time_s`` (tests check
    both). Context-independent terms (weights, weights touched, SSM state, rates, chunk activations) are
    computed once per batch, and per-layer sums once per layer kind (``_Grouped``).
    """
    c = count_params(spec)
    grp = _Grouped(spec)
    full = grp.full
    out: list[dict[str, Any]] = []
    for s in setup_batches:
        g, b, dt = s.gpu, s.batch, s.dtype
        cdt = get_dtype(s.cache_dtype)
        r = R.rates(g, dt, s.eff)
        weights = M.weights_bytes(c, get_dtype(dt))
        touched = R.weights_touched_bytes(full, c, b, dt, rows=b)
        state = M.ssm_state_bytes(full, b, cdt)
        ssm_decode = F.ssm_decode_flops_per_token(full)
        usable = IM.usable_bytes(g, s.model)
        acts_by_pass: dict[tuple[int, int], int] = {}  # activations per prefill pass shape
        for ctx in contexts:
            kv = grp.kv_cache_bytes(b, ctx, cdt)
            shape = IM.prefill_pass(b, ctx, s.model.prefill_chunk_tokens)
            if shape not in acts_by_pass:
                acts_by_pass[shape] = R.activation_bytes(grp.unique, ctx, dt, b, s.model)
            acts = acts_by_pass[shape]
            decode_tok = grp.sum(lambda sp, ctx=ctx: F.decode_flops_per_token(sp, c, ctx))
            prefill = grp.sum(lambda sp, ctx=ctx, b=b: R.prefill_flops(sp, c, b, ctx))
            # identical to R.decode_step_time_s / R.prefill_time_s, with the per-batch terms hoisted
            decode_bytes = touched + grp.kv_read_bytes(b, ctx, cdt) + 2 * state
            prefill_bytes = R.weights_touched_bytes(full, c, b * ctx, dt, rows=b * ctx) + kv + state
            peak_f, peak_b = g.peak_flops(r.compute_dtype), g.hbm_bandwidth_bytes_per_s
            tpot_bound = max(b * (decode_tok + ssm_decode) / peak_f, decode_bytes / peak_b)
            ttft_bound = max(prefill / peak_f, prefill_bytes / peak_b)
            if s.eff is None:  # the per-operation model (R.decode_step / R.prefill_step)
                tpot = R.decode_step(full, c, g, b, ctx, dt, s.kv_dtype).expected_s
                ttft = R.prefill_step(full, c, g, b, ctx, dt, s.kv_dtype).expected_s
            else:
                tpot = max(b * (decode_tok + ssm_decode) / r.flops_per_s, decode_bytes / r.bytes_per_s)
                ttft = max(prefill / r.flops_per_s, prefill_bytes / r.bytes_per_s)
            serving = weights + kv + state + acts
            out.append({
                "spec": spec.name,
                "gpu": g.key,
                "dtype": get_dtype(dt).name,
                "batch": b,
                "context": ctx,
                "weights_bytes": weights,
                "kv_cache_bytes": kv,
                "ssm_state_bytes": state,
                "cache_bytes": kv + state,
                "activations_bytes": acts,
                "serving_bytes": serving,
                "fits": serving <= usable,
                "prefill_flops": prefill,
                "decode_flops_per_token": decode_tok + ssm_decode,
                "ttft_s": ttft,
                "tpot_s": tpot,
                "ttft_bound_s": ttft_bound,
                "tpot_bound_s": tpot_bound,
                "ttft_sol_percent": 100 * ttft_bound / ttft,
                "tpot_sol_percent": 100 * tpot_bound / tpot,
            })  # fmt: skip
    return out


def sweep(specs: Sequence[Spec], setups: Sequence[Setup], contexts: Sequence[int]) -> dict[str, Any]:
    """The whole sweep as one JSON document (``godprof.sweep/2``); setups may differ in GPU and dtype."""
    s0 = setups[0]
    w = s0.workload_dict()
    grid: dict[tuple[str, str], dict[str, Any]] = {}
    for st in setups:
        wd = st.workload_dict()
        grid.setdefault((st.gpu.key, wd["dtype"]), {
            "gpu": st.gpu.key, "gpu_name": st.gpu.name, "gpu_memory_bytes": st.gpu.memory_bytes,
            "dtype": wd["dtype"], "kv_dtype": wd["kv_dtype"], "roofline": st.roofline_dict()})  # fmt: skip
    return {
        "schema": SWEEP_SCHEMA,
        "setups": list(grid.values()),
        "gpu": s0.gpu.key,  # the first setup's, as the plots' memory line; ``setups`` lists them all
        "gpu_memory_bytes": s0.gpu.memory_bytes,
        "dtype": w["dtype"],
        "kv_dtype": w["kv_dtype"],
        "roofline": s0.roofline_dict(),
        "memory_model": {
            "logits": s0.model.logits,
            "prefill_chunk_tokens": s0.model.prefill_chunk_tokens,
            "headroom": s0.model.headroom,
            "usable_bytes": IM.usable_bytes(s0.gpu, s0.model),
        },
        "memory_note": activations_note(s0.model),
        "contexts": list(contexts),
        "batches": sorted({s.batch for s in setups}),
        "specs": [spec_dict(sp) for sp in specs],
        "points": [p for sp in specs for p in sweep_records(sp, setups, contexts)],
    }


def sweep_json(doc: dict[str, Any]) -> str:
    """The sweep document as JSON, one point per line (same data as ``json.dumps(doc, indent=2)``; the
    points are written compactly because a 1,000-point sweep through the indenting encoder takes ~0.4 s)."""
    import json

    head = json.dumps({k: v for k, v in doc.items() if k != "points"}, indent=2)
    points = ",\n".join("    " + json.dumps(p) for p in doc["points"])
    return head[:-2] + ',\n  "points": [\n' + points + "\n  ]\n}\n"


def sweep_tables(doc: dict[str, Any]) -> list[Table]:
    """One table per (spec, batch): memory, FLOPs and roofline latency at each context."""
    tables: list[Table] = []
    groups: dict[tuple[str, int, str, str], list[dict]] = {}
    for p in doc["points"]:
        groups.setdefault((p["spec"], p["batch"], p["gpu"], p["dtype"]), []).append(p)
    setups = {(s["gpu"], s["dtype"]): s for s in doc["setups"]}
    for (name, b, gpu, dtype), pts in groups.items():
        st = setups[(gpu, dtype)]
        mem = st["gpu_memory_bytes"]
        t = Table(
            f"{name} · batch {b} · {st['gpu_name']} ({fmt_bytes(mem)}) · weights {dtype} · kv {st['kv_dtype']}",
            [
                "context",
                "KV + state",
                "weights + cache + acts",
                "fits",
                "prefill FLOPs",
                "decode FLOPs/token",
                "TTFT",
                "TPOT",
            ],  # fmt: skip
        )
        for p in pts:
            t.add(f"{p['context']:,}", fmt_bytes(p["cache_bytes"]), fmt_bytes(p["serving_bytes"]),
                  "yes" if p["fits"] else "no", fmt_flops(p["prefill_flops"]),
                  fmt_flops(p["decode_flops_per_token"]), with_sol(p, "ttft"), with_sol(p, "tpot"))  # fmt: skip
        t.caption = (f"Weights {fmt_bytes(pts[0]['weights_bytes'])}. TTFT and TPOT: expected time (its % of "
                     f"speed of light). {doc.get('memory_note', ACTIVATIONS_NOTE)}.")  # fmt: skip
        tables.append(t)
    return tables
