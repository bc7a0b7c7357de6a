"""``type: dsa``: DeepSeek Sparse Attention (DeepSeek-V3.2-Exp, DeepSeek-V3.2): MLA plus a lightning indexer.

Structure (transformers' DeepseekV32Attention / DeepseekV32Indexer; DeepSeek-V3.2-Exp's reference
``inference/model.py``, class ``Indexer``): DeepSeek-V3's MLA (``godprof.kinds.mla``; q always through
the low-rank pair, since the indexer reads its latent) and, per layer, an indexer of
``index_n_heads`` heads of ``index_head_dim``:

- ``wq_b``: the normed q latent (q_a_layernorm's output, ``q_lora_rank``) -> index_n_heads x index_head_dim;
- ``wk``: hidden -> one index_head_dim key shared by all index heads, then ``k_norm``, a LayerNorm
  *with* bias (eps 1e-6; both transformers and DeepSeek's reference);
- ``weights_proj``: hidden -> one weight per index head (no bias; transformers keeps it in fp32);
- rotary on the first ``qk_rope_head_dim`` features of the index q and k (same tables as MLA's rope).

The index score of query i and key j is sum_h w_h(i) relu(q_h(i) . k(j) / sqrt(index_head_dim)); each
query attends only to the ``index_topk`` causal keys with the highest scores (all of them while there are
fewer). The indexer's key is cached per token beside MLA's latent and rope key. DeepSeek's kernels store
it in fp8 with one fp32 scale per 128 features (128 + 4 bytes per token at index_head_dim 128) and rotate
q and k by a Hadamard transform first (orthogonal: same scores; no parameters); godprof stores it in
the KV dtype like the latent. The top-k indices are not parameters and not cached.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.attention import math_sdpa_bytes, rope_peak
from godprof.kinds.base import FP32_BYTES, Part, attended_pairs
from godprof.kinds.mla import MLA

if TYPE_CHECKING:
    from godprof.analytic.workload import Workload

# The build scores and selects keys for a block of queries at a time; a block's index scores
# (batch x rows x index heads x keys, fp32) and gathered keys and values (batch x heads x rows x top-k x
# (d_qk + d_v)) stay within this many elements (at least one row). Shared by the build and the
# activation model, like Mamba-1's scan chunk.
QUERY_BLOCK_ELEMENTS = 1 << 26
INDEX_SCORE_BYTES = FP32_BYTES  # the indexer scores in fp32 (transformers; DeepSeek's fp8 kernel too)
INDEX_BYTES = 8  # top-k indices are int64


@dataclass(frozen=True)
class DSA(MLA):
    """MLA whose queries each attend to the ``index_topk`` keys a lightning indexer selects."""

    index_n_heads: int = 64
    index_head_dim: int = 128
    index_topk: int = 2048

    type: ClassVar[str] = "dsa"
    label: ClassVar[str] = "dsa"
    efficiency_class: ClassVar[str] = "sparse"
    build: ClassVar[str] = "godprof.build.kinds.dsa:DSAttention"
    keys: ClassVar[frozenset[str]] = MLA.keys | {"index_n_heads", "index_head_dim", "index_topk"}
    required: ClassVar[frozenset[str]] = MLA.required | {
        "q_lora_rank", "index_n_heads", "index_head_dim", "index_topk",
    }  # fmt: skip

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> DSA:
        base = super().parse(c, d, p, hidden)  # MLA's fields, validated as MLA validates them
        assert isinstance(base, DSA)
        if d.get("q_lora_rank", 0) is None:
            c.err((*p, "q_lora_rank"), "DSA needs q_lora_rank: the indexer's queries read the q latent")
        index_dim = c.int_(d, "index_head_dim", p, 128)
        if index_dim < base.qk_rope_head_dim:
            c.err((*p, "index_head_dim"), f"must be >= qk_rope_head_dim ({base.qk_rope_head_dim}): the index "
                  f"q and k rotate their first qk_rope_head_dim features, got {index_dim}")  # fmt: skip
        return dataclasses.replace(
            base,
            q_lora_rank=base.q_lora_rank or 1,
            index_n_heads=c.int_(d, "index_n_heads", p, 64),
            index_head_dim=index_dim,
            index_topk=c.int_(d, "index_topk", p, 2048),
        )

    @property
    def q_rank(self) -> int:
        assert self.q_lora_rank is not None  # parse requires it
        return self.q_lora_rank

    def params(self, hidden: int) -> Part:
        """MLA's parameters plus the indexer's: wq_b (q_lora_rank -> index heads x dim), wk (hidden -> dim)
        and weights_proj (hidden -> index heads), all without bias, under "attention"; k_norm's LayerNorm
        weight and bias (2 x index_head_dim) under "norms"."""
        p = super().params(hidden)
        Hi, D = self.index_n_heads, self.index_head_dim
        p.linear("attention", self.q_rank, Hi * D, False)
        p.linear("attention", hidden, D, False)
        p.add("norms", 2 * D)
        p.linear("attention", hidden, Hi, False)
        return p

    def kv_elements_per_token(self) -> int:
        """MLA's latent and rope key, plus the indexer's key (index_head_dim). Left out: the fp32 scale
        DeepSeek's fp8 indexer cache keeps per 128 features (godprof stores every cached value in the KV
        dtype)."""
        return super().kv_elements_per_token() + self.index_head_dim

    def decode_read_elements(self, context: int) -> int:
        """Cached values one decode step reads at ``context``: every index key, but the latent and rope key
        of only the min(context, index_topk) selected tokens (``roofline.decode_bytes`` asks)."""
        return context * self.index_head_dim + min(context, self.index_topk) * super().kv_elements_per_token()

    def tp_risks(self, tp: int) -> list[str]:
        """The latent and the indexer's keys have no head axis: every rank holds all of them."""
        if tp <= 1:
            return []
        return [
            f"MLA's compressed KV latent and the DSA indexer's keys are replicated on all {tp} tensor-parallel ranks"
        ]

    # -- FLOPs

    def index_flops_per_pair(self) -> int:
        """One query-key pair of the indexer: index heads x index_head_dim for q . k, plus one multiply-add
        per head for the weighted sum over heads."""
        return 2 * self.index_n_heads * (self.index_head_dim + 1)

    def selected_pairs(self, seq: int, convention: str) -> int:
        """Query-key pairs the main attention computes in a prefill of ``seq`` tokens. causal: query i sees
        min(i, index_topk) keys; full: every query computes min(seq, index_topk) key slots (the build
        gathers index_topk keys per query, masking those past the query when it has fewer)."""
        if convention == "full":
            return seq * min(seq, self.index_topk)
        return attended_pairs(seq, self.index_topk, "causal")

    def attention_flops(self, batch: int, seq: int, convention: str) -> int:
        """Main attention over the selected pairs, decompressed as MLA's prefill (qk = nope + rope,
        v = v_head_dim): O(seq x index_topk) once seq > index_topk. Plus the indexer's scores over every
        causal pair (``full``: seq x seq), O(seq^2): ``index_flops_per_pair`` each. Left out: the top-k
        selection, the relu, the masks and the softmax (no multiply-adds a counter sees)."""
        main = 2 * batch * self.num_heads * self.selected_pairs(seq, convention) * (self.qk_head_dim + self.v_head_dim)
        index = batch * attended_pairs(seq, None, convention) * self.index_flops_per_pair()
        return main + index

    def decode_attention_flops(self, context: int) -> int:
        """Main attention over min(context, index_topk) keys in the latent space (qk = kv_lora_rank + rope,
        v = kv_lora_rank, kv_b_proj absorbed: counted with the Linear weights) plus the indexer over all
        ``context`` cached keys."""
        kept = min(context, self.index_topk)
        main = 2 * self.num_heads * kept * (2 * self.kv_lora_rank + self.qk_rope_head_dim)
        return main + context * self.index_flops_per_pair()

    # -- activations

    def query_block(self, batch: int, queries: int, keys: int) -> int:
        """Queries the build scores and selects for at a time (``QUERY_BLOCK_ELEMENTS``)."""
        kept = min(keys, self.index_topk)
        row = batch * max(self.index_n_heads * keys, self.num_heads * kept * (self.qk_head_dim + self.v_head_dim))
        return max(1, min(queries, QUERY_BLOCK_ELEMENTS // max(1, row)))

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """A model of the build (``godprof.build.kinds.dsa``) prefilling batch x seq tokens from position 0
        (on every tiny case tried, equal to the live-tensor peak measured on CPU to the byte).

        Held from the attention on: MLA's prefill tensors (see ``MLA.prefill_peak_bytes``), the indexer's
        rotated q and k, its fp32 head weights and the query positions. Beside them, the largest of:

        - the projections: every projection output with the normed q latent and the index q's rotary;
        - index scoring of one block of ``query_block`` queries: the fp32 per-head scores, their weighted
          sum, its top-k values and int64 indices, and fp32 copies of the index q and keys (16-bit runs);
        - seq <= index_topk: the selection as a [batch, 1, seq, seq] boolean mask, then MLA's dense
          attention under it (SDPA makes the mask additive in the activation dtype): with flash the output
          and log-sum-exp, otherwise the math kernel's temporaries;
        - seq > index_topk: the preallocated output and, per block, the indices, the gathered keys (then
          values) and their scores (then probabilities) over the top-k;
        - o_proj: the output, its contiguous copy and o_proj's result.

        Leaves out the norm and rotary temporaries of the small tensors (k_pe, the index key): they never
        set the peak."""
        t = batch * seq
        H, qk, v, r, rp = self.num_heads, self.qk_head_dim, self.v_head_dim, self.kv_lora_rank, self.qk_rope_head_dim
        Hi, D, kk = self.index_n_heads, self.index_head_dim, min(seq, self.index_topk)
        cv = FP32_BYTES if a != FP32_BYTES else 0  # an fp32 copy of a 16-bit tensor
        mla = t * (hidden + H * qk + (r + rp) + r + H * rp + rp + H * (self.qk_nope_head_dim + v) + 2 * H * qk)
        held = a * (mla + t * (Hi * D + D)) + FP32_BYTES * t * Hi + INDEX_BYTES * seq
        projected = t * (hidden + self.q_rank + H * qk + (r + rp) + r + H * rp + rp + Hi * D)
        early = a * (projected + rope_peak(t, Hi, D, rp))  # the index q rotated beside every projection
        c = self.query_block(batch, seq, seq)
        rows = batch * c
        scores = FP32_BYTES * rows * Hi * seq
        keys_f32 = cv * batch * seq * D  # the index keys' fp32 copy, held through the block loop
        score = max(
            cv * rows * Hi * D + scores,  # the index q's fp32 copy and the per-head scores
            scores + FP32_BYTES * rows * seq,  # the per-head scores and their weighted sum
            FP32_BYTES * rows * seq + (FP32_BYTES + INDEX_BYTES) * rows * kk,  # the sum and its top-k
        )
        finish = 2 * a * t * H * v + a * t * hidden  # the output, o_proj's (contiguous) input and its output
        if seq <= self.index_topk:
            mask = batch * seq * seq  # bool; SDPA makes it additive in the activation dtype
            if flash:
                attend = mask + a * mask + a * t * H * v + FP32_BYTES * batch * H * seq
            else:  # the math kernel's temporaries with that mask instead of a seq x seq fp32 one
                attend = mask + math_sdpa_bytes(batch, seq, H, qk, H, v, cv) - FP32_BYTES * seq * seq + a * mask
            return max(early, held + max(mask + keys_f32 + score, attend, finish))
        out = a * t * H * v
        picked = INDEX_BYTES * rows * kk + rows * kk  # indices and the mask of those past the query
        pairs = batch * H * c * kk
        q_copy = a * batch * H * c * qk if c < seq else 0  # a block's queries, made contiguous for the matmul
        select = picked + max(
            a * pairs * (qk + 1) + q_copy,  # gathered keys and their scores
            2 * FP32_BYTES * pairs + (a * pairs if cv else 0),  # fp32 scores, their softmax, its 16-bit copy
            a * pairs * (v + 1) + a * batch * H * c * v,  # probabilities, gathered values, their product
        )
        return max(early, held + max(out + keys_f32 + max(score, select), finish))

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """MLA's saved tensors with the main attention's probability rows min(seq, index_topk) long (math
        kernel), plus what the indexer's own training loss (DeepSeek-V3.2's KL to the main attention)
        needs: its q and k, the head weights, and per token either an fp32 log-sum-exp (flash) or the
        seq-long fp32 row of index scores (unless recomputation drops it). transformers runs the indexer
        under no_grad (it saves nothing there)."""
        el, fp32 = super().train_saved(hidden, min(seq, self.index_topk), w)
        el += self.index_n_heads * self.index_head_dim + self.index_head_dim
        fp32 += FP32_BYTES * self.index_n_heads
        if w.flash_attention:
            fp32 += FP32_BYTES
        elif w.recompute == "none":
            fp32 += FP32_BYTES * seq
        return el, fp32
