"""The built dense models of 2024-26 against transformers, and the attention options they brought.

Logits: a tiny config of each model_type godprof.hf.dense imports (gemma3_text, phi3, olmo2, cohere2,
starcoder2, smollm3, exaone4, seed_oss) goes through the importer and the build; our weights are copied
into transformers' model built from the same config (fused projections concatenated, Gemma's (1 + w)
norms written as w - 1, interleaved rotary pairs permuted) and the logits of a full forward must agree in
fp32. Gemma 2 with capped scores and its own softmax scale, a Llama 4 stack (chunked local attention
with the L2 qk norm, NoPE global layers) and gpt-oss's attention with sinks (module against module) pin
the options no importer of this module writes.

Then for every new option: cached decode and chunked prefill reproduce a full forward; the build holds
exactly the analytic parameters and cache bytes; FlopCounterMode counts exactly the analytic forward
(attention "full") and decode FLOPs; the analytic prefill peak equals the live-tensor peak on CPU.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
import torch
import yaml

from godprof.analytic import Workload, count_params
from godprof.analytic.flops import decode_flops_per_token, forward_flops
from godprof.analytic.memory import inference_activation_bytes, kv_cache_bytes
from godprof.build import build_model
from godprof.build.layers import rope_cos_sin
from godprof.dtypes import get_dtype
from godprof.hf import spec_document_from_hf_config, spec_from_hf_config
from godprof.measure.flops import count_torch
from godprof.measure.memory import LiveTensorBytes, fused_attention
from godprof.spec import parse_spec

transformers = pytest.importorskip("transformers")

TOL = {"atol": 2e-4, "rtol": 2e-4}
SMALL: dict[str, Any] = {
    "vocab_size": 97, "hidden_size": 64, "intermediate_size": 80, "num_attention_heads": 4, "head_dim": 16,
    "num_key_value_heads": 2, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread


# --------------------------------------------------------------------------- weights into transformers

LLAMA = {"mixer_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "mixer": "self_attn", "ffn": "mlp"}
SANDWICH = {**LLAMA, "post_mixer_norm": "post_attention_layernorm", "ffn_norm": "pre_feedforward_layernorm",
            "post_ffn_norm": "post_feedforward_layernorm"}  # fmt: skip
POST = {"post_mixer_norm": "post_attention_layernorm", "post_ffn_norm": "post_feedforward_layernorm",
        "mixer": "self_attn", "ffn": "mlp"}  # fmt: skip


def _hf_name(name: str, block: dict[str, str], ffn: dict[str, str]) -> str:
    """Our parameter name -> transformers' (``block``: our block parts; ``ffn``: renamed MLP layers)."""
    if name.startswith("norm."):
        return f"model.{name}"
    if name in ("embed_tokens.weight", "lm_head.weight"):
        return name if name.startswith("lm_head") else f"model.{name}"
    m = re.match(r"layers\.(\d+)\.([a-z_]+)\.(.*)", name)
    assert m, name
    i, part, rest = m.groups()
    if part == "ffn":
        layer, _, leaf = rest.partition(".")
        rest = f"{ffn.get(layer, layer)}.{leaf}"
    return f"model.layers.{i}.{block[part]}.{rest}"


