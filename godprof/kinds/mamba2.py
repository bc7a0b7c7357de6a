"""``type: mamba2``: the Mamba-2 SSD mixer (Dao & Gu 2024).

Structure (state-spaces/mamba's Mamba2, transformers' Mamba2Mixer). In-projection order:
[z, x, B, C, dt] = 2 x d_inner + 2 x n_groups x d_state + heads; causal depthwise conv1d over
[x, B, C]; dt_bias, A_log and D per head; a gated RMSNorm before out_proj. The cache per sequence is
the conv window (conv channels x d_conv) and the SSM state (heads x head_dim x d_state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.base import FP32_BYTES, MixerKind, Part, inner_size

if TYPE_CHECKING:
    from godprof.analytic.workload import Workload


@dataclass(frozen=True)
class Mamba2(MixerKind):
    """Mamba-2 SSD mixer."""

    d_inner: int
    d_state: int = 128
    d_conv: int = 4
    head_dim: int = 64
    n_groups: int = 1
    chunk_size: int = 256
    gated_norm: bool = True
    conv_bias: bool = True
    proj_bias: bool = False

    type: ClassVar[str] = "mamba2"
    category: ClassVar[str] = "ssm"
    label: ClassVar[str] = "mamba2"
    efficiency_class: ClassVar[str] = "scan"
    build: ClassVar[str] = "godprof.build.kinds.mamba2:Mamba2Mixer"
    keys: ClassVar[frozenset[str]] = frozenset({
        "type", "d_state", "d_conv", "expand", "d_inner", "head_dim", "n_groups", "chunk_size", "gated_norm",
        "conv_bias", "proj_bias",
    })  # fmt: skip

    @property
    def num_heads(self) -> int:
        return self.d_inner // self.head_dim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.n_groups * self.d_state

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> Mamba2:
        inner = inner_size(c, d, p, hidden)
        head_dim = c.int_(d, "head_dim", p, 64)
        groups = c.int_(d, "n_groups", p, 1)
        if inner % head_dim:
            c.err((*p, "head_dim"), f"inner size ({inner}) is not divisible by head_dim ({head_dim})")
        elif (inner // head_dim) % groups:
            c.err((*p, "n_groups"), f"number of heads ({inner // head_dim}) is not divisible by n_groups ({groups})")
        return cls(
            d_inner=inner,
            d_state=c.int_(d, "d_state", p, 128),
            d_conv=c.int_(d, "d_conv", p, 4),
            head_dim=head_dim,
            n_groups=groups,
            chunk_size=c.int_(d, "chunk_size", p, 256),
            gated_norm=c.bool_(d, "gated_norm", p, True),
            conv_bias=c.bool_(d, "conv_bias", p, True),
            proj_bias=c.bool_(d, "proj_bias", p, False),
        )

    def params(self, hidden: int) -> Part:
        """in_proj [z, x, B, C, dt], conv1d over [x, B, C], dt_bias, A_log, D, gated norm, out_proj."""
        p = Part()
        di, h = self.d_inner, self.num_heads
        p.linear("ssm", hidden, 2 * di + 2 * self.n_groups * self.d_state + h, self.proj_bias)
        p.add("ssm", self.conv_dim * self.d_conv + (self.conv_dim if self.conv_bias else 0))
        p.add("ssm", 3 * h)  # dt_bias, A_log, D: one per head
        if self.gated_norm:
            p.add("norms", di)
        p.linear("ssm", di, hidden, self.proj_bias)
        return p

    def state_elements(self) -> int:
        """Conv window (conv channels x d_conv) + SSM state (heads x head_dim x d_state)."""
        return self.conv_dim * self.d_conv + self.num_heads * self.head_dim * self.d_state

    def tp_problem(self, tp: int) -> str | None:
        return f"{self.num_heads} SSM heads do not split {tp} ways" if self.num_heads % tp else None

    def scan_flops(self, batch: int, seq: int) -> int:
        """One SSD scan over batch x seq tokens, in its chunked form (Dao & Gu 2024, sec. 7; state-spaces/mamba
        ``ssd_minimal``, which the build follows).

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
        q = min(self.chunk_size, seq)
        c = -(-seq // q)
        H, P, N = self.num_heads, self.head_dim, self.d_state
        per_slot = 2 * (self.n_groups * q * N + H * q * P) + 4 * H * P * N
        passing = 2 * H * (c + 1) ** 2 * P * N
        return batch * (per_slot * c * q + passing)

    def scan_matmul_flops(self, batch: int, seq: int) -> int:
        """Every term of ``scan_flops`` runs as a batched matmul in the build."""
        return self.scan_flops(batch, seq)

    def scan_decode_flops(self) -> int:
        return 8 * self.num_heads * self.head_dim * self.d_state

    def conv_flops_per_token(self) -> int:
        return 2 * self.conv_dim * self.d_conv

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """The build's ``ssd_chunked`` step by step (each product one batched matmul on head-major copies,
        each tensor freed when it is dead).

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
        di, H, P, G, N = self.d_inner, self.num_heads, self.head_dim, self.n_groups, self.d_state
        cv = FP32_BYTES if a != FP32_BYTES else 0
        Q = min(self.chunk_size, seq)
        c = -(-seq // Q)
        L = batch * c * Q  # token slots over the batch
        held = a * t * (hidden + 2 * di + 2 * G * N + H + self.conv_dim)
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

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """What the fused SSD kernels save: in_proj output, conv output, y and gated y (plus the norm's
        input and output)."""
        di = self.d_inner
        return 2 * hidden + 2 * di + 2 * self.n_groups * self.d_state + self.num_heads + self.conv_dim + 2 * di, 0
