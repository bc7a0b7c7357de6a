"""Weight formats as shipped: MXFP4, NVFP4, fp8 with 128x128 block scales, per-component formats (a spec's
``weights:`` section), the quantization_config import, and `godprof estimate` with and without --dtype.

Every byte count below is worked out by hand in the comments; the code under test never computes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from godprof.analytic.memory import weights_by_format, weights_bytes
from godprof.analytic.params import count_params
from godprof.cli.main import app
from godprof.dtypes import DTYPES, WeightFormats, block_scaled_bytes, get_dtype
from godprof.errors import SpecError
from godprof.hf import SUPPORTED_MODEL_TYPES, spec_document_from_hf_config, spec_yaml, weights_from_quantization_config
from godprof.spec import load_spec, parse_spec, parse_spec_text

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures"

# --------------------------------------------------------------------------- one matrix


@pytest.mark.parametrize(
    ("fmt", "n_in", "n_out", "expected"),
    [
        # mxfp4, Linear(70 -> 3): per row ceil(70 x 4 / 8) = 35 bytes of E2M1 -> 105; E8M0 scales: ceil(70 / 32) = 3
        # per row (the last block holds 6 elements) x 3 rows x 1 byte = 9. 105 + 9 = 114.
        ("mxfp4", 70, 3, 114),
        # mxfp4, Linear(33 -> 2): an odd row packs into ceil(33 x 4 / 8) = 17 bytes -> 34; scales ceil(33/32) = 2
        # per row -> 4. 34 + 4 = 38.
        ("mxfp4", 33, 2, 38),
        # nvfp4, Linear(70 -> 3): 105 bytes of E2M1; E4M3 scales ceil(70 / 16) = 5 per row x 3 = 15; one fp32
        # per-tensor scale = 4. 105 + 15 + 4 = 124.
        ("nvfp4", 70, 3, 124),
        # fp8_block, Linear(300 -> 130): 300 x 130 = 39,000 bytes of E4M3; fp32 scales over 128 x 128 blocks:
        # ceil(130 / 128) = 2 row blocks x ceil(300 / 128) = 3 column blocks = 6 x 4 bytes = 24. 39,024.
        ("fp8_block", 300, 130, 39_024),
        # fp8_block, Linear(128 -> 128): exactly one block: 16,384 + 4 = 16,388.
        ("fp8_block", 128, 128, 16_388),
    ],
)
def test_one_matrix_exact_bytes(fmt: str, n_in: int, n_out: int, expected: int):
    assert block_scaled_bytes(get_dtype(fmt), n_in, n_out) == expected


def test_format_names_and_aliases():
    assert get_dtype("MXFP4").name == "mxfp4" and get_dtype("fp8-block").name == "fp8_block"
    assert get_dtype("nvfp4").tensor_scale_bytes == 4 and get_dtype("mxfp4").scale_block == (1, 32)
    with pytest.raises(Exception, match="did you mean"):
        get_dtype("mxfp5")


# --------------------------------------------------------------------------- a whole tiny model

TINY = """\
name: tiny
family: dense
model: {vocab_size: 10, hidden_size: 64, num_layers: 2}
mixers:
  attn: {type: attention, num_heads: 2}
ffns:
  mlp: {type: mlp, intermediate_size: 96}
