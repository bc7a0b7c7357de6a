"""Tensor-parallel measurement over ``torch.distributed``: ``torchrun --nproc-per-node N -m godprof measure
SPEC --tp N``.

Every rank builds its share of the model (``godprof.build.tp``: ``rank_spec`` + the collectives) directly
on its device with random weights, allocates its share of the cache, and runs the same prefill + decode
loop as ``godprof.measure`` (every iteration starts after a barrier; a step's time is the slowest rank's,
taken with an all-reduce MAX of the per-rank timings). Process group: NCCL on CUDA, gloo on the CPU.

Measured against the analytic figures:

- per-rank parameters, weight bytes and cache bytes against ``estimate(rank_spec(spec, tp))`` (exact:
  norms and row-parallel biases replicated) and against the capacity plan's per-GPU share
  (``godprof.plan.layout.stage_shares``, which counts the replicated vectors as split);
- per-rank peak memory (CUDA: allocator peak; CPU: weights + cache + the prefill's live transient bytes);
- the all-reduce of one decode step's activations ([batch, 1, hidden]) and of one prefill's
  ([batch, seq, hidden]), timed alone, against the plan's model: a ring all-reduce moving
  2 (tp - 1) / tp x bytes over the GPU's interconnect plus ``plan.serving.ALLREDUCE_LATENCY_S``
  (null on the CPU or a GPU not in the database).

Not measured under --tp: energy and FLOP counters (single-device measurements cover them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from godprof.analytic import Workload, estimate
from godprof.analytic.estimate import Estimate
from godprof.analytic.params import count_params
from godprof.analytic.tensor_parallel import allreduces_per_forward, rank_spec
from godprof.dtypes import get_dtype
from godprof.errors import GodprofError
from godprof.measure import MeasureConfig
from godprof.measure.stats import TimingStats
from godprof.spec import Spec

SCHEMA = "godprof.measure-tp/1"
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
Progress = Callable[[str, int, int], None]


class NotLaunched(GodprofError):
    """--tp N outside a torch.distributed launch of N processes."""


def launched_world() -> tuple[int, int, int] | None:
    """(rank, local rank, world size) from torchrun's environment; None outside a launch."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    return rank, int(os.environ.get("LOCAL_RANK", rank)), world


