"""Every bundled spec against the figures its vendor published, and `godprof specs`.

Published numbers are rounded: each spec's ``published.tolerance`` is 1% unless its ``published.note``
says why the vendor rounds harder. Specs that have a Hugging Face config among the importer's fixtures
must also equal that import exactly (which tests/test_hf_transformers.py pins to transformers).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from godprof.analytic import count_params
from godprof.cli.main import app
from godprof.hf import spec_from_config_file
from godprof.spec import FAMILIES, bundled_spec_names, load_spec

REQUIRED = {
    "llama-3-8b", "llama-3-70b", "llama-3.1-405b", "mistral-7b", "gemma-2-9b", "qwen2.5-7b", "gpt-2",
    "gpt-3-175b", "mixtral-8x7b", "mixtral-8x22b", "grok-1", "deepseek-v3", "qwen3-30b-a3b", "mamba-2.8b",
    "mamba2-2.7b", "falcon-mamba-7b", "jamba-v0.1", "god-1.8t",
}  # fmt: skip
NAMES = bundled_spec_names()
FIXTURES = Path(__file__).parent / "fixtures" / "hf"
runner = CliRunner()


def test_catalogue_has_every_required_spec() -> None:
    assert REQUIRED <= set(NAMES)


def test_bundled_specs_are_package_resources() -> None:
    """Found through importlib.resources (what a wheel install has), not through the checkout path."""
    root = resources.files("godprof.specs")
    assert {p.name for p in root.iterdir() if p.name.endswith(".yaml")} == {f"{n}.yaml" for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_spec_has_source_and_published_figures(name: str) -> None:
    spec = load_spec(name)
    assert spec.name == name
    assert spec.source and spec.published is not None and spec.published.params_total
    assert spec.description
    if spec.has_moe:
        assert spec.published.params_active, "MoE specs publish their active count too"
    if spec.published.tolerance > 0.01:
        assert spec.published.note and "hence" in spec.published.note, "a wider tolerance says why"


@pytest.mark.parametrize("name", NAMES)
def test_analytic_count_within_published_tolerance(name: str) -> None:
    spec = load_spec(name)
    c = count_params(spec)
    pub = spec.published
    assert pub is not None and pub.params_total
    tol = pub.tolerance
    assert abs(c.total / pub.params_total - 1) <= tol, f"total {c.total:,} vs published {pub.params_total:,}"
    if pub.params_active:
        assert abs(c.active / pub.params_active - 1) <= tol, f"active {c.active:,} vs {pub.params_active:,}"


# Spec -> the fixture holding the same published config.json: equal exactly, not just within 1%.
SAME_AS_FIXTURE = {
    "llama-3-8b": "llama-3-8b",
    "llama-3-70b": "llama-3-70b",
    "llama-3.1-405b": "llama-3.1-405b",
    "mixtral-8x22b": "mixtral-8x22b-v0.1",
    "mistral-7b": "mistral-7b-v0.1",
    "mixtral-8x7b": "mixtral-8x7b-v0.1",
    "qwen2.5-7b": "qwen2.5-7b",
    "gemma-2-9b": "gemma-2-9b",
    "gpt-2": "gpt2",
    "deepseek-v3": "deepseek-v3",
    "qwen3-30b-a3b": "qwen3-30b-a3b",
    "mamba-2.8b": "mamba-2.8b-hf",
    "falcon-mamba-7b": "falcon-mamba-7b",
    "jamba-v0.1": "jamba-v0.1",
    "gpt-j-6b": "gpt-j-6b",
    "mamba-codestral-7b": "mamba-codestral-7b",
    "qwen1.5-moe-a2.7b": "qwen1.5-moe-a2.7b",
    "qwen3-0.6b": "qwen3-0.6b",
    "phi-4": "phi-4",
    "deepseek-v3.2-exp": "deepseek-v3.2",
    "nemotron-h-56b": "nemotron-h-56b",
    "qwen3-next-80b-a3b": "qwen3-next-80b-a3b",
}


@pytest.mark.parametrize("name", sorted(SAME_AS_FIXTURE))
def test_spec_equals_its_config_json_import(name: str) -> None:
    spec = load_spec(name)
    imported = spec_from_config_file(FIXTURES / f"{SAME_AS_FIXTURE[name]}.json")
    a, b = count_params(spec), count_params(imported)
    assert (a.total, a.active, a.matmul_per_token) == (b.total, b.active, b.matmul_per_token)
    categories = [spec.mixers[m].category for m in spec.layer_mixers]
    assert categories == [imported.mixers[m].category for m in imported.layer_mixers]


# Specs written from a config.json that another project vendors (no fixture of ours: the copy is not a
# plain published config.json): the config as the spec's note gives it, in transformers' keys, built by
# transformers on the meta device, must equal the spec exactly.
VENDORED: dict[str, dict] = {
    "granite-4.0-h-small": {  # ibm-granite/granite-4.0-h-small's config.json fields as the spec's note gives them
        "model_type": "granitemoehybrid", "hidden_size": 4096, "num_hidden_layers": 40, "num_attention_heads": 32,
        "num_key_value_heads": 8, "num_local_experts": 72, "num_experts_per_tok": 10,
        "shared_intermediate_size": 1536, "intermediate_size": 768, "mamba_d_state": 128, "mamba_d_conv": 4,
        "mamba_expand": 2, "tie_word_embeddings": True, "vocab_size": 100352, "position_embedding_type": "nope",
        "layer_types": ["attention" if i % 10 == 5 else "mamba" for i in range(40)],
    },
    "falcon-h1-7b": {  # tiiuae/Falcon-H1-7B's config.json figures as the spec's note gives them
        "model_type": "falcon_h1", "hidden_size": 3072, "num_hidden_layers": 44, "num_attention_heads": 12,
        "num_key_value_heads": 2, "head_dim": 128, "intermediate_size": 12288, "vocab_size": 130048,
        "tie_word_embeddings": False, "mamba_d_state": 256, "mamba_n_groups": 1, "mamba_n_heads": 24,
        "mamba_d_head": 128, "mamba_d_ssm": 3072, "mamba_expand": 2, "mamba_d_conv": 4, "mamba_chunk_size": 128,
        "max_position_embeddings": 262144, "rope_theta": 1e11,
    },
    "nemotron-h-8b": {  # TensorRT-LLM's MAMBA_HYBRID_CONFIG, read as nemotron_h
        "model_type": "nemotron_h", "vocab_size": 131072, "hidden_size": 4096, "intermediate_size": 21504,
        "hybrid_override_pattern": "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-", "num_attention_heads": 32,
        "num_key_value_heads": 8, "attention_head_dim": 128, "mamba_num_heads": 128, "mamba_head_dim": 64,
        "n_groups": 8, "ssm_state_size": 128, "conv_kernel": 4, "expand": 2, "chunk_size": 256,
        "mlp_hidden_act": "relu2", "use_bias": False, "use_conv_bias": True, "mlp_bias": False,
        "tie_word_embeddings": False, "num_hidden_layers": 52, "max_position_embeddings": 8192,
    },
    "zamba2-7b": {  # NX-AI/mlstm_kernels' copy of Zyphra's config, keys renamed as the spec's note says
        "model_type": "zamba2", "vocab_size": 32000, "hidden_size": 3584, "num_hidden_layers": 81,
        "layers_block_type": ["hybrid" if i in (6, 11, 17, 23, 29, 35, 41, 47, 53, 59, 65, 71, 77) else "mamba"
                              for i in range(81)],
        "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 14336, "num_mem_blocks": 2,
        "adapter_rank": 128, "use_shared_attention_adapter": False, "use_mem_rope": True, "rope_theta": 10000,
        "max_position_embeddings": 4096, "mamba_d_state": 64, "mamba_d_conv": 4, "mamba_expand": 2, "mamba_ngroups": 2,
        "n_mamba_heads": 112,
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(VENDORED))
def test_spec_from_a_vendored_config_equals_transformers(name: str) -> None:
    import warnings

    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging

    from godprof.hf import spec_from_hf_config

    logging.set_verbosity_error()
    spec = load_spec(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_cfg = AutoConfig.for_model(**VENDORED[name])
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_cfg)
    ours, imported = count_params(spec), count_params(spec_from_hf_config(VENDORED[name], name))
    assert ours.total == imported.total == sum(p.numel() for p in model.parameters())
    assert (
        ours.matmul_per_token == imported.matmul_per_token
        and spec.layer_mixers == spec_from_hf_config(VENDORED[name], name).layer_mixers
    )


def test_exact_figures_by_hand() -> None:
    """Counts derived by hand from the papers' tables.

    GPT-3 175B (d = 12288, 96 layers, vocab 50257, 2048 positions, tied head): per layer 12 d^2 =
    1,811,939,328 weights + 13 d = 159,744 biases and LayerNorm parameters (qkv 3d, o d, fc1 4d, fc2 d,
    two LayerNorms 4d) -> 1,812,099,072; x 96 = 173,961,510,912; + tokens 50257 d = 617,558,016 +
    positions 2048 d = 25,165,824 + final LayerNorm 2d = 24,576 -> 174,604,259,328 (paper: 175.0B).

    god-1.8t (d = 32768, 132 layers, 16 KV heads of 128, SwiGLU 114688, vocab 128256, untied): per layer
    2 d^2 + 2 x d x 2048 + 3 x d x 114688 + 2d = 13,556,056,064; x 132 = 1,789,399,400,448; + 2 x
    128256 x d = 8,405,385,216 + final norm d -> 1,797,804,818,432.

    Mamba-2 2.7B (d = 2560, inner 5120, 80 heads, state 128, 1 group, vocab 50288, tied): in_proj
    d x (2 x 5120 + 2 x 128 + 80) = 27,074,560; conv (5120 + 256) x 5 = 26,880; dt_bias, A_log, D 240;
    gated norm 5120; out_proj 13,107,200; block norm 2560 -> 40,216,560; x 64 + 50288 d + d =
    2,702,599,680.
    """
    assert count_params(load_spec("gpt-3-175b")).total == 96 * 1_812_099_072 + 617_558_016 + 25_165_824 + 24_576
    assert count_params(load_spec("god-1.8t")).total == 132 * 13_556_056_064 + 8_405_385_216 + 32_768
    assert count_params(load_spec("mamba2-2.7b")).total == 64 * 40_216_560 + 50_288 * 2560 + 2560


def test_god_model_is_labelled_hypothetical() -> None:
    spec = load_spec("god-1.8t")
    assert spec.description is not None and spec.description.startswith("HYPOTHETICAL")
    assert "hypothetical" in (spec.source or "") and "hypothetical" in (spec.published.note or "")
    assert spec.family == "dense" and abs(count_params(spec).total / 1.8e12 - 1) < 0.01


def test_specs_yaml_keys_are_known() -> None:
    """Every bundled file parses with the safe loader and uses the family list the spec format defines."""
    for n in NAMES:
        doc = yaml.safe_load(resources.files("godprof.specs").joinpath(f"{n}.yaml").read_text(encoding="utf-8"))
        assert doc["family"] in FAMILIES and doc["name"] == n


def test_specs_command_json_lists_every_spec_with_integer_counts() -> None:
    r = runner.invoke(app, ["specs", "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == "godprof.specs/1"
    records = doc["specs"]
    assert [x["name"] for x in records] == NAMES
    by_name = {x["name"]: x for x in records}
    assert by_name["mixtral-8x7b"]["params"] == {"total": 46_702_792_704, "active": 12_879_925_248}
    assert by_name["deepseek-v3"]["published"]["active"] == 37_000_000_000
    for x in records:
        p = x["params"]
        assert isinstance(p["total"], int) and isinstance(p["active"], int)
        assert p["active"] <= p["total"]
        assert (p["active"] < p["total"]) == load_spec(x["name"]).has_moe  # routed experts only


def test_specs_command_family_filter_and_table() -> None:
    r = runner.invoke(app, ["specs", "--family", "ssm", "--format", "json"])
    assert r.exit_code == 0
    assert {x["name"] for x in json.loads(r.stdout)["specs"]} == {
        "mamba-2.8b", "mamba2-2.7b", "falcon-mamba-7b", "mamba-codestral-7b"
    }  # fmt: skip
    r = runner.invoke(app, ["specs", "--family", "sparse"])
    assert r.exit_code == 2 and "--family" in r.stderr
    r = runner.invoke(app, ["specs"])
    assert r.exit_code == 0 and "god-1.8t" in r.stdout and "Bundled specs" in r.stdout
