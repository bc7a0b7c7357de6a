"""``type: parallel``: two or more token mixers side by side on the same normed input, outputs summed.

Falcon-H1 (transformers ``models/falcon_h1/modeling_falcon_h1.py``, ``FalconH1DecoderLayer``) runs
attention and a Mamba-2 mixer in every layer on the output of one RMSNorm and adds them:
``mamba(h) x ssm_out_multiplier + attn(h x attention_in_multiplier) x attention_out_multiplier``
(``ssm_in_multiplier`` scales the Mamba input inside ``FalconH1Mixer``, the same thing). The spec entry
holds its children inline, each a complete mixer entry of any registered kind but ``parallel`` and
``none``, with one input and one output multiplier per child (default 1; no parameters)::

    hybrid: {type: parallel, of: [{type: attention, num_heads: 8}, {type: mamba2, d_inner: 1024}],
             in_multipliers: [1.0, 0.5], out_multipliers: [0.25, 1.0]}

Every figure is the children's, summed: parameters (components kept), KV elements per token, state,
FLOPs, decode reads. What the one-value interface of ``MixerKind`` cannot hold exactly, and how it is
answered here:

- ``cached_tokens``: generic code multiplies one ``kv_elements_per_token`` by one ``cached_tokens``. When
  every child that caches keys keeps the same number of tokens (Falcon-H1: one attention child) that is
  exact; otherwise the product is rounded up to whole tokens of the summed per-token size, so the KV
  cache is over-stated by less than one token's worth per layer (``decode_read_elements`` stays exact).
- ``rope_table``: one (rotary dim, theta) per mixer; children with two different tables are rejected.
- ``categories``: the children's, so a parallel attention + Mamba mixer makes a spec both attention and
  SSM (family ``hybrid``); ``category`` joins them with '+' for display.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.base import MixerKind, Part, parse_kind

if TYPE_CHECKING:
    from godprof.analytic.workload import Workload


@dataclass(frozen=True)
class Parallel(MixerKind):
    """Token mixers run side by side on the same input; the layer's mixer output is the sum of
    ``out_multipliers[i] x child_i(in_multipliers[i] x x)``."""

    children: tuple[MixerKind, ...]
    in_multipliers: tuple[float, ...]
    out_multipliers: tuple[float, ...]

    type: ClassVar[str] = "parallel"
    build: ClassVar[str] = "godprof.build.kinds.parallel:ParallelMixer"
    keys: ClassVar[frozenset[str]] = frozenset({"type", "of", "in_multipliers", "out_multipliers"})
    required: ClassVar[frozenset[str]] = frozenset({"type", "of"})

    @property
    def category(self) -> str:  # type: ignore[override]
        return "+".join(dict.fromkeys(ch.category for ch in self.children))

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(c for ch in self.children for c in ch.categories)

    @property
    def label(self) -> str:  # type: ignore[override]
        return "|".join(ch.label for ch in self.children)

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> Parallel:
        from godprof.kinds import MIXER_KINDS  # this module is one of the registry's entries

        raw = d.get("of")
        children: list[MixerKind] = []
        if not isinstance(raw, list) or len(raw) < 2:
            c.err((*p, "of"), "expected a list of two or more mixer entries (each a mapping with its type)")
            raw = []
        for i, entry in enumerate(raw):
            q = (*p, "of", i)
            kind = entry.get("type") if isinstance(entry, dict) else None
            if kind in (cls.type, "none"):
                c.err((*q, "type"), f"a parallel mixer cannot hold a '{kind}' mixer")
                continue
            ok, child = parse_kind(c, entry, q, hidden, MIXER_KINDS, "mixer")
            if ok:
                children.append(child)
        tables = {t for t in (ch.rope_table() for ch in children) if t is not None}
        if len(tables) > 1:
            c.err((*p, "of"), f"children read {len(tables)} different rotary tables {sorted(tables)}; one is supported")
        n = len(raw)
        return cls(
            children=tuple(children),
            in_multipliers=_multipliers(c, d, "in_multipliers", p, n),
            out_multipliers=_multipliers(c, d, "out_multipliers", p, n),
        )

    # -- parameters

    def params(self, hidden: int) -> Part:
        """Every child's parameters, each under its own components (attention, ssm, norms...)."""
        p = Part()
        for ch in self.children:
            p.merge(ch.params(hidden))
        return p

    # -- cache and state

    def kv_elements_per_token(self) -> int:
        """The children's cached values per token, summed."""
        return sum(ch.kv_elements_per_token() for ch in self.children)

    def cached_tokens(self, context: int) -> int:
        """Exact when every child with a KV cache keeps the same tokens at ``context``; otherwise the
        children's cached elements over the summed per-token size, rounded up (see the module docstring)."""
        per_token = self.kv_elements_per_token()
        if not per_token:
            return context
        elements = sum(ch.kv_elements_per_token() * ch.cached_tokens(context) for ch in self.children)
        return -(-elements // per_token)

    def kv_cache_elements(self, context: int) -> int:
        """The exact cached elements per sequence at ``context`` (what the build allocates)."""
        return sum(ch.kv_elements_per_token() * ch.cached_tokens(context) for ch in self.children)

    def state_elements(self) -> int:
        return sum(ch.state_elements() for ch in self.children)

    def decode_read_elements(self, context: int) -> int:
        return sum(ch.decode_read_elements(context) for ch in self.children)

    def kv_tp_fraction(self, tp: int) -> float:
        """The children's fractions weighted by their KV elements per token."""
        per_token = self.kv_elements_per_token()
        if not per_token:
            return 0.0
        return sum(ch.kv_elements_per_token() * ch.kv_tp_fraction(tp) for ch in self.children) / per_token

    def tp_problem(self, tp: int) -> str | None:
        problems = [q for q in (ch.tp_problem(tp) for ch in self.children) if q]
        return "; ".join(problems) or None

    def tp_risks(self, tp: int) -> list[str]:
        return [r for ch in self.children for r in ch.tp_risks(tp)]

    # -- FLOPs (the multipliers are elementwise: no matmul FLOPs)

    def attention_flops(self, batch: int, seq: int, convention: str) -> int:
        return sum(ch.attention_flops(batch, seq, convention) for ch in self.children)

    def decode_attention_flops(self, context: int) -> int:
        return sum(ch.decode_attention_flops(context) for ch in self.children)

    def scan_flops(self, batch: int, seq: int) -> int:
        return sum(ch.scan_flops(batch, seq) for ch in self.children)

    def scan_matmul_flops(self, batch: int, seq: int) -> int:
        return sum(ch.scan_matmul_flops(batch, seq) for ch in self.children)

    def scan_decode_flops(self) -> int:
        return sum(ch.scan_decode_flops() for ch in self.children)

    def conv_flops_per_token(self) -> int:
        return sum(ch.conv_flops_per_token() for ch in self.children)

    # -- activations

    def rope_table(self) -> tuple[int, float] | None:
        """The children's one rotary table (``parse`` rejects two different ones)."""
        return next((t for t in (ch.rope_table() for ch in self.children) if t is not None), None)

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """The build runs the children one after the other (``ParallelMixer``), so the peak is the largest
        child's, plus what stays alive beside it: the normed input itself when the child reads a scaled
        copy (``in_multipliers`` != 1), and the running sum of the earlier children's outputs (scaled and
        summed in place). After each child: the input, the running sum and the child's output."""
        th = a * batch * seq * hidden
        peaks = [
            ch.prefill_peak_bytes(hidden, batch, seq, a, flash) + th * (m != 1.0) + th * (i > 0)
            for i, (ch, m) in enumerate(zip(self.children, self.in_multipliers, strict=True))
        ]
        return max(*peaks, 3 * th)

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """The children's, with the shared norm's input and output counted once (each child counts them:
        2 x hidden), plus the scaled copy a child with an input multiplier saves for its projections."""
        el = fp32 = 0
        for ch, m in zip(self.children, self.in_multipliers, strict=True):
            e, f = ch.train_saved(hidden, seq, w)
            el, fp32 = el + e + (hidden if m != 1.0 else 0), fp32 + f
        return el - 2 * hidden * (len(self.children) - 1), fp32

    def fused_on_cpu(self) -> bool:
        return all(ch.fused_on_cpu() for ch in self.children)


def _multipliers(c: Checker, d: dict[str, Any], key: str, p: KeyPath, n: int) -> tuple[float, ...]:
    """One float per child (default all 1.0)."""
    raw = d.get(key)
    if raw is None:
        return (1.0,) * n
    ok = isinstance(raw, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)
    if not ok or len(raw) != n:
        c.err((*p, key), f"expected a list of {n} numbers, one per mixer in 'of'")
        return (1.0,) * n
    return tuple(float(v) for v in raw)
