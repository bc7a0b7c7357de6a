"""Manifold-constrained hyper-connections (DeepSeek-V4, ``model.hc_mult`` = n > 1): the residual stream is
n streams [B, S, n, h]; each residual branch (mixer, FFN) reads their weighted sum and writes back into all
of them, with the streams mixed by a doubly-stochastic n x n matrix (Sinkhorn-Knopp).

Follows transformers 5.24's ``DeepseekV4HyperConnection`` and ``DeepseekV4HyperHead`` (parameter names
``fn``, ``base``, ``scale``; ``hc_fn``, ``hc_base``, ``hc_scale``), the DeepSeek-V4 paper section 2.2.
Counted in ``godprof.analytic.params.hyper_connection_params``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from godprof.build.layers import FactoryKwargs

HC_EPS = 1e-6  # transformers' hc_eps (the released configs' value): the floor of pre, comb and Sinkhorn sums
NORM_EPS = 1e-5  # the flattened streams' weightless RMSNorm (godprof's norm eps; transformers rms_norm_eps)


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + NORM_EPS)


class HyperConnection(nn.Module):
    """One branch's mixing weights from its n input streams: ``fn`` [(2 + n) n, n h] maps the RMS-normed,
    flattened streams (fp32) to pre (n), post (n) and comb (n x n) logits, offset by ``base`` and scaled
    by ``scale`` [3]. ``collapse`` gives the branch input and ``expand`` the new streams."""

    def __init__(self, n: int, hidden: int, iters: int, dd: FactoryKwargs):
        super().__init__()
        self.n, self.iters = n, iters
        self.fn = nn.Parameter(torch.empty((2 + n) * n, n * hidden, **dd))
        self.base = nn.Parameter(torch.empty((2 + n) * n, **dd))
        self.scale = nn.Parameter(torch.empty(3, **dd))

    @torch.no_grad()
    def init_params(self, std: float, g: torch.Generator) -> None:
        """fn ~ N(0, std), base ~ N(0, 1), scale 1 (transformers: base 0; a nonzero base tests its use)."""
        self.fn.normal_(0.0, std, generator=g)
        self.base.normal_(0.0, 1.0, generator=g)
        self.scale.fill_(1.0)

    def collapse(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(branch input [B, S, h], post [B, S, n], comb [B, S, n, n]) from streams [B, S, n, h]."""
        B, S, n, _ = streams.shape
        mixes = F.linear(_rms(streams.reshape(B, S, -1).float()), self.fn.float())  # [B, S, (2 + n) n]
        base, scale = self.base.float(), self.scale.float()
        pre = torch.sigmoid(mixes[..., :n] * scale[0] + base[:n]) + HC_EPS
        post = 2 * torch.sigmoid(mixes[..., n : 2 * n] * scale[1] + base[n : 2 * n])
        comb = torch.softmax((mixes[..., 2 * n :] * scale[2] + base[2 * n :]).view(B, S, n, n), dim=-1) + HC_EPS
        comb = comb / (comb.sum(dim=-2, keepdim=True) + HC_EPS)
        for _ in range(self.iters - 1):  # Sinkhorn-Knopp: rows, then columns, sum to 1
            comb = comb / (comb.sum(dim=-1, keepdim=True) + HC_EPS)
            comb = comb / (comb.sum(dim=-2, keepdim=True) + HC_EPS)
        branch_in = (pre.unsqueeze(-1) * streams).sum(dim=2).to(streams.dtype)  # [B, S, h]
        return branch_in, post, comb

    @staticmethod
    def expand(streams: torch.Tensor, out: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor:
        """New streams: post_i x branch output + sum_j comb[j, i] x stream_j ([B, S, n, h])."""
        dt = streams.dtype
        return post.to(dt).unsqueeze(-1) * out.unsqueeze(-2) + torch.matmul(comb.to(dt).transpose(-1, -2), streams)


class HyperHead(nn.Module):
    """The final collapse of the n streams into one before the model's final norm: ``hc_fn`` [n, n h],
    ``hc_base`` [n], ``hc_scale`` [1]."""

    def __init__(self, n: int, hidden: int, dd: FactoryKwargs):
        super().__init__()
        self.hc_fn = nn.Parameter(torch.empty(n, n * hidden, **dd))
        self.hc_base = nn.Parameter(torch.empty(n, **dd))
        self.hc_scale = nn.Parameter(torch.empty(1, **dd))

    @torch.no_grad()
    def init_params(self, std: float, g: torch.Generator) -> None:
        self.hc_fn.normal_(0.0, std, generator=g)
        self.hc_base.normal_(0.0, 1.0, generator=g)
        self.hc_scale.fill_(1.0)

    def forward(self, streams: torch.Tensor) -> torch.Tensor:  # [B, S, n, h] -> [B, S, h]
        B, S = streams.shape[:2]
        mixes = F.linear(_rms(streams.reshape(B, S, -1).float()), self.hc_fn.float())  # [B, S, n]
        pre = torch.sigmoid(mixes * self.hc_scale.float() + self.hc_base.float()) + HC_EPS
        return (pre.unsqueeze(-1) * streams).sum(dim=2).to(streams.dtype)
