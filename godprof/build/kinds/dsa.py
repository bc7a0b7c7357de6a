"""Build of ``type: dsa`` (``godprof.kinds.dsa``): DeepSeek Sparse Attention, MLA plus a lightning indexer.

Shape legend (besides ``godprof.build.layers``'): Hi index heads, Di index head dim, kk keys each query
keeps (min(T, index_topk)), c queries in one block.
"""

from __future__ import annotations

import torch
from torch import nn

from godprof.build.kinds.mla import MLAttention
from godprof.build.layers import FactoryKwargs, RotaryTables, apply_rope
from godprof.build.sdpa import sdpa
from godprof.kinds.dsa import DSA


class Indexer(nn.Module):
    """The lightning indexer, as transformers' DeepseekV32Indexer (parameter names included).

    q: wq_b on the normed q latent; k: wk -> k_norm (LayerNorm with bias); rotary (half-split, like
    transformers') on the first qk_rope_head_dim features of both; one weight per index head from
    weights_proj. Scores: sum_h w_h relu(q_h . k / sqrt(Di)), in fp32.
    """

    def __init__(self, a: DSA, hidden: int, dd: FactoryKwargs):
        super().__init__()
        self.a = a
        Hi, Di = a.index_n_heads, a.index_head_dim
        self.wq_b = nn.Linear(a.q_rank, Hi * Di, bias=False, **dd)
        self.wk = nn.Linear(hidden, Di, bias=False, **dd)
        self.k_norm = nn.LayerNorm(Di, eps=1e-6, **dd)
        self.weights_proj = nn.Linear(hidden, Hi, bias=False, **dd)

    def project(
        self, x: torch.Tensor, q_resid: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q [B, S, Hi, Di], k [B, S, Di], head weights [B, S, Hi] fp32, scaled by Hi^-1/2)."""
        B, S, _ = x.shape
        a = self.a
        q = self.wq_b(q_resid).view(B, S, a.index_n_heads, a.index_head_dim)
        q = apply_rope(q, cos[:, None], sin[:, None])  # [B, S, Hi, Di]: cos/sin broadcast over the heads
        k = apply_rope(self.k_norm(self.wk(x)), cos, sin)  # [B, S, Di]
        w = self.weights_proj(x).float() * a.index_n_heads**-0.5  # [B, S, Hi]
        return q, k, w


def index_scores(
    q: torch.Tensor,  # [B, c, Hi, Di]
    k: torch.Tensor,  # [B, T, Di] fp32
    w: torch.Tensor,  # [B, c, Hi] fp32
    q_pos: torch.Tensor,  # [c] absolute positions of the queries
) -> torch.Tensor:  # [B, c, T] fp32, -inf past each query
    """The indexer's scores, in transformers' order of operations (its top-k must pick the same keys)."""
    B, c, Hi, Di = q.shape
    s = torch.matmul(q.float().reshape(B, c * Hi, Di), k.transpose(-1, -2)).view(B, c, Hi, -1)  # [B, c, Hi, T]
    s.mul_(Di**-0.5).relu_()
    out = torch.matmul(w.unsqueeze(-2), s).squeeze(-2)  # [B, c, T]: weighted sum over the index heads
    del s
    future = torch.arange(k.shape[1], device=k.device)[None, :] > q_pos[:, None]  # [c, T]
    return out.masked_fill_(future, float("-inf"))


class DSAttention(MLAttention):
    """MLA (``MLAttention``'s parameters and latent decode) whose queries attend only to the
    ``index_topk`` keys the indexer ranks highest among the causal ones.

    Cache: MLA's [B, max_len, kv_lora_rank + rope] latent buffer and the indexer's keys [B, max_len, Di].

    Prefill decompresses K and V as MLA does. The indexer scores every query against every key (in
    blocks of ``DSA.query_block`` queries). With T <= index_topk keys its top-k is every key: the
    attention is MLA's dense SDPA under the selection as a mask (the causal one). Past that each query
    gathers its top-k keys and values and attends to them (keys past the query, picked only while it has
    fewer than index_topk causal keys, are masked).
    A decode step scores the cached index keys, gathers the top-k cached latents and attends to them in
    the latent space with kv_b_proj absorbed (``MLAttention._decode_absorbed``).

    Equal scores (a key whose every index head the relu clips to 0 scores exactly 0) are ranked in
    torch.topk's order, which may differ between a prefill, a decode step and transformers: with few
    index heads such ties at the top-k boundary are common, with DeepSeek's 64 they are rare. Like
    MLAttention, the yarn softmax-scale correction of rope-scaled configs is not applied.
    """

    def __init__(self, a: DSA, hidden: int, dd: FactoryKwargs, rope: RotaryTables):
        super().__init__(a, hidden, dd, rope)
        self.a: DSA = a
        self.indexer = Indexer(a, hidden, dd)

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        keys = torch.zeros(batch, max_len, self.a.index_head_dim, dtype=dtype, device=device)
        return [*super().allocate(batch, max_len, dtype, device), keys]

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        a = self.a
        B, S, _ = x.shape
        H, r, nope, rope_d = a.num_heads, a.kv_lora_rank, a.qk_nope_head_dim, a.qk_rope_head_dim
        q_resid = self.q_a_layernorm(self.q_a_proj(x))  # [B, S, q_lora_rank]
        q = self.q_b_proj(q_resid).view(B, S, H, a.qk_head_dim).transpose(1, 2)  # [B, H, S, nope + rope]
        q_nope, q_pe = q[..., :nope], q[..., nope:]
        ckv = self.kv_a_proj_with_mqa(x)  # [B, S, r + rope]
        latent = self.kv_a_layernorm(ckv[..., :r])  # [B, S, r]
        k_pe = ckv[..., r:]  # [B, S, rope]
        cos, sin = self.rope.get(rope_d, a.rope_theta, pos, S, x.device, q.dtype)  # [S, rope]
        q_pe = apply_rope(q_pe, cos, sin)  # [B, H, S, rope]
        k_pe = apply_rope(k_pe, cos, sin)  # [B, S, rope]
        iq, ik, iw = self.indexer.project(x, q_resid, cos, sin)  # [B, S, Hi, Di], [B, S, Di], [B, S, Hi]
        del q_resid
        if state is not None:
            buf, kbuf = state  # [B, max_len, r + rope], [B, max_len, Di]
            if pos + S > buf.shape[1]:
                raise ValueError(f"cache holds {buf.shape[1]} tokens; cannot write positions {pos}..{pos + S - 1}")
            buf[:, pos : pos + S, :r] = latent
            buf[:, pos : pos + S, r:] = k_pe
            kbuf[:, pos : pos + S] = ik
            if S == 1:
                out = self._decode_sparse(q_nope, q_pe, iq, iw, buf[:, : pos + 1], kbuf[:, : pos + 1])
                return self.o_proj(out.transpose(1, 2).reshape(B, S, H * a.v_head_dim))
            if pos > 0:  # chunked prefill: everything cached so far
                latent, k_pe = buf[:, : pos + S, :r].to(q.dtype), buf[:, : pos + S, r:].to(q.dtype)
                ik = kbuf[:, : pos + S].to(q.dtype)
        T = latent.shape[1]
        kv = self.kv_b_proj(latent).view(B, T, H, nope + a.v_head_dim).transpose(1, 2)  # [B, H, T, nope + v]
        k_nope, v = kv[..., :nope], kv[..., nope:]
        k = torch.cat((k_nope, k_pe[:, None].expand(B, H, T, rope_d)), dim=-1)  # [B, H, T, nope + rope]
        q = torch.cat((q_nope, q_pe), dim=-1)  # [B, H, S, nope + rope]
        q_pos = torch.arange(pos, pos + S, device=x.device)
        if T <= a.index_topk:
            out = sdpa(q, k, v, mask=self._selection_mask(iq, ik, iw, q_pos), scale=self.scale)  # [B, H, S, v]
        else:
            out = self._prefill_sparse(q, k, v, iq, ik, iw, q_pos)
        return self.o_proj(out.transpose(1, 2).reshape(B, S, H * a.v_head_dim))

    def _selection_mask(
        self, iq: torch.Tensor, ik: torch.Tensor, iw: torch.Tensor, q_pos: torch.Tensor
    ) -> torch.Tensor:  # [B, 1, S, T] bool, True = attend
        """The indexer's selection as a mask over the dense scores (transformers' eager/SDPA path; DeepSeek's
        "masked MHA mode" for short prefills). Used while T <= index_topk, where the top-k is every key and
        the mask is the causal one; it is still built from the scores, so the indexer's work feeds the
        output (a tracer such as fvcore's would otherwise drop it as dead code)."""
        B, S = iq.shape[:2]
        T = ik.shape[1]
        kf = ik.float()  # [B, T, Di]
        mask = torch.zeros(B, 1, S, T, dtype=torch.bool, device=ik.device)
        picked = torch.ones(1, 1, 1, dtype=torch.bool, device=ik.device)
        c = self.a.query_block(B, S, T)
        for s0 in range(0, S, c):
            idx = index_scores(iq[:, s0 : s0 + c], kf, iw[:, s0 : s0 + c], q_pos[s0 : s0 + c]).topk(T, dim=-1).indices
            mask[:, 0, s0 : s0 + c].scatter_(-1, idx, picked.expand_as(idx))  # [B, c, T]
            del idx
        causal = torch.ones(S, T, dtype=torch.bool, device=ik.device).tril_(T - S)  # key j <= query position
        return mask.logical_and_(causal)

    def _prefill_sparse(
        self,
        q: torch.Tensor,  # [B, H, S, qk]
        k: torch.Tensor,  # [B, H, T, qk]
        v: torch.Tensor,  # [B, H, T, v]
        iq: torch.Tensor,  # [B, S, Hi, Di]
        ik: torch.Tensor,  # [B, T, Di]
        iw: torch.Tensor,  # [B, S, Hi]
        q_pos: torch.Tensor,  # [S]
    ) -> torch.Tensor:  # [B, H, S, v]
        """Each query attends to its index_topk selected keys, one block of queries at a time."""
        B, H, S, dqk = q.shape
        T, dv = k.shape[2], v.shape[-1]
        kk = self.a.index_topk
        out = q.new_empty(B, H, S, dv)
        kf = ik.float()  # [B, T, Di]
        c = self.a.query_block(B, S, T)
        for s0 in range(0, S, c):
            s1 = min(S, s0 + c)
            n = s1 - s0
            idx = index_scores(iq[:, s0:s1], kf, iw[:, s0:s1], q_pos[s0:s1]).topk(kk, dim=-1).indices  # [B, c, kk]
            drop = (idx > q_pos[s0:s1, None])[:, None]  # [B, 1, c, kk]: picked past the query (fewer causal keys)
            at = idx[:, None, :, :, None]  # [B, 1, c, kk, 1]
            k_sel = torch.gather(k[:, :, None].expand(B, H, n, T, dqk), 3, at.expand(B, H, n, kk, dqk))
            scores = torch.matmul(q[:, :, s0:s1, None], k_sel.transpose(-1, -2)).squeeze(-2)  # [B, H, c, kk]
            del k_sel
            scores = scores.float().mul_(self.scale).masked_fill_(drop, float("-inf"))
            probs = scores.softmax(dim=-1).to(q.dtype)  # [B, H, c, kk]
            del scores
            v_sel = torch.gather(v[:, :, None].expand(B, H, n, T, dv), 3, at.expand(B, H, n, kk, dv))
            out[:, :, s0:s1] = torch.matmul(probs[..., None, :], v_sel).squeeze(-2)  # [B, H, c, v]
            del idx, drop, at, probs, v_sel
        return out

    def _decode_sparse(
        self,
        q_nope: torch.Tensor,  # [B, H, 1, nope]
        q_pe: torch.Tensor,  # [B, H, 1, rope]
        iq: torch.Tensor,  # [B, 1, Hi, Di]
        iw: torch.Tensor,  # [B, 1, Hi]
        cached: torch.Tensor,  # [B, T, r + rope]
        keys: torch.Tensor,  # [B, T, Di]
    ) -> torch.Tensor:  # [B, H, 1, v]
        """One query against its top-k cached latents (all of them, in score order, while T <= index_topk)."""
        B, T, width = cached.shape
        kk = min(T, self.a.index_topk)
        q_pos = torch.full((1,), T - 1, device=cached.device)
        idx = index_scores(iq, keys.float(), iw, q_pos)[:, 0].topk(kk, dim=-1).indices  # [B, kk]
        selected = torch.gather(cached, 1, idx[..., None].expand(B, kk, width))  # [B, kk, r + rope]
        return self._decode_absorbed(q_nope, q_pe, selected.to(q_nope.dtype))
