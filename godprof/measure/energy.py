"""Energy of a repeated workload from a cumulative energy counter, or by integrating sampled power.

The NVML energy counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since the driver
loaded) advances in steps: the driver refreshes it periodically, not at every kernel. One reading
before and one after a short workload can therefore be off by a whole refresh period. So the
workload is repeated, the counter is read between chunks of it, and energy is taken between the
first and the last *observed change* of the counter, over at least ``min_s`` seconds and
``min_ticks`` changes. That gives the average power while the workload runs; energy per token is
that power times the measured time per token (``EnergyResult.joules_for``), which keeps anything
else the loop does (re-filling a full cache, say) out of the per-token figure.

Fallback: a thread samples power (milliwatts) every ``interval_s`` while the workload runs, and the
samples are integrated with the trapezoid rule. The meter is NVML's instant power field
(``NVML_FI_DEV_POWER_INSTANT``) where the driver has it: on Ampere and newer
``nvmlDeviceGetPowerUsage`` is a one-second average, which would smear power from before the window
into it (``godprof.measure.nvml``).
When neither works the result says so (``supported=False`` with the reason); no figure is invented.
Nothing here changes any device setting; it only reads counters.

The window logic takes plain callables (``unit``, ``sync``, ``clock``) and counter objects, so it is
tested with fake counters and a fake clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol


class MeterError(Exception):
    """A counter or meter could not be read (the driver says "not supported", say). Errors raised by the
    workload itself (out of memory, Ctrl-C) are not MeterErrors and propagate."""


class EnergyCounter(Protocol):
    def read_mj(self) -> int:
        """Cumulative energy in millijoules (monotonic)."""
        ...


class PowerMeter(Protocol):
    def read_mw(self) -> int:
        """Instantaneous board power in milliwatts."""
        ...


COUNTER = "nvml-energy-counter"
SAMPLING = "nvml-power-sampling"


@dataclass(frozen=True)
class EnergyResult:
    """Average power over a measured window of a repeated workload (or why there is none)."""

    supported: bool
    method: str | None = None  # COUNTER or SAMPLING
    reason: str | None = None  # why unsupported, or a warning about the figure
    joules: float | None = None  # energy over the window
    window_s: float | None = None  # the window the joules cover
    power_w: float | None = None  # joules / window_s
    ticks: int = 0  # counter changes inside the window, or power samples
    units: int = 0  # workload units run (decode steps, prefills)
    elapsed_s: float = 0.0  # wall time spent running the workload

    def joules_for(self, seconds: float | None) -> float | None:
        """Energy of ``seconds`` of this workload at the measured average power (None if unsupported)."""
        if not self.supported or self.power_w is None or seconds is None:
            return None
        return self.power_w * seconds

    def to_dict(self) -> dict:
        return {
            "supported": self.supported,
            "method": self.method,
            "reason": self.reason,
            "joules": self.joules,
            "window_s": self.window_s,
            "power_w": self.power_w,
            "ticks": self.ticks,
            "units": self.units,
            "elapsed_s": self.elapsed_s,
        }


def unsupported(reason: str) -> EnergyResult:
    return EnergyResult(supported=False, reason=reason)


def counter_window(
    unit: Callable[[], object],
    counter: EnergyCounter,
    *,
    sync: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
    min_s: float = 1.0,
    min_ticks: int = 3,
    max_s: float = 30.0,
    chunk_s: float = 0.05,
    no_tick_s: float = 2.0,
) -> EnergyResult:
    """Repeat ``unit`` until the energy counter has changed ``min_ticks`` times over at least ``min_s``.

    The counter is read after each chunk of units (``sync`` first, so queued device work is done).
    Chunks double in size until one lasts ``chunk_s`` (50 ms: a sync and a read per chunk leave the
    GPU idle for well under 1% of it, and bound the timing error of a tick to one chunk). Energy =
    counter at the last observed change - counter at the first; window = time between those two
    observations. Gives up (``supported=False``) when the counter has not changed for ``no_tick_s``
    (a sandboxed driver whose counter never moves costs 2 s, not ``max_s``), when it has not ticked
    enough by ``max_s``, or when it goes backwards.
    """
    sync()
    t_start = clock()
    e_prev = counter.read_mj()
    first: tuple[float, int] | None = None
    last: tuple[float, int] | None = None
    ticks = units = 0
    chunk = 1
    t = t_last_change = t_start
    while True:
        t0 = clock()
        for _ in range(chunk):
            unit()
        units += chunk
        sync()
        t = clock()
        e = counter.read_mj()
        if e < e_prev:
            return EnergyResult(False, COUNTER, f"energy counter went backwards ({e_prev} -> {e} mJ)",
                                units=units, elapsed_s=t - t_start)  # fmt: skip
        if e != e_prev:
            t_last_change = t
            if first is None:
                first = (t, e)
            else:
                ticks += 1
                last = (t, e)
            e_prev = e
        if first is not None and last is not None and ticks >= min_ticks and last[0] - first[0] >= min_s:
            break
        if t - t_start >= max_s:
            break
        if t - t_last_change >= no_tick_s:
            return EnergyResult(False, COUNTER, f"energy counter did not change for {t - t_last_change:.1f} s",
                                ticks=ticks, units=units, elapsed_s=t - t_start)  # fmt: skip
        if t - t0 < chunk_s:
            chunk *= 2
    elapsed = t - t_start
    if first is None or last is None or ticks < min_ticks:
        return EnergyResult(
            False, COUNTER, f"energy counter changed {ticks + (first is not None)} time(s) in {elapsed:.1f} s",
            ticks=ticks, units=units, elapsed_s=elapsed,
        )  # fmt: skip
    joules = (last[1] - first[1]) / 1000
    window = last[0] - first[0]
    note = None if window >= min_s else f"window {window:.2f} s is shorter than {min_s} s (stopped at {max_s} s)"
    return EnergyResult(True, COUNTER, note, joules, window, joules / window, ticks, units, elapsed)


def integrate_power(samples: Sequence[tuple[float, float]]) -> float:
    """Joules from (time s, power W) samples by the trapezoid rule; 0 for fewer than two samples."""
    return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(samples, samples[1:], strict=False))


class PowerSampler:
    """Samples ``meter.read_mw()`` every ``interval_s`` in a daemon thread, as (time s, watts) pairs."""

    def __init__(self, meter: PowerMeter, interval_s: float = 0.01, clock: Callable[[], float] = time.perf_counter):
        self.meter = meter
        self.interval_s = interval_s
        self.clock = clock
        self.samples: list[tuple[float, float]] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="godprof-power", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((self.clock(), self.meter.read_mw() / 1000))
            except MeterError as e:  # a driver error ends sampling; reported by the caller
                self.error = e
                return
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PowerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def sampled_window(
    unit: Callable[[], object],
    meter: PowerMeter,
    *,
    sync: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
    min_s: float = 1.0,
    min_samples: int = 10,
    max_s: float = 30.0,
    interval_s: float = 0.01,
) -> EnergyResult:
    """Repeat ``unit`` for at least ``min_s`` while a thread samples power; integrate the samples.

    Coarser than the counter: power readings are themselves averages over a driver-defined period.
    """
    units = 0
    with PowerSampler(meter, interval_s, clock) as sampler:
        sync()
        t_start = clock()
        t = t_start
        while True:
            unit()
            units += 1
            if units & 7 == 0 or units < 8:
                sync()
                t = clock()
                if (t - t_start >= min_s and len(sampler.samples) >= min_samples) or t - t_start >= max_s:
                    break
            if sampler.error is not None:
                break
        sync()
        t = clock()
    samples = sampler.samples
    if sampler.error is not None and len(samples) < 2:
        return EnergyResult(False, SAMPLING, f"power reading failed: {sampler.error}", units=units,
                            elapsed_s=t - t_start)  # fmt: skip
    if len(samples) < 2:
        return EnergyResult(False, SAMPLING, f"only {len(samples)} power sample(s)", units=units, elapsed_s=t - t_start)
    joules = integrate_power(samples)
    window = samples[-1][0] - samples[0][0]
    return EnergyResult(True, SAMPLING, None, joules, window, joules / window, len(samples), units, t - t_start)


def measure_window(
    unit: Callable[[], object],
    counter: EnergyCounter | None,
    meter: PowerMeter | None,
    *,
    sync: Callable[[], None] = lambda: None,
    min_s: float = 1.0,
    max_s: float = 30.0,
    why_none: str = "no energy counter or power meter on this device",
) -> EnergyResult:
    """The energy counter if it works, else power sampling if it works, else ``unsupported``."""
    reasons = []
    if counter is not None:
        try:
            r = counter_window(unit, counter, sync=sync, min_s=min_s, max_s=max_s)
        except MeterError as e:  # a driver error (e.g. NVML "Not Supported") -> try the fallback
            r = unsupported(str(e))
        if r.supported:
            return r
        reasons.append(f"energy counter: {r.reason}")
    if meter is not None:
        try:
            r = sampled_window(unit, meter, sync=sync, min_s=min_s, max_s=max_s)
        except MeterError as e:
            r = unsupported(str(e))
        if r.supported:
            return replace(r, reason="; ".join(reasons)) if reasons else r
        reasons.append(f"power sampling: {r.reason}")
    return unsupported("; ".join(reasons) or why_none)
