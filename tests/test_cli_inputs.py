"""The inputs people have: model folders, any-case names, ambiguous GPU names, lists for --gpu and --dtype,
one size rule for every option, shell completion, minimal GPU files, and `-o` that says what it wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from godprof.cli.main import app
from godprof.errors import NotFoundError
from godprof.gpus import load_gpu
from godprof.report.format import parse_size
from godprof.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
HF = ROOT / "tests" / "fixtures" / "hf"
EXAMPLES = ROOT / "examples"
runner = CliRunner()


def ok(*args: str) -> str:
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, (args, r.output)
    return r.stdout


def jdoc(*args: str) -> dict:
    return json.loads(ok(*args, "--format", "json"))


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A downloaded checkpoint's folder: config.json beside (absent) weights."""
    folder = tmp_path / "Qwen2.5-7B"
    folder.mkdir()
    shutil.copy(HF / "qwen2.5-7b.json", folder / "config.json")
    return folder


def test_a_model_folder_works_wherever_a_spec_goes(model_folder, tmp_path):
    want = load_spec(model_folder / "config.json")
    spec = load_spec(model_folder)
    assert spec.name == "Qwen2.5-7B" and spec.path == want.path
    total = jdoc("estimate", str(model_folder))["params"]["total"]
    assert total == jdoc("estimate", str(model_folder / "config.json"))["params"]["total"]
    assert jdoc("compare", str(model_folder), "qwen2.5-7b")["records"][0]["params"]["total"] == total
    assert jdoc("sweep", str(model_folder), "--points", "2")["specs"][0]["name"] == "Qwen2.5-7B"
    assert jdoc("plan", str(model_folder))["params"]["total"] == total
    assert jdoc("validate", str(model_folder))["results"][0]["params"]["total"] == total
    out = tmp_path / "q.yaml"
    r = runner.invoke(app, ["import", str(model_folder), "-o", str(out)])
    assert r.exit_code == 0 and out.is_file() and f"wrote {out}" in r.stderr
    assert jdoc("estimate", str(out))["params"]["total"] == total
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(app, ["estimate", str(empty)])
    assert r.exit_code == 2 and "without a config.json" in r.stderr


def test_bundled_names_are_case_insensitive():
    assert load_spec("llama-3-8B").name == "llama-3-8b"
    assert load_spec("Mixtral-8x7B").name == "mixtral-8x7b"
    assert jdoc("estimate", "LLAMA-3-8B")["params"]["total"] == 8_030_261_248
    r = runner.invoke(app, ["estimate", "llama-3-9B"])
    assert r.exit_code == 2 and "did you mean" in r.stderr


def test_an_ambiguous_gpu_name_lists_the_candidates():
    with pytest.raises(NotFoundError, match=r"ambiguous GPU 'a100'.*a100-40gb \(40 GiB\).*a100-80gb \(80 GiB\)"):
        load_gpu("a100")
    r = runner.invoke(app, ["compare", "llama-3-8b", "--gpu", "a100"])
    assert r.exit_code == 2 and "a100-40gb" in r.stderr and "a100-80gb" in r.stderr
    # h100 (SXM or PCIe, both 80 GB) is the SXM card, and the output names it in full
    assert load_gpu("h100").key == "h100-sxm"
    assert "NVIDIA H100 SXM5 80GB" in ok("compare", "llama-3-8b", "--gpu", "h100")
    assert load_gpu("a100-40").key == "a100-40gb" and load_gpu("a100-80gb").key == "a100-80gb"


def test_gpu_and_dtype_lists_give_a_grid():
    cmp = jdoc("compare", "llama-3-8b", "mamba-2.8b", "--gpu", "h100,b200", "--dtype", "bf16,int4")
    cells = [(d["roofline"]["gpu"], d["workload"]["dtype"], d["spec"]["name"]) for d in cmp["records"]]
    assert cells == [(g, d, s) for g in ("h100-sxm", "b200") for d in ("bf16", "int4")
                     for s in ("llama-3-8b", "mamba-2.8b")]  # fmt: skip
    table = ok("compare", "llama-3-8b", "mamba-2.8b", "--gpu", "h100,b200", "--dtype", "bf16,int4")
    assert "Grid: TPOT" in table and "b200 int4" in table
    est = jdoc("estimate", "llama-3-8b", "--dtype", "bf16,int4", "--gpu", "h100,l4")
    assert est["schema"] == "godprof.estimates/1"
    grid = [(e["workload"]["dtype"], e["fit"]["gpu"]) for e in est["estimates"]]
    assert grid == [("bf16", "h100-sxm"), ("bf16", "l4"), ("int4", "h100-sxm"), ("int4", "l4")]
    single = jdoc("estimate", "llama-3-8b", "--dtype", "int4", "--gpu", "l4")
    assert est["estimates"][3]["memory"] == single["memory"]  # a grid cell is the single estimate
    sweep = jdoc("sweep", "llama-3-8b", "--gpu", "h100,h200", "--dtype", "bf16,fp8", "--points", "2")
    assert {(s["gpu"], s["dtype"]) for s in sweep["setups"]} == {(g, d) for g in ("h100-sxm", "h200")
                                                                 for d in ("bf16", "fp8")}  # fmt: skip
    assert len(sweep["points"]) == 4 * 2 and {p["gpu"] for p in sweep["points"]} == {"h100-sxm", "h200"}
    r = runner.invoke(app, ["compare", "llama-3-8b", "--gpu", " , "])
    assert r.exit_code == 2 and "--gpu" in r.stderr


