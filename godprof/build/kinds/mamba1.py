"""Build of ``type: mamba1`` (``godprof.kinds.mamba1``) in pure PyTorch (no custom kernels), following
transformers' MambaMixer module structure. Prefill runs the selective scan chunk by chunk with a
log-depth (Hillis-Steele) associative scan inside each chunk, so memory is bounded by one chunk of
[B, Q, d_inner, d_state] states; a decode step (S == 1 with a cache) is the O(1) recurrence. Scans and
states are computed in fp32 and stored in the cache dtype. Cache: conv window [B, d_inner, d_conv] and
SSM state [B, d_inner, d_state]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from godprof.build.fused import fused_causal_conv, load, load_conv
from godprof.build.layers import FactoryKwargs, RMSNorm, RotaryTables
from godprof.build.scan import dt_init
from godprof.kinds.mamba1 import Mamba1, scan_chunk


def selective_scan(
    u: torch.Tensor,  # [B, S, di]  conv output
    dt: torch.Tensor,  # [B, S, di]  after softplus
    A: torch.Tensor,  # [di, n]     negative
    Bm: torch.Tensor,  # [B, S, n]
    Cm: torch.Tensor,  # [B, S, n]
    h0: torch.Tensor,  # [B, di, n]  fp32 initial state
) -> tuple[torch.Tensor, torch.Tensor]:  # y [B, S, di] fp32 (without D), final state [B, di, n]
    """Mamba-1 selective scan h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t . h_t, in fp32.

    Chunks of Q tokens (``scan_chunk``); inside a chunk a Hillis-Steele scan over (decay, input) pairs
    takes log2(Q) vectorised steps and never divides by a decay, so it is stable for any dt and A.
    Memory: the fp32 output y [B, S, di] plus, per chunk of q tokens, the decays and inputs
    [B, q, di, n] (updated in place, the states end up in the inputs' storage) and one product of
    [B, q - d, di, n] per scan step; nothing of a chunk outlives it but the last state.
    """
    Bsz, S, di = u.shape
    n = A.shape[1]
    Q = scan_chunk(Bsz, di, n)
    cdt = torch.promote_types(h0.dtype, torch.float32)  # fp32 (fp64 when given fp64)
    y = torch.empty(Bsz, S, di, dtype=cdt, device=u.device)
    h = h0.to(cdt)
    for c0 in range(0, S, Q):
        dt_c = dt[:, c0 : c0 + Q].to(cdt)  # [B, q, di]
        a = dt_c[..., None] * A  # [B, q, di, n]
        a.exp_()
        b = (dt_c * u[:, c0 : c0 + Q].to(cdt))[..., None] * Bm[:, c0 : c0 + Q, None, :].to(cdt)  # [B, q, di, n]
        q = a.shape[1]
        d = 1
        while d < q:  # inclusive scan: (a, b)_t <- (a_t a_{t-d}, a_t b_{t-d} + b_t), for t >= d
            b[:, d:] += a[:, d:] * b[:, :-d]  # the product is a new tensor, so the overlap is safe
            a[:, d:] = a[:, d:] * a[:, :-d]
            d *= 2
        b.addcmul_(a, h[:, None])  # [B, q, di, n]: states after each token
        del a
        y[:, c0 : c0 + q] = torch.einsum("bldn,bln->bld", b, Cm[:, c0 : c0 + Q].to(cdt))  # [B, q, di]
        h = b[:, -1].clone()
        del b
    return y, h


class Mamba1Mixer(nn.Module):
    """in_proj (x, z) -> causal depthwise conv1d + SiLU -> x_proj (dt, B, C) [-> RMSNorms on dt, B, C
    (Jamba)] -> dt_proj + softplus -> selective scan with A = -exp(A_log) and skip D -> y * SiLU(z)
    -> out_proj."""

    def __init__(self, m: Mamba1, hidden: int, dd: FactoryKwargs, rope: RotaryTables | None = None):
        super().__init__()
        self.m = m
        self._conv_kernels: tuple | None = None  # causal_conv1d's (fn, update) under --kernels fused
        self._scan_kernels: tuple | None = None  # mamba_ssm's (selective scan, state update) under --kernels fused
        di, n, r = m.d_inner, m.d_state, m.dt_rank
        self.in_proj = nn.Linear(hidden, 2 * di, bias=m.proj_bias, **dd)
        self.conv1d = nn.Conv1d(di, di, m.d_conv, groups=di, bias=m.conv_bias, **dd)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False, **dd)
        self.dt_proj = nn.Linear(r, di, bias=True, **dd)
        self.A_log = nn.Parameter(torch.empty(di, n, **dd))
        self.D = nn.Parameter(torch.empty(di, **dd))
        self.out_proj = nn.Linear(di, hidden, bias=m.proj_bias, **dd)
        if m.inner_norms:
            self.dt_layernorm = RMSNorm(r, dd)
            self.b_layernorm = RMSNorm(n, dd)
            self.c_layernorm = RMSNorm(n, dd)

    @torch.no_grad()
    def init_ssm(self, g: torch.Generator) -> None:
        """S4D-real A (A_log = log 1..d_state per channel), D = 1, dt bias = softplus^-1(log-uniform dt)."""
        di, n = self.m.d_inner, self.m.d_state
        a = torch.arange(1, n + 1, dtype=torch.float32, device=self.A_log.device).log()
        self.A_log.copy_(a.expand(di, n))
        self.D.fill_(1.0)
        self.dt_proj.bias.copy_(dt_init(di, g, self.A_log.device))

    def fused(self, device: torch.device) -> str:
        """``--kernels fused``: the causal conv on causal_conv1d's kernels and the selective scan on
        mamba_ssm's (``selective_scan_fn`` for a prefill from position 0, which takes no initial state,
        and ``selective_state_update`` for a decode step; dt already softplus'd, D added here, as the
        reference does). A chunked prefill continuing a cached state keeps the reference scan. Returns
        what will run; raises ``godprof.build.fused.FusedUnavailable`` (the reference runs) off CUDA or
        without either package."""
        conv = load_conv(device)
        (scan,) = load(device, "mamba_ssm.ops.selective_scan_interface", "selective_scan_fn")
        (update,) = load(device, "mamba_ssm.ops.triton.selective_state_update", "selective_state_update")
        self._conv_kernels, self._scan_kernels = conv, (scan, update)
        return "causal_conv1d (conv) + mamba_ssm selective scan"

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        di = self.m.d_inner
        return [
            torch.zeros(batch, di, self.m.d_conv, dtype=dtype, device=device),  # conv window
            torch.zeros(batch, di, self.m.d_state, dtype=dtype, device=device),  # SSM state
        ]

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        m = self.m
        Bsz, S, _ = x.shape
        di, n, r = m.d_inner, m.d_state, m.dt_rank
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # [B, S, di] each
        conv_state = state[0] if state else None
        u = fused_causal_conv(self._conv_kernels, self.conv1d, xs.transpose(1, 2), pos, conv_state)  # [B, di, S]
        u = F.silu(u).transpose(1, 2)  # [B, S, di]
        dt, Bm, Cm = self.x_proj(u).split([r, n, n], dim=-1)  # [B, S, r], [B, S, n], [B, S, n]
        if m.inner_norms:
            dt, Bm, Cm = self.dt_layernorm(dt), self.b_layernorm(Bm), self.c_layernorm(Cm)
        dt = F.softplus(self.dt_proj(dt).float())  # [B, S, di]
        A = -torch.exp(self.A_log.float())  # [di, n]
        if state is not None and pos > 0:
            h0 = state[1].float()
        else:
            h0 = torch.zeros(Bsz, di, n, device=x.device, dtype=torch.float32)
        fused = self._scan_kernels
        if fused is not None and S == 1 and state is not None:  # updates the cache's state in place
            y, h = fused[1](state[1], u[:, 0], dt[:, 0], A, Bm[:, 0], Cm[:, 0])[:, None], None  # [B, 1, di]
        elif fused is not None and (state is None or pos == 0):
            y, h = fused[0](u.transpose(1, 2), dt.transpose(1, 2), A, Bm.transpose(1, 2), Cm.transpose(1, 2),
                            return_last_state=True)  # fmt: skip
            y = y.transpose(1, 2)  # [B, S, di]
        elif S == 1 and state is not None:  # recurrent step
            dA = torch.exp(dt[:, 0, :, None] * A)  # [B, di, n]
            h = dA * h0 + (dt[:, 0] * u[:, 0].float())[..., None] * Bm[:, 0, None, :].float()  # [B, di, n]
            y = torch.einsum("bdn,bn->bd", h, Cm[:, 0].float())[:, None]  # [B, 1, di]
        else:
            y, h = selective_scan(u, dt, A, Bm, Cm, h0)  # [B, S, di], [B, di, n]
        if state is not None and h is not None:
            state[1].copy_(h)
        y = y + u.float() * self.D.float()
        y = y.to(x.dtype) * F.silu(z)  # [B, S, di]
        return self.out_proj(y)
