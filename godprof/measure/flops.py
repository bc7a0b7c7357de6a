"""Counting the built model's FLOPs with two independent counters and comparing with the analytic model.

Counters (both report 1 multiply-add = 2 FLOPs here):

- ``torch.utils.flop_counter.FlopCounterMode`` sees every aten op at dispatch, per module. It counts
  mm/addmm/bmm/baddbmm, convolutions and the fused SDPA kernels (flash / efficient / cudnn), each SDPA
  as the full S x T products whatever the mask (``attention_flops="full"`` in the analytic model).
  Every SDPA kernel is priced by godprof's own GQA-aware formula (``godprof.measure.sdpa_flops``):
  torch < 2.13 asserts equal query and KV head counts, and lacks the CPU flash kernel altogether.
  A counter that fails says so (``available=False`` and the reason); it never loses a measurement.
- ``fvcore.nn.FlopCountAnalysis`` traces the model with ``torch.jit.trace`` and counts from the graph.
  It counts one MAC as one "flop"; every figure is doubled here. Registered because fvcore lacks
  them: ``aten::scaled_dot_product_attention`` (full S x T, like torch's) and ``aten::baddbmm``.
  Its default layer-norm handler counts norm arithmetic; that goes to ``other``, not ``matmul``.

Neither counter sees elementwise work: norms built from pow/mean/rsqrt, activations, softmax inside
SDPA, rotary, residual adds, MoE routing (topk, sort, gather/scatter), and the SSM scans where they
are elementwise (Mamba-1's selective scan, Mamba-2's decay cumsum/exp). Depthwise conv1d is counted
by both as a convolution and compared with the analytic ``conv`` figure on its own, never mixed into
matmuls. fvcore prices a generic einsum from the text numpy's ``einsum_path`` prints (3 significant
digits), so its einsum figures are off by up to ~0.05% each.

The analytic figure each counter's matmul FLOPs are compared with is ``forward`` with
``attention_flops="full"`` (what the counters see for SDPA) plus ``ssm_matmul_flops``: the parts of the
SSM scans that the build runs as matrix products (see that function; Mamba-2's inter-chunk state
passing included, as in the analytic ``ssm_scan``).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from godprof.analytic import flops as F
from godprof.analytic.params import count_params, ffn_part, mixer_part
from godprof.analytic.workload import Workload
from godprof.spec import Spec

MATMUL_OPS = frozenset({
    "mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "einsum", "_scaled_mm",
    "scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_flash_attention_for_cpu", "_flash_attention_forward", "_efficient_attention_forward",
    "_grouped_mm",
})  # fmt: skip
CONV_OPS = frozenset({"convolution", "_convolution", "cudnn_convolution", "convolution_overrideable", "conv1d", "conv"})

NOT_SEEN = (
    "norms (pow/mean/rsqrt), activations, softmax, rotary, residual adds",
    "MoE routing: topk, sort, gather and scatter-add",
    "SSM scans where they are elementwise (Mamba-1 selective scan; Mamba-2 decay cumsum/exp)",
)


def _op_name(op: Any) -> str:
    """'aten.mm' / 'aten::mm' / OpOverloadPacket -> 'mm'."""
    s = str(op)
    for sep in ("::", "."):
        if sep in s:
            s = s.split(sep, 1)[1]
    return s.split(".")[0]


def _category(op: str) -> str:
    return "matmul" if op in MATMUL_OPS else "conv" if op in CONV_OPS else "other"


# --------------------------------------------------------------------------- analytic side


def ssm_matmul_flops(spec: Spec, batch: int, seq: int) -> int:
    """The parts of the analytic ``flops.ssm_scan_flops`` that the build computes as matrix products, as
    each kind states them (``MixerKind.scan_matmul_flops``). Mamba-1: only the output contraction
    y = C . h (2 x d_inner x d_state per token; the rest of the scan is elementwise). Mamba-2: every term
    of its chunked SSD count, the inter-chunk state passing included."""
    return sum(spec.mixers[n].scan_matmul_flops(batch, seq) for n in spec.layer_mixers)


def analytic_components(spec: Spec, batch: int, seq: int, last_only: bool) -> dict[str, int]:
    """Matmul FLOPs of one forward by component, as the counters should see them.

    Keys: ``mixer:<name>`` and ``ffn:<name>`` (summed over the layers using that spec entry) and
    ``lm_head``. Mixers: 2 x matmul weights x tokens + SDPA over the full S x S + the SSM matmuls
    (``ssm_matmul_flops``); FFNs: 2 x matmul weights x tokens (MoE: router + top_k experts + shared);
    lm_head: 2 x vocab x hidden per logit row (one row per sequence with ``last_only``).
    The sum equals ``forward`` (attention "full") + ``ssm_matmul_flops`` (checked by tests).
    """
    h = spec.model.hidden_size
    tokens = batch * seq
    out: Counter[str] = Counter()
    for layer in spec.layers():
        mk = f"mixer:{layer.mixer_name}"
        out[mk] += 2 * mixer_part(layer.mixer, h).matmul * tokens
        out[mk] += layer.mixer.attention_flops(batch, seq, "full") + layer.mixer.scan_matmul_flops(batch, seq)
        if layer.ffn is not None:
            out[f"ffn:{layer.ffn_name}"] += 2 * ffn_part(layer.ffn, h).matmul * tokens
    rows = batch if last_only else tokens
    out["lm_head"] = 2 * spec.model.vocab_size * h * rows
    return dict(out)


# --------------------------------------------------------------------------- counters


@dataclass
class CounterResult:
    """One counter's view of a forward, in FLOPs (2 per MAC)."""

    counter: str
    available: bool = True
    reason: str | None = None  # why unavailable
    total: int = 0
    by_category: dict[str, int] = field(default_factory=dict)  # matmul, conv, other
    by_operator: dict[str, int] = field(default_factory=dict)
    by_component: dict[str, int] = field(default_factory=dict)  # matmul FLOPs per analytic component
    unsupported_ops: dict[str, int] = field(default_factory=dict)  # op -> calls (fvcore)

    @property
    def matmul(self) -> int:
        return self.by_category.get("matmul", 0)

    @property
    def label(self) -> str:
        """Short name for tables: 'torch' or 'fvcore'."""
        return self.counter.split(".")[0]

    def to_dict(self) -> dict:
        return {
            "counter": self.counter,
            "available": self.available,
            "reason": self.reason,
            "total": self.total,
            "matmul": self.matmul,
            "by_category": dict(self.by_category),
            "by_operator": dict(self.by_operator),
            "by_component": dict(self.by_component),
            "unsupported_ops": dict(self.unsupported_ops),
        }


