"""DeepSeek-V4 (``type: compressed_attention``, ``model.hc_mult``, hash-routed ``moe``): the analytic counts
against their build, transformers 5.24's DeepseekV4ForCausalLM and the published figures.

- the released configs (V4-Flash, V4-Pro) import with transformers' exact total and active counts (also in
  tests/test_hf_transformers.py), small configs too; the bundled spec equals its config import;
- parameters of each attention kind and of the hyper-connections by hand, and the build's on meta;
- the cache the build allocates is exactly the analytic KV + state bytes; KV by hand at 1M tokens;
- cached decode (chunks, then token by token) equals a full forward;
- the prefill activation model equals the build's live-tensor peak on CPU (fp32 and bf16, 1 or 3 streams);
- logits equal transformers' on a small config (CSA with its indexer, HCA, sliding, hash and score
  routing, 3 hyper-connected streams);
- FlopCounterMode over a forward equals the analytic matmul FLOPs (attention "full");
- spec and importer errors.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from kind_checks import assert_cached_decode_matches, hf_name, tiny_model

from godprof.analytic import Workload, count_params
from godprof.analytic.flops import decode_flops_per_token, forward_flops
from godprof.analytic.memory import inference_activation_bytes, kv_cache_bytes, ssm_state_bytes
from godprof.build import build_model
from godprof.dtypes import get_dtype
from godprof.errors import SpecError
from godprof.hf import spec_from_config_file, spec_from_hf_config
from godprof.kinds.compressed_attention import CompressedAttention, sum_floor, sum_floor_capped
from godprof.measure.flops import compare_flops
from godprof.measure.memory import LiveTensorBytes, fused_attention
from godprof.spec import load_spec, parse_spec

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).parent / "fixtures" / "hf"

# A small DeepSeek-V4 in transformers' keys: sliding, CSA (rate 4, top-3 of its entries), HCA (rate 8);
# one hash-routed layer; 3 streams. 16 index heads keep the indexer's scores free of ties (with few heads
# several entries score exactly 0 after the relu, and top-k may then pick any of them).
SMALL: dict[str, Any] = {
    "model_type": "deepseek_v4", "vocab_size": 97, "hidden_size": 64, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16, "qk_rope_head_dim": 8, "q_lora_rank": 24,
    "o_groups": 2, "o_lora_rank": 12, "sliding_window": 6, "index_n_heads": 16, "index_head_dim": 12,
    "index_topk": 3, "n_routed_experts": 6, "num_experts_per_tok": 2, "moe_intermediate_size": 20,
    "n_shared_experts": 1, "scoring_func": "sqrtsoftplus", "routed_scaling_factor": 1.5, "swiglu_limit": 10.0,
    "layer_types": ["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention",
                    "compressed_sparse_attention"],
    "mlp_layer_types": ["hash_moe", "moe", "moe", "moe"],
    "compress_rates": {"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
    "hc_mult": 3, "hc_sinkhorn_iters": 5, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "compress_rope_theta": 160000.0, "tie_word_embeddings": False,
}  # fmt: skip


def _spec():
    return spec_from_hf_config(copy.deepcopy(SMALL), "small.json")


def _fixture(stem: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{stem}.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- parameters


def test_params_by_hand_and_built() -> None:
    """Per layer, hidden 64, 4 heads of 16, q rank 24, 2 groups of rank 12, rope 8:
    q_a 64*24 + q_a_norm 24 + q_b 24*64 + kv 64*16 + kv_norm 16 + o_a 64*12 + o_b 24*64 + sinks 4 = 6,444.
    HCA (rate 8): + kv/gate 2*64*16 + position_bias 8*16 + kv_norm 16 = 2,192. CSA (rate 4): compressor
    2*64*32 + 4*32 + 16 = 4,240; indexer 2*64*24 + 4*24 + 12 + q_b 24*192 + weights 64*16 = 8,812.
    Hyper-connections, 3 streams: per branch fn 15*192 + base 15 + scale 3 = 2,898, two per layer; the
    head 3*192 + 3 + 1 = 580."""
    spec = _spec()
    parts = {n: spec.mixers[n].params(64).total for n in ("swa", "csa", "hca")}
    assert parts == {"swa": 6_444, "hca": 6_444 + 2_192, "csa": 6_444 + 4_240 + 8_812}
    c = count_params(spec)
    assert c.by_component["hyper_connections"] == 4 * 2 * 2_898 + 580
    built = build_model(spec, "meta")
    assert sum(p.numel() for p in built.parameters()) == c.total
    # the hash table is a buffer [vocab, top_k], not a parameter; the score bias a buffer too
    bufs = dict(built.named_buffers())
    assert bufs["layers.0.ffn.tid2eid"].shape == (97, 2) and "layers.0.ffn.score_bias" not in bufs
    assert bufs["layers.1.ffn.score_bias"].shape == (6,)


@pytest.mark.parametrize("stem", ["deepseek-v4", "deepseek-v4-pro"])
def test_released_configs_by_component(stem: str) -> None:
    """V4-Flash and V4-Pro: the hyper-connection and attention totals (transformers on meta agrees on
    the totals: tests/test_hf_transformers.py); Flash's CSA/HCA split is 21/20 layers after 2 sliding."""
    spec = spec_from_config_file(FIXTURES / f"{stem}.json")
    c = count_params(spec)
    n, h, layers = 4, spec.model.hidden_size, spec.model.num_layers
    assert c.by_component["hyper_connections"] == layers * 2 * (24 * n * h + 24 + 3) + n * n * h + n + 1
    kinds = [spec.mixers[m].compressor for m in spec.layer_mixers]
    if stem == "deepseek-v4":
        assert (kinds.count("none"), kinds.count("csa"), kinds.count("hca")) == (2, 21, 20)
        assert (c.total, c.active) == (284_332_230_231, 13_799_622_231)
    else:
        assert (kinds.count("none"), kinds.count("csa"), kinds.count("hca")) == (0, 30, 31)
        assert (c.total, c.active) == (1_572_997_179_491, 49_779_058_787)


