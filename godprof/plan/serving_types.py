"""Serving plans' data: the options, one evaluated layout (``Candidate``) and the plan (``ServePlan``).
The model that fills them is ``godprof.plan.serving``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from godprof.analytic import inference_memory as IM
from godprof.analytic.params import ParamCounts
from godprof.dtypes import get_dtype
from godprof.plan.layout import Layout
from godprof.plan.power import IDLE_FRACTION
from godprof.plan.workload import ServingWorkload
from godprof.spec import Spec

DEFAULT_MAX_BATCH = 256  # vLLM's max_num_seqs default (SchedulerConfig); TRT-LLM builds take max_batch_size
TPOT_DEFINITION = (
    "mean inter-token latency of a request at steady state: the engine step (decodes plus the prefill "
    "chunks sharing it) divided by the expected tokens per step"
)


@dataclass(frozen=True)
class Speculative:
    """Speculative decoding: ``k`` tokens drafted per step, each accepted with probability ``acceptance``;
    ``draft`` is the draft model's spec reference, or None for the spec's own MTP modules."""

    k: int = 4
    acceptance: float = 0.7
    draft: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 64:
            raise ValueError(f"--speculative: k must be from 1 to 64, got {self.k}")
        if not 0.0 <= self.acceptance <= 1.0:
            raise ValueError(f"--speculative: acceptance must be in [0, 1], got {self.acceptance}")

    def to_dict(self) -> dict[str, Any]:
        from godprof.plan.serving_timing import tokens_per_step

        return {"k": self.k, "acceptance": self.acceptance, "draft": self.draft or "mtp",
                "tokens_per_step": tokens_per_step(self.k, self.acceptance)}  # fmt: skip


@dataclass(frozen=True)
class ServeOptions:
    dtype: str = "bf16"
    kv_dtype: str | None = None
    max_gpus: int | None = None
    gpus_per_node: int = 8
    headroom: float = 0.1
    usd_per_gpu_hour: float | None = None
    idle_fraction: float = IDLE_FRACTION
    tp: int | None = None  # fix the tensor-parallel degree (None: search)
    pp: int | None = None  # fix the pipeline degree (None: search)
    prefill_chunk_tokens: int | None = IM.PREFILL_CHUNK_TOKENS  # None: no chunked prefill
    logits: str = "last"
    usd_per_gpu_hour_by_gpu: dict[str, float] | None = None  # per GPU key; beats usd_per_gpu_hour and the database
    max_batch: int = DEFAULT_MAX_BATCH  # an engine's most sequences in flight per instance
    concurrency_max: bool = False  # offline: fill each replica to its largest batch
    prefix_hit_rate: float = 0.0  # share of prompt tokens found in the prefix cache
    speculative: Speculative | None = None
    disaggregate: tuple[int, int] | None = None  # (prefill, decode) instances per replica; (0, 0): search
    ep: int | None = None  # fix the expert-parallel degree (None: every GPU of the tp x attn_dp group)
    attn_dp: int | None = None  # fix attention data parallel (None: search for MoE, 1 otherwise)

    def __post_init__(self) -> None:
        _ = self.memory_model  # validates headroom, chunk and logits
        if self.max_batch < 1:
            raise ValueError(f"--max-batch must be positive, got {self.max_batch}")
        if not 0.0 <= self.prefix_hit_rate < 1.0:
            raise ValueError(f"--prefix-hit-rate must be in [0, 1), got {self.prefix_hit_rate}")
        for name in ("ep", "attn_dp"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {v}")
        if self.disaggregate is not None and min(self.disaggregate) < 0:
            raise ValueError(f"--disaggregate: instance counts must be positive, got {self.disaggregate}")
        if self.max_gpus is not None and self.max_gpus < 1:
            raise ValueError(f"--max-gpus must be positive, got {self.max_gpus}")
        if self.gpus_per_node < 1:
            raise ValueError(f"--gpus-per-node must be positive, got {self.gpus_per_node}")
        get_dtype(self.dtype)
        if self.kv_dtype:
            get_dtype(self.kv_dtype)

    @property
    def disaggregated(self) -> bool:
        return self.disaggregate is not None

    @property
    def memory_model(self) -> IM.MemoryModel:
        return IM.MemoryModel(self.prefill_chunk_tokens, self.logits, self.headroom)

    def price(self, gpu: Any) -> float | None:
        """USD per GPU-hour of ``gpu``: ``--usd-per-gpu-hour KEY=PRICE``, else a plain number, else the
        database's ``usd_per_hour`` (``plan.power.gpu_price``)."""
        from godprof.plan.power import gpu_price

        return gpu_price(gpu, self.usd_per_gpu_hour_by_gpu, self.usd_per_gpu_hour)


