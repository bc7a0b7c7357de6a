"""`godprof plan` for serving: what fits where, with figures a reviewer can redo by hand.

Bytes: bf16 = 2 B per parameter. Exact parameter counts of the bundled specs (checked against the released
checkpoints in the spec tests): Llama-3-8B 8,030,261,248; Llama-3-70B 70,553,706,496; Llama-3.1-405B
405,853,388,800. H100 SXM: 80 GiB = 85,899,345,920 B; with the default 10% headroom 77,309,411,328 B usable.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from godprof.analytic import count_params
from godprof.analytic import efficiency as E
from godprof.analytic import roofline as R
from godprof.cli.main import app
from godprof.dtypes import get_dtype
from godprof.gpus import load_gpu
from godprof.plan.layout import Layout, request_kv_bytes, stage_shares
from godprof.plan.power import cost_per_million, energy_kwh_per_million, gpu_power_w
from godprof.plan.serving import ServeOptions, _Timer, evaluate, plan_serving
from godprof.plan.workload import ServingWorkload
from godprof.spec import load_spec

runner = CliRunner()
H100 = load_gpu("h100")
GIB = 1 << 30
USABLE_H100 = 77_309_411_328  # 0.9 x 80 GiB


def plan_json(*args: str) -> tuple[int, dict]:
    r = runner.invoke(app, ["plan", *args, "--format", "json"])
    assert r.exit_code in (0, 3), r.output
    return r.exit_code, json.loads(r.stdout)


def test_usable_memory_is_ninety_percent_of_80_gib():
    assert H100.memory_bytes == 80 * GIB == 85_899_345_920
    assert int(H100.memory_bytes * 0.9) == USABLE_H100


# --------------------------------------------------------------------------- the hand-checkable cases


def test_llama3_8b_bf16_fits_one_80gb_gpu():
    # weights 8,030,261,248 x 2 = 16,060,522,496 B = 14.96 GiB < 72 GiB usable
    code, d = plan_json("llama-3-8b", "--gpu", "h100")
    assert code == 0 and d["fits"] is True
    assert d["weights_bytes"] == 16_060_522_496
    assert d["gpus"] == 1
    # serving layouts also name attention data parallel and the prefill/decode instance pools
    assert d["layout"] == {
        "tp": 1,
        "pp": 1,
        "ep": 1,
        "replicas": 1,
        "attn_dp": 1,
        "prefill_instances": 0,
        "decode_instances": 1,
    }


def test_llama3_8b_max_concurrency_by_hand():
    # KV per token: 32 layers x (K + V) x 8 KV heads x 128 x 2 B = 131,072 B; a request holds
    # 1024 + 256 = 1280 tokens -> 167,772,160 B. Free memory = usable - runtime overheads (768 MiB CUDA
    # context + 256 MiB workspaces; no communication buffers on one GPU) - weights - the largest prefill
    # pass: 8 prompts of 1,024 tokens fill the default 8,192-token chunk.
    spec = load_spec("llama-3-8b")
    wl = ServingWorkload(prompt_tokens=1024, output_tokens=256)
    c = evaluate(spec, count_params(spec), H100, 1, 1, wl, ServeOptions())
    acts = R.activation_bytes(spec, 1024, "bf16", batch=8)
    assert 800 * 2**20 < acts < 900 * 2**20  # 8 x 1,024 tokens: ~850 MiB
    expected = (USABLE_H100 - GIB - 16_060_522_496 - acts) // 167_772_160
    assert c.max_concurrency == expected == 353  # (77,309,411,328 - 16,060,522,496) / 167,772,160 = 365.07
    assert c.memory["runtime_overhead_bytes"] == GIB
    assert c.memory["usable_bytes"] == USABLE_H100 - GIB


def test_llama3_70b_bf16_needs_at_least_two_gpus():
    # weights 70,553,706,496 x 2 = 141,107,412,992 B = 131.4 GiB > 72 GiB usable on one H100
    code, d = plan_json("llama-3-70b", "--gpu", "h100")
    assert code == 0 and d["weights_bytes"] == 141_107_412_992
    assert d["gpus"] >= 2
    assert d["layout"]["tp"] * d["layout"]["pp"] >= 2
    code, d = plan_json("llama-3-70b", "--gpu", "h100", "--max-gpus", "1")
    assert code == 3 and d["fits"] is False
    # one GPU is short by at least weights - usable = 141,107,412,992 - 77,309,411,328 = 63.8e9 B (59.4 GiB)
    assert d["missing"].startswith("memory:")
    assert "61.0 GiB short" in d["missing"]  # 59.97 GiB before the 1 GiB of runtime overheads


def test_llama31_405b_bf16_does_not_fit_one_h100_node_but_fp8_does():
    # bf16 weights: 405,853,388,800 x 2 = 811,706,777,600 B (~811 GB, 756 GiB) > 8 x 72 GiB = 576 GiB
    r = runner.invoke(app, ["plan", "llama-3.1-405b", "--gpu", "h100", "--max-gpus", "8"])
    assert r.exit_code == 3
    assert "memory" in r.output and "756 GiB" in r.output
    code, d = plan_json("llama-3.1-405b", "--gpu", "h100", "--max-gpus", "8")
    assert code == 3 and d["fits"] is False and d["gpus"] is None
    assert d["weights_bytes"] == 811_706_777_600
    # fp8: the Linear weights at 1 B (+ one fp32 scale per tensor), embeddings and head in bf16: ~410 GB
    code, d = plan_json("llama-3.1-405b", "--gpu", "h100", "--max-gpus", "8", "--dtype", "fp8")
    assert code == 0 and d["fits"] is True
    assert 400e9 < d["weights_bytes"] < 415e9
    assert d["gpus"] == 8 and d["layout"]["tp"] == 8
    per_gpu = d["chosen"]["memory_per_gpu"]
    assert per_gpu["weights_bytes"] == pytest.approx(d["weights_bytes"] / 8, rel=1e-6)
    assert per_gpu["total_bytes"] <= USABLE_H100


def test_nothing_fits_exit_code_and_message_on_stderr():
    r = runner.invoke(app, ["plan", "llama-3-70b", "--gpu", "h100", "--max-gpus", "1"])
    assert r.exit_code == 3
    assert "does not fit" in r.output
    r = runner.invoke(app, ["plan", "--help"])
    assert "3 nothing fits" in r.output.replace("\n", " ").replace("  ", " ")


def test_impossible_slo_names_the_slo():
    # the fastest layout, tp 8, still needs 64 all-reduces x 5 us = 0.32 ms per token on top of the roofline
    code, d = plan_json("llama-3-8b", "--gpu", "h100", "--slo-tpot", "300us")
    assert code == 3
    assert d["missing"].startswith("SLO") and "TPOT" in d["missing"]


# --------------------------------------------------------------------------- the model's parts


def test_tensor_parallel_allreduce_is_the_ring_formula():
    # Llama-3-70B, tp 8 on H100 (450 GB/s per direction): 80 layers x 2 all-reduces, each of
    # 8192 x 2 B per token: 160 x 2 x 7/8 x 16,384 B / 450e9 B/s = 1.0194e-5 s per token
    spec = load_spec("llama-3-70b")
    t = _Timer(spec, count_params(spec), H100, Layout(8, 1), ServingWorkload(), ServeOptions())
    assert t.allreduce_per_token_s == pytest.approx(160 * 2 * 7 / 8 * 16_384 / 450e9, rel=1e-12)
    assert t.allreduce_per_token_s == pytest.approx(1.0194e-5, rel=1e-4)
    # alpha term: the efficiency model's latency per all-reduce (11.6 us by default, godprof/data/efficiency.yaml)
    assert t.allreduce_latency_s == pytest.approx(160 * E.model_for(H100).allreduce_latency_s)
    t1 = _Timer(spec, count_params(spec), H100, Layout(1, 2), ServingWorkload(), ServeOptions())
    assert t1.allreduce_per_token_s == 0.0
    assert t1.p2p_per_token_s == pytest.approx(16_384 / 450e9)  # one stage boundary


@pytest.mark.parametrize("name", ["llama-3-8b", "mixtral-8x7b", "jamba-v0.1"])
def test_a_decode_only_step_equals_the_roofline(name):
    # the step model splits the roofline's bytes into weights, embedding rows, experts touched and cache;
    # a step of b decodes and no prefill on one GPU is the roofline's decode step exactly
    spec = load_spec(name)
    counts = count_params(spec)
    t = _Timer(spec, counts, H100, Layout(1, 1), ServingWorkload(), ServeOptions())
    for b in (1, 3, 64, 500):
        assert t.pass_time(b, 0.0)[0] == pytest.approx(R.decode_step_time_s(spec, counts, H100, b, t.ctx), rel=1e-9)


def test_tensor_parallel_splits_weights_and_kv():
    spec = load_spec("llama-3-70b")
    counts = count_params(spec)
    bf16 = get_dtype("bf16")
    one = stage_shares(spec, counts, 141_107_412_992, bf16, Layout(1, 1))[0]
    eight = stage_shares(spec, counts, 141_107_412_992, bf16, Layout(8, 1))[0]
    assert one.weights_bytes == pytest.approx(141_107_412_992)
    assert eight.weights_bytes == pytest.approx(141_107_412_992 / 8)
    # KV: 8 KV heads split 8 ways: one head per GPU; 80 layers x 2 x 128 x 2 B x 1280 tokens per request
    assert request_kv_bytes(eight, 1024, 256, 1, bf16) == 80 * 2 * 128 * 2 * 1280
    # pipeline: 80 layers in 4 stages of 20; the first holds the embedding, the last the head
    four = stage_shares(spec, counts, 141_107_412_992, bf16, Layout(1, 4))
    assert [len(s.layers) for s in four] == [20, 20, 20, 20]
    assert sum(s.params for s in four) == counts.total


def test_best_of_n_shares_the_prompt_kv():
    # n = 4, prompt 1024, output 256: KV for 1024 + 4 x 256 = 2048 tokens, not 4 x 1280 = 5120
    spec = load_spec("llama-3-8b")
    share = stage_shares(spec, count_params(spec), 16_060_522_496, get_dtype("bf16"), Layout(1, 1))[0]
    assert request_kv_bytes(share, 1024, 256, 4, get_dtype("bf16")) == 131_072 * 2048
    code, d = plan_json("llama-3-8b", "--gpu", "h100", "-n", "4", "--concurrency", "10")
    assert d["chosen"]["memory_per_gpu"]["kv_cache_bytes"] == 10 * 131_072 * 2048


def test_fp8_kv_cache_doubles_concurrency():
    spec = load_spec("llama-3-8b")
    counts = count_params(spec)
    wl = ServingWorkload()
    bf = evaluate(spec, counts, H100, 1, 1, wl, ServeOptions())
    f8 = evaluate(spec, counts, H100, 1, 1, wl, ServeOptions(kv_dtype="fp8"))
    assert f8.max_concurrency in (2 * bf.max_concurrency, 2 * bf.max_concurrency + 1)


def test_rate_sizing_covers_the_traffic():
    spec = load_spec("llama-3-8b")
    opts = ServeOptions(usd_per_gpu_hour=2.0)
    low = plan_serving(spec, [H100], ServingWorkload(rate_per_s=2, slo_tpot_s=0.05), opts)
    high = plan_serving(spec, [H100], ServingWorkload(rate_per_s=200, slo_tpot_s=0.05), opts)
    assert low.chosen.layout.gpus <= high.chosen.layout.gpus
    for p, rate in ((low, 2), (high, 200)):
        c = p.chosen
        assert c.requests_per_s >= rate * (1 - 1e-9)
        assert c.tpot_s <= 0.05
        assert c.tokens_per_s == pytest.approx(c.requests_per_s * 256, rel=1e-9)


def test_concurrency_sizing_splits_into_replicas():
    # TPOT <= 15 ms caps a replica's batch; 2000 requests then need several replicas, each at most the limit
    code, d = plan_json("llama-3-8b", "--gpu", "h100", "--concurrency", "2000", "--slo-tpot", "15ms")
    c = d["chosen"]
    assert code == 0
    assert c["layout"]["replicas"] * c["batch_per_replica"] >= 2000
    assert c["batch_per_replica"] <= c["batch_limit_per_replica"] <= c["max_concurrency_per_replica"]
    assert c["tpot_s"] <= 0.015


def test_energy_and_cost_arithmetic():
    assert gpu_power_w(700, 0.5, 0.2) == pytest.approx(700 * (0.2 + 0.8 * 0.5))  # 420 W
    assert gpu_power_w(700, 3.0) == 700  # clamped
    assert cost_per_million(1, 3.6, 1000.0) == pytest.approx(1.0)  # $3.60/h, 1000 tok/s: 3.6e6 tok/h -> $1 per 1M
    assert energy_kwh_per_million(3600.0, 1000.0) == pytest.approx(1.0)  # 3.6 kW for 1000 s = 1 kWh
    code, d = plan_json("llama-3-8b", "--gpu", "h100", "--concurrency", "32", "--usd-per-gpu-hour", "2")
    c = d["chosen"]
    assert c["usd_per_million_tokens"] == pytest.approx(c["gpus"] * 2 / 3600 / c["tokens_per_s"] * 1e6)
    assert c["energy_kwh_per_million_tokens"] == pytest.approx(
        c["power_w_per_gpu"] * c["gpus"] / c["tokens_per_s"] * 1e6 / 3.6e6
    )
    assert 0.2 * 700 <= c["power_w_per_gpu"] <= 700


def test_several_gpu_types_are_compared():
    code, d = plan_json("mixtral-8x7b", "--gpu", "h100,a100-80gb,h200", "--concurrency", "16")
    assert code == 0
    keys = {a["gpu"] for a in d["alternatives"]} | {d["gpu"]}
    assert keys == {"h100-sxm", "a100-80gb", "h200"}
    # Mixtral bf16 weights 46,702,792,704 x 2 = 93.4 GB: over one 80 GiB card, within one 141 GB H200
    assert d["gpu"] == "h200" and d["gpus"] == 1
    a100 = next(a for a in d["alternatives"] if a["gpu"] == "a100-80gb")
    assert a100["gpus"] >= 2 and a100["layout"]["ep"] == a100["layout"]["tp"]  # experts placed whole


@pytest.mark.parametrize("name", ["mamba-2.8b", "jamba-v0.1", "god-1.8t"])
def test_every_family_plans(name):
    code, d = plan_json(name, "--gpu", "h100,b200", "--concurrency", "8")
    assert code == 0 and d["fits"] and d["gpus"] >= 1
    if name == "god-1.8t":
        # 1,797,804,818,432 x 2 B = 3.6 TB of bf16 weights: more than 16 x 180 GiB B200s hold
        assert d["gpus"] >= 3_595_609_636_864 / (180 * GIB * 0.9)


def test_formats_md_and_html_are_documents(tmp_path):
    out = tmp_path / "plan.html"
    # 20 ms: below the 31 ms TPOT of a 256-request step, so the SLO (not --max-batch 256) caps the batch
    r = runner.invoke(app, ["plan", "llama-3-8b", "--concurrency", "64", "--slo-tpot", "20ms", "--format", "html",
                            "-o", str(out), "--no-plot"])  # fmt: skip
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert text.startswith("<!doctype html>") and "TPOT SLO limits the batch" in text
    for section in ("Assumptions", "Alternatives", "Risks", "Method"):
        assert section in text
    r = runner.invoke(app, ["plan", "llama-3-8b", "--format", "md", "--no-plot", "--max-batch", "1000"])
    assert r.exit_code == 0
    assert r.stdout.startswith("# Capacity plan: serving llama-3-8b")
    assert "KV cache limits concurrency to" in r.stdout  # no SLO: memory sizes the batch


def test_table_output_runs():
    r = runner.invoke(app, ["plan", "llama-3-8b", "--gpu", "h100", "--concurrency", "8"])
    assert r.exit_code == 0
    assert "Plan: 1 x NVIDIA H100" in r.output


def test_bad_options_exit_2():
    r = runner.invoke(app, ["plan", "llama-3-8b", "--gpu", "h1000"])
    assert r.exit_code == 2 and "unknown GPU" in r.output
    r = runner.invoke(app, ["plan", "llama-3-8b", "--slo-tpot", "fast"])
    assert r.exit_code == 2 and "not a duration" in r.output
    r = runner.invoke(app, ["plan", "llama-3-8b", "--rate", "3", "--concurrency", "4"])
    assert r.exit_code == 2 and "not both" in r.output


def test_fixed_tp_and_pp():
    code, d = plan_json("llama-3-70b", "--gpu", "h100", "--tp", "8")
    assert code == 0 and d["layout"]["tp"] == 8
    assert all(a["layout"]["tp"] == 8 for a in d["alternatives"])
    r = runner.invoke(app, ["plan", "llama-3-70b", "--tp", "3"])
    assert r.exit_code == 2 and "64 attention heads do not split 3 ways" in r.output


def test_mla_cache_is_replicated_across_tensor_parallel_ranks():
    # DeepSeek-V3 caches kv_lora_rank + rope = 512 + 64 = 576 values per token per layer, with no head axis
    spec = load_spec("deepseek-v3")
    counts = count_params(spec)
    bf16 = get_dtype("bf16")
    w = 2 * counts.total
    one = stage_shares(spec, counts, w, bf16, Layout(1, 1))[0]
    eight = stage_shares(spec, counts, w, bf16, Layout(8, 1, 8))[0]
    assert request_kv_bytes(one, 1000, 0 + 1, 1, bf16) == 61 * 576 * 2 * 1001
    assert request_kv_bytes(eight, 1000, 1, 1, bf16) == request_kv_bytes(one, 1000, 1, 1, bf16)
    # experts placed whole: 256 routed experts / 8 = 32 per GPU, the same bytes as slicing them 8 ways
    assert eight.weights_bytes == pytest.approx(w / 8, rel=1e-3)


@settings(max_examples=25, deadline=None)
@given(headroom=st.floats(0.0, 0.5), prompt=st.integers(1, 8192), output=st.integers(1, 2048))
def test_more_headroom_or_longer_requests_never_raise_concurrency(headroom, prompt, output):
    spec = load_spec("llama-3-8b")
    counts = count_params(spec)
    wl = ServingWorkload(prompt_tokens=prompt, output_tokens=output)
    base = evaluate(spec, counts, H100, 1, 1, wl, ServeOptions(headroom=headroom))
    tighter = evaluate(spec, counts, H100, 1, 1, wl, ServeOptions(headroom=min(0.9, headroom + 0.1)))
    longer = evaluate(spec, counts, H100, 1, 1, ServingWorkload(prompt_tokens=prompt, output_tokens=output + 64),
                      ServeOptions(headroom=headroom))  # fmt: skip
    assert tighter.max_concurrency <= base.max_concurrency
    assert longer.max_concurrency <= base.max_concurrency
    # the memory per GPU at the operating point never exceeds what is usable
    assert base.memory["total_bytes"] <= H100.memory_bytes * (1 - headroom)


def test_reports_embed_a_plot_and_work_without_matplotlib(monkeypatch):
    pytest.importorskip("matplotlib")
    from pathlib import Path

    from godprof.plan.document import html_report, markdown_report

    spec = load_spec("llama-3-8b")
    plan = plan_serving(spec, [H100], ServingWorkload(concurrency=16, slo_tpot_s=0.03), ServeOptions())
    html = html_report("serve", plan)
    assert '<img alt="plot" src="data:image/png;base64,' in html
    md, png = markdown_report("serve", plan, figure=Path("plan.png"))  # Markdown links a PNG beside it
    assert "![plot](plan.png)" in md and png is not None and png.startswith(b"\x89PNG")
    embedded, none = markdown_report("serve", plan, embed=True)
    assert "![plot](data:image/png;base64," in embedded and none is None
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # import matplotlib now fails
    md, png = markdown_report("serve", plan, figure=Path("plan.png"))
    assert png is None and "data:image/png" not in md and "## Figure" not in md
    assert "## Risks" in md and "## Method" in md


def test_alternatives_name_the_gpu_cap_not_the_slo_when_the_cap_rejects_them():
    """Reported bug: every rejected layout said "TPOT > SLO" although its TPOT met the SLO and the real
    reason was --max-gpus (``short_reason`` looked at the SLO that caps the batch first)."""
    spec = load_spec("llama-3-8b")
    wl = ServingWorkload(prompt_tokens=1024, output_tokens=256, concurrency=2000, slo_tpot_s=0.025)
    plan = plan_serving(spec, [H100], wl, ServeOptions(max_gpus=2, max_batch=10**6))  # no engine cap: the SLO caps
    capped = [c for c in plan.candidates if c.rejected_by == "max-gpus"]
    assert capped, [c.reason for c in plan.candidates]
    assert any(c.limited_by == "TPOT SLO" for c in capped)  # the SLO caps some batches ...
    for c in capped:
        assert c.tpot_s <= 0.025  # ... and is met by all of them
        assert c.short_reason == "over --max-gpus"
        assert c.to_dict()["rejected_by"] == "max-gpus"
    slow = evaluate(spec, count_params(spec), H100, 1, 1, replace(wl, slo_tpot_s=0.001), ServeOptions())
    assert slow.rejected_by == "TPOT SLO" and slow.short_reason == "TPOT > SLO"
    short = evaluate(load_spec("llama-3-70b"), count_params(load_spec("llama-3-70b")), H100, 1, 1, wl, ServeOptions())
    assert short.rejected_by == "memory" and short.short_reason.endswith("GiB/GPU short")
