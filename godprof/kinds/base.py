"""The interface every layer kind implements, and the parameter ledger (``Part``) they fill.

A layer kind is a token mixer (attention, MLA, Mamba...) or a channel mixer (MLP, MoE...). Each lives in
one module of ``godprof.kinds`` as a frozen dataclass: its fields are the spec schema, ``parse`` validates
a spec entry, and its methods answer everything the generic code asks (parameters by component, cache
and state sizes, FLOPs, activation working set, tensor-parallel rules). The torch module that builds it
is named by ``build`` ("module:Class") and imported only by ``godprof.build``. Generic code (estimate,
memory, roofline, compare, plan, measure) calls these methods and never names a kind.

Sizes are in elements unless a name says bytes; FLOPs count a multiply-add as 2.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from godprof.checker import MAX_SIZE, Checker, KeyPath

if TYPE_CHECKING:
    from godprof.analytic.workload import Workload

ACTIVATIONS = ("silu", "gelu", "gelu_tanh", "relu", "relu2", "swiglu_oai")  # relu2: squared ReLU (Nemotron-H)
FP32_BYTES = 4


@dataclass
class Part:
    """Parameters of one module, split by component, with its per-token matmul weights."""

    by_component: Counter[str] = field(default_factory=Counter)
    matmul: int = 0  # weights used in a matmul per token (active)
    inactive: int = 0  # routed-expert parameters a token does not use (total - active)
    quantizable: int = 0  # Linear weight matrices (what int8/int4/fp8 weight formats store compactly)
    linear_tensors: int = 0  # number of Linear weight matrices (fp8 per-tensor scales)
    linear_shapes: Counter[tuple[int, int]] = field(default_factory=Counter)  # (n_in, n_out) -> count
    # the same Linear weights by component: (component, n_in, n_out) -> count (per-component weight formats)
    linear_by_component: Counter[tuple[str, int, int]] = field(default_factory=Counter)

    def linear(self, component: str, n_in: int, n_out: int, bias: bool, count: int = 1) -> None:
        """``count`` Linear(n_in, n_out) layers, all used per token."""
        self.by_component[component] += count * (n_in * n_out + (n_out if bias else 0))
        self.matmul += count * n_in * n_out
        self.quantizable += count * n_in * n_out
        self.linear_tensors += count
        self.linear_shapes[(n_in, n_out)] += count
        self.linear_by_component[(component, n_in, n_out)] += count

    def add(self, component: str, n: int) -> None:
        self.by_component[component] += n

    def merge(self, other: Part) -> None:
        self.by_component.update(other.by_component)
        self.matmul += other.matmul
        self.inactive += other.inactive
        self.quantizable += other.quantizable
        self.linear_tensors += other.linear_tensors
        self.linear_shapes.update(other.linear_shapes)
        self.linear_by_component.update(other.linear_by_component)

    @property
    def total(self) -> int:
        return sum(self.by_component.values())


def mlp_into(p: Part, component: str, hidden: int, inter: int, gated: bool, bias: bool, count: int = 1) -> None:
    """``count`` MLPs: gate and up (or fc1) from hidden to ``inter``, down (or fc2) back."""
    p.linear(component, hidden, inter, bias, count=count * (2 if gated else 1))
    p.linear(component, inter, hidden, bias, count=count)


def attended_pairs(seq: int, window: int | None, convention: str) -> int:
    """Query-key pairs in one sequence of ``seq`` tokens.

    causal: sum over i = 1..seq of min(i, window) (= seq(seq+1)/2 with no window); full: seq x seq.
    """
    if convention == "full":
        return seq * seq
    if window is None or window >= seq:
        return seq * (seq + 1) // 2
    # the first `window` queries see 1..window keys, the remaining ones see `window` each
    return window * (window + 1) // 2 + (seq - window) * window


def inner_size(c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> int:
    """An SSM's inner width: ``d_inner``, or ``expand`` x hidden (default 2)."""
    if "d_inner" in d and "expand" in d:
        c.err((*p, "d_inner"), "give either d_inner or expand, not both")
    if d.get("d_inner") is not None:
        return c.int_(d, "d_inner", p)
    expand = c.float_(d, "expand", p, 2.0)
    inner = expand * hidden
    if not float(inner).is_integer() or inner > MAX_SIZE:
        c.err((*p, "expand"), f"expand x hidden_size = {inner:g} is not an integer up to {MAX_SIZE:,}")
        return max(hidden, 1)
    return int(inner)


