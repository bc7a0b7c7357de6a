"""DeepSeek Sparse Attention (``type: dsa``): the analytic kind against its build, transformers and DeepSeek's
published figures.

- exact parameters and cache bytes of the build (MLA latent + rope key + the indexer's key per token);
- cached decode and chunked prefill equal a full forward, with prompts shorter and longer than index_topk;
- FlopCounterMode (and fvcore) over the build equal the analytic matmul FLOPs, prefill and decode;
- logits equal transformers' DeepseekV32ForCausalLM (its eager and SDPA paths fold the indexer's top-k
  into the attention mask on CPU; ours gathers the selected keys), full forward and cached decode;
- decode FLOPs past index_topk grow by the indexer's cost per key only, MLA's by the full attention;
- the prefill activation model equals the live-tensor peak of the build on CPU;
- the deepseek_v32 importer against transformers on the meta device, and the bundled spec.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from kind_checks import hf_name

import godprof.kinds.dsa as dsa_kind
from godprof.analytic import Workload, count_params
from godprof.analytic.flops import decode_flops_per_token, forward_flops
from godprof.analytic.memory import inference_activation_bytes, kv_cache_bytes
from godprof.build import build_model
from godprof.dtypes import get_dtype
from godprof.errors import SpecError
from godprof.hf import spec_from_config_file, spec_from_hf_config
from godprof.kinds.dsa import DSA
from godprof.kinds.mla import MLA
from godprof.measure.flops import compare_flops
from godprof.measure.memory import LiveTensorBytes, fused_attention
from godprof.spec import load_spec, parse_spec

FIXTURE = Path(__file__).parent / "fixtures" / "hf" / "deepseek-v3.2.json"
TOPK = 8


def _spec(topk: int = TOPK, v_head_dim: int = 6, bias: bool = False):
    """A tiny DSA model: 2 layers of MLA (4 heads, q rank 24, latent 16 + rope 4, v 6) with an indexer of
    16 heads of 8 keeping the top ``topk`` keys, SwiGLU 40. Sixteen index heads, not four: a key whose
    every head's score the relu clips to 0 scores exactly 0, and such ties at the top-k boundary are
    broken by torch.topk's order, which differs between a prefill and a decode step (1 key in 16 with 4
    heads; 1 in 65,536 with 16)."""
    text = f"""
name: tiny-dsa
family: dense
model: {{vocab_size: 97, hidden_size: 32, num_layers: 2}}
mixers:
  dsa: {{type: dsa, num_heads: 4, q_lora_rank: 24, kv_lora_rank: 16, qk_nope_head_dim: 8, qk_rope_head_dim: 4,
        v_head_dim: {v_head_dim}, bias: {str(bias).lower()}, index_n_heads: 16, index_head_dim: 8, index_topk: {topk}}}
