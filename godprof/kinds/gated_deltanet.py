"""``type: gated_deltanet``: Gated DeltaNet linear attention (Yang, Kautz & Hatamizadeh 2024), as in
Qwen3-Next's linear-attention layers.

Structure (transformers' ``Qwen3NextGatedDeltaNet``, models/qwen3_next/modeling_qwen3_next.py):
``in_proj_qkvz`` (hidden -> 2 x key heads x d_k + 2 x value heads x d_v: q, k, v and the output gate z),
``in_proj_ba`` (hidden -> 2 x value heads: beta and the decay input a), a causal depthwise conv1d without
bias over [q, k, v] followed by SiLU, ``dt_bias`` and ``A_log`` per value head, the gated RMSNorm
norm(o) x SiLU(z) over each value head (one weight of d_v shared by the heads) and ``out_proj``. q and k
are L2-normalised per head and q scaled by d_k^-0.5; each key head serves value heads / key heads value
heads. Per token t and value head, with g_t = -exp(A_log) softplus(a_t + dt_bias) and beta_t = sigmoid(b_t),
the state S (d_k x d_v) follows the gated delta rule

    S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,    o_t = S_t^T q_t

(flash-linear-attention's naive reference ``fla/ops/gated_delta_rule/naive.py``; transformers'
``torch_recurrent_gated_delta_rule``). Prefill runs its chunked (WY / UT-transform) form,
``torch_chunk_gated_delta_rule`` with chunks of 64. The cache per sequence is the conv window
(conv channels x d_conv) and the state (value heads x d_k x d_v), constant in context.

Parameters are counted under the ``attention`` component (linear attention; its gated norm's weight
under ``norms``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.base import FP32_BYTES, MixerKind, Part

if TYPE_CHECKING:
    from godprof.analytic.workload import Workload


@dataclass(frozen=True)
class GatedDeltaNet(MixerKind):
    """Gated DeltaNet (gated delta rule linear attention)."""

    num_key_heads: int = 16
    num_value_heads: int = 32
    key_head_dim: int = 128
    value_head_dim: int = 128
    d_conv: int = 4
    chunk_size: int = 64

    type: ClassVar[str] = "gated_deltanet"
    category: ClassVar[str] = "linear"
    label: ClassVar[str] = "gdn"
    efficiency_class: ClassVar[str] = "scan"
    build: ClassVar[str] = "godprof.build.kinds.gated_deltanet:GatedDeltaNetMixer"
    keys: ClassVar[frozenset[str]] = frozenset({
        "type", "num_key_heads", "num_value_heads", "key_head_dim", "value_head_dim", "d_conv", "chunk_size",
    })  # fmt: skip

    @property
    def key_dim(self) -> int:
        return self.num_key_heads * self.key_head_dim

    @property
    def value_dim(self) -> int:
        return self.num_value_heads * self.value_head_dim

    @property
    def conv_dim(self) -> int:
        """Channels of the conv (and of its cached window): [q, k, v]."""
        return 2 * self.key_dim + self.value_dim

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> GatedDeltaNet:
        kh = c.int_(d, "num_key_heads", p, 16)
        vh = c.int_(d, "num_value_heads", p, 32)
        if kh and vh % kh:
            c.err((*p, "num_value_heads"), f"num_value_heads ({vh}) must be a multiple of num_key_heads ({kh})")
        return cls(
            num_key_heads=kh,
            num_value_heads=vh,
            key_head_dim=c.int_(d, "key_head_dim", p, 128),
            value_head_dim=c.int_(d, "value_head_dim", p, 128),
            d_conv=c.int_(d, "d_conv", p, 4),
            chunk_size=c.int_(d, "chunk_size", p, 64),
        )

    # -- parameters

    def params(self, hidden: int) -> Part:
        """in_proj_qkvz, in_proj_ba, conv1d (no bias) over [q, k, v], dt_bias and A_log per value head,
        out_proj (attention); the gated RMSNorm's d_v weight (norms)."""
        p = Part()
        p.linear("attention", hidden, 2 * self.key_dim + 2 * self.value_dim, False)  # [q, k, v, z]
        p.linear("attention", hidden, 2 * self.num_value_heads, False)  # [b, a]
        p.add("attention", self.conv_dim * self.d_conv)
        p.add("attention", 2 * self.num_value_heads)  # dt_bias, A_log
        p.add("norms", self.value_head_dim)
        p.linear("attention", self.value_dim, hidden, False)
        return p

    # -- state

    def state_elements(self) -> int:
        """Conv window (conv channels x d_conv) + the delta-rule state (value heads x d_k x d_v)."""
        return self.conv_dim * self.d_conv + self.num_value_heads * self.key_head_dim * self.value_head_dim

    def tp_problem(self, tp: int) -> str | None:
        return (
            f"{self.num_key_heads} linear-attention key heads do not split {tp} ways"
            if self.num_key_heads % tp
            else None
        )

    # -- FLOPs

    def _chunks(self, seq: int) -> tuple[int, int]:
        """(chunk Q, number of chunks c): Q = min(chunk_size, seq), the last chunk computed whole."""
        q = min(self.chunk_size, seq)
        return q, -(-seq // q)

    def scan_matmul_flops(self, batch: int, seq: int) -> int:
        """The matrix products of the chunked gated delta rule (transformers' ``torch_chunk_gated_delta_rule``,
        fla's ``chunk_gated_delta_rule`` reference), which the build computes as batched matmuls, per value
        head and token slot (L = c x Q slots, the last chunk padded): within its chunk (beta k) k^T and q k^T
        (2 x 2 x Q x d_k), the intra-chunk attention times the corrected values (2 x Q x d_v); against the
        state entering the chunk, the decayed keys' read (k_cumdecay S), q S and the state update k^T v_new
        (3 x 2 x d_k x d_v). Left out: decays, masks, L2 norms, the betas (elementwise)."""
        q, c = self._chunks(seq)
        dk, dv = self.key_head_dim, self.value_head_dim
        per_slot = 4 * q * dk + 2 * q * dv + 6 * dk * dv
        return batch * self.num_value_heads * c * q * per_slot

    def scan_flops(self, batch: int, seq: int) -> int:
        """``scan_matmul_flops`` plus the UT transform: per chunk and value head, the two unit lower-triangular
        solves of the Q x Q system (for the corrected values and the decayed keys), Q(Q - 1) / 2 multiply-adds
        per right-hand-side column: Q(Q - 1)(d_k + d_v) FLOPs (``torch.linalg.solve_triangular``, which
        FlopCounterMode does not count)."""
        q, c = self._chunks(seq)
        solves = q * (q - 1) * (self.key_head_dim + self.value_head_dim)
        return self.scan_matmul_flops(batch, seq) + batch * self.num_value_heads * c * solves

    def scan_decode_flops(self) -> int:
        """One recurrent step per value head: decay the state (d_k x d_v), read k^T S (2 d_k d_v), the
        rank-1 update k (beta (v - k^T S))^T added (2 d_k d_v), the output q^T S (2 d_k d_v): 7 d_k d_v."""
        return 7 * self.num_value_heads * self.key_head_dim * self.value_head_dim

    def conv_flops_per_token(self) -> int:
        return 2 * self.conv_dim * self.d_conv

    # -- activations

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """The build's prefill (``godprof.build.kinds.gated_deltanet``) at its largest step.

        Held throughout (activation dtype): the normed input, the in_proj outputs (qkvz, ba) and the
        conv's SiLU output over [q, k, v]. Held by the mixer in fp32: q and k normalised and repeated to
        the value heads, v (a copy only when activations are not fp32), g and beta per value head, the
        initial and the running state. Inside the chunked rule, over N = value heads x L token slots
        (L = c x Q, Q = min(chunk_size, seq), c = ceil(seq / Q)), in fp32, the steps of
        ``chunk_gated_delta_rule``: (1) beta k, beta v, the decay cumsum G, the pairwise decays and the two
        Q x Q matrices (UT system, intra-chunk attention); (2) the first solve's corrected values beside
        them, the decays freed; (3) the decayed keys' solve; (4) the decayed q and k, the output beside the
        solved values and keys and the attention. When the last chunk is padded, padded copies of q and k
        join steps 1-3. Leaves out the sequential loop's per-chunk temporaries and the gated norm's (each
        at most a few tensors the size of the output: below these steps at Q >= 4).
        """
        t = batch * seq
        Hv, dk, dv = self.num_value_heads, self.key_head_dim, self.value_head_dim
        q_, c = self._chunks(seq)
        n = batch * Hv * c * q_  # value-head token slots
        held = a * t * (hidden + 2 * self.key_dim + 2 * self.value_dim + 2 * Hv + self.conv_dim)
        caller = 2 * t * Hv * dk + 2 * t * Hv + 2 * batch * Hv * dk * dv
        if a != FP32_BYTES:
            caller += t * self.value_dim  # fp32 copy of v
        pad = 2 * n * dk if n != t * Hv else 0
        steps = (
            n * (dk + dv + 1 + 3 * q_) + pad,
            n * (dk + 2 * dv + 1 + 2 * q_) + pad,
            n * (2 * dk + dv + 1 + 2 * q_) + pad,
            n * (3 * dk + 2 * dv + 1 + q_),
        )
        return held + FP32_BYTES * (caller + max(steps))

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """What fla's fused chunk kernels save per token: the in_proj outputs, the conv output, the rule's
        output and the gated output (plus the norm's input and output); fp32 g and beta per value head."""
        return (
            2 * hidden
            + 2 * self.key_dim
            + 2 * self.value_dim
            + 2 * self.num_value_heads
            + self.conv_dim
            + 2 * self.value_dim,
            FP32_BYTES * 2 * self.num_value_heads,
        )
