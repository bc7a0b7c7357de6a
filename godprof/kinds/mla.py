"""``type: mla``: DeepSeek-V2/V3 multi-head latent attention.

Structure (transformers' DeepseekV3Attention, DeepSeek's reference code): q through a low-rank pair
q_a_proj -> RMSNorm -> q_b_proj (or one q_proj when ``q_lora_rank`` is null: DeepSeek-V2-Lite);
kv_a_proj_with_mqa gives a compressed latent (``kv_lora_rank``, RMSNorm'd) and one rope key shared by
all heads (``qk_rope_head_dim``); kv_b_proj decompresses the latent into per-head k_nope and v. The
cache keeps only the latent and the rope key. Prefill decompresses; decode attends in latent space with
kv_b_proj absorbed into the query and the output (same multiply-adds as kv_b_proj, counted with the
Linear weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.attention import math_sdpa_bytes, sdpa_train_saved
from godprof.kinds.base import FP32_BYTES, MixerKind, Part, attended_pairs

if TYPE_CHECKING:
    from godprof.analytic.workload import Workload


@dataclass(frozen=True)
class MLA(MixerKind):
    """Multi-head latent attention: low-rank q and a compressed, cached kv latent."""

    num_heads: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None = None  # None: q is a full projection (DeepSeek-V2-Lite)
    bias: bool = False
    rope_theta: float = 10000.0
    rope: bool = True  # false: the rope dims carry no rotation (Kimi Linear's MLA layers are NoPE)

    type: ClassVar[str] = "mla"
    category: ClassVar[str] = "attention"
    label: ClassVar[str] = "mla"
    efficiency_class: ClassVar[str] = "mla"
    build: ClassVar[str] = "godprof.build.kinds.mla:MLAttention"
    keys: ClassVar[frozenset[str]] = frozenset({
        "type", "num_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
        "v_head_dim", "bias", "rope_theta", "rope",
    })  # fmt: skip
    required: ClassVar[frozenset[str]] = frozenset(
        {"type", "num_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"}
    )

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> MLA:
        rope_dim = c.int_(d, "qk_rope_head_dim", p)
        if rope_dim % 2:
            c.err((*p, "qk_rope_head_dim"), f"must be even for rotary embedding, got {rope_dim}")
        return cls(
            num_heads=c.int_(d, "num_heads", p),
            q_lora_rank=c.opt_int(d, "q_lora_rank", p),
            kv_lora_rank=c.int_(d, "kv_lora_rank", p),
            qk_nope_head_dim=c.int_(d, "qk_nope_head_dim", p),
            qk_rope_head_dim=rope_dim,
            v_head_dim=c.int_(d, "v_head_dim", p),
            bias=c.bool_(d, "bias", p, False),
            rope_theta=c.float_(d, "rope_theta", p, 10000.0),
            rope=c.bool_(d, "rope", p, True),
        )

    def params(self, hidden: int) -> Part:
        """q_a/q_b (or q), kv_a_proj_with_mqa, kv_b, o; two RMSNorms on the latents. ``bias`` follows
        ``attention_bias`` in the reference: on q_a_proj, kv_a_proj_with_mqa and o_proj."""
        p = Part()
        q_out = self.num_heads * self.qk_head_dim
        if self.q_lora_rank is None:
            p.linear("attention", hidden, q_out, False)
        else:
            p.linear("attention", hidden, self.q_lora_rank, self.bias)
            p.add("norms", self.q_lora_rank)
            p.linear("attention", self.q_lora_rank, q_out, False)
        p.linear("attention", hidden, self.kv_lora_rank + self.qk_rope_head_dim, self.bias)
        p.add("norms", self.kv_lora_rank)
        p.linear("attention", self.kv_lora_rank, self.num_heads * (self.qk_nope_head_dim + self.v_head_dim), False)
        p.linear("attention", self.num_heads * self.v_head_dim, hidden, self.bias)
        return p

    def kv_elements_per_token(self) -> int:
        """The compressed latent plus its shared rope key."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    def kv_tp_fraction(self, tp: int) -> float:
        """The latent has no head axis: every tensor-parallel rank holds all of it (vLLM's MLA backend)."""
        return 1.0

    def tp_problem(self, tp: int) -> str | None:
        return f"{self.num_heads} attention heads do not split {tp} ways" if self.num_heads % tp else None

    def tp_risks(self, tp: int) -> list[str]:
        return [f"MLA's compressed KV latent is replicated on all {tp} tensor-parallel ranks"] if tp > 1 else []

    def attention_flops(self, batch: int, seq: int, convention: str) -> int:
        """Prefill decompresses K and V: qk = nope + rope, v = v_head_dim."""
        pairs = attended_pairs(seq, None, convention)
        return 2 * batch * self.num_heads * pairs * (self.qk_head_dim + self.v_head_dim)

    def decode_attention_flops(self, context: int) -> int:
        """Decode attends in the latent space: qk = kv_lora_rank + rope, v = kv_lora_rank."""
        return 2 * self.num_heads * context * (2 * self.kv_lora_rank + self.qk_rope_head_dim)

    def rope_table(self) -> tuple[int, float] | None:
        return (self.qk_rope_head_dim, self.rope_theta) if self.rope else None

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """Prefill decompresses: the q projection, the kv latent (raw and normed), rotated q/k rope parts,
        kv_b_proj's output, the concatenated k and q, then the output (flash) or the math temporaries."""
        t = batch * seq
        H, qk, v, r, rp = self.num_heads, self.qk_head_dim, self.v_head_dim, self.kv_lora_rank, self.qk_rope_head_dim
        rotated = H * rp + rp if self.rope else 0  # rotary's copies of the q and k rope parts
        held = t * (hidden + H * qk + (r + rp) + r + rotated + H * (self.qk_nope_head_dim + v) + 2 * H * qk)
        cv = FP32_BYTES if a != FP32_BYTES else 0
        if flash:
            return a * (held + t * H * v) + max(FP32_BYTES * batch * H * seq, a * t * hidden)
        return a * held + math_sdpa_bytes(batch, seq, H, qk, H, v, cv)

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """Norm input/output, both latents (raw and normed), the rope key, q, k, v and the output."""
        el, fp32 = sdpa_train_saved(self.num_heads, seq, w)
        el += 2 * hidden + (self.q_lora_rank or 0) * 2 + self.kv_lora_rank * 2 + self.qk_rope_head_dim
        el += self.num_heads * (2 * self.qk_head_dim + 2 * self.v_head_dim)
        return el, fp32

    def fused_on_cpu(self) -> bool:
        """CPU flash SDPA needs equal q/k and v head dims (DeepSeek: 192 vs 128 runs the math kernel)."""
        return self.v_head_dim == self.qk_head_dim
