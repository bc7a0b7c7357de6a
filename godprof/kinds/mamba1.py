"""``type: mamba1``: the Mamba-1 selective SSM mixer (Gu & Dao 2023).

Structure (state-spaces/mamba, transformers' MambaMixer): in_proj to x and z (2 x d_inner), causal
depthwise conv1d over x, x_proj to (dt, B, C) (dt_rank + 2 x d_state), dt_proj back to d_inner (always
with a bias: the dt initialisation lives there), A_log [d_inner, d_state], D [d_inner], out_proj.
Jamba adds RMSNorms on dt, B and C (``inner_norms``). The cache per sequence is the conv window
(d_inner x d_conv) and the SSM state (d_inner x d_state): constant in context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.base import FP32_BYTES, MixerKind, Part, inner_size

if TYPE_CHECKING:
    from godprof.analytic.workload import Workload

SCAN_ELEMENTS = 1 << 24  # the build's scan chunk budget: B x Q x d_inner x d_state fp32 elements


def scan_chunk(batch: int, d_inner: int, d_state: int) -> int:
    """Tokens per chunk of the build's selective scan (``godprof.build.kinds.mamba1``): the largest power of
    two Q <= 256 with batch x Q x d_inner x d_state <= 2^24 fp32 elements (at least 1). The chunk sets
    the scan's memory, so the build and the activation model share this function."""
    q = max(1, min(256, SCAN_ELEMENTS // max(1, batch * d_inner * d_state)))
    return 1 << (q.bit_length() - 1)


@dataclass(frozen=True)
class Mamba1(MixerKind):
    """Mamba-1 selective SSM mixer."""

    d_inner: int
    d_state: int = 16
    d_conv: int = 4
    dt_rank: int = 0  # resolved at load: `auto` = ceil(hidden / 16)
    conv_bias: bool = True
    proj_bias: bool = False
    inner_norms: bool = False  # RMSNorms on dt, B and C (Jamba)

    type: ClassVar[str] = "mamba1"
    category: ClassVar[str] = "ssm"
    label: ClassVar[str] = "mamba1"
    efficiency_class: ClassVar[str] = "scan"
    build: ClassVar[str] = "godprof.build.kinds.mamba1:Mamba1Mixer"
    keys: ClassVar[frozenset[str]] = frozenset(
        {"type", "d_state", "d_conv", "expand", "d_inner", "dt_rank", "conv_bias", "proj_bias", "inner_norms"}
    )

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> Mamba1:
        inner = inner_size(c, d, p, hidden)
        dt = d.get("dt_rank") if d.get("dt_rank") is not None else "auto"  # null: the default
        dt_rank = math.ceil(hidden / 16) if dt == "auto" else c.int_(d, "dt_rank", p)
        return cls(
            d_inner=inner,
            d_state=c.int_(d, "d_state", p, 16),
            d_conv=c.int_(d, "d_conv", p, 4),
            dt_rank=dt_rank,
            conv_bias=c.bool_(d, "conv_bias", p, True),
            proj_bias=c.bool_(d, "proj_bias", p, False),
            inner_norms=c.bool_(d, "inner_norms", p, False),
        )

    def params(self, hidden: int) -> Part:
        """in_proj (x and z), depthwise conv1d, x_proj (dt, B, C), dt_proj, A_log, D, out_proj."""
        p = Part()
        di, n, r = self.d_inner, self.d_state, self.dt_rank
        p.linear("ssm", hidden, 2 * di, self.proj_bias)
        p.add("ssm", di * self.d_conv + (di if self.conv_bias else 0))
        p.linear("ssm", di, r + 2 * n, False)
        p.linear("ssm", r, di, True)  # dt_proj always has a bias (the dt initialisation lives there)
        p.add("ssm", di * n + di)  # A_log, D
        p.linear("ssm", di, hidden, self.proj_bias)
        if self.inner_norms:
            p.add("norms", r + 2 * n)  # Jamba's RMSNorms on dt, B and C
        return p

    def state_elements(self) -> int:
        """The conv window (d_inner x d_conv, as state-spaces/mamba and transformers cache it) plus the
        SSM state d_inner x d_state."""
        return self.d_inner * self.d_conv + self.d_inner * self.d_state

    def scan_flops(self, batch: int, seq: int) -> int:
        """Per token and (channel, state) pair: exp(dt*A) (2), dt*B*x (2), h = dA*h + dBx (2), y += C*h (2)."""
        return 8 * self.d_inner * self.d_state * batch * seq

    def scan_matmul_flops(self, batch: int, seq: int) -> int:
        """Only the output contraction y = C . h is an einsum in the build: 2 x d_inner x d_state per token."""
        return 2 * self.d_inner * self.d_state * batch * seq

    def scan_decode_flops(self) -> int:
        return 8 * self.d_inner * self.d_state

    def conv_flops_per_token(self) -> int:
        return 2 * self.d_inner * self.d_conv

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """in_proj output, conv output, x_proj output (with Jamba's inner norms only the normed B and C
        outlive dt_proj), dt (fp32), A and h0 (fp32), the fp32 output y, plus the scan's chunk: decays and
        inputs [B, q, d_inner, d_state] fp32 and one product of q - 1 tokens per scan step (or, when
        forming the inputs, dt x u and the fp32 copies of u and B)."""
        di, n = self.d_inner, self.d_state
        t = batch * seq
        cv = FP32_BYTES if a != FP32_BYTES else 0
        q = min(scan_chunk(batch, di, n), seq)
        held = a * t * (hidden + 2 * di + di + (0 if self.inner_norms else self.dt_rank) + 2 * n)
        held += FP32_BYTES * (t * di + di * n + batch * di * n + t * di)  # dt, A, h0, y

        def scan(rows: int) -> int:  # one chunk of `rows` tokens: forming its inputs, or a scan step
            chunk = FP32_BYTES * batch * rows * di * n
            forming = 2 * chunk + (FP32_BYTES + cv) * batch * rows * di + cv * batch * rows * n
            return max(forming, 2 * chunk + FP32_BYTES * batch * (rows - 1) * di * n)

        peak = scan(q)
        if seq > q:  # later chunks also hold the state carried from the previous one
            peak = max(peak, scan(min(q, seq - q)) + FP32_BYTES * batch * di * n)
        return held + peak

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """What the fused selective-scan kernels save: in_proj output, conv output, x_proj output, dt, y,
        gated y (plus the norm's input and output)."""
        di = self.d_inner
        return 2 * hidden + 2 * di + di + self.dt_rank + 2 * self.d_state + di + 2 * di, 0
