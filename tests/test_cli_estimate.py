"""`godprof estimate` / `godprof validate` through the CLI: exit codes, JSON schema, formats."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from godprof.cli.main import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_json_schema_has_the_stable_integer_keys():
    r = run("estimate", "llama-3-8b", "--seq", "4Ki", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["schema"] == "godprof.estimate/1"
    for path in ("params.total", "params.active", "memory.weights_bytes", "memory.kv_cache_bytes",
                 "memory.ssm_state_bytes", "memory.activations_bytes", "memory.total_bytes", "flops.forward",
                 "flops.decode_per_token", "flops.train_per_token"):  # fmt: skip
        section, key = path.split(".")
        assert isinstance(d[section][key], int), path
    assert d["params"]["total"] == 8_030_261_248
    assert d["workload"]["seq"] == 4096
    assert d["memory"]["kv_cache_bytes"] == 4096 * 131_072


def test_options_reach_the_workload():
    r = run("estimate", "mixtral-8x7b", "-f", "json", "--batch", "4", "--seq", "512", "--context", "32Ki",
            "--dtype", "int4", "--kv-dtype", "fp8", "--attention-flops", "full", "--logits", "last")  # fmt: skip
    assert r.exit_code == 0, r.output
    w = json.loads(r.stdout)["workload"]
    assert (w["batch"], w["seq"], w["context"], w["dtype"], w["kv_dtype"]) == (4, 512, 32768, "int4", "fp8")
    assert (w["attention_flops"], w["logits"]) == ("full", "last")
    t = json.loads(run("estimate", "jamba-v0.1", "-f", "json", "-m", "train", "--recompute", "full",
                       "--optimizer", "adamw8bit").stdout)  # fmt: skip
    assert t["memory"]["optimizer_bytes"] > 0 and t["memory"]["kv_cache_bytes"] == 0


def test_table_csv_and_markdown():
    r = run("estimate", "mamba-2.8b")
    assert r.exit_code == 0 and "parameters" in r.stdout and "SSM state" in r.stdout
    rows = list(csv.DictReader(io.StringIO(run("estimate", "mamba-2.8b", "-f", "csv").stdout)))
    assert len(rows) == 1 and int(rows[0]["params.total"]) == 2_768_345_600
    md = run("estimate", "mamba-2.8b", "-f", "md").stdout
    assert md.startswith("### ") and "| --- |" in md


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["estimate", "llama-3-8x"], "did you mean llama-3-8b"),
        (["estimate", "llama-3-8b", "--dtype", "fp7"], "unknown dtype"),
        (["estimate", "llama-3-8b", "--seq", "lots"], "--seq"),
        (["estimate", "llama-3-8b", "--context", "0"], "--context"),
    ],
)
def test_user_errors_exit_2_without_traceback(args, fragment):
    r = run(*args)
    assert r.exit_code == 2
    assert fragment in r.output
    assert "Traceback" not in r.output


def test_bad_spec_reports_file_key_and_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nfamily: dense\nmodel:\n  vocab_size: 10\n  hidden_size: 8\n  num_layer: 2\n"
                   "mixers:\n  a: {type: attention, num_heads: 2}\n")  # fmt: skip
    r = run("estimate", str(bad))
    assert r.exit_code == 2
    assert f"{bad}:6: model.num_layer: unknown key 'num_layer'; did you mean 'num_layers'?" in r.output
    v = run("validate", "llama-3-8b", str(bad))
    assert v.exit_code == 2 and "ok: llama-3-8b" in v.output and "model.num_layer" in v.output
    assert run("validate", "llama-3-8b", "mixtral-8x7b").exit_code == 0


def test_help_teaches():
    r = run("estimate", "--help")
    assert r.exit_code == 0
    for word in ("--attention-flops", "--recompute", "Examples", "llama-3-8b"):
        assert word in r.output


def test_estimate_never_imports_torch(tmp_path: Path):
    code = (
        "import sys\n"
        "from godprof.cli.main import app\n"
        "try:\n    app(['estimate', 'jamba-v0.1', '-f', 'json'])\n"
        "except SystemExit as e:\n    assert e.code in (0, None)\n"
        "bad = [m for m in ('torch', 'fvcore', 'pynvml', 'matplotlib', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    # run outside the checkout so the installed package is what gets imported
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_python_dash_m_entry_point(tmp_path: Path):
    r = subprocess.run([sys.executable, "-m", "godprof", "estimate", "mamba-2.8b", "-f", "json"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["params"]["total"] == 2_768_345_600
    r = subprocess.run([sys.executable, "-m", "godprof", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("godprof ")


def test_estimate_mtp_flag():
    plain = json.loads(run("estimate", "deepseek-v3", "--dtype", "bf16", "-f", "json").stdout)
    with_mtp = json.loads(run("estimate", "deepseek-v3", "--dtype", "bf16", "--mtp", "-f", "json").stdout)
    assert plain["params"]["mtp"] == {"total": 13_463_426_048, "active": plain["params"]["mtp"]["active"],
                                      "included": False}  # fmt: skip
    assert with_mtp["params"]["total"] == plain["params"]["total"] + 13_463_426_048
    assert with_mtp["memory"]["weights_bytes"] == plain["memory"]["weights_bytes"] + 2 * 13_463_426_048
    assert "MTP modules" in run("estimate", "deepseek-v3").stdout


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_a_reader_that_stops_early_is_not_an_error(tmp_path: Path, fmt: str):
    """`godprof sweep ... | head -1`: the closed pipe ends the command quietly with exit 0."""
    cmd = [sys.executable, "-m", "godprof", "sweep", "llama-3-8b", "mamba-2.8b", "--context", "1k..1M",
           "--points", "2000", "-f", fmt]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.readline()
    p.stdout.close()  # the reader goes away with most of the output unread
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0, err
    assert err == ""