@dataclass
class Candidate:
    """One GPU type and layout, evaluated. ``fits`` means memory, SLOs and --max-gpus are all met."""

    gpu: Any
    layout: Layout
    fits: bool
    reason: str | None = None
    missing_bytes_per_gpu: int = 0  # memory short per GPU for one request (0 if it fits)
    rejected_by: str = ""  # why it is not a plan: "memory", "TTFT SLO", "TPOT SLO" or "max-gpus" ("" if it fits)
    memory: dict[str, int] = field(default_factory=dict)  # per GPU at the operating point
    max_concurrency: int = 0  # requests one replica holds in memory
    batch_limit: int = 0  # the largest batch meeting memory and SLOs
    limited_by: str = ""  # "memory" or "TTFT SLO" / "TPOT SLO"
    batch: int = 0  # requests per replica at the operating point
    ttft_s: float = 0.0
    tpot_s: float = 0.0
    decode_step_s: float = 0.0
    prefill_s: float = 0.0
    comm_share: float = 0.0  # of a decode step spent in all-reduce / pipeline transfers
    bound: str = ""
    tokens_per_s: float = 0.0  # output tokens/s, all replicas
    tokens_per_s_per_gpu: float = 0.0
    requests_per_s: float = 0.0
    power_w_per_gpu: float = 0.0
    energy_kwh_per_mtok: float = 0.0
    usd_per_mtok: float | None = None
    load: float = 0.0  # share of replica capacity used (rate workloads)
    tpot_bound_s: float = 0.0  # speed of light of the same step (100% of the datasheet and links)
    ttft_parts: dict[str, float] = field(default_factory=dict)  # wait, prefill, kv_transfer, queue (seconds)
    tokens_per_step: float = 1.0  # expected tokens a sequence gains per step (speculative decoding: > 1)
    prefill_tokens_per_step: float = 0.0  # per instance at steady state (chunked prefill sharing the steps)

    def key(self, by_price: bool = True) -> tuple:
        """Ranking: fits, fewest GPUs, cheapest per token (USD when ``by_price`` and priced, else energy), then
        fastest per token. Layouts that do not fit rank closest first: those that hold the model (missing an
        SLO or the GPU cap), then by memory short. ``plan_serving`` ranks by price only when every fitting
        layout has one, so dollars are never compared with kWh."""
        if not self.fits:
            short = self.missing_bytes_per_gpu / self.gpu.memory_bytes
            return (True, short > 0, short, self.tpot_s, self.layout.gpus)
        priced = by_price and self.usd_per_mtok is not None
        price = self.usd_per_mtok if priced else self.energy_kwh_per_mtok
        return (False, self.layout.gpus, price, self.tpot_s, self.layout.gpus_per_replica)

    @property
    def short_reason(self) -> str:
        """A few words for tables: why this layout is not the plan."""
        if self.fits:
            return ""
        if self.missing_bytes_per_gpu > 0 or self.rejected_by == "memory":
            return f"{self.missing_bytes_per_gpu / 2**30:.1f} GiB/GPU short"
        if self.rejected_by == "max-gpus":  # may also be SLO-limited in batch: the GPU cap is what rejects it
            return "over --max-gpus"
        if self.rejected_by.endswith("SLO"):
            return f"{self.rejected_by.split()[0]} > SLO"
        return self.rejected_by or "does not fit"

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu.key,
            "gpu_name": self.gpu.name,
            "layout": self.layout.serve_dict(),
            "gpus": self.layout.gpus,
            "gpus_per_replica": self.layout.gpus_per_replica,
            "fits": self.fits,
            "reason": self.reason,
            "rejected_by": self.rejected_by or None,
            "missing_bytes_per_gpu": self.missing_bytes_per_gpu,
            "memory_per_gpu": dict(self.memory),
            "max_concurrency_per_replica": self.max_concurrency,
            "batch_limit_per_replica": self.batch_limit,
            "limited_by": self.limited_by,
            "batch_per_replica": self.batch,
            "ttft_s": self.ttft_s,
            "tpot_s": self.tpot_s,
            "tpot_bound_s": self.tpot_bound_s,
            "tpot_sol_percent": 100.0 * self.tpot_bound_s / self.tpot_s if self.tpot_s else None,
            "ttft_breakdown_s": dict(self.ttft_parts),
            "tokens_per_step": self.tokens_per_step,
            "prefill_tokens_per_step": self.prefill_tokens_per_step,
            "decode_step_s": self.decode_step_s,
            "prefill_s": self.prefill_s,
            "comm_share_of_decode": self.comm_share,
            "decode_bound": self.bound,
            "tokens_per_s": self.tokens_per_s,
            "tokens_per_s_per_gpu": self.tokens_per_s_per_gpu,
            "requests_per_s": self.requests_per_s,
            "power_w_per_gpu": self.power_w_per_gpu,
            "energy_kwh_per_million_tokens": self.energy_kwh_per_mtok,
            "usd_per_million_tokens": self.usd_per_mtok,
            "load": self.load,
        }