"""
# Per layer: attention q, k, v, o are Linear(64 -> 64) (2 heads of 32; k/v with 2 KV heads); the gated MLP is
# gate and up Linear(64 -> 96) and down Linear(96 -> 64); two RMSNorms of 64. Outside the layers: embedding
# 10 x 64 = 640, lm_head 640, final norm 64.
# Parameters: layer = 4 x 4,096 + 2 x 6,144 + 6,144 + 2 x 64 = 34,944; total = 2 x 34,944 + 640 + 640 + 64 = 71,232.
# Linear elements: 2 x (16,384 + 18,432) = 69,632; the rest (embeddings, norms) = 1,600 -> 3,200 bytes in bf16.


def test_tiny_model_in_each_block_format():
    c = count_params(parse_spec_text(TINY, "tiny.yaml"))
    assert c.total == 71_232 and c.quantizable == 69_632
    # mxfp4: Linear(64 -> 64): 64 rows x 32 bytes = 2,048 + 64 rows x 2 scales = 128 -> 2,176; x 4 = 8,704.
    # Linear(64 -> 96): 96 x 32 = 3,072 + 96 x 2 = 192 -> 3,264; x 2 = 6,528. Linear(96 -> 64): 64 x 48 = 3,072 +
    # 64 x 3 = 192 -> 3,264. Layer 18,496; two layers 36,992; + 3,200 bf16 = 40,192.
    assert weights_bytes(c, get_dtype("mxfp4")) == 40_192
    # nvfp4: 64 -> 64: 2,048 + 64 x 4 scales + 4 = 2,308; x 4 = 9,232. 64 -> 96: 3,072 + 96 x 4 + 4 = 3,460;
    # x 2 = 6,920. 96 -> 64: 3,072 + 64 x 6 + 4 = 3,460. Layer 19,612; x 2 = 39,224; + 3,200 = 42,424.
    assert weights_bytes(c, get_dtype("nvfp4")) == 42_424
    # fp8_block: every matrix fits one 128 x 128 block: 69,632 bytes + 2 layers x 7 matrices x 4 = 56 -> 69,688;
    # + 3,200 = 72,888.
    assert weights_bytes(c, get_dtype("fp8_block")) == 72_888


def test_per_component_formats_by_hand():
    spec = parse_spec_text(TINY + "weights: {default: bf16, mlp: nvfp4, embedding: fp8}\n", "tiny.yaml")
    b = weights_by_format(count_params(spec), spec.weights)
    # mlp in nvfp4: 2 layers x (6,920 + 3,460) = 20,760 bytes. embedding in fp8 (named, so its table is stored
    # in it): 640 bytes + one fp32 per-tensor scale = 644. bf16: 71,232 - 36,864 (mlp) - 640 (embedding) =
    # 33,728 parameters -> 67,456 bytes.
    assert b.by_format == {"bf16": 67_456, "nvfp4": 20_760, "fp8": 644}
    assert b.total_bytes == 88_860
    assert b.formats == {"embedding": "fp8", "lm_head": "bf16", "attention": "bf16", "mlp": "nvfp4", "norms": "bf16"}


def test_a_float_default_stores_everything_and_a_named_float_component_all_of_it():
    spec = parse_spec_text(TINY + "weights: {default: fp16, attention: fp32}\n", "tiny.yaml")
    b = weights_by_format(count_params(spec), spec.weights)
    # attention 2 x 16,384 = 32,768 parameters in fp32 = 131,072 bytes; the other 38,464 in fp16 = 76,928.
    assert b.by_format == {"fp16": 76_928, "fp32": 131_072}


@pytest.mark.parametrize("name", ["llama-3-8b", "mixtral-8x7b", "deepseek-v3", "jamba-v0.1", "gpt-2", "mamba2-2.7b"])
def test_one_default_format_is_exactly_dtype(name: str):
    """`weights: {default: X}` means what `--dtype X` means, to the byte, for every format."""
    spec = load_spec(name)
    for mtp in (False, True):
        c = count_params(spec, mtp)
        for fmt in DTYPES:
            assert weights_by_format(c, WeightFormats(fmt), 64).total_bytes == weights_bytes(c, get_dtype(fmt), 64)


# --------------------------------------------------------------------------- gpt-oss-120b by hand

# https://huggingface.co/openai/gpt-oss-120b/blob/main/config.json, written as a spec. The attention sinks (64
# bf16 logits per layer) are left out so this test stands on the kinds alone; they would add 2,304 parameters.
GPT_OSS_120B = """\
name: gpt-oss-120b
family: moe
model: {vocab_size: 201088, hidden_size: 2880, num_layers: 36}
mixers:
  local: {type: attention, num_heads: 64, num_kv_heads: 8, head_dim: 64, qkv_bias: true, o_bias: true,
          sliding_window: 128}
  full: {type: attention, num_heads: 64, num_kv_heads: 8, head_dim: 64, qkv_bias: true, o_bias: true}
