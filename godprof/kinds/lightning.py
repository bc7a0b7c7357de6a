"""``type: lightning``: lightning attention (Qin et al. 2024, arXiv:2401.04658), the linear attention with a
per-head exponential decay of MiniMax-Text-01's linear layers (MiniMax et al. 2025, arXiv:2501.08313).

Structure (transformers' ``MiniMaxLightningAttention``, models/minimax/modeling_minimax.py): ``qkv_proj``
(hidden -> 3 x heads x d, no bias) followed by SiLU, split per head into [q, k, v]; ``norm``, an RMSNorm
(eps 1e-6) over the whole heads x d output; ``output_gate`` (hidden -> heads x d, no bias) read from the
mixer's input through a sigmoid; ``out_proj`` (heads x d -> hidden, no bias). No rotary, no softmax, no
q scaling, no conv. Per head h with slope s_h (ALiBi-style, ``2^(-8(h+1)/heads)``, scaled down with depth:
x (1 - layer / (layers - 1) + 1e-5); fixed buffers, not parameters) the state S (d x d) follows

    S_t = exp(-s) S_{t-1} + k_t^T v_t,    o_t = q_t S_t

(transformers' decode branch). Prefill runs it block-wise (``block_size``, 256): within a block
(q k^T * D) v with D[i, j] = exp(-s (i - j)) for j <= i, plus (q exp(-s (i + 1))) S for the state entering
the block, then S <- exp(-s b) S + (k exp(-s (b - 1 - i)))^T v for a block of b tokens. The cache per
sequence is the state, heads x d x d, constant in context.

Parameters are counted under the ``attention`` component (linear attention; the output norm's weight
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
class Lightning(MixerKind):
    """Lightning attention (linear attention with a per-head exponential decay)."""

    num_heads: int = 64
    head_dim: int = 128
    block_size: int = 256

    type: ClassVar[str] = "lightning"
    category: ClassVar[str] = "linear"
    label: ClassVar[str] = "lightning"
    efficiency_class: ClassVar[str] = "scan"
    build: ClassVar[str] = "godprof.build.kinds.lightning:LightningMixer"
    keys: ClassVar[frozenset[str]] = frozenset({"type", "num_heads", "head_dim", "block_size"})

    @property
    def inner(self) -> int:
        """heads x d: the width of q, k, v, the gate and the output."""
        return self.num_heads * self.head_dim

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> Lightning:
        return cls(
            num_heads=c.int_(d, "num_heads", p, 64),
            head_dim=c.int_(d, "head_dim", p, 128),
            block_size=c.int_(d, "block_size", p, 256),
        )

    # -- parameters

    def params(self, hidden: int) -> Part:
        """qkv_proj, output_gate and out_proj (attention); the output RMSNorm's heads x d weight (norms).
        The slopes and decay tables are buffers, not parameters."""
        p = Part()
        p.linear("attention", hidden, 3 * self.inner, False)  # [q, k, v] per head
        p.linear("attention", hidden, self.inner, False)  # output_gate
        p.add("norms", self.inner)
        p.linear("attention", self.inner, hidden, False)  # out_proj
        return p

    # -- state

    def state_elements(self) -> int:
        """The decayed sum of k^T v per head: heads x d x d, constant in context (no conv window)."""
        return self.num_heads * self.head_dim * self.head_dim

    def tp_problem(self, tp: int) -> str | None:
        return f"{self.num_heads} lightning-attention heads do not split {tp} ways" if self.num_heads % tp else None

    # -- FLOPs

    def _blocks(self, seq: int) -> tuple[int, int]:
        """(whole blocks, tokens in the last partial block): the last block is computed at its own size,
        as transformers does (no padding)."""
        return seq // self.block_size, seq % self.block_size

    def _per_head(self, seq: int, matmul: bool) -> int:
        """One head of one sequence over ``seq`` tokens; a block of b tokens: q k^T (2 b^2 d), the masked
        scores times v (2 b^2 d), the decayed q read of the entering state (2 b d^2) and the state update
        (k decayed)^T v (2 b d^2). Elementwise (``matmul`` False adds them): the decay mask on the scores
        (b^2), the q and k decays (2 b d), the state's block decay and the sum (2 d^2)."""
        d = self.head_dim
        n, r = self._blocks(seq)

        def block(b: int) -> int:
            f = 4 * b * b * d + 4 * b * d * d
            return f if matmul else f + b * b + 2 * b * d + 2 * d * d

        return n * block(self.block_size) + (block(r) if r else 0)

    def scan_matmul_flops(self, batch: int, seq: int) -> int:
        """The block-wise products (transformers' prefill loop), per head and sequence: within each block
        q k^T and (scores * D) v, against the state q S and the update k^T v (see ``_per_head``)."""
        return batch * self.num_heads * self._per_head(seq, True)

    def scan_flops(self, batch: int, seq: int) -> int:
        """``scan_matmul_flops`` plus the elementwise decays (the score mask, q and k decays, the state's
        block decay and accumulation)."""
        return batch * self.num_heads * self._per_head(seq, False)

    def scan_decode_flops(self) -> int:
        """One recurrent step per head: decay the state (d^2), add k^T v (2 d^2), read q S (2 d^2): 5 d^2."""
        return 5 * self.num_heads * self.head_dim * self.head_dim

    # -- activations

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """The build's prefill (``godprof.build.kinds.lightning``) at its largest step.

        Held throughout: the normed input (activation dtype). Steps: (1) qkv_proj's output and its SiLU
        (activation dtype), then the fp32 head-major copy of [q, k, v] (when activations are not fp32);
        (2) the block loop: the fp32 [q, k, v], the fp32 output, the entering and the running state, and
        per block of Q = min(block_size, seq) tokens the scores and their masked copy (Q x Q), the decayed
        q and k and the two products (Q x d each), the state update (d x d); (3) the output in activation
        dtype with the RMSNorm's fp32 copies (input, normed), the gate and its sigmoid.
        """
        t = batch * seq
        H, d = self.num_heads, self.head_dim
        inner = self.inner
        Q = min(self.block_size, seq)
        held = a * t * hidden
        qkv = t * 3 * inner
        # qkv_proj's output beside its SiLU; then the SiLU beside its fp32 copy (none when fp32)
        step1 = max(2 * a * qkv, (a + FP32_BYTES) * qkv if a != FP32_BYTES else 0)
        bh = batch * H
        loop = FP32_BYTES * (qkv + t * inner + 3 * bh * d * d + bh * (2 * Q * Q + 4 * Q * d))
        # the output cast to activations, the norm's fp32 input and normed copies, the gate
        out = (2 * a + 2 * FP32_BYTES) * t * inner
        return held + max(step1, loop, out)

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """What a fused kernel saves per token: the norm's input and output, [q, k, v] before and after
        SiLU, the scan output and its normed copy, the gate's output and its sigmoid; the block states
        (d x d per head every block, fp32) amortised over the block."""
        inner = self.inner
        per_block = FP32_BYTES * self.num_heads * self.head_dim * self.head_dim
        return 2 * hidden + 6 * inner + 4 * inner, -(-per_block // self.block_size)