def test_bundled_spec_equals_its_config_import_and_published() -> None:
    spec, imported = load_spec("deepseek-v4"), spec_from_config_file(FIXTURES / "deepseek-v4.json")
    a, b = count_params(spec), count_params(imported)
    assert (a.total, a.active, a.matmul_per_token) == (b.total, b.active, b.matmul_per_token)
    assert spec.published is not None and spec.published.params_total == 284_000_000_000
    ctx = 1 << 20
    assert kv_cache_bytes(spec, 1, ctx, get_dtype("bf16")) == kv_cache_bytes(imported, 1, ctx, get_dtype("bf16"))


# --------------------------------------------------------------------------- cache


def test_kv_elements_by_hand_at_1m() -> None:
    """V4-Flash per sequence at 2^20 tokens: a window of 128 x 512 in every layer; CSA 2^18 entries of
    512 + 128 (indexer key); HCA 2^13 entries of 512. State: HCA's open window (127 x 2 x 512); CSA's
    (3 x 2 x 1024 + 2 x 4 x 512) and its indexer's (3 x 2 x 256 + 2 x 4 x 128)."""
    spec = load_spec("deepseek-v4")
    ctx = 1 << 20
    elements = 43 * 128 * 512 + 21 * (ctx // 4) * 640 + 20 * (ctx // 128) * 512
    assert kv_cache_bytes(spec, 1, ctx, get_dtype("bf16")) == 2 * elements
    state = 20 * 127 * 2 * 512 + 21 * (3 * 2 * 1024 + 2 * 4 * 512 + 3 * 2 * 256 + 2 * 4 * 128)
    assert ssm_state_bytes(spec, 1, get_dtype("bf16")) == 2 * state


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_cache_bytes_equal_analytic(dtype: str) -> None:
    spec = _spec()
    model = build_model(spec, "meta")
    for max_len in (5, 37):
        cache = model.allocate_cache(2, max_len, dtype=dtype)
        dt = get_dtype(dtype)
        assert cache.nbytes() == kv_cache_bytes(spec, 2, max_len, dt) + ssm_state_bytes(spec, 2, dt)


def test_cached_decode_equals_full_forward() -> None:
    """Prompts crossing CSA and HCA window boundaries and the sliding window, in uneven pieces, then one
    token at a time: every compressed entry, open window and overlap state carried through the cache."""
    model = tiny_model(_spec())
    assert_cached_decode_matches(model, [5, 7, 1, 13, 3, 11], first=9, tol=5e-5)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("hc", [1, 3])
@torch.no_grad()
def test_prefill_peak_equals_measured(hc: int, dtype: str) -> None:
    """The analytic prefill peak (each layer kind's phases, the hyper-connected block's) against the
    live-tensor peak of the build on CPU, batch 1 and 3 (the indexer's key broadcast copies only then):
    within 0.1% (fp32 agrees to the byte; bf16 to a few bytes)."""
    cfg = {**copy.deepcopy(SMALL), "hc_mult": hc}
    spec = spec_from_hf_config(cfg, "small.json")
    for batch, seq in ((1, 64), (3, 37)):
        model = build_model(spec, "cpu", dtype)
        cache = model.allocate_cache(batch, seq + 4)
        ids = torch.randint(0, 97, (batch, seq), generator=torch.Generator().manual_seed(1))
        with LiveTensorBytes() as live:
            model(ids, cache=cache, last_only=True)
        w = Workload(batch=batch, seq=seq, context=seq + 4, dtype=dtype, logits="last",
                     flash_attention=fused_attention(spec, "cpu"))  # fmt: skip
        estimated = inference_activation_bytes(spec, w)
        assert abs(estimated - live.peak_bytes) <= 1e-3 * live.peak_bytes, (batch, seq, estimated, live.peak_bytes)


# --------------------------------------------------------------------------- transformers


def _hf_name(name: str) -> str:
    if name.startswith("hc_head."):
        return "model." + name
    out = hf_name(
        name,
        [
            ("mixer.compressor.indexer.weights_proj", "self_attn.compressor.indexer.scorer.weights_proj"),
            ("mixer.", "self_attn."), ("mixer_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm"),
            ("mixer_hc", "attn_hc"), ("ffn_hc", "ffn_hc"), ("ffn.router", "mlp.gate"),
            ("ffn.experts.w_in", "mlp.experts.gate_up_proj"), ("ffn.experts.w_out", "mlp.experts.down_proj"),
            ("ffn.shared", "mlp.shared_experts"), ("ffn.tid2eid", "mlp.gate.tid2eid"),
            ("ffn.score_bias", "mlp.gate.e_score_correction_bias"),
        ],
    )  # fmt: skip
    return out


@torch.no_grad()
def test_logits_equal_transformers() -> None:
    """transformers' DeepseekV4ForCausalLM (eager, its only backend) with our weights, hash table and
    score biases copied in by name: full forwards with and without compressed entries past top-k."""
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "DeepseekV4ForCausalLM"):
        pytest.skip("this transformers has no DeepSeek-V4")
    spec = _spec()
    ours = tiny_model(spec)
    for name, buf in ours.named_buffers():  # nonzero biases test their use
        if name.endswith("score_bias"):
            buf.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(4))
    cfg = {k: v for k, v in SMALL.items() if k != "model_type"}
    hf = transformers.DeepseekV4ForCausalLM(transformers.DeepseekV4Config(**cfg, attn_implementation="eager")).eval()
    theirs = {**dict(hf.named_parameters()), **dict(hf.named_buffers())}
    mapped = {_hf_name(n): t for n, t in [*ours.named_parameters(), *ours.named_buffers()]}
    assert set(n for n, _ in hf.named_parameters()) <= set(mapped)
    for n, t in mapped.items():
        assert theirs[n].shape == t.shape, n
        theirs[n].copy_(t)
    g = torch.Generator().manual_seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seq in (3, 17, 40):
            ids = torch.randint(0, 97, (2, seq), generator=g)
            ref = hf(input_ids=ids, use_cache=False).logits
            got = ours(ids)
            assert got.abs().max() > 0.5
            torch.testing.assert_close(got, ref, atol=2e-4, rtol=2e-4)


