"""Helpers shared by the recurrent kinds' builds: the causal depthwise convolution with its cached
window, and the dt initialisation of state-spaces/mamba."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def causal_conv(conv: nn.Conv1d, x: torch.Tensor, pos: int, conv_state: torch.Tensor | None) -> torch.Tensor:
    """Depthwise causal conv over x [B, C, S], continuing from the cached window when ``pos`` > 0.

    The d_conv - 1 inputs before the first new token come from the cache (zeros at the start of a
    sequence); the cache is left holding the last d_conv inputs.
    """
    B, C, S = x.shape
    k = conv.kernel_size[0]
    if conv_state is not None and pos > 0:
        prev = conv_state[:, :, 1:].to(x.dtype)  # [B, C, k-1]
    else:
        prev = x.new_zeros(B, C, k - 1)
    xe = torch.cat((prev, x), dim=-1)  # [B, C, k-1+S]
    if conv_state is not None:
        conv_state.copy_(xe[:, :, -k:])
    return F.conv1d(xe, conv.weight, conv.bias, groups=C)  # [B, C, S]


def inv_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


def dt_init(n: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """dt ~ log-uniform in [1e-3, 1e-1] (state-spaces/mamba's dt_min/dt_max), returned as softplus^-1(dt)."""
    u = torch.rand(n, generator=g, device=device, dtype=torch.float32)
    dt = torch.exp(u * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
    return inv_softplus(dt)
