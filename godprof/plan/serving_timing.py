"""Serving time per layout: one engine step of continuous batching with chunked prefill, and what
follows from it (TPOT, TTFT under load, throughput). ``godprof.plan.serving``'s docstring states the
model; this module computes it.

A step is one forward pass of one pipeline micro-batch through every stage (the time between two tokens
of a sequence: the pp micro-batches take turns on the stages, so prefill and decode of different
micro-batches overlap across stages). It carries the micro-batch's decode tokens (``k + 1`` per
sequence when speculating: the verification pass) and its share of the prefill chunks of newly arrived
requests, in passes of at most ``chunk`` tokens (vLLM's ``max_num_batched_tokens``, TRT-LLM's
``max_num_tokens``); every pass reads the weights once for all its tokens. Per GPU of one attention
data-parallel rank::

    FLOPs  = (decode tokens x decode FLOPs per token at the mean context
              + prefill tokens x prefill FLOPs per new prompt token) / tp
    bytes  = passes x (non-expert weights / tp + routed experts touched by the tokens of all dp ranks
              / (tp x dp)) + (KV/state read by the decodes + written by the prefill) x this GPU's share
    bound    = max(FLOPs / peak, bytes / bandwidth) + communication at the full link (speed of light)
    expected = (the same max) x e + communication with its latencies + draft steps

The parts (FLOPs, weights touched, KV bytes) come from ``godprof.analytic.roofline``'s public functions
(``decode_flops``, ``decode_bytes``, ``prefill_flops``, ``prefill_bytes``, ``weights_touched_bytes``);
this module only splits them over GPUs and tokens. ``e``, the expected / bound ratio of the per-operation
efficiency model (``roofline.decode_step`` and ``prefill_step``, ``godprof.analytic.efficiency``), is
that of a decode step of the pass's sequences and of a prefill of its prompt tokens, weighted by their
bounds: a decode-only pass on one GPU is ``roofline.decode_step``'s expected time exactly. All-reduce and
all-to-all take the efficiency model's latencies and link fractions.
"""

from __future__ import annotations

import math
from typing import Any

from godprof.analytic import efficiency as E
from godprof.analytic import roofline as R
from godprof.analytic.params import ParamCounts
from godprof.dtypes import get_dtype
from godprof.plan.layout import Layout
from godprof.plan.serving_types import ServeOptions, Speculative
from godprof.plan.workload import ServingWorkload
from godprof.spec import Spec

ALLREDUCE_LATENCY_S = 5e-6  # a one-shot NVLink all-reduce's latency; ``measure --tp`` compares with it
INTERNODE_BYTES_PER_S = 50e9  # 400 Gb/s NDR InfiniBand, one NIC per GPU
HUGE_TOKENS = 1 << 40  # "every expert touched"


def tokens_per_step(k: int, acceptance: float) -> float:
    """Expected tokens a sequence gains per verification step with ``k`` drafted tokens, each accepted
    with probability ``a`` (independently, stopping at the first rejection), plus the target's own token:
    1 + a + ... + a^k = (1 - a^(k+1)) / (1 - a) (Leviathan et al. 2023, eq. 1); k + 1 at a = 1."""
    if acceptance >= 1.0:
        return float(k + 1)
    return (1.0 - acceptance ** (k + 1)) / (1.0 - acceptance)


