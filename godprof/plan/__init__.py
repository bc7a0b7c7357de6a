"""Capacity planning: how many GPUs, of which kind, laid out how, at what latency, energy and cost.

Pure Python on top of the analytic engine and the roofline (never imports torch):
``workload`` (serving traffic and SLOs, YAML with line-numbered errors), ``layout`` (tensor/pipeline/
expert splits), ``serving`` (the serving plan search), ``training`` (FLOPs, GPU-hours, ZeRO memory,
failures and checkpoints), ``swarm`` (several specialists and a router vs one dense model), ``power``
(board power, energy and cost) and ``report`` (tables, Markdown and HTML documents).
"""

from godprof.plan.layout import Layout
from godprof.plan.serving import ServeOptions, ServePlan, plan_serving
from godprof.plan.training import TrainConfig, TrainPlan, chinchilla_tokens, plan_training, young_daly_interval_s
from godprof.plan.workload import ServingWorkload, load_workload

__all__ = [
    "Layout",
    "ServeOptions",
    "ServePlan",
    "ServingWorkload",
    "TrainConfig",
    "TrainPlan",
    "chinchilla_tokens",
    "load_workload",
    "plan_serving",
    "plan_training",
    "young_daly_interval_s",
]
