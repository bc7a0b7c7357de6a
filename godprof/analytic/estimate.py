"""One call that assembles params, memory and FLOPs for a spec under a workload; the JSON schema lives here."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from godprof.analytic import flops as F
from godprof.analytic import inference_memory as IM
from godprof.analytic import memory as M
from godprof.analytic.params import ParamCounts, count_params
from godprof.analytic.workload import Workload
from godprof.dtypes import WeightFormats
from godprof.spec import Spec

if TYPE_CHECKING:
    from godprof.gpus import GPU

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
    memory_model: IM.MemoryModel = IM.DEFAULT_MODEL  # prefill chunk, logits and headroom (inference)
    fit: dict[str, Any] | None = None  # inference_memory.fit_record on the GPU asked for (None: none asked)

    def to_dict(self) -> dict:
        """The stable JSON schema (``godprof.estimate/1``): all counts are integers. Besides the memory
        items, ``memory.weights_by_format`` (bytes per format, scales included), ``memory.weights_formats``
        (the format of each component's weight matrices), ``workload.weights_as_shipped``,
        ``workload.prefill_chunk_tokens`` and, with a GPU, ``fit`` (``inference_memory.fit_record``)."""
        s = self.spec
        kinds: Counter[str] = Counter()
        for k in self.params.by_layer_kind:
            kinds[k.kind] += k.layers  # kinds that share a label (local and global attention) add up
        chunk = self.memory_model.prefill_chunk_tokens if self.workload.mode == "inference" else None
        out = {
            "schema": SCHEMA,
            "spec": {
                "name": s.name,
                "family": s.family,
                "source": s.source,
                "path": s.path,
                "num_layers": s.model.num_layers,
                "layer_kinds": dict(kinds),
            },
            "workload": {
                **self.workload.to_dict(),
                "weights_as_shipped": self.as_shipped,
                "prefill_chunk_tokens": chunk,
            },
            "params": self.params.to_dict(),
            "memory": {
                **self.memory,
                "weights_by_format": dict(self.weights.by_format),
                "weights_formats": dict(self.weights.formats),
            },
            "flops": {**self.flops, "attention_convention": self.workload.attention_flops},
        }
        if self.fit is not None:
            out["fit"] = dict(self.fit)
        return out


def shipped_formats(spec: Spec, dtype: str | None) -> WeightFormats:
    """The weight formats of an estimate: one ``dtype`` for every quantizable weight when given, else the
    formats the spec ships (its ``weights:`` section; bf16 where it says nothing)."""
    return WeightFormats(dtype) if dtype is not None else (spec.weights or WeightFormats())


def estimate(
    spec: Spec, workload: Workload | None = None, include_mtp: bool = False, formats: WeightFormats | None = None,
    memory_model: IM.MemoryModel | None = None, gpu: GPU | None = None,
) -> Estimate:  # fmt: skip
    """Analytic parameters, memory and FLOPs. Pure Python; never imports torch.

    memory keys (bytes): weights_bytes, kv_cache_bytes (at ``workload.ctx``), ssm_state_bytes,
    activations_bytes (inference: the largest prefill pass of the shared memory model,
    ``inference_memory.activation_bytes``, with the workload's logits; train: saved for backward), gradients_bytes and
    optimizer_bytes (0 for inference), total_bytes, and kv_bytes_per_token.
    flops keys: forward, decode_per_token (at ``workload.ctx``), train_per_token, ssm_scan, conv,
    ssm_decode_per_token. ``include_mtp`` adds the multi-token-prediction modules to the parameters and
    weights (their FLOPs follow the matmul weights). ``formats`` stores the weights per component
    (``shipped_formats``); without it every quantizable weight is in ``workload.dtype``.
    ``memory_model`` sets the prefill chunk and headroom (default ``inference_memory.DEFAULT_MODEL``); with a
    ``gpu``, ``fit`` says whether the memory fits it beside the runtime overheads (inference and training).
    """
    w = workload or Workload()
    model = memory_model or IM.DEFAULT_MODEL
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
        acts = IM.activation_bytes(spec, w.batch, w.seq, w.dtype, replace(model, logits=w.logits), w.flash_attention)
        grads = opt = 0
    memory = IM.memory_record(weights, kv, ssm, acts, M.kv_bytes_per_token(spec, w.cache_dtype), grads, opt)
    flops = {
        "forward": F.forward_flops(spec, counts, w),
        "decode_per_token": F.decode_flops_per_token(spec, counts, w.ctx),
        "train_per_token": F.train_flops_per_token(spec, counts, w),
        "ssm_scan": F.ssm_scan_flops(spec, w.batch, w.seq),
        "conv": F.conv_flops(spec, w.batch, w.seq),
        "ssm_decode_per_token": F.ssm_decode_flops_per_token(spec),
    }
    fit = IM.fit_record(gpu, memory["total_bytes"], model) if gpu is not None else None
    return Estimate(spec, w, counts, memory, flops, breakdown, as_shipped, model, fit)
