"""Roofline latency on one GPU, and what fits in its memory. Pure Python; never imports torch.

A phase takes as long as the slower of its two limits (Williams, Waterman & Patterson 2009):

    time = max(FLOPs / (peak FLOP/s x eff.compute), bytes / (bandwidth x eff.bandwidth))

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

Efficiency: ``eff=None`` means the card's ``measured`` figures from the GPU database when it has them
(a calibration replaces datasheet x efficiency), else ``DEFAULT_EFFICIENCY``. An explicit ``eff``
always scales the datasheet peaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from godprof.analytic import flops as F
from godprof.analytic import memory as M
from godprof.analytic.params import ParamCounts
from godprof.analytic.workload import Workload
from godprof.dtypes import DType, get_dtype
from godprof.kinds.base import FfnKind
from godprof.spec import Spec

if TYPE_CHECKING:
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
PREFILL_CHUNK_TOKENS = 8192  # chunked prefill: activations of at most this many tokens are alive at once
MAX_FIT_TOKENS = 1 << 30  # max_context search limit; a model that fits this much has no memory limit


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


def _cache_dtype(dtype: str, kv_dtype: str | None) -> DType:
    """KV/state dtype as ``Workload.cache_dtype`` resolves it (default: the activation dtype)."""
    return Workload(dtype=dtype, kv_dtype=kv_dtype).cache_dtype


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
    """Roofline time of a prefill of batch x seq tokens (TTFT without queueing): max(compute, memory)."""
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
    """Roofline time of one decode step of ``batch`` sequences at ``context`` tokens (TPOT)."""
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
    """'memory' or 'compute': which roof limits the decode step."""
    compute, memory = _decode_limits(spec, counts, gpu, batch, context, dtype, kv_dtype, eff)
    return "compute" if compute > memory else "memory"


# --------------------------------------------------------------------------- what fits on one GPU


def serving_bytes(
    spec: Spec,
    counts: ParamCounts,
    batch: int,
    context: int,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
    weights: int | None = None,
    activations: int | None = None,
) -> int:
    """Memory to serve ``batch`` sequences of ``context`` tokens: weights + KV + SSM state + activations.

    Activations are those of one prefill chunk: a single sequence's min(context, PREFILL_CHUNK_TOKENS)
    tokens (``memory.inference_activation_bytes`` with flash attention and last-position logits), since
    servers prefill in chunks while the other sequences' caches sit in memory. Equal to
    ``estimate(spec, Workload(batch, context=context, ...))`` memory with its activations replaced by
    those of ``Workload(batch=1, seq=min(context, PREFILL_CHUNK_TOKENS), logits="last")``.
    No allowance for the CUDA context, allocator fragmentation or framework workspace.
    """
    cd = _cache_dtype(dtype, kv_dtype)
    if weights is None:
        weights = M.weights_bytes(counts, get_dtype(dtype))
    if activations is None:
        activations = activation_bytes(spec, context, dtype)
    cache_bytes = M.kv_cache_bytes(spec, batch, context, cd) + M.ssm_state_bytes(spec, batch, cd)
    return weights + cache_bytes + activations


def activation_bytes(spec: Spec, context: int, dtype: str = "bf16") -> int:
    """Activations of one prefill chunk (see ``serving_bytes``)."""
    w = Workload(batch=1, seq=min(context, PREFILL_CHUNK_TOKENS), dtype=dtype, logits="last")
    return M.inference_activation_bytes(spec, w)


def max_batch(
    spec: Spec,
    counts: ParamCounts,
    gpu: GPU,
    context: int,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
    memory_bytes: int | None = None,
) -> int:
    """Largest batch of ``context``-token sequences whose ``serving_bytes`` fit the GPU's memory (0: none)."""
    cap = gpu.memory_bytes if memory_bytes is None else memory_bytes
    weights = M.weights_bytes(counts, get_dtype(dtype))
    acts = activation_bytes(spec, context, dtype)

    def fits(b: int) -> bool:
        return serving_bytes(spec, counts, b, context, dtype, kv_dtype, weights, acts) <= cap

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while fits(hi):
        lo, hi = hi, hi * 2
        if hi > 1 << 40:  # no per-sequence memory at all (cannot happen with real specs)
            return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def max_context(
    spec: Spec,
    counts: ParamCounts,
    gpu: GPU,
    batch: int = 1,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
    memory_bytes: int | None = None,
) -> int | None:
    """Longest context ``batch`` sequences can hold within the GPU's memory (``serving_bytes``).

    0 when even one token does not fit; None when the memory does not limit it (no growing KV cache: an
    SSM, or only sliding-window attention), i.e. it fits at ``MAX_FIT_TOKENS`` tokens.
    """
    cap = gpu.memory_bytes if memory_bytes is None else memory_bytes
    weights = M.weights_bytes(counts, get_dtype(dtype))
    chunk_acts = activation_bytes(spec, PREFILL_CHUNK_TOKENS, dtype)

    def fits(ctx: int) -> bool:
        acts = chunk_acts if ctx >= PREFILL_CHUNK_TOKENS else activation_bytes(spec, ctx, dtype)
        return serving_bytes(spec, counts, batch, ctx, dtype, kv_dtype, weights, acts) <= cap

    if fits(MAX_FIT_TOKENS):
        return None
    if not fits(1):
        return 0
    lo, hi = 1, MAX_FIT_TOKENS
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def gpus_for_weights(counts: ParamCounts, gpu: GPU, dtype: str = "bf16") -> int:
    """GPUs whose memory together holds the weights alone: ceil(weights_bytes / memory_bytes)."""
    w = M.weights_bytes(counts, get_dtype(dtype))
    return max(1, -(-w // gpu.memory_bytes))
