"""The spec sections other than the layer kinds: ``model`` (sizes, norms, embeddings), ``published``
figures, ``mtp`` (multi-token-prediction modules) and ``weights`` (the formats a checkpoint ships)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from godprof.checker import MAX_LAYERS, Checker, KeyPath
from godprof.dtypes import WeightFormats, get_dtype
from godprof.errors import NotFoundError

NORMS = ("rmsnorm", "layernorm")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    tie_embeddings: bool = False
    position_embedding: Literal["none", "learned"] = "none"
    max_position_embeddings: int | None = None
    norm: str = "rmsnorm"
    norm_bias: bool = False  # LayerNorm bias; defaults to True for layernorm
    final_norm: bool = True
    parallel_residual: bool = False  # x + attn(norm(x)) + mlp(norm'(x)) (GPT-J, GPT-NeoX)
    parallel_shared_norm: bool = False  # parallel blocks share one input norm (GPT-J)
    sandwich_norm: bool = False  # extra norms after mixer and FFN (Gemma-2, Grok-1)
    post_norm: bool = False  # norms on each branch output instead of its input (OLMo 2, EXAONE 4)
    hc_mult: int = 1  # residual streams mixed by hyper-connections (DeepSeek-V4: 4); 1 = a plain residual
    hc_sinkhorn_iters: int = 20  # Sinkhorn-Knopp iterations of the hyper-connections' mixing matrix
    lm_head_bias: bool = False
    embedding_multiplier: float = 1.0  # Gemma scales embeddings by sqrt(hidden); no parameters
    logit_scale: float = 1.0  # Cohere multiplies the logits; no parameters


@dataclass(frozen=True)
class Mtp:
    """Multi-token-prediction modules (DeepSeek-V3, GLM-4.5): ``layers`` extra blocks, each fed the
    normed hidden state and the normed embedding of the next token through ``eh_proj`` (2h -> h), with
    its own output norm and, as shipped, its own copies of the embedding and lm_head. Not part of the
    causal LM transformers builds: counted apart (``ParamCounts.mtp``) and added only when asked."""

    layers: int
    mixer: str
    ffn: str
    own_embeddings: bool = True


@dataclass(frozen=True)
class Published:
    """Figures the vendor published, for checking analytic counts (rounded as published)."""

    params_total: int | None = None
    params_active: int | None = None
    tolerance: float = 0.01  # relative; vendors that round harder get a wider one
    note: str | None = None


_MODEL_KEYS = {
    "vocab_size", "hidden_size", "num_layers", "tie_embeddings", "position_embedding",
    "max_position_embeddings", "norm", "norm_bias", "final_norm", "parallel_residual",
    "parallel_shared_norm", "sandwich_norm", "post_norm", "lm_head_bias", "embedding_multiplier", "logit_scale",
    "hc_mult", "hc_sinkhorn_iters",
}  # fmt: skip
_PUBLISHED_KEYS = {"params_total", "params_active", "tolerance", "note"}


def parse_model(c: Checker, raw: Any) -> ModelConfig:
    p: KeyPath = ("model",)
    d = c.mapping(raw, p)
    c.keys(d, p, _MODEL_KEYS, {"vocab_size", "hidden_size", "num_layers"})
    norm = c.choice(d, "norm", p, NORMS, "rmsnorm")
    pos = c.choice(d, "position_embedding", p, ("none", "learned"), "none")
    max_pos = c.opt_int(d, "max_position_embeddings", p)
    if pos == "learned" and max_pos is None:
        c.err((*p, "position_embedding"), "learned positions need model.max_position_embeddings")
    post = c.bool_(d, "post_norm", p, False)
    if post and (d.get("sandwich_norm") or d.get("parallel_residual")):
        c.err((*p, "post_norm"), "post_norm excludes sandwich_norm and parallel_residual")
    hc = c.int_(d, "hc_mult", p, 1)
    if hc > 1 and (d.get("parallel_residual") or post):
        c.err((*p, "hc_mult"), "hyper-connections (hc_mult > 1) need sequential pre-norm blocks")
    return ModelConfig(
        vocab_size=c.int_(d, "vocab_size", p),
        hidden_size=c.int_(d, "hidden_size", p),
        num_layers=c.int_(d, "num_layers", p, maximum=MAX_LAYERS),
        tie_embeddings=c.bool_(d, "tie_embeddings", p, False),
        position_embedding=pos,  # type: ignore[arg-type]
        max_position_embeddings=max_pos,
        norm=norm,
        norm_bias=c.bool_(d, "norm_bias", p, norm == "layernorm"),
        final_norm=c.bool_(d, "final_norm", p, True),
        parallel_residual=c.bool_(d, "parallel_residual", p, False),
        parallel_shared_norm=c.bool_(d, "parallel_shared_norm", p, False),
        sandwich_norm=c.bool_(d, "sandwich_norm", p, False),
        post_norm=post,
        hc_mult=hc,
        hc_sinkhorn_iters=c.int_(d, "hc_sinkhorn_iters", p, 20),
        lm_head_bias=c.bool_(d, "lm_head_bias", p, False),
        embedding_multiplier=c.float_(d, "embedding_multiplier", p, 1.0),
        logit_scale=c.float_(d, "logit_scale", p, 1.0),
    )


def parse_mtp(c: Checker, raw: Any, mixers: dict[str, Any], ffns: dict[str, Any]) -> Mtp | None:
    if raw is None:
        return None
    p: KeyPath = ("mtp",)
    d = c.mapping(raw, p)
    c.keys(d, p, {"layers", "mixer", "ffn", "own_embeddings"}, {"layers", "mixer", "ffn"})
    for key, names in (("mixer", mixers), ("ffn", ffns)):
        if key in d and d[key] not in names:
            c.err((*p, key), f"'{d[key]}' is not defined; defined: {', '.join(names)}")
    return Mtp(
        layers=c.int_(d, "layers", p, maximum=MAX_LAYERS),
        mixer=str(d.get("mixer")),
        ffn=str(d.get("ffn")),
        own_embeddings=c.bool_(d, "own_embeddings", p, True),
    )


def parse_weights(c: Checker, raw: Any) -> WeightFormats | None:
    """The ``weights`` section: ``default`` and per parameter component (``godprof.analytic.params.COMPONENTS``)
    the format its checkpoint ships it in (``godprof.dtypes.WeightFormats`` says what each entry stores)."""
    if raw is None:
        return None
    from godprof.analytic.params import COMPONENTS  # the analytic package imports this module

    p: KeyPath = ("weights",)
    d = c.mapping(raw, p)
    c.keys(d, p, {"default", *COMPONENTS}, set())
    out: dict[str, str] = {}
    for key, value in d.items():
        if key != "default" and key not in COMPONENTS:
            continue
        if not isinstance(value, str):
            c.err((*p, key), f"expected a weight format name, got {value!r}")
            continue
        try:
            dt = get_dtype(value)
        except NotFoundError as e:
            c.err((*p, key), str(e).replace("unknown dtype", "unknown weight format"))
            continue
        if key == "norms" and not dt.is_float:
            c.err((*p, key), f"norms hold no weight matrices to store in {dt.name}: give fp32, bf16 or fp16")
            continue
        out[key] = dt.name
    return WeightFormats(out.pop("default", "bf16"), out)
