"""The ``type: parallel`` composite mixer and the falcon_h1 importer, against the analytic figures and
transformers' ``FalconH1ForCausalLM``.

Falcon-H1 runs attention and Mamba-2 side by side on one normed input in every layer and adds their
outputs, each scaled by its multipliers. The tests pin the build's parameters and cache bytes to the
analytic figures, cached decode to a full forward, torch's FlopCounterMode to the analytic FLOPs, the
importer's counts to transformers' meta-device model, and the logits to transformers' CPU forward.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
import torch
from kind_checks import hf_model, prefill_peaks, token_ids

from godprof.analytic import count_params
from godprof.analytic.memory import kv_cache_bytes, kv_read_bytes, ssm_state_bytes
from godprof.build import build_model
from godprof.dtypes import get_dtype
from godprof.errors import SpecError
from godprof.kinds import MIXER_KINDS
from godprof.kinds.parallel import Parallel
from godprof.spec import parse_spec_text

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """``parallel`` in the mixer registry (a no-op once ``godprof.kinds`` registers it itself)."""
    monkeypatch.setitem(MIXER_KINDS, "parallel", Parallel)


# Tiny Falcon-H1: GQA attention with rotary, a 2-group Mamba-2 with the grouped gated norm, and every
# multiplier the build models away from 1. ssm_multipliers / mlp_multipliers (no parameters, not built) stay 1
# here; mamba_norm_before_gate false is the order godprof's gated norm uses.
TINY: dict[str, Any] = {
    "model_type": "falcon_h1", "vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 48,
    "mamba_d_ssm": 64, "mamba_n_heads": 8, "mamba_d_head": 8, "mamba_d_state": 8, "mamba_n_groups": 2,
    "mamba_d_conv": 4, "mamba_chunk_size": 4, "mamba_rms_norm": True, "mamba_norm_before_gate": False,
    "rope_theta": 1000.0, "key_multiplier": 0.7, "attention_in_multiplier": 1.5, "attention_out_multiplier": 0.8,
    "ssm_in_multiplier": 0.9, "ssm_out_multiplier": 1.25, "embedding_multiplier": 2.0, "lm_head_multiplier": 0.5,
    "tie_word_embeddings": False,
}  # fmt: skip

SPEC = """
name: two-attn
family: hybrid
model: {vocab_size: 61, hidden_size: 32, num_layers: 2}
mixers:
  mix:
    type: parallel
    of:
      - {type: attention, num_heads: 4, num_kv_heads: 2, head_dim: 8, rope_theta: 500}
      - {type: attention, num_heads: 2, num_kv_heads: 1, head_dim: 8, rope_theta: 500, sliding_window: 4}
      - {type: mamba2, d_inner: 64, head_dim: 16, d_state: 8, n_groups: 2, chunk_size: 4}
    in_multipliers: [1.0, 0.5, 2.0]
    out_multipliers: [0.5, 1.0, 1.5]
ffns:
  mlp: {type: mlp, intermediate_size: 40}
"""


def _spec_from(cfg: dict[str, Any]) -> Any:
    from godprof.hf import spec_from_hf_config

    return spec_from_hf_config(cfg, "tiny-falcon-h1")


def _specs() -> list[Any]:
    return [_spec_from(TINY), parse_spec_text(SPEC, "two-attn.yaml")]


# --------------------------------------------------------------------------- the kind


def test_parallel_sums_its_children() -> None:
    spec = parse_spec_text(SPEC, "two-attn.yaml")
    mix = spec.mixers["mix"]
    a, w, m = mix.children
    assert mix.label == "attn|attn|mamba2" and spec.has_attention and spec.has_ssm and not spec.has_linear
    assert mix.categories == {"attention", "ssm"} and mix.category == "attention+ssm"
    h = 32
    p = mix.params(h)
    assert p.total == sum(ch.params(h).total for ch in mix.children)
    assert p.by_component["attention"] == a.params(h).total + w.params(h).total
    assert p.by_component["ssm"] + p.by_component["norms"] == m.params(h).total
    assert mix.kv_elements_per_token() == a.kv_elements_per_token() + w.kv_elements_per_token()
    assert mix.state_elements() == m.state_elements()
    for ctx in (3, 4, 100):
        exact = a.kv_elements_per_token() * ctx + w.kv_elements_per_token() * min(ctx, 4)
        assert mix.kv_cache_elements(ctx) == exact
        assert mix.decode_read_elements(ctx) == exact
        # the one-number interface rounds up by less than one token of the summed per-token size
        assert 0 <= mix.kv_elements_per_token() * mix.cached_tokens(ctx) - exact < mix.kv_elements_per_token()
    assert mix.attention_flops(2, 9, "full") == a.attention_flops(2, 9, "full") + w.attention_flops(2, 9, "full")
    assert mix.scan_flops(2, 9) == m.scan_flops(2, 9) and mix.conv_flops_per_token() == m.conv_flops_per_token()
    assert mix.rope_table() == (8, 500.0)
    assert mix.tp_problem(2) is None and "SSM heads" in (mix.tp_problem(8) or "")
    assert mix.kv_tp_fraction(2) == pytest.approx(0.5 * 32 / 48 + 1.0 * 16 / 48)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("of: [{type: attention, num_heads: 4}]", "two or more"),
        ("of: [{type: attention, num_heads: 4}, {type: none}]", "cannot hold a 'none'"),
        ("of: [{type: attention, num_heads: 4}, {type: mamba2, d_stat: 4}]", "did you mean 'd_state'"),
        ("of: [{type: attention, num_heads: 4, rope_theta: 10}, {type: attention, num_heads: 4}]", "rotary tables"),
        ("of: [{type: attention, num_heads: 4}, {type: mamba2}], in_multipliers: [1]", "list of 2 numbers"),
    ],
)
def test_parallel_rejects(change: str, message: str) -> None:
    text = f"""
