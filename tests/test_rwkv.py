"""``type: rwkv_time_mix`` / ``type: rwkv_channel_mix`` (RWKV-4) and the rwkv importer: the build against the
analytic figures (parameters, cache bytes, FLOPs under FlopCounterMode), cached decode against a full
forward, the logits of transformers' RwkvForCausalLM, and the importer's counts against RwkvForCausalLM
on the meta device (no published RWKV config.json is available offline: synthetic configs turn each
knob)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kind_checks import prefill_peaks, spec_from, tiny_model

from godprof.analytic.memory import ssm_state_bytes
from godprof.analytic.params import count_params
from godprof.build import build_model
from godprof.dtypes import get_dtype
from godprof.errors import SpecError
from godprof.hf import spec_from_hf_config
from godprof.kinds.rwkv import RwkvChannelMix, RwkvTimeMix
from godprof.measure.flops import analytic_components, count_torch

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread

# 3 layers, attention width 24 != hidden 32 so the a / h split of every count is exercised; layer 0 carries
# pre_ln (its own mixer entry), as the importer writes it.
TINY = """
name: tiny-rwkv
family: linear
model: {vocab_size: 97, hidden_size: 32, num_layers: 3, norm: layernorm}
mixers:
  tm0: {type: rwkv_time_mix, attention_hidden_size: 24, pre_norm: true}
  tm: {type: rwkv_time_mix, attention_hidden_size: 24}
ffns:
  cm: {type: rwkv_channel_mix, intermediate_size: 48}
layout:
  mixer: {default: tm, first: {count: 1, use: tm0}}
