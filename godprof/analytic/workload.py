"""A workload: what the model is asked to do. Not part of a spec (the same spec serves many workloads)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from godprof.checker import MAX_SIZE, MAX_TOKENS
from godprof.dtypes import DType, get_dtype

Mode = Literal["inference", "train"]
Optimizer = Literal["adamw", "adamw8bit", "sgd"]
Recompute = Literal["none", "selective", "full"]
AttentionFlops = Literal["causal", "full"]
Logits = Literal["all", "last"]

MODES = ("inference", "train")
OPTIMIZERS = ("adamw", "adamw8bit", "sgd")
RECOMPUTES = ("none", "selective", "full")
ATTENTION_FLOPS = ("causal", "full")
LOGITS = ("all", "last")


@dataclass(frozen=True)
class Workload:
    """Batch and lengths, dtypes and training choices.

    ``seq`` is the prefill (or training) sequence length; ``context`` the number of tokens held in the
    KV cache for decode and for cache memory (defaults to ``seq``); both go up to
    ``godprof.checker.MAX_TOKENS`` (2^40), ``batch`` and ``group_size`` to ``MAX_SIZE`` (2^31 - 1).
    ``dtype`` is the weight format; activations run in it when it is a float format of 16 or 32 bits and
    in bf16 otherwise. ``kv_dtype``
    (KV cache and SSM state) defaults to the activation dtype.
    """

    batch: int = 1
    seq: int = 2048
    context: int | None = None
    dtype: str = "bf16"
    kv_dtype: str | None = None
    mode: Mode = "inference"
    optimizer: Optimizer = "adamw"
    recompute: Recompute = "none"
    flash_attention: bool = True
    attention_flops: AttentionFlops = "causal"
    logits: Logits = "all"
    group_size: int = 128  # int8/int4 quantisation group along each matrix's input dimension

    def __post_init__(self) -> None:
        for name, most in (("batch", MAX_SIZE), ("seq", MAX_TOKENS), ("context", MAX_TOKENS),
                           ("group_size", MAX_SIZE)):  # fmt: skip
            v = getattr(self, name)
            if v is None and name == "context":
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name} must be an integer, got {v!r}")
            if not 1 <= v <= most:
                raise ValueError(f"{name} must be from 1 to {most:,}, got {v:,}")
        for name, allowed in (
            ("mode", MODES),
            ("optimizer", OPTIMIZERS),
            ("recompute", RECOMPUTES),
            ("attention_flops", ATTENTION_FLOPS),
            ("logits", LOGITS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        get_dtype(self.dtype)
        if self.kv_dtype is not None:
            get_dtype(self.kv_dtype)

    @property
    def ctx(self) -> int:
        return self.context if self.context is not None else self.seq

    @property
    def weight_dtype(self) -> DType:
        return get_dtype(self.dtype)

    @property
    def act_dtype(self) -> DType:
        w = self.weight_dtype
        return w if w.name in ("fp32", "bf16", "fp16") else get_dtype("bf16")

    @property
    def cache_dtype(self) -> DType:
        return get_dtype(self.kv_dtype) if self.kv_dtype else self.act_dtype

    def to_dict(self) -> dict:
        d = asdict(self)
        d["context"] = self.ctx
        d["dtype"] = self.weight_dtype.name
        d["kv_dtype"] = self.cache_dtype.name
        d["act_dtype"] = self.act_dtype.name
        return d
