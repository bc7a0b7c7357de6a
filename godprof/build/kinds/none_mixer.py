"""The torch module of a ``type: none`` mixer (``godprof.kinds.none_mixer``): no parameters, no cache.

``Block`` never calls it (the kind is ``passthrough``: the block skips the mixer and its norm); called
directly it returns what the mixer branch adds to the residual stream, nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from godprof.build.layers import FactoryKwargs, RotaryTables
from godprof.kinds.none_mixer import NoMixer


class NoMixerModule(nn.Module):
    """Empty mixer slot: the residual stream passes through unchanged."""

    def __init__(self, m: NoMixer, hidden: int, dd: FactoryKwargs, rope: RotaryTables | None = None):
        super().__init__()

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        return torch.zeros_like(x)  # [B, S, h]: the branch adds nothing
