"""Memory: weights, KV cache, SSM state, activations, gradients and optimizer state, in bytes.

Exact (the built model allocates these bytes): weights in fp32/bf16/fp16, the KV cache and the SSM
state. Weight formats int8/int4/fp8 are exact for the storage they describe (see ``godprof.dtypes``).
Activations are a model of the peak, not an allocation count: each function says what it keeps.
"""

from __future__ import annotations

from godprof.analytic.params import ParamCounts
from godprof.analytic.workload import Workload
from godprof.dtypes import FP8_TENSOR_SCALE_BYTES, SCALE_BYTES, DType, get_dtype
from godprof.spec import MLA, MLP, Attention, Layer, Mamba1, Mamba2, MoE, Spec


def _nbytes(elements: int, dtype: DType) -> int:
    return dtype.nbytes(elements)


# --------------------------------------------------------------------------- weights


def weights_bytes(counts: ParamCounts, dtype: DType, group_size: int = 128) -> int:
    """Bytes of all weights stored in ``dtype``.

    fp32/bf16/fp16: every parameter in that format. int8/int4: the Linear weight matrices of the layers
    in that format plus one fp16 scale per ``group_size`` inputs per output row; embeddings, lm_head,
    norms, biases and SSM vectors stay in bf16 (as GPTQ/AWQ checkpoints keep them). fp8: the same split,
    with one fp32 scale per quantised tensor instead of group scales.
    """
    if dtype.name in ("fp32", "bf16", "fp16"):
        return _nbytes(counts.total, dtype)
    rest = _nbytes(counts.total - counts.quantizable, get_dtype("bf16"))
    body = _nbytes(counts.quantizable, dtype)
    if dtype.float8:
        return rest + body + counts.linear_tensors * FP8_TENSOR_SCALE_BYTES
    scales = sum(n * n_out * -(-n_in // group_size) for (n_in, n_out), n in counts.linear_shapes.items())
    return rest + body + scales * SCALE_BYTES


# --------------------------------------------------------------------------- caches


def kv_elements_per_token(layer: Layer) -> int:
    """Cached values per token for one layer: K and V for attention (num_kv_heads x head_dim each); MLA's
    compressed latent plus its shared rope key (kv_lora_rank + qk_rope_head_dim). 0 for SSM layers."""
    m = layer.mixer
    if isinstance(m, Attention):
        return 2 * m.num_kv_heads * m.head_dim
    if isinstance(m, MLA):
        return m.kv_lora_rank + m.qk_rope_head_dim
    return 0


def cached_tokens(layer: Layer, context: int) -> int:
    """Tokens a layer keeps at ``context``: all of them, or at most the sliding window."""
    m = layer.mixer
    if isinstance(m, Attention) and m.sliding_window is not None:
        return min(context, m.sliding_window)
    return context


def kv_cache_bytes(spec: Spec, batch: int, context: int, dtype: DType) -> int:
    """KV cache for ``batch`` sequences of ``context`` tokens; sliding-window layers are capped at the window
    (a ring buffer of window slots). Attention layers only; SSM state is ``ssm_state_bytes``."""
    elements = sum(kv_elements_per_token(lay) * cached_tokens(lay, context) for lay in spec.layers())
    return _nbytes(batch * elements, dtype)


def kv_bytes_per_token(spec: Spec, dtype: DType) -> int:
    """KV bytes one more token adds while no sliding window is full (all attention layers)."""
    return _nbytes(sum(kv_elements_per_token(lay) for lay in spec.layers()), dtype)


def ssm_state_elements(layer: Layer) -> int:
    """Recurrent state of one SSM layer per sequence: the conv window (channels x d_conv, as cached by
    state-spaces/mamba and transformers) plus the SSM state (Mamba-1: d_inner x d_state; Mamba-2:
    heads x head_dim x d_state). Constant in context."""
    m = layer.mixer
    if isinstance(m, Mamba1):
        return m.d_inner * m.d_conv + m.d_inner * m.d_state
    if isinstance(m, Mamba2):
        return m.conv_dim * m.d_conv + m.num_heads * m.head_dim * m.d_state
    return 0


def ssm_state_bytes(spec: Spec, batch: int, dtype: DType) -> int:
    return _nbytes(batch * sum(ssm_state_elements(lay) for lay in spec.layers()), dtype)


# --------------------------------------------------------------------------- activations


def _layer_inference_elements(spec: Spec, layer: Layer, batch: int, seq: int, flash: bool) -> int:
    """Transient elements alive inside one layer during a prefill of batch x seq tokens: the normed input,
    the mixer's projections and output, or the FFN's hidden tensors, whichever is larger (they are not
    alive together). Without flash attention the batch x heads x seq x seq score matrix is added."""
    h = spec.model.hidden_size
    t = batch * seq
    m = layer.mixer
    if isinstance(m, Attention):
        mix = t * (h + (m.num_heads + 2 * m.num_kv_heads) * m.head_dim + m.num_heads * m.head_dim)
        if not flash:
            mix += batch * m.num_heads * seq * seq
    elif isinstance(m, MLA):
        latent = (m.q_lora_rank or 0) + m.kv_lora_rank + m.qk_rope_head_dim
        heads = m.num_heads * (2 * m.qk_head_dim + m.v_head_dim + m.v_head_dim)  # q, k, v, out
        mix = t * (h + latent + heads)
        if not flash:
            mix += batch * m.num_heads * seq * seq
    elif isinstance(m, Mamba1):
        # in_proj (x, z), conv out, x_proj (dt, B, C), dt, y
        mix = t * (h + 2 * m.d_inner + m.d_inner + m.dt_rank + 2 * m.d_state + 2 * m.d_inner)
    else:
        assert isinstance(m, Mamba2)
        q = min(m.chunk_size, seq)
        mix = t * (h + 2 * m.d_inner + 2 * m.n_groups * m.d_state + m.num_heads + m.conv_dim + m.d_inner)
        mix += batch * m.num_heads * seq * q  # intra-chunk (C B^T o L) matrices, one Q x Q block per chunk
    f = layer.ffn
    ffn = 0
    if isinstance(f, MLP):
        ffn = t * (h + (3 if f.gated else 2) * f.intermediate_size)
    elif isinstance(f, MoE):
        per_copy = h + (3 if f.gated else 2) * f.expert_intermediate_size + h
        ffn = t * (h + f.num_experts + f.top_k * per_copy)
        if f.num_shared_experts:
            ffn += t * (3 if f.gated else 2) * f.shared_intermediate_size * f.num_shared_experts
    return max(mix, ffn)


def inference_activation_bytes(spec: Spec, w: Workload) -> int:
    """Peak activation bytes of one prefill of ``w.batch`` x ``w.seq`` tokens (model, not allocation count).

    Keeps: the residual stream and the layer input (2 x tokens x hidden), the largest per-layer transient
    (``_layer_inference_elements``), or at the end the logits: tokens x vocab in the activation dtype plus
    an fp32 copy, for every position (``logits=all``) or only the last one (``logits=last``).
    Leaves out: allocator fragmentation, workspace of vendor kernels, and the scan workspace of the
    pure-PyTorch SSM reference in ``godprof.build`` (a few fp32 chunk-sized temporaries: Mamba-1 up to
    ~3 x 64 MiB, Mamba-2 about three [B, H, L, Q] tensors where one is counted here).
    """
    a = w.act_dtype
    h = spec.model.hidden_size
    t = w.batch * w.seq
    layer_peak = max(_layer_inference_elements(spec, lay, w.batch, w.seq, w.flash_attention) for lay in spec.layers())
    body = _nbytes(2 * t * h + layer_peak, a)
    logit_rows = t if w.logits == "all" else w.batch
    head = _nbytes(t * h, a) + _nbytes(logit_rows * spec.model.vocab_size, a) + logit_rows * spec.model.vocab_size * 4
    return max(body, head)


def _layer_train_elements(spec: Spec, layer: Layer, seq: int, w: Workload) -> tuple[int, int]:
    """(activation-dtype elements, fp32 bytes) saved per token for backward by one layer, no recomputation.

    Follows Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models",
    sec. 4.1) without dropout: each norm's input and output, every matmul input, the attention q/k/v and
    output (plus the softmax's fp32 log-sum-exp with flash attention, or the seq-long probability row per
    head without it, which selective recomputation drops), MLP hidden tensors (gate, up, act(gate), their
    product), MoE copies per routed expert and fp32 router logits. SSM layers keep what the fused
    selective-scan kernels save (in_proj output, conv output, x_proj output, dt, y, gated y).
    """
    h = spec.model.hidden_size
    m = layer.mixer
    el, fp32 = 2 * h, 0  # mixer norm input and output
    if isinstance(m, Attention):
        el += (m.num_heads + 2 * m.num_kv_heads) * m.head_dim + m.num_heads * m.head_dim
        if w.flash_attention:
            fp32 += 4 * m.num_heads
        elif w.recompute == "none":
            el += m.num_heads * seq
    elif isinstance(m, MLA):
        el += (m.q_lora_rank or 0) * 2 + m.kv_lora_rank * 2 + m.qk_rope_head_dim
        el += m.num_heads * (2 * m.qk_head_dim + 2 * m.v_head_dim)
        if w.flash_attention:
            fp32 += 4 * m.num_heads
        elif w.recompute == "none":
            el += m.num_heads * seq
    elif isinstance(m, Mamba1):
        el += 2 * m.d_inner + m.d_inner + m.dt_rank + 2 * m.d_state + m.d_inner + 2 * m.d_inner
    elif isinstance(m, Mamba2):
        el += 2 * m.d_inner + 2 * m.n_groups * m.d_state + m.num_heads + m.conv_dim + 2 * m.d_inner
    f = layer.ffn
    if f is not None:
        el += 2 * h  # ffn norm input and output
    if isinstance(f, MLP):
        el += (4 if f.gated else 2) * f.intermediate_size
    elif isinstance(f, MoE):
        el += f.top_k * (h + (4 if f.gated else 2) * f.expert_intermediate_size)
        fp32 += 4 * f.num_experts
        if f.num_shared_experts:
            el += f.num_shared_experts * (4 if f.gated else 2) * f.shared_intermediate_size
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
