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
#
# The inference model follows what ``godprof.build`` keeps alive during a prefill, tensor by tensor
# (``godprof measure --device cpu`` records the exact peak of live tensor bytes and the tests hold this
# model to it within 2%). Sizes are in bytes: ``a`` is the activation dtype's size; ``cv`` is 4 when an
# ``x.float()`` makes an fp32 copy (activations not in fp32) and 0 when it is a no-op; SSM scans and
# attention statistics are fp32 whatever the activation dtype.

FP32_BYTES = 4
SCAN_ELEMENTS = 1 << 24  # godprof.build.ssm._SCAN_ELEMENTS: the Mamba-1 scan's chunk budget


def mamba1_scan_chunk(batch: int, d_inner: int, d_state: int) -> int:
    """Tokens per chunk of the build's Mamba-1 scan (``godprof.build.ssm.scan_chunk``): the largest power of
    two Q <= 256 with batch x Q x d_inner x d_state <= 2^24 fp32 elements (at least 1)."""
    q = max(1, min(256, SCAN_ELEMENTS // max(1, batch * d_inner * d_state)))
    return 1 << (q.bit_length() - 1)


def _rope_peak(t: int, heads: int, d: int, rd: int) -> int:
    """Elements besides the input while rotating ``heads`` heads of t tokens: the rotated half, x*cos,
    rotated*sin and their sum (4 x rd); with partial rotary, then the sum and the re-joined head (rd + d)."""
    return t * heads * max(4 * rd, d + rd if rd < d else 0)


def _math_sdpa_bytes(batch: int, seq: int, heads: int, dqk: int, kv_heads: int, dv: int, cv: int) -> int:
    """Temporaries of PyTorch's unfused ("math") SDPA at its peak, over the full seq x seq (what it computes
    on CPU, in fp32): fp32 copies of q, k and v (only when they are not fp32), one scaled q or k copy, the
    seq x seq causal mask and two batch x heads x seq x seq score tensors (the product and its masked sum)."""
    t = batch * seq
    copies = cv * t * (heads * dqk + kv_heads * (dqk + dv))
    return copies + FP32_BYTES * (t * heads * dqk + seq * seq + 2 * batch * heads * seq * seq)


def _mixer_peak_bytes(layer: Layer, h: int, batch: int, seq: int, a: int, flash: bool) -> int:
    """Bytes the mixer holds at its peak during a prefill of batch x seq tokens, its normed input included
    (the block input and the rotary tables are counted by the caller).

    Attention: q, k, v projections, then either rotary on q (the un-rotated q, k, v stay referenced until
    both are rotated) or on k, or the attention itself: rotated q, k, v, the output, and the larger of
    the kernel's fp32 log-sum-exp and o_proj's output (flash), or the math kernel's temporaries.
    MLA (prefill decompresses): the q projection, the kv latent (raw and normed), rotated q/k rope parts,
    kv_b_proj's output, the concatenated k and q, then the output (flash) or the math temporaries.
    Mamba-1: in_proj output, conv output, x_proj output (with Jamba's inner norms only the normed B and C
    outlive dt_proj), dt (fp32), A and h0 (fp32), the fp32 output y,
    plus the scan's chunk: decays and inputs [B, q, d_inner, d_state] fp32 and one product of q - 1 tokens
    per scan step (or, when forming the inputs, dt x u and the fp32 copies of u and B).
    Mamba-2: ``_ssd_peak_bytes``.
    """
    m = layer.mixer
    t = batch * seq
    if isinstance(m, Attention):
        H, K, D = m.num_heads, m.num_kv_heads, m.head_dim
        q, kv = t * H * D, t * K * D
        base = t * h + q + 2 * kv  # normed input, q, k, v
        rd = (m.rotary_dim or D) if m.rope else 0
        phases = []
        if rd:
            phases += [a * (base + _rope_peak(t, H, D, rd)), a * (base + q + _rope_peak(t, K, D, rd))]
        cv = FP32_BYTES if a != FP32_BYTES else 0
        if flash:
            attend = a * (base + q) + max(FP32_BYTES * batch * H * seq, a * t * h)
        else:
            attend = a * base + _math_sdpa_bytes(batch, seq, H, D, K, D, cv)
        return max([attend, *phases])
    if isinstance(m, MLA):
        H, qk, v, r, rp = m.num_heads, m.qk_head_dim, m.v_head_dim, m.kv_lora_rank, m.qk_rope_head_dim
        held = t * (h + H * qk + (r + rp) + r + H * rp + rp + H * (m.qk_nope_head_dim + v) + 2 * H * qk)
        cv = FP32_BYTES if a != FP32_BYTES else 0
        if flash:
            return a * (held + t * H * v) + max(FP32_BYTES * batch * H * seq, a * t * h)
        return a * held + _math_sdpa_bytes(batch, seq, H, qk, H, v, cv)
    if isinstance(m, Mamba1):
        di, n = m.d_inner, m.d_state
        cv = FP32_BYTES if a != FP32_BYTES else 0
        q = min(mamba1_scan_chunk(batch, di, n), seq)
        # normed input, in_proj and conv outputs, x_proj's output (only the normed B and C with inner norms)
        held = a * t * (h + 2 * di + di + (0 if m.inner_norms else m.dt_rank) + 2 * n)
        held += FP32_BYTES * (t * di + di * n + batch * di * n + t * di)  # dt, A, h0, y

        def scan(rows: int) -> int:  # one chunk of `rows` tokens: forming its inputs, or a scan step
            chunk = FP32_BYTES * batch * rows * di * n
            forming = 2 * chunk + (FP32_BYTES + cv) * batch * rows * di + cv * batch * rows * n
            return max(forming, 2 * chunk + FP32_BYTES * batch * (rows - 1) * di * n)

        peak = scan(q)
        if seq > q:  # later chunks also hold the state carried from the previous one
            peak = max(peak, scan(min(q, seq - q)) + FP32_BYTES * batch * di * n)
        return held + peak
    assert isinstance(m, Mamba2)
    return _ssd_peak_bytes(m, h, batch, seq, a)


def _ssd_peak_bytes(m: Mamba2, h: int, batch: int, seq: int, a: int) -> int:
    """Mamba-2 mixer at its peak: ``godprof.build.ssm.ssd_chunked`` step by step (each product one batched
    matmul on head-major copies, each tensor freed when it is dead).

    Held by the mixer: normed input, in_proj output, conv output (and the fp32 copies of x, B and C when
    activations are not fp32), fp32 dt and h0. Inside the SSD, in fp32, over L = c x Q token slots
    (chunk Q = min(chunk_size, seq), c = ceil(seq / Q), so the last chunk is padded): X = x dt
    [L, heads, head_dim] and y the same size, the compact B and C [L, groups, d_state], A dt and its
    cumulated sum [L, heads], the intra-chunk matrices M [L, heads, Q] (two while the segment sums are
    built), C B^T [L, groups, Q], the chunk states S [c, heads, head_dim, d_state] and S1 with the
    initial state (c + 1 of them), the (c + 1)^2 chunk-decay matrix per head, and the matmuls' reshaped
    operand copies. The largest of the steps below is the peak.
    """
    t = batch * seq
    di, H, P, G, N = m.d_inner, m.num_heads, m.head_dim, m.n_groups, m.d_state
    cv = FP32_BYTES if a != FP32_BYTES else 0
    Q = min(m.chunk_size, seq)
    c = -(-seq // Q)
    L = batch * c * Q  # token slots over the batch
    held = a * t * (h + 2 * di + 2 * G * N + H + m.conv_dim)
    held += FP32_BYTES * (t * H + H + batch * H * P * N) + cv * t * (di + 2 * G * N)
    X = Y = L * H * P
    LH, LGN, M = L * H, L * G * N, L * H * Q
    S = batch * c * H * P * N
    S1 = batch * (c + 1) * H * P * N
    fin = batch * H * P * N
    pad = 2 * LGN if L != t else 0  # padded B and C, until the compact copies are made
    steps = (
        2 * X + LH + pad,  # X to head-major
        X + LH + pad + 2 * LGN,  # compact B and C
        X + 2 * LH + 2 * LGN + 2 * M + Q * Q / FP32_BYTES,  # segment sums of A dt, with a Q x Q bool mask
        X + LH + 2 * LGN + M + L * G * Q,  # C B^T
        X + LH + 2 * LGN + M + Y,  # intra-chunk output
        X + 3 * LH + 2 * LGN + Y,  # decay to each chunk's end
        2 * X + LH + 2 * LGN + Y + S,  # chunk states (X decayed and its reshaped copy)
        Y + LH + LGN + 2 * S,  # states to [heads, c, head_dim, d_state]
        Y + LH + LGN + S + S1,  # with the initial state
        Y + LH + LGN + 2 * S1 + batch * H * (c + 1) ** 2,  # state passing
        Y + LH + LGN + S1 + fin + S,  # entering states, reshaped copy
        2 * Y + LH + LGN + fin + S,  # their contribution C h
        2 * Y + 2 * LH + fin,  # times the decay from the chunk start
        3 * Y + fin,  # y back to [L, heads, head_dim], then y + x D and the sum
    )
    return held + int(FP32_BYTES * max(steps))


def _ffn_peak_bytes(layer: Layer, h: int, batch: int, seq: int, a: int) -> int:
    """Bytes the FFN holds at its peak, its normed input included.

    Gated MLP: act(gate), up and their product (3 x intermediate), or the product and down_proj's output.
    Plain MLP: fc1's output and its activation, or the activation and fc2's output. MoE: fp32 router
    scores [T, E], top-k weights (fp32) and indices, the sort order and source tokens (int64), the gathered
    inputs and the expert outputs [T*k, h]; each expert call runs on at most ceil(T*k / E) rows (the
    build's block) with its hidden tensors; then the combined output and the shared experts' MLP.
    """
    f = layer.ffn
    t = batch * seq

    def mlp(rows: int, inter: int, gated: bool) -> int:
        if gated:
            return rows * max(3 * inter, inter + h)
        return rows * max(2 * inter, inter + h)

    if isinstance(f, MLP):
        return a * (t * h + mlp(t, f.intermediate_size, f.gated))
    assert isinstance(f, MoE)
    cv = FP32_BYTES if a != FP32_BYTES else 0
    k, E, inter = f.top_k, f.num_experts, f.expert_intermediate_size
    routing = FP32_BYTES * t * E + (FP32_BYTES + 8) * t * k + 2 * 8 * t * k
    block = -(-t * k // E)
    per_row = max(4 * inter, 3 * inter + h) if f.gated else max(2 * inter, inter + h)
    experts = a * (2 * t * k * h + block * per_row)
    shared = 0
    if f.num_shared_experts:
        s_inter = f.num_shared_experts * f.shared_intermediate_size
        shared = a * (t * h + mlp(t, s_inter, f.gated))
    combine = a * t * h + (FP32_BYTES + cv) * t * k + a * t * k * h  # weights gathered per row, in place
    return a * t * h + routing + max(experts, shared, combine)


def inference_activation_bytes(spec: Spec, w: Workload) -> int:
    """Peak activation bytes of one prefill of ``w.batch`` x ``w.seq`` tokens (a model of what the PyTorch
    build keeps alive; ``godprof measure --device cpu`` checks it against the exact live-tensor peak).

    Keeps: the rotary cos/sin tables (2 x context x rotary_dim per rotary size, cached for the whole
    context), the block input (held by the caller while the block runs), and the larger of the mixer's
    peak (``_mixer_peak_bytes``, its normed input included) and the FFN's (``_ffn_peak_bytes``) beside
    the residual sum; at the end the final hidden states, the logits (every position with
    ``logits=all``, the last one with ``logits=last``) and, when activations are not fp32, the fp32 copy a
    sampler makes of them. Without flash attention the score matrices are PyTorch's math kernel's:
    two fp32 batch x heads x seq x seq tensors and an fp32 mask.
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
    rope = set()
    for lay in spec.layers():
        m = lay.mixer
        if isinstance(m, Attention) and m.rope:
            rope.add((m.rotary_dim or m.head_dim, m.rope_theta))
        elif isinstance(m, MLA):
            rope.add((m.qk_rope_head_dim, m.rope_theta))
    tables = sum(2 * w.ctx * rd * a for rd, _ in rope)
    extra_norm = 1 if spec.model.parallel_residual and not spec.model.parallel_shared_norm else 0
    body = 0
    for lay in spec.layers():
        peak = _mixer_peak_bytes(lay, h, w.batch, w.seq, a, w.flash_attention)
        if lay.ffn is not None:
            peak = max(peak, a * t * h * (1 + extra_norm) + _ffn_peak_bytes(lay, h, w.batch, w.seq, a))
        body = max(body, a * t * h + peak)
    rows = t if w.logits == "all" else w.batch
    cv = FP32_BYTES if a != FP32_BYTES else 0
    head = a * rows * h + rows * spec.model.vocab_size * (a + cv)
    return tables + max(body, head)


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
