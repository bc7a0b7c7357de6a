"""Serving semantics of `godprof plan`: continuous batching with chunked prefill, TTFT under load,
``--concurrency max`` and ``--max-batch``, prefill overlapped across pipeline stages, attention data
parallel x expert parallel, disaggregated prefill/decode, speculative decoding and prefix caching.

Figures a reviewer can redo by hand: Llama-3-8B's KV cache is 131,072 B per token (32 layers x K and V x
8 KV heads x 128 x 2 B); a 1,024-token prompt with 256 output tokens.
"""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from godprof.analytic import count_params
from godprof.analytic import efficiency as E
from godprof.analytic import roofline as R
from godprof.cli.main import app
from godprof.dtypes import get_dtype
from godprof.gpus import load_gpu
from godprof.plan.layout import Layout, request_kv_bytes, stage_shares
from godprof.plan.serving import ServeOptions, Speculative, evaluate, plan_serving
from godprof.plan.serving_timing import INTERNODE_BYTES_PER_S, _Timer, md1_wait_s, tokens_per_step
from godprof.plan.workload import ServingWorkload
from godprof.spec import load_spec

runner = CliRunner()
H100 = load_gpu("h100")
H200 = load_gpu("h200")
LLAMA = load_spec("llama-3-8b")
LLAMA_COUNTS = count_params(LLAMA)
WL = ServingWorkload(prompt_tokens=1024, output_tokens=256, concurrency=64)


ONE_GPU = Layout()


def timer(layout=ONE_GPU, wl=WL, **opts) -> _Timer:
    return _Timer(LLAMA, LLAMA_COUNTS, H100, layout, wl, ServeOptions(**opts))


