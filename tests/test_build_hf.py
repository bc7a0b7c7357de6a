"""The built model against the reference implementations in transformers (pure-PyTorch paths, CPU).

Each test builds a tiny spec, copies our weights into the matching transformers model by name (every
reference parameter must be filled, none left over) and compares the logits of a full forward. This
pins the module structure (and therefore ``count_params``) and the maths (rotary, GQA, MLA, routing,
selective scan, SSD, gated norm) to the implementations the published checkpoints run on.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
import yaml

from godprof.build import build_model
from godprof.spec import parse_spec

transformers = pytest.importorskip("transformers")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run on one thread


def _spec(text: str):
    return parse_spec(yaml.safe_load(text), "inline")


def _hf_name(name: str, arch: str) -> str:
    """Our parameter name -> the transformers name for ``arch`` (llama-like, mamba, qwen2_moe)."""
    ssm = arch == "mamba"
    root = "backbone" if ssm else "model"
    fixed = {
        "embed_tokens.weight": f"{root}.embeddings.weight" if ssm else "model.embed_tokens.weight",
        "norm.weight": f"{root}.norm_f.weight" if ssm else "model.norm.weight",
        "lm_head.weight": "lm_head.weight",
    }
    if name in fixed:
        return fixed[name]
    m = re.match(r"layers\.(\d+)\.(.*)", name)
    assert m, name
    i, rest = m.groups()
    shared = "shared_expert" if arch == "qwen2_moe" else "shared_experts"
    for ours, theirs in (
        ("mixer_norm.", "norm." if ssm else "input_layernorm."),
        ("ffn_norm.", "post_attention_layernorm."),
        ("mixer.", "mixer." if ssm else "self_attn."),
        ("ffn.router.", "mlp.gate."),
        ("ffn.experts.w_in", "mlp.experts.gate_up_proj"),
        ("ffn.experts.w_out", "mlp.experts.down_proj"),
        ("ffn.shared_gate.", "mlp.shared_expert_gate."),
        ("ffn.shared.", f"mlp.{shared}."),
        ("ffn.", "mlp."),
    ):
        if rest.startswith(ours):
            return f"{root}.layers.{i}.{theirs}{rest[len(ours) :]}"
    raise AssertionError(name)


@torch.no_grad()
def _compare(spec_text: str, hf_model, arch: str, seq: int = 11) -> None:
    spec = _spec(spec_text)
    ours = build_model(spec, "cpu", torch.float32, init_std=0.15, seed=2)
    theirs_params = dict(hf_model.named_parameters())  # tied weights appear once
    mapped = {_hf_name(n, arch): p for n, p in ours.named_parameters()}
    assert set(mapped) == set(theirs_params), set(mapped) ^ set(theirs_params)
    for n, p in mapped.items():
        assert theirs_params[n].shape == p.shape, n
        theirs_params[n].copy_(p)
    hf_model.eval()
    ids = torch.randint(0, spec.model.vocab_size, (2, seq), generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = hf_model(input_ids=ids, use_cache=False).logits
    got = ours(ids)
    assert got.abs().max() > 0.5  # logits far from zero: the comparison below is not vacuous
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=2e-4)


def test_llama_matches_transformers() -> None:
    spec = """
name: t
family: dense
model: {vocab_size: 97, hidden_size: 32, num_layers: 2}
mixers: {attn: {type: attention, num_heads: 4, num_kv_heads: 2, head_dim: 8, rope_theta: 500000}}
ffns: {mlp: {type: mlp, intermediate_size: 40}}
"""
    cfg = transformers.LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
    )  # fmt: skip
    _compare(spec, transformers.LlamaForCausalLM(cfg), "llama")


def test_mixtral_matches_transformers() -> None:
    spec = """
