"""More sparse MoE decoders with GQA attention: olmoe, hunyuan_v1_moe, ernie4_5_moe, dbrx, phimoe.

What is read, and where each quirk comes from in transformers' modelling code (``models/<type>/
modeling_<type>.py`` and ``configuration_<type>.py``):

- olmoe (``OlmoeAttention``, ``OlmoeSparseMoeBlock``): q/k RMSNorm over the *whole* projection
  (``q_norm`` [heads x head_dim], ``k_norm`` [(hidden / heads) x kv heads]: ``qk_norm: full``), before
  the head split and rotary; ``clip_qkv`` clamps q, k and v; ``attention_bias`` on q, k, v and o.
  Softmax routing over ``num_experts`` (64) experts of ``intermediate_size``, top ``num_experts_per_tok``
  (8), renormalised only with ``norm_topk_prob`` (default false). No shared experts, no dense layers.
- hunyuan_v1_moe (``HunYuanMoEV1Attention``, ``HunYuanMoEV1Moe``): per-head q/k RMSNorm
  (``query_layernorm``/``key_layernorm``, always built) applied *after* rotary; ``attention_bias`` on
  q, k, v and o; ``head_dim`` (or ``attention_head_dim``, its name in Tencent's remote-code configs).
  Every layer: a router ``gate.wg`` Linear(h, E) (fp32, no bias), softmax top-k renormalised,
  ``num_experts`` experts and one shared MLP (``shared_mlp``), both of ``intermediate_size``.
  ``moe_topk`` may be a per-layer list: one MoE entry per distinct top-k, chosen per layer by the
  layout. transformers reads neither ``moe_intermediate_size`` nor ``num_shared_expert`` (Hunyuan's
  remote code does): a config whose values differ from what transformers builds is refused.
- ernie4_5_moe (``Ernie4_5_MoeAttention``, ``Ernie4_5_MoeSparseMoeBlock``): ``use_bias`` on q, k, v, o,
  every MLP and the lm_head (biased shared experts are refused: godprof's have no biases); rotary pairs
  adjacent features (godprof's build pairs halves: the same model up to a fixed permutation of the q and
  k rows). MoE on layers i with (i + 1) % ``moe_layer_interval`` == 0 and ``moe_layer_start_index`` <= i
  <= ``moe_layer_end_index`` (-1 = last), a dense MLP of ``intermediate_size`` elsewhere; softmax
  routing whose *choice* adds ``moe_statics.e_score_correction_bias`` ([1, E], registered as a
  Parameter: ``score_bias: parameter``), weights renormalised; ``moe_num_experts`` experts of
  ``moe_intermediate_size`` and one shared MLP of ``moe_num_shared_experts`` x ``moe_intermediate_size``.
  Tied embeddings by default.
- dbrx (``DbrxAttention``, ``DbrxFFN``): ``d_model``, ``n_heads``, ``n_layers``, ``max_seq_len``;
  ``attn_config`` {``kv_n_heads``, ``clip_qkv``, ``rope_theta``}: one fused ``Wqkv`` (the same
  parameters as q, k and v without biases) and ``out_proj``; LayerNorms without bias (``norm_1``,
  ``norm_2``, ``norm_f``). ``ffn_config`` {``ffn_hidden_size``, ``moe_num_experts``, ``moe_top_k``,
  ``moe_normalize_expert_weights`` (1 = renormalise, null = not; other p-norms are refused),
  ``ffn_act_fn``}: softmax routing, experts stored as ``w1``/``v1``/``w2`` [E x I, h] (gate, up, down).
- phimoe (``PhimoeAttention``, ``PhimoeSparseMoeBlock``): LayerNorms with bias, ``attention_bias`` on
  q, k, v and o, ``lm_head_bias``, an optional ``sliding_window`` on every layer; SparseMixer top-2
  routing (``routing: sparsemixer`` with ``router_jitter_noise`` as its threshold) over
  ``num_local_experts`` experts of ``intermediate_size``.
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config


def _olmoe(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    bias = c.bool("attention_bias", False)
    attn = h.attention(c, hidden, qkv_bias=bias, o_bias=bias)
    heads = c.int("num_attention_heads")
    if attn["head_dim"] != hidden // heads:
        c.bad("head_dim", "OLMoE sizes its k_norm by hidden_size / num_attention_heads: head_dim must equal it")
    attn["qk_norm"] = "full"
    clip = c.data.get("clip_qkv")
    if clip is not None:
        attn["clip_qkv"] = c.float("clip_qkv")
    moe = h.moe(
        c.int(("num_experts", "num_local_experts"), 64), c.int("num_experts_per_tok", 8),
        c.int("intermediate_size", 2048), activation=c.activation("hidden_act", "silu"),
    )  # fmt: skip
    if not c.bool("norm_topk_prob", False):
        moe["norm_topk_prob"] = False
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    return h.doc(
        "moe", model, {"attn": attn}, {"moe": moe}, ["attn"] * n, None,
        "MoE decoder (q/k norms over the whole projection, softmax top-k routed SwiGLU experts)",
    )  # fmt: skip


def _hunyuan_v1_moe(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    act = c.activation("hidden_act", "silu")
    bias = c.bool("attention_bias", False)
    if not c.has("head_dim") and c.has("attention_head_dim"):  # the name in Tencent's remote-code configs
        c = Config({**c.data, "head_dim": c.data["attention_head_dim"]}, c.source, c.prefix)
    attn = h.attention(c, hidden, qkv_bias=bias, o_bias=bias, qk_norm=True)
    inter = c.int("intermediate_size", 11008)
    experts = c.int(("num_experts", "num_local_experts"), 1)
    key = "num_experts_per_tok" if c.has("num_experts_per_tok") and not c.has("moe_topk") else "moe_topk"
    top_k = c.int_list(key) if isinstance(c.data.get(key), list) else [c.int(key, 1)] * n
    if len(top_k) != n:
        c.bad("moe_topk", f"has {len(top_k)} entries for {n} layers")
    for key, want in (("moe_intermediate_size", inter), ("num_shared_expert", 1)):
        v = c.data.get(key)
        if v is not None and any(x != want for x in (v if isinstance(v, list) else [v])):
            c.bad(key, f"transformers' hunyuan_v1_moe builds {want} on every layer (it does not read {key}); "
                  f"got {v!r}")  # fmt: skip
    if c.data.get("use_mixed_mlp_moe") is False:
        c.bad("use_mixed_mlp_moe", "transformers' hunyuan_v1_moe always builds the shared MLP")
    for key, what in (("use_cla", "cross-layer attention sharing"), ("use_mla", "latent attention")):
        if c.bool(key, False):  # Tencent's remote-code configs name these; their A13B sets both false
            c.bad(key, f"{what} in a Hunyuan config is not modelled")
    ffns: dict[str, dict[str, Any]] = {}
    layer_ffns = []
    for k in top_k:
        name = "moe" if len(set(top_k)) == 1 else f"moe_top{k}"
        if k > experts:
            c.bad("moe_topk", f"top-k {k} exceeds the {experts} experts")
        ffns.setdefault(name, h.moe(experts, k, inter, activation=act, shared=1))
        layer_ffns.append(name)
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    return h.doc(
        "moe", model, {"attn": attn}, ffns, ["attn"] * n, layer_ffns,
        "MoE decoder (q/k norms after rotary, softmax top-k routed experts plus a shared MLP on every layer)",
    )  # fmt: skip


def _ernie4_5_moe(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    act = c.activation("hidden_act", "silu")
    bias = c.bool("use_bias", False)
    if not c.has("num_key_value_heads"):  # Ernie4_5_MoeConfig's default is 4, not the head count
        c = Config({**c.data, "num_key_value_heads": 4}, c.source, c.prefix)
    attn = h.attention(c, hidden, qkv_bias=bias, o_bias=bias, rope_theta_default=500000.0)
    interval = c.int("moe_layer_interval", 1)
    start = c.int("moe_layer_start_index", 1, minimum=0)
    end = c.int("moe_layer_end_index", -1, minimum=-1)
    end = n - 1 if end == -1 else end
    experts = c.int(("moe_num_experts", "num_experts"), 64)
    layer_ffns = ["moe" if (i + 1) % interval == 0 and start <= i <= end else "mlp" for i in range(n)]
    ffns: dict[str, dict[str, Any]] = {}
    if "mlp" in layer_ffns:
        ffns["mlp"] = h.mlp(c.int("intermediate_size", 12288), activation=act, bias=bias)
    if "moe" in layer_ffns:
        shared = c.int("moe_num_shared_experts", 2, minimum=0)
        if bias and shared:
            c.bad("use_bias", "biased shared experts beside unbiased routed ones are not supported")
        moe = h.moe(
            experts, c.int(("moe_k", "num_experts_per_tok"), 6), c.int("moe_intermediate_size", 1536),
            activation=act, shared=shared,
        )  # fmt: skip
        moe["score_bias"] = "parameter"
        ffns["moe"] = moe
    model = h.model(c, hidden=hidden, layers=n, tie_default=True)
    if bias:
        model["lm_head_bias"] = True  # Ernie4_5_MoeForCausalLM's lm_head has bias=use_bias
    return h.doc(
        "moe" if "moe" in ffns else "dense", model, {"attn": attn}, ffns, ["attn"] * n, layer_ffns,
        "MoE decoder (softmax routing with a score-correction bias, shared experts, dense first layers)",
    )  # fmt: skip


def _dbrx(c: Config) -> dict[str, Any]:
    hidden = c.int(("d_model", "hidden_size"), 2048)
    n = c.int(("n_layers", "num_hidden_layers"), 24)
    heads = c.int(("n_heads", "num_attention_heads"), 16)
    if hidden % heads:
        c.bad("n_heads", f"d_model {hidden} is not divisible by {heads} heads")
    ac = _sub(c, "attn_config")
    fc = _sub(c, "ffn_config")
    kv = ac.int("kv_n_heads", 1)
    if heads % kv:
        c.bad("attn_config.kv_n_heads", f"{heads} heads are not a multiple of {kv} key/value heads")
    theta = ac.float("rope_theta") if ac.has("rope_theta") else c.rope_theta(10000.0)  # published: attn_config
    attn: dict[str, Any] = {
        "type": "attention", "num_heads": heads, "num_kv_heads": kv, "head_dim": hidden // heads, "rope_theta": theta,
    }  # fmt: skip
    clip = ac.data.get("clip_qkv")
    if clip is not None:
        attn["clip_qkv"] = ac.float("clip_qkv")
    act_cfg = fc.data.get("ffn_act_fn") or {"name": "silu"}
    if not isinstance(act_cfg, dict) or set(act_cfg) - {"name"}:
        c.bad("ffn_config.ffn_act_fn", f"expected {{name: <activation>}} without arguments, got {act_cfg!r}")
    act = Config(act_cfg, c.source, f"{c.prefix}ffn_config.ffn_act_fn.").activation("name", "silu")
    norm_p = fc.data.get("moe_normalize_expert_weights", 1.0)
    if norm_p not in (None, 1, 1.0):
        c.bad("ffn_config.moe_normalize_expert_weights", f"only 1 (renormalise) or null is supported, got {norm_p!r}")
    moe = h.moe(
        fc.int("moe_num_experts", 4), fc.int("moe_top_k", 1), fc.int("ffn_hidden_size", 3584), activation=act,
    )  # fmt: skip
    if norm_p is None:
        moe["norm_topk_prob"] = False
    model = h.model(c, hidden=hidden, layers=n, tie_default=False, max_pos_key=("max_seq_len",), norm="layernorm")
    if model["tie_embeddings"]:
        c.bad("tie_word_embeddings", "DBRX has no tied embeddings (transformers refuses the config)")
    model["norm_bias"] = False
    return h.doc(
        "moe", model, {"attn": attn}, {"moe": moe}, ["attn"] * n, None,
        "MoE decoder (fused qkv with clipping, bias-free LayerNorms, softmax top-k routed experts)",
    )  # fmt: skip


def _sub(c: Config, key: str) -> Config:
    """A nested config mapping (DBRX's ``attn_config`` / ``ffn_config``), read with its own defaults."""
    v = c.data.get(key) or {}
    if not isinstance(v, dict):
        c.bad(key, f"expected a mapping, got {v!r}")
    return Config(v, c.source, f"{c.prefix}{key}.")


def _phimoe(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    bias = c.bool("attention_bias", False)
    attn = h.attention(c, hidden, qkv_bias=bias, o_bias=bias, rope_theta_default=1e6)
    window = c.opt_int("sliding_window")
    mixers, layer_mixers = h.split_attention(attn, window, [window is not None] * n)
    top_k = c.int("num_experts_per_tok", 2)
    if top_k != 2:
        c.bad("num_experts_per_tok", f"PhiMoE's SparseMixer routes every token to 2 experts, got {top_k}")
    moe = h.moe(
        c.int("num_local_experts", 16), 2, c.int("intermediate_size", 6400),
        activation=c.activation("hidden_act", "silu"),
    )  # fmt: skip
    moe.update(routing="sparsemixer", jitter_eps=c.float("router_jitter_noise", 0.01))
    model = h.model(c, hidden=hidden, layers=n, tie_default=False, norm="layernorm")
    if c.bool("lm_head_bias", False):
        model["lm_head_bias"] = True
    return h.doc(
        "moe", model, mixers, {"moe": moe}, layer_mixers, None,
        "MoE decoder (LayerNorms, biased attention, SparseMixer top-2 routed experts)",
    )  # fmt: skip


MODEL_TYPES = {
    "olmoe": _olmoe,
    "dbrx": _dbrx,
    "hunyuan_v1_moe": _hunyuan_v1_moe,
    # Tencent's published Hunyuan-A13B config.json names its remote-code model_type "hunyuan": the same
    # keys and modules (with use_cla and use_mla false), so the same converter reads it.
    "hunyuan": _hunyuan_v1_moe,
    # No published config.json of these was reachable offline: checked against transformers on synthetic
    # configs only (tests/test_hf_moe_variants.py; tests/test_hf_transformers.py lists why).
    "ernie4_5_moe": _ernie4_5_moe,
    "phimoe": _phimoe,
}
