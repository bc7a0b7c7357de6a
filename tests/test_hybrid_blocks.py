"""Blocks that are one mixer or one FFN (Nemotron-H), the ``type: none`` mixer, and the nemotron_h and
granitemoehybrid importers, against transformers.

Nemotron-H's blocks are each ONE of Mamba-2, attention, MLP or MoE after one RMSNorm; godprof writes an
MLP block as a ``none`` mixer (skipped with its norm) plus the MLP, and a Mamba or attention block as the
mixer plus a ``type: none`` FFN. The tests pin, per layer and in total, the parameters and norms to
transformers' modules (meta device), the built model to the analytic count, cached decode to a full
forward, the logits to transformers' ``NemotronHForCausalLM`` (its pure-PyTorch path) and torch's
FlopCounterMode to the analytic FLOPs. Granite-4.0-H has no published config among the fixtures: it is
checked on synthetic configs.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from kind_checks import hf_model, token_ids

from godprof.analytic import count_params
from godprof.analytic.params import layer_part, norms_per_layer
from godprof.build import build_model
from godprof.errors import SpecError
from godprof.hf import spec_from_config_file, spec_from_hf_config
from godprof.spec import load_spec, parse_spec, parse_spec_text

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread

FIXTURE = Path(__file__).parent / "fixtures" / "hf" / "nemotron-h-56b.json"

# A tiny Nemotron-H: every block kind, two Mamba groups (and so two gated-norm groups), GQA attention.
# time_step_min 1e-9: transformers clamps the chunked scan's dt to [time_step_min, inf) (not the recurrent
# step's); godprof does not clamp, so the logits comparison puts the floor where it never binds (0 would
# break transformers' log-uniform dt init).
TINY_NEMOTRON: dict[str, Any] = {
    "model_type": "nemotron_h", "vocab_size": 97, "hidden_size": 32, "hybrid_override_pattern": "M-*-M*M-",
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 48,
    "mlp_hidden_act": "relu2", "mamba_num_heads": 8, "mamba_head_dim": 8, "n_groups": 2, "ssm_state_size": 8,
    "conv_kernel": 4, "chunk_size": 4, "time_step_min": 1e-9, "tie_word_embeddings": False,
}  # fmt: skip
TINY_MOE = {
    **TINY_NEMOTRON, "hybrid_override_pattern": "ME*E-", "n_routed_experts": 4, "num_experts_per_tok": 2,
    "moe_intermediate_size": 16, "moe_shared_expert_intermediate_size": 24, "n_group": 2, "topk_group": 1,
    "routed_scaling_factor": 2.5,
}  # fmt: skip
TINY_GRANITE: dict[str, Any] = {
    "model_type": "granitemoehybrid", "vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 4,
    "layer_types": ["mamba", "attention", "mamba", "mamba"], "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 24, "shared_intermediate_size": 40, "num_local_experts": 4, "num_experts_per_tok": 2,
    "mamba_n_heads": 8, "mamba_n_groups": 2, "mamba_d_state": 8, "mamba_d_head": 8, "mamba_d_conv": 4,
    "mamba_chunk_size": 4, "embedding_multiplier": 12.0, "logits_scaling": 8.0, "residual_multiplier": 0.22,
    "attention_multiplier": 0.0078125, "position_embedding_type": "nope",
}  # fmt: skip


def _hf_counts(model: Any, top_k: int) -> tuple[int, int]:
    """(total, active) of a transformers model: active leaves out the routed experts a token skips."""
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    for m in model.modules():
        if type(m).__name__.endswith("Experts") and hasattr(m, "num_experts"):
            inactive += sum(p.numel() for p in m.parameters()) // m.num_experts * (m.num_experts - top_k)
    return total, total - inactive


def _n(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _hf_norm_params(layer: Any) -> int:
    """Parameters of a transformers decoder layer's RMSNorms (block norms and the gated norm inside Mamba)."""
    return sum(_n(m) for m in layer.modules() if type(m).__name__.endswith(("RMSNorm", "RMSNormGated")))


