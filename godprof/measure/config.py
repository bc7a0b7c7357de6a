"""What ``godprof.measure`` takes and returns: ``MeasureConfig`` (the workload and options), ``Measurement``
(the result, with its JSON form ``schema: godprof.measure/2``) and the errors a measurement raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from godprof.analytic.estimate import Estimate
from godprof.dtypes import get_dtype
from godprof.errors import GodprofError
from godprof.measure.energy import EnergyResult
from godprof.measure.flops import FlopComparison
from godprof.measure.stats import TimingStats
from godprof.spec import Spec

SCHEMA = "godprof.measure/2"  # /2: measured.params is {total} (one name per concept across commands)
KERNEL_CHOICES = ("reference", "fused")
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class NoDevice(GodprofError):
    """The requested device does not exist (no CUDA, bad index)."""


class DoesNotFit(GodprofError):
    """The model and workload need more device memory than is free."""

    def __init__(self, needed_bytes: int, free_bytes: int, total_bytes: int, device: str, detail: str = ""):
        from godprof.report.format import fmt_bytes

        self.needed_bytes, self.free_bytes, self.total_bytes = needed_bytes, free_bytes, total_bytes
        msg = (
            f"does not fit on {device}: the estimate needs {fmt_bytes(needed_bytes)} "
            f"({needed_bytes:,} B) and {fmt_bytes(free_bytes)} of {fmt_bytes(total_bytes)} is free"
        )
        super().__init__(msg + (f" ({detail})" if detail else ""))


class CompileFailed(GodprofError):
    """torch.compile could not compile the decode step."""


class CompiledWhileTimed(CompileFailed):
    """torch.compile compiled (or recompiled) inside a timed region or the energy window: the timings
    would include compilation, so the measurement is refused rather than reported."""


@dataclass(frozen=True)
class MeasureConfig:
    batch: int = 1
    seq: int = 512
    new_tokens: int = 32
    dtype: str = "bf16"
    warmup: int = 2
    iters: int = 10
    compile: bool = False
    energy: bool = True
    energy_min_s: float = 1.0
    flops: bool = True
    fvcore: bool = True
    seed: int = 0
    kernels: str = "reference"  # reference (pure PyTorch) | fused (fla / mamba_ssm / causal_conv1d where importable)
    compile_backend: str = "inductor"  # torch.compile backend; tests use "eager" (same dynamo graphs, no codegen)

    def __post_init__(self) -> None:
        if self.kernels not in KERNEL_CHOICES:
            raise ValueError(f"--kernels must be one of {', '.join(KERNEL_CHOICES)}, not {self.kernels!r}")
        for name in ("batch", "seq", "new_tokens", "iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        name = get_dtype(self.dtype).name
        if name not in TORCH_DTYPES:
            raise ValueError(f"measure builds fp32, bf16 or fp16 weights, not {name} (estimate covers {name})")

    @property
    def dtype_name(self) -> str:
        return get_dtype(self.dtype).name

    @property
    def max_len(self) -> int:
        """Cache length: the prompt plus every generated token."""
        return self.seq + self.new_tokens

    @property
    def decode_context(self) -> int:
        """The median context of the timed decode steps (they see seq+1 .. seq+new_tokens keys)."""
        return self.seq + (self.new_tokens + 1) // 2


@dataclass
class Measurement:
    spec: Spec
    config: MeasureConfig
    estimate: Estimate
    device: dict[str, Any]
    params: int
    memory: dict[str, Any]
    peak_memory_bytes: int
    ttft: TimingStats
    tpot: TimingStats
    energy_decode: EnergyResult
    energy_prefill: EnergyResult
    flops: FlopComparison | None
    derived: dict[str, Any] = field(default_factory=dict)  # throughput, bandwidth, MBU/MFU, roofline times
    notes: list[str] = field(default_factory=list)
    compile_info: dict[str, Any] | None = None  # graphs, breaks, recompiles after warm-up, timing and energy
    decode_info: dict[str, Any] = field(default_factory=dict)  # static step, kernels per step, host time
    kernels: dict[str, Any] = field(default_factory=dict)  # which implementation each layer kind ran

    @property
    def energy_j_per_token(self) -> float | None:
        return self.energy_decode.joules_for(self.tpot.median_s / self.config.batch)

    @property
    def flops_forward(self) -> int | None:
        if self.flops is None:
            return None
        return self.flops.counters[0].matmul

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        prefill_j = self.energy_prefill.joules_for(self.ttft.median_s / (c.batch * c.seq))
        return {
            "schema": SCHEMA,
            "estimate": self.estimate.to_dict(),
            "config": {
                "batch": c.batch,
                "seq": c.seq,
                "new_tokens": c.new_tokens,
                "dtype": c.dtype_name,
                "warmup": c.warmup,
                "iters": c.iters,
                "compile": c.compile,
                "kernels": c.kernels,
                "cache_len": c.max_len,
                "decode_context": c.decode_context,
                "compiled": self.compile_info,
            },  # fmt: skip
            "measured": {
                "device": self.device,
                "params": {"total": self.params},
                "peak_memory_bytes": self.peak_memory_bytes,
                "memory": self.memory,
                "ttft_s": self.ttft.median_s,
                "tpot_s": self.tpot.median_s,
                "ttft": self.ttft.to_dict(),
                "tpot": self.tpot.to_dict(),
                "tokens_per_s": self.derived["decode_tokens_per_s"],
                "prefill_tokens_per_s": self.derived["prefill_tokens_per_s"],
                "achieved_bandwidth_bytes_per_s": self.derived["achieved_bandwidth_bytes_per_s"],
                "mbu": self.derived["mbu"],
                "mfu_decode": self.derived["mfu_decode"],
                "mfu_prefill": self.derived["mfu_prefill"],
                "flops_forward": self.flops_forward,
                "flops": None if self.flops is None else self.flops.to_dict(),
                "energy_j_per_token": self.energy_j_per_token,
                "energy_prefill_j_per_token": prefill_j,
                "energy": {"decode": self.energy_decode.to_dict(), "prefill": self.energy_prefill.to_dict()},
                "decode": dict(self.decode_info),
                "kernels": dict(self.kernels),
            },
            "roofline": self.derived["roofline"],
            "notes": list(self.notes),
        }
