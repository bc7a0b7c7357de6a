"""Building blocks of the per-family importers: spec entries for attention, MLPs and MoE layers, the
model section, sliding-window layer choices, and the most readable layout for a per-layer list."""

from __future__ import annotations

import math
from typing import Any

from godprof.hf.config import Config


def layout(names: list[str]) -> str | list[str] | dict[str, Any]:
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


def attention(
    c: Config,
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


def mlp(inter: int, *, gated: bool = True, activation: str = "silu", bias: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"type": "mlp", "intermediate_size": inter}
    if not gated:
        d["gated"] = False
    if activation != "silu":
        d["activation"] = activation
    if bias:
        d["bias"] = True
    return d


def moe(
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


def model(
    c: Config,
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


def doc(
    family: str,
    model: dict[str, Any],
    mixers: dict[str, dict[str, Any]],
    ffns: dict[str, dict[str, Any]] | None,
    layer_mixers: list[str],
    layer_ffns: list[str] | None,
    description: str,
) -> dict[str, Any]:
    """The spec document of an imported model (``family`` and ``description`` are moved to the top by the
    caller); layouts are written only where several entries exist."""
    out: dict[str, Any] = {"family": family, "description": description, "model": model, "mixers": mixers}
    if ffns is not None:
        out["ffns"] = ffns
    lay: dict[str, Any] = {}
    if len(mixers) > 1:
        lay["mixer"] = layout(layer_mixers)
    if ffns is not None and len(ffns) > 1 and layer_ffns is not None:
        lay["ffn"] = layout(layer_ffns)
    if lay:
        out["layout"] = lay
    return out


def sliding_layers(c: Config, n: int) -> tuple[int | None, list[bool]]:
    """Qwen2/Qwen3: a window only with use_sliding_window, on layers >= max_window_layers. A window that is
    switched off is not read (transformers 5 saves ``sliding_window: 0`` beside ``use_sliding_window: false``)."""
    if not c.bool("use_sliding_window", False):
        return None, [False] * n
    window = c.opt_int("sliding_window")
    if window is None:
        return None, [False] * n
    types = c.str_list("layer_types")
    if types is not None:
        if len(types) != n:
            c.bad("layer_types", f"has {len(types)} entries for {n} layers")
        return window, [t == "sliding_attention" for t in types]
    first = c.int("max_window_layers", 28, minimum=0)
    return window, [i >= first for i in range(n)]


def split_attention(
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


def sigmoid_routing(c: Config, moe_entry: dict[str, Any], *, groups: tuple[int, int], scale: float) -> None:
    """DeepSeek-V3-style routing (also GLM-4.5's): sigmoid scores plus a bias buffer
    (``e_score_correction_bias``, no parameters) choose the experts, group-limited to ``topk_group`` of
    ``n_group`` groups, weights renormalised when ``norm_topk_prob`` and scaled by
    ``routed_scaling_factor``. ``groups`` and ``scale`` are the model_type's defaults in transformers."""
    moe_entry.update(routing="sigmoid", score_bias="buffer")
    if not c.bool("norm_topk_prob", True):
        moe_entry["norm_topk_prob"] = False
    n_group, topk_group = c.int("n_group", groups[0]), c.int("topk_group", groups[1])
    if n_group > 1:
        moe_entry.update(n_group=n_group, topk_group=topk_group)
    factor = c.float("routed_scaling_factor", scale)
    if factor != 1.0:
        moe_entry["routed_scaling_factor"] = factor


SLIDING, FULL = "sliding_attention", "full_attention"


def given_layer_types(c: Config, n: int, allowed: tuple[str, ...] = (SLIDING, FULL)) -> list[str] | None:
    """The config's ``layer_types`` list, checked (one entry per layer, each in ``allowed``), or None."""
    types = c.str_list("layer_types")
    if types is None:
        return None
    if len(types) != n:
        c.bad("layer_types", f"has {len(types)} entries for {n} layers")
    bad = sorted(set(types) - set(allowed))
    if bad:
        c.bad("layer_types", f"unsupported layer types {bad}; supported: {', '.join(allowed)}")
    return types


def layer_types(c: Config, n: int, pattern_default: int | None) -> list[str]:
    """``layer_types`` when given, else every ``sliding_window_pattern``-th layer full and the rest sliding
    (Gemma 3, Cohere 2, EXAONE 4: ``(i + 1) % pattern``), else all full."""
    types = given_layer_types(c, n)
    if types is not None:
        return types
    if pattern_default is None and not c.has("sliding_window_pattern"):
        return [FULL] * n
    if isinstance(c.data.get("sliding_window_pattern"), str):
        c.bad("sliding_window_pattern", "a string pattern needs layer_types beside it (transformers reads the list)")
    pattern = c.int("sliding_window_pattern", pattern_default)
    return [SLIDING if (i + 1) % pattern else FULL for i in range(n)]


def gemma_model(c: Config, hidden: int, layers: int) -> dict[str, Any]:
    """Gemma 2/3's model section: tied head, four RMSNorms per layer (sandwich), embeddings scaled by
    sqrt(hidden) (no parameters)."""
    return model(
        c, hidden=hidden, layers=layers, tie_default=True, sandwich_norm=True,
        embedding_multiplier=round(math.sqrt(hidden), 6),
    )  # fmt: skip
