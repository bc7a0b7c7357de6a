"""benchmarks/serving_fidelity.py on its committed data: the comparison of one published row and one
aiconfigurator grid point, and the shape of its table, summary and verdicts. No aiconfigurator needed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "serving_fidelity.py"


@pytest.fixture(scope="module")
def sf():
    spec = importlib.util.spec_from_file_location("serving_fidelity", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def gp(sf):
    return sf.Godprof()


def test_published_data_names_its_sources_and_setups(sf):
    entries = sf.load_published()
    assert len(entries) >= 3
    ids = [e["id"] for e in entries]
    assert len(ids) == len(set(ids))
    for e in entries:
        assert e["url"].startswith("https://"), e["id"]
        for key in ("spec", "gpu", "dtype", "layout", "input_tokens", "output_tokens"):
            assert e.get(key), (e["id"], key)
        assert set(e["measured"]) <= {"output_tokens_per_s", "ttft_ms", "tpot_ms"} and e["measured"], e["id"]
    mlperf = {e["id"]: e for e in entries if e["source_name"].startswith("MLPerf")}
    assert mlperf["mlperf 70b H200x8 Offline"]["measured"]["output_tokens_per_s"] == 34988.2
    assert mlperf["mlperf 70b H200x8 Server"]["slo"] == {"ttft_s": 2.0, "tpot_s": 0.2}


def test_one_published_row(sf, gp):
    entry = next(e for e in sf.load_published() if e["id"] == "mlperf 70b H100x8 Offline")
    rows = sf.compare_published(gp, [entry])
    assert [r["metric"] for r in rows] == ["throughput"]  # the Offline log gives throughput only
    r = rows[0]
    assert r["reference"] == 31306.8 and r["target"] == sf.TARGETS["throughput"] == 0.15
    assert r["godprof"] is not None and r["godprof"] > 0
    assert r["ratio"] == pytest.approx(r["godprof"] / 31306.8)
    assert r["ok"] == (abs(r["ratio"] - 1) <= 0.15)
    if r["sol"] is not None:  # throughput: the measurement respects the bound when it is at most the bound
        assert r["sol_ok"] == (31306.8 <= r["sol"] * (1 + 1e-9))
        assert r["sol"] >= r["godprof"]  # the bound is never below godprof's own expected value


def test_one_aiconfigurator_point(sf, gp):
    doc = json.loads(sf.AIC_FILE.read_text())
    assert doc["aiconfigurator_version"] == "0.12.0"
    rows = sf.compare_aiconfigurator(gp, doc, limit=2)
    assert [r["metric"] for r in rows] == ["prefill", "decode"]
    first = next(p for p in doc["points"] if "ttft_ms" in p)
    pre, dec = rows
    assert pre["reference"] == pytest.approx(first["ttft_ms"] / 1e3)
    assert dec["reference"] == pytest.approx(first["tpot_ms"] / 1e3)
    assert dec["target"] == 0.15 and pre["target"] is None  # the decode target is the issue's; prefill is shown
    for r in rows:
        assert r["godprof"] is not None and r["sol"] is not None
        assert r["sol"] <= r["godprof"]  # 100% of the datasheet is never slower than the expected value
        assert r["ratio"] == pytest.approx(r["godprof"] / r["reference"])


def test_one_aiconfigurator_inflight_batching_point(sf, gp):
    doc = json.loads(sf.AIC_FILE.read_text())
    agg = next(p for p in doc["points"] if p.get("mode") == "agg" and "ttft_ms" in p)
    rows = sf.compare_aiconfigurator(gp, {**doc, "points": [agg]})
    assert [r["metric"] for r in rows] == ["throughput", "ttft", "tpot"]
    assert [r["reference"] for r in rows] == pytest.approx(
        [agg["tokens_per_s"], agg["ttft_ms"] / 1e3, agg["tpot_ms"] / 1e3]
    )
    assert all(r["target"] is None and r["ok"] is None for r in rows)  # shown beside, not a target of the issue
    assert rows[0]["source"].startswith("aiconfigurator agg")


def test_table_fits_80_columns_and_markdown_is_rectangular(sf):
    rows = [
        sf._row(
            "src", "a case name that is far too long for the column", "throughput", 1000.0, 1100.0, 900.0, 0.15, False
        ),
        sf._row("src", "b", "ttft", 0.4, None, 0.02, 0.25, True),
        sf._row("aiconfigurator dense", "c", "decode", 0.010, 0.0085, 0.005, 0.15, True),
    ]
    lines = sf.table(rows)
    assert len(lines) == 2 + len(rows) and all(len(x) <= 80 for x in lines)
    assert "n/a" in lines[3]  # a missing godprof figure reads n/a
    md = sf.markdown(rows, sf.summarise(rows), sf.verdicts(rows), {"date": "d", "godprof": "g",
                     "aiconfigurator": "0.12.0", "aic_generated": "t"})  # fmt: skip
    for block in md.split("\n\n"):
        table_lines = [x for x in block.splitlines() if x.startswith("|")]
        if table_lines:
            assert len({x.count("|") for x in table_lines}) == 1, block


def test_summary_worst_case_and_verdicts(sf):
    rows = [
        sf._row("P", "x", "throughput", 1000.0, 1100.0, 1200.0, 0.15, False),  # 1.10x, within, bound kept
        sf._row("P", "y", "throughput", 1000.0, 700.0, 900.0, 0.15, False),  # 0.70x, outside, bound beaten
        sf._row("aiconfigurator moe", "z", "decode", 0.010, 0.0105, 0.004, 0.15, True),
    ]
    assert rows[1]["ok"] is False and rows[1]["sol_ok"] is False and rows[0]["sol_ok"] is True
    s = {(x["source"], x["metric"]): x for x in sf.summarise(rows)}
    assert s[("P", "throughput")]["worst"] == pytest.approx(0.7) and s[("P", "throughput")]["worst_case"] == "y"
    assert s[("P", "throughput")]["within"] == 1 and s[("P", "throughput")]["sol_beaten"] == 1
    v = sf.verdicts(rows)
    assert v["throughput within 15% of published"] is False
    assert v["decode within 15% of aiconfigurator (dense, MoE)"] is True
    assert v["TTFT within 25% of published"] is None  # nothing to compare reads n/a, not pass
    assert v["speed-of-light never beaten"] is False
