"""The decoder model built from a spec: embeddings, one block per ``Spec.layers()`` entry, final norm, lm_head.

The modules hold exactly the tensors ``godprof.analytic.params.count_params`` counts (tests assert the
equality for every bundled spec and for random specs).
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from godprof.build.cache import Cache
from godprof.build.hyper_connections import HyperConnection, HyperHead
from godprof.build.layers import FactoryKwargs, RMSNorm, RotaryTables, make_norm
from godprof.spec import Ffn, Layer, Mixer, Spec


def _builder(kind: Any) -> Any:
    """The torch module (or factory) a layer kind names in its ``build`` ("module:Class")."""
    module, _, name = kind.build.partition(":")
    return getattr(importlib.import_module(module), name)


def build_mixer(mixer: Mixer, hidden: int, dd: FactoryKwargs, rope: RotaryTables) -> nn.Module:
    """A token mixer's module: ``(x [B, S, h], pos, state) -> [B, S, h]``, with ``allocate`` for its cache."""
    return _builder(mixer)(mixer, hidden, dd, rope)


def build_ffn(ffn: Ffn, hidden: int, dd: FactoryKwargs) -> nn.Module:
    """A channel mixer's module: ``[..., h] -> [..., h]``."""
    return _builder(ffn)(ffn, hidden, dd)


