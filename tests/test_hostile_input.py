"""Hostile and careless input, one test per class the fuzz campaign found (issue 12, items 4-5).

Each bad input gets exit 2 and error lines that name the file, the line and the key path; never a
traceback, never a hang, never a plausible wrong number. Output paths are checked before any work.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from godprof.analytic import count_params
from godprof.checker import MAX_DEPTH, MAX_FILE_BYTES, MAX_LAYERS, MAX_NODES, MAX_TOKENS
from godprof.cli.main import full_app
from godprof.errors import SpecError
from godprof.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
FIXTURES = ROOT / "tests" / "fixtures" / "hf"
runner = CliRunner()


def run(*args: str):  # noqa: ANN201 - a click Result
    return runner.invoke(full_app(), list(args))


def spec_doc(name: str) -> dict:
    return yaml.safe_load((SPECS / f"{name}.yaml").read_text(encoding="utf-8"))


def write_yaml(tmp_path: Path, doc: dict, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return p


def one_error(result, path: Path | str, key: str | None = None, line: bool = True) -> str:  # noqa: ANN001
    """The run failed with exit 2 and error lines only (no traceback); the first names the file (and the
    line and key path when asked). Returns the first line."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("error: ") for ln in lines), result.output
    assert "Traceback" not in result.output
    first = lines[0]
    assert f"error: {path}" in first, first
    if line:
        assert re.match(rf"error: {re.escape(str(path))}:\d+:", first), first
    if key is not None:
        assert f" {key}:" in first, first
    return first


# --------------------------------------------------------------------------- sizes in specs


def test_null_for_a_required_size_is_an_error_not_one(tmp_path: Path) -> None:
    doc = spec_doc("llama-3-8b")
    doc["model"]["num_layers"] = None  # was read as 1: a 1.27B "llama-3-8b"
    p = write_yaml(tmp_path, doc)
    msg = one_error(run("estimate", str(p)), p, "model.num_layers")
    assert "null" in msg


def test_integral_float_size_is_refused_not_zeroed(tmp_path: Path) -> None:
    """``hidden_size: 2560.0`` passed validation and wiped mamba-2.8b's SSM layers (129M parameters)."""
    doc = spec_doc("mamba-2.8b")
    doc["model"]["hidden_size"] = 2560.0
    p = write_yaml(tmp_path, doc)
    msg = one_error(run("validate", str(p)), p, "model.hidden_size")
    assert "write 2560" in msg
    with pytest.raises(SpecError):
        load_spec(p)


@pytest.mark.parametrize(
    ("section", "key", "value", "words"),
    [
        ("model", "num_layers", 2.5, "expected an integer"),
        ("model", "num_layers", True, "expected an integer"),
        ("model", "num_layers", "1e7", "expected an integer"),
        ("model", "num_layers", 10**7, f"at most {MAX_LAYERS:,}"),
        ("model", "vocab_size", 10**30, "at most"),
        ("model", "vocab_size", -1, "positive"),
        ("model", "embedding_multiplier", float("nan"), "finite"),
        ("model", "logit_scale", float("inf"), "finite"),
        ("model", "tie_embeddings", 1, "true or false"),
    ],
)
def test_bad_model_values(tmp_path: Path, section: str, key: str, value: object, words: str) -> None:
    doc = spec_doc("llama-3-8b")
    doc[section][key] = value
    p = write_yaml(tmp_path, doc)
    assert words in one_error(run("estimate", str(p), "-f", "json"), p, f"{section}.{key}")


def test_nan_in_a_mixer_and_published_tolerance(tmp_path: Path) -> None:
    doc = spec_doc("llama-3-8b")
    doc["mixers"]["attn"]["rope_theta"] = float("nan")
    doc["published"]["tolerance"] = float("inf")
    p = write_yaml(tmp_path, doc)
    r = run("validate", str(p))
    one_error(r, p)
    assert "mixers.attn.rope_theta" in r.output and "published.tolerance" in r.output


def test_dt_rank_null_means_auto_not_one(tmp_path: Path) -> None:
    doc = spec_doc("mamba-2.8b")
    mixer = next(iter(doc["mixers"].values()))
    mixer.pop("dt_rank", None)
    auto = count_params(load_spec(write_yaml(tmp_path, doc, "auto.yaml"))).total
    mixer["dt_rank"] = None
    assert count_params(load_spec(write_yaml(tmp_path, doc, "null.yaml"))).total == auto
    mixer["dt_rank"] = 1
    assert count_params(load_spec(write_yaml(tmp_path, doc, "one.yaml"))).total != auto


