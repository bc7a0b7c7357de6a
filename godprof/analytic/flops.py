"""FLOPs, counting a multiply-add as 2 FLOPs (as torch's FlopCounterMode does; fvcore counts 1).

``forward``: matmul FLOPs of one forward pass over batch x seq tokens: every Linear (lm_head and routers
included; only the top-k routed experts a token uses) and the attention score (QK^T) and value (PV)
products. Attention convention: ``causal`` counts only the key positions j <= i (and j > i - window)
that a causal kernel computes; ``full`` counts the seq x seq products an unmasked implementation
computes, the figure FlopCounterMode reports for ``scaled_dot_product_attention`` (a sliding window
does not shrink it). Left out of ``forward`` and reported apart: SSM scans (``ssm_scan``) and
depthwise convolutions (``conv``). Left out entirely: norms, activations, softmax, rotary, residual adds.
"""

from __future__ import annotations

from godprof.analytic.params import ParamCounts
from godprof.analytic.workload import Workload
from godprof.spec import MLA, Attention, Layer, Mamba1, Mamba2, Spec


def attended_pairs(seq: int, window: int | None, convention: str) -> int:
    """Query-key pairs in one sequence of ``seq`` tokens.

    causal: sum over i = 1..seq of min(i, window) (= seq(seq+1)/2 with no window); full: seq x seq.
    """
    if convention == "full":
        return seq * seq
    if window is None or window >= seq:
        return seq * (seq + 1) // 2
    # the first `window` queries see 1..window keys, the remaining ones see `window` each
    return window * (window + 1) // 2 + (seq - window) * window


def _attention_dims(layer: Layer, decode: bool) -> tuple[int, int, int, int | None] | None:
    """(heads, qk dim, v dim, window) of an attention layer, None for SSM layers.

    MLA prefill decompresses K and V (qk = nope + rope, v = v_head_dim); MLA decode attends in the
    latent space with the up-projections absorbed (qk = kv_lora_rank + rope, v = kv_lora_rank), whose
    absorbed matmuls have the same multiply-adds as kv_b_proj and are counted with the Linear weights.
    """
    m = layer.mixer
    if isinstance(m, Attention):
        return m.num_heads, m.head_dim, m.head_dim, m.sliding_window
    if isinstance(m, MLA):
        if decode:
            return m.num_heads, m.kv_lora_rank + m.qk_rope_head_dim, m.kv_lora_rank, None
        return m.num_heads, m.qk_head_dim, m.v_head_dim, None
    return None


def attention_flops(spec: Spec, batch: int, seq: int, convention: str) -> int:
    """QK^T and PV FLOPs of a forward over batch x seq tokens: 2 x batch x heads x pairs x (d_qk + d_v)."""
    total = 0
    for layer in spec.layers():
        dims = _attention_dims(layer, decode=False)
        if dims is not None:
            heads, dqk, dv, window = dims
            total += 2 * batch * heads * attended_pairs(seq, window, convention) * (dqk + dv)
    return total


def forward_flops(spec: Spec, counts: ParamCounts, w: Workload) -> int:
    """Matmul FLOPs of one forward over ``w.batch`` x ``w.seq`` tokens (see the module docstring).

    With ``logits=last`` the lm_head runs on one position per sequence.
    """
    tokens = w.batch * w.seq
    linear = 2 * counts.matmul_per_token * tokens
    if w.logits == "last":
        linear -= 2 * spec.model.vocab_size * spec.model.hidden_size * (tokens - w.batch)
    return linear + attention_flops(spec, w.batch, w.seq, w.attention_flops)


def decode_flops_per_token(spec: Spec, counts: ParamCounts, context: int) -> int:
    """Matmul FLOPs to decode one token whose attention sees ``context`` keys (itself included),
    capped by sliding windows: 2 x matmul weights + 2 x heads x keys x (d_qk + d_v) per attention layer."""
    total = 2 * counts.matmul_per_token
    for layer in spec.layers():
        dims = _attention_dims(layer, decode=True)
        if dims is not None:
            heads, dqk, dv, window = dims
            keys = context if window is None else min(context, window)
            total += 2 * heads * keys * (dqk + dv)
    return total


