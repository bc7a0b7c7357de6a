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
from godprof.kinds.base import MixerKind, attended_pairs
from godprof.spec import Spec

__all__ = ["attended_pairs", "attention_flops", "decode_flops_per_token", "forward_flops", "train_flops_per_token"]


def _mixer_counts(spec: Spec) -> list[tuple[MixerKind, int]]:
    """(mixer kind, number of layers using it) for each distinct mixer entry."""
    n: dict[str, int] = {}
    for name in spec.layer_mixers:
        n[name] = n.get(name, 0) + 1
    return [(spec.mixers[name], k) for name, k in n.items()]


def attention_flops(spec: Spec, batch: int, seq: int, convention: str) -> int:
    """Score and value products of a forward over batch x seq tokens, per mixer kind
    (``MixerKind.attention_flops``: 2 x batch x heads x pairs x (d_qk + d_v) for softmax attention)."""
    return sum(k * m.attention_flops(batch, seq, convention) for m, k in _mixer_counts(spec))


def residual_mix_flops_per_token(spec: Spec) -> int:
    """Hyper-connections (``model.hc_mult`` = n > 1, DeepSeek-V4): per residual branch the n x n comb
    matrix mixes the n streams of h features (transformers' ``torch.matmul(comb^T, streams)``: 2 n^2 h
    FLOPs per token). Their weight products (``fn``, ``hc_fn``) are in ``matmul_per_token``; the
    elementwise collapse (pre), expand (post), Sinkhorn iterations and norms are left out."""
    n = spec.model.hc_mult
    if n <= 1:
        return 0
    branches = sum((0 if lay.mixer.passthrough else 1) + (1 if lay.ffn is not None else 0) for lay in spec.layers())
    return 2 * n * n * spec.model.hidden_size * branches


def forward_flops(spec: Spec, counts: ParamCounts, w: Workload) -> int:
    """Matmul FLOPs of one forward over ``w.batch`` x ``w.seq`` tokens (see the module docstring).

    With ``logits=last`` the lm_head runs on one position per sequence.
    """
    tokens = w.batch * w.seq
    linear = 2 * counts.matmul_per_token * tokens
    if w.logits == "last":
        linear -= 2 * spec.model.vocab_size * spec.model.hidden_size * (tokens - w.batch)
    mix = residual_mix_flops_per_token(spec) * tokens
    return linear + attention_flops(spec, w.batch, w.seq, w.attention_flops) + mix


def decode_flops_per_token(spec: Spec, counts: ParamCounts, context: int) -> int:
    """Matmul FLOPs to decode one token whose attention sees ``context`` keys (itself included), capped
    where a kind caps them (sliding windows): 2 x matmul weights + each mixer's decode attention
    (``MixerKind.decode_attention_flops``: a latent attention attends in its latent space, its absorbed
    up-projections counted with the Linear weights)."""
    attn = sum(k * m.decode_attention_flops(context) for m, k in _mixer_counts(spec))
    return 2 * counts.matmul_per_token + attn + residual_mix_flops_per_token(spec)


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


def ssm_scan_flops(spec: Spec, batch: int, seq: int) -> int:
    """FLOPs of the recurrent scans in a forward over batch x seq tokens (not in ``forward``), as each
    kind counts them (``MixerKind.scan_flops``: Mamba-1's 8 x d_inner x d_state per token, Mamba-2's
    chunked SSD with its inter-chunk state passing)."""
    return sum(k * m.scan_flops(batch, seq) for m, k in _mixer_counts(spec))


def ssm_decode_flops_per_token(spec: Spec) -> int:
    """Recurrent state updates per decoded token (``MixerKind.scan_decode_flops``)."""
    return sum(k * m.scan_decode_flops() for m, k in _mixer_counts(spec))


def conv_flops(spec: Spec, batch: int, seq: int) -> int:
    """Depthwise causal convolutions (SSM layers: 2 x channels x d_conv per token; not in ``forward``)."""
    return sum(k * m.conv_flops_per_token() for m, k in _mixer_counts(spec)) * batch * seq
