"""The ``type: shared_block`` mixer and the zamba2 importer, against the analytic figures and transformers'
``Zamba2ForCausalLM``.

Zamba2 reuses ``num_mem_blocks`` attention + MLP blocks at several depths: the shared weights must be
counted (and built) once, the per-use LoRA adapters, ``linear`` projections and KV caches once per use,
and the FLOPs for every use. The tests pin the build's parameters and cache bytes to the analytic figures,
cached decode to a full forward, torch's FlopCounterMode to the analytic FLOPs, the importer's counts to
transformers' meta-device model, and the logits to transformers' CPU forward.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
import torch
from kind_checks import assert_cached_decode_matches, hf_model, prefill_peaks, tiny_model, token_ids

from godprof.analytic import count_params
from godprof.analytic.memory import kv_cache_bytes, ssm_state_bytes
from godprof.analytic.params import model_part, shared_parts
from godprof.build import build_model
from godprof.dtypes import get_dtype
from godprof.errors import SpecError
from godprof.spec import parse_spec_text

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread

# Tiny Zamba2: two shared blocks over three hybrid layers (block 0 used twice), rotary, attention adapters.
TINY: dict[str, Any] = {
    "model_type": "zamba2", "vocab_size": 97, "hidden_size": 32, "num_attention_heads": 4,
    "intermediate_size": 48, "mamba_d_state": 8, "n_mamba_heads": 8, "mamba_ngroups": 2, "chunk_size": 4,
    "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid", "hybrid", "mamba"], "num_hidden_layers": 6,
    "num_mem_blocks": 2, "adapter_rank": 4, "use_mem_rope": True, "use_shared_attention_adapter": True,
    "rope_theta": 1000.0,
}  # fmt: skip

SPEC = """
name: tiny-shared
family: hybrid
model: {vocab_size: 61, hidden_size: 32, num_layers: 4}
mixers:
  mamba: {type: mamba2, d_inner: 64, head_dim: 16, d_state: 8, chunk_size: 4}
  shared:
    type: shared_block
    share: s
    attention: {type: attention, num_heads: 8, num_kv_heads: 2, rope: false}
    inner: {type: mamba2, d_inner: 64, head_dim: 16, d_state: 8, chunk_size: 4}
    intermediate_size: 40
    activation: silu
    mlp_bias: true
    adapter_rank: 3
layout:
  mixer: [shared, mamba, shared, shared]
"""


def _spec_from(cfg: dict[str, Any]) -> Any:
    from godprof.hf import spec_from_hf_config

    return spec_from_hf_config(cfg, "tiny-zamba2")


def _specs() -> list[Any]:
    return [_spec_from(TINY), parse_spec_text(SPEC, "tiny-shared.yaml")]


# --------------------------------------------------------------------------- the kind


def test_shared_weights_counted_once_and_uses_each_time() -> None:
    spec = parse_spec_text(SPEC, "tiny-shared.yaml")
    blk = spec.mixers["shared"]
    h = 32
    assert blk.categories == {"attention", "ssm"} and spec.family == "hybrid"
    assert blk.attention.head_dim == 8  # 2 x hidden / heads
    shared = shared_parts(spec)
    assert list(shared) == [blk.shared_key()]
    one = shared[blk.shared_key()]
    # norms 2h + h; q 64x64, k and v 64x16, o 64x32; gate_up 32x80 + 80, down 40x32 + 32
    assert one.total == 3 * h + 64 * 64 + 2 * 64 * 16 + 64 * 32 + (32 * 80 + 80) + (40 * 32 + 32)
    use = blk.params(h)
    inner = blk.inner.params(h).total
    assert use.total == inner + h + h * h + (h * 3 + 3 * 80)  # inner + its norm, linear, gate_up adapter
    assert use.matmul == blk.inner.params(h).matmul + h * h + h * 3 + 3 * 80 + blk.shared_matmul(h)
    assert blk.shared_matmul(h) == 64 * 64 + 2 * 64 * 16 + 64 * 32 + 32 * 80 + 40 * 32
    counts = count_params(spec)
    mamba = spec.mixers["mamba"].params(h).total + h  # with the block's pre-norm
    assert counts.total == model_part(spec).total + 3 * use.total + mamba + one.total
    # the KV cache and FLOPs count every use
    assert blk.kv_elements_per_token() == 2 * 2 * 8
    assert kv_cache_bytes(spec, 1, 10, get_dtype("fp32")) == 3 * 4 * 2 * 2 * 8 * 10
    assert blk.attention_flops(2, 9, "full") == blk.attention.attention_flops(2, 9, "full")
    assert blk.scan_flops(2, 9) == blk.inner.scan_flops(2, 9)
    assert blk.state_elements() == blk.inner.state_elements()


def test_two_shapes_under_one_share_count_apart_and_do_not_build() -> None:
    text = SPEC.replace("  mixer: [shared, mamba, shared, shared]", "  mixer: [shared, mamba, shared, other]")
    text = text.replace("mixers:\n", "mixers:\n  other: {type: shared_block, share: s, intermediate_size: 24, "
                        "attention: {type: attention, num_heads: 8, rope: false}, inner: {type: mamba2, d_inner: 64, "
                        "head_dim: 16, d_state: 8}}\n")  # fmt: skip
    spec = parse_spec_text(text, "two.yaml")
    assert len(shared_parts(spec)) == 2
    with pytest.raises(ValueError, match="two different shapes"):
        build_model(spec, "meta")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("share: 'a b'", "expected a name"),
        ("inner: {type: none}", "cannot be 'none'"),
        ("attention: {type: mamba2}", "expected 'attention'"),
        ("attention: {type: attention, num_heads: 4, sliding_window: 8}", "not supported in a shared block"),
        ("attention: {type: attention, num_heads: 4, head_dim: 8}", "2 x hidden_size"),
        ("attention_adapters: true", "needs adapter_rank"),
        ("activation: swish", "unknown activation"),
    ],
)
def test_shared_block_rejects(change: str, message: str) -> None:
    entry = {"share": "s", "attention": "{type: attention, num_heads: 4}", "inner": "{type: mamba2}",
             "intermediate_size": "16"}  # fmt: skip
    key = change.split(":")[0]
    entry[key] = change[len(key) + 1 :].strip()
    body = ", ".join(f"{k}: {v}" for k, v in entry.items())
    text = f"""