@dataclass
class ServePlan:
    spec: Spec
    workload: ServingWorkload
    options: ServeOptions
    counts: ParamCounts
    weights_bytes: int
    chosen: Candidate | None
    candidates: list[Candidate]  # every layout evaluated, best first
    missing: str | None = None
    risks: list[str] = field(default_factory=list)
    draft: Any = None  # (spec, counts) of a speculative draft model, None otherwise

    @property
    def fits(self) -> bool:
        return self.chosen is not None

    def alternatives(self, limit: int = 8) -> list[Candidate]:
        """The best fitting layout of every other GPU type, then other fitting layouts, then near misses."""
        out: list[Candidate] = []
        chosen = self.chosen
        seen_gpus = {chosen.gpu.key} if chosen else set()
        for c in self.candidates:
            if c.fits and c.gpu.key not in seen_gpus:
                out.append(c)
                seen_gpus.add(c.gpu.key)
        for c in self.candidates:
            if len(out) >= limit:
                break
            if c is not chosen and c not in out and c.fits:
                out.append(c)
        for c in self.candidates:
            if len(out) >= limit:
                break
            if not c.fits and c not in out:
                out.append(c)
        return out[:limit]

    def to_dict(self) -> dict[str, Any]:
        c = self.chosen
        wl = self.workload
        return {
            "schema": "godprof.plan.serve/1",
            "mode": "serve",
            "spec": self.spec.name,
            "params": self.counts.total,
            "params_active": self.counts.active,
            "dtype": self.options.dtype,
            "kv_dtype": self.kv_dtype,
            "weights_bytes": self.weights_bytes,
            "workload": wl.to_dict(),
            "headroom": self.options.headroom,
            "fits": self.fits,
            "gpu": c.gpu.key if c else None,
            "gpus": c.layout.gpus if c else None,
            "layout": c.layout.serve_dict() if c else None,
            "serving_model": self.serving_model(),
            "chosen": c.to_dict() if c else None,
            "missing": self.missing,
            "alternatives": [a.to_dict() for a in self.alternatives()],
            "risks": list(self.risks),
        }

    def serving_model(self) -> dict[str, Any]:
        """The engine semantics the figures assume (JSON ``serving_model``)."""
        o = self.options
        return {
            "batching": "continuous, chunked prefill sharing steps with decodes"
            + ("; prefill disaggregated" if o.disaggregated else ""),
            "tpot_definition": TPOT_DEFINITION,
            "prefill_chunk_tokens": o.prefill_chunk_tokens,
            "max_batch": o.max_batch,
            "concurrency": "max" if o.concurrency_max else self.workload.concurrency,
            "prefix_hit_rate": o.prefix_hit_rate,
            "speculative": o.speculative.to_dict() if o.speculative else None,
            "disaggregate": list(o.disaggregate) if o.disaggregate else None,
        }

    @property
    def kv_dtype(self) -> str:
        from godprof.analytic.workload import Workload

        return Workload(dtype=self.options.dtype, kv_dtype=self.options.kv_dtype).cache_dtype.name
