"""Data types and their storage cost.

Sizes are exact storage per element. Sub-byte and 8-bit integer weight formats are stored in groups
along a matrix's input dimension, with one fp16 scale per group (GPTQ/AWQ-style symmetric
quantisation; a zero point would add another fp16 per group, which ``zero_point=True`` counts).
fp8 weights carry one fp32 scale per tensor (per-tensor scaling, as in Transformer Engine).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from godprof.errors import NotFoundError


@dataclass(frozen=True)
class DType:
    name: str
    bits: int
    quantized: bool = False  # integer formats that need per-group scales
    float8: bool = False

    def nbytes(self, elements: int) -> int:
        """Bytes for ``elements`` values, rounded up to a whole byte (int4 packs two per byte)."""
        return -((-elements * self.bits) // 8)


DTYPES: dict[str, DType] = {
    "fp32": DType("fp32", 32),
    "bf16": DType("bf16", 16),
    "fp16": DType("fp16", 16),
    "fp8": DType("fp8", 8, float8=True),
    "int8": DType("int8", 8, quantized=True),
    "int4": DType("int4", 4, quantized=True),
}

ALIASES = {
    "float32": "fp32",
    "float": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "fp8_e4m3": "fp8",
    "float8": "fp8",
    "e4m3": "fp8",
}

SCALE_BYTES = 2  # one fp16 scale per quantisation group
FP8_TENSOR_SCALE_BYTES = 4  # one fp32 scale per fp8 tensor


def get_dtype(name: str) -> DType:
    """Look up a dtype by name or alias; unknown names raise with the nearest names."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in DTYPES:
        return DTYPES[key]
    near = difflib.get_close_matches(key, [*DTYPES, *ALIASES], n=3)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    raise NotFoundError(f"unknown dtype {name!r}{hint}; known: {', '.join(DTYPES)}")