def test_nested_list_in_a_layout_is_an_error(tmp_path: Path) -> None:
    doc = spec_doc("jamba-v0.1")
    doc["layout"]["mixer"] = [["attn"]] * doc["model"]["num_layers"]
    p = write_yaml(tmp_path, doc)
    one_error(run("validate", str(p)), p, "layout.mixer[0]")


def test_empty_ffns_section_is_an_error(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "tiny-dense.yaml").read_text(encoding="utf-8"))
    doc["ffns"] = {}
    p = write_yaml(tmp_path, doc)
    one_error(run("validate", str(p)), p, "ffns")


# --------------------------------------------------------------------------- documents as a whole


def test_duplicate_yaml_key_is_an_error_with_its_line(tmp_path: Path) -> None:
    text = (SPECS / "llama-3-8b.yaml").read_text(encoding="utf-8")
    p = tmp_path / "dup.yaml"
    p.write_text(text.replace("  num_layers: 32\n", "  num_layers: 32\n  num_layers: 1\n"), encoding="utf-8")
    line = p.read_text().splitlines().index("  num_layers: 1") + 1
    msg = one_error(run("estimate", str(p)), p, "model.num_layers")
    assert msg.startswith(f"error: {p}:{line}:") and "twice" in msg


def test_alias_bomb_is_refused_fast(tmp_path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(9)]
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    t0 = time.perf_counter()
    msg = one_error(run("estimate", str(p)), p)
    assert f"{MAX_NODES:,}" in msg and time.perf_counter() - t0 < 5


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000])
def test_deep_yaml_nesting_is_refused(tmp_path: Path, depth: int) -> None:
    p = tmp_path / "deep.yaml"
    p.write_text("name: x\nmodel: " + "[" * depth + "]" * depth + "\n", encoding="utf-8")
    assert "nest" in one_error(run("validate", str(p)), p)


def test_deep_json_nesting_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "config.json"
    p.write_text('{"model_type": "llama", "x": ' + "[" * 100000 + "]" * 100000 + "}", encoding="utf-8")
    assert "nested deeper" in one_error(run("estimate", str(p)), p)


def test_oversized_binary_non_utf8_and_folder_inputs(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"name: x\n#" + b"x" * MAX_FILE_BYTES)
    assert "MiB" in one_error(run("estimate", str(big)), big, line=False)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: x\n\x00\x01\x02")
    assert "binary" in one_error(run("estimate", str(binary)), binary, line=False)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: x\ndescription: caf\xe9\n")
    assert "UTF-8" in one_error(run("estimate", str(latin)), latin)
    for cmd in (["plan", "llama-3-8b", "--workload"], ["compare", "llama-3-8b", "--gpu-file"]):
        r = run(*cmd, str(latin), *(["--gpu", "latin"] if "--gpu-file" in cmd else []))
        assert "UTF-8" in one_error(r, latin)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    p = tmp_path / "secret.yaml"
    p.write_text("name: x\n", encoding="utf-8")
    p.chmod(0)
    assert "permission" in one_error(run("estimate", str(p)), p, line=False)


# --------------------------------------------------------------------------- config.json


def test_config_json_errors_name_their_line(tmp_path: Path) -> None:
    cfg = json.loads((FIXTURES / "llama-3-8b.json").read_text(encoding="utf-8"))
    cfg["num_hidden_layers"] = None
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    line = next(i for i, ln in enumerate(p.read_text().splitlines(), 1) if '"num_hidden_layers"' in ln)
    msg = one_error(run("estimate", str(p)), p, "num_hidden_layers")
    assert msg.startswith(f"error: {p}:{line}:")


@pytest.mark.parametrize(("value", "words"), [(4096.0, "expected an integer"), (1e30, "expected an integer"),
                                              (True, "expected an integer"), (10**12, "at most")])  # fmt: skip
def test_config_json_sizes(tmp_path: Path, value: object, words: str) -> None:
    cfg = json.loads((FIXTURES / "llama-3-8b.json").read_text(encoding="utf-8"))
    cfg["hidden_size"] = value
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    assert words in one_error(run("estimate", str(p)), p, "hidden_size")