def _interleave(w: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Rows of a q or k projection (per head, half-split rotary pairs i, i + D/2) in the order of a model
    that rotates adjacent pairs (2i, 2i + 1): Cohere, Llama 4. q.k is unchanged by the common permutation."""
    half = torch.arange(head_dim // 2)
    perm = torch.stack((half, half + head_dim // 2), dim=1).flatten()  # [0, D/2, 1, D/2 + 1, ...]
    return w.reshape(-1, head_dim, *w.shape[1:])[:, perm].reshape(w.shape)


@torch.no_grad()
def _load(
    ours: torch.nn.Module,
    theirs: torch.nn.Module,
    block: dict[str, str],
    *,
    ffn: dict[str, str] | None = None,
    gemma: bool = False,
    interleave: int | None = None,
    fuse: bool = False,
) -> None:
    """Copy every parameter of ``ours`` into ``theirs``; each of theirs must be filled exactly once."""
    out: dict[str, torch.Tensor] = {}
    for name, p in ours.named_parameters():
        target = _hf_name(name, block, ffn or {})
        value = p.detach().clone()
        if gemma and re.search(r"norm\.weight$", target):
            value = value - 1.0  # Gemma's RMSNorm multiplies by (1 + w)
        if interleave and re.search(r"\.[qk]_proj\.(weight|bias)$", target):
            value = _interleave(value, interleave)
        out[target] = value
    if fuse:  # Phi-3: qkv_proj = [q; k; v], gate_up_proj = [gate; up]
        for key in [k for k in out if k.endswith("self_attn.q_proj.weight")]:
            stem = key[: -len("q_proj.weight")]
            out[stem + "qkv_proj.weight"] = torch.cat([out.pop(stem + f"{x}_proj.weight") for x in "qkv"])
        for key in [k for k in out if k.endswith("mlp.gate_proj.weight")]:
            stem = key[: -len("gate_proj.weight")]
            out[stem + "gate_up_proj.weight"] = torch.cat([out.pop(stem + f"{x}_proj.weight") for x in ("gate", "up")])
    theirs_params = dict(theirs.named_parameters())  # tied weights appear once
    assert set(out) == set(theirs_params), set(out) ^ set(theirs_params)
    for n, v in out.items():
        assert theirs_params[n].shape == v.shape, n
        theirs_params[n].copy_(v)


def _hf_model(config_cls: str, model_cls: str, **cfg: Any) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conf = getattr(transformers, config_cls)(**cfg)
        conf._attn_implementation = "eager"
        return getattr(transformers, model_cls)(conf).eval()


def _ours(spec) -> torch.nn.Module:
    return build_model(spec, "cpu", torch.float32, init_std=0.15, seed=2)


@torch.no_grad()
def _same_logits(ours: torch.nn.Module, theirs: torch.nn.Module, vocab: int, seq: int = 13) -> None:
    ids = torch.randint(0, vocab, (2, seq), generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = theirs(input_ids=ids, use_cache=False).logits
    got = ours(ids)
    assert got.abs().max() > 0.5  # logits far from zero: the comparison is not vacuous
    torch.testing.assert_close(got, ref, **TOL)


def _imported(model_type: str, **cfg: Any) -> tuple[Any, dict[str, Any]]:
    """The spec godprof imports from a tiny config of ``model_type`` (norm eps 1e-5, as the build's)."""
    full = {"model_type": model_type, **SMALL, "rms_norm_eps": 1e-5, **cfg}
    return spec_from_hf_config(full, model_type), {k: v for k, v in full.items() if k != "model_type"}


# --------------------------------------------------------------------------- logits, one model_type each

# transformers class names and how our parameters map onto theirs, per imported model_type
CASES: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    # 4 layers, every 2nd global; window 4 < 13 tokens; softmax scale 24^-0.5 with head_dim 16; tied head
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", {
        "num_hidden_layers": 4, "sliding_window": 4, "sliding_window_pattern": 2, "query_pre_attn_scalar": 24,
        "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0, "final_logit_softcapping": None,
    }, {"block": SANDWICH, "gemma": True}),
    # half the head rotated, tied head, fused projections
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {
        "num_hidden_layers": 2, "partial_rotary_factor": 0.5, "tie_word_embeddings": True, "rope_theta": 10_000.0,
    }, {"block": LLAMA, "fuse": True}),
    # norms after each branch, RMSNorm over the full q and k projections
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {"num_hidden_layers": 2, "attention_bias": True},
              {"block": POST}),
    # parallel block under one bias-free LayerNorm, layers 0-2 windowed with rotary, layer 3 NoPE, logit scale
    "cohere2": ("Cohere2Config", "Cohere2ForCausalLM", {
        "num_hidden_layers": 4, "sliding_window": 4, "layer_norm_eps": 1e-5, "logit_scale": 0.25,
    }, {"block": LLAMA, "interleave": 16}),
    # biases everywhere, LayerNorm with bias, plain tanh-GELU MLP, window 4 on every layer
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", {
        "num_hidden_layers": 2, "sliding_window": 4, "norm_epsilon": 1e-5, "use_bias": True,
    }, {"block": LLAMA, "ffn": {"fc1": "c_fc", "fc2": "c_proj"}}),
    # NoPE on every 2nd layer, with a window of 4 there (SmolLM3Config puts windows on NoPE layers)
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", {
        "num_hidden_layers": 4, "no_rope_layer_interval": 2, "use_sliding_window": True, "sliding_window": 4,
    }, {"block": LLAMA}),
    # post-norm blocks, per-head q/k norms, local layers with rotary and a global NoPE layer every 2nd
    "exaone4": ("Exaone4Config", "Exaone4ForCausalLM", {
        "num_hidden_layers": 4, "sliding_window": 4, "sliding_window_pattern": 2,
    }, {"block": POST}),
    # q/k/v biases without an o bias, head_dim wider than hidden / heads
    "seed_oss": ("SeedOssConfig", "SeedOssForCausalLM", {"num_hidden_layers": 2, "head_dim": 24},
                 {"block": LLAMA}),
}  # fmt: skip


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_imported_model_matches_transformers(model_type: str) -> None:
    config_cls, model_cls, cfg, how = CASES[model_type]
    spec, hf_cfg = _imported(model_type, **cfg)
    ours = _ours(spec)
    theirs = _hf_model(config_cls, model_cls, **hf_cfg)
    assert sum(p.numel() for p in ours.parameters()) == count_params(spec).total
    _load(ours, theirs, **how)
    _same_logits(ours, theirs, spec.model.vocab_size)