name: bad
family: hybrid
model: {{vocab_size: 61, hidden_size: 32, num_layers: 1}}
mixers:
  mix: {{type: parallel, {change}}}
"""
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_spec_text(text, "bad.yaml")


# --------------------------------------------------------------------------- the build


@pytest.mark.parametrize("which", [0, 1], ids=["falcon-h1", "three-children"])
def test_build_params_and_cache_equal_analytic(which: int) -> None:
    spec = _specs()[which]
    model = build_model(spec, "cpu", torch.float32)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).total
    dt = get_dtype("fp32")
    for max_len in (3, 9):
        cache = model.allocate_cache(2, max_len)
        exact = 2 * 4 * sum(spec.mixers[m].kv_cache_elements(max_len) for m in spec.layer_mixers)
        assert cache.nbytes() == exact + ssm_state_bytes(spec, 2, dt)
        assert kv_read_bytes(spec, 2, max_len, dt) == exact
        if which == 0:  # one child caches keys: the generic KV figure is exact
            assert cache.nbytes() == kv_cache_bytes(spec, 2, max_len, dt) + ssm_state_bytes(spec, 2, dt)


@pytest.mark.parametrize("which", [0, 1], ids=["falcon-h1", "three-children"])
@torch.no_grad()
def test_cached_decode_matches_full_forward(which: int) -> None:
    """Prefill 3 tokens, then decode one at a time: the logits equal one cache-free forward (fp32)."""
    spec = _specs()[which]
    model = build_model(spec, "cpu", torch.float32, init_std=0.15, seed=1)
    ids = token_ids(spec.model.vocab_size, 2, 11)
    full = model(ids)
    cache = model.allocate_cache(2, 12)
    steps = [model(ids[:, :3], cache=cache)]
    for t in range(3, 11):
        steps.append(model(ids[:, t : t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)
    cache.reset()
    assert (model(ids[:, 10:11], cache=cache) - full[:, 10:11]).abs().max() > 1e-2


@pytest.mark.parametrize("which", [0, 1], ids=["falcon-h1", "three-children"])
@torch.no_grad()
def test_flop_counter_equals_analytic(which: int) -> None:
    """FlopCounterMode's matmul FLOPs per component equal ``analytic_components`` (SDPA on the math
    backend, counted over the full seq x seq); the multipliers are elementwise and add none."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from godprof.measure.flops import analytic_components, count_torch

    spec = _specs()[which]
    model = build_model(spec, "cpu", torch.float32)
    B, S = 2, 10
    with sdpa_kernel(SDPBackend.MATH):
        got = count_torch(model, spec, token_ids(spec.model.vocab_size, B, S), last_only=False)
    assert got.by_component == analytic_components(spec, B, S, last_only=False)


