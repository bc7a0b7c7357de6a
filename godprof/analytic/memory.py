"""Memory: weights, KV cache, SSM state, activations, gradients and optimizer state, in bytes.

Exact (the built model allocates these bytes): weights in fp32/bf16/fp16, the KV cache and the SSM
state. Weight formats int8/int4/fp8/fp8_block/mxfp4/nvfp4 are exact for the storage they describe
(see ``godprof.dtypes``), one format for all (``weights_bytes``) or one per component as a checkpoint
ships them (``weights_by_format``).
Activations are a model of the peak, not an allocation count: each function says what it keeps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from godprof.analytic.params import ParamCounts
from godprof.analytic.workload import Workload
from godprof.dtypes import (
    FP8_TENSOR_SCALE_BYTES,
    SCALE_BYTES,
    DType,
    WeightFormats,
    block_scaled_bytes,
    get_dtype,
)
from godprof.kinds.base import FP32_BYTES
from godprof.spec import Layer, Spec


def _nbytes(elements: int, dtype: DType) -> int:
    return dtype.nbytes(elements)


# --------------------------------------------------------------------------- weights


def weights_bytes(counts: ParamCounts, dtype: DType, group_size: int = 128) -> int:
    """Bytes of all weights stored in ``dtype``.

    fp32/bf16/fp16: every parameter in that format. int8/int4: the Linear weight matrices of the layers
    in that format plus one fp16 scale per ``group_size`` inputs per output row; embeddings, lm_head,
    norms, biases and SSM vectors stay in bf16 (as GPTQ/AWQ checkpoints keep them). fp8: the same split,
    with one fp32 scale per quantised tensor instead of group scales. Block-scaled formats (mxfp4, nvfp4,
    fp8_block): the same split, each matrix by ``godprof.dtypes.block_scaled_bytes``.
    Per-component formats (a spec's ``weights:`` section) are ``weights_by_format``.
    """
    if dtype.name in ("fp32", "bf16", "fp16"):
        return _nbytes(counts.total, dtype)
    rest = _nbytes(counts.total - counts.quantizable, get_dtype("bf16"))
    return rest + _matrices_bytes(counts.linear_shapes, dtype, group_size)


def _matrices_bytes(shapes: Mapping[tuple[int, int], int], dtype: DType, group_size: int) -> int:
    """Weight matrices {(n_in, n_out): count} stored in ``dtype``, scales included (see ``weights_bytes``).
    Elements of one format are rounded up to a byte once, except block-scaled formats (packed per row)."""
    if dtype.scale_block is not None:
        return sum(n * block_scaled_bytes(dtype, n_in, n_out) for (n_in, n_out), n in shapes.items())
    body = _nbytes(sum(n * n_in * n_out for (n_in, n_out), n in shapes.items()), dtype)
    if dtype.float8:
        return body + sum(shapes.values()) * FP8_TENSOR_SCALE_BYTES
    if dtype.quantized:
        scales = sum(n * n_out * -(-n_in // group_size) for (n_in, n_out), n in shapes.items())
        return body + scales * SCALE_BYTES
    return body


@dataclass(frozen=True)
class WeightsBreakdown:
    """Weight bytes by format, and the format each component's weight matrices are stored in."""

    by_format: dict[str, int]  # format name -> bytes, scales included
    formats: dict[str, str]  # component (with parameters) -> the format of its matrices (or of all of it)
    base: str  # the 16-bit format of what no quantised format stores (norms, biases, sinks, SSM vectors)

    @property
    def total_bytes(self) -> int:
        return sum(self.by_format.values())

    def components_in(self, fmt: str) -> list[str]:
        """Components whose matrices are stored in ``fmt``, in ``COMPONENTS`` order."""
        return [c for c, f in self.formats.items() if f == fmt]


def weights_by_format(counts: ParamCounts, formats: WeightFormats, group_size: int = 128) -> WeightsBreakdown:
    """Bytes of the weights stored as ``formats`` says (a spec's ``weights:`` section, or one ``--dtype``
    as ``WeightFormats(default=dtype)``), by format.

    Per component: a float format (fp32/bf16/fp16) stores all its parameters. A quantised format stores
    its weight matrices (Linear weights; for embedding, position_embedding and lm_head their tables,
    only when the component is named), with that format's scales (``weights_bytes``); its other
    parameters (biases, norms, sinks, SSM vectors, convolutions) stay in the base format: the default
    when that is a float format, else bf16. Components the mapping does not name take the default, with
    ``--dtype``'s meaning (a quantised default stores the layers' Linear weights only), so
    ``WeightFormats(default=X)`` gives exactly ``weights_bytes(counts, X)``.
    """
    from godprof.analytic.params import COMPONENTS

    if counts.quantizable and not counts.linear_by_component:
        raise ValueError("these ParamCounts carry no per-component Linear shapes (count them with count_params)")
    default = get_dtype(formats.default)
    base = default if default.is_float else get_dtype("bf16")
    elements: Counter[str] = Counter()  # parameters stored element by element (float formats)
    matrices: dict[str, Counter[tuple[int, int]]] = {}
    comp_formats: dict[str, str] = {}
    for comp in COMPONENTS:
        n = counts.by_component.get(comp, 0)
        if not n:
            continue
        named = formats.components.get(comp)
        fmt = get_dtype(named) if named else default
        comp_formats[comp] = fmt.name
        if fmt.is_float:
            elements[fmt.name] += n
            continue
        shapes = Counter(counts.linear_by_component.get(comp, {}))
        if named:
            shapes.update(counts.tables_by_component.get(comp, {}))
        in_matrices = sum(k * n_in * n_out for (n_in, n_out), k in shapes.items())
        if not in_matrices:
            comp_formats[comp] = base.name
        matrices.setdefault(fmt.name, Counter()).update(shapes)
        elements[base.name] += n - in_matrices
    by_format: dict[str, int] = {}
    for name in dict.fromkeys([*elements, *matrices]):
        dt = get_dtype(name)
        b = _nbytes(elements[name], dt) if elements[name] else 0
        shapes = matrices.get(name)
        if shapes and sum(shapes.values()):
            b += _matrices_bytes(shapes, dt, group_size)
        if b:
            by_format[name] = b
    return WeightsBreakdown(by_format, comp_formats, base.name)


# --------------------------------------------------------------------------- caches


def kv_elements_per_token(layer: Layer) -> int:
    """Cached values per token for one layer, as its mixer kind declares them (K and V, a latent and its
    rope key; 0 for recurrent layers)."""
    return layer.mixer.kv_elements_per_token()


def cached_tokens(layer: Layer, context: int) -> int:
    """Tokens a layer keeps at ``context``: all of them, or fewer where its kind caps them (a window)."""
    return layer.mixer.cached_tokens(context)


def kv_cache_bytes(spec: Spec, batch: int, context: int, dtype: DType) -> int:
    """KV cache for ``batch`` sequences of ``context`` tokens; sliding-window layers are capped at the window
    (a ring buffer of window slots). Attention layers only; SSM state is ``ssm_state_bytes``."""
    elements = sum(lay.mixer.kv_elements(context) for lay in spec.layers())
    return dtype.cache_nbytes(batch * elements)  # 4-bit caches with their scales (dtypes.CACHE_FORMATS)


def kv_read_bytes(spec: Spec, batch: int, context: int, dtype: DType) -> int:
    """KV cache bytes one decode step reads for ``batch`` sequences at ``context``: each layer's
    ``decode_read_elements`` (the whole cache, or what a sparse kind selects)."""
    elements = sum(lay.mixer.decode_read_elements(context) for lay in spec.layers())
    return dtype.cache_nbytes(batch * elements)


def kv_bytes_per_token(spec: Spec, dtype: DType) -> int:
    """KV bytes one more token adds while no sliding window is full (all attention layers)."""
    return dtype.cache_nbytes(sum(kv_elements_per_token(lay) for lay in spec.layers()))


def ssm_state_elements(layer: Layer) -> int:
    """Recurrent state of one layer per sequence, constant in context (``MixerKind.state_elements``)."""
    return layer.mixer.state_elements()


def ssm_state_bytes(spec: Spec, batch: int, dtype: DType) -> int:
    return dtype.cache_nbytes(batch * sum(ssm_state_elements(lay) for lay in spec.layers()))


# --------------------------------------------------------------------------- activations
#
# The inference model follows what ``godprof.build`` keeps alive during a prefill, tensor by tensor
# (``godprof measure --device cpu`` records the exact peak of live tensor bytes and the tests hold this
# model to it within 2%). Sizes are in bytes: ``a`` is the activation dtype's size; ``cv`` is 4 when an
# ``x.float()`` makes an fp32 copy (activations not in fp32) and 0 when it is a no-op; SSM scans and
# attention statistics are fp32 whatever the activation dtype.


def inference_activation_bytes(spec: Spec, w: Workload) -> int:
    """Peak activation bytes of one prefill of ``w.batch`` x ``w.seq`` tokens (a model of what the PyTorch
    build keeps alive; ``godprof measure --device cpu`` checks it against the exact live-tensor peak).

    Keeps: the rotary cos/sin tables (2 x context x rotary_dim per rotary size, cached for the whole
    context), the block input (held by the caller while the block runs), and the larger of the mixer's
    peak (its kind's ``prefill_peak_bytes``, its normed input included) and the FFN's beside the residual
    sum; at the end the final hidden states, the logits (every position with ``logits=all``, the last one
    with ``logits=last``) and, when activations are not fp32, the fp32 copy a sampler makes of them.
    Without flash attention the score matrices are PyTorch's math kernel's: two fp32 batch x heads x seq
    x seq tensors and an fp32 mask.
    Leaves out, because they never set the peak of the bundled examples or are not the build's: norm
    temporaries (at most two fp32 tokens x hidden tensors, while little else is alive), qk-norm's,
    learned position embeddings, the repeated KV heads and masks of sliding-window or chunked prefill,
    allocator caching and fragmentation (CUDA reserves more than it allocates), vendor kernels'
    workspaces (cuBLAS, flash attention).
    Where the build's own choices set a figure (Mamba-1's scan chunk, MoE's expert block, the SSD's
    reshaped matmul operands) the model mirrors them; a fused-kernel implementation holds less.
    """
    a = w.act_dtype.bits // 8
    h = spec.model.hidden_size
    t = w.batch * w.seq
    rope = {r for r in (spec.mixers[n].rope_table() for n in set(spec.layer_mixers)) if r is not None}
    tables = sum(2 * w.ctx * rd * a for rd, _ in rope)
    extra_norm = 1 if spec.model.parallel_residual and not spec.model.parallel_shared_norm else 0
    body = 0
    for mn, fn in set(zip(spec.layer_mixers, spec.layer_ffns, strict=True)):
        peak = spec.mixers[mn].prefill_peak_bytes(h, w.batch, w.seq, a, w.flash_attention)
        ffn = spec.ffns[fn]
        if ffn is not None:
            peak = max(peak, a * t * h * (1 + extra_norm) + ffn.prefill_peak_bytes(h, w.batch, w.seq, a))
        body = max(body, a * t * h + peak)
    n = spec.model.hc_mult
    if n > 1:  # hyper-connections (DeepSeek-V4): blocks over n streams, then hc_head's collapse
        body = 0
        for mn, fn in set(zip(spec.layer_mixers, spec.layer_ffns, strict=True)):
            mixer, ffn = spec.mixers[mn], spec.ffns[fn]
            m_peak = None if mixer.passthrough else mixer.prefill_peak_bytes(h, w.batch, w.seq, a, w.flash_attention)
            f_peak = None if ffn is None else ffn.prefill_peak_bytes(h, w.batch, w.seq, a)
            body = max(body, _hyper_block_bytes(n, h, t, a, m_peak, f_peak))
        body = max(body, a * t * n * h + 2 * FP32_BYTES * t * n * h + FP32_BYTES * t * h)  # hc_head
    rows = t if w.logits == "all" else w.batch
    cv = FP32_BYTES if a != FP32_BYTES else 0
    head = a * rows * h + rows * spec.model.vocab_size * (a + cv)
    return tables + max(body, head)


def _hyper_block_bytes(n: int, h: int, t: int, a: int, mixer_peak: int | None, ffn_peak: int | None) -> int:
    """Peak of one hyper-connected block (``godprof.build.model.Block._hyper``) over t tokens of n streams:
    per branch, its collapse (the fp32 flattened streams, RMS-normed; or the fp32 pre x streams product and
    its sum), the branch itself (its peak, its input and the fp32 post and comb weights beside it) and the
    expansion (branch input and output, post x output, comb^T x streams and their sum). The block input
    stays held by the caller, and the mixer's new streams while the FFN branch runs."""
    cv = FP32_BYTES if a != FP32_BYTES else 0
    streams = a * t * n * h
    weights = FP32_BYTES * t * (n + n * n)  # post and comb, fp32
    rms = cv * t * n * h + FP32_BYTES * (t * n * h + t)  # fp32 copy, its square (then the normed copy), mean
    mix = FP32_BYTES * t * ((2 + n) * n + n) + weights + FP32_BYTES * (t * n * h + t * h)  # pre x streams, sum
    collapse = max(rms, mix)
    expand = 2 * a * t * h + 3 * streams + (a * t * (n + n * n) if cv else 0)  # (post, comb cast when 16-bit)
    held, phases = streams, [streams]
    for branch, peak in enumerate((mixer_peak, ffn_peak)):
        if peak is None:
            continue
        kept = weights if branch else 0  # the mixer branch's post and comb, until the FFN's replace them
        phases += [held + kept + collapse, held + a * t * h + weights + peak, held + weights + expand]
        held += streams
    return max(phases)


def _layer_train_elements(spec: Spec, layer: Layer, seq: int, w: Workload) -> tuple[int, int]:
    """(activation-dtype elements, fp32 bytes) saved per token for backward by one layer, no recomputation.

    Follows Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models",
    sec. 4.1) without dropout, each kind saying what it keeps (``train_saved``): each norm's input and
    output, every matmul input, attention q/k/v and output (plus the softmax's fp32 log-sum-exp with flash
    attention, or the seq-long probability row per head without it, which selective recomputation
    drops), MLP hidden tensors, MoE copies per routed expert and fp32 router logits, and for SSM layers
    what the fused selective-scan kernels save.
    """
    h = spec.model.hidden_size
    el, fp32 = layer.mixer.train_saved(h, seq, w)
    if layer.ffn is not None:
        f_el, f_fp32 = layer.ffn.train_saved(h)
        el, fp32 = el + f_el, fp32 + f_fp32
    n = spec.model.hc_mult
    if n > 1:  # hyper-connections: per branch its n input streams, and their fp32 normed flattening
        branches = (0 if layer.mixer.passthrough else 1) + (1 if layer.ffn is not None else 0)
        el += branches * n * h
        fp32 += branches * FP32_BYTES * n * h
    return el, fp32


def train_activation_bytes(spec: Spec, w: Workload) -> int:
    """Activation bytes held for backward over one step of batch x seq tokens.

    recompute=none: every layer's saved tensors (``_layer_train_elements``). selective: the same minus the
    attention probabilities (only matters without flash attention). full: each layer keeps its input
    (tokens x hidden), plus one layer's full set while it is recomputed. Also the embedding output and
    the head: final-norm input/output and logits in the activation dtype, an fp32 copy and its fp32
    gradient (tokens x vocab x (a + 8) bytes).
    """
    a = w.act_dtype
    t = w.batch * w.seq
    h = spec.model.hidden_size
    per_layer = [_layer_train_elements(spec, lay, w.seq, w) for lay in spec.layers()]
    if w.recompute == "full":
        biggest = max(_nbytes(el, a) + fp for el, fp in per_layer)
        layers = _nbytes(t * h * len(per_layer), a) + t * biggest
    else:
        layers = sum(_nbytes(t * el, a) + t * fp for el, fp in per_layer)
    head = _nbytes(t * 3 * h, a) + _nbytes(t * spec.model.vocab_size, a) + t * spec.model.vocab_size * 8
    return layers + head


# --------------------------------------------------------------------------- training state


def gradient_bytes(counts: ParamCounts, w: Workload) -> int:
    """Gradients in the weights' dtype (bf16 for quantised formats: training does not run in int4)."""
    return _nbytes(counts.total, w.act_dtype)


def optimizer_bytes(counts: ParamCounts, w: Workload) -> int:
    """Optimizer state per parameter. Mixed precision (16-bit weights) adds an fp32 master copy (4 B).

    adamw: fp32 m and v (8 B). adamw8bit: 1-byte m and v with one fp32 absmax per 2048-value block per
    state (bitsandbytes' blockwise 8-bit Adam). sgd: fp32 momentum (4 B).
    """
    n = counts.total
    master = 0 if w.act_dtype.name == "fp32" else 4 * n
    if w.optimizer == "adamw":
        return master + 8 * n
    if w.optimizer == "adamw8bit":
        return master + 2 * n + 2 * 4 * -(-n // 2048)
    return master + 4 * n
