"""Compare architectures side by side on one GPU, and sweep them across context lengths.

Records are plain dicts with a stable schema (integers for counts and bytes, seconds as floats); tables
are built from records. Every figure comes from ``godprof.analytic`` (exact counts) and
``godprof.analytic.roofline`` (latency and fit), so a record agrees with ``godprof estimate`` for the same
workload: weights/KV/state bytes and decode FLOPs equal estimate's for ``Workload(batch, seq=context,
context=context, dtype, kv_dtype)``, and prefill FLOPs equal estimate's ``forward`` with ``logits=last``
plus ``ssm_scan`` and ``conv``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from godprof.analytic import flops as F
from godprof.analytic import memory as M
from godprof.analytic import roofline as R
from godprof.analytic.params import ParamCounts, count_params
from godprof.analytic.workload import Workload
from godprof.dtypes import get_dtype
from godprof.report.format import fmt_bytes, fmt_flops, fmt_int, fmt_params, fmt_seconds
from godprof.report.table import Table, flatten

if TYPE_CHECKING:
    from godprof.gpus import GPU
    from godprof.spec import Layer, Spec

COMPARE_SCHEMA = "godprof.compare/1"
SWEEP_SCHEMA = "godprof.sweep/1"

ACTIVATIONS_NOTE = (
    f"fit = weights + KV cache + SSM state + activations of one prefill chunk (one sequence, at most "
    f"{R.PREFILL_CHUNK_TOKENS:,} tokens, flash attention, last-position logits) within the GPU memory, "
    "no reserve for the CUDA context"
)


@dataclass(frozen=True)
class Setup:
    """The workload and hardware every compared spec is put through."""

    gpu: GPU
    batch: int = 1
    context: int = 8192
    dtype: str = "bf16"
    kv_dtype: str | None = None
    eff: R.Efficiency | None = None

    def __post_init__(self) -> None:
        Workload(batch=self.batch, seq=self.context, dtype=self.dtype, kv_dtype=self.kv_dtype)  # validates

    @property
    def cache_dtype(self) -> str:
        return Workload(dtype=self.dtype, kv_dtype=self.kv_dtype).cache_dtype.name

    def workload_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "context": self.context, "dtype": get_dtype(self.dtype).name,
                "kv_dtype": self.cache_dtype}  # fmt: skip

    def roofline_dict(self) -> dict[str, Any]:
        r = R.rates(self.gpu, self.dtype, self.eff)
        return {
            "gpu": self.gpu.key,
            "gpu_name": self.gpu.name,
            "compute_dtype": r.compute_dtype,
            "flops_per_s": r.flops_per_s,
            "bytes_per_s": r.bytes_per_s,
            "basis": r.basis,
        }


def _spec_dict(spec: Spec) -> dict[str, Any]:
    return {"name": spec.name, "family": spec.family, "path": spec.path}


def compare_record(spec: Spec, setup: Setup, counts: ParamCounts | None = None) -> dict[str, Any]:
    """One spec under ``setup``: parameters, memory, FLOPs, roofline TTFT/TPOT and what fits on one GPU."""
    c = counts or count_params(spec)
    s = setup
    g, b, ctx, dt, kvd = s.gpu, s.batch, s.context, s.dtype, s.kv_dtype
    cdt = get_dtype(s.cache_dtype)
    weights = M.weights_bytes(c, get_dtype(dt))
    kv = M.kv_cache_bytes(spec, b, ctx, cdt)
    state = M.ssm_state_bytes(spec, b, cdt)
    acts = R.activation_bytes(spec, ctx, dt)
    prefill = R.prefill_flops(spec, c, b, ctx)
    ttft = R.prefill_time_s(spec, c, g, b, ctx, dt, s.eff, kv_dtype=kvd)
    tpot = R.decode_step_time_s(spec, c, g, b, ctx, dt, kvd, s.eff)
    return {
        "schema": COMPARE_SCHEMA,
        "spec": _spec_dict(spec),
        "workload": s.workload_dict(),
        "params": {"total": c.total, "active": c.active},
        "memory": {
            "weights_bytes": weights,
            "kv_bytes_per_token": M.kv_bytes_per_token(spec, cdt),
            "ssm_state_bytes_per_sequence": M.ssm_state_bytes(spec, 1, cdt),
            "kv_cache_bytes": kv,
            "ssm_state_bytes": state,
            "cache_bytes": kv + state,
            "activations_bytes": acts,
            "serving_bytes": weights + kv + state + acts,
        },
        "flops": {
            "prefill": prefill,
            "prefill_per_token": prefill // (b * ctx),
            "decode_per_token": F.decode_flops_per_token(spec, c, ctx),
            "ssm_decode_per_token": F.ssm_decode_flops_per_token(spec),
        },
        "roofline": {
            **s.roofline_dict(),
            "ttft_s": ttft,
            "tpot_s": tpot,
            "decode_tokens_per_s": b / tpot,
            "decode_bytes": R.decode_bytes(spec, c, b, ctx, dt, kvd),
            "decode_bound": R.decode_bound(spec, c, g, b, ctx, dt, kvd, s.eff),
        },
        "fit": {
            "gpu_memory_bytes": g.memory_bytes,
            "fits": weights + kv + state + acts <= g.memory_bytes,
            "max_context_batch1": R.max_context(spec, c, g, 1, dt, kvd),
            "max_batch_at_context": R.max_batch(spec, c, g, ctx, dt, kvd),
            "gpus_for_weights": R.gpus_for_weights(c, g, dt),
        },
    }


def compare(specs: Sequence[Spec], setup: Setup) -> list[dict[str, Any]]:
    """Records for several specs (``count_params`` once per spec)."""
    return [compare_record(s, setup) for s in specs]


# --------------------------------------------------------------------------- compare table


def _max_ctx(v: int | None) -> str:
    return "no limit" if v is None else ("does not fit" if v == 0 else f"{v:,}")


# label, value getter, formatter, better ("low", "high" or None)
_Row = tuple[str, Callable[[dict], Any], Callable[[Any], str], str | None]


def _rows(batch: int, ctx: int) -> list[_Row]:
    m, f, r, fit = "memory", "flops", "roofline", "fit"
    return [
        ("params, total", lambda d: d["params"]["total"], fmt_params, "low"),
        ("params, active per token", lambda d: d["params"]["active"], fmt_params, "low"),
        ("weights", lambda d: d[m]["weights_bytes"], fmt_bytes, "low"),
        ("KV cache per token", lambda d: d[m]["kv_bytes_per_token"], fmt_bytes, "low"),
        ("SSM state per sequence", lambda d: d[m]["ssm_state_bytes_per_sequence"], fmt_bytes, "low"),
        (f"KV + state at {ctx:,} x {batch}", lambda d: d[m]["cache_bytes"], fmt_bytes, "low"),
        ("weights + cache + activations", lambda d: d[m]["serving_bytes"], fmt_bytes, "low"),
        (f"prefill FLOPs per token ({ctx:,})", lambda d: d[f]["prefill_per_token"], fmt_flops, "low"),
        (
            f"decode FLOPs per token (at {ctx:,})",
            lambda d: d[f]["decode_per_token"] + d[f]["ssm_decode_per_token"],
            fmt_flops,
            "low",
        ),  # fmt: skip
        ("TTFT (roofline prefill)", lambda d: d[r]["ttft_s"], fmt_seconds, "low"),
        ("TPOT (roofline decode step)", lambda d: d[r]["tpot_s"], fmt_seconds, "low"),
        ("decode tokens/s (batch)", lambda d: d[r]["decode_tokens_per_s"], lambda x: f"{x:,.0f}", "high"),
        ("decode bound by", lambda d: d[r]["decode_bound"], str, None),
        ("max context at batch 1", lambda d: d[fit]["max_context_batch1"], _max_ctx, "high"),
        (f"max batch at {ctx:,}", lambda d: d[fit]["max_batch_at_context"], fmt_int, "high"),
        ("GPUs to hold the weights", lambda d: d[fit]["gpus_for_weights"], fmt_int, "low"),
    ]


def _sort_key(v: Any, better: str) -> float:
    if v is None:  # max_context None = unlimited
        return math.inf if better == "high" else -math.inf
    return float(v)


def compare_table(records: list[dict[str, Any]], setup: Setup) -> Table:
    """One column per spec, one row per quantity; the best value of each row is highlighted (ties too)."""
    w = setup.workload_dict()
    rd = setup.roofline_dict()
    title = (
        f"{setup.gpu.name} ({fmt_bytes(setup.gpu.memory_bytes)}) · batch {w['batch']} · context "
        f"{w['context']:,} · weights {w['dtype']} · kv {w['kv_dtype']}"
    )
    t = Table(title, [""] + [d["spec"]["name"] for d in records])
    for i, (label, get, fmt, better) in enumerate(_rows(setup.batch, setup.context)):
        values = [get(d) for d in records]
        t.add(label, *(fmt(v) for v in values))
        if better and len(records) > 1:
            keys = [_sort_key(v, better) for v in values]
            best = min(keys) if better == "low" else max(keys)
            if not all(k == best for k in keys):
                t.highlight.update((i, j + 1) for j, k in enumerate(keys) if k == best)
    t.caption = (
        f"Roofline on {rd['compute_dtype']} at {rd['flops_per_s'] / 1e12:,.0f} TFLOP/s and "
        f"{rd['bytes_per_s'] / 1e12:.2f} TB/s ({rd['basis']}); TTFT and TPOT are one-GPU bounds even where the "
        "weights need more GPUs (N-way tensor parallelism divides them by at most N). "
        f"{ACTIVATIONS_NOTE}. Best value per row in bold."
    )
    return t


def compare_csv_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [flatten({k: v for k, v in d.items() if k != "schema"}) for d in records]


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

    def kv_cache_bytes(self, batch: int, context: int, bits: int) -> int:
        """== memory.kv_cache_bytes: per-layer elements x cached tokens, summed, rounded up to bytes once."""
        elements = sum(n * M.kv_elements_per_token(lay) * M.cached_tokens(lay, context) for n, lay in self._kv)
        return -((-batch * elements * bits) // 8)

    def kv_read_bytes(self, batch: int, context: int, bits: int) -> int:
        """== memory.kv_read_bytes: what one decode step reads of the cache."""
        elements = sum(n * lay.mixer.decode_read_elements(context) for n, lay in self._kv)
        return -((-batch * elements * bits) // 8)


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
        chunk_acts = R.activation_bytes(grp.unique, R.PREFILL_CHUNK_TOKENS, dt)
        for ctx in contexts:
            kv = grp.kv_cache_bytes(b, ctx, cdt.bits)
            acts = chunk_acts if ctx >= R.PREFILL_CHUNK_TOKENS else R.activation_bytes(grp.unique, ctx, dt)
            decode_tok = grp.sum(lambda sp, ctx=ctx: F.decode_flops_per_token(sp, c, ctx))
            prefill = grp.sum(lambda sp, ctx=ctx, b=b: R.prefill_flops(sp, c, b, ctx))
            # identical to R.decode_step_time_s / R.prefill_time_s, with the per-batch terms hoisted
            decode_bytes = touched + grp.kv_read_bytes(b, ctx, cdt.bits) + 2 * state
            tpot = max(b * (decode_tok + ssm_decode) / r.flops_per_s, decode_bytes / r.bytes_per_s)
            prefill_bytes = R.weights_touched_bytes(full, c, b * ctx, dt, rows=b * ctx) + kv + state
            ttft = max(prefill / r.flops_per_s, prefill_bytes / r.bytes_per_s)
            serving = weights + kv + state + acts
            out.append({
                "spec": spec.name,
                "batch": b,
                "context": ctx,
                "weights_bytes": weights,
                "kv_cache_bytes": kv,
                "ssm_state_bytes": state,
                "cache_bytes": kv + state,
                "serving_bytes": serving,
                "fits": serving <= g.memory_bytes,
                "prefill_flops": prefill,
                "decode_flops_per_token": decode_tok + ssm_decode,
                "ttft_s": ttft,
                "tpot_s": tpot,
            })  # fmt: skip
    return out


def sweep(specs: Sequence[Spec], setups: Sequence[Setup], contexts: Sequence[int]) -> dict[str, Any]:
    """The whole sweep as one JSON document (``godprof.sweep/1``)."""
    s0 = setups[0]
    w = s0.workload_dict()
    return {
        "schema": SWEEP_SCHEMA,
        "gpu": s0.gpu.key,
        "gpu_memory_bytes": s0.gpu.memory_bytes,
        "dtype": w["dtype"],
        "kv_dtype": w["kv_dtype"],
        "roofline": s0.roofline_dict(),
        "contexts": list(contexts),
        "batches": [s.batch for s in setups],
        "specs": [_spec_dict(sp) for sp in specs],
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
    groups: dict[tuple[str, int], list[dict]] = {}
    for p in doc["points"]:
        groups.setdefault((p["spec"], p["batch"]), []).append(p)
    mem = doc["gpu_memory_bytes"]
    for (name, b), pts in groups.items():
        t = Table(
            f"{name} · batch {b} · {doc['roofline']['gpu_name']} ({fmt_bytes(mem)}) · "
            f"weights {doc['dtype']} · kv {doc['kv_dtype']}",
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
                  fmt_flops(p["decode_flops_per_token"]), fmt_seconds(p["ttft_s"]),
                  fmt_seconds(p["tpot_s"]))  # fmt: skip
        t.caption = f"Weights {fmt_bytes(pts[0]['weights_bytes'])}. {ACTIVATIONS_NOTE}."
        tables.append(t)
    return tables
