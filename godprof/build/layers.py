"""Building blocks shared by the layer kinds: norms, rotary embedding, activations.

Shape legend: B batch, S new tokens, T cached + new tokens, H query heads, K kv heads, D head dim,
h hidden size, I intermediate size, E experts, k top-k.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FactoryKwargs = dict[str, Any]  # {"device": ..., "dtype": ...} passed to every parameter factory


class RMSNorm(nn.Module):
    """RMSNorm with a weight only (Llama, Mamba, DeepSeek); statistics in fp32.

    ``group_size`` normalises each group of that many features separately (Mamba-2's grouped gated norm).
    """

    def __init__(self, size: int, dd: FactoryKwargs, eps: float = 1e-5, group_size: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size, **dd))
        self.eps = eps
        self.group_size = group_size or size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xf = x.float().reshape(*shape[:-1], shape[-1] // self.group_size, self.group_size)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.reshape(shape).to(x.dtype) * self.weight


def make_norm(kind: str, size: int, bias: bool, dd: FactoryKwargs) -> nn.Module:
    """The model's block norm: RMSNorm (weight) or LayerNorm (weight, and bias when ``bias``)."""
    if kind == "layernorm":
        return nn.LayerNorm(size, eps=1e-5, bias=bias, **dd)
    return RMSNorm(size, dd)


def rope_cos_sin(
    positions: torch.Tensor, rotary_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [S, rotary_dim] for absolute ``positions`` [S] (GPT-NeoX/Llama half-split layout)."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, rotary_dim, 2, device=positions.device, dtype=torch.float32) / rotary_dim)
    )
    freqs = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # [S, rd/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [S, rd]
    return emb.cos().to(dtype), emb.sin().to(dtype)


class RotaryTables:
    """cos/sin tables shared by a model's rotary layers, keyed by (rotary_dim, theta, dtype, device) and
    grown geometrically, so a decode step slices a table instead of recomputing it in every layer.
    A plain object (not a buffer): it is derived data and must not appear in parameter counts.
    With a cache the tables cover exactly its max_len positions (``reserve``), without one the
    forward's positions: 2 x positions x rotary_dim values per key, which
    ``godprof.analytic.memory.inference_activation_bytes`` counts."""

    def __init__(self) -> None:
        self.tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.reserved = 0

    def reserve(self, n: int) -> None:
        """Make later lookups up to position n - 1 hit existing tables (called by allocate_cache)."""
        self.reserved = max(self.reserved, n)

    def get(
        self, rotary_dim: int, theta: float, pos: int | torch.Tensor, S: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:  # cos, sin [S, rotary_dim] for positions pos..pos+S-1
        """Rows pos..pos+S-1 of the table. ``pos`` may be a 0-d device tensor (a static decode step): the
        rows are then gathered by index from a table of ``reserved`` positions, made on first use, so the
        step neither syncs nor changes shape."""
        key = (rotary_dim, theta, dtype, device)
        t = self.tables.get(key)
        if isinstance(pos, torch.Tensor):
            if t is None or t[0].shape[0] < self.reserved:
                t = rope_cos_sin(torch.arange(self.reserved, device=device), rotary_dim, theta, dtype)
                self.tables[key] = t
            idx = pos.reshape(1) + torch.arange(S, device=pos.device)  # [S]
            return t[0].index_select(0, idx), t[1].index_select(0, idx)
        if t is None or t[0].shape[0] < pos + S:
            n = max(pos + S, self.reserved, 2 * (t[0].shape[0] if t is not None else 0))
            t = rope_cos_sin(torch.arange(n, device=device), rotary_dim, theta, dtype)
            self.tables[key] = t
        return t[0][pos : pos + S], t[1][pos : pos + S]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``rotary_dim`` features of x [..., S, D]; the rest pass through (partial rotary)."""
    rd = cos.shape[-1]
    xr, xp = x[..., :rd], x[..., rd:]
    x1, x2 = xr[..., : rd // 2], xr[..., rd // 2 :]
    rotated = torch.cat((-x2, x1), dim=-1)
    out = xr * cos + rotated * sin
    return torch.cat((out, xp), dim=-1) if xp.shape[-1] else out


ACTS = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "relu2": lambda x: F.relu(x).square(),  # squared ReLU (Nemotron-H; transformers' ReLUSquaredActivation)
    # gpt-oss's clamped gate, x' * sigmoid(1.702 x') with x' = min(x, 7); gated MLPs and experts apply the
    # whole clamped SwiGLU (the up half too) through godprof.build.kinds.mlp.glu
    "swiglu_oai": lambda x: x.clamp(max=7.0) * torch.sigmoid(1.702 * x.clamp(max=7.0)),
}
