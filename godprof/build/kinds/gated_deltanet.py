"""Build of ``type: gated_deltanet`` (``godprof.kinds.gated_deltanet``) in pure PyTorch, following
transformers' ``Qwen3NextGatedDeltaNet`` (parameter names and the per-key-head projection layout, so
checkpoints map one to one). Prefill runs the chunked gated delta rule of transformers'
``torch_chunk_gated_delta_rule`` (flash-linear-attention's ``naive_chunk_gated_delta_rule``): a UT
transform within each chunk (two unit-triangular solves), then a sequential pass over the chunks
carrying the state. A decode step is the O(1) recurrence (``torch_recurrent_gated_delta_rule``). Cache:
conv window [B, conv channels, d_conv] and state [B, value heads, d_k, d_v].

Shape legend: B batch, S new tokens, Hk key heads, Hv value heads, dk / dv head dims, c chunks of Q.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from godprof.build.fused import fused_causal_conv, load, load_conv
from godprof.build.layers import FactoryKwargs, RotaryTables
from godprof.build.scan import dt_init
from godprof.kinds.gated_deltanet import GatedDeltaNet

L2_EPS = 1e-6  # transformers' / fla's l2norm


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim (fla's and transformers' ``l2norm``)."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + L2_EPS)


def chunk_gated_delta_rule(
    q: torch.Tensor,  # [B, Hv, S, dk] fp32, L2-normed and scaled
    k: torch.Tensor,  # [B, Hv, S, dk] fp32, L2-normed
    v: torch.Tensor,  # [B, Hv, S, dv] fp32
    g: torch.Tensor,  # [B, Hv, S] log decay (<= 0)
    beta: torch.Tensor,  # [B, Hv, S]
    chunk: int,
    h0: torch.Tensor,  # [B, Hv, dk, dv] initial state
) -> tuple[torch.Tensor, torch.Tensor]:  # output [B, Hv, S, dv], final state [B, Hv, dk, dv]
    """The gated delta rule in chunked form (transformers' ``torch_chunk_gated_delta_rule``), fp32.

    The sequence is zero-padded to a multiple of the chunk (g = 0, beta = 0, k = 0 there: no decay, no
    write, so the final state is the one after the last real token). Within a chunk, with cumulative log
    decay G and pairwise decays D[i, j] = exp(G_i - G_j) (j <= i): the UT system (beta k) k^T * D and the
    intra-chunk attention q k^T * D; two unit lower-triangular solves give the corrected values u and the
    decayed keys w that read the entering state. Across chunks: v_new = u - w S, o = (q e^G) S + A v_new,
    S <- e^{G_last} S + (k e^{G_last - G})^T v_new. Every product is one batched matmul.
    """
    b, H, L, dk = k.shape
    dv = v.shape[-1]
    pad = (-L) % chunk
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        g, beta = F.pad(g, (0, pad)), F.pad(beta, (0, pad))
    c, Q = (L + pad) // chunk, chunk
    k_beta = (k * beta[..., None]).view(b, H, c, Q, dk)
    v_beta = (v * beta[..., None]).view(b, H, c, Q, dv)
    del v, beta
    q, k = q.view(b, H, c, Q, dk), k.view(b, H, c, Q, dk)
    G = g.view(b, H, c, Q).cumsum(dim=-1)  # [b, H, c, Q]
    upper = torch.ones(Q, Q, dtype=torch.bool, device=q.device).triu(1)
    decay = (G[..., :, None] - G[..., None, :]).masked_fill_(upper, float("-inf")).exp_()  # [b, H, c, Q, Q]
    ut = torch.matmul(k_beta, k.transpose(-1, -2)).mul_(decay)  # [b, H, c, Q, Q]
    attn = torch.matmul(q, k.transpose(-1, -2)).mul_(decay)  # [b, H, c, Q, Q]
    del decay
    u = torch.linalg.solve_triangular(ut, v_beta, upper=False, unitriangular=True)  # [b, H, c, Q, dv]
    del v_beta
    k_beta *= G.exp()[..., None]
    w = torch.linalg.solve_triangular(ut, k_beta, upper=False, unitriangular=True)  # [b, H, c, Q, dk]
    del ut, k_beta
    q = q * G.exp()[..., None]
    k = k * (G[..., -1:] - G).exp()[..., None]
    chunk_decay = G[..., -1].exp()[..., None, None]  # [b, H, c, 1, 1]
    out = u.new_empty(b, H, c, Q, dv)
    S = h0
    for i in range(c):
        v_new = u[:, :, i] - torch.matmul(w[:, :, i], S)  # [b, H, Q, dv]
        out[:, :, i] = torch.matmul(q[:, :, i], S) + torch.matmul(attn[:, :, i], v_new)
        S = S * chunk_decay[:, :, i] + torch.matmul(k[:, :, i].transpose(-1, -2), v_new)
    return out.view(b, H, c * Q, dv)[:, :, :L], S


def recurrent_step(
    q: torch.Tensor,  # [B, Hv, dk]
    k: torch.Tensor,  # [B, Hv, dk]
    v: torch.Tensor,  # [B, Hv, dv]
    g: torch.Tensor,  # [B, Hv]
    beta: torch.Tensor,  # [B, Hv]
    h0: torch.Tensor,  # [B, Hv, dk, dv]
) -> tuple[torch.Tensor, torch.Tensor]:  # output [B, Hv, dv], state [B, Hv, dk, dv]
    """One token of the gated delta rule (transformers' ``torch_recurrent_gated_delta_rule``): decay the
    state, read what it predicts for k, write beta x the error along k, read the output with q."""
    S = h0 * g.exp()[..., None, None]
    kv_mem = (S * k[..., None]).sum(dim=-2)  # [B, Hv, dv]
    delta = (v - kv_mem) * beta[..., None]
    S = S + k[..., None] * delta[..., None, :]
    return (S * q[..., None]).sum(dim=-2), S


class GatedRMSNorm(nn.Module):
    """Qwen3NextRMSNormGated: RMSNorm over each head's d_v (one weight shared by the heads), then times
    SiLU(gate) in fp32 (norm before gate, unlike Mamba-2's)."""

    def __init__(self, size: int, dd: FactoryKwargs, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size, **dd))
        self.eps = eps

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        y = self.weight * xf.to(x.dtype)
        return (y * F.silu(gate.float())).to(x.dtype)


class GatedDeltaNetMixer(nn.Module):
    """in_proj_qkvz and in_proj_ba (per key head: [q, k, v group, z group] and [b group, a group]) ->
    causal depthwise conv1d + SiLU over [q, k, v] -> L2-normed q (scaled by d_k^-0.5) and k, each key
    head serving value heads / key heads value heads -> gated delta rule with beta = sigmoid(b),
    g = -exp(A_log) softplus(a + dt_bias) -> gated RMSNorm norm(o) SiLU(z) -> out_proj."""

    def __init__(self, m: GatedDeltaNet, hidden: int, dd: FactoryKwargs, rope: RotaryTables | None = None):
        super().__init__()
        self.m = m
        self._conv_kernels: tuple | None = None  # causal_conv1d's (fn, update) under --kernels fused
        self._delta_kernels: tuple | None = None  # fla's (chunk, fused_recurrent) gated delta rule
        Hv = m.num_value_heads
        self.in_proj_qkvz = nn.Linear(hidden, 2 * m.key_dim + 2 * m.value_dim, bias=False, **dd)
        self.in_proj_ba = nn.Linear(hidden, 2 * Hv, bias=False, **dd)
        self.conv1d = nn.Conv1d(m.conv_dim, m.conv_dim, m.d_conv, groups=m.conv_dim, bias=False, **dd)
        self.dt_bias = nn.Parameter(torch.empty(Hv, **dd))
        self.A_log = nn.Parameter(torch.empty(Hv, **dd))
        self.norm = GatedRMSNorm(m.value_head_dim, dd)
        self.out_proj = nn.Linear(m.value_dim, hidden, bias=False, **dd)

    @torch.no_grad()
    def init_ssm(self, g: torch.Generator) -> None:
        """A = U(1, 16) per value head (A_log = log A), dt_bias = softplus^-1(dt) as Mamba-2, norm 1."""
        Hv = self.m.num_value_heads
        dev = self.A_log.device
        a = 1.0 + 15.0 * torch.rand(Hv, generator=g, device=dev, dtype=torch.float32)
        self.A_log.copy_(a.log())
        self.dt_bias.copy_(dt_init(Hv, g, dev))
        self.norm.weight.fill_(1.0)

    def fused(self, device: torch.device) -> str:
        """``--kernels fused``: the causal conv on causal_conv1d's kernels and the gated delta rule on
        flash-linear-attention's (``chunk_gated_delta_rule`` for a prefill, ``fused_recurrent_gated_delta_rule``
        for a decode step, called as transformers' Qwen3-Next fast path calls them: [B, S, heads, dim]
        tensors, q and k already L2-normed and q scaled here, so ``scale=1``). Returns what will run;
        raises ``godprof.build.fused.FusedUnavailable`` (the reference runs) off CUDA or without either
        package."""
        conv = load_conv(device)
        self._delta_kernels = tuple(
            load(device, "fla.ops.gated_delta_rule", "chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule")
        )
        self._conv_kernels = conv
        return "causal_conv1d (conv) + fla gated delta rule"

    def _fused_delta_rule(self, q, k, v, g, beta, h0, decode: bool) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
        """fla's kernels on the reference's head-major tensors ([B, Hv, S, d], gates [B, Hv, S]): o in the
        same layout and the final state [B, Hv, dk, dv]."""
        assert self._delta_kernels is not None
        chunk, recurrent = self._delta_kernels
        fn = recurrent if decode else chunk
        o, h = fn(
            q=q.transpose(1, 2).contiguous(), k=k.transpose(1, 2).contiguous(), v=v.transpose(1, 2).contiguous(),
            g=g.transpose(1, 2).contiguous(), beta=beta.transpose(1, 2).contiguous(), scale=1.0,
            initial_state=h0, output_final_state=True,
        )  # fmt: skip
        return o.transpose(1, 2), h

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        m = self.m
        return [
            torch.zeros(batch, m.conv_dim, m.d_conv, dtype=dtype, device=device),  # conv window over [q, k, v]
            torch.zeros(batch, m.num_value_heads, m.key_head_dim, m.value_head_dim, dtype=dtype, device=device),
        ]

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        m = self.m
        B, S, _ = x.shape
        Hk, Hv, dk, dv = m.num_key_heads, m.num_value_heads, m.key_head_dim, m.value_head_dim
        r = Hv // Hk  # value heads per key head
        # Order, per key head: [q (dk), k (dk), v (r x dv), z (r x dv)] and [b (r), a (r)]
        qkvz = self.in_proj_qkvz(x).view(B, S, Hk, 2 * dk + 2 * r * dv)
        q, k, v, z = qkvz.split([dk, dk, r * dv, r * dv], dim=-1)
        b, a = self.in_proj_ba(x).view(B, S, Hk, 2 * r).split([r, r], dim=-1)
        qkv = torch.cat((q.reshape(B, S, -1), k.reshape(B, S, -1), v.reshape(B, S, -1)), dim=-1)  # [B, S, conv]
        del q, k, v
        conv_state = state[0] if state else None
        qkv = fused_causal_conv(self._conv_kernels, self.conv1d, qkv.transpose(1, 2), pos, conv_state)  # [B, conv, S]
        qkv = F.silu(qkv).transpose(1, 2)  # [B, S, conv]
        q, k, v = qkv.split([m.key_dim, m.key_dim, m.value_dim], dim=-1)
        # fp32, head-major: q and k normalised per key head, then repeated to the value heads
        q = l2norm(q.reshape(B, S, Hk, dk).transpose(1, 2).float()) * dk**-0.5  # [B, Hk, S, dk]
        k = l2norm(k.reshape(B, S, Hk, dk).transpose(1, 2).float())
        if r > 1:
            q, k = q.repeat_interleave(r, dim=1), k.repeat_interleave(r, dim=1)  # [B, Hv, S, dk]
        v = v.reshape(B, S, Hv, dv).transpose(1, 2).float()  # [B, Hv, S, dv]
        beta = torch.sigmoid(b.reshape(B, S, Hv).float()).transpose(1, 2)  # [B, Hv, S]
        g = -self.A_log.float().exp() * F.softplus(a.reshape(B, S, Hv).float() + self.dt_bias.float())
        g = g.transpose(1, 2)  # [B, Hv, S]
        if state is not None and pos > 0:
            h0 = state[1].float()
        else:
            h0 = torch.zeros(B, Hv, dk, dv, device=x.device, dtype=torch.float32)
        if self._delta_kernels is not None:
            o, h = self._fused_delta_rule(q, k, v, g, beta, h0, decode=S == 1 and state is not None)
        elif S == 1 and state is not None:
            o, h = recurrent_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], g[:, :, 0], beta[:, :, 0], h0)
            o = o[:, :, None]  # [B, Hv, 1, dv]
        else:
            o, h = chunk_gated_delta_rule(q, k, v, g, beta, min(m.chunk_size, S), h0)  # [B, Hv, S, dv]
        if state is not None:
            state[1].copy_(h)
        del q, k, v, g, beta, h0, h
        o = o.transpose(1, 2).to(x.dtype)  # [B, S, Hv, dv]
        o = self.norm(o, z.reshape(B, S, Hv, dv))
        return self.out_proj(o.reshape(B, S, m.value_dim))
