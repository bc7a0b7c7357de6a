"""``type: mlp``: the dense channel mixer, gated (SwiGLU/GeGLU: gate, up, down) or plain (fc1, act, fc2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.base import ACTIVATIONS, FfnKind, Part, mlp_into


def mlp_peak_elements(rows: int, hidden: int, inter: int, gated: bool) -> int:
    """Hidden tensors of an MLP over ``rows`` tokens at its peak: act(gate), up and their product
    (3 x intermediate), or the product and down_proj's output; plain: fc1's output and its activation, or
    the activation and fc2's output."""
    if gated:
        return rows * max(3 * inter, inter + hidden)
    return rows * max(2 * inter, inter + hidden)


def mlp_train_elements(inter: int, gated: bool) -> int:
    """Per token saved for backward: gate, up, act(gate) and their product (gated), or fc1's output and
    its activation (plain)."""
    return (4 if gated else 2) * inter


@dataclass(frozen=True)
class MLP(FfnKind):
    """Dense MLP."""

    intermediate_size: int
    gated: bool = True
    activation: str = "silu"
    bias: bool = False

    type: ClassVar[str] = "mlp"
    label: ClassVar[str] = "mlp"
    build: ClassVar[str] = "godprof.build.kinds.mlp:build_mlp"
    keys: ClassVar[frozenset[str]] = frozenset({"type", "intermediate_size", "gated", "activation", "bias"})
    required: ClassVar[frozenset[str]] = frozenset({"type", "intermediate_size"})

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> MLP:
        return cls(
            intermediate_size=c.int_(d, "intermediate_size", p),
            gated=c.bool_(d, "gated", p, True),
            activation=c.choice(d, "activation", p, ACTIVATIONS, "silu"),
            bias=c.bool_(d, "bias", p, False),
        )

    def params(self, hidden: int) -> Part:
        p = Part()
        mlp_into(p, "mlp", hidden, self.intermediate_size, self.gated, self.bias)
        return p

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int) -> int:
        t = batch * seq
        return a * (t * hidden + mlp_peak_elements(t, hidden, self.intermediate_size, self.gated))

    def train_saved(self, hidden: int) -> tuple[int, int]:
        return 2 * hidden + mlp_train_elements(self.intermediate_size, self.gated), 0
