"""What fits on one GPU: serving memory, the largest batch and the longest context. Pure Python.

Split from ``godprof.analytic.roofline`` (which re-exports these names): the shared inference memory
model (``godprof.analytic.inference_memory``) against a card's usable memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from godprof.analytic import inference_memory as IM
from godprof.analytic import memory as M
from godprof.analytic.params import ParamCounts
from godprof.analytic.workload import Workload
from godprof.dtypes import DType, get_dtype
from godprof.spec import Spec

if TYPE_CHECKING:
    from godprof.gpus import GPU

MAX_FIT_TOKENS = 1 << 30  # max_context search limit; a model that fits this much has no memory limit


def _cache_dtype(dtype: str, kv_dtype: str | None) -> DType:
    """KV/state dtype as ``Workload.cache_dtype`` resolves it (default: the activation dtype)."""
    return Workload(dtype=dtype, kv_dtype=kv_dtype).cache_dtype


def serving_bytes(
    spec: Spec,
    counts: ParamCounts,
    batch: int,
    context: int,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
    weights: int | None = None,
    activations: int | None = None,
    model: IM.MemoryModel = IM.DEFAULT_MODEL,
) -> int:
    """Memory to serve ``batch`` sequences of ``context`` tokens: weights + KV + SSM state + activations.

    The shared inference memory model (``godprof.analytic.inference_memory``): activations of the largest
    prefill pass of ``batch`` prompts of ``context`` tokens under ``model`` (chunked prefill, last-position
    logits by default). Equal to ``estimate(spec, Workload(batch, seq=context, logits=model.logits))``'s
    ``total_bytes`` with the same model. The runtime overheads and headroom are not in it: the fit
    functions compare it with ``inference_memory.usable_bytes``.
    """
    cd = _cache_dtype(dtype, kv_dtype)
    if weights is None:
        weights = M.weights_bytes(counts, get_dtype(dtype))
    if activations is None:
        activations = activation_bytes(spec, context, dtype, batch, model)
    cache_bytes = M.kv_cache_bytes(spec, batch, context, cd) + M.ssm_state_bytes(spec, batch, cd)
    return weights + cache_bytes + activations


def activation_bytes(
    spec: Spec, context: int, dtype: str = "bf16", batch: int = 1, model: IM.MemoryModel = IM.DEFAULT_MODEL
) -> int:
    """Activations of the largest prefill pass of ``batch`` prompts of ``context`` tokens
    (``inference_memory.activation_bytes``)."""
    return IM.activation_bytes(spec, batch, context, dtype, model)


def _cap(gpu: GPU, memory_bytes: int | None, model: IM.MemoryModel) -> int:
    return IM.usable_bytes(gpu, model) if memory_bytes is None else memory_bytes


def max_batch(
    spec: Spec,
    counts: ParamCounts,
    gpu: GPU,
    context: int,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
    memory_bytes: int | None = None,
    model: IM.MemoryModel = IM.DEFAULT_MODEL,
) -> int:
    """Largest batch of ``context``-token sequences whose ``serving_bytes`` fit the GPU (0: none): within
    ``memory_bytes`` when given, else ``inference_memory.usable_bytes`` (headroom and overheads kept)."""
    cap = _cap(gpu, memory_bytes, model)
    weights = M.weights_bytes(counts, get_dtype(dtype))
    b, s = IM.prefill_pass(1 << 40, context, model.prefill_chunk_tokens)
    packed = b if model.prefill_chunk_tokens is not None else None  # prompts one pass can hold
    acts: dict[int, int] = {}

    def fits(b: int) -> bool:
        key = b if packed is None else min(b, packed)
        if key not in acts:
            acts[key] = activation_bytes(spec, context, dtype, key, model)
        return serving_bytes(spec, counts, b, context, dtype, kv_dtype, weights, acts[key], model) <= cap

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
    model: IM.MemoryModel = IM.DEFAULT_MODEL,
) -> int | None:
    """Longest context ``batch`` sequences can hold within the GPU (``serving_bytes`` against
    ``memory_bytes``, else ``inference_memory.usable_bytes``).

    0 when even one token does not fit; None when the memory does not limit it (no growing KV cache: an
    SSM, or only sliding-window attention), i.e. it fits at ``MAX_FIT_TOKENS`` tokens.
    """
    cap = _cap(gpu, memory_bytes, model)
    weights = M.weights_bytes(counts, get_dtype(dtype))
    chunk = model.prefill_chunk_tokens
    chunk_acts = activation_bytes(spec, chunk, dtype, batch, model) if chunk is not None else None

    def fits(ctx: int) -> bool:
        long = chunk_acts is not None and chunk is not None and ctx >= chunk
        acts = chunk_acts if long else activation_bytes(spec, ctx, dtype, batch, model)
        return serving_bytes(spec, counts, batch, ctx, dtype, kv_dtype, weights, acts, model) <= cap

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
