"""``type: compressed_attention``: DeepSeek-V4's attention (sliding window, CSA and HCA layers).

Structure (transformers 5.24 ``models/deepseek_v4/modeling_deepseek_v4.py``: ``DeepseekV4Attention``,
``DeepseekV4CSACompressor``, ``DeepseekV4HCACompressor``, ``DeepseekV4Indexer``; the DeepSeek-V4 paper
sections 2.3.1 and 2.3.2). Every layer has:

- a low-rank query: ``q_a_proj`` (hidden -> q_lora_rank), RMSNorm ``q_a_norm``, ``q_b_proj``
  (q_lora_rank -> heads x head_dim), then a weightless RMSNorm per head;
- shared-KV multi-query attention: ``kv_proj`` (hidden -> head_dim) and RMSNorm ``kv_norm``; the one
  head is read as both key and value (K = V), so a cached token is head_dim values, not 2 x head_dim;
- interleaved RoPE on the *last* ``rope_head_dim`` features of q and kv, undone on the output
  (rotation by -position) before the output projection;
- a learned sink logit per head (gpt-oss style; no value);
- a grouped low-rank output projection: the heads split into ``o_groups`` groups, each projected by its
  own block ``o_a_proj`` (heads x head_dim / o_groups -> o_lora_rank), then ``o_b_proj``
  (o_groups x o_lora_rank -> hidden);
- a sliding window of the last ``sliding_window`` tokens.

``compressor`` adds long-range entries after the window's keys:

- ``hca`` (heavily compressed attention): ``kv_proj`` and ``gate_proj`` (hidden -> head_dim), an fp32
  ``position_bias`` [compress_rate, head_dim] and an RMSNorm: each closed window of ``compress_rate``
  tokens becomes one entry, the softmax(gate + bias)-weighted sum of its kv rows, normed and rotated at
  the window's first position. Every query sees every closed window up to itself.
- ``csa`` (compressed sparse attention): the same with two series per token (``kv_proj`` and
  ``gate_proj`` to 2 x head_dim, bias [compress_rate, 2 x head_dim]); entry w pools window w-1's first
  series with window w's second (width 2 x rate, stride rate). A Lightning Indexer picks the
  ``index_topk`` entries each query attends to: its own compressor at ``index_head_dim`` (kv_proj,
  gate_proj to 2 x index_head_dim, position_bias, kv_norm), ``q_b_proj`` from the normed q latent to
  index_n_heads x index_head_dim and ``weights_proj`` (hidden -> index_n_heads); the score of an entry is
  sum_h w_h relu(q_h . k) / sqrt(index_head_dim).

What a sequence keeps (``kv_elements``): the window's last ``sliding_window`` tokens (head_dim each; the
build's ring buffer; transformers keeps sliding_window - 1 plus the current token), one head_dim entry
per ``compress_rate`` tokens and, for csa, one index_head_dim indexer key per entry. Constant state
(``state_elements``): the kv and gate rows of the window still open (at most compress_rate - 1 tokens)
and, for csa, the previous window's first series (kv and gate, compress_rate rows) that the next entry
pools; the same for the indexer. DeepSeek's kernels store the cache in fp8 with scales; godprof stores
every cached value in the KV dtype. YaRN scaling of the compressed layers' rotary (``rope_scaling``) has
no parameters and is not modelled (the build uses plain RoPE at ``rope_theta``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.attention import sdpa_train_saved
from godprof.kinds.base import FP32_BYTES, MixerKind, Part, attended_pairs

if TYPE_CHECKING:
    from godprof.analytic.workload import Workload

COMPRESSORS = ("none", "csa", "hca")


@dataclass(frozen=True)
class CompressedAttention(MixerKind):
    """DeepSeek-V4 shared-KV MQA over a sliding window plus, optionally, compressed long-range entries."""

    num_heads: int
    head_dim: int
    q_lora_rank: int
    o_groups: int
    o_lora_rank: int
    rope_head_dim: int = 64
    sliding_window: int = 128
    rope_theta: float = 10000.0
    compressor: str = "none"  # none | csa | hca
    compress_rate: int = 1  # tokens per compressed entry (csa 4, hca 128); 1 when compressor is none
    index_n_heads: int = 0  # csa only
    index_head_dim: int = 0
    index_topk: int = 0

    type: ClassVar[str] = "compressed_attention"
    category: ClassVar[str] = "attention"
    label: ClassVar[str] = "cattn"
    efficiency_class: ClassVar[str] = "sparse"
    build: ClassVar[str] = "godprof.build.kinds.compressed_attention:CompressedAttentionLayer"
    keys: ClassVar[frozenset[str]] = frozenset({
        "type", "num_heads", "head_dim", "q_lora_rank", "o_groups", "o_lora_rank", "rope_head_dim",
        "sliding_window", "rope_theta", "compressor", "compress_rate", "index_n_heads", "index_head_dim",
        "index_topk",
    })  # fmt: skip
    required: ClassVar[frozenset[str]] = frozenset(
        {"type", "num_heads", "head_dim", "q_lora_rank", "o_groups", "o_lora_rank"}
    )

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> CompressedAttention:
        heads = c.int_(d, "num_heads", p)
        head_dim = c.int_(d, "head_dim", p)
        groups = c.int_(d, "o_groups", p)
        rope = c.int_(d, "rope_head_dim", p, 64)
        if rope % 2 or rope > head_dim:
            c.err((*p, "rope_head_dim"), f"must be even and <= head_dim ({head_dim}), got {rope}")
        if (heads * head_dim) % groups:
            c.err((*p, "o_groups"), f"heads x head_dim = {heads * head_dim} does not split into {groups} groups")
        kind = c.choice(d, "compressor", p, COMPRESSORS, "none")
        index_keys = ("index_n_heads", "index_head_dim", "index_topk")
        if kind == "none":
            for key in ("compress_rate", *index_keys):
                if key in d:
                    c.err((*p, key), "applies to a compressor (csa or hca), not compressor none")
            rate = 1
        else:
            rate = c.int_(d, "compress_rate", p, 4 if kind == "csa" else 128)
        if kind == "hca":
            for key in index_keys:
                if key in d:
                    c.err((*p, key), "only csa layers have a Lightning Indexer")
        csa = kind == "csa"
        index_dim = c.int_(d, "index_head_dim", p, 128) if csa else 0
        if csa and index_dim < rope:
            c.err((*p, "index_head_dim"), f"must be >= rope_head_dim ({rope}): the indexer rotates that many")
        return cls(
            num_heads=heads,
            head_dim=head_dim,
            q_lora_rank=c.int_(d, "q_lora_rank", p),
            o_groups=groups,
            o_lora_rank=c.int_(d, "o_lora_rank", p),
            rope_head_dim=rope,
            sliding_window=c.int_(d, "sliding_window", p, 128),
            rope_theta=c.float_(d, "rope_theta", p, 10000.0),
            compressor=kind,
            compress_rate=rate,
            index_n_heads=c.int_(d, "index_n_heads", p, 64) if csa else 0,
            index_head_dim=index_dim,
            index_topk=c.int_(d, "index_topk", p, 512) if csa else 0,
        )

    @property
    def series(self) -> int:
        """Compressed series per token: csa pools two (overlapping windows), hca one."""
        return 2 if self.compressor == "csa" else 1

    def params(self, hidden: int) -> Part:
        """Exact parameters of ``DeepseekV4Attention`` and its compressor (see the module docstring), all
        Linear layers without bias. Under "attention": q_a, q_b, kv_proj, o_a (o_groups blocks of
        heads x head_dim / o_groups -> o_lora_rank), o_b, the sinks [heads], and the compressor's (and
        indexer's) kv_proj, gate_proj, q_b_proj, weights_proj and fp32 position_bias. Under "norms": q_a_norm,
        kv_norm and the compressor's (and indexer's) kv_norm."""
        p = Part()
        H, D, r = self.num_heads, self.head_dim, self.q_lora_rank
        p.linear("attention", hidden, r, False)
        p.add("norms", r)
        p.linear("attention", r, H * D, False)
        p.linear("attention", hidden, D, False)
        p.add("norms", D)
        p.linear("attention", H * D // self.o_groups, self.o_lora_rank, False, count=self.o_groups)
        p.linear("attention", self.o_groups * self.o_lora_rank, hidden, False)
        p.add("attention", H)  # sinks
        if self.compressor == "none":
            return p
        s = self.series
        p.linear("attention", hidden, s * D, False, count=2)  # kv_proj, gate_proj
        p.add("attention", self.compress_rate * s * D)  # position_bias
        p.add("norms", D)
        if self.compressor == "csa":
            Hi, Di = self.index_n_heads, self.index_head_dim
            p.linear("attention", hidden, 2 * Di, False, count=2)
            p.add("attention", self.compress_rate * 2 * Di)
            p.add("norms", Di)
            p.linear("attention", r, Hi * Di, False)
            p.linear("attention", hidden, Hi, False)
        return p

    # -- cache and state

    def entries(self, context: int) -> int:
        """Compressed entries after ``context`` tokens: one per closed window of compress_rate tokens."""
        return context // self.compress_rate if self.compressor != "none" else 0

    def entry_elements(self) -> int:
        """One compressed entry: head_dim values, plus the indexer's key (csa)."""
        return self.head_dim + self.index_head_dim if self.compressor != "none" else 0

    def kv_elements_per_token(self) -> int:
        """What one more token adds while the window is not full: its head_dim K=V row (a compressed
        entry per compress_rate tokens comes on top; ``kv_elements`` is exact at any context)."""
        return self.head_dim

    def cached_tokens(self, context: int) -> int:
        """Raw tokens kept: the window's last ``sliding_window``."""
        return min(context, self.sliding_window)

    def kv_elements(self, context: int) -> int:
        """The window's K=V rows plus every compressed entry (and its indexer key) at ``context``."""
        return self.head_dim * self.cached_tokens(context) + self.entry_elements() * self.entries(context)

    def state_elements(self) -> int:
        """Constant per sequence: the open window's kv and gate rows (compress_rate - 1 tokens of
        2 x series x head_dim), for csa the previous window's first series (kv and gate: 2 x compress_rate
        x head_dim) and the same two for the indexer at index_head_dim."""
        if self.compressor == "none":
            return 0
        m = self.compress_rate
        widths = [self.head_dim] + ([self.index_head_dim] if self.compressor == "csa" else [])
        if self.compressor == "hca":
            return 2 * (m - 1) * self.head_dim
        return sum(2 * (m - 1) * 2 * w + 2 * m * w for w in widths)

    def selected(self, context: int) -> int:
        """Compressed entries one query at ``context`` attends to: all of them (hca), the top-k (csa)."""
        n = self.entries(context)
        return min(n, self.index_topk) if self.compressor == "csa" else n

    def decode_read_elements(self, context: int) -> int:
        """One decode step reads the window, the selected entries and (csa) every indexer key."""
        index = self.index_head_dim * self.entries(context)
        return self.head_dim * (self.cached_tokens(context) + self.selected(context)) + index

    def kv_tp_fraction(self, tp: int) -> float:
        """One KV head: every tensor-parallel rank holds the whole cache."""
        return 1.0

    def tp_problem(self, tp: int) -> str | None:
        return f"{self.num_heads} attention heads do not split {tp} ways" if self.num_heads % tp else None

    def tp_risks(self, tp: int) -> list[str]:
        return [f"DeepSeek-V4's single shared K=V head is replicated on all {tp} ranks"] if tp > 1 else []

    # -- FLOPs

    def _compressed_pairs(self, seq: int, convention: str) -> int:
        """Query-entry pairs of the main attention over compressed entries in a prefill. causal: query i
        (0-based) sees (i + 1) // rate entries (``sum_floor``), csa at most index_topk of them
        (``sum_floor_capped``); full: every query scores every entry of the sequence, as a dense kernel
        under a mask does (the build, and transformers' eager attention)."""
        if self.compressor == "none":
            return 0
        n, m = self.entries(seq), self.compress_rate
        if convention == "full":
            return seq * n
        if self.compressor == "csa":
            return sum_floor_capped(seq, m, self.index_topk)
        return sum_floor(seq, m)

    def _index_pairs(self, seq: int, convention: str) -> int:
        """Indexer scores in a prefill: causal, the visible entries of each query; full, seq x entries."""
        if self.compressor != "csa":
            return 0
        return seq * self.entries(seq) if convention == "full" else sum_floor(seq, self.compress_rate)

    def index_flops_per_pair(self) -> int:
        """q . k over index heads x index_head_dim, plus one multiply-add per head for the weighted sum."""
        return 2 * self.index_n_heads * (self.index_head_dim + 1)

    def attention_flops(self, batch: int, seq: int, convention: str) -> int:
        """Scores and values (K = V, both head_dim wide: 2 x 2 x heads x head_dim per pair) over the window's
        pairs (``attended_pairs`` with the window; ``full``: seq x seq) and the compressed entries
        (``_compressed_pairs``), plus the indexer's scores (csa). Left out: the compressor's softmax-
        weighted pooling (elementwise, 2 x rate x series x head_dim per entry), sinks, softmax, top-k,
        masks and rotary (no matmul)."""
        pairs = attended_pairs(seq, self.sliding_window, convention) + self._compressed_pairs(seq, convention)
        main = 4 * batch * self.num_heads * self.head_dim * pairs
        return main + batch * self._index_pairs(seq, convention) * self.index_flops_per_pair()

    def decode_attention_flops(self, context: int) -> int:
        """One decoded token: the window's min(context, window) keys and the selected entries, plus (csa)
        the indexer over every entry."""
        keys = self.cached_tokens(context) + self.selected(context)
        return 4 * self.num_heads * self.head_dim * keys + self.entries(context) * self.index_flops_per_pair()

    # -- activations

    def rope_table(self) -> tuple[int, float] | None:
        return (self.rope_head_dim, self.rope_theta)

    def rope_extra_bytes(self, t: int, seq: int, heads: int, width: int, a: int) -> int:
        """Temporaries of ``rope_interleaved`` on ``heads`` heads of ``width`` for t tokens, beside its input:
        the rotated pairs (activation dtype) with the fp32 products and their sum (then the cast result and
        the re-joined heads), and the fp32 cos/sin rows [seq, rope_head_dim]."""
        rd = self.rope_head_dim
        return t * heads * max((a + 12) * rd, (2 * a + 4) * rd, a * (2 * rd + width)) + 8 * seq * rd

    def compressor_bytes(self, t: int, batch: int, seq: int, width: int, series: int, a: int) -> int:
        """A compressor's peak over a prefill from position 0: its kv and gate projections (t x series x
        width each), the fp32 gate + position bias over the n x rate pooled rows, for csa the two-series
        layout of kv (activation dtype) and gate (fp32) over 2 x rate rows, the fp32 softmax (and its cast),
        and the weighted rows before their sum."""
        e = batch * self.entries(seq) * self.compress_rate * width  # pooled elements per series
        cast = a if a != FP32_BYTES else 0
        proj = 2 * a * t * series * width
        if series == 1:
            return proj + (2 * FP32_BYTES + cast + a) * e
        laid_out = proj + 2 * FP32_BYTES * e + 2 * (a + FP32_BYTES) * e  # gate + bias, then the layout
        pooling = proj + 2 * e * (a + 2 * FP32_BYTES + cast + a)  # layout, softmax (cast), weighted rows
        return max(laid_out, pooling)

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """A model of the build (``godprof.build.kinds.compressed_attention``) prefilling batch x seq tokens
        from position 0 into its cache, phase by phase (every term is a tensor the build holds; on the
        small configs of tests/test_deepseek_v4.py it equals the live-tensor peak measured on CPU).

        Held from the projections on: the normed input, the normed q latent, q and kv after rotary, the
        query and key positions; then the window's keys (copied into one tensor) and its band mask. The
        largest of:

        - q's rotary (``rope_extra_bytes``) beside the input, the latent and q;
        - each compressor (``compressor_bytes``; for csa then the indexer's at index_head_dim);
        - csa's index scoring: the index q and its rotary; the score product (fp32 copies of q, made
          contiguous, and of the keys, broadcast per query when batch > 1, and the fp32 scores); the scores,
          their relu
          and scaling;
        - attention: keys and entries joined, the [batch, seq, keys] boolean mask, and the fp32 scores
          with the sink column and their softmax (two [batch, heads, seq, keys + 1] tensors; ``flash`` has
          no effect: the build attends with an explicit mask);
        - the output: its inverse rotary, the grouped copy, o_a's product and its reshaped copy, o_b.

        Leaves out the norms' temporaries and the pooled entries' norm and rotary (entries x width)."""
        t, S = batch * seq, seq
        H, D, r = self.num_heads, self.head_dim, self.q_lora_rank
        n = self.entries(seq)
        base = a * t * (hidden + r + H * D) + 16 * S  # normed input, q latent, q, query/key positions
        phases = [base - 16 * S + self.rope_extra_bytes(t, S, H, D, a)]
        held = base + a * t * D + a * t * D + S * S  # kv, the window's keys, the band mask
        keys_n = a * batch * n * D  # the entries joined to the keys
        mask = S * S
        if self.compressor != "none":
            phases.append(held + self.compressor_bytes(t, batch, S, D, self.series, a))
            held += 8 * S  # the entries each query may see (threshold)
            mask = batch * S * (S + n) + (S * n if self.compressor == "hca" else batch * S * (n + 1))
        if self.compressor == "csa":
            Hi, Di = self.index_n_heads, self.index_head_dim
            phases.append(held + self.compressor_bytes(t, batch, S, Di, 2, a))
            q_index = a * t * Hi * Di
            phases.append(held + q_index + self.rope_extra_bytes(t, S, Hi, Di, a))
            cv = FP32_BYTES if a != FP32_BYTES else 0
            # fp32 keys, broadcast per query by matmul (a copy unless batch is 1: then the broadcast is a view)
            keys = cv * batch * n * Di + (FP32_BYTES * t * Di * n if batch > 1 else 0)
            phases.append(held + q_index + (cv + FP32_BYTES) * t * Hi * Di + keys + FP32_BYTES * t * Hi * n)
            phases.append(held + q_index + 3 * FP32_BYTES * t * Hi * n)
        attend = held - a * t * D - S * S + a * t * D + keys_n + mask  # keys joined, masks joined
        phases.append(attend + 2 * FP32_BYTES * batch * H * S * (S + n + 1))
        g, o = self.o_groups, self.o_lora_rank
        phases.append(attend + a * t * H * D + self.rope_extra_bytes(t, S, H, D, a))
        phases.append(attend + a * t * (2 * H * D + max(2 * g * o, g * o + hidden)))
        return max(phases)

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """Norm input/output, the q latent (raw, normed), q, kv, the output before and after o_a, plus
        SDPA's saved statistics over seq + entries keys; the compressor's kv and gate rows."""
        el, fp32 = sdpa_train_saved(self.num_heads, seq + self.entries(seq), w)
        H, D = self.num_heads, self.head_dim
        el += 2 * hidden + 2 * self.q_lora_rank + 3 * H * D + D + self.o_groups * self.o_lora_rank
        if self.compressor != "none":
            el += 2 * self.series * D
        if self.compressor == "csa":
            el += 4 * self.index_head_dim + self.index_n_heads * self.index_head_dim
        return el, fp32

    def fused_on_cpu(self) -> bool:
        return False  # the build attends with an explicit mask and sinks (math path)


def sum_floor(seq: int, m: int) -> int:
    """sum over i = 1..seq of floor(i / m), in closed form."""
    q, r = divmod(seq, m)
    return m * q * (q - 1) // 2 + q * (r + 1)


def sum_floor_capped(seq: int, m: int, k: int) -> int:
    """sum over i = 1..seq of min(floor(i / m), k)."""
    if seq < (k + 1) * m:
        return sum_floor(seq, m)
    below = sum_floor((k + 1) * m - 1, m)  # queries before the cap binds
    return below + k * (seq - (k + 1) * m + 1)
