"""Serving plans: the smallest set of GPUs and the tp/pp/ep/replica layout that holds a model and its
traffic within memory (with headroom) and the SLOs, with latency, throughput, energy and cost.

Memory per GPU (heaviest pipeline stage, ``plan.layout``): weights + one prefill chunk's activations
(``roofline.activation_bytes`` / tp) + the KV cache and SSM state of the requests in flight at the end
of generation (prompt + output tokens; best-of-n shares the prompt's KV). ``headroom`` (default 10%) of
each GPU is kept free for the CUDA context, allocator fragmentation and kernel workspace.

Time, from the single-GPU roofline (``godprof.analytic.roofline``) split ideally over tp ranks, plus
communication:

- Tensor-parallel all-reduce after each token mixer and each FFN (Megatron-LM's two per block), of
  tokens x hidden activations, costed as a ring all-reduce: 2 (tp - 1) / tp x bytes / link bandwidth
  (Patarasuk & Yuan 2009; the "bus bandwidth" factor of NCCL's performance notes, nccl-tests
  doc/PERFORMANCE.md), plus ``ALLREDUCE_LATENCY_S`` per all-reduce (the alpha of the alpha-beta cost
  model: ~5 us for a one-shot NVLink all-reduce of a small message, as vLLM's custom all-reduce
  achieves), which dominates decode at small batch.
- Pipeline stages pass tokens x hidden activations point to point, over the GPU's interconnect inside a
  node and ``INTERNODE_BYTES_PER_S`` (400 Gb/s InfiniBand per GPU) when a replica spans nodes.
- Decode under pp keeps every stage busy with pp micro-batches of batch/pp sequences, so a token's step
  takes decode_step(batch/pp)/tp + communication.
- Prefill of one request (P) = prefill(1 x prompt)/tp + communication; stages run one after another.
- Continuous batching in steady state with b requests in decode: each step also absorbs b / output
  prefills, so time per output token is TPOT = D(b) + b x P / output, and TTFT = P + D(b) (a new request
  waits for the step in progress). Decode runs at the mean context of a request's life, prompt +
  output / 2 (the batch holds requests at every stage of their generation).

Throughput (output tokens/s) per replica = b x n / TPOT. Sizing: with a concurrency C the replicas are
ceil(C / b_max) where b_max is the largest batch that fits and meets the SLOs; with a rate R (requests/s)
they are ceil(R / r(b_max)), r(b) = b / (output x TPOT(b)); each replica then runs at the smallest batch
that carries its share. Energy uses ``plan.power`` with a utilisation that counts compute at full weight
and HBM traffic at half weight (u = min(1, c + m / 2), each relative to the roofline's sustained rate;
communication time counts as idle). Energy and cost are per one million output tokens; prompt tokens
are paid for inside the prefill time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from godprof.analytic import memory as M
from godprof.analytic import roofline as R
from godprof.analytic.params import ParamCounts, count_params
from godprof.dtypes import get_dtype
from godprof.plan.layout import Layout, StageShare, request_kv_bytes, stage_shares, tp_problem
from godprof.plan.power import IDLE_FRACTION, cost_per_million, energy_kwh_per_million, gpu_power_w
from godprof.plan.workload import ServingWorkload
from godprof.spec import Spec

ALLREDUCE_LATENCY_S = 5e-6  # per all-reduce: small-message latency on NVLink
INTERNODE_BYTES_PER_S = 50e9  # 400 Gb/s NDR InfiniBand, one NIC per GPU
PP_CHOICES = (1, 2, 4, 8, 16)
DEFAULT_MAX_REPLICA_GPUS = 64  # the search never builds one replica from more than 8 nodes


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

    def __post_init__(self) -> None:
        if not 0 <= self.headroom < 1:
            raise ValueError(f"--headroom must be in [0, 1), got {self.headroom}")
        if self.max_gpus is not None and self.max_gpus < 1:
            raise ValueError(f"--max-gpus must be positive, got {self.max_gpus}")
        if self.gpus_per_node < 1:
            raise ValueError(f"--gpus-per-node must be positive, got {self.gpus_per_node}")
        get_dtype(self.dtype)
        if self.kv_dtype:
            get_dtype(self.kv_dtype)


@dataclass
class Candidate:
    """One GPU type and layout, evaluated. ``fits`` means memory, SLOs and --max-gpus are all met."""

    gpu: Any
    layout: Layout
    fits: bool
    reason: str | None = None
    missing_bytes_per_gpu: int = 0  # memory short per GPU for one request (0 if it fits)
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

    def key(self) -> tuple:
        """Ranking: fits, fewest GPUs, cheapest per token, then fastest per token. Layouts that do not fit
        rank closest first: those that hold the model (missing an SLO or the GPU cap), then by memory short."""
        if not self.fits:
            short = self.missing_bytes_per_gpu / self.gpu.memory_bytes
            return (True, short > 0, short, self.tpot_s, self.layout.gpus)
        price = self.usd_per_mtok if self.usd_per_mtok is not None else self.energy_kwh_per_mtok
        return (False, self.layout.gpus, price, self.tpot_s, self.layout.gpus_per_replica)

    @property
    def short_reason(self) -> str:
        """A few words for tables: why this layout is not the plan."""
        if self.fits:
            return ""
        if self.missing_bytes_per_gpu > 0:
            return f"{self.missing_bytes_per_gpu / 2**30:.1f} GiB/GPU short"
        if self.limited_by.endswith("SLO"):
            slo = self.limited_by.split()[0]
            return f"{slo} > SLO"
        return "over --max-gpus"

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu.key,
            "gpu_name": self.gpu.name,
            "layout": self.layout.to_dict(),
            "gpus": self.layout.gpus,
            "gpus_per_replica": self.layout.gpus_per_replica,
            "fits": self.fits,
            "reason": self.reason,
            "missing_bytes_per_gpu": self.missing_bytes_per_gpu,
            "memory_per_gpu": dict(self.memory),
            "max_concurrency_per_replica": self.max_concurrency,
            "batch_limit_per_replica": self.batch_limit,
            "limited_by": self.limited_by,
            "batch_per_replica": self.batch,
            "ttft_s": self.ttft_s,
            "tpot_s": self.tpot_s,
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
            "layout": c.layout.to_dict() if c else None,
            "chosen": c.to_dict() if c else None,
            "missing": self.missing,
            "alternatives": [a.to_dict() for a in self.alternatives()],
            "risks": list(self.risks),
        }

    @property
    def kv_dtype(self) -> str:
        from godprof.analytic.workload import Workload

        return Workload(dtype=self.options.dtype, kv_dtype=self.options.kv_dtype).cache_dtype.name


# --------------------------------------------------------------------------- timing model


class _Timer:
    """Per-layout latency model (see the module docstring), memoised over batch sizes."""

    def __init__(
        self, spec: Spec, counts: ParamCounts, gpu: Any, layout: Layout, wl: ServingWorkload, opts: ServeOptions
    ):
        self.spec, self.counts, self.gpu, self.layout, self.wl, self.opts = spec, counts, gpu, layout, wl, opts
        self.act_bytes = 2 if get_dtype(opts.dtype).bits != 32 else 4
        self.rates = R.rates(gpu, opts.dtype)
        tp, pp = layout.tp, layout.pp
        self.link = gpu.interconnect_bytes_per_s
        self.p2p_link = self.link if layout.gpus_per_replica <= opts.gpus_per_node else INTERNODE_BYTES_PER_S
        n_ar = sum(1 + (lay.ffn is not None) for lay in spec.layers())  # all-reduces per forward
        self.allreduce_per_token_s = (
            0.0 if tp == 1 else n_ar * 2 * (tp - 1) / tp * spec.model.hidden_size * self.act_bytes / self.link
        )
        self.allreduce_latency_s = 0.0 if tp == 1 else n_ar * ALLREDUCE_LATENCY_S  # per forward pass
        self.p2p_per_token_s = (pp - 1) * spec.model.hidden_size * self.act_bytes / self.p2p_link
        self.ctx = wl.prompt_tokens + max(1, wl.output_tokens // 2)
        self._decode: dict[int, tuple[float, float, float, str]] = {}
        p = wl.prompt_tokens
        r = R.prefill_time_s(spec, counts, gpu, 1, p, opts.dtype, kv_dtype=opts.kv_dtype)
        comm = p * (self.allreduce_per_token_s + self.p2p_per_token_s) + self.allreduce_latency_s
        self.prefill_s = r / tp + comm
        # stages prefill one after another: one of pp stages is busy at a time
        self.prefill_util = (1.0 / pp) * (
            self._util(
                R.prefill_flops(spec, counts, 1, p), R.prefill_bytes(spec, counts, 1, p, opts.dtype, opts.kv_dtype), r
            )
            * (r / tp)
            / self.prefill_s
        )

    def _util(self, flops: float, nbytes: float, roof_s: float) -> float:
        c = flops / (roof_s * self.rates.flops_per_s)
        m = nbytes / (roof_s * self.rates.bytes_per_s)
        return min(1.0, c + 0.5 * m)

    def _weights_touched(self, seqs: int) -> float:
        """``roofline.weights_touched_bytes``; linear in the batch without MoE (one embedding row each)."""
        if self.spec.has_moe:
            return R.weights_touched_bytes(self.spec, self.counts, seqs, self.opts.dtype, rows=seqs)
        return self._w1 + (seqs - 1) * self._w_row

    def decode_roofline(self, seqs: int) -> tuple[float, float, float]:
        """(seconds, FLOPs, bytes) of one whole-model decode step of ``seqs`` sequences on one GPU: the
        roofline's ``decode_step_time_s``, evaluated from its parts (FLOPs and KV/state bytes are linear in
        the batch) so the batch search does not rebuild the layer list for every trial."""
        if not hasattr(self, "_flops1"):
            s, c, o = self.spec, self.counts, self.opts
            self._flops1 = R.decode_flops(s, c, 1, self.ctx)
            self._w1 = R.weights_touched_bytes(s, c, 1, o.dtype, rows=1)
            self._w_row = R.weights_touched_bytes(s, c, 2, o.dtype, rows=2) - self._w1 if not s.has_moe else 0
            self._seq_bytes = R.decode_bytes(s, c, 1, self.ctx, o.dtype, o.kv_dtype) - self._w1
        flops = seqs * self._flops1
        nbytes = self._weights_touched(seqs) + seqs * self._seq_bytes
        return max(flops / self.rates.flops_per_s, nbytes / self.rates.bytes_per_s), flops, nbytes

    def decode(self, requests: int) -> tuple[float, float, float, str]:
        """(step seconds, utilisation, comm share, bound) for ``requests`` requests in decode."""
        if requests not in self._decode:
            seqs = math.ceil(requests * self.wl.samples_per_prompt / self.layout.pp)
            roof, flops, nbytes = self.decode_roofline(seqs)
            comm = seqs * (self.allreduce_per_token_s + self.p2p_per_token_s) + self.allreduce_latency_s
            step = roof / self.layout.tp + comm
            util = self._util(flops, nbytes, roof) * (roof / self.layout.tp) / step
            # fewer sequences than stages leave stages idle: min(1, sequences / pp) of them are busy
            util *= min(1.0, requests * self.wl.samples_per_prompt / self.layout.pp)
            bound = "compute" if flops / self.rates.flops_per_s > nbytes / self.rates.bytes_per_s else "memory"
            self._decode[requests] = (step, util, comm / step, bound)
        return self._decode[requests]

    def tpot(self, b: int) -> float:
        return self.decode(b)[0] + b * self.prefill_s / self.wl.output_tokens

    def ttft(self, b: int) -> float:
        return self.prefill_s + self.decode(b)[0]

    def request_rate(self, b: int) -> float:
        """Requests per second one replica completes at batch b."""
        return b / (self.wl.output_tokens * self.tpot(b))

    def meets(self, b: int) -> str | None:
        """None when batch b meets the SLOs, else which one it misses."""
        wl = self.wl
        if wl.slo_ttft_s is not None and self.ttft(b) > wl.slo_ttft_s:
            return "TTFT"
        if wl.slo_tpot_s is not None and self.tpot(b) > wl.slo_tpot_s:
            return "TPOT"
        return None


def _largest(lo: int, hi: int, ok) -> int:
    """Largest b in [lo, hi] with ok(b), for ok monotone (true then false); lo - 1 if none."""
    if hi < lo or not ok(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def _smallest(lo: int, hi: int, ok) -> int:
    """Smallest b in [lo, hi] with ok(b), for ok monotone (false then true); hi if none."""
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return lo


# --------------------------------------------------------------------------- evaluation


def evaluate(
    spec: Spec, counts: ParamCounts, gpu: Any, tp: int, pp: int, wl: ServingWorkload, opts: ServeOptions
) -> Candidate:
    """Memory, SLOs, replicas and figures of one GPU type and (tp, pp) layout for the workload."""
    dt = get_dtype(opts.dtype)
    from godprof.analytic.workload import Workload

    kv_dt = Workload(dtype=opts.dtype, kv_dtype=opts.kv_dtype).cache_dtype
    ep = tp if (spec.has_moe and tp > 1 and _experts_split(spec, tp)) else 1
    layout = Layout(tp, pp, ep, 1)
    weights_total = M.weights_bytes(counts, dt, 128)
    shares = stage_shares(spec, counts, weights_total, dt, layout)
    usable = gpu.memory_bytes * (1 - opts.headroom)
    acts = R.activation_bytes(spec, wl.context_tokens, opts.dtype) / tp
    per_req = [request_kv_bytes(s, wl.prompt_tokens, wl.output_tokens, wl.samples_per_prompt, kv_dt) for s in shares]

    def stage_need(s: StageShare, kv: float, b: int) -> float:
        return s.weights_bytes + acts + b * kv

    cand = Candidate(gpu, layout, False)
    max_conc = min(
        (math.floor((usable - s.weights_bytes - acts) / kv) if kv > 0 else (1 << 30))
        for s, kv in zip(shares, per_req, strict=True)
    )
    if max_conc < 1:
        need = max(stage_need(s, kv, 1) for s, kv in zip(shares, per_req, strict=True))
        cand.missing_bytes_per_gpu = int(need - usable)
        cand.reason = (
            f"memory: needs {need / 2**30:.1f} GiB per GPU for one request, {usable / 2**30:.1f} GiB usable "
            f"({(need - usable) / 2**30:.1f} GiB short)"
        )
        cand.memory = _memory(shares, per_req, acts, 1)
        return cand
    cand.max_concurrency = max_conc
    t = _Timer(spec, counts, gpu, layout, wl, opts)
    miss = t.meets(1)
    if miss:
        val = t.ttft(1) if miss == "TTFT" else t.tpot(1)
        slo = wl.slo_ttft_s if miss == "TTFT" else wl.slo_tpot_s
        cand.reason = f"{miss} SLO: {val * 1e3:.1f} ms at one request > {slo * 1e3:.1f} ms"
        cand.limited_by = f"{miss} SLO"
        _fill(cand, t, shares, per_req, acts, 1, 1, wl, opts)
        cand.fits = False
        return cand
    b_max = _largest(1, max_conc, lambda b: t.meets(b) is None)
    cand.batch_limit = b_max
    cand.limited_by = "memory" if b_max == max_conc else f"{t.meets(b_max + 1)} SLO"
    if wl.rate_per_s is not None:
        replicas = math.ceil(wl.rate_per_s / t.request_rate(b_max) - 1e-9)
        per = wl.rate_per_s / replicas
        b = _smallest(1, b_max, lambda x: t.request_rate(x) >= per)
    else:
        conc = wl.concurrency or 1
        replicas = math.ceil(conc / b_max)
        b = math.ceil(conc / replicas)
    cand.layout = replace(layout, replicas=replicas)
    _fill(cand, t, shares, per_req, acts, b, replicas, wl, opts)
    cand.fits = True
    if opts.max_gpus is not None and cand.layout.gpus > opts.max_gpus:
        cand.fits = False
        cand.reason = f"needs {cand.layout.gpus} GPUs ({replicas} replicas) > --max-gpus {opts.max_gpus}"
    return cand


def _experts_split(spec: Spec, tp: int) -> bool:
    return all(f.tp_problem(tp) is None for f in spec.ffns.values() if f is not None and f.sparse)


def _memory(shares: list[StageShare], per_req: list[float], acts: float, b: int) -> dict[str, int]:
    i = max(range(len(shares)), key=lambda k: shares[k].weights_bytes + acts + b * per_req[k])
    s = shares[i]
    out = {"weights_bytes": int(s.weights_bytes), "kv_cache_bytes": int(b * per_req[i]), "activations_bytes": int(acts)}
    out["total_bytes"] = sum(out.values())
    return out


def _fill(
    c: Candidate, t: _Timer, shares, per_req, acts, b: int, replicas: int, wl: ServingWorkload, opts: ServeOptions
) -> None:
    c.batch = b
    step, dutil, comm_share, bound = t.decode(b)
    c.decode_step_s, c.prefill_s, c.comm_share, c.bound = step, t.prefill_s, comm_share, bound
    c.ttft_s = t.ttft(b)
    c.tpot_s = t.tpot(b)
    per_replica = b * wl.samples_per_prompt / c.tpot_s
    c.tokens_per_s = per_replica * replicas
    c.tokens_per_s_per_gpu = per_replica / c.layout.gpus_per_replica
    c.requests_per_s = t.request_rate(b) * replicas
    c.load = (
        (wl.rate_per_s / replicas / t.request_rate(c.batch_limit or b))
        if wl.rate_per_s
        else b / max(1, c.batch_limit or b)
    )
    prefill_time = b * t.prefill_s / wl.output_tokens
    util = (step * dutil + prefill_time * t.prefill_util) / (step + prefill_time)
    c.power_w_per_gpu = gpu_power_w(c.gpu.tdp_w, util, opts.idle_fraction)
    total_power = c.power_w_per_gpu * c.layout.gpus
    c.energy_kwh_per_mtok = energy_kwh_per_million(total_power, c.tokens_per_s)
    if opts.usd_per_gpu_hour is not None:
        c.usd_per_mtok = cost_per_million(c.layout.gpus, opts.usd_per_gpu_hour, c.tokens_per_s)
    c.memory = _memory(shares, per_req, acts, b)


def layouts(spec: Spec, opts: ServeOptions) -> list[tuple[int, int]]:
    """(tp, pp) pairs searched: tp a power of two within a node whose heads split evenly; pp in 1, 2, 4,
    8, 16 up to the layer count; tp x pp within --max-gpus (else 64 GPUs). ``opts.tp`` / ``opts.pp`` fix
    a degree (a tp that cannot split the heads raises ValueError)."""
    cap = opts.max_gpus or DEFAULT_MAX_REPLICA_GPUS
    tps = parallel_choices(spec, opts.gpus_per_node, opts.tp)
    pps = [opts.pp] if opts.pp else [p for p in PP_CHOICES if p <= spec.model.num_layers]
    return [(tp, pp) for tp in tps for pp in pps if tp * pp <= cap or (opts.tp and opts.pp)]


def parallel_choices(spec: Spec, gpus_per_node: int, fixed: int | None) -> list[int]:
    """Tensor-parallel degrees to search: powers of two within a node that split the heads, or ``fixed``."""
    if fixed is not None:
        problem = tp_problem(spec, fixed)
        if problem:
            raise ValueError(f"--tp {fixed}: {problem}")
        return [fixed]
    out, tp = [], 1
    while tp <= gpus_per_node:
        if tp_problem(spec, tp) is None:
            out.append(tp)
        tp *= 2
    return out


def plan_serving(spec: Spec, gpus: list[Any], wl: ServingWorkload, opts: ServeOptions) -> ServePlan:
    """Evaluate every layout on every GPU type; choose the fitting one with the fewest GPUs (then the
    cheapest per token, then the fastest). ``missing`` explains a plan where nothing fits."""
    counts = count_params(spec)
    weights = M.weights_bytes(counts, get_dtype(opts.dtype))
    cands: list[Candidate] = []
    for gpu in gpus:
        gpu.peak_flops(R.compute_dtype(gpu, opts.dtype))  # a card without this dtype's tensor path raises here
        for tp, pp in layouts(spec, opts):
            cands.append(evaluate(spec, counts, gpu, tp, pp, wl, opts))
    cands.sort(key=lambda c: c.key())
    chosen = cands[0] if cands and cands[0].fits else None
    plan = ServePlan(spec, wl, opts, counts, weights, chosen, cands)
    if chosen is None:
        plan.missing = _missing(plan)
    else:
        plan.risks = _risks(plan, chosen)
    return plan


def _missing(plan: ServePlan) -> str:
    cands = plan.candidates
    if not cands:
        return f"no tensor-parallel degree up to --gpus-per-node {plan.options.gpus_per_node} splits the heads"
    mem = [c for c in cands if c.missing_bytes_per_gpu > 0]
    over_cap = [c for c in cands if c.reason and c.reason.startswith("needs ")]
    slo = [c for c in cands if c.limited_by.endswith("SLO") and not c.fits and c.max_concurrency > 0]
    cap = plan.options.max_gpus or DEFAULT_MAX_REPLICA_GPUS
    if over_cap:
        c = min(over_cap, key=lambda c: c.layout.gpus)
        return (
            f"the traffic needs {c.layout.gpus} GPUs ({c.layout.label()} on {c.gpu.name}), more than --max-gpus {cap}"
        )
    if slo and len(slo) + len(mem) == len(cands):
        c = min(slo, key=lambda c: c.tpot_s if "TPOT" in c.limited_by else c.ttft_s)
        return f"SLO: no layout meets it; best is {c.layout.label()} on {c.gpu.name}: {c.reason}"
    c = min(mem, key=lambda c: c.missing_bytes_per_gpu / max(1, c.gpu.memory_bytes))
    total_short = c.missing_bytes_per_gpu * c.layout.gpus_per_replica
    return (
        f"memory: {plan.spec.name} in {plan.options.dtype} (weights alone {plan.weights_bytes / 2**30:.0f} GiB) "
        f"does not fit {cap} x {c.gpu.name}; the best layout ({c.layout.label()}) is "
        f"{c.missing_bytes_per_gpu / 2**30:.1f} GiB short per GPU ({total_short / 2**30:.0f} GiB in all) with "
        f"{plan.options.headroom:.0%} headroom; try a smaller --dtype, more GPUs or a larger card"
    )


def _risks(plan: ServePlan, c: Candidate) -> list[str]:
    wl = plan.workload
    risks = []
    if c.limited_by == "memory":
        risks.append(
            f"KV cache limits concurrency to {c.max_concurrency} requests per replica "
            f"({wl.prompt_tokens + wl.output_tokens:,} tokens each); a longer context or an fp8 KV cache changes it"
        )
    elif c.limited_by:
        risks.append(f"the {c.limited_by} limits the batch to {c.batch_limit} requests per replica "
                     f"(memory would hold {c.max_concurrency})")  # fmt: skip
    mem = c.memory
    usable = c.gpu.memory_bytes * (1 - plan.options.headroom)
    if mem.get("weights_bytes", 0) > 0.8 * usable:
        risks.append(
            f"weights take {mem['weights_bytes'] / usable:.0%} of usable memory per GPU: little room for KV cache"
        )
    if c.comm_share > 0.2:
        risks.append(
            f"tensor-parallel communication is {c.comm_share:.0%} of a decode step (all-reduce latency, not "
            "modelled, adds more at small batch)"
        )
    if wl.rate_per_s is not None and c.load > 0.8:
        risks.append(f"replicas run at {c.load:.0%} of capacity: queueing will push TTFT above the steady-state figure")
    if c.layout.gpus_per_replica > plan.options.gpus_per_node:
        risks.append("a replica spans nodes: pipeline transfers go over the inter-node network")
    for m in set(plan.spec.layer_mixers):
        mixer_risks = plan.spec.mixers[m].tp_risks(c.layout.tp)
        if mixer_risks:
            risks.extend(mixer_risks)
            break
    if plan.spec.has_moe:
        risks.append("MoE: routing imbalance across experts is not modelled (expert traffic is averaged)")
    if wl.slo_ttft_s is None and wl.slo_tpot_s is None:
        risks.append("no SLO given: the batch is sized by memory alone")
    return risks


def batch_curve(plan: ServePlan, points: int = 24) -> list[dict[str, float]]:
    """TTFT, TPOT and output tokens/s per GPU of the chosen layout's replica at batch sizes from 1 to the
    memory limit (log-spaced), for the report's plot."""
    c = plan.chosen
    if c is None:
        return []
    t = _Timer(plan.spec, plan.counts, c.gpu, replace(c.layout, replicas=1), plan.workload, plan.options)
    top = max(1, c.max_concurrency)
    bs = sorted({max(1, round(top ** (i / (points - 1)))) for i in range(points)})
    n = plan.workload.samples_per_prompt
    return [
        {
            "batch": b,
            "ttft_s": t.ttft(b),
            "tpot_s": t.tpot(b),
            "tokens_per_s_per_gpu": b * n / t.tpot(b) / c.layout.gpus_per_replica,
        }
        for b in bs
    ]
