"""Build of ``type: mamba2`` (``godprof.kinds.mamba2``) in pure PyTorch, following transformers'
Mamba2Mixer module structure. Prefill uses the chunked SSD form (Dao & Gu 2024, the "minimal SSD"
reference of state-spaces/mamba) as batched matmuls; a decode step is the O(1) recurrence. Cache: conv
window [B, conv channels, d_conv] and SSM state [B, heads, head_dim, d_state]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from godprof.build.fused import fused_causal_conv, load, load_conv
from godprof.build.layers import FactoryKwargs, RMSNorm, RotaryTables
from godprof.build.scan import dt_init
from godprof.kinds.mamba2 import Mamba2


def _segsum(x: torch.Tensor) -> torch.Tensor:
    """[..., T] -> [..., T, T] with out[i, j] = x[j+1] + ... + x[i] for j <= i and -inf above the diagonal
    (summed segment by segment rather than as a difference of cumsums, which loses precision)."""
    T = x.shape[-1]
    xe = x[..., None].expand(*x.shape, T)  # [..., T, T]: xe[i, j] = x[i]
    below = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=-1)
    xe = xe.masked_fill(~below, 0)
    cs = torch.cumsum(xe, dim=-2)
    del xe
    keep = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=0)
    return cs.masked_fill_(~keep, float("-inf"))


def ssd_chunked(
    x: torch.Tensor,  # [B, L, H, P]
    dt: torch.Tensor,  # [B, L, H]   after softplus
    A: torch.Tensor,  # [H]         negative
    Bm: torch.Tensor,  # [B, L, G, N]
    Cm: torch.Tensor,  # [B, L, G, N]
    chunk: int,
    h0: torch.Tensor,  # [B, H, P, N] initial state
) -> tuple[torch.Tensor, torch.Tensor]:  # y [B, L, H, P] (without D), final state [B, H, P, N]
    """Mamba-2 SSD in chunked form (Dao & Gu 2024, sec. 7; state-spaces/mamba ssd_minimal), fp32.

    The sequence is zero-padded to a multiple of the chunk (dt = 0 there: decay 1 and no input, so the
    final state is the one after the last real token). Per chunk: the intra-chunk output (C B^T masked
    by the decay matrix, times x dt), the chunk's end state, then the states passed between chunks and
    their contribution C h. Every product is one batched matmul on head-major, contiguous operands, and
    every intermediate is freed once dead, so the memory is what ``godprof.analytic.memory`` counts
    step by step (an einsum would pick operand copies by its own contraction path).
    """
    b, L, H, P = x.shape
    G, N = Bm.shape[2], Bm.shape[3]
    hg = H // G
    pad = (-L) % chunk
    X = x * dt[..., None]  # [b, L, H, P]
    Adt = A * dt  # [b, L, H]
    if pad:
        X, Adt = F.pad(X, (0, 0, 0, 0, 0, pad)), F.pad(Adt, (0, 0, 0, pad))
        Bm, Cm = F.pad(Bm, (0, 0, 0, 0, 0, pad)), F.pad(Cm, (0, 0, 0, 0, 0, pad))
    Lp = L + pad
    c, Q = Lp // chunk, chunk
    # head-major layouts, so every product below is one batched matmul without hidden operand copies
    X = X.view(b, c, Q, G, hg, P).permute(0, 3, 4, 1, 2, 5).contiguous()  # [b, G, hg, c, Q, P]
    Bc = Bm.view(b, c, Q, G, N).permute(0, 3, 1, 2, 4).contiguous()  # [b, G, c, Q, N]
    Cc = Cm.view(b, c, Q, G, N).permute(0, 3, 1, 2, 4).contiguous()
    del Bm, Cm
    Adt = Adt.view(b, c, Q, H).permute(0, 3, 1, 2)  # [b, H, c, Q]
    Acum = torch.cumsum(Adt, dim=-1)  # [b, H, c, Q]
    # 1. intra-chunk (diagonal blocks): y_l = sum_{s<=l} C_l.B_s exp(A_s+1..l) x_s dt_s
    M = _segsum(Adt).exp_().view(b, G, hg, c, Q, Q)  # [b, G, hg, c, Q(l), Q(s)]: decays
    del Adt
    M *= torch.matmul(Cc, Bc.transpose(-1, -2))[:, :, None]  # times C B^T [b, G, 1, c, Q, Q]
    y = torch.matmul(M, X)  # [b, G, hg, c, Q, P]
    del M
    # 2. state at the end of each chunk from its own inputs: B^T [N, Q] @ (x dt decay) [Q, hg x P]
    decay_to_end = torch.exp(Acum[..., -1:] - Acum).view(b, G, hg, c, Q)  # [b, G, hg, c, Q]
    X *= decay_to_end[..., None]
    del decay_to_end
    states = torch.matmul(Bc.transpose(-1, -2), X.permute(0, 1, 3, 4, 2, 5).reshape(b, G, c, Q, hg * P))
    del X, Bc  # states [b, G, c, N, hg x P]
    # 3. pass states between chunks (from h0), a [c+1, c+1] decay matrix per head
    states = states.view(b, G, c, N, hg, P).permute(0, 1, 4, 2, 5, 3).reshape(b, H, c, P, N)
    states = torch.cat((h0[:, :, None], states), dim=2)  # [b, H, c+1, P, N]
    chunk_decay = torch.exp(_segsum(F.pad(Acum[..., -1], (1, 0))))  # [b, H, c+1, c+1]
    states = torch.matmul(chunk_decay, states.view(b, H, c + 1, P * N)).view(b, H, c + 1, P, N)
    del chunk_decay
    final = states[:, :, -1].clone()  # the state after the last chunk [b, H, P, N]
    # 4. contribution of the entering state to each position: exp(A_1..l) C_l . h
    prev = states[:, :, :-1].reshape(b, G, hg, c, P, N).permute(0, 1, 3, 5, 2, 4).reshape(b, G, c, N, hg * P)
    del states
    y_in = torch.matmul(Cc, prev).view(b, G, c, Q, hg, P)  # [b, G, c, Q, hg, P]
    del prev, Cc
    y_in *= torch.exp(Acum).view(b, G, hg, c, Q).permute(0, 1, 3, 4, 2)[..., None]
    del Acum
    y += y_in.permute(0, 1, 4, 2, 3, 5)
    del y_in
    return y.permute(0, 3, 4, 1, 2, 5).reshape(b, Lp, H, P)[:, :L], final


class Mamba2Mixer(nn.Module):
    """in_proj [z, x, B, C, dt] -> causal depthwise conv1d + SiLU over [x, B, C] -> SSD with
    dt = softplus(dt + dt_bias), A = -exp(A_log) per head, skip D per head -> gated RMSNorm
    (norm(y * SiLU(z)), per group of d_inner / n_groups, as state-spaces/mamba) or y * SiLU(z)
    -> out_proj."""

    def __init__(self, m: Mamba2, hidden: int, dd: FactoryKwargs, rope: RotaryTables | None = None):
        super().__init__()
        self.m = m
        self._conv_kernels: tuple | None = None  # causal_conv1d's (fn, update) under --kernels fused
        self._scan_kernels: tuple | None = None  # mamba_ssm's (chunk scan, state update) under --kernels fused
        di, H = m.d_inner, m.num_heads
        # Order: [z, x, B, C, dt]
        self.in_proj = nn.Linear(hidden, 2 * di + 2 * m.n_groups * m.d_state + H, bias=m.proj_bias, **dd)
        self.conv1d = nn.Conv1d(m.conv_dim, m.conv_dim, m.d_conv, groups=m.conv_dim, bias=m.conv_bias, **dd)
        self.dt_bias = nn.Parameter(torch.empty(H, **dd))
        self.A_log = nn.Parameter(torch.empty(H, **dd))
        self.D = nn.Parameter(torch.empty(H, **dd))
        self.norm = RMSNorm(di, dd, eps=1e-5, group_size=di // m.n_groups) if m.gated_norm else None
        self.out_proj = nn.Linear(di, hidden, bias=m.proj_bias, **dd)

    @torch.no_grad()
    def init_ssm(self, g: torch.Generator) -> None:
        """A = -U(1, 16) per head (state-spaces/mamba's A_init_range), D = 1, dt_bias = softplus^-1(dt)."""
        H = self.m.num_heads
        dev = self.A_log.device
        a = 1.0 + 15.0 * torch.rand(H, generator=g, device=dev, dtype=torch.float32)
        self.A_log.copy_(a.log())
        self.D.fill_(1.0)
        self.dt_bias.copy_(dt_init(H, g, dev))

    def fused(self, device: torch.device) -> str:
        """``--kernels fused``: the causal conv on causal_conv1d's kernels and the SSD scan on mamba_ssm's
        Triton kernels (``mamba_chunk_scan_combined`` for a prefill, ``selective_state_update`` for a
        decode step, as transformers' Mamba-2 fast path calls them: dt already softplus'd, D added
        here). Returns what will run; raises ``godprof.build.fused.FusedUnavailable`` (this kind keeps
        the reference) off CUDA or without either package."""
        conv = load_conv(device)
        (chunk_scan,) = load(device, "mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")
        (update,) = load(device, "mamba_ssm.ops.triton.selective_state_update", "selective_state_update")
        self._conv_kernels, self._scan_kernels = conv, (chunk_scan, update)
        return "causal_conv1d (conv) + mamba_ssm SSD scan"

    def _fused_scan(self, xs, dt, A, Bm, Cm, h0, state, decode: bool):  # noqa: ANN001, ANN202
        """mamba_ssm's kernels on the reference's fp32 tensors: (y [B, S, H, P] without D, final state)."""
        assert self._scan_kernels is not None
        chunk_scan, update = self._scan_kernels
        if decode:  # updates the cache's state in place
            P, N = self.m.head_dim, self.m.d_state
            y = update(state[1], xs[:, 0], dt[:, 0, :, None].expand(-1, -1, P),
                       A[:, None, None].expand(-1, P, N), Bm[:, 0], Cm[:, 0])  # fmt: skip
            return y[:, None], None
        return chunk_scan(xs, dt, A, Bm, Cm, chunk_size=self.m.chunk_size, initial_states=h0,
                          return_final_states=True)  # fmt: skip

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        m = self.m
        return [
            torch.zeros(batch, m.conv_dim, m.d_conv, dtype=dtype, device=device),  # conv window over [x, B, C]
            torch.zeros(batch, m.num_heads, m.head_dim, m.d_state, dtype=dtype, device=device),  # SSM state
        ]

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        m = self.m
        Bsz, S, _ = x.shape
        di, H, P, G, N = m.d_inner, m.num_heads, m.head_dim, m.n_groups, m.d_state
        z, xBC, dt = self.in_proj(x).split([di, m.conv_dim, H], dim=-1)  # [B, S, di], [B, S, conv], [B, S, H]
        conv_state = state[0] if state else None
        xBC = fused_causal_conv(self._conv_kernels, self.conv1d, xBC.transpose(1, 2), pos, conv_state)  # [B, conv, S]
        xBC = F.silu(xBC).transpose(1, 2)  # [B, S, conv]
        xs, Bm, Cm = xBC.split([di, G * N, G * N], dim=-1)
        xs = xs.reshape(Bsz, S, H, P).float()  # [B, S, H, P]
        Bm = Bm.reshape(Bsz, S, G, N).float()  # [B, S, G, N]
        Cm = Cm.reshape(Bsz, S, G, N).float()
        dt = F.softplus(dt.float() + self.dt_bias.float())  # [B, S, H]
        A = -torch.exp(self.A_log.float())  # [H]
        if state is not None and pos > 0:
            h0 = state[1].float()
        else:
            h0 = torch.zeros(Bsz, H, P, N, device=x.device, dtype=torch.float32)
        if self._scan_kernels is not None:
            y, h = self._fused_scan(xs, dt, A, Bm, Cm, h0, state, decode=S == 1 and state is not None)
        elif S == 1 and state is not None:  # recurrent step
            hg = H // G
            dA = torch.exp(dt[:, 0] * A)  # [B, H]
            Bh = Bm[:, 0].repeat_interleave(hg, dim=1)  # [B, H, N]
            Ch = Cm[:, 0].repeat_interleave(hg, dim=1)  # [B, H, N]
            h = h0 * dA[..., None, None] + (dt[:, 0, :, None] * xs[:, 0])[..., None] * Bh[:, :, None, :]  # [B, H, P, N]
            y = torch.einsum("bhpn,bhn->bhp", h, Ch)[:, None]  # [B, 1, H, P]
        else:
            y, h = ssd_chunked(xs, dt, A, Bm, Cm, min(m.chunk_size, S), h0)  # [B, S, H, P], [B, H, P, N]
        if state is not None and h is not None:
            state[1].copy_(h)
        y = y + xs * self.D.float()[:, None]
        y = y.reshape(Bsz, S, di).to(x.dtype)
        if self.norm is not None:
            y = self.norm(y * F.silu(z))
        else:
            y = y * F.silu(z)
        return self.out_proj(y)
