"""Build of ``type: compressed_attention`` (``godprof.kinds.compressed_attention``): DeepSeek-V4's shared-KV
MQA over a sliding window, with the CSA / HCA compressors and the Lightning Indexer, in pure PyTorch.

Follows transformers 5.24's ``DeepseekV4Attention`` (parameter names included, so weights map one to one)
with a preallocated cache instead of transformers' growing one. Per layer the cache holds (``allocate``):

- ``win`` [B, slots, D]: the K = V rows of the last min(max_len, sliding_window) tokens, a ring buffer
  (position p in slot p % slots);
- with a compressor: ``entries`` [B, max_len // rate, D], one per closed window of ``rate`` tokens; the
  open window's raw kv and gate rows ``buf_kv``, ``buf_gate`` [B, rate - 1, series x D]; for csa the last
  closed window's first series ``ov_kv``, ``ov_gate`` [B, rate, D] (the next entry pools them), and the
  same four for the indexer at index_head_dim (``idx_entries`` ...).

Attention runs as one explicit softmax over [window keys, compressed entries] with a mask (the window's
band; for hca every closed window up to the query; for csa the indexer's top-k), the per-head sinks in
the denominator (``godprof.build.sdpa.explicit_attention``). The indexer's head weighting is a matrix
product (so counters see the multiply-adds the analytic count has). Legend: B batch, S new tokens,
H heads, D head_dim, m rate, n entries, w a series' width.
"""

from __future__ import annotations

import torch
from torch import nn

from godprof.build.layers import FactoryKwargs, RMSNorm, RotaryTables
from godprof.build.sdpa import band_mask, explicit_attention
from godprof.kinds.compressed_attention import CompressedAttention

NORM_EPS = 1e-5  # godprof's RMSNorm default (transformers' rms_norm_eps; the released configs say 1e-6)


def unweighted_rms(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """transformers' ``DeepseekV4UnweightedRMSNorm``: x / rms(x) over the last dim, statistics in fp32."""
    return x * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + eps).to(x.dtype)


def rope_interleaved(x: torch.Tensor, cos_half: torch.Tensor, sin_half: torch.Tensor) -> torch.Tensor:
    """DeepSeek-V4's RoPE on the *last* 2 x cos_half.shape[-1] features of x [..., S, D], rotating adjacent
    pairs (x0, x1), (x2, x3)...; cos_half / sin_half [S, rd / 2] (one angle per pair), in fp32."""
    rd = 2 * cos_half.shape[-1]
    cos = cos_half.repeat_interleave(2, dim=-1).float()
    sin = sin_half.repeat_interleave(2, dim=-1).float()
    nope, rope = x[..., :-rd], x[..., -rd:]
    rotated = torch.stack((-rope[..., 1::2], rope[..., 0::2]), dim=-1).flatten(-2)
    out = (rope.float() * cos + rotated.float() * sin).to(x.dtype)
    return torch.cat((nope, out), dim=-1)