def test_config_json_duplicate_key_and_wrapper_line(tmp_path: Path) -> None:
    p = tmp_path / "config.json"
    p.write_text('{\n  "model_type": "llama",\n  "hidden_size": 4096,\n  "hidden_size": 8\n}\n', encoding="utf-8")
    msg = one_error(run("estimate", str(p)), p, "hidden_size")
    assert msg.startswith(f"error: {p}:4:") and "twice" in msg
    inner = json.loads((FIXTURES / "llama-3-8b.json").read_text(encoding="utf-8"))
    inner["rope_theta"] = "fast"
    p.write_text(json.dumps({"model_type": "wrapper", "text_config": inner}, indent=2), encoding="utf-8")
    line = next(i for i, ln in enumerate(p.read_text().splitlines(), 1) if '"rope_theta"' in ln)
    msg = one_error(run("estimate", str(p)), p, "text_config.rope_theta")
    assert msg.startswith(f"error: {p}:{line}:")


def test_config_json_model_type_of_the_wrong_type(tmp_path: Path) -> None:
    p = tmp_path / "config.json"
    p.write_text('{"model_type": [1, 2], "hidden_size": 8}', encoding="utf-8")
    one_error(run("import", str(p)), p, "model_type")


# --------------------------------------------------------------------------- GPU, workload and swarm files


@pytest.mark.parametrize(("key", "value"), [("hbm_bandwidth_gb_per_s", float("nan")), ("memory_gib", float("inf")),
                                            ("tdp_w", -700)])  # fmt: skip
def test_gpu_file_numbers(tmp_path: Path, key: str, value: float) -> None:
    doc = yaml.safe_load((ROOT / "godprof" / "data" / "gpus" / "h100-sxm.yaml").read_text(encoding="utf-8"))
    doc[key] = value
    p = write_yaml(tmp_path, doc, "mygpu.yaml")
    r = run("compare", "llama-3-8b", "--gpu-file", str(p), "--gpu", "mygpu")
    assert key in one_error(r, p, line=False)


def test_gpu_file_nan_peak(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "godprof" / "data" / "gpus" / "h100-sxm.yaml").read_text(encoding="utf-8"))
    doc["peak_tflops"]["bf16"] = float("nan")
    p = write_yaml(tmp_path, doc, "mygpu.yaml")
    one_error(run("plan", "llama-3-8b", "--gpu-file", str(p), "--gpu", "mygpu"), p, "peak_tflops.bf16", line=False)


@pytest.mark.parametrize(("key", "value"), [("rate", float("nan")), ("prompt_tokens", None), ("prompt_tokens", 1.5),
                                            ("output_tokens", 2**50)])  # fmt: skip
def test_workload_file_values(tmp_path: Path, key: str, value: object) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "workload-chat.yaml").read_text(encoding="utf-8"))
    doc[key] = value
    p = write_yaml(tmp_path, doc, "wl.yaml")
    one_error(run("plan", "llama-3-8b", "--workload", str(p)), p, key)


def test_workload_infinite_slo(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "workload-chat.yaml").read_text(encoding="utf-8"))
    doc["slo"]["ttft"] = float("inf")
    p = write_yaml(tmp_path, doc, "wl.yaml")
    one_error(run("plan", "llama-3-8b", "--workload", str(p)), p, "slo.ttft")


def test_swarm_without_specialists(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "swarm.yaml").read_text(encoding="utf-8"))
    doc["specialists"] = None
    p = write_yaml(tmp_path, doc, "swarm.yaml")
    one_error(run("plan", str(p), "--gpu", "h100"), p, "specialists")


def test_swarm_alias_bomb(tmp_path: Path) -> None:
    text = (ROOT / "examples" / "swarm.yaml").read_text(encoding="utf-8")
    bomb = ["bomb0: &b0 [x, x, x, x, x, x, x, x, x, x]"]
    bomb += [f"bomb{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 10)}]" for i in range(1, 8)]
    p = tmp_path / "swarm.yaml"
    p.write_text(text + "\n".join(bomb) + "\n", encoding="utf-8")
    t0 = time.perf_counter()
    one_error(run("plan", str(p), "--gpu", "h100"), p)
    assert time.perf_counter() - t0 < 10


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "args",
    [
        ["estimate", "llama-3-8b", "--context", "1e300"],
        ["estimate", "llama-3-8b", "--seq", "nan"],
        ["estimate", "llama-3-8b", "--batch", "1" + "0" * 30],
        ["compare", "llama-3-8b", "--context", "inf"],
        ["compare", "llama-3-8b", "--compute-eff", "nan"],
        ["sweep", "llama-3-8b", "--points", "10000000"],
        ["sweep", "llama-3-8b", "--context", "1k..1e300"],
        ["plan", "llama-3-8b", "--rate", "nan"],
        ["plan", "llama-3-8b", "--usd-per-gpu-hour", "inf"],
        ["plan", "llama-3-8b", "--slo-tpot", "inf"],
        ["plan", "llama-3-8b", "--max-gpus", "1" + "0" * 30],
        ["plan", "llama-3-8b", "--train", "--tokens", "1e300"],
        ["plan", "llama-3-8b", "--train", "--mfu", "nan"],
    ],
)
def test_hostile_options(args: list[str]) -> None:
    t0 = time.perf_counter()
    r = run(*args)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit)
    assert time.perf_counter() - t0 < 10


