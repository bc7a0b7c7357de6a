"""Training plans: FLOPs, GPU-hours, memory per GPU under ZeRO and tensor/pipeline parallelism, the
smallest GPU count that fits, energy, cost, checkpoints and failures.

Formulas and sources:

- Tokens: given, or Chinchilla-optimal D = 20 x N (Hoffmann et al. 2022, "Training Compute-Optimal
  Large Language Models", ~20 tokens per parameter; N = total parameters).
- FLOPs per token: ``flops.train_flops_per_token`` = 3 x forward (forward + backward; Kaplan et al.
  2020's 6N with the attention products added) + recomputation (full: one more forward; selective:
  the attention products again; Korthikanti et al. 2022). ``model_flops`` leaves recomputation out
  (the MFU convention), ``hardware_flops`` includes it; 6ND (6 x active parameters x tokens) is shown
  for reference.
- GPU-hours = hardware FLOPs / (dense peak FLOP/s in the training dtype x ``mfu``) / 3600: ``mfu`` is
  the fraction of peak the executed FLOPs run at, so recomputation costs time; the model-FLOPs
  utilisation that results is reported as ``effective_mfu``.
- Memory per GPU: ``plan.training_memory`` (ZeRO stages, fp32 or bf16 gradients, expert parallelism
  independent of tp, ZeRO-Offload, dropout masks, partial recomputation), within memory x (1 -
  headroom) less the runtime overheads of ``analytic.inference_memory`` (CUDA context, workspaces,
  communication buffers).
- Partial recomputation (``recompute_layers`` N per stage) adds one forward of those layers: hardware
  FLOPs per token = (1 - f) x F(recompute) + f x F(full), f the fraction of layers recomputed.
- Checkpoint = weights + optimizer state (what a restart needs).
- Failures: a job on G GPUs with a per-GPU failure rate r (per hour) fails every MTBF = 1 / (r G) hours;
  expected interruptions = r x G x wall-clock hours = r x GPU-hours. Default r = 1.97e-5 per GPU-hour:
  419 unexpected interruptions in 54 days on 16,384 H100s (Llama 3 paper, Dubey et al. 2024, sec. 3.3.4).
- Checkpoint interval (Young 1974; Daly 2006 first order): tau = sqrt(2 x C x MTBF) for a write time C;
  the fraction of time lost is about C / tau + tau / (2 MTBF) (writing, plus half an interval redone per
  failure); restart time is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from godprof.analytic import flops as F
from godprof.analytic import memory as M
from godprof.analytic.params import ParamCounts, count_params
from godprof.analytic.workload import Workload
from godprof.plan.layout import Layout
from godprof.plan.power import IDLE_FRACTION, J_PER_KWH, gpu_power_w, gpu_price
from godprof.plan.training_memory import (
    GRAD_BYTES,
    ep_for,
    recomputed_layers,
    train_memory_per_gpu,
    usable_bytes,
    why_not_fits,
)
from godprof.spec import Spec

CHINCHILLA_TOKENS_PER_PARAM = 20
LLAMA3_FAILURES_PER_GPU_HOUR = 419 / (54 * 24 * 16384)  # = 1.97e-5
DEFAULT_CHECKPOINT_WRITE_BYTES_PER_S = (
    10e9  # aggregate parallel-filesystem write rate when --checkpoint-write-s is unset
)
DEFAULT_GLOBAL_BATCH_TOKENS = 4 * 1024 * 1024
PP_CHOICES = (1, 2, 4, 8, 16, 32, 64)


def chinchilla_tokens(params: int) -> int:
    """Compute-optimal training tokens, 20 per parameter (Hoffmann et al. 2022): 70e9 -> 1.4e12."""
    return CHINCHILLA_TOKENS_PER_PARAM * params


def young_daly_interval_s(checkpoint_write_s: float, mtbf_s: float) -> float:
    """Optimal time between checkpoints, sqrt(2 x write time x MTBF) (Young 1974; Daly 2006 first order).

    Example: a 60 s write and a 10 h MTBF (36,000 s) give sqrt(2 x 60 x 36000) = sqrt(4.32e6) = 2078 s."""
    return math.sqrt(2.0 * checkpoint_write_s * mtbf_s)


@dataclass(frozen=True)
class TrainConfig:
    """Training choices; see the module docstring for what each one changes."""

    tokens: int | None = None  # None: Chinchilla
    seq: int = 4096
    micro_batch: int = 1  # sequences per GPU per micro-step
    global_batch_tokens: int = DEFAULT_GLOBAL_BATCH_TOKENS
    dtype: str = "bf16"
    optimizer: str = "adamw"
    recompute: str = "selective"
    zero: int = 1
    mfu: float = 0.4
    failure_rate_per_gpu_hour: float = LLAMA3_FAILURES_PER_GPU_HOUR
    checkpoint_write_s: float | None = None
    headroom: float = 0.1
    max_gpus: int | None = None
    gpus_per_node: int = 8
    cluster_gpus: int | None = None  # GPUs for the run; None = the smallest count that fits
    usd_per_gpu_hour: float | None = None
    idle_fraction: float = IDLE_FRACTION
    tp: int | None = None  # fix the tensor-parallel degree (None: search)
    pp: int | None = None  # fix the pipeline degree (None: search)
    ep: int | None = None  # fix the expert-parallel degree (None: the widest that divides tp x dp)
    grad_dtype: str = "fp32"  # gradient accumulation: fp32 (DeepSpeed/Megatron default) or bf16
    dropout: float = 0.0  # dropout probability; > 0 keeps the masks (plan.training_memory)
    recompute_layers: int | None = None  # fully recompute the first N layers of each stage
    offload_optimizer: bool = False  # ZeRO-Offload: optimizer state in CPU memory
    usd_per_gpu_hour_by_gpu: dict[str, float] | None = None  # per GPU key; beats usd_per_gpu_hour

    def __post_init__(self) -> None:
        if self.grad_dtype not in GRAD_BYTES:
            raise ValueError(f"--grad-dtype must be fp32 or bf16, got {self.grad_dtype!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.recompute_layers is not None and self.recompute_layers < 0:
            raise ValueError(f"--recompute-layers must be >= 0, got {self.recompute_layers}")
        if self.ep is not None and self.ep < 1:
            raise ValueError(f"--ep must be positive, got {self.ep}")
        if self.zero not in (0, 1, 2, 3):
            raise ValueError(f"--zero must be 0, 1, 2 or 3, got {self.zero}")
        if not 0 < self.mfu <= 1:
            raise ValueError(f"--mfu must be in (0, 1], got {self.mfu}")
        if not 0 <= self.headroom < 1:
            raise ValueError(f"--headroom must be in [0, 1), got {self.headroom}")
        if self.failure_rate_per_gpu_hour < 0:
            raise ValueError("--failure-rate-per-gpu-hour must be >= 0")
        if self.tokens is not None and self.tokens < 1:
            raise ValueError(f"--tokens must be positive, got {self.tokens}")
        if self.global_batch_tokens < self.seq * self.micro_batch:
            raise ValueError(
                f"--global-batch-tokens ({self.global_batch_tokens:,}) is smaller than one micro-batch "
                f"({self.micro_batch} x {self.seq:,} tokens)"
            )

    def workload(self) -> Workload:
        return Workload(
            batch=self.micro_batch, seq=self.seq, dtype=self.dtype, mode="train", optimizer=self.optimizer,
            recompute=self.recompute,
        )  # fmt: skip


@dataclass
class TrainCandidate:
    layout: Layout
    memory: dict[str, int]
    fits: bool
    reason: str | None = None


@dataclass
class TrainPlan:
    spec: Spec
    gpu: Any  # godprof.gpus.GPU
    cfg: TrainConfig
    counts: ParamCounts
    tokens: int
    tokens_source: str
    flops: dict[str, int]
    gpu_hours: float
    effective_mfu: float
    chosen: TrainCandidate | None
    smallest: TrainCandidate | None
    candidates: list[TrainCandidate]
    run: dict[str, Any] = field(default_factory=dict)
    risks: list[str] = field(default_factory=list)
    missing: str | None = None

    @property
    def fits(self) -> bool:
        return self.chosen is not None

    @property
    def usable_bytes(self) -> int:
        """Usable bytes per GPU of the chosen layout (of a multi-GPU one when nothing fits)."""
        return usable_bytes(self.gpu, self.cfg, self.chosen.layout.gpus > 1 if self.chosen else True)

    def to_dict(self) -> dict[str, Any]:
        c = self.chosen
        layout = c.layout if c else None
        return {
            "schema": "godprof.plan.train/1",
            "mode": "train",
            "spec": self.spec.name,
            "gpu": self.gpu.key,
            "fits": self.fits,
            "gpus": layout.gpus if layout else None,
            "layout": {**layout.to_dict(), "dp": layout.replicas} if layout else None,
            "smallest_gpus": self.smallest.layout.gpus if self.smallest else None,
            "memory_per_gpu": dict(c.memory) if c else None,
            "usable_bytes_per_gpu": self.usable_bytes,
            "missing": self.missing,
            "train": {
                "tokens": self.tokens,
                "tokens_source": self.tokens_source,
                "params": self.counts.total,
                "params_active": self.counts.active,
                "flops": self.flops["hardware"],
                "model_flops": self.flops["model"],
                "six_nd_flops": self.flops["six_nd"],
                "flops_per_token": self.flops["per_token"],
                "mfu": self.cfg.mfu,
                "effective_mfu": self.effective_mfu,
                "gpu_hours": self.gpu_hours,
                "seq": self.cfg.seq,
                "micro_batch": self.cfg.micro_batch,
                "global_batch_tokens": self.cfg.global_batch_tokens,
                "steps": self.run.get("steps"),
                "zero": self.cfg.zero,
                "recompute": self.cfg.recompute,
                "optimizer": self.cfg.optimizer,
                "dtype": self.cfg.dtype,
                "grad_dtype": self.cfg.grad_dtype,
                "dropout": self.cfg.dropout,
                "recompute_layers": self.cfg.recompute_layers,
                "offload_optimizer": self.cfg.offload_optimizer,
            },
            "run": dict(self.run),
            "alternatives": [
                {
                    "layout": {**a.layout.to_dict(), "dp": a.layout.replicas},
                    "gpus": a.layout.gpus,
                    "fits": a.fits,
                    "memory_per_gpu_bytes": a.memory["total_bytes"],
                    "reason": a.reason,
                }
                for a in self.candidates
            ],  # fmt: skip
            "risks": list(self.risks),
        }


def train_flops(spec: Spec, counts: ParamCounts, cfg: TrainConfig) -> tuple[int, int]:
    """(hardware, model) FLOPs per token: with ``recompute_layers`` a fraction f of the layers is
    recomputed in full, so hardware = (1 - f) x F(recompute) + f x F(full) (module docstring)."""
    w = cfg.workload()
    model = F.train_flops_per_token(spec, counts, Workload(seq=cfg.seq, mode="train", recompute="none"))
    hw = F.train_flops_per_token(spec, counts, w)
    layers = spec.model.num_layers
    n = len(recomputed_layers(layers, cfg.pp or 1, cfg.recompute_layers)) if cfg.recompute != "full" else 0
    if n:
        full = F.train_flops_per_token(spec, counts, Workload(seq=cfg.seq, mode="train", recompute="full"))
        hw = hw + (full - hw) * n // layers
    return hw, model


def plan_training(spec: Spec, gpu: Any, cfg: TrainConfig) -> TrainPlan:
    """Training FLOPs, GPU-hours, the smallest layout that fits, and the run on ``cfg.cluster_gpus``.

    Layout search: tp in powers of two up to a node (heads must split), pp in 1, 2, 4 ... 64 (at most the
    layer count), data-parallel degree dp in powers of two, capped by ``max_gpus``, by ``cluster_gpus``
    and by the global batch (dp x micro-batch x seq <= global batch tokens); ep the widest power of two
    that divides tp x dp and the experts (or ``cfg.ep``). The smallest count that fits is reported. The
    run is laid out on ``cluster_gpus`` (default: that smallest count): every (tp, pp) whose tp x pp
    divides it is evaluated at dp = cluster / (tp x pp), so ZeRO shards over the whole cluster, and the
    least model parallelism that fits is chosen.
    """
    counts = count_params(spec)
    w = cfg.workload()
    if cfg.tokens is None:
        tokens, src = chinchilla_tokens(counts.total), "chinchilla (20 tokens per parameter)"
    else:
        tokens, src = cfg.tokens, "given"
    per_token_hw, per_token_model = train_flops(spec, counts, cfg)
    flops = {
        "hardware": per_token_hw * tokens,
        "model": per_token_model * tokens,
        "six_nd": 6 * counts.active * tokens,
        "per_token": per_token_hw,
    }
    from godprof.analytic.roofline import compute_dtype

    cd = compute_dtype(gpu, cfg.dtype)
    peak = gpu.peak_flops(cd)
    gpu_hours = flops["hardware"] / (peak * cfg.mfu) / 3600.0
    eff_mfu = cfg.mfu * flops["model"] / flops["hardware"]
    max_dp = max(1, cfg.global_batch_tokens // (cfg.seq * cfg.micro_batch))
    caps = [c for c in (cfg.max_gpus, cfg.cluster_gpus) if c]
    cap = min(caps) if caps else 1 << 20

    def evaluate(tp: int, pp: int, dp: int) -> TrainCandidate | None:
        ep = ep_for(spec, tp, dp, cfg.ep)
        if ep is None:
            return None
        layout = Layout(tp, pp, ep, dp)
        mem = train_memory_per_gpu(spec, counts, cfg, layout)
        usable = usable_bytes(gpu, cfg, layout.gpus > 1)
        ok = mem["total_bytes"] <= usable
        reason = None if ok else f"needs {mem['total_bytes'] / 2**30:.1f} GiB per GPU, {usable / 2**30:.1f} GiB usable"
        return TrainCandidate(layout, mem, ok, reason)

    from godprof.plan.serving import parallel_choices

    tps = parallel_choices(spec, cfg.gpus_per_node, cfg.tp)
    pps = [cfg.pp] if cfg.pp else [p for p in PP_CHOICES if p <= spec.model.num_layers]
    best_per_mp: dict[tuple[int, int], TrainCandidate] = {}
    for tp in tps:
        for pp in pps:
            if tp * pp > cap:
                continue
            dp = 1
            last = None
            while tp * pp * dp <= cap and dp <= max_dp:
                c = evaluate(tp, pp, dp)
                last = c or last
                if (c is not None and c.fits) or cfg.zero == 0 and cfg.ep is None:
                    break  # without ZeRO (and experts fixed) more data parallelism saves no memory
                dp *= 2
            if last is not None:
                best_per_mp[(tp, pp)] = last
    candidates = sorted(best_per_mp.values(), key=lambda c: (not c.fits, c.layout.gpus, c.layout.tp * c.layout.pp))
    fitting = [c for c in candidates if c.fits]
    smallest = fitting[0] if fitting else None
    n = cfg.cluster_gpus or (smallest.layout.gpus if smallest else None)
    on_cluster: list[TrainCandidate] = []
    if n is not None:
        for tp in tps:
            for pp in pps:
                if n % (tp * pp) == 0 and n // (tp * pp) <= max_dp:
                    c = evaluate(tp, pp, n // (tp * pp))
                    if c is not None:
                        on_cluster.append(c)
    if cfg.cluster_gpus:
        candidates = sorted(on_cluster + candidates, key=lambda c: (not c.fits, c.layout.gpus != n, c.layout.gpus))
    plan = TrainPlan(spec, gpu, cfg, counts, tokens, src, flops, gpu_hours, eff_mfu, None, smallest, candidates)
    chosen = min((c for c in on_cluster if c.fits), key=lambda c: (c.layout.tp * c.layout.pp, c.layout.tp),
                 default=None)  # fmt: skip
    if chosen is None:
        plan.missing = why_not_fits(spec, gpu, cfg, candidates + on_cluster, n, max_dp)
        return plan
    plan.chosen = chosen
    plan.run = _run_figures(plan, chosen.layout, gpu, cfg, counts, w, max_dp)
    plan.risks = _train_risks(plan, chosen, usable_bytes(gpu, cfg, chosen.layout.gpus > 1), max_dp)
    return plan


def _run_figures(
    plan: TrainPlan, layout: Layout, gpu: Any, cfg: TrainConfig, counts: ParamCounts, w: Workload, max_dp: int
) -> dict[str, Any]:
    from godprof.analytic.roofline import DEFAULT_EFFICIENCY

    n = layout.gpus
    wall_h = plan.gpu_hours / n
    ckpt = M.weights_bytes(counts, w.act_dtype) + M.optimizer_bytes(counts, w)
    write_s = cfg.checkpoint_write_s or ckpt / DEFAULT_CHECKPOINT_WRITE_BYTES_PER_S
    rate = cfg.failure_rate_per_gpu_hour
    # power: the executed FLOP rate relative to what the roofline deems sustainable drives dynamic power
    util = min(1.0, cfg.mfu / DEFAULT_EFFICIENCY.compute)
    power_w = gpu_power_w(gpu.tdp_w, util, cfg.idle_fraction)
    energy_kwh = power_w * plan.gpu_hours * 3600 / J_PER_KWH
    price = gpu_price(gpu, cfg.usd_per_gpu_hour_by_gpu, cfg.usd_per_gpu_hour)
    run: dict[str, Any] = {
        "gpus": n,
        "dp": layout.replicas,
        "wall_clock_hours": wall_h,
        "wall_clock_days": wall_h / 24,
        "steps": math.ceil(plan.tokens / cfg.global_batch_tokens),
        "grad_accumulation": max(1, cfg.global_batch_tokens // (cfg.seq * cfg.micro_batch * layout.replicas)),
        "power_w_per_gpu": power_w,
        "energy_kwh": energy_kwh,
        "energy_mwh": energy_kwh / 1000,
        "usd_per_gpu_hour": price,
        "cost_usd": None if price is None else plan.gpu_hours * price,
        "checkpoint_bytes": ckpt,
        "checkpoint_write_s": write_s,
        "checkpoint_write_assumed": cfg.checkpoint_write_s is None,
        "failure_rate_per_gpu_hour": rate,
        "expected_interruptions": rate * plan.gpu_hours,
        "mtbf_hours": None if rate == 0 else 1.0 / (rate * n),
        "checkpoint_interval_s": None,
        "checkpoint_overhead_fraction": None,
    }
    if rate > 0:
        mtbf_s = 3600.0 / (rate * n)
        tau = young_daly_interval_s(write_s, mtbf_s)
        run["checkpoint_interval_s"] = tau
        run["checkpoint_overhead_fraction"] = write_s / tau + tau / (2 * mtbf_s)
    return run


def _train_risks(plan: TrainPlan, chosen: TrainCandidate, usable: float, max_dp: int) -> list[str]:
    r = plan.run
    risks = []
    if r["wall_clock_days"] > 365:
        risks.append(
            f"on {r['gpus']} GPUs the run takes {r['wall_clock_days'] / 365:.1f} years; pass --cluster-gpus to "
            f"plan a larger cluster (data parallelism allows up to {max_dp * chosen.layout.tp * chosen.layout.pp} "
            "GPUs at this global batch)"
        )
    frac = chosen.memory["total_bytes"] / usable
    if frac > 0.9:
        risks.append(f"memory is {frac:.0%} of usable per GPU: fragmentation or a longer sequence can tip it over")
    if r.get("checkpoint_overhead_fraction") and r["checkpoint_overhead_fraction"] > 0.05:
        risks.append(
            f"checkpointing and lost work cost {r['checkpoint_overhead_fraction']:.0%} of the run: write faster "
            "(asynchronous or in-memory checkpoints) or improve reliability"
        )
    if r["expected_interruptions"] >= 1:
        risks.append(f"expect about {r['expected_interruptions']:.0f} interruptions over the run")
    if plan.spec.has_moe:
        risks.append("MoE: expert-parallel all-to-all and load imbalance are not in the MFU you chose")
    if plan.cfg.offload_optimizer:
        risks.append(
            f"ZeRO-Offload: {chosen.memory['cpu_optimizer_bytes'] / 2**30:.1f} GiB of optimizer state per GPU in CPU "
            "memory, and the CPU's Adam step and PCIe copies are not in the MFU you chose"
        )
    return risks
