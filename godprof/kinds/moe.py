"""``type: moe``: routed experts with top-k routing, plus optional always-on shared experts.

Structure (transformers 5's MoE blocks: ``models/mixtral``, ``qwen2_moe``, ``deepseek_v3``, ``gpt_oss``,
``llama4``, ``glm4_moe``, ``olmoe``, ``ernie4_5_moe``, ``hunyuan_v1_moe``, ``dbrx``, ``phimoe``): a router
Linear(hidden, experts) (optionally biased: gpt-oss), ``num_experts`` MLPs of
``expert_intermediate_size`` of which a token uses ``top_k`` (optionally with biases on both projections:
gpt-oss's ``gate_up_proj_bias`` [E, 2I] and ``down_proj_bias`` [E, h]), and ``num_shared_experts`` MLPs
every token uses (optionally behind a sigmoid gate Linear(hidden, 1): Qwen2-MoE).

Routing (``routing``; none of it has parameters except ERNIE's score bias, see ``score_bias``):

- ``softmax`` (default): softmax over all experts in fp32, the top-k probabilities, renormalised to sum
  to 1 when ``norm_topk_prob`` (Mixtral always; Qwen2/3-MoE, OLMoE by config; DBRX's
  ``moe_normalize_expert_weights: 1``; ERNIE 4.5 always).
- ``topk_softmax``: top-k of the logits, softmax over those k (gpt-oss's ``GptOssTopKRouter``): the same
  weights as ``softmax`` with renormalisation, computed over k values instead of E.
- ``sigmoid``: sigmoid scores, top-k, weights = the chosen scores, renormalised when
  ``norm_topk_prob`` (DeepSeek-V3 and GLM-4.5's ``TopkRouter``; Llama 4's ``Llama4Router``, which takes
  the top-k logits then their sigmoid, is the same with ``norm_topk_prob: false``).
- ``sqrtsoftplus``: sqrt(softplus(logit)) scores, then as ``sigmoid`` (DeepSeek-V4's ``scoring_func``).
- ``sparsemixer``: PhiMoE's top-2 SparseMixer (``models/phimoe``, ``sparsemixer`` at inference): the
  best expert and its softmax weight among the experts whose logit is within ``2 x jitter_eps``
  (relative) of it, then the same for the second best with the first masked out.

Options of softmax/sigmoid routing: ``score_bias`` adds a per-expert bias to the scores used to *choose*
the experts, not to the weights (DeepSeek-V3/GLM-4.5's ``e_score_correction_bias``, a buffer:
``buffer``, no parameters; ERNIE 4.5's ``moe_statics.e_score_correction_bias``, which transformers
registers as a Parameter: ``parameter``, E parameters in ``router``); ``n_group``/``topk_group`` limit the
choice to the ``topk_group`` groups (of E / n_group experts) with the best sum of their two best scores
(DeepSeek-V3's group-limited routing). For every routing ``routed_scaling_factor`` multiplies the weights
(DeepSeek-V3 2.5, GLM-4.5 2.5), and ``weight_on_input`` multiplies each expert's *input* by its weight
instead of its output (Llama 4's ``Llama4TextMoe``; vLLM calls it ``apply_router_weight_on_input``).

``hash_routing`` (DeepSeek-V4's ``hash_moe`` layers, transformers ``DeepseekV4HashRouter``): the experts
are not chosen from the scores but looked up by token id in a frozen table ``tid2eid`` [vocab, top_k]
(int64, a persistent *buffer*, not a parameter: vocab x top_k x 8 bytes in the checkpoint, not in the
parameter counts); the router's scores still weight them. ``swiglu_limit`` clamps the gated experts'
(and shared experts') pre-activations as DeepSeek-V4 does: gate to at most the limit, up to +-limit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.base import FP32_BYTES, FfnKind, Part, mlp_into
from godprof.kinds.mlp import activation, mlp_peak_elements, mlp_train_elements

ROUTINGS = ("softmax", "topk_softmax", "sigmoid", "sqrtsoftplus", "sparsemixer")
SCORED = ("softmax", "sigmoid", "sqrtsoftplus")  # routings with a score per expert to bias, group or hash
SCORE_BIASES = ("none", "buffer", "parameter")


@dataclass(frozen=True)
class MoE(FfnKind):
    """Routed experts with top-k routing, plus optional shared experts."""

    num_experts: int
    top_k: int
    expert_intermediate_size: int
    gated: bool = True
    activation: str = "silu"
    expert_bias: bool = False  # biases on every expert's projections (gpt-oss)
    router_bias: bool = False  # the router Linear's bias (gpt-oss)
    num_shared_experts: int = 0
    shared_intermediate_size: int = 0  # per shared expert; defaults to the routed expert size
    shared_expert_gate: bool = False  # sigmoid gate Linear(hidden, 1) on the shared output (Qwen2-MoE)
    routing: str = "softmax"  # softmax | topk_softmax | sigmoid | sparsemixer (see the module docstring)
    norm_topk_prob: bool = True  # softmax / sigmoid: renormalise the k weights to sum to 1
    routed_scaling_factor: float = 1.0  # multiplies the routing weights (DeepSeek-V3, GLM-4.5)
    score_bias: str = "none"  # none | buffer | parameter: a bias on the scores that choose the experts
    n_group: int = 1  # group-limited routing: experts in n_group groups...
    topk_group: int = 1  # ...of which a token's experts come from the best topk_group
    weight_on_input: bool = False  # the routing weight scales the expert's input (Llama 4)
    jitter_eps: float = 0.01  # sparsemixer's threshold (PhiMoE's router_jitter_noise)
    hash_routing: bool = False  # experts looked up by token id in a frozen buffer (DeepSeek-V4 hash_moe)
    swiglu_limit: float | None = None  # clamp of gated experts' pre-activations (DeepSeek-V4: 10)

    type: ClassVar[str] = "moe"
    label: ClassVar[str] = "moe"
    build: ClassVar[str] = "godprof.build.kinds.moe:MoELayer"
    sparse: ClassVar[bool] = True
    keys: ClassVar[frozenset[str]] = frozenset({
        "type", "num_experts", "top_k", "expert_intermediate_size", "gated", "activation", "expert_bias",
        "router_bias", "num_shared_experts", "shared_intermediate_size", "shared_expert_gate", "routing",
        "norm_topk_prob", "routed_scaling_factor", "score_bias", "n_group", "topk_group", "weight_on_input",
        "jitter_eps", "hash_routing", "swiglu_limit",
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
        gated = c.bool_(d, "gated", p, True)
        routing = c.choice(d, "routing", p, ROUTINGS, "softmax")
        scored = routing in SCORED
        for key in ("norm_topk_prob", "score_bias", "n_group", "topk_group", "hash_routing"):
            if key in d and not scored:
                c.err((*p, key), f"applies to routing softmax or sigmoid (or sqrtsoftplus), not {routing}")
        if "jitter_eps" in d and routing != "sparsemixer":
            c.err((*p, "jitter_eps"), f"applies to routing sparsemixer, not {routing}")
        if routing == "sparsemixer" and k != 2:
            c.err((*p, "top_k"), f"sparsemixer routing picks exactly 2 experts, got top_k {k}")
        hashed = c.bool_(d, "hash_routing", p, False)
        if hashed:
            for key in ("score_bias", "n_group", "topk_group"):
                if key in d:
                    c.err((*p, key), "does not apply with hash_routing: a token's experts come from its id")
        limit = None
        if d.get("swiglu_limit") is not None:
            limit = c.float_(d, "swiglu_limit", p, 10.0)
            if not gated or d.get("activation") == "swiglu_oai":
                c.err((*p, "swiglu_limit"), "applies to gated experts with a plain SwiGLU/GeGLU activation")
        groups = c.int_(d, "n_group", p, 1)
        topk_group = c.int_(d, "topk_group", p, 1)
        if n % groups:
            c.err((*p, "n_group"), f"{n} experts do not split into {groups} groups")
        elif groups > 1 and n // groups < 2:
            c.err((*p, "n_group"), "group scores sum each group's 2 best experts: groups need >= 2 experts")
        elif topk_group > groups:
            c.err((*p, "topk_group"), f"topk_group ({topk_group}) cannot exceed n_group ({groups})")
        elif k > topk_group * (n // groups):
            c.err((*p, "top_k"), f"top_k ({k}) exceeds the {topk_group * (n // groups)} experts of topk_group groups")
        return cls(
            num_experts=n,
            top_k=k,
            expert_intermediate_size=inter,
            gated=gated,
            activation=activation(c, d, p, gated),
            expert_bias=c.bool_(d, "expert_bias", p, False),
            router_bias=c.bool_(d, "router_bias", p, False),
            num_shared_experts=shared,
            shared_intermediate_size=c.int_(d, "shared_intermediate_size", p, inter) if shared else 0,
            shared_expert_gate=gate,
            routing=routing,
            norm_topk_prob=c.bool_(d, "norm_topk_prob", p, True),
            routed_scaling_factor=c.float_(d, "routed_scaling_factor", p, 1.0),
            score_bias=c.choice(d, "score_bias", p, SCORE_BIASES, "none"),
            n_group=groups,
            topk_group=topk_group,
            weight_on_input=c.bool_(d, "weight_on_input", p, False),
            jitter_eps=c.float_(d, "jitter_eps", p, 0.01),
            hash_routing=hashed,
            swiglu_limit=limit,
        )

    def _one_expert(self, hidden: int) -> Part:
        p = Part()
        mlp_into(p, "routed_experts", hidden, self.expert_intermediate_size, self.gated, self.expert_bias)
        return p

    def params(self, hidden: int) -> Part:
        """Router (+ ERNIE's score-bias Parameter) + routed experts (top_k active) + shared experts (+ their
        gate). O(1) in the number of experts: one expert's count times E."""
        p = Part()
        p.linear("router", hidden, self.num_experts, self.router_bias)
        if self.score_bias == "parameter":
            p.add("router", self.num_experts)  # [E] (transformers: [1, E]); not a matmul weight
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

    def tp_rank(self, tp: int) -> MoE:
        """Tensor parallel inside the experts (``godprof measure --tp``): every rank holds all experts with
        expert_intermediate_size / tp (and the shared experts' width / tp); the router is replicated, so
        every rank routes alike, and the layer's output is a partial sum. Hash routing looks experts up
        by token id, which the vocab-parallel split does not give each rank: not split."""
        sizes = [self.expert_intermediate_size] + ([self.shared_intermediate_size] if self.num_shared_experts else [])
        if self.hash_routing:
            raise ValueError("hash-routed experts read the full vocabulary")
        if any(n % tp for n in sizes):
            raise ValueError(f"expert width {' / '.join(map(str, sizes))} does not split {tp} ways")
        return replace(self, expert_intermediate_size=self.expert_intermediate_size // tp,
                       shared_intermediate_size=self.shared_intermediate_size // tp)  # fmt: skip

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int) -> int:
        """Normed input, fp32 router scores [T, E] (softmax or sigmoid scores, or the fp32 logits for
        topk_softmax and sparsemixer), top-k weights (fp32) and indices, the sort order and source tokens
        (int64), the gathered inputs and the expert outputs [T*k, h]; each expert call runs on at most
        ceil(T*k / E) rows (the build's block) with its hidden tensors; then the combined output and the
        shared experts' MLP. Every routing holds the same tensors after choosing (the build frees its
        temporaries: biased scores, group masks); ``weight_on_input`` scales the gathered inputs in place.
        Leaves out the routing temporaries themselves (an [T, E] fp32 copy or two), below the expert phase
        unless E is large against k x hidden."""
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
