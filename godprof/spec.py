"""Architecture specs: the data model and the YAML loader with validation.

A spec is data (``yaml.safe_load`` only). It names token mixers and channel mixers (FFNs) once, then
a layout says which mixer and FFN each layer uses. Everything downstream (analytic counts, the
PyTorch build, reports) reads the resolved per-layer list from ``Spec.layers``.

Format (see README and specs/ for one example per family)::

    name: llama-3-8b
    family: dense            # dense | moe | ssm | hybrid
    source: https://...
    published: {params_total: 8030261248}
    model:
      vocab_size: 128256
      hidden_size: 4096
      num_layers: 32
      norm: rmsnorm          # rmsnorm | layernorm
    mixers:
      attn: {type: attention, num_heads: 32, num_kv_heads: 8}
    ffns:
      mlp: {type: mlp, intermediate_size: 14336}
    layout: {mixer: attn, ffn: mlp}   # optional when there is one mixer and one ffn

A layout entry is a name (every layer), a list of names (one per layer), or a pattern mapping with
``default`` and any of ``every: {period, offset, use}``, ``layers: {indices, use}``,
``first: {count, use}`` (precedence: first > layers > every > default).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from godprof.errors import Problem, SpecError

FAMILIES = ("dense", "moe", "ssm", "hybrid")
NORMS = ("rmsnorm", "layernorm")
ACTIVATIONS = ("silu", "gelu", "gelu_tanh", "relu")


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class Attention:
    """Multi-head attention with grouped KV heads (MHA when kv == heads, MQA when kv == 1)."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    qkv_bias: bool = False
    o_bias: bool = False
    rope: bool = True
    rotary_dim: int | None = None  # partial rotary (GPT-NeoX, GPT-J); None = whole head
    rope_theta: float = 10000.0
    sliding_window: int | None = None
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3, OLMo-2)
    type: Literal["attention"] = "attention"

    @property
    def kind(self) -> str:
        return "attention"


@dataclass(frozen=True)
class MLA:
    """Multi-head latent attention (DeepSeek-V2/V3): low-rank q and a compressed, cached kv latent."""

    num_heads: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None = None  # None: q is a full projection (DeepSeek-V2-Lite)
    bias: bool = False
    rope_theta: float = 10000.0
    type: Literal["mla"] = "mla"

    @property
    def kind(self) -> str:
        return "attention"

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


@dataclass(frozen=True)
class Mamba1:
    """Mamba-1 selective SSM mixer (Gu & Dao 2023), as in state-spaces/mamba and HF MambaMixer."""

    d_inner: int
    d_state: int = 16
    d_conv: int = 4
    dt_rank: int = 0  # resolved at load: `auto` = ceil(hidden / 16)
    conv_bias: bool = True
    proj_bias: bool = False
    inner_norms: bool = False  # RMSNorms on dt, B and C (Jamba)
    type: Literal["mamba1"] = "mamba1"

    @property
    def kind(self) -> str:
        return "ssm"


@dataclass(frozen=True)
class Mamba2:
    """Mamba-2 SSD mixer (Dao & Gu 2024). In-projection order: [z, x, B, C, dt]."""

    d_inner: int
    d_state: int = 128
    d_conv: int = 4
    head_dim: int = 64
    n_groups: int = 1
    chunk_size: int = 256
    gated_norm: bool = True
    conv_bias: bool = True
    proj_bias: bool = False
    type: Literal["mamba2"] = "mamba2"

    @property
    def kind(self) -> str:
        return "ssm"

    @property
    def num_heads(self) -> int:
        return self.d_inner // self.head_dim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.n_groups * self.d_state


Mixer = Attention | MLA | Mamba1 | Mamba2


@dataclass(frozen=True)
class MLP:
    """Dense channel mixer: gated (SwiGLU/GeGLU: gate, up, down) or plain (fc1, act, fc2)."""

    intermediate_size: int
    gated: bool = True
    activation: str = "silu"
    bias: bool = False
    type: Literal["mlp"] = "mlp"


@dataclass(frozen=True)
class MoE:
    """Routed experts with top-k routing, plus optional always-on shared experts."""

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
    type: Literal["moe"] = "moe"


Ffn = MLP | MoE


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
    lm_head_bias: bool = False
    embedding_multiplier: float = 1.0  # Gemma scales embeddings by sqrt(hidden); no parameters


