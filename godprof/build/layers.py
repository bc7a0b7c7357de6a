"""Building blocks shared by the mixers and FFNs: norms, rotary embedding, dense MLP and MoE.

Shape legend: B batch, S new tokens, T cached + new tokens, H query heads, K kv heads, D head dim,
h hidden size, I intermediate size, E experts, k top-k.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from godprof.spec import MLP, MoE

FactoryKwargs = dict[str, Any]  # {"device": ..., "dtype": ...} passed to every parameter factory


class RMSNorm(nn.Module):
    """RMSNorm with a weight only (Llama, Mamba, DeepSeek); statistics in fp32.

    ``group_size`` normalises each group of that many features separately (Mamba-2's grouped gated norm).
    """

    def __init__(self, size: int, dd: FactoryKwargs, eps: float = 1e-5, group_size: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size, **dd))
        self.eps = eps
        self.group_size = group_size or size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xf = x.float().reshape(*shape[:-1], shape[-1] // self.group_size, self.group_size)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.reshape(shape).to(x.dtype) * self.weight


def make_norm(kind: str, size: int, bias: bool, dd: FactoryKwargs) -> nn.Module:
    """The model's block norm: RMSNorm (weight) or LayerNorm (weight, and bias when ``bias``)."""
    if kind == "layernorm":
        return nn.LayerNorm(size, eps=1e-5, bias=bias, **dd)
    return RMSNorm(size, dd)


def rope_cos_sin(
    positions: torch.Tensor, rotary_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [S, rotary_dim] for absolute ``positions`` [S] (GPT-NeoX/Llama half-split layout)."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, rotary_dim, 2, device=positions.device, dtype=torch.float32) / rotary_dim)
    )
    freqs = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # [S, rd/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [S, rd]
    return emb.cos().to(dtype), emb.sin().to(dtype)


class RotaryTables:
    """cos/sin tables shared by a model's rotary layers, keyed by (rotary_dim, theta, dtype, device) and
    grown geometrically, so a decode step slices a table instead of recomputing it in every layer.
    A plain object (not a buffer): it is derived data and must not appear in parameter counts.
    With a cache the tables cover exactly its max_len positions (``reserve``), without one the
    forward's positions: 2 x positions x rotary_dim values per key, which
    ``godprof.analytic.memory.inference_activation_bytes`` counts."""

    def __init__(self) -> None:
        self.tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.reserved = 0

    def reserve(self, n: int) -> None:
        """Make later lookups up to position n - 1 hit existing tables (called by allocate_cache)."""
        self.reserved = max(self.reserved, n)

    def get(
        self, rotary_dim: int, theta: float, pos: int, S: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:  # cos, sin [S, rotary_dim] for positions pos..pos+S-1
        key = (rotary_dim, theta, dtype, device)
        t = self.tables.get(key)
        if t is None or t[0].shape[0] < pos + S:
            n = max(pos + S, self.reserved, 2 * (t[0].shape[0] if t is not None else 0))
            t = rope_cos_sin(torch.arange(n, device=device), rotary_dim, theta, dtype)
            self.tables[key] = t
        return t[0][pos : pos + S], t[1][pos : pos + S]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``rotary_dim`` features of x [..., S, D]; the rest pass through (partial rotary)."""
    rd = cos.shape[-1]
    xr, xp = x[..., :rd], x[..., rd:]
    x1, x2 = xr[..., : rd // 2], xr[..., rd // 2 :]
    rotated = torch.cat((-x2, x1), dim=-1)
    out = xr * cos + rotated * sin
    return torch.cat((out, xp), dim=-1) if xp.shape[-1] else out


_ACTS = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


class DenseMLP(nn.Module):
    """Gated (gate_proj, up_proj, down_proj: down(act(gate(x)) * up(x))) or plain (fc1, act, fc2) MLP."""

    def __init__(self, hidden: int, inter: int, gated: bool, activation: str, bias: bool, dd: FactoryKwargs):
        super().__init__()
        self.gated = gated
        self.act = _ACTS[activation]
        if gated:
            self.gate_proj = nn.Linear(hidden, inter, bias=bias, **dd)
            self.up_proj = nn.Linear(hidden, inter, bias=bias, **dd)
            self.down_proj = nn.Linear(inter, hidden, bias=bias, **dd)
        else:
            self.fc1 = nn.Linear(hidden, inter, bias=bias, **dd)
            self.fc2 = nn.Linear(inter, hidden, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., h] -> [..., h]
        if self.gated:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))  # [..., I] -> [..., h]
        return self.fc2(self.act(self.fc1(x)))


def build_mlp(f: MLP, hidden: int, dd: FactoryKwargs) -> DenseMLP:
    return DenseMLP(hidden, f.intermediate_size, f.gated, f.activation, f.bias, dd)


class Experts(nn.Module):
    """The routed experts of one MoE layer as stacked weights (transformers v5's fused MoE layout):
    gated ``gate_up_proj`` [E, 2I, h] and ``down_proj`` [E, h, I], or plain ``fc1`` [E, I, h] and
    ``fc2`` [E, h, I], with per-expert biases [E, 2I or I] and [E, h] when ``expert_bias``. The same
    parameters as E separate MLPs, without E x 3 modules (DeepSeek-V3 has 14,848 experts)."""

    def __init__(self, f: MoE, hidden: int, dd: FactoryKwargs):
        super().__init__()
        E, inter = f.num_experts, f.expert_intermediate_size
        self.gated = f.gated
        self.act = _ACTS[f.activation]
        n_in = 2 * inter if f.gated else inter
        self.w_in = nn.Parameter(torch.empty(E, n_in, hidden, **dd))  # [E, 2I or I, h]
        self.w_out = nn.Parameter(torch.empty(E, hidden, inter, **dd))  # [E, h, I]
        self.b_in = nn.Parameter(torch.empty(E, n_in, **dd)) if f.expert_bias else None
        self.b_out = nn.Parameter(torch.empty(E, hidden, **dd)) if f.expert_bias else None

    @torch.no_grad()
    def init_params(self, std: float, g: torch.Generator) -> None:
        self.w_in.normal_(0.0, std, generator=g)
        self.w_out.normal_(0.0, std, generator=g)
        for b in (self.b_in, self.b_out):
            if b is not None:
                b.zero_()

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:  # [n, h] -> [n, h]
        hid = F.linear(x, self.w_in[e], None if self.b_in is None else self.b_in[e])  # [n, 2I or I]
        if self.gated:
            gate, up = hid.chunk(2, dim=-1)  # [n, I] each
            hid = self.act(gate) * up
        else:
            hid = self.act(hid)
        return F.linear(hid, self.w_out[e], None if self.b_out is None else self.b_out[e])


class MoELayer(nn.Module):
    """Routed experts with softmax top-k routing (weights renormalised over the k chosen, as Mixtral),
    plus optional shared experts (one MLP of num_shared x size: the same parameters as separate ones)
    behind an optional sigmoid gate (Qwen2-MoE).

    Tokens are grouped per expert by sorting the (token, expert) assignments; each expert runs on its
    contiguous slice in blocks of at most ceil(T*k / E) rows (a Python loop over experts and blocks,
    never over tokens) and writes into one [T*k, h] output.
    Legend: T tokens, h hidden, E experts, k top-k.
    """

    def __init__(self, f: MoE, hidden: int, dd: FactoryKwargs):
        super().__init__()
        self.top_k = f.top_k
        self.num_experts = f.num_experts
        self.router = nn.Linear(hidden, f.num_experts, bias=f.router_bias, **dd)
        self.experts = Experts(f, hidden, dd)
        self.shared = None
        self.shared_gate = None
        if f.num_shared_experts:
            inter = f.num_shared_experts * f.shared_intermediate_size
            self.shared = DenseMLP(hidden, inter, f.gated, f.activation, False, dd)
            if f.shared_expert_gate:
                self.shared_gate = nn.Linear(hidden, 1, bias=False, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x_Th = x.reshape(-1, shape[-1])  # [T, h]
        scores_TE = torch.softmax(self.router(x_Th).float(), dim=-1)  # [T, E]
        weights_Tk, experts_Tk = torch.topk(scores_TE, self.top_k, dim=-1)  # [T, k]
        weights_Tk = weights_Tk / weights_Tk.sum(-1, keepdim=True)
        flat_experts = experts_Tk.reshape(-1)  # [T*k]
        order = torch.argsort(flat_experts, stable=True)  # assignments grouped by expert
        token_of = order // self.top_k  # [T*k] source token of each sorted assignment
        if x.device.type == "meta":  # counting on meta (no values): spread the assignments evenly
            n_assign, E = flat_experts.numel(), self.num_experts
            counts = [n_assign // E + (1 if e < n_assign % E else 0) for e in range(E)]
        else:
            counts = torch.bincount(flat_experts, minlength=self.num_experts).tolist()  # one host sync
        x_sorted = x_Th[token_of]  # [T*k, h]
        y_sorted = torch.empty_like(x_sorted)  # [T*k, h]: each expert writes its rows
        # Rows per expert call are capped at the balanced share ceil(T*k / E), so the experts' workspace
        # is the same whatever the router does (the busiest expert runs in several blocks; the FLOPs
        # are unchanged). ``godprof.analytic.memory`` counts exactly this block.
        block = -(-flat_experts.numel() // self.num_experts)
        start = 0
        for e, n in enumerate(counts):
            for b0 in range(start, start + n, block):
                b1 = min(b0 + block, start + n)
                y_sorted[b0:b1] = self.experts.expert(e, x_sorted[b0:b1])  # [rows, h]
            start += n
        del x_sorted
        y_sorted.mul_(weights_Tk.reshape(-1)[order, None].to(y_sorted.dtype))
        out_Th = torch.zeros_like(x_Th).index_add_(0, token_of, y_sorted)  # [T, h]
        del y_sorted
        if self.shared is not None:
            shared = self.shared(x_Th)  # [T, h]
            if self.shared_gate is not None:
                shared = torch.sigmoid(self.shared_gate(x_Th)) * shared
            out_Th = out_Th + shared
        return out_Th.view(shape)


def build_ffn(f: MLP | MoE, hidden: int, dd: FactoryKwargs) -> nn.Module:
    return build_mlp(f, hidden, dd) if isinstance(f, MLP) else MoELayer(f, hidden, dd)