class Compressor(nn.Module):
    """One compressor (transformers' ``DeepseekV4HCACompressor`` with ``series`` 1; ``DeepseekV4CSACompressor``
    and the indexer's with 2): kv_proj and gate_proj (hidden -> series x width), an fp32 position_bias
    [rate, series x width] and an RMSNorm on each pooled entry."""

    def __init__(self, hidden: int, width: int, series: int, rate: int, dd: FactoryKwargs):
        super().__init__()
        self.width, self.series, self.rate = width, series, rate
        self.kv_proj = nn.Linear(hidden, series * width, bias=False, **dd)
        self.gate_proj = nn.Linear(hidden, series * width, bias=False, **dd)
        self.position_bias = nn.Parameter(torch.zeros(rate, series * width, **dd))  # transformers keeps it fp32
        self.kv_norm = RMSNorm(width, dd)

    @torch.no_grad()
    def init_params(self, std: float, g: torch.Generator) -> None:
        """position_bias ~ N(0, 1): transformers starts it at zero; a nonzero one tests its use."""
        self.position_bias.normal_(0.0, 1.0, generator=g)

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        m, w, s = self.rate, self.width, self.series
        out = [torch.zeros(batch, max_len // m, w, dtype=dtype, device=device)]
        out += [torch.zeros(batch, m - 1, s * w, dtype=dtype, device=device) for _ in range(2)]
        if s == 2:
            out += [torch.zeros(batch, m, w, dtype=dtype, device=device) for _ in range(2)]
        return out

    def forward(
        self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """Every compressed entry up to position pos + S - 1: [B, (pos + S) // rate, width] (the cached ones
        and those the S new tokens close). ``rope``: cos/sin half tables over positions 0..pos+S-1."""
        B, S, _ = x.shape
        m, w = self.rate, self.width
        kv, gate = self.kv_proj(x), self.gate_proj(x)  # [B, S, series x w]
        open_ = pos % m if state is not None else 0
        if open_:
            kv = torch.cat((state[1][:, :open_].to(kv.dtype), kv), dim=1)
            gate = torch.cat((state[2][:, :open_].to(gate.dtype), gate), dim=1)
        n = (open_ + S) // m  # windows the new tokens close
        used = n * m
        if state is not None:
            left = open_ + S - used  # < m: the window still open
            state[1][:, :left] = kv[:, used:]
            state[2][:, :left] = gate[:, used:]
        w0 = (pos - open_) // m  # index of the first window closed here
        new = kv.new_zeros(B, 0, w)
        if n:
            ck = kv[:, :used].view(B, n, m, -1)  # [B, n, m, series x w]
            cg = gate[:, :used].view(B, n, m, -1) + self.position_bias  # fp32
            if self.series == 2:  # entry j pools window j-1's first series with window j's second
                pk = ck.new_zeros(B, n, 2 * m, w)
                pg = cg.new_full((B, n, 2 * m, w), float("-inf"))
                pk[:, :, m:], pg[:, :, m:] = ck[..., w:], cg[..., w:]
                pk[:, 1:, :m], pg[:, 1:, :m] = ck[:, :-1, :, :w], cg[:, :-1, :, :w]
                if state is not None:
                    if w0 > 0:
                        pk[:, 0, :m], pg[:, 0, :m] = state[3].to(pk.dtype), state[4].to(pg.dtype)
                    state[3].copy_(ck[:, -1, :, :w])
                    state[4].copy_(cg[:, -1, :, :w])
                ck, cg = pk, pg
            pooled = (ck * cg.softmax(dim=2, dtype=torch.float32).to(ck.dtype)).sum(dim=2)  # [B, n, w]
            positions = (torch.arange(n, device=x.device) + w0) * m
            new = rope_interleaved(self.kv_norm(pooled), rope[0][positions], rope[1][positions])
        if state is None:
            return new
        state[0][:, w0 : w0 + n] = new
        return state[0][:, : w0 + n].to(x.dtype)


class Indexer(Compressor):
    """The Lightning Indexer of csa layers: a two-series compressor at index_head_dim, ``q_b_proj`` from the
    normed q latent, ``weights_proj`` (hidden -> index heads; transformers' ``scorer.weights_proj``)."""

    def __init__(self, a: CompressedAttention, hidden: int, dd: FactoryKwargs):
        super().__init__(hidden, a.index_head_dim, 2, a.compress_rate, dd)
        self.heads, self.topk = a.index_n_heads, a.index_topk
        self.q_b_proj = nn.Linear(a.q_lora_rank, a.index_n_heads * a.index_head_dim, bias=False, **dd)
        self.weights_proj = nn.Linear(hidden, a.index_n_heads, bias=False, **dd)

    def select(
        self, x: torch.Tensor, q_lat: torch.Tensor, keys: torch.Tensor, q_rope: tuple[torch.Tensor, torch.Tensor],
        threshold: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """[B, S, n] bool: the top-k entries each query attends to, among those it may see (``threshold``
        [S]: entry j is visible when j < threshold). Score: sum_h w_h relu(q_h . k) / sqrt(index_head_dim)."""
        B, S, _ = x.shape
        n = keys.shape[1]
        if n == 0:
            return torch.zeros(B, S, 0, dtype=torch.bool, device=x.device)
        q = self.q_b_proj(q_lat).view(B, S, self.heads, self.width).transpose(1, 2)  # [B, Hi, S, Di]
        q = rope_interleaved(q, *q_rope).transpose(1, 2)  # [B, S, Hi, Di]
        scores = torch.matmul(q.float(), keys.float().transpose(-1, -2).unsqueeze(1))  # [B, S, Hi, n]
        scores = torch.relu(scores) * self.width**-0.5
        weights = self.weights_proj(x).float() * self.heads**-0.5  # [B, S, Hi]
        total = torch.matmul(weights.unsqueeze(-2), scores).squeeze(-2)  # [B, S, n]
        del scores
        future = torch.arange(n, device=x.device)[None, :] >= threshold[:, None]  # [S, n]
        total.masked_fill_(future, float("-inf"))
        top = total.topk(min(self.topk, n), dim=-1).indices  # [B, S, k]
        valid = top < threshold[None, :, None]
        chosen = torch.zeros(B, S, n + 1, dtype=torch.bool, device=x.device)
        picks = torch.where(valid, top, n)  # invalid picks land in the spare column n
        chosen.scatter_(-1, picks, torch.ones_like(picks, dtype=torch.bool))  # (a tensor source: fvcore traces it)
        return chosen[..., :n]


class CompressedAttentionLayer(nn.Module):
    """``DeepseekV4Attention``: ``(x [B, S, h], pos, state) -> [B, S, h]``; see the module docstring."""

    def __init__(self, a: CompressedAttention, hidden: int, dd: FactoryKwargs, rope: RotaryTables):
        super().__init__()
        self.a = a
        self.rope = rope
        H, D, g = a.num_heads, a.head_dim, a.o_groups
        self.q_a_proj = nn.Linear(hidden, a.q_lora_rank, bias=False, **dd)
        self.q_a_norm = RMSNorm(a.q_lora_rank, dd)
        self.q_b_proj = nn.Linear(a.q_lora_rank, H * D, bias=False, **dd)
        self.kv_proj = nn.Linear(hidden, D, bias=False, **dd)
        self.kv_norm = RMSNorm(D, dd)
        self.o_a_proj = nn.Linear(H * D // g, g * a.o_lora_rank, bias=False, **dd)  # g blocks [o, H D / g]
        self.o_b_proj = nn.Linear(g * a.o_lora_rank, hidden, bias=False, **dd)
        self.sinks = nn.Parameter(torch.zeros(H, **dd))
        self.compressor: Compressor | None = None
        if a.compressor != "none":
            self.compressor = Compressor(hidden, D, a.series, a.compress_rate, dd)
            if a.compressor == "csa":
                self.compressor.indexer = Indexer(a, hidden, dd)

    @torch.no_grad()
    def init_params(self, std: float, g: torch.Generator) -> None:
        """Sink logits ~ N(0, 1), of the order of the scores (as ``GQAttention``'s)."""
        self.sinks.normal_(0.0, 1.0, generator=g)

    def allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
        a = self.a
        out = [torch.zeros(batch, min(max_len, a.sliding_window), a.head_dim, dtype=dtype, device=device)]
        if self.compressor is not None:
            out += self.compressor.allocate(batch, max_len, dtype, device)
            if a.compressor == "csa":
                out += self.compressor.indexer.allocate(batch, max_len, dtype, device)
        return out

    def _window(self, kv: torch.Tensor, pos: int, win: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys [B, T, D] in order, their positions [T]): the sliding_window - 1 cached rows before pos
        (all the first new query sees besides itself), then the new rows; the last new rows are written
        into the ring."""
        S = kv.shape[1]
        if win is None:
            return kv, torch.arange(pos, pos + S, device=kv.device)
        slots = win.shape[1]
        prev = min(pos, slots, self.a.sliding_window - 1)  # what the first new query still sees
        old = win[:, torch.arange(pos - prev, pos, device=kv.device) % slots].to(kv.dtype)
        keep = min(S, slots)
        win[:, torch.arange(pos + S - keep, pos + S, device=kv.device) % slots] = kv[:, S - keep :].to(win.dtype)
        return torch.cat((old, kv), dim=1), torch.arange(pos - prev, pos + S, device=kv.device)

    def forward(self, x: torch.Tensor, pos: int, state: list[torch.Tensor] | None) -> torch.Tensor:
        a = self.a
        B, S, _ = x.shape
        H, D, rd = a.num_heads, a.head_dim, a.rope_head_dim
        cos, sin = self.rope.get(rd, a.rope_theta, 0, pos + S, x.device, x.dtype)  # [pos + S, rd] half-split
        table = (cos[:, : rd // 2], sin[:, : rd // 2])  # one angle per pair, positions 0..pos+S-1
        here = (table[0][pos:], table[1][pos:])
        q_lat = self.q_a_norm(self.q_a_proj(x))  # [B, S, r]
        q = unweighted_rms(self.q_b_proj(q_lat).view(B, S, H, D).transpose(1, 2))  # [B, H, S, D]
        q = rope_interleaved(q, *here)
        kv = rope_interleaved(self.kv_norm(self.kv_proj(x)), *here)  # [B, S, D]
        keys, k_pos = self._window(kv, pos, state[0] if state is not None else None)
        q_pos = torch.arange(pos, pos + S, device=x.device)
        mask = band_mask(q_pos, k_pos, a.sliding_window).expand(B, S, -1)  # [B, S, T]
        if self.compressor is not None:
            entries = self.compressor(x, pos, state[1:6] if state is not None else None, table)  # [B, n, D]
            threshold = (q_pos + 1) // a.compress_rate  # [S]: entries each query may see
            if a.compressor == "csa":
                ix = self.compressor.indexer
                ikeys = ix(x, pos, state[6:] if state is not None else None, table)  # [B, n, Di]
                seen = ix.select(x, q_lat, ikeys, here, threshold)
            else:
                seen = (torch.arange(entries.shape[1], device=x.device)[None, :] < threshold[:, None]).expand(B, S, -1)
            keys = torch.cat((keys, entries), dim=1)
            mask = torch.cat((mask, seen), dim=-1)
        kh = keys.unsqueeze(1)  # [B, 1, T, D]: one head, read as key and value
        out = explicit_attention(q, kh, kh, mask[:, None, None], False, D**-0.5, self.sinks)  # [B, H, S, D]
        out = rope_interleaved(out, here[0], -here[1])  # undo the values' rotation at the query position
        grouped = out.transpose(1, 2).reshape(B * S, a.o_groups, H * D // a.o_groups).transpose(0, 1)
        w = self.o_a_proj.weight.view(a.o_groups, a.o_lora_rank, -1).transpose(1, 2)  # [g, H D / g, o]
        y = torch.bmm(grouped, w).transpose(0, 1).reshape(B, S, a.o_groups * a.o_lora_rank)
        return self.o_b_proj(y)
