"""Measurement of a built spec: memory, latency, energy and FLOP counts beside the analytic estimate.

Imports torch (the analytic layer never does). Entry point: ``measure(spec, device, MeasureConfig())``;
the CLI is ``godprof measure``.
"""

from godprof.measure.run import (
    CompiledWhileTimed,
    CompileFailed,
    DoesNotFit,
    MeasureConfig,
    Measurement,
    NoDevice,
    measure,
    resolve_device,
)
from godprof.measure.stats import TimingStats, percentile

__all__ = [
    "CompileFailed",
    "CompiledWhileTimed",
    "DoesNotFit",
    "MeasureConfig",
    "Measurement",
    "NoDevice",
    "TimingStats",
    "measure",
    "percentile",
    "resolve_device",
]