# --------------------------------------------------------------------------- the none mixer


def test_none_mixer_layer_is_its_ffn_with_one_norm() -> None:
    spec = parse_spec_text(
        """
name: mlp-only
family: hybrid
model: {vocab_size: 10, hidden_size: 8, num_layers: 3}
mixers:
  none: {type: none}
  attn: {type: attention, num_heads: 2, rope: false}
  m2: {type: mamba2, d_state: 4, head_dim: 4, chunk_size: 4}
ffns:
  none: {type: none}
  mlp: {type: mlp, intermediate_size: 12, gated: false, activation: relu2}
layout: {mixer: [m2, none, attn], ffn: [none, mlp, none]}
"""
    )
    mamba, mlp, attn = spec.layers()
    assert [norms_per_layer(spec, x) for x in (mamba, mlp, attn)] == [1, 1, 1]
    # MLP-only: fc1 8x12 + fc2 12x8 + one RMSNorm of 8; nothing for the mixer
    assert layer_part(spec, mlp).total == 2 * 8 * 12 + 8
    assert layer_part(spec, mlp).by_component == {"mlp": 192, "norms": 8}
    assert mlp.kind == "none+mlp" and mamba.kind == "mamba2"
    model = build_model(spec, "meta")
    assert model.layers[1].mixer_norm is None and model.layers[1].ffn_norm is not None
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).total


def test_none_mixer_takes_no_keys_and_no_family() -> None:
    base = {"name": "x", "model": {"vocab_size": 10, "hidden_size": 8, "num_layers": 1},
            "mixers": {"none": {"type": "none"}}, "ffns": {"mlp": {"type": "mlp", "intermediate_size": 8}}}  # fmt: skip
    with pytest.raises(SpecError, match="does not match the layers, which use nothing"):
        parse_spec({**base, "family": "dense"}, "x")
    bad = {**base, "mixers": {"none": {"type": "none", "num_heads": 2}}}
    with pytest.raises(SpecError, match="num_heads"):
        parse_spec(bad, "x")


@pytest.mark.parametrize("extra", ["sandwich_norm: true", "post_norm: true", "parallel_residual: true",
                                   "parallel_residual: true\n  parallel_shared_norm: false"])  # fmt: skip
def test_none_mixer_under_every_block_style_builds_the_counted_norms(extra: str) -> None:
    """Sandwich, post-norm and parallel blocks: a none-mixer layer keeps only its FFN's norms."""
    spec = parse_spec_text(
        f"""
name: styles
family: dense
model:
  vocab_size: 10
  hidden_size: 8
  num_layers: 2
  {extra}
mixers:
  none: {{type: none}}
  attn: {{type: attention, num_heads: 2}}
ffns:
  mlp: {{type: mlp, intermediate_size: 12}}
layout: {{mixer: [attn, none]}}
"""
    )
    model = build_model(spec, "cpu", torch.float32, init_std=0.2)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).total
    for layer, block in zip(spec.layers(), model.layers, strict=True):
        norms = sum(
            1 for name, _ in block.named_children() if name.endswith("norm") and getattr(block, name) is not None
        )
        assert norms == norms_per_layer(spec, layer)
    ids = torch.randint(0, 10, (2, 5), generator=torch.Generator().manual_seed(0))
    x = model.embed_tokens(ids)
    block = model.layers[1]
    ffn_in = x if block.ffn_norm is None else block.ffn_norm(x)
    f = block.ffn(ffn_in)
    if block.post_ffn_norm is not None:
        f = block.post_ffn_norm(f)
    torch.testing.assert_close(block(x, 0, None), x + f)  # the layer is x + ffn(...): no mixer branch


# --------------------------------------------------------------------------- Nemotron-H importer


