"""Build of ``type: mla`` (``godprof.kinds.mla``): DeepSeek's multi-head latent attention."""

from __future__ import annotations

import math

import torch
from torch import nn

from godprof.build.layers import FactoryKwargs, RMSNorm, RotaryTables, apply_rope
from godprof.build.sdpa import band_mask, masked_decode, sdpa
from godprof.kinds.mla import MLA


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
        if a.rope:  # a NoPE latent attention (Kimi Linear) keeps the rope dims as they are
            cos, sin = self.rope.get(rope_d, a.rope_theta, pos, S, x.device, q.dtype)  # [S, rope]
            q_pe = apply_rope(q_pe, cos, sin)  # [B, H, S, rope]
            k_pe = apply_rope(k_pe, cos, sin)  # [B, S, rope]
        if isinstance(pos, torch.Tensor):  # a static-shape decode step (``Model.decode_static``)
            assert state is not None and S == 1
            buf = state[0]  # [B, max_len, r + rope]: write this token's slot, attend the whole buffer masked
            buf.index_copy_(1, pos.reshape(1), torch.cat((latent, k_pe), dim=-1).to(buf.dtype))
            out = self._decode_absorbed(q_nope, q_pe, buf.to(q.dtype), pos)  # [B, H, 1, v]
            return self.o_proj(out.transpose(1, 2).reshape(B, S, H * a.v_head_dim))
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
            out = sdpa(q, k, v, is_causal=bool(S > 1), scale=self.scale)  # [B, H, S, v]
        else:
            q_pos = torch.arange(pos, pos + S, device=x.device)
            mask = band_mask(q_pos, torch.arange(T, device=x.device), None)
            out = sdpa(q, k, v, mask=mask, scale=self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(B, S, H * a.v_head_dim))

    def static_decode(self) -> bool:
        """Whether a decode step may take its position as a device tensor (``Model.decode_static``): yes,
        unless a subclass brings its own forward (DeepSeek Sparse Attention's indexer), which must say."""
        return type(self).forward is MLAttention.forward

    def _decode_absorbed(
        self, q_nope: torch.Tensor, q_pe: torch.Tensor, cached: torch.Tensor, pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One query per sequence against the cached latents, with kv_b_proj absorbed (with ``pos``, a
        static step: the whole buffer under a mask that shows slots 0..pos).

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
        if pos is not None:
            o_lat = masked_decode(q_cat, keys, values, pos, self.scale)  # [B, H, 1, r]
        else:
            o_lat = sdpa(q_cat, keys, values, scale=self.scale)  # [B, H, 1, r]
        return torch.einsum("bhsr,hvr->bhsv", o_lat, w_uv)  # [B, H, 1, v]
