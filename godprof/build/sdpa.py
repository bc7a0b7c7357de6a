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


def sdpa(
    q: torch.Tensor,  # [B, H, S, Dqk]
    k: torch.Tensor,  # [B, K, T, Dqk]
    v: torch.Tensor,  # [B, K, T, Dv]
    mask: torch.Tensor | None = None,  # [S, T] bool, True = attend
    is_causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:  # [B, H, S, Dv]
    """SDPA with grouped KV heads. Unmasked calls pass ``enable_gqa`` (flash kernels take it); masked
    calls repeat the kv heads so the memory-efficient kernel (which does not take GQA) can run."""
    groups = int(q.shape[1]) // int(k.shape[1])  # ints also under torch.jit.trace (fvcore)
    if groups > 1 and mask is not None:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
        groups = 1
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=groups > 1
    )


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
