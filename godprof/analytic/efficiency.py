"""The per-operation efficiency model: what fraction of a card's datasheet peaks each kind of kernel
sustains, and the fixed costs around kernels. Pure Python; never imports torch.

Data, not code: ``godprof/data/efficiency.yaml`` holds the defaults with their sources, and a GPU file's
``efficiency:`` section overrides any key for that card (``gpus.GPU.efficiency``). The terms:

- ``gemm``: one GEMM of M tokens takes ``kernel_fixed_us + max(FLOPs / (peak x c(M)), bytes /
  (bandwidth x bandwidth))`` with the saturating curve ``c(M) = compute_max x M / (M + m_half_tokens)``:
  a small-M GEMM is bandwidth-bound and reaches a fraction of peak; a large one saturates at
  ``compute_max``. Leaves out the N and K dependence (tile quantisation, wave tails), which the residuals
  of ``benchmarks/calibrate.py`` show.
- ``grouped_gemm``: MoE routed experts, the same curve at M = tokens per touched expert.
- ``attention``: by a mixer kind's ``efficiency_class`` (flash, mla, sparse, scan): a compute fraction
  (prefill), a bandwidth fraction (decode's cache read) and a fixed cost per layer.
- ``layer`` / ``moe``: small kernels per layer (norms, rotary, activation; routing and permutation), each
  at the gemm kernel fixed cost.
- ``allreduce`` (tensor parallel) and ``alltoall`` (expert parallel): latency + bytes over the
  interconnect at a fraction of its per-direction bandwidth (NCCL's bus-bandwidth convention).

Every fraction is in (0, 1], so an operation's expected time is never below its share of the
speed-of-light bound (``godprof.analytic.roofline``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from godprof.gpus import GPU

US = 1e-6
ATTENTION_CLASSES = ("flash", "mla", "sparse", "scan")
_GEMM_KEYS = {"compute_max", "m_half_tokens", "bandwidth", "kernel_fixed_us", "source"}
_ATTN_KEYS = {"compute", "bandwidth", "kernel_fixed_us", "source"}
_SECTIONS: dict[str, set[str]] = {
    "gemm": _GEMM_KEYS,
    "grouped_gemm": _GEMM_KEYS,
    "layer": {"small_kernels", "source"},
    "moe": {"small_kernels", "source"},
    "allreduce": {"latency_us", "bus_bandwidth", "source"},
    "alltoall": {"latency_us", "bandwidth", "source"},
}
_FRACTIONS = {"compute_max", "bandwidth", "compute", "bus_bandwidth"}


@dataclass(frozen=True)
class GemmEfficiency:
    """A GEMM's saturating compute curve, its bandwidth fraction and its fixed cost per kernel."""

    compute_max: float
    m_half_tokens: float
    bandwidth: float
    kernel_fixed_s: float

    def compute(self, tokens: float) -> float:
        """Fraction of the dense peak a GEMM of ``tokens`` rows sustains: compute_max x M / (M + m_half)."""
        m = max(tokens, 1e-9)
        return self.compute_max * m / (m + self.m_half_tokens)

    def time_s(self, flops: float, nbytes: float, tokens: float, peak_flops: float, bandwidth: float) -> float:
        """Expected time of one GEMM kernel (see the module docstring); 0 for an empty one."""
        if flops <= 0 and nbytes <= 0:
            return 0.0
        c = flops / (peak_flops * self.compute(tokens)) if flops > 0 else 0.0
        return self.kernel_fixed_s + max(c, nbytes / (bandwidth * self.bandwidth))


@dataclass(frozen=True)
class AttentionEfficiency:
    compute: float
    bandwidth: float
    kernel_fixed_s: float


