"""Build of ``type: rwkv_time_mix`` and ``type: rwkv_channel_mix`` (``godprof.kinds.rwkv``) in pure PyTorch,
following transformers' ``RwkvSelfAttention`` and ``RwkvFeedForward`` (parameter names ``time_decay``,
``time_first``, ``time_mix_*``, ``key``, ``value``, ``receptance``, ``output``, so checkpoints map one to
one). The WKV recurrence is transformers' ``rwkv_linear_attention_cpu``, token by token in fp32 (the
readable definition; prefill and decode run the same loop, O(1) per decoded token).

Cache of a time mix (per layer): [num, den, max] (each [B, a]) and the two token shifts [B, h] (the time
mix's last normed input, then the channel mix's). A sequence starts (``pos`` 0) from num = den = 0,
max = -1e38 and zero shifts, whatever the cache holds.

The channel mix sits in the FFN slot. Its shift state is in its layer's time-mix cache entry: it declares
``takes_state``, so the block calls it with the position and that entry (``godprof.build.model.Block``).
A channel mix whose layer's cache entry is not a time mix's raises.

Shape legend: B batch, S new tokens, h hidden, a attention_hidden_size, I intermediate.
"""

from __future__ import annotations

import torch
from torch import nn

from godprof.build.layers import FactoryKwargs, RotaryTables
from godprof.kinds.rwkv import RwkvChannelMix, RwkvTimeMix

MAX_INIT = -1e38  # transformers' initial running max exponent (rwkv_linear_attention_cpu)


