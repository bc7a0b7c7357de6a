"""Optional fused kernels for the recurrent and linear-attention kinds (``godprof measure --kernels fused``).

A kind's build module offers them through a ``fused(device)`` hook on its torch module: the hook loads
what it needs with ``load`` (CUDA only; ``FusedUnavailable`` with the reason otherwise), switches the
module to it and returns the name of what will run. Nothing here names a kind; each kind says which
of its stages a package fuses. The reference (pure PyTorch) path stays the definition and the default.

``fused_causal_conv`` is the stage several kinds share: the depthwise causal convolution with its
cached window, on ``causal_conv1d``'s kernels (the Dao-AILab package transformers' Mamba fast path
uses): ``causal_conv1d_fn`` for a prefill from position 0 and ``causal_conv1d_update`` for a decode
step, with the same cache layout as ``godprof.build.scan.causal_conv`` (the last d_conv inputs, newest
last). A chunked prefill that continues a cached window keeps the reference.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from godprof.build.scan import causal_conv

CONV_PACKAGE = "causal_conv1d"


class FusedUnavailable(Exception):
    """The fused kernels cannot run here (not CUDA, a package missing); the message says why."""


def load(device: torch.device | str, module: str, *names: str) -> list[Callable[..., Any]]:
    """The functions ``names`` of ``module``, for a CUDA ``device``; FusedUnavailable otherwise."""
    dev = torch.device(device)
    if dev.type != "cuda":
        raise FusedUnavailable(f"fused kernels need a CUDA device (this is {dev.type})")
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # ImportError, or a CUDA extension that fails to load
        raise FusedUnavailable(f"{module} is not importable ({type(e).__name__}: {e})") from None
    out = []
    for name in names:
        fn = getattr(mod, name, None)
        if fn is None:
            raise FusedUnavailable(f"{module} has no {name} (an incompatible version?)")
        out.append(fn)
    return out


def load_conv(device: torch.device | str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(causal_conv1d_fn, causal_conv1d_update), or FusedUnavailable."""
    fn, update = load(device, CONV_PACKAGE, "causal_conv1d_fn", "causal_conv1d_update")
    return fn, update


def fused_causal_conv(
    kernels: tuple[Callable[..., Any], Callable[..., Any]] | None,
    conv: nn.Conv1d,
    x: torch.Tensor,  # [B, C, S]
    pos: int,
    conv_state: torch.Tensor | None,  # [B, C, d_conv]
) -> torch.Tensor:  # [B, C, S]
    """``godprof.build.scan.causal_conv`` on causal_conv1d's kernels where they apply (``kernels`` from
    ``load_conv``; None: the reference). Same outputs and the same cache contents, no activation."""
    if kernels is None or isinstance(pos, torch.Tensor):
        return causal_conv(conv, x, pos, conv_state)
    conv_fn, conv_update = kernels
    B, C, S = x.shape
    k = conv.kernel_size[0]
    weight = conv.weight.view(C, k)  # [C, 1, k] -> [C, k]
    if conv_state is not None and pos > 0:
        if S != 1:  # a chunked prefill continuing a cached window: the reference handles it
            return causal_conv(conv, x, pos, conv_state)
        return conv_update(x[:, :, 0], conv_state, weight, conv.bias, None)[:, :, None]  # updates conv_state
    if conv_state is not None:  # a fresh sequence: keep its last k inputs (zeros before the first)
        conv_state.copy_(torch.cat((x.new_zeros(B, C, k - 1), x), dim=-1)[:, :, -k:])
    return conv_fn(x.contiguous(), weight, conv.bias, activation=None)
