"""Speed-of-light bound and expected time of a prefill pass or a decode step on one GPU. Pure Python.

Both split the same FLOPs and bytes (``roofline.prefill_flops`` / ``prefill_bytes``, ``decode_flops`` /
``decode_bytes``) into operations:

- ``gemm``: every Linear outside the routed experts (projections, dense MLPs, shared experts, routers,
  lm_head), M = the pass's tokens; bytes = the weights it touches;
- ``grouped_gemm``: the routed experts, M = tokens per touched expert (tokens x top_k / experts hit);
  bytes = the experts touched (``roofline.expected_experts_touched``);
- ``attention:<class>``: per a mixer kind's ``efficiency_class`` (flash, mla, sparse, scan): the score and
  value products (or the scan and convolution) and the cache bytes (decode: what the step reads, KV and
  2x recurrent state; prefill: what it writes);
- ``fixed``: kernels of fixed cost (small kernels per layer, MoE routing and permutation).

**Bound** (speed of light): ``max(FLOPs / peak, bytes / bandwidth)`` over the totals at 100% of the
datasheet, the pre-efficiency roofline. Nothing that does this work on this card can beat it (it leaves
out only the activation traffic and elementwise work that real kernels add).

**Expected**: the sum over operations of each one's time under ``godprof.analytic.efficiency`` (its
kernel fixed costs plus the slower of its compute and memory times at its own fractions of the peaks).
Since every fraction is <= 1 and a sum of maxima is at least the maximum of the sums, expected >= bound.
It leaves out overlap between operations (kernels run back to back, as in a CUDA graph) and
communication (``efficiency.allreduce_time_s`` / ``alltoall_time_s`` for multi-GPU plans).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from godprof.analytic import efficiency as E
from godprof.analytic import roofline as R
from godprof.analytic.params import ParamCounts
from godprof.spec import Spec

if TYPE_CHECKING:
    from godprof.gpus import GPU


@dataclass(frozen=True)
class OpTime:
    """One operation of a pass: its FLOPs and bytes, its share of the bound and its expected time."""

    op: str
    flops: float
    bytes: float
    bound_s: float
    expected_s: float


@dataclass(frozen=True)
class StepTime:
    """Bound (speed of light) and expected time of one pass, and the operations they come from."""

    bound_s: float
    expected_s: float
    bound_by: str  # "compute" or "memory": which roof sets the bound
    ops: tuple[OpTime, ...]

    @property
    def sol_percent(self) -> float:
        """Expected time as a share of speed of light: 100 x bound / expected (100 = at the bound)."""
        return 100.0 * self.bound_s / self.expected_s if self.expected_s > 0 else 100.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "bound_s": self.bound_s,
            "expected_s": self.expected_s,
            "sol_percent": self.sol_percent,
            "bound_by": self.bound_by,
            "ops": {o.op: {"flops": o.flops, "bytes": o.bytes, "bound_s": o.bound_s, "expected_s": o.expected_s}
                    for o in self.ops},
        }  # fmt: skip


@cache
def _routed(ffn: Any, hidden: int) -> tuple[int, int, int] | None:
    """(experts, top_k, matmul weights of one expert) of an FFN with routed experts."""
    r = ffn.routed_experts(hidden)
    return None if r is None else (r[0], r[1], r[2].matmul)


def _peaks(gpu: GPU, dtype: str) -> tuple[float, float]:
    return gpu.peak_flops(R.compute_dtype(gpu, dtype)), gpu.hbm_bandwidth_bytes_per_s


def _assemble(
    gpu: GPU,
    dtype: str,
    total_flops: float,
    total_bytes: float,
    tokens: int,
    attn: dict[str, list[float]],
    routed: list[tuple[float, float, float, int]],
    spec: Spec,
    moe_layers: int,
) -> StepTime:
    """Split the totals into operations and time each (see the module docstring).

    ``attn``: class -> [flops, bytes, layers]; ``routed``: (flops, bytes, tokens per expert, layers) per MoE
    layer kind. The gemm operation takes what the others leave of the totals, so the parts add up exactly.
    """
    model = E.model_for(gpu)
    peak, bw = _peaks(gpu, dtype)
    layers = spec.model.num_layers
    ops: list[OpTime] = []
    used_f = used_b = 0.0
    for cls, (f, b, n) in sorted(attn.items()):
        a = model.attention_for(cls)
        t = n * a.kernel_fixed_s + max(f / (peak * a.compute), b / (bw * a.bandwidth)) if f or b else 0.0
        ops.append(OpTime(f"attention:{cls}", f, b, max(f / peak, b / bw), t))
        used_f, used_b = used_f + f, used_b + b
    if routed:
        g = model.grouped_gemm
        f = sum(r[0] for r in routed)
        b = sum(r[1] for r in routed)
        t = sum(g.time_s(rf, rb, m, peak, bw) + (n - 1) * g.kernel_fixed_s for rf, rb, m, n in routed)
        ops.append(OpTime("grouped_gemm", f, b, max(f / peak, b / bw), t))
        used_f, used_b = used_f + f, used_b + b
    gf, gb = max(0.0, total_flops - used_f), max(0.0, total_bytes - used_b)
    g = model.gemm
    kernels = layers * GEMM_KERNELS_PER_LAYER + 1  # + the lm_head
    t = g.time_s(gf, gb, tokens, peak, bw) + (kernels - 1) * g.kernel_fixed_s
    ops.append(OpTime("gemm", gf, gb, max(gf / peak, gb / bw), t))
    small = layers * model.layer_small_kernels + moe_layers * model.moe_small_kernels
    ops.append(OpTime("fixed", 0.0, 0.0, 0.0, small * g.kernel_fixed_s))
    compute, memory = total_flops / peak, total_bytes / bw
    bound = max(compute, memory)
    expected = max(bound, sum(o.expected_s for o in ops))  # equal to the sum: every fraction is <= 1
    return StepTime(bound, expected, "compute" if compute > memory else "memory", tuple(ops))


GEMM_KERNELS_PER_LAYER = 4  # fused qkv, output projection, fused gate/up, down (a fused engine's layer)


def _routed_parts(spec: Spec, counts: ParamCounts, tokens: int, dtype: str) -> tuple[list, int]:
    out = []
    moe_layers = 0
    h = spec.model.hidden_size
    for kind in counts.by_layer_kind:
        f = spec.ffns.get(kind.ffn)
        r = _routed(f, h) if f is not None else None
        if r is None:
            continue
        experts, top_k, matmul = r
        one = R._routed_expert_bytes(f, h, R.get_dtype(dtype).name)
        hit = R.expected_experts_touched(experts, top_k, tokens)
        per_expert = tokens * min(top_k, experts) / hit if hit else 0.0
        flops = 2.0 * tokens * min(top_k, experts) * matmul * kind.layers
        nbytes = hit * one[2] * kind.layers if one else 0.0
        out.append((flops, nbytes, per_expert, kind.layers))
        moe_layers += kind.layers
    return out, moe_layers


def decode_step(
    spec: Spec,
    counts: ParamCounts,
    gpu: GPU,
    batch: int,
    context: int,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
) -> StepTime:
    """Bound and expected time of one decode step of ``batch`` sequences at ``context`` tokens (TPOT)."""
    cd = R._cache_dtype(dtype, kv_dtype)
    attn: dict[str, list[float]] = {}
    for lay in spec.layers():
        m = lay.mixer
        f = batch * (m.decode_attention_flops(context) + m.scan_decode_flops())
        b = cd.cache_nbytes(batch * m.decode_read_elements(context)) + 2 * cd.cache_nbytes(batch * m.state_elements())
        if f or b:
            e = attn.setdefault(m.efficiency_class, [0.0, 0.0, 0])
            e[0], e[1], e[2] = e[0] + f, e[1] + b, e[2] + 1
    routed, moe_layers = _routed_parts(spec, counts, batch, dtype)
    total_f = R.decode_flops(spec, counts, batch, context)
    total_b = R.decode_bytes(spec, counts, batch, context, dtype, kv_dtype)
    return _assemble(gpu, dtype, total_f, total_b, batch, attn, routed, spec, moe_layers)


def prefill_step(
    spec: Spec,
    counts: ParamCounts,
    gpu: GPU,
    batch: int,
    seq: int,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
    attention: str = "causal",
) -> StepTime:
    """Bound and expected time of a prefill of ``batch`` x ``seq`` tokens in one pass (TTFT without queueing)."""
    cd = R._cache_dtype(dtype, kv_dtype)
    attn: dict[str, list[float]] = {}
    for lay in spec.layers():
        m = lay.mixer
        f = m.attention_flops(batch, seq, attention) + m.scan_flops(batch, seq)
        f += m.conv_flops_per_token() * batch * seq
        b = cd.cache_nbytes(batch * m.kv_elements(seq)) + cd.cache_nbytes(batch * m.state_elements())
        if f or b:
            e = attn.setdefault(m.efficiency_class, [0.0, 0.0, 0])
            e[0], e[1], e[2] = e[0] + f, e[1] + b, e[2] + 1
    routed, moe_layers = _routed_parts(spec, counts, batch * seq, dtype)
    total_f = R.prefill_flops(spec, counts, batch, seq, attention)
    total_b = R.prefill_bytes(spec, counts, batch, seq, dtype, kv_dtype)
    return _assemble(gpu, dtype, total_f, total_b, batch * seq, attn, routed, spec, moe_layers)
