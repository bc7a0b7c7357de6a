"""The one inference memory model that ``estimate``, ``compare``, ``sweep`` and ``plan`` share.

What a GPU holds to serve ``batch`` sequences whose prompts are ``seq`` tokens and whose caches hold
``context`` tokens (bytes; ``memory_record`` gives the keys every report prints):

- weights (``memory.weights_bytes`` / ``weights_by_format``), exact;
- KV cache at ``context`` and SSM state (``memory.kv_cache_bytes``, ``memory.ssm_state_bytes``), exact;
- activations of ONE prefill pass (``prefill_pass``): servers prefill in chunks of at most
  ``prefill_chunk_tokens`` tokens while the other sequences' caches sit in memory (vLLM's chunked
  prefill: the per-step token budget ``max_num_batched_tokens``, 8,192 by default for its OpenAI
  server on data-centre GPUs, https://docs.vllm.ai/en/stable/configuration/optimization/). A pass
  holds whole prompts while they fit in the chunk, else the first chunk of one prompt. Logits for the
  last position only unless asked (``logits="all"``): a server samples one token per sequence.
  ``memory.inference_activation_bytes`` models the pass (flash attention unless told otherwise).
  ``prefill_chunk_tokens=None`` prefills all ``batch x seq`` tokens at once (no chunking);
- runtime overheads per GPU (``RuntimeOverheads``), outside the model's tensors: the CUDA context,
  library workspaces, and communication buffers when the GPU talks to peers (tp, pp or ep > 1). A GPU
  file may state its own (``runtime_overhead_mib``); else ``DEFAULT_OVERHEADS``;
- and beside them a flat ``headroom`` fraction of the card kept free for allocator fragmentation and
  what the overheads leave out (default 10%: vLLM's ``gpu_memory_utilization=0.9``).

A configuration fits a GPU when weights + KV + state + activations + overheads <= memory x (1 -
headroom); ``fit_record`` says so and how much is left free. Left out: CUDA graphs' private pools,
the decode step's activations (smaller than a prefill chunk's), speculative-decoding drafts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from godprof.analytic import memory as M
from godprof.analytic.workload import Workload
from godprof.dtypes import DType

if TYPE_CHECKING:
    from godprof.gpus import GPU
    from godprof.spec import Spec

MIB = 1 << 20
PREFILL_CHUNK_TOKENS = 8192  # vLLM's default max_num_batched_tokens with chunked prefill (see above)
DEFAULT_HEADROOM = 0.1  # vLLM's default gpu_memory_utilization = 0.9


@dataclass(frozen=True)
class RuntimeOverheads:
    """Bytes a serving process holds on each GPU beside the model's tensors.

    Defaults (``DEFAULT_OVERHEADS``), each with its source:
    - cuda_context_bytes 768 MiB: the CUDA context (module images, cuDNN/cuBLAS handles) that appears on
      the first CUDA call; PyTorch users measure ~700-800 MiB on data-centre cards
      (https://discuss.pytorch.org/t/high-gpu-memory-overhead/81330, .../t/73021: 723 MiB);
    - workspace_bytes 256 MiB: library workspaces: cuBLAS/cuBLASLt (32 MiB per handle on Hopper in
      PyTorch; CUBLAS_WORKSPACE_CONFIG, https://docs.pytorch.org/docs/stable/notes/randomness.html),
      attention and sampler scratch, for a few streams;
    - comm_buffer_bytes 512 MiB, only on a GPU with peers: NCCL's staging buffers, NCCL_BUFFSIZE = 4 MiB
      per channel per peer and direction (https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/env.html)
      x 32 channels x 2 directions x 2 ring neighbours.
    """

    cuda_context_bytes: int = 768 * MIB
    workspace_bytes: int = 256 * MIB
    comm_buffer_bytes: int = 512 * MIB
    source: str = "godprof defaults (godprof.analytic.inference_memory.RuntimeOverheads)"

    def total_bytes(self, peers: bool) -> int:
        """Context + workspaces, plus communication buffers when the GPU exchanges data with others."""
        return self.cuda_context_bytes + self.workspace_bytes + (self.comm_buffer_bytes if peers else 0)


DEFAULT_OVERHEADS = RuntimeOverheads()


def overheads_for(gpu: GPU | None) -> RuntimeOverheads:
    """The GPU file's ``runtime_overhead_mib`` when it states one, else ``DEFAULT_OVERHEADS``."""
    own = getattr(gpu, "runtime_overhead", None) if gpu is not None else None
    if not own:
        return DEFAULT_OVERHEADS
    return RuntimeOverheads(own["cuda_context_bytes"], own["workspace_bytes"], own["comm_buffer_bytes"],
                            f"{gpu.key}: {own['source']}")  # fmt: skip


@dataclass(frozen=True)
class MemoryModel:
    """The shared choices: prefill chunk (None: no chunking), logits kept, headroom kept free."""

    prefill_chunk_tokens: int | None = PREFILL_CHUNK_TOKENS
    logits: str = "last"
    headroom: float = DEFAULT_HEADROOM

    def __post_init__(self) -> None:
        if self.prefill_chunk_tokens is not None and self.prefill_chunk_tokens < 1:
            raise ValueError(f"--prefill-chunk must be positive (or 0 for none), got {self.prefill_chunk_tokens}")
        if self.logits not in ("all", "last"):
            raise ValueError(f"--logits must be all or last, got {self.logits!r}")
        if not 0 <= self.headroom < 1:
            raise ValueError(f"--headroom must be in [0, 1), got {self.headroom}")

    def describe(self) -> str:
        chunk = "no chunking" if self.prefill_chunk_tokens is None else f"chunk {self.prefill_chunk_tokens:,} tokens"
        return f"prefill {chunk}, {self.logits}-position logits, {self.headroom:.0%} headroom"


DEFAULT_MODEL = MemoryModel()


def prefill_pass(batch: int, seq: int, chunk: int | None) -> tuple[int, int]:
    """(sequences, tokens each) of the largest prefill pass: whole prompts while ``sequences x seq``
    fits the chunk, else the first ``chunk`` tokens of one prompt. ``chunk=None``: all of them."""
    if chunk is None:
        return batch, seq
    if seq >= chunk:
        return 1, chunk
    return max(1, min(batch, chunk // seq)), seq


def activation_bytes(
    spec: Spec, batch: int, seq: int, dtype: str = "bf16", model: MemoryModel = DEFAULT_MODEL, flash: bool = True
) -> int:
    """Activations of the largest prefill pass (``prefill_pass``) with ``model.logits``, in the
    activation dtype of weights stored in ``dtype`` (``memory.inference_activation_bytes``)."""
    b, s = prefill_pass(batch, seq, model.prefill_chunk_tokens)
    w = Workload(batch=b, seq=s, dtype=dtype, logits=model.logits, flash_attention=flash)
    return M.inference_activation_bytes(spec, w)


def memory_record(
    weights_bytes: int, kv_cache_bytes: int, ssm_state_bytes: int, activations_bytes: int,
    kv_bytes_per_token: int, gradients_bytes: int = 0, optimizer_bytes: int = 0,
) -> dict[str, int]:  # fmt: skip
    """The memory keys every command reports, in one order (estimate's and compare's JSON share them)."""
    total = weights_bytes + kv_cache_bytes + ssm_state_bytes + activations_bytes + gradients_bytes + optimizer_bytes
    return {
        "weights_bytes": weights_bytes,
        "kv_cache_bytes": kv_cache_bytes,
        "ssm_state_bytes": ssm_state_bytes,
        "activations_bytes": activations_bytes,
        "gradients_bytes": gradients_bytes,
        "optimizer_bytes": optimizer_bytes,
        "total_bytes": total,
        "kv_bytes_per_token": kv_bytes_per_token,
    }


def inference_memory(
    spec: Spec, weights_bytes: int, batch: int, seq: int, context: int, dtype: str = "bf16",
    cache_dtype: DType | None = None, model: MemoryModel = DEFAULT_MODEL, flash: bool = True,
) -> dict[str, int]:  # fmt: skip
    """``memory_record`` of ``batch`` sequences (``seq``-token prompts, ``context`` tokens cached)."""
    cd = cache_dtype or Workload(dtype=dtype).cache_dtype
    return memory_record(
        weights_bytes,
        M.kv_cache_bytes(spec, batch, context, cd),
        M.ssm_state_bytes(spec, batch, cd),
        activation_bytes(spec, batch, seq, dtype, model, flash),
        M.kv_bytes_per_token(spec, cd),
    )


def usable_bytes(gpu: GPU, model: MemoryModel = DEFAULT_MODEL, peers: bool = False) -> int:
    """What the model's tensors may use on one GPU: memory x (1 - headroom) - runtime overheads."""
    return int(gpu.memory_bytes * (1 - model.headroom)) - overheads_for(gpu).total_bytes(peers)


def fit_record(gpu: GPU, total_bytes: int, model: MemoryModel = DEFAULT_MODEL, peers: bool = False) -> dict[str, Any]:
    """Whether ``total_bytes`` of tensors fit one GPU under ``model``, and how much stays free."""
    over = overheads_for(gpu)
    overhead = over.total_bytes(peers)
    usable = usable_bytes(gpu, model, peers)
    return {
        "gpu": gpu.key,
        "gpu_memory_bytes": gpu.memory_bytes,
        "headroom": model.headroom,
        "runtime_overhead_bytes": overhead,
        "runtime_overhead_source": over.source,
        "usable_bytes": usable,
        "needed_bytes": total_bytes + overhead,
        "free_bytes": usable - total_bytes,
        "fits": total_bytes <= usable,
    }
