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
    # Llama-3-8B, tp 1, pp 1, dp 8, AdamW mixed precision: weights 2N, gradients 2N, optimizer 12N bytes
    spec = load_spec("llama-3-8b")
    counts = count_params(spec)
    lay = Layout(1, 1, 1, 8)
    m = {z: train_memory_per_gpu(spec, counts, TrainConfig(zero=z), lay) for z in range(4)}
    assert m[0]["weights_bytes"] == 2 * N8B and m[0]["gradients_bytes"] == 2 * N8B
    assert m[0]["optimizer_bytes"] == 12 * N8B
    assert m[1]["optimizer_bytes"] == 12 * N8B // 8
    assert m[1]["gradients_bytes"] == 2 * N8B
    assert m[2]["gradients_bytes"] == 2 * N8B // 8
    assert m[3]["weights_bytes"] == 2 * N8B // 8 == 2_007_565_312
    assert m[3]["zero3_gather_bytes"] > 0 and m[2]["zero3_gather_bytes"] == 0
    assert m[0]["activations_bytes"] == m[3]["activations_bytes"]
    # tensor parallelism divides everything, activations included
    m8 = train_memory_per_gpu(spec, counts, TrainConfig(zero=0), Layout(8, 1, 1, 1))
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