def _component_of(module: str, spec: Spec) -> str | None:
    """'layers.3.mixer...' -> 'mixer:<spec name of layer 3's mixer>'; None for anything else."""
    parts = module.split(".")
    if len(parts) >= 3 and parts[0] == "layers" and parts[1].isdigit() and parts[2] in ("mixer", "ffn"):
        i = int(parts[1])
        return f"mixer:{spec.layer_mixers[i]}" if parts[2] == "mixer" else f"ffn:{spec.layer_ffns[i]}"
    return None


def _components(per_module: dict[str, dict[str, int]], spec: Spec) -> dict[str, int]:
    """Matmul FLOPs per component from per-module op counts (modules named relative to the model).

    Only the ``layers.<i>.mixer`` and ``layers.<i>.ffn`` entries are read (their children are included
    in them); the rest of the model's matmuls (the lm_head product) is the root's total minus those.
    """
    out: Counter[str] = Counter()
    for name, ops in per_module.items():
        comp = _component_of(name, spec)
        if comp is not None and name.count(".") == 2:
            out[comp] += sum(v for op, v in ops.items() if _category(op) == "matmul")
    root = sum(v for op, v in per_module.get("", {}).items() if _category(op) == "matmul")
    out["lm_head"] = root - sum(out.values())
    return dict(out)


class _LastOnly(nn.Module):
    """Wraps the model so a tracer (fvcore) can call it with one tensor argument."""

    def __init__(self, model: nn.Module, last_only: bool):
        super().__init__()
        self.m = model
        self.last_only = last_only

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.m(input_ids, last_only=self.last_only)


