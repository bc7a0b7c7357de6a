"""Offline import of Hugging Face ``config.json`` files into godprof specs.

No network, ever: the user has the file. ``spec_from_hf_config`` reads the keys that
``transformers`` reads for each supported ``model_type``, with the same defaults when a key is
absent, and writes a spec *document* (the dict a YAML spec would hold). The Spec itself is built by
``godprof.spec.parse_spec`` on that document, so validation lives in one place, and
``spec_yaml`` writes the same document as YAML (``godprof import``) that round-trips through
``load_spec`` to the same counts.

What is read, per model_type (and where each quirk comes from, in transformers' modelling code):

- llama / mistral / mixtral / qwen2 / qwen3: GQA attention, ``head_dim`` explicit or
  ``hidden_size // num_attention_heads`` (Qwen3 defaults to 128 when absent); Llama's
  ``attention_bias`` on q, k, v and o and ``mlp_bias``; Qwen2's q/k/v biases without an o bias;
  Qwen3's per-head q/k RMSNorm; sliding windows (Mistral v0.1 on every layer; Qwen2/3 only when
  ``use_sliding_window`` and from ``max_window_layers`` on).
- qwen2_moe / qwen3_moe: routed experts on layers where ``(i + 1) % decoder_sparse_step == 0`` and
  ``i`` is not in ``mlp_only_layers`` (a dense MLP of ``intermediate_size`` otherwise); Qwen2-MoE's
  always-on shared expert of ``shared_expert_intermediate_size`` with its sigmoid gate.
- deepseek_v2 / deepseek_v3: MLA (``q_lora_rank`` null = full q projection), ``n_shared_experts``
  shared experts, dense MLP on the first ``first_k_dense_replace`` layers and, following DeepSeek's
  reference code, on layers with ``i % moe_layer_freq != 0`` (transformers ignores
  ``moe_layer_freq``; every released config has 1). DeepSeek-V3's multi-token-prediction layers
  (``num_nextn_predict_layers``) are not part of the causal LM and are not counted.
- gemma2: sandwich norms (four RMSNorms per layer), tied embeddings by default, sliding window on
  the layers ``layer_types`` marks (even layers by default), embeddings scaled by sqrt(hidden).
- gpt2 / gpt_neox / gptj: LayerNorm with bias, plain GELU MLPs with biases; GPT-2's learned
  positions and tied head; GPT-NeoX's partial rotary (``rotary_pct``) and parallel residual with two
  norms; GPT-J's parallel block with one shared norm, partial ``rotary_dim`` and lm_head bias.
- mamba / falcon_mamba: ``intermediate_size`` when given overrides ``expand * hidden_size``;
  ``time_step_rank`` ``auto`` = ceil(hidden / 16); Falcon-Mamba's B/C/dt RMSNorms have no weights.
- mamba2: ``num_heads * head_dim`` must equal ``expand * hidden_size`` (transformers sizes the mixer
  from both); gated RMSNorm before out_proj.
- jamba: attention on layers ``i % attn_layer_period == attn_layer_offset`` (no positional
  encoding), MoE on ``i % expert_layer_period == expert_layer_offset``, Mamba-1 elsewhere with
  RMSNorms on dt, B and C.
- bamba: attention on ``attn_layer_indices`` with rotary over half of each head, Mamba-2 elsewhere
  (``mamba_d_head`` ``auto`` = expand * hidden / mamba_n_heads), a gated MLP after every mixer.

Left out: quantization configs, rope scaling (no parameters), multimodal wrappers (``text_config``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from godprof.errors import Problem, SpecError
from godprof.spec import Spec, parse_spec

_REQUIRED: Any = object()

_ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_tanh": "gelu_tanh",
    "relu": "relu",
}


class _Config:
    """Typed reads from a config.json mapping; the first bad key raises a SpecError naming it."""

    def __init__(self, data: dict[str, Any], source: str):
        self.data = data
        self.source = source

    def bad(self, key: str, message: str) -> NoReturn:
        raise SpecError(self.source, [Problem(key, message)])

    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, keys: str | tuple[str, ...], default: Any) -> tuple[str, Any]:
        names = (keys,) if isinstance(keys, str) else keys
        for k in names:
            if k in self.data:
                return k, self.data[k]
        if default is _REQUIRED:
            self.bad(names[0], "missing required key")
        return names[0], default

    def int(self, keys: str | tuple[str, ...], default: Any = _REQUIRED, *, minimum: int = 1) -> int:
        k, v = self._get(keys, default)
        return self._int_value(k, v, minimum)

    def _int_value(self, k: str, v: Any, minimum: int) -> int:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            self.bad(k, f"expected an integer, got {v!r}")
        if v < minimum:
            self.bad(k, f"must be >= {minimum}, got {v}")
        return v

    def opt_int(self, keys: str | tuple[str, ...], default: int | None = None, *, minimum: int = 1) -> int | None:
        """An integer that may be null (``q_lora_rank``, ``sliding_window``, ``head_dim``)."""
        k, v = self._get(keys, default)
        if v is None:
            return None
        return self._int_value(k, v, minimum)

    def bool(self, keys: str | tuple[str, ...], default: bool) -> bool:
        k, v = self._get(keys, default)
        if v is None:
            return default
        if not isinstance(v, bool):
            self.bad(k, f"expected true or false, got {v!r}")
        return v

    def float(self, keys: str | tuple[str, ...], default: Any = _REQUIRED) -> float:
        k, v = self._get(keys, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.bad(k, f"expected a number, got {v!r}")
        return float(v)

    def str(self, keys: str | tuple[str, ...], default: Any = _REQUIRED) -> str:
        k, v = self._get(keys, default)
        if not isinstance(v, str):
            self.bad(k, f"expected a string, got {v!r}")
        return v

    def int_list(self, key: str, default: list[int] | None = None) -> list[int]:
        _, v = self._get(key, default if default is not None else [])
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            self.bad(key, f"expected a list of layer indices, got {v!r}")
        return v

    def str_list(self, key: str) -> list[str] | None:
        v = self.data.get(key)
        if v is None:
            return None
        if not isinstance(v, list) or not all(isinstance(i, str) for i in v):
            self.bad(key, f"expected a list of strings, got {v!r}")
        return v

    def activation(self, keys: str | tuple[str, ...], default: str) -> str:
        k, _ = self._get(keys, default)
        name = self.str(keys, default)
        if name not in _ACTIVATIONS:
            self.bad(k, f"unsupported activation {name!r}; supported: {', '.join(sorted(_ACTIVATIONS))}")
        return _ACTIVATIONS[name]

    def rope_theta(self, default: float) -> float:
        """``rope_theta`` at the top level (transformers 4.x files) or inside ``rope_parameters``."""
        rp = self.data.get("rope_parameters")
        if isinstance(rp, dict) and "rope_theta" in rp:
            return _Config(rp, self.source).float("rope_theta")
        return self.float(("rope_theta", "rotary_emb_base"), default)

    def partial_rotary(self, default: float) -> float:
        rp = self.data.get("rope_parameters")
        if isinstance(rp, dict) and "partial_rotary_factor" in rp:
            return _Config(rp, self.source).float("partial_rotary_factor")
        return self.float(("partial_rotary_factor", "rotary_pct"), default)


# --------------------------------------------------------------------------- layout compression


def _layout(names: list[str]) -> str | list[str] | dict[str, Any]:
    """The most readable layout entry that resolves to ``names``: one name, a pattern (``every``,
    ``first``, ``layers``) or, with more than two distinct entries, an explicit list. Short index
    lists beat clever patterns (Bamba's attention on [9, 18, 27] is written as indices)."""
    n = len(names)
    values = list(dict.fromkeys(names))
    if len(values) == 1:
        return values[0]
    if len(values) > 2:
        return list(names)
    best: tuple[int, dict[str, Any]] | None = None

    def consider(cost: int, entry: dict[str, Any]) -> None:
        nonlocal best
        if best is None or cost < best[0]:
            best = (cost, entry)

    for default in values:
        other = next(v for v in values if v != default)
        s = [i for i, x in enumerate(names) if x != default]
        if s == list(range(len(s))):
            consider(1, {"default": default, "first": {"count": len(s), "use": other}})
        if len(s) >= 2:
            period = s[1] - s[0]
            offset = s[0] % period
            if period > 0:
                arith = list(range(offset, n, period))
                if s == arith:
                    consider(1, {"default": default, "every": {"period": period, "offset": offset, "use": other}})
                first = s[0]
                if s == [i for i in arith if i >= first] and first >= period:
                    entry = {
                        "default": default,
                        "every": {"period": period, "offset": offset, "use": other},
                        "first": {"count": first, "use": default},
                    }
                    consider(3, entry)
        consider(1 + len(s) // 2, {"default": default, "layers": {"indices": s, "use": other}})
    assert best is not None
    return best[1]


# --------------------------------------------------------------------------- building blocks


def _attention(
    c: _Config,
    hidden: int,
    *,
    heads_key: str | tuple[str, ...] = "num_attention_heads",
    kv_key: str | None = "num_key_value_heads",
    head_dim_default: int | None = None,
    qkv_bias: bool = False,
    o_bias: bool = False,
    rope: bool = True,
    rotary_fraction: float | None = None,
    rotary_dim: int | None = None,
    rope_theta_default: float = 10000.0,
    sliding_window: int | None = None,
    qk_norm: bool = False,
) -> dict[str, Any]:
    """One attention mixer entry. ``head_dim_default`` None = ``hidden // heads`` when not given."""
    heads = c.int(heads_key)
    kv = heads if kv_key is None else (c.opt_int(kv_key) or heads)
    head_dim = c.opt_int("head_dim", head_dim_default) if c.has("head_dim") else head_dim_default
    if head_dim is None:
        if hidden % heads:
            c.bad("num_attention_heads", f"hidden size {hidden} is not divisible by {heads} heads and no head_dim")
        head_dim = hidden // heads
    if heads % kv:
        c.bad("num_key_value_heads", f"{heads} heads are not a multiple of {kv} key/value heads")
    d: dict[str, Any] = {"type": "attention", "num_heads": heads, "num_kv_heads": kv, "head_dim": head_dim}
    if qkv_bias:
        d["qkv_bias"] = True
    if o_bias:
        d["o_bias"] = True
    if not rope:
        d["rope"] = False
    else:
        if rotary_dim is None and rotary_fraction is not None and rotary_fraction < 1:
            rotary_dim = int(head_dim * rotary_fraction)
        if rotary_dim is not None and rotary_dim != head_dim:
            d["rotary_dim"] = rotary_dim
        d["rope_theta"] = c.rope_theta(rope_theta_default)
    if sliding_window is not None:
        d["sliding_window"] = sliding_window
    if qk_norm:
        d["qk_norm"] = True
    return d


def _mlp(inter: int, *, gated: bool = True, activation: str = "silu", bias: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"type": "mlp", "intermediate_size": inter}
    if not gated:
        d["gated"] = False
    if activation != "silu":
        d["activation"] = activation
    if bias:
        d["bias"] = True
    return d


def _moe(
    experts: int,
    top_k: int,
    inter: int,
    *,
    activation: str = "silu",
    shared: int = 0,
    shared_inter: int | None = None,
    shared_gate: bool = False,
) -> dict[str, Any]:
    d: dict[str, Any] = {"type": "moe", "num_experts": experts, "top_k": top_k, "expert_intermediate_size": inter}
    if activation != "silu":
        d["activation"] = activation
    if shared:
        d["num_shared_experts"] = shared
        if shared_inter is not None and shared_inter != inter:
            d["shared_intermediate_size"] = shared_inter
        if shared_gate:
            d["shared_expert_gate"] = True
    return d


def _model(
    c: _Config,
    *,
    hidden: int,
    layers: int,
    tie_default: bool,
    norm: str = "rmsnorm",
    vocab_key: str = "vocab_size",
    max_pos_key: str | tuple[str, ...] | None = "max_position_embeddings",
    **extra: Any,
) -> dict[str, Any]:
    d: dict[str, Any] = {"vocab_size": c.int(vocab_key), "hidden_size": hidden, "num_layers": layers}
    if max_pos_key is not None:
        mp = c.opt_int(max_pos_key)
        if mp is not None:
            d["max_position_embeddings"] = mp
    d["norm"] = norm
    d["tie_embeddings"] = c.bool("tie_word_embeddings", tie_default)
    d.update(extra)
    return d


def _doc(
    family: str,
    model: dict[str, Any],
    mixers: dict[str, dict[str, Any]],
    ffns: dict[str, dict[str, Any]] | None,
    layer_mixers: list[str],
    layer_ffns: list[str] | None,
    description: str,
) -> dict[str, Any]:
    doc: dict[str, Any] = {"family": family, "description": description, "model": model, "mixers": mixers}
    if ffns is not None:
        doc["ffns"] = ffns
    layout: dict[str, Any] = {}
    if len(mixers) > 1:
        layout["mixer"] = _layout(layer_mixers)
    if ffns is not None and len(ffns) > 1 and layer_ffns is not None:
        layout["ffn"] = _layout(layer_ffns)
    if layout:
        doc["layout"] = layout
    return doc


def _sliding_layers(c: _Config, n: int) -> tuple[int | None, list[bool]]:
    """Qwen2/Qwen3: a window only with use_sliding_window, on layers >= max_window_layers."""
    window = c.opt_int("sliding_window")
    if not c.bool("use_sliding_window", False) or window is None:
        return None, [False] * n
    types = c.str_list("layer_types")
    if types is not None:
        if len(types) != n:
            c.bad("layer_types", f"has {len(types)} entries for {n} layers")
        return window, [t == "sliding_attention" for t in types]
    first = c.int("max_window_layers", 28, minimum=0)
    return window, [i >= first for i in range(n)]


def _split_attention(
    attn: dict[str, Any], window: int | None, sliding: list[bool]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """One mixer, or a 'global' and a 'local' (sliding-window) mixer with a per-layer choice."""
    if window is None or not any(sliding):
        return {"attn": attn}, ["attn"] * len(sliding)
    if all(sliding):
        return {"attn": {**attn, "sliding_window": window}}, ["attn"] * len(sliding)
    return (
        {"global": attn, "local": {**attn, "sliding_window": window}},
        ["local" if s else "global" for s in sliding],
    )


# --------------------------------------------------------------------------- per model_type


def _llama_like(c: _Config, kind: str) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    act = c.activation("hidden_act", "silu")
    head_default = 128 if kind == "qwen3" else None
    sliding: list[bool]
    if kind == "llama":
        bias = c.bool("attention_bias", False)
        attn = _attention(c, hidden, qkv_bias=bias, o_bias=bias)
        mlp_bias = c.bool("mlp_bias", False)
        window, sliding = None, [False] * n
    elif kind == "mistral":
        window = c.opt_int("sliding_window", 4096)
        attn = _attention(c, hidden)
        mlp_bias = False
        sliding = [window is not None] * n
    elif kind == "qwen2":
        attn = _attention(c, hidden, qkv_bias=True, rope_theta_default=10000.0)
        mlp_bias = False
        window, sliding = _sliding_layers(c, n)
    else:  # qwen3
        bias = c.bool("attention_bias", False)
        attn = _attention(c, hidden, qkv_bias=bias, o_bias=bias, head_dim_default=head_default, qk_norm=True)
        mlp_bias = False
        window, sliding = _sliding_layers(c, n)
    mixers, layer_mixers = _split_attention(attn, window, sliding)
    model = _model(c, hidden=hidden, layers=n, tie_default=False)
    ffns = {"mlp": _mlp(c.int("intermediate_size"), activation=act, bias=mlp_bias)}
    return _doc("dense", model, mixers, ffns, layer_mixers, None, "dense decoder (GQA attention, gated MLP)")


def _llama(c: _Config) -> dict[str, Any]:
    return _llama_like(c, "llama")


def _mistral(c: _Config) -> dict[str, Any]:
    return _llama_like(c, "mistral")


def _qwen2(c: _Config) -> dict[str, Any]:
    return _llama_like(c, "qwen2")


def _qwen3(c: _Config) -> dict[str, Any]:
    return _llama_like(c, "qwen3")


def _mixtral(c: _Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    window = c.opt_int("sliding_window")
    attn = _attention(c, hidden, rope_theta_default=1e6)
    mixers, layer_mixers = _split_attention(attn, window, [window is not None] * n)
    experts = c.int(("num_local_experts", "num_experts"), 8)
    moe = _moe(
        experts,
        c.int("num_experts_per_tok", 2),
        c.int("intermediate_size"),
        activation=c.activation("hidden_act", "silu"),
    )
    model = _model(c, hidden=hidden, layers=n, tie_default=False)
    return _doc(
        "moe", model, mixers, {"moe": moe}, layer_mixers, None, "sparse MoE decoder (top-k routed SwiGLU experts)"
    )


def _qwen_moe(c: _Config, kind: str) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    act = c.activation("hidden_act", "silu")
    if kind == "qwen2_moe":
        attn = _attention(c, hidden, qkv_bias=c.bool("qkv_bias", True))
        experts = c.int(("num_experts", "num_local_experts"), 60, minimum=0)
        top_k = c.int("num_experts_per_tok", 4)
        inter = c.int("moe_intermediate_size", 1408)
        shared_inter = c.int("shared_expert_intermediate_size", 5632)
        moe = _moe(experts or 1, top_k, inter, activation=act, shared=1, shared_inter=shared_inter, shared_gate=True)
    else:
        bias = c.bool("attention_bias", False)
        attn = _attention(c, hidden, qkv_bias=bias, o_bias=bias, qk_norm=True)
        experts = c.int(("num_experts", "num_local_experts"), 128, minimum=0)
        top_k = c.int("num_experts_per_tok", 8)
        moe = _moe(experts or 1, top_k, c.int("moe_intermediate_size", 768), activation=act)
    window, sliding = _sliding_layers(c, n)
    mixers, layer_mixers = _split_attention(attn, window, sliding)
    step = c.int("decoder_sparse_step", 1)
    mlp_only = set(c.int_list("mlp_only_layers"))
    layer_ffns = ["moe" if (i not in mlp_only and experts > 0 and (i + 1) % step == 0) else "mlp" for i in range(n)]
    ffns: dict[str, dict[str, Any]] = {}
    if "mlp" in layer_ffns:
        ffns["mlp"] = _mlp(c.int("intermediate_size"), activation=act)
    if "moe" in layer_ffns:
        ffns["moe"] = moe
    family = "moe" if "moe" in ffns else "dense"
    model = _model(c, hidden=hidden, layers=n, tie_default=False)
    what = "shared expert with a sigmoid gate" if kind == "qwen2_moe" else "no shared expert, q/k norms"
    return _doc(family, model, mixers, ffns, layer_mixers, layer_ffns, f"MoE decoder ({what})")


def _qwen2_moe(c: _Config) -> dict[str, Any]:
    return _qwen_moe(c, "qwen2_moe")


def _qwen3_moe(c: _Config) -> dict[str, Any]:
    return _qwen_moe(c, "qwen3_moe")


def _deepseek(c: _Config, kind: str) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    act = c.activation("hidden_act", "silu")
    if c.bool("mlp_bias", False):
        c.bad(
            "mlp_bias",
            "biased DeepSeek MLPs are not supported (shared experts would carry biases the routed ones lack)",
        )
    mla: dict[str, Any] = {
        "type": "mla",
        "num_heads": c.int("num_attention_heads"),
        "q_lora_rank": c.opt_int("q_lora_rank", 1536),
        "kv_lora_rank": c.int("kv_lora_rank", 512),
        "qk_nope_head_dim": c.int("qk_nope_head_dim", 128),
        "qk_rope_head_dim": c.int("qk_rope_head_dim", 64),
        "v_head_dim": c.int("v_head_dim", 128),
    }
    if c.bool("attention_bias", False):
        mla["bias"] = True
    mla["rope_theta"] = c.rope_theta(10000.0)
    routed = c.opt_int("n_routed_experts", 64 if kind == "deepseek_v2" else 256)
    first_dense = c.int("first_k_dense_replace", 0 if kind == "deepseek_v2" else 3, minimum=0)
    freq = c.int("moe_layer_freq", 1)
    layer_ffns = ["moe" if routed and i >= first_dense and i % freq == 0 else "mlp" for i in range(n)]
    ffns: dict[str, dict[str, Any]] = {}
    if "mlp" in layer_ffns:
        ffns["mlp"] = _mlp(c.int("intermediate_size"), activation=act)
    if "moe" in layer_ffns:
        assert routed is not None
        inter = c.int("moe_intermediate_size")
        shared = c.opt_int("n_shared_experts", 2 if kind == "deepseek_v2" else 1, minimum=0) or 0
        ffns["moe"] = _moe(routed, c.int("num_experts_per_tok"), inter, activation=act, shared=shared)
    model = _model(c, hidden=hidden, layers=n, tie_default=False)
    return _doc(
        "moe" if "moe" in ffns else "dense",
        model,
        {"mla": mla},
        ffns,
        ["mla"] * n,
        layer_ffns,
        "MLA attention, fine-grained routed experts plus shared experts, dense first layers",
    )


def _deepseek_v2(c: _Config) -> dict[str, Any]:
    return _deepseek(c, "deepseek_v2")


def _deepseek_v3(c: _Config) -> dict[str, Any]:
    return _deepseek(c, "deepseek_v3")


def _gemma2(c: _Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    bias = c.bool("attention_bias", False)
    attn = _attention(c, hidden, head_dim_default=256, qkv_bias=bias, o_bias=bias)
    window = c.opt_int("sliding_window", 4096)
    types = c.str_list("layer_types")
    if types is None:
        types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n)]
    elif len(types) != n:
        c.bad("layer_types", f"has {len(types)} entries for {n} layers")
    mixers, layer_mixers = _split_attention(attn, window, [t == "sliding_attention" for t in types])
    act = c.activation(("hidden_activation", "hidden_act"), "gelu_pytorch_tanh")
    model = _model(
        c,
        hidden=hidden,
        layers=n,
        tie_default=True,
        sandwich_norm=True,
        embedding_multiplier=round(math.sqrt(hidden), 6),
    )
    ffns = {"mlp": _mlp(c.int("intermediate_size"), activation=act)}
    return _doc("dense", model, mixers, ffns, layer_mixers, None, "Gemma-2: sandwich norms, local/global attention")


def _gpt2(c: _Config) -> dict[str, Any]:
    hidden = c.int(("n_embd", "hidden_size"))
    n = c.int(("n_layer", "num_hidden_layers"))
    heads = c.int(("n_head", "num_attention_heads"))
    if hidden % heads:
        c.bad("n_head", f"n_embd {hidden} is not divisible by {heads} heads")
    attn = {
        "type": "attention", "num_heads": heads, "num_kv_heads": heads, "head_dim": hidden // heads,
        "qkv_bias": True, "o_bias": True, "rope": False,
    }  # fmt: skip
    if c.bool("add_cross_attention", False):
        c.bad("add_cross_attention", "cross-attention (encoder-decoder GPT-2) is not supported")
    inner = c.opt_int("n_inner") or 4 * hidden
    model = _model(
        c,
        hidden=hidden,
        layers=n,
        tie_default=True,
        norm="layernorm",
        max_pos_key=("n_positions", "max_position_embeddings"),
        position_embedding="learned",
    )
    model.setdefault("max_position_embeddings", 1024)
    ffns = {"mlp": _mlp(inner, gated=False, activation=c.activation("activation_function", "gelu_new"), bias=True)}
    return _doc("dense", model, {"attn": attn}, ffns, ["attn"] * n, None, "GPT-2: learned positions, LayerNorm, biases")


def _gpt_neox(c: _Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    bias = c.bool("attention_bias", True)
    attn = _attention(c, hidden, kv_key=None, qkv_bias=bias, o_bias=bias, rotary_fraction=c.partial_rotary(0.25))
    model = _model(c, hidden=hidden, layers=n, tie_default=False, norm="layernorm")
    if c.bool("use_parallel_residual", True):
        model["parallel_residual"] = True
    ffns = {
        "mlp": _mlp(c.int("intermediate_size"), gated=False, activation=c.activation("hidden_act", "gelu"), bias=True)
    }
    return _doc("dense", model, {"attn": attn}, ffns, ["attn"] * n, None, "GPT-NeoX: partial rotary, parallel residual")


def _gptj(c: _Config) -> dict[str, Any]:
    hidden = c.int(("n_embd", "hidden_size"))
    n = c.int(("n_layer", "num_hidden_layers"))
    heads = c.int(("n_head", "num_attention_heads"))
    if hidden % heads:
        c.bad("n_head", f"n_embd {hidden} is not divisible by {heads} heads")
    attn: dict[str, Any] = {"type": "attention", "num_heads": heads, "num_kv_heads": heads, "head_dim": hidden // heads}
    rot = c.opt_int("rotary_dim", 64)
    if rot is not None and rot != hidden // heads:
        attn["rotary_dim"] = rot
    attn["rope_theta"] = 10000.0
    inner = c.opt_int("n_inner") or 4 * hidden
    model = _model(
        c,
        hidden=hidden,
        layers=n,
        tie_default=False,
        norm="layernorm",
        max_pos_key=("n_positions", "max_position_embeddings"),
        parallel_residual=True,
        parallel_shared_norm=True,
        lm_head_bias=True,
    )
    ffns = {"mlp": _mlp(inner, gated=False, activation=c.activation("activation_function", "gelu_new"), bias=True)}
    return _doc("dense", model, {"attn": attn}, ffns, ["attn"] * n, None, "GPT-J: parallel block with one shared norm")


def _mamba1_mixer(c: _Config, hidden: int, *, prefix: str = "", inner_norms: bool = False) -> dict[str, Any]:
    """Mamba-1 mixer keys: plain (mamba, falcon_mamba) or ``mamba_``-prefixed (jamba)."""
    if prefix:
        inner = int(c.float("mamba_expand", 2) * hidden)
        state = c.int("mamba_d_state", 16)
        conv = c.int("mamba_d_conv", 4)
        dt_key, conv_bias_key, bias_key = "mamba_dt_rank", "mamba_conv_bias", "mamba_proj_bias"
    else:
        inner = (
            c.int("intermediate_size")
            if c.data.get("intermediate_size") is not None
            else int(c.float("expand", 2) * hidden)
        )
        state = c.int("state_size", 16)
        conv = c.int("conv_kernel", 4)
        dt_key, conv_bias_key, bias_key = "time_step_rank", "use_conv_bias", "use_bias"
    dt = c.data.get(dt_key, "auto")
    dt_rank = math.ceil(hidden / 16) if dt == "auto" else c.int(dt_key)
    d: dict[str, Any] = {"type": "mamba1", "d_inner": inner, "d_state": state, "d_conv": conv, "dt_rank": dt_rank}
    if not c.bool(conv_bias_key, True):
        d["conv_bias"] = False
    if c.bool(bias_key, False):
        d["proj_bias"] = True
    if inner_norms:
        d["inner_norms"] = True
    return d


def _mamba(c: _Config, falcon: bool = False) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    mixer = _mamba1_mixer(c, hidden)
    model = _model(c, hidden=hidden, layers=n, tie_default=True, max_pos_key=None)
    what = "Falcon-Mamba: Mamba-1 with weightless B/C/dt RMSNorms" if falcon else "Mamba-1 stack"
    return _doc("ssm", model, {"mamba": mixer}, None, ["mamba"] * n, None, f"{what}, no attention, no MLP")


def _falcon_mamba(c: _Config) -> dict[str, Any]:
    return _mamba(c, falcon=True)


def _mamba2_mixer(c: _Config, hidden: int, *, bamba: bool = False) -> dict[str, Any]:
    if bamba:
        inner = int(c.float("mamba_expand", 2) * hidden)
        heads = c.int("mamba_n_heads", 128)
        raw = c.data.get("mamba_d_head", "auto")
        head_dim = inner // heads if raw == "auto" else c.int("mamba_d_head")
        keys = ("mamba_n_heads", "mamba_n_groups", "mamba_d_state", "mamba_d_conv", "mamba_chunk_size",
                "mamba_conv_bias", "mamba_proj_bias")  # fmt: skip
        groups, state, conv, chunk = c.int(keys[1], 1), c.int(keys[2], 256), c.int(keys[3], 4), c.int(keys[4], 256)
    else:
        inner = int(c.float("expand", 2) * hidden)
        heads = c.int("num_heads", 128)
        head_dim = c.int("head_dim", 64)
        keys = ("num_heads", "n_groups", "state_size", "conv_kernel", "chunk_size", "use_conv_bias", "use_bias")
        groups, state, conv, chunk = c.int(keys[1], 8), c.int(keys[2], 128), c.int(keys[3], 4), c.int(keys[4], 256)
    if heads * head_dim != inner:
        c.bad(keys[0], f"{heads} heads x head_dim {head_dim} != expand x hidden_size = {inner}")
    d: dict[str, Any] = {
        "type": "mamba2", "d_inner": inner, "d_state": state, "d_conv": conv, "head_dim": head_dim,
        "n_groups": groups, "chunk_size": chunk,
    }  # fmt: skip
    if not c.bool(keys[5], True):
        d["conv_bias"] = False
    if c.bool(keys[6], False):
        d["proj_bias"] = True
    return d


def _mamba2(c: _Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    mixer = _mamba2_mixer(c, hidden)
    model = _model(c, hidden=hidden, layers=n, tie_default=False, max_pos_key=None)
    return _doc(
        "ssm", model, {"mamba2": mixer}, None, ["mamba2"] * n, None, "Mamba-2 (SSD) stack, no attention, no MLP"
    )


def _jamba(c: _Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    act = c.activation("hidden_act", "silu")
    attn = _attention(c, hidden, rope=False)
    a_period, a_offset = c.int("attn_layer_period", 8), c.int("attn_layer_offset", 4, minimum=0)
    e_period, e_offset = c.int("expert_layer_period", 2), c.int("expert_layer_offset", 1, minimum=0)
    if a_offset >= a_period:
        c.bad("attn_layer_offset", f"must be smaller than attn_layer_period ({a_period})")
    if e_offset >= e_period:
        c.bad("expert_layer_offset", f"must be smaller than expert_layer_period ({e_period})")
    experts = c.int("num_experts", 16)
    layer_mixers = ["attn" if i % a_period == a_offset else "mamba" for i in range(n)]
    layer_ffns = ["moe" if experts > 1 and i % e_period == e_offset else "mlp" for i in range(n)]
    mixers = {k: v for k, v in (("attn", attn), ("mamba", _mamba1_mixer(c, hidden, prefix="mamba_", inner_norms=True)))
              if k in layer_mixers}  # fmt: skip
    inter = c.int("intermediate_size")
    ffns: dict[str, dict[str, Any]] = {}
    if "mlp" in layer_ffns:
        ffns["mlp"] = _mlp(inter, activation=act)
    if "moe" in layer_ffns:
        ffns["moe"] = _moe(experts, c.int("num_experts_per_tok", 2), inter, activation=act)
    family = "hybrid" if len(mixers) > 1 else ("ssm" if "mamba" in mixers else ("moe" if "moe" in ffns else "dense"))
    if family == "ssm" and "moe" in ffns:
        family = "moe"
    model = _model(c, hidden=hidden, layers=n, tie_default=False)
    return _doc(family, model, mixers, ffns, layer_mixers, layer_ffns, "Jamba: attention/Mamba-1 hybrid with MoE")


def _bamba(c: _Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    bias = c.bool("attention_bias", False)
    attn = _attention(c, hidden, qkv_bias=bias, o_bias=bias, rotary_fraction=0.5)
    indices = set(c.int_list("attn_layer_indices"))
    bad = sorted(i for i in indices if not 0 <= i < n)
    if bad:
        c.bad("attn_layer_indices", f"layer index {bad[0]} is out of range 0..{n - 1}")
    layer_mixers = ["attn" if i in indices else "mamba2" for i in range(n)]
    mixers = {k: v for k, v in (("attn", attn), ("mamba2", _mamba2_mixer(c, hidden, bamba=True))) if k in layer_mixers}
    ffns = {"mlp": _mlp(c.int("intermediate_size"), activation=c.activation("hidden_act", "silu"),
                        bias=c.bool("mlp_bias", False))}  # fmt: skip
    family = "hybrid" if len(mixers) > 1 else ("ssm" if "mamba2" in mixers else "dense")
    model = _model(c, hidden=hidden, layers=n, tie_default=False)
    return _doc(family, model, mixers, ffns, layer_mixers, None, "Bamba: Mamba-2 hybrid with a few attention layers")


CONVERTERS: dict[str, Callable[[_Config], dict[str, Any]]] = {
    "llama": _llama,
    "mistral": _mistral,
    "mixtral": _mixtral,
    "qwen2": _qwen2,
    "qwen2_moe": _qwen2_moe,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3_moe,
    "deepseek_v2": _deepseek_v2,
    "deepseek_v3": _deepseek_v3,
    "gemma2": _gemma2,
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "gptj": _gptj,
    "mamba": _mamba,
    "mamba2": _mamba2,
    "falcon_mamba": _falcon_mamba,
    "jamba": _jamba,
    "bamba": _bamba,
}
SUPPORTED_MODEL_TYPES = tuple(sorted(CONVERTERS))


# --------------------------------------------------------------------------- public API


def spec_document_from_hf_config(cfg: Any, source: str, name: str | None = None) -> dict[str, Any]:
    """The spec document (what a YAML spec would hold) for a parsed config.json mapping."""
    if not isinstance(cfg, dict):
        raise SpecError(source, [Problem("", f"expected a JSON object at the top level, got {type(cfg).__name__}")])
    c = _Config(cfg, source)
    supported = ", ".join(SUPPORTED_MODEL_TYPES)
    if "model_type" not in cfg:
        c.bad("model_type", f"missing; a Hugging Face config.json names its model_type (supported: {supported})")
    model_type = cfg["model_type"]
    if model_type not in CONVERTERS:
        c.bad("model_type", f"unsupported model_type {model_type!r}; supported: {supported}")
    body = CONVERTERS[model_type](c)
    doc: dict[str, Any] = {"name": name or _default_name(cfg, source), "family": body.pop("family")}
    doc["source"] = source
    doc["description"] = (
        f"{body.pop('description')}. Imported from a Hugging Face config.json (model_type {model_type})."
    )
    doc.update(body)
    return doc


def spec_from_hf_config(cfg: dict[str, Any], source: str) -> Spec:
    """A validated Spec from a parsed config.json mapping (``source`` names it in errors)."""
    return parse_spec(spec_document_from_hf_config(cfg, source), source)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a config.json; bad JSON raises a SpecError with the file and line."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SpecError(str(p), [Problem("", f"invalid JSON: {e.msg}", e.lineno)]) from None
    except UnicodeDecodeError:
        raise SpecError(str(p), [Problem("", "not a UTF-8 text file")]) from None
    if not isinstance(data, dict):
        raise SpecError(str(p), [Problem("", f"expected a JSON object at the top level, got {type(data).__name__}")])
    return data


def spec_from_config_file(path: str | Path) -> Spec:
    """Load a Hugging Face config.json from disk (never from the network) as a Spec."""
    return spec_from_hf_config(read_config_file(path), str(path))


def _default_name(cfg: dict[str, Any], source: str) -> str:
    p = Path(source)
    if p.stem and p.stem != "config":
        return p.stem
    if p.parent.name:
        return p.parent.name
    nm = cfg.get("_name_or_path")
    if isinstance(nm, str) and nm.strip("./"):
        return nm.rstrip("/").split("/")[-1]
    return str(cfg.get("model_type", "imported"))


def spec_yaml(doc: dict[str, Any]) -> str:
    """Write a spec document as YAML in the bundled specs' style (one flow mapping per mixer/ffn)."""
    import yaml

    out = [f"# Generated by `godprof import` from {doc.get('source')}; edit freely."]
    for key in ("name", "family", "source", "description"):
        if key in doc:
            out.append(yaml.safe_dump({key: doc[key]}, sort_keys=False, width=1000).rstrip())
    if "published" in doc:
        out.append(yaml.safe_dump({"published": doc["published"]}, sort_keys=False).rstrip())
    out.append(yaml.safe_dump({"model": doc["model"]}, sort_keys=False).rstrip())
    for section in ("mixers", "ffns"):
        if section in doc:
            out.append(f"{section}:")
            for k, v in doc[section].items():
                flow = yaml.safe_dump(v, default_flow_style=True, sort_keys=False, width=1000).strip()
                out.append(f"  {k}: {flow}")
    if "layout" in doc:
        out.append("layout:")
        for k, v in doc["layout"].items():
            flow = yaml.safe_dump(v, default_flow_style=True, sort_keys=False, width=1000).strip()
            out.append(f"  {k}: {flow}")
    return "\n".join(out) + "\n"