ffns:
  moe: {type: moe, num_experts: 128, top_k: 4, expert_intermediate_size: 2880, expert_bias: true, router_bias: true}
layout:
  mixer: {default: local, every: {period: 2, offset: 1, use: full}}
weights: {default: bf16, routed_experts: mxfp4}
"""


def test_gpt_oss_120b_ships_in_61_gib():
    spec = parse_spec_text(GPT_OSS_120B, "gpt-oss-120b.yaml")
    c = count_params(spec)
    assert c.total == 116_829_154_368
    b = weights_by_format(c, spec.weights)
    # Experts, per layer 128 x [gate_up Linear(2880 -> 5760), down Linear(2880 -> 2880)], in MXFP4:
    # gate_up 5,760 rows x 1,440 bytes = 8,294,400 + 5,760 x 90 scales = 518,400 -> 8,812,800;
    # down 2,880 x 1,440 = 4,147,200 + 2,880 x 90 = 259,200 -> 4,406,400; per expert 13,219,200;
    # x 128 x 36 = 60,914,073,600 (= the checkpoint's *_blocks + *_scales).
    assert b.by_format["mxfp4"] == 60_914_073_600
    # bf16: 116,829,154,368 - 36 x 128 x 24,883,200 (= 114,661,785,600 expert matrix elements) = 2,167,368,768
    # parameters (attention, embedding, lm_head, router, norms, expert biases) -> 4,334,737,536 bytes.
    assert b.by_format["bf16"] == 4_334_737_536
    assert b.total_bytes == 65_248_811_136  # 60.77 GiB: the checkpoint is 60.8 GiB; in bf16 it would be 233.7 GB
    assert weights_bytes(c, get_dtype("bf16")) == 2 * 116_829_154_368


# --------------------------------------------------------------------------- quantization_config -> weights

# https://huggingface.co/openai/gpt-oss-120b/blob/main/config.json
GPT_OSS_QC = {
    "modules_to_not_convert": [
        "model.layers.*.self_attn",
        "model.layers.*.mlp.router",
        "model.embed_tokens",
        "lm_head",
    ],
    "quant_method": "mxfp4",
}
# https://huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/config.json
DEEPSEEK_V3_QC = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}
# https://huggingface.co/nvidia/DeepSeek-R1-FP4 (hf_quant_config.json / config.json's quantization_config,
# written by TensorRT Model Optimizer): attention of every layer and lm_head stay in bf16.
DEEPSEEK_R1_NVFP4_QC = {
    "quant_method": "modelopt",
    "quant_algo": "NVFP4",
    "kv_cache_quant_algo": None,
    "group_size": 16,
    "exclude_modules": ["lm_head", *(f"model.layers.{i}.self_attn*" for i in range(61))],
}
# https://huggingface.co/nvidia/Llama-3.1-8B-Instruct-FP4
LLAMA_NVFP4_QC = {"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16, "exclude_modules": ["lm_head"]}
# llm-compressor's NVFP4 scheme (e.g. https://huggingface.co/RedHatAI/Llama-3.1-8B-Instruct-NVFP4/blob/main/config.json)
COMPRESSED_NVFP4_QC = {
    "quant_method": "compressed-tensors",
    "format": "nvfp4-pack-quantized",
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16},
            "input_activations": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16},
        }
    },
    "ignore": ["lm_head"],
}
DEEPSEEK_PRESENT = {"embedding", "lm_head", "attention", "mlp", "routed_experts", "shared_experts", "router", "norms"}


@pytest.mark.parametrize(
    ("qc", "layers", "present", "expected", "fragment"),
    [
        (GPT_OSS_QC, 36, None, {"default": "bf16", "routed_experts": "mxfp4"}, "mxfp4"),
        (
            DEEPSEEK_V3_QC, 61, DEEPSEEK_PRESENT,
            {"default": "bf16", "attention": "fp8_block", "mlp": "fp8_block", "routed_experts": "fp8_block",
             "shared_experts": "fp8_block"},
            "fp8, 128x128 blocks",
        ),
        (
            DEEPSEEK_R1_NVFP4_QC, 61, DEEPSEEK_PRESENT,
            {"default": "bf16", "mlp": "nvfp4", "routed_experts": "nvfp4", "shared_experts": "nvfp4"},
            "modelopt NVFP4",
        ),
        (LLAMA_NVFP4_QC, 32, {"attention", "mlp"}, {"default": "bf16", "attention": "nvfp4", "mlp": "nvfp4"}, "NVFP4"),
        (COMPRESSED_NVFP4_QC, 32, {"attention", "mlp"}, {"default": "bf16", "attention": "nvfp4", "mlp": "nvfp4"},
         "compressed-tensors"),
    ],
)  # fmt: skip
def test_quantization_config_mapping(qc, layers, present, expected, fragment):
    weights, note = weights_from_quantization_config(qc, {"num_hidden_layers": layers}, present)
    assert weights == expected
    assert fragment in note and "the rest in bf16" in note


def test_partly_skipped_and_unknown_methods_are_said():
    half = dict(DEEPSEEK_R1_NVFP4_QC, exclude_modules=[f"model.layers.{i}.self_attn*" for i in range(20)])
    weights, note = weights_from_quantization_config(half, {"num_hidden_layers": 61}, {"attention"})
    assert weights == {"default": "bf16", "attention": "nvfp4"} and "attention 67% in nvfp4" in note
    assert weights_from_quantization_config({"quant_method": "gptq", "bits": 4}, {}, None) == (
        None,
        "Its quantization_config (gptq) is not modelled: weights are counted in bf16; give --dtype to choose a format.",
    )
    # "model.layers.1.self_attn*" must not reach layer 10-19's attention
    one = dict(DEEPSEEK_R1_NVFP4_QC, exclude_modules=["model.layers.1.self_attn*"])
    assert "attention 98%" in weights_from_quantization_config(one, {"num_hidden_layers": 61}, {"attention"})[1]


def deepseek_v3_fp8_config() -> dict:
    cfg = json.loads(hf_fixture("deepseek-v3.json").read_text())
    return {**cfg, "quantization_config": DEEPSEEK_V3_QC}


def test_deepseek_v3_import_ships_fp8_blocks_and_round_trips(tmp_path: Path):
    doc = spec_document_from_hf_config(deepseek_v3_fp8_config(), "deepseek-v3.json")
    assert doc["weights"] == {"default": "bf16", "attention": "fp8_block", "mlp": "fp8_block",
                              "routed_experts": "fp8_block", "shared_experts": "fp8_block",
                              "mtp": "fp8_block"}  # fmt: skip
    assert doc["mtp"] == {"layers": 1, "mixer": "mla", "ffn": "moe"}  # counted apart, in its shipped format
    assert "Weights as shipped (quantization_config: fp8, 128x128 blocks)" in doc["description"]
    spec = parse_spec(doc, "deepseek-v3.json")
    b = weights_by_format(count_params(spec), spec.weights)
    assert b.by_format == {"bf16": 3_921_590_272, "fp8_block": 669_228_962_144}  # 626.9 GiB in all
    path = tmp_path / "ds.yaml"
    path.write_text(spec_yaml(doc))
    again = load_spec(path)
    assert again.weights == spec.weights
    assert weights_by_format(count_params(again), again.weights) == b


def hf_fixture(name: str) -> Path:
    """A config.json fixture, wherever it is kept now (tests/fixtures/hf, or hf-incoming before its importer)."""
    for folder in ("hf", "hf-incoming"):
        if (FIXTURES / folder / name).is_file():
            return FIXTURES / folder / name
    raise FileNotFoundError(name)


@pytest.mark.skipif("gpt_oss" not in SUPPORTED_MODEL_TYPES, reason="the gpt_oss importer has not landed")
def test_gpt_oss_120b_config_json_estimates_as_shipped():
    r = runner.invoke(app, ["estimate", str(hf_fixture("gpt-oss-120b.json")), "-f", "json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)["memory"]
    assert 60.5 * 2**30 < m["weights_bytes"] < 61 * 2**30  # the checkpoint: 60.8 GiB
    assert m["weights_formats"]["routed_experts"] == "mxfp4" and m["weights_formats"]["attention"] == "bf16"


# --------------------------------------------------------------------------- the CLI


def estimate_json(*args: str) -> dict:
    r = runner.invoke(app, ["estimate", *args, "-f", "json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_estimate_uses_the_shipped_formats_unless_dtype_is_given(tmp_path: Path):
    path = tmp_path / "gpt-oss-120b.yaml"
    path.write_text(GPT_OSS_120B)
    shipped = estimate_json(str(path))
    m = shipped["memory"]
    assert m["weights_bytes"] == 65_248_811_136
    assert m["weights_by_format"] == {"bf16": 4_334_737_536, "mxfp4": 60_914_073_600}
    assert m["weights_formats"]["routed_experts"] == "mxfp4" and m["weights_formats"]["router"] == "bf16"
    parts = ("weights_bytes", "kv_cache_bytes", "ssm_state_bytes", "activations_bytes", "gradients_bytes")
    assert m["total_bytes"] == sum(m[k] for k in parts) + m["optimizer_bytes"]
    assert shipped["workload"]["weights_as_shipped"] is True and shipped["workload"]["dtype"] == "bf16"
    assert shipped["schema"] == "godprof.estimate/1"

    bf16 = estimate_json(str(path), "--dtype", "bf16")
    assert bf16["memory"]["weights_bytes"] == 2 * 116_829_154_368
    assert bf16["memory"]["weights_by_format"] == {"bf16": 2 * 116_829_154_368}
    assert bf16["workload"]["weights_as_shipped"] is False
    assert bf16["memory"]["activations_bytes"] == m["activations_bytes"]

    # --dtype mxfp4 keeps its meaning: every Linear of the layers (attention and router too), not the spec's split
    mx = estimate_json(str(path), "--dtype", "mxfp4")
    assert mx["memory"]["weights_formats"]["attention"] == mx["memory"]["weights_formats"]["router"] == "mxfp4"
    assert mx["memory"]["weights_bytes"] < m["weights_bytes"]

    table = " ".join(runner.invoke(app, ["estimate", str(path)], env={"COLUMNS": "120"}).stdout.split())
    assert "weights as shipped" in table and "in mxfp4" in table and "in bf16" in table
    assert "mxfp4: routed experts" in table and "E8M0 scale per 32" in table  # the caption, unwrapped


def test_specs_without_a_weights_section_are_unchanged():
    d = estimate_json("llama-3-8b")
    assert d["memory"]["weights_bytes"] == 2 * 8_030_261_248
    assert d["memory"]["weights_by_format"] == {"bf16": 2 * 8_030_261_248}
    assert d["workload"]["weights_as_shipped"] is True


@pytest.mark.parametrize(
    ("weights", "line", "message"),
    [
        ("weights: {default: bf16, routed_experts: mxfp5}", 8, "weights.routed_experts: unknown weight format "
                                                               "'mxfp5' (did you mean mxfp4"),
        ("weights:\n  default: bf16\n  routed_expert: mxfp4", 10, "weights.routed_expert: unknown key "
                                                                 "'routed_expert'; did you mean 'routed_experts'?"),
        ("weights:\n  norms: int4", 9, "weights.norms: norms hold no weight matrices to store in int4"),
        ("weights: {default: 4}", 8, "weights.default: expected a weight format name, got 4"),
        ("weights: mxfp4", 8, "weights: expected a mapping"),
    ],
)  # fmt: skip
def test_bad_weights_sections_exit_2_with_file_line_and_key(tmp_path: Path, weights: str, line: int, message: str):
    path = tmp_path / "bad.yaml"
    path.write_text(TINY + weights + "\n")
    with pytest.raises(SpecError):
        load_spec(path)
    r = runner.invoke(app, ["estimate", str(path)])
    assert r.exit_code == 2
    assert f"{path}:{line}: {message}" in " ".join(r.output.split())
    assert "Traceback" not in r.output


def test_bad_dtype_option_exits_2():
    r = runner.invoke(app, ["estimate", "llama-3-8b", "--dtype", "nvfp5"])
    assert r.exit_code == 2 and "unknown dtype" in r.output
    assert "spec ships" in " ".join(runner.invoke(app, ["estimate", "--help"], env={"COLUMNS": "200"}).output.split())
