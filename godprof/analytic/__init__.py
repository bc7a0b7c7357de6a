"""The analytic engine: exact integer counts from a spec. Pure Python; never imports torch."""

from godprof.analytic.estimate import Estimate, estimate
from godprof.analytic.params import ParamCounts, count_params
from godprof.analytic.workload import Workload

__all__ = ["Estimate", "ParamCounts", "Workload", "count_params", "estimate"]
