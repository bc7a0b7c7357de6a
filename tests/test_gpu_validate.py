"""benchmarks/gpu_validate.py: the dry run (CPU, tiny specs) end to end, stage isolation, and the verdicts."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_validate.py"
GOALS = {"peak_vram_b8", "ttft_b8", "tpot_compiled", "compiled_bandwidth", "energy_counter", "no_compile_in_timing",
         "extrapolation", "flops_exact"}  # fmt: skip


def _module():
    spec = importlib.util.spec_from_file_location("gpu_validate", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("validate")
    r = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], capture_output=True,
                       text=True, timeout=600, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout


def test_dry_run_runs_every_stage_and_writes_verdicts(dry_run):
    out, stdout = dry_run
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    stages = [r["stage"] for r in records]
    assert stages == ["env", "ceilings", "sdpa", "llama_b1", "llama_b8", "truncated", "llama_compile", "moe", "mamba"]
    bad = {r["stage"]: r.get("error_tail") for r in records if r["status"] != "ok"}
    assert not bad, (bad, (out / "log.txt").read_text()[-3000:])
    res = {r["stage"]: r["result"] for r in records}
    assert res["ceilings"]["copy_bandwidth_bytes_per_s"] > 0 and res["ceilings"]["gemm"]["flops_per_s"] > 0
    assert all(c["kernel"] not in ("error", "unknown") for c in res["sdpa"].values()), res["sdpa"]
    assert res["llama_b8"]["config"]["batch"] == 2  # the dry run's stand-in for batch 8 x 2048
    doc = json.loads((out / "verdicts.json").read_text())
    assert doc["dry_run"] is True and set(doc["verdicts"]) == GOALS
    v = doc["verdicts"]
    # exact on the CPU: tensor bytes and FLOP counts (the timing goals need a GPU in the database)
    assert v["peak_vram_b8"]["pass"] is True, v["peak_vram_b8"]
    assert v["flops_exact"]["pass"] is True and {"llama_b1", "moe", "mamba"} <= set(v["flops_exact"]["checks"])
    assert any(k.startswith("truncated_") for k in v["flops_exact"]["checks"])
    assert v["no_compile_in_timing"]["pass"] is True and v["no_compile_in_timing"]["graphs"] >= 1
    assert v["ttft_b8"]["pass"] is None and "GPU database" in v["ttft_b8"]["reason"]
    assert v["energy_counter"]["pass"] is None
    assert set(v["extrapolation"]["by_layers"]) == {"1", "2"}
    assert "PASS flops_exact" in stdout


def test_a_crashing_or_slow_stage_loses_only_itself(tmp_path):
    mod = _module()
    log = io.StringIO()
    rec = mod.spawn("no_such_stage", True, 60, tmp_path, log)
    assert rec["status"].startswith("error") and rec["error_tail"]
    rec = mod.spawn("env", True, 0.05, tmp_path, log)
    assert rec["status"].startswith("timeout")
    assert "===== env: timeout" in log.getvalue()


def test_verdicts_pass_and_fail_on_figures():
    v = _module().verdicts
    b8 = {"estimate": {"memory": {"total_bytes": 100}}, "measured": {"peak_memory_bytes": 101, "ttft_s": 1.0},
          "roofline": {"ttft_s": 1.2}}  # fmt: skip
    comp = {"measured": {"tpot_s": 0.010, "achieved_bandwidth_bytes_per_s": 3.0e12}, "roofline": {"tpot_s": 0.0105},
            "config": {"compiled": {"graphs": 1}}, "validate": {"graphs_at_timing": 1, "graphs_at_end": 2}}  # fmt: skip
    flops = {"counters": [{"available": True, "matmul": 7}], "analytic": {"matmul": 7}}
    b1 = {"measured": {"tpot_s": 0.02, "ttft_s": 0.1, "device": {"type": "cuda"},
                       "energy": {"decode": {"method": "nvml-energy-counter"}}, "flops": flops}}  # fmt: skip
    tr = {"4": {"extrapolated": {"tpot_s": 0.0209, "ttft_s": 0.104, "flops_forward": None}},
          "8": {"extrapolated": {"tpot_s": 0.0203, "ttft_s": 0.098, "flops_forward": {"counted_extrapolated": 7,
                                                                                     "analytic": 8}}}}  # fmt: skip
    out = v({"llama_b8": b8, "llama_compile": comp, "llama_b1": b1, "ceilings": {"copy_bandwidth_bytes_per_s": 4e12},
             "truncated": tr})  # fmt: skip
    assert out["peak_vram_b8"]["pass"] is True  # -1%
    assert out["ttft_b8"]["pass"] is False  # +20%
    assert out["tpot_compiled"]["pass"] is True  # +5%
    assert out["compiled_bandwidth"]["pass"] is False  # 75% of copy
    assert out["energy_counter"]["pass"] is True
    assert out["no_compile_in_timing"]["pass"] is False  # a graph appeared after warm-up
    assert out["extrapolation"]["pass"] is True and out["extrapolation"]["judged_on_layers"] == "8"
    assert out["flops_exact"]["pass"] is False  # the truncated extrapolation is off by one
    assert v({})["peak_vram_b8"]["pass"] is None
    refused = v({"llama_compile": {"compiled_while_timed": "recompiled in timing", "validate": {"graphs_at_end": 2}}})
    assert refused["no_compile_in_timing"]["pass"] is False
