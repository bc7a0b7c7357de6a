"""`godprof plan`: capacity plans for serving, training, and a swarm of specialists vs one dense model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from godprof.cli.common import ExitCode, guard
from godprof.cli.options import SIZES, OptimizerChoice, RecomputeChoice
from godprof.cli.plan_output import PlanFormat, emit_plan
from godprof.cli.plan_run import parse_count, serve_semantics, swarm_plan, train_plan

Help = "Serving"
TrainHelp = "Training (--train)"
OutHelp = "Output"

if TYPE_CHECKING:
    from godprof.plan.workload import ServingWorkload


def plan_cmd(
    spec: Annotated[
        str, typer.Argument(help="A spec (bundled name, YAML or config.json) or a swarm YAML file.", show_default=False)
    ],  # fmt: skip
    gpu: Annotated[
        str,
        typer.Option(
            "--gpu",
            "-g",
            help="GPU key(s) from `godprof gpus`, comma-separated: the plan compares them (h100,a100-80gb,mi300x).",
        ),
    ] = "h100",  # fmt: skip
    gpu_file: Annotated[list[Path] | None, typer.Option("--gpu-file", help="Your own GPU YAML; repeatable.")] = None,
    workload: Annotated[
        Path | None,
        typer.Option(
            "--workload",
            "-w",
            help="Workload YAML (prompt/output tokens, "
            "concurrency or rate, samples, SLOs); the options below override its values.",
            rich_help_panel=Help,
        ),
    ] = None,  # fmt: skip
    prompt_tokens: Annotated[
        int | None,
        typer.Option("--prompt-tokens", min=1, max=2**31 - 1,
                     help="Prompt tokens per request (default: 1024).", rich_help_panel=Help),
    ] = None,  # fmt: skip
    output_tokens: Annotated[
        int | None,
        typer.Option(
            "--output-tokens", min=1, max=2**31 - 1,
                help="Generated tokens per sample (default: 256).", rich_help_panel=Help
        ),
    ] = None,  # fmt: skip
    concurrency: Annotated[
        str | None, typer.Option("--concurrency", help="Requests in flight at once, or 'max': offline, maximum "
                                 "throughput (each replica runs the largest batch that fits memory, the SLOs and "
                                 "--max-batch).", rich_help_panel=Help)
    ] = None,  # fmt: skip
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, max=2**31 - 1, help="Serving: the most sequences an engine "
                          "instance (each attention-DP rank) runs at once: vLLM's max_num_seqs (default 256), "
                          "TRT-LLM's max_batch_size.", rich_help_panel=Help)
    ] = 256,  # fmt: skip
    prefix_hit_rate: Annotated[
        float, typer.Option("--prefix-hit-rate", min=0.0, max=0.99, help="Serving: share of prompt tokens found "
                            "in the prefix cache (not recomputed: fewer prefill tokens, shorter TTFT).",
                            rich_help_panel=Help)
    ] = 0.0,  # fmt: skip
    speculative: Annotated[
        str | None, typer.Option("--speculative", help="Serving: speculative decoding, 'k=4,acceptance=0.7' with "
                                 "the spec's MTP modules or 'draft=SPEC,k=4,acceptance=0.7' with a draft model: "
                                 "(1 - a^(k+1)) / (1 - a) tokens per step.", rich_help_panel=Help)
    ] = None,  # fmt: skip
    disaggregate: Annotated[
        str | None, typer.Option("--disaggregate", help="Serving: separate prefill and decode instances, "
                                 "'P:D' per replica (1:3) or 'auto'; the prompt's KV cache crosses the network.",
                                 rich_help_panel=Help)
    ] = None,  # fmt: skip
    attn_dp: Annotated[
        int | None, typer.Option("--attn-dp", min=1, max=1024, help="Serving: attention data-parallel ranks of "
                                 "tp GPUs, experts spread over all of them (DeepSeek-V3 style; default: searched "
                                 "for MoE models, 1 otherwise).", rich_help_panel=Help)
    ] = None,  # fmt: skip
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate", min=0.0, help="Request arrivals per second (instead of --concurrency).", rich_help_panel=Help
        ),
    ] = None,  # fmt: skip
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples-per-prompt",
            "-n",
            min=1, max=2**31 - 1,
            help="Best-of-n samples per request; they share the prompt's KV cache.",
            rich_help_panel=Help,
        ),
    ] = None,  # fmt: skip
    slo_ttft: Annotated[
        str | None,
        typer.Option("--slo-ttft", help="Max time to first token: 500ms, 1s, 0.2 (seconds).", rich_help_panel=Help),
    ] = None,  # fmt: skip
    slo_tpot: Annotated[
        str | None, typer.Option("--slo-tpot", help="Max time per output token: 50ms, 0.05.", rich_help_panel=Help)
    ] = None,  # fmt: skip
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype",
            "-d",
            help="Weight format: bf16, fp16, fp32, fp8, int8, int4 (default: the workload's, else bf16).",
        ),
    ] = None,  # fmt: skip
    kv_dtype: Annotated[
        str | None,
        typer.Option("--kv-dtype", help="KV cache format (default: activation dtype).", rich_help_panel=Help),
    ] = None,  # fmt: skip
    max_gpus: Annotated[
        int | None,
        typer.Option("--max-gpus", min=1, max=1_000_000,
                     help="Cap on the GPUs of the plan (all replicas; a swarm's total)."),
    ] = None,  # fmt: skip
    gpus_per_node: Annotated[
        int, typer.Option("--gpus-per-node", min=1, max=1_000_000,
                          help="GPUs per node: the largest tensor-parallel group.")
    ] = 8,  # fmt: skip
    tp: Annotated[
        int | None,
        typer.Option(
            "--tp", min=1, max=1_000_000,
                help="Fix the tensor-parallel degree (default: search powers of two within a node)."
        ),
    ] = None,  # fmt: skip
    pp: Annotated[
        int | None, typer.Option("--pp", min=1, max=1_000_000,
                                 help="Fix the pipeline-parallel degree (default: search the powers of two).")
    ] = None,  # fmt: skip
    usd_per_gpu_hour: Annotated[
        str | None,
        typer.Option(
            "--usd-per-gpu-hour",
            help="Price of one GPU-hour for cost per 1M tokens and training cost: one number for every GPU (2.5) "
            "or per GPU (h100=2.5,b200=5). Default: the database's published on-demand price (`godprof gpus "
            "KEY` shows it with its source and date) where it has one.",
        ),
    ] = None,  # fmt: skip
    headroom: Annotated[
        float,
        typer.Option(
            "--headroom",
            min=0.0,
            max=0.9,
            help="Fraction of each GPU's memory kept free (CUDA context, fragmentation, workspace).",
        ),
    ] = 0.1,  # fmt: skip
    idle_power: Annotated[
        float,
        typer.Option(
            "--idle-power-fraction", min=0.0, max=1.0, help="Board power at idle as a fraction of TDP (energy model)."
        ),
    ] = 0.2,  # fmt: skip
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="With a swarm file: a dense model serving the same traffic, shown side by side.",
            rich_help_panel=Help,
        ),
    ] = None,  # fmt: skip
    train: Annotated[
        bool, typer.Option("--train", help="Plan a training run instead of serving.", rich_help_panel=TrainHelp)
    ] = False,  # fmt: skip
    tokens: Annotated[
        str,
        typer.Option(
            "--tokens",
            help=f"Training tokens (1.4T, 300B = 3e11) or 'chinchilla' (20 per parameter); {SIZES}.",
            rich_help_panel=TrainHelp,
        ),
    ] = "chinchilla",  # fmt: skip
    mfu: Annotated[
        float,
        typer.Option(
            "--mfu",
            min=0.01,
            max=1.0,
            help="Fraction of the dense peak the executed FLOPs (recomputation included) run at.",
            rich_help_panel=TrainHelp,
        ),
    ] = 0.4,  # fmt: skip
    zero: Annotated[
        int,
        typer.Option(
            "--zero",
            min=0,
            max=3,
            help="ZeRO stage: 0 none, 1 optimizer state, 2 + gradients, 3 + weights sharded over data parallel.",
            rich_help_panel=TrainHelp,
        ),
    ] = 1,  # fmt: skip
    recompute: Annotated[
        RecomputeChoice, typer.Option("--recompute", help="Activation recomputation.", rich_help_panel=TrainHelp)
    ] = RecomputeChoice.selective,  # fmt: skip
    optimizer: Annotated[
        OptimizerChoice,
        typer.Option("--optimizer", help="Optimizer (state bytes per parameter).", rich_help_panel=TrainHelp),
    ] = OptimizerChoice.adamw,  # fmt: skip
    seq: Annotated[
        str, typer.Option("--seq", help=f"Training sequence length (4096, 8Ki); {SIZES}.", rich_help_panel=TrainHelp)
    ] = "4096",  # fmt: skip
    micro_batch: Annotated[
        int, typer.Option("--micro-batch", min=1, max=2**31 - 1,
                          help="Sequences per GPU per micro-step.", rich_help_panel=TrainHelp)
    ] = 1,  # fmt: skip
    global_batch_tokens: Annotated[
        str,
        typer.Option(
            "--global-batch-tokens",
            help=f"Tokens per optimizer step (caps data parallelism; 4Mi = 4,194,304, 4M = 4e6); {SIZES}.",
            rich_help_panel=TrainHelp,
        ),
    ] = "4194304",  # fmt: skip
    failure_rate: Annotated[
        float | None,
        typer.Option(
            "--failure-rate-per-gpu-hour",
            min=0.0,
            help="Failures per GPU-hour (default: 1.97e-5, Llama 3's 16k-GPU run).",
            rich_help_panel=TrainHelp,
        ),
    ] = None,  # fmt: skip
    checkpoint_write_s: Annotated[
        float | None,
        typer.Option(
            "--checkpoint-write-s",
            min=0.0,
            help="Seconds to write one checkpoint (default: size / 10 GB/s).",
            rich_help_panel=TrainHelp,
        ),
    ] = None,  # fmt: skip
    cluster_gpus: Annotated[
        int | None,
        typer.Option(
            "--cluster-gpus",
            min=1, max=1_000_000,
            help="GPUs for the run (default: the smallest count that fits); the layout search evaluates every "
            "tp x pp that divides it at dp = GPUs / (tp x pp).",
            rich_help_panel=TrainHelp,
        ),
    ] = None,  # fmt: skip
    ep: Annotated[
        int | None,
        typer.Option("--ep", min=1, help="Expert-parallel degree, independent of --tp (serving: it divides tp x "
                     "attn-dp, default all of them; training: experts placed "
                     "whole over ep of the tp x dp GPUs of a stage; DeepSeek-V3: --pp 16 --ep 64). Default: the "
                     "widest that divides tp x dp and the experts.", rich_help_panel=TrainHelp),
    ] = None,  # fmt: skip
    grad_dtype: Annotated[
        str,
        typer.Option("--grad-dtype", help="Gradient accumulation dtype: fp32 (DeepSpeed and Megatron-LM's default: "
                     "Adam mixed precision 18 B/param) or bf16 (16 B/param, the ZeRO paper's figure).",
                     rich_help_panel=TrainHelp),
    ] = "fp32",  # fmt: skip
    dropout: Annotated[
        float,
        typer.Option("--dropout", min=0.0, max=0.99, help="Dropout probability; above 0 the 1-byte masks of the "
                     "residual (and, without flash attention, attention) dropouts are kept for backward.",
                     rich_help_panel=TrainHelp),
    ] = 0.0,  # fmt: skip
    recompute_layers: Annotated[
        int | None,
        typer.Option("--recompute-layers", min=0, help="Partial recomputation: fully recompute the first N layers "
                     "of each pipeline stage (Megatron-LM's --recompute-num-layers, block method); the others follow "
                     "--recompute.", rich_help_panel=TrainHelp),
    ] = None,  # fmt: skip
    offload_optimizer: Annotated[
        bool,
        typer.Option("--offload-optimizer/--no-offload-optimizer", help="ZeRO-Offload: keep the optimizer state "
                     "(fp32 master, Adam moments) in CPU memory; the plan reports the host bytes per GPU.",
                     rich_help_panel=TrainHelp),
    ] = False,  # fmt: skip
    prefill_chunk: Annotated[
        int,
        typer.Option("--prefill-chunk", min=0, help="Serving: tokens per prefill pass (chunked prefill, vLLM's "
                     "max_num_batched_tokens); activations are the largest pass's. 0: no chunking.",
                     rich_help_panel=Help),
    ] = 8192,  # fmt: skip
    logits: Annotated[
        str,
        typer.Option("--logits", help="Serving: logits kept in a prefill pass, last (one per sequence) or all.",
                     rich_help_panel=Help),
    ] = "last",  # fmt: skip
    fmt: Annotated[
        PlanFormat,
        typer.Option(
            "--format",
            "-f",
            help="table, json (stable keys), md or html (self-contained capacity-planning documents).",
            rich_help_panel=OutHelp,
        ),
    ] = PlanFormat.table,  # fmt: skip
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write the report to this file instead of stdout.", rich_help_panel=OutHelp
        ),
    ] = None,  # fmt: skip
    force: Annotated[
        bool,
        typer.Option("--force", help="Overwrite --output if it exists (never an input file).", rich_help_panel=OutHelp),
    ] = False,  # fmt: skip
    plot: Annotated[
        bool,
        typer.Option("--plot/--no-plot", help="Embed a figure in md/html (needs matplotlib).", rich_help_panel=OutHelp),
    ] = True,  # fmt: skip
    embed_plot: Annotated[
        bool,
        typer.Option("--embed-plot", help="Markdown: inline the figure as a data: URI instead of writing FILE.png "
                     "beside the -o FILE.md (GitHub and most wikis do not show data: URIs).",
                     rich_help_panel=OutHelp),
    ] = False,  # fmt: skip
) -> None:
    """How many GPUs, of which kind, laid out how, at what latency, energy and cost: serving, training,
    or a swarm of specialists against one dense model.

    Serving finds the smallest set of GPUs and layout (tp, pp, attention dp, ep, prefill/decode pools,
    replicas) that holds weights + KV cache/state + activations with --headroom free and meets the SLOs.
    The engine model is continuous batching with chunked prefill: each step carries the decodes and the
    prefill chunks of new requests, one read of the weights per --prefill-chunk tokens. TPOT is the mean
    inter-token latency at steady state (prefill chunks included); TTFT is under load (the step in
    progress, the prompt's chunks sharing steps with decodes, queueing at a --rate). It reports both the
    expected figures and the speed-of-light bound, tokens/s per GPU, energy and cost per 1M output
    tokens, and alternatives (other layouts, other GPUs).

    Training (--train) reports FLOPs (6ND plus attention and recomputation), GPU-hours at --mfu, memory
    per GPU under ZeRO and tp/pp, the smallest GPU count that fits, energy, cost, checkpoint size,
    expected interruptions and the Young/Daly checkpoint interval sqrt(2 x write time x MTBF).

    A swarm file (YAML with `specialists`, see examples/swarm.yaml) plans each member for its share of the
    traffic and sums them; --against SPEC sets one dense model serving the same traffic beside it.

    Exit codes: 0 a plan fits; 3 nothing fits (the message says what is missing: memory by how much, or
    which SLO); 2 a bad option, spec or workload file.

    Examples:

    \b
      godprof plan llama-3-8b --gpu h100 --concurrency 64 --slo-tpot 50ms
      godprof plan mixtral-8x7b --gpu h100,mi300x --rate 20 --usd-per-gpu-hour 2.5
      godprof plan llama-3-70b -d fp8 --concurrency max --max-gpus 8
      godprof plan deepseek-v3 -g h200 -d fp8 --attn-dp 8 --tp 1 \\
        --speculative k=1,acceptance=0.8
      godprof plan llama-3-8b --disaggregate auto --prefix-hit-rate 0.5
      godprof plan llama-3-8b -w examples/workload-chat.yaml -f html -o plan.html
      godprof plan llama-3-8b -f md -o plan.md     # and plan.png beside it
      godprof plan llama-3-8b --train --tokens 15T --zero 3 --cluster-gpus 1024
      godprof plan examples/swarm.yaml --against llama-3-70b --format md
    """
    from dataclasses import replace

    with guard():
        for opt, value in (("--rate", rate), ("--dropout", dropout), ("--headroom", headroom),
                           ("--idle-power-fraction", idle_power), ("--mfu", mfu),
                           ("--failure-rate-per-gpu-hour", failure_rate),
                           ("--checkpoint-write-s", checkpoint_write_s)):  # fmt: skip
            if value is not None and not -1e300 < value < 1e300:  # NaN and infinity pass click's FloatRange
                raise ValueError(f"{opt}: must be a finite number, got {value}")
        if output is not None:
            from godprof.checker import check_output

            check_output(output, [spec, workload, against, *(gpu_file or [])], force)
            if fmt == PlanFormat.md and plot and not embed_plot:  # the figure goes beside the .md
                check_output(output.with_suffix(".png"), [spec, workload, against, *(gpu_file or [])], force,
                             "--output (its figure)")  # fmt: skip
        from godprof.gpus import load_gpu
        from godprof.plan.serving import ServeOptions
        from godprof.plan.swarm import is_swarm_file
        from godprof.plan.workload import ServingWorkload, load_workload, parse_duration_s

        gpus = [load_gpu(n.strip(), gpu_file or ()) for n in gpu.split(",") if n.strip()]
        if not gpus:
            raise ValueError("--gpu: give at least one GPU name")
        usd, usd_by_gpu = None, None
        if usd_per_gpu_hour is not None:
            from godprof.plan.power import parse_prices

            usd, named = parse_prices(usd_per_gpu_hour)
            usd_by_gpu = {load_gpu(n, gpu_file or ()).key: v for n, v in named.items()} or None
        for g in gpus:  # a minimal user GPU file serves the roofline, not power or multi-GPU links
            if g.omitted:
                raise ValueError(f"{g.path}: plan needs {' and '.join(g.omitted)} (power and energy; links "
                                 "between GPUs); add them to the file")  # fmt: skip
        swarm = is_swarm_file(spec)
        swarm_file = None
        base: ServingWorkload | None = None
        if swarm:
            from godprof.plan.swarm import load_swarm

            swarm_file = load_swarm(spec)
            base = swarm_file.workload
        if workload is not None:
            base = load_workload(workload)
        wl = base or ServingWorkload()
        over: dict[str, Any] = {}
        for key, val in (("prompt_tokens", prompt_tokens), ("output_tokens", output_tokens),
                         ("samples_per_prompt", samples)):  # fmt: skip
            if val is not None:
                over[key] = val
        if concurrency is not None and rate is not None:
            raise ValueError("give either --concurrency or --rate, not both")
        conc_max = concurrency is not None and concurrency.strip().lower() == "max"
        if concurrency is not None and not conc_max:
            over.update(concurrency=parse_count(concurrency, "--concurrency"), rate_per_s=None)
        if rate is not None:
            if rate <= 0:
                raise ValueError("--rate must be positive")
            over.update(rate_per_s=rate, concurrency=None)
        try:
            if slo_ttft is not None:
                over["slo_ttft_s"] = parse_duration_s(slo_ttft)
            if slo_tpot is not None:
                over["slo_tpot_s"] = parse_duration_s(slo_tpot)
        except ValueError as e:
            raise ValueError(f"--slo-ttft/--slo-tpot: {e}") from None
        wl = replace(wl, **over)
        dt = dtype or wl.dtype or "bf16"
        kv = kv_dtype or wl.kv_dtype

        if train:
            if swarm:
                raise ValueError("--train plans one model; give a spec, not a swarm file")
            result, kind = train_plan(spec, gpus, dt, tokens, mfu, zero, recompute.value, optimizer.value, seq,
                                      micro_batch, global_batch_tokens, failure_rate, checkpoint_write_s,
                                      cluster_gpus, max_gpus, gpus_per_node, usd, headroom, idle_power, tp, pp,
                                      dict(ep=ep, grad_dtype=grad_dtype, dropout=dropout,
                                           recompute_layers=recompute_layers, offload_optimizer=offload_optimizer,
                                           usd_per_gpu_hour_by_gpu=usd_by_gpu)), "train"  # fmt: skip
        else:
            opts = ServeOptions(
                dtype=dt, kv_dtype=kv, max_gpus=max_gpus, gpus_per_node=gpus_per_node, headroom=headroom,
                usd_per_gpu_hour=usd, idle_fraction=idle_power, tp=tp, pp=pp, usd_per_gpu_hour_by_gpu=usd_by_gpu,
                prefill_chunk_tokens=prefill_chunk or None, logits=logits,
                **serve_semantics(max_batch, conc_max, prefix_hit_rate, speculative, disaggregate, attn_dp, ep),
            )  # fmt: skip
            if swarm:
                assert swarm_file is not None
                result, kind = swarm_plan(swarm_file, gpus, wl, opts, against), "swarm"
            else:
                if against is not None:
                    raise ValueError("--against compares a swarm file with a dense model; give a swarm file")
                from godprof.cli.common import load
                from godprof.plan.serving import plan_serving

                draft = load(opts.speculative.draft) if opts.speculative and opts.speculative.draft else None
                result, kind = plan_serving(load(spec), gpus, wl, opts, draft), "serve"
    emit_plan(kind, result, fmt, output, plot, embed_plot)
    if not result.fits:
        from godprof.cli.common import err_console

        err_console().print(f"does not fit: {result.missing}", style="bold red", markup=False, highlight=False,
                            soft_wrap=True)  # fmt: skip
        raise typer.Exit(int(ExitCode.DOES_NOT_FIT))