ffns: {{mlp: {{type: mlp, intermediate_size: 40}}}}
"""
    return parse_spec(yaml.safe_load(text), "inline")


def _ids(spec, batch: int, seq: int, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, spec.model.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed))


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread


# --------------------------------------------------------------------------- parameters and cache


def test_params_by_hand_and_built() -> None:
    """Per layer: MLA q_a 32x24 + norm 24 + q_b 24x48 + kv_a 32x20 + norm 16 + kv_b 16x56 + o 24x32 = 4,264;
    indexer wq_b 24x128 = 3,072, wk 32x8 = 256, k_norm weight + bias 16, weights_proj 32x16 = 512 -> 3,856;
    SwiGLU 3 x 32 x 40 = 3,840 and two block norms 64 -> 12,024; x 2 + embedding and head 2 x 97 x 32
    + final norm 32 = 30,288."""
    spec = _spec()
    c = count_params(spec)
    assert c.total == 30_288
    assert c.by_component["norms"] == 2 * (24 + 16 + 16 + 64) + 32
    model = build_model(spec, "meta")
    assert sum(p.numel() for p in model.parameters()) == c.total
    indexer = dict(model.layers[0].mixer.indexer.named_parameters())
    assert {n: tuple(p.shape) for n, p in indexer.items()} == {
        "wq_b.weight": (128, 24), "wk.weight": (8, 32), "k_norm.weight": (8,), "k_norm.bias": (8,),
        "weights_proj.weight": (16, 32),
    }  # fmt: skip
    assert not list(model.buffers())  # the index key cache lives in the preallocated cache, not in buffers


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_cache_bytes_equal_analytic(dtype: str) -> None:
    spec = _spec()
    assert spec.mixers["dsa"].kv_elements_per_token() == 16 + 4 + 8
    model = build_model(spec, "cpu", torch.float32)
    cache = model.allocate_cache(3, 50, dtype)
    assert (
        cache.nbytes() == kv_cache_bytes(spec, 3, 50, get_dtype(dtype)) == 2 * 3 * 50 * 28 * get_dtype(dtype).bits // 8
    )
    assert [tuple(t.shape) for t in cache.layers[0]] == [(3, 50, 20), (3, 50, 8)]


def test_deepseek_v32_cache_per_token() -> None:
    """61 layers x (512 latent + 64 rope + 128 index key) x 2 bytes = 85,888 bytes per token (DeepSeek-V3:
    61 x 576 x 2 = 70,272)."""
    spec = load_spec("deepseek-v3.2-exp")
    assert kv_cache_bytes(spec, 1, 1, get_dtype("bf16")) == 61 * 704 * 2 == 85_888
    assert kv_cache_bytes(load_spec("deepseek-v3"), 1, 1, get_dtype("bf16")) == 70_272


# --------------------------------------------------------------------------- cached decode and prefill


@pytest.mark.parametrize("prompt", [3, 8, 20])
@torch.no_grad()
def test_cached_decode_equals_full_forward(prompt: int) -> None:
    """Prompts shorter than, equal to and longer than index_topk (8), then decode steps past it."""
    spec = _spec()
    model = build_model(spec, "cpu", torch.float32, init_std=0.15, seed=2)
    ids = _ids(spec, 2, prompt + 12)
    full = model(ids)
    cache = model.allocate_cache(2, ids.shape[1])
    steps = [model(ids[:, :prompt], cache=cache)]
    steps += [model(ids[:, i : i + 1], cache=cache) for i in range(prompt, ids.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_chunked_prefill_equals_one_prefill() -> None:
    """Chunks of 5, 6 and 9 tokens: keys from below index_topk to past it, read back from the cache."""
    spec = _spec()
    model = build_model(spec, "cpu", torch.float32, init_std=0.15, seed=2)
    ids = _ids(spec, 2, 20)
    full = model(ids)
    cache = model.allocate_cache(2, 20)
    chunks = [model(ids[:, a:b], cache=cache) for a, b in ((0, 5), (5, 11), (11, 20))]
    torch.testing.assert_close(torch.cat(chunks, 1), full, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_top_k_changes_the_output_and_blocks_do_not(monkeypatch) -> None:
    """Past index_topk the selection matters (the same weights with a large top-k, i.e. dense MLA, give
    other logits); below it DSA is dense MLA. Scoring the queries in blocks changes nothing."""
    ids = _ids(_spec(), 2, 24)
    sparse = build_model(_spec(), "cpu", torch.float32, init_std=0.15, seed=2)
    dense = build_model(_spec(topk=64), "cpu", torch.float32, init_std=0.15, seed=2)
    assert (sparse(ids) - dense(ids)).abs().max() > 1e-2
    torch.testing.assert_close(sparse(ids[:, :TOPK]), dense(ids[:, :TOPK]), atol=1e-5, rtol=1e-5)
    whole = sparse(ids)
    monkeypatch.setattr(dsa_kind, "QUERY_BLOCK_ELEMENTS", 4096)
    # a row: 2 x max(16 index heads x 24 keys, 4 heads x 8 kept x 18) = 1,152 elements -> blocks of 3
    assert sparse.layers[0].mixer.a.query_block(2, 24, 24) == 3
    torch.testing.assert_close(sparse(ids), whole, atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------- FLOPs


def test_attention_flops_by_hand() -> None:
    """B = 2, seq 24, top-k 8, 4 heads (qk 12, v 6), indexer 16 heads of 8 (2 x 16 x 9 = 288 per pair).
    full: main 2 x 2 x 4 x (24 x 8) x 18 = 55,296; indexer 2 x 24 x 24 x 288 = 331,776.
    causal: main pairs sum_i min(i, 8) = 36 + 16 x 8 = 164 -> 47,232; indexer 2 x 300 pairs -> 172,800.
    decode at 30: main 2 x 4 x 8 x (32 + 4) = 2,304 in the latent space; indexer 30 x 288 = 8,640."""
    a = _spec().mixers["dsa"]
    assert a.attention_flops(2, 24, "full") == 55_296 + 331_776
    assert a.attention_flops(2, 24, "causal") == 47_232 + 172_800
    assert a.decode_attention_flops(30) == 2_304 + 8_640
    assert a.decode_read_elements(30) == 30 * 8 + 8 * 20


@pytest.mark.parametrize("seq", [5, TOPK, 24])
@pytest.mark.parametrize("blocks", [False, True])
def test_counters_equal_analytic(seq: int, blocks: bool, monkeypatch) -> None:
    """FlopCounterMode and fvcore over one forward equal the analytic matmul FLOPs (attention "full":
    the dense SDPA over seq x seq while seq <= top-k, then top-k gathered keys per query, and the indexer
    over seq x seq), by component too; also when the queries are scored in blocks."""
    if blocks:
        monkeypatch.setattr(dsa_kind, "QUERY_BLOCK_ELEMENTS", 1024)
    spec = _spec()
    model = build_model(spec, "cpu", torch.float32)
    c = compare_flops(model, spec, 2, seq, last_only=True)
    for counter in c.counters:
        assert counter.available, counter.reason
        assert counter.matmul == c.analytic_matmul, counter.counter
    torch_c = c.counters[0]
    assert torch_c.by_category["other"] == 0
    assert torch_c.by_component == c.analytic_components


@pytest.mark.parametrize("prompt", [5, 20])
@torch.no_grad()
def test_counted_decode_flops_equal_analytic(prompt: int) -> None:
    """One decode step: the Linear weights (kv_b_proj absorbed: same multiply-adds), the indexer over every
    cached key and the latent attention over min(context, top-k) of them."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = _spec()
    model = build_model(spec, "cpu", torch.float32)
    counts = count_params(spec)
    ids = _ids(spec, 2, prompt + 1)
    cache = model.allocate_cache(2, prompt + 1)
    model(ids[:, :prompt], cache=cache)
    fc = FlopCounterMode(display=False)
    with fc:
        model(ids[:, prompt:], cache=cache)
    assert fc.get_total_flops() == 2 * decode_flops_per_token(spec, counts, prompt + 1)
    prefill = FlopCounterMode(display=False)
    with prefill:
        model(ids)
    w = Workload(batch=2, seq=prompt + 1, attention_flops="full")
    assert prefill.get_total_flops() == forward_flops(spec, counts, w)


