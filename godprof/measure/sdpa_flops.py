"""FLOPs of the fused scaled-dot-product-attention kernels, grouped-query attention included.

``torch.utils.flop_counter`` prices the SDPA kernels with ``sdpa_flop_count``, which in torch < 2.13
(the GPU machines run 2.11) asserts that query, key and value have the same head count. godprof's
build calls SDPA with ``enable_gqa=True`` and un-repeated K/V (Llama-3-8B: 32 query heads, 8 KV
heads), so every GQA measurement would crash in the FLOP stage. ``SDPA_FLOPS`` maps every SDPA aten op
that takes [B, H, S, D] tensors to ``gqa_sdpa_flops``, for ``FlopCounterMode(custom_mapping=...)``.

Kernels covered (whichever the dispatcher picks): flash, memory-efficient, cuDNN, the math reference
(which normally decomposes into ``bmm`` before a dispatch mode sees it; registered in case a build
dispatches it whole) and the CPU flash kernel, which torch's registry lacks altogether.
"""

from __future__ import annotations

from typing import Any

import torch

# ops taking (query [B, H, S, D], key [B, K, T, D], value [B, K, T, Dv], ...)
SDPA_OPS = (
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_attention_math",
    "_scaled_dot_product_flash_attention_for_cpu",
)


def sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any) -> int:
    """FLOPs of softmax(q k^T) v over the full S x T scores: 2 x B x H_q x S x T x (D_qk + D_v).

    Counts the two products (q k^T and p v) at 2 FLOPs per multiply-add, per *query* head: a kernel
    that shares a KV head among H_q / H_kv query heads still multiplies every query head with it
    (torch >= 2.13's GQA-aware ``sdpa_flop_count`` agrees). Leaves out the softmax, scaling and
    masking (elementwise) and does not halve for a causal mask (``attention_flops="full"`` in the
    analytic model). Raises ValueError for shapes no SDPA kernel accepts.
    """
    b, h_q, s_q, d_qk = (int(x) for x in query_shape)
    b_k, h_kv, s_k, d_k = (int(x) for x in key_shape)
    b_v, h_v, s_v, d_v = (int(x) for x in value_shape)
    if not (b == b_k == b_v and h_kv == h_v and s_k == s_v and d_qk == d_k) or h_kv < 1 or h_q % h_kv:
        raise ValueError(f"SDPA shapes q={tuple(query_shape)} k={tuple(key_shape)} v={tuple(value_shape)} "
                         "do not form (grouped-query) attention")  # fmt: skip
    return 2 * b * h_q * s_q * s_k * (d_qk + d_v)


def gqa_sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None,
                   **kwargs: Any) -> int:  # fmt: skip
    """``FlopCounterMode`` formula (it passes tensor arguments as shapes): ``sdpa_flops`` of q, k, v."""
    return sdpa_flops(query_shape, key_shape, value_shape)


def sdpa_flop_mapping() -> dict[Any, Any]:
    """{aten op packet: gqa_sdpa_flops} for every SDPA op this torch build has."""
    aten = torch.ops.aten
    return {getattr(aten, name): gqa_sdpa_flops for name in SDPA_OPS if hasattr(aten, name)}