@pytest.mark.parametrize(
    "text, value",
    [("4096", 4096), ("8k", 8_000), ("8K", 8_000), ("8Ki", 8_192), ("128ki", 131_072), ("1M", 1_000_000),
     ("1Mi", 1_048_576), ("1.5M", 1_500_000), ("300B", 300 * 10**9), ("2G", 2 * 10**9), ("15T", 15 * 10**12),
     ("15e12", 15 * 10**12), ("4Mi", 4_194_304), ("1_000", 1000)],
)  # fmt: skip
def test_one_size_rule(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["0.5", "1.0001k", "-3", "nan", "inf", "", "k", "8kb", "1,5"])
def test_sizes_that_are_not_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_every_size_option_uses_the_rule():
    assert jdoc("estimate", "llama-3-8b", "--seq", "8Ki", "--context", "1M")["workload"]["context"] == 1_000_000
    assert jdoc("estimate", "llama-3-8b", "--seq", "8k")["workload"]["seq"] == 8_000
    assert jdoc("compare", "llama-3-8b", "--context", "128Ki")["records"][0]["workload"]["context"] == 131_072
    assert jdoc("sweep", "llama-3-8b", "--context", "1k..4k", "--points", "3")["contexts"] == [1000, 2000, 4000]
    t = jdoc("plan", "llama-3-8b", "--train", "--tokens", "300B", "--seq", "4Ki", "--global-batch-tokens", "4M",
             "--cluster-gpus", "64")  # fmt: skip
    assert (t["train"]["tokens"], t["train"]["seq"], t["train"]["global_batch_tokens"]) == (
        300 * 10**9, 4096, 4_000_000)  # fmt: skip
    for args in (["estimate", "llama-3-8b", "--seq", "2.5"], ["plan", "llama-3-8b", "--train", "--tokens", "1.5"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "not a" in r.stderr, args
    assert "Ki/Mi/Gi/Ti binary" in ok("estimate", "--help")


def test_shell_completion_is_offered():
    helptext = ok("--help")
    assert "--install-completion" in helptext and "--show-completion" in helptext
    script = ok("--show-completion", "bash")
    assert "_GODPROF_COMPLETE" in script and "complete" in script


def test_a_gpu_file_needs_only_what_the_roofline_uses(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("name: My card\nmemory_gib: 32\nhbm_bandwidth_gb_per_s: 1000\npeak_tflops: {bf16: 200}\n")
    g = load_gpu("mine", [f])
    assert (g.memory_bytes, g.hbm_bandwidth_bytes_per_s, g.omitted) == (
        32 << 30,
        1e12,
        ("tdp_w", "interconnect_gb_per_s"),
    )
    rec = jdoc("compare", "llama-3-8b", "--gpu", "mine", "--gpu-file", str(f))["records"][0]
    assert rec["roofline"]["gpu"] == "mine" and rec["roofline"]["bytes_per_s"] == pytest.approx(0.8e12)
    card = jdoc("gpus", "mine", "--gpu-file", str(f))["gpus"][0]
    assert card["tdp_w"] is None and card["interconnect_bytes_per_s"] is None and card["source"].startswith("user")
    r = runner.invoke(app, ["plan", "llama-3-8b", "--gpu", "mine", "--gpu-file", str(f)])
    assert r.exit_code == 2 and "tdp_w" in r.stderr and "Traceback" not in r.output
    bundled_needs_source = tmp_path / "h100-sxm.yaml"  # a user file may still replace a bundled card
    bundled_needs_source.write_text(f.read_text())
    assert load_gpu("h100-sxm", [bundled_needs_source]).memory_bytes == 32 << 30


def test_plan_output_says_what_it_wrote_and_the_markdown_figure_is_a_png_beside_it(tmp_path):
    pytest.importorskip("matplotlib")
    md = tmp_path / "plan.md"
    r = runner.invoke(app, ["plan", "llama-3-8b", "--concurrency", "16", "-f", "md", "-o", str(md)])
    assert r.exit_code == 0, r.output
    png = tmp_path / "plan.png"
    assert f"wrote {md}" in r.stderr and f"wrote {png}" in r.stderr
    assert "![plot](plan.png)" in md.read_text() and png.read_bytes().startswith(b"\x89PNG")
    md2 = tmp_path / "embedded.md"
    r = runner.invoke(app, ["plan", "llama-3-8b", "-f", "md", "-o", str(md2), "--embed-plot"])
    assert r.exit_code == 0 and "data:image/png;base64," in md2.read_text()
    assert not (tmp_path / "embedded.png").exists()
    for fmt, name in (("json", "p.json"), ("html", "p.html"), ("table", "p.txt")):
        r = runner.invoke(app, ["plan", "llama-3-8b", "-f", fmt, "-o", str(tmp_path / name)])
        assert r.exit_code == 0 and f"wrote {tmp_path / name}" in r.stderr, fmt


@pytest.mark.parametrize(
    "args, fragment",
    [(["compare", "llama-3-8b", "--batch", "1e300"], "--batch"), (["estimate", "llama-3-8b", "--bogus"], "--bogus"),
     (["plan", "llama-3-8b", "--zero", "7"], "--zero"), (["nosuch"], "nosuch")],
)  # fmt: skip
def test_a_usage_error_is_one_line(args, fragment):
    r = runner.invoke(app, args)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]
    assert "--help" in lines[0]
