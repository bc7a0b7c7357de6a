"""Layer truncation: a spec cut to N of its L layers with every layer kind kept in proportion, and the
arithmetic that carries a truncated measurement back to the full depth. Pure Python; never imports torch.

A model too large for one device is measured as a shorter copy of itself (``godprof measure --layers N``).
The truncated spec is the same spec (embeddings, head, norms, every mixer and FFN definition) with fewer
layers: each layer kind, a (mixer, FFN) pair of the layout, keeps ``round(N x c_k / L)`` of its ``c_k``
layers (largest remainders, at least one per kind, so every kind is measured), taken evenly from where
they sit in the full stack and kept in their original order (a Jamba period stays interleaved).

Extrapolation (``extrapolate``): a phase's time over the layers is the truncated model's time less the
time of the same model with no layers at all (embeddings, final norm, lm_head, launches outside the
blocks: measured too, ``layers=0``). That layer time is scaled per layer kind by the analytic cost of
the phase, ``(X(L) - X(0)) / (X(N) - X(0))``, where X is the phase's analytic cost (decode: the roofline's
bytes one step moves, ``roofline.decode_bytes``; prefill: ``roofline.prefill_flops``). With one layer
kind that ratio is exactly L / N, whatever X is; with several it weighs each kind by its analytic cost,
which assumes the kinds run at the same fraction of their roofline. Counted FLOPs need no such
assumption: each layer kind's counted FLOPs are multiplied by c_k / n_k (``extrapolate_by_kind``).

Left out: the layers' interaction with depth-dependent constants (lightning attention's decay rates are
placed for the truncated depth; their cost does not depend on it), and MTP modules (not built by measure).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from fractions import Fraction

from godprof.errors import GodprofError
from godprof.spec import Spec

LayerKey = tuple[str, str]  # (mixer name, ffn name) in the spec: one layer kind


class TruncationError(GodprofError):
    """A truncation that cannot keep every layer kind (too few layers asked for, or too many)."""


def layer_kinds(spec: Spec) -> Counter[LayerKey]:
    """How many layers of each (mixer, FFN) pair the spec's layout has, in order of first appearance."""
    return Counter(zip(spec.layer_mixers, spec.layer_ffns, strict=True))


def kept_per_kind(full: Counter[LayerKey], layers: int) -> dict[LayerKey, int]:
    """Layers each kind keeps in a truncation to ``layers``: the largest-remainder apportionment of
    ``layers`` over the kinds' counts, with at least one layer per kind (Hamilton's method)."""
    total = sum(full.values())
    if layers < len(full):
        raise TruncationError(f"--layers {layers} cannot keep the spec's {len(full)} layer kinds; "
                              f"give at least {len(full)}")  # fmt: skip
    if layers > total:
        raise TruncationError(f"--layers {layers} exceeds the spec's {total} layers")
    quota = {k: Fraction(c * layers, total) for k, c in full.items()}
    kept = {k: max(1, math.floor(q)) for k, q in quota.items()}
    # hand out what is left by largest remainder; take back (from the largest surplus) what min-1 overspent
    while sum(kept.values()) < layers:
        k = max(kept, key=lambda k: (quota[k] - kept[k], full[k]))
        kept[k] += 1
    while sum(kept.values()) > layers:
        k = max((k for k in kept if kept[k] > 1), key=lambda k: (kept[k] - quota[k], kept[k]))
        kept[k] -= 1
    return kept


