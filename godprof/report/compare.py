"""Compare architectures side by side on one GPU (``godprof.report.sweep`` runs them across contexts).

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
from typing import TYPE_CHECKING, Any

from godprof.analytic import flops as F
from godprof.analytic import inference_memory as IM
from godprof.analytic import memory as M
from godprof.analytic import roofline as R
from godprof.analytic.params import ParamCounts, count_params
from godprof.analytic.workload import Workload
from godprof.dtypes import get_dtype
from godprof.report.format import fmt_bytes, fmt_flops, fmt_int, fmt_params, fmt_seconds
from godprof.report.table import Table, flatten

if TYPE_CHECKING:
    from godprof.gpus import GPU
    from godprof.spec import Spec

COMPARE_SCHEMA = "godprof.compare/2"  # /2: records inside an object ({schema, records}), a grid of setups


def activations_note(model: IM.MemoryModel = IM.DEFAULT_MODEL) -> str:
    """How "fits" is decided: the shared inference memory model (``godprof.analytic.inference_memory``)."""
    return (
        f"fit = weights + KV cache + SSM state + activations of the largest prefill pass ({model.describe()}, "
        f"flash attention) + runtime overheads (CUDA context, workspaces) within the GPU memory less "
        f"{model.headroom:.0%}"
    )


ACTIVATIONS_NOTE = activations_note()


@dataclass(frozen=True)
class Setup:
    """The workload and hardware every compared spec is put through."""

    gpu: GPU
    batch: int = 1
    context: int = 8192
    dtype: str = "bf16"
    kv_dtype: str | None = None
    eff: R.Efficiency | None = None
    model: IM.MemoryModel = IM.DEFAULT_MODEL  # the shared inference memory model

    def __post_init__(self) -> None:
        Workload(batch=self.batch, seq=self.context, dtype=self.dtype, kv_dtype=self.kv_dtype)  # validates

    @property
    def cache_dtype(self) -> str:
        return Workload(dtype=self.dtype, kv_dtype=self.kv_dtype).cache_dtype.name

    def workload_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "context": self.context, "dtype": get_dtype(self.dtype).name,
                "kv_dtype": self.cache_dtype, "logits": self.model.logits,
                "prefill_chunk_tokens": self.model.prefill_chunk_tokens}  # fmt: skip

    def roofline_dict(self) -> dict[str, Any]:
        r = R.rates(self.gpu, self.dtype, self.eff)
        return {
            "gpu": self.gpu.key,
            "gpu_name": self.gpu.name,
            "compute_dtype": r.compute_dtype,
            "flops_per_s": r.flops_per_s,
            "bytes_per_s": r.bytes_per_s,
            # "measured": the card's measured rates (they set the per-operation model's gemm fractions)
            "basis": r.basis if self.eff is not None or r.basis == "measured" else EXPECTED_BASIS,
            "peak_flops_per_s": self.gpu.peak_flops(r.compute_dtype),  # the speed-of-light rates
            "peak_bytes_per_s": self.gpu.hbm_bandwidth_bytes_per_s,
        }


EXPECTED_BASIS = "bound at 100% of the datasheet; expected from per-operation efficiencies (efficiency.yaml)"


def latency_dict(pre: Any, dec: Any, ttft: float, tpot: float) -> dict[str, float]:
    """Bound (speed of light) and % of it beside the expected TTFT/TPOT (``step_time.StepTime``s)."""
    return {
        "ttft_bound_s": pre.bound_s,
        "ttft_expected_s": ttft,
        "ttft_sol_percent": 100 * pre.bound_s / ttft,
        "tpot_bound_s": dec.bound_s,
        "tpot_expected_s": tpot,
        "tpot_sol_percent": 100 * dec.bound_s / tpot,
    }


def spec_dict(spec: Spec) -> dict[str, Any]:
    return {"name": spec.name, "family": spec.family, "path": spec.path}


def compare_record(spec: Spec, setup: Setup, counts: ParamCounts | None = None) -> dict[str, Any]:
    """One spec under ``setup``: parameters, memory, FLOPs, roofline TTFT/TPOT and what fits on one GPU."""
    c = counts or count_params(spec)
    s = setup
    g, b, ctx, dt, kvd = s.gpu, s.batch, s.context, s.dtype, s.kv_dtype
    cdt = get_dtype(s.cache_dtype)
    weights = M.weights_bytes(c, get_dtype(dt))
    memory = IM.inference_memory(spec, weights, b, ctx, ctx, dt, cdt, s.model)
    kv, state = memory["kv_cache_bytes"], memory["ssm_state_bytes"]
    prefill = R.prefill_flops(spec, c, b, ctx)
    pre, dec = R.prefill_step(spec, c, g, b, ctx, dt, kvd), R.decode_step(spec, c, g, b, ctx, dt, kvd)
    ttft = pre.expected_s if s.eff is None else R.prefill_time_s(spec, c, g, b, ctx, dt, s.eff, kv_dtype=kvd)
    tpot = dec.expected_s if s.eff is None else R.decode_step_time_s(spec, c, g, b, ctx, dt, kvd, s.eff)
    return {
        "spec": spec_dict(spec),
        "workload": s.workload_dict(),
        "params": {"total": c.total, "active": c.active},
        "memory": {
            **memory,  # the keys estimate reports, from the same function (inference_memory.memory_record)
            "ssm_state_bytes_per_sequence": M.ssm_state_bytes(spec, 1, cdt),
            "cache_bytes": kv + state,
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
            **latency_dict(pre, dec, ttft, tpot),
            "decode_tokens_per_s": b / tpot,
            "decode_bytes": R.decode_bytes(spec, c, b, ctx, dt, kvd),
            "decode_bound": R.decode_bound(spec, c, g, b, ctx, dt, kvd, s.eff),
        },
        "fit": {
            **IM.fit_record(g, memory["total_bytes"], s.model),
            "max_context_batch1": R.max_context(spec, c, g, 1, dt, kvd, model=s.model),
            "max_batch_at_context": R.max_batch(spec, c, g, ctx, dt, kvd, model=s.model),
            "gpus_for_weights": R.gpus_for_weights(c, g, dt),
        },
    }


def compare(specs: Sequence[Spec], setup: Setup | Sequence[Setup]) -> list[dict[str, Any]]:
    """Records for several specs under one setup, or under each of several (a GPU x dtype grid: setup-major
    order); ``count_params`` once per spec."""
    setups = [setup] if isinstance(setup, Setup) else list(setup)
    counts = [count_params(s) for s in specs]
    return [compare_record(s, st, c) for st in setups for s, c in zip(specs, counts, strict=True)]


def compare_document(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON document of ``godprof compare``: ``{schema, records}``, one record per spec and setup."""
    return {"schema": COMPARE_SCHEMA, "records": records}


