"""Unit tests of the measurement logic that needs no model: timing statistics, the energy window with
fake counters and a fake clock, power integration, the CPU tensor-byte tracker, device resolution."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from godprof.measure.energy import (
    COUNTER,
    SAMPLING,
    MeterError,
    counter_window,
    integrate_power,
    measure_window,
    sampled_window,
)
from godprof.measure.memory import LiveTensorBytes, module_bytes, tensor_bytes
from godprof.measure.report import rel_error
from godprof.measure.run import NoDevice, resolve_device
from godprof.measure.stats import TimingStats, percentile

# --------------------------------------------------------------------------- timing statistics


def test_percentile_hand_values():
    xs = [5.0, 1.0, 4.0, 2.0, 3.0]  # sorted: 1 2 3 4 5, ranks 0..4
    assert percentile(xs, 50) == 3.0  # rank 2
    assert percentile(xs, 10) == pytest.approx(1.4)  # rank 0.4: 1 + 0.4 x (2 - 1)
    assert percentile(xs, 90) == pytest.approx(4.6)  # rank 3.6: 4 + 0.6 x (5 - 4)
    assert percentile(xs, 0) == 1.0 and percentile(xs, 100) == 5.0
    assert percentile([7.0], 90) == 7.0


def test_percentile_matches_numpy_linear():
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 41):
        xs = rng.exponential(size=n).tolist()
        for q in (10, 50, 90):
            assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-12)


def test_timing_stats_even_count_and_order():
    s = TimingStats.of([0.004, 0.001, 0.003, 0.002])  # sorted 1 2 3 4 ms
    assert s.n == 4
    assert s.median_s == pytest.approx(0.0025)  # rank 1.5
    assert s.p10_s == pytest.approx(0.0013)  # rank 0.3
    assert s.p90_s == pytest.approx(0.0037)  # rank 2.7
    assert s.mean_s == pytest.approx(0.0025)
    assert (s.min_s, s.max_s) == (0.001, 0.004)
    assert s.p10_s <= s.median_s <= s.p90_s
    assert s.spread == pytest.approx((0.0037 - 0.0013) / 0.0025)
    assert set(s.to_dict()) == {"n", "median_s", "p10_s", "p90_s", "mean_s", "min_s", "max_s"}


@pytest.mark.parametrize("bad", [[], [0.1, float("nan")], [-0.001], [float("inf")]])
def test_timing_stats_rejects_bad_samples(bad):
    with pytest.raises(ValueError):
        TimingStats.of(bad)


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# --------------------------------------------------------------------------- energy window (fake clock)


class FakeGpu:
    """A device drawing ``power_w`` whose energy counter refreshes every ``tick_ms``.

    Time is an integer number of milliseconds so every figure below is exact. ``unit()`` runs
    ``unit_ms`` of work; the counter shows the true energy at the last refresh, in millijoules.
    """

    def __init__(self, power_w: float, tick_ms: int, unit_ms: int, start_ms: int = 3):
        self.power_w = power_w
        self.tick_ms = tick_ms
        self.unit_ms = unit_ms
        self.now_ms = start_ms
        self.reads = 0
        self.syncs = 0

    def clock(self) -> float:
        return self.now_ms / 1000

    def unit(self) -> None:
        self.now_ms += self.unit_ms

    def sync(self) -> None:
        self.syncs += 1

    def read_mj(self) -> int:
        self.reads += 1
        refreshed_ms = self.now_ms // self.tick_ms * self.tick_ms
        return round(self.power_w * refreshed_ms)  # W x ms = mJ

    def read_mw(self) -> int:
        return round(self.power_w * 1000)


def test_counter_window_exact_power_with_coarse_ticks():
    gpu = FakeGpu(power_w=250.0, tick_ms=100, unit_ms=10)
    r = counter_window(gpu.unit, gpu, sync=gpu.sync, clock=gpu.clock, min_s=1.0, min_ticks=3, chunk_s=0.002)
    assert r.supported and r.method == COUNTER
    # The first change is seen at t = 100 ms (units end on 10 ms boundaries, so exactly at the tick);
    # the loop stops at the first tick with >= 1 s since then: t = 1100 ms, 10 ticks later.
    assert r.window_s == pytest.approx(1.0)
    assert r.ticks == 10
    assert r.joules == pytest.approx(250.0)  # 250 W x 1 s
    assert r.power_w == pytest.approx(250.0)
    assert r.units == 110  # 1100 ms - 3 ms start, in 10 ms units: the last unit ends at 1103 ms
    assert r.joules_for(0.02) == pytest.approx(5.0)  # 250 W x 20 ms
    assert gpu.syncs == r.units + 1  # one sync before starting, then one per chunk of one unit


def test_counter_window_misaligned_ticks_bounded_error():
    # Ticks every 37 ms, units of 7 ms: the observed tick times lag the real ones by < 7 ms, so the
    # power error is at most one unit over the window (7 ms / >= 1 s < 0.7%).
    gpu = FakeGpu(power_w=180.0, tick_ms=37, unit_ms=7)
    r = counter_window(gpu.unit, gpu, sync=gpu.sync, clock=gpu.clock, min_s=1.0, chunk_s=0.002)
    assert r.supported
    assert r.window_s >= 1.0
    assert r.power_w == pytest.approx(180.0, rel=0.007)


def test_counter_window_default_chunks_read_every_50ms():
    # The default chunk (50 ms) keeps sync + NVML reads to about 20 a second, so a GPU-bound workload
    # is barely interrupted, and the power error stays within one chunk over the window.
    gpu = FakeGpu(power_w=400.0, tick_ms=20, unit_ms=2)
    r = counter_window(gpu.unit, gpu, sync=gpu.sync, clock=gpu.clock, min_s=3.0)
    assert r.supported and r.window_s >= 3.0
    assert gpu.reads <= r.elapsed_s / 0.05 + 8  # + the doubling chunks 1, 2, 4, ... units at the start
    assert r.power_w == pytest.approx(400.0, rel=0.05 / 3.0)


def test_counter_window_chunks_grow_for_short_units():
    # 1 ms units with chunk_s = 8 ms: chunks double 1, 2, 4, 8 and then stay, so the counter is read
    # far fewer times than there are units.
    gpu = FakeGpu(power_w=100.0, tick_ms=50, unit_ms=1)
    r = counter_window(gpu.unit, gpu, sync=gpu.sync, clock=gpu.clock, min_s=1.0, chunk_s=0.008)
    assert r.supported
    assert gpu.reads < r.units / 4
    assert r.power_w == pytest.approx(100.0, rel=0.01)


class Frozen(FakeGpu):
    def read_mj(self) -> int:
        return 42


def test_counter_window_never_ticks_gives_up_at_max_s():
    gpu = Frozen(power_w=300.0, tick_ms=100, unit_ms=10)
    r = counter_window(gpu.unit, gpu, sync=gpu.sync, clock=gpu.clock, min_s=1.0, max_s=2.0, no_tick_s=5.0)
    assert not r.supported
    assert r.joules_for(1.0) is None
    assert "changed 0 time(s)" in (r.reason or "")
    assert 2.0 <= r.elapsed_s < 2.1


def test_counter_window_gives_up_after_2s_without_a_tick():
    # a sandboxed driver whose counter never moves costs 2 s, not max_s (30 s)
    gpu = Frozen(power_w=300.0, tick_ms=100, unit_ms=10)
    r = counter_window(gpu.unit, gpu, sync=gpu.sync, clock=gpu.clock, min_s=3.0)
    assert not r.supported and "did not change for" in (r.reason or "")
    assert 2.0 <= r.elapsed_s < 2.2


def test_counter_window_backwards_counter_is_rejected():
    class Backwards(FakeGpu):
        def read_mj(self) -> int:
            return 1000 - self.now_ms

    gpu = Backwards(power_w=1.0, tick_ms=1, unit_ms=10)
    r = counter_window(gpu.unit, gpu, sync=gpu.sync, clock=gpu.clock)
    assert not r.supported and "backwards" in (r.reason or "")


def test_integrate_power_trapezoid():
    # 0-1 s: mean 150 W -> 150 J; 1-3 s: 200 W -> 400 J
    assert integrate_power([(0.0, 100.0), (1.0, 200.0), (3.0, 200.0)]) == pytest.approx(550.0)
    assert integrate_power([(0.0, 100.0)]) == 0


class ConstantMeter:
    def __init__(self, mw: int):
        self.mw = mw

    def read_mw(self) -> int:
        return self.mw


class BrokenCounter:
    def read_mj(self) -> int:
        raise MeterError("nvmlDeviceGetTotalEnergyConsumption: Not Supported")


class BrokenMeter:
    def read_mw(self) -> int:
        raise MeterError("nvmlDeviceGetPowerUsage: Not Supported")


def test_sampled_window_constant_power_real_thread():
    r = sampled_window(lambda: time.sleep(0.001), ConstantMeter(100_000), min_s=0.15, interval_s=0.005)
    assert r.supported and r.method == SAMPLING
    assert r.power_w == pytest.approx(100.0)  # trapezoid of a constant is exact
    assert r.joules == pytest.approx(100.0 * r.window_s)
    assert r.ticks >= 10 and r.elapsed_s >= 0.15


def test_measure_window_falls_back_to_sampling_then_to_unsupported():
    r = measure_window(lambda: time.sleep(0.001), BrokenCounter(), ConstantMeter(50_000), min_s=0.1)
    assert r.supported and r.method == SAMPLING
    assert "Not Supported" in (r.reason or "")  # why the counter was not used
    assert r.power_w == pytest.approx(50.0)
    r = measure_window(lambda: None, BrokenCounter(), BrokenMeter(), min_s=0.1)
    assert not r.supported
    assert "energy counter" in (r.reason or "") and "power sampling" in (r.reason or "")
    r = measure_window(lambda: None, None, None, why_none="no NVML")
    assert not r.supported and r.reason == "no NVML"


def test_measure_window_propagates_workload_errors():
    def oom() -> None:
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        measure_window(oom, BrokenCounter(), ConstantMeter(1000), min_s=0.1)
    gpu = FakeGpu(power_w=1.0, tick_ms=1, unit_ms=1)
    with pytest.raises(RuntimeError, match="out of memory"):
        measure_window(oom, gpu, None, min_s=0.1)


# --------------------------------------------------------------------------- CPU tensor bytes


def test_live_tensor_bytes_counts_fresh_storages_only():
    w = torch.randn(64, 64)  # made before the mode: never counted
    cache = torch.zeros(4, 64)
    with LiveTensorBytes() as m:
        x = torch.randn(8, 64)  # 8 x 64 x 4 B = 2048
        y = x @ w  # 2048
        v = y[:2]  # a view: same storage, 0
        cache[:2].copy_(v)  # in place into a pre-existing storage: 0
        assert (m.current_bytes, m.peak_bytes) == (4096, 4096)
        del y  # the view keeps the storage alive
        assert m.current_bytes == 4096
        del v
        assert m.current_bytes == 2048
        z = torch.cat([x, x])  # 16 x 64 x 4 = 4096 -> live 6144, the new peak
        assert (m.current_bytes, m.peak_bytes) == (6144, 6144)
        del x, z
    assert m.current_bytes == 0 and m.peak_bytes == 6144 and m.allocations == 3


def test_tensor_and_module_bytes_count_each_storage_once():
    lin = torch.nn.Linear(16, 8)  # 16 x 8 + 8 = 136 fp32 values = 544 B
    assert module_bytes(lin) == (544, 0)
    t = torch.zeros(10, dtype=torch.float16)
    assert tensor_bytes([t, t[2:], t.view(2, 5)]) == 20  # one storage of 10 x 2 B
    tied = torch.nn.Module()
    tied.a = torch.nn.Linear(4, 4, bias=False)
    tied.b = torch.nn.Linear(4, 4, bias=False)
    tied.b.weight = tied.a.weight  # tied: one storage, 16 x 4 B
    assert module_bytes(tied)[0] == 64


# --------------------------------------------------------------------------- devices and report helpers


def test_resolve_device():
    assert resolve_device("cpu", None) == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu:0", None)
    with pytest.raises(ValueError, match="disagree"):
        resolve_device("cpu", 0)
    with pytest.raises(ValueError, match=">= 0"):
        resolve_device(None, -1)
    if not torch.cuda.is_available():
        for dev, gpu in ((None, 0), ("cuda", None), ("cuda:1", None), (None, None)):
            with pytest.raises(NoDevice):
                resolve_device(dev, gpu)
    else:
        with pytest.raises(NoDevice, match="no GPU"):
            resolve_device(None, torch.cuda.device_count())


def test_rel_error():
    assert rel_error(110, 100) == pytest.approx(0.1)
    assert rel_error(90, 100) == pytest.approx(-0.1)
    assert rel_error(None, 100) is None and rel_error(1, 0) is None
