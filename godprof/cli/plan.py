"""`godprof plan`: capacity plans for serving, training, and a swarm of specialists vs one dense model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from godprof.cli.common import ExitCode, guard
from godprof.cli.options import OptimizerChoice, RecomputeChoice
from godprof.cli.plan_options import (
    AgainstOpt,
    AttnDpOpt,
    CheckpointWriteSOpt,
    ClusterGpusOpt,
    ConcurrencyOpt,
    DisaggregateOpt,
    DropoutOpt,
    DtypeOpt,
    EmbedPlotOpt,
    EpOpt,
    FailureRateOpt,
    FmtOpt,
    ForceOpt,
    GlobalBatchTokensOpt,
    GpuFileOpt,
    GpuOpt,
    GpusPerNodeOpt,
    GradDtypeOpt,
    HeadroomOpt,
    IdlePowerOpt,
    KvDtypeOpt,
    LogitsOpt,
    MaxBatchOpt,
    MaxGpusOpt,
    MfuOpt,
    MicroBatchOpt,
    OffloadOptimizerOpt,
    OptimizerOpt,
    OutputOpt,
    OutputTokensOpt,
    PlotOpt,
    PpOpt,
    PrefillChunkOpt,
    PrefixHitRateOpt,
    PromptTokensOpt,
    RateOpt,
    RecomputeLayersOpt,
    RecomputeOpt,
    SamplesOpt,
    SeqOpt,
    SloTpotOpt,
    SloTtftOpt,
    SpecOpt,
    SpeculativeOpt,
    TokensOpt,
    TpOpt,
    TrainOpt,
    UsdPerGpuHourOpt,
    WorkloadOpt,
    ZeroOpt,
)
from godprof.cli.plan_output import PlanFormat, emit_plan
from godprof.cli.plan_run import parse_count, serve_semantics, swarm_plan, train_plan

if TYPE_CHECKING:
    from godprof.plan.workload import ServingWorkload


def plan_cmd(
    spec: SpecOpt,
    gpu: GpuOpt = "h100",
    gpu_file: GpuFileOpt = None,
    workload: WorkloadOpt = None,
    prompt_tokens: PromptTokensOpt = None,
    output_tokens: OutputTokensOpt = None,
    concurrency: ConcurrencyOpt = None,
    max_batch: MaxBatchOpt = 256,
    prefix_hit_rate: PrefixHitRateOpt = 0.0,
    speculative: SpeculativeOpt = None,
    disaggregate: DisaggregateOpt = None,
    attn_dp: AttnDpOpt = None,
    rate: RateOpt = None,
    samples: SamplesOpt = None,
    slo_ttft: SloTtftOpt = None,
    slo_tpot: SloTpotOpt = None,
    dtype: DtypeOpt = None,
    kv_dtype: KvDtypeOpt = None,
    max_gpus: MaxGpusOpt = None,
    gpus_per_node: GpusPerNodeOpt = 8,
    tp: TpOpt = None,
    pp: PpOpt = None,
    usd_per_gpu_hour: UsdPerGpuHourOpt = None,
    headroom: HeadroomOpt = 0.1,
    idle_power: IdlePowerOpt = 0.2,
    against: AgainstOpt = None,
    train: TrainOpt = False,
    tokens: TokensOpt = "chinchilla",
    mfu: MfuOpt = 0.4,
    zero: ZeroOpt = 1,
    recompute: RecomputeOpt = RecomputeChoice.selective,
    optimizer: OptimizerOpt = OptimizerChoice.adamw,
    seq: SeqOpt = "4096",
    micro_batch: MicroBatchOpt = 1,
    global_batch_tokens: GlobalBatchTokensOpt = "4194304",
    failure_rate: FailureRateOpt = None,
    checkpoint_write_s: CheckpointWriteSOpt = None,
    cluster_gpus: ClusterGpusOpt = None,
    ep: EpOpt = None,
    grad_dtype: GradDtypeOpt = "fp32",
    dropout: DropoutOpt = 0.0,
    recompute_layers: RecomputeLayersOpt = None,
    offload_optimizer: OffloadOptimizerOpt = False,
    prefill_chunk: PrefillChunkOpt = 8192,
    logits: LogitsOpt = "last",
    fmt: FmtOpt = PlanFormat.table,
    output: OutputOpt = None,
    force: ForceOpt = False,
    plot: PlotOpt = True,
    embed_plot: EmbedPlotOpt = False,
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
