"""Build of ``type: short_conv`` (``godprof.kinds.short_conv``) in pure PyTorch, following transformers'
``Lfm2ShortConv`` (parameter names ``in_proj``, ``conv``, ``out_proj``, so checkpoints map one to one).
Prefill and decode run the same path: the causal depthwise conv continues from the cached window
(``godprof.build.scan.causal_conv``). Cache: the conv window [B, hidden, d_conv].

Shape legend: B batch, S new tokens, h hidden.
"""

from __future__ import annotations

import torch
from torch import nn

from godprof.build.fused import fused_causal_conv, load_conv
from godprof.build.layers import FactoryKwargs, RotaryTables
from godprof.kinds.short_conv import ShortConv


class ShortConvMixer(nn.Module):
    """in_proj -> [B, C, x] -> B * x -> causal depthwise conv1d (no activation) -> C * conv -> out_proj."""

    def __init__(self, m: ShortConv, hidden: int, dd: FactoryKwargs, rope: RotaryTables | None = None):
        super().__init__()
        self.m = m
        self._conv_kernels: tuple | None = None  # causal_conv1d's (fn, update) under --kernels fused
        # Order: [B, C, x]
        self.in_proj = nn.Linear(hidden, 3 * hidden, bias=m.bias, **dd)
        self.conv = nn.Conv1d(hidden, hidden, m.d_conv, groups=hidden, bias=m.bias, **dd)
        self.out_proj = nn.Linear(hidden, hidden, bias=m.bias, **dd)

    def fused(self, device: torch.device) -> str:
        """``--kernels fused``: the causal conv on causal_conv1d's kernels (``causal_conv1d_fn`` for a prefill,
        ``causal_conv1d_update`` for a decode step). Returns what will run; raises
        ``godprof.build.fused.FusedUnavailable`` (this kind keeps the reference) off CUDA or without the
        package. The projections are cuBLAS matmuls either way."""
        self._conv_kernels = load_conv(device)
        return "causal_conv1d (conv)"

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        return [torch.zeros(batch, self.m.channels, self.m.d_conv, dtype=dtype, device=device)]  # conv window

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        BCx = self.in_proj(x).transpose(1, 2)  # [B, 3h, S]
        b, c, xs = BCx.chunk(3, dim=1)  # [B, h, S] each (views)
        y = fused_causal_conv(self._conv_kernels, self.conv, b * xs, pos, state[0] if state else None)  # [B, h, S]
        y = c * y
        del BCx, b, c, xs
        return self.out_proj(y.transpose(1, 2))  # [B, S, h]