mla_shapes = st.fixed_dictionaries({
    "num_heads": st.integers(1, 128), "kv_lora_rank": st.integers(1, 512), "qk_nope_head_dim": st.integers(1, 128),
    "qk_rope_head_dim": st.sampled_from([2, 32, 64]), "v_head_dim": st.integers(1, 128),
    "q_lora_rank": st.integers(1, 1536),
})  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    mla=mla_shapes,
    index_heads=st.integers(1, 64),
    index_dim=st.integers(64, 256),
    topk=st.integers(1, 4096),
    context=st.integers(1, 1 << 20),
)
def test_decode_flops_linear_past_topk(mla: dict, index_heads: int, index_dim: int, topk: int, context: int) -> None:
    """Each key past index_topk adds only the indexer's 2 x heads x (dim + 1) to DSA's decode step; below
    it, the latent attention's 2 x heads x (2 x rank + rope) as well, which MLA adds for every key."""
    m = MLA(**mla)
    d = DSA(**mla, index_n_heads=index_heads, index_head_dim=index_dim, index_topk=topk)
    step = d.decode_attention_flops(context + 1) - d.decode_attention_flops(context)
    index = 2 * index_heads * (index_dim + 1)
    latent = 2 * m.num_heads * (2 * m.kv_lora_rank + m.qk_rope_head_dim)
    assert step == (index if context >= topk else index + latent)
    assert m.decode_attention_flops(context + 1) - m.decode_attention_flops(context) == latent
    # prefill: past top-k the main attention adds a constant per token (second difference 0); the
    # indexer's seq^2 / 2 pairs leave a second difference of one pair; MLA's is one full pair
    if context > topk:
        second = d.attention_flops(1, context + 1, "causal") - 2 * d.attention_flops(1, context, "causal")
        second += d.attention_flops(1, context - 1, "causal")
        assert second == index
        mla2 = m.attention_flops(1, context + 1, "causal") - 2 * m.attention_flops(1, context, "causal")
        mla2 += m.attention_flops(1, context - 1, "causal")
        assert mla2 == 2 * m.num_heads * (m.qk_head_dim + m.v_head_dim)