"""


def _spec(text: str = TINY):
    return spec_from(text)


_model = tiny_model


def test_params_and_cache_bytes_equal_the_analytic_figures() -> None:
    spec = _spec()
    model = _model(spec)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).total
    tm0: RwkvTimeMix = spec.mixers["tm0"]
    tm: RwkvTimeMix = spec.mixers["tm"]
    # decay + first (2 x 24), three mixes (3 x 32), key/value/receptance 32 x 24, output 24 x 32
    assert tm.params(32).total == 48 + 96 + 3 * 768 + 768 == 3_216
    assert tm.params(32).by_component["attention"] == 3_216
    assert tm0.params(32).by_component["norms"] == 64 and tm0.params(32).total == 3_280
    # two mixes (2 x 32), key 32 x 48, receptance 32 x 32, value 48 x 32
    cm: RwkvChannelMix = spec.ffns["cm"]
    assert cm.params(32).total == cm.params(32).by_component["mlp"] == 64 + 1_536 + 1_024 + 1_536
    cache = model.allocate_cache(3, 50)
    # per layer and sequence: num, den, max (3 x 24) and the two shifts (2 x 32)
    assert tm.state_elements() == 3 * 24 + 2 * 32 == 136
    assert cache.nbytes() == 3 * 3 * 136 * 4 == ssm_state_bytes(spec, 3, get_dtype("fp32"))
    assert tm.kv_elements_per_token() == 0


@torch.no_grad()
def test_cached_decode_equals_full_forward() -> None:
    """Prefill 7 tokens, then pieces of 1, 2 and 5; then token by token from a 1-token prompt; then a reset
    cache: every step's logits equal the full forward's (fp32)."""
    spec = _spec()
    model = _model(spec)
    ids = torch.randint(0, 97, (2, 15), generator=torch.Generator().manual_seed(0))
    full = model(ids)
    cache = model.allocate_cache(2, 20)
    pieces, start = [], 0
    for n in (7, 1, 2, 5):
        pieces.append(model(ids[:, start : start + n], cache=cache))
        start += n
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=2e-5, rtol=2e-5)
    cache.reset()  # stale state is never read
    steps = [model(ids[:, i : i + 1], cache=cache) for i in range(15)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("seq", [1, 2, 9])
def test_flop_counter_equals_analytic(seq: int) -> None:
    """FlopCounterMode over one forward: each component's matmuls equal the analytic ones (the WKV
    recurrence is elementwise: the counter sees nothing of it)."""
    spec = _spec()
    model = _model(spec)
    ids = torch.randint(0, 97, (2, seq), generator=torch.Generator().manual_seed(1))
    c = count_torch(model, spec, ids, last_only=True)
    assert c.by_component == analytic_components(spec, 2, seq, last_only=True)
    assert c.by_category["other"] == 0 and c.by_category.get("conv", 0) == 0
    # by hand: key/value/receptance 32 x 24 and output 24 x 32 per token and layer
    assert c.by_component["mixer:tm"] == 2 * 2 * (4 * 32 * 24) * 2 * seq
    assert c.by_component["ffn:cm"] == 3 * 2 * (32 * 48 + 32 * 32 + 48 * 32) * 2 * seq


@settings(max_examples=30, deadline=None)
@given(
    seq=st.integers(1, 1 << 20),
    more=st.integers(1, 1 << 20),
    hidden=st.sampled_from([16, 1024, 2560]),
    att=st.sampled_from([None, 8, 4096]),
)
def test_state_is_constant_in_context(seq: int, more: int, hidden: int, att: int | None) -> None:
    """No KV cache; the state is 3 x a + 2 x hidden at any context and a decode step costs the same."""
    k = RwkvTimeMix(channels=hidden, attention_hidden_size=att)
    a = att or hidden
    assert k.kv_elements_per_token() == 0 and k.decode_read_elements(seq) == 0
    assert k.state_elements() == 3 * a + 2 * hidden
    assert k.decode_attention_flops(seq) == k.decode_attention_flops(seq + more) == 0
    assert k.scan_decode_flops() == 23 * a
    assert k.scan_flops(1, seq + more) - k.scan_flops(1, seq) == more * k.scan_decode_flops()
    assert k.scan_matmul_flops(1, seq) == 0


def test_channel_mix_needs_a_time_mix() -> None:
    """The channel mix's shift state lives in its layer's time mix: a spec pairing it with another mixer is
    refused with the entry named."""
    with pytest.raises(SpecError, match="needs a rwkv_time_mix mixer in its layer"):
        _spec(TINY.replace("tm: {type: rwkv_time_mix, attention_hidden_size: 24}", "tm: {type: short_conv}"))


# the time mix's peak (a = 2 x hidden, a narrow channel mix) and the channel mix's (RWKV's 4 x hidden)
TIME_PEAK = {"model_type": "rwkv", "vocab_size": 97, "hidden_size": 64, "num_hidden_layers": 2,
             "attention_hidden_size": 128, "intermediate_size": 96}  # fmt: skip
FFN_PEAK = {"model_type": "rwkv", "vocab_size": 97, "hidden_size": 64, "num_hidden_layers": 2}


@pytest.mark.parametrize("cfg", [TIME_PEAK, FFN_PEAK], ids=["time-mix-peak", "channel-mix-peak"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prefill_peak_equals_measured(dtype: torch.dtype, cfg: dict[str, Any]) -> None:
    """The analytic prefill activation peak against the live-tensor peak of the build on CPU: equal to the
    byte on torch 2.13 (the WKV loop's per-token [B, a] temporaries are below the peak step's)."""
    spec = spec_from_hf_config(cfg, "synthetic.json")
    model = _model(spec, dtype)
    for batch, seq in ((1, 64), (3, 100)):
        measured, est = prefill_peaks(model, spec, batch, seq)
        assert est == measured, (batch, seq)


# --------------------------------------------------------------------------- transformers


def _hf_model(cfg: dict[str, Any], device: str = "cpu"):
    transformers = pytest.importorskip("transformers")
    conf = transformers.RwkvConfig(**{k: v for k, v in cfg.items() if k != "model_type"})
    with torch.device(device):
        return transformers.RwkvForCausalLM(conf)


SYNTHETIC = [
    {"model_type": "rwkv", "vocab_size": 101, "hidden_size": 32, "num_hidden_layers": 3},
    {"model_type": "rwkv", "vocab_size": 101, "hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 40},
    {"model_type": "rwkv", "vocab_size": 50, "hidden_size": 48, "num_hidden_layers": 4, "attention_hidden_size": 16,
     "intermediate_size": None, "tie_word_embeddings": True},
    # RWKV-4 169M's shape (BlinkDL/rwkv-4-pile-169m as converted by transformers): 12 x 768, vocab 50277
    {"model_type": "rwkv", "vocab_size": 50277, "hidden_size": 768, "num_hidden_layers": 12,
     "attention_hidden_size": 768, "intermediate_size": 3072, "context_length": 1024, "rescale_every": 6},
]  # fmt: skip


@pytest.mark.parametrize("cfg", SYNTHETIC, ids=lambda c: f"h{c['hidden_size']}-L{c['num_hidden_layers']}")
def test_importer_counts_equal_transformers_meta(cfg: dict[str, Any]) -> None:
    spec = spec_from_hf_config(cfg, "synthetic.json")
    hf = _hf_model(cfg, "meta")
    # named_parameters deduplicates a tied head, as godprof's count does
    assert count_params(spec).total == sum(p.numel() for p in hf.parameters())
    meta = build_model(spec, device="meta")
    assert sum(p.numel() for p in meta.parameters()) == count_params(spec).total


def test_rwkv_169m_shape_counts() -> None:
    """RWKV-4 Pile 169M's shape: 169,342,464 parameters (the "169m" of its name; untied head)."""
    assert count_params(spec_from_hf_config(SYNTHETIC[3], "x.json")).total == 169_342_464