@dataclass(frozen=True)
class Truncation:
    """A full spec, its truncated copy and which full-depth layers the copy keeps."""

    full: Spec
    truncated: Spec
    kept_layers: tuple[int, ...]  # indices into the full spec's layers, ascending
    full_counts: dict[LayerKey, int]
    kept_counts: dict[LayerKey, int]

    @property
    def layers(self) -> int:
        return len(self.kept_layers)

    @property
    def full_layers(self) -> int:
        return self.full.model.num_layers

    @property
    def note(self) -> str:
        return f"extrapolated from {self.layers} of {self.full_layers} layers"

    def scale(self, key: LayerKey) -> Fraction:
        """Full layers per kept layer of one kind, c_k / n_k."""
        return Fraction(self.full_counts[key], self.kept_counts[key])

    def to_dict(self) -> dict:
        return {
            "layers": self.layers,
            "of": self.full_layers,
            "kept_layers": list(self.kept_layers),
            "kinds": [
                {"mixer": m, "ffn": f, "layers": self.full_counts[(m, f)], "kept": self.kept_counts[(m, f)]}
                for (m, f) in self.full_counts
            ],
        }


def with_layers(spec: Spec, indices: tuple[int, ...], name: str | None = None) -> Spec:
    """``spec`` keeping only the layers at ``indices`` (in that order); published figures dropped."""
    return replace(
        spec,
        name=name or spec.name,
        model=replace(spec.model, num_layers=len(indices)),
        layer_mixers=tuple(spec.layer_mixers[i] for i in indices),
        layer_ffns=tuple(spec.layer_ffns[i] for i in indices),
        published=None,
    )


def truncate(spec: Spec, layers: int) -> Truncation:
    """``spec`` cut to ``layers`` layers, every layer kind kept in proportion (module docstring)."""
    full = layer_kinds(spec)
    kept = kept_per_kind(full, layers)
    where: dict[LayerKey, list[int]] = {k: [] for k in full}
    for i, key in enumerate(zip(spec.layer_mixers, spec.layer_ffns, strict=True)):
        where[key].append(i)
    chosen: list[int] = []
    for key, idx in where.items():
        c, n = len(idx), kept[key]
        chosen += [idx[(2 * j + 1) * c // (2 * n)] for j in range(n)]  # the middles of n equal runs
    indices = tuple(sorted(chosen))
    name = f"{spec.name} ({layers} of {spec.model.num_layers} layers)"
    return Truncation(spec, with_layers(spec, indices, name), indices, dict(full), kept)


def no_layers(spec: Spec) -> Spec:
    """The spec with no layers at all: embeddings, final norm and lm_head (the base of an extrapolation)."""
    return with_layers(spec, (), f"{spec.name} (no layers)")


def extrapolate(measured: float, measured_base: float, cost_full: float, cost_trunc: float, cost_base: float) -> float:
    """A phase's full-depth figure from the truncated (``measured``) and no-layer (``measured_base``)
    models: base + (measured - base) x (X(L) - X(0)) / (X(N) - X(0)), X the phase's analytic cost.

    When the layers' share is not above the noise (``measured <= measured_base``, possible for layers far
    cheaper than the embeddings and head) it falls back to scaling the whole figure, measured x X(L) / X(N).
    """
    layer_cost = cost_trunc - cost_base
    if layer_cost <= 0:
        return measured
    if measured <= measured_base:
        return measured * cost_full / cost_trunc if cost_trunc > 0 else measured
    return measured_base + (measured - measured_base) * (cost_full - cost_base) / layer_cost


def extrapolate_by_kind(t: Truncation, per_component: dict[str, int], outside: int) -> Fraction:
    """Full-depth total of a per-layer figure counted on the truncated model: ``per_component`` maps
    ``mixer:<name>`` / ``ffn:<name>`` to the sum over its kept layers (the FLOP counters' components),
    ``outside`` is what lies outside the layers (lm_head). Each kept layer of kind k stands for c_k / n_k
    layers; a mixer or FFN shared by several kinds takes each kind's share by its layer count."""
    total = Fraction(outside)
    for comp, value in per_component.items():
        side, _, name = comp.partition(":")
        if side not in ("mixer", "ffn"):
            total += value
            continue
        pos = 0 if side == "mixer" else 1
        kinds = [k for k in t.kept_counts if k[pos] == name]
        kept = sum(t.kept_counts[k] for k in kinds)
        full = sum(t.full_counts[k] for k in kinds)
        total += Fraction(value * full, kept) if kept else 0
    return total