def parse_kind(
    c: Checker, raw: Any, p: KeyPath, hidden: int, kinds: dict[str, Any], what: str, extra: tuple[str, ...] = ()
) -> tuple[bool, Any]:
    """A mixer or FFN entry through its registered kind: (ok, kind). ``extra`` names types that parse to
    None (an FFN slot's ``none``)."""
    d = c.mapping(raw, p)
    kind = d.get("type")
    names = ", ".join((*kinds, *extra))
    if kind in extra:
        c.keys(d, p, {"type"}, {"type"})
        return True, None
    cls = kinds.get(kind) if isinstance(kind, str) else None
    if cls is None:
        if kind is None:
            c.err(p, f"missing required key 'type' ({names})")
        else:
            c.err((*p, "type"), f"unknown {what} type {kind!r}; expected one of {names}")
        return False, None
    c.keys(d, p, set(cls.keys), set(cls.required))
    return True, cls.parse(c, d, p, hidden)


class MixerKind:
    """A token mixer. Defaults describe a mixer with no cache, no state and no attention; a kind
    overrides what applies to it."""

    type: ClassVar[str]  # the spec's ``type:`` name
    category: ClassVar[str]  # "attention", "ssm" or "linear": what the spec's family is checked against
    label: ClassVar[str]  # short name in layer-kind labels ("attn", "mla", "mamba2")
    # which kernel family times it (godprof/data/efficiency.yaml attention.<class>): flash, mla, sparse, scan
    efficiency_class: ClassVar[str] = "flash"
    build: ClassVar[str]  # "module:Class" of the torch module (godprof.build)
    keys: ClassVar[frozenset[str]]  # the keys its spec entry may hold
    required: ClassVar[frozenset[str]] = frozenset({"type"})
    # True for a mixer slot that does nothing (``type: none``, Nemotron-H's MLP-only blocks): the block
    # skips it together with its pre-norm (and post-norm), so such a layer is only its FFN sub-block.
    passthrough: ClassVar[bool] = False

    @property
    def categories(self) -> frozenset[str]:
        """Every category the mixer counts as (a composite mixer has its children's)."""
        return frozenset({self.category})

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> MixerKind:
        """The validated kind from its spec entry (problems go to ``c``). ``hidden`` is 0 when the
        model's hidden size is itself invalid."""
        raise NotImplementedError

    # -- parameters
    def params(self, hidden: int) -> Part:
        """Exact parameters of one layer's mixer (block norms excluded: the model adds those)."""
        raise NotImplementedError

    # -- cache and state (elements per layer)
    def kv_elements_per_token(self) -> int:
        """Cached values one more token adds (K and V, a latent...)."""
        return 0

    def cached_tokens(self, context: int) -> int:
        """Tokens this layer keeps at ``context`` (a window or a chunk caps it)."""
        return context

    def kv_elements(self, context: int) -> int:
        """Cached values at ``context``: per-token values x cached tokens, unless the kind caches entries
        of other sizes (DeepSeek-V4's compressed entries)."""
        return self.kv_elements_per_token() * self.cached_tokens(context)

    def state_elements(self) -> int:
        """Recurrent state per sequence, constant in context (conv windows, SSM state)."""
        return 0

    def decode_read_elements(self, context: int) -> int:
        """Cached values one decode step reads at ``context``: the whole cache, unless the kind reads only
        part of it (sparse attention reads the selected tokens)."""
        return self.kv_elements_per_token() * self.cached_tokens(context)

    def kv_tp_fraction(self, tp: int) -> float:
        """Fraction of this layer's KV cache one of ``tp`` tensor-parallel ranks holds."""
        return 1.0 / tp if self.kv_elements_per_token() else 0.0

    def tp_problem(self, tp: int) -> str | None:
        """Why ``tp`` ranks cannot split this mixer evenly (None if they can)."""
        return None

    def tp_risks(self, tp: int) -> list[str]:
        """Caveats a serving plan should state for this mixer at ``tp``."""
        return []

    def tp_rank(self, tp: int) -> MixerKind:
        """The mixer one of ``tp`` tensor-parallel ranks builds (``godprof measure --tp``): heads or
        channels split, its output a partial sum the ranks all-reduce. Raises ValueError with the reason
        when the build cannot split it."""
        raise ValueError(f"'{self.type}' mixers cannot be built tensor-parallel yet")

    # -- FLOPs
    def attention_flops(self, batch: int, seq: int, convention: str) -> int:
        """Score and value products (QK^T, PV) of a forward over batch x seq tokens: part of ``forward``."""
        return 0

    def decode_attention_flops(self, context: int) -> int:
        """Score and value products of one decoded token that sees ``context`` keys."""
        return 0

    def scan_flops(self, batch: int, seq: int) -> int:
        """Recurrent scan FLOPs of a forward (reported apart from ``forward`` as ``ssm_scan``)."""
        return 0

    def scan_matmul_flops(self, batch: int, seq: int) -> int:
        """The part of ``scan_flops`` the build computes as matrix products (what counters see)."""
        return 0

    def scan_decode_flops(self) -> int:
        """Recurrent state update of one decoded token."""
        return 0

    def conv_flops_per_token(self) -> int:
        """Depthwise convolution FLOPs per token (reported apart as ``conv``)."""
        return 0

    # -- activations
    def rope_table(self) -> tuple[int, float] | None:
        """(rotary dim, theta) of the cos/sin tables this mixer reads, None without rotary."""
        return None

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int, flash: bool) -> int:
        """Bytes the mixer holds at its peak during a prefill of batch x seq tokens, its normed input
        included (``a``: the activation dtype's size; ``flash``: fused attention kernels)."""
        raise NotImplementedError

    def train_saved(self, hidden: int, seq: int, w: Workload) -> tuple[int, int]:
        """(activation-dtype elements, fp32 bytes) per token the mixer saves for backward, its norm's
        input and output included."""
        raise NotImplementedError

    def fused_on_cpu(self) -> bool:
        """Whether PyTorch's CPU SDPA runs a fused kernel for this mixer (True when it has no SDPA)."""
        return True