@dataclass(frozen=True)
class Published:
    """Figures the vendor published, for checking analytic counts (rounded as published)."""

    params_total: int | None = None
    params_active: int | None = None
    tolerance: float = 0.01  # relative; vendors that round harder get a wider one
    note: str | None = None


@dataclass(frozen=True)
class Layer:
    index: int
    mixer_name: str
    mixer: Mixer
    ffn_name: str
    ffn: Ffn | None

    @property
    def kind(self) -> str:
        """Layer kind for breakdowns, e.g. ``attn+moe`` or ``mamba1``."""
        m = {"attention": "attn", "mla": "mla"}.get(self.mixer.type, self.mixer.type)
        return m if self.ffn is None else f"{m}+{self.ffn.type}"


@dataclass(frozen=True)
class Spec:
    name: str
    family: str
    model: ModelConfig
    mixers: dict[str, Mixer]
    ffns: dict[str, Ffn | None]
    layer_mixers: tuple[str, ...]
    layer_ffns: tuple[str, ...]
    source: str | None = None
    description: str | None = None
    published: Published | None = None
    path: str | None = field(default=None, compare=False)

    def layers(self) -> list[Layer]:
        return [
            Layer(i, mn, self.mixers[mn], fn, self.ffns[fn])
            for i, (mn, fn) in enumerate(zip(self.layer_mixers, self.layer_ffns, strict=True))
        ]

    @property
    def has_attention(self) -> bool:
        return any(self.mixers[m].kind == "attention" for m in set(self.layer_mixers))

    @property
    def has_ssm(self) -> bool:
        return any(self.mixers[m].kind == "ssm" for m in set(self.layer_mixers))

    @property
    def has_moe(self) -> bool:
        return any(isinstance(self.ffns[f], MoE) for f in set(self.layer_ffns))


# --------------------------------------------------------------------------- YAML with line numbers

KeyPath = tuple[str | int, ...]


