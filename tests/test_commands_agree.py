"""One inference memory model: estimate, compare, sweep and plan give the same bytes for the same workload.

Issue 11 found four answers to one question (llama-3-8b, 8k context, batch 1: estimate 21.90 GiB,
compare/sweep 16.81 GiB, plan with 10% kept free, compare's "fits" with none). They now all call
``godprof.analytic.inference_memory``: activations of the largest prefill pass (default chunk 8,192
tokens, last-position logits), runtime overheads and 10% headroom. These tests hold them to the byte.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from godprof.analytic import Workload, count_params, estimate
from godprof.analytic import inference_memory as IM
from godprof.analytic import roofline as R
from godprof.cli.main import app
from godprof.gpus import load_gpu
from godprof.plan.serving import ServeOptions, evaluate
from godprof.plan.workload import ServingWorkload
from godprof.report.compare import Setup, compare_record
from godprof.report.sweep import log_contexts, sweep
from godprof.spec import load_spec

H200 = load_gpu("h200")
SHARED_KEYS = ("weights_bytes", "kv_cache_bytes", "ssm_state_bytes", "activations_bytes", "total_bytes")
# dense (GQA), MoE, hybrid attention + Mamba + MoE, pure SSM, sliding-window / global alternation
SPECS = ["llama-3-8b", "mixtral-8x7b", "jamba-v0.1", "mamba-2.8b", "gemma-2-9b"]


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize(("batch", "context"), [(1, 8192), (4, 1000), (8, 131072), (3, 20000)])
def test_estimate_compare_and_sweep_agree(name, batch, context):
    spec = load_spec(name)
    e = estimate(spec, Workload(batch=batch, seq=context, logits="last"), gpu=H200)
    setup = Setup(H200, batch=batch, context=context)
    d = compare_record(spec, setup)
    for key in (*SHARED_KEYS, "gradients_bytes", "optimizer_bytes", "kv_bytes_per_token"):
        assert d["memory"][key] == e.memory[key], key
    assert e.fit is not None
    for key, value in e.fit.items():  # compare's fit block adds max context/batch to the same record
        assert d["fit"][key] == value, key
    assert d["fit"]["free_bytes"] == IM.usable_bytes(H200) - e.memory["total_bytes"]
    doc = sweep([spec], [setup], [context])
    (p,) = doc["points"]
    assert p["serving_bytes"] == e.memory["total_bytes"]
    assert p["activations_bytes"] == e.memory["activations_bytes"]
    assert p["fits"] == e.fit["fits"]


@pytest.mark.parametrize("name", ["llama-3-8b", "mixtral-8x7b", "jamba-v0.1", "mamba-2.8b"])
@pytest.mark.parametrize(("requests", "prompt", "output"), [(1, 8192, 1), (6, 1024, 256), (2, 30000, 2000)])
def test_plan_agrees_with_estimate_on_one_gpu(name, requests, prompt, output):
    """Plan's memory per GPU at tp = pp = 1 is estimate's for batch = requests, seq = prompt and
    context = prompt + output (the cache at the end of generation)."""
    spec = load_spec(name)
    wl = ServingWorkload(prompt_tokens=prompt, output_tokens=output, concurrency=requests)
    c = evaluate(spec, count_params(spec), H200, 1, 1, wl, ServeOptions())
    assert c.fits and c.batch == requests, c.reason
    e = estimate(spec, Workload(batch=requests, seq=prompt, context=prompt + output, logits="last"), gpu=H200)
    for key in SHARED_KEYS:
        assert c.memory[key] == e.memory[key], key
    assert e.fit is not None
    assert c.memory["usable_bytes"] == e.fit["usable_bytes"]
    assert c.memory["runtime_overhead_bytes"] == e.fit["runtime_overhead_bytes"]


def test_plan_max_concurrency_is_compare_max_batch():
    """The most requests one GPU holds is the same number in plan and compare (prompt = context, one
    output token: compare's workload)."""
    spec = load_spec("llama-3-8b")
    counts = count_params(spec)
    for ctx in (2048, 8192, 32768):
        wl = ServingWorkload(prompt_tokens=ctx - 1, output_tokens=1, concurrency=1)
        c = evaluate(spec, counts, H200, 1, 1, wl, ServeOptions())
        # plan prefills ctx - 1 prompt tokens; the activations differ by one token's worth at most
        assert abs(c.max_concurrency - R.max_batch(spec, counts, H200, ctx)) <= 1


def test_chunked_prefill_and_logits_options():
    spec = load_spec("llama-3-8b")
    w = Workload(batch=4, seq=8192, logits="last")
    chunked = estimate(spec, w).memory["activations_bytes"]
    whole = estimate(spec, w, memory_model=IM.MemoryModel(prefill_chunk_tokens=None)).memory["activations_bytes"]
    assert whole > 3 * chunked  # 4 x 8,192 tokens at once instead of one 8,192-token chunk
    all_logits = estimate(spec, Workload(batch=4, seq=8192, logits="all")).memory["activations_bytes"]
    # all-position logits: the head alone holds 8,192 x 128,256 x (2 B + the sampler's 4 B fp32 copy)
    assert all_logits > 8192 * 128_256 * 6 > 5 * chunked
    assert IM.prefill_pass(4, 8192, 8192) == (1, 8192)
    assert IM.prefill_pass(16, 1000, 8192) == (8, 1000)
    assert IM.prefill_pass(16, 1000, None) == (16, 1000)


def test_issue_example_llama3_8b_8k_is_one_answer():
    """`estimate --seq 8k --gpu h100`, compare and sweep print one total and one verdict (issue 11)."""
    runner = CliRunner()
    r = runner.invoke(app, ["estimate", "llama-3-8b", "--seq", "8192", "--gpu", "h100", "-f", "json"])
    assert r.exit_code == 0, r.output
    e = json.loads(r.stdout)
    assert e["workload"]["logits"] == "last" and e["workload"]["prefill_chunk_tokens"] == 8192
    fit = e["fit"]
    assert fit["fits"] and fit["free_bytes"] == fit["usable_bytes"] - e["memory"]["total_bytes"]
    # 80 GiB x 0.9 - (768 + 256) MiB of runtime overheads
    assert fit["usable_bytes"] == int(80 * 2**30 * 0.9) - 2**30
    d = compare_record(load_spec("llama-3-8b"), Setup(load_gpu("h100"), batch=1, context=8192))
    assert d["memory"]["total_bytes"] == e["memory"]["total_bytes"]
    assert d["fit"]["free_bytes"] == fit["free_bytes"]
    # the table says it too
    r = runner.invoke(app, ["estimate", "llama-3-8b", "--seq", "8192", "--gpu", "h100"])
    assert r.exit_code == 0 and "fits" in r.output and "free" in r.output


def test_a_gpu_file_states_its_own_runtime_overheads(tmp_path):
    f = tmp_path / "card.yaml"
    f.write_text(
        "name: Test card\nvendor: nvidia\nsource: https://example.invalid/datasheet\nmemory_gib: 100\n"
        "hbm_bandwidth_gb_per_s: 1000\npeak_tflops: {bf16: 100}\ntdp_w: 300\ninterconnect: pcie\n"
        "interconnect_gb_per_s: 32\n"
        "runtime_overhead_mib: {cuda_context: 500, workspace: 100, comm_buffers: 300, source: measured}\n"
    )
    from godprof.gpus import load_gpu_file

    g = load_gpu_file(f)
    over = IM.overheads_for(g)
    assert (over.cuda_context_bytes, over.workspace_bytes, over.comm_buffer_bytes) == (500 << 20, 100 << 20, 300 << 20)
    assert IM.usable_bytes(g, peers=True) == int(100 * 2**30 * 0.9) - (900 << 20)
    assert IM.usable_bytes(g) == int(100 * 2**30 * 0.9) - (600 << 20)


def test_sweep_fit_flips_where_compare_max_context_says():
    spec = load_spec("llama-3-8b")
    counts = count_params(spec)
    g = load_gpu("h100")
    limit = R.max_context(spec, counts, g, 1)
    assert limit is not None and 300_000 < limit < 600_000
    doc = sweep([spec], [Setup(g, batch=1, context=limit + 1)], [limit, limit + 1])
    assert [p["fits"] for p in doc["points"]] == [True, False]
    assert log_contexts(limit, limit + 1, 2) == [limit, limit + 1]