def test_nemotron_h_56b_counts_equal_transformers() -> None:
    """The published config: 54 Mamba-2, 10 attention and 54 MLP blocks; 56,324,350,464 parameters."""
    cfg = json.loads(FIXTURE.read_text())
    spec = spec_from_hf_config(cfg, str(FIXTURE))
    c = count_params(spec)
    assert (c.total, c.active) == (56_324_350_464, 56_324_350_464)
    assert _hf_counts(hf_model(cfg), 1) == (c.total, c.active)
    kinds = [spec.mixers[m].type for m in spec.layer_mixers]
    assert (kinds.count("mamba2"), kinds.count("attention"), kinds.count("none")) == (54, 10, 54)
    assert spec.family == "hybrid"


def test_bundled_nemotron_h_56b_equals_its_config_import() -> None:
    spec = load_spec("nemotron-h-56b")
    a, b = count_params(spec), count_params(spec_from_config_file(FIXTURE))
    assert (a.total, a.active, a.matmul_per_token) == (b.total, b.active, b.matmul_per_token)
    imported = spec_from_config_file(FIXTURE)
    assert [spec.mixers[m].type for m in spec.layer_mixers] == [imported.mixers[m].type for m in imported.layer_mixers]
    assert [spec.ffns[f] for f in spec.layer_ffns] == [imported.ffns[f] for f in imported.layer_ffns]


@pytest.mark.parametrize("cfg", [TINY_NEMOTRON, TINY_MOE], ids=["mlp", "moe"])
def test_nemotron_h_layers_equal_transformers_layer_by_layer(cfg: dict[str, Any]) -> None:
    """Each block's parameters and norms (the block norm, plus Mamba's gated norm) equal transformers'."""
    spec = spec_from_hf_config(cfg, "tiny")
    hf = hf_model(cfg)
    hf_layers = list(hf.model.layers)
    assert len(hf_layers) == len(spec.layers())
    for layer, theirs in zip(spec.layers(), hf_layers, strict=True):
        part = layer_part(spec, layer)
        assert part.total == _n(theirs), (layer.index, layer.kind)
        assert part.by_component["norms"] == _hf_norm_params(theirs), (layer.index, layer.kind)
        assert norms_per_layer(spec, layer) == 1
    c = count_params(spec)
    assert _hf_counts(hf, cfg.get("num_experts_per_tok", 2)) == (c.total, c.active)


@pytest.mark.parametrize(
    "changes",
    [
        {"use_bias": True, "mlp_bias": True, "use_conv_bias": False},
        {"layers_block_type": ["linear_attention", "mlp", "full_attention", "mlp"], "hybrid_override_pattern": None},
        {"hybrid_override_pattern": "M-M-", "mamba_n_groups": 4, "mamba_chunk_size": 8},  # legacy names win
        {"hybrid_override_pattern": "*-*-", "num_key_value_heads": None, "num_attention_heads": 16, "head_dim": 4},
        {"tie_word_embeddings": True, "mlp_hidden_act": "silu"},
    ],
    ids=["biases", "layers_block_type", "legacy-keys", "no-mamba", "tie-ignored"],
)
def test_nemotron_h_variants_equal_transformers(changes: dict[str, Any]) -> None:
    cfg = {k: v for k, v in {**TINY_NEMOTRON, **changes}.items() if v is not None}
    spec = spec_from_hf_config(cfg, "variant")
    c = count_params(spec)
    assert _hf_counts(hf_model(cfg), 2) == (c.total, c.active)


def test_nemotron_h_rejects_what_it_cannot_count() -> None:
    with pytest.raises(SpecError, match="moe_latent_size"):
        spec_from_hf_config({**TINY_MOE, "moe_latent_size": 16}, "x")
    with pytest.raises(SpecError, match="hybrid_override_pattern"):
        spec_from_hf_config({**TINY_NEMOTRON, "hybrid_override_pattern": "M-X"}, "x")


