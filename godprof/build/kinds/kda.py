"""Build of ``type: kda`` (``godprof.kinds.kda``) in pure PyTorch, following transformers'
``KimiDeltaAttention`` (models/kimi_linear) module by module. Prefill runs the chunked gated delta rule
with channel-wise decay (transformers' torch fallback ``chunk_kimi_delta_attention``, itself
flash-linear-attention's naive chunk KDA), one chunk at a time; a decode step is the O(1) recurrence
(``recurrent_kimi_delta_attention``, fla's naive recurrent KDA). Cache: conv window
[B, 3 x heads x head_dim, d_conv] and state [B, heads, head_dim (k), head_dim (v)], in the cache dtype
(transformers keeps the state in fp32; here the cache holds exactly the analytic state bytes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from godprof.build.fused import fused_causal_conv, load_conv
from godprof.build.layers import FactoryKwargs, RMSNorm, RotaryTables
from godprof.build.scan import dt_init
from godprof.kinds.kda import KDA


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum x^2 + eps) over the last dim (fla's l2norm, as transformers' kimi_linear)."""
    return x / torch.sqrt((x * x).sum(dim=-1, keepdim=True) + eps)


def kda_chunked(
    q: torch.Tensor,  # [b, H, L, d]  L2-normed and scaled
    k: torch.Tensor,  # [b, H, L, d]  L2-normed
    v: torch.Tensor,  # [b, H, L, d]
    g: torch.Tensor,  # [b, H, L, d]  log decay per channel (<= 0)
    beta: torch.Tensor,  # [b, H, L]
    chunk: int,
    h0: torch.Tensor,  # [b, H, d, d] initial state (k x v)
) -> tuple[torch.Tensor, torch.Tensor]:  # o [b, H, L, d], final state [b, H, d, d]
    """Chunked gated delta rule with channel-wise decay (KDA), fp32.

    Zero-padded to a multiple of the chunk (g = 0, beta = 0, k = v = 0 there: the state passes
    unchanged). Per chunk of Q tokens, with G = cumsum of g inside the chunk and the decay
    D[i, j, :] = exp(G_i - G_j) for j <= i (never above 1):
    A = strict-lower (beta_i k_i D_ij) . k_j, T = (I + A)^-1 (WY form of the delta rule), u = T (beta v),
    w = T (beta k exp(G)); then with the entering state S: v' = u - w S,
    o = (q exp(G)) S + tril(q_i D_ij . k_j) v', S <- exp(G_Q) S + (k exp(G_Q - G))^T v'.
    The pair products run as broadcasts over [Q, Q, d] (the channel decay sits inside the dot product);
    every other product is one batched matmul (what ``KDA.scan_matmul_flops`` counts).
    """
    b, H, L, d = k.shape
    pad = (-L) % chunk
    if pad:
        q, k, v, g = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v, g))
        beta = F.pad(beta, (0, pad))
    c, Q = (L + pad) // chunk, chunk
    q, k, v, g = (t.view(b, H, c, Q, d) for t in (q, k, v, g))
    beta = beta.view(b, H, c, Q, 1)
    g = g.cumsum(dim=-2)  # G within each chunk
    incl = torch.tril(torch.ones(Q, Q, dtype=torch.bool, device=k.device))  # j <= i
    strict = torch.tril(incl, diagonal=-1)  # j < i
    eye = torch.eye(Q, dtype=k.dtype, device=k.device)
    o = torch.empty_like(v)
    S = h0
    for n in range(c):
        qn, kn, vn, gn, bn = q[:, :, n], k[:, :, n], v[:, :, n], g[:, :, n], beta[:, :, n]  # [b, H, Q, d|1]
        decay = (gn[:, :, :, None] - gn[:, :, None]).masked_fill_(~incl[..., None], float("-inf")).exp_()  # [b,H,Q,Q,d]
        A = ((kn * bn)[:, :, :, None] * kn[:, :, None] * decay).sum(-1).masked_fill_(~strict, 0)  # [b, H, Q, Q]
        Aqk = (qn[:, :, :, None] * kn[:, :, None] * decay).sum(-1).masked_fill_(~incl, 0)  # [b, H, Q, Q]
        del decay
        T = torch.linalg.solve_triangular(A + eye, eye, upper=False, unitriangular=True)  # (I + A)^-1
        del A
        eg = gn.exp()  # [b, H, Q, d]
        u = torch.matmul(T, vn * bn)  # [b, H, Q, d]
        w = torch.matmul(T, kn * bn * eg)
        del T
        v_new = u - torch.matmul(w, S)  # [b, H, Q, d]
        o[:, :, n] = torch.matmul(qn * eg, S) + torch.matmul(Aqk, v_new)
        last = gn[:, :, -1:]  # [b, H, 1, d]
        S = S * last.exp().transpose(-1, -2) + torch.matmul((kn * (last - gn).exp()).transpose(-1, -2), v_new)
    return o.view(b, H, c * Q, d)[:, :, :L], S


def kda_step(
    q: torch.Tensor,  # [b, H, d]  L2-normed and scaled
    k: torch.Tensor,  # [b, H, d]
    v: torch.Tensor,  # [b, H, d]
    g: torch.Tensor,  # [b, H, d]
    beta: torch.Tensor,  # [b, H]
    S: torch.Tensor,  # [b, H, d, d]
) -> tuple[torch.Tensor, torch.Tensor]:  # o [b, H, d], new state
    """One token of the recurrence (fla's naive recurrent KDA): decay, delta-rule update, read-out."""
    S = S * g.exp()[..., None]
    kv_mem = torch.matmul(k[:, :, None], S)[:, :, 0]  # S^T k [b, H, d]
    delta = (v - kv_mem) * beta[..., None]
    S = S + k[..., None] * delta[:, :, None]
    return torch.matmul(q[:, :, None], S)[:, :, 0], S


