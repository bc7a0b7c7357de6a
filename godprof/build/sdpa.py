"""Scaled dot-product attention helpers shared by the attention kinds' builds."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sdpa(
    q: torch.Tensor,  # [B, H, S, Dqk]
    k: torch.Tensor,  # [B, K, T, Dqk]
    v: torch.Tensor,  # [B, K, T, Dv]
    mask: torch.Tensor | None = None,  # [S, T] bool, True = attend
    is_causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:  # [B, H, S, Dv]
    """SDPA with grouped KV heads. Unmasked calls pass ``enable_gqa`` (flash kernels take it); masked
    calls repeat the kv heads so the memory-efficient kernel (which does not take GQA) can run."""
    groups = int(q.shape[1]) // int(k.shape[1])  # ints also under torch.jit.trace (fvcore)
    if groups > 1 and mask is not None:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
        groups = 1
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=groups > 1
    )


def band_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """[S, T] bool: key j visible to query i when k_pos[j] <= q_pos[i] (and > q_pos[i] - window)."""
    diff = q_pos[:, None] - k_pos[None, :]  # [S, T]
    ok = diff >= 0
    if window is not None:
        ok = ok & (diff < window)
    return ok
