"""Build of ``type: shared_block`` (``godprof.kinds.shared_block``): Zamba2's hybrid layer.

``SharedWeights`` holds the weights the layers naming one ``share`` use together (built once by
``godprof.build.model.Model`` and handed to each use with ``attach``); ``SharedBlockMixer`` is one use:
its adapters, its ``linear`` and its inner mixer with that mixer's pre-norm, and the forward that runs
the shared block with them (transformers' ``Zamba2HybridLayer``)::

    c = norm_a(concat(x, e))                                  # [B, S, 2h], e: the token embeddings
    q, k, v = q_proj(c) + q_adapter(c), ...                   # adapters per use (when enabled)
    a = o_proj(attention(rope(q), rope(k), v))                # [B, S, h], cached keys per use
    f = norm_f(a); g, u = (gate_up(f) + gate_up_adapter(f)).chunk(2)
    t = linear(down(act(g) x u))
    y = inner(norm_i(x + t))                                  # the block adds the residual: x + y

Cache per use: K and V [B, kv heads, max_len, head_dim] each, then the inner mixer's tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from godprof.build.layers import ACTS, FactoryKwargs, RMSNorm, RotaryTables, apply_rope
from godprof.build.sdpa import attention, band_mask
from godprof.kinds.shared_block import SharedBlock


def _lora(n_in: int, rank: int, n_out: int, dd: FactoryKwargs) -> nn.Sequential:
    """A low-rank adapter n_in -> rank -> n_out, no biases (transformers' ``nn.Sequential`` of two Linear)."""
    return nn.Sequential(nn.Linear(n_in, rank, bias=False, **dd), nn.Linear(rank, n_out, bias=False, **dd))


class SharedWeights(nn.Module):
    """The weights stored once per ``share``: the attention's norm and projections, the MLP's norm and
    projections. The model sets ``embeddings`` (the token embeddings [B, S, h]) for each forward."""

    def __init__(self, k: SharedBlock, hidden: int, dd: FactoryKwargs):
        super().__init__()
        a = k.attention
        H, K, D = a.num_heads, a.num_kv_heads, a.head_dim
        self.key = k.shared_key()
        self.input_norm = RMSNorm(2 * hidden, dd)
        self.q_proj = nn.Linear(2 * hidden, H * D, bias=False, **dd)
        self.k_proj = nn.Linear(2 * hidden, K * D, bias=False, **dd)
        self.v_proj = nn.Linear(2 * hidden, K * D, bias=False, **dd)
        self.o_proj = nn.Linear(H * D, hidden, bias=False, **dd)
        self.ffn_norm = RMSNorm(hidden, dd)
        self.gate_up_proj = nn.Linear(hidden, 2 * k.intermediate_size, bias=k.mlp_bias, **dd)
        self.down_proj = nn.Linear(k.intermediate_size, hidden, bias=k.mlp_bias, **dd)
        self.embeddings: torch.Tensor | None = None


class SharedBlockMixer(nn.Module):
    """One use of a shared block: ``(x [B, S, h], pos, state) -> [B, S, h]`` (see the module docstring)."""

    def __init__(self, k: SharedBlock, hidden: int, dd: FactoryKwargs, rope: RotaryTables):
        super().__init__()
        from godprof.build.model import build_mixer  # the model module builds every kind, this one included

        self.k = k
        self.rope = rope
        self.dd = dd
        self.share_key = k.share  # the model builds one ``SharedWeights`` per key (``build_shared``)
        r = k.adapter_rank
        self.gate_up_adapter = _lora(hidden, r, 2 * k.intermediate_size, dd) if r else None
        self.q_adapter = self.k_adapter = self.v_adapter = None
        if k.attention_adapters:
            self.q_adapter = _lora(2 * hidden, r, 2 * hidden, dd)
            self.k_adapter = _lora(2 * hidden, r, 2 * hidden, dd)
            self.v_adapter = _lora(2 * hidden, r, 2 * hidden, dd)
        self.linear = nn.Linear(hidden, hidden, bias=False, **dd)
        self.inner_norm = RMSNorm(hidden, dd)
        self.inner = build_mixer(k.inner, hidden, dd, rope)
        self._shared: list[SharedWeights] = []  # not a submodule: the model holds it (counted once)
        self.inner_slots = 0  # cache tensors the inner mixer allocated

    def build_shared(self) -> SharedWeights:
        """The weights this use shares with the others of its key (the model calls this once per key)."""
        return SharedWeights(self.k, self.linear.in_features, self.dd)

    def attach(self, shared: SharedWeights) -> None:
        """Use ``shared``'s weights (the model built them for this use's key)."""
        if shared.key != self.k.shared_key():
            raise ValueError(f"shared block '{self.k.share}' is given two different shapes by the spec's mixers")
        self._shared = [shared]

    def place(self, index: int, num_layers: int) -> None:
        place = getattr(self.inner, "place", None)
        if place is not None:
            place(index, num_layers)

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        a = self.k.attention
        shape = (batch, a.num_kv_heads, max_len, a.head_dim)
        kv = [torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)]
        alloc = getattr(self.inner, "allocate", None)
        rest = alloc(batch, max_len, dtype, device) if alloc is not None else []
        self.inner_slots = len(rest)
        return kv + rest

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        s = self._shared[0]
        assert s.embeddings is not None, "the model sets the token embeddings before the layers run"
        t = self._transformer(x, s, pos, state[:2] if state is not None else None)  # [B, S, h]
        inner_state = state[2:] if state is not None and self.inner_slots else None
        return self.inner(self.inner_norm(x + t), pos, inner_state)

    def _transformer(self, x: torch.Tensor, s: SharedWeights, pos: int, kv: list[torch.Tensor] | None) -> torch.Tensor:
        """linear(mlp(norm_f(attn(norm_a(concat(x, e)))))), with this use's adapters."""
        a = self.k.attention
        B, S, _ = x.shape
        assert s.embeddings is not None
        c = s.input_norm(torch.cat((x, s.embeddings), dim=-1))  # [B, S, 2h]
        q, k, v = s.q_proj(c), s.k_proj(c), s.v_proj(c)  # [B, S, H*D], [B, S, K*D] x 2
        if self.q_adapter is not None:
            q, k, v = q + self.q_adapter(c), k + self.k_adapter(c), v + self.v_adapter(c)
        del c
        q = q.view(B, S, a.num_heads, a.head_dim).transpose(1, 2)  # [B, H, S, D]
        k = k.view(B, S, a.num_kv_heads, a.head_dim).transpose(1, 2)  # [B, K, S, D]
        v = v.view(B, S, a.num_kv_heads, a.head_dim).transpose(1, 2)
        if a.rope:
            cos, sin = self.rope.get(a.head_dim, a.rope_theta, pos, S, x.device, q.dtype)  # [S, D]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = self._attend(q, k, v, pos, kv)  # [B, H, S, D]
        o = s.o_proj(out.transpose(1, 2).reshape(B, S, a.num_heads * a.head_dim))  # [B, S, h]
        del out
        f = s.ffn_norm(o)
        gu = s.gate_up_proj(f)  # [B, S, 2I]: [gate, up]
        if self.gate_up_adapter is not None:
            gu = gu + self.gate_up_adapter(f)
        del f
        gate, up = gu.chunk(2, dim=-1)
        return self.linear(s.down_proj(ACTS[self.k.activation](gate) * up))

    def _attend(self, q, k, v, pos: int, kv: list[torch.Tensor] | None) -> torch.Tensor:
        a = self.k.attention
        S = q.shape[2]
        if kv is None or pos == 0:
            if kv is not None:
                kv[0][:, :, :S], kv[1][:, :, :S] = k, v
            return attention(q, k, v, None, bool(S > 1), a.scale)
        kc, vc = kv
        if pos + S > kc.shape[2]:
            raise ValueError(f"cache holds {kc.shape[2]} tokens; cannot write positions {pos}..{pos + S - 1}")
        kc[:, :, pos : pos + S], vc[:, :, pos : pos + S] = k, v
        keys, values = kc[:, :, : pos + S].to(q.dtype), vc[:, :, : pos + S].to(q.dtype)  # [B, K, T, D]
        if S == 1:
            return attention(q, keys, values, None, False, a.scale)
        q_pos = torch.arange(pos, pos + S, device=q.device)
        mask = band_mask(q_pos, torch.arange(0, pos + S, device=q.device), None)
        return attention(q, keys, values, mask, False, a.scale)
