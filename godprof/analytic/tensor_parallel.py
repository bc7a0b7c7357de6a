"""What one tensor-parallel rank holds, as a spec of its own. Pure Python; never imports torch.

``rank_spec(spec, tp)`` is the spec one of ``tp`` ranks builds (``godprof measure --tp``): every mixer and
FFN replaced by its rank share (``MixerKind.tp_rank`` / ``FfnKind.tp_rank``: heads, KV heads or the
intermediate width split, Megatron-LM's column/row-parallel pairs) and the vocabulary split for the
vocab-parallel embedding and lm_head. Norms, position embeddings and the row-parallel layers' biases are
replicated, as Megatron-LM keeps them, and so are an MoE's router and shared-expert gate (every rank
routes alike; its experts are split inside, each at 1/tp of its width), so
``count_params(rank_spec(spec, tp))`` is the exact per-rank parameter count; the capacity plan
(``godprof.plan.layout.stage_shares``) counts those replicated tensors as split, which makes it smaller
by (tp - 1) / tp of them.

Its cache under ``estimate`` is one rank's: KV heads split until tp exceeds them, then one replicated KV
head per rank, which is ``MixerKind.kv_tp_fraction``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from godprof.errors import GodprofError
from godprof.spec import Spec


class TensorParallelError(GodprofError):
    """The spec cannot be split ``tp`` ways by the tensor-parallel build."""


def rank_spec(spec: Spec, tp: int) -> Spec:
    """The spec one of ``tp`` ranks builds (module docstring). Raises TensorParallelError naming the
    mixer or FFN that cannot be split, or the vocabulary that does not divide."""
    if tp < 1:
        raise TensorParallelError(f"--tp must be >= 1, got {tp}")
    if tp == 1:
        return spec
    used_mixers, used_ffns = set(spec.layer_mixers), set(spec.layer_ffns)
    mixers = _split(spec, spec.mixers, used_mixers, "mixer", tp)
    ffns = _split(spec, spec.ffns, used_ffns, "ffn", tp)
    vocab = spec.model.vocab_size
    if vocab % tp:
        raise TensorParallelError(f"{spec.name}: vocab_size {vocab} does not split {tp} ways (vocab-parallel "
                                  "embedding and lm_head)")  # fmt: skip
    return replace(
        spec,
        name=f"{spec.name} (tp rank of {tp})",
        model=replace(spec.model, vocab_size=vocab // tp),
        mixers=mixers,
        ffns=ffns,
        published=None,
        mtp=None,
    )


def allreduces_per_forward(spec: Spec) -> int:
    """All-reduces one forward makes: one after each split mixer and each FFN (Megatron-LM's two per
    block), plus one for the vocab-parallel embedding (the lm_head's logits are gathered, not reduced)."""
    return sum((not lay.mixer.passthrough) + (lay.ffn is not None) for lay in spec.layers()) + 1


def _split(spec: Spec, table: dict[str, Any], used: set[str], what: str, tp: int) -> dict[str, Any]:
    """One rank's share of each mixer or FFN the layers use (unused, passthrough and empty entries kept)."""
    out = {}
    for name, k in table.items():
        if name not in used or k is None or getattr(k, "passthrough", False):
            out[name] = k
            continue
        try:
            out[name] = k.tp_rank(tp)
        except ValueError as e:
            raise TensorParallelError(
                f"{spec.name}: {what} '{name}' (type {k.type}) cannot split {tp} ways: {e}"
            ) from None
    return out