def _shifted(x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
    """x moved one token later along S: [prev (zeros at a sequence's start), x_0, ..., x_{S-2}]."""
    first = torch.zeros_like(x[:, :1]) if prev is None else prev[:, None].to(x.dtype)
    return torch.cat([first, x[:, :-1]], dim=1)  # [B, S, h]


def wkv(
    time_decay: torch.Tensor, time_first: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: list[torch.Tensor]
) -> torch.Tensor:
    """The WKV recurrence over S tokens (fp32; ``state`` = [num, den, max] fp32 [B, a], updated in place).
    k, v: [B, S, a]; returns [B, S, a] fp32."""
    num, den, mx = state
    w = -torch.exp(time_decay.float())  # [a]
    u = time_first.float()
    out = torch.empty(k.shape, dtype=torch.float32, device=k.device)
    for t in range(k.shape[1]):
        kt, vt = k[:, t].float(), v[:, t].float()
        m_out = torch.maximum(mx, kt + u)
        e1, e2 = torch.exp(mx - m_out), torch.exp(kt + u - m_out)
        out[:, t] = (e1 * num + e2 * vt) / (e1 * den + e2)
        m_state = torch.maximum(mx + w, kt)
        e1, e2 = torch.exp(mx + w - m_state), torch.exp(kt - m_state)
        num, den, mx = e1 * num + e2 * vt, e1 * den + e2, m_state
    state[:] = [num, den, mx]
    return out


class RwkvTimeMixer(nn.Module):
    """Token shift -> key, value, sigmoid(receptance) -> WKV -> output(r * wkv)."""

    def __init__(self, m: RwkvTimeMix, hidden: int, dd: FactoryKwargs, rope: RotaryTables | None = None):
        super().__init__()
        self.m = m
        a = m.inner
        self.time_decay = nn.Parameter(torch.empty(a, **dd))
        self.time_first = nn.Parameter(torch.empty(a, **dd))
        self.time_mix_key = nn.Parameter(torch.empty(1, 1, hidden, **dd))
        self.time_mix_value = nn.Parameter(torch.empty(1, 1, hidden, **dd))
        self.time_mix_receptance = nn.Parameter(torch.empty(1, 1, hidden, **dd))
        self.key = nn.Linear(hidden, a, bias=False, **dd)
        self.value = nn.Linear(hidden, a, bias=False, **dd)
        self.receptance = nn.Linear(hidden, a, bias=False, **dd)
        self.output = nn.Linear(a, hidden, bias=False, **dd)
        # transformers' blocks[0].pre_ln: held for the count, folded into the embedding table (not applied
        # here: a mixer sees the normed input, never the residual stream; see godprof.kinds.rwkv)
        self.pre_ln = nn.LayerNorm(hidden, **dd) if m.pre_norm else None

    @torch.no_grad()
    def init_params(self, std: float, g: torch.Generator) -> None:
        """Decays in (-1, 1) (w = -exp(decay) in (-e, -1/e)), time_first in (-1, 1), mixes in (0, 1)."""
        for p in (self.time_decay, self.time_first):
            p.uniform_(-1.0, 1.0, generator=g)
        for p in (self.time_mix_key, self.time_mix_value, self.time_mix_receptance):
            p.uniform_(0.0, 1.0, generator=g)

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        a, h = self.m.inner, self.m.channels
        # Order: [num, den, max (a each), time-mix shift, channel-mix shift (h each)]
        return [torch.zeros(batch, n, dtype=dtype, device=device) for n in (a, a, a, h, h)]

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        fresh = state is None or pos == 0
        B, a = x.shape[0], self.m.inner
        shifted = _shifted(x, None if fresh else state[3])  # type: ignore[index]
        mk, mv, mr = self.time_mix_key, self.time_mix_value, self.time_mix_receptance
        k = self.key(x * mk + shifted * (1 - mk))  # [B, S, a]
        v = self.value(x * mv + shifted * (1 - mv))
        r = torch.sigmoid(self.receptance(x * mr + shifted * (1 - mr)))
        del shifted
        if fresh:
            f32 = {"dtype": torch.float32, "device": x.device}
            s = [torch.zeros(B, a, **f32), torch.zeros(B, a, **f32), torch.full((B, a), MAX_INIT, **f32)]
        else:
            s = [t.float() for t in state[:3]]  # type: ignore[index]
        y = wkv(self.time_decay, self.time_first, k, v, s)  # [B, S, a] fp32
        if state is not None:
            for dst, src in zip(state[:3], s, strict=True):
                dst.copy_(src)
            state[3].copy_(x[:, -1])
        return self.output(r * y.to(x.dtype))  # [B, S, h]


class RwkvChannelMixer(nn.Module):
    """Token shift -> sigmoid(receptance(xr)) * value(relu(key(xk))^2)."""

    takes_state = True  # the block passes (pos, the layer's cache entry): the shift lives in the time mix's

    def __init__(self, f: RwkvChannelMix, hidden: int, dd: FactoryKwargs):
        super().__init__()
        self.time_mix_key = nn.Parameter(torch.empty(1, 1, hidden, **dd))
        self.time_mix_receptance = nn.Parameter(torch.empty(1, 1, hidden, **dd))
        self.key = nn.Linear(hidden, f.intermediate_size, bias=False, **dd)
        self.receptance = nn.Linear(hidden, hidden, bias=False, **dd)
        self.value = nn.Linear(f.intermediate_size, hidden, bias=False, **dd)

    @torch.no_grad()
    def init_params(self, std: float, g: torch.Generator) -> None:
        for p in (self.time_mix_key, self.time_mix_receptance):
            p.uniform_(0.0, 1.0, generator=g)

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        if state is not None and len(state) != 5:
            raise RuntimeError("rwkv_channel_mix needs an rwkv_time_mix mixer in the same layer (its shift state)")
        buf = state[4] if state is not None else None  # [B, h]
        shifted = _shifted(x, None if buf is None or pos == 0 else buf)
        if buf is not None:
            buf.copy_(x[:, -1])
        mk, mr = self.time_mix_key, self.time_mix_receptance
        k = torch.square(torch.relu(self.key(x * mk + shifted * (1 - mk))))  # [B, S, I]
        r = torch.sigmoid(self.receptance(x * mr + shifted * (1 - mr)))
        del shifted
        return r * self.value(k)
