"""`godprof plan`: capacity plans for serving, training, and a swarm of specialists vs one dense model."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from godprof.cli.common import ExitCode, emit_json, guard
from godprof.cli.options import OptimizerChoice, RecomputeChoice

if TYPE_CHECKING:
    from godprof.plan.workload import ServingWorkload


class PlanFormat(str, Enum):
    table = "table"
    json = "json"
    md = "md"
    html = "html"


_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmbt]?)\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}


def parse_count(text: str, what: str) -> int:
    """A decimal count such as '1.4T', '15e12', '300B', '4M' (k, M, B, T = 1e3, 1e6, 1e9, 1e12)."""
    m = _COUNT.match(text)
    if not m:
        raise ValueError(f"{what}: not a count: {text!r} (examples: 1.4T, 300B, 4M, 15e12)")
    value = float(m.group(1)) * _SCALE[m.group(2).lower()]
    if value < 1:
        raise ValueError(f"{what}: must be at least 1, got {text!r}")
    return int(round(value))


Help = "Serving"
TrainHelp = "Training (--train)"
OutHelp = "Output"


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
        typer.Option("--prompt-tokens", min=1, help="Prompt tokens per request (default: 1024).", rich_help_panel=Help),
    ] = None,  # fmt: skip
    output_tokens: Annotated[
        int | None,
        typer.Option(
            "--output-tokens", min=1, help="Generated tokens per sample (default: 256).", rich_help_panel=Help
        ),
    ] = None,  # fmt: skip
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Requests in flight at once.", rich_help_panel=Help)
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
            min=1,
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
        typer.Option("--max-gpus", min=1, help="Cap on the GPUs of the plan (all replicas; a swarm's total)."),
    ] = None,  # fmt: skip
    gpus_per_node: Annotated[
        int, typer.Option("--gpus-per-node", min=1, help="GPUs per node: the largest tensor-parallel group.")
    ] = 8,  # fmt: skip
    tp: Annotated[
        int | None,
        typer.Option(
            "--tp", min=1, help="Fix the tensor-parallel degree (default: search powers of two within a node)."
        ),
    ] = None,  # fmt: skip
    pp: Annotated[
        int | None, typer.Option("--pp", min=1, help="Fix the pipeline-parallel degree (default: search 1, 2, 4, ...).")
    ] = None,  # fmt: skip
    usd_per_gpu_hour: Annotated[
        float | None,
        typer.Option(
            "--usd-per-gpu-hour", min=0.0, help="Price of one GPU-hour, for cost per 1M tokens and training cost."
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
            help="Training tokens (1.4T, 300B) or 'chinchilla' (20 per parameter).",
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
        str, typer.Option("--seq", help="Training sequence length (4096, 8k).", rich_help_panel=TrainHelp)
    ] = "4096",  # fmt: skip
    micro_batch: Annotated[
        int, typer.Option("--micro-batch", min=1, help="Sequences per GPU per micro-step.", rich_help_panel=TrainHelp)
    ] = 1,  # fmt: skip
    global_batch_tokens: Annotated[
        str,
        typer.Option(
            "--global-batch-tokens",
            help="Tokens per optimizer step (caps data parallelism; 4M = 4e6).",
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
            min=1,
            help="GPUs for the run (default: the smallest count that fits).",
            rich_help_panel=TrainHelp,
        ),
    ] = None,  # fmt: skip
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
    plot: Annotated[
        bool,
        typer.Option("--plot/--no-plot", help="Embed a figure in md/html (needs matplotlib).", rich_help_panel=OutHelp),
    ] = True,  # fmt: skip
) -> None:
    """How many GPUs, of which kind, laid out how, at what latency, energy and cost: serving, training,
    or a swarm of specialists against one dense model.

    Serving finds the smallest set of GPUs and tensor/pipeline/expert-parallel layout (tp, pp, ep,
    replicas) that holds weights + KV cache/state + activations with --headroom free and meets the SLOs;
    it reports max concurrency per replica, roofline TTFT/TPOT with tensor-parallel all-reduce time,
    tokens/s per GPU, energy and cost per 1M output tokens, and alternatives (other layouts, other GPUs).

    Training (--train) reports FLOPs (6ND plus attention and recomputation), GPU-hours at --mfu, memory
    per GPU under ZeRO and tp/pp, the smallest GPU count that fits, energy, cost, checkpoint size,
    expected interruptions and the Young/Daly checkpoint interval sqrt(2 x write time x MTBF).

    A swarm file (YAML with `specialists`, see examples/swarm.yaml) plans each member for its share of the
    traffic and sums them; --against SPEC sets one dense model serving the same traffic beside it.

    Exit codes: 0 a plan fits; 3 nothing fits (the message says what is missing: memory by how much, or
    which SLO); 2 a bad option, spec or workload file.

    Examples:

      godprof plan llama-3-8b --gpu h100 --concurrency 64 --slo-tpot 50ms

      godprof plan mixtral-8x7b --gpu h100,a100-80gb,mi300x --rate 20 --usd-per-gpu-hour 2.5

      godprof plan llama-3-8b --workload examples/workload-chat.yaml --format html -o plan.html

      godprof plan llama-3-8b --train --tokens 15T --gpu h100 --zero 3 --cluster-gpus 1024

      godprof plan examples/swarm.yaml --gpu h100 --against llama-3-70b --format md
    """
    from dataclasses import replace

    with guard():
        from godprof.gpus import load_gpu
        from godprof.plan.serving import ServeOptions
        from godprof.plan.swarm import is_swarm_file
        from godprof.plan.workload import ServingWorkload, load_workload, parse_duration_s

        gpus = [load_gpu(n.strip(), gpu_file or ()) for n in gpu.split(",") if n.strip()]
        if not gpus:
            raise ValueError("--gpu: give at least one GPU name")
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
        if concurrency is not None:
            over.update(concurrency=concurrency, rate_per_s=None)
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
            result, kind = _train(spec, gpus, dt, tokens, mfu, zero, recompute.value, optimizer.value, seq, micro_batch,
                                  global_batch_tokens, failure_rate, checkpoint_write_s, cluster_gpus, max_gpus,
                                  gpus_per_node, usd_per_gpu_hour, headroom, idle_power, tp, pp), "train"  # fmt: skip
        else:
            opts = ServeOptions(
                dtype=dt, kv_dtype=kv, max_gpus=max_gpus, gpus_per_node=gpus_per_node, headroom=headroom,
                usd_per_gpu_hour=usd_per_gpu_hour, idle_fraction=idle_power, tp=tp, pp=pp,
            )  # fmt: skip
            if swarm:
                assert swarm_file is not None
                result, kind = _swarm(swarm_file, gpus, wl, opts, against), "swarm"
            else:
                if against is not None:
                    raise ValueError("--against compares a swarm file with a dense model; give a swarm file")
                from godprof.cli.common import load
                from godprof.plan.serving import plan_serving

                result, kind = plan_serving(load(spec), gpus, wl, opts), "serve"
    _emit(kind, result, fmt, output, plot)
    if not result.fits:
        from godprof.cli.common import err_console

        err_console().print(f"does not fit: {result.missing}", style="bold red", markup=False, highlight=False,
                            soft_wrap=True)  # fmt: skip
        raise typer.Exit(int(ExitCode.DOES_NOT_FIT))


def _train(spec_ref, gpus, dtype, tokens, mfu, zero, recompute, optimizer, seq, micro_batch, global_batch_tokens,
           failure_rate, checkpoint_write_s, cluster_gpus, max_gpus, gpus_per_node, usd, headroom, idle, tp,
           pp):  # fmt: skip
    from godprof.cli.common import load
    from godprof.plan.training import LLAMA3_FAILURES_PER_GPU_HOUR, TrainConfig, plan_training
    from godprof.report.format import parse_size

    n_tokens = None if tokens.strip().lower() == "chinchilla" else parse_count(tokens, "--tokens")
    try:
        seq_len = parse_size(seq)
    except ValueError as e:
        raise ValueError(f"--seq: {e}") from None
    cfg = TrainConfig(
        tokens=n_tokens, seq=seq_len, micro_batch=micro_batch,
        global_batch_tokens=parse_count(global_batch_tokens, "--global-batch-tokens"), dtype=dtype,
        optimizer=optimizer, recompute=recompute, zero=zero, mfu=mfu,
        failure_rate_per_gpu_hour=LLAMA3_FAILURES_PER_GPU_HOUR if failure_rate is None else failure_rate,
        checkpoint_write_s=checkpoint_write_s or None, headroom=headroom, max_gpus=max_gpus,
        gpus_per_node=gpus_per_node, cluster_gpus=cluster_gpus, usd_per_gpu_hour=usd, idle_fraction=idle, tp=tp,
        pp=pp,
    )  # fmt: skip
    s = load(spec_ref)
    plans = [plan_training(s, g, cfg) for g in gpus]
    plans.sort(key=lambda p: (not p.fits, p.gpu_hours * (p.gpu.tdp_w if usd is None else 1)))
    best = plans[0]
    best.other_gpus = plans[1:]  # type: ignore[attr-defined]
    return best


def _swarm(swarm_file, gpus, wl, opts, against):
    from godprof.cli.common import load
    from godprof.plan.swarm import plan_swarm

    refs = {m.spec_ref for m in swarm_file.members} | ({swarm_file.router_ref} if swarm_file.router_ref else set())
    specs = {r: load(r) for r in sorted(refs)}
    return plan_swarm(swarm_file, specs, gpus, wl, opts, load(against) if against else None)


def _emit(kind: str, result: Any, fmt: PlanFormat, output: Path | None, plot: bool) -> None:
    import sys

    if fmt == PlanFormat.json:
        data = result.to_dict()
        others = getattr(result, "other_gpus", None)
        if others:
            data["other_gpus"] = [
                {"gpu": o.gpu.key, "fits": o.fits, "gpu_hours": o.gpu_hours,
                 "gpus": o.chosen.layout.gpus if o.chosen else None} for o in others
            ]  # fmt: skip
        if output is not None:
            import json

            output.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        else:
            emit_json(data)
        return
    from godprof.plan import report

    if fmt in (PlanFormat.md, PlanFormat.html):
        text = (report.markdown_report if fmt == PlanFormat.md else report.html_report)(kind, result, plot=plot)
        if output is not None:
            output.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        return
    tables = {"serve": report.serve_tables, "train": report.train_tables, "swarm": report.swarm_tables}[kind](result)
    if output is not None:
        output.write_text("\n".join(t.to_markdown() for t in tables), encoding="utf-8")
        return
    from godprof.cli.common import console

    for t in tables:
        console().print(t.to_rich())
