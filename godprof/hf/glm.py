"""GLM-4.5 / GLM-4.5-Air (``glm4_moe``): GQA with partial rotary, DeepSeek-V3-style sigmoid routing with a
shared expert, a dense first layer, and a multi-token-prediction layer.

What is read, and where each quirk comes from in transformers' ``models/glm4_moe`` (modeling_glm4_moe.py,
configuration_glm4_moe.py):

- ``Glm4MoeAttention``: q, k, v biases with ``attention_bias`` and never an o bias; ``head_dim``;
  rotary on the first ``partial_rotary_factor`` (default 0.5) of each head; per-head q/k RMSNorm before
  rotary when ``use_qk_norm`` (GLM-4.5 has it, Air does not).
- a dense ``Glm4MoeMLP`` of ``intermediate_size`` on the first ``first_k_dense_replace`` layers (default
  1), ``Glm4MoeMoE`` after: ``Glm4MoeTopkRouter`` (weight [E, h], no bias; sigmoid scores;
  ``e_score_correction_bias`` a *buffer*: ``score_bias: buffer``, no parameters; ``n_group`` /
  ``topk_group`` group-limited choice; ``norm_topk_prob``; ``routed_scaling_factor``),
  ``n_routed_experts`` experts of ``moe_intermediate_size`` and one shared MLP of ``n_shared_experts`` x
  ``moe_intermediate_size``.
- ``num_nextn_predict_layers`` (transformers' ``num_mtp_layers``, default 1) multi-token-prediction
  layers: the released checkpoints hold them (``model.layers.<n>.*``, which transformers' causal LM skips
  on load), each a full MoE decoder layer with ``eh_proj``, ``enorm``, ``hnorm`` and a shared head (norm
  and lm_head) and its own embedding copy, as DeepSeek-V3's: written as the spec's ``mtp`` section,
  counted apart.
"""

from __future__ import annotations

from typing import Any

from godprof.hf import common as h
from godprof.hf.config import Config


def _glm4_moe(c: Config) -> dict[str, Any]:
    hidden = c.int("hidden_size")
    n = c.int("num_hidden_layers")
    act = c.activation("hidden_act", "silu")
    attn = h.attention(
        c, hidden, qkv_bias=c.bool("attention_bias", False), rotary_fraction=c.partial_rotary(0.5),
        qk_norm=c.bool("use_qk_norm", False),
    )  # fmt: skip
    experts = c.int(("n_routed_experts", "num_local_experts"), 128)
    first_dense = c.int("first_k_dense_replace", 1, minimum=0)
    layer_ffns = ["mlp" if i < first_dense else "moe" for i in range(n)]
    ffns: dict[str, dict[str, Any]] = {}
    if "mlp" in layer_ffns:
        ffns["mlp"] = h.mlp(c.int("intermediate_size", 10944), activation=act)
    inter = c.int("moe_intermediate_size", 1408)
    moe = h.moe(
        experts, c.int("num_experts_per_tok", 8), inter, activation=act,
        shared=c.int("n_shared_experts", 1, minimum=0),
    )  # fmt: skip
    h.sigmoid_routing(c, moe, groups=(1, 1), scale=1.0)
    mtp_layers = c.int(("num_nextn_predict_layers", "num_mtp_layers"), 1, minimum=0)
    if "moe" in layer_ffns or mtp_layers:
        ffns["moe"] = moe
    model = h.model(c, hidden=hidden, layers=n, tie_default=False)
    out = h.doc(
        "moe" if "moe" in layer_ffns else "dense", model, {"attn": attn}, ffns, ["attn"] * n, layer_ffns,
        "MoE decoder (partial-rotary GQA, sigmoid-routed experts with a score-correction bias and a shared "
        "expert, dense first layers)",
    )  # fmt: skip
    if mtp_layers:
        out["mtp"] = {"layers": mtp_layers, "mixer": "attn", "ffn": "moe"}
    return out


MODEL_TYPES = {"glm4_moe": _glm4_moe}
