"""Exact parameter counts, total and active per token, by component and by layer kind.

Counts follow the module structure of the reference implementations (Hugging Face transformers'
Llama/Mixtral/DeepSeek-V3/Mamba/Mamba2/Jamba modules and state-spaces/mamba), and the PyTorch build in
``godprof.build`` creates exactly these tensors; tests assert equality with the built model.

Components: embedding, position_embedding, lm_head, attention, mlp, routed_experts, shared_experts,
router, ssm, norms. "Active per token" counts everything a token touches, the embedding and lm_head
included (the convention behind Mixtral's published 12.9B active), with only ``top_k`` of the
routed experts. ``matmul`` counts the weights used as a matrix product per token (every Linear,
lm_head even when tied, routers; not embeddings, norms, biases, convolutions or SSM vectors): the
FLOP model multiplies it by 2.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from godprof.spec import MLA, MLP, Attention, Ffn, Layer, Mamba1, Mamba2, Mixer, MoE, Spec

COMPONENTS = (
    "embedding",
    "position_embedding",
    "lm_head",
    "attention",
    "mlp",
    "routed_experts",
    "shared_experts",
    "router",
    "ssm",
    "norms",
)


@dataclass
class Part:
    """Parameters of one module, split by component, with its per-token matmul weights."""

    by_component: Counter[str] = field(default_factory=Counter)
    matmul: int = 0  # weights used in a matmul per token (active)
    inactive: int = 0  # routed-expert parameters a token does not use (total - active)
    quantizable: int = 0  # Linear weight matrices (what int8/int4/fp8 weight formats store compactly)
    linear_tensors: int = 0  # number of Linear weight matrices (fp8 per-tensor scales)
    linear_shapes: Counter[tuple[int, int]] = field(default_factory=Counter)  # (n_in, n_out) -> count

    def linear(self, component: str, n_in: int, n_out: int, bias: bool, count: int = 1) -> None:
        """``count`` Linear(n_in, n_out) layers, all used per token."""
        self.by_component[component] += count * (n_in * n_out + (n_out if bias else 0))
        self.matmul += count * n_in * n_out
        self.quantizable += count * n_in * n_out
        self.linear_tensors += count
        self.linear_shapes[(n_in, n_out)] += count

    def add(self, component: str, n: int) -> None:
        self.by_component[component] += n

    def merge(self, other: Part) -> None:
        self.by_component.update(other.by_component)
        self.matmul += other.matmul
        self.inactive += other.inactive
        self.quantizable += other.quantizable
        self.linear_tensors += other.linear_tensors
        self.linear_shapes.update(other.linear_shapes)

    @property
    def total(self) -> int:
        return sum(self.by_component.values())


def norm_params(spec: Spec, size: int) -> int:
    """One norm over ``size`` features: RMSNorm has a weight; LayerNorm a weight and (usually) a bias."""
    m = spec.model
    return size * (2 if (m.norm == "layernorm" and m.norm_bias) else 1)


def attention_part(a: Attention, hidden: int) -> Part:
    """q, k, v, o projections (GQA: k and v have num_kv_heads heads); qk-norm weights go to norms."""
    p = Part()
    p.linear("attention", hidden, a.num_heads * a.head_dim, a.qkv_bias)
    p.linear("attention", hidden, a.num_kv_heads * a.head_dim, a.qkv_bias, count=2)
    p.linear("attention", a.num_heads * a.head_dim, hidden, a.o_bias)
    if a.qk_norm:
        p.add("norms", 2 * a.head_dim)  # RMSNorm(head_dim) on q and on k, shared across heads
    return p


def mla_part(a: MLA, hidden: int) -> Part:
    """DeepSeek-V2/V3 MLA: q_a/q_b (or q), kv_a_proj_with_mqa, kv_b, o; two RMSNorms on the latents.

    ``bias`` follows ``attention_bias`` in the reference: on q_a_proj, kv_a_proj_with_mqa and o_proj.
    """
    p = Part()
    q_out = a.num_heads * a.qk_head_dim
    if a.q_lora_rank is None:
        p.linear("attention", hidden, q_out, False)
    else:
        p.linear("attention", hidden, a.q_lora_rank, a.bias)
        p.add("norms", a.q_lora_rank)
        p.linear("attention", a.q_lora_rank, q_out, False)
    p.linear("attention", hidden, a.kv_lora_rank + a.qk_rope_head_dim, a.bias)
    p.add("norms", a.kv_lora_rank)
    p.linear("attention", a.kv_lora_rank, a.num_heads * (a.qk_nope_head_dim + a.v_head_dim), False)
    p.linear("attention", a.num_heads * a.v_head_dim, hidden, a.bias)
    return p


def mamba1_part(m: Mamba1, hidden: int) -> Part:
    """Mamba-1 mixer: in_proj (x and z), depthwise conv1d, x_proj (dt, B, C), dt_proj, A_log, D, out_proj."""
    p = Part()
    di, n, r = m.d_inner, m.d_state, m.dt_rank
    p.linear("ssm", hidden, 2 * di, m.proj_bias)
    p.add("ssm", di * m.d_conv + (di if m.conv_bias else 0))
    p.linear("ssm", di, r + 2 * n, False)
    p.linear("ssm", r, di, True)  # dt_proj always has a bias (the dt initialisation lives there)
    p.add("ssm", di * n + di)  # A_log, D
    p.linear("ssm", di, hidden, m.proj_bias)
    if m.inner_norms:
        p.add("norms", r + 2 * n)  # Jamba's RMSNorms on dt, B and C
    return p


def mamba2_part(m: Mamba2, hidden: int) -> Part:
    """Mamba-2 mixer: in_proj [z, x, B, C, dt], conv1d over [x, B, C], dt_bias, A_log, D, gated norm, out_proj."""
    p = Part()
    di, h = m.d_inner, m.num_heads
    p.linear("ssm", hidden, 2 * di + 2 * m.n_groups * m.d_state + h, m.proj_bias)
    p.add("ssm", m.conv_dim * m.d_conv + (m.conv_dim if m.conv_bias else 0))
    p.add("ssm", 3 * h)  # dt_bias, A_log, D: one per head
    if m.gated_norm:
        p.add("norms", di)
    p.linear("ssm", di, hidden, m.proj_bias)
    return p


def mixer_part(mixer: Mixer, hidden: int) -> Part:
    if isinstance(mixer, Attention):
        return attention_part(mixer, hidden)
    if isinstance(mixer, MLA):
        return mla_part(mixer, hidden)
    if isinstance(mixer, Mamba1):
        return mamba1_part(mixer, hidden)
    return mamba2_part(mixer, hidden)


def _mlp_into(p: Part, component: str, hidden: int, inter: int, gated: bool, bias: bool, count: int = 1) -> None:
    n_in = 2 if gated else 1  # gate and up, or fc1
    p.linear(component, hidden, inter, bias, count=count * n_in)
    p.linear(component, inter, hidden, bias, count=count)


def ffn_part(ffn: Ffn, hidden: int) -> Part:
    """Dense MLP, or MoE: router + routed experts (top_k active) + shared experts (+ their gate)."""
    p = Part()
    if isinstance(ffn, MLP):
        _mlp_into(p, "mlp", hidden, ffn.intermediate_size, ffn.gated, ffn.bias)
        return p
    assert isinstance(ffn, MoE)
    p.linear("router", hidden, ffn.num_experts, ffn.router_bias)
    experts = Part()
    _mlp_into(experts, "routed_experts", hidden, ffn.expert_intermediate_size, ffn.gated, ffn.expert_bias)
    one_expert = experts.total
    _mlp_into(
        p, "routed_experts", hidden, ffn.expert_intermediate_size, ffn.gated, ffn.expert_bias, count=ffn.num_experts
    )
    unused = ffn.num_experts - ffn.top_k
    p.matmul -= unused * experts.matmul
    p.inactive += unused * one_expert
    if ffn.num_shared_experts:
        _mlp_into(
            p, "shared_experts", hidden, ffn.shared_intermediate_size, ffn.gated, False, count=ffn.num_shared_experts
        )
        if ffn.shared_expert_gate:
            p.linear("shared_experts", hidden, 1, False)
    return p


def norms_per_layer(spec: Spec, layer: Layer) -> int:
    """Block norms: pre-mixer and pre-FFN (one shared in GPT-J-style parallel blocks), plus post-norms
    for sandwich-normed models (Gemma-2, Grok-1)."""
    m = spec.model
    has_ffn = layer.ffn is not None
    n = 1 + (1 if has_ffn and not (m.parallel_residual and m.parallel_shared_norm) else 0)
    if m.sandwich_norm:
        n += 2 if has_ffn else 1
    return n


def layer_part(spec: Spec, layer: Layer) -> Part:
    h = spec.model.hidden_size
    p = mixer_part(layer.mixer, h)
    if layer.ffn is not None:
        p.merge(ffn_part(layer.ffn, h))
    p.add("norms", norms_per_layer(spec, layer) * norm_params(spec, h))
    return p


def model_part(spec: Spec) -> Part:
    """Parameters outside the layers: embeddings, positions, final norm, lm_head."""
    m = spec.model
    p = Part()
    p.add("embedding", m.vocab_size * m.hidden_size)
    if m.position_embedding == "learned":
        assert m.max_position_embeddings is not None
        p.add("position_embedding", m.max_position_embeddings * m.hidden_size)
    if m.final_norm:
        p.add("norms", norm_params(spec, m.hidden_size))
    p.add("lm_head", 0 if m.tie_embeddings else m.vocab_size * m.hidden_size)
    if m.lm_head_bias:
        p.add("lm_head", m.vocab_size)
    p.matmul += m.vocab_size * m.hidden_size  # the lm_head product runs even when the weight is tied
    return p


@dataclass(frozen=True)
class LayerKind:
    kind: str
    mixer: str
    ffn: str
    layers: int
    params_per_layer: int
    active_per_layer: int


@dataclass(frozen=True)
class ParamCounts:
    total: int
    active: int
    by_component: dict[str, int]
    active_by_component: dict[str, int]
    by_layer_kind: list[LayerKind]
    matmul_per_token: int  # weights in a matmul per token: 2x this is the per-token linear FLOPs
    quantizable: int  # Linear weights in the layers (excludes embeddings, lm_head, norms, biases, SSM vectors)
    linear_tensors: int
    linear_shapes: dict[tuple[int, int], int]  # Linear weights in the layers: (n_in, n_out) -> count

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "active": self.active,
            "by_component": dict(self.by_component),
            "active_by_component": dict(self.active_by_component),
            "by_layer_kind": [
                {
                    "kind": k.kind,
                    "mixer": k.mixer,
                    "ffn": k.ffn,
                    "layers": k.layers,
                    "params_per_layer": k.params_per_layer,
                    "active_per_layer": k.active_per_layer,
                }
                for k in self.by_layer_kind
            ],
            "matmul_per_token": self.matmul_per_token,
        }


def count_params(spec: Spec) -> ParamCounts:
    """Exact parameter counts of a spec. See the module docstring for what each figure includes."""
    total = model_part(spec)
    kinds: dict[tuple[str, str], tuple[Layer, Part, int]] = {}
    for layer in spec.layers():
        key = (layer.mixer_name, layer.ffn_name)
        if key not in kinds:
            kinds[key] = (layer, layer_part(spec, layer), 0)
        lay, part, n = kinds[key]
        kinds[key] = (lay, part, n + 1)
        total.merge(part)
    by_component = {c: total.by_component.get(c, 0) for c in COMPONENTS}
    active_by_component = dict(by_component)
    active_by_component["routed_experts"] -= total.inactive
    return ParamCounts(
        total=total.total,
        active=total.total - total.inactive,
        by_component=by_component,
        active_by_component=active_by_component,
        by_layer_kind=[
            LayerKind(lay.kind, m, f, n, part.total, part.total - part.inactive)
            for (m, f), (lay, part, n) in kinds.items()
        ],
        matmul_per_token=total.matmul,
        quantizable=total.quantizable,
        linear_tensors=total.linear_tensors,
        linear_shapes=dict(total.linear_shapes),
    )
