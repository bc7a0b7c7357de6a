"""Exact parameter counts against hand-derived and published figures."""

from __future__ import annotations

import pytest
from spec_docs import (
    MAMBA_130M,
    MAMBA_130M_TOTAL,
    TINY_GPT,
    TINY_GPT_TOTAL,
    TINY_GQA,
    TINY_GQA_MATMUL,
    TINY_GQA_TOTAL,
    TINY_MAMBA2,
    TINY_MAMBA2_TOTAL,
    TINY_MLA,
    TINY_MLA_TOTAL,
    TINY_MOE,
    TINY_MOE_ACTIVE,
    TINY_MOE_TOTAL,
    spec,
)

from godprof.analytic import count_params
from godprof.spec import load_spec


@pytest.mark.parametrize(
    ("doc", "total", "active"),
    [
        (TINY_GPT, TINY_GPT_TOTAL, TINY_GPT_TOTAL),
        (TINY_GQA, TINY_GQA_TOTAL, TINY_GQA_TOTAL),
        (TINY_MOE, TINY_MOE_TOTAL, TINY_MOE_ACTIVE),
        (TINY_MLA, TINY_MLA_TOTAL, TINY_MLA_TOTAL),
        (TINY_MAMBA2, TINY_MAMBA2_TOTAL, TINY_MAMBA2_TOTAL),
        (MAMBA_130M, MAMBA_130M_TOTAL, MAMBA_130M_TOTAL),
    ],
    ids=["gpt", "gqa", "moe", "mla", "mamba2", "mamba-130m"],
)
def test_hand_derived_totals(doc, total, active):
    c = count_params(spec(doc))
    assert c.total == total
    assert c.active == active
    assert sum(c.by_component.values()) == total
    assert sum(c.active_by_component.values()) == active


def test_llama_3_8b_exact():
    c = count_params(load_spec("llama-3-8b"))
    assert c.total == 8_030_261_248
    # embed and lm_head 128256*4096 = 525,336,576 each
    assert c.by_component["embedding"] == c.by_component["lm_head"] == 525_336_576
    # attention per layer 2*4096*4096 + 2*4096*1024 = 41,943,040; x32
    assert c.by_component["attention"] == 32 * 41_943_040
    assert c.active == c.total


def test_mixtral_8x7b_exact():
    c = count_params(load_spec("mixtral-8x7b"))
    assert c.total == 46_702_792_704
    assert c.active == 12_879_925_248
    # 8 experts x 3*4096*14336 per layer, 32 layers; 6 of 8 unused per token
    assert c.by_component["routed_experts"] == 32 * 8 * 176_160_768
    assert c.active_by_component["routed_experts"] == 32 * 2 * 176_160_768
    assert c.by_component["router"] == 32 * 4096 * 8


def test_components_by_family():
    moe = count_params(spec(TINY_MOE)).by_component
    assert moe["router"] == 2 * 68
    assert moe["shared_experts"] == 2 * (576 + 16)
    assert moe["mlp"] == 1536
    m2 = count_params(spec(TINY_MAMBA2)).by_component
    # gated norm (32) and block norm (16) per layer, final norm 16
    assert m2["norms"] == 2 * (32 + 16) + 16
    assert m2["ssm"] == 2 * (1600 + 320 + 12 + 512)
    assert m2["lm_head"] == 0


def test_layer_kinds_of_a_hybrid():
    c = count_params(load_spec("jamba-v0.1"))
    kinds = {k.kind: k.layers for k in c.by_layer_kind}
    # attention every 8th layer from 4 (4 layers), MoE every 2nd from 1 (16 layers)
    assert kinds == {"mamba1+mlp": 12, "mamba1+moe": 16, "attn+mlp": 4}
    assert (
        sum(k.layers * k.params_per_layer for k in c.by_layer_kind)
        + (c.by_component["embedding"] + c.by_component["lm_head"] + 4096)
        == c.total
    )


def test_matmul_weights_per_token():
    c = count_params(spec(TINY_GQA))
    assert c.matmul_per_token == TINY_GQA_MATMUL
    # a tied lm_head still runs its matmul: tiny-gpt = 2 x (1088 - 64 biases... ) computed from shapes:
    # q,k,v,o 4 x 16*16 = 1024; fc1 + fc2 2 x 16*64 = 2048; per layer 3072; x2 + lm_head 100*16 = 7744
    assert count_params(spec(TINY_GPT)).matmul_per_token == 7744


def test_mtp_module_counted_apart_and_on_request():
    """DeepSeek-V3's MTP module: the hub's 685B = 671B main model + "14B" MTP (arXiv:2412.19437, README)."""
    spec = load_spec("deepseek-v3")
    plain, with_mtp = count_params(spec), count_params(spec, include_mtp=True)
    assert plain.total == 671_026_404_352 and plain.mtp_total == 13_463_426_048 and not plain.mtp_included
    assert with_mtp.total == plain.total + plain.mtp_total == 684_489_830_400
    assert with_mtp.active == plain.active + plain.mtp_active
    assert with_mtp.by_component["mtp"] == plain.mtp_total and plain.by_component["mtp"] == 0
    assert with_mtp.active_by_component["routed_experts"] == plain.active_by_component["routed_experts"]
    # one MLA + MoE block (with its two block norms), enorm/hnorm/output norm, eh_proj, embedding and head copies
    h, v = 7168, 129280
    block = next(k for k in plain.by_layer_kind if k.ffn == "moe").params_per_layer
    assert plain.mtp_total == block + 3 * h + 2 * h * h + 2 * v * h