def test_work_is_bounded_at_the_layer_cap(tmp_path: Path) -> None:
    """The most layers a spec may have still estimates fast, and a sweep over them is capped with a message."""
    doc = spec_doc("jamba-v0.1")
    doc["model"]["num_layers"] = MAX_LAYERS
    doc.pop("published")
    p = write_yaml(tmp_path, doc)
    t0 = time.perf_counter()
    assert run("estimate", str(p), "-f", "json").exit_code == 0
    r = run("sweep", str(p), "--points", "1000", "-f", "json")
    assert r.exit_code == 2 and "fewer --points" in r.output
    assert time.perf_counter() - t0 < 20


def test_token_bound_is_stated() -> None:
    r = run("estimate", "llama-3-8b", "--context", str(MAX_TOKENS + 1))
    assert r.exit_code == 2 and f"{MAX_TOKENS:,}" in r.output


# --------------------------------------------------------------------------- output paths


def test_output_into_a_missing_folder(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "plan.json"
    r = run("plan", "llama-3-8b", "-f", "json", "-o", str(target))
    assert r.exit_code == 2 and "does not exist" in r.output and not target.exists()


def test_output_never_overwrites_an_input(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text((SPECS / "llama-3-8b.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    before = spec.read_bytes()
    for force in ([], ["--force"]):
        r = run("plan", str(spec), "-f", "json", "-o", str(spec), *force)
        assert r.exit_code == 2 and "input" in r.output
    cfg = tmp_path / "config.json"
    cfg.write_text((FIXTURES / "llama-3-8b.json").read_text(encoding="utf-8"), encoding="utf-8")
    r = run("import", str(cfg), "-o", str(cfg), "--force")
    assert r.exit_code == 2 and "input" in r.output
    assert spec.read_bytes() == before and json.loads(cfg.read_text())["model_type"] == "llama"


@pytest.mark.parametrize(
    "cmd",
    [["plan", "llama-3-8b", "-f", "json", "-o"], ["sweep", "llama-3-8b", "--plot"],
     ["import", str(FIXTURES / "llama-3-8b.json"), "-o"]],
)  # fmt: skip
def test_output_needs_force_to_overwrite(tmp_path: Path, cmd: list[str]) -> None:
    target = tmp_path / ("out.html" if "--plot" in cmd else "out.txt")
    target.write_text("keep me", encoding="utf-8")
    r = run(*cmd, str(target))
    assert r.exit_code == 2 and "--force" in r.output and target.read_text() == "keep me"
    if "--plot" in cmd:
        return  # writing the plot itself needs matplotlib (the plot extra): the refusal is what is tested
    r = run(*cmd, str(target), "--force")
    assert r.exit_code == 0, r.output
    assert target.read_text() != "keep me"


def test_output_onto_a_folder(tmp_path: Path) -> None:
    r = run("plan", "llama-3-8b", "-o", str(tmp_path))
    assert r.exit_code == 2 and "folder" in r.output


# --------------------------------------------------------------------------- measure


def test_failed_cpu_allocation_is_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    import godprof.measure as gm

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 68719476736 bytes")  # fmt: skip

    monkeypatch.setattr(gm, "measure", boom)
    r = run("measure", str(ROOT / "examples" / "tiny-dense.yaml"), "--device", "cpu", "--iters", "1")
    assert r.exit_code == 3, r.output
    assert "does not fit" in r.output and "Traceback" not in r.output


def test_measure_bench_without_a_gpu_ends_with_one_line() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "measure_bench.py"), "--specs", "x"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 4 and len(lines) == 1 and "no CUDA device" in lines[0], p.stderr