def load_yaml(
    text: str, source: str | None = None, error: type[SpecError] = SpecError
) -> tuple[Any, dict[KeyPath, int]]:
    """Parse a YAML document once, with the safe constructors only (no tags that build objects), and
    map every key path to its 1-based line. Invalid YAML raises ``error`` naming the line."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        msg = getattr(e, "problem", None) or str(e)
        raise error(source, [Problem("", f"invalid YAML: {msg}", line)]) from None
    finally:
        loader.dispose()
    lines: dict[KeyPath, int] = {}

    def walk(node: yaml.Node, path: KeyPath) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                lines[(*path, key)] = k.start_mark.line + 1
                walk(v, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, i)] = item.start_mark.line + 1
                walk(item, (*path, i))

    if root is not None:
        walk(root, ())
    return data, lines


def _fmt_path(path: KeyPath) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class Checker:
    """Collects every problem in a document instead of stopping at the first."""

    def __init__(self, source: str | None, lines: dict[KeyPath, int]):
        self.source = source
        self.lines = lines
        self.problems: list[Problem] = []

    def line(self, path: KeyPath) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def err(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(_fmt_path(path), message, self.line(path)))

    def raise_if_any(self) -> None:
        if self.problems:
            self.problems.sort(key=lambda p: p.line or 0)
            raise SpecError(self.source, self.problems)

    # -- typed field readers; each returns a usable default after recording a problem

    def mapping(self, value: Any, path: KeyPath) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.err(path, f"expected a mapping, got {_typename(value)}")
            return {}
        return value

    def keys(self, d: dict[str, Any], path: KeyPath, allowed: set[str], required: set[str]) -> None:
        for k in d:
            if k not in allowed:
                near = difflib.get_close_matches(str(k), sorted(allowed), n=1, cutoff=0.6)
                hint = f"; did you mean '{near[0]}'?" if near else f"; known keys: {', '.join(sorted(allowed))}"
                self.err((*path, k), f"unknown key '{k}'{hint}")
        for k in sorted(required - set(d)):
            self.err(path, f"missing required key '{k}'")

    def int_(self, d: dict, key: str, path: KeyPath, default: int | None = None, *, minimum: int = 1) -> int:
        if key not in d or d[key] is None:
            return default if default is not None else minimum
        v = d[key]
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            self.err((*path, key), f"expected an integer, got {_typename(v)} {v!r}")
            return default if default is not None else minimum
        if v < minimum:
            what = "positive" if minimum == 1 else f">= {minimum}"
            self.err((*path, key), f"must be {what}, got {v}")
            return default if default is not None else minimum
        return v

    def opt_int(self, d: dict, key: str, path: KeyPath, *, minimum: int = 1) -> int | None:
        if d.get(key) is None:
            return None
        return self.int_(d, key, path, minimum=minimum)

    def bool_(self, d: dict, key: str, path: KeyPath, default: bool) -> bool:
        if key not in d or d[key] is None:
            return default
        v = d[key]
        if not isinstance(v, bool):
            self.err((*path, key), f"expected true or false, got {v!r}")
            return default
        return v

    def float_(self, d: dict, key: str, path: KeyPath, default: float, *, positive: bool = True) -> float:
        if key not in d or d[key] is None:
            return default
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.err((*path, key), f"expected a number, got {v!r}")
            return default
        if positive and v <= 0:
            self.err((*path, key), f"must be positive, got {v}")
            return default
        return float(v)

    def str_(self, d: dict, key: str, path: KeyPath, default: str | None = None) -> str | None:
        if key not in d or d[key] is None:
            return default
        v = d[key]
        if not isinstance(v, str):
            self.err((*path, key), f"expected a string, got {v!r}")
            return default
        return v

    def choice(self, d: dict, key: str, path: KeyPath, choices: tuple[str, ...], default: str) -> str:
        v = self.str_(d, key, path, default)
        if v not in choices:
            self.err((*path, key), f"must be one of {', '.join(choices)}, got {v!r}")
            return default
        return v


def _typename(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "nothing"}.get(
        type(v), type(v).__name__
    )


# --------------------------------------------------------------------------- section parsers

_ATTN_KEYS = {
    "type", "num_heads", "num_kv_heads", "head_dim", "qkv_bias", "o_bias", "rope", "rotary_dim",
    "rope_theta", "sliding_window", "qk_norm",
}  # fmt: skip
_MLA_KEYS = {
    "type", "num_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
    "v_head_dim", "bias", "rope_theta",
}  # fmt: skip
_MAMBA1_KEYS = {
    "type", "d_state", "d_conv", "expand", "d_inner", "dt_rank", "conv_bias", "proj_bias", "inner_norms",
}  # fmt: skip
_MAMBA2_KEYS = {
    "type", "d_state", "d_conv", "expand", "d_inner", "head_dim", "n_groups", "chunk_size", "gated_norm",
    "conv_bias", "proj_bias",
}  # fmt: skip
_MLP_KEYS = {"type", "intermediate_size", "gated", "activation", "bias"}
_MOE_KEYS = {
    "type", "num_experts", "top_k", "expert_intermediate_size", "gated", "activation", "expert_bias",
    "router_bias", "num_shared_experts", "shared_intermediate_size", "shared_expert_gate",
}  # fmt: skip
_MODEL_KEYS = {
    "vocab_size", "hidden_size", "num_layers", "tie_embeddings", "position_embedding",
    "max_position_embeddings", "norm", "norm_bias", "final_norm", "parallel_residual",
    "parallel_shared_norm", "sandwich_norm", "lm_head_bias", "embedding_multiplier",
}  # fmt: skip
_TOP_KEYS = {"name", "family", "source", "description", "published", "model", "mixers", "ffns", "layout"}
_PUBLISHED_KEYS = {"params_total", "params_active", "tolerance", "note"}


def _parse_model(c: Checker, raw: Any) -> ModelConfig:
    p: KeyPath = ("model",)
    d = c.mapping(raw, p)
    c.keys(d, p, _MODEL_KEYS, {"vocab_size", "hidden_size", "num_layers"})
    norm = c.choice(d, "norm", p, NORMS, "rmsnorm")
    pos = c.choice(d, "position_embedding", p, ("none", "learned"), "none")
    max_pos = c.opt_int(d, "max_position_embeddings", p)
    if pos == "learned" and max_pos is None:
        c.err((*p, "position_embedding"), "learned positions need model.max_position_embeddings")
    return ModelConfig(
        vocab_size=c.int_(d, "vocab_size", p),
        hidden_size=c.int_(d, "hidden_size", p),
        num_layers=c.int_(d, "num_layers", p),
        tie_embeddings=c.bool_(d, "tie_embeddings", p, False),
        position_embedding=pos,  # type: ignore[arg-type]
        max_position_embeddings=max_pos,
        norm=norm,
        norm_bias=c.bool_(d, "norm_bias", p, norm == "layernorm"),
        final_norm=c.bool_(d, "final_norm", p, True),
        parallel_residual=c.bool_(d, "parallel_residual", p, False),
        parallel_shared_norm=c.bool_(d, "parallel_shared_norm", p, False),
        sandwich_norm=c.bool_(d, "sandwich_norm", p, False),
        lm_head_bias=c.bool_(d, "lm_head_bias", p, False),
        embedding_multiplier=c.float_(d, "embedding_multiplier", p, 1.0),
    )


def _inner_size(c: Checker, d: dict, p: KeyPath, hidden: int) -> int:
    if "d_inner" in d and "expand" in d:
        c.err((*p, "d_inner"), "give either d_inner or expand, not both")
    if d.get("d_inner") is not None:
        return c.int_(d, "d_inner", p)
    expand = c.float_(d, "expand", p, 2.0)
    inner = expand * hidden
    if not float(inner).is_integer():
        c.err((*p, "expand"), f"expand x hidden_size = {inner} is not an integer")
    return int(inner)


def _parse_mixer(c: Checker, raw: Any, p: KeyPath, hidden: int) -> Mixer | None:
    d = c.mapping(raw, p)
    kind = d.get("type")
    if kind == "attention":
        c.keys(d, p, _ATTN_KEYS, {"type", "num_heads"})
        heads = c.int_(d, "num_heads", p)
        kv = c.int_(d, "num_kv_heads", p, heads)
        if heads % kv:
            c.err((*p, "num_kv_heads"), f"num_heads ({heads}) must be a multiple of num_kv_heads ({kv})")
        if "head_dim" not in d and hidden and hidden % heads:
            c.err((*p, "num_heads"), f"hidden_size ({hidden}) is not divisible by num_heads ({heads}); give head_dim")
        head_dim = c.int_(d, "head_dim", p, max(hidden // heads, 1))  # hidden is 0 when model.hidden_size is bad
        rotary = c.opt_int(d, "rotary_dim", p)
        if rotary is not None and (rotary > head_dim or rotary % 2):
            c.err((*p, "rotary_dim"), f"rotary_dim must be even and <= head_dim ({head_dim}), got {rotary}")
        return Attention(
            num_heads=heads,
            num_kv_heads=kv,
            head_dim=head_dim,
            qkv_bias=c.bool_(d, "qkv_bias", p, False),
            o_bias=c.bool_(d, "o_bias", p, False),
            rope=c.bool_(d, "rope", p, True),
            rotary_dim=rotary,
            rope_theta=c.float_(d, "rope_theta", p, 10000.0),
            sliding_window=c.opt_int(d, "sliding_window", p),
            qk_norm=c.bool_(d, "qk_norm", p, False),
        )
    if kind == "mla":
        req = {"type", "num_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"}
        c.keys(d, p, _MLA_KEYS, req)
        rope_dim = c.int_(d, "qk_rope_head_dim", p)
        if rope_dim % 2:
            c.err((*p, "qk_rope_head_dim"), f"must be even for rotary embedding, got {rope_dim}")
        return MLA(
            num_heads=c.int_(d, "num_heads", p),
            q_lora_rank=c.opt_int(d, "q_lora_rank", p),
            kv_lora_rank=c.int_(d, "kv_lora_rank", p),
            qk_nope_head_dim=c.int_(d, "qk_nope_head_dim", p),
            qk_rope_head_dim=rope_dim,
            v_head_dim=c.int_(d, "v_head_dim", p),
            bias=c.bool_(d, "bias", p, False),
            rope_theta=c.float_(d, "rope_theta", p, 10000.0),
        )
    if kind == "mamba1":
        c.keys(d, p, _MAMBA1_KEYS, {"type"})
        inner = _inner_size(c, d, p, hidden)
        dt = d.get("dt_rank", "auto")
        if dt == "auto":
            dt_rank = math.ceil(hidden / 16)
        else:
            dt_rank = c.int_(d, "dt_rank", p)
        return Mamba1(
            d_inner=inner,
            d_state=c.int_(d, "d_state", p, 16),
            d_conv=c.int_(d, "d_conv", p, 4),
            dt_rank=dt_rank,
            conv_bias=c.bool_(d, "conv_bias", p, True),
            proj_bias=c.bool_(d, "proj_bias", p, False),
            inner_norms=c.bool_(d, "inner_norms", p, False),
        )
    if kind == "mamba2":
        c.keys(d, p, _MAMBA2_KEYS, {"type"})
        inner = _inner_size(c, d, p, hidden)
        head_dim = c.int_(d, "head_dim", p, 64)
        groups = c.int_(d, "n_groups", p, 1)
        if inner % head_dim:
            c.err((*p, "head_dim"), f"inner size ({inner}) is not divisible by head_dim ({head_dim})")
        elif (inner // head_dim) % groups:
            c.err((*p, "n_groups"), f"number of heads ({inner // head_dim}) is not divisible by n_groups ({groups})")
        return Mamba2(
            d_inner=inner,
            d_state=c.int_(d, "d_state", p, 128),
            d_conv=c.int_(d, "d_conv", p, 4),
            head_dim=head_dim,
            n_groups=groups,
            chunk_size=c.int_(d, "chunk_size", p, 256),
            gated_norm=c.bool_(d, "gated_norm", p, True),
            conv_bias=c.bool_(d, "conv_bias", p, True),
            proj_bias=c.bool_(d, "proj_bias", p, False),
        )
    if kind is None:
        c.err(p, "missing required key 'type' (attention, mla, mamba1 or mamba2)")
    else:
        c.err((*p, "type"), f"unknown mixer type {kind!r}; expected attention, mla, mamba1 or mamba2")
    return None


def _parse_ffn(c: Checker, raw: Any, p: KeyPath) -> tuple[bool, Ffn | None]:
    """Returns (ok, ffn); ffn is None for ``type: none``."""
    d = c.mapping(raw, p)
    kind = d.get("type")
    if kind == "none":
        c.keys(d, p, {"type"}, {"type"})
        return True, None
    if kind == "mlp":
        c.keys(d, p, _MLP_KEYS, {"type", "intermediate_size"})
        return True, MLP(
            intermediate_size=c.int_(d, "intermediate_size", p),
            gated=c.bool_(d, "gated", p, True),
            activation=c.choice(d, "activation", p, ACTIVATIONS, "silu"),
            bias=c.bool_(d, "bias", p, False),
        )
    if kind == "moe":
        c.keys(d, p, _MOE_KEYS, {"type", "num_experts", "top_k", "expert_intermediate_size"})
        n = c.int_(d, "num_experts", p)
        k = c.int_(d, "top_k", p)
        if k > n:
            c.err((*p, "top_k"), f"top_k ({k}) cannot exceed num_experts ({n})")
        inter = c.int_(d, "expert_intermediate_size", p)
        shared = c.int_(d, "num_shared_experts", p, 0, minimum=0)
        gate = c.bool_(d, "shared_expert_gate", p, False)
        if gate and not shared:
            c.err((*p, "shared_expert_gate"), "a shared-expert gate needs num_shared_experts >= 1")
        return True, MoE(
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
    if kind is None:
        c.err(p, "missing required key 'type' (mlp, moe or none)")
    else:
        c.err((*p, "type"), f"unknown ffn type {kind!r}; expected mlp, moe or none")
    return False, None


def _resolve_layout(c: Checker, raw: Any, p: KeyPath, names: set[str], n_layers: int) -> tuple[str, ...]:
    """Resolve one layout entry (name, list, or pattern) to a name per layer."""
    fallback = (sorted(names)[0],) * n_layers if names else ()

    def known(name: Any, path: KeyPath) -> bool:
        if name in names:
            return True
        near = difflib.get_close_matches(str(name), sorted(names), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else f"; defined: {', '.join(sorted(names))}"
        c.err(path, f"'{name}' is not defined{hint}")
        return False

    if isinstance(raw, str):
        return (raw,) * n_layers if known(raw, p) else fallback
    if isinstance(raw, list):
        if len(raw) != n_layers:
            c.err(p, f"explicit layout has {len(raw)} entries but model.num_layers is {n_layers}")
            return fallback
        ok = all([known(x, (*p, i)) for i, x in enumerate(raw)])
        return tuple(raw) if ok else fallback
    d = c.mapping(raw, p)
    if not d:
        return fallback
    c.keys(d, p, {"default", "every", "layers", "first"}, {"default"})
    default = d.get("default")
    if default is None or not known(default, (*p, "default")):
        return fallback
    out = [default] * n_layers
    if "every" in d:
        e = c.mapping(d["every"], (*p, "every"))
        ep = (*p, "every")
        c.keys(e, ep, {"period", "offset", "use"}, {"period", "use"})
        period = c.int_(e, "period", ep)
        offset = c.int_(e, "offset", ep, 0, minimum=0)
        if offset >= period:
            c.err((*ep, "offset"), f"offset ({offset}) must be smaller than period ({period})")
        elif known(e.get("use"), (*ep, "use")):
            for i in range(offset, n_layers, period):
                out[i] = e["use"]
    if "layers" in d:
        lp = (*p, "layers")
        ld = c.mapping(d["layers"], lp)
        c.keys(ld, lp, {"indices", "use"}, {"indices", "use"})
        idx = ld.get("indices", [])
        if not isinstance(idx, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
            c.err((*lp, "indices"), "expected a list of layer indices")
        elif known(ld.get("use"), (*lp, "use")):
            for i in idx:
                if not 0 <= i < n_layers:
                    c.err((*lp, "indices"), f"layer index {i} is out of range 0..{n_layers - 1}")
                else:
                    out[i] = ld["use"]
    if "first" in d:
        fp = (*p, "first")
        f = c.mapping(d["first"], fp)
        c.keys(f, fp, {"count", "use"}, {"count", "use"})
        count = c.int_(f, "count", fp, 0, minimum=0)
        if count > n_layers:
            c.err((*fp, "count"), f"count ({count}) exceeds model.num_layers ({n_layers})")
        elif known(f.get("use"), (*fp, "use")):
            for i in range(count):
                out[i] = f["use"]
    return tuple(out)


def _check_family(c: Checker, spec: Spec) -> None:
    fam = spec.family
    attn, ssm, moe = spec.has_attention, spec.has_ssm, spec.has_moe
    ok = {
        "dense": attn and not ssm and not moe,
        "moe": moe and not (attn and ssm),
        "ssm": ssm and not attn,
        "hybrid": attn and ssm,
    }[fam]
    if not ok:
        have = [w for w, b in (("attention", attn), ("SSM", ssm), ("MoE", moe)) if b]
        c.err(("family",), f"family '{fam}' does not match the layers, which use {' + '.join(have) or 'nothing'}")


def parse_spec(data: Any, source: str | None = None, lines: dict[KeyPath, int] | None = None) -> Spec:
    """Validate a spec document (already parsed YAML) and return the resolved Spec.

    Raises SpecError listing every problem with its key path and line.
    """
    c = Checker(source, lines or {})
    d = c.mapping(data, ())
    c.raise_if_any()
    c.keys(d, (), _TOP_KEYS, {"name", "family", "model", "mixers"})
    name = c.str_(d, "name", (), "unnamed") or "unnamed"
    family = c.choice(d, "family", (), FAMILIES, "dense")
    model = _parse_model(c, d.get("model", {}))
    raw_hidden = d.get("model", {}).get("hidden_size") if isinstance(d.get("model"), dict) else None
    hidden_known = isinstance(raw_hidden, int) and not isinstance(raw_hidden, bool) and raw_hidden > 0

    mixers: dict[str, Mixer] = {}
    for key, raw in c.mapping(d.get("mixers", {}), ("mixers",)).items():
        m = _parse_mixer(c, raw, ("mixers", key), model.hidden_size if hidden_known else 0)
        if m is not None:
            mixers[key] = m
    if "mixers" in d and not d["mixers"]:
        c.err(("mixers",), "define at least one token mixer")

    ffns: dict[str, Ffn | None] = {}
    raw_ffns = d.get("ffns")
    if raw_ffns is None:
        ffns["none"] = None  # pure SSM stacks need no ffns section
    else:
        for key, raw in c.mapping(raw_ffns, ("ffns",)).items():
            ok, f = _parse_ffn(c, raw, ("ffns", key))
            if ok:
                ffns[key] = f

    layout = c.mapping(d.get("layout", {}), ("layout",))
    c.keys(layout, ("layout",), {"mixer", "ffn"}, set())
    n = model.num_layers
    layer_mixers = layer_ffns = ()
    for attr, names, what in (("mixer", mixers, "mixers"), ("ffn", ffns, "ffns")):
        if attr in layout:
            resolved = _resolve_layout(c, layout[attr], ("layout", attr), set(names), n)
        elif len(names) == 1:
            resolved = (next(iter(names)),) * n
        else:
            if names:
                c.err(("layout",), f"several {what} are defined ({', '.join(names)}): say which each layer uses "
                      f"with layout.{attr}")  # fmt: skip
            resolved = ()
        if attr == "mixer":
            layer_mixers = resolved
        else:
            layer_ffns = resolved

    pub = None
    if d.get("published") is not None:
        pp: KeyPath = ("published",)
        pd = c.mapping(d["published"], pp)
        c.keys(pd, pp, _PUBLISHED_KEYS, set())
        pub = Published(
            params_total=c.opt_int(pd, "params_total", pp),
            params_active=c.opt_int(pd, "params_active", pp),
            tolerance=c.float_(pd, "tolerance", pp, 0.01),
            note=c.str_(pd, "note", pp),
        )
    c.raise_if_any()
    spec = Spec(
        name=name,
        family=family,
        model=model,
        mixers=mixers,
        ffns=ffns,
        layer_mixers=layer_mixers,
        layer_ffns=layer_ffns,
        source=c.str_(d, "source", ()),
        description=c.str_(d, "description", ()),
        published=pub,
        path=source,
    )
    _check_family(c, spec)
    c.raise_if_any()
    return spec


def parse_spec_text(text: str, source: str | None = None) -> Spec:
    """Parse YAML text (safe loader only) into a validated Spec."""
    data, lines = load_yaml(text, source)
    return parse_spec(data, source, lines)


# --------------------------------------------------------------------------- finding specs


def _bundled_dir() -> Path:
    """The folder of bundled specs: package ``godprof.specs`` (site-packages/godprof/specs after an
    install; the repository's specs/ in an editable install), or specs/ beside the package when run
    from a source checkout. Found without importing importlib.resources, which costs more start-up
    time than the whole estimate."""
    from importlib.util import find_spec

    try:
        found = find_spec("godprof.specs")
    except ModuleNotFoundError:
        found = None
    if found is not None and found.submodule_search_locations:
        return Path(next(iter(found.submodule_search_locations)))
    checkout = Path(__file__).resolve().parent.parent / "specs"
    if checkout.is_dir():
        return checkout
    raise RuntimeError("godprof is installed without its bundled specs (package godprof.specs)")


def bundled_spec_names() -> list[str]:
    """Names of the specs shipped with godprof (the repository's specs/ folder)."""
    return sorted(p.stem for p in _bundled_dir().glob("*.yaml"))


def bundled_spec_path(name: str) -> Path | None:
    path = _bundled_dir() / f"{name}.yaml"
    return path if path.is_file() else None


def load_spec(ref: str | Path) -> Spec:
    """Load a spec from a YAML path, a Hugging Face ``config.json`` path, or a bundled spec name.

    Raises SpecError for invalid content and NotFoundError for a name or path that matches nothing.
    """
    from godprof.errors import NotFoundError

    path = Path(ref)
    if path.suffix == ".json":
        if not path.is_file():
            raise NotFoundError(f"no such file: {ref}")
        from godprof.hf import spec_from_config_file  # config.json import (issue: real architectures)

        return spec_from_config_file(path)
    if path.is_file():
        return parse_spec_text(path.read_text(encoding="utf-8"), str(path))
    name = str(ref)
    if "/" not in name and not name.endswith((".yaml", ".yml")):
        bundled = bundled_spec_path(name)
        if bundled is not None:
            return parse_spec_text(bundled.read_text(encoding="utf-8"), f"{name}.yaml (bundled)")
    names = bundled_spec_names()
    near = difflib.get_close_matches(path.stem, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else "; `godprof specs` lists the bundled specs"
    raise NotFoundError(f"no spec file or bundled spec named {str(ref)!r}{hint}")


def iter_layer_groups(spec: Spec) -> Iterator[tuple[str, str, list[int]]]:
    """(mixer name, ffn name, layer indices) for each distinct layer kind, in first-seen order."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(spec.layer_mixers, spec.layer_ffns, strict=True)):
        groups.setdefault(key, []).append(i)
    for (m, f), idx in groups.items():
        yield m, f, idx
