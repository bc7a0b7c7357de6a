"""Serving plans: the smallest set of GPUs and the layout (tp, pp, attention dp, ep, instance pools,
replicas) that holds a model and its traffic within memory and the SLOs, with latency, throughput,
energy and cost.

Memory per GPU (heaviest pipeline stage, ``plan.layout``), the shared inference memory model
(``godprof.analytic.inference_memory``): weights (+ a draft model's or the MTP modules' when
speculating) + the activations of the largest prefill pass of a rank's prompts (chunked prefill,
last-position logits; / tp) + the KV cache and SSM state of the requests a rank holds at the end of
generation (prompt + output tokens; best-of-n shares the prompt's KV; attention-DP ranks hold their own
requests), within memory x (1 - ``headroom``) less the runtime overheads. At tp = pp = dp = 1 it equals
``godprof estimate``'s memory for batch = requests, seq = prompt, context = prompt + output.

Time: continuous batching with chunked prefill (vLLM, SGLang, TRT-LLM's in-flight batching), one engine
step at a time (``plan.serving_timing``). At steady state with b requests in flight an instance
completes b x tau / output requests per step, so each step carries, beside the decodes, b x prompt' x
tau / output prefill tokens (prompt' = prompt x (1 - prefix hit rate): a cached prefix is not
recomputed), in passes of at most ``--prefill-chunk`` tokens, each reading the weights once for all its
tokens. Pipeline stages run pp micro-batches (decode and prefill chunks alike), so prefill overlaps
across stages.

- TPOT: the mean inter-token latency of a request at steady state, step time / tau, prefill chunks
  included (with disaggregated prefill, decode steps only). tau = 1, or with speculative decoding
  (1 - a^(k+1)) / (1 - a) tokens per step (acceptance a, k drafted); the step then verifies k + 1
  tokens per sequence and adds k draft steps (a draft model's decode, or one MTP module pass).
- TTFT under load: half a step's wait for the step in progress + the request's prefill in chunks of the
  token budget the decodes leave, one step each (with disaggregation: its prefill alone on a prefill
  instance + the prompt's KV cache sent over the inter-node network) + with a request rate, the M/D/1
  queueing wait load / (2 (1 - load)) x prefill time.
- Communication: tensor-parallel ring all-reduce after each mixer and FFN, 2 (tp - 1) / tp x bytes /
  link (Patarasuk & Yuan 2009; nccl-tests' bus bandwidth) + a latency each; pipeline
  transfers point to point (``INTERNODE_BYTES_PER_S`` across nodes); with attention data parallel,
  expert-parallel all-to-all (dispatch and combine of top-k hidden states, DeepSeek-V3 / SGLang's DP
  attention); latencies and link fractions from ``godprof.analytic.efficiency``.

Throughput (output tokens/s) per replica = b x n x tau / step (disaggregated: the lesser of the decode
instances' and the prefill instances' rates). Sizing: the batch per instance is at most the largest that
fits memory, meets the SLOs and ``--max-batch`` (an engine's max_num_seqs); ``--concurrency max`` runs one
replica at that batch (offline, maximum throughput); a concurrency C takes ceil(C / b_max) replicas, a
rate R ceil(R / r(b_max)). Energy uses ``plan.power`` with a utilisation that counts compute at full
weight and HBM traffic at half weight; energy and cost are per one million output tokens.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from godprof.analytic import memory as M
from godprof.analytic import roofline as R
from godprof.analytic.params import ParamCounts, count_params
from godprof.dtypes import get_dtype
from godprof.plan.layout import Layout, stage_shares, tp_problem
from godprof.plan.power import cost_per_million, energy_kwh_per_million, gpu_power_w
from godprof.plan.serving_memory import Draft, _StageMemory
from godprof.plan.serving_timing import (
    ALLREDUCE_LATENCY_S,
    INTERNODE_BYTES_PER_S,
    _largest,
    _smallest,
    _Timer,
    md1_wait_s,
    tokens_per_step,
)  # fmt: skip
from godprof.plan.serving_types import Candidate, ServeOptions, ServePlan, Speculative
from godprof.plan.workload import ServingWorkload
from godprof.spec import Spec

__all__ = [
    "ALLREDUCE_LATENCY_S", "INTERNODE_BYTES_PER_S", "Candidate", "ServeOptions", "ServePlan",
    "Speculative", "batch_curve", "evaluate", "layouts", "parallel_choices", "plan_serving", "tokens_per_step",
]  # fmt: skip
PP_CHOICES = (1, 2, 4, 8, 16)
DEFAULT_MAX_REPLICA_GPUS = 64  # the search never builds one replica from more than 8 nodes
MAX_AUTO_DECODE_INSTANCES = 8  # --disaggregate auto: decode instances per prefill pool tried


# --------------------------------------------------------------------------- evaluation


def evaluate(
    spec: Spec, counts: ParamCounts, gpu: Any, tp: int, pp: int, wl: ServingWorkload, opts: ServeOptions,
    dp: int = 1, ep: int | None = None, draft: Draft = None,
) -> Candidate:  # fmt: skip
    """Memory, SLOs, replicas and figures of one GPU type and (tp, pp, attention dp, ep) layout."""
    dt = get_dtype(opts.dtype)
    from godprof.analytic.workload import Workload

    kv_dt = Workload(dtype=opts.dtype, kv_dtype=opts.kv_dtype).cache_dtype
    g = tp * dp
    if ep is None:
        ep = g if (spec.has_moe and g > 1 and (dp > 1 or _experts_split(spec, tp))) else 1
    pools = opts.disaggregate or (0, 1)
    layout = Layout(tp, pp, ep, 1, dp, max(1, pools[0]) if opts.disaggregated else 0, max(1, pools[1]))
    weights_total = M.weights_bytes(counts, dt, 128)
    shares = stage_shares(spec, counts, weights_total, dt, layout)
    mem = _StageMemory(spec, counts, shares, wl, opts, kv_dt, layout, gpu, draft)
    usable = mem.usable
    cand = Candidate(gpu, layout, False)
    max_conc = mem.max_requests()
    if max_conc < 1:
        need = mem.need(1)
        cand.missing_bytes_per_gpu = int(need - usable)
        cand.rejected_by = "memory"
        cand.reason = (
            f"memory: needs {need / 2**30:.1f} GiB per GPU for one request, {usable / 2**30:.1f} GiB usable "
            f"({(need - usable) / 2**30:.1f} GiB short)"
        )
        cand.memory = mem.record(1)
        return cand
    cand.max_concurrency = max_conc
    t = _Timer(spec, counts, gpu, layout, wl, opts, draft)
    miss = t.meets(1)
    if miss:
        val = t.ttft(1) if miss == "TTFT" else t.tpot(1)
        slo = wl.slo_ttft_s if miss == "TTFT" else wl.slo_tpot_s
        cand.reason = f"{miss} SLO: {val * 1e3:.1f} ms at one request > {slo * 1e3:.1f} ms"
        cand.limited_by = cand.rejected_by = f"{miss} SLO"
        _fill(cand, t, mem, 1, 1, wl, opts)
        cand.fits = False
        return cand
    top = min(max_conc, opts.max_batch * dp)  # --max-batch caps each attention-DP rank's sequences
    b_max = _largest(1, top, lambda b: t.meets(b) is None)
    cand.batch_limit = b_max
    if b_max < top:
        cand.limited_by = f"{t.meets(b_max + 1)} SLO"
    else:
        cand.limited_by = "memory" if top == max_conc else "max-batch"
    if opts.disaggregated:
        layout = _pools(t, layout, b_max, wl, opts)
        t.layout = layout
    per_instance = layout.decode_instances
    if opts.concurrency_max:  # offline: every replica full; as many replicas as --max-gpus holds
        replicas, b = max(1, (opts.max_gpus or 0) // layout.gpus_per_replica), b_max
    elif wl.rate_per_s is not None:
        replicas = math.ceil(wl.rate_per_s / _capacity(t, layout, b_max) - 1e-9)
        per = wl.rate_per_s / replicas
        b = _smallest(1, b_max, lambda x: _capacity(t, layout, x) >= per)
    else:
        conc = wl.concurrency or 1
        replicas = math.ceil(conc / (b_max * per_instance))
        b = math.ceil(conc / (replicas * per_instance))
    cand.layout = replace(layout, replicas=replicas)
    _fill(cand, t, mem, b, replicas, wl, opts)
    cand.fits = True
    if opts.max_gpus is not None and cand.layout.gpus > opts.max_gpus:
        cand.fits = False
        cand.rejected_by = "max-gpus"
        cand.reason = f"needs {cand.layout.gpus} GPUs ({replicas} replicas) > --max-gpus {opts.max_gpus}"
    return cand


def _capacity(t: _Timer, layout: Layout, b: int) -> float:
    """Requests per second one replica completes with ``b`` requests per decode instance; with
    disaggregated prefill, the lesser of what its decode and its prefill instances carry."""
    rate = layout.decode_instances * t.request_rate(b)
    if layout.prefill_instances:
        rate = min(rate, layout.prefill_instances * t.prefill_rate())
    return rate


def _pools(t: _Timer, layout: Layout, b: int, wl: ServingWorkload, opts: ServeOptions) -> Layout:
    """The instance pools of a disaggregated replica: as given, or (``--disaggregate auto``) with a
    concurrency C the fewest decode instances that hold it, ceil(C / b), and the prefill instances
    that keep up with them; with a request rate the prefill and decode instances (up to
    ``MAX_AUTO_DECODE_INSTANCES`` each) that carry it on the fewest GPUs; offline the decode instances
    that give the most output tokens/s per GPU at batch ``b``."""
    assert opts.disaggregate is not None
    if min(opts.disaggregate) > 0:
        return layout
    best, best_rate = layout, -1.0
    fixed = wl.concurrency is not None and wl.rate_per_s is None and not opts.concurrency_max
    if wl.rate_per_s is not None:  # a request rate: the pools that carry it on the fewest GPUs
        n = MAX_AUTO_DECODE_INSTANCES
        trials = [replace(layout, prefill_instances=p, decode_instances=d) for d in range(1, n + 1)
                  for p in range(1, n + 1)]  # fmt: skip
        return min(trials, key=lambda x: (math.ceil(wl.rate_per_s / _capacity(t, x, b) - 1e-9) * x.gpus_per_replica,
                                          -_capacity(t, x, b) / x.gpus_per_replica))  # fmt: skip
    choices = [min(MAX_AUTO_DECODE_INSTANCES, math.ceil(wl.concurrency / b))] if fixed else []
    for d in choices or range(1, MAX_AUTO_DECODE_INSTANCES + 1):
        b = math.ceil(wl.concurrency / d) if fixed else b
        p = max(1, math.ceil(d * t.request_rate(b) / t.prefill_rate() - 1e-9))
        trial = replace(layout, prefill_instances=p, decode_instances=d)
        rate = _capacity(t, trial, b) / trial.gpus_per_replica
        if rate > best_rate * (1 + 1e-9):
            best, best_rate = trial, rate
    return best


def _experts_split(spec: Spec, tp: int) -> bool:
    return all(f.tp_problem(tp) is None for f in spec.ffns.values() if f is not None and f.sparse)


def _fill(c: Candidate, t: _Timer, mem: _StageMemory, b: int, replicas: int, wl: ServingWorkload,
          opts: ServeOptions) -> None:  # fmt: skip
    c.batch = b
    step, dutil, comm_share, bound = t.step(b)
    c.decode_step_s, c.comm_share, c.bound = step, comm_share, bound
    c.prefill_s = t.prefill_alone()[0]
    c.tokens_per_step = t.tau
    c.prefill_tokens_per_step = 0.0 if opts.disaggregated else t.prefill_per_step(b)
    c.tpot_s = t.tpot(b)
    c.tpot_bound_s = t.tpot_bound(b)
    c.requests_per_s = _capacity(t, c.layout, b) * replicas
    c.tokens_per_s = c.requests_per_s * wl.output_tokens * wl.samples_per_prompt
    c.tokens_per_s_per_gpu = c.tokens_per_s / c.layout.gpus
    cap = _capacity(t, c.layout, c.batch_limit or b)
    c.load = (wl.rate_per_s / replicas / cap) if wl.rate_per_s else b / max(1, c.batch_limit or b)
    parts = t.ttft_parts(b)
    if wl.rate_per_s is not None and c.load < 1.0:  # Poisson arrivals wait for the prefill ahead of them
        parts["queue"] = md1_wait_s(parts["prefill"], c.load)
    c.ttft_parts = parts
    c.ttft_s = sum(parts.values())
    c.power_w_per_gpu = gpu_power_w(c.gpu.tdp_w, dutil, opts.idle_fraction)  # the step includes the prefill
    c.energy_kwh_per_mtok = energy_kwh_per_million(c.power_w_per_gpu * c.layout.gpus, c.tokens_per_s)
    price = opts.price(c.gpu)
    if price is not None:
        c.usd_per_mtok = cost_per_million(c.layout.gpus, price, c.tokens_per_s)
    c.memory = mem.record(b)


def layouts(spec: Spec, opts: ServeOptions) -> list[tuple[int, int, int]]:
    """(tp, pp, attention dp) searched: tp a power of two within a node whose heads split evenly; pp in
    1, 2, 4, 8, 16 up to the layer count; for MoE models attention dp in powers of two with tp x dp within
    a node (dense models: dp 1, a replica is the same thing); the GPUs within --max-gpus (else 64).
    ``opts.tp`` / ``opts.pp`` / ``opts.attn_dp`` fix a degree (a tp that cannot split the heads raises
    ValueError)."""
    cap = opts.max_gpus or DEFAULT_MAX_REPLICA_GPUS
    tps = parallel_choices(spec, opts.gpus_per_node, opts.tp)
    pps = [opts.pp] if opts.pp else [p for p in PP_CHOICES if p <= spec.model.num_layers]
    out = []
    for tp in tps:
        if opts.attn_dp is not None:
            dps = [opts.attn_dp]
        elif spec.has_moe:
            dps = [1] + [d for d in (2, 4, 8, 16, 32, 64) if tp * d <= opts.gpus_per_node]
        else:
            dps = [1]
        for dp in dps:
            if opts.ep is not None and (tp * dp) % opts.ep:
                continue  # ep must divide the tp x dp GPUs its experts are spread over
            for pp in pps:
                fixed = opts.tp and opts.pp and len(dps) == 1  # every degree given: no cap
                if tp * pp * dp <= cap or fixed:
                    out.append((tp, pp, dp))
    if not out and opts.ep is not None:
        raise ValueError(f"--ep {opts.ep}: divides no tp x attention-dp group searched; give --tp/--attn-dp")
    return out


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


def plan_serving(spec: Spec, gpus: list[Any], wl: ServingWorkload, opts: ServeOptions,
                 draft_spec: Spec | None = None) -> ServePlan:  # fmt: skip
    """Evaluate every layout on every GPU type; choose the fitting one with the fewest GPUs (then the
    cheapest per token, then the fastest). ``missing`` explains a plan where nothing fits. With
    ``opts.speculative``, ``draft_spec`` is the draft model (None: the spec's MTP modules)."""
    counts = count_params(spec)
    if opts.speculative is not None and draft_spec is None and counts.mtp_total == 0:
        raise ValueError(f"--speculative: {spec.name} has no mtp section; name a draft model (draft=SPEC)")
    draft: Draft = (draft_spec, count_params(draft_spec)) if draft_spec is not None else None
    weights = M.weights_bytes(counts, get_dtype(opts.dtype))
    cands: list[Candidate] = []
    for gpu in gpus:
        gpu.peak_flops(R.compute_dtype(gpu, opts.dtype))  # a card without this dtype's tensor path raises here
        for tp, pp, dp in layouts(spec, opts):
            cands.append(evaluate(spec, counts, gpu, tp, pp, wl, opts, dp, opts.ep, draft))
    by_price = all(c.usd_per_mtok is not None for c in cands if c.fits)  # USD only where every card is priced
    if opts.concurrency_max:  # offline: the most output tokens/s per GPU (then the usual order)
        cands.sort(key=lambda c: (not c.fits, -c.tokens_per_s_per_gpu if c.fits else 0.0, c.key(by_price)))
    else:
        cands.sort(key=lambda c: c.key(by_price))
    chosen = cands[0] if cands and cands[0].fits else None
    plan = ServePlan(spec, wl, opts, counts, weights, chosen, cands, draft=draft)
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
    elif c.limited_by == "max-batch":
        risks.append(f"--max-batch {plan.options.max_batch} (an engine's max_num_seqs) limits the batch to "
                     f"{c.batch_limit} requests per replica (memory would hold {c.max_concurrency})")  # fmt: skip
    elif c.limited_by:
        risks.append(f"the {c.limited_by} limits the batch to {c.batch_limit} requests per replica "
                     f"(memory would hold {c.max_concurrency})")  # fmt: skip
    mem = c.memory
    usable = mem.get("usable_bytes") or c.gpu.memory_bytes * (1 - plan.options.headroom)
    if mem.get("weights_bytes", 0) > 0.8 * usable:
        risks.append(
            f"weights take {mem['weights_bytes'] / usable:.0%} of usable memory per GPU: little room for KV cache"
        )
    if c.comm_share > 0.2:
        risks.append(f"communication (all-reduce, pipeline transfers, all-to-all) is {c.comm_share:.0%} of a step")
    if wl.rate_per_s is not None and c.load > 0.8:
        risks.append(f"replicas run at {c.load:.0%} of capacity: the M/D/1 queueing wait in TTFT "
                     f"({c.ttft_parts.get('queue', 0.0) * 1e3:.0f} ms) grows fast near 100%")  # fmt: skip
    if wl.slo_ttft_s is not None and c.ttft_s > wl.slo_ttft_s:
        risks.append(f"with queueing TTFT is {c.ttft_s * 1e3:.0f} ms, over the {wl.slo_ttft_s * 1e3:.0f} ms SLO: "
                     "add replicas (lower --rate per replica)")  # fmt: skip
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
        risks.append("no SLO given: the batch is sized by memory and --max-batch alone")
    if plan.options.speculative is not None:
        risks.append(f"speculative decoding assumes acceptance {plan.options.speculative.acceptance:g} for every "
                     "token; real acceptance varies with the text")  # fmt: skip
    return risks


def batch_curve(plan: ServePlan, points: int = 24) -> list[dict[str, float]]:
    """TTFT, TPOT and output tokens/s per GPU of the chosen layout's replica at batch sizes from 1 to its
    limit (log-spaced), for the report's plot."""
    c = plan.chosen
    if c is None:
        return []
    layout = replace(c.layout, replicas=1)
    t = _Timer(plan.spec, plan.counts, c.gpu, layout, plan.workload, plan.options, plan.draft)
    top = max(1, c.batch_limit or c.max_concurrency)
    bs = sorted({max(1, round(top ** (i / (points - 1)))) for i in range(points)})
    wl = plan.workload
    return [
        {
            "batch": b,
            "ttft_s": t.ttft(b),
            "tpot_s": t.tpot(b),
            "tokens_per_s_per_gpu": _capacity(t, layout, b)
            * wl.output_tokens
            * wl.samples_per_prompt
            / layout.gpus_per_replica,
        }
        for b in bs
    ]
