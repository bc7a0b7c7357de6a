"""Build of ``type: lightning`` (``godprof.kinds.lightning``) in pure PyTorch, following transformers'
``MiniMaxLightningAttention`` (parameter and buffer names, so checkpoints map one to one). Prefill runs
the block-wise form of transformers' torch path (intra-block masked scores, inter-block read of the
state entering the block, state update per block); a decode step is the O(1) recurrence
S <- exp(-s) S + k^T v, o = q S. The scan runs in fp32. Cache: the state [B, H, d, d].

The slopes depend on the layer's depth (``slope_rate``), which a mixer does not learn from its spec
entry: they are built for layer 0 of 1, and the model calls ``place(layer, layers)`` on every mixer that
has it once the blocks exist (values only, never shapes or FLOPs).

Shape legend: B batch, S new tokens, H heads, d head dim, b tokens in a block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from godprof.build.fused import FusedUnavailable
from godprof.build.layers import FactoryKwargs, RMSNorm, RotaryTables
from godprof.kinds.lightning import Lightning

NORM_EPS = 1e-6  # MiniMaxRMSNorm's default, which the lightning output norm keeps


def slope_rate(heads: int, layer: int, layers: int) -> torch.Tensor:
    """Per-head decay rates [H, 1, 1] (transformers' ``get_slope_rate``): 2^(-8 (h + 1) / H) scaled by
    1 - layer / (layers - 1 + 1e-5) + 1e-5, so deeper layers decay slower."""
    base = 1 / (2 ** (8 / heads))
    rate = base ** (torch.arange(heads, dtype=torch.float32) + 1)
    return (rate * (1 - layer / (layers - 1 + 1e-5) + 1e-5))[:, None, None]


def lightning_prefill(
    q: torch.Tensor,  # [B, H, S, d] fp32
    k: torch.Tensor,  # [B, H, S, d] fp32
    v: torch.Tensor,  # [B, H, S, d] fp32
    slope: torch.Tensor,  # [H, 1, 1] fp32
    block: int,
    h0: torch.Tensor,  # [B, H, d, d] state entering the first token
) -> tuple[torch.Tensor, torch.Tensor]:  # output [B, H, S, d], final state [B, H, d, d]
    """Block-wise lightning attention (transformers' prefill loop, there from a zero state only): for a
    block of b tokens at offsets i, j in it, o_i = sum_{j <= i} (q_i k_j) e^{-s (i - j)} v_j
    + (q_i e^{-s (i + 1)}) S, then S <- e^{-s b} S + sum_j (k_j e^{-s (b - 1 - j)})^T v_j."""
    S_len = q.shape[2]
    out = torch.empty_like(v)
    S = h0
    for start in range(0, S_len, block):
        b = min(block, S_len - start)
        pos = torch.arange(1, b + 1, device=q.device, dtype=torch.float32)  # [b]
        gap = pos[:, None] - pos[None, :]  # [b, b] i - j
        diag = torch.exp(torch.where(gap >= 0, -slope * gap, float("-inf")))  # [H, b, b]
        qb, kb, vb = (x[:, :, start : start + b] for x in (q, k, v))  # [B, H, b, d]
        scores = torch.matmul(qb, kb.transpose(-1, -2))  # [B, H, b, b]
        o = torch.matmul(scores * diag, vb)  # intra-block
        o += torch.matmul(qb * torch.exp(-slope * pos[:, None]), S)  # the state entering the block
        out[:, :, start : start + b] = o
        k_decay = torch.exp(-slope * (b - pos[:, None]))  # [H, b, 1]
        S = S * torch.exp(-slope * b) + torch.matmul((kb * k_decay).transpose(-1, -2), vb)
    return out, S


def lightning_step(
    q: torch.Tensor,  # [B, H, 1, d]
    k: torch.Tensor,  # [B, H, 1, d]
    v: torch.Tensor,  # [B, H, 1, d]
    slope: torch.Tensor,  # [H, 1, 1]
    h0: torch.Tensor,  # [B, H, d, d]
) -> tuple[torch.Tensor, torch.Tensor]:  # output [B, H, 1, d], state [B, H, d, d]
    """One token (transformers' decode branch): S <- e^{-s} S + k^T v, o = q S."""
    S = h0 * torch.exp(-slope) + torch.matmul(k.transpose(-1, -2), v)
    return torch.matmul(q, S), S


class LightningMixer(nn.Module):
    """qkv_proj -> SiLU -> per head [q, k, v] -> lightning attention -> RMSNorm over H x d -> times
    sigmoid(output_gate(x)) -> out_proj."""

    def __init__(self, m: Lightning, hidden: int, dd: FactoryKwargs, rope: RotaryTables | None = None):
        super().__init__()
        self.m = m
        self.qkv_proj = nn.Linear(hidden, 3 * m.inner, bias=False, **dd)
        self.output_gate = nn.Linear(hidden, m.inner, bias=False, **dd)
        self.norm = RMSNorm(m.inner, dd, eps=NORM_EPS)
        self.out_proj = nn.Linear(m.inner, hidden, bias=False, **dd)
        dev = dd.get("device")
        self.slope_rate = nn.Buffer(slope_rate(m.num_heads, 0, 1).to(device=dev))  # fp32 [H, 1, 1]

    @torch.no_grad()
    def place(self, layer: int, layers: int) -> None:
        """Set the slopes of layer ``layer`` of ``layers`` (transformers' per-layer ``slope_rate``)."""
        self.slope_rate.copy_(slope_rate(self.m.num_heads, layer, layers))

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        m = self.m
        return [torch.zeros(batch, m.num_heads, m.head_dim, m.head_dim, dtype=dtype, device=device)]

    def fused(self, device: torch.device) -> str:
        """``--kernels fused``: not available for lightning attention yet. flash-linear-attention has
        kernels for this decayed linear attention, but godprof does not call them, so the reference runs
        and the measurement says why (``godprof.build.fused.FusedUnavailable``)."""
        raise FusedUnavailable("godprof has no fused path for lightning attention yet")

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        m = self.m
        B, S, _ = x.shape
        H, d = m.num_heads, m.head_dim
        # Order, per head: [q (d), k (d), v (d)]
        qkv = F.silu(self.qkv_proj(x)).view(B, S, H, 3 * d)
        qkv = qkv.float().transpose(1, 2)  # [B, H, S, 3d] fp32
        q, k, v = qkv.split(d, dim=-1)  # [B, H, S, d] each
        del qkv
        slope = self.slope_rate.float()
        if state is not None and pos > 0:
            h0 = state[0].float()
        else:
            h0 = torch.zeros(B, H, d, d, device=x.device, dtype=torch.float32)
        if S == 1 and state is not None:
            o, h = lightning_step(q, k, v, slope, h0)
        else:
            o, h = lightning_prefill(q, k, v, slope, m.block_size, h0)
        if state is not None:
            state[0].copy_(h)
        del q, k, v, h0, h
        o = o.transpose(1, 2).reshape(B, S, m.inner).to(x.dtype)  # [B, S, H d]
        o = self.norm(o)
        o = torch.sigmoid(self.output_gate(x)) * o
        return self.out_proj(o)
