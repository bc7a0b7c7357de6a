"""`godprof compare` and `godprof sweep`: JSON agrees with `godprof estimate`, growth laws, plots."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest
from typer.testing import CliRunner

from godprof.analytic import Workload, count_params, estimate
from godprof.analytic import inference_memory as IM
from godprof.analytic import roofline as R
from godprof.cli.main import app
from godprof.errors import GodprofError
from godprof.gpus import load_gpu
from godprof.report.compare import Setup, compare_record, compare_table
from godprof.report.plot import sweep_text_plots, write_plot
from godprof.report.sweep import log_contexts, sweep
from godprof.spec import load_spec

runner = CliRunner()
SPECS = ["llama-3-8b", "mixtral-8x7b", "mamba-2.8b", "jamba-v0.1"]


def run(*args: str):
    return runner.invoke(app, list(args))


def est(name: str, *args: str) -> dict:
    r = run("estimate", name, "-f", "json", *args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_compare_json_agrees_with_estimate():
    r = run("compare", *SPECS, "--gpu", "h100", "--batch", "2", "--context", "16k", "--dtype", "fp8",
            "--kv-dtype", "fp8", "-f", "json")  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == "godprof.compare/2"
    records = doc["records"]
    assert [d["spec"]["name"] for d in records] == SPECS
    for d in records:
        e = est(d["spec"]["name"], "--batch", "2", "--seq", "16k", "--context", "16k", "--dtype", "fp8",
                "--kv-dtype", "fp8", "--logits", "last")  # fmt: skip
        assert {k: d["workload"][k] for k in ("batch", "context", "dtype", "kv_dtype")} == {
            "batch": 2, "context": e["workload"]["context"], "dtype": "fp8", "kv_dtype": "fp8"}  # fmt: skip
        assert (d["params"]["total"], d["params"]["active"]) == (e["params"]["total"], e["params"]["active"])
        for key in ("weights_bytes", "kv_cache_bytes", "ssm_state_bytes", "kv_bytes_per_token"):
            assert d["memory"][key] == e["memory"][key], key
        assert d["memory"]["cache_bytes"] == e["memory"]["kv_cache_bytes"] + e["memory"]["ssm_state_bytes"]
        assert d["flops"]["decode_per_token"] == e["flops"]["decode_per_token"]
        assert d["flops"]["ssm_decode_per_token"] == e["flops"]["ssm_decode_per_token"]
        # prefill = forward with last-position logits + SSM scans + convolutions, for batch x context tokens
        assert d["flops"]["prefill"] == e["flops"]["forward"] + e["flops"]["ssm_scan"] + e["flops"]["conv"]
        # one memory model: every memory key estimate reports is compare's, to the byte
        for key in ("activations_bytes", "gradients_bytes", "optimizer_bytes", "total_bytes"):
            assert d["memory"][key] == e["memory"][key], key
        for key in ("params", "memory", "flops", "fit"):
            for k, v in d[key].items():
                if (key, k) in (("fit", "gpu"), ("fit", "headroom"), ("fit", "runtime_overhead_source")):
                    continue  # the GPU's key, the fraction kept free and where the overheads come from
                assert v is None or isinstance(v, int), (key, k)
        assert d["roofline"]["ttft_s"] > 0 and d["roofline"]["tpot_s"] > 0
        assert d["roofline"]["compute_dtype"] == "fp8"


def test_compare_answers_the_design_questions():
    setup = Setup(load_gpu("h100"), batch=1, context=8192)
    specs = [load_spec(n) for n in SPECS]
    records = [compare_record(s, setup) for s in specs]
    by = {d["spec"]["name"]: d for d in records}
    # an SSM has no KV and a flat state; jamba (1 attention layer in 8) has 1/8 of mixtral's KV per token
    assert by["mamba-2.8b"]["memory"]["kv_bytes_per_token"] == 0
    kv = {k: v["memory"]["kv_bytes_per_token"] for k, v in by.items()}
    assert kv["jamba-v0.1"] * 8 == kv["mixtral-8x7b"]
    assert by["mamba-2.8b"]["fit"]["max_context_batch1"] is None
    assert by["mixtral-8x7b"]["fit"]["gpus_for_weights"] == 2 and not by["mixtral-8x7b"]["fit"]["fits"]
    # the memory-bound decode step: SSM fastest, then the dense 8B, then the MoEs
    tpot = {k: v["roofline"]["tpot_s"] for k, v in by.items()}
    assert tpot["mamba-2.8b"] < tpot["llama-3-8b"] < tpot["jamba-v0.1"] < tpot["mixtral-8x7b"]
    t = compare_table(records, setup)
    labels = [r[0] for r in t.rows]
    row = labels.index("params, total")
    assert (row, 1 + SPECS.index("mamba-2.8b")) in t.highlight  # best (lowest) value in bold
    assert (row, 1 + SPECS.index("mixtral-8x7b")) not in t.highlight
    ctx_row = labels.index("max context at batch 1")
    assert t.rows[ctx_row][1 + SPECS.index("mamba-2.8b")] == "no limit"
    assert (ctx_row, 1 + SPECS.index("mamba-2.8b")) in t.highlight


def test_compare_formats():
    r = run("compare", "llama-3-8b", "mamba-2.8b")
    assert r.exit_code == 0 and "TPOT" in r.stdout and "max batch at 8,192" in r.stdout
    md = run("compare", "llama-3-8b", "mamba-2.8b", "-f", "md").stdout
    assert md.startswith("### ") and "| llama-3-8b | mamba-2.8b |" in md and "**" in md
    rows = list(csv.DictReader(io.StringIO(run("compare", "llama-3-8b", "mamba-2.8b", "-f", "csv").stdout)))
    assert [r["spec.name"] for r in rows] == ["llama-3-8b", "mamba-2.8b"]
    assert int(rows[0]["memory.kv_bytes_per_token"]) == 131_072


def test_log_contexts():
    assert log_contexts(1024, 1 << 20) == [1 << k for k in range(10, 21)]  # one point per doubling
    pts = log_contexts(1000, 1_000_000, 1000)
    assert len(pts) == 1000 and pts[0] == 1000 and pts[-1] == 1_000_000 and pts == sorted(set(pts))
    assert log_contexts(4096, 4096) == [4096]
    with pytest.raises(ValueError):
        log_contexts(10, 5)


def test_sweep_growth_laws_and_agreement_with_estimate():
    r = run("sweep", "llama-3-8b", "mamba-2.8b", "jamba-v0.1", "--context", "1Ki..1Mi", "--batch", "1",
            "--batch", "4", "-f", "json")  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == "godprof.sweep/2" and doc["batches"] == [1, 4] and len(doc["contexts"]) == 11
    pts = {(p["spec"], p["batch"], p["context"]): p for p in doc["points"]}
    assert len(pts) == 3 * 2 * 11
    for b in (1, 4):
        mamba = [pts[("mamba-2.8b", b, c)] for c in doc["contexts"]]
        assert {p["cache_bytes"] for p in mamba} == {b * 13_107_200}  # flat: the state does not grow
        assert {p["kv_cache_bytes"] for p in mamba} == {0}
        assert len({p["tpot_s"] for p in mamba}) == 1
        llama = [pts[("llama-3-8b", b, c)] for c in doc["contexts"]]
        assert all(p["kv_cache_bytes"] == b * 131_072 * p["context"] for p in llama)  # linear in context
        jamba = [pts[("jamba-v0.1", b, c)] for c in doc["contexts"]]
        state = jamba[0]["ssm_state_bytes"]
        assert all(p["ssm_state_bytes"] == state for p in jamba)
        assert all(p["kv_cache_bytes"] == b * 16_384 * p["context"] for p in jamba)
        assert all(x["tpot_s"] < y["tpot_s"] for x, y in zip(llama, llama[1:], strict=False))
    for name in ("llama-3-8b", "jamba-v0.1"):
        for ctx in (1024, 32768):
            p = pts[(name, 4, ctx)]
            e = est(name, "--batch", "4", "--seq", str(ctx), "--context", str(ctx), "--logits", "last")
            assert p["kv_cache_bytes"] == e["memory"]["kv_cache_bytes"]
            assert p["ssm_state_bytes"] == e["memory"]["ssm_state_bytes"]
            assert p["weights_bytes"] == e["memory"]["weights_bytes"]
            assert p["prefill_flops"] == e["flops"]["forward"] + e["flops"]["ssm_scan"] + e["flops"]["conv"]
            decode = e["flops"]["decode_per_token"] + e["flops"]["ssm_decode_per_token"]
            assert p["decode_flops_per_token"] == decode


# the sweep evaluates per-layer sums once per layer kind: check it against the plain functions on specs
# with several kinds (jamba: attention 1 in 8, MoE 1 in 2; gemma-2: sliding-window layers alternate)
@pytest.mark.parametrize("name", ["mixtral-8x7b", "jamba-v0.1", "gemma-2-9b", "mamba-2.8b"])
def test_sweep_points_equal_the_roofline_functions(name):
    spec = load_spec(name)
    c = count_params(spec)
    g = load_gpu("h200")
    doc = sweep([spec], [Setup(g, batch=3, context=1 << 17)], log_contexts(1000, 1 << 17, 6))
    for p in doc["points"]:
        ctx = p["context"]
        e = estimate(spec, Workload(batch=3, seq=ctx, logits="last"))
        assert p["kv_cache_bytes"] == e.memory["kv_cache_bytes"]
        assert p["prefill_flops"] == e.flops["forward"] + e.flops["ssm_scan"] + e.flops["conv"]
        assert p["decode_flops_per_token"] == e.flops["decode_per_token"] + e.flops["ssm_decode_per_token"]
        assert p["tpot_s"] == pytest.approx(R.decode_step_time_s(spec, c, g, 3, ctx), rel=1e-12)
        assert p["ttft_s"] == pytest.approx(R.prefill_time_s(spec, c, g, 3, ctx), rel=1e-12)
        assert p["serving_bytes"] == R.serving_bytes(spec, c, 3, ctx)
        assert p["fits"] == (p["serving_bytes"] <= IM.usable_bytes(g))  # headroom and runtime overheads kept


@pytest.fixture(scope="module")
def small_sweep():
    specs = [load_spec(n) for n in ("llama-3-8b", "mamba-2.8b")]
    return sweep(specs, [Setup(load_gpu("h100"), context=1 << 20)], log_contexts(1024, 1 << 20))


def test_text_plot_shows_flat_ssm_and_memory_line(small_sweep):
    art = sweep_text_plots(small_sweep)
    first = art.split("\n\n")[0].splitlines()
    grid = [line.split("|", 1)[1] for line in first if "|" in line]
    mamba_rows = {i for i, row in enumerate(grid) if "o" in row}
    assert len(mamba_rows) == 1  # the SSM state is one flat line
    llama_rows = {i for i, row in enumerate(grid) if "*" in row}
    assert len(llama_rows) >= 8  # the KV cache climbs across the plot
    assert any(set(row) <= {"-", "*", "#"} and row.count("-") > 40 for row in grid)  # GPU memory line
    assert "H100" in first[-1] and "80.00 GiB" in first[-1]


def test_plots_are_written(tmp_path, small_sweep):
    png = write_plot(small_sweep, tmp_path / "s.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    page = write_plot(small_sweep, tmp_path / "s.html").read_text()
    assert "data:image/png;base64,iVBORw0KGgo" in page  # the PNG itself, base64
    assert "src='http" not in page and "<script" not in page and "<link" not in page  # nothing fetched
    with pytest.raises(GodprofError, match="png or .html"):
        write_plot(small_sweep, tmp_path / "s.svg")
    r = run("sweep", "llama-3-8b", "mamba-2.8b", "--context", "4k..64k", "--plot", str(tmp_path / "c.png"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG" and "KV cache + SSM state" in r.stdout


def test_missing_matplotlib_is_a_clear_error(tmp_path, small_sweep, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(GodprofError, match=r"pip install 'godprof\[plot\]'"):
        write_plot(small_sweep, tmp_path / "s.png")


@pytest.mark.parametrize(
    "args, fragment",
    [(["--context", "1M..1k"], "must go up"), (["--context", "1k..lots"], "not a size"),
     (["--gpu", "a1000"], "did you mean"), (["--plot", "x.pdf"], "use a .png or .html")],
)  # fmt: skip
def test_sweep_user_errors_exit_2(args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run("sweep", "llama-3-8b", *args)
    assert r.exit_code == 2 and fragment in r.output and "Traceback" not in r.output
