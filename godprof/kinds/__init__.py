"""Layer kinds, registered by their spec ``type:`` name.

Token mixers and channel mixers (FFNs) each implement ``godprof.kinds.base.MixerKind`` or ``FfnKind``
in one module of this package (the analytic side, torch-free) and name their torch module in
``build``. Adding a kind: write its module, add it to the tables below, write its build module,
importer lines and tests, and a line in the README's spec reference (see "Adding a layer kind").
"""

from __future__ import annotations

from godprof.kinds.attention import Attention
from godprof.kinds.base import FfnKind, MixerKind, Part
from godprof.kinds.compressed_attention import CompressedAttention
from godprof.kinds.dsa import DSA
from godprof.kinds.gated_deltanet import GatedDeltaNet
from godprof.kinds.kda import KDA
from godprof.kinds.lightning import Lightning
from godprof.kinds.mamba1 import Mamba1
from godprof.kinds.mamba2 import Mamba2
from godprof.kinds.mla import MLA
from godprof.kinds.mlp import MLP
from godprof.kinds.moe import MoE
from godprof.kinds.none_mixer import NoMixer
from godprof.kinds.parallel import Parallel
from godprof.kinds.rwkv import RwkvChannelMix, RwkvTimeMix
from godprof.kinds.shared_block import SharedBlock
from godprof.kinds.short_conv import ShortConv

MIXER_KINDS: dict[str, type[MixerKind]] = {
    k.type: k
    for k in (
        Attention,
        MLA,
        DSA,
        Mamba1,
        Mamba2,
        NoMixer,
        GatedDeltaNet,
        KDA,
        ShortConv,
        Lightning,
        RwkvTimeMix,
        Parallel,
        CompressedAttention,
        SharedBlock,
    )  # fmt: skip
}
FFN_KINDS: dict[str, type[FfnKind]] = {k.type: k for k in (MLP, MoE, RwkvChannelMix)}

__all__ = [
    "FFN_KINDS",
    "MIXER_KINDS",
    "Attention",
    "FfnKind",
    "MLA",
    "MLP",
    "Mamba1",
    "Mamba2",
    "MixerKind",
    "MoE",
    "Part",
]