class _Timer:
    """Per-layout step model (see the module docstring), memoised over batch sizes.

    ``requests`` / ``b`` is the requests in flight in one instance: a replica, or one decode instance
    when prefill is disaggregated."""

    def __init__(
        self, spec: Spec, counts: ParamCounts, gpu: Any, layout: Layout, wl: ServingWorkload, opts: ServeOptions,
        draft: tuple[Spec, ParamCounts] | None = None,
    ):  # fmt: skip
        self.spec, self.counts, self.gpu, self.layout, self.wl, self.opts = spec, counts, gpu, layout, wl, opts
        self.act_bytes = 2 if get_dtype(opts.dtype).bits != 32 else 4
        self.rates = R.rates(gpu, opts.dtype)  # sustained rates: the power model's utilisation
        self.sol = R.rates(gpu, opts.dtype, R.SPEED_OF_LIGHT)  # the datasheet peaks: the bound
        eff = E.model_for(gpu)
        tp, pp, dp = layout.tp, layout.pp, layout.attn_dp
        self.link = gpu.interconnect_bytes_per_s
        self.p2p_link = self.link if layout.instance_gpus <= opts.gpus_per_node else INTERNODE_BYTES_PER_S
        h = spec.model.hidden_size
        n_ar = sum(1 + (lay.ffn is not None) for lay in spec.layers())  # all-reduces per forward
        wire = 0.0 if tp == 1 else n_ar * 2 * (tp - 1) / tp * h * self.act_bytes / self.link  # per token, full link
        self.allreduce_bound_per_token_s = wire
        self.allreduce_per_token_s = wire / eff.allreduce_bus_bandwidth
        self.allreduce_latency_s = 0.0 if tp == 1 else n_ar * eff.allreduce_latency_s  # per forward pass
        self.p2p_per_token_s = (pp - 1) * h * self.act_bytes / self.p2p_link
        # attention data-parallel x expert parallel over g = tp x dp GPUs: each token's hidden state goes to
        # its top-k experts' GPUs and back (dispatch + combine), (g - 1) / g of them to other GPUs
        moe_layers, top_k = 0, 0
        for lay in spec.layers():
            routed = lay.ffn.routed_experts(h) if lay.ffn is not None else None
            if routed is not None:
                moe_layers, top_k = moe_layers + 1, max(top_k, routed[1])
        g = tp * dp
        ep_link = self.link if g <= opts.gpus_per_node else INTERNODE_BYTES_PER_S
        a2a = moe_layers and dp > 1  # with dp = 1 the tensor-parallel all-reduce already combines the experts
        a2a_wire = moe_layers * 2 * top_k * (g - 1) / g * h * self.act_bytes / ep_link if a2a else 0.0
        self.alltoall_bound_per_token_s = a2a_wire
        self.alltoall_per_token_s = a2a_wire / eff.alltoall_bandwidth
        self.alltoall_latency_s = moe_layers * 2 * eff.alltoall_latency_s if a2a else 0.0
        self.ctx = wl.prompt_tokens + max(1, wl.output_tokens // 2)
        self.chunk = opts.prefill_chunk_tokens  # None: a whole prompt per pass
        self.spec_dec: Speculative | None = opts.speculative
        self.q = 1 + (self.spec_dec.k if self.spec_dec else 0)  # tokens each sequence puts in a step
        self.tau = tokens_per_step(self.spec_dec.k, self.spec_dec.acceptance) if self.spec_dec else 1.0
        self.prompt_eff = max(1, math.ceil(wl.prompt_tokens * (1.0 - opts.prefix_hit_rate) - 1e-9))
        self._parts(draft)
        self._pass: dict[tuple[int, float], tuple[float, float, float, str]] = {}
        self._bound: dict[tuple[int, float], float] = {}
        self._dec_ratio: dict[int, tuple[float, float]] = {}
        self._pre_ratio: dict[int, tuple[float, float]] = {}

    # ------------------------------------------------------------------ per-token parts from the roofline

    def _parts(self, draft: tuple[Spec, ParamCounts] | None) -> None:
        s, c, o, p = self.spec, self.counts, self.opts, self.wl.prompt_tokens
        self.decode_flops_tok = R.decode_flops(s, c, 1, self.ctx)
        w1 = R.weights_touched_bytes(s, c, 1, o.dtype, rows=1)
        self.cache_read_seq = R.decode_bytes(s, c, 1, self.ctx, o.dtype, o.kv_dtype) - w1  # KV + 2 x state
        # prefill FLOPs of the prompt's last ``prompt_eff`` tokens (a cached prefix is not recomputed; the new
        # tokens still attend to it): F(prompt) - F(prompt - prompt_eff)
        pe = self.prompt_eff
        rest = p - pe
        full = R.prefill_flops(s, c, 1, p)
        self.prefill_flops_tok = (full - (R.prefill_flops(s, c, 1, rest) if rest > 0 else 0)) / pe
        self.cache_write_tok = (R.prefill_bytes(s, c, 1, p, o.dtype, o.kv_dtype)
                                - R.weights_touched_bytes(s, c, p, o.dtype, rows=p)) / p  # fmt: skip
        self.dense_bytes = R.weights_touched_bytes(s, c, 0, o.dtype, rows=0)  # no expert touched, no row read
        self.row_bytes = R.weights_touched_bytes(s, c, 0, o.dtype, rows=1) - self.dense_bytes  # one embedding row
        self.experts_all = R.weights_touched_bytes(s, c, HUGE_TOKENS, o.dtype, rows=0) - self.dense_bytes
        tp = self.layout.tp
        kv_all = sum(lay.mixer.kv_elements_per_token() for lay in s.layers())
        kv_own = sum(lay.mixer.kv_elements_per_token() * lay.mixer.kv_tp_fraction(tp) for lay in s.layers())
        self.kv_share = kv_own / kv_all if kv_all else 1.0 / tp  # of a sequence's cache traffic, one GPU's share
        self.draft_flops_tok = self.draft_bytes = self.draft_cache_seq = 0.0
        if self.spec_dec is not None:
            if draft is not None:  # a draft model: k decode steps of its own per step
                ds, dc = draft
                self.draft_flops_tok = R.decode_flops(ds, dc, 1, self.ctx)
                self.draft_bytes = R.weights_touched_bytes(ds, dc, 1, o.dtype, rows=1)
                self.draft_cache_seq = R.decode_bytes(ds, dc, 1, self.ctx, o.dtype, o.kv_dtype) - self.draft_bytes
            else:  # the spec's MTP modules: one module pass per drafted token (their attention left out)
                bits = max(16, get_dtype(o.dtype).bits)
                self.draft_flops_tok = 2.0 * c.mtp_active
                self.draft_bytes = c.mtp_total * bits / 8

    def _experts_touched(self, tokens: float) -> float:
        """Routed-expert bytes (whole model) that ``tokens`` tokens touch (``roofline.weights_touched_bytes``)."""
        if self.experts_all == 0:
            return 0.0
        t = max(0, math.ceil(tokens - 1e-9))
        return R.weights_touched_bytes(self.spec, self.counts, t, self.opts.dtype, rows=0) - self.dense_bytes

    # ------------------------------------------------------------------ one step

    def prefill_per_step(self, requests: int) -> float:
        """Prefill tokens an instance runs per step at steady state: each of the ``requests`` in flight
        needs ``prompt_eff`` of them over its output / tau steps."""
        return requests * self.prompt_eff * self.tau / self.wl.output_tokens

    def pass_time(self, seqs: int, prefill: float) -> tuple[float, float, float, str]:
        """(seconds, utilisation, comm share, bound) of one step of one micro-batch of one attention-DP
        rank: ``seqs`` decoding sequences and ``prefill`` prefill tokens (see the module docstring)."""
        key = (seqs, round(prefill, 6))
        if key in self._pass:
            return self._pass[key]
        tp, dp = self.layout.tp, self.layout.attn_dp
        dec_tokens = seqs * self.q
        tokens = dec_tokens + prefill
        passes = 1 if self.chunk is None else max(1, math.ceil(tokens / self.chunk - 1e-9))
        flops = (dec_tokens * self.decode_flops_tok + prefill * self.prefill_flops_tok) / tp
        weights = (self.dense_bytes + min(tokens, self.spec.model.vocab_size) * self.row_bytes) / tp
        weights += self._experts_touched(tokens * dp / passes) / (tp * dp)
        cache = (seqs * self.cache_read_seq + prefill * self.cache_write_tok) * self.kv_share
        nbytes = passes * weights + cache
        compute_s, memory_s = flops / self.sol.flops_per_s, nbytes / self.sol.bytes_per_s
        bound = max(compute_s, memory_s)
        expected = bound * self._ratio(seqs * self.q, prefill / passes)
        comm = (tokens * (self.allreduce_per_token_s + self.p2p_per_token_s + self.alltoall_per_token_s)
                + passes * (self.allreduce_latency_s + self.alltoall_latency_s))  # fmt: skip
        comm_bound = tokens * (
            self.allreduce_bound_per_token_s + self.p2p_per_token_s + self.alltoall_bound_per_token_s
        )
        draft_s = draft_bound = 0.0
        if self.spec_dec is not None and seqs > 0:  # k draft steps over the micro-batch's sequences
            df = seqs * self.draft_flops_tok / tp
            db = (self.draft_bytes + seqs * self.draft_cache_seq * self.kv_share) / tp
            draft_s = self.spec_dec.k * max(df / self.rates.flops_per_s, db / self.rates.bytes_per_s)
            draft_bound = self.spec_dec.k * max(df / self.sol.flops_per_s, db / self.sol.bytes_per_s)
        step = expected + comm + draft_s
        busy = flops / self.rates.flops_per_s + 0.5 * nbytes / self.rates.bytes_per_s
        util = min(1.0, busy / step) if step > 0 else 0.0
        out = (step, util, comm / step if step > 0 else 0.0, "compute" if compute_s > memory_s else "memory")
        self._pass[key] = out
        self._bound[key] = bound + comm_bound + draft_bound
        return out

    def pass_bound(self, seqs: int, prefill: float) -> float:
        """Speed of light of ``pass_time``'s pass: 100% of the datasheet, communication at the full link."""
        self.pass_time(seqs, prefill)
        return self._bound[(seqs, round(prefill, 6))]

    def _ratio(self, dec_tokens: int, prefill: float) -> float:
        """Expected / bound of the efficiency model for a pass of ``dec_tokens`` decode tokens and
        ``prefill`` prompt tokens: each part's ratio (``roofline.decode_step``, ``roofline.prefill_step``
        on one GPU) weighted by its bound."""
        s, c, o = self.spec, self.counts, self.opts
        parts = []
        if dec_tokens > 0:
            if dec_tokens not in self._dec_ratio:
                st = R.decode_step(s, c, self.gpu, dec_tokens, self.ctx, o.dtype, o.kv_dtype)
                self._dec_ratio[dec_tokens] = (st.expected_s / st.bound_s if st.bound_s else 1.0, st.bound_s)
            parts.append(self._dec_ratio[dec_tokens])
        p = math.ceil(prefill - 1e-9)
        if p > 0:
            if p not in self._pre_ratio:
                st = R.prefill_step(s, c, self.gpu, 1, p, o.dtype, o.kv_dtype)
                self._pre_ratio[p] = (st.expected_s / st.bound_s if st.bound_s else 1.0, st.bound_s)
            parts.append(self._pre_ratio[p])
        weight = sum(b for _, b in parts)
        return sum(r * b for r, b in parts) / weight if weight > 0 else 1.0

    def _slots(self) -> int:
        return self.layout.pp * self.layout.attn_dp

    def rank_seqs(self, requests: int) -> int:
        """Sequences of one micro-batch on one attention-DP rank (the busiest: rounded up)."""
        return math.ceil(requests * self.wl.samples_per_prompt / self._slots())

    def step(self, requests: int) -> tuple[float, float, float, str]:
        """The steady-state step of an instance with ``requests`` in flight: the decodes and, unless
        prefill is disaggregated, their share of the prefill chunks."""
        prefill = 0.0 if self.opts.disaggregated else self.prefill_per_step(requests) / self._slots()
        step, util, comm, bound = self.pass_time(self.rank_seqs(requests), prefill)
        util *= min(1.0, requests * self.wl.samples_per_prompt / self._slots())  # empty slots leave GPUs idle
        return step, util, comm, bound

    decode = step  # the name the plan's figures use

    # ------------------------------------------------------------------ what the user sees

    def tpot(self, b: int) -> float:
        """Mean inter-token latency of a request at steady state: the step (its share of prefill chunks
        included, unless prefill is disaggregated) / the expected tokens per step."""
        return self.step(b)[0] / self.tau

    def tpot_bound(self, b: int) -> float:
        """Speed of light of ``tpot``: the same step at 100% of the datasheet and of the links."""
        prefill = 0.0 if self.opts.disaggregated else self.prefill_per_step(b) / self._slots()
        return self.pass_bound(self.rank_seqs(b), prefill) / self.tau

    def prefill_alone(self) -> tuple[float, int]:
        """(seconds, chunks) of one request's prefill on an instance with no decodes (a disaggregated
        prefill instance): ``prompt_eff`` tokens in equal chunks of at most ``chunk``, pipelined over the
        stages (the first chunk crosses all of them, each later one adds a stage's time)."""
        pe = self.prompt_eff
        n = 1 if self.chunk is None else math.ceil(pe / self.chunk)
        t = self.pass_time(0, pe / n)[0]
        return t * (1 + (n - 1) / self.layout.pp), n

    def ttft_parts(self, b: int) -> dict[str, float]:
        """TTFT under load in parts (seconds): ``wait`` for the step in progress (half a step on average),
        ``prefill`` (the request's chunks, each sharing a step with the micro-batch's decodes in the token
        budget they leave: one step per chunk), ``kv_transfer`` (disaggregated: the prompt's cache sent to
        a decode instance) and ``queue`` (0 here: rate workloads add an M/D/1 wait in ``serving``)."""
        if self.opts.disaggregated:
            t, _ = self.prefill_alone()
            return {"wait": 0.0, "prefill": t, "kv_transfer": self.kv_transfer_s(), "queue": 0.0}
        seqs = self.rank_seqs(b)
        pe = self.prompt_eff
        if self.chunk is None:
            n = 1
        else:
            free = max(1, self.chunk - seqs * self.q)
            n = math.ceil(pe / free)
        chunk_step = self.pass_time(seqs, pe / n)[0]
        return {"wait": self.step(b)[0] / 2, "prefill": n * chunk_step, "kv_transfer": 0.0, "queue": 0.0}

    def ttft(self, b: int) -> float:
        return sum(self.ttft_parts(b).values())

    def kv_transfer_s(self) -> float:
        """Seconds to send one prompt's KV cache and state from a prefill to a decode instance: each GPU
        sends its share over the inter-node network (the pools sit on different nodes)."""
        return self.wl.prompt_tokens * self.cache_write_tok * self.kv_share / INTERNODE_BYTES_PER_S

    def request_rate(self, b: int) -> float:
        """Requests per second one instance completes at batch b."""
        return b / (self.wl.output_tokens * self.tpot(b))

    def prefill_rate(self) -> float:
        """Requests per second one disaggregated prefill instance prefills: its pp x dp slots each run a
        chunk at a time."""
        _, n = self.prefill_alone()
        busy = self.pass_time(0, self.prompt_eff / n)[0]
        return self._slots() / (n * busy)

    def meets(self, b: int) -> str | None:
        """None when batch b meets the SLOs, else which one it misses."""
        wl = self.wl
        if wl.slo_ttft_s is not None and self.ttft(b) > wl.slo_ttft_s:
            return "TTFT"
        if wl.slo_tpot_s is not None and self.tpot(b) > wl.slo_tpot_s:
            return "TPOT"
        return None


def md1_wait_s(service_s: float, load: float) -> float:
    """Mean wait in queue of an M/D/1 server (Poisson arrivals, fixed service time) at utilisation
    ``load``: load / (2 (1 - load)) x service (Pollaczek-Khinchine). Infinite at load >= 1."""
    if load >= 1.0:
        return math.inf
    return load / (2.0 * (1.0 - load)) * service_s


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