def train_flops_per_token(spec: Spec, counts: ParamCounts, w: Workload) -> int:
    """Training matmul FLOPs per token at sequence length ``w.seq``, averaged over the sequence.

    Forward + backward = 3 x forward (backward computes input and weight gradients, each a forward's
    worth: Kaplan et al. 2020, the "6N" rule with attention added). Recomputation adds: full, one more
    forward; selective, the attention QK^T and PV products again (Korthikanti et al. 2022). Flash
    attention's own recomputation inside its backward is not counted (MFU convention).
    """
    one = Workload(batch=1, seq=w.seq, attention_flops=w.attention_flops)
    fwd = forward_flops(spec, counts, one)
    extra = 0
    if w.recompute == "full":
        extra = fwd
    elif w.recompute == "selective":
        extra = attention_flops(spec, 1, w.seq, w.attention_flops)
    return (3 * fwd + extra) // w.seq


def mamba2_scan_flops(m: Mamba2, batch: int, seq: int) -> int:
    """FLOPs of one Mamba-2 SSD scan over batch x seq tokens, in its chunked form (Dao & Gu 2024, sec. 7;
    state-spaces/mamba ``ssd_minimal``, which ``godprof.build.ssm.ssd_chunked`` follows).

    Chunk Q = min(chunk_size, seq); the sequence is cut into c = ceil(seq / Q) chunks and the last one is
    computed whole (L = c x Q token slots, as the chunked kernels do). Per token slot: C B^T within its
    chunk (2 x groups x Q x d_state), that matrix times x (2 x heads x Q x head_dim), the chunk's end
    state B^T x and the entering state's contribution C h (2 x 2 x heads x head_dim x d_state). Per
    sequence: passing the states between chunks, one product of the (c + 1) x (c + 1) lower-triangular
    chunk-decay matrix with the c + 1 states (the initial one included) per head, computed as a dense
    matmul: 2 x heads x (c + 1)^2 x head_dim x d_state. That last term is O(c^2): at real chunk sizes
    it is small (Q = 256, seq = 4096: under 2% of the scan) but at Q = 8 it is a sizeable part of the
    forward. Left out: the elementwise decay cumsum / exp / masking.
    """
    q = min(m.chunk_size, seq)
    c = -(-seq // q)
    per_slot = (
        2 * (m.n_groups * q * m.d_state + m.num_heads * q * m.head_dim) + 4 * m.num_heads * m.head_dim * m.d_state
    )
    passing = 2 * m.num_heads * (c + 1) ** 2 * m.head_dim * m.d_state
    return batch * (per_slot * c * q + passing)


def ssm_scan_flops(spec: Spec, batch: int, seq: int) -> int:
    """FLOPs of the SSM scans in a forward over batch x seq tokens (not in ``forward``).

    Mamba-1 selective scan, per token and (channel, state) pair: exp(dt*A) (2), dt*B*x (2),
    h = dA*h + dBx (2), y += C*h (2): 8 x d_inner x d_state. Mamba-2 SSD: ``mamba2_scan_flops`` (the
    chunked form, inter-chunk state passing included).
    """
    total = 0
    for layer in spec.layers():
        m = layer.mixer
        if isinstance(m, Mamba1):
            total += 8 * m.d_inner * m.d_state * batch * seq
        elif isinstance(m, Mamba2):
            total += mamba2_scan_flops(m, batch, seq)
    return total


def ssm_decode_flops_per_token(spec: Spec) -> int:
    """SSM state update per decoded token: 8 x (state elements), the Mamba-1 count per (channel, state)."""
    total = 0
    for layer in spec.layers():
        m = layer.mixer
        if isinstance(m, Mamba1):
            total += 8 * m.d_inner * m.d_state
        elif isinstance(m, Mamba2):
            total += 8 * m.num_heads * m.head_dim * m.d_state
    return total


def conv_flops(spec: Spec, batch: int, seq: int) -> int:
    """Depthwise causal conv1d in SSM layers: 2 x channels x d_conv per token (not in ``forward``)."""
    per_token = 0
    for layer in spec.layers():
        m = layer.mixer
        if isinstance(m, Mamba1):
            per_token += 2 * m.d_inner * m.d_conv
        elif isinstance(m, Mamba2):
            per_token += 2 * m.conv_dim * m.d_conv
    return per_token * batch * seq
