"""Build of ``type: attention`` (``godprof.kinds.attention``): grouped-query attention over
``torch.nn.functional.scaled_dot_product_attention`` (``godprof.build.sdpa.attention`` where sinks or
soft-capping need more). Every mixer takes ``(x [B, S, h], pos, state)`` where ``pos`` is the number of
tokens already in the cache and ``state`` the layer's preallocated cache tensors (None: no cache)."""

from __future__ import annotations

import torch
from torch import nn

from godprof.build.layers import FactoryKwargs, RMSNorm, RotaryTables, apply_rope
from godprof.build.sdpa import attention, band_mask, static_decode_attention
from godprof.kinds.attention import Attention

L2_EPS = 1e-5  # Llama4TextL2Norm is built with the config's rms_norm_eps (1e-5 in Llama 4's configs)


def l2_norm(x: torch.Tensor, eps: float = L2_EPS) -> torch.Tensor:
    """Llama 4's parameter-free qk norm: x / sqrt(mean(x^2) + eps) over the last dim, in fp32."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


class GQAttention(nn.Module):
    """q/k/v/o projections (biases per spec); qk norms (full-width ones on the projections, then the
    optional clamp of q/k/v, as OLMoE; per-head ones before rotary, as Qwen3 and Gemma 3; the L2 norm
    after it, as Llama 4); rotary on the first ``rotary_dim`` features; causal attention with an optional
    sliding window or chunks, sinks, soft-capping and softmax scale (``godprof.build.sdpa.attention``).

    Cache: K and V [B, K, slots, D] each, slots = max_len, or min(max_len, window) for a sliding window,
    used as a ring buffer (position p lives in slot p % window), or min(max_len, chunk) for chunked
    attention (position p in slot p % chunk: a chunk always starts at slot 0); keys are stored after
    rotary and norms.
    """

    def __init__(self, a: Attention, hidden: int, dd: FactoryKwargs, rope: RotaryTables):
        super().__init__()
        self.a = a
        self.rope = rope
        H, K, D = a.num_heads, a.num_kv_heads, a.head_dim
        self.q_proj = nn.Linear(hidden, (2 if a.output_gate else 1) * H * D, bias=a.qkv_bias, **dd)  # [q, gate]
        self.k_proj = nn.Linear(hidden, K * D, bias=a.qkv_bias, **dd)
        self.v_proj = nn.Linear(hidden, K * D, bias=a.qkv_bias, **dd)
        self.o_proj = nn.Linear(H * D, hidden, bias=a.o_bias, **dd)
        if a.qk_norm is True:
            self.q_norm = RMSNorm(D, dd)
            self.k_norm = RMSNorm(D, dd)
        elif a.qk_norm == "full":
            self.q_norm = RMSNorm(H * D, dd)
            self.k_norm = RMSNorm(K * D, dd)
        self.sinks = nn.Parameter(torch.zeros(H, **dd)) if a.sinks else None
        self.rotary_dim = (a.rotary_dim or a.head_dim) if a.rope else 0

    @torch.no_grad()
    def init_params(self, std: float, g: torch.Generator) -> None:
        """Sink logits ~ N(0, 1) (``Model.init_weights`` calls this; the projections are Linear layers it
        draws itself): of the order of the scores, so a sink takes a visible share of each softmax."""
        if self.sinks is not None:
            self.sinks.normal_(0.0, 1.0, generator=g)

    def static_decode(self) -> bool:
        """Whether a decode step may take its position as a device tensor (``Model.decode_static``):
        plain causal attention over a linear cache (no ring buffer, chunks, sinks or soft-capping)."""
        a = self.a
        return a.sliding_window is None and a.attention_chunk is None and not a.sinks and a.softcap is None

    def cache_slots(self, max_len: int) -> int:
        cap = self.a.sliding_window if self.a.sliding_window is not None else self.a.attention_chunk
        return max_len if cap is None else min(max_len, cap)

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        shape = (batch, self.a.num_kv_heads, self.cache_slots(max_len), self.a.head_dim)
        return [torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)]

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        a = self.a
        B, S, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # [B, S, H*D], [B, S, K*D] x 2
        gate = None
        if a.output_gate:  # Qwen3NextAttention: per head [query (D), gate (D)]
            q, gate = q.view(B, S, a.num_heads, 2 * a.head_dim).split(a.head_dim, dim=-1)  # [B, S, H, D] x 2
            if a.qk_norm == "full" or a.clip_qkv is not None:
                q = q.reshape(B, S, a.num_heads * a.head_dim)
        if a.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        if a.clip_qkv is not None:  # after the full-width norms, as OlmoeAttention
            c = a.clip_qkv
            q, k, v = q.clamp_(-c, c), k.clamp_(-c, c), v.clamp_(-c, c)
        q = q.reshape(B, S, a.num_heads, a.head_dim).transpose(1, 2)  # [B, H, S, D]
        k = k.view(B, S, a.num_kv_heads, a.head_dim).transpose(1, 2)  # [B, K, S, D]
        v = v.view(B, S, a.num_kv_heads, a.head_dim).transpose(1, 2)  # [B, K, S, D]
        if a.qk_norm is True:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary_dim:
            cos, sin = self.rope.get(self.rotary_dim, a.rope_theta, pos, S, x.device, q.dtype)  # [S, rd]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if a.qk_norm == "l2":
            q, k = l2_norm(q), l2_norm(k)
        if isinstance(pos, torch.Tensor):  # a static-shape decode step (``Model.decode_static``)
            assert state is not None and S == 1
            out = static_decode_attention(q, k, v, state[0], state[1], pos, a.scale)
        elif a.attention_chunk is not None:
            out = self._attend_chunked(q, k, v, pos, state)
        else:
            out = self._attend(q, k, v, pos, state)  # [B, H, S, D]
        if gate is not None:  # o_proj(out * sigmoid(gate)), Qwen3NextAttention
            gated = torch.sigmoid(gate).mul_(out.transpose(1, 2))  # [B, S, H, D], token-major
            return self.o_proj(gated.view(B, S, a.num_heads * a.head_dim))
        return self.o_proj(out.transpose(1, 2).reshape(B, S, a.num_heads * a.head_dim))

    def _sdpa(self, q, k, v, mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        return attention(q, k, v, mask, is_causal, self.a.scale, self.sinks, self.a.softcap)

    def _attend(self, q, k, v, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        S = q.shape[2]
        window = self.a.sliding_window
        if state is None or pos == 0:
            # fresh sequence: attend over the new tokens only (and store them)
            if state is not None:
                self._store(state, k, v, pos)
            if window is not None and S > window:
                idx = torch.arange(S, device=q.device)
                return self._sdpa(q, k, v, mask=band_mask(idx, idx, window))
            return self._sdpa(q, k, v, is_causal=bool(S > 1))
        kc, vc = state  # [B, K, slots, D]
        slots = kc.shape[2]
        ring = window is not None and slots == window
        if not ring:  # linear cache: positions 0..pos+S-1 live in slots 0..pos+S-1
            self._store(state, k, v, pos)
            keys, values = kc[:, :, : pos + S], vc[:, :, : pos + S]  # [B, K, T, D]
            if S == 1:
                return self._sdpa(q, keys.to(q.dtype), values.to(q.dtype))
            q_pos = torch.arange(pos, pos + S, device=q.device)
            k_pos = torch.arange(0, pos + S, device=q.device)
            return self._sdpa(q, keys.to(q.dtype), values.to(q.dtype), mask=band_mask(q_pos, k_pos, window))
        assert window is not None
        if S == 1:  # the ring holds exactly the last `window` positions once this token is written
            self._store(state, k, v, pos)
            filled = min(pos + 1, window)
            return self._sdpa(q, kc[:, :, :filled].to(q.dtype), vc[:, :, :filled].to(q.dtype))
        # chunked prefill into a ring: previous keys in chronological order, then the new ones
        prev = min(pos, window)
        shift = pos % window if pos >= window else 0
        kp = torch.roll(kc, -shift, dims=2)[:, :, :prev] if shift else kc[:, :, :prev]  # [B, K, prev, D]
        vp = torch.roll(vc, -shift, dims=2)[:, :, :prev] if shift else vc[:, :, :prev]
        keys = torch.cat((kp.to(q.dtype), k), dim=2)  # [B, K, prev + S, D]
        values = torch.cat((vp.to(q.dtype), v), dim=2)
        q_pos = torch.arange(pos, pos + S, device=q.device)
        k_pos = torch.arange(pos - prev, pos + S, device=q.device)
        out = self._sdpa(q, keys, values, mask=band_mask(q_pos, k_pos, window))
        self._store(state, k, v, pos)
        return out

    def _attend_chunked(self, q, k, v, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        """Chunked local attention, one chunk at a time: the new tokens pos..pos+S-1 are cut at chunk
        boundaries (multiples of C); each piece attends causally to itself and, for a piece that continues
        a chunk begun before ``pos``, to that chunk's cached keys (slots 0 .. start % C - 1). Each piece's
        output is written into one output tensor laid out [B, S, H, D], so o_proj reads it without a copy."""
        B, H, S, D = q.shape
        C = self.a.attention_chunk
        assert C is not None
        out = q.new_empty(B, S, H, D).transpose(1, 2)  # [B, H, S, D] view of [B, S, H, D]
        start = pos
        while start < pos + S:
            end = min(start - start % C + C, pos + S)  # this piece: positions start..end-1, one chunk
            i, j = start - pos, end - pos
            qs, ks, vs = q[:, :, i:j], k[:, :, i:j], v[:, :, i:j]
            prev = start % C  # tokens of this chunk already in the cache (only for the first piece)
            if prev and state is not None:
                kc, vc = state
                ks = torch.cat((kc[:, :, :prev].to(q.dtype), ks), dim=2)  # [B, K, prev + n, D]
                vs = torch.cat((vc[:, :, :prev].to(q.dtype), vs), dim=2)
                if j - i == 1:
                    piece = self._sdpa(qs, ks, vs)
                else:
                    q_pos = torch.arange(start, end, device=q.device)
                    piece = self._sdpa(
                        qs, ks, vs, mask=band_mask(q_pos, torch.arange(start - prev, end, device=q.device), None)
                    )
            else:
                piece = self._sdpa(qs, ks, vs, is_causal=bool(j - i > 1))
            out[:, :, i:j] = piece
            del piece
            start = end
        if state is not None:  # keep the last chunk's new tokens: position p in slot p % C
            kc, vc = state
            last = max(pos, pos + S - 1 - (pos + S - 1) % C)
            s0, n = last % C, pos + S - last
            kc[:, :, s0 : s0 + n] = k[:, :, last - pos :]
            vc[:, :, s0 : s0 + n] = v[:, :, last - pos :]
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
