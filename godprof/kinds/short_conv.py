"""``type: short_conv``: LFM2's gated short convolution (Liquid AI, LFM2 2025), the token mixer of its
"conv" layers.

Structure (transformers' ``Lfm2ShortConv``, models/lfm2/modeling_lfm2.py; the same module in
``Lfm2MoeShortConv``). Order: ``in_proj`` hidden -> [B, C, x] (3 x hidden); the input gate B x x; a
causal depthwise conv1d of ``d_conv`` taps (the config's ``conv_L_cache``) over it; the output gate
C x conv; ``out_proj`` hidden -> hidden. One flag, the config's ``conv_bias``, puts biases on in_proj,
the conv and out_proj together (``bias`` here). No activation, no norm, no per-channel state beyond
the conv window.

The cache per sequence is the conv window only: hidden x d_conv inputs, the last ``d_conv`` inputs of the
conv as transformers' cache keeps them (``update_conv_state`` holds ``conv_kernel_size`` = L_cache
columns) and as ``godprof.build.scan.causal_conv`` does (d_conv - 1 of them are read by the next step;
the convention is the same as Mamba's). It is constant in context.

Parameters are counted under the ``ssm`` component (the recurrent/convolutional token mixers' component:
in_proj, conv, out_proj), beside Mamba's; the kind's category is "linear" (attention-free, constant state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.base import MixerKind, Part

if TYPE_CHECKING:
    from godprof.analytic.workload import Workload


@dataclass(frozen=True)
class ShortConv(MixerKind):
    """LFM2's gated short convolution: out_proj(C * conv(B * x)).

    ``channels`` is the model's hidden size, taken at parse (not a spec key): the conv runs over every
    hidden channel, and the state and conv FLOPs need it."""

    channels: int
    d_conv: int = 3
    bias: bool = False

    type: ClassVar[str] = "short_conv"
    category: ClassVar[str] = "linear"
    label: ClassVar[str] = "conv"
    efficiency_class: ClassVar[str] = "scan"
    build: ClassVar[str] = "godprof.build.kinds.short_conv:ShortConvMixer"
    keys: ClassVar[frozenset[str]] = frozenset({"type", "d_conv", "bias"})

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> ShortConv:
        return cls(channels=hidden, d_conv=c.int_(d, "d_conv", p, 3), bias=c.bool_(d, "bias", p, False))

    # -- parameters

    def params(self, hidden: int) -> Part:
        """in_proj (hidden -> 3 x hidden: B, C, x), the depthwise conv (hidden x d_conv taps), out_proj
        (hidden -> hidden); with ``bias``, a bias on each of the three (3 x hidden + hidden + hidden)."""
        p = Part()
        p.linear("ssm", hidden, 3 * hidden, self.bias)  # Order: [B, C, x]
        p.add("ssm", hidden * self.d_conv + (hidden if self.bias else 0))
        p.linear("ssm", hidden, hidden, self.bias)
        return p

    # -- state

    def state_elements(self) -> int:
        """The conv window per sequence: hidden channels x d_conv inputs (no KV cache, no recurrent state)."""
        return self.channels * self.d_conv

    def tp_problem(self, tp: int) -> str | None:
        return f"{self.channels} conv channels do not split {tp} ways" if self.channels % tp else None

    # -- FLOPs (the projections are Linear weights: ``forward`` counts them from ``params``)

    def conv_flops_per_token(self) -> int:
        """The depthwise conv, d_conv multiply-adds per channel per token (the ``conv`` key; a decode step
        is one token of it). The gates B x and C y are elementwise: not counted."""
        return 2 * self.channels * self.d_conv

    # -- activations

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """The build's prefill (``godprof.build.kinds.short_conv``) at its largest step, the conv itself:
        the normed input (hidden), the in_proj output (3 x hidden, B, C and x are views of it), the gated
        input B x (hidden), the d_conv - 1 zero columns that start a sequence, the conv's input with them in
        front (hidden x (seq + d_conv - 1) per sequence) and the conv output (hidden). The in_proj output is
        freed before out_proj, so the gated output and out_proj's output stay below it.
        """
        t = batch * seq
        return a * (t * 6 * hidden + batch * hidden * (seq + 2 * (self.d_conv - 1)))

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """Per token: the norm's input and output, in_proj's output (3 x hidden), B x, the conv output and
        the gated output C y (out_proj's input): 8 x hidden."""
        return 8 * hidden, 0
