"""Exact parameter counts, total and active per token, by component and by layer kind.

Each layer kind counts its own parameters (``MixerKind.params`` / ``FfnKind.params`` in
``godprof.kinds``, following the module structure of the reference implementations in transformers),
this module adds the block norms, embeddings, head and multi-token-prediction modules, and the PyTorch
build in ``godprof.build`` creates exactly these tensors; tests assert equality with the built model.

Components: embedding, position_embedding, lm_head, attention, mlp, routed_experts, shared_experts,
router, ssm, hyper_connections (DeepSeek-V4's residual streams), norms. "Active per token" counts
everything a token touches, the embedding and lm_head included (the convention behind Mixtral's
published 12.9B active), with only ``top_k`` of the routed experts. ``matmul`` counts the weights
used as a matrix product per token (every Linear, lm_head even when tied, routers; not embeddings,
norms, biases, convolutions or SSM vectors): the FLOP model multiplies it by 2.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from godprof.kinds.base import Part
from godprof.spec import Ffn, Layer, Mixer, Spec

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
    "hyper_connections",
    "norms",
    "mtp",
)

__all__ = ["COMPONENTS", "ParamCounts", "Part", "count_params", "ffn_part", "layer_part", "mixer_part"]


def norm_params(spec: Spec, size: int) -> int:
    """One norm over ``size`` features: RMSNorm has a weight; LayerNorm a weight and (usually) a bias."""
    m = spec.model
    return size * (2 if (m.norm == "layernorm" and m.norm_bias) else 1)


def mixer_part(mixer: Mixer, hidden: int) -> Part:
    """One layer's token mixer, as its kind counts it."""
    return mixer.params(hidden)


def ffn_part(ffn: Ffn, hidden: int) -> Part:
    """One layer's channel mixer, as its kind counts it (routed experts a token skips in ``inactive``)."""
    return ffn.params(hidden)


def norms_per_layer(spec: Spec, layer: Layer) -> int:
    """Block norms: pre-mixer and pre-FFN (one shared in GPT-J-style parallel blocks), plus post-norms
    for sandwich-normed models (Gemma-2, Grok-1). Post-norm blocks (OLMo 2) have as many, after each
    branch instead of before it. A ``passthrough`` mixer (``type: none``) has no branch and so no norm:
    the layer is its FFN with its own norm (Nemotron-H's MLP blocks: one norm)."""
    m = spec.model
    has_ffn = layer.ffn is not None
    has_mixer = not layer.mixer.passthrough
    shared = m.parallel_residual and m.parallel_shared_norm and has_mixer  # shared with the mixer's norm
    own = getattr(layer.mixer, "owns_norm", False)  # a mixer that normalises its own input counts that norm
    n = (1 if has_mixer and not own else 0) + (1 if has_ffn and not shared else 0)
    if m.sandwich_norm:
        n += (1 if has_mixer else 0) + (1 if has_ffn else 0)
    return n


def hyper_connection_params(spec: Spec, sub_blocks: int) -> Part:
    """Manifold-constrained hyper-connections (DeepSeek-V4, ``model.hc_mult`` = n > 1 residual streams;
    transformers' ``DeepseekV4HyperConnection``): per sub-block (mixer, FFN) ``fn`` [(2 + n) n, n h] mapping
    the flattened, RMS-normed streams to the pre (n), post (n) and comb (n x n) weights, ``base``
    [(2 + n) n] and ``scale`` [3]. ``fn``'s product is counted as a per-token matmul (it is not a Linear
    a weight format quantises: the checkpoint keeps these in fp32). Nothing for n = 1."""
    p = Part()
    n, h = spec.model.hc_mult, spec.model.hidden_size
    if n > 1 and sub_blocks:
        out = (2 + n) * n
        p.add("hyper_connections", sub_blocks * (out * n * h + out + 3))
        p.matmul += sub_blocks * out * n * h
    return p


def layer_sub_blocks(layer: Layer) -> int:
    """Residual branches of a layer: its mixer (unless a passthrough) and its FFN (if any)."""
    return (0 if layer.mixer.passthrough else 1) + (1 if layer.ffn is not None else 0)


def shared_parts(spec: Spec) -> dict[object, Part]:
    """Weights several layers share, counted once: a mixer kind with ``shared_key()`` / ``shared_params``
    (Zamba2's shared blocks) stores those weights under its key, however many layers use it; its
    ``params`` holds what each use adds."""
    out: dict[object, Part] = {}
    for name in dict.fromkeys(spec.layer_mixers):
        mixer = spec.mixers[name]
        key = getattr(mixer, "shared_key", None)
        if key is not None and key() not in out:
            out[key()] = mixer.shared_params(spec.model.hidden_size)
    return out