def test_gemma2_softcap_and_scale_match_transformers() -> None:
    """Gemma 2's capped scores (cap 2: most scores of this init reach it) and query_pre_attn_scalar; the
    importer's document with the two options added (final logits uncapped on both sides)."""
    cfg = {**SMALL, "num_hidden_layers": 2, "sliding_window": 4, "rms_norm_eps": 1e-5, "query_pre_attn_scalar": 24,
           "attn_logit_softcapping": 2.0, "final_logit_softcapping": None}  # fmt: skip
    doc = spec_document_from_hf_config({"model_type": "gemma2", **cfg}, "gemma2")
    for m in doc["mixers"].values():
        m.update(softcap=2.0, scale=24**-0.5)
    spec = parse_spec(doc, "gemma2")
    ours = _ours(spec)
    theirs = _hf_model("Gemma2Config", "Gemma2ForCausalLM", **cfg)
    _load(ours, theirs, SANDWICH, gemma=True)
    _same_logits(ours, theirs, spec.model.vocab_size)
    uncapped = parse_spec({**doc, "mixers": {k: {**m, "softcap": None} for k, m in doc["mixers"].items()}}, "x")
    plain = _ours(uncapped)
    plain.load_state_dict(ours.state_dict())
    ids = torch.randint(0, 97, (2, 13), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (plain(ids) - ours(ids)).abs().max() > 1e-2  # the cap changes the logits


LLAMA4_SPEC = """
name: llama4-style
family: dense
model: {vocab_size: 97, hidden_size: 64, num_layers: 4}
mixers:
  chunked: {type: attention, num_heads: 4, num_kv_heads: 2, head_dim: 16, attention_chunk: 4, qk_norm: l2}
  nope: {type: attention, num_heads: 4, num_kv_heads: 2, head_dim: 16, rope: false}
ffns:
  mlp: {type: mlp, intermediate_size: 80}
layout:
  mixer: {default: chunked, every: {period: 4, offset: 3, use: nope}}
"""


def test_llama4_chunked_l2_nope_matches_transformers() -> None:
    """Llama 4's text stack with dense MLPs: chunks of 4 over 13 tokens with the L2 qk norm on the rotary
    layers, a global NoPE layer (temperature tuning off: godprof does not model it)."""
    spec = parse_spec(yaml.safe_load(LLAMA4_SPEC), "llama4")
    ours = _ours(spec)
    theirs = _hf_model(
        "Llama4TextConfig", "Llama4ForCausalLM", **SMALL, intermediate_size_mlp=80, num_hidden_layers=4,
        moe_layers=[], no_rope_layers=[1, 1, 1, 0], attention_chunk_size=4, use_qk_norm=True,
        attn_temperature_tuning=False, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )  # fmt: skip
    assert [layer.self_attn.use_rope for layer in theirs.model.layers] == [1, 1, 1, 0]
    _load(ours, theirs, {**LLAMA, "ffn": "feed_forward"}, interleave=16)
    _same_logits(ours, theirs, spec.model.vocab_size)


@pytest.mark.parametrize("window", [None, 4])
@torch.no_grad()
def test_gpt_oss_sinks_match_transformers_attention(window: int | None) -> None:
    """Our attention with sinks against GptOssAttention (eager: softmax over the keys and the sink), full
    and sliding-window layers, with the sink logits drawn wide (N(0, 2)) so they take real weight."""
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssAttention

    from godprof.build.kinds.attention import GQAttention
    from godprof.build.layers import RotaryTables
    from godprof.kinds.attention import Attention

    B, S, h, H, K, D = 2, 13, 64, 4, 2, 16
    kind = Attention(num_heads=H, num_kv_heads=K, head_dim=D, qkv_bias=True, o_bias=True, sinks=True,
                     sliding_window=window, rope_theta=150000.0)  # fmt: skip
    ours = GQAttention(kind, h, {"device": torch.device("cpu"), "dtype": torch.float32}, RotaryTables())
    g = torch.Generator().manual_seed(0)
    for p in ours.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * (2.0 if p is ours.sinks else 0.15))
    conf = transformers.GptOssConfig(hidden_size=h, num_attention_heads=H, num_key_value_heads=K, head_dim=D,
                                     attention_bias=True, sliding_window=window or 128, num_hidden_layers=1,
                                     layer_types=["sliding_attention" if window else "full_attention"])  # fmt: skip
    conf._attn_implementation = "eager"
    theirs = GptOssAttention(conf, 0).eval()
    for name, p in theirs.named_parameters():
        p.copy_(dict(ours.named_parameters())[name])
    x = torch.randn(B, S, h, generator=g)
    cos, sin = rope_cos_sin(torch.arange(S), D, 150000.0, torch.float32)  # [S, D]: halves repeated
    i = torch.arange(S)
    visible = (i[None, :] <= i[:, None]) & ((i[:, None] - i[None, :] < window) if window else True)
    mask = torch.zeros(S, S).masked_fill(~visible, float("-inf"))[None, None]  # [1, 1, S, S] additive
    ref, _ = theirs(x, (cos[None, :, : D // 2], sin[None, :, : D // 2]), mask)
    torch.testing.assert_close(ours(x, 0, None), ref, **TOL)
    with torch.enable_grad():  # the differentiable (explicit) path computes the same
        torch.testing.assert_close(ours(x, 0, None), ref, **TOL)


# --------------------------------------------------------------------------- every option: decode, counts, FLOPs


def _spec(attn: str, layers: int = 2, model: str = ""):
    return parse_spec(
        yaml.safe_load(f"""
name: t
family: dense
model: {{vocab_size: 97, hidden_size: 64, num_layers: {layers}{model}}}
mixers:
  attn: {{type: attention, num_heads: 4, num_kv_heads: 2, head_dim: 16, {attn}}}
  nope: {{type: attention, num_heads: 4, num_kv_heads: 2, head_dim: 16, rope: false}}
ffns: {{mlp: {{type: mlp, intermediate_size: 40}}}}
layout: {{mixer: {{default: attn, every: {{period: 2, offset: 1, use: nope}}}}}}
"""),
        "inline",
    )


OPTIONS = {
    "sinks": "sinks: true",
    "sinks-window": "sinks: true, sliding_window: 4",
    "chunked": "attention_chunk: 4",
    "chunked-sinks-l2": "attention_chunk: 5, sinks: true, qk_norm: l2",
    "qk-full-clip": "qk_norm: full, clip_qkv: 0.25",
    "qk-head": "qk_norm: head",
    "softcap-scale": "softcap: 2.0, scale: 0.1",
    "softcap-sinks-window": "softcap: 3.0, sinks: true, sliding_window: 4",
    "post-norm-qk-full": "qk_norm: full, rotary_dim: 8",
}


def _option_spec(name: str):
    return _spec(OPTIONS[name], model=", post_norm: true" if name.startswith("post-norm") else "")


@pytest.mark.parametrize("name", list(OPTIONS))
@torch.no_grad()
def test_cached_decode_and_chunked_prefill_match_full_forward(name: str) -> None:
    """Prefill 3 then decode 10 tokens one at a time (crossing chunk and window boundaries); then 5 + 7
    tokens through a reset cache; both equal one cache-free forward."""
    spec = _option_spec(name)
    model = build_model(spec, "cpu", torch.float32, init_std=0.15, seed=1)
    ids = torch.randint(0, 97, (2, 13), generator=torch.Generator().manual_seed(7))
    full = model(ids)
    cache = model.allocate_cache(2, 16)
    steps = [model(ids[:, :3], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(3, 13)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)
    cache.reset()
    parts = [model(ids[:, :5], cache=cache), model(ids[:, 5:12], cache=cache)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full[:, :12], atol=1e-4, rtol=1e-4)
    cache.reset()
    assert (model(ids[:, 12:13], cache=cache) - full[:, 12:13]).abs().max() > 1e-2  # context matters


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize(("batch", "max_len", "dtype"), [(1, 3, "fp32"), (2, 37, "bf16")])
def test_parameters_and_cache_bytes_equal_analytic(name: str, batch: int, max_len: int, dtype: str) -> None:
    spec = _option_spec(name)
    model = build_model(spec, "meta")
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).total
    cache = model.allocate_cache(batch, max_len, dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    assert cache.nbytes() == kv_cache_bytes(spec, batch, max_len, get_dtype(dtype))


def test_hand_counts() -> None:
    """h 64, 4 heads / 2 KV heads of 16. Per attention layer q 64x64 + k, v 64x32 + o 64x64 = 12,288.
    Sinks add 4 logits; full qk norms 64 + 32 = 96 weights, per-head ones 2 x 16, the L2 norm none.
    A chunk of 4 caps the cache at 4 tokens: 2 x 2 x 16 x 4 = 256 values per layer."""
    base = count_params(_spec("rope: true")).total
    assert count_params(_spec("sinks: true")).total - base == 4
    assert count_params(_spec("qk_norm: full")).total - base == 96
    assert count_params(_spec("qk_norm: head")).total - count_params(_spec("qk_norm: true")).total == 0
    assert count_params(_spec("qk_norm: true")).total - base == 32
    assert count_params(_spec("qk_norm: l2, clip_qkv: 8, softcap: 30, scale: 0.5")).total == base
    chunked = _spec("attention_chunk: 4", layers=1)
    assert kv_cache_bytes(chunked, 1, 100, get_dtype("fp32")) == 4 * 256
    attn = chunked.mixers["attn"]
    # 10 tokens in chunks of 4: 4 + 4 + 2 queries; causal pairs 10 + 10 + 3 = 23, full 16 + 16 + 4 = 36
    assert attn.pairs(10, "causal") == 23 and attn.pairs(10, "full") == 36
    # decoding position 9 (context 10) sees positions 8 and 9; at context 12 a whole chunk of 4
    assert [attn.decode_keys(c) for c in (9, 10, 12, 13)] == [1, 2, 4, 1]


@pytest.mark.parametrize("name", list(OPTIONS))
@torch.no_grad()
def test_counted_flops_equal_analytic(name: str) -> None:
    """FlopCounterMode over a prefill of 2 x 11 tokens equals ``forward_flops`` (attention "full": a
    chunked layer computes chunk by chunk, an explicit one the whole score matrix), and over a decode step
    at context 12 equals ``decode_flops_per_token``: sinks, capping, clamping and norms add no matmul."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    spec = _option_spec(name)
    model = build_model(spec, "cpu", torch.float32, init_std=0.15, seed=1)
    counts = count_params(spec)
    B, S = 2, 11
    ids = torch.randint(0, 97, (B, S + 1), generator=torch.Generator().manual_seed(7))
    prefill = count_torch(model, spec, ids[:, :S], last_only=False)
    assert prefill.matmul == forward_flops(spec, counts, Workload(batch=B, seq=S, attention_flops="full"))
    assert prefill.by_category["other"] == 0
    cache = model.allocate_cache(B, S + 1)
    model(ids[:, :S], cache=cache)

    def cpu_sdpa(q, k, v, *args, **kwargs) -> int:  # noqa: ANN001
        return sdpa_flop_count(q, k, v)

    decode = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa})  # fmt: skip
    with decode:
        model(ids[:, S:], cache=cache)
    assert decode.get_total_flops() == B * decode_flops_per_token(spec, counts, S + 1)


@pytest.mark.parametrize("name", ["sinks", "chunked-sinks-l2", "softcap-sinks-window"])
def test_torch_and_fvcore_counters_agree_with_analytic(name: str) -> None:
    """What ``godprof measure`` compares: both counters equal the analytic matmul FLOPs. fvcore counts a
    torch.jit trace, where sinks run the explicit attention (its matmuls are what fvcore prices), so the
    CPU kernel that returns the log-sum-exp (unknown to fvcore) never appears in it."""
    from godprof.measure.flops import compare_flops

    spec = _option_spec(name)
    model = build_model(spec, "cpu", torch.float32)
    comparison = compare_flops(model, spec, 2, 16, last_only=True)
    for counter in comparison.counters:
        assert counter.available, counter.reason
        assert counter.matmul == comparison.analytic_matmul, counter.counter


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_prefill_peak_equals_live_tensor_peak(name: str, dtype: str) -> None:
    """The analytic prefill activation peak against the live-tensor peak of a prefill on CPU (as
    tests/test_activation_fidelity.py measures the tiny examples), on a stack whose attention sets the
    peak: 8 heads of 32 over a hidden size of 64, a vocabulary of 64 and a narrow MLP."""
    attn = OPTIONS[name]
    spec = parse_spec(
        yaml.safe_load(f"""
name: wide-attention
family: dense
model: {{vocab_size: 64, hidden_size: 64, num_layers: 2, tie_embeddings: true}}
mixers: {{attn: {{type: attention, num_heads: 8, num_kv_heads: 4, head_dim: 32, {attn}}}}}
ffns: {{mlp: {{type: mlp, intermediate_size: 32}}}}
"""),
        "inline",
    )
    tdt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    model = build_model(spec, "cpu", tdt)
    for batch, seq in ((1, 64), (3, 150)):
        cache = model.allocate_cache(batch, seq + 4)
        ids = torch.randint(0, 64, (batch, seq), generator=torch.Generator().manual_seed(0))
        with torch.no_grad(), LiveTensorBytes() as live:
            logits = model(ids, cache=cache, last_only=True)
            logits[:, -1].float().argmax(-1)
        w = Workload(batch=batch, seq=seq, context=seq + 4, dtype=dtype, logits="last",
                     flash_attention=fused_attention(spec, "cpu"))  # fmt: skip
        estimated = inference_activation_bytes(spec, w)
        # to the byte, but where the explicit attention runs under a window mask: the model leaves out the
        # int64 query positions the mask is built from (8 bytes per query) and the sinks' fp32 copy
        slack = 8 * seq + 4 * 8 if "window" in name and "softcap" in name else 0
        assert 0 <= live.peak_bytes - estimated <= slack, (batch, seq, estimated, live.peak_bytes)
