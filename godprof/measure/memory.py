"""Memory measurement: exact tensor bytes on CPU (a dispatch-mode tracker) and allocator stats on CUDA.

CPU: ``LiveTensorBytes`` is a ``TorchDispatchMode`` that sees every tensor an aten op returns. A
result whose storage is not one of the op's inputs' storages is a fresh allocation: its storage
bytes are added to a live total, and a weak reference on the storage subtracts them when the storage
is freed (the approach of torch's own ``torch.distributed._tools.mem_tracker``). Views and in-place
results share an input's storage and are not counted twice; tensors that existed before the mode
was entered (parameters, the preallocated cache, the input ids) are not counted at all. ``peak_bytes``
is therefore the peak of *transient* tensor bytes (activations, logits, temporaries) during the
traced region, exact to the byte. Not seen: allocator caching and fragmentation, memory that kernels
allocate outside aten tensors (oneDNN scratch), Python objects.

CUDA: ``cuda_phase`` reads ``torch.cuda.memory_stats`` (current and peak allocated and reserved,
requested, alloc retries, OOMs) after resetting the peaks for a phase, as torchtitan's memory monitor
does. Requested bytes are what the tensors asked for, exact to the byte like the CPU tracker;
allocated bytes are rounded up to the allocator's 512 B blocks. ``cublas_workspace_bytes`` creates
the persistent cuBLAS / cuBLASLt workspace before the baseline is read, so it is reported as its own
row instead of landing in the first prefill's activations; ``cuda_context_bytes`` is what the device
has in use beyond torch's reserved pool (the CUDA context and kernel images, plus any other process).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _storages(tree: Any) -> list[torch.UntypedStorage]:
    out = []
    for x in tree_flatten(tree)[0]:
        if isinstance(x, torch.Tensor) and x.device.type != "meta":
            out.append(x.untyped_storage())
    return out


class LiveTensorBytes(TorchDispatchMode):
    """Current and peak bytes of tensor storages allocated while the mode is active (see module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}  # storage impl address -> bytes
        self.current_bytes = 0
        self.peak_bytes = 0
        self.allocations = 0
        self._refs: dict[int, weakref.ref] = {}

    def _release(self, key: int) -> None:
        nbytes = self.live.pop(key, 0)
        self._refs.pop(key, None)
        self.current_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        kwargs = kwargs or {}
        inputs = {s._cdata for s in _storages((args, kwargs))}
        out = func(*args, **kwargs)
        for st in _storages(out):
            key = st._cdata
            if key in inputs or key in self.live:
                continue
            nbytes = st.nbytes()
            self.live[key] = nbytes
            self._refs[key] = weakref.ref(st, lambda _r, k=key: self._release(k))
            self.allocations += 1
            self.current_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        return out


def fused_attention(spec: Any, device: torch.device | str) -> bool:
    """Whether ``scaled_dot_product_attention`` runs a fused kernel (no seq x seq scores in memory) for
    every attention layer of ``spec`` on ``device``: the workload's ``flash_attention`` for the estimate.

    CUDA: yes (flash or memory-efficient kernels; the latter takes a v head dim different from q/k's).
    CPU: each mixer kind says (``MixerKind.fused_on_cpu``); the flash kernel needs equal q/k and v head
    dims, so a latent attention with v 128 and q/k 192 (DeepSeek) runs the math kernel, which
    materialises the scores in fp32.
    """
    if torch.device(device).type != "cpu":
        return True
    return all(m.fused_on_cpu() for m in spec.mixers.values())


def tensor_bytes(tensors: Any) -> int:
    """Bytes of the distinct storages behind ``tensors`` (an iterable or pytree), each counted once."""
    seen: dict[int, int] = {}
    for st in _storages(list(tensors) if not isinstance(tensors, torch.Tensor) else tensors):
        seen[st._cdata] = st.nbytes()
    return sum(seen.values())


def module_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """(parameter bytes, buffer bytes) of a module, each storage counted once (tied weights once)."""
    return tensor_bytes(model.parameters()), tensor_bytes(model.buffers())


@dataclass(frozen=True)
class CudaPhase:
    """torch allocator figures for one phase (bytes): at its end, and peaks since the phase began."""

    allocated_bytes: int
    reserved_bytes: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    alloc_retries: int
    ooms: int
    requested_bytes: int = 0  # what tensors asked for (exact); allocated rounds up to 512 B blocks
    peak_requested_bytes: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def cuda_reset_peaks(device: torch.device) -> None:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)


def cuda_phase(device: torch.device) -> CudaPhase:
    """Allocator stats now; peaks are since the last ``cuda_reset_peaks`` (or process start)."""
    torch.cuda.synchronize(device)
    s = torch.cuda.memory_stats(device)
    return CudaPhase(
        allocated_bytes=int(s.get("allocated_bytes.all.current", 0)),
        reserved_bytes=int(s.get("reserved_bytes.all.current", 0)),
        peak_allocated_bytes=int(s.get("allocated_bytes.all.peak", 0)),
        peak_reserved_bytes=int(s.get("reserved_bytes.all.peak", 0)),
        alloc_retries=int(s.get("num_alloc_retries", 0)),
        ooms=int(s.get("num_ooms", 0)),
        requested_bytes=int(s.get("requested_bytes.all.current", 0)),
        peak_requested_bytes=int(s.get("requested_bytes.all.peak", 0)),
    )


def cublas_workspace_bytes(device: torch.device, dtype: torch.dtype) -> int:
    """Create the cuBLAS and cuBLASLt workspaces of this device's current stream now, and return the bytes
    they added to the allocator (0 when they already existed).

    PyTorch allocates a persistent workspace (32 MiB on Hopper) through the caching allocator on the
    first matmul of each cuBLAS handle and stream, and never frees it. Without this call it is booked
    into whichever phase runs the first matmul (the first prefill's activations in a fresh process,
    nothing in later ones). One product without a bias (cuBLAS) and one with (cuBLASLt's fused
    epilogue) in the model's dtype reach both; their operands are freed before the second reading.
    """
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    a = torch.ones(16, 16, device=device, dtype=dtype)
    b = torch.ones(16, device=device, dtype=dtype)
    torch.nn.functional.linear(a, a)
    torch.nn.functional.linear(a, a, b)
    torch.bmm(a[None], a[None])
    del a, b
    torch.cuda.synchronize(device)
    return int(torch.cuda.memory_allocated(device) - before)


def cuda_context_bytes(device: torch.device) -> int:
    """Device memory in use that torch's allocator has not reserved: the CUDA context, loaded kernel images
    and cuBLAS handles, plus whatever other processes hold (``mem_get_info`` is device-wide)."""
    free, total = torch.cuda.mem_get_info(device)
    return int(total - free - torch.cuda.memory_reserved(device))