@dataclass(frozen=True)
class EfficiencyModel:
    """A card's per-operation efficiencies (see the module docstring) and where each came from."""

    gemm: GemmEfficiency
    grouped_gemm: GemmEfficiency
    attention: dict[str, AttentionEfficiency]
    layer_small_kernels: int
    moe_small_kernels: int
    allreduce_latency_s: float
    allreduce_bus_bandwidth: float
    alltoall_latency_s: float
    alltoall_bandwidth: float
    sources: dict[str, str]

    def attention_for(self, efficiency_class: str) -> AttentionEfficiency:
        """The attention entry of a kind's class (an unknown class takes flash's: the common kernel)."""
        return self.attention.get(efficiency_class, self.attention["flash"])

    def to_dict(self) -> dict[str, Any]:
        g = self.gemm
        return {
            "gemm": {"compute_max": g.compute_max, "m_half_tokens": g.m_half_tokens, "bandwidth": g.bandwidth,
                     "kernel_fixed_s": g.kernel_fixed_s},
            "attention": {k: {"compute": a.compute, "bandwidth": a.bandwidth} for k, a in self.attention.items()},
            "sources": dict(self.sources),
        }  # fmt: skip


def allreduce_time_s(nbytes: float, ranks: int, link_bytes_per_s: float, model: EfficiencyModel) -> float:
    """Expected ring/one-shot all-reduce of ``nbytes`` over ``ranks`` GPUs: latency + 2 (n - 1) / n x bytes /
    (link x bus_bandwidth), NCCL's bus-bandwidth convention (nccl-tests PERFORMANCE.md). 0 for one rank."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    wire = 2 * (ranks - 1) / ranks * nbytes / (link_bytes_per_s * model.allreduce_bus_bandwidth)
    return model.allreduce_latency_s + wire


def allreduce_bound_s(nbytes: float, ranks: int, link_bytes_per_s: float) -> float:
    """Speed of light of the same all-reduce: the ring's wire time at the full link bandwidth, no latency."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    return 2 * (ranks - 1) / ranks * nbytes / link_bytes_per_s


