"""Measured figures against the roofline: the expected time and the speed-of-light bound, side by side."""

from __future__ import annotations

from godprof.analytic import roofline as R
from godprof.analytic.estimate import estimate
from godprof.gpus import load_gpu
from godprof.measure.config import MeasureConfig
from godprof.measure.derived import derived
from godprof.measure.stats import TimingStats
from godprof.spec import load_spec

H100 = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3"}


def _derive(ttft_s: float, tpot_s: float) -> tuple[dict, list[str]]:
    spec = load_spec("llama-3-8b")
    cfg = MeasureConfig(batch=1, seq=512, new_tokens=8, iters=3)
    est = estimate(spec)
    notes: list[str] = []
    out = derived(spec, est, cfg, H100, TimingStats.of([ttft_s]), TimingStats.of([tpot_s]), notes)
    return out, notes


def test_bound_and_expected_are_both_reported_and_ordered():
    out, notes = _derive(1.0, 1.0)
    roof = out["roofline"]
    assert roof["gpu"] == "h100-sxm"
    assert 0 < roof["tpot_bound_s"] <= roof["tpot_s"] and 0 < roof["ttft_bound_s"] <= roof["ttft_s"]
    # the bound is the datasheet roofline: one decode step of an 8B model at batch 1 reads its ~16 GB of
    # weights at H100 SXM's 3.35 TB/s, so at least 4.5 ms
    spec = load_spec("llama-3-8b")
    cfg = MeasureConfig(batch=1, seq=512, new_tokens=8, iters=3)
    bound = R.decode_bound_s(spec, estimate(spec).params, load_gpu("h100-sxm"), 1, cfg.decode_context, "bf16")
    assert roof["tpot_bound_s"] == bound and bound > 4.5e-3
    assert not any("beats the speed-of-light" in n for n in notes)


def test_a_measurement_faster_than_the_bound_is_flagged():
    out, notes = _derive(1e-6, 1e-6)
    assert sum("beats the speed-of-light bound" in n for n in notes) == 2
