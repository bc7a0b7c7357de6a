"""Data types and their storage cost, and the per-component weight formats a spec ships.

Sizes are exact storage per element. Sub-byte and 8-bit integer weight formats are stored in groups
along a matrix's input dimension, with one fp16 scale per group (GPTQ/AWQ-style symmetric
quantisation; a zero point would add another fp16 per group, which ``zero_point=True`` counts).
fp8 weights carry one fp32 scale per tensor (per-tensor scaling, as in Transformer Engine).

Block-scaled formats, as checkpoints ship them (``block_scaled_bytes``): each weight matrix
(``n_out`` rows of ``n_in`` inputs) is cut into blocks of ``rows x inputs`` elements along the
reduction (input) dimension, one scale per block; a partial block at the end of a row (or of the
rows) takes a whole scale, and elements are packed per row (two 4-bit values per byte).

- ``mxfp4``: OCP Microscaling Formats (MX) Specification v1.0 (2023), concrete format MXFP4: FP4
  E2M1 elements (4 bits) with one E8M0 (8-bit, power-of-two) shared scale per block of k = 32
  elements; 4.25 bits per weight.
  https://www.opencompute.org/documents/ocp-microscaling-formats-mx-v1-0-spec-final-pdf
  gpt-oss ships its MoE experts so (transformers ``integrations/mxfp4.py``: ``*_blocks`` uint8
  [experts, n_out, n_in / 32, 16], two E2M1 per byte, and ``*_scales`` uint8 [experts, n_out, n_in / 32]).
- ``nvfp4``: NVIDIA NVFP4 (Blackwell): E2M1 elements, one FP8 E4M3 scale per block of 16 elements,
  plus one fp32 scale per tensor (two-level scaling); 4.5 bits per weight plus 4 bytes per matrix.
  https://developer.nvidia.com/blog/introducing-nvfp4-for-efficient-and-accurate-low-precision-inference/
  Checkpoints: TensorRT Model Optimizer (``quant_method: modelopt``, ``quant_algo: NVFP4``) ships
  ``weight`` uint8 [n_out, n_in / 2], ``weight_scale`` float8_e4m3fn [n_out, n_in / 16] and
  ``weight_scale_2`` fp32 (one per tensor), as vLLM's ``ModelOptNvFp4LinearMethod`` loads them;
  compressed-tensors' ``nvfp4-pack-quantized`` the same as ``weight_packed``, ``weight_scale``,
  ``weight_global_scale``; transformers' ``integrations/nvfp4.py``: ``SF_VEC_SIZE = 16``. Their
  ``input_scale`` / ``input_global_scale`` (4 bytes per Linear) calibrates activations and is not a
  weight: not counted, as fp8's activation scales are not.
- ``fp8_block``: FP8 E4M3 with one fp32 scale per 128 x 128 block, as DeepSeek-V3 ships it
  (config.json ``quantization_config: {quant_method: fp8, weight_block_size: [128, 128]}``; each
  Linear has ``weight_scale_inv`` fp32 [ceil(n_out / 128), ceil(n_in / 128)]; transformers'
  ``FineGrainedFP8Config(weight_block_size=(128, 128))``).
  https://huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/config.json
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

from godprof.errors import NotFoundError


@dataclass(frozen=True)
class DType:
    name: str
    bits: int
    quantized: bool = False  # integer formats that need per-group scales
    float8: bool = False
    scale_block: tuple[int, int] | None = None  # (rows, inputs) of the block one scale covers
    scale_bytes: int = 0  # bytes of one block scale
    tensor_scale_bytes: int = 0  # bytes of the per-tensor scale of a block-scaled format
    note: str = ""  # what the format stores, for reports
    cache_scale: tuple[int, int] | None = None  # KV cache / state: (values per scale, bytes per scale)

    def nbytes(self, elements: int) -> int:
        """Bytes for ``elements`` values, rounded up to a whole byte (int4 packs two per byte)."""
        return -((-elements * self.bits) // 8)

    def cache_nbytes(self, elements: int) -> int:
        """Bytes of ``elements`` KV-cache (or recurrent-state) values in this format: the packed values plus,
        for the 4-bit formats, their scales (``cache_scale``; see ``CACHE_FORMATS``). 8- and 16-bit caches
        carry at most a per-tensor scale, not counted (as fp8 weights' activation scales are not)."""
        if self.cache_scale is None:
            return self.nbytes(elements)
        per, scale_bytes = self.cache_scale
        return self.nbytes(elements) + -(-elements // per) * scale_bytes

    @property
    def cache_bits(self) -> float:
        """Bits per cached value, scales included (``cache_nbytes`` without the rounding)."""
        if self.cache_scale is None:
            return float(self.bits)
        per, scale_bytes = self.cache_scale
        return self.bits + 8 * scale_bytes / per

    @property
    def is_float(self) -> bool:
        """fp32, bf16, fp16: every parameter can be stored in it (activations run in it)."""
        return self.name in FLOAT_FORMATS


FLOAT_FORMATS = ("fp32", "bf16", "fp16")

DTYPES: dict[str, DType] = {
    "fp32": DType("fp32", 32),
    "bf16": DType("bf16", 16),
    "fp16": DType("fp16", 16),
    "fp8": DType("fp8", 8, float8=True, note="E4M3, fp32 scale per tensor"),
    "fp8_block": DType(
        "fp8_block", 8, float8=True, scale_block=(128, 128), scale_bytes=4, note="E4M3, fp32 scale per 128x128"
    ),
    "int8": DType("int8", 8, quantized=True, note="fp16 scale per group"),
    "int4": DType("int4", 4, quantized=True, note="fp16 scale per group", cache_scale=(128, 4)),
    "mxfp4": DType("mxfp4", 4, scale_block=(1, 32), scale_bytes=1, note="E2M1, E8M0 scale per 32", cache_scale=(32, 1)),
    "nvfp4": DType(
        "nvfp4",
        4,
        scale_block=(1, 16),
        scale_bytes=1,
        tensor_scale_bytes=4,
        note="E2M1, E4M3 scale per 16 + fp32",
        cache_scale=(16, 1),
    ),
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
    "fp8-block": "fp8_block",
    "fp8_block128": "fp8_block",
    "mx_fp4": "mxfp4",
    "nv_fp4": "nvfp4",
    "fp4": "nvfp4",  # --kv-dtype fp4: the NVFP4 KV cache of TensorRT-LLM on Blackwell
}

# KV-cache formats (``--kv-dtype``), bytes per cached value (``DType.cache_nbytes``):
# fp32/bf16/fp16 4/2/2; fp8 and int8 1 (a per-tensor scale, not counted); 4-bit:
# - int4: 4 bits plus an fp16 scale and an fp16 zero point per 128 values: LMDeploy's online int4 KV cache
#   quantises each head of each token asymmetrically (head_dim 128 -> 4.25 bits per value;
#   https://lmdeploy.readthedocs.io/en/latest/quantization/kv_quant.html);
# - fp4 (= nvfp4): E2M1 values with one E4M3 scale per 16, 4.5 bits per value: TensorRT-LLM's NVFP4 KV cache
#   (https://developer.nvidia.com/blog/optimizing-inference-for-long-context-and-large-batch-sizes-with-nvfp4-kv-cache/);
# - mxfp4: E2M1 with one E8M0 scale per 32 (OCP MX), 4.25 bits per value.
CACHE_FORMATS = ("fp32", "bf16", "fp16", "fp8", "int8", "int4", "nvfp4", "mxfp4")

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


def block_scaled_bytes(dtype: DType, n_in: int, n_out: int) -> int:
    """Exact bytes of one ``n_out x n_in`` weight matrix in a block-scaled format (``dtype.scale_block``):
    the elements packed per row (``n_out x ceil(n_in x bits / 8)``), one ``scale_bytes`` scale per block
    of ``rows x inputs`` (``ceil(n_out / rows) x ceil(n_in / inputs)``: a partial block at the end of a
    row takes a whole scale), and the per-tensor scale. See the module docstring for each format's source.
    """
    assert dtype.scale_block is not None, dtype.name
    rows, inputs = dtype.scale_block
    data = n_out * -(-n_in * dtype.bits // 8)
    scales = -(-n_out // rows) * -(-n_in // inputs)
    return data + scales * dtype.scale_bytes + dtype.tensor_scale_bytes


@dataclass(frozen=True)
class WeightFormats:
    """Which format each parameter component ships in: a spec's ``weights:`` section.

    ``default`` is the format of every component the mapping does not name, with the meaning of
    ``--dtype``: a 16/32-bit float format stores everything; a quantised one stores the Linear weights
    of the layers and leaves embeddings, lm_head, norms, biases and SSM vectors in bf16. A named
    component in a quantised format stores its weight matrices (for ``embedding``, ``lm_head`` and
    ``position_embedding`` their tables) in it, and its other parameters (biases, sinks, SSM vectors)
    in the 16-bit base format; in a float format, all its parameters. Component names are those of
    ``godprof.analytic.params.COMPONENTS``.
    """

    default: str = "bf16"
    components: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, str]:
        return {"default": self.default, **self.components}
