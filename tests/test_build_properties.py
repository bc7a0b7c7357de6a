"""Property tests: random small valid specs across every mixer and FFN kind and layout.

For each generated spec the built model has exactly ``count_params(spec).total`` parameters, its cache
exactly the analytic bytes, and (on a smaller sample) decoding through the cache reproduces a full
forward. Runs derandomised so CI sees the same examples every time.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from godprof.analytic import count_params
from godprof.analytic.memory import kv_cache_bytes, ssm_state_bytes
from godprof.build import build_model
from godprof.dtypes import get_dtype
from godprof.spec import parse_spec

ACTS = ["silu", "gelu", "gelu_tanh", "relu"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread


@st.composite
def attention(draw) -> dict:
    kv = draw(st.sampled_from([1, 2]))
    head_dim = draw(st.sampled_from([2, 4, 6, 8]))
    d = {
        "type": "attention",
        "num_heads": kv * draw(st.integers(1, 3)),
        "num_kv_heads": kv,
        "head_dim": head_dim,
        "qkv_bias": draw(st.booleans()),
        "o_bias": draw(st.booleans()),
        "rope": draw(st.booleans()),
        "qk_norm": draw(st.booleans()),
        "rope_theta": draw(st.sampled_from([10000.0, 500000.0])),
    }
    if draw(st.booleans()):
        d["rotary_dim"] = draw(st.sampled_from([r for r in (2, 4, 6, 8) if r <= head_dim]))
    if draw(st.booleans()):
        d["sliding_window"] = draw(st.integers(1, 6))
    return d


@st.composite
def mla(draw) -> dict:
    d = {
        "type": "mla",
        "num_heads": draw(st.integers(1, 3)),
        "kv_lora_rank": draw(st.integers(2, 8)),
        "qk_nope_head_dim": draw(st.integers(1, 6)),
        "qk_rope_head_dim": draw(st.sampled_from([2, 4])),
        "v_head_dim": draw(st.integers(1, 6)),
        "bias": draw(st.booleans()),
    }
    if draw(st.booleans()):
        d["q_lora_rank"] = draw(st.integers(2, 12))
    return d


@st.composite
def mamba1(draw) -> dict:
    return {
        "type": "mamba1",
        "d_inner": draw(st.integers(2, 24)),
        "d_state": draw(st.integers(1, 8)),
        "d_conv": draw(st.integers(1, 4)),
        "dt_rank": draw(st.one_of(st.just("auto"), st.integers(1, 6))),
        "conv_bias": draw(st.booleans()),
        "proj_bias": draw(st.booleans()),
        "inner_norms": draw(st.booleans()),
    }


@st.composite
def mamba2(draw) -> dict:
    groups = draw(st.sampled_from([1, 2]))
    head_dim = draw(st.sampled_from([2, 4]))
    heads = groups * draw(st.integers(1, 3))
    return {
        "type": "mamba2",
        "d_inner": heads * head_dim,
        "head_dim": head_dim,
        "n_groups": groups,
        "d_state": draw(st.integers(1, 8)),
        "d_conv": draw(st.integers(1, 4)),
        "chunk_size": draw(st.integers(1, 8)),
        "gated_norm": draw(st.booleans()),
        "conv_bias": draw(st.booleans()),
        "proj_bias": draw(st.booleans()),
    }


@st.composite
def ffn(draw) -> dict:
    kind = draw(st.sampled_from(["mlp", "moe", "none"]))
    if kind == "none":
        return {"type": "none"}
    if kind == "mlp":
        return {
            "type": "mlp",
            "intermediate_size": draw(st.integers(1, 24)),
            "gated": draw(st.booleans()),
            "activation": draw(st.sampled_from(ACTS)),
            "bias": draw(st.booleans()),
        }
    n = draw(st.integers(1, 6))
    shared = draw(st.integers(0, 2))
    d = {
        "type": "moe",
        "num_experts": n,
        "top_k": draw(st.integers(1, n)),
        "expert_intermediate_size": draw(st.integers(1, 12)),
        "gated": draw(st.booleans()),
        "activation": draw(st.sampled_from(ACTS)),
        "expert_bias": draw(st.booleans()),
        "router_bias": draw(st.booleans()),
        "num_shared_experts": shared,
    }
    if shared:
        d["shared_intermediate_size"] = draw(st.integers(1, 12))
        d["shared_expert_gate"] = draw(st.booleans())
    return d


@st.composite
def spec_docs(draw) -> dict:
    """A valid spec document: 1-3 mixers, 1-2 FFNs, an explicit per-layer layout, random model options."""
    n_layers = draw(st.integers(1, 4))
    hidden = draw(st.sampled_from([8, 12, 16]))
    norm = draw(st.sampled_from(["rmsnorm", "layernorm"]))
    model = {
        "vocab_size": draw(st.integers(8, 40)),
        "hidden_size": hidden,
        "num_layers": n_layers,
        "norm": norm,
        "norm_bias": draw(st.booleans()),
        "tie_embeddings": draw(st.booleans()),
        "final_norm": draw(st.booleans()),
        "parallel_residual": draw(st.booleans()),
        "parallel_shared_norm": draw(st.booleans()),
        "sandwich_norm": draw(st.booleans()),
        "lm_head_bias": draw(st.booleans()),
        "embedding_multiplier": draw(st.sampled_from([1.0, 2.0])),
    }
    if draw(st.booleans()):
        model["position_embedding"] = "learned"
        model["max_position_embeddings"] = draw(st.integers(16, 32))
    mixer_list = draw(st.lists(st.one_of(attention(), mla(), mamba1(), mamba2()), min_size=1, max_size=3))
    mixers = {f"m{i}": m for i, m in enumerate(mixer_list)}
    ffn_list = draw(st.lists(ffn(), min_size=1, max_size=2))
    ffns = {f"f{i}": f for i, f in enumerate(ffn_list)}
    layer_m = [draw(st.sampled_from(sorted(mixers))) for _ in range(n_layers)]
    layer_f = [draw(st.sampled_from(sorted(ffns))) for _ in range(n_layers)]
    used_m = [mixers[k]["type"] for k in set(layer_m)]
    attn = any(t in ("attention", "mla") for t in used_m)
    ssm = any(t in ("mamba1", "mamba2") for t in used_m)
    moe = any(ffns[k]["type"] == "moe" for k in set(layer_f))
    family = "hybrid" if attn and ssm else "ssm" if ssm else "moe" if moe else "dense"
    return {
        "name": "random",
        "family": family,
        "model": model,
        "mixers": mixers,
        "ffns": ffns,
        "layout": {"mixer": layer_m, "ffn": layer_f},
    }


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(spec_docs(), st.integers(1, 3), st.integers(1, 20), st.sampled_from(["fp32", "bf16", "fp16"]))
def test_random_spec_params_and_cache_bytes_exact(doc: dict, batch: int, max_len: int, dtype: str) -> None:
    spec = parse_spec(doc, "random")
    model = build_model(spec, "meta")
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).total
    tdt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    cache = model.allocate_cache(batch, max_len, dtype=tdt)
    dt = get_dtype(dtype)
    assert cache.nbytes() == kv_cache_bytes(spec, batch, max_len, dt) + ssm_state_bytes(spec, batch, dt)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(spec_docs(), st.integers(1, 9))
@torch.no_grad()
def test_random_spec_decode_matches_forward(doc: dict, prefill: int) -> None:
    """Prefill ``prefill`` tokens, decode the rest of 10 one by one: the logits of a full forward."""
    spec = parse_spec(doc, "random")
    model = build_model(spec, "cpu", torch.float32, init_std=0.3, seed=3)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, spec.model.vocab_size, (2, 10), generator=g)
    full = model(ids)
    assert full.shape == (2, 10, spec.model.vocab_size) and torch.isfinite(full).all()
    cache = model.allocate_cache(2, 10)
    steps = [model(ids[:, :prefill], cache=cache)]
    steps += [model(ids[:, t : t + 1], cache=cache) for t in range(prefill, 10)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)


def test_generator_covers_every_kind() -> None:
    """The strategy reaches every mixer type, FFN type and family (guards against a silently narrow test)."""
    seen: set[str] = set()

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(spec_docs())
    def collect(doc: dict) -> None:
        seen.update(m["type"] for m in doc["mixers"].values())
        seen.update(f["type"] for f in doc["ffns"].values())
        seen.add(f"family:{doc['family']}")

    collect()
    expected = {"attention", "mla", "mamba1", "mamba2", "mlp", "moe", "none"}
    expected |= {f"family:{f}" for f in ("dense", "moe", "ssm", "hybrid")}
    missing = expected - seen
    if missing:
        pytest.fail(f"strategy never produced: {sorted(missing)}")