def plan_json(*args: str) -> dict:
    r = runner.invoke(app, ["plan", *args, "--format", "json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


# --------------------------------------------------------------------------- continuous batching


def test_prefill_tokens_per_step_at_steady_state():
    # 64 requests in flight, each needs 1,024 prefill tokens over 256 steps: 64 x 1024 / 256 = 256 per step
    assert timer().prefill_per_step(64) == 256.0
    assert timer(prefix_hit_rate=0.5).prefill_per_step(64) == 128.0  # 512 tokens of each prompt are cached
    spec = Speculative(k=4, acceptance=0.7, draft="qwen3-0.6b")  # 2.7731 tokens per step: requests finish sooner
    assert timer(speculative=spec).prefill_per_step(64) == pytest.approx(64 * 1024 * 2.773099 / 256, rel=1e-6)


def test_batched_prefill_reads_the_weights_once():
    # eight 128-token prompts in one pass cost what roofline's batch-8 prefill bound costs, not 8 batch-1 passes
    t = timer(wl=ServingWorkload(prompt_tokens=128, output_tokens=256))
    batched = t.pass_bound(0, 8 * 128)
    assert batched == pytest.approx(R.prefill_bound_s(LLAMA, LLAMA_COUNTS, H100, 8, 128), rel=1e-9)
    assert batched < 0.5 * 8 * R.prefill_bound_s(LLAMA, LLAMA_COUNTS, H100, 1, 128)


def test_a_mixed_step_is_one_pass_over_the_weights():
    # 64 decodes + 256 prefill tokens: FLOPs add up, the weights are read once (bound at 100% of the datasheet)
    t = timer()
    ctx = 1024 + 128
    flops = (
        64 * R.decode_flops(LLAMA, LLAMA_COUNTS, 1, ctx) + 256 * R.prefill_flops(LLAMA, LLAMA_COUNTS, 1, 1024) / 1024
    )
    weights = R.weights_touched_bytes(LLAMA, LLAMA_COUNTS, 64 + 256, rows=64 + 256)
    kv = 64 * 131_072 * ctx + 256 * 131_072
    peak, bw = H100.peak_flops("bf16"), H100.hbm_bandwidth_bytes_per_s
    assert t.pass_bound(64, 256) == pytest.approx(max(flops / peak, (weights + kv) / bw), rel=1e-9)
    assert t.pass_bound(64, 256) < t.pass_bound(64, 0) + t.pass_bound(0, 256)
    # expected >= bound: the efficiency model only slows the pass down
    assert t.pass_time(64, 256)[0] >= t.pass_bound(64, 256)


def test_a_step_over_the_chunk_budget_takes_several_passes():
    # 64 decodes + 600 prefill tokens in 256-token passes: ceil(664 / 256) = 3 weight reads (memory-bound)
    small = timer(prefill_chunk_tokens=256)
    ctx = 1024 + 128
    flops = (
        64 * R.decode_flops(LLAMA, LLAMA_COUNTS, 1, ctx) + 600 * R.prefill_flops(LLAMA, LLAMA_COUNTS, 1, 1024) / 1024
    )
    per_pass = R.weights_touched_bytes(LLAMA, LLAMA_COUNTS, 0, rows=664)  # weights + 664 embedding rows
    cache = 64 * 131_072 * ctx + 600 * 131_072
    peak, bw = H100.peak_flops("bf16"), H100.hbm_bandwidth_bytes_per_s
    assert (3 * per_pass + cache) / bw > flops / peak
    assert small.pass_bound(64, 600) == pytest.approx((3 * per_pass + cache) / bw, rel=1e-9)
    assert small.pass_bound(64, 600) > timer().pass_bound(64, 600)  # one pass with the default 8,192 budget


def test_tpot_includes_the_prefill_chunks_and_states_its_definition():
    t = timer()
    assert t.tpot(64) == t.pass_time(64, 256)[0]  # step of 64 decodes + 256 prefill tokens, 1 token per step
    assert t.tpot(64) > t.pass_time(64, 0)[0]
    d = plan_json("llama-3-8b", "--gpu", "h100", "--concurrency", "64")
    assert "mean inter-token latency" in d["serving_model"]["tpot_definition"]
    assert "prefill chunks" in d["serving_model"]["tpot_definition"]
    c = d["chosen"]
    assert c["prefill_tokens_per_step"] == 256.0 and c["tokens_per_step"] == 1.0
    assert 0 < c["tpot_bound_s"] <= c["tpot_s"] and 0 < c["tpot_sol_percent"] <= 100


def test_ttft_under_load_by_hand():
    # chunk 512, 64 decodes in the step: 448 prompt tokens fit per step, so ceil(1024 / 448) = 3 chunk steps,
    # plus half a step's wait for the step in progress
    t = timer(prefill_chunk_tokens=512)
    parts = t.ttft_parts(64)
    assert parts["wait"] == pytest.approx(t.step(64)[0] / 2)
    assert parts["prefill"] == pytest.approx(3 * t.pass_time(64, 1024 / 3)[0])
    assert parts["kv_transfer"] == parts["queue"] == 0.0
    assert t.ttft(64) > t.ttft(1)  # under load the prompt shares its steps with 64 decodes
    c = evaluate(LLAMA, LLAMA_COUNTS, H100, 1, 1, WL, ServeOptions())
    assert c.ttft_s == pytest.approx(sum(c.ttft_parts.values()))


def test_rate_workloads_add_an_md1_queueing_wait():
    assert md1_wait_s(0.1, 0.5) == pytest.approx(0.05)  # 0.5 / (2 x 0.5) x 0.1
    assert md1_wait_s(0.1, 1.0) == math.inf
    c = evaluate(LLAMA, LLAMA_COUNTS, H100, 1, 1, ServingWorkload(rate_per_s=5), ServeOptions())
    assert c.ttft_parts["queue"] == pytest.approx(md1_wait_s(c.ttft_parts["prefill"], c.load))


# --------------------------------------------------------------------------- --concurrency max, --max-batch


def test_concurrency_max_runs_the_largest_batch_within_max_batch():
    d = plan_json("llama-3-8b", "--gpu", "h100", "--concurrency", "max", "--tp", "1", "--pp", "1")
    c = d["chosen"]
    assert c["max_concurrency_per_replica"] == 353  # memory (tests/test_plan_serving.py works it out)
    assert c["batch_per_replica"] == c["batch_limit_per_replica"] == 256 and c["limited_by"] == "max-batch"
    assert d["serving_model"]["concurrency"] == "max" and d["serving_model"]["max_batch"] == 256
    d = plan_json(
        "llama-3-8b", "--gpu", "h100", "--concurrency", "max", "--max-batch", "1000", "--tp", "1", "--pp", "1"
    )
    assert d["chosen"]["batch_per_replica"] == 353 and d["chosen"]["limited_by"] == "memory"
    d = plan_json("llama-3-8b", "--gpu", "h100", "--concurrency", "max", "--max-batch", "64", "--max-gpus", "4",
                  "--tp", "1", "--pp", "1")  # fmt: skip
    assert d["chosen"]["batch_per_replica"] == 64 and d["layout"]["replicas"] == 4  # offline fills --max-gpus


def test_max_batch_caps_a_large_memory():
    # the H200 holds thousands of short requests; no engine runs them in one batch
    c = evaluate(LLAMA, LLAMA_COUNTS, H200, 1, 1, ServingWorkload(prompt_tokens=128, output_tokens=128,
                 concurrency=10_000), ServeOptions())  # fmt: skip
    assert c.max_concurrency > 2000 and c.batch_limit == 256 and c.limited_by == "max-batch"
    assert c.layout.replicas == math.ceil(10_000 / 256)


# --------------------------------------------------------------------------- pipeline overlap


def test_prefill_overlaps_across_pipeline_stages():
    # pp 2 runs 2 micro-batches: each step carries half the decodes and half the prefill, and the stages work
    # on different micro-batches at once; throughput at 128 requests is twice pp 1's at 64 (less the transfers)
    one, two = timer(), timer(Layout(1, 2))
    assert two.step(128)[0] == two.pass_time(64, 256)[0]
    rate1, rate2 = one.request_rate(64), two.request_rate(128)
    assert rate2 / rate1 == pytest.approx(2.0, rel=0.02)


# --------------------------------------------------------------------------- attention DP x expert parallel


def test_attention_data_parallel_holds_each_ranks_own_requests():
    ds = load_spec("deepseek-v3")
    counts = count_params(ds)
    wl = ServingWorkload(prompt_tokens=1024, output_tokens=256, concurrency=256)
    opts = ServeOptions(dtype="fp8", tp=1, pp=1, attn_dp=8)
    c = evaluate(ds, counts, H200, 1, 1, wl, opts, dp=8)
    assert c.layout.attn_dp == 8 and c.layout.ep == 8 and c.layout.gpus_per_replica == 8
    share = stage_shares(ds, counts, 0, get_dtype("fp8"), c.layout)[0]
    per_req = request_kv_bytes(share, 1024, 256, 1, get_dtype("bf16"))
    assert c.memory["kv_cache_bytes"] == int(32 * per_req)  # 256 requests over 8 ranks: 32 each
    # all-to-all: 58 MoE layers x dispatch + combine x top-8 x 7/8 x 7168 x 2 B per token, at DeepEP's 77% of the link
    t = _Timer(ds, counts, H200, c.layout, wl, opts)
    wire = 58 * 2 * 8 * 7 / 8 * 7168 * 2 / H200.interconnect_bytes_per_s
    assert t.alltoall_per_token_s == pytest.approx(wire / E.model_for(H200).alltoall_bandwidth, rel=1e-12)
    assert t.allreduce_per_token_s == 0.0  # tp 1: no all-reduce


def test_expert_parallel_independent_of_tensor_parallel():
    ds = load_spec("deepseek-v3")
    counts = count_params(ds)
    bf16 = get_dtype("bf16")
    # tp 1 x attention dp 8 with ep 4: 256 experts, 64 whole experts per GPU (each twice in the group)
    four = stage_shares(ds, counts, 10**12, bf16, Layout(1, 1, 4, 1, 8))[0]
    eight = stage_shares(ds, counts, 10**12, bf16, Layout(1, 1, 8, 1, 8))[0]
    assert four.expert_params == pytest.approx(2 * eight.expert_params)
    routed = counts.by_component["routed_experts"]
    assert eight.expert_params == pytest.approx(routed / 8)
    d = plan_json("deepseek-v3", "--gpu", "h200", "--dtype", "fp8", "--tp", "2", "--pp", "1", "--attn-dp", "4",
                  "--ep", "8", "--concurrency", "64")  # fmt: skip
    assert (d["layout"]["tp"], d["layout"]["attn_dp"], d["layout"]["ep"]) == (2, 4, 8)


def test_the_layout_search_explores_attention_dp_for_moe_only():
    from godprof.plan.serving import layouts

    moe = layouts(load_spec("deepseek-v3"), ServeOptions(pp=1))
    assert (1, 1, 8) in moe and (8, 1, 1) in moe and (2, 1, 4) in moe
    assert all(dp == 1 for _, _, dp in layouts(LLAMA, ServeOptions()))


# --------------------------------------------------------------------------- disaggregated prefill/decode


def test_disaggregated_pools_by_hand():
    t = timer(disaggregate=(1, 2))
    # decode instances run decodes only: TPOT is the decode step
    assert t.tpot(32) == t.pass_time(32, 0)[0]
    # TTFT: the prompt alone on a prefill instance + its KV cache over the network: 1024 x 131,072 B / 50 GB/s
    parts = t.ttft_parts(32)
    assert (
        parts["kv_transfer"]
        == pytest.approx(1024 * 131_072 / INTERNODE_BYTES_PER_S)
        == pytest.approx(2.684e-3, rel=1e-3)
    )
    assert parts["prefill"] == pytest.approx(t.pass_time(0, 1024)[0])
    d = plan_json("llama-3-8b", "--gpu", "h100", "--concurrency", "64", "--disaggregate", "1:2")
    lay, c = d["layout"], d["chosen"]
    assert (lay["prefill_instances"], lay["decode_instances"], d["gpus"]) == (1, 2, 3)
    assert c["batch_per_replica"] == 32 and c["prefill_tokens_per_step"] == 0.0
    # throughput: the lesser of 2 decode instances' and 1 prefill instance's request rates
    rate = min(2 * t.request_rate(32), t.prefill_rate())
    assert c["requests_per_s"] == pytest.approx(rate, rel=1e-9)


def test_disaggregate_auto_sizes_the_pools_and_bad_values_exit_2():
    d = plan_json("llama-3-8b", "--gpu", "h100", "--concurrency", "600", "--disaggregate", "auto", "--tp", "1",
                  "--pp", "1")  # fmt: skip
    lay = d["layout"]
    assert lay["decode_instances"] == math.ceil(600 / 256) and lay["prefill_instances"] >= 1
    for bad in ("2", "0:1", "a:b"):
        r = runner.invoke(app, ["plan", "llama-3-8b", "--disaggregate", bad])
        assert r.exit_code == 2 and "--disaggregate" in r.output


# --------------------------------------------------------------------------- speculative decoding


def test_expected_tokens_per_step_formula():
    assert tokens_per_step(4, 0.7) == pytest.approx((1 - 0.7**5) / 0.3) == pytest.approx(2.77310, rel=1e-5)
    assert tokens_per_step(1, 0.8) == pytest.approx(1.8)
    assert tokens_per_step(3, 1.0) == 4.0 and tokens_per_step(3, 0.0) == 1.0


def test_speculative_step_verifies_k_plus_one_tokens_and_pays_for_the_draft():
    spec = Speculative(k=4, acceptance=0.7, draft="qwen3-0.6b")
    draft = load_spec("qwen3-0.6b")
    t = _Timer(LLAMA, LLAMA_COUNTS, H100, Layout(), WL, ServeOptions(speculative=spec), (draft, count_params(draft)))
    plain = timer()
    assert t.q == 5 and t.tau == pytest.approx(2.773099, rel=1e-6)
    assert t.tpot(64) == pytest.approx(t.step(64)[0] / t.tau)
    # the draft's 4 decode steps make a step dearer than the verification alone
    no_draft_cost = t.pass_bound(64, t.prefill_per_step(64)) < t.pass_time(64, t.prefill_per_step(64))[0]
    assert no_draft_cost and t.step(64)[0] > plain.step(64)[0]
    d = plan_json("llama-3-8b", "--gpu", "h100", "--concurrency", "64", "--speculative",
                  "draft=qwen3-0.6b,k=4,acceptance=0.7")  # fmt: skip
    assert d["serving_model"]["speculative"]["tokens_per_step"] == pytest.approx(2.773099, rel=1e-6)
    assert d["chosen"]["tokens_per_step"] == pytest.approx(2.773099, rel=1e-6)


def test_mtp_heads_or_an_error_without_them():
    d = plan_json("deepseek-v3", "--gpu", "h200", "--dtype", "fp8", "--concurrency", "64", "--tp", "8", "--pp", "1",
                  "--attn-dp", "1", "--speculative", "k=1,acceptance=0.8")  # fmt: skip
    assert d["chosen"]["tokens_per_step"] == pytest.approx(1.8)
    assert d["serving_model"]["speculative"]["draft"] == "mtp"
    r = runner.invoke(app, ["plan", "llama-3-8b", "--speculative", "k=2,acceptance=0.6"])
    assert r.exit_code == 2 and "no mtp section" in r.output
    r = runner.invoke(app, ["plan", "llama-3-8b", "--speculative", "k=2,acceptance=1.5"])
    assert r.exit_code == 2 and "acceptance" in r.output


# --------------------------------------------------------------------------- prefix caching


def test_prefix_caching_cuts_prefill_tokens_and_ttft():
    t, half = timer(), timer(prefix_hit_rate=0.5)
    assert half.prompt_eff == 512
    # the 512 new tokens still attend to the cached 512: F(1024) - F(512), not F(512)
    f = R.prefill_flops(LLAMA, LLAMA_COUNTS, 1, 1024) - R.prefill_flops(LLAMA, LLAMA_COUNTS, 1, 512)
    assert half.prefill_flops_tok == pytest.approx(f / 512)
    assert half.ttft(64) < t.ttft(64) and half.tpot(64) <= t.tpot(64)
    a = plan_json("llama-3-8b", "--gpu", "h100", "--concurrency", "64", "--tp", "1", "--pp", "1")
    b = plan_json("llama-3-8b", "--gpu", "h100", "--concurrency", "64", "--tp", "1", "--pp", "1",
                  "--prefix-hit-rate", "0.5")  # fmt: skip
    assert b["chosen"]["ttft_s"] < a["chosen"]["ttft_s"]
    assert b["chosen"]["prefill_tokens_per_step"] == a["chosen"]["prefill_tokens_per_step"] / 2
    assert b["serving_model"]["prefix_hit_rate"] == 0.5


def test_plan_serving_still_ranks_and_explains():
    p = plan_serving(LLAMA, [H100], WL, ServeOptions())
    assert p.fits and p.chosen.layout.gpus == 1
    assert set(p.chosen.to_dict()["ttft_breakdown_s"]) == {"wait", "prefill", "kv_transfer", "queue"}


def test_disaggregate_auto_carries_a_rate_on_the_fewest_gpus():
    wl = ServingWorkload(prompt_tokens=2048, output_tokens=384, rate_per_s=20, slo_ttft_s=1.0, slo_tpot_s=0.04)
    auto = plan_serving(LLAMA, [H100], wl, ServeOptions(disaggregate=(0, 0), tp=1, pp=1)).chosen
    for pools in ((1, 1), (1, 2), (3, 4)):
        fixed = plan_serving(LLAMA, [H100], wl, ServeOptions(disaggregate=pools, tp=1, pp=1)).chosen
        assert auto.layout.gpus <= fixed.layout.gpus
    assert auto.requests_per_s >= 20 * (1 - 1e-9)
