"""``type: mlp``: the dense channel mixer, gated (SwiGLU/GeGLU: gate, up, down) or plain (fc1, act, fc2).

Activations: silu, gelu, gelu_tanh, relu, and ``swiglu_oai``, gpt-oss's clamped SwiGLU
(transformers ``models/gpt_oss/modeling_gpt_oss.py``, ``GptOssExperts._apply_gate``):
``g = min(gate, 7); u = clamp(up, -7, 7); out = g * sigmoid(1.702 g) * (u + 1)``. It needs a gate and an
up half, so only gated MLPs and experts take it. No parameters: alpha and the limit are constants.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.base import ACTIVATIONS, FfnKind, Part, mlp_into

SWIGLU_OAI_ALPHA = 1.702  # gpt-oss's swiglu_alpha (GptOssConfig default, the released checkpoints' value)
SWIGLU_OAI_LIMIT = 7.0  # gpt-oss's swiglu_limit


def activation(c: Checker, d: dict[str, Any], p: KeyPath, gated: bool) -> str:
    """The ``activation`` key of an MLP or MoE entry; ``swiglu_oai`` needs a gated MLP (a gate and an up)."""
    act = c.choice(d, "activation", p, ACTIVATIONS, "silu")
    if act == "swiglu_oai" and not gated:
        c.err((*p, "activation"), "swiglu_oai is a gated activation (gate and up halves): it needs gated: true")
    return act


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

    def tp_rank(self, tp: int) -> MLP:
        """intermediate_size / tp per rank: column-parallel gate/up (fc1), row-parallel down (fc2)."""
        if self.intermediate_size % tp:
            raise ValueError(f"intermediate_size {self.intermediate_size} does not split {tp} ways")
        return replace(self, intermediate_size=self.intermediate_size // tp)

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> MLP:
        gated = c.bool_(d, "gated", p, True)
        return cls(
            intermediate_size=c.int_(d, "intermediate_size", p),
            gated=gated,
            activation=activation(c, d, p, gated),
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