class Block(nn.Module):
    """One layer: pre-norm mixer and FFN with residuals.

    Sequential: x + mix(n1(x)), then + ffn(n2(.)). Parallel (GPT-J/NeoX): x + mix(n1(x)) + ffn(n2(x)),
    with n2 = n1 when the norm is shared. Sandwich norms (Gemma-2) normalise each branch output before
    its residual add. Post-norm blocks (OLMo 2) normalise only the branch outputs: x + n1(mix(x)), then
    + n2(ffn(.)). A layer without FFN (pure Mamba stacks) is x + mix(n1(x)); one whose mixer is a
    ``passthrough`` kind (``type: none``) is x + ffn(n2(x)), without the mixer's norms.
    """

    def __init__(self, spec: Spec, layer: Layer, dd: FactoryKwargs, rope: RotaryTables):
        super().__init__()
        m = spec.model
        h = m.hidden_size
        self.mixer = build_mixer(layer.mixer, h, dd, rope)
        # a passthrough mixer (``type: none``) is skipped with its norms: the layer is its FFN alone
        self.skip_mixer = layer.mixer.passthrough
        own = getattr(layer.mixer, "owns_norm", False)  # a mixer that normalises its own input (shared_block)
        self.mixer_norm = None if m.post_norm or self.skip_mixer or own else make_norm(m.norm, h, m.norm_bias, dd)
        self.parallel = m.parallel_residual and not self.skip_mixer
        self.ffn = build_ffn(layer.ffn, h, dd) if layer.ffn is not None else None
        self.ffn_norm = None
        if self.ffn is not None and not (self.parallel and m.parallel_shared_norm) and not m.post_norm:
            self.ffn_norm = make_norm(m.norm, h, m.norm_bias, dd)
        self.post_mixer_norm = self.post_ffn_norm = None
        if m.sandwich_norm or m.post_norm:
            if not self.skip_mixer:
                self.post_mixer_norm = make_norm(m.norm, h, m.norm_bias, dd)
            if self.ffn is not None:
                self.post_ffn_norm = make_norm(m.norm, h, m.norm_bias, dd)
        # hyper-connections (``model.hc_mult`` > 1, DeepSeek-V4): x is [B, S, n, h], one per residual branch
        self.mixer_hc = self.ffn_hc = None
        if m.hc_mult > 1:
            if not self.skip_mixer:
                self.mixer_hc = HyperConnection(m.hc_mult, h, m.hc_sinkhorn_iters, dd)
            if self.ffn is not None:
                self.ffn_hc = HyperConnection(m.hc_mult, h, m.hc_sinkhorn_iters, dd)

    def forward(
        self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None, ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        # Only what is still needed stays referenced (as transformers' decoder layers do): the normed
        # input lives while the mixer runs and the mixer output until the residual add, so the FFN runs
        # beside the block input (still held by the caller), the residual sum and its normed copy.
        if self.mixer_hc is not None or self.ffn_hc is not None:
            return self._hyper(x, pos, state, ids)
        if self.parallel:
            assert self.mixer_norm is not None
            normed = self.mixer_norm(x)  # [B, S, h]
            y = self.mixer(normed, pos, state)
            if self.post_mixer_norm is not None:
                y = self.post_mixer_norm(y)
            if self.ffn is None:
                return x + y
            f = self._ffn(self.ffn_norm(x) if self.ffn_norm is not None else normed, pos, state)
            if self.post_ffn_norm is not None:
                f = self.post_ffn_norm(f)
            return x + y + f
        if not self.skip_mixer:
            y = self.mixer(x if self.mixer_norm is None else self.mixer_norm(x), pos, state)  # [B, S, h]
            if self.post_mixer_norm is not None:
                y = self.post_mixer_norm(y)
            if self.ffn is None:
                return x + y
            x = x + y
            del y
        elif self.ffn is None:
            return x
        f = self._ffn(x if self.ffn_norm is None else self.ffn_norm(x), pos, state, ids)
        if self.post_ffn_norm is not None:
            f = self.post_ffn_norm(f)
        return x + f

    def _hyper(
        self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None, ids: torch.Tensor | None
    ) -> torch.Tensor:
        """A pre-norm block over hyper-connected streams x [B, S, n, h] (``godprof.build.hyper_connections``):
        each branch reads its streams' weighted sum and its output is expanded back into the mixed streams."""
        if self.mixer_hc is not None:
            branch_in, post, comb = self.mixer_hc.collapse(x)
            y = self.mixer(branch_in if self.mixer_norm is None else self.mixer_norm(branch_in), pos, state)
            x = HyperConnection.expand(x, y, post, comb)
            del y, branch_in
        if self.ffn_hc is not None:
            branch_in, post, comb = self.ffn_hc.collapse(x)
            f = self._ffn(branch_in if self.ffn_norm is None else self.ffn_norm(branch_in), pos, state, ids)
            x = HyperConnection.expand(x, f, post, comb)
        return x

    def _ffn(
        self, h: torch.Tensor, pos: int, state: list[torch.Tensor] | None, ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The FFN on ``h``; one that keeps state across tokens (``takes_state``: RWKV's channel mix and its
        token shift) also gets the position and the layer's cache entry, one that routes by token id
        (``takes_ids``: hash-routed experts) the input ids."""
        assert self.ffn is not None
        if getattr(self.ffn, "takes_state", False):
            return self.ffn(h, pos, state)
        if getattr(self.ffn, "takes_ids", False):
            return self.ffn(h, ids)
        return self.ffn(h)


class Model(nn.Module):
    """Decoder LM over a spec. ``forward(input_ids [B, S], cache=None, last_only=False) -> logits``.

    With a cache the S tokens are written at ``cache.pos`` (prefill: S tokens; decode step: S = 1) and
    ``cache.pos`` advances by S. Without one the call is a plain causal forward from position 0.
    """

    def __init__(self, spec: Spec, dd: FactoryKwargs):
        super().__init__()
        self.spec = spec
        m = spec.model
        h = m.hidden_size
        self.embed_tokens = nn.Embedding(m.vocab_size, h, **dd)
        self.embed_positions = None
        if m.position_embedding == "learned":
            assert m.max_position_embeddings is not None
            self.embed_positions = nn.Embedding(m.max_position_embeddings, h, **dd)
        self.rope = RotaryTables()
        self.layers = nn.ModuleList(Block(spec, layer, dd, self.rope) for layer in spec.layers())
        for i, block in enumerate(self.layers):  # kinds whose constants depend on depth (lightning's decays)
            place = getattr(block.mixer, "place", None)
            if place is not None:
                place(i, len(self.layers))
        # weights several layers share (a mixer with ``share_key``: Zamba2's shared blocks), built once here
        # and attached to each user; they see the token embeddings of each forward (``embeddings``)
        self.shared = nn.ModuleDict()
        for block in self.layers:
            key = getattr(block.mixer, "share_key", None)
            if key is not None:
                if key not in self.shared:
                    self.shared[key] = block.mixer.build_shared()
                block.mixer.attach(self.shared[key])
        for block in self.layers:  # FFNs holding a per-token-id table (hash-routed experts) learn the vocab
            bind = getattr(block.ffn, "bind_vocab", None)
            if bind is not None:
                bind(m.vocab_size, dd["device"])
        self.hc_head = HyperHead(m.hc_mult, h, dd) if m.hc_mult > 1 else None  # collapses the streams
        self.norm = make_norm(m.norm, h, m.norm_bias, dd) if m.final_norm else None
        self.lm_head = None if m.tie_embeddings else nn.Linear(h, m.vocab_size, bias=False, **dd)
        self.lm_head_bias = nn.Parameter(torch.zeros(m.vocab_size, **dd)) if m.lm_head_bias else None
        self.embedding_multiplier = m.embedding_multiplier
        self.logit_scale = m.logit_scale

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def allocate_cache(self, batch: int, max_len: int, dtype: torch.dtype | str | None = None) -> Cache:
        """Preallocate every layer's cache for ``batch`` sequences of up to ``max_len`` tokens, in ``dtype``
        (default: the model's). Allocate it outside ``torch.inference_mode`` if it is also used outside."""
        dt = torch_dtype(dtype) if dtype is not None else self.dtype
        self.rope.reserve(max_len)
        states = []
        for block in self.layers:
            alloc = getattr(block.mixer, "allocate", None)
            states.append(alloc(batch, max_len, dt, self.device) if alloc is not None else None)
        return Cache(states, batch, max_len, dt, self.device)

    def forward(self, input_ids: torch.Tensor, cache: Cache | None = None, last_only: bool = False) -> torch.Tensor:
        B, S = input_ids.shape
        pos = 0
        if cache is not None:
            pos = cache.pos
            if B > cache.batch:
                raise ValueError(f"batch {B} exceeds the cache's batch {cache.batch}")
            if pos + S > cache.max_len:
                raise ValueError(f"cache holds {cache.max_len} tokens; {pos} are used and {S} more were given")
        if self.embed_positions is not None and pos + S > self.embed_positions.num_embeddings:
            raise ValueError(
                f"learned positions stop at {self.embed_positions.num_embeddings}; got positions up to {pos + S - 1}"
            )
        states = [cache.layer_state(i, B) if cache is not None else None for i in range(len(self.layers))]
        x = self._trunk(input_ids, pos, states)
        if cache is not None:
            cache.pos = pos + S
        if last_only:
            x = x[:, -1:]
        return self._logits(x)

    def _trunk(
        self, ids: torch.Tensor, pos: int | torch.Tensor, states: list[list[torch.Tensor] | None]
    ) -> torch.Tensor:
        """Embeddings of ids [B, S] and every layer (with its cache tensors in ``states``) -> [B, S, h];
        ``pos`` an int, or a device tensor (static step). One frame, so the embeddings are freed after the
        first layer. With hyper-connections the layers run on n copies of x and ``hc_head`` collapses them
        at the end."""
        S = ids.shape[1]
        x = self.embed_tokens(ids)  # [B, S, h]
        if self.embedding_multiplier != 1.0:
            x = x * self.embedding_multiplier
        if self.embed_positions is not None:
            if isinstance(pos, torch.Tensor):
                where = pos.reshape(1) + torch.arange(S, device=ids.device)
            else:
                where = torch.arange(pos, pos + S, device=ids.device)
            x = x + self.embed_positions(where)
        if self.hc_head is not None:
            x = x.unsqueeze(2).expand(-1, -1, self.spec.model.hc_mult, -1).contiguous()  # [B, S, n, h]
        for shared in self.shared.values():
            shared.embeddings = x
        for block, state in zip(self.layers, states, strict=True):
            x = block(x, pos, state, ids)
        for shared in self.shared.values():
            shared.embeddings = None
        return x if self.hc_head is None else self.hc_head(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm, lm_head (tied or not, with its bias) and logit scale: [B, S, h] -> [B, S, V]."""
        if self.norm is not None:
            x = self.norm(x)
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(x, weight, self.lm_head_bias)  # [B, S or 1, V]
        return logits if self.logit_scale == 1.0 else logits * self.logit_scale

    def static_decode_blockers(self) -> list[str]:
        """Layer kinds that cannot run ``decode_static`` (empty: the whole model can). A mixer opts in with
        ``static_decode()`` returning True; an FFN that keeps state across tokens never does."""
        out = []
        for block in self.layers:
            mixer_ok = block.skip_mixer or getattr(block.mixer, "static_decode", lambda: False)()
            if not mixer_ok:
                out.append(type(block.mixer).__name__)
            if block.ffn is not None and getattr(block.ffn, "takes_state", False):
                out.append(type(block.ffn).__name__)
        return sorted(set(out))

    def decode_static(self, input_ids: torch.Tensor, cache: Cache, core: Any = None) -> torch.Tensor:
        """One decode step (input_ids [B, 1]) with static shapes: the position is ``cache.device_pos()``,
        a device tensor, so every step runs the same graph with no host sync (rotary rows gathered by
        index, K/V written by ``index_copy_``, attention over the whole static cache under a mask).
        ``core`` replaces ``decode_core`` (a ``torch.compile`` of it). Both positions advance by one.
        Raises ValueError when a layer kind cannot (``static_decode_blockers``) or the cache is full."""
        blockers = self.static_decode_blockers()
        if blockers:
            raise ValueError(f"no static decode step for {', '.join(blockers)}; use forward(ids, cache=cache)")
        if cache.pos + 1 > cache.max_len:
            raise ValueError(f"cache holds {cache.max_len} tokens; all are used")
        pos_t = cache.device_pos()
        states = [cache.layer_state(i, input_ids.shape[0]) for i in range(len(self.layers))]
        logits = (core or self.decode_core)(input_ids, pos_t, states)
        pos_t.add_(1)
        cache.advanced_on_device(1)
        return logits

    def decode_core(
        self, input_ids: torch.Tensor, pos_t: torch.Tensor, states: list[list[torch.Tensor] | None]
    ) -> torch.Tensor:  # [B, 1, V]
        """The tensor-only body of ``decode_static`` (what ``torch.compile`` captures): embeddings at
        ``pos_t``, every block with the position as a tensor, logits. Writes the caches in ``states``."""
        return self._logits(self._trunk(input_ids, pos_t, states))

    @torch.no_grad()
    def init_weights(self, std: float = 0.02, seed: int = 0) -> None:
        """Random init on the model's device: Linear/Embedding/expert weights ~ N(0, std), biases 0, norms 1,
        depthwise convs ~ U(+-1/sqrt(d_conv)) (PyTorch's default bound), SSM parameters per mixer
        (``init_ssm``)."""
        g = torch.Generator(device=self.device)
        g.manual_seed(seed)
        for mod in self.modules():
            if isinstance(mod, nn.Linear | nn.Embedding):
                mod.weight.normal_(0.0, std, generator=g)
                if getattr(mod, "bias", None) is not None:
                    mod.bias.zero_()
            elif isinstance(mod, nn.Conv1d):
                bound = 1.0 / math.sqrt(mod.kernel_size[0])
                mod.weight.uniform_(-bound, bound, generator=g)
                if mod.bias is not None:
                    mod.bias.zero_()
            elif hasattr(mod, "init_params"):  # modules with raw parameters (stacked experts)
                mod.init_params(std, g)
            elif isinstance(mod, nn.LayerNorm | RMSNorm):
                if mod.weight is not None:
                    mod.weight.fill_(1.0)
                if getattr(mod, "bias", None) is not None:
                    mod.bias.zero_()
        for mod in self.modules():  # after the generic pass: SSM mixers own some Linear biases (dt_proj)
            if hasattr(mod, "init_ssm"):
                mod.init_ssm(g)
        if self.lm_head_bias is not None:
            self.lm_head_bias.zero_()


_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def torch_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A torch float dtype from a torch dtype or a godprof dtype name/alias ("bf16", "float16", ...).

    The build runs in fp32, bf16 or fp16; quantised weight formats (int8, int4, fp8) exist only in the
    analytic layer, so they raise ValueError here (unknown names raise NotFoundError)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    from godprof.dtypes import get_dtype

    name = get_dtype(dtype).name
    if name not in _TORCH_DTYPES:
        raise ValueError(f"the PyTorch build runs in fp32, bf16 or fp16, not {name}")
    return _TORCH_DTYPES[name]


def build_model(
    spec: Spec,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = torch.bfloat16,
    *,
    init_std: float = 0.02,
    seed: int = 0,
) -> Model:
    """Build the model of ``spec`` with every parameter created on ``device`` in ``dtype`` (no CPU copy).

    On ``meta`` nothing is initialised (use it to count). Elsewhere weights are drawn on the device
    (``Model.init_weights``). Returned in eval mode.
    """
    dev = torch.device(device)
    dt = torch_dtype(dtype)
    model = Model(spec, {"device": dev, "dtype": dt})
    if dev.type != "meta":
        model.init_weights(init_std, seed)
    return model.eval()
