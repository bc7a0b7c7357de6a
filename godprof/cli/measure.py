"""`godprof measure`: build a spec with random weights on a GPU (or the CPU) and measure it."""

from __future__ import annotations

from typing import Annotated

import typer

from godprof.cli.common import ExitCode, TableJson, emit_json, emit_tables, err_console, fail, guard, load, size
from godprof.cli.options import Batch, Seq, SpecArg

GpuOpt = Annotated[int | None, typer.Option("--gpu", "-g", help="CUDA device index (cuda:N).", show_default=False)]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device", help="cpu, cuda or cuda:N (default: cuda:0 when CUDA is available).", show_default=False
    ),  # fmt: skip
]
NewTokens = Annotated[int, typer.Option("--new-tokens", "-n", min=1, help="Decode steps timed after each prefill.")]
MeasureDType = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        "-d",
        help="Weights and activations: fp32, bf16 or fp16 (default: bf16 on CUDA, fp32 on CPU).",
        show_default=False,
    ),  # fmt: skip
]
Warmup = Annotated[int, typer.Option("--warmup", min=0, help="Untimed prefill + decode runs first.")]
Iters = Annotated[
    int, typer.Option("--iters", "-i", min=1, help="Timed runs (each: one prefill + --new-tokens steps).")
]
Compile = Annotated[
    bool, typer.Option("--compile", help="torch.compile the decode step (warm-up absorbs compile time).")
]
Energy = Annotated[bool, typer.Option("--energy/--no-energy", help="Measure energy with NVML (CUDA only).")]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads", min=1, help="CPU threads for torch (CPU runs) (default: torch's choice).", show_default=False
    ),  # fmt: skip
]
Fvcore = Annotated[bool, typer.Option("--fvcore/--no-fvcore", help="Also count FLOPs with fvcore (a jit trace).")]

FormatOpt = Annotated[TableJson, typer.Option("--format", "-f", help="table, or json (stable schema).")]


def measure_cmd(
    spec: SpecArg,
    gpu: GpuOpt = None,
    device: DeviceOpt = None,
    batch: Batch = 1,
    seq: Seq = "512",
    new_tokens: NewTokens = 32,
    dtype: MeasureDType = None,
    warmup: Warmup = 2,
    iters: Iters = 10,
    compile: Compile = False,
    energy: Energy = True,
    fvcore: Fvcore = True,
    threads: Threads = None,
    fmt: FormatOpt = TableJson.table,
) -> None:
    """Build the spec as a PyTorch model (random weights, made on the device in the dtype) and measure it
    beside the estimate: memory, TTFT/TPOT, tokens/s, bandwidth, MBU/MFU, energy and FLOPs.

    Memory: allocator peaks and NVML on CUDA; exact tensor bytes on the CPU.

    Timings: CUDA events (perf_counter on CPU); median and p10/p90 over --iters.

    Energy: NVML's energy counter over >= 1 s of repeated work (CUDA only).

    FLOPs: torch's FlopCounterMode and fvcore, against the analytic count.

    Exit codes: 3 does not fit in GPU memory, 4 no such device, 130 interrupted.

    Examples:

      godprof measure examples/tiny-dense.yaml --device cpu

      godprof measure llama-3-8b --gpu 0 --batch 8 --seq 2k --compile

      godprof measure examples/tiny-moe.yaml --device cpu --format json > moe.json
    """
    with guard():
        try:
            from godprof.measure import CompileFailed, DoesNotFit, MeasureConfig, NoDevice, measure, resolve_device
        except ImportError as e:
            fail(f"godprof measure needs torch (pip install 'godprof[measure]'): {e}", ExitCode.USAGE)
        s = load(spec)
        try:
            dev = resolve_device(device, gpu)
        except NoDevice as e:
            fail(str(e), ExitCode.NO_DEVICE)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        cfg = MeasureConfig(
            batch=batch,
            seq=size(seq, "--seq") or 1,
            new_tokens=new_tokens,
            dtype=dtype or ("bf16" if dev.type == "cuda" else "fp32"),
            warmup=warmup,
            iters=iters,
            compile=compile,
            energy=energy,
            fvcore=fvcore,
        )
        try:
            m = _run_with_progress(measure, s, dev, cfg)
        except NoDevice as e:
            fail(str(e), ExitCode.NO_DEVICE)
        except DoesNotFit as e:
            fail(str(e), ExitCode.DOES_NOT_FIT)
        except CompileFailed as e:
            fail(str(e), ExitCode.USAGE)
    if fmt == TableJson.json:
        emit_json(m.to_dict())
        return
    from godprof.measure.report import measure_tables

    emit_tables(measure_tables(m), fmt)


def _run_with_progress(measure, spec, dev, cfg):  # noqa: ANN001, ANN202 - thin wrapper
    """Run ``measure`` with a rich progress bar on stderr (nothing on stdout, so JSON stays clean)."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]measure[/] {task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err_console(),
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=6)

        def progress(description: str, done: int, total: int) -> None:
            bar.update(task, description=description, completed=done, total=total)

        return measure(spec, dev, cfg, progress)
