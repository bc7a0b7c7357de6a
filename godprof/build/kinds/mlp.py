"""Build of ``type: mlp`` (``godprof.kinds.mlp``): a gated or plain dense MLP."""

from __future__ import annotations

import torch
from torch import nn

from godprof.build.layers import ACTS, FactoryKwargs
from godprof.kinds.mlp import MLP


class DenseMLP(nn.Module):
    """Gated (gate_proj, up_proj, down_proj: down(act(gate(x)) * up(x))) or plain (fc1, act, fc2) MLP."""

    def __init__(self, hidden: int, inter: int, gated: bool, activation: str, bias: bool, dd: FactoryKwargs):
        super().__init__()
        self.gated = gated
        self.act = ACTS[activation]
        if gated:
            self.gate_proj = nn.Linear(hidden, inter, bias=bias, **dd)
            self.up_proj = nn.Linear(hidden, inter, bias=bias, **dd)
            self.down_proj = nn.Linear(inter, hidden, bias=bias, **dd)
        else:
            self.fc1 = nn.Linear(hidden, inter, bias=bias, **dd)
            self.fc2 = nn.Linear(inter, hidden, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., h] -> [..., h]
        if self.gated:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))  # [..., I] -> [..., h]
        return self.fc2(self.act(self.fc1(x)))


def build_mlp(f: MLP, hidden: int, dd: FactoryKwargs) -> DenseMLP:
    """The module for one MLP entry of a spec."""
    return DenseMLP(hidden, f.intermediate_size, f.gated, f.activation, f.bias, dd)
