"""Build of ``type: moe`` (``godprof.kinds.moe``): stacked routed experts, softmax top-k routing, shared
experts. Legend: T tokens, h hidden, E experts, k top-k, I expert intermediate size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from godprof.build.kinds.mlp import DenseMLP
from godprof.build.layers import ACTS, FactoryKwargs
from godprof.kinds.moe import MoE


class Experts(nn.Module):
    """The routed experts of one MoE layer as stacked weights (transformers v5's fused MoE layout):
    gated ``gate_up_proj`` [E, 2I, h] and ``down_proj`` [E, h, I], or plain ``fc1`` [E, I, h] and
    ``fc2`` [E, h, I], with per-expert biases [E, 2I or I] and [E, h] when ``expert_bias``. The same
    parameters as E separate MLPs, without E x 3 modules (DeepSeek-V3 has 14,848 experts)."""

    def __init__(self, f: MoE, hidden: int, dd: FactoryKwargs):
        super().__init__()
        E, inter = f.num_experts, f.expert_intermediate_size
        self.gated = f.gated
        self.act = ACTS[f.activation]
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
