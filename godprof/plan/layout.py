"""How a model is split over GPUs: tensor (tp), pipeline (pp) and expert (ep) parallel degrees.

One replica occupies ``tp x pp`` GPUs. Pipeline stages take contiguous, equal runs of layers
(``ceil(layers / pp)`` per stage, Megatron-LM's default split); the first stage also holds the
embeddings, the last the final norm and lm_head (and, with tied embeddings and pp > 1, its own copy
of the embedding matrix, as Megatron-LM keeps one). Within a stage, tensor parallelism splits every
weight matrix ``tp`` ways (Megatron-LM: column/row-parallel Linear, vocab-parallel embedding); norms are
replicated but counted as split (they are < 0.01% of the weights). With ``ep > 1`` routed experts are
placed whole, ``ceil(num_experts / ep)`` per GPU, instead of being sliced: serving places them over
``ep`` of the tp x attn_dp GPUs of a stage (by default all of them: vLLM's and SGLang's expert
parallelism, inside the tensor-parallel group or, with attention data parallel, across its ranks);
training may spread them over ep GPUs of the tp x dp GPUs of a stage, independent of tp
(``plan.training_memory``).

KV cache under tensor parallelism: each mixer kind says what share of its cache one rank holds
(``MixerKind.kv_tp_fraction``: grouped KV heads split until tp exceeds them, then replicate; a latent
cache without a head axis is replicated on every rank, as vLLM's MLA backend does). Recurrent state is
split by heads/channels, ``1 / tp``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from godprof.analytic import memory as M
from godprof.analytic.params import ParamCounts, layer_part
from godprof.dtypes import DType, get_dtype
from godprof.spec import Layer, Spec


@dataclass(frozen=True)
class Layout:
    """One replica: ``prefill_instances + decode_instances`` engine instances (one instance, doing both,
    unless prefill is disaggregated: then ``prefill_instances`` > 0), each of tp x pp x attn_dp GPUs.
    ``attn_dp`` > 1 (serving, DeepSeek-V3 style): attention and dense layers replicated over attn_dp
    ranks of tp GPUs, each rank with its own sequences, the routed experts spread over ep of the
    tp x attn_dp GPUs. Training passes data parallelism as ``replicas``."""

    tp: int = 1
    pp: int = 1
    ep: int = 1
    replicas: int = 1
    attn_dp: int = 1
    prefill_instances: int = 0
    decode_instances: int = 1

    @property
    def instance_gpus(self) -> int:
        return self.tp * self.pp * self.attn_dp

    @property
    def gpus_per_replica(self) -> int:
        return self.instance_gpus * (self.prefill_instances + self.decode_instances)

    @property
    def gpus(self) -> int:
        return self.gpus_per_replica * self.replicas

    def to_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "pp": self.pp, "ep": self.ep, "replicas": self.replicas}

    def serve_dict(self) -> dict[str, int]:
        """``to_dict`` plus the serving-only degrees: attention data parallel and the instance pools."""
        return {**self.to_dict(), "attn_dp": self.attn_dp, "prefill_instances": self.prefill_instances,
                "decode_instances": self.decode_instances}  # fmt: skip

    def label(self) -> str:
        parts = [f"tp{self.tp}", f"pp{self.pp}"]
        if self.attn_dp > 1:
            parts.append(f"dp{self.attn_dp}")
        if self.ep > 1:
            parts.append(f"ep{self.ep}")
        pools = f" P{self.prefill_instances}:D{self.decode_instances}" if self.prefill_instances else ""
        return "·".join(parts) + pools + (f" ×{self.replicas}" if self.replicas > 1 else "")


def tp_problem(spec: Spec, tp: int) -> str | None:
    """Why ``tp`` cannot split this model's heads evenly (None if it can).

    Attention heads, and Mamba-2 heads, must divide by tp (as vLLM and Megatron-LM require); KV heads must
    divide by tp or tp by them (then they are replicated).
    """
    for name in sorted(set(spec.layer_mixers)):
        problem = spec.mixers[name].tp_problem(tp)
        if problem is not None:
            return problem
    return None


def stage_layers(num_layers: int, pp: int) -> list[range]:
    """Contiguous layer ranges per pipeline stage, ceil(L / pp) layers each (the last may be shorter)."""
    per = math.ceil(num_layers / pp)
    return [range(s * per, min(num_layers, (s + 1) * per)) for s in range(pp) if s * per < num_layers]


def _layer_params(spec: Spec) -> tuple[tuple[int, int], ...]:
    """(params, routed-expert params) of every layer, computed once per distinct layer kind."""
    by_kind: dict[tuple[str, str], tuple[int, int]] = {}
    out = []
    for layer in spec.layers():
        key = (layer.mixer_name, layer.ffn_name)
        if key not in by_kind:
            part = layer_part(spec, layer)
            by_kind[key] = (part.total, part.by_component.get("routed_experts", 0))
        out.append(by_kind[key])
    return tuple(out)


def _nonlayer_dtype(dtype: DType) -> DType:
    """Embeddings and lm_head stay in bf16 for quantised formats (``memory.weights_bytes``)."""
    return dtype if dtype.name in ("fp32", "bf16", "fp16") else get_dtype("bf16")


@dataclass(frozen=True)
class StageShare:
    """What one GPU of a pipeline stage holds (tensor/expert split applied)."""

    stage: int
    layers: range
    params: float  # parameters on one GPU of this stage
    weights_bytes: float
    kv_elements_per_token: float  # summed over the stage's layers, this GPU's share
    layers_obj: tuple[Layer, ...]
    kv_split: tuple[float, ...]  # per layer: fraction of that layer's KV this GPU holds
    state_split: float  # fraction of SSM state this GPU holds (1 / tp)
    expert_params: float = 0.0  # of ``params``: the routed experts' share on this GPU


def stage_shares(
    spec: Spec, counts: ParamCounts, weights_total_bytes: int, dtype: DType, layout: Layout
) -> list[StageShare]:
    """Per pipeline stage, the parameters, weight bytes and KV share of one of its GPUs.

    Weight bytes: the non-layer tensors (embedding, positions, final norm, lm_head) at their storage dtype,
    and the layers' bytes (``weights_total_bytes`` minus those) in proportion to their parameters, which is
    exact for fp32/bf16/fp16 and within the quantisation scales' share for int8/int4/fp8.
    """
    tp, pp, ep = layout.tp, layout.pp, layout.ep
    m = spec.model
    bc = counts.by_component
    nl_dtype = _nonlayer_dtype(dtype)
    embed = bc["embedding"] + bc["position_embedding"]
    head = bc["lm_head"] + (m.hidden_size * (2 if m.norm == "layernorm" and m.norm_bias else 1) if m.final_norm else 0)
    if m.tie_embeddings and pp > 1:
        head += m.vocab_size * m.hidden_size  # the last stage keeps its own copy of the tied matrix
    per_layer = _layer_params(spec)
    layer_params_total = sum(p for p, _ in per_layer)
    nonlayer_total = counts.total - layer_params_total
    layer_bytes_total = weights_total_bytes - M._nbytes(nonlayer_total, nl_dtype)
    bytes_per_layer_param = layer_bytes_total / layer_params_total if layer_params_total else 0.0
    nl_bytes_per_param = nl_dtype.bits / 8
    routed = (spec.ffns[f].routed_experts(m.hidden_size) for f in set(spec.layer_ffns) if spec.ffns[f] is not None)
    experts = [r[0] for r in routed if r is not None]
    expert_frac = (math.ceil(max(experts) / ep) / max(experts)) if (experts and ep > 1) else 1.0 / tp
    layers = spec.layers()
    out = []
    for s, rng in enumerate(stage_layers(m.num_layers, pp)):
        dense = routed = 0
        for i in rng:
            p, r = per_layer[i]
            dense += p - r
            routed += r
        gpu_layer_params = dense / tp + routed * expert_frac
        extra = (embed if s == 0 else 0) + (head if s == pp - 1 or pp == 1 else 0)
        params = gpu_layer_params + extra / tp
        wbytes = gpu_layer_params * bytes_per_layer_param + extra / tp * nl_bytes_per_param
        lay_objs = tuple(layers[i] for i in rng)
        splits = tuple(_kv_fraction(lay, tp) for lay in lay_objs)
        kv = sum(M.kv_elements_per_token(lay) * f for lay, f in zip(lay_objs, splits, strict=True))
        out.append(StageShare(s, rng, params, wbytes, kv, lay_objs, splits, 1.0 / tp, routed * expert_frac))
    return out


def _kv_fraction(layer: Layer, tp: int) -> float:
    return layer.mixer.kv_tp_fraction(tp)


def request_cache_bytes(share: StageShare, prompt: int, output: int, samples: int, dtype: DType) -> tuple[float, float]:
    """(KV cache, SSM state) bytes one request needs on one GPU of this stage at the end of generation.

    Best-of-n: the prompt's KV is written once and shared by the n samples (prefix sharing, as vLLM's
    ``n`` sampling parameter does); each sample adds its own output tokens' KV and its own SSM state.
    Sliding-window layers hold at most the window.
    """
    kv = state = 0.0
    for lay, frac in zip(share.layers_obj, share.kv_split, strict=True):
        if frac:
            shared = lay.mixer.kv_elements(prompt) * frac
            own = lay.mixer.kv_elements(prompt + output) * frac - shared
            kv += shared + samples * own
        state += samples * M.ssm_state_elements(lay) * share.state_split
    return kv * dtype.cache_bits / 8, state * dtype.cache_bits / 8  # 4-bit caches with their scales


def request_kv_bytes(share: StageShare, prompt: int, output: int, samples: int, dtype: DType) -> float:
    """KV cache + SSM state one request needs on one GPU of this stage (``request_cache_bytes`` summed)."""
    return sum(request_cache_bytes(share, prompt, output, samples, dtype))


def max_layer_params(spec: Spec) -> int:
    """Parameters of the largest layer (ZeRO-3 gathers one layer at a time)."""
    return max(p for p, _ in _layer_params(spec))