class GatedHeadNorm(RMSNorm):
    """Kimi's o_norm: RMSNorm over each head (weight head_dim) in fp32, times sigmoid(gate)."""

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        if gate is not None:
            xf = xf * torch.sigmoid(gate.float())
        return xf.to(dtype)


class KimiDeltaAttention(nn.Module):
    """q/k/v projections -> causal depthwise conv + SiLU -> L2-normed q, k -> KDA with the channel-wise
    forget gate g = -exp(A_log) softplus(f_b(f_a(x)) + dt_bias) and beta = sigmoid(b_proj(x)) -> gated
    per-head RMSNorm with gate g_b(g_a(x)) -> o_proj."""

    def __init__(self, m: KDA, hidden: int, dd: FactoryKwargs, rope: RotaryTables | None = None):
        super().__init__()
        self.m = m
        self._conv_kernels: tuple | None = None  # causal_conv1d's (fn, update) under --kernels fused
        D, H, r = m.dim, m.num_heads, m.rank
        self.q_proj = nn.Linear(hidden, D, bias=False, **dd)
        self.k_proj = nn.Linear(hidden, D, bias=False, **dd)
        self.v_proj = nn.Linear(hidden, D, bias=False, **dd)
        self.conv1d = nn.Conv1d(3 * D, 3 * D, m.d_conv, groups=3 * D, bias=False, **dd)  # over [q, k, v]
        self.f_a_proj = nn.Linear(hidden, r, bias=False, **dd)
        self.f_b_proj = nn.Linear(r, D, bias=False, **dd)
        self.dt_bias = nn.Parameter(torch.empty(D, **dd))
        self.A_log = nn.Parameter(torch.empty(H, **dd))
        self.b_proj = nn.Linear(hidden, H, bias=False, **dd)
        self.g_a_proj = nn.Linear(hidden, r, bias=False, **dd)
        self.g_b_proj = nn.Linear(r, D, bias=False, **dd)
        self.o_norm = GatedHeadNorm(m.head_dim, dd, eps=1e-5)
        self.o_proj = nn.Linear(D, hidden, bias=False, **dd)

    @torch.no_grad()
    def init_ssm(self, g: torch.Generator) -> None:
        """As fla and transformers: A = U(1, 16) per head (A_log its log), dt_bias = softplus^-1(dt) with
        dt log-uniform in [1e-3, 1e-1]."""
        dev = self.A_log.device
        a = 1.0 + 15.0 * torch.rand(self.m.num_heads, generator=g, device=dev, dtype=torch.float32)
        self.A_log.copy_(a.log())
        self.dt_bias.copy_(dt_init(self.m.dim, g, dev))

    def fused(self, device: torch.device) -> str:
        """``--kernels fused``: the causal conv on causal_conv1d's kernels. Returns what will run; raises
        ``godprof.build.fused.FusedUnavailable`` (this kind keeps the reference) off CUDA or without the
        package. The delta rule stays the reference (flash-linear-attention's KDA kernels are not wired yet): the
        implementation says so."""
        self._conv_kernels = load_conv(device)
        return "causal_conv1d (conv) + reference delta rule"

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        m = self.m
        return [
            torch.zeros(batch, m.conv_dim, m.d_conv, dtype=dtype, device=device),  # conv window over [q, k, v]
            torch.zeros(batch, m.num_heads, m.head_dim, m.head_dim, dtype=dtype, device=device),  # state (k x v)
        ]

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        m = self.m
        B, S, _ = x.shape
        D, H, d = m.dim, m.num_heads, m.head_dim
        qkv = torch.cat((self.q_proj(x), self.k_proj(x), self.v_proj(x)), dim=-1).transpose(1, 2)  # [B, 3D, S]
        conv = fused_causal_conv(self._conv_kernels, self.conv1d, qkv, pos, state[0] if state else None)  # [B, 3D, S]
        del qkv
        F.silu(conv, inplace=True)
        # head-major fp32 q, k, v [B, H, S, d] (views of the conv output when it is fp32)
        q, k, v = (t.view(B, H, d, S).transpose(-1, -2).float() for t in conv.split(D, dim=1))
        del conv
        q = l2norm(q).mul_(d**-0.5)
        k = l2norm(k)
        f = self.f_b_proj(self.f_a_proj(x)).float() + self.dt_bias.float()  # [B, S, D]
        gdecay = F.softplus(f).view(B, S, H, d).mul_(-torch.exp(self.A_log.float())[:, None])  # [B, S, H, d]
        del f
        gdecay = gdecay.transpose(1, 2)  # [B, H, S, d] log decay per channel
        beta = torch.sigmoid(self.b_proj(x).float()).transpose(1, 2)  # [B, H, S]
        if state is not None and pos > 0:
            h0 = state[1].float()
        else:
            h0 = torch.zeros(B, H, d, d, device=x.device, dtype=torch.float32)
        if S == 1 and state is not None:  # recurrent step
            o, h = kda_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], gdecay[:, :, 0], beta[:, :, 0], h0)
            o = o[:, :, None]  # [B, H, 1, d]
        else:
            o, h = kda_chunked(q, k, v, gdecay, beta, min(m.chunk_size, S), h0)  # [B, H, S, d]
        del q, k, v, gdecay, beta, h0
        if state is not None:
            state[1].copy_(h)
        del h
        gate = self.g_b_proj(self.g_a_proj(x)).view(B, S, H, d)
        o = o.transpose(1, 2).to(x.dtype)  # [B, S, H, d], in x's dtype as transformers' core_attn_out
        y = self.o_norm(o, gate).reshape(B, S, D)  # [B, S, D]
        del o, gate
        return self.o_proj(y)
