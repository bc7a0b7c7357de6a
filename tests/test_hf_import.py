"""The config.json importer without transformers: quirks with hand-derived counts, errors, the YAML
writer's round trip, the layout compressor, `godprof import`, and that nothing touches the network."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from godprof.analytic import count_params
from godprof.cli.main import app
from godprof.errors import SpecError
from godprof.hf import (
    SUPPORTED_MODEL_TYPES,
    _layout,
    read_config_file,
    spec_document_from_hf_config,
    spec_from_config_file,
    spec_from_hf_config,
    spec_yaml,
)
from godprof.spec import load_spec, parse_spec, parse_spec_text

FIXTURES = Path(__file__).parent / "fixtures" / "hf"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))
runner = CliRunner()


def fixture(stem: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{stem}.json").read_text(encoding="utf-8"))


def write(tmp_path: Path, cfg: Any, name: str = "config.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(cfg) if not isinstance(cfg, str) else cfg, encoding="utf-8")
    return p


# --------------------------------------------------------------------------- quirks, hand-derived


def test_falcon_mamba_intermediate_size_overrides_expand() -> None:
    """falcon-mamba-7b says expand 16 but intermediate_size 8192 (= 2 x 4096); the explicit size wins.

    Per layer (d = 4096, di = 8192, n = 16, r = 256): in_proj d x 2di = 67,108,864; conv di x 4 + di =
    40,960; x_proj di x (r + 2n) = 2,359,296; dt_proj r x di + di = 2,105,344; A_log di x n = 131,072;
    D di = 8,192; out_proj di x d = 33,554,432; block norm d = 4,096 -> 105,312,256.
    x 64 = 6,739,984,384; + embedding and untied head 2 x 65,024 x 4,096 = 532,676,608; + final norm
    4,096 -> 7,272,665,088. With expand 16 the inner size would be 65,536 and the total ~58B.
    """
    spec = spec_from_hf_config(fixture("falcon-mamba-7b"), "falcon")
    assert spec.mixers["mamba"].d_inner == 8192
    assert count_params(spec).total == 64 * 105_312_256 + 2 * 65_024 * 4_096 + 4_096 == 7_272_665_088


def test_mamba_auto_dt_rank_and_expand() -> None:
    cfg = {"model_type": "mamba", "hidden_size": 2560, "num_hidden_layers": 1, "vocab_size": 10}
    m = spec_from_hf_config(cfg, "m").mixers["mamba"]
    assert (m.d_inner, m.dt_rank, m.d_state) == (5120, math.ceil(2560 / 16), 16)


def test_qwen3_explicit_head_dim_and_tied_head() -> None:
    """Qwen3-0.6B: 16 heads of 128 on a 1024 width (not 1024/16 = 64), q/k norms, tied embeddings.

    Per layer: q 1024 x 2048 + k, v 2 x 1024 x 1024 + o 2048 x 1024 = 6,291,456; q/k norms 2 x 128;
    MLP 3 x 1024 x 3072 = 9,437,184; 2 norms x 1024 -> 15,730,944. x 28 = 440,466,432; embedding
    151,936 x 1024 = 155,582,464 (head tied); final norm 1024 -> 596,049,920.
    """
    spec = spec_from_hf_config(fixture("qwen3-0.6b"), "qwen3")
    attn = spec.mixers["attn"]
    assert (attn.head_dim, attn.qk_norm, spec.model.tie_embeddings) == (128, True, True)
    assert count_params(spec).total == 28 * 15_730_944 + 155_582_464 + 1024 == 596_049_920


def test_qwen3_head_dim_defaults_to_128_like_transformers() -> None:
    cfg = fixture("qwen3-0.6b")
    del cfg["head_dim"]
    assert spec_from_hf_config(cfg, "q").mixers["attn"].head_dim == 128  # Qwen3Config default, not 1024/16


def test_qwen2_biases_on_qkv_only() -> None:
    attn = spec_from_hf_config(fixture("qwen2.5-7b"), "q").mixers["attn"]
    assert (attn.qkv_bias, attn.o_bias, attn.head_dim) == (True, False, 3584 // 28)


def test_gemma2_alternating_window_sandwich_norm_tied() -> None:
    spec = spec_from_hf_config(fixture("gemma-2-9b"), "g")
    assert spec.layer_mixers[:4] == ("local", "global", "local", "global")
    assert spec.mixers["local"].sliding_window == 4096 and spec.mixers["global"].sliding_window is None
    assert spec.model.sandwich_norm and spec.model.tie_embeddings
    assert spec.model.embedding_multiplier == pytest.approx(math.sqrt(3584))
    assert spec.ffns["mlp"].activation == "gelu_tanh"


def test_mistral_window_default_and_null() -> None:
    cfg = fixture("mistral-7b-v0.1")
    assert spec_from_hf_config(cfg, "m").mixers["attn"].sliding_window == 4096
    cfg["sliding_window"] = None  # v0.2 and later
    assert spec_from_hf_config(cfg, "m").mixers["attn"].sliding_window is None
    del cfg["sliding_window"]  # absent: transformers' MistralConfig default is 4096
    assert spec_from_hf_config(cfg, "m").mixers["attn"].sliding_window == 4096


def test_qwen2_moe_sparse_step_mlp_only_and_shared_gate() -> None:
    cfg = fixture("qwen1.5-moe-a2.7b")
    cfg.update(num_hidden_layers=8, decoder_sparse_step=2, mlp_only_layers=[5])
    spec = spec_from_hf_config(cfg, "q")
    # experts where (i + 1) % 2 == 0 and i not in [5]: layers 1, 3, 7
    assert [i for i, f in enumerate(spec.layer_ffns) if f == "moe"] == [1, 3, 7]
    moe = spec.ffns["moe"]
    assert (moe.num_shared_experts, moe.shared_intermediate_size, moe.shared_expert_gate) == (1, 5632, True)


def test_deepseek_dense_first_layers_and_moe_layer_freq() -> None:
    cfg = fixture("deepseek-v2-lite")
    spec = spec_from_hf_config(cfg, "d")
    assert spec.layer_ffns[0] == "mlp" and set(spec.layer_ffns[1:]) == {"moe"}
    assert spec.mixers["mla"].q_lora_rank is None  # V2-Lite projects q at full rank
    cfg.update(first_k_dense_replace=3, moe_layer_freq=2)  # DeepSeek reference code: i >= k and i % freq == 0
    spec = spec_from_hf_config(cfg, "d")
    assert [i for i, f in enumerate(spec.layer_ffns) if f == "moe"] == list(range(4, 27, 2))


def test_deepseek_v3_counts_without_mtp() -> None:
    """671,026,404,352 = the published 671B; the 14B multi-token-prediction layer is not in it."""
    c = count_params(spec_from_hf_config(fixture("deepseek-v3"), "d"))
    assert c.total == 671_026_404_352
    assert abs(c.total / 671e9 - 1) < 1e-4


def test_jamba_periods_and_offsets() -> None:
    spec = spec_from_hf_config(fixture("jamba-v0.1"), "j")
    assert [i for i, m in enumerate(spec.layer_mixers) if m == "attn"] == [4, 12, 20, 28]
    assert [i for i, f in enumerate(spec.layer_ffns) if f == "moe"] == list(range(1, 32, 2))
    assert spec.mixers["attn"].rope is False and spec.mixers["mamba"].inner_norms


def test_bamba_attention_indices_and_half_rotary() -> None:
    spec = spec_from_hf_config(fixture("bamba-9b"), "b")
    assert [i for i, m in enumerate(spec.layer_mixers) if m == "attn"] == [9, 18, 27]
    assert spec.mixers["attn"].rotary_dim == 64  # partial_rotary_factor 0.5 of head_dim 128
    assert spec.mixers["mamba2"].num_heads == 128


def test_gptj_shared_norm_and_head_bias() -> None:
    """GPT-J 6B: one LayerNorm per block, biased MLP, untied head with a bias.

    Per layer: q, k, v, o 4 x 4096^2 = 67,108,864; fc_in 4096 x 16384 + 16384 and fc_out 16384 x 4096 +
    4096 = 134,238,208; ln_1 2 x 4096 -> 201,355,264. x 28 = 5,637,947,392; wte 50,400 x 4096 =
    206,438,400; lm_head 206,438,400 + 50,400 bias; ln_f 8,192 -> 6,050,882,784.
    """
    spec = spec_from_hf_config(fixture("gpt-j-6b"), "j")
    m = spec.model
    assert (m.parallel_residual, m.parallel_shared_norm, m.lm_head_bias) == (True, True, True)
    assert spec.mixers["attn"].rotary_dim == 64
    assert count_params(spec).total == 28 * 201_355_264 + 2 * 206_438_400 + 50_400 + 8_192 == 6_050_882_784


def test_gpt_neox_partial_rotary_and_rope_parameters() -> None:
    cfg = fixture("gpt-neox-20b")
    assert spec_from_hf_config(cfg, "n").mixers["attn"].rotary_dim == 24  # 0.25 x 96
    del cfg["rotary_pct"]
    cfg["rope_parameters"] = {"rope_theta": 5000.0, "partial_rotary_factor": 0.5}  # transformers 5 spelling
    attn = spec_from_hf_config(cfg, "n").mixers["attn"]
    assert (attn.rotary_dim, attn.rope_theta) == (48, 5000.0)


def test_mamba2_heads_must_fill_the_inner_size() -> None:
    cfg = fixture("mamba-codestral-7b")
    cfg["num_heads"] = 100
    with pytest.raises(SpecError) as e:
        spec_from_hf_config(cfg, "m.json")
    assert "num_heads" in str(e.value) and "m.json" in str(e.value)


# --------------------------------------------------------------------------- errors


def test_unknown_model_type_is_one_line_listing_supported(tmp_path: Path) -> None:
    p = write(tmp_path, {"model_type": "t5", "d_model": 512})
    with pytest.raises(SpecError) as e:
        spec_from_config_file(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "'t5'" in msg
    for t in SUPPORTED_MODEL_TYPES:
        assert t in msg


def test_missing_model_type(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="model_type"):
        spec_from_config_file(write(tmp_path, {"hidden_size": 8}))


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, '{\n  "model_type": "llama",\n  "hidden_size": 4096,,\n}')
    with pytest.raises(SpecError) as e:
        spec_from_config_file(p)
    assert f"{p}:3:" in str(e.value) and "invalid JSON" in str(e.value)


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="JSON object"):
        spec_from_config_file(write(tmp_path, [1, 2]))


@pytest.mark.parametrize(
    ("stem", "change", "key"),
    [
        ("llama-3-8b", {"hidden_size": "4096"}, "hidden_size"),
        ("llama-3-8b", {"num_hidden_layers": 0}, "num_hidden_layers"),
        ("llama-3-8b", {"attention_bias": "no"}, "attention_bias"),
        ("llama-3-8b", {"hidden_act": "swiglu-ish"}, "hidden_act"),
        ("llama-3-8b", {"num_key_value_heads": 7}, "num_key_value_heads"),
        ("mixtral-8x7b-v0.1", {"num_local_experts": 2.5}, "num_local_experts"),
        ("qwen1.5-moe-a2.7b", {"mlp_only_layers": "0"}, "mlp_only_layers"),
        ("jamba-v0.1", {"attn_layer_offset": 8}, "attn_layer_offset"),
        ("bamba-9b", {"attn_layer_indices": [40]}, "attn_layer_indices"),
        ("gemma-2-9b", {"layer_types": ["full_attention"]}, "layer_types"),
        ("deepseek-v3", {"q_lora_rank": "1536"}, "q_lora_rank"),
        ("gpt2", {"n_head": 7}, "n_head"),
    ],
)
def test_ill_typed_key_is_named(tmp_path: Path, stem: str, change: dict, key: str) -> None:
    cfg = fixture(stem) | change
    p = write(tmp_path, cfg)
    with pytest.raises(SpecError) as e:
        spec_from_config_file(p)
    assert f"{p}:1: {key}:" in str(e.value)  # written on one line (json.dumps): every key is on line 1


def test_missing_required_key_is_named(tmp_path: Path) -> None:
    cfg = fixture("llama-3-8b")
    del cfg["intermediate_size"]
    p = write(tmp_path, cfg)
    with pytest.raises(SpecError) as e:
        spec_from_config_file(p)
    assert str(e.value) == f"{p}: intermediate_size: missing required key"


def test_load_spec_dispatches_json(tmp_path: Path) -> None:
    p = write(tmp_path, fixture("mixtral-8x7b-v0.1"), "config.json")
    spec = load_spec(p)
    assert spec.name == tmp_path.name  # config.json is named after its folder
    assert count_params(spec).active == 12_879_925_248


# --------------------------------------------------------------------------- YAML round trip


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[p.stem for p in FIXTURE_FILES])
def test_yaml_round_trip(path: Path) -> None:
    """The YAML `godprof import` writes loads back to the same layers and the same exact counts."""
    doc = spec_document_from_hf_config(read_config_file(path), str(path))
    direct = parse_spec(doc, str(path))
    back = parse_spec_text(spec_yaml(doc), "generated.yaml")
    assert (back.layer_mixers, back.layer_ffns) == (direct.layer_mixers, direct.layer_ffns)
    assert back.mixers == direct.mixers and back.ffns == direct.ffns and back.model == direct.model
    a, b = count_params(direct), count_params(back)
    assert (a.total, a.active, a.matmul_per_token) == (b.total, b.active, b.matmul_per_token)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=40))
def test_layout_compressor_resolves_to_the_same_layers(names: list[str]) -> None:
    doc = {
        "name": "t",
        "family": "dense",
        "model": {"vocab_size": 8, "hidden_size": 8, "num_layers": len(names)},
        "mixers": {"a": {"type": "attention", "num_heads": 2}, "b": {"type": "attention", "num_heads": 4}},
        "ffns": {"m": {"type": "mlp", "intermediate_size": 8}},
        "layout": {"mixer": _layout(names)},
    }
    assert list(parse_spec(doc).layer_mixers) == names


def test_layout_compressor_prefers_patterns() -> None:
    assert _layout(["x"] * 5) == "x"
    assert _layout(["m", "e"] * 4) == {"default": "m", "every": {"period": 2, "offset": 1, "use": "e"}}
    assert _layout(["d"] * 3 + ["e"] * 58) == {"default": "e", "first": {"count": 3, "use": "d"}}
    bamba = ["s"] * 32
    for i in (9, 18, 27):
        bamba[i] = "a"
    assert _layout(bamba) == {"default": "s", "layers": {"indices": [9, 18, 27], "use": "a"}}
    assert _layout(["a", "b", "c"]) == ["a", "b", "c"]


# --------------------------------------------------------------------------- CLI and network


def test_import_cli_stdout_and_file(tmp_path: Path) -> None:
    src = write(tmp_path, fixture("qwen3-30b-a3b"), "qwen3.json")
    r = runner.invoke(app, ["import", str(src)])
    assert r.exit_code == 0, r.output
    assert count_params(parse_spec_text(r.stdout, "out")).active == 3_353_032_704
    out = tmp_path / "q.yaml"
    r = runner.invoke(app, ["import", str(src), "-o", str(out), "--name", "my-qwen"])
    assert r.exit_code == 0 and "wrote" in r.stderr
    spec = load_spec(out)
    assert spec.name == "my-qwen" and count_params(spec).total == 30_532_122_624
    r = runner.invoke(app, ["import", str(src), "-o", str(out)])
    assert r.exit_code == 2 and "--force" in r.stderr
    assert runner.invoke(app, ["import", str(src), "-o", str(out), "--force"]).exit_code == 0


def test_import_cli_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    r = runner.invoke(app, ["import", str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "no such file" in r.stderr
    r = runner.invoke(app, ["import", str(write(tmp_path, {"model_type": "bert"}))])
    assert r.exit_code == 2 and "unsupported model_type 'bert'" in r.stderr and "Traceback" not in r.output


def test_estimate_takes_a_config_json(tmp_path: Path) -> None:
    p = write(tmp_path, fixture("jamba-v0.1"), "jamba.json")
    r = runner.invoke(app, ["estimate", str(p), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["params"]["total"] == 51_570_323_328


def test_import_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for p in FIXTURE_FILES:
        spec_yaml(spec_document_from_hf_config(read_config_file(p), str(p)))
        count_params(spec_from_config_file(p))


def test_unsupported_model_type_names_the_nearest_supported() -> None:
    with pytest.raises(SpecError) as e:
        spec_from_hf_config({**fixture("qwen3-30b-a3b"), "model_type": "qwen3_moe_x"}, "x.json")
    assert "nearest supported is 'qwen3_moe'" in str(e.value)


def test_switched_off_window_is_not_validated() -> None:
    """transformers 5 saves ``sliding_window: 0`` beside ``use_sliding_window: false`` (qwen2_moe)."""
    cfg = {**fixture("qwen1.5-moe-a2.7b"), "use_sliding_window": False, "sliding_window": 0}
    assert (
        count_params(spec_from_hf_config(cfg, "q.json")).total
        == count_params(spec_from_hf_config(fixture("qwen1.5-moe-a2.7b"), "q.json")).total
    )
    with pytest.raises(SpecError, match="sliding_window"):
        spec_from_hf_config({**cfg, "use_sliding_window": True}, "q.json")


def test_wrapper_imports_its_text_config_only() -> None:
    """A multimodal wrapper (model_type not supported, text_config supported) counts its text model and says
    so; errors inside the text model name the key under text_config."""
    text = fixture("mistral-7b-v0.1")
    wrapped = {"model_type": "mistral3", "text_config": text, "vision_config": {"hidden_size": 1024}}
    doc = spec_document_from_hf_config(wrapped, "w.json")
    assert "text_config (mistral) only" in doc["description"]
    assert count_params(parse_spec(doc, "w.json")).total == count_params(spec_from_hf_config(text, "m.json")).total
    with pytest.raises(SpecError) as e:
        spec_from_hf_config({**wrapped, "text_config": {**text, "num_key_value_heads": 5}}, "w.json")
    assert "text_config.num_key_value_heads" in str(e.value)


def test_real_config_of_an_unknown_model_type_fails_cleanly(tmp_path: Path) -> None:
    """A published config under a model_type godprof does not know (DeepSeek-V4-Flash's, renamed: every
    architecture once kept here as unsupported is now imported): one error line naming the nearest
    supported model_type, exit 2, no traceback."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**fixture("deepseek-v4"), "model_type": "deepseek_v5"}), encoding="utf-8")
    r = runner.invoke(app, ["estimate", str(path)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "unsupported model_type 'deepseek_v5'" in r.stderr and "the nearest supported is 'deepseek_v4'" in r.stderr