def count_torch(model: nn.Module, spec: Spec, input_ids: torch.Tensor, last_only: bool) -> CounterResult:
    """FlopCounterMode over one forward (no cache) of ``input_ids``, with godprof's GQA-aware formula for
    every SDPA kernel (``godprof.measure.sdpa_flops``). A counter failure (an op formula that rejects
    a shape, a torch version without FlopCounterMode) gives ``available=False`` with the reason."""
    counter = "torch.FlopCounterMode"
    try:
        from torch.utils.flop_counter import FlopCounterMode

        from godprof.measure.sdpa_flops import sdpa_flop_mapping

        fc = FlopCounterMode(display=False, depth=None, custom_mapping=sdpa_flop_mapping())
        with torch.no_grad(), fc:
            model(input_ids, last_only=last_only)
    except torch.OutOfMemoryError:
        raise
    except Exception as e:
        return CounterResult(counter, available=False, reason=f"counter failed: {_first_line(e)}")
    raw = fc.get_flop_counts()
    root = type(model).__name__
    per_module: dict[str, dict[str, int]] = {}
    for name, ops in raw.items():
        if name == "Global":
            continue
        rel = "" if name == root else name[len(root) + 1 :] if name.startswith(root + ".") else None
        if rel is None:
            continue
        per_module[rel] = {_op_name(op): int(v) for op, v in ops.items()}
    by_op: Counter[str] = Counter({_op_name(op): int(v) for op, v in raw.get("Global", {}).items()})
    return _result(counter, by_op, per_module, spec)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _result(counter: str, by_op: Counter[str], per_module: dict[str, dict[str, int]], spec: Spec,
            unsupported: dict[str, int] | None = None) -> CounterResult:  # fmt: skip
    cats: Counter[str] = Counter()
    for op, v in by_op.items():
        cats[_category(op)] += v
    return CounterResult(
        counter=counter,
        total=sum(by_op.values()),
        by_category={k: cats.get(k, 0) for k in ("matmul", "conv", "other")},
        by_operator=dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
        by_component=_components(per_module, spec),
        unsupported_ops=dict(unsupported or {}),
    )


