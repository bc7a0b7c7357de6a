"""Invariants over randomly generated valid specs (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from godprof.analytic import Workload, count_params, estimate
from godprof.spec import Spec, parse_spec


@st.composite
def specs(draw) -> Spec:
    """A random valid spec: any mix of attention/MLA/Mamba-1/Mamba-2 mixers and MLP/MoE/no FFN."""
    hidden = draw(st.sampled_from([8, 16, 24, 32]))
    n_layers = draw(st.integers(1, 6))
    mixers = {}
    kinds = draw(
        st.lists(st.sampled_from(["attention", "mla", "mamba1", "mamba2"]), min_size=1, max_size=3, unique=True)
    )
    for k in kinds:
        if k == "attention":
            kv = draw(st.sampled_from([1, 2, 4]))
            mixers["attn"] = {
                "type": "attention",
                "num_heads": kv * draw(st.sampled_from([1, 2])),
                "num_kv_heads": kv,
                "head_dim": draw(st.sampled_from([4, 8])),
                "qkv_bias": draw(st.booleans()),
                "qk_norm": draw(st.booleans()),
                "sliding_window": draw(st.sampled_from([None, 3, 64])),
            }
        elif k == "mla":
            mixers["mla"] = {
                "type": "mla",
                "num_heads": draw(st.integers(1, 3)),
                "q_lora_rank": draw(st.sampled_from([None, 8])),
                "kv_lora_rank": draw(st.sampled_from([4, 6])),
                "qk_nope_head_dim": 4,
                "qk_rope_head_dim": 2,
                "v_head_dim": draw(st.sampled_from([3, 4])),
            }
        elif k == "mamba1":
            mixers["m1"] = {"type": "mamba1", "d_state": draw(st.sampled_from([2, 4])), "expand": 2,
                            "inner_norms": draw(st.booleans())}  # fmt: skip
        else:
            groups, chunk = draw(st.sampled_from([1, 2])), draw(st.sampled_from([2, 8]))
            mixers["m2"] = {"type": "mamba2", "d_state": 4, "expand": 2, "head_dim": 4, "n_groups": groups,
                            "chunk_size": chunk}  # fmt: skip
    ffns = {"none": {"type": "none"}, "mlp": {"type": "mlp", "intermediate_size": draw(st.sampled_from([8, 20]))}}
    e = draw(st.integers(1, 6))
    ffns["moe"] = {
        "type": "moe",
        "num_experts": e,
        "top_k": draw(st.integers(1, e)),
        "expert_intermediate_size": 4,
        "num_shared_experts": draw(st.integers(0, 2)),
    }
    mixer_names, ffn_names = sorted(mixers), sorted(ffns)
    layout = {
        "mixer": draw(st.lists(st.sampled_from(mixer_names), min_size=n_layers, max_size=n_layers)),
        "ffn": draw(st.lists(st.sampled_from(ffn_names), min_size=n_layers, max_size=n_layers)),
    }
    has_attn = any(mixers[m]["type"] in ("attention", "mla") for m in layout["mixer"])
    has_ssm = any(mixers[m]["type"].startswith("mamba") for m in layout["mixer"])
    has_moe = "moe" in layout["ffn"]
    family = "hybrid" if has_attn and has_ssm else "ssm" if has_ssm else "moe" if has_moe else "dense"
    doc = {
        "name": "random",
        "family": family,
        "model": {
            "vocab_size": draw(st.integers(4, 64)),
            "hidden_size": hidden,
            "num_layers": n_layers,
            "tie_embeddings": draw(st.booleans()),
            "norm": draw(st.sampled_from(["rmsnorm", "layernorm"])),
        },
        "mixers": mixers,
        "ffns": ffns,
        "layout": layout,
    }
    return parse_spec(doc, "random.yaml")


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(specs())
def test_active_never_exceeds_total(s):
    c = count_params(s)
    assert 0 < c.active <= c.total
    assert c.total == sum(c.by_component.values())
    assert (c.active < c.total) == any(
        f is not None and f.type == "moe" and f.top_k < f.num_experts for f in (lay.ffn for lay in s.layers())
    )


@FAST
@given(specs(), st.integers(1, 4), st.integers(1, 200), st.integers(1, 200))
def test_memory_monotone_in_batch_and_context(s, batch, ctx_a, ctx_b):
    lo, hi = sorted((ctx_a, ctx_b))
    m = {(b, c): estimate(s, Workload(batch=b, seq=8, context=c)).memory for b in (batch, batch + 1) for c in (lo, hi)}
    for key in ("kv_cache_bytes", "ssm_state_bytes", "total_bytes"):
        assert m[(batch, lo)][key] <= m[(batch, hi)][key]
        assert m[(batch, lo)][key] <= m[(batch + 1, lo)][key]
    # SSM state is constant in context
    assert m[(batch, lo)]["ssm_state_bytes"] == m[(batch, hi)]["ssm_state_bytes"]


@FAST
@given(specs(), st.integers(1, 300))
def test_sliding_window_caps_kv(s, ctx):
    windows = [lay.mixer.sliding_window for lay in s.layers() if getattr(lay.mixer, "sliding_window", None)]
    kv = estimate(s, Workload(seq=4, context=ctx)).memory["kv_cache_bytes"]
    kv_far = estimate(s, Workload(seq=4, context=ctx + 1000)).memory["kv_cache_bytes"]
    if windows and all(lay.mixer.type == "attention" and lay.mixer.sliding_window for lay in s.layers()):
        if ctx >= max(windows):
            assert kv == kv_far  # every layer is full: the cache stops growing
    assert kv <= kv_far


@FAST
@given(specs(), st.integers(1, 3), st.integers(1, 70))
def test_causal_never_exceeds_full_flops(s, batch, seq):
    causal = estimate(s, Workload(batch=batch, seq=seq, attention_flops="causal")).flops
    full = estimate(s, Workload(batch=batch, seq=seq, attention_flops="full")).flops
    assert causal["forward"] <= full["forward"]
    assert causal["train_per_token"] <= full["train_per_token"]
    if seq == 1:
        assert causal["forward"] == full["forward"]