class FfnKind:
    """A channel mixer (the FFN slot of a layer)."""

    type: ClassVar[str]
    label: ClassVar[str]
    build: ClassVar[str]
    keys: ClassVar[frozenset[str]]
    required: ClassVar[frozenset[str]] = frozenset({"type"})
    sparse: ClassVar[bool] = False  # routed experts: makes a spec's family "moe"
    pairs_with: ClassVar[str | None] = None  # the mixer type it must share a layer with (its state lives there)

    @classmethod
    def parse(cls, c: Checker, d: dict[str, Any], p: KeyPath, hidden: int) -> FfnKind:
        raise NotImplementedError

    def params(self, hidden: int) -> Part:
        """Exact parameters; routed experts a token does not use go to ``Part.inactive``."""
        raise NotImplementedError

    def routed_experts(self, hidden: int) -> tuple[int, int, Part] | None:
        """(experts, top_k, one expert's Part) for routed experts, None for a dense FFN."""
        return None

    def tp_problem(self, tp: int) -> str | None:
        return None

    def tp_rank(self, tp: int) -> FfnKind:
        """The FFN one of ``tp`` tensor-parallel ranks builds (see ``MixerKind.tp_rank``)."""
        raise ValueError(f"'{self.type}' FFNs cannot be built tensor-parallel yet")

    def prefill_peak_bytes(self, hidden: int, batch: int, seq: int, a: int) -> int:
        """Bytes the FFN holds at its peak during a prefill, its normed input included."""
        raise NotImplementedError

    def train_saved(self, hidden: int) -> tuple[int, int]:
        """(activation-dtype elements, fp32 bytes) per token saved for backward, its norm's input and
        output included."""
        raise NotImplementedError
