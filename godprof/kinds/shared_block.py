"""``type: shared_block``: a transformer block whose weights several layers share, feeding a per-layer mixer
(Zamba2's hybrid layer).

Zamba2 (transformers ``models/zamba2/modeling_zamba2.py``: ``Zamba2HybridLayer``,
``Zamba2AttentionDecoderLayer``, ``Zamba2Attention``, ``Zamba2MLP``; Glorioso et al. 2024, "The Zamba2
Suite", fig. 2) puts a shared attention + MLP block in front of the Mamba-2 mixer of some layers. One layer
with input x and the token embeddings e computes::

    t = linear(mlp(norm_f(attn(norm_a(concat(x, e))))))     # no residual inside the shared block
    out = x + inner(norm_i(x + t))

- ``norm_a`` is an RMSNorm over the 2 x hidden concatenation; attention reads 2 x hidden features
  (q: heads x head_dim, k and v: kv heads x head_dim, head_dim = 2 x hidden / heads by default) and
  o_proj writes hidden; its softmax scale is (head_dim / 2)^-0.5 (written in the entry's ``scale``);
  rotary over the whole head when ``rope`` (``use_mem_rope``).
- ``norm_f`` is an RMSNorm over hidden; the MLP is gated: down(act(gate) x up) with one fused
  ``gate_up_proj`` (hidden -> 2 x intermediate), biases when ``mlp_bias`` (``add_bias_linear``).
- Per use (one per layer that names the entry; Zamba2 cycles ``num_mem_blocks`` shared blocks over its
  hybrid layers): LoRA adapters of ``adapter_rank`` added to projections of the shared weights (transformers
  keeps them in per-use lists inside the shared module): on ``gate_up_proj`` (hidden -> rank -> 2 x
  intermediate), and with ``attention_adapters`` (``use_shared_attention_adapter``) on q, k and v (each
  2 x hidden -> rank -> 2 x hidden); the ``linear`` hidden -> hidden without bias; the inner mixer (any
  kind but ``none``, ``parallel`` and this one; Zamba2: Mamba-2) and its own pre-norm ``norm_i`` (an
  RMSNorm over hidden: the block's generic pre-norm is skipped, ``owns_norm``).

Counting (the generic capability ``godprof.analytic.params`` and ``godprof.build.model`` read): the
shared weights (``shared_params``: both norms, q/k/v/o, gate_up and down) are stored once per
``shared_key``, however many layers use them; ``params`` is what each use adds (adapters, linear, inner
mixer and its norm), with the shared weights' matmul weights added to its ``matmul`` because every use
multiplies by them. ``shared_key`` holds the ``share`` name and the whole shared configuration, so
entries that name the same ``share`` but differ in its shape are counted apart (and the build refuses
them). The KV cache is per use (each use attends over its own keys), the state is the inner mixer's,
and FLOPs count every use. The block's norms are RMSNorms whatever the model's ``norm``. Not modelled:
Mamba-2's ``time_step_min`` clamp of dt (no parameters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.attention import Attention
from godprof.kinds.base import ACTIVATIONS, MixerKind, Part, parse_kind

if TYPE_CHECKING:
    from godprof.analytic.workload import Workload

# attention options the shared block's build does not implement, with their default values
_PLAIN_ATTENTION = {
    "qkv_bias": False, "o_bias": False, "rotary_dim": None, "sliding_window": None, "qk_norm": False,
    "sinks": False, "attention_chunk": None, "clip_qkv": None, "softcap": None, "output_gate": False,
}  # fmt: skip


@dataclass(frozen=True)
class SharedBlock(MixerKind):
    """A shared attention + MLP block on concat(x, embeddings), projected and added to the input of a
    per-layer inner mixer."""

    share: str
    attention: Attention
    inner: MixerKind
    intermediate_size: int
    activation: str = "gelu"
    mlp_bias: bool = False
    adapter_rank: int = 0
    attention_adapters: bool = False

    type: ClassVar[str] = "shared_block"
    build: ClassVar[str] = "godprof.build.kinds.shared_block:SharedBlockMixer"
    keys: ClassVar[frozenset[str]] = frozenset({
        "type", "share", "attention", "inner", "intermediate_size", "activation", "mlp_bias", "adapter_rank",
        "attention_adapters",
    })  # fmt: skip
    required: ClassVar[frozenset[str]] = frozenset({"type", "share", "attention", "inner", "intermediate_size"})
    owns_norm: ClassVar[bool] = True  # the block adds no pre-norm: the mixer normalises (x + t) itself

    @property
    def category(self) -> str:  # type: ignore[override]
        return "+".join(dict.fromkeys(("attention", self.inner.category)))

    @property
    def categories(self) -> frozenset[str]:
        return frozenset({"attention"}) | self.inner.categories

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"shared[{self.share}]+{self.inner.label}"

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> SharedBlock:
        from godprof.kinds import MIXER_KINDS  # this module is one of the registry's entries

        share = d.get("share")
        if not isinstance(share, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", share):
            c.err((*p, "share"), "expected a name (letters, digits, _) that the layers sharing the block give")
            share = "invalid"
        q = (*p, "attention")
        attn: Any = None
        if isinstance(d.get("attention"), dict) and d["attention"].get("type") != "attention":
            c.err((*q, "type"), "expected 'attention' (the shared block's attention)")
        else:
            ok, attn = parse_kind(c, d.get("attention"), q, 2 * hidden, MIXER_KINDS, "mixer")
            for key, default in _PLAIN_ATTENTION.items():
                if ok and getattr(attn, key) != default:
                    c.err((*q, key), "not supported in a shared block's attention")
            if ok and attn.num_heads * attn.head_dim != 2 * hidden:
                c.err((*q, "head_dim"), f"heads x head_dim must be 2 x hidden_size ({2 * hidden}): the q adapter "
                      "and the concatenated input have that width")  # fmt: skip
        q = (*p, "inner")
        raw = d.get("inner")
        kind = raw.get("type") if isinstance(raw, dict) else None
        inner: Any = None
        if kind in (cls.type, "none", "parallel"):
            c.err((*q, "type"), f"a shared block's inner mixer cannot be '{kind}'")
        else:
            inner = parse_kind(c, raw, q, hidden, MIXER_KINDS, "mixer")[1]
        act = c.str_(d, "activation", p, "gelu")
        if act not in ACTIVATIONS:
            c.err((*p, "activation"), f"unknown activation {act!r}; expected one of {', '.join(ACTIVATIONS)}")
        rank = c.int_(d, "adapter_rank", p, 0, minimum=0)
        adapters = c.bool_(d, "attention_adapters", p, False)
        if adapters and not rank:
            c.err((*p, "attention_adapters"), "needs adapter_rank > 0")
        if attn is not None and inner is not None:
            tables = {t for t in (attn.rope_table(), inner.rope_table()) if t is not None}
            if len(tables) > 1:
                c.err(q, "the inner mixer and the shared attention read different rotary tables; one is supported")
        if attn is not None and adapters and attn.num_kv_heads != attn.num_heads:
            c.err((*p, "attention_adapters"), "k and v adapters write 2 x hidden: they need num_kv_heads = num_heads")
        return cls(
            share=share,
            attention=attn if attn is not None else Attention(1, 1, 1),
            inner=inner if inner is not None else attn,
            intermediate_size=c.int_(d, "intermediate_size", p),
            activation=act or "gelu",
            mlp_bias=c.bool_(d, "mlp_bias", p, False),
            adapter_rank=rank,
            attention_adapters=adapters,
        )

    # -- parameters

    def shared_key(self) -> tuple[Any, ...]:
        """What the shared weights are stored under: the ``share`` name and everything that shapes them, so
        two entries count (and build) one set of weights only when they describe the same block."""
        return (self.share, self.attention, self.intermediate_size, self.activation, self.mlp_bias)

    def shared_params(self, hidden: int) -> Part:
        """The weights stored once per ``share``: RMSNorm(2 x hidden) and RMSNorm(hidden) (norms); q, k, v
        from 2 x hidden and o_proj to hidden, no biases (attention); gate_up_proj hidden -> 2 x intermediate
        and down_proj back, with biases when ``mlp_bias`` (mlp). ``matmul`` is 0 here: each use counts them
        (``params``)."""
        p = Part()
        H, K, D = self.attention.num_heads, self.attention.num_kv_heads, self.attention.head_dim
        p.add("norms", 3 * hidden)
        p.linear("attention", 2 * hidden, H * D, False)
        p.linear("attention", 2 * hidden, K * D, False, count=2)
        p.linear("attention", H * D, hidden, False)
        p.linear("mlp", hidden, 2 * self.intermediate_size, self.mlp_bias)
        p.linear("mlp", self.intermediate_size, hidden, self.mlp_bias)
        p.matmul = 0
        return p

    def params(self, hidden: int) -> Part:
        """What one use adds: the inner mixer and its RMSNorm(hidden) pre-norm, the ``linear`` hidden ->
        hidden (attention), the gate_up adapter hidden -> rank -> 2 x intermediate (mlp) and, with
        ``attention_adapters``, the q/k/v adapters 2 x hidden -> rank -> 2 x hidden (attention). ``matmul``
        also holds the shared weights, which every use multiplies by."""
        p = self.inner.params(hidden)
        p.add("norms", hidden)
        p.linear("attention", hidden, hidden, False)
        r = self.adapter_rank
        if r:
            p.linear("mlp", hidden, r, False)
            p.linear("mlp", r, 2 * self.intermediate_size, False)
            if self.attention_adapters:
                p.linear("attention", 2 * hidden, r, False, count=3)
                p.linear("attention", r, 2 * hidden, False, count=3)
        p.matmul += self.shared_matmul(hidden)
        return p

    def shared_matmul(self, hidden: int) -> int:
        """Matmul weights of the shared block, used once per use per token."""
        H, K, D = self.attention.num_heads, self.attention.num_kv_heads, self.attention.head_dim
        return 2 * hidden * (H + 2 * K) * D + H * D * hidden + 3 * hidden * self.intermediate_size

    # -- cache and state: the attention's keys per use, the inner mixer's state

    def kv_elements_per_token(self) -> int:
        return self.attention.kv_elements_per_token() + self.inner.kv_elements_per_token()

    def cached_tokens(self, context: int) -> int:
        """All tokens (the shared attention has no window; an inner mixer with a KV cache must keep all too)."""
        return context

    def state_elements(self) -> int:
        return self.inner.state_elements()

    def decode_read_elements(self, context: int) -> int:
        return self.attention.decode_read_elements(context) + self.inner.decode_read_elements(context)

    def kv_tp_fraction(self, tp: int) -> float:
        return self.attention.kv_tp_fraction(tp)

    def tp_problem(self, tp: int) -> str | None:
        problems = [q for q in (self.attention.tp_problem(tp), self.inner.tp_problem(tp)) if q]
        return "; ".join(problems) or None

    def tp_risks(self, tp: int) -> list[str]:
        return self.attention.tp_risks(tp) + self.inner.tp_risks(tp)

    # -- FLOPs: every use

    def attention_flops(self, batch: int, seq: int, convention: str) -> int:
        inner = self.inner.attention_flops(batch, seq, convention)
        return self.attention.attention_flops(batch, seq, convention) + inner

    def decode_attention_flops(self, context: int) -> int:
        return self.attention.decode_attention_flops(context) + self.inner.decode_attention_flops(context)

    def scan_flops(self, batch: int, seq: int) -> int:
        return self.inner.scan_flops(batch, seq)

    def scan_matmul_flops(self, batch: int, seq: int) -> int:
        return self.inner.scan_matmul_flops(batch, seq)

    def scan_decode_flops(self) -> int:
        return self.inner.scan_decode_flops()

    def conv_flops_per_token(self) -> int:
        return self.inner.conv_flops_per_token()

    # -- activations

    def rope_table(self) -> tuple[int, float] | None:
        return self.attention.rope_table() or self.inner.rope_table()

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """The build's phases, one after the other, each beside the token embeddings the model keeps for
        the shared blocks during the whole forward (hidden per token; the block input itself is the
        caller's): the attention on the normed concatenation (its own peak at 2 x hidden, plus the
        concatenation); the MLP (its normed input, gate_up output, the activation and product, the
        adapter's rank-wide intermediate, the attention output); the inner mixer on norm(x + t) with
        x + t beside it. On the tiny specs of tests/test_zamba2.py the inner phase is the peak and this
        equals the live-tensor peak to the byte; the attention and MLP phases are counted more coarsely
        (their norms' fp32 temporaries are left out)."""
        t = batch * seq
        th = a * t * hidden
        inter = a * t * self.intermediate_size
        attn = 2 * th + self.attention.prefill_peak_bytes(2 * hidden, batch, seq, a, flash)
        mlp = 3 * th + 4 * inter + a * t * self.adapter_rank
        inner = th + self.inner.prefill_peak_bytes(hidden, batch, seq, a, flash)
        return th + max(attn, mlp, inner)

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """The attention's (at 2 x hidden), the MLP's (normed input, gate_up output, activation, product;
        the adapter's rank-wide intermediate), the linear's input and the inner mixer's (with its norm)."""
        ea, fa = self.attention.train_saved(2 * hidden, seq, w)
        ei, fi = self.inner.train_saved(hidden, seq, w)
        mlp = 2 * hidden + 4 * self.intermediate_size + self.adapter_rank
        return ea + mlp + hidden + ei, fa + fi

    def fused_on_cpu(self) -> bool:
        return self.attention.fused_on_cpu() and self.inner.fused_on_cpu()