# --------------------------------------------------------------------------- FLOPs


def test_closed_forms() -> None:
    for seq in range(1, 40):
        for m in (1, 3, 4):
            assert sum_floor(seq, m) == sum((i + 1) // m for i in range(seq))
            for k in (1, 2, 5):
                assert sum_floor_capped(seq, m, k) == sum(min((i + 1) // m, k) for i in range(seq))


def test_attention_flops_by_hand() -> None:
    """CSA of the small spec at seq 10, causal: window pairs 6*7/2 + 4*6 = 45; entries seen per query
    floor((i+1)/4) = 0,0,0,1,1,1,1,2,2,2 -> 10, capped at top-3: 10; main 4 x 4 heads x 16 x 55 = 14,080;
    indexer 10 pairs x 2 x 16 x 13 = 4,160. full: 100 + 10 x 2 entries = 120 pairs; indexer 20 pairs."""
    a = _spec().mixers["csa"]
    assert isinstance(a, CompressedAttention)
    assert a.attention_flops(1, 10, "causal") == 4 * 4 * 16 * 55 + 10 * 2 * 16 * 13
    assert a.attention_flops(1, 10, "full") == 4 * 4 * 16 * 120 + 20 * 2 * 16 * 13
    # decode at 40: 6 window keys + top-3 of 10 entries; indexer over the 10
    assert a.decode_attention_flops(40) == 4 * 4 * 16 * 9 + 10 * 2 * 16 * 13
    assert a.decode_read_elements(40) == 16 * 9 + 12 * 10


@pytest.mark.parametrize("seq", [5, 24])
def test_counters_equal_analytic(seq: int) -> None:
    """FlopCounterMode and fvcore over one forward (no cache) equal the analytic matmul FLOPs: every Linear,
    the grouped o_a product, the hyper-connections' fn and stream mixing, attention over seq x (seq +
    entries) (the window under a mask) and the indexer's scores and head weighting. fvcore only once every
    compressor closes a window: with none (HCA's 8 > seq 5) its trace drops the gate projection, whose only
    use is the copy of the open window into the cache."""
    spec = _spec()
    model = build_model(spec, "cpu", torch.float32)
    c = compare_flops(model, spec, 2, seq, last_only=True, fvcore=seq >= 8)
    for counter in c.counters:
        assert counter.available, counter.reason
        assert counter.matmul == c.analytic_matmul, counter.counter


@torch.no_grad()
def test_counted_decode_flops_exceed_analytic_only_by_dense_attention() -> None:
    """A decode step: the build scores every window key and every entry (dense, masked), the analytic
    decode counts the selected ones (top-k for CSA); the difference is exactly the unselected entries."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = _spec()
    model = build_model(spec, "cpu", torch.float32)
    cache = model.allocate_cache(1, 41)
    model(torch.randint(0, 97, (1, 40)), cache=cache)
    with FlopCounterMode(display=False) as fc:
        model(torch.randint(0, 97, (1, 1)), cache=cache)
    analytic = decode_flops_per_token(spec, count_params(spec), 41)
    unselected = 2 * (41 // 4 - 3) * 4 * 4 * 16  # two CSA layers, 10 entries, top-3
    assert fc.get_total_flops() == analytic + unselected


def test_forward_flops_grow_with_hyper_connections() -> None:
    """The stream mixing adds 2 n^2 h per branch and token; fn's products are in matmul_per_token."""
    base = _spec()
    one = copy.deepcopy(SMALL)
    one["hc_mult"] = 1
    flat = spec_from_hf_config(one, "one.json")
    w = Workload(batch=1, seq=10, attention_flops="causal")
    mix = 2 * 9 * 64 * 8 * 10
    fn = 2 * 10 * (8 * 15 * 192 + 3 * 192)
    assert forward_flops(base, count_params(base), w) - forward_flops(flat, count_params(flat), w) == mix + fn


# --------------------------------------------------------------------------- errors


def _doc(**mixer: Any) -> dict[str, Any]:
    m = {"type": "compressed_attention", "num_heads": 4, "head_dim": 16, "q_lora_rank": 8, "o_groups": 2,
         "o_lora_rank": 8, "rope_head_dim": 8, **mixer}  # fmt: skip
    return {"name": "x", "model": {"vocab_size": 10, "hidden_size": 16, "num_layers": 1}, "mixers": {"a": m}}


@pytest.mark.parametrize(
    ("mixer", "message"),
    [
        ({"compress_rate": 4}, "applies to a compressor"),
        ({"compressor": "hca", "index_topk": 8}, "only csa layers"),
        ({"o_groups": 3}, "does not split into 3 groups"),
        ({"rope_head_dim": 7}, "must be even"),
        ({"compressor": "csa", "index_head_dim": 4}, "index_head_dim"),
        ({"compressor": "x"}, "compressor"),
    ],
)
def test_spec_errors(mixer: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(_doc(**mixer), "x.yaml")


def test_moe_and_model_option_errors() -> None:
    doc = _doc()
    doc["ffns"] = {"f": {"type": "moe", "num_experts": 4, "top_k": 2, "expert_intermediate_size": 8,
                         "hash_routing": True, "score_bias": "buffer"}}  # fmt: skip
    with pytest.raises(SpecError, match="hash_routing"):
        parse_spec(doc, "x.yaml")
    doc["ffns"]["f"] = {**doc["ffns"]["f"], "score_bias": "none", "routing": "topk_softmax"}
    with pytest.raises(SpecError, match="applies to routing"):
        parse_spec(doc, "x.yaml")
    bad = _doc()
    bad["model"] = {**bad["model"], "hc_mult": 2, "parallel_residual": True}
    with pytest.raises(SpecError, match="hc_mult"):
        parse_spec(bad, "x.yaml")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_key_value_heads": 2}, "num_key_value_heads"),
        ({"n_shared_experts": 2}, "n_shared_experts"),
        ({"scoring_func": "softmax"}, "scoring_func"),
        ({"compress_ratios": [0, 4, 64]}, "compress_ratios"),
        ({"mlp_layer_types": ["moe", "dense", "moe", "moe"]}, "mlp_layer_types"),
    ],
)
def test_importer_errors(changes: dict[str, Any], message: str) -> None:
    cfg = {**copy.deepcopy(SMALL), **changes}
    if "compress_ratios" in changes:
        cfg.pop("layer_types")
    with pytest.raises(SpecError, match=message):
        spec_from_hf_config(cfg, "c.json")


def test_importer_defaults_follow_transformers() -> None:
    """Without layer_types, compress_ratios, mlp_layer_types or num_hash_layers: 2 HCA layers then HCA/CSA
    alternating, the first 3 layers hash-routed (DeepseekV4Config.__post_init__)."""
    cfg = {k: v for k, v in SMALL.items() if k not in ("layer_types", "mlp_layer_types", "compress_rates")}
    cfg["num_hidden_layers"] = 5
    spec = spec_from_hf_config(cfg, "d.json")
    assert [spec.mixers[m].compressor for m in spec.layer_mixers] == ["hca", "hca", "hca", "csa", "hca"]
    assert [spec.ffns[f].hash_routing for f in spec.layer_ffns] == [True, True, True, False, False]
    assert spec.mixers["csa"].compress_rate == 4 and spec.mixers["hca"].compress_rate == 128


def test_importer_reads_a_config_transformers_saved() -> None:
    """DeepseekV4Config.to_dict() nests the rotary bases under rope_parameters {main, compress} and keeps
    partial_rotary_factor: the same spec as the config it was made from."""
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "DeepseekV4Config"):
        pytest.skip("this transformers has no DeepSeek-V4")
    saved = transformers.DeepseekV4Config(**{k: v for k, v in SMALL.items() if k != "model_type"}).to_dict()
    spec = spec_from_hf_config(json.loads(json.dumps(saved)), "saved.json")
    assert count_params(spec).total == count_params(_spec()).total
    assert {n: (m.rope_theta, m.rope_head_dim) for n, m in spec.mixers.items()} == {
        "swa": (10000.0, 8), "csa": (160000.0, 8), "hca": (160000.0, 8),
    }  # fmt: skip