@torch.no_grad()
def test_logits_equal_transformers() -> None:
    """Load transformers' RwkvForCausalLM weights into the build (pre_ln folded into the embedding rows,
    exact: it acts on each token's embedding alone) and compare logits, full and in cached pieces against
    transformers' own state (rescale_every 0: the halving is a numerically different, equivalent schedule)."""
    cfg = {"model_type": "rwkv", "vocab_size": 61, "hidden_size": 32, "num_hidden_layers": 3,
           "attention_hidden_size": 32, "intermediate_size": 40, "rescale_every": 0}  # fmt: skip
    torch.manual_seed(0)
    hf = _hf_model(cfg).eval().float()
    with torch.no_grad():  # transformers' init leaves the mixes and decays near their RWKV values; spread them
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    spec = spec_from_hf_config(cfg, "synthetic.json")
    model = _model(spec)
    sd = hf.state_dict()
    ours: dict[str, torch.Tensor] = {}
    pre = hf.rwkv.blocks[0].pre_ln
    ours["embed_tokens.weight"] = pre(hf.rwkv.embeddings.weight)
    ours["norm.weight"], ours["norm.bias"] = sd["rwkv.ln_out.weight"], sd["rwkv.ln_out.bias"]
    ours["lm_head.weight"] = sd["head.weight"]
    for i in range(3):
        b = f"rwkv.blocks.{i}."
        for src, dst in (("ln1", "mixer_norm"), ("ln2", "ffn_norm"), ("attention", "mixer"), ("feed_forward", "ffn")):
            for k, v in sd.items():
                if k.startswith(b + src + "."):
                    ours[f"layers.{i}.{dst}.{k[len(b + src) + 1 :]}"] = v
        if i == 0:
            ours["layers.0.mixer.pre_ln.weight"], ours["layers.0.mixer.pre_ln.bias"] = pre.weight, pre.bias
    assert set(ours) == set(model.state_dict())
    model.load_state_dict(ours)
    ids = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(3))
    want = hf(ids).logits
    torch.testing.assert_close(model(ids), want, atol=2e-5, rtol=2e-5)
    # against transformers' own state, in pieces of 4, 2 and 3 tokens: its one-token step with a state
    # broadcasts the [B, h] shift against [B, 1, h] (a [B, B, h] output for B > 1 in transformers 5.24)
    cache = model.allocate_cache(2, 9)
    state, start = None, 0
    for n in (4, 2, 3):
        out = hf(ids[:, start : start + n], state=state, use_cache=True)
        state = out.state
        got = model(ids[:, start : start + n], cache=cache)
        torch.testing.assert_close(got, out.logits, atol=2e-5, rtol=2e-5)
        start += n