# --------------------------------------------------------------------------- Granite-4.0-H importer


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"attention_bias": True, "position_embedding_type": "rope", "tie_word_embeddings": True},
        {"num_local_experts": 0},
        {"layer_types": None},
        {
            "layer_types": ["linear_attention", "full_attention", "full_attention", "linear_attention"],
            "mamba_d_head": "auto",
            "mamba_proj_bias": True,
            "mamba_conv_bias": False,
        },
    ],
    ids=["moe-shared", "bias-rope-tied", "dense", "all-mamba", "new-names"],
)
def test_granitemoehybrid_equals_transformers(changes: dict[str, Any]) -> None:
    cfg = {k: v for k, v in {**TINY_GRANITE, **changes}.items() if v is not None}
    spec = spec_from_hf_config(cfg, "granite")
    c = count_params(spec)
    hf = hf_model(cfg)
    assert _hf_counts(hf, cfg["num_experts_per_tok"]) == (c.total, c.active)
    attn = sum(1 for layer in hf.model.layers if layer.self_attn is not None)
    assert sum(1 for m in spec.layer_mixers if spec.mixers[m].category == "attention") == attn
    for layer, theirs in zip(spec.layers(), hf.model.layers, strict=True):
        assert layer_part(spec, layer).total == _n(theirs)


def test_granitemoehybrid_multipliers() -> None:
    """The multipliers have no parameters: embedding and logits ones reach the model section, the
    attention one the softmax scale, the residual one the description."""
    spec = spec_from_hf_config(TINY_GRANITE, "granite")
    assert spec.model.embedding_multiplier == 12.0 and spec.model.logit_scale == 1 / 8
    assert spec.mixers["attn"].scale == 0.0078125
    assert spec.mixers["attn"].rope is False
    assert "residual_multiplier 0.22" in (spec.description or "")
    assert spec.family == "hybrid" and spec.has_moe


# --------------------------------------------------------------------------- the build


def _tiny_model(cfg: dict[str, Any] = TINY_NEMOTRON) -> tuple[Any, Any]:
    spec = spec_from_hf_config(cfg, "tiny")
    return spec, build_model(spec, "cpu", torch.float32, init_std=0.15, seed=1)


@pytest.mark.parametrize("cfg", [TINY_NEMOTRON, TINY_MOE], ids=["mlp", "moe"])
def test_build_params_and_cache_equal_analytic(cfg: dict[str, Any]) -> None:
    from godprof.analytic.memory import kv_cache_bytes, ssm_state_bytes
    from godprof.dtypes import get_dtype

    spec, model = _tiny_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == count_params(spec).total
    cache = model.allocate_cache(2, 9)
    dt = get_dtype("fp32")
    assert cache.nbytes() == kv_cache_bytes(spec, 2, 9, dt) + ssm_state_bytes(spec, 2, dt)


