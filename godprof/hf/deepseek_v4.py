"""DeepSeek-V4 (``deepseek_v4``; DeepSeek-V4-Flash, DeepSeek-V4-Pro): compressed attention, hyper-connections,
hash-routed and score-routed experts.

What is read, and where each quirk comes from in transformers 5.24 (``models/deepseek_v4``,
``DeepseekV4Config.__post_init__`` and the modelling code):

- attention kind per layer from ``layer_types`` (``sliding_attention``, ``compressed_sparse_attention``,
  ``heavily_compressed_attention``) or, in the released config.json files, the legacy per-layer
  ``compress_ratios`` (0 / 4 / 128; the list carries one more entry for the MTP layer, cut to
  ``num_hidden_layers``); without either, 2 HCA layers then HCA/CSA alternating. Compression rates from
  ``compress_rates`` (or legacy ``compress_rate_csa`` / ``compress_rate_hca``; defaults 4 and 128).
  Written as ``type: compressed_attention`` with ``compressor: none | csa | hca``.
- shared-KV MQA: ``num_key_value_heads`` must be 1 (the model has one K = V head whatever it says).
- RoPE: ``rope_head_dim`` = head_dim x ``partial_rotary_factor`` (legacy ``qk_rope_head_dim`` / head_dim;
  default 64 / 512). Sliding layers rotate at ``rope_theta``, compressed ones at ``compress_rope_theta``
  (their YaRN ``rope_scaling`` has no parameters and is not modelled).
- hyper-connections: ``hc_mult`` streams and ``hc_sinkhorn_iters`` go to the model section.
- experts: ``mlp_layer_types`` (or legacy ``num_hash_layers``, default 3) marks the first layers
  ``hash_moe`` (a frozen token-id -> experts table, ``hash_routing``) and the rest ``moe``
  (``scoring_func`` scores plus the ``e_score_correction_bias`` buffer). transformers always renormalises
  the k weights and multiplies them by ``routed_scaling_factor``; it builds *one* shared expert of
  ``moe_intermediate_size`` whatever ``n_shared_experts`` says (a value other than 1 is refused), and
  clamps every SwiGLU at ``swiglu_limit``.
- the multi-token-prediction layer (``num_nextn_predict_layers``) is not instantiated by transformers
  and not counted here (its V4 block, with hyper-connections, is not modelled yet).
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config

_TYPES = {
    "sliding_attention": "none",
    "compressed_sparse_attention": "csa",
    "heavily_compressed_attention": "hca",
}
_RATIO_TYPES = {0: "sliding_attention", 4: "compressed_sparse_attention", 128: "heavily_compressed_attention"}
_SCORING = {"sqrtsoftplus": "sqrtsoftplus", "sigmoid": "sigmoid"}  # transformers scores with ACT2FN: no softmax


def _layer_types(c: Config, n: int) -> list[str]:
    types = c.str_list("layer_types")
    if types is None and c.data.get("compress_ratios") is not None:
        ratios = c.data["compress_ratios"]
        if not isinstance(ratios, list) or any(r not in _RATIO_TYPES for r in ratios):
            c.bad("compress_ratios", f"expected a list of 0, 4 or 128 per layer, got {ratios!r}")
        types = [_RATIO_TYPES[r] for r in ratios]
    if types is None:
        interleave = ["compressed_sparse_attention" if i % 2 else "heavily_compressed_attention" for i in range(n - 2)]
        types = ["heavily_compressed_attention"] * min(n, 2) + interleave
    types = types[:n]
    if len(types) != n or set(types) - set(_TYPES):
        c.bad("layer_types", f"expected {n} entries of {', '.join(_TYPES)}, got {types!r}")
    return types


def _mlp_types(c: Config, n: int) -> list[str]:
    types = c.str_list("mlp_layer_types")
    if types is None:
        hashed = min(c.int("num_hash_layers", 3, minimum=0), n)
        types = ["hash_moe"] * hashed + ["moe"] * (n - hashed)
    types = types[:n]
    if len(types) != n or set(types) - {"hash_moe", "moe"}:
        c.bad("mlp_layer_types", f"expected {n} entries of 'hash_moe' or 'moe', got {types!r}")
    return types


def _rope_thetas(c: Config) -> tuple[float, float]:
    """(main, compress) rotary bases: nested ``rope_parameters`` {main, compress}, or the top-level keys."""
    rp = c.data.get("rope_parameters")
    if isinstance(rp, dict) and isinstance(rp.get("main"), dict) and isinstance(rp.get("compress"), dict):
        main = Config(rp["main"], c.source, c.prefix + "rope_parameters.main.").float("rope_theta", 10000.0)
        comp = Config(rp["compress"], c.source, c.prefix + "rope_parameters.compress.").float("rope_theta", 160000.0)
        return main, comp
    return c.rope_theta(10000.0), c.float("compress_rope_theta", 160000.0)


def _deepseek_v4(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size", 4096)
    n = c.int("num_hidden_layers", 43)
    heads = c.int("num_attention_heads", 64)
    head_dim = c.int("head_dim", 512)
    if c.int("num_key_value_heads", 1) != 1:
        c.bad("num_key_value_heads", "DeepSeek-V4 attention has one shared K = V head (transformers builds one)")
    if c.bool("mlp_bias", False):
        c.bad("mlp_bias", "biased DeepSeek-V4 shared experts are not supported (the routed ones have no bias)")
    if c.has("partial_rotary_factor") and c.data.get("partial_rotary_factor") is not None:
        factor = c.float("partial_rotary_factor")
    elif c.data.get("qk_rope_head_dim") is not None:
        factor = c.int("qk_rope_head_dim") / head_dim
    else:
        factor = 64 / 512
    rope_dim = int(head_dim * factor)
    main_theta, compress_theta = _rope_thetas(c)
    rates = c.data.get("compress_rates") or {}
    if not isinstance(rates, dict):
        c.bad("compress_rates", f"expected a mapping of layer type to rate, got {rates!r}")
    csa_rate = Config(rates, c.source, c.prefix + "compress_rates.").int(
        "compressed_sparse_attention", c.int("compress_rate_csa", 4)
    )
    hca_rate = Config(rates, c.source, c.prefix + "compress_rates.").int(
        "heavily_compressed_attention", c.int("compress_rate_hca", 128)
    )
    base: dict[str, Any] = {
        "type": "compressed_attention",
        "num_heads": heads,
        "head_dim": head_dim,
        "q_lora_rank": c.int("q_lora_rank", 1024),
        "o_groups": c.int("o_groups", 8),
        "o_lora_rank": c.int("o_lora_rank", 1024),
        "rope_head_dim": rope_dim,
        "sliding_window": c.int("sliding_window", 128),
    }
    types = _layer_types(c, n)
    mixers: dict[str, dict[str, Any]] = {}
    names = {"sliding_attention": "swa", "compressed_sparse_attention": "csa", "heavily_compressed_attention": "hca"}
    for t in dict.fromkeys(types):
        kind = _TYPES[t]
        entry = {**base, "rope_theta": main_theta if kind == "none" else compress_theta}
        if kind != "none":
            entry.update(compressor=kind, compress_rate=csa_rate if kind == "csa" else hca_rate)
        if kind == "csa":
            entry.update(
                index_n_heads=c.int("index_n_heads", 64),
                index_head_dim=c.int("index_head_dim", 128),
                index_topk=c.int("index_topk", 512),
            )
        mixers[names[t]] = entry
    scoring = c.str("scoring_func", "sqrtsoftplus")
    if scoring not in _SCORING:
        c.bad("scoring_func", f"expected one of {', '.join(_SCORING)}, got {scoring!r}")
    shared = c.opt_int("n_shared_experts", 1, minimum=0)
    if shared not in (None, 1):
        c.bad("n_shared_experts", "transformers' DeepSeek-V4 builds exactly one shared expert; got another count")
    inter = c.int("moe_intermediate_size", 2048)
    moe = h.moe(
        c.int("n_routed_experts", 256), c.int("num_experts_per_tok", 6), inter,
        activation=c.activation("hidden_act", "silu"), shared=1,
    )  # fmt: skip
    moe["routing"] = _SCORING[scoring]
    factor_scale = c.float("routed_scaling_factor", 1.5)
    if factor_scale != 1.0:
        moe["routed_scaling_factor"] = factor_scale
    moe["swiglu_limit"] = c.float("swiglu_limit", 10.0)
    mlp_types = _mlp_types(c, n)
    ffns: dict[str, dict[str, Any]] = {}
    for t in dict.fromkeys(mlp_types):
        ffns[t] = {**moe, "hash_routing": True} if t == "hash_moe" else {**moe, "score_bias": "buffer"}
    model = h.model(
        c, hidden=hidden, layers=n, tie_default=False,
        hc_mult=c.int("hc_mult", 4), hc_sinkhorn_iters=c.int("hc_sinkhorn_iters", 20),
    )  # fmt: skip
    return h.doc(
        "moe",
        model,
        mixers,
        ffns,
        [names[t] for t in types],
        mlp_types,
        "DeepSeek-V4: shared-KV MQA over a sliding window, compressed sparse (CSA, with a Lightning Indexer) "
        "and heavily compressed (HCA) attention, hyper-connections, hash-routed then score-routed experts; "
        "MTP layer not counted",
    )


MODEL_TYPES = {"deepseek_v4": _deepseek_v4}