def layer_part(spec: Spec, layer: Layer) -> Part:
    h = spec.model.hidden_size
    p = mixer_part(layer.mixer, h)
    if layer.ffn is not None:
        p.merge(ffn_part(layer.ffn, h))
    p.add("norms", norms_per_layer(spec, layer) * norm_params(spec, h))
    p.merge(hyper_connection_params(spec, layer_sub_blocks(layer)))
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
    if m.hc_mult > 1:  # DeepSeek-V4's hc_head: collapses the n streams before the final norm
        n = m.hc_mult
        p.add("hyper_connections", n * n * m.hidden_size + n + 1)  # hc_fn [n, n h], hc_base [n], hc_scale [1]
        p.matmul += n * n * m.hidden_size
    p.add("lm_head", 0 if m.tie_embeddings else m.vocab_size * m.hidden_size)
    if m.lm_head_bias:
        p.add("lm_head", m.vocab_size)
    p.matmul += m.vocab_size * m.hidden_size  # the lm_head product runs even when the weight is tied
    return p


def mtp_part(spec: Spec) -> Part:
    """The multi-token-prediction modules (DeepSeek-V3's reference ``MTP`` block, GLM-4.5's), all under
    component ``mtp``: per module an RMSNorm on the hidden state and one on the embedding (enorm, hnorm),
    ``eh_proj`` Linear(2h, h), one block (its mixer, FFN and block norms), the output norm, and, when
    ``own_embeddings`` (as both ship their checkpoints), its own embedding and lm_head copies. Routed
    experts a token skips are ``inactive``. Empty without an ``mtp`` section."""
    layer = spec.mtp_layer()
    out = Part()
    if layer is None or spec.mtp is None:
        return out
    h, v = spec.model.hidden_size, spec.model.vocab_size
    one = layer_part(spec, layer)
    one.add("mtp", 3 * norm_params(spec, h))  # enorm, hnorm, output norm
    one.linear("mtp", 2 * h, h, False)  # eh_proj
    if spec.mtp.own_embeddings:
        one.add("mtp", 2 * v * h)  # embedding and lm_head copies: tables kept in 16 bits, like the model's own
        one.matmul += v * h  # the head's product runs per predicted token
    for _ in range(spec.mtp.layers):
        out.merge(one)
    total, inactive = out.total, out.inactive
    out.by_component.clear()
    out.by_component["mtp"] = total
    out.inactive = inactive
    return out


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
    mtp_total: int = 0  # multi-token-prediction modules, counted apart (in ``total`` only when asked)
    mtp_active: int = 0
    mtp_included: bool = False
    # Weight matrices by component, for per-component weight formats (``memory.weights_by_format``):
    # the Linear weights above ({component: {(n_in, n_out): count}}; a counted MTP module's under "mtp"),
    # and the embedding, position-embedding and untied lm_head tables, as (hidden, rows) matrices.
    linear_by_component: dict[str, dict[tuple[int, int], int]] = field(default_factory=dict)
    tables_by_component: dict[str, dict[tuple[int, int], int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "active": self.active,
            "mtp": {"total": self.mtp_total, "active": self.mtp_active, "included": self.mtp_included},
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


def count_params(spec: Spec, include_mtp: bool = False) -> ParamCounts:
    """Exact parameter counts of a spec. See the module docstring for what each figure includes.

    Multi-token-prediction modules (``mtp_part``) are reported apart and join the total, the active count
    and the weights only with ``include_mtp`` (transformers' causal LMs leave them out)."""
    total = model_part(spec)
    mtp = mtp_part(spec)
    kinds: dict[tuple[str, str], tuple[Layer, Part, int]] = {}
    for layer in spec.layers():
        key = (layer.mixer_name, layer.ffn_name)
        if key not in kinds:
            kinds[key] = (layer, layer_part(spec, layer), 0)
        lay, part, n = kinds[key]
        kinds[key] = (lay, part, n + 1)
        total.merge(part)
    for part in shared_parts(spec).values():
        total.merge(part)
    layers_inactive = total.inactive
    linears = Counter(total.linear_by_component)
    if include_mtp:
        total.merge(mtp)
        for (_, n_in, n_out), n in mtp.linear_by_component.items():
            linears[("mtp", n_in, n_out)] += n
    by_component = {c: total.by_component.get(c, 0) for c in COMPONENTS}
    active_by_component = dict(by_component)
    active_by_component["routed_experts"] -= layers_inactive
    active_by_component["mtp"] -= total.inactive - layers_inactive
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
        mtp_total=mtp.total,
        mtp_active=mtp.total - mtp.inactive,
        mtp_included=include_mtp and mtp.total > 0,
        linear_by_component=_by_component(linears),
        tables_by_component=_tables(spec),
    )


def _by_component(shapes: Counter[tuple[str, int, int]]) -> dict[str, dict[tuple[int, int], int]]:
    out: dict[str, dict[tuple[int, int], int]] = {}
    for (comp, n_in, n_out), n in shapes.items():
        out.setdefault(comp, {})[(n_in, n_out)] = n
    return out


def _tables(spec: Spec) -> dict[str, dict[tuple[int, int], int]]:
    """The embedding tables and the untied lm_head as (hidden, rows) matrices (rows = vocab or positions):
    a weight format with scales along the hidden dimension stores them like a Linear(hidden, rows)."""
    m = spec.model
    out = {"embedding": {(m.hidden_size, m.vocab_size): 1}}
    if not m.tie_embeddings:
        out["lm_head"] = {(m.hidden_size, m.vocab_size): 1}
    if m.position_embedding == "learned" and m.max_position_embeddings:
        out["position_embedding"] = {(m.hidden_size, m.max_position_embeddings): 1}
    return out