@torch.no_grad()
def test_cached_decode_matches_full_forward() -> None:
    """Prefill 3 tokens, then decode 10 one at a time: the logits equal one cache-free forward."""
    spec, model = _tiny_model()
    ids = token_ids(spec.model.vocab_size, 2, 13)
    full = model(ids)  # [2, 13, V]
    cache = model.allocate_cache(2, 16)
    steps = [model(ids[:, :3], cache=cache)]
    for t in range(3, 13):
        steps.append(model(ids[:, t : t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)
    cache.reset()
    alone = model(ids[:, 12:13], cache=cache)
    assert (alone - full[:, 12:13]).abs().max() > 1e-2  # the last logits depend on the context


def _nemotron_name(name: str) -> str:
    """Our parameter name -> NemotronHForCausalLM's: one ``norm`` and one ``mixer`` per block, whichever of
    our mixer or FFN the block holds."""
    fixed = {"embed_tokens.weight": "model.embeddings.weight", "norm.weight": "model.norm_f.weight",
             "lm_head.weight": "lm_head.weight"}  # fmt: skip
    if name in fixed:
        return fixed[name]
    m = re.match(r"layers\.(\d+)\.(mixer_norm|ffn_norm|mixer|ffn)\.(.*)", name)
    assert m, name
    i, part, rest = m.groups()
    if part.endswith("norm"):
        return f"model.layers.{i}.norm.{rest}"
    rest = {"fc1.weight": "up_proj.weight", "fc2.weight": "down_proj.weight", "fc1.bias": "up_proj.bias",
            "fc2.bias": "down_proj.bias"}.get(rest, rest)  # fmt: skip
    return f"model.layers.{i}.mixer.{rest}"


@torch.no_grad()
def test_logits_equal_transformers_nemotron_h() -> None:
    """Our weights copied into transformers' NemotronHForCausalLM by name (every one of its parameters
    filled, none left over): the logits of a full forward agree. Both group the Mamba-2 gated RMSNorm the
    same way (d_inner / n_groups features per group, after y * SiLU(z))."""
    spec, ours = _tiny_model()
    theirs = hf_model(TINY_NEMOTRON, device="cpu").float().eval()
    params = dict(theirs.named_parameters())
    mapped = {_nemotron_name(n): p for n, p in ours.named_parameters()}
    assert set(mapped) == set(params), set(mapped) ^ set(params)
    for n, p in mapped.items():
        assert params[n].shape == p.shape, n
        params[n].copy_(p)
    ids = token_ids(spec.model.vocab_size, 2, 11)  # 11 tokens: not a multiple of the 4-token chunk
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = theirs(input_ids=ids, use_cache=False).logits
    got = ours(ids)
    assert got.abs().max() > 0.5
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=2e-4)


@torch.no_grad()
def test_flop_counter_equals_analytic() -> None:
    """torch's FlopCounterMode over a prefill and a decode step equals the analytic forward (attention
    ``full``: SDPA on the math backend is counted over seq x seq) and decode FLOPs; the none mixer adds
    nothing, relu2 is elementwise."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from godprof.analytic import Workload
    from godprof.analytic.flops import decode_flops_per_token, forward_flops
    from godprof.measure.flops import compare_flops, ssm_matmul_flops

    spec, model = _tiny_model()
    counts = count_params(spec)
    B, S = 2, 16
    ids = token_ids(spec.model.vocab_size, B, S)
    with sdpa_kernel(SDPBackend.MATH):
        prefill = FlopCounterMode(display=False)
        with prefill:
            model(ids)
        cache = model.allocate_cache(B, S + 1)
        model(ids, cache=cache)
        decode = FlopCounterMode(display=False)
        with decode:
            model(ids[:, :1], cache=cache)
    w = Workload(batch=B, seq=S, attention_flops="full")
    conv = B * S * sum(spec.mixers[m].conv_flops_per_token() for m in spec.layer_mixers)  # reported apart
    assert prefill.get_total_flops() == forward_flops(spec, counts, w) + ssm_matmul_flops(spec, B, S) + conv
    # decode: besides the analytic figure, per Mamba layer its conv step and the recurrent step's one
    # product the counter sees, y = C.h (2 x heads x head_dim x d_state; the state update is elementwise)
    mambas = [spec.mixers[m] for m in spec.layer_mixers if spec.mixers[m].type == "mamba2"]
    extra = sum(m.conv_flops_per_token() + 2 * m.num_heads * m.head_dim * m.d_state for m in mambas)
    assert decode.get_total_flops() == B * (decode_flops_per_token(spec, counts, S + 1) + extra)
    c = compare_flops(model, spec, B, S, last_only=True)
    torch_c = c.counters[0]
    assert torch_c.matmul == c.analytic_matmul and torch_c.by_category["conv"] == c.analytic_conv
    assert not any(k == "mixer:none" and v for k, v in torch_c.by_component.items())