def rank_device(dev: torch.device) -> torch.device:
    """Each rank's GPU under torchrun: cuda:LOCAL_RANK (the device the command line named is rank 0's
    view); the CPU stays the CPU."""
    env = launched_world()
    if dev.type != "cuda" or env is None:
        return dev
    local = env[1]
    if local >= torch.cuda.device_count():
        from godprof.measure import NoDevice

        raise NoDevice(f"rank {env[0]} wants cuda:{local}: {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device("cuda", local)


def init_group(tp: int, dev: torch.device) -> int:
    """Join (or reuse) the default process group: NCCL on CUDA, gloo on the CPU. Returns this rank."""
    if not dist.is_initialized():
        env = launched_world()
        if env is None:
            raise NotLaunched(f"--tp {tp} runs one process per rank: torchrun --nproc-per-node {tp} "
                              f"-m godprof measure SPEC --tp {tp}")  # fmt: skip
        if env[2] != tp:
            raise NotLaunched(f"--tp {tp} but torchrun started {env[2]} processes; use --nproc-per-node {tp}")
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dist.get_world_size() != tp:
        raise NotLaunched(f"--tp {tp} but the process group has {dist.get_world_size()} ranks")
    return dist.get_rank()


@dataclass
class TpMeasurement:
    spec: Spec
    config: MeasureConfig
    tp: int
    backend: str
    device: dict[str, Any]
    ranks: list[dict[str, Any]]  # one per rank: measured and analytic per-rank figures
    ttft: TimingStats
    tpot: TimingStats
    allreduce: dict[str, Any]
    rank_estimate: Estimate
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {
            "schema": SCHEMA,
            "spec": self.spec.name,
            "tp": self.tp,
            "backend": self.backend,
            "config": {
                "batch": c.batch,
                "seq": c.seq,
                "new_tokens": c.new_tokens,
                "dtype": c.dtype_name,
                "warmup": c.warmup,
                "iters": c.iters,
                "cache_len": c.max_len,
            },  # fmt: skip
            "device": self.device,
            "rank_estimate": self.rank_estimate.to_dict(),
            "ranks": self.ranks,
            "ttft_s": self.ttft.median_s,
            "tpot_s": self.tpot.median_s,
            "ttft": self.ttft.to_dict(),
            "tpot": self.tpot.to_dict(),
            "allreduce": self.allreduce,
            "notes": list(self.notes),
        }


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _slowest(samples: list[float], dev: torch.device) -> list[float]:
    """Each sample's maximum over the ranks (the step ends when the slowest rank does)."""
    t = torch.tensor(samples, dtype=torch.float64, device=dev if dev.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def time_allreduce(shape: tuple[int, ...], dtype: torch.dtype, dev: torch.device, reps: int = 20) -> float:
    """Median seconds of one all-reduce of a ``shape`` tensor (after 3 untimed ones), slowest rank."""
    x = torch.ones(shape, dtype=dtype, device=dev)
    for _ in range(3):
        dist.all_reduce(x)
    times = []
    for _ in range(reps):
        _sync(dev)
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(x)
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return TimingStats.of(_slowest(times, dev)).median_s


def plan_allreduce_s(nbytes: int, tp: int, gpu: Any | None) -> float | None:
    """The capacity plan's time for one all-reduce of ``nbytes`` (module docstring); None without a GPU."""
    if gpu is None or tp == 1:
        return None
    from godprof.plan.serving import ALLREDUCE_LATENCY_S

    return 2 * (tp - 1) / tp * nbytes / gpu.interconnect_bytes_per_s + ALLREDUCE_LATENCY_S


def measure_tp(
    spec: Spec, dev: torch.device, cfg: MeasureConfig, tp: int, progress: Progress | None = None
) -> TpMeasurement | None:
    """Measure ``spec`` split over ``tp`` ranks (module docstring). Every rank calls it; rank 0 gets the
    measurement, the others None."""
    report = progress or (lambda task, done, total: None)
    rs = rank_spec(spec, tp)  # raises before any process group work when a kind cannot split
    own_group = not dist.is_initialized()
    rank = init_group(tp, dev)
    try:
        return _measure_rank(spec, rs, rank, dev, cfg, tp, report)
    finally:
        if own_group and dist.is_initialized():
            dist.destroy_process_group()


def _measure_rank(
    spec: Spec, rs: Spec, rank: int, dev: torch.device, cfg: MeasureConfig, tp: int, report: Progress
) -> TpMeasurement | None:
    from godprof.build import build_model
    from godprof.build.tp import full_in_features, parallelize
    from godprof.measure.memory import LiveTensorBytes, module_bytes

    cuda = dev.type == "cuda"
    dt = TORCH_DTYPES[cfg.dtype_name]
    report("building this rank's share", 0, 4)
    if cuda:
        torch.cuda.set_device(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    model = build_model(rs, device=dev, dtype=dt, seed=cfg.seed + rank)
    parallelize(model, rank, tp, None, full_in_features(spec))
    params = sum(p.numel() for p in model.parameters())
    weights_bytes, buffer_bytes = module_bytes(model)
    cache = model.allocate_cache(cfg.batch, cfg.max_len)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    ids = torch.randint(0, spec.model.vocab_size, (cfg.batch, cfg.seq), generator=g).to(dev)  # same on all ranks

    @torch.no_grad()
    def prefill() -> torch.Tensor:
        cache.reset()
        return model(ids, cache=cache, last_only=True)[:, -1].float().argmax(-1, keepdim=True)  # [B, 1]

    @torch.no_grad()
    def step(tok: torch.Tensor) -> torch.Tensor:
        return model(tok, cache=cache)[:, -1].argmax(-1, keepdim=True)

    report("measuring memory", 1, 4)
    if cuda:
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        tok = prefill()
        for _ in range(cfg.new_tokens):
            tok = step(tok)
        _sync(dev)
        peak = torch.cuda.max_memory_allocated(dev)
        transient = peak - base
    else:
        with LiveTensorBytes() as live:
            tok = prefill()
            for _ in range(cfg.new_tokens):
                tok = step(tok)
        transient = live.peak_bytes
        peak = weights_bytes + buffer_bytes + cache.nbytes() + transient

    def generate() -> tuple[float, list[float]]:
        _sync(dev)
        dist.barrier()
        t0 = time.perf_counter()
        tok = prefill()
        _sync(dev)
        marks = [time.perf_counter()]
        for _ in range(cfg.new_tokens):
            tok = step(tok)
            _sync(dev)
            marks.append(time.perf_counter())
        return marks[0] - t0, [b - a for a, b in zip(marks, marks[1:], strict=False)]

    for i in range(cfg.warmup):
        report(f"warm-up {i + 1}/{cfg.warmup}", 2, 4)
        generate()
    ttft: list[float] = []
    tpot: list[float] = []
    for i in range(cfg.iters):
        report(f"timing {i + 1}/{cfg.iters}", 2, 4)
        a, b = generate()
        ttft.append(a)
        tpot.extend(b)
    ttft, tpot = _slowest(ttft, dev), _slowest(tpot, dev)

    report("timing all-reduces", 3, 4)
    h = spec.model.hidden_size
    ar_decode = time_allreduce((cfg.batch, 1, h), dt, dev)
    ar_prefill = time_allreduce((cfg.batch, cfg.seq, h), dt, dev)

    w = Workload(batch=cfg.batch, seq=cfg.seq, context=cfg.max_len, dtype=cfg.dtype_name,
                 attention_flops="full", logits="last")  # fmt: skip
    rank_est = estimate(rs, w)
    row = {
        "rank": rank,
        "device": str(dev),
        "params": params,
        "params_analytic": rank_est.params.total,
        "weights_bytes": weights_bytes + buffer_bytes,
        "weights_bytes_analytic": rank_est.memory["weights_bytes"],
        "cache_bytes": cache.nbytes(),
        "cache_bytes_analytic": rank_est.memory["kv_cache_bytes"] + rank_est.memory["ssm_state_bytes"],
        "transient_peak_bytes": transient,
        "peak_bytes": peak,
    }
    rows: list[Any] = [None] * tp
    dist.all_gather_object(rows, row)
    report("done", 4, 4)
    if rank != 0:
        return None
    return _assemble(spec, cfg, tp, dev, rows, ttft, tpot, (ar_decode, ar_prefill), rank_est)


def _assemble(
    spec: Spec,
    cfg: MeasureConfig,
    tp: int,
    dev: torch.device,
    rows: list[dict[str, Any]],
    ttft: list[float],
    tpot: list[float],
    ar: tuple[float, float],
    rank_est: Estimate,
) -> TpMeasurement:
    """Rank 0's report: the plan's per-GPU share beside each rank, and the all-reduce model."""
    from godprof.plan.layout import Layout, stage_shares

    device = {"type": dev.type, "name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
              "torch": torch.__version__}  # fmt: skip
    gpu = None
    if dev.type == "cuda":
        from godprof.gpus import find_gpu_for_device

        gpu = find_gpu_for_device(device["name"])
        device["gpu_db"] = None if gpu is None else gpu.key
    dtype = get_dtype(cfg.dtype_name)
    counts = count_params(spec)
    full_w = estimate(spec, Workload(dtype=cfg.dtype_name)).memory["weights_bytes"]
    share = stage_shares(spec, counts, full_w, dtype, Layout(tp=tp))[0]
    for r in rows:
        r["params_plan"] = share.params
        r["weights_bytes_plan"] = share.weights_bytes
    act = 4 if dtype.bits == 32 else 2
    h = spec.model.hidden_size
    n_ar = allreduces_per_forward(spec)
    dec_bytes, pre_bytes = cfg.batch * h * act, cfg.batch * cfg.seq * h * act
    tpot_stats = TimingStats.of(tpot)
    allreduce = {
        "per_forward": n_ar,
        "decode": {"bytes": dec_bytes, "measured_s": ar[0], "plan_s": plan_allreduce_s(dec_bytes, tp, gpu)},
        "prefill": {"bytes": pre_bytes, "measured_s": ar[1], "plan_s": plan_allreduce_s(pre_bytes, tp, gpu)},
        "decode_share_of_tpot": n_ar * ar[0] / tpot_stats.median_s if tpot_stats.median_s else None,
    }
    notes = [f"{tp} ranks over {dist.get_backend()}; times are the slowest rank's",
             "energy and FLOP counters are not measured under --tp"]  # fmt: skip
    if cfg.compile:
        notes.append("--compile is not applied under --tp: the ranks run eagerly")
    if gpu is None:
        notes.append("no GPU in the database: the plan's all-reduce model (interconnect bandwidth) is null")
    return TpMeasurement(spec, cfg, tp, dist.get_backend(), device, rows, TimingStats.of(ttft), tpot_stats,
                         allreduce, rank_est, notes)  # fmt: skip


def tp_tables(m: TpMeasurement) -> list[Any]:
    """Per-rank memory (measured | analytic | plan), latency and all-reduce tables."""
    from godprof.report.format import fmt_bytes, fmt_int, fmt_seconds
    from godprof.report.table import Table

    c = m.config
    t = Table(f"{m.spec.name} · tensor parallel over {m.tp} ranks ({m.backend}) · {c.dtype_name} · batch "
              f"{c.batch} · seq {c.seq:,}\nPer rank: measured | analytic rank | plan share",
              ["rank", "params", "weights", "cache", "peak"])  # fmt: skip
    for r in m.ranks:
        t.add(r["rank"], fmt_int(r["params"]), fmt_bytes(r["weights_bytes"]), fmt_bytes(r["cache_bytes"]),
              fmt_bytes(r["peak_bytes"]))  # fmt: skip
    r0 = m.ranks[0]
    t.add("analytic", fmt_int(r0["params_analytic"]), fmt_bytes(r0["weights_bytes_analytic"]),
          fmt_bytes(r0["cache_bytes_analytic"]), fmt_bytes(m.rank_estimate.memory["total_bytes"]))  # fmt: skip
    t.add("plan", fmt_int(round(r0["params_plan"])), fmt_bytes(r0["weights_bytes_plan"]), "-", "-")
    t.caption = ("analytic: the rank's own spec (norms, row-parallel biases and routers replicated); plan: "
                 "godprof plan's per-GPU share (replicated vectors counted as split)")  # fmt: skip
    lat = Table("Latency (slowest rank)", ["phase", "median", "p10", "p90"])
    for label, s in (("TTFT", m.ttft), ("TPOT", m.tpot)):
        lat.add(label, fmt_seconds(s.median_s), fmt_seconds(s.p10_s), fmt_seconds(s.p90_s))
    ar = Table(f"All-reduce ({m.allreduce['per_forward']} per forward)", ["message", "bytes", "measured", "plan"])
    for label in ("decode", "prefill"):
        a = m.allreduce[label]
        ar.add(label, fmt_bytes(a["bytes"]), fmt_seconds(a["measured_s"]), fmt_seconds(a["plan_s"]))
    share = m.allreduce["decode_share_of_tpot"]
    ar.caption = "plan: 2 (tp - 1) / tp x bytes / interconnect + 5 us" + (
        f"; all-reduces take ~{share:.0%} of TPOT" if share is not None else "")  # fmt: skip
    notes = Table("Notes", ["note"], prose={0})
    for n in m.notes:
        notes.add(n)
    return [t, lat, ar, notes]