name: t
family: moe
model: {vocab_size: 97, hidden_size: 32, num_layers: 2}
mixers: {attn: {type: attention, num_heads: 4, num_kv_heads: 1, head_dim: 8, rope_theta: 1000000}}
ffns: {moe: {type: moe, num_experts: 4, top_k: 2, expert_intermediate_size: 24}}
"""
    cfg = transformers.MixtralConfig(
        vocab_size=97, hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=8, num_local_experts=4, num_experts_per_tok=2, rms_norm_eps=1e-5,
        rope_theta=1000000.0, tie_word_embeddings=False,
    )  # fmt: skip
    _compare(spec, transformers.MixtralForCausalLM(cfg), "llama")


def test_qwen2_moe_matches_transformers() -> None:
    """q/k/v biases, routed experts plus a shared expert behind a sigmoid gate."""
    spec = """
name: t
family: moe
model: {vocab_size: 97, hidden_size: 32, num_layers: 2}
mixers: {attn: {type: attention, num_heads: 4, num_kv_heads: 2, head_dim: 8, qkv_bias: true}}
ffns:
  moe: {type: moe, num_experts: 4, top_k: 2, expert_intermediate_size: 16, num_shared_experts: 1,
        shared_intermediate_size: 48, shared_expert_gate: true}
"""
    cfg = transformers.Qwen2MoeConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
        shared_expert_intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        num_experts=4, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1, rms_norm_eps=1e-5,
        tie_word_embeddings=False, use_sliding_window=False,
    )  # fmt: skip
    _compare(spec, transformers.Qwen2MoeForCausalLM(cfg), "qwen2_moe")


def test_deepseek_v3_mla_matches_transformers() -> None:
    """MLA with q_lora and biases (all-dense layers: DeepSeek's sigmoid group routing is not modelled)."""
    spec = """
name: t
family: dense
model: {vocab_size: 97, hidden_size: 32, num_layers: 2}
mixers:
  mla: {type: mla, num_heads: 4, q_lora_rank: 24, kv_lora_rank: 16, qk_nope_head_dim: 8, qk_rope_head_dim: 4,
        v_head_dim: 6, bias: true}
ffns: {mlp: {type: mlp, intermediate_size: 40}}
"""
    cfg = transformers.DeepseekV3Config(
        vocab_size=97, hidden_size=32, intermediate_size=40, moe_intermediate_size=8, num_hidden_layers=2,
        first_k_dense_replace=2, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=24, kv_lora_rank=16,
        qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6, attention_bias=True, rope_interleave=False,
        rms_norm_eps=1e-5, tie_word_embeddings=False, n_routed_experts=4, num_experts_per_tok=2, n_group=1,
        topk_group=1,
    )  # fmt: skip
    _compare(spec, transformers.DeepseekV3ForCausalLM(cfg), "llama")


def test_mamba_matches_transformers() -> None:
    spec = """
name: t
family: ssm
model: {vocab_size: 97, hidden_size: 32, num_layers: 2, tie_embeddings: true}
mixers: {mamba: {type: mamba1, d_state: 8, d_conv: 4, expand: 2, dt_rank: auto}}
"""
    cfg = transformers.MambaConfig(
        vocab_size=97, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4,
        time_step_rank="auto", layer_norm_epsilon=1e-5, tie_word_embeddings=True, use_mambapy=False,
    )  # fmt: skip
    _compare(spec, transformers.MambaForCausalLM(cfg), "mamba", seq=13)


def test_mamba2_matches_transformers() -> None:
    """13 tokens in chunks of 4; one group (transformers normalises the gated norm over all of d_inner)."""
    spec = """
name: t
family: ssm
model: {vocab_size: 97, hidden_size: 32, num_layers: 2, tie_embeddings: true}
mixers: {m2: {type: mamba2, d_state: 8, d_conv: 4, expand: 2, head_dim: 8, n_groups: 1, chunk_size: 4}}
"""
    cfg = transformers.Mamba2Config(
        vocab_size=97, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4, num_heads=8,
        head_dim=8, n_groups=1, chunk_size=4, layer_norm_epsilon=1e-5, tie_word_embeddings=True,
    )  # fmt: skip
    _compare(spec, transformers.Mamba2ForCausalLM(cfg), "mamba", seq=13)
