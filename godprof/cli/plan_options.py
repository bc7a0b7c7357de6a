"""The options of `godprof plan`, one annotated type each (help text, bounds, panel), so the command's
signature in ``godprof.cli.plan`` reads as a list of names and defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from godprof.cli.options import SIZES, OptimizerChoice, RecomputeChoice
from godprof.cli.plan_output import PlanFormat

Help = "Serving"
TrainHelp = "Training (--train)"
OutHelp = "Output"

SpecOpt = Annotated[
    str,
    typer.Argument(
        help="A spec (bundled name, YAML or config.json) or a swarm YAML file.", show_default=False, metavar="SPEC"
    ),
]
GpuOpt = Annotated[
    str,
    typer.Option(
        "--gpu",
        "-g",
        help="GPU key(s) from `godprof gpus`, comma-separated: the plan compares them (h100,a100-80gb,mi300x).",
    ),
]
GpuFileOpt = Annotated[list[Path] | None, typer.Option("--gpu-file", help="Your own GPU YAML; repeatable.")]
WorkloadOpt = Annotated[
    Path | None,
    typer.Option(
        "--workload",
        "-w",
        help="Workload YAML (prompt/output tokens, "
        "concurrency or rate, samples, SLOs); the options below override its values.",
        rich_help_panel=Help,
    ),
]
PromptTokensOpt = Annotated[
    int | None,
    typer.Option(
        "--prompt-tokens", min=1, max=2**31 - 1, help="Prompt tokens per request (default: 1024).", rich_help_panel=Help
    ),
]
OutputTokensOpt = Annotated[
    int | None,
    typer.Option(
        "--output-tokens",
        min=1,
        max=2**31 - 1,
        help="Generated tokens per sample (default: 256).",
        rich_help_panel=Help,
    ),
]
ConcurrencyOpt = Annotated[
    str | None,
    typer.Option(
        "--concurrency",
        help="Requests in flight at once, or 'max': offline, maximum "
        "throughput (each replica runs the largest batch that fits memory, the SLOs and "
        "--max-batch).",
        rich_help_panel=Help,
    ),
]
MaxBatchOpt = Annotated[
    int,
    typer.Option(
        "--max-batch",
        min=1,
        max=2**31 - 1,
        help="Serving: the most sequences an engine "
        "instance (each attention-DP rank) runs at once: vLLM's max_num_seqs (default 256), "
        "TRT-LLM's max_batch_size.",
        rich_help_panel=Help,
    ),
]
PrefixHitRateOpt = Annotated[
    float,
    typer.Option(
        "--prefix-hit-rate",
        min=0.0,
        max=0.99,
        help="Serving: share of prompt tokens found "
        "in the prefix cache (not recomputed: fewer prefill tokens, shorter TTFT).",
        rich_help_panel=Help,
    ),
]
SpeculativeOpt = Annotated[
    str | None,
    typer.Option(
        "--speculative",
        help="Serving: speculative decoding, 'k=4,acceptance=0.7' with "
        "the spec's MTP modules or 'draft=SPEC,k=4,acceptance=0.7' with a draft model: "
        "(1 - a^(k+1)) / (1 - a) tokens per step.",
        rich_help_panel=Help,
    ),
]
DisaggregateOpt = Annotated[
    str | None,
    typer.Option(
        "--disaggregate",
        help="Serving: separate prefill and decode instances, "
        "'P:D' per replica (1:3) or 'auto'; the prompt's KV cache crosses the network.",
        rich_help_panel=Help,
    ),
]
AttnDpOpt = Annotated[
    int | None,
    typer.Option(
        "--attn-dp",
        min=1,
        max=1024,
        help="Serving: attention data-parallel ranks of "
        "tp GPUs, experts spread over all of them (DeepSeek-V3 style; default: searched "
        "for MoE models, 1 otherwise).",
        rich_help_panel=Help,
    ),
]
RateOpt = Annotated[
    float | None,
    typer.Option(
        "--rate", min=0.0, help="Request arrivals per second (instead of --concurrency).", rich_help_panel=Help
    ),
]
SamplesOpt = Annotated[
    int | None,
    typer.Option(
        "--samples-per-prompt",
        "-n",
        min=1,
        max=2**31 - 1,
        help="Best-of-n samples per request; they share the prompt's KV cache.",
        rich_help_panel=Help,
    ),
]
SloTtftOpt = Annotated[
    str | None,
    typer.Option("--slo-ttft", help="Max time to first token: 500ms, 1s, 0.2 (seconds).", rich_help_panel=Help),
]
SloTpotOpt = Annotated[
    str | None, typer.Option("--slo-tpot", help="Max time per output token: 50ms, 0.05.", rich_help_panel=Help)
]
DtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        "-d",
        help="Weight format: bf16, fp16, fp32, fp8, int8, int4 (default: the workload's, else bf16).",
    ),
]
KvDtypeOpt = Annotated[
    str | None,
    typer.Option("--kv-dtype", help="KV cache format (default: activation dtype).", rich_help_panel=Help),
]
MaxGpusOpt = Annotated[
    int | None,
    typer.Option(
        "--max-gpus", min=1, max=1_000_000, help="Cap on the GPUs of the plan (all replicas; a swarm's total)."
    ),
]
GpusPerNodeOpt = Annotated[
    int, typer.Option("--gpus-per-node", min=1, max=1_000_000, help="GPUs per node: the largest tensor-parallel group.")
]
TpOpt = Annotated[
    int | None,
    typer.Option(
        "--tp",
        min=1,
        max=1_000_000,
        help="Fix the tensor-parallel degree (default: search powers of two within a node).",
    ),
]
PpOpt = Annotated[
    int | None,
    typer.Option(
        "--pp", min=1, max=1_000_000, help="Fix the pipeline-parallel degree (default: search the powers of two)."
    ),
]
UsdPerGpuHourOpt = Annotated[
    str | None,
    typer.Option(
        "--usd-per-gpu-hour",
        help="Price of one GPU-hour for cost per 1M tokens and training cost: one number for every GPU (2.5) "
        "or per GPU (h100=2.5,b200=5). Default: the database's published on-demand price (`godprof gpus "
        "KEY` shows it with its source and date) where it has one.",
    ),
]
HeadroomOpt = Annotated[
    float,
    typer.Option(
        "--headroom",
        min=0.0,
        max=0.9,
        help="Fraction of each GPU's memory kept free (CUDA context, fragmentation, workspace).",
    ),
]
IdlePowerOpt = Annotated[
    float,
    typer.Option(
        "--idle-power-fraction", min=0.0, max=1.0, help="Board power at idle as a fraction of TDP (energy model)."
    ),
]
AgainstOpt = Annotated[
    str | None,
    typer.Option(
        "--against",
        help="With a swarm file: a dense model serving the same traffic, shown side by side.",
        rich_help_panel=Help,
    ),
]
TrainOpt = Annotated[
    bool, typer.Option("--train", help="Plan a training run instead of serving.", rich_help_panel=TrainHelp)
]
TokensOpt = Annotated[
    str,
    typer.Option(
        "--tokens",
        help=f"Training tokens (1.4T, 300B = 3e11) or 'chinchilla' (20 per parameter); {SIZES}.",
        rich_help_panel=TrainHelp,
    ),
]
MfuOpt = Annotated[
    float,
    typer.Option(
        "--mfu",
        min=0.01,
        max=1.0,
        help="Fraction of the dense peak the executed FLOPs (recomputation included) run at.",
        rich_help_panel=TrainHelp,
    ),
]
ZeroOpt = Annotated[
    int,
    typer.Option(
        "--zero",
        min=0,
        max=3,
        help="ZeRO stage: 0 none, 1 optimizer state, 2 + gradients, 3 + weights sharded over data parallel.",
        rich_help_panel=TrainHelp,
    ),
]
RecomputeOpt = Annotated[
    RecomputeChoice, typer.Option("--recompute", help="Activation recomputation.", rich_help_panel=TrainHelp)
]
OptimizerOpt = Annotated[
    OptimizerChoice,
    typer.Option("--optimizer", help="Optimizer (state bytes per parameter).", rich_help_panel=TrainHelp),
]
SeqOpt = Annotated[
    str, typer.Option("--seq", help=f"Training sequence length (4096, 8Ki); {SIZES}.", rich_help_panel=TrainHelp)
]
MicroBatchOpt = Annotated[
    int,
    typer.Option(
        "--micro-batch", min=1, max=2**31 - 1, help="Sequences per GPU per micro-step.", rich_help_panel=TrainHelp
    ),
]
GlobalBatchTokensOpt = Annotated[
    str,
    typer.Option(
        "--global-batch-tokens",
        help=f"Tokens per optimizer step (caps data parallelism; 4Mi = 4,194,304, 4M = 4e6); {SIZES}.",
        rich_help_panel=TrainHelp,
    ),
]
FailureRateOpt = Annotated[
    float | None,
    typer.Option(
        "--failure-rate-per-gpu-hour",
        min=0.0,
        help="Failures per GPU-hour (default: 1.97e-5, Llama 3's 16k-GPU run).",
        rich_help_panel=TrainHelp,
    ),
]
CheckpointWriteSOpt = Annotated[
    float | None,
    typer.Option(
        "--checkpoint-write-s",
        min=0.0,
        help="Seconds to write one checkpoint (default: size / 10 GB/s).",
        rich_help_panel=TrainHelp,
    ),
]
ClusterGpusOpt = Annotated[
    int | None,
    typer.Option(
        "--cluster-gpus",
        min=1,
        max=1_000_000,
        help="GPUs for the run (default: the smallest count that fits); the layout search evaluates every "
        "tp x pp that divides it at dp = GPUs / (tp x pp).",
        rich_help_panel=TrainHelp,
    ),
]
EpOpt = Annotated[
    int | None,
    typer.Option(
        "--ep",
        min=1,
        help="Expert-parallel degree, independent of --tp (serving: it divides tp x "
        "attn-dp, default all of them; training: experts placed "
        "whole over ep of the tp x dp GPUs of a stage; DeepSeek-V3: --pp 16 --ep 64). Default: the "
        "widest that divides tp x dp and the experts.",
        rich_help_panel=TrainHelp,
    ),
]
GradDtypeOpt = Annotated[
    str,
    typer.Option(
        "--grad-dtype",
        help="Gradient accumulation dtype: fp32 (DeepSpeed and Megatron-LM's default: "
        "Adam mixed precision 18 B/param) or bf16 (16 B/param, the ZeRO paper's figure).",
        rich_help_panel=TrainHelp,
    ),
]
DropoutOpt = Annotated[
    float,
    typer.Option(
        "--dropout",
        min=0.0,
        max=0.99,
        help="Dropout probability; above 0 the 1-byte masks of the "
        "residual (and, without flash attention, attention) dropouts are kept for backward.",
        rich_help_panel=TrainHelp,
    ),
]
RecomputeLayersOpt = Annotated[
    int | None,
    typer.Option(
        "--recompute-layers",
        min=0,
        help="Partial recomputation: fully recompute the first N layers "
        "of each pipeline stage (Megatron-LM's --recompute-num-layers, block method); the others follow "
        "--recompute.",
        rich_help_panel=TrainHelp,
    ),
]
OffloadOptimizerOpt = Annotated[
    bool,
    typer.Option(
        "--offload-optimizer/--no-offload-optimizer",
        help="ZeRO-Offload: keep the optimizer state "
        "(fp32 master, Adam moments) in CPU memory; the plan reports the host bytes per GPU.",
        rich_help_panel=TrainHelp,
    ),
]
PrefillChunkOpt = Annotated[
    int,
    typer.Option(
        "--prefill-chunk",
        min=0,
        help="Serving: tokens per prefill pass (chunked prefill, vLLM's "
        "max_num_batched_tokens); activations are the largest pass's. 0: no chunking.",
        rich_help_panel=Help,
    ),
]
LogitsOpt = Annotated[
    str,
    typer.Option(
        "--logits", help="Serving: logits kept in a prefill pass, last (one per sequence) or all.", rich_help_panel=Help
    ),
]
FmtOpt = Annotated[
    PlanFormat,
    typer.Option(
        "--format",
        "-f",
        help="table, json (stable keys), md or html (self-contained capacity-planning documents).",
        rich_help_panel=OutHelp,
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write the report to this file instead of stdout.", rich_help_panel=OutHelp),
]
ForceOpt = Annotated[
    bool,
    typer.Option("--force", help="Overwrite --output if it exists (never an input file).", rich_help_panel=OutHelp),
]
PlotOpt = Annotated[
    bool,
    typer.Option("--plot/--no-plot", help="Embed a figure in md/html (needs matplotlib).", rich_help_panel=OutHelp),
]
EmbedPlotOpt = Annotated[
    bool,
    typer.Option(
        "--embed-plot",
        help="Markdown: inline the figure as a data: URI instead of writing FILE.png "
        "beside the -o FILE.md (GitHub and most wikis do not show data: URIs).",
        rich_help_panel=OutHelp,
    ),
]
