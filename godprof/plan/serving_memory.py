"""Memory per GPU of one serving layout (``godprof.plan.serving``'s docstring states the model): the
shared inference memory model (``godprof.analytic.inference_memory``) applied to the heaviest pipeline
stage of ``plan.layout``, per attention data-parallel rank, with a speculative draft's weights and cache."""

from __future__ import annotations

import math
from typing import Any

from godprof.analytic import inference_memory as IM
from godprof.analytic import memory as M
from godprof.analytic.params import ParamCounts
from godprof.dtypes import get_dtype
from godprof.plan.layout import Layout, StageShare, request_cache_bytes
from godprof.plan.serving_timing import _largest
from godprof.plan.serving_types import ServeOptions
from godprof.plan.workload import ServingWorkload
from godprof.spec import Spec

Draft = tuple[Spec, ParamCounts] | None


class _StageMemory:
    """Memory per GPU of one layout under the shared inference memory model, as a function of the
    requests an instance holds: the heaviest stage's weights (+ a draft's) + activations of the largest
    prefill pass of a rank's prompts (/ tp) + KV cache and SSM state of a rank's requests."""

    def __init__(self, spec: Spec, counts: ParamCounts, shares: list[StageShare], wl: ServingWorkload,
                 opts: ServeOptions, kv_dt: Any, layout: Layout, gpu: Any, draft: Draft):  # fmt: skip
        self.spec, self.shares, self.wl, self.opts, self.tp, self.dp = spec, shares, wl, opts, layout.tp, layout.attn_dp
        self.model = opts.memory_model
        peers = layout.instance_gpus > 1
        self.usable = IM.usable_bytes(gpu, self.model, peers)
        self.overhead = IM.overheads_for(gpu).total_bytes(peers)
        self.caches = [request_cache_bytes(s, wl.prompt_tokens, wl.output_tokens, wl.samples_per_prompt, kv_dt)
                       for s in shares]  # fmt: skip
        self.per_req = [kv + st for kv, st in self.caches]
        self.extra_weights, self.extra_per_req = _draft_memory(counts, wl, opts, kv_dt, layout.tp, draft)
        chunk = self.model.prefill_chunk_tokens
        self._packed = IM.prefill_pass(1 << 40, wl.prompt_tokens, chunk)[0] if chunk is not None else None
        self._acts: dict[int, int] = {}

    def acts(self, b: int) -> int:
        """Activations per GPU of the largest prefill pass of one rank's prompts when it holds ``b``."""
        key = b if self._packed is None else min(b, self._packed)
        if key not in self._acts:
            a = IM.activation_bytes(self.spec, key, self.wl.prompt_tokens, self.opts.dtype, self.model)
            self._acts[key] = a // self.tp
        return self._acts[key]

    def _rank(self, b: int) -> int:
        return math.ceil(b / self.dp)

    def _stage(self, b: int) -> int:
        r = self._rank(b)
        return max(range(len(self.shares)), key=lambda k: self.shares[k].weights_bytes + r * self.per_req[k])

    def need(self, b: int) -> float:
        i, r = self._stage(b), self._rank(b)
        return (self.shares[i].weights_bytes + self.extra_weights + self.acts(r)
                + r * (self.per_req[i] + self.extra_per_req))  # fmt: skip

    def max_requests(self) -> int:
        """The most requests one instance holds within the usable memory (0: not even one)."""
        if self.need(1) > self.usable:
            return 0
        room = min(
            (
                math.floor(
                    (self.usable - s.weights_bytes - self.extra_weights - self.acts(1)) / (kv + self.extra_per_req)
                )
                if kv + self.extra_per_req > 0
                else (1 << 30)
            )
            for s, kv in zip(self.shares, self.per_req, strict=True)
        )  # fmt: skip  (an upper bound per rank: activations only grow with the batch)
        return _largest(1, max(1, room * self.dp), lambda b: self.need(b) <= self.usable)

    def record(self, b: int) -> dict[str, int]:
        """The memory keys of ``inference_memory.memory_record`` for the heaviest stage at ``b`` requests,
        with this GPU's runtime overheads and usable bytes beside them."""
        i, r = self._stage(b), self._rank(b)
        kv, state = self.caches[i]
        weights = int(self.shares[i].weights_bytes + self.extra_weights)
        out = IM.memory_record(weights, int(r * (kv + self.extra_per_req)), int(r * state), self.acts(r), 0)
        out.pop("kv_bytes_per_token")
        out["runtime_overhead_bytes"] = self.overhead
        out["usable_bytes"] = self.usable
        return out


def _draft_memory(counts: ParamCounts, wl: ServingWorkload, opts: ServeOptions, kv_dt: Any, tp: int,
                  draft: Draft) -> tuple[float, float]:  # fmt: skip
    """(weight bytes, cache bytes per request) a speculative draft adds per GPU, split over tp: a draft
    model's weights and KV cache at prompt + output, or the MTP modules' weights (their own small cache
    is left out)."""
    if opts.speculative is None:
        return 0.0, 0.0
    dt = get_dtype(opts.dtype)
    if draft is None:
        return counts.mtp_total * max(16, dt.bits) / 8 / tp, 0.0
    ds, dc = draft
    ctx = wl.prompt_tokens + wl.output_tokens
    n = wl.samples_per_prompt
    cache = M.kv_cache_bytes(ds, n, ctx, kv_dt) + M.ssm_state_bytes(ds, n, kv_dt)
    return M.weights_bytes(dc, dt) / tp, cache / tp
