"""Build of ``type: parallel`` (``godprof.kinds.parallel``): each child mixer runs on the same normed input
(times its input multiplier), one after the other; their outputs, times the output multipliers, are
summed in place (as Falcon-H1's decoder layer adds its Mamba and attention outputs). Cache: the children's
cache tensors concatenated, child i reading its own slice."""

from __future__ import annotations

import torch
from torch import nn

from godprof.build.layers import FactoryKwargs, RotaryTables
from godprof.kinds.parallel import Parallel


class ParallelMixer(nn.Module):
    """``sum_i out_i x child_i(in_i x x, pos, state_i)``; children are ``mixers.0``, ``mixers.1``..."""

    def __init__(self, k: Parallel, hidden: int, dd: FactoryKwargs, rope: RotaryTables):
        super().__init__()
        from godprof.build.model import build_mixer  # the model module builds every kind, this one included

        self.k = k
        self.mixers = nn.ModuleList(build_mixer(ch, hidden, dd, rope) for ch in k.children)
        self.slices: list[int] = []  # how many cache tensors each child allocated (set by ``allocate``)

    def place(self, index: int, num_layers: int) -> None:
        """Pass the layer's depth to children whose constants depend on it (``Model`` calls ``place``)."""
        for m in self.mixers:
            place = getattr(m, "place", None)
            if place is not None:
                place(index, num_layers)

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        self.slices = []
        for m in self.mixers:
            alloc = getattr(m, "allocate", None)
            st = alloc(batch, max_len, dtype, device) if alloc is not None else []
            self.slices.append(len(st))
            out += st
        return out

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        out: torch.Tensor | None = None
        start = 0
        for i, (m, a, b) in enumerate(zip(self.mixers, self.k.in_multipliers, self.k.out_multipliers, strict=True)):
            st = None
            if state is not None:
                n = self.slices[i]
                st, start = state[start : start + n], start + n
            y = m(x if a == 1.0 else x * a, pos, st)  # [B, S, h]
            if b != 1.0:
                y.mul_(b)
            out = y if out is None else out.add_(y)
            del y
        assert out is not None
        return out
