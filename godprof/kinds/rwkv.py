"""``type: rwkv_time_mix`` and ``type: rwkv_channel_mix``: RWKV-4's token mixer (the WKV linear attention)
and channel mixer (Peng et al. 2023, arXiv:2305.13048), as transformers' ``rwkv`` model_type builds them.

Structure (transformers' models/rwkv/modeling_rwkv.py). Time mix (``RwkvSelfAttention``), with a = the
config's ``attention_hidden_size`` (default hidden): the token shift mixes each token's normed input x_t
with the previous token's x_{t-1} per channel (``time_mix_key``/``_value``/``_receptance``, hidden each);
``key``, ``value``, ``receptance`` (hidden -> a, no bias), then ``output`` (a -> hidden, no bias) over
sigmoid(r) * wkv. Per channel, with w = -exp(``time_decay``) and u = ``time_first`` (a each):

    wkv_t = (num + e^(u + k_t) v_t) / (den + e^(u + k_t)),  num <- e^w num + e^k_t v_t,  den <- e^w den + e^k_t

kept stable with a running max exponent (``rwkv_linear_attention_cpu``): num, den and max per channel.
Channel mix (``RwkvFeedForward``): its own token shift (``time_mix_key``/``_receptance``), ``key``
(hidden -> intermediate, default 4 x hidden), relu(.)^2, ``value`` (intermediate -> hidden), gated by
sigmoid(``receptance`` (hidden -> hidden)). No biases anywhere.

State per sequence, constant in context: num, den, max (3 x a, fp32 in transformers) and the two token
shifts (the last normed input of the time mix and of the channel mix, hidden each). The time mix holds
all five in its cache entry: an FFN slot has no cache, and the channel mix's shift lives and dies with its
layer's time mix (the build hands it over, see ``godprof.build.kinds.rwkv``). Like every state here they
are counted in the cache dtype (transformers keeps num/den/max in fp32: with a bf16 cache they are half
its size).

``pre_norm`` (layer 0 only, transformers' ``RwkvBlock.pre_ln``): the LayerNorm RWKV applies to the
embeddings before the first block, weight and bias, counted under ``norms`` in layer 0's time mix since
transformers holds it in ``blocks[0]``. It acts on each token's embedding alone, so a checkpoint folds it
into the embedding table exactly (E <- pre_ln(E)); the build holds it, folded. ``rescale_every`` (halving
the residual stream at inference) has no parameters.

Parameters are counted under ``attention`` (time mix: linear attention) and ``mlp`` (channel mix).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from godprof.checker import Checker, KeyPath
from godprof.kinds.base import FP32_BYTES, FfnKind, MixerKind, Part

if TYPE_CHECKING:
    from godprof.analytic.workload import Workload

WKV_FLOPS_PER_CHANNEL = 23  # see RwkvTimeMix.scan_flops


@dataclass(frozen=True)
class RwkvTimeMix(MixerKind):
    """RWKV-4's time mix (WKV). ``channels`` is the model's hidden size, taken at parse (the token shifts
    are hidden wide); ``attention_hidden_size`` None means hidden."""

    channels: int
    attention_hidden_size: int | None = None
    pre_norm: bool = False

    type: ClassVar[str] = "rwkv_time_mix"
    category: ClassVar[str] = "linear"
    label: ClassVar[str] = "rwkv"
    efficiency_class: ClassVar[str] = "scan"
    build: ClassVar[str] = "godprof.build.kinds.rwkv:RwkvTimeMixer"
    keys: ClassVar[frozenset[str]] = frozenset({"type", "attention_hidden_size", "pre_norm"})

    @property
    def inner(self) -> int:
        """a: the width of k, v, r and the WKV state."""
        return self.attention_hidden_size or self.channels

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> RwkvTimeMix:
        att = c.int_(d, "attention_hidden_size", p) if d.get("attention_hidden_size") is not None else None
        return cls(channels=hidden, attention_hidden_size=att, pre_norm=c.bool_(d, "pre_norm", p, False))

    # -- parameters

    def params(self, hidden: int) -> Part:
        """time_decay and time_first (a each), the three time_mix vectors (hidden each), key, value and
        receptance (hidden -> a) and output (a -> hidden), no biases; with ``pre_norm``, the embeddings'
        LayerNorm (weight and bias, 2 x hidden) under ``norms``."""
        a = self.inner
        p = Part()
        p.add("attention", 2 * a + 3 * hidden)
        p.linear("attention", hidden, a, False, count=3)  # Order: key, value, receptance
        p.linear("attention", a, hidden, False)
        if self.pre_norm:
            p.add("norms", 2 * hidden)
        return p

    # -- state

    def state_elements(self) -> int:
        """num, den and max (3 x a), the time mix's token shift and the channel mix's (hidden each), per
        sequence, constant in context."""
        return 3 * self.inner + 2 * self.channels

    def tp_problem(self, tp: int) -> str | None:
        return f"{self.inner} WKV channels do not split {tp} ways" if self.inner % tp else None

    # -- FLOPs (the projections are Linear weights: ``forward`` counts them from ``params``)

    def scan_flops(self, batch: int, seq: int) -> int:
        """The WKV recurrence, elementwise per channel and token (``rwkv_linear_attention_cpu``): the
        output, max(max, u + k) (2), two exps of a difference (4), num and den (5), the division (1); the
        state update, max(max + w, k) (2), two exps of a difference (4), num and den (5): 23. The token
        shift mixes and the sigmoid gate are elementwise and not counted (as the other kinds' gates)."""
        return WKV_FLOPS_PER_CHANNEL * self.inner * batch * seq

    def scan_decode_flops(self) -> int:
        """One recurrent step: 23 per channel (see ``scan_flops``)."""
        return WKV_FLOPS_PER_CHANNEL * self.inner

    # -- activations

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """The build's prefill (``godprof.build.kinds.rwkv``) at its largest step, per token: (1) mixing the
        receptance input: the normed input, its shifted copy, k and v, and the mix's three temporaries
        (x mr, shifted (1 - mr), their sum): 5 x hidden + 2 a; or (2) after the WKV loop: the normed input,
        k, v, sigmoid(r), the fp32 WKV output (a), r x wkv (a), and either the WKV output cast to the
        activation dtype (a, none in fp32) or the output projection (hidden); with the fp32 num, den and max
        a sequence starts from (3 a per sequence). The loop's per-token temporaries are [B, a]."""
        t = batch * seq
        inner = self.inner
        mix = a * (5 * hidden + 2 * inner)
        cast = a * inner if a != FP32_BYTES else 0
        out = FP32_BYTES * inner + a * (hidden + 4 * inner) + max(cast, a * hidden)
        return t * max(mix, out) + FP32_BYTES * 3 * batch * inner

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """Per token: the norm's input and output, the shifted input, the three mixed inputs, k, v, r,
        sigmoid(r), the WKV output and the gated output (what autograd keeps through the recurrence)."""
        return 6 * hidden + 6 * self.inner, 0


@dataclass(frozen=True)
class RwkvChannelMix(FfnKind):
    """RWKV-4's channel mix: sigmoid(receptance(xr)) * value(relu(key(xk))^2), xk and xr token-shifted."""

    intermediate_size: int

    type: ClassVar[str] = "rwkv_channel_mix"
    label: ClassVar[str] = "rwkv_cm"
    pairs_with: ClassVar[str | None] = "rwkv_time_mix"  # its token-shift state is in the time mix's cache
    build: ClassVar[str] = "godprof.build.kinds.rwkv:RwkvChannelMixer"
    keys: ClassVar[frozenset[str]] = frozenset({"type", "intermediate_size"})
    required: ClassVar[frozenset[str]] = frozenset({"type", "intermediate_size"})

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> RwkvChannelMix:
        return cls(intermediate_size=c.int_(d, "intermediate_size", p))

    def params(self, hidden: int) -> Part:
        """time_mix_key and time_mix_receptance (hidden each), key (hidden -> intermediate), receptance
        (hidden -> hidden), value (intermediate -> hidden); no biases. Its token shift state is counted by
        the layer's time mix (``RwkvTimeMix.state_elements``)."""
        p = Part()
        p.add("mlp", 2 * hidden)
        p.linear("mlp", hidden, self.intermediate_size, False)
        p.linear("mlp", hidden, hidden, False)
        p.linear("mlp", self.intermediate_size, hidden, False)
        return p

    def tp_problem(self, tp: int) -> str | None:
        n = self.intermediate_size
        return f"intermediate size {n} does not split {tp} ways" if n % tp else None

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int) -> int:
        """The build at its largest step, per token: the normed input and its shifted copy (hidden each)
        beside either key's output and its relu square (intermediate each), or key's mixed input and the
        mix's temporaries (3 x hidden) beside key's output: 2 x hidden + I + max(3 x hidden, I)."""
        t = batch * seq
        inter = self.intermediate_size
        return a * t * (2 * hidden + inter + max(3 * hidden, inter))

    def train_saved(self, hidden: int) -> tuple[int, int]:
        """Per token: the norm's input and output, the shifted input, the two mixed inputs, key's output and
        its relu square, receptance's output and its sigmoid, value's output."""
        return 7 * hidden + 2 * self.intermediate_size, 0
