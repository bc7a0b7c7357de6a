"""`godprof plan --train`: FLOPs, GPU-hours, ZeRO memory, checkpoints and failures, checked by hand."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from godprof.analytic import count_params
from godprof.cli.main import app
from godprof.gpus import load_gpu
from godprof.plan.layout import Layout
from godprof.plan.training import (
    LLAMA3_FAILURES_PER_GPU_HOUR,
    TrainConfig,
    chinchilla_tokens,
    plan_training,
    train_flops,
    train_memory_per_gpu,
    young_daly_interval_s,
)
from godprof.spec import load_spec

runner = CliRunner()
H100 = load_gpu("h100")
N8B = 8_030_261_248


def train_json(*args: str) -> tuple[int, dict]:
    r = runner.invoke(app, ["plan", *args, "--train", "--format", "json"])
    assert r.exit_code in (0, 3), r.output
    return r.exit_code, json.loads(r.stdout)


def test_chinchilla_tokens_for_70b_are_1_4_trillion():
    assert chinchilla_tokens(70_000_000_000) == 1_400_000_000_000  # 20 x 70e9
    code, d = train_json("llama-3-70b", "--gpu", "h100", "--zero", "3")
    # the bundled spec has 70,553,706,496 parameters: 20 x that = 1.411e12, "1.4T" to two figures
    assert d["train"]["tokens"] == 20 * 70_553_706_496
    assert round(d["train"]["tokens"] / 1e12, 1) == 1.4
    assert d["train"]["tokens_source"].startswith("chinchilla")


def test_young_daly_interval_by_hand():
    # 60 s to write, MTBF 10 h = 36,000 s: sqrt(2 x 60 x 36,000) = sqrt(4,320,000) = 2078.46 s
    assert young_daly_interval_s(60, 36_000) == pytest.approx(2078.46, abs=0.01)
    assert young_daly_interval_s(1, 0.5) == pytest.approx(1.0)


def test_failure_figures_by_hand():
    # 2048 GPUs at r = 419 / (54 x 24 x 16384) = 1.973e-5 per GPU-hour: MTBF = 1 / (r x 2048) = 24.74 h;
    # a 100 s checkpoint write gives tau = sqrt(2 x 100 x 24.74 x 3600) = 4220 s
    assert LLAMA3_FAILURES_PER_GPU_HOUR == pytest.approx(1.973e-5, rel=1e-3)
    code, d = train_json("llama-3-70b", "--gpu", "h100", "--zero", "3", "--cluster-gpus", "2048",
                         "--checkpoint-write-s", "100")  # fmt: skip
    run = d["run"]
    assert code == 0 and run["gpus"] == 2048
    mtbf_h = 1 / (LLAMA3_FAILURES_PER_GPU_HOUR * 2048)
    assert run["mtbf_hours"] == pytest.approx(mtbf_h) and mtbf_h == pytest.approx(24.74, abs=0.01)
    assert run["checkpoint_interval_s"] == pytest.approx(math.sqrt(2 * 100 * mtbf_h * 3600))
    assert run["checkpoint_interval_s"] == pytest.approx(4220, abs=1)
    # expected interruptions = r x GPU-hours, whatever the cluster size
    assert run["expected_interruptions"] == pytest.approx(LLAMA3_FAILURES_PER_GPU_HOUR * d["train"]["gpu_hours"])
    assert run["wall_clock_hours"] == pytest.approx(d["train"]["gpu_hours"] / 2048)


def test_flops_and_gpu_hours_by_hand():
    # no recomputation: hardware FLOPs == model FLOPs, within a few % of 6ND (attention adds the rest)
    spec = load_spec("llama-3-8b")
    plan = plan_training(spec, H100, TrainConfig(tokens=10**9, recompute="none", seq=4096, mfu=0.5))
    f = plan.flops
    assert f["hardware"] == f["model"]
    assert f["six_nd"] == 6 * N8B * 10**9
    assert 1.0 < f["hardware"] / f["six_nd"] < 1.1
    assert plan.gpu_hours == pytest.approx(f["hardware"] / (989.4e12 * 0.5) / 3600)
    # full recomputation adds one forward: 4/3 of the FLOPs, and the MFU that results drops by 3/4
    full = plan_training(spec, H100, TrainConfig(tokens=10**9, recompute="full", seq=4096, mfu=0.5))
    assert full.flops["hardware"] == pytest.approx(f["hardware"] * 4 / 3, rel=1e-6)
    assert full.effective_mfu == pytest.approx(0.5 * 3 / 4, rel=1e-6)


def test_zero_stages_shard_state_by_hand():
    # Llama-3-8B, tp 1, pp 1, dp 8, AdamW mixed precision with bf16 gradients: weights 2N, gradients 2N,
    # optimizer 12N bytes (the ZeRO paper's 16 bytes per parameter)
    spec = load_spec("llama-3-8b")
    counts = count_params(spec)
    lay = Layout(1, 1, 1, 8)
    m = {z: train_memory_per_gpu(spec, counts, TrainConfig(zero=z, grad_dtype="bf16"), lay) for z in range(4)}
    assert m[0]["weights_bytes"] == 2 * N8B and m[0]["gradients_bytes"] == 2 * N8B
    assert m[0]["optimizer_bytes"] == 12 * N8B
    assert m[1]["optimizer_bytes"] == 12 * N8B // 8
    assert m[1]["gradients_bytes"] == 2 * N8B
    assert m[2]["gradients_bytes"] == 2 * N8B // 8
    assert m[3]["weights_bytes"] == 2 * N8B // 8 == 2_007_565_312
    assert m[3]["zero3_gather_bytes"] > 0 and m[2]["zero3_gather_bytes"] == 0
    assert m[0]["activations_bytes"] == m[3]["activations_bytes"]
    # tensor parallelism divides everything, activations included
    m8 = train_memory_per_gpu(spec, counts, TrainConfig(zero=0, grad_dtype="bf16"), Layout(8, 1, 1, 1))
    assert m8["optimizer_bytes"] == pytest.approx(12 * N8B / 8, rel=1e-9)
    assert m8["activations_bytes"] == pytest.approx(m[0]["activations_bytes"] / 8, abs=1)


def test_smallest_gpu_count_that_fits():
    # 8B with ZeRO-0: 16 B/param = 128 GB of state alone, so no single 80 GiB GPU; ZeRO-3 needs no more GPUs
    code0, d0 = train_json("llama-3-8b", "--gpu", "h100", "--zero", "0")
    code3, d3 = train_json("llama-3-8b", "--gpu", "h100", "--zero", "3")
    assert code0 == code3 == 0
    assert d0["gpus"] >= 2 and d3["gpus"] <= d0["gpus"]
    assert d0["memory_per_gpu"]["total_bytes"] <= d0["usable_bytes_per_gpu"]
    assert d3["layout"]["dp"] == d3["layout"]["replicas"]


def test_checkpoint_is_weights_plus_optimizer():
    code, d = train_json("llama-3-8b", "--gpu", "h100", "--tokens", "1B")
    assert d["train"]["tokens"] == 10**9
    assert d["run"]["checkpoint_bytes"] == 14 * N8B  # 2 B bf16 weights + 12 B AdamW state
    assert d["run"]["checkpoint_write_s"] == pytest.approx(14 * N8B / 10e9)  # default 10 GB/s


def test_405b_published_budget_is_in_range():
    # Llama 3 405B: 15.6T tokens, reported 30.84M H100-hours at 38-43% MFU. At MFU 0.4 the model gives
    # 6 x 405.9e9 x 15.6e12 = 3.8e25 FLOPs (plus attention) / (989.4e12 x 0.4) / 3600 ~ 27M GPU-hours.
    # At seq 4096 with selective recomputation it fits 80 GiB cards at tp 8 x pp 8 (activations ~38 GiB/GPU).
    code, d = train_json("llama-3.1-405b", "--gpu", "h100", "--tokens", "15.6T", "--cluster-gpus", "16384",
                         "--global-batch-tokens", "16M")  # fmt: skip
    assert code == 0 and d["layout"]["tp"] == 8 and d["gpus"] == 16384
    assert 22e6 < d["train"]["gpu_hours"] < 36e6
    assert d["run"]["wall_clock_days"] == pytest.approx(d["train"]["gpu_hours"] / 16384 / 24)


def test_does_not_fit_and_bad_values():
    # 405B on at most 8 GPUs: 16 B/param x 405.9e9 = 6.5 TB of state cannot fit 8 x 80 GiB
    code, d = train_json("llama-3.1-405b", "--gpu", "h100", "--max-gpus", "8", "--zero", "3")
    assert code == 3 and d["fits"] is False and d["missing"].startswith("memory")
    r = runner.invoke(app, ["plan", "llama-3-8b", "--train", "--tokens", "lots"])
    assert r.exit_code == 2 and "--tokens" in r.output
    r = runner.invoke(app, ["plan", "llama-3-8b", "--train", "--zero", "4"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["plan", "llama-3-70b", "--train", "--format", "md", "--no-plot", "--cluster-gpus", "512"])
    assert r.exit_code == 0 and "# Capacity plan: training llama-3-70b" in r.stdout and "Young" in r.stdout


def test_fp32_gradients_are_the_default_18_bytes_per_parameter():
    """DeepSpeed (bf16 mode) and Megatron-LM (--accumulate-allreduce-grads-in-fp32) keep fp32 gradients: Adam
    mixed precision is 2 + 4 + 12 = 18 B/param; bf16 gradients give the ZeRO paper's 2 + 2 + 12 = 16 B/param
    (Rajbhandari et al. 2020, sec. 3.1: "16 Psi bytes")."""
    spec = load_spec("llama-3-8b")
    counts = count_params(spec)
    state = ("weights_bytes", "gradients_bytes", "optimizer_bytes")
    m32 = train_memory_per_gpu(spec, counts, TrainConfig(zero=0), Layout())
    m16 = train_memory_per_gpu(spec, counts, TrainConfig(zero=0, grad_dtype="bf16"), Layout())
    assert sum(m32[k] for k in state) == 18 * N8B
    assert sum(m16[k] for k in state) == 16 * N8B
    code, d = train_json("llama-3-8b", "--grad-dtype", "bf16", "--cluster-gpus", "8", "--zero", "0")
    mem = d["memory_per_gpu"]  # ZeRO-0: bf16 gradients take exactly what bf16 weights take, on any layout
    assert code == 0 and mem["gradients_bytes"] == mem["weights_bytes"] and d["train"]["grad_dtype"] == "bf16"
    r = runner.invoke(app, ["plan", "llama-3-8b", "--train", "--grad-dtype", "fp8"])
    assert r.exit_code == 2 and "--grad-dtype" in r.output


def test_dropout_keeps_one_byte_masks():
    """Korthikanti et al. 2022's 34sbh counts 2sbh bytes of dropout masks per layer (after attention and after
    the MLP), plus the embedding dropout's sbh; with flash attention the attention-probability mask is
    regenerated, not stored. Llama-3-8B, 4,096 tokens, 32 layers: (1 + 2 x 32) x 4096 x 4096 bytes."""
    spec = load_spec("llama-3-8b")
    counts = count_params(spec)
    base = train_memory_per_gpu(spec, counts, TrainConfig(recompute="none"), Layout())
    drop = train_memory_per_gpu(spec, counts, TrainConfig(recompute="none", dropout=0.1), Layout())
    assert drop["activations_bytes"] - base["activations_bytes"] == 65 * 4096 * 4096 == 1_090_519_040
    # recomputed layers keep no masks: only the embedding's remains
    full = train_memory_per_gpu(spec, counts, TrainConfig(recompute="full"), Layout())
    fulld = train_memory_per_gpu(spec, counts, TrainConfig(recompute="full", dropout=0.1), Layout())
    assert fulld["activations_bytes"] - full["activations_bytes"] == 4096 * 4096


def test_partial_recompute_lies_between_selective_and_full():
    spec = load_spec("llama-3-8b")
    counts = count_params(spec)

    def acts(**kw) -> int:
        return train_memory_per_gpu(spec, counts, TrainConfig(**kw), Layout())["activations_bytes"]

    sel, full = acts(recompute="selective"), acts(recompute="full")
    parts = [acts(recompute="selective", recompute_layers=n) for n in (0, 8, 16, 31, 32)]
    assert parts[0] == sel and parts[-1] == full  # all 32 layers recomputed = --recompute full
    assert parts == sorted(parts, reverse=True) and full < parts[3] < parts[1] < sel
    # each recomputed layer keeps only its input: past the first (which adds the one layer being recomputed),
    # the saving is the same for every layer
    assert (parts[1] - parts[2]) * 15 == (parts[2] - parts[3]) * 8
    # FLOPs: recomputing every layer costs what --recompute full does; half of them, half the extra forward
    hw_sel = train_flops(spec, counts, TrainConfig(recompute="selective"))[0]
    hw_full = train_flops(spec, counts, TrainConfig(recompute="full"))[0]
    assert train_flops(spec, counts, TrainConfig(recompute="selective", recompute_layers=32))[0] == hw_full
    half = train_flops(spec, counts, TrainConfig(recompute="selective", recompute_layers=16))[0]
    assert half == hw_sel + (hw_full - hw_sel) * 16 // 32


def test_offload_optimizer_moves_its_state_to_cpu_memory():
    """ZeRO-Offload (Ren et al. 2021): fp32 master weights and Adam moments live in host memory."""
    spec = load_spec("llama-3-8b")
    counts = count_params(spec)
    on = train_memory_per_gpu(spec, counts, TrainConfig(zero=1, offload_optimizer=True), Layout(1, 1, 1, 8))
    off = train_memory_per_gpu(spec, counts, TrainConfig(zero=1), Layout(1, 1, 1, 8))
    assert on["optimizer_bytes"] == 0 and on["cpu_optimizer_bytes"] == off["optimizer_bytes"] == 12 * N8B // 8
    assert off["total_bytes"] - on["total_bytes"] == off["optimizer_bytes"]
    # one H100 cannot hold Llama-3-8B with AdamW (18 B/param = 135 GiB); offloading the 12 B/param of
    # optimizer state leaves 2 + 4 B/param = 45 GiB on the GPU plus activations, with full recompute
    code, d = train_json("llama-3-8b", "--cluster-gpus", "1", "--offload-optimizer", "--recompute", "full",
                         "--zero", "0")  # fmt: skip
    assert code == 0 and d["gpus"] == 1 and d["memory_per_gpu"]["cpu_optimizer_bytes"] == 12 * N8B
    assert any("ZeRO-Offload" in r for r in d["risks"])
    code, d = train_json("llama-3-8b", "--cluster-gpus", "1", "--recompute", "full", "--zero", "0")
    assert code == 3


def test_deepseek_v3_published_layout_fits_an_h800_with_expert_parallel_independent_of_tp():
    """DeepSeek-V3 (arXiv 2412.19437, sec. 3.2): 2,048 H800s (80 GB), 16-way pipeline parallelism, 64-way
    expert parallelism across 8 nodes, ZeRO-1 data parallelism, no tensor parallelism; fp32 master weights
    and gradients; sequences of 4,096 tokens, batches growing to 15,360 sequences.

    Before expert parallelism was independent of tp, godprof could only tie ep to tp (= 1 here), so every GPU
    of a stage held all 256 experts of its layers: 272 GiB per GPU even with full recomputation (the issue
    measured 290 GiB), "does not fit". With PP16 x EP64 x DP128
    each GPU of the heaviest stage holds ~3.1B parameters (4 of 256 experts in each of its 4 MoE layers plus
    its share of the dense parts): 5.7 GiB of bf16 weights, 11.5 GiB of fp32 gradients and 1.2 GiB of ZeRO-1
    sharded optimizer state, 18.5 GiB of model state, which leaves the rest of an 80 GB H800 for activations,
    as the report implies (it names no per-GPU figure; it says the layout trains without tensor
    parallelism thanks to recomputing RMSNorm and MLA up-projections and caching activations in FP8).
    godprof models bf16 activations without FP8 caching, so it needs more recomputation than DeepSeek did to
    fit: with full recomputation 28.8 GiB per GPU, with 3 of each stage's 4 layers recomputed ~56 GiB, both
    within the 70.5 GiB usable (80 GiB less 10% headroom and 1.5 GiB of runtime overheads); with selective
    recomputation alone 137 GiB (118 GiB of bf16 activations), which is stated, not hidden.
    """
    spec = load_spec("deepseek-v3")
    counts = count_params(spec)
    cfg = TrainConfig(seq=4096, global_batch_tokens=15_360 * 4096, recompute="full", zero=1)
    m = train_memory_per_gpu(spec, counts, cfg, Layout(1, 16, 64, 128))
    state = m["weights_bytes"] + m["gradients_bytes"] + m["optimizer_bytes"]
    assert 17 * 2**30 < state < 20 * 2**30
    assert 25 * 2**30 < m["total_bytes"] < 33 * 2**30
    tied = train_memory_per_gpu(spec, counts, cfg, Layout(1, 16, 1, 128))
    assert tied["total_bytes"] > 250 * 2**30
    args = ("deepseek-v3", "--gpu", "h800", "--cluster-gpus", "2048", "--tp", "1", "--pp", "16", "--ep", "64",
            "--seq", "4096", "--global-batch-tokens", str(15_360 * 4096))  # fmt: skip
    code, d = train_json(*args, "--recompute", "full")
    assert code == 0 and d["gpus"] == 2048
    assert d["layout"] == {"tp": 1, "pp": 16, "ep": 64, "replicas": 128, "dp": 128}
    assert d["memory_per_gpu"]["total_bytes"] == m["total_bytes"]
    code, d = train_json(*args, "--recompute-layers", "3")
    assert code == 0 and d["memory_per_gpu"]["total_bytes"] < d["usable_bytes_per_gpu"]
    code, d = train_json(*args)  # selective only: bf16 activations do not fit, and the message says where
    assert code == 3 and "on --cluster-gpus 2048" in d["missing"] and "--recompute-layers" in d["missing"]


def test_layout_search_honours_cluster_gpus():
    # ZeRO-3 over all 64 GPUs of the cluster holds Llama-3-70B at tp 1, which the smallest-count search
    # (which stops doubling dp at the first fit) would lay out differently
    code, d = train_json("llama-3-70b", "--cluster-gpus", "64", "--zero", "3")
    assert code == 0 and d["gpus"] == 64 and d["layout"]["tp"] * d["layout"]["pp"] * d["layout"]["dp"] == 64
    code, d = train_json("god-1.8t", "--cluster-gpus", "8", "--zero", "1")
    assert code == 3 and "on --cluster-gpus 8" in d["missing"]