name: bad
family: hybrid
model: {{vocab_size: 61, hidden_size: 32, num_layers: 1}}
mixers:
  mix: {{type: shared_block, {body}}}
"""
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_spec_text(text, "bad.yaml")


# --------------------------------------------------------------------------- the build


@pytest.mark.parametrize("which", [0, 1], ids=["zamba2", "gqa-bias"])
def test_build_params_and_cache_equal_analytic(which: int) -> None:
    spec = _specs()[which]
    model = build_model(spec, "cpu", torch.float32)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).total
    assert len(model.shared) == len(shared_parts(spec))
    dt = get_dtype("fp32")
    for max_len in (3, 9):
        cache = model.allocate_cache(2, max_len)
        assert cache.nbytes() == kv_cache_bytes(spec, 2, max_len, dt) + ssm_state_bytes(spec, 2, dt)


@pytest.mark.parametrize("which", [0, 1], ids=["zamba2", "gqa-bias"])
def test_cached_decode_matches_full_forward(which: int) -> None:
    model = tiny_model(_specs()[which])
    assert_cached_decode_matches(model, (3, 1, 5, 2), 4, tol=1e-4, vocab=61)


@pytest.mark.parametrize("which", [0, 1], ids=["zamba2", "gqa-bias"])
@torch.no_grad()
def test_flop_counter_equals_analytic(which: int) -> None:
    """FlopCounterMode's matmul FLOPs per component equal ``analytic_components``: the shared weights are
    multiplied once per use (SDPA on the math backend, counted over the full seq x seq)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from godprof.measure.flops import analytic_components, count_torch

    spec = _specs()[which]
    model = build_model(spec, "cpu", torch.float32)
    with sdpa_kernel(SDPBackend.MATH):
        got = count_torch(model, spec, token_ids(spec.model.vocab_size, 2, 10), last_only=False)
    assert got.by_component == analytic_components(spec, 2, 10, last_only=False)


@torch.no_grad()
def test_decode_flop_counter_equals_analytic() -> None:
    """One decode step: FlopCounterMode equals the analytic decode FLOPs plus, per Mamba-2 (inner or not),
    its conv step and the one product of the recurrent step the counter sees (y = C.h)."""
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
        mixers = [spec.mixers[m] for m in spec.layer_mixers]
        mambas = [getattr(m, "inner", m) for m in mixers]
        extra = sum(m.conv_flops_per_token() + 2 * m.num_heads * m.head_dim * m.d_state for m in mambas)
        assert decode.get_total_flops() == B * (decode_flops_per_token(spec, count_params(spec), S + 1) + extra)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("which", [0, 1], ids=["zamba2", "gqa-bias"])
def test_prefill_peak_equals_measured(which: int, dtype: torch.dtype) -> None:
    """The activation model (the embeddings kept for the shared blocks beside each phase) against the
    live-tensor peak of a prefill as ``godprof measure`` runs it, within 2% like every kind."""
    spec = _specs()[which]
    model = build_model(spec, device="cpu", dtype=dtype)
    for batch, seq in ((1, 64), (4, 200)):
        measured, estimated = prefill_peaks(model, spec, batch, seq)
        assert estimated == pytest.approx(measured, rel=0.02), (batch, seq, estimated, measured)


