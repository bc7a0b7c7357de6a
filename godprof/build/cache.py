"""Static, preallocated inference cache: KV tensors for attention layers, conv + SSM state for SSM layers."""

from __future__ import annotations

import torch


class Cache:
    """Per-layer cache tensors allocated once by ``Model.allocate_cache``; ``pos`` tokens are filled.

    Layer i's entry is the list of tensors its mixer's ``allocate`` made (K and V, a latent buffer, a
    conv window and a recurrent state...), or None for a layer without state. ``nbytes()`` is exactly
    ``memory.kv_cache_bytes + memory.ssm_state_bytes`` for the same batch, max_len and dtype.

    The position lives twice: ``pos``, a Python int the eager forward slices with, and ``device_pos()``,
    a 0-d int64 tensor on the cache's device that a static-shape decode step (``Model.decode_static``)
    reads and advances without a host sync or a shape that changes, so ``torch.compile`` can capture
    the step once (as one CUDA graph). Setting ``pos`` marks the device copy stale; ``device_pos()``
    refreshes it (one fill) before the next static step.
    """

    def __init__(
        self,
        layers: list[list[torch.Tensor] | None],
        batch: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device | str | None = None,
    ):
        self.layers = layers
        self.batch = batch
        self.max_len = max_len
        self.dtype = dtype
        if device is None:
            device = next((t.device for st in layers if st for t in st), torch.device("cpu"))
        self._pos = 0
        self._pos_t = torch.zeros((), dtype=torch.long, device=device)  # the device copy of pos
        self._pos_t_stale = False

    @property
    def pos(self) -> int:
        return self._pos

    @pos.setter
    def pos(self, value: int) -> None:
        self._pos = int(value)
        self._pos_t_stale = True

    def device_pos(self) -> torch.Tensor:
        """The position as a 0-d int64 tensor on the cache's device (refreshed from ``pos`` if stale)."""
        if self._pos_t_stale:
            self._pos_t.fill_(self._pos)
            self._pos_t_stale = False
        return self._pos_t

    def advanced_on_device(self, n: int) -> None:
        """Record that a static step advanced ``device_pos()`` by ``n`` itself (keeps both in step)."""
        self._pos += n

    def nbytes(self) -> int:
        """Bytes of every cache tensor (the positions, an int and one 8-byte scalar, are not counted)."""
        return sum(t.numel() * t.element_size() for st in self.layers if st for t in st)

    def reset(self) -> None:
        """Start a new sequence in the same storage. Stale contents are never read: attention reads only
        slots below ``pos`` (a static step masks the rest) and SSM layers start from a zero state when
        ``pos`` is 0."""
        self.pos = 0

    def rewind(self, pos: int) -> None:
        """Go back to ``pos`` tokens (0 <= pos <= max_len): later steps overwrite the slots after it.

        Decoding again from the same position costs what it cost the first time (same shapes, same
        cache reads), which is how an energy window repeats decode steps without re-running a prefill.
        Attention caches read only slots below the position, so the rewind is exact for them; a
        recurrent state (SSM, linear attention) is not rolled back, which changes its values but not
        the work a step does.
        """
        if not 0 <= pos <= self.max_len:
            raise ValueError(f"cannot rewind to {pos}: the cache holds 0..{self.max_len} tokens")
        self.pos = pos

    def tensors(self) -> list[torch.Tensor]:
        """Every cache tensor, and the device position (what a compiled step reads and writes)."""
        return [t for st in self.layers if st for t in st] + [self._pos_t]

    def mark_static(self) -> None:
        """Tell torch.compile the cache tensors keep their addresses (``torch._dynamo.mark_static_address``),
        so a ``mode="reduce-overhead"`` CUDA graph may write into them in place."""
        import torch._dynamo

        for t in self.tensors():
            torch._dynamo.mark_static_address(t)

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
