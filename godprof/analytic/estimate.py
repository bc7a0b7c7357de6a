"""One call that assembles params, memory and FLOPs for a spec under a workload; the JSON schema lives here."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from godprof.analytic import flops as F
from godprof.analytic import memory as M
from godprof.analytic.params import ParamCounts, count_params
from godprof.analytic.workload import Workload
from godprof.dtypes import WeightFormats
from godprof.spec import Spec

SCHEMA = "godprof.estimate/1"


@dataclass(frozen=True)
class Estimate:
    spec: Spec
    workload: Workload
    params: ParamCounts
    memory: dict[str, int]
    flops: dict[str, int]
    weights: M.WeightsBreakdown  # bytes per format and the format of each component
    as_shipped: bool = False  # the spec's shipped formats (True) or one explicit dtype (False)

    def to_dict(self) -> dict:
        """The stable JSON schema (``godprof.estimate/1``): all counts are integers. Besides the memory
        items, ``memory.weights_by_format`` (bytes per format, scales included), ``memory.weights_formats``
        (the format of each component's weight matrices) and ``workload.weights_as_shipped``."""
        s = self.spec
        kinds: Counter[str] = Counter()
        for k in self.params.by_layer_kind:
            kinds[k.kind] += k.layers  # kinds that share a label (local and global attention) add up
        return {
            "schema": SCHEMA,
            "spec": {
                "name": s.name,
                "family": s.family,
                "source": s.source,
                "path": s.path,
                "num_layers": s.model.num_layers,
                "layer_kinds": dict(kinds),
            },
            "workload": {**self.workload.to_dict(), "weights_as_shipped": self.as_shipped},
            "params": self.params.to_dict(),
            "memory": {
                **self.memory,
                "weights_by_format": dict(self.weights.by_format),
                "weights_formats": dict(self.weights.formats),
            },
            "flops": {**self.flops, "attention_convention": self.workload.attention_flops},
        }


def shipped_formats(spec: Spec, dtype: str | None) -> WeightFormats:
    """The weight formats of an estimate: one ``dtype`` for every quantizable weight when given, else the
    formats the spec ships (its ``weights:`` section; bf16 where it says nothing)."""
    return WeightFormats(dtype) if dtype is not None else (spec.weights or WeightFormats())


def estimate(
    spec: Spec, workload: Workload | None = None, include_mtp: bool = False, formats: WeightFormats | None = None
) -> Estimate:
    """Analytic parameters, memory and FLOPs. Pure Python; never imports torch.

    memory keys (bytes): weights_bytes, kv_cache_bytes (at ``workload.ctx``), ssm_state_bytes,
    activations_bytes (prefill peak for inference, saved-for-backward for train), gradients_bytes and
    optimizer_bytes (0 for inference), total_bytes, and kv_bytes_per_token.
    flops keys: forward, decode_per_token (at ``workload.ctx``), train_per_token, ssm_scan, conv,
    ssm_decode_per_token. ``include_mtp`` adds the multi-token-prediction modules to the parameters and
    weights (their FLOPs follow the matmul weights). ``formats`` stores the weights per component
    (``shipped_formats``); without it every quantizable weight is in ``workload.dtype``.
    """
    w = workload or Workload()
    counts = count_params(spec, include_mtp)
    train = w.mode == "train"
    as_shipped = formats is not None
    breakdown = M.weights_by_format(counts, formats or WeightFormats(w.weight_dtype.name), w.group_size)
    weights = breakdown.total_bytes
    if train:
        kv = ssm = 0
        acts = M.train_activation_bytes(spec, w)
        grads = M.gradient_bytes(counts, w)
        opt = M.optimizer_bytes(counts, w)
    else:
        kv = M.kv_cache_bytes(spec, w.batch, w.ctx, w.cache_dtype)
        ssm = M.ssm_state_bytes(spec, w.batch, w.cache_dtype)
        acts = M.inference_activation_bytes(spec, w)
        grads = opt = 0
    memory = {
        "weights_bytes": weights,
        "kv_cache_bytes": kv,
        "ssm_state_bytes": ssm,
        "activations_bytes": acts,
        "gradients_bytes": grads,
        "optimizer_bytes": opt,
        "total_bytes": weights + kv + ssm + acts + grads + opt,
        "kv_bytes_per_token": M.kv_bytes_per_token(spec, w.cache_dtype),
    }
    flops = {
        "forward": F.forward_flops(spec, counts, w),
        "decode_per_token": F.decode_flops_per_token(spec, counts, w.ctx),
        "train_per_token": F.train_flops_per_token(spec, counts, w),
        "ssm_scan": F.ssm_scan_flops(spec, w.batch, w.seq),
        "conv": F.conv_flops(spec, w.batch, w.seq),
        "ssm_decode_per_token": F.ssm_decode_flops_per_token(spec),
    }
    return Estimate(spec, w, counts, memory, flops, breakdown, as_shipped)
