"""``type: kda``: Kimi Delta Attention (Moonshot AI, Kimi Linear, 2025), a gated delta rule with a
channel-wise forget gate.

Structure (transformers' ``KimiDeltaAttention``, models/kimi_linear; flash-linear-attention's
``fla/ops/kda/naive.py`` is the readable definition of the recurrence). With D = heads x head_dim:

- q_proj, k_proj, v_proj: hidden -> D each, no bias; one causal depthwise conv1d (no bias, ``d_conv``
  taps) over [q, k, v] (3 x D channels) followed by SiLU; q and k are L2-normalised per head, q scaled
  by head_dim^-0.5;
- forget gate, one log-decay per channel: f_b_proj(f_a_proj(x)) (hidden -> ``gate_rank`` -> D, the rank
  is head_dim in Kimi Linear), plus ``dt_bias`` (D), softplus, times -exp(A_log) (one per head);
- beta = sigmoid(b_proj(x)) (hidden -> heads);
- the recurrence per head, state S [d_k, d_v] (d_k = d_v = head_dim):
  S <- diag(exp(g_t)) S;  S <- S + beta_t k_t (v_t - S^T k_t)^T;  o_t = S^T q_t;
- output gate g_b_proj(g_a_proj(x)) (hidden -> ``gate_rank`` -> D) into a gated RMSNorm over each head
  (weight head_dim, o = norm(o) x sigmoid(gate)), then o_proj D -> hidden.

Cache per sequence, constant in context: the conv window (3 x D x d_conv) and the state
(heads x head_dim x head_dim). Prefill runs the chunked form (``chunk_size`` tokens per chunk, 64 as in
fla's ``chunk_kda``), a decode step the O(1) recurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.base import FP32_BYTES, MixerKind, Part

if TYPE_CHECKING:
    from godprof.analytic.workload import Workload


@dataclass(frozen=True)
class KDA(MixerKind):
    """Kimi Delta Attention: gated delta rule, channel-wise decay, short convolutions, gated output norm."""

    num_heads: int
    head_dim: int
    d_conv: int = 4
    chunk_size: int = 64
    gate_rank: int | None = None  # low rank of the forget and output gates; None: head_dim (Kimi Linear)

    type: ClassVar[str] = "kda"
    category: ClassVar[str] = "linear"
    label: ClassVar[str] = "kda"
    efficiency_class: ClassVar[str] = "scan"
    build: ClassVar[str] = "godprof.build.kinds.kda:KimiDeltaAttention"
    keys: ClassVar[frozenset[str]] = frozenset({"type", "num_heads", "head_dim", "d_conv", "chunk_size", "gate_rank"})
    required: ClassVar[frozenset[str]] = frozenset({"type", "num_heads", "head_dim"})

    @property
    def dim(self) -> int:
        """Width of q, k and v: heads x head_dim."""
        return self.num_heads * self.head_dim

    @property
    def rank(self) -> int:
        return self.gate_rank if self.gate_rank is not None else self.head_dim

    @property
    def conv_dim(self) -> int:
        return 3 * self.dim

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> KDA:
        return cls(
            num_heads=c.int_(d, "num_heads", p),
            head_dim=c.int_(d, "head_dim", p),
            d_conv=c.int_(d, "d_conv", p, 4),
            chunk_size=c.int_(d, "chunk_size", p, 64),
            gate_rank=c.opt_int(d, "gate_rank", p),
        )

    def params(self, hidden: int) -> Part:
        """q/k/v, conv1d over [q, k, v], f_a/f_b + dt_bias + A_log, b_proj, g_a/g_b, the gated norm's weight
        (head_dim, shared by the heads: a ``norms`` parameter) and o_proj; no biases anywhere."""
        p = Part()
        D, H, r = self.dim, self.num_heads, self.rank
        p.linear("attention", hidden, D, False, count=3)  # q_proj, k_proj, v_proj
        p.add("attention", self.conv_dim * self.d_conv)  # depthwise conv, no bias
        p.linear("attention", hidden, r, False)  # forget gate f_a_proj
        p.linear("attention", r, D, False)  # f_b_proj
        p.add("attention", D + H)  # dt_bias (per channel), A_log (per head)
        p.linear("attention", hidden, H, False)  # b_proj (beta)
        p.linear("attention", hidden, r, False)  # output gate g_a_proj
        p.linear("attention", r, D, False)  # g_b_proj
        p.add("norms", self.head_dim)  # o_norm
        p.linear("attention", D, hidden, False)  # o_proj
        return p

    def state_elements(self) -> int:
        """Conv window (3 x heads x head_dim x d_conv) + the state (heads x head_dim x head_dim)."""
        return self.conv_dim * self.d_conv + self.num_heads * self.head_dim * self.head_dim

    def tp_problem(self, tp: int) -> str | None:
        return f"{self.num_heads} KDA heads do not split {tp} ways" if self.num_heads % tp else None

    def _chunks(self, seq: int) -> tuple[int, int]:
        """(chunk Q, chunks c): Q = min(chunk_size, seq), the last chunk padded and computed whole."""
        q = min(self.chunk_size, seq)
        return q, -(-seq // q)

    def scan_matmul_flops(self, batch: int, seq: int) -> int:
        """The chunked form's matrix products (the build's, after transformers' torch fallback
        ``chunk_kimi_delta_attention`` and fla's naive chunk KDA), per head and chunk of Q token slots
        (d = head_dim): the WY factors u = T (beta v) and w = T (beta k exp(g)), and the intra-chunk output
        A_qk (u - w S), 2 Q^2 d each; three products with the d x d state, (q exp(g)) S, w S and the next
        state's decayed K^T (u - w S), 2 Q d^2 each. Q = min(chunk_size, seq); the last chunk is padded and
        computed whole (c = ceil(seq / Q) chunks)."""
        q, c = self._chunks(seq)
        d = self.head_dim
        per_chunk = 6 * q * q * d + 6 * q * d * d
        return batch * self.num_heads * c * per_chunk

    def scan_flops(self, batch: int, seq: int) -> int:
        """``scan_matmul_flops`` plus the elementwise chunk work the build computes with broadcasts (what a
        fused kernel does as matmuls): the channel-decayed pair products beta k_i . k_j and q_i . k_j over
        the Q x Q pairs of each chunk (2 Q^2 d each), and the unit lower-triangular solve for the WY matrix
        T = (I + A)^-1 (about Q^3 / 3 FLOPs). Left out: exp, cumsum, masking, L2 norms."""
        q, c = self._chunks(seq)
        d = self.head_dim
        extra = 4 * q * q * d + (q**3 - q) // 3
        return self.scan_matmul_flops(batch, seq) + batch * self.num_heads * c * extra

    def scan_decode_flops(self) -> int:
        """One recurrent step per head: decay S (d^2), S^T k (2 d^2), the rank-1 update (2 d^2), S^T q (2 d^2)."""
        return 7 * self.num_heads * self.head_dim * self.head_dim

    def conv_flops_per_token(self) -> int:
        return 2 * self.conv_dim * self.d_conv

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """The build's working set (``godprof.build.kinds.kda``), the largest of three phases, the normed
        input (hidden per token, activation dtype) held throughout. t = batch x seq tokens, D = heads x
        head_dim, L = batch x c x Q token slots (chunk Q = min(chunk_size, seq), c = ceil(seq / Q)).

        - conv: the q/k/v projections (3 x D), the window-extended copy and the conv output, all in the
          activation dtype;
        - scan (fp32): q and k (L2-normed), v (with fp32 activations, the whole conv output, which v is a
          view of), the log decay g and beta; in ``kda_chunked`` the padded copies of q, k, v and beta
          (when seq is not a multiple of Q), the within-chunk cumsum of g and the output; inside one
          chunk's step three [batch, heads, Q, Q, head_dim] tensors (the decay exp(G_i - G_j) and the two
          factors of the q . k pair product), its two Q x Q matrices, the previous chunk's four
          [Q, head_dim] products, the entering and the new state;
        - output: the fp32 output, the output gate, the output cast to the activation dtype and the gated
          norm's fp32 temporaries.
        """
        t = batch * seq
        D, H, d = self.dim, self.num_heads, self.head_dim
        q, c = self._chunks(seq)
        L = batch * c * q
        x = a * t * hidden
        conv = a * (t * 9 * D + batch * (self.d_conv - 1) * self.conv_dim)
        held = t * (4 * D + H) + (t * 2 * D if a == FP32_BYTES else 0)  # q, k, v, g, beta (+ the conv output)
        held += L * (5 * D + H) if L != t else 2 * L * D  # padded copies, G, o (or G and o)
        bh = batch * H
        step = 3 * bh * q * q * d + bh * q * q * (2 if c > 1 else 1) + q * q + 2 * bh * d * d
        step += 4 * bh * q * d if c > 1 else 0
        scan = FP32_BYTES * (held + step) + 2 * q * q  # and the two bool masks
        out = FP32_BYTES * (L * D + 3 * t * D) + a * t * (self.rank + 2 * D)
        return x + max(conv, scan, out)

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """What fla's fused KDA kernels save per token: the norm's input and output, the q/k/v projections
        (conv input) and conv output, the two low-rank gate latents, the output gate, beta, the core output
        and its gated-norm output (activation dtype), and the fp32 log decay g (one per channel)."""
        D, r = self.dim, self.rank
        return 2 * hidden + 2 * self.conv_dim + 2 * r + 3 * D + self.num_heads, FP32_BYTES * D
