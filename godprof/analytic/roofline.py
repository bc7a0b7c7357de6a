"""Roofline latency on one GPU: the speed-of-light bound and the expected time. Pure Python; never
imports torch.

A phase takes at least as long as the slower of its two limits (Williams, Waterman & Patterson 2009):

    bound = max(FLOPs / peak FLOP/s, bytes / bandwidth)        (100% of the datasheet: speed of light)

``prefill_bound_s`` / ``decode_bound_s`` give it; ``prefill_step`` / ``decode_step``
(``godprof.analytic.step_time``) give it with the expected time of the per-operation efficiency model
(``godprof.analytic.efficiency``) and the operations' breakdown. ``prefill_time_s`` /
``decode_step_time_s`` return the expected time, or with an explicit ``eff`` the flat-factor roofline
``max(FLOPs / (peak x eff.compute), bytes / (bandwidth x eff.bandwidth))`` (``--compute-eff`` /
``--bandwidth-eff``). What fits in memory is ``godprof.analytic.fit`` (re-exported here).

Prefill (time to first token, TTFT) of batch x seq tokens:
    FLOPs: ``flops.forward_flops`` with logits for the last position only (what a server computes
    before the first token) plus the SSM scans and depthwise convolutions (``flops.ssm_scan_flops``,
    ``flops.conv_flops``);
    bytes: the weights touched once (MoE: the experts batch x seq tokens select) plus the KV cache and
    SSM state written. Activation traffic is left out (it mostly stays in on-chip memory with fused
    kernels; it is what makes real prefill slower than this bound at short sequences).

Decode step (time per output token, TPOT) of ``batch`` sequences whose new token sees ``context`` keys:
    FLOPs: batch x (``flops.decode_flops_per_token`` at the context = 2 x active matmul weights +
    attention over the context + ``flops.ssm_decode_flops_per_token``);
    bytes: ``decode_bytes`` = weights touched + the KV cache at the context + SSM state read and written.

Weights touched: every weight except the untied input embedding table (a step reads only ``batch`` of
its rows), with MoE routed experts counted by the expected number of distinct experts that
``tokens`` top-k selections hit (``expected_experts_touched``). Bytes per weight follow
``memory.weights_bytes`` exactly (group scales for int8/int4, per-tensor scales for fp8).

Compute dtype: bf16/fp16/fp32 weights compute in that dtype; fp8 in fp8 where the card has an fp8
tensor path and in bf16 otherwise; int8/int4 are weight-only formats dequantised into bf16 matmuls.
Everything runs at the matmul peak (norms, softmax and scans are a small share and left at that rate).

Flat efficiency factors (``Efficiency``, ``rates``): ``eff=None`` in ``rates`` means the card's
``measured`` figures from the GPU database when it has them, else ``DEFAULT_EFFICIENCY``; an explicit
``eff`` always scales the datasheet peaks. The per-operation model reads ``measured`` too (it sets the
gemm bandwidth and compute fractions).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from godprof.analytic import flops as F
from godprof.analytic import inference_memory as IM
from godprof.analytic import memory as M
from godprof.analytic.fit import (  # noqa: F401  (re-exported: callers use roofline.max_batch etc.)
    MAX_FIT_TOKENS,
    _cache_dtype,
    activation_bytes,
    gpus_for_weights,
    max_batch,
    max_context,
    serving_bytes,
)
from godprof.analytic.params import ParamCounts
from godprof.analytic.workload import Workload
from godprof.dtypes import DType, get_dtype
from godprof.kinds.base import FfnKind
from godprof.spec import Spec

if TYPE_CHECKING:
    from godprof.analytic.step_time import StepTime
    from godprof.gpus import GPU


@dataclass(frozen=True)
class Efficiency:
    """Fractions of the datasheet peaks a real workload sustains.

    Defaults: compute 0.6 (large bf16 GEMMs reach ~70-75% of the dense tensor peak on H100/A100;
    end-to-end prefill with attention, norms and launches lands near 50-60% MFU); bandwidth 0.8
    (a device-to-device copy sustains ~85-90% of the HBM peak; decode kernels read weights at ~75-85%).
    """

    compute: float = 0.6
    bandwidth: float = 0.8

    def __post_init__(self) -> None:
        for name in ("compute", "bandwidth"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ValueError(f"efficiency {name} must be in (0, 1], got {v}")


DEFAULT_EFFICIENCY = Efficiency()
SPEED_OF_LIGHT = Efficiency(1.0, 1.0)  # 100% of the datasheet: the bound
PREFILL_CHUNK_TOKENS = IM.PREFILL_CHUNK_TOKENS  # the shared memory model's default prefill chunk


@dataclass(frozen=True)
class Rates:
    """The sustained FLOP/s and bytes/s the roofline divides by, and where they came from."""

    flops_per_s: float
    bytes_per_s: float
    compute_dtype: str
    basis: str  # "datasheet x 0.6 / 0.8", "measured", or a mix


def compute_dtype(gpu: GPU, dtype: str) -> str:
    """The dtype matmuls run in for weights stored in ``dtype`` (see the module docstring)."""
    d = get_dtype(dtype).name
    if d in ("fp32", "bf16", "fp16"):
        return d
    if d == "fp8" and "fp8" in gpu.peak_flops_per_s:
        return "fp8"
    return "bf16"


def rates(gpu: GPU, dtype: str = "bf16", eff: Efficiency | None = None) -> Rates:
    """Sustained compute and memory rates: measured when the card has been calibrated and ``eff`` is None,
    else datasheet peak x efficiency."""
    cd = compute_dtype(gpu, dtype)
    e = eff or DEFAULT_EFFICIENCY
    flops = gpu.peak_flops(cd) * e.compute
    bw = gpu.hbm_bandwidth_bytes_per_s * e.bandwidth
    basis_f = f"datasheet x {e.compute:g}"
    basis_b = f"datasheet x {e.bandwidth:g}"
    m = gpu.measured
    if eff is None and m is not None:
        if cd in m.flops_per_s:
            flops, basis_f = m.flops_per_s[cd], "measured"
        if m.bandwidth_bytes_per_s is not None:
            bw, basis_b = m.bandwidth_bytes_per_s, "measured"
    basis = basis_f if basis_f == basis_b == "measured" else f"compute {basis_f}, bandwidth {basis_b}"
    return Rates(flops, bw, cd, basis)


def expected_experts_touched(num_experts: int, top_k: int, tokens: int) -> float:
    """Expected distinct experts hit by ``tokens`` tokens each picking ``top_k`` of ``num_experts``.

    With uniform routing an expert is missed by one token with probability 1 - k/E, by all of them
    with (1 - k/E)^tokens, so E x (1 - (1 - k/E)^tokens). 1 token -> k; many tokens -> E.
    """
    if tokens <= 0:
        return 0.0
    if top_k >= num_experts:
        return float(num_experts)
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** tokens)


@cache
def _routed_expert_bytes(ffn: FfnKind, hidden: int, dtype_name: str) -> tuple[int, int, int] | None:
    """(experts, top_k, bytes of one routed expert) of an FFN with routed experts (None without), the
    bytes by the same rules as ``memory.weights_bytes``. Cached: sweeps ask for every point."""
    routed = ffn.routed_experts(hidden)
    if routed is None:
        return None
    experts, top_k, p = routed
    one = ParamCounts(
        total=p.total,
        active=p.total,
        by_component={},
        active_by_component={},
        by_layer_kind=[],
        matmul_per_token=p.matmul,
        quantizable=p.quantizable,
        linear_tensors=p.linear_tensors,
        linear_shapes=dict(p.linear_shapes),
    )
    return experts, top_k, M.weights_bytes(one, get_dtype(dtype_name))


def _embedding_bytes(spec: Spec, counts: ParamCounts, dtype: DType) -> int:
    """Bytes of the input embedding tables (token and learned positions) when the lm_head does not share them.

    Embeddings are not quantised by ``weights_bytes``: they stay in bf16 for int8/int4/fp8 formats."""
    if spec.model.tie_embeddings:
        return 0
    n = counts.by_component.get("embedding", 0) + counts.by_component.get("position_embedding", 0)
    d = dtype if dtype.name in ("fp32", "bf16", "fp16") else get_dtype("bf16")
    return -((-n * d.bits) // 8)


def weights_touched_bytes(spec: Spec, counts: ParamCounts, tokens: int, dtype: str = "bf16", rows: int = 1) -> int:
    """Weight bytes read by a pass over ``tokens`` tokens (``rows`` embedding rows looked up).

    All weights, less the untied embedding tables except ``rows`` rows of them, less the routed experts
    that ``tokens`` tokens are not expected to select (a fraction of an expert counts pro rata).
    """
    dt = get_dtype(dtype)
    total = M.weights_bytes(counts, dt)
    emb = _embedding_bytes(spec, counts, dt)
    if emb:
        per_row = emb // max(1, spec.model.vocab_size)
        total -= emb - min(rows, spec.model.vocab_size) * per_row
    untouched = 0.0
    h = spec.model.hidden_size
    for kind in counts.by_layer_kind:  # layers with the same FFN, counted once per kind
        f = spec.ffns.get(kind.ffn)
        routed = _routed_expert_bytes(f, h, dt.name) if f is not None else None
        if routed is not None:
            experts, top_k, one = routed
            hit = expected_experts_touched(experts, top_k, tokens)
            untouched += kind.layers * (experts - hit) * one
    return total - round(untouched)


def decode_bytes(
    spec: Spec,
    counts: ParamCounts,
    batch: int,
    context: int,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
) -> int:
    """Bytes one decode step moves: weights touched by ``batch`` tokens + the KV cache of ``batch``
    sequences at ``context`` tokens that the step reads (``memory.kv_read_bytes``: all of it, or what a
    sparse attention selects) + the SSM state (read and written: 2x)."""
    cd = _cache_dtype(dtype, kv_dtype)
    weights = weights_touched_bytes(spec, counts, batch, dtype, rows=batch)
    kv = M.kv_read_bytes(spec, batch, context, cd)
    state = M.ssm_state_bytes(spec, batch, cd)
    return weights + kv + 2 * state


def decode_flops(spec: Spec, counts: ParamCounts, batch: int, context: int) -> int:
    """FLOPs of one decode step: batch x (decode matmuls and attention at ``context`` + SSM state update)."""
    return batch * (F.decode_flops_per_token(spec, counts, context) + F.ssm_decode_flops_per_token(spec))


def prefill_flops(spec: Spec, counts: ParamCounts, batch: int, seq: int, attention: str = "causal") -> int:
    """FLOPs of a prefill: forward with last-position logits + SSM scans + SSM convolutions."""
    w = Workload(batch=batch, seq=seq, attention_flops=attention, logits="last")
    scans = F.ssm_scan_flops(spec, batch, seq) + F.conv_flops(spec, batch, seq)
    return F.forward_flops(spec, counts, w) + scans


def prefill_bytes(
    spec: Spec, counts: ParamCounts, batch: int, seq: int, dtype: str = "bf16", kv_dtype: str | None = None
) -> int:
    """Bytes a prefill moves: weights touched by batch x seq tokens + KV cache and SSM state written."""
    cd = _cache_dtype(dtype, kv_dtype)
    weights = weights_touched_bytes(spec, counts, batch * seq, dtype, rows=batch * seq)
    return weights + M.kv_cache_bytes(spec, batch, seq, cd) + M.ssm_state_bytes(spec, batch, cd)


def prefill_time_s(
    spec: Spec,
    counts: ParamCounts,
    gpu: GPU,
    batch: int,
    seq: int,
    dtype: str = "bf16",
    eff: Efficiency | None = None,
    attention: str = "causal",
    kv_dtype: str | None = None,
) -> float:
    """Time of a prefill of batch x seq tokens (TTFT without queueing): the expected time of the
    per-operation model, or with ``eff`` the flat-factor roofline max(compute, memory)."""
    if eff is None:
        return prefill_step(spec, counts, gpu, batch, seq, dtype, kv_dtype, attention).expected_s
    r = rates(gpu, dtype, eff)
    compute = prefill_flops(spec, counts, batch, seq, attention) / r.flops_per_s
    memory = prefill_bytes(spec, counts, batch, seq, dtype, kv_dtype) / r.bytes_per_s
    return max(compute, memory)


def _decode_limits(
    spec: Spec,
    counts: ParamCounts,
    gpu: GPU,
    batch: int,
    context: int,
    dtype: str,
    kv_dtype: str | None,
    eff: Efficiency | None,
) -> tuple[float, float]:
    """(compute time, memory time) of one decode step: the two roofs."""
    r = rates(gpu, dtype, eff)
    compute = decode_flops(spec, counts, batch, context) / r.flops_per_s
    memory = decode_bytes(spec, counts, batch, context, dtype, kv_dtype) / r.bytes_per_s
    return compute, memory


def decode_step_time_s(
    spec: Spec,
    counts: ParamCounts,
    gpu: GPU,
    batch: int,
    context: int,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
    eff: Efficiency | None = None,
) -> float:
    """Time of one decode step of ``batch`` sequences at ``context`` tokens (TPOT): the expected time of the
    per-operation model, or with ``eff`` the flat-factor roofline."""
    if eff is None:
        return decode_step(spec, counts, gpu, batch, context, dtype, kv_dtype).expected_s
    return max(_decode_limits(spec, counts, gpu, batch, context, dtype, kv_dtype, eff))


def decode_bound(
    spec: Spec,
    counts: ParamCounts,
    gpu: GPU,
    batch: int,
    context: int,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
    eff: Efficiency | None = None,
) -> str:
    """'memory' or 'compute': which roof limits the decode step (with ``eff`` None: at speed of light)."""
    compute, memory = _decode_limits(spec, counts, gpu, batch, context, dtype, kv_dtype, eff or SPEED_OF_LIGHT)
    return "compute" if compute > memory else "memory"


# --------------------------------------------------------------------------- bound and expected


def prefill_bound_s(
    spec: Spec,
    counts: ParamCounts,
    gpu: GPU,
    batch: int,
    seq: int,
    dtype: str = "bf16",
    attention: str = "causal",
    kv_dtype: str | None = None,
) -> float:
    """Speed-of-light time of a prefill: max(FLOPs / peak, bytes / bandwidth) at 100% of the datasheet."""
    return prefill_time_s(spec, counts, gpu, batch, seq, dtype, SPEED_OF_LIGHT, attention, kv_dtype)


def decode_bound_s(
    spec: Spec,
    counts: ParamCounts,
    gpu: GPU,
    batch: int,
    context: int,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
) -> float:
    """Speed-of-light time of one decode step: max(FLOPs / peak, bytes / bandwidth) at 100% of the datasheet."""
    return max(_decode_limits(spec, counts, gpu, batch, context, dtype, kv_dtype, SPEED_OF_LIGHT))


def prefill_step(
    spec: Spec,
    counts: ParamCounts,
    gpu: GPU,
    batch: int,
    seq: int,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
    attention: str = "causal",
) -> StepTime:
    """``step_time.prefill_step``: bound, expected time and operations of a prefill."""
    from godprof.analytic.step_time import prefill_step as f

    return f(spec, counts, gpu, batch, seq, dtype, kv_dtype, attention)


def decode_step(
    spec: Spec,
    counts: ParamCounts,
    gpu: GPU,
    batch: int,
    context: int,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
) -> StepTime:
    """``step_time.decode_step``: bound, expected time and operations of a decode step."""
    from godprof.analytic.step_time import decode_step as f

    return f(spec, counts, gpu, batch, context, dtype, kv_dtype)
