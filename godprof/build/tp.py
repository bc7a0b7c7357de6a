"""Tensor-parallel build over ``torch.distributed``: one rank's share of a model, and the collectives.

Each rank builds ``godprof.analytic.tensor_parallel.rank_spec(spec, tp)`` with ``build_model`` (so its
parameters are exactly the analytic per-rank count), then ``parallelize`` adds the communication,
Megatron-LM style (Shoeybi et al. 2019, "Megatron-LM", section 3):

- each block's mixer and FFN end in a row-parallel projection (o_proj, down_proj), so their outputs are
  partial sums: one all-reduce after each (a forward hook on the module);
- a row-parallel projection's bias is added once: it is kept on every rank (replicated, as Megatron-LM
  does) and zeroed on ranks other than 0, so the sum holds it once (a module names such biases of its
  own, outside a Linear, in ``tp_once``: the stacked experts' output bias);
- MoE: tensor parallel inside the experts (each rank holds every expert at 1/tp of its width; the
  router is replicated, so all ranks route alike);
- the embedding is vocab-parallel: rank r holds rows r V/tp .. (r+1) V/tp - 1, looks up the ids in its
  range, zeroes the others, and the ranks all-reduce;
- the lm_head (or the tied embedding) gives each rank V/tp logits; the ranks all-gather them.

``shard_from(model, full, rank, tp)`` fills a rank's parameters from a full model, which is how tests
check that tp ranks compute the logits of one model. It slices by shape alone: a dimension the rank's
tensor has c times smaller is cut in c equal pieces and rank r takes piece ``r x c / tp`` (so with fewer
KV heads than ranks, ranks r .. share head ``r x K / tp``, the head their query heads read).

Kinds whose module cannot split raise in ``rank_spec`` before anything is built.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class VocabParallelEmbedding(nn.Module):
    """Rows ``start .. start + rows - 1`` of the embedding; the ranks all-reduce the looked-up vectors."""

    def __init__(self, weight: nn.Parameter, start: int, group: Any):
        super().__init__()
        self.weight = weight  # [V / tp, h], the same Parameter the model built (tied heads read it too)
        self.start = start
        self.group = group

    @property
    def num_embeddings(self) -> int:
        return self.weight.shape[0]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.start
        outside = (local < 0) | (local >= self.weight.shape[0])
        x = nn.functional.embedding(local.masked_fill(outside, 0), self.weight)  # [B, S, h]
        x = x.masked_fill(outside.unsqueeze(-1), 0)
        dist.all_reduce(x, group=self.group)
        return x


def _all_reduce_hook(group: Any) -> Any:
    def hook(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(out, group=group)
        return out

    return hook


def _gather_logits_hook(tp: int, group: Any) -> Any:
    def hook(module: nn.Module, args: Any, logits: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(logits) for _ in range(tp)]
        dist.all_gather(parts, logits.contiguous(), group=group)
        return torch.cat(parts, dim=-1)  # [B, S, V]

    return hook


def row_parallel_linears(model: nn.Module, full_in: dict[str, int]) -> list[nn.Linear]:
    """The Linear layers whose input width is smaller than in the full model (``full_in``: module name ->
    in_features of the full build): row-parallel, their outputs partial sums."""
    return [
        mod
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and name in full_in and mod.in_features < full_in[name]
    ]


def parallelize(model: nn.Module, rank: int, tp: int, group: Any = None, full_in: dict[str, int] | None = None) -> None:
    """Add the collectives to a rank's model (module docstring). ``full_in`` (module name -> full
    in_features, from ``full_in_features`` of a meta build of the full spec) finds the row-parallel biases
    to keep on rank 0 only."""
    if tp == 1:
        return
    for block in model.layers:
        if not block.skip_mixer:
            block.mixer.register_forward_hook(_all_reduce_hook(group))
        if block.ffn is not None:
            block.ffn.register_forward_hook(_all_reduce_hook(group))
    emb = model.embed_tokens
    model.embed_tokens = VocabParallelEmbedding(emb.weight, rank * emb.weight.shape[0], group)
    model.register_forward_hook(_gather_logits_hook(tp, group))
    if rank != 0:
        with torch.no_grad():
            for lin in row_parallel_linears(model, full_in or {}):
                if lin.bias is not None:
                    lin.bias.zero_()
            for mod in model.modules():  # a module's own row-parallel biases (stacked experts' b_out)
                for name in getattr(mod, "tp_once", ()):
                    p = getattr(mod, name, None)
                    if p is not None:
                        p.zero_()


def full_in_features(spec: Any) -> dict[str, int]:
    """Module name -> in_features of every Linear in the full (unsplit) build, built on ``meta``."""
    from godprof.build import build_model

    full = build_model(spec, device="meta", dtype=torch.float32)
    return {n: m.in_features for n, m in full.named_modules() if isinstance(m, nn.Linear)}


def _blocks(model: nn.Module) -> dict[str, int]:
    """Parameter name -> blocks along its split dimension, from modules that declare ``tp_blocks`` (a
    fused [gate; up] weight is two blocks, each split tp ways)."""
    out = {}
    for prefix, mod in model.named_modules():
        for name, n in getattr(mod, "tp_blocks", {}).items():
            out[f"{prefix}.{name}" if prefix else name] = n
    return out


@torch.no_grad()
def shard_from(model: nn.Module, full: nn.Module, rank: int, tp: int) -> None:
    """Copy rank ``rank``'s slice of every parameter of ``full`` into ``model`` (module docstring); a
    parameter made of several blocks along the split dimension (``tp_blocks``) takes its slice of each."""
    src = dict(full.named_parameters())
    blocks = _blocks(model)
    for name, p in model.named_parameters():
        f = src[name]
        diff = [d for d in range(f.dim()) if f.shape[d] != p.shape[d]]
        if not diff:
            p.copy_(f)
            continue
        if len(diff) > 1 or f.shape[diff[0]] % p.shape[diff[0]]:
            raise ValueError(f"{name}: rank shape {tuple(p.shape)} is not a slice of {tuple(f.shape)}")
        d = diff[0]
        nb = blocks.get(name, 1)
        size = p.shape[d] // nb  # this rank's rows of one block
        pieces = f.shape[d] // nb // size
        piece = rank * pieces // tp
        parts = [f.narrow(d, b * (f.shape[d] // nb) + piece * size, size) for b in range(nb)]
        p.copy_(torch.cat(parts, dim=d))