@torch.no_grad()
def test_decode_flop_counter_equals_analytic() -> None:
    """One decode step: FlopCounterMode equals the analytic decode FLOPs plus, per Mamba-2 child, its conv
    step and the recurrent step's one product the counter sees (y = C.h: 2 x heads x head_dim x d_state)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from godprof.analytic.flops import decode_flops_per_token

    for spec in _specs():
        model = build_model(spec, "cpu", torch.float32)
        B, S = 2, 9
        ids = token_ids(spec.model.vocab_size, B, S)
        with sdpa_kernel(SDPBackend.MATH):
            cache = model.allocate_cache(B, S + 1)
            model(ids, cache=cache)
            decode = FlopCounterMode(display=False)
            with decode:
                model(ids[:, :1], cache=cache)
        mambas = [ch for m in spec.layer_mixers for ch in spec.mixers[m].children if ch.type == "mamba2"]
        extra = sum(m.conv_flops_per_token() + 2 * m.num_heads * m.head_dim * m.d_state for m in mambas)
        assert decode.get_total_flops() == B * (decode_flops_per_token(spec, count_params(spec), S + 1) + extra)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("which", [0, 1], ids=["falcon-h1", "three-children"])
def test_prefill_peak_equals_measured(which: int, dtype: torch.dtype) -> None:
    """The activation model (children one after the other, the input and running sum beside them) against
    the live-tensor peak of a prefill as ``godprof measure`` runs it, within 2% like every kind."""

    spec = _specs()[which]
    model = build_model(spec, device="cpu", dtype=dtype)
    for batch, seq in ((1, 64), (4, 200)):
        measured, estimated = prefill_peaks(model, spec, batch, seq)
        assert estimated == pytest.approx(measured, rel=0.02), (batch, seq, estimated, measured)


# --------------------------------------------------------------------------- falcon_h1 against transformers


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"ssm_multipliers": [0.5, 1.0, 2.0, 1.0, 0.25], "mlp_multipliers": [2.0, 0.5]},
        {"mamba_rms_norm": False, "attention_bias": True, "mlp_bias": True, "num_key_value_heads": 4},
        {"mamba_proj_bias": True, "projectors_bias": True, "mamba_conv_bias": False, "tie_word_embeddings": True},
        {"mamba_d_ssm": None, "mamba_expand": 2, "mamba_n_heads": 4, "mamba_d_head": "auto", "head_dim": 16},
    ],
    ids=["tiny", "mup", "biases", "proj-bias-tied", "expand"],
)
def test_falcon_h1_counts_equal_transformers(changes: dict[str, Any]) -> None:
    cfg = {**TINY, **changes}
    spec = _spec_from(cfg)
    model = hf_model(cfg)
    assert count_params(spec).total == sum(p.numel() for p in model.parameters())
    # the muP vector is a non-persistent buffer, not a parameter
    assert any(n.endswith("mamba.mup_vector") for n, _ in model.named_buffers())
    assert not any("mup" in n for n, _ in model.named_parameters())
    attn_layers = sum(1 for layer in model.model.layers if getattr(layer, "self_attn", None) is not None)
    assert sum(1 for m in spec.layer_mixers if "attention" in spec.mixers[m].categories) == attn_layers
    assert spec.family == "hybrid" and spec.has_ssm


def test_falcon_h1_defaults_and_rejections() -> None:
    spec = _spec_from({"model_type": "falcon_h1", "vocab_size": 1000, "num_hidden_layers": 2})
    mix = spec.mixers["hybrid"]
    attn, mamba = mix.children
    assert (attn.num_heads, attn.num_kv_heads, attn.head_dim) == (32, 8, 128)
    assert (mamba.d_inner, mamba.num_heads, mamba.head_dim, mamba.d_state, mamba.gated_norm) == (
        1024,
        128,
        8,
        256,
        False,
    )
    assert mix.in_multipliers == mix.out_multipliers == (1.0, 1.0) and attn.scale is None
    hf = hf_model({"model_type": "falcon_h1", "vocab_size": 1000, "num_hidden_layers": 2})
    assert count_params(spec).total == sum(p.numel() for p in hf.parameters())
    with pytest.raises(SpecError, match="one proj_bias"):
        _spec_from({**TINY, "mamba_proj_bias": True})
    desc = _spec_from({**TINY, "mlp_multipliers": [2.0, 0.5]}).description
    assert "mlp_multipliers" in desc and "not built" in desc


def _theirs_name(name: str) -> str:
    fixed = {"embed_tokens.weight": "model.embed_tokens.weight", "norm.weight": "model.final_layernorm.weight"}
    if name in fixed:
        return fixed[name]
    if name == "lm_head.weight":
        return name
    m = re.match(r"layers\.(\d+)\.(.*)", name)
    assert m, name
    i, rest = m.groups()
    pairs = (("mixer.mixers.0.", "self_attn."), ("mixer.mixers.1.", "mamba."), ("mixer_norm.", "input_layernorm."),
             ("ffn_norm.", "pre_ff_layernorm."), ("ffn.", "feed_forward."))  # fmt: skip
    for ours, theirs in pairs:
        if rest.startswith(ours):
            return f"model.layers.{i}.{theirs}{rest[len(ours) :]}"
    raise AssertionError(name)


@torch.no_grad()
def test_logits_equal_transformers() -> None:
    """Our weights copied into transformers' FalconH1ForCausalLM by name (every one of its parameters
    filled, none left over): a full forward's logits agree, every multiplier included (key_multiplier as
    the softmax scale, embedding and lm_head multipliers as the model's)."""
    spec = _spec_from(TINY)
    ours = build_model(spec, "cpu", torch.float32, init_std=0.15, seed=1)
    theirs = hf_model(TINY, device="cpu").float().eval()
    params = dict(theirs.named_parameters())
    mapped = {_theirs_name(n): p for n, p in ours.named_parameters()}
    assert set(mapped) == set(params), set(mapped) ^ set(params)
    for n, p in mapped.items():
        params[n].copy_(p)
    ids = token_ids(spec.model.vocab_size, 2, 11)  # 11 tokens: not a multiple of the 4-token chunk
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = theirs(input_ids=ids, use_cache=False).logits
    got = ours(ids)
    assert got.abs().max() > 0.5
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=2e-4)
