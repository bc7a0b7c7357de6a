"""Build of ``type: attention`` (``godprof.kinds.attention``): grouped-query attention over
``torch.nn.functional.scaled_dot_product_attention``. Every mixer takes ``(x [B, S, h], pos, state)``
where ``pos`` is the number of tokens already in the cache and ``state`` the layer's preallocated cache
tensors (None: no cache)."""

from __future__ import annotations

import torch
from torch import nn

from godprof.build.layers import FactoryKwargs, RMSNorm, RotaryTables, apply_rope
from godprof.build.sdpa import band_mask, sdpa
from godprof.kinds.attention import Attention


class GQAttention(nn.Module):
    """q/k/v/o projections (biases per spec), optional per-head RMSNorm on q and k (applied before
    rotary, as Qwen3), rotary on the first ``rotary_dim`` features, causal SDPA, optional sliding window.

    Cache: K and V [B, K, slots, D] each, slots = max_len, or min(max_len, window) for a sliding window,
    used as a ring buffer (position p lives in slot p % window); keys are stored after rotary.
    """

    def __init__(self, a: Attention, hidden: int, dd: FactoryKwargs, rope: RotaryTables):
        super().__init__()
        self.a = a
        self.rope = rope
        self.q_proj = nn.Linear(hidden, a.num_heads * a.head_dim, bias=a.qkv_bias, **dd)
        self.k_proj = nn.Linear(hidden, a.num_kv_heads * a.head_dim, bias=a.qkv_bias, **dd)
        self.v_proj = nn.Linear(hidden, a.num_kv_heads * a.head_dim, bias=a.qkv_bias, **dd)
        self.o_proj = nn.Linear(a.num_heads * a.head_dim, hidden, bias=a.o_bias, **dd)
        if a.qk_norm:
            self.q_norm = RMSNorm(a.head_dim, dd)
            self.k_norm = RMSNorm(a.head_dim, dd)
        self.rotary_dim = (a.rotary_dim or a.head_dim) if a.rope else 0

    def cache_slots(self, max_len: int) -> int:
        w = self.a.sliding_window
        return max_len if w is None else min(max_len, w)

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        shape = (batch, self.a.num_kv_heads, self.cache_slots(max_len), self.a.head_dim)
        return [torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)]

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        a = self.a
        B, S, _ = x.shape
        q = self.q_proj(x).view(B, S, a.num_heads, a.head_dim).transpose(1, 2)  # [B, H, S, D]
        k = self.k_proj(x).view(B, S, a.num_kv_heads, a.head_dim).transpose(1, 2)  # [B, K, S, D]
        v = self.v_proj(x).view(B, S, a.num_kv_heads, a.head_dim).transpose(1, 2)  # [B, K, S, D]
        if a.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary_dim:
            cos, sin = self.rope.get(self.rotary_dim, a.rope_theta, pos, S, x.device, q.dtype)  # [S, rd]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = self._attend(q, k, v, pos, state)  # [B, H, S, D]
        return self.o_proj(out.transpose(1, 2).reshape(B, S, a.num_heads * a.head_dim))

    def _attend(self, q, k, v, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        S = q.shape[2]
        window = self.a.sliding_window
        if state is None or pos == 0:
            # fresh sequence: attend over the new tokens only (and store them)
            if state is not None:
                self._store(state, k, v, pos)
            if window is not None and S > window:
                idx = torch.arange(S, device=q.device)
                return sdpa(q, k, v, mask=band_mask(idx, idx, window))
            return sdpa(q, k, v, is_causal=bool(S > 1))
        kc, vc = state  # [B, K, slots, D]
        slots = kc.shape[2]
        ring = window is not None and slots == window
        if not ring:  # linear cache: positions 0..pos+S-1 live in slots 0..pos+S-1
            self._store(state, k, v, pos)
            keys, values = kc[:, :, : pos + S], vc[:, :, : pos + S]  # [B, K, T, D]
            if S == 1:
                return sdpa(q, keys.to(q.dtype), values.to(q.dtype))
            q_pos = torch.arange(pos, pos + S, device=q.device)
            k_pos = torch.arange(0, pos + S, device=q.device)
            return sdpa(q, keys.to(q.dtype), values.to(q.dtype), mask=band_mask(q_pos, k_pos, window))
        assert window is not None
        if S == 1:  # the ring holds exactly the last `window` positions once this token is written
            self._store(state, k, v, pos)
            filled = min(pos + 1, window)
            return sdpa(q, kc[:, :, :filled].to(q.dtype), vc[:, :, :filled].to(q.dtype))
        # chunked prefill into a ring: previous keys in chronological order, then the new ones
        prev = min(pos, window)
        shift = pos % window if pos >= window else 0
        kp = torch.roll(kc, -shift, dims=2)[:, :, :prev] if shift else kc[:, :, :prev]  # [B, K, prev, D]
        vp = torch.roll(vc, -shift, dims=2)[:, :, :prev] if shift else vc[:, :, :prev]
        keys = torch.cat((kp.to(q.dtype), k), dim=2)  # [B, K, prev + S, D]
        values = torch.cat((vp.to(q.dtype), v), dim=2)
        q_pos = torch.arange(pos, pos + S, device=q.device)
        k_pos = torch.arange(pos - prev, pos + S, device=q.device)
        out = sdpa(q, keys, values, mask=band_mask(q_pos, k_pos, window))
        self._store(state, k, v, pos)
        return out

    def _store(self, state: list[torch.Tensor], k: torch.Tensor, v: torch.Tensor, pos: int) -> None:
        """Write the new keys/values at positions pos..pos+S-1 (slot p % slots in a ring)."""
        kc, vc = state
        slots, S = kc.shape[2], k.shape[2]
        window = self.a.sliding_window
        if window is not None and slots == window:
            keep = min(S, slots)  # only the last `window` new tokens survive
            idx = torch.arange(pos + S - keep, pos + S, device=k.device) % slots
            kc.index_copy_(2, idx, k[:, :, S - keep :].to(kc.dtype))
            vc.index_copy_(2, idx, v[:, :, S - keep :].to(vc.dtype))
            return
        if pos + S > slots:
            raise ValueError(f"cache holds {slots} tokens; cannot write positions {pos}..{pos + S - 1}")
        kc[:, :, pos : pos + S] = k
        vc[:, :, pos : pos + S] = v
