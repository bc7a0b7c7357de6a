"""Build of ``type: mlp`` (``godprof.kinds.mlp``): a gated or plain dense MLP, and the gated activations
the MoE experts share with it."""

from __future__ import annotations

import torch
from torch import nn

from godprof.build.layers import ACTS, FactoryKwargs
from godprof.kinds.mlp import MLP, SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT


def oai_gate(gate: torch.Tensor) -> torch.Tensor:
    """gpt-oss's gate half, a new tensor: g * sigmoid(1.702 g) with g = min(gate, 7)
    (transformers ``GptOssExperts._apply_gate``). Two tensors of gate's size at its peak."""
    g = gate.clamp(max=SWIGLU_OAI_LIMIT)
    return g.mul(SWIGLU_OAI_ALPHA).sigmoid_().mul_(g)


def oai_up(up: torch.Tensor) -> torch.Tensor:
    """gpt-oss's up half, a new tensor: clamp(up, -7, 7) + 1."""
    return up.clamp(-SWIGLU_OAI_LIMIT, SWIGLU_OAI_LIMIT).add_(1.0)


def glu(activation: str, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """A gated activation: act(gate) * up (SwiGLU, GeGLU, ReGLU), or gpt-oss's clamped SwiGLU
    ``oai_gate(gate) * oai_up(up)`` for ``swiglu_oai`` (in place on its own temporaries: forward only)."""
    if activation == "swiglu_oai":
        return oai_gate(gate).mul_(oai_up(up))
    return ACTS[activation](gate) * up


class DenseMLP(nn.Module):
    """Gated (gate_proj, up_proj, down_proj: down(act(gate(x)) * up(x))) or plain (fc1, act, fc2) MLP."""

    def __init__(self, hidden: int, inter: int, gated: bool, activation: str, bias: bool, dd: FactoryKwargs):
        super().__init__()
        self.gated = gated
        self.activation = activation
        self.act = ACTS[activation]
        if gated:
            self.gate_proj = nn.Linear(hidden, inter, bias=bias, **dd)
            self.up_proj = nn.Linear(hidden, inter, bias=bias, **dd)
            self.down_proj = nn.Linear(inter, hidden, bias=bias, **dd)
        else:
            self.fc1 = nn.Linear(hidden, inter, bias=bias, **dd)
            self.fc2 = nn.Linear(inter, hidden, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., h] -> [..., h]
        if self.gated and self.activation == "swiglu_oai":  # the gate half first: 3 x [..., I] at most
            return self.down_proj(oai_gate(self.gate_proj(x)).mul_(oai_up(self.up_proj(x))))
        if self.gated:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))  # [..., I] -> [..., h]
        return self.fc2(self.act(self.fc1(x)))


def build_mlp(f: MLP, hidden: int, dd: FactoryKwargs) -> DenseMLP:
    """The module for one MLP entry of a spec."""
    return DenseMLP(hidden, f.intermediate_size, f.gated, f.activation, f.bias, dd)