def _fv_sdpa(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of aten::scaled_dot_product_attention: B x H x L x S x (E + Ev), over the full L x S."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    b, h, lq, e = q
    s, ev = k[-2], v[-1]
    return b * h * lq * s * (e + ev)


def _fv_baddbmm(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of aten::baddbmm(input, batch1 [n, c, t], batch2 [n, t, d]): n x c x t x d."""
    from fvcore.nn.jit_handles import get_shape

    n, c, t = get_shape(inputs[1])
    d = get_shape(inputs[2])[-1]
    return n * c * t * d


@contextmanager
def _trace_friendly_sdpa() -> Iterator[None]:
    """While tracing, make SDPA's ``is_causal`` and ``enable_gqa`` Python bools.

    Under ``torch.jit.trace`` a size read from ``x.shape`` is a traced value, so ``is_causal=S > 1``
    (or ``enable_gqa=groups > 1``) arrives as a tensor and SDPA rejects it. The shim converts it
    (the trace then records the constant for this input shape, which is all a FLOP count needs)
    and changes nothing else.
    """
    import torch.nn.functional as tf

    original = tf.scaled_dot_product_attention

    def sdpa(*args: Any, **kwargs: Any) -> torch.Tensor:
        for flag in ("is_causal", "enable_gqa"):
            if isinstance(kwargs.get(flag), torch.Tensor):
                kwargs[flag] = bool(kwargs[flag])
        return original(*args, **kwargs)

    tf.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        tf.scaled_dot_product_attention = original


def count_fvcore(model: nn.Module, spec: Spec, input_ids: torch.Tensor, last_only: bool) -> CounterResult:
    """fvcore FlopCountAnalysis (jit trace) of one forward (no cache); MACs doubled to FLOPs."""
    with warnings.catch_warnings():  # fvcore and jit.trace warn about deprecations and tracer constants
        warnings.simplefilter("ignore")
        try:
            from fvcore.nn import FlopCountAnalysis
        except ImportError as e:
            return CounterResult("fvcore.FlopCountAnalysis", available=False, reason=f"fvcore not installed: {e}")
        try:
            fa = FlopCountAnalysis(_LastOnly(model, last_only), (input_ids,))
        except Exception as e:
            return CounterResult("fvcore.FlopCountAnalysis", available=False, reason=f"fvcore failed: {_first_line(e)}")
        fa.set_op_handle("aten::scaled_dot_product_attention", _fv_sdpa, "aten::baddbmm", _fv_baddbmm)
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        fa.tracer_warnings("none")
        try:
            with torch.no_grad(), _trace_friendly_sdpa():
                by_op_mac = fa.by_operator()
                by_module_op = fa.by_module_and_operator()
                unsupported = dict(fa.unsupported_ops())
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # tracing can fail on exotic code paths; say so rather than crash the run
            return CounterResult("fvcore.FlopCountAnalysis", available=False, reason=f"trace failed: {_first_line(e)}")
    by_op: Counter[str] = Counter({op: round(2 * v) for op, v in by_op_mac.items()})
    per_module: dict[str, dict[str, int]] = {}
    for name, ops in by_module_op.items():
        if name == "m" or name.startswith("m."):
            per_module[name[2:]] = {op: round(2 * v) for op, v in ops.items()}
    return _result("fvcore.FlopCountAnalysis", by_op, per_module, spec, unsupported)


# --------------------------------------------------------------------------- comparison


@dataclass
class FlopComparison:
    """Analytic matmul FLOPs of one forward vs what each counter counted on the built model."""

    batch: int
    seq: int
    last_only: bool
    analytic_forward: int  # analytic ``forward``, attention "full"
    analytic_ssm_matmul: int  # ssm_matmul_flops
    analytic_components: dict[str, int]
    analytic_conv: int
    analytic_ssm_scan: int
    counters: list[CounterResult]

    @property
    def analytic_matmul(self) -> int:
        """What the counters' matmul FLOPs should equal: forward (full attention) + SSM matmuls."""
        return self.analytic_forward + self.analytic_ssm_matmul

    def error(self, c: CounterResult) -> float | None:
        """(analytic - counted) / counted for a counter's matmul FLOPs (the report's estimate-vs-measured sign)."""
        if not c.available or not c.matmul:
            return None
        return (self.analytic_matmul - c.matmul) / c.matmul

    def to_dict(self) -> dict:
        return {
            "batch": self.batch,
            "seq": self.seq,
            "logits": "last" if self.last_only else "all",
            "convention": "1 multiply-add = 2 FLOPs; SDPA counted over the full seq x seq",
            "analytic": {
                "forward_full_attention": self.analytic_forward,
                "ssm_matmul": self.analytic_ssm_matmul,
                "matmul": self.analytic_matmul,
                "by_component": dict(self.analytic_components),
                "conv": self.analytic_conv,
                "ssm_scan": self.analytic_ssm_scan,
            },
            "counters": [{**c.to_dict(), "matmul_error": self.error(c)} for c in self.counters],
            "not_seen_by_counters": list(NOT_SEEN),
        }


def compare_flops(
    model: nn.Module, spec: Spec, batch: int, seq: int, *, last_only: bool = True, fvcore: bool = True,
    seed: int = 0,
) -> FlopComparison:  # fmt: skip
    """Count one forward of ``batch`` x ``seq`` random tokens (no cache) with both counters."""
    device = next(model.parameters()).device
    g = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.randint(0, spec.model.vocab_size, (batch, seq), generator=g).to(device)
    counts = count_params(spec)
    w = Workload(batch=batch, seq=seq, attention_flops="full", logits="last" if last_only else "all")
    counters = [count_torch(model, spec, ids, last_only)]
    if fvcore:
        counters.append(count_fvcore(model, spec, ids, last_only))
    return FlopComparison(
        batch=batch,
        seq=seq,
        last_only=last_only,
        analytic_forward=F.forward_flops(spec, counts, w),
        analytic_ssm_matmul=ssm_matmul_flops(spec, batch, seq),
        analytic_components=analytic_components(spec, batch, seq, last_only),
        analytic_conv=F.conv_flops(spec, batch, seq),
        analytic_ssm_scan=F.ssm_scan_flops(spec, batch, seq),
        counters=counters,
    )