def test_deepseek_v32_decode_flops_slope() -> None:
    """Past 2,048 tokens a DeepSeek-V3.2 decode step grows by 61 x 2 x 64 x 129 = 1,007,232 FLOPs per
    token of context (the indexer), DeepSeek-V3's by 61 x 2 x 128 x 1,088 = 16,990,208."""
    v3, v32 = load_spec("deepseek-v3"), load_spec("deepseek-v3.2-exp")
    c3, c32 = count_params(v3), count_params(v32)
    for ctx in (4096, 131_072, 1 << 20):
        assert decode_flops_per_token(v32, c32, ctx + 1) - decode_flops_per_token(v32, c32, ctx) == 1_007_232
        assert decode_flops_per_token(v3, c3, ctx + 1) - decode_flops_per_token(v3, c3, ctx) == 16_990_208
    # below the top-k both attend to every key: V3.2 adds the indexer on top of V3's latent attention
    assert decode_flops_per_token(v32, c32, 1001) - decode_flops_per_token(v32, c32, 1000) == 16_990_208 + 1_007_232


# --------------------------------------------------------------------------- transformers


_RULES = (("mixer_norm.", "input_layernorm."), ("ffn_norm.", "post_attention_layernorm."),
                         ("mixer.", "self_attn."), ("ffn.", "mlp."))  # fmt: skip


def _hf_name(name: str) -> str:
    return hf_name(name, _RULES)


def _hf_model(attn: str):
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "DeepseekV32ForCausalLM"):
        pytest.skip("this transformers has no DeepSeek-V3.2")
    cfg = transformers.DeepseekV32Config(
        vocab_size=97, hidden_size=32, intermediate_size=40, moe_intermediate_size=8, num_hidden_layers=2,
        first_k_dense_replace=2, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=24, kv_lora_rank=16,
        qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6, attention_bias=True, rms_norm_eps=1e-5,
        index_n_heads=16, index_head_dim=8, index_topk=TOPK, n_routed_experts=4, num_experts_per_tok=2, n_group=1,
        topk_group=1, tie_word_embeddings=False, attn_implementation=attn,
    )  # fmt: skip
    return transformers.DeepseekV32ForCausalLM(cfg).eval()


@torch.no_grad()
def _copy_into(ours: torch.nn.Module, theirs: torch.nn.Module, a: DSA) -> None:
    """Our weights into transformers' by name. Its MLA rotates the rope features in interleaved pairs
    (x0, x1), (x2, x3)... where ours (and its indexer) pair feature i with i + rope/2: the rope rows of
    q_b_proj and kv_a_proj_with_mqa are permuted so both compute the same dot products."""
    half = a.qk_rope_head_dim // 2
    perm = torch.tensor([j for i in range(half) for j in (i, half + i)])
    theirs_params = dict(theirs.named_parameters())
    mapped = {_hf_name(n): p for n, p in ours.named_parameters()}
    assert set(mapped) == set(theirs_params), set(mapped) ^ set(theirs_params)
    for n, p in mapped.items():
        t = p.detach().clone()
        if n.endswith("q_b_proj.weight"):
            t = t.view(a.num_heads, a.qk_head_dim, -1)
            t[:, a.qk_nope_head_dim :] = t[:, a.qk_nope_head_dim :][:, perm]
            t = t.reshape(p.shape)
        elif "kv_a_proj_with_mqa" in n:
            t[a.kv_lora_rank :] = t[a.kv_lora_rank :][perm]
        assert theirs_params[n].shape == t.shape, n
        theirs_params[n].copy_(t)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@torch.no_grad()
