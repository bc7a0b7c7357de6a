"""Reusable typed options, so every command spells a workload the same way."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from godprof.cli.common import Format


class Mode(str, Enum):
    inference = "inference"
    train = "train"


class OptimizerChoice(str, Enum):
    adamw = "adamw"
    adamw8bit = "adamw8bit"
    sgd = "sgd"


class RecomputeChoice(str, Enum):
    none = "none"
    selective = "selective"
    full = "full"


class AttnFlops(str, Enum):
    causal = "causal"
    full = "full"


class LogitsChoice(str, Enum):
    all = "all"
    last = "last"


SpecArg = Annotated[
    str,
    typer.Argument(
        help="A spec: a YAML file, a Hugging Face config.json, or a bundled name such as llama-3-8b "
        "(`godprof specs` lists them).",
        show_default=False,
        metavar="SPEC",
    ),
]
Batch = Annotated[int, typer.Option("--batch", "-b", min=1, max=2**31 - 1, help="Sequences processed together.")]
SIZES = "k/M/G/T decimal (8k = 8000), Ki/Mi/Gi/Ti binary (8Ki = 8192)"
Seq = Annotated[str, typer.Option("--seq", "-s", help=f"Prefill / training sequence length: 4096, 8Ki, 32k ({SIZES}).")]
Context = Annotated[
    str | None,
    typer.Option(
        "--context",
        "-c",
        help=f"Tokens in the KV cache for decode and cache memory (default: the --seq value); {SIZES}.",
    ),
]
DTypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        "-d",
        help="Weight format: fp32, bf16, fp16, fp8, int8, int4 (int8/int4 with group scales); a comma-separated "
        "list (bf16,int4) gives one result per format.",
    ),
]
KVDType = Annotated[
    str | None, typer.Option("--kv-dtype", help="KV cache and SSM state format (default: the activation dtype).")
]
ModeOpt = Annotated[Mode, typer.Option("--mode", "-m", help="inference (prefill + decode) or train.")]
OptimizerOpt = Annotated[
    OptimizerChoice, typer.Option("--optimizer", help="Training optimizer (mixed precision adds an fp32 master copy).")
]
RecomputeOpt = Annotated[RecomputeChoice, typer.Option("--recompute", help="Activation recomputation in training.")]
AttnFlopsOpt = Annotated[
    AttnFlops,
    typer.Option(
        "--attention-flops",
        help="causal: only the j <= i half of QK^T and PV; full: the whole seq x seq (what an unmasked "
        "kernel computes and torch's FlopCounterMode counts for SDPA).",
    ),
]
FlashOpt = Annotated[
    bool, typer.Option("--flash/--no-flash", help="Flash attention: no seq x seq score matrix in memory.")
]
LogitsOpt = Annotated[
    LogitsChoice, typer.Option("--logits", help="Compute logits for all positions or only the last one.")
]
FormatOpt = Annotated[
    Format, typer.Option("--format", "-f", help="table, json (a stable schema for scripts), csv or md.")
]
GroupSize = Annotated[
    int, typer.Option("--group-size", min=1, max=2**31 - 1, help="int8/int4 quantisation group size.")
]
