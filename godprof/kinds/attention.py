"""``type: attention``: multi-head attention with grouped KV heads (MHA when kv == heads, MQA when kv == 1).

Structure (transformers' LlamaAttention and its relatives): q, k, v, o projections (k and v with
``num_kv_heads`` heads), optional biases (q/k/v and o separately: Qwen2 and Seed-OSS have q/k/v biases
and no o bias), rotary on the first ``rotary_dim`` features of each head (partial rotary: GPT-NeoX,
GPT-J, Phi), and an optional sliding window that caps the keys each query sees and the KV cache (a
ring buffer of ``sliding_window`` slots). Variants of 2024-26 models, each with its transformers source:

- ``qk_norm``: ``true`` / ``head`` is an RMSNorm over each head's ``head_dim`` features of q and of k,
  one weight vector shared by the heads, applied before rotary (Qwen3Attention, Gemma3Attention,
  Exaone4Attention); ``full`` an RMSNorm over the whole q projection (``num_heads x head_dim``) and the
  whole k projection (``num_kv_heads x head_dim``) before the split into heads (Olmo2Attention,
  OlmoeAttention); ``l2`` the parameter-free L2 norm x / sqrt(mean(x^2) + eps) on each head of q and k
  (Llama4TextL2Norm; transformers applies it after rotary, which commutes with it: a rotation keeps the
  norm).
- ``sinks``: one learned logit per head that joins every query's softmax as an extra key with no value
  (GptOssAttention: ``softmax(cat(scores, sink))`` with the sink column dropped), so attention weights
  may sum to less than 1. ``num_heads`` parameters.
- ``attention_chunk``: chunked local attention (Llama 4, ``attention_chunk_size``; transformers'
  ``chunked_overlay``): the query at position p sees the keys of its own chunk, positions
  p - p % C .. p. The cache needs only the current chunk: a ring of C slots.
- ``clip_qkv`` clamps q, k and v to [-clip, clip] after their projections and full-width norms
  (DbrxAttention, OlmoeAttention); ``softcap`` caps the scaled scores with cap x tanh(s / cap) before the mask and
  softmax (Gemma2Attention's ``attn_logit_softcapping``); ``scale`` replaces the softmax scale
  head_dim^-0.5 (Gemma 2/3: ``query_pre_attn_scalar ** -0.5``). None of the three has parameters.
- ``output_gate``: gated attention (Qwen3-Next, Qwen3NextAttention): q_proj outputs a query and a gate
  per head (``num_heads x 2 x head_dim``, laid out per head as [query, gate]); the attention output is
  multiplied by sigmoid(gate) before o_proj. hidden x num_heads x head_dim more parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.base import FP32_BYTES, MixerKind, Part, attended_pairs

if TYPE_CHECKING:
    from godprof.analytic.workload import Workload

QK_NORMS = ("head", "full", "l2")  # and true (= head) / false


def rope_peak(t: int, heads: int, d: int, rd: int) -> int:
    """Elements besides the input while rotating ``heads`` heads of t tokens (``godprof.build.layers.
    apply_rope``): the rotated half, x*cos, rotated*sin and their sum (4 x rd); with partial rotary, then
    the rotated half and the sum beside the re-joined head (2 x rd + d)."""
    return t * heads * max(4 * rd, d + 2 * rd if rd < d else 0)


def math_sdpa_bytes(batch: int, seq: int, heads: int, dqk: int, kv_heads: int, dv: int, cv: int) -> int:
    """Temporaries of PyTorch's unfused ("math") SDPA at its peak, over the full seq x seq (what it computes
    on CPU, in fp32): fp32 copies of q, k and v (only when they are not fp32), one scaled q or k copy, the
    seq x seq causal mask and two batch x heads x seq x seq score tensors (the product and its masked sum)."""
    t = batch * seq
    copies = cv * t * (heads * dqk + kv_heads * (dqk + dv))
    return copies + FP32_BYTES * (t * heads * dqk + seq * seq + 2 * batch * heads * seq * seq)


def sdpa_train_saved(heads: int, seq: int, w: Workload) -> tuple[int, int]:
    """What SDPA saves for backward per token beyond its inputs and output: the fp32 log-sum-exp per head
    (flash), or a seq-long probability row per head (math kernel, unless selective recomputation drops it)."""
    if w.flash_attention:
        return 0, FP32_BYTES * heads
    return (heads * seq if w.recompute == "none" else 0), 0


def chunked_pairs(seq: int, chunk: int, convention: str) -> int:
    """Query-key pairs of chunked local attention over ``seq`` tokens in chunks of ``chunk``: seq // chunk
    whole chunks and one partial chunk of seq % chunk tokens, each attended on its own. causal: n(n+1)/2 per
    chunk of n tokens; full: n x n per chunk (what a kernel run chunk by chunk computes, as the build does)."""
    whole, rest = divmod(seq, chunk)
    if convention == "full":
        return whole * chunk * chunk + rest * rest
    return whole * chunk * (chunk + 1) // 2 + rest * (rest + 1) // 2


@dataclass(frozen=True)
class Attention(MixerKind):
    """Multi-head attention with grouped KV heads."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    qkv_bias: bool = False
    o_bias: bool = False
    rope: bool = True
    rotary_dim: int | None = None  # partial rotary (GPT-NeoX, GPT-J); None = whole head
    rope_theta: float = 10000.0
    sliding_window: int | None = None
    qk_norm: bool | str = False  # False; True = per-head RMSNorm (spec `true` or `head`); "full"; "l2"
    sinks: bool = False  # learned per-head softmax sink logits (gpt-oss)
    attention_chunk: int | None = None  # chunked local attention (Llama 4)
    clip_qkv: float | None = None  # clamp q, k, v (DBRX, OLMoE)
    softcap: float | None = None  # attention-logit soft-capping (Gemma 2)
    scale: float | None = None  # softmax scale; None = head_dim ** -0.5
    output_gate: bool = False  # sigmoid gate on the attention output from q_proj (Qwen3-Next)

    type: ClassVar[str] = "attention"
    category: ClassVar[str] = "attention"
    label: ClassVar[str] = "attn"
    build: ClassVar[str] = "godprof.build.kinds.attention:GQAttention"
    keys: ClassVar[frozenset[str]] = frozenset({
        "type", "num_heads", "num_kv_heads", "head_dim", "qkv_bias", "o_bias", "rope", "rotary_dim",
        "rope_theta", "sliding_window", "qk_norm", "sinks", "attention_chunk", "clip_qkv", "softcap", "scale",
        "output_gate",
    })  # fmt: skip
    required: ClassVar[frozenset[str]] = frozenset({"type", "num_heads"})

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> Attention:
        heads = c.int_(d, "num_heads", p)
        kv = c.int_(d, "num_kv_heads", p, heads)
        if heads % kv:
            c.err((*p, "num_kv_heads"), f"num_heads ({heads}) must be a multiple of num_kv_heads ({kv})")
        if "head_dim" not in d and hidden and hidden % heads:
            c.err((*p, "num_heads"), f"hidden_size ({hidden}) is not divisible by num_heads ({heads}); give head_dim")
        head_dim = c.int_(d, "head_dim", p, max(hidden // heads, 1))  # hidden is 0 when model.hidden_size is bad
        rotary = c.opt_int(d, "rotary_dim", p)
        if rotary is not None and (rotary > head_dim or rotary % 2):
            c.err((*p, "rotary_dim"), f"rotary_dim must be even and <= head_dim ({head_dim}), got {rotary}")
        window = c.opt_int(d, "sliding_window", p)
        chunk = c.opt_int(d, "attention_chunk", p)
        if window is not None and chunk is not None:
            c.err((*p, "attention_chunk"), "give either sliding_window or attention_chunk, not both")
        return cls(
            num_heads=heads,
            num_kv_heads=kv,
            head_dim=head_dim,
            qkv_bias=c.bool_(d, "qkv_bias", p, False),
            o_bias=c.bool_(d, "o_bias", p, False),
            rope=c.bool_(d, "rope", p, True),
            rotary_dim=rotary,
            rope_theta=c.float_(d, "rope_theta", p, 10000.0),
            sliding_window=window,
            qk_norm=_qk_norm(c, d, p),
            sinks=c.bool_(d, "sinks", p, False),
            attention_chunk=chunk,
            clip_qkv=_opt_float(c, d, "clip_qkv", p),
            softcap=_opt_float(c, d, "softcap", p),
            scale=_opt_float(c, d, "scale", p),
            output_gate=c.bool_(d, "output_gate", p, False),
        )

    # -- parameters

    def params(self, hidden: int) -> Part:
        """q, k, v, o projections (GQA: k and v have num_kv_heads heads) and one sink logit per head
        (attention); qk-norm weights (norms): 2 x head_dim per head (shared by the heads), (num_heads +
        num_kv_heads) x head_dim for full-width norms, none for the L2 norm."""
        p = Part()
        H, K, D = self.num_heads, self.num_kv_heads, self.head_dim
        p.linear("attention", hidden, (2 if self.output_gate else 1) * H * D, self.qkv_bias)  # with the gate
        p.linear("attention", hidden, K * D, self.qkv_bias, count=2)
        p.linear("attention", H * D, hidden, self.o_bias)
        if self.sinks:
            p.add("attention", H)
        if self.qk_norm is True:
            p.add("norms", 2 * D)  # RMSNorm(head_dim) on q and on k, shared across heads
        elif self.qk_norm == "full":
            p.add("norms", (H + K) * D)  # RMSNorm(H x D) on q, RMSNorm(K x D) on k
        return p

    # -- cache

    def kv_elements_per_token(self) -> int:
        """K and V: num_kv_heads x head_dim each."""
        return 2 * self.num_kv_heads * self.head_dim

    def cached_tokens(self, context: int) -> int:
        """All tokens, or at most the sliding window; with chunked attention at most one chunk C. At a
        context c a chunked layer needs only c % C tokens (c - c % C .. c - 1) or C when c % C == 0; the
        cap C is what the build allocates (a ring of C slots) and what the memory figures use."""
        cap = self.sliding_window if self.sliding_window is not None else self.attention_chunk
        return context if cap is None else min(context, cap)

    def kv_tp_fraction(self, tp: int) -> float:
        """KV heads split across ranks; with fewer KV heads than ranks they are replicated."""
        return 1.0 / min(tp, self.num_kv_heads)

    def tp_problem(self, tp: int) -> str | None:
        """Heads must divide by tp (vLLM, Megatron-LM); KV heads must divide by tp or tp by them."""
        if self.num_heads % tp:
            return f"{self.num_heads} attention heads do not split {tp} ways"
        if self.num_kv_heads % tp and tp % self.num_kv_heads:
            return f"{self.num_kv_heads} KV heads do not split {tp} ways"
        return None

    def tp_rank(self, tp: int) -> Attention:
        """num_heads / tp query heads and num_kv_heads / tp KV heads per rank (one when tp exceeds the KV
        heads: each rank keeps the KV head its queries read, as ``kv_tp_fraction`` counts), Megatron-LM's
        column-parallel q/k/v and row-parallel o_proj. Full-width qk norms normalise across every head,
        so they would need a collective of their own: not split."""
        problem = self.tp_problem(tp) or ("full-width qk norms span all heads" if self.qk_norm == "full" else None)
        if problem:
            raise ValueError(problem)
        return replace(self, num_heads=self.num_heads // tp, num_kv_heads=max(1, self.num_kv_heads // tp))

    def tp_risks(self, tp: int) -> list[str]:
        kvh = self.num_kv_heads
        if tp > kvh:
            return [f"tp {tp} exceeds the {kvh} KV heads: the KV cache is replicated {tp // kvh}x"]
        return []

    # -- FLOPs

    def pairs(self, seq: int, convention: str) -> int:
        """Query-key pairs of one sequence: a sliding window caps the causal count (``attended_pairs``);
        chunked attention counts within each chunk in both conventions (``chunked_pairs``). A sink adds no
        product: it is one more logit in each softmax, not a key."""
        if self.attention_chunk is not None:
            return chunked_pairs(seq, self.attention_chunk, convention)
        return attended_pairs(seq, self.sliding_window, convention)

    def attention_flops(self, batch: int, seq: int, convention: str) -> int:
        """2 x batch x heads x pairs x (d_qk + d_v) (``pairs``: a causal kernel's stop at the window; a
        chunked layer's stay inside each chunk). Soft-capping, clipping and sinks are elementwise: not counted."""
        return 2 * batch * self.num_heads * self.pairs(seq, convention) * 2 * self.head_dim

    def decode_keys(self, context: int) -> int:
        """Keys the token at position context - 1 attends: all ``context``, at most the window, or with
        chunked attention the keys of its own chunk so far, (context - 1) % C + 1 (1 to C; averaged over a
        long generation, (C + 1) / 2)."""
        if self.attention_chunk is not None:
            return (context - 1) % self.attention_chunk + 1
        return self.cached_tokens(context)

    def decode_attention_flops(self, context: int) -> int:
        return 2 * self.num_heads * self.decode_keys(context) * 2 * self.head_dim

    # -- activations

    def rope_table(self) -> tuple[int, float] | None:
        return ((self.rotary_dim or self.head_dim), self.rope_theta) if self.rope else None

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """q, k, v projections, then the phases that each hold them (as the build runs them):

        - qk norms: q's norm (an fp32 working copy, its square or product, per-row statistics; the L2
          norm also its output in the activation dtype), then k's beside the normed q (``qk_norm_bytes``);
        - rotary on q (the un-rotated q, k, v stay referenced until both are rotated), then on k;
        - the attention kernel (``kernel_bytes``): its output and fp32 log-sum-exp (flash); with sinks
          also the rescaled copy of the output; or the math kernel's temporaries; or, without a fused
          kernel, the build's explicit scores (soft-capping or sinks);
        - o_proj beside the attention output (and a token-major copy of it where the kernel wrote it
          head-major: after a partial rotary, or from the explicit attention).

        With ``output_gate`` q_proj's output holds query and gate, and stays whole while the gate is used
        (one more q-sized tensor in every phase); o_proj then runs beside the attention output and
        sigmoid(gate) multiplied by it in place (token-major, so no copy of the output).

        Chunked layers allocate the whole output first and run the kernel one chunk at a time. Clamping
        is in place. Leaves out the repeated KV heads and masks of sliding-window prefill."""
        t = batch * seq
        H, K, D = self.num_heads, self.num_kv_heads, self.head_dim
        q, kv = t * H * D, t * K * D
        base = t * hidden + q + 2 * kv  # normed input, q, k, v
        if self.output_gate:
            base += q  # the gate half of q_proj's output
        rd = (self.rotary_dim or D) if self.rope else 0
        # o_proj's output beside the attention output, and a copy of that output laid out token-major when
        # the kernel wrote it head-major (it follows q's layout: a partial rotary re-joins q head-major;
        # explicit attention computes head-major); a chunked layer writes token-major itself
        explicit = self.softcap is not None or (self.sinks and not flash)
        copy = self.attention_chunk is None and ((0 < rd < D) or explicit)
        if self.output_gate:  # sigmoid(gate) times the output in place, token-major: no copy
            phases = [a * (base + 2 * q + t * hidden)]
        else:
            phases = [a * (base + q + t * hidden + (q if copy else 0))]
        if self.qk_norm:
            rows_q, rows_k = (t, t) if self.qk_norm == "full" else (t * H, t * K)
            phases.append(a * base + self.qk_norm_bytes(q, rows_q, a))
            phases.append(a * (base + q) + self.qk_norm_bytes(kv, rows_k, a))
        if rd:
            phases += [a * (base + rope_peak(t, H, D, rd)), a * (base + q + rope_peak(t, K, D, rd))]
        if self.attention_chunk is not None:
            c = min(seq, self.attention_chunk)
            phases.append(a * (base + q) + self.kernel_bytes(batch, c, c, a, flash))
        else:
            phases.append(a * base + self.kernel_bytes(batch, seq, seq, a, flash))
        return max(phases)

    def qk_norm_bytes(self, n: int, rows: int, a: int) -> int:
        """Temporaries of one qk norm over n elements in ``rows`` rows (the build's RMSNorm and
        ``l2_norm``). RMSNorm: an fp32 copy and its square (with the per-row statistics), then the
        normalised fp32 product and its weighted output: 2 fp32 values per element. L2: the fp32 copy,
        the product and its cast to the activation dtype; in fp32 (no copy, no cast) the product and
        statistics."""
        if self.qk_norm == "l2":
            return FP32_BYTES * (n + rows) if a == FP32_BYTES else (2 * FP32_BYTES + a) * n
        return 2 * FP32_BYTES * n + (FP32_BYTES * rows if a != FP32_BYTES else 0)

    def kernel_bytes(self, batch: int, sq: int, sk: int, a: int, flash: bool) -> int:
        """One attention call of sq queries over sk keys, its output included. Fused (flash): the output and
        the fp32 log-sum-exp, soft-capped or not (FlashAttention 2 caps inside the kernel); sinks rescale
        the output by sigmoid(lse - sink): an fp32 factor per head and query (and its cast) and the
        rescaled copy. Unfused: PyTorch's math kernel (``math_sdpa_bytes``), or where the build computes
        the scores itself (soft-capping everywhere, sinks off CPU) ``explicit_attention_bytes``."""
        H, K, D = self.num_heads, self.num_kv_heads, self.head_dim
        out, rows = a * batch * H * sq * D, batch * H * sq
        if flash:
            if self.sinks:
                return 2 * out + (2 * FP32_BYTES + (a if a != FP32_BYTES else 0)) * rows
            return out + FP32_BYTES * rows
        if self.softcap is not None or self.sinks:
            return explicit_attention_bytes(batch, sq, sk, H, D, a, self.sinks)
        cv = FP32_BYTES if a != FP32_BYTES else 0
        return math_sdpa_bytes(batch, sq, H, D, K, D, cv)

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """Norm input and output, q/k/v and the attention output (Korthikanti et al. 2022, sec. 4.1); with
        qk norms also their inputs, the raw q and k projections ((num_heads + num_kv_heads) x head_dim);
        sinks save nothing per token beyond the softmax statistics SDPA keeps; an output gate saves the
        gate's sigmoid and the gated output (num_heads x head_dim each)."""
        H, K, D = self.num_heads, self.num_kv_heads, self.head_dim
        el, fp32 = sdpa_train_saved(H, seq, w)
        el += 2 * hidden + (H + 2 * K) * D + H * D
        if self.qk_norm:
            el += (H + K) * D
        if self.output_gate:
            el += 2 * H * D
        return el, fp32

    def fused_on_cpu(self) -> bool:
        """PyTorch's CPU flash kernel runs everything but soft-capping (the build computes capped scores
        itself)."""
        return self.softcap is None


def explicit_attention_bytes(batch: int, sq: int, sk: int, heads: int, head_dim: int, a: int, sinks: bool) -> int:
    """Peak temporaries of the build's explicit attention (``godprof.build.sdpa.explicit_attention``) over
    sq queries x sk keys, the larger of two phases: the softmax, two fp32 score tensors (the capped and
    masked scores and their softmax, one column wider with a sink) and the bool mask; then the value
    product, the fp32 probabilities (and their cast to the activation dtype), the values broadcast over
    the query heads of their group (a copy matmul makes) and the output. Leaves out the int64 positions
    difference the mask is built from (freed before the softmax)."""
    rows = batch * heads * sq
    wide = rows * (sk + (1 if sinks else 0))
    softmax = 2 * FP32_BYTES * wide + sq * sk
    product = FP32_BYTES * wide + (a * rows * sk if a != FP32_BYTES else 0) + 2 * a * rows * head_dim + sq * sk
    return max(softmax, product)


def _opt_float(c: Checker, d: dict[str, Any], key: str, p: KeyPath) -> float | None:
    return None if d.get(key) is None else c.float_(d, key, p, 1.0)


def _qk_norm(c: Checker, d: dict[str, Any], p: KeyPath) -> bool | str:
    """``qk_norm``: false, true or ``head`` (per-head RMSNorm, stored as True), ``full`` or ``l2``."""
    v = d.get("qk_norm")
    if v is None or isinstance(v, bool):
        return bool(v)
    if v not in QK_NORMS:
        c.err((*p, "qk_norm"), f"must be true, false or one of {', '.join(QK_NORMS)}, got {v!r}")
        return False
    return True if v == "head" else v
