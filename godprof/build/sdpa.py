"""Scaled dot-product attention helpers shared by the attention kinds' builds.

``sdpa`` is PyTorch's kernel with grouped KV heads. ``attention`` adds what that kernel cannot take:
attention sinks (gpt-oss) and logit soft-capping (Gemma 2). Sinks only rescale the output, so on CPU
they run in PyTorch's fused kernel, which also returns each row's log-sum-exp; soft-capping changes
every score, so it runs in ``explicit_attention``, which materialises the scores (as transformers'
eager attention does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sdpa_plan(
    device_type: str, dtype: torch.dtype, q_heads: int, kv_heads: int, head_dim: int, masked: bool, is_causal: bool
) -> str:
    """How ``sdpa`` hands grouped heads to PyTorch's kernel, so that no call falls back to the math kernel
    (which upcasts to fp32 and materialises the scores) where a fused one can run:

    - ``direct``: as many KV heads as query heads;
    - ``gqa``: ``enable_gqa=True`` (the flash kernels take grouped heads; CPU's flash too);
    - ``fold`` (CUDA, one shared KV head, no mask: MLA's absorbed decode, with head dims 576/512 that
      flash refuses): the heads become query rows of a single-head call, which the memory-efficient
      kernel takes; exact, since every query sees every key;
    - ``expand``: K and V repeated per query head, for a mask (the memory-efficient kernel takes masks
      but not GQA), and on CUDA for fp32 or head dims over 256 (flash has neither; the
      memory-efficient kernel has both but only for equal head counts). The repeated K/V are transient
      copies of 2 x B x H x T x D elements that ``godprof.analytic.memory`` does not count.
    """
    if q_heads == kv_heads:
        return "direct"
    if device_type == "cuda":
        if kv_heads == 1 and not masked and not is_causal:
            return "fold"
        if masked or dtype == torch.float32 or head_dim > 256:
            return "expand"
        return "gqa"
    return "expand" if masked else "gqa"


def sdpa(
    q: torch.Tensor,  # [B, H, S, Dqk]
    k: torch.Tensor,  # [B, K, T, Dqk]
    v: torch.Tensor,  # [B, K, T, Dv]
    mask: torch.Tensor | None = None,  # [S, T] bool, True = attend
    is_causal: bool = False,
    scale: float | None = None,
    plan: str | None = None,
) -> torch.Tensor:  # [B, H, S, Dv]
    """SDPA with grouped KV heads, handed to the kernel as ``sdpa_plan`` says (``plan`` overrides it)."""
    B, H, S, D = (int(x) for x in q.shape)  # ints also under torch.jit.trace (fvcore)
    K = int(k.shape[1])
    plan = plan or sdpa_plan(q.device.type, q.dtype, H, K, D, mask is not None, is_causal)
    if plan == "fold":
        out = F.scaled_dot_product_attention(q.reshape(B, 1, H * S, D), k, v, scale=scale)  # [B, 1, H*S, Dv]
        return out.view(B, H, S, v.shape[-1])
    if plan == "expand" and H != K:
        k = k.repeat_interleave(H // K, dim=1)
        v = v.repeat_interleave(H // K, dim=1)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=plan == "gqa"
    )


def static_decode_attention(
    q: torch.Tensor,  # [B, H, 1, D]
    k: torch.Tensor,  # [B, K, 1, D]: the new token's key
    v: torch.Tensor,  # [B, K, 1, Dv]
    k_cache: torch.Tensor,  # [B, K, T, D]
    v_cache: torch.Tensor,  # [B, K, T, Dv]
    pos: torch.Tensor,  # 0-d int64 on the device: the new token's position
    scale: float | None = None,
) -> torch.Tensor:  # [B, H, 1, Dv]
    """One decode step over a static cache, with shapes that never change (gpt-fast's recipe): the new
    key and value are written at slot ``pos`` by index, and the query attends the whole cache with a
    mask that hides slots after ``pos``. The H / K query heads that share a KV head are laid out as that
    head's query rows ([B, K, H/K, D]), so the call is plain multi-head attention with a mask, which
    the memory-efficient kernel runs: no repeated K/V, no host sync, no math fallback.

    Costs T = max_len keys per step, not pos + 1: the masked slots are read and multiplied too, as in
    every static-cache decoder; at max_len = seq + new_tokens that is new_tokens / 2 keys more than the
    median step of the dynamic path.
    """
    k_cache.index_copy_(2, pos.reshape(1), k.to(k_cache.dtype))
    v_cache.index_copy_(2, pos.reshape(1), v.to(v_cache.dtype))
    return masked_decode(q, k_cache.to(q.dtype), v_cache.to(q.dtype), pos, scale)


def masked_decode(
    q: torch.Tensor,  # [B, H, 1, D]
    k: torch.Tensor,  # [B, K, T, D]: a whole static cache
    v: torch.Tensor,  # [B, K, T, Dv]
    pos: torch.Tensor,  # 0-d int64: slots 0..pos are visible
    scale: float | None = None,
) -> torch.Tensor:  # [B, H, 1, Dv]
    """One query per head against slots 0..pos of a static cache: the H / K query heads sharing a KV head
    become that head's query rows ([B, K, H/K, D]), under one [1, T] mask, so grouped heads (MLA's
    single latent head included) need neither repeated K/V nor the math kernel."""
    B, H, _, D = q.shape
    K, T = k.shape[1], k.shape[2]
    visible = (torch.arange(T, device=q.device) <= pos)[None]  # [1, T]: one row for every query
    out = F.scaled_dot_product_attention(q.reshape(B, K, H // K, D), k, v, attn_mask=visible, scale=scale)
    return out.reshape(B, H, 1, v.shape[-1])  # from [B, K, H/K, Dv]


def band_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """[S, T] bool: key j visible to query i when k_pos[j] <= q_pos[i] (and > q_pos[i] - window)."""
    diff = q_pos[:, None] - k_pos[None, :]  # [S, T]
    ok = diff >= 0
    if window is not None:
        ok = ok & (diff < window)
    return ok


def attention(
    q: torch.Tensor,  # [B, H, S, D]
    k: torch.Tensor,  # [B, K, T, D]
    v: torch.Tensor,  # [B, K, T, D]
    mask: torch.Tensor | None = None,  # [S, T] bool, True = attend
    is_causal: bool = False,
    scale: float | None = None,
    sinks: torch.Tensor | None = None,  # [H] sink logits
    softcap: float | None = None,
) -> torch.Tensor:  # [B, H, S, D]
    """Softmax attention with optional sinks and soft-capping.

    A sink is one more logit per head in every query's softmax, with no value (transformers'
    GptOssAttention): weights exp(s_j) / (sum_i exp(s_i) + exp(sink)). That is plain attention rescaled
    by sum / (sum + exp(sink)) = sigmoid(lse - sink), lse being the row's log-sum-exp of the scores. On
    CPU, without autograd, PyTorch's fused kernel returns lse beside the output; elsewhere (CUDA, meta,
    training, a ``torch.jit.trace``, which fvcore counts from) and with soft-capping ``explicit_attention``
    computes the scores. Both compute the same
    query-key products as SDPA over the same keys: sinks add no matmul FLOPs.
    """
    if sinks is None and softcap is None:
        return sdpa(q, k, v, mask, is_causal, scale)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, sinks))
    fused = q.device.type == "cpu" and not needs_grad and not torch.jit.is_tracing()  # traced: fvcore sees matmuls
    if softcap is None and fused and q.shape[-1] == v.shape[-1]:
        assert sinks is not None
        bias = None
        if mask is not None:  # the CPU kernel takes an additive mask in q's dtype
            bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, is_causal, attn_mask=bias, scale=scale
        )  # out [B, H, S, D], lse [B, H, S] fp32
        factor = torch.sigmoid(lse - sinks.float()[:, None])  # [B, H, S]
        return out * factor.to(out.dtype)[..., None]
    return explicit_attention(q, k, v, mask, is_causal, scale, sinks, softcap)


def explicit_attention(
    q: torch.Tensor,  # [B, H, S, D]
    k: torch.Tensor,  # [B, K, T, D]
    v: torch.Tensor,  # [B, K, T, Dv]
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    sinks: torch.Tensor | None = None,
    softcap: float | None = None,
) -> torch.Tensor:  # [B, H, S, Dv]
    """Attention with the scores in memory (transformers' eager_attention_forward of Gemma 2 and gpt-oss):
    s = q.k x scale, capped to cap x tanh(s / cap), masked, a sink column appended, softmax in fp32 and
    the sink's column dropped. Query heads are grouped over their KV head ([B, K, H/K, S, T] scores), so
    K and V are never repeated. ``is_causal`` aligns the mask top-left, as SDPA does."""
    B, H, S, D = q.shape
    K, T = k.shape[1], k.shape[2]
    qg = q.reshape(B, K, H // K, S, D)
    scores = torch.matmul(qg, k.unsqueeze(2).transpose(-1, -2)).float()  # [B, K, G, S, T]
    scores.mul_(D**-0.5 if scale is None else scale)
    if softcap is not None:
        scores.div_(softcap).tanh_().mul_(softcap)
    if is_causal:
        mask = band_mask(torch.arange(S, device=q.device), torch.arange(T, device=q.device), None)
    if mask is not None:
        scores.masked_fill_(~mask, float("-inf"))
    if sinks is not None:
        sink = sinks.float().view(1, K, H // K, 1, 1).expand(B, K, H // K, S, 1)
        scores = torch.cat((scores, sink), dim=-1)  # [B, K, G, S, T + 1]
    probs = torch.softmax(scores, dim=-1)
    del scores
    out = torch.matmul(probs[..., :T].to(v.dtype), v.unsqueeze(2))  # [B, K, G, S, Dv]
    return out.reshape(B, H, S, v.shape[-1])
