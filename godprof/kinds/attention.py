"""``type: attention``: multi-head attention with grouped KV heads (MHA when kv == heads, MQA when kv == 1).

Structure (transformers' LlamaAttention and its relatives): q, k, v, o projections (k and v with
``num_kv_heads`` heads), optional biases (q/k/v and o separately: Qwen2 has q/k/v biases and no o
bias), optional per-head RMSNorm on q and k (Qwen3), rotary on the first ``rotary_dim`` features of
each head (partial rotary: GPT-NeoX, GPT-J, Phi), and an optional sliding window that caps the keys
each query sees and the KV cache (a ring buffer of ``sliding_window`` slots).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.base import FP32_BYTES, MixerKind, Part, attended_pairs

if TYPE_CHECKING:
    from godprof.analytic.workload import Workload


def rope_peak(t: int, heads: int, d: int, rd: int) -> int:
    """Elements besides the input while rotating ``heads`` heads of t tokens: the rotated half, x*cos,
    rotated*sin and their sum (4 x rd); with partial rotary, then the sum and the re-joined head (rd + d)."""
    return t * heads * max(4 * rd, d + rd if rd < d else 0)


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
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3, OLMo-2)

    type: ClassVar[str] = "attention"
    category: ClassVar[str] = "attention"
    label: ClassVar[str] = "attn"
    build: ClassVar[str] = "godprof.build.kinds.attention:GQAttention"
    keys: ClassVar[frozenset[str]] = frozenset({
        "type", "num_heads", "num_kv_heads", "head_dim", "qkv_bias", "o_bias", "rope", "rotary_dim",
        "rope_theta", "sliding_window", "qk_norm",
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
        return cls(
            num_heads=heads,
            num_kv_heads=kv,
            head_dim=head_dim,
            qkv_bias=c.bool_(d, "qkv_bias", p, False),
            o_bias=c.bool_(d, "o_bias", p, False),
            rope=c.bool_(d, "rope", p, True),
            rotary_dim=rotary,
            rope_theta=c.float_(d, "rope_theta", p, 10000.0),
            sliding_window=c.opt_int(d, "sliding_window", p),
            qk_norm=c.bool_(d, "qk_norm", p, False),
        )

    def params(self, hidden: int) -> Part:
        """q, k, v, o projections (GQA: k and v have num_kv_heads heads); qk-norm weights go to norms."""
        p = Part()
        p.linear("attention", hidden, self.num_heads * self.head_dim, self.qkv_bias)
        p.linear("attention", hidden, self.num_kv_heads * self.head_dim, self.qkv_bias, count=2)
        p.linear("attention", self.num_heads * self.head_dim, hidden, self.o_bias)
        if self.qk_norm:
            p.add("norms", 2 * self.head_dim)  # RMSNorm(head_dim) on q and on k, shared across heads
        return p

    def kv_elements_per_token(self) -> int:
        """K and V: num_kv_heads x head_dim each."""
        return 2 * self.num_kv_heads * self.head_dim

    def cached_tokens(self, context: int) -> int:
        """All tokens, or at most the sliding window."""
        return context if self.sliding_window is None else min(context, self.sliding_window)

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

    def tp_risks(self, tp: int) -> list[str]:
        kvh = self.num_kv_heads
        if tp > kvh:
            return [f"tp {tp} exceeds the {kvh} KV heads: the KV cache is replicated {tp // kvh}x"]
        return []

    def attention_flops(self, batch: int, seq: int, convention: str) -> int:
        """2 x batch x heads x pairs x (d_qk + d_v); a causal kernel's pairs stop at the window."""
        return 2 * batch * self.num_heads * attended_pairs(seq, self.sliding_window, convention) * 2 * self.head_dim

    def decode_attention_flops(self, context: int) -> int:
        return 2 * self.num_heads * self.cached_tokens(context) * 2 * self.head_dim

    def rope_table(self) -> tuple[int, float] | None:
        return ((self.rotary_dim or self.head_dim), self.rope_theta) if self.rope else None

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """q, k, v projections, then either rotary on q (the un-rotated q, k, v stay referenced until
        both are rotated) or on k, or the attention itself: rotated q, k, v, the output, and the larger of
        the kernel's fp32 log-sum-exp and o_proj's output (flash), or the math kernel's temporaries.
        Leaves out qk-norm temporaries and the repeated KV heads and masks of sliding-window prefill."""
        t = batch * seq
        H, K, D = self.num_heads, self.num_kv_heads, self.head_dim
        q, kv = t * H * D, t * K * D
        base = t * hidden + q + 2 * kv  # normed input, q, k, v
        rd = (self.rotary_dim or D) if self.rope else 0
        phases = []
        if rd:
            phases += [a * (base + rope_peak(t, H, D, rd)), a * (base + q + rope_peak(t, K, D, rd))]
        cv = FP32_BYTES if a != FP32_BYTES else 0
        if flash:
            attend = a * (base + q) + max(FP32_BYTES * batch * H * seq, a * t * hidden)
        else:
            attend = a * base + math_sdpa_bytes(batch, seq, H, D, K, D, cv)
        return max([attend, *phases])

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """Norm input and output, q/k/v and the attention output (Korthikanti et al. 2022, sec. 4.1)."""
        el, fp32 = sdpa_train_saved(self.num_heads, seq, w)
        el += 2 * hidden + (self.num_heads + 2 * self.num_kv_heads) * self.head_dim + self.num_heads * self.head_dim
        return el, fp32
