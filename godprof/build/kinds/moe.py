"""Build of ``type: moe`` (``godprof.kinds.moe``): stacked routed experts, the routings of
``godprof.kinds.moe`` (softmax, topk_softmax, sigmoid, sparsemixer; score bias, groups, scaling, weights
on the input), shared experts. Legend: T tokens, h hidden, E experts, k top-k, I expert intermediate size,
G expert groups."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from godprof.build.kinds.mlp import DenseMLP, glu
from godprof.build.layers import ACTS, FactoryKwargs
from godprof.kinds.moe import MoE

# Largest gather of expert weights (assignments x expert weights) the sync-free path makes when grouped
# matmul is unavailable; above it the loop (one host sync per layer) runs instead.
GATHER_LIMIT_BYTES = 256 * 2**20


class Experts(nn.Module):
    """The routed experts of one MoE layer as stacked weights (transformers v5's fused MoE layout):
    gated ``gate_up_proj`` [E, 2I, h] and ``down_proj`` [E, h, I], or plain ``fc1`` [E, I, h] and
    ``fc2`` [E, h, I], with per-expert biases [E, 2I or I] and [E, h] when ``expert_bias``. The same
    parameters as E separate MLPs, without E x 3 modules (DeepSeek-V3 has 14,848 experts).

    Gate and up rows: the first I rows are the gate, the next I the up projection (Mixtral, Qwen, DeepSeek);
    with ``swiglu_oai`` they alternate, gate on even rows and up on odd ones, as gpt-oss's
    ``gate_up_proj`` columns do (transformers stores it transposed, [E, h, 2I], and its bias [E, 2I] in the
    same interleaved order), so a checkpoint maps onto ``w_in`` by a transpose alone."""

    def __init__(self, f: MoE, hidden: int, dd: FactoryKwargs):
        super().__init__()
        E, inter = f.num_experts, f.expert_intermediate_size
        self.gated = f.gated
        self.activation = f.activation
        self.act = ACTS[f.activation]
        self.interleaved = f.activation == "swiglu_oai"
        self.limit = f.swiglu_limit  # DeepSeek-V4: gate <= limit, |up| <= limit before the activation
        n_in = 2 * inter if f.gated else inter
        self.w_in = nn.Parameter(torch.empty(E, n_in, hidden, **dd))  # [E, 2I or I, h]
        self.w_out = nn.Parameter(torch.empty(E, hidden, inter, **dd))  # [E, h, I]
        self.b_in = nn.Parameter(torch.empty(E, n_in, **dd)) if f.expert_bias else None
        self.b_out = nn.Parameter(torch.empty(E, hidden, **dd)) if f.expert_bias else None
        # tensor parallel (godprof.build.tp): w_in and b_in hold [gate; up] blocks along dim 1 (interleaved
        # rows split as one block); b_out is added once over the ranks
        self.tp_blocks = {"w_in": 2, "b_in": 2} if f.gated and not self.interleaved else {}
        self.tp_once = ("b_out",)
        # whether torch._grouped_mm runs on this device, decided once here (no device query in compiled code)
        self.grouped_device = _grouped_mm_device(torch.device(dd["device"]))

    @torch.no_grad()
    def init_params(self, std: float, g: torch.Generator) -> None:
        self.w_in.normal_(0.0, std, generator=g)
        self.w_out.normal_(0.0, std, generator=g)
        for b in (self.b_in, self.b_out):
            if b is not None:
                b.zero_()

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:  # [n, h] -> [n, h]
        hid = F.linear(x, self.w_in[e], None if self.b_in is None else self.b_in[e])  # [n, 2I or I]
        return F.linear(self.activate(hid), self.w_out[e], None if self.b_out is None else self.b_out[e])

    def activate(self, hid: torch.Tensor) -> torch.Tensor:  # [n, 2I or I] -> [n, I]
        """The activation between the two products: SwiGLU-style on [gate, up] halves (interleaved for
        ``swiglu_oai``), or the plain activation."""
        if self.gated:
            # gate, up: [n, I] views; with ``glu``'s temporaries at most 4 x [n, I] live (the analytic block)
            gate, up = (hid[:, 0::2], hid[:, 1::2]) if self.interleaved else hid.chunk(2, dim=-1)
            if self.limit is not None:
                gate, up = gate.clamp(max=self.limit), up.clamp(-self.limit, self.limit)
            return glu(self.activation, gate, up)
        return self.act(hid)


def group_limited(choice_TE: torch.Tensor, groups: int, topk_group: int) -> torch.Tensor:
    """DeepSeek-V3's group-limited choice (transformers ``DeepseekV3TopkRouter``, ``Glm4MoeTopkRouter``): a
    group's score is the sum of its 2 best scores; experts outside the ``topk_group`` best groups get -inf."""
    T, E = choice_TE.shape
    group_TG = choice_TE.view(T, groups, E // groups).topk(2, dim=-1).values.sum(dim=-1)  # [T, G]
    best_Tg = group_TG.topk(topk_group, dim=-1, sorted=False).indices  # [T, topk_group]
    keep_TG = torch.zeros_like(group_TG, dtype=torch.bool).scatter_(1, best_Tg, True)
    keep_TE = keep_TG.unsqueeze(-1).expand(T, groups, E // groups).reshape(T, E)
    return choice_TE.masked_fill(~keep_TE, float("-inf"))


def sparsemixer(logits_TE: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PhiMoE's top-2 SparseMixer at inference (transformers ``models/phimoe``, ``sparsemixer`` with
    training False): for the best expert, then the best of the rest, the softmax weight it has among the
    experts whose logit is within a relative ``2 eps`` of it. Returns weights [T, 2] and experts [T, 2]."""
    weights, experts = [], []
    masked = logits_TE
    for _ in range(2):
        top_T1, idx_T1 = masked.max(dim=-1, keepdim=True)
        factor = logits_TE.abs().clamp(min=top_T1)
        far = (top_T1 - logits_TE) / factor > 2 * eps
        weights.append(torch.softmax(masked.masked_fill(far, float("-inf")), dim=-1).gather(-1, idx_T1))
        experts.append(idx_T1)
        masked = masked.scatter(-1, idx_T1, float("-inf"))
    return torch.cat(weights, dim=-1), torch.cat(experts, dim=-1)


class MoELayer(nn.Module):
    """Routed experts behind a router (``route``), plus optional shared experts (one MLP of num_shared x
    size: the same parameters as separate ones) behind an optional sigmoid gate (Qwen2-MoE).

    Tokens are grouped per expert by sorting the (token, expert) assignments; each expert runs on its
    contiguous slice in blocks of at most ceil(T*k / E) rows (a Python loop over experts and blocks,
    never over tokens) and writes into one [T*k, h] output. The routing weights scale the expert outputs,
    or with ``weight_on_input`` their gathered inputs (Llama 4).
    Legend: T tokens, h hidden, E experts, k top-k.
    """

    def __init__(self, f: MoE, hidden: int, dd: FactoryKwargs):
        super().__init__()
        self.f = f
        self.top_k = f.top_k
        self.num_experts = f.num_experts
        self.router = nn.Linear(hidden, f.num_experts, bias=f.router_bias, **dd)
        # the bias on the scores that choose experts: a buffer (DeepSeek-V3, GLM-4.5) or, as transformers
        # registers ERNIE 4.5's, a frozen Parameter; zero until a checkpoint fills it
        self.score_bias: torch.Tensor | None
        if f.score_bias == "parameter":
            self.score_bias = nn.Parameter(torch.zeros(f.num_experts, **dd), requires_grad=False)
        else:
            self.register_buffer("score_bias", torch.zeros(f.num_experts, **dd) if f.score_bias == "buffer" else None)
        self.experts = Experts(f, hidden, dd)
        # hash routing (DeepSeek-V4): the experts of token t are tid2eid[t], a frozen [vocab, k] int64 buffer
        # made by ``bind_vocab`` (the model knows the vocabulary); the forward then takes the input ids
        self.takes_ids = f.hash_routing
        self.register_buffer("tid2eid", None)
        self.shared = None
        self.shared_gate = None
        if f.num_shared_experts:
            inter = f.num_shared_experts * f.shared_intermediate_size
            self.shared = (DenseMLP if f.swiglu_limit is None else ClampedMLP)(
                hidden, inter, f.gated, f.activation, False, dd
            )
            if f.swiglu_limit is not None:
                self.shared.limit = f.swiglu_limit
            if f.shared_expert_gate:
                self.shared_gate = nn.Linear(hidden, 1, bias=False, **dd)

    def bind_vocab(self, vocab: int, device: torch.device) -> None:
        """Make the hash table (hash routing only): a buffer, in the state dict, not a parameter."""
        if self.f.hash_routing:
            self.register_buffer("tid2eid", torch.zeros(vocab, self.top_k, dtype=torch.long, device=device))
            self.tid2eid_init = HashTableInit(self)

    def route(
        self, x_Th: torch.Tensor, ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(scores [T, E] fp32, weights [T, k] fp32, experts [T, k] int64) for the normed tokens. The scores
        are what the analytic activation model holds: softmax or sigmoid scores, or the fp32 logits of
        topk_softmax and sparsemixer; every other routing temporary is freed here."""
        f = self.f
        logits_TE = self.router(x_Th).float()  # [T, E]
        if f.routing == "topk_softmax":  # gpt-oss: softmax over the k best logits
            top_Tk, experts_Tk = torch.topk(logits_TE, self.top_k, dim=-1)
            return logits_TE, torch.softmax(top_Tk, dim=-1).mul_(f.routed_scaling_factor), experts_Tk
        if f.routing == "sparsemixer":
            weights_Tk, experts_Tk = sparsemixer(logits_TE, f.jitter_eps)
            return logits_TE, weights_Tk.mul_(f.routed_scaling_factor), experts_Tk
        if f.routing == "sqrtsoftplus":  # DeepSeek-V4
            scores_TE = F.softplus(logits_TE).sqrt()
        else:
            scores_TE = torch.sigmoid(logits_TE) if f.routing == "sigmoid" else torch.softmax(logits_TE, dim=-1)
        del logits_TE
        if f.hash_routing:  # the table picks the experts; the scores weight them (renormalised, scaled)
            if ids is None or self.tid2eid is None:
                raise ValueError("hash-routed experts need the input ids and a bound vocabulary")
            experts_Tk = self.tid2eid[ids.reshape(-1)]
            weights_Tk = scores_TE.gather(1, experts_Tk)
            weights_Tk = weights_Tk / (weights_Tk.sum(dim=-1, keepdim=True) + 1e-20)
            return scores_TE, weights_Tk * f.routed_scaling_factor, experts_Tk
        choice_TE = scores_TE if self.score_bias is None else scores_TE + self.score_bias.float()
        if f.n_group > 1:
            choice_TE = group_limited(choice_TE, f.n_group, f.topk_group)
        top_Tk, experts_Tk = torch.topk(choice_TE, self.top_k, dim=-1)
        biased = choice_TE is not scores_TE
        del choice_TE
        weights_Tk = scores_TE.gather(1, experts_Tk) if biased else top_Tk  # weights from unbiased scores
        del top_Tk
        if f.norm_topk_prob:
            denominator = weights_Tk.sum(dim=-1, keepdim=True)
            if f.routing in ("sigmoid", "sqrtsoftplus"):
                denominator = denominator + 1e-20  # DeepSeek-V3 / GLM-4.5 guard (softmax sums are >= k / E)
            weights_Tk = weights_Tk / denominator
        if f.routed_scaling_factor != 1.0:
            weights_Tk = weights_Tk * f.routed_scaling_factor
        return scores_TE, weights_Tk, experts_Tk

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        shape = x.shape
        x_Th = x.reshape(-1, shape[-1])  # [T, h]
        scores_TE, weights_Tk, experts_Tk = self.route(x_Th, ids)  # noqa: F841 (scores stay live, as counted)
        held: tuple = ()
        if self._sync_free(x_Th, shape[-2]):  # CUDA decode steps, compiled code
            out_Th = self._routed_sync_free(x_Th, weights_Tk, experts_Tk)
        else:  # the sorted order and source tokens stay live to the end, as the memory model counts them
            out_Th, held = self._routed_loop(x_Th, weights_Tk, experts_Tk)
        if self.shared is not None:
            shared = self.shared(x_Th)  # [T, h]
            if self.shared_gate is not None:
                shared = torch.sigmoid(self.shared_gate(x_Th)) * shared
            out_Th = out_Th + shared
        del held  # only now: until here they are part of the layer's working set
        return out_Th.view(shape)

    def _sync_free(self, x_Th: torch.Tensor, seq: int) -> bool:
        """Whether to route without a host sync: in compiled code (a sync breaks the graph), and for CUDA
        decode steps (one sync per layer would stall the launch queue), when the grouped matmul runs or
        the gathered expert weights stay under ``GATHER_LIMIT_BYTES``. Elsewhere (prefill, eager CPU,
        where a sync costs nothing) the loop runs: its working set is what ``godprof.analytic.memory``
        models."""
        if x_Th.device.type == "meta":
            return False
        if not torch.compiler.is_compiling() and not (x_Th.is_cuda and seq == 1):
            return False
        if grouped_mm_ok(x_Th, self.experts):
            return True
        ex = self.experts
        gathered = x_Th.shape[0] * self.top_k * (ex.w_in[0].numel() + ex.w_out[0].numel()) * x_Th.element_size()
        return gathered <= GATHER_LIMIT_BYTES

    def _routed_loop(
        self, x_Th: torch.Tensor, weights_Tk: torch.Tensor, experts_Tk: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The reference dispatch (prefill): a loop over experts and row blocks, one host sync per layer.
        Returns [T, h] and the (sort order, source token) index tensors, which the caller keeps."""
        flat_experts = experts_Tk.reshape(-1)  # [T*k]
        order = torch.argsort(flat_experts, stable=True)  # assignments grouped by expert
        token_of = order // self.top_k  # [T*k] source token of each sorted assignment
        if x_Th.device.type == "meta":  # counting on meta (no values): spread the assignments evenly
            n_assign, E = flat_experts.numel(), self.num_experts
            counts = [n_assign // E + (1 if e < n_assign % E else 0) for e in range(E)]
        else:
            counts = torch.bincount(flat_experts, minlength=self.num_experts).tolist()  # one host sync
        x_sorted = x_Th[token_of]  # [T*k, h]
        if self.f.weight_on_input:  # Llama 4: experts see score-scaled tokens
            x_sorted.mul_(weights_Tk.reshape(-1)[order, None].to(x_sorted.dtype))
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
        if not self.f.weight_on_input:
            y_sorted.mul_(weights_Tk.reshape(-1)[order, None].to(y_sorted.dtype))
        out_Th = torch.zeros_like(x_Th).index_add_(0, token_of, y_sorted)  # [T, h]
        del y_sorted
        return out_Th, (order, token_of)

    def _routed_sync_free(self, x_Th: torch.Tensor, weights_Tk: torch.Tensor, experts_Tk: torch.Tensor) -> torch.Tensor:
        """The same routed experts with no host sync and shapes that do not depend on the routing (decode
        steps and compiled code: no ``.tolist()`` to break a graph or recompile per routing pattern).

        Grouped matmul (``torch._grouped_mm``) over the assignments sorted by expert, with the group ends
        computed on the device, where torch has it for this device and dtype (``grouped_mm_ok``); else
        each assignment gathers its expert's weights and runs a batched product (gpt-fast's Mixtral).
        Same FLOPs as the loop: 2 x (T*k) x (expert matmul weights). The gathered weights are
        (T*k) x (2I + I) x h elements, which is why the loop stays the path for prefill (``_sync_free``).
        """
        ex = self.experts
        k = self.top_k
        flat_N = experts_Tk.reshape(-1)  # [N = T*k]
        w_N = weights_Tk.reshape(-1, 1)  # [N, 1] fp32
        if grouped_mm_ok(x_Th, ex):
            order_N = torch.argsort(flat_N, stable=True)
            token_N = order_N // k
            expert_N = flat_N[order_N]
            w_N = w_N[order_N]
            x_Nh = x_Th[token_N]
            if self.f.weight_on_input:
                x_Nh = x_Nh * w_N.to(x_Nh.dtype)
            ends_E = torch.zeros(self.num_experts, dtype=torch.int32, device=x_Th.device)
            ends_E = ends_E.scatter_add_(0, flat_N, torch.ones_like(flat_N, dtype=torch.int32)).cumsum(0)
            ends_E = ends_E.to(torch.int32)
            hid = torch._grouped_mm(x_Nh, ex.w_in.transpose(-2, -1), offs=ends_E)  # [N, 2I or I]
            if ex.b_in is not None:
                hid = hid + ex.b_in[expert_N]
            y_Nh = torch._grouped_mm(ex.activate(hid).contiguous(), ex.w_out.transpose(-2, -1), offs=ends_E)
        else:
            token_N = torch.arange(x_Th.shape[0], device=x_Th.device).repeat_interleave(k)
            expert_N = flat_N
            x_Nh = x_Th[token_N]
            if self.f.weight_on_input:
                x_Nh = x_Nh * w_N.to(x_Nh.dtype)
            hid = torch.bmm(ex.w_in[expert_N], x_Nh[:, :, None])[:, :, 0]  # [N, 2I or I]
            if ex.b_in is not None:
                hid = hid + ex.b_in[expert_N]
            y_Nh = torch.bmm(ex.w_out[expert_N], ex.activate(hid)[:, :, None])[:, :, 0]  # [N, h]
        if ex.b_out is not None:
            y_Nh = y_Nh + ex.b_out[expert_N]
        if not self.f.weight_on_input:
            y_Nh = y_Nh * w_N.to(y_Nh.dtype)
        return torch.zeros_like(x_Th).index_add_(0, token_N, y_Nh)  # [T, h]


def _grouped_mm_device(dev: torch.device) -> bool:
    """torch has ``_grouped_mm`` and runs it on ``dev``: the CPU (a reference kernel) or a CUDA GPU of compute
    capability 9.0 or newer."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if dev.type == "cuda":
        return torch.cuda.get_device_capability(dev) >= (9, 0)
    return dev.type == "cpu"


def grouped_mm_ok(x: torch.Tensor, experts: Experts) -> bool:
    """Whether ``torch._grouped_mm`` takes these experts: torch has it, the device is the CPU or a CUDA GPU
    of compute capability 9.0 or newer (CPU builds have a reference kernel), the dtype is bf16 (the only
    one its shape checks take), and every row stride is a multiple of 16 bytes (h and I multiples of 8)."""
    if not experts.grouped_device or x.dtype != torch.bfloat16:  # its meta kernel takes bf16 only
        return False
    per = 16 // x.element_size()
    inter, hidden = experts.w_out.shape[-1], experts.w_out.shape[-2]
    return hidden % per == 0 and inter % per == 0


class ClampedMLP(DenseMLP):
    """A gated shared expert with DeepSeek-V4's clamp (``swiglu_limit``, set as ``limit``): down(act(min(gate,
    limit)) * clamp(up, -limit, limit)); the same parameters as ``DenseMLP``."""

    limit: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate_proj(x).clamp(max=self.limit)
        return self.down_proj(self.act(gate) * self.up_proj(x).clamp(-self.limit, self.limit))


class HashTableInit(nn.Module):
    """Draws a hash-routed MoE layer's token -> experts table at ``Model.init_weights`` (k distinct experts
    per token id, uniformly); a real checkpoint overwrites it. Holds no tensors of its own."""

    def __init__(self, layer: MoELayer):
        super().__init__()
        self._layer = [layer]  # a list: not registered as a child (no module cycle)

    @torch.no_grad()
    def init_params(self, std: float, g: torch.Generator) -> None:
        layer = self._layer[0]
        table = layer.tid2eid
        assert table is not None
        keys = torch.rand(table.shape[0], layer.num_experts, generator=g, device=table.device)
        table.copy_(keys.argsort(dim=-1)[:, : layer.top_k])
