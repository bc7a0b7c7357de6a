"""``type: none`` mixer: a token-mixer slot that does nothing, for blocks that are only an FFN.

Nemotron-H's blocks are each one of Mamba-2, attention or MLP, each with one RMSNorm before it
(transformers ``models/nemotron_h/modeling_nemotron_h.py``, ``NemotronHBlock``). In godprof a layer is a
mixer and an FFN, so an MLP-only block is a ``none`` mixer with the MLP, and a Mamba-only block a Mamba-2
mixer with ``type: none`` FFN. The kind is ``passthrough``: the block skips it and its pre-norm, so the
layer is ``x + ffn(norm(x))`` with one norm. No parameters, no cache, no state, no FLOPs, nothing held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.base import MixerKind, Part

if TYPE_CHECKING:
    from godprof.analytic.workload import Workload


@dataclass(frozen=True)
class NoMixer(MixerKind):
    """A mixer slot left empty: the layer is its FFN alone."""

    type: ClassVar[str] = "none"
    category: ClassVar[str] = "none"  # neither attention nor a recurrent mixer: no say in the spec's family
    label: ClassVar[str] = "none"
    build: ClassVar[str] = "godprof.build.kinds.none_mixer:NoMixerModule"
    keys: ClassVar[frozenset[str]] = frozenset({"type"})
    passthrough: ClassVar[bool] = True

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> NoMixer:
        return cls()

    def params(self, hidden: int) -> Part:
        """Nothing: no weights, and the block adds no norm for it."""
        return Part()

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """Nothing is computed, so nothing is held (not even a normed input: the block skips the norm)."""
        return 0

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """Nothing is saved for backward."""
        return 0, 0