# --------------------------------------------------------------------------- zamba2 against transformers


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"use_shared_attention_adapter": False, "num_mem_blocks": 1, "use_mem_rope": False},
        {"add_bias_linear": True, "tie_word_embeddings": False, "num_mem_blocks": 3, "num_key_value_heads": 4},
        {"layers_block_type": ["linear_attention", "hybrid"] * 3, "mamba_expand": 3, "n_mamba_heads": 12},
        {"layers_block_type": ["mamba"] * 3, "num_hidden_layers": 3},
    ],
    ids=["tiny", "one-block", "bias-untied", "new-names", "no-hybrid"],
)
def test_zamba2_counts_equal_transformers(changes: dict[str, Any]) -> None:
    cfg = {**TINY, **changes}
    spec = _spec_from(cfg)
    model = hf_model(cfg)
    counts = count_params(spec)
    assert counts.total == counts.active == sum(p.numel() for p in model.parameters())
    hybrids = sum(1 for layer in model.model.layers if hasattr(layer, "shared_transformer"))
    assert sum(1 for m in spec.layer_mixers if m.startswith("shared")) == hybrids


def test_zamba2_defaults_equal_transformers() -> None:
    """Zamba2Config's defaults (transformers calls them "Zamba2-2.7B style"): 54 layers, 9 hybrid, one
    shared block, 2,481,848,336 parameters."""
    cfg = {"model_type": "zamba2"}
    spec = _spec_from(cfg)
    assert spec.model.num_layers == 54 and spec.layer_mixers.count("shared0") == 9
    assert count_params(spec).total == sum(p.numel() for p in hf_model(cfg).parameters()) == 2_481_848_336


def _theirs_name(name: str, spec: Any) -> str:
    """Our parameter names -> transformers' (the first hybrid layer of each block holds its shared weights
    and every use's adapters, under the use's index among the hybrid layers)."""
    hybrid = [i for i, m in enumerate(spec.layer_mixers) if m != "mamba"]
    fixed = {"embed_tokens.weight": "model.embed_tokens.weight", "norm.weight": "model.final_layernorm.weight",
             "lm_head.weight": "lm_head.weight"}  # fmt: skip
    if name in fixed:
        return fixed[name]
    m = re.match(r"shared\.block(\d+)\.(.*)", name)
    if m:
        first = hybrid[int(m.group(1))]
        pairs = (("input_norm.", "input_layernorm."), ("ffn_norm.", "pre_ff_layernorm."),
                 ("gate_up_proj.", "feed_forward.gate_up_proj."), ("down_proj.", "feed_forward.down_proj."),
                 ("", "self_attn."))  # fmt: skip
        rest = m.group(2)
        ours, theirs = next(p for p in pairs if rest.startswith(p[0]))
        return f"model.layers.{first}.shared_transformer.{theirs}{rest[len(ours) :]}"
    m = re.match(r"layers\.(\d+)\.(.*)", name)
    assert m, name
    i, rest = int(m.group(1)), m.group(2)
    if i not in hybrid:
        rest = rest.replace("mixer_norm.", "input_layernorm.").replace("mixer.", "mamba.")
        return f"model.layers.{i}.{rest}"
    use = hybrid.index(i)
    first = hybrid[use % TINY["num_mem_blocks"]]
    lists = {"mixer.gate_up_adapter.": "feed_forward.gate_up_proj_adapter_list"}
    lists |= {f"mixer.{x}_adapter.": f"self_attn.linear_{x}_adapter_list" for x in "qkv"}
    for ours, theirs in lists.items():
        if rest.startswith(ours):
            return f"model.layers.{first}.shared_transformer.{theirs}.{use}.{rest[len(ours) :]}"
    pairs = (("mixer.inner_norm.", "mamba_decoder.input_layernorm."), ("mixer.inner.", "mamba_decoder.mamba."),
             ("mixer.linear.", "linear."))  # fmt: skip
    ours, theirs = next(p for p in pairs if rest.startswith(p[0]))
    return f"model.layers.{i}.{theirs}{rest[len(ours) :]}"


@torch.no_grad()
def test_logits_equal_transformers() -> None:
    """Our weights copied into transformers' Zamba2ForCausalLM by name (every one of its parameters filled,
    none left over): a full forward's logits agree. dt_bias is set to 0 so that softplus(dt) stays above
    Zamba2's ``time_step_min`` clamp, which the build leaves out."""
    spec = _spec_from(TINY)
    ours = build_model(spec, "cpu", torch.float32, init_std=0.15, seed=1)
    for name, p in ours.named_parameters():
        if name.endswith("dt_bias"):
            p.zero_()
    theirs = hf_model(TINY, device="cpu").float().eval()
    params = dict(theirs.named_parameters())
    mapped = {_theirs_name(n, spec): p for n, p in ours.named_parameters()}
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