def compare_grid_table(records: list[dict[str, Any]], setups: Sequence[Setup]) -> Table:
    """A spec x (GPU, dtype) summary of a grid: roofline TPOT and GPUs to hold the weights per cell."""
    cols = [f"{st.gpu.key} {get_dtype(st.dtype).name}" for st in setups]
    t = Table("Grid: TPOT at the context (GPUs to hold the weights)", ["spec"] + cols)
    n = len(records) // max(1, len(setups))
    for i in range(n):
        row = [records[j * n + i] for j in range(len(setups))]
        t.add(row[0]["spec"]["name"], *(f"{fmt_seconds(d['roofline']['tpot_s'])} "
                                          f"({d['fit']['gpus_for_weights']})" for d in row))  # fmt: skip
    t.caption = "One full table per GPU and dtype follows; `--format json` holds every record."
    return t


# --------------------------------------------------------------------------- compare table


def _max_ctx(v: int | None) -> str:
    return "no limit" if v is None else ("does not fit" if v == 0 else f"{v:,}")


def with_sol(p: dict[str, Any], phase: str) -> str:
    """A sweep point's expected TTFT or TPOT and, when known, its % of speed of light."""
    pct = p.get(f"{phase}_sol_percent")
    return fmt_seconds(p[f"{phase}_s"]) + ("" if pct is None else f" ({pct:.0f}%)")


def _pct(v: float) -> str:
    return f"{v:.0f}%"


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
        ("weights + cache + activations", lambda d: d[m]["total_bytes"], fmt_bytes, "low"),
        (f"prefill FLOPs per token ({ctx:,})", lambda d: d[f]["prefill_per_token"], fmt_flops, "low"),
        (
            f"decode FLOPs per token (at {ctx:,})",
            lambda d: d[f]["decode_per_token"] + d[f]["ssm_decode_per_token"],
            fmt_flops,
            "low",
        ),  # fmt: skip
        ("TTFT expected (prefill)", lambda d: d[r]["ttft_s"], fmt_seconds, "low"),
        ("TTFT speed of light", lambda d: d[r]["ttft_bound_s"], fmt_seconds, "low"),
        ("TTFT % of speed of light", lambda d: d[r]["ttft_sol_percent"], _pct, "high"),
        ("TPOT expected (decode step)", lambda d: d[r]["tpot_s"], fmt_seconds, "low"),
        ("TPOT speed of light", lambda d: d[r]["tpot_bound_s"], fmt_seconds, "low"),
        ("TPOT % of speed of light", lambda d: d[r]["tpot_sol_percent"], _pct, "high"),
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
    rates = (f"expected at {rd['flops_per_s'] / 1e12:,.0f} TFLOP/s and {rd['bytes_per_s'] / 1e12:.2f} TB/s "
             f"({rd['basis']})" if setup.eff is not None else "expected from per-operation efficiencies")  # fmt: skip
    t.caption = (
        f"Latency on {rd['compute_dtype']}: speed of light at the datasheet's "
        f"{rd['peak_flops_per_s'] / 1e12:,.0f} TFLOP/s and {rd['peak_bytes_per_s'] / 1e12:.2f} TB/s, {rates}; "
        "TTFT and TPOT are one-GPU times even where the "
        "weights need more GPUs (N-way tensor parallelism divides them by at most N). "
        f"{activations_note(setup.model)}. Best value per row in bold."
    )
    return t


def compare_csv_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [flatten(d) for d in records]
