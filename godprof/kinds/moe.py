"""``type: moe``: routed experts with top-k routing, plus optional always-on shared experts.

Structure (transformers' Mixtral / Qwen2-MoE / DeepSeek-V3 MoE blocks): a router Linear(hidden,
experts) (optionally biased), ``num_experts`` MLPs of ``expert_intermediate_size`` of which a token
uses ``top_k``, and ``num_shared_experts`` MLPs every token uses (optionally behind a sigmoid gate
Linear(hidden, 1): Qwen2-MoE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.base import ACTIVATIONS, FP32_BYTES, FfnKind, Part, mlp_into
from godprof.kinds.mlp import mlp_peak_elements, mlp_train_elements


@dataclass(frozen=True)
class MoE(FfnKind):
    """Routed experts with top-k routing, plus optional shared experts."""

    num_experts: int
    top_k: int
    expert_intermediate_size: int
    gated: bool = True
    activation: str = "silu"
    expert_bias: bool = False
    router_bias: bool = False
    num_shared_experts: int = 0
    shared_intermediate_size: int = 0  # per shared expert; defaults to the routed expert size
    shared_expert_gate: bool = False  # sigmoid gate Linear(hidden, 1) on the shared output (Qwen2-MoE)

    type: ClassVar[str] = "moe"
    label: ClassVar[str] = "moe"
    build: ClassVar[str] = "godprof.build.kinds.moe:MoELayer"
    sparse: ClassVar[bool] = True
    keys: ClassVar[frozenset[str]] = frozenset({
        "type", "num_experts", "top_k", "expert_intermediate_size", "gated", "activation", "expert_bias",
        "router_bias", "num_shared_experts", "shared_intermediate_size", "shared_expert_gate",
    })  # fmt: skip
    required: ClassVar[frozenset[str]] = frozenset({"type", "num_experts", "top_k", "expert_intermediate_size"})

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> MoE:
        n = c.int_(d, "num_experts", p)
        k = c.int_(d, "top_k", p)
        if k > n:
            c.err((*p, "top_k"), f"top_k ({k}) cannot exceed num_experts ({n})")
        inter = c.int_(d, "expert_intermediate_size", p)
        shared = c.int_(d, "num_shared_experts", p, 0, minimum=0)
        gate = c.bool_(d, "shared_expert_gate", p, False)
        if gate and not shared:
            c.err((*p, "shared_expert_gate"), "a shared-expert gate needs num_shared_experts >= 1")
        return cls(
            num_experts=n,
            top_k=k,
            expert_intermediate_size=inter,
            gated=c.bool_(d, "gated", p, True),
            activation=c.choice(d, "activation", p, ACTIVATIONS, "silu"),
            expert_bias=c.bool_(d, "expert_bias", p, False),
            router_bias=c.bool_(d, "router_bias", p, False),
            num_shared_experts=shared,
            shared_intermediate_size=c.int_(d, "shared_intermediate_size", p, inter) if shared else 0,
            shared_expert_gate=gate,
        )

    def _one_expert(self, hidden: int) -> Part:
        p = Part()
        mlp_into(p, "routed_experts", hidden, self.expert_intermediate_size, self.gated, self.expert_bias)
        return p

    def params(self, hidden: int) -> Part:
        """Router + routed experts (top_k active) + shared experts (+ their gate)."""
        p = Part()
        p.linear("router", hidden, self.num_experts, self.router_bias)
        one = self._one_expert(hidden)
        mlp_into(
            p, "routed_experts", hidden, self.expert_intermediate_size, self.gated, self.expert_bias,
            count=self.num_experts,
        )  # fmt: skip
        unused = self.num_experts - self.top_k
        p.matmul -= unused * one.matmul
        p.inactive += unused * one.total
        if self.num_shared_experts:
            mlp_into(
                p, "shared_experts", hidden, self.shared_intermediate_size, self.gated, False,
                count=self.num_shared_experts,
            )  # fmt: skip
            if self.shared_expert_gate:
                p.linear("shared_experts", hidden, 1, False)
        return p

    def routed_experts(self, hidden: int) -> tuple[int, int, Part] | None:
        return self.num_experts, self.top_k, self._one_expert(hidden)

    def tp_problem(self, tp: int) -> str | None:
        if self.num_experts % tp:
            return f"{self.num_experts} experts do not split {tp} ways"
        return None

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int) -> int:
        """Normed input, fp32 router scores [T, E], top-k weights (fp32) and indices, the sort order and
        source tokens (int64), the gathered inputs and the expert outputs [T*k, h]; each expert call runs
        on at most ceil(T*k / E) rows (the build's block) with its hidden tensors; then the combined output
        and the shared experts' MLP."""
        t = batch * seq
        cv = FP32_BYTES if a != FP32_BYTES else 0
        k, E, inter, h = self.top_k, self.num_experts, self.expert_intermediate_size, hidden
        routing = FP32_BYTES * t * E + (FP32_BYTES + 8) * t * k + 2 * 8 * t * k
        block = -(-t * k // E)
        per_row = max(4 * inter, 3 * inter + h) if self.gated else max(2 * inter, inter + h)
        experts = a * (2 * t * k * h + block * per_row)
        shared = 0
        if self.num_shared_experts:
            s_inter = self.num_shared_experts * self.shared_intermediate_size
            shared = a * (t * h + mlp_peak_elements(t, h, s_inter, self.gated))
        combine = a * t * h + (FP32_BYTES + cv) * t * k + a * t * k * h  # weights gathered per row, in place
        return a * t * h + routing + max(experts, shared, combine)

    def train_saved(self, hidden: int) -> tuple[int, int]:
        """Per routed expert a token uses: its input copy and hidden tensors; fp32 router logits; the
        shared experts' hidden tensors."""
        el = 2 * hidden + self.top_k * (hidden + mlp_train_elements(self.expert_intermediate_size, self.gated))
        if self.num_shared_experts:
            el += self.num_shared_experts * mlp_train_elements(self.shared_intermediate_size, self.gated)
        return el, FP32_BYTES * self.num_experts