def test_logits_equal_transformers(attn: str) -> None:
    """transformers' DeepseekV32ForCausalLM on CPU (eager and SDPA: the indexer's top-k becomes a mask on
    the dense scores) against our gathered top-k: full forwards shorter and longer than index_topk, and a
    cached decode past it (transformers' own indexer key cache)."""
    spec = _spec(bias=True)
    a = spec.mixers["dsa"]
    ours = build_model(spec, "cpu", torch.float32, init_std=0.15, seed=2)
    for mod in ours.modules():  # LayerNorm weight 1 and bias 0 would not test the mapping of k_norm
        if isinstance(mod, torch.nn.LayerNorm):
            mod.weight.normal_(1.0, 0.2)
            mod.bias.normal_(0.0, 0.2)
    hf = _hf_model(attn)
    _copy_into(ours, hf, a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seq in (6, 24, 40):
            ids = _ids(spec, 2, seq)
            ref = hf(input_ids=ids, use_cache=False).logits
            got = ours(ids)
            assert got.abs().max() > 0.5
            torch.testing.assert_close(got, ref, atol=2e-4, rtol=2e-4)
        ids = _ids(spec, 2, 30, seed=5)
        out = hf(input_ids=ids[:, :20], use_cache=True)
        steps, cache_hf = [out.logits], out.cache
        for i in range(20, 30):
            step = hf(input_ids=ids[:, i : i + 1], cache=cache_hf, use_cache=True)
            steps.append(step.logits)
    cache = ours.allocate_cache(2, 30)
    got = [ours(ids[:, :20], cache=cache)] + [ours(ids[:, i : i + 1], cache=cache) for i in range(20, 30)]
    torch.testing.assert_close(torch.cat(got, 1), torch.cat(steps, 1), atol=2e-4, rtol=2e-4)


# --------------------------------------------------------------------------- activation model


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize(("topk", "v_head_dim", "budget"), [(256, 6, None), (256, 12, 4096), (16, 6, None),
                                                           (16, 12, None), (16, 6, 4096)])  # fmt: skip
@torch.no_grad()
def test_prefill_peak_equals_measured(topk: int, v_head_dim: int, budget: int | None, dtype: str, monkeypatch) -> None:
    """The analytic prefill peak against the live-tensor peak of the build on CPU (as in
    test_activation_fidelity): dense (seq <= top-k: masked SDPA, math kernel or CPU flash when v = qk) and
    sparse (gathered top-k), one block or many. Within 2%; every case agrees to the byte today."""
    if budget is not None:
        monkeypatch.setattr(dsa_kind, "QUERY_BLOCK_ELEMENTS", budget)
    spec = _spec(topk=topk, v_head_dim=v_head_dim)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    for batch, seq in ((1, 64), (3, 37)):
        model = build_model(spec, "cpu", torch_dtype)
        cache = model.allocate_cache(batch, seq + 4)
        ids = _ids(spec, batch, seq, seed=0)
        with LiveTensorBytes() as live:
            logits = model(ids, cache=cache, last_only=True)
            logits[:, -1].float().argmax(-1)
        w = Workload(batch=batch, seq=seq, context=seq + 4, dtype=dtype, logits="last",
                     flash_attention=fused_attention(spec, "cpu"))  # fmt: skip
        estimated = inference_activation_bytes(spec, w)
        assert abs(estimated - live.peak_bytes) <= 0.02 * live.peak_bytes, (batch, seq, estimated, live.peak_bytes)


# --------------------------------------------------------------------------- spec, importer, bundled spec


def test_spec_errors() -> None:
    base = {"type": "dsa", "num_heads": 4, "q_lora_rank": 24, "kv_lora_rank": 16, "qk_nope_head_dim": 8,
            "qk_rope_head_dim": 4, "v_head_dim": 6, "index_n_heads": 4, "index_head_dim": 8,
            "index_topk": 8}  # fmt: skip

    def doc(**changes: Any) -> dict:
        m = {**base, **changes}
        return {"name": "t", "family": "dense", "model": {"vocab_size": 97, "hidden_size": 32, "num_layers": 1},
                "mixers": {"dsa": {k: v for k, v in m.items() if v != "drop"}},
                "ffns": {"mlp": {"type": "mlp", "intermediate_size": 40}}}  # fmt: skip

    parse_spec(doc(), "t")
    for changes, message in (
        ({"q_lora_rank": None}, "q_lora_rank"),
        ({"index_topk": "drop"}, "missing required key 'index_topk'"),
        ({"index_head_dim": 2}, "index_head_dim"),
        ({"index_heads": 4}, "unknown key 'index_heads'"),
    ):
        with pytest.raises(SpecError, match=message):
            parse_spec(doc(**changes), "t")


def _hf_counts(cfg: dict[str, Any]) -> tuple[int, int]:
    """transformers' parameters (total, active) on the meta device."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_cfg = AutoConfig.for_model(**{k: v for k, v in cfg.items() if not k.startswith("_")})
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_cfg)
    total = sum(p.numel() for p in model.parameters())
    experts = [m for m in model.modules() if type(m).__name__.endswith("Experts")]
    inactive = 0
    for m in experts:
        inactive += (
            sum(p.numel() for p in m.parameters()) // m.num_experts * (m.num_experts - hf_cfg.num_experts_per_tok)
        )
    return total, total - inactive


def test_published_config_counts() -> None:
    """DeepSeek-V3.2's config.json: 671,877,929,216 parameters (DeepSeek-V3's 671,026,404,352 + 61 indexers
    of 13,959,424), 38,403,807,488 active; transformers gives the same (tests/test_hf_transformers.py)."""
    spec = spec_from_config_file(FIXTURE)
    c = count_params(spec)
    assert (c.total, c.active) == (671_877_929_216, 38_403_807_488)
    indexer = 1536 * 64 * 128 + 7168 * 128 + 2 * 128 + 7168 * 64
    assert indexer == 13_959_424 and c.total == 671_026_404_352 + 61 * indexer
    bundled = count_params(load_spec("deepseek-v3.2-exp"))  # V3.2-Exp's config has the same architecture
    assert (bundled.total, bundled.active, bundled.matmul_per_token) == (c.total, c.active, c.matmul_per_token)
    # with the MTP module (one more DSA + MoE block, its own embedding and head): the hub's "685B"
    assert count_params(load_spec("deepseek-v3.2-exp"), include_mtp=True).total == 685_355_314_688


def _variant(**changes: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(json.loads(FIXTURE.read_text(encoding="utf-8")))
    cfg.update(hidden_size=256, intermediate_size=512, vocab_size=1000, num_attention_heads=8, num_key_value_heads=8,
               num_hidden_layers=4, q_lora_rank=64, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16,
               v_head_dim=16, n_routed_experts=8, n_group=2, topk_group=1, num_experts_per_tok=2,
               moe_intermediate_size=32, index_n_heads=4, index_head_dim=32, index_topk=64)  # fmt: skip
    cfg.update(changes)
    return cfg


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"attention_bias": True, "n_shared_experts": 2, "first_k_dense_replace": 1},
        {"mlp_layer_types": ["sparse", "dense", "sparse", "dense"], "first_k_dense_replace": 3},
        {"num_experts": 4, "index_n_heads": 16, "index_head_dim": 16},
        {"moe_layer_freq": 2},  # neither transformers nor DeepSeek's V3.2 code reads it
    ],
    ids=["small", "bias-shared", "layer-types", "num-experts-alias", "moe-layer-freq"],
)
def test_importer_matches_transformers(changes: dict[str, Any]) -> None:
    pytest.importorskip("transformers")
    cfg = _variant(**changes)
    c = count_params(spec_from_hf_config(cfg, "variant"))
    assert (c.total, c.active) == _hf_counts(cfg)


def test_importer_defaults_and_errors() -> None:
    cfg = {k: v for k, v in _variant().items() if not k.startswith("index_")}
    spec = spec_from_hf_config(cfg, "defaults")
    a = spec.mixers["dsa"]
    assert (a.index_n_heads, a.index_head_dim, a.index_topk) == (64, 128, 2048)  # transformers' defaults
    with pytest.raises(SpecError, match="q_lora_rank"):
        spec_from_hf_config(_variant(q_lora_rank=None), "null-q-rank")
    with pytest.raises(SpecError, match="mlp_layer_types"):
        spec_from_hf_config(_variant(mlp_layer_types=["dense"]), "short-types")
