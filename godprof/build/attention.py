"""Attention mixers: grouped-query attention and DeepSeek's multi-head latent attention (MLA).

Both run ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels where
the backend has them). Every mixer takes ``(x [B, S, h], pos, state)`` where ``pos`` is the number of
tokens already in the cache and ``state`` the layer's preallocated cache tensors (None: no cache).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from godprof.build.layers import FactoryKwargs, RMSNorm, RotaryTables, apply_rope
from godprof.spec import MLA, Attention


def _sdpa(
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


def _band_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """[S, T] bool: key j visible to query i when k_pos[j] <= q_pos[i] (and > q_pos[i] - window)."""
    diff = q_pos[:, None] - k_pos[None, :]  # [S, T]
    ok = diff >= 0
    if window is not None:
        ok = ok & (diff < window)
    return ok


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
                return _sdpa(q, k, v, mask=_band_mask(idx, idx, window))
            return _sdpa(q, k, v, is_causal=bool(S > 1))
        kc, vc = state  # [B, K, slots, D]
        slots = kc.shape[2]
        ring = window is not None and slots == window
        if not ring:  # linear cache: positions 0..pos+S-1 live in slots 0..pos+S-1
            self._store(state, k, v, pos)
            keys, values = kc[:, :, : pos + S], vc[:, :, : pos + S]  # [B, K, T, D]
            if S == 1:
                return _sdpa(q, keys.to(q.dtype), values.to(q.dtype))
            q_pos = torch.arange(pos, pos + S, device=q.device)
            k_pos = torch.arange(0, pos + S, device=q.device)
            return _sdpa(q, keys.to(q.dtype), values.to(q.dtype), mask=_band_mask(q_pos, k_pos, window))
        assert window is not None
        if S == 1:  # the ring holds exactly the last `window` positions once this token is written
            self._store(state, k, v, pos)
            filled = min(pos + 1, window)
            return _sdpa(q, kc[:, :, :filled].to(q.dtype), vc[:, :, :filled].to(q.dtype))
        # chunked prefill into a ring: previous keys in chronological order, then the new ones
        prev = min(pos, window)
        shift = pos % window if pos >= window else 0
        kp = torch.roll(kc, -shift, dims=2)[:, :, :prev] if shift else kc[:, :, :prev]  # [B, K, prev, D]
        vp = torch.roll(vc, -shift, dims=2)[:, :, :prev] if shift else vc[:, :, :prev]
        keys = torch.cat((kp.to(q.dtype), k), dim=2)  # [B, K, prev + S, D]
        values = torch.cat((vp.to(q.dtype), v), dim=2)
        q_pos = torch.arange(pos, pos + S, device=q.device)
        k_pos = torch.arange(pos - prev, pos + S, device=q.device)
        out = _sdpa(q, keys, values, mask=_band_mask(q_pos, k_pos, window))
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


class MLAttention(nn.Module):
    """DeepSeek-V2/V3 multi-head latent attention, as in transformers' DeepseekV3Attention.

    q: q_a_proj -> q_a_layernorm -> q_b_proj (or one q_proj); kv_a_proj_with_mqa gives the kv latent
    (kv_lora_rank, normed by kv_a_layernorm) and one rope key shared by all heads (qk_rope_head_dim);
    kv_b_proj decompresses the latent into per-head k_nope and v. The cache keeps only the normed latent
    and the roped key: [B, max_len, kv_lora_rank + qk_rope_head_dim].

    Prefill decompresses K and V and runs SDPA with qk = nope + rope, v = v_head_dim. A decode step
    (S == 1 with a cache) absorbs kv_b_proj into the query and the output and attends in the latent
    space (qk = kv_lora_rank + rope, v = kv_lora_rank; one shared "kv head"), which is the cost model of
    ``godprof.analytic.flops``.
    """

    def __init__(self, a: MLA, hidden: int, dd: FactoryKwargs, rope: RotaryTables):
        super().__init__()
        self.a = a
        self.rope = rope
        q_out = a.num_heads * a.qk_head_dim
        if a.q_lora_rank is None:
            self.q_proj = nn.Linear(hidden, q_out, bias=False, **dd)
        else:
            self.q_a_proj = nn.Linear(hidden, a.q_lora_rank, bias=a.bias, **dd)
            self.q_a_layernorm = RMSNorm(a.q_lora_rank, dd)
            self.q_b_proj = nn.Linear(a.q_lora_rank, q_out, bias=False, **dd)
        self.kv_a_proj_with_mqa = nn.Linear(hidden, a.kv_lora_rank + a.qk_rope_head_dim, bias=a.bias, **dd)
        self.kv_a_layernorm = RMSNorm(a.kv_lora_rank, dd)
        self.kv_b_proj = nn.Linear(a.kv_lora_rank, a.num_heads * (a.qk_nope_head_dim + a.v_head_dim), bias=False, **dd)
        self.o_proj = nn.Linear(a.num_heads * a.v_head_dim, hidden, bias=a.bias, **dd)
        self.scale = 1.0 / math.sqrt(a.qk_head_dim)

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        return [torch.zeros(batch, max_len, self.a.kv_lora_rank + self.a.qk_rope_head_dim, dtype=dtype, device=device)]

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        a = self.a
        B, S, _ = x.shape
        H, r, nope, rope_d = a.num_heads, a.kv_lora_rank, a.qk_nope_head_dim, a.qk_rope_head_dim
        if a.q_lora_rank is None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(B, S, H, a.qk_head_dim).transpose(1, 2)  # [B, H, S, nope + rope]
        q_nope, q_pe = q[..., :nope], q[..., nope:]
        ckv = self.kv_a_proj_with_mqa(x)  # [B, S, r + rope]
        latent = self.kv_a_layernorm(ckv[..., :r])  # [B, S, r]
        k_pe = ckv[..., r:]  # [B, S, rope]
        cos, sin = self.rope.get(rope_d, a.rope_theta, pos, S, x.device, q.dtype)  # [S, rope]
        q_pe = apply_rope(q_pe, cos, sin)  # [B, H, S, rope]
        k_pe = apply_rope(k_pe, cos, sin)  # [B, S, rope]
        if state is not None:
            buf = state[0]  # [B, max_len, r + rope]
            if pos + S > buf.shape[1]:
                raise ValueError(f"cache holds {buf.shape[1]} tokens; cannot write positions {pos}..{pos + S - 1}")
            buf[:, pos : pos + S, :r] = latent
            buf[:, pos : pos + S, r:] = k_pe
            if S == 1:
                out = self._decode_absorbed(q_nope, q_pe, buf[:, : pos + 1].to(q.dtype))  # [B, H, 1, v]
                return self.o_proj(out.transpose(1, 2).reshape(B, S, H * a.v_head_dim))
            if pos > 0:  # chunked prefill: decompress everything cached so far
                latent, k_pe = buf[:, : pos + S, :r].to(q.dtype), buf[:, : pos + S, r:].to(q.dtype)
        T = latent.shape[1]
        kv = self.kv_b_proj(latent).view(B, T, H, nope + a.v_head_dim).transpose(1, 2)  # [B, H, T, nope + v]
        k_nope, v = kv[..., :nope], kv[..., nope:]
        k = torch.cat((k_nope, k_pe[:, None].expand(B, H, T, rope_d)), dim=-1)  # [B, H, T, nope + rope]
        q = torch.cat((q_nope, q_pe), dim=-1)  # [B, H, S, nope + rope]
        if T == S:
            out = _sdpa(q, k, v, is_causal=bool(S > 1), scale=self.scale)  # [B, H, S, v]
        else:
            q_pos = torch.arange(pos, pos + S, device=x.device)
            mask = _band_mask(q_pos, torch.arange(T, device=x.device), None)
            out = _sdpa(q, k, v, mask=mask, scale=self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(B, S, H * a.v_head_dim))

    def _decode_absorbed(self, q_nope: torch.Tensor, q_pe: torch.Tensor, cached: torch.Tensor) -> torch.Tensor:
        """One query per sequence against the cached latents, with kv_b_proj absorbed.

        q_nope [B, H, 1, nope] @ W_uk [H, nope, r] gives a latent query; scores are latent . q_lat +
        k_pe . q_pe; the probability-weighted latent [B, H, 1, r] goes through W_uv [H, v, r].
        """
        a = self.a
        r, nope = a.kv_lora_rank, a.qk_nope_head_dim
        w = self.kv_b_proj.weight.view(a.num_heads, nope + a.v_head_dim, r)  # [H, nope + v, r]
        w_uk, w_uv = w[:, :nope], w[:, nope:]  # [H, nope, r], [H, v, r]
        q_lat = torch.einsum("bhsd,hdr->bhsr", q_nope, w_uk)  # [B, H, 1, r]
        q_cat = torch.cat((q_lat, q_pe), dim=-1)  # [B, H, 1, r + rope]
        keys = cached[:, None]  # [B, 1, T, r + rope]: one latent "kv head" shared by all heads
        values = cached[:, None, :, :r]  # [B, 1, T, r]
        o_lat = _sdpa(q_cat, keys, values, scale=self.scale)  # [B, H, 1, r]
        return torch.einsum("bhsr,hvr->bhsv", o_lat, w_uv)  # [B, H, 1, v]
