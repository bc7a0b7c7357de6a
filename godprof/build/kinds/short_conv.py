"""Build of ``type: short_conv`` (``godprof.kinds.short_conv``) in pure PyTorch, following transformers'
``Lfm2ShortConv`` (parameter names ``in_proj``, ``conv``, ``out_proj``, so checkpoints map one to one).
Prefill and decode run the same path: the causal depthwise conv continues from the cached window
(``godprof.build.scan.causal_conv``). Cache: the conv window [B, hidden, d_conv].

Shape legend: B batch, S new tokens, h hidden.
"""

from __future__ import annotations

import torch
from torch import nn

from godprof.build.layers import FactoryKwargs, RotaryTables
from godprof.build.scan import causal_conv
from godprof.kinds.short_conv import ShortConv


class ShortConvMixer(nn.Module):
    """in_proj -> [B, C, x] -> B * x -> causal depthwise conv1d (no activation) -> C * conv -> out_proj."""

    def __init__(self, m: ShortConv, hidden: int, dd: FactoryKwargs, rope: RotaryTables | None = None):
        super().__init__()
        self.m = m
        # Order: [B, C, x]
        self.in_proj = nn.Linear(hidden, 3 * hidden, bias=m.bias, **dd)
        self.conv = nn.Conv1d(hidden, hidden, m.d_conv, groups=hidden, bias=m.bias, **dd)
        self.out_proj = nn.Linear(hidden, hidden, bias=m.bias, **dd)

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        return [torch.zeros(batch, self.m.channels, self.m.d_conv, dtype=dtype, device=device)]  # conv window

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        BCx = self.in_proj(x).transpose(1, 2)  # [B, 3h, S]
        b, c, xs = BCx.chunk(3, dim=1)  # [B, h, S] each (views)
        y = causal_conv(self.conv, b * xs, pos, state[0] if state else None)  # [B, h, S]
        y = c * y
        del BCx, b, c, xs
        return self.out_proj(y.transpose(1, 2))  # [B, S, h]
