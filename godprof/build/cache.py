"""Static, preallocated inference cache: KV tensors for attention layers, conv + SSM state for SSM layers."""

from __future__ import annotations

import torch


class Cache:
    """Per-layer cache tensors allocated once by ``Model.allocate_cache``; ``pos`` tokens are filled.

    Layer i's entry is the list of tensors its mixer's ``allocate`` made (K and V, a latent buffer, a
    conv window and a recurrent state...), or None for a layer without state. ``nbytes()`` is exactly
    ``memory.kv_cache_bytes + memory.ssm_state_bytes`` for the same batch, max_len and dtype.
    """

    def __init__(self, layers: list[list[torch.Tensor] | None], batch: int, max_len: int, dtype: torch.dtype):
        self.layers = layers
        self.batch = batch
        self.max_len = max_len
        self.dtype = dtype
        self.pos = 0

    def nbytes(self) -> int:
        """Bytes of every cache tensor (the position counter is a Python int and costs nothing)."""
        return sum(t.numel() * t.element_size() for st in self.layers if st for t in st)

    def reset(self) -> None:
        """Start a new sequence in the same storage. Stale contents are never read: attention reads only
        slots below ``pos`` and SSM layers start from a zero state when ``pos`` is 0."""
        self.pos = 0

    def layer_state(self, i: int, batch: int) -> list[torch.Tensor] | None:
        """Layer i's tensors for the first ``batch`` sequences (views; writes go to the cache)."""
        st = self.layers[i]
        if st is None:
            return None
        return st if batch == self.batch else [t[:batch] for t in st]

    def __repr__(self) -> str:
        return (
            f"Cache(batch={self.batch}, max_len={self.max_len}, dtype={self.dtype}, pos={self.pos}, "
            f"nbytes={self.nbytes()})"
        )