def alltoall_time_s(nbytes: float, ranks: int, link_bytes_per_s: float, model: EfficiencyModel) -> float:
    """Expected expert-parallel dispatch + combine of ``nbytes`` of tokens per GPU over ``ranks`` GPUs: each
    sends the (n - 1) / n of its tokens that live elsewhere, twice, at ``alltoall.bandwidth`` of the link,
    plus one latency per direction (DeepEP's measured bandwidths). 0 for one rank."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    wire = 2 * (ranks - 1) / ranks * nbytes / (link_bytes_per_s * model.alltoall_bandwidth)
    return 2 * model.alltoall_latency_s + wire


# --------------------------------------------------------------------------- loading


@cache
def _defaults() -> dict[str, Any]:
    text = resources.files("godprof.data").joinpath("efficiency.yaml").read_text()
    data = yaml.safe_load(text)
    problems = check(data, partial=False)
    if problems:  # a packaging defect, not a user error
        raise ValueError("godprof/data/efficiency.yaml: " + "; ".join(problems))
    return data


def check(data: Any, partial: bool = True) -> list[str]:
    """Problems in an efficiency mapping (``partial``: a GPU file's override, where any key may be left out
    but a ``source`` is required beside the values it sets). Empty when it is valid."""
    if not isinstance(data, dict):
        return ["efficiency: expected a mapping"]
    out: list[str] = []
    allowed = {*_SECTIONS, "attention", "source"}
    for sec, body in data.items():
        if sec not in allowed:
            out.append(f"efficiency.{sec}: unknown section (one of {', '.join(sorted(allowed))})")
        elif sec == "attention":
            if not isinstance(body, dict):
                out.append("efficiency.attention: expected a mapping")
                continue
            for cls, entry in body.items():
                if cls not in ATTENTION_CLASSES:
                    out.append(f"efficiency.attention.{cls}: unknown class (one of {', '.join(ATTENTION_CLASSES)})")
                else:
                    out += _check_entry(f"attention.{cls}", entry, _ATTN_KEYS, partial)
        elif sec != "source":
            out += _check_entry(sec, body, _SECTIONS[sec], partial)
    if (
        partial
        and data
        and "source" not in data
        and not all(isinstance(b, dict) and "source" in b for k, b in data.items() if k != "attention")
    ):
        out.append("efficiency.source: required (where the figures come from)")
    if not partial:
        for sec in (*_SECTIONS, "attention"):
            if sec not in data:
                out.append(f"efficiency.{sec}: missing")
        for cls in ATTENTION_CLASSES:
            if cls not in data.get("attention", {}):
                out.append(f"efficiency.attention.{cls}: missing")
    return out


def _check_entry(path: str, entry: Any, keys: set[str], partial: bool) -> list[str]:
    if not isinstance(entry, dict):
        return [f"efficiency.{path}: expected a mapping"]
    out = []
    for k, v in entry.items():
        if k not in keys:
            out.append(f"efficiency.{path}.{k}: unknown key (one of {', '.join(sorted(keys))})")
        elif k == "source":
            if not isinstance(v, str) or not v.strip():
                out.append(f"efficiency.{path}.source: expected text")
        elif isinstance(v, bool) or not isinstance(v, int | float) or v != v:
            out.append(f"efficiency.{path}.{k}: expected a number, got {v!r}")
        elif k in _FRACTIONS and not 0 < v <= 1:
            out.append(f"efficiency.{path}.{k}: a fraction of the datasheet peak must be in (0, 1], got {v}")
        elif v < 0 or v > 1e6:
            out.append(f"efficiency.{path}.{k}: must be in [0, 1e6], got {v}")
    if not partial:
        out += [f"efficiency.{path}.{k}: missing" for k in sorted(keys - set(entry))]
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _gemm(d: dict[str, Any]) -> GemmEfficiency:
    return GemmEfficiency(float(d["compute_max"]), float(d["m_half_tokens"]), float(d["bandwidth"]),
                          float(d["kernel_fixed_us"]) * US)  # fmt: skip


def model_from(data: dict[str, Any]) -> EfficiencyModel:
    """An ``EfficiencyModel`` from a complete mapping (the defaults merged with a card's overrides)."""
    attn = {c: AttentionEfficiency(float(e["compute"]), float(e["bandwidth"]), float(e["kernel_fixed_us"]) * US)
            for c, e in data["attention"].items()}  # fmt: skip
    sources = {k: str(v.get("source", "")) for k, v in data.items() if isinstance(v, dict) and k != "attention"}
    sources.update({f"attention.{c}": str(e.get("source", "")) for c, e in data["attention"].items()})
    if "source" in data:
        sources["card"] = str(data["source"])
    return EfficiencyModel(
        gemm=_gemm(data["gemm"]),
        grouped_gemm=_gemm(data["grouped_gemm"]),
        attention=attn,
        layer_small_kernels=int(data["layer"]["small_kernels"]),
        moe_small_kernels=int(data["moe"]["small_kernels"]),
        allreduce_latency_s=float(data["allreduce"]["latency_us"]) * US,
        allreduce_bus_bandwidth=float(data["allreduce"]["bus_bandwidth"]),
        alltoall_latency_s=float(data["alltoall"]["latency_us"]) * US,
        alltoall_bandwidth=float(data["alltoall"]["bandwidth"]),
        sources=sources,
    )


def default_model() -> EfficiencyModel:
    return model_from(_defaults())


def model_for(gpu: GPU) -> EfficiencyModel:
    """The card's model: the defaults, its file's ``efficiency:`` overrides, and its ``measured:`` rates
    (a measured copy bandwidth sets the gemm bandwidth fraction, a measured matmul rate its compute_max)."""
    hit = _BY_GPU.get(id(gpu))
    if hit is not None and hit[0] is gpu:
        return hit[1]
    model = _model_for(gpu)
    _BY_GPU[id(gpu)] = (gpu, model)  # the card is kept alive with it, so its id is not reused
    return model


_BY_GPU: dict[int, tuple[Any, EfficiencyModel]] = {}


def _model_for(gpu: GPU) -> EfficiencyModel:
    data = _defaults()
    over = getattr(gpu, "efficiency", None)
    if over:
        data = _merge(data, over)
    m = gpu.measured
    if m is not None:
        gemm = dict(data["gemm"])
        if m.bandwidth_bytes_per_s is not None:
            gemm["bandwidth"] = min(1.0, m.bandwidth_bytes_per_s / gpu.hbm_bandwidth_bytes_per_s)
        if "bf16" in m.flops_per_s and "bf16" in gpu.peak_flops_per_s:
            gemm["compute_max"] = min(1.0, m.flops_per_s["bf16"] / gpu.peak_flops_per_s["bf16"])
        gemm["source"] = f"measured: {m.note or 'the GPU file'}"
        data = {**data, "gemm": gemm}
    return model_from(data)
