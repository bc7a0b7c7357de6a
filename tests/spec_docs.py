"""Small specs with hand-derived figures, written as YAML text so tests exercise the real loader."""

from __future__ import annotations

from godprof.spec import Spec, parse_spec_text

# GPT-2 style: MHA with biases, LayerNorm with bias, learned positions, tied embeddings, plain GELU MLP.
TINY_GPT = """
name: tiny-gpt
family: dense
model:
  vocab_size: 100
  hidden_size: 16
  num_layers: 2
  norm: layernorm
  position_embedding: learned
  max_position_embeddings: 32
  tie_embeddings: true
mixers:
  attn: {type: attention, num_heads: 4, qkv_bias: true, o_bias: true, rope: false}
ffns:
  mlp: {type: mlp, intermediate_size: 64, gated: false, activation: gelu, bias: true}
"""
# per layer: q,k,v 3 x (16*16 + 16) = 816; o 16*16 + 16 = 272; fc1 16*64 + 64 = 1088; fc2 64*16 + 16 = 1040;
# two LayerNorms 2 x (16 + 16) = 64 -> 3280; x2 layers = 6560; wte 100*16 = 1600; wpe 32*16 = 512;
# final LayerNorm 32; lm_head tied -> 8704
TINY_GPT_TOTAL = 8704

# Llama style with GQA and qk-norm (Qwen3), SwiGLU, untied.
TINY_GQA = """
name: tiny-gqa
family: dense
model: {vocab_size: 50, hidden_size: 32, num_layers: 3}
mixers:
  attn: {type: attention, num_heads: 4, num_kv_heads: 2, qk_norm: true}
ffns:
  mlp: {type: mlp, intermediate_size: 48}
"""
# head_dim = 32 / 4 = 8. q 32*32 = 1024; k, v 32*(2*8) = 512 each; o 1024 -> 3072; qk-norm 2*8 = 16;
# SwiGLU 3*32*48 = 4608; two RMSNorms 64 -> 7760 per layer; x3 = 23280; embed 1600 + lm_head 1600 +
# final norm 32 -> 26512
TINY_GQA_TOTAL = 26512
# matmul weights per token: 3 x (3072 + 4608) + lm_head 50*32 = 24640
TINY_GQA_MATMUL = 24640

# MoE with a dense first layer, a shared expert with its gate, and a router bias.
TINY_MOE = """
name: tiny-moe
family: moe
model: {vocab_size: 64, hidden_size: 16, num_layers: 3}
mixers:
  attn: {type: attention, num_heads: 2, num_kv_heads: 1, head_dim: 8}
ffns:
  mlp: {type: mlp, intermediate_size: 32}
  moe:
    type: moe
    num_experts: 4
    top_k: 2
    expert_intermediate_size: 8
    router_bias: true
    num_shared_experts: 1
    shared_intermediate_size: 12
    shared_expert_gate: true
layout:
  ffn: {default: moe, first: {count: 1, use: mlp}}
"""
# attention: q 16*16 = 256, k 16*8 = 128, v 128, o 256 -> 768. Dense MLP 3*16*32 = 1536.
# MoE: router 16*4 + 4 = 68; experts 4 x 3*16*8 = 4 x 384 = 1536; shared 3*16*12 = 576; gate 16 -> 2196.
# norms 2*16 = 32 per layer. Layer 0: 768 + 1536 + 32 = 2336; layers 1-2: 768 + 2196 + 32 = 2996 each.
# embed 1024 + lm_head 1024 + final 16 = 2064. Total 2336 + 2*2996 + 2064 = 10392.
# Active: 2 unused experts x 384 per MoE layer x 2 layers = 1536 fewer -> 8856.
TINY_MOE_TOTAL = 10392
TINY_MOE_ACTIVE = 8856

# DeepSeek-style multi-head latent attention.
TINY_MLA = """
name: tiny-mla
family: dense
model: {vocab_size: 32, hidden_size: 16, num_layers: 1}
mixers:
  mla:
    type: mla
    num_heads: 2
    q_lora_rank: 8
    kv_lora_rank: 6
    qk_nope_head_dim: 4
    qk_rope_head_dim: 2
    v_head_dim: 3
ffns:
  mlp: {type: mlp, intermediate_size: 16}
"""
# q_a 16*8 = 128; q_a_layernorm 8; q_b 8 x 2*(4+2) = 96; kv_a 16 x (6+2) = 128; kv_a_layernorm 6;
# kv_b 6 x 2*(4+3) = 84; o 2*3 x 16 = 96 -> 546. MLP 3*16*16 = 768; norms 32 -> layer 1346.
# embed 512 + lm_head 512 + final 16 -> 2386. KV per token: latent 6 + rope key 2 = 8 values.
TINY_MLA_TOTAL = 2386

# Mamba-2 with two groups, no FFN, tied embeddings.
TINY_MAMBA2 = """
name: tiny-mamba2
family: ssm
model: {vocab_size: 40, hidden_size: 16, num_layers: 2, tie_embeddings: true}
mixers:
  m2: {type: mamba2, d_state: 8, d_conv: 4, expand: 2, head_dim: 8, n_groups: 2, chunk_size: 4}
"""
# d_inner 32, heads 32/8 = 4. in_proj 16 x (2*32 + 2*2*8 + 4) = 16*100 = 1600; conv_dim 32 + 2*2*8 = 64;
# conv 64*4 + 64 = 320; dt_bias, A_log, D 3*4 = 12; gated norm 32; out_proj 32*16 = 512 -> mixer 2476;
# one block norm 16 -> 2492 per layer; x2 = 4984; embed 640 (tied) + final norm 16 -> 5640.
# State per layer and sequence: conv 64*4 = 256 + ssm 4*8*8 = 256 -> 512 values.
TINY_MAMBA2_TOTAL = 5640

# state-spaces/mamba-130m.
MAMBA_130M = """
name: mamba-130m
family: ssm
model: {vocab_size: 50280, hidden_size: 768, num_layers: 24, tie_embeddings: true}
mixers:
  mamba: {type: mamba1, d_state: 16, d_conv: 4, expand: 2, dt_rank: auto}
"""
# d_inner 1536, dt_rank ceil(768/16) = 48. in_proj 768*3072 = 2,359,296; conv 1536*4 + 1536 = 7,680;
# x_proj 1536*(48 + 32) = 122,880; dt_proj 48*1536 + 1536 = 75,264; A_log 1536*16 = 24,576; D 1,536;
# out_proj 1536*768 = 1,179,648 -> 3,770,880 + norm 768 = 3,771,648 per layer; x24 = 90,519,552;
# embed 50280*768 = 38,615,040 (tied) + final norm 768 -> 129,135,360
MAMBA_130M_TOTAL = 129_135_360


def spec(text: str) -> Spec:
    return parse_spec_text(text, "test.yaml")
