"""`godprof measure`: build a spec with random weights on a GPU (or the CPU) and measure it."""

from __future__ import annotations

import os
from enum import Enum
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
NewTokens = Annotated[
    int, typer.Option("--new-tokens", "-n", min=1, max=2**31 - 1, help="Decode steps timed after each prefill.")
]
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
    int,
    typer.Option("--iters", "-i", min=1, max=2**31 - 1, help="Timed runs (each: one prefill + --new-tokens steps)."),
]
Compile = Annotated[
    bool, typer.Option("--compile", help="torch.compile the decode step (warm-up absorbs compile time).")
]
Energy = Annotated[bool, typer.Option("--energy/--no-energy", help="Measure energy with NVML (CUDA only).")]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        max=4096,
        help="CPU threads for torch (CPU runs) (default: torch's choice).",
        show_default=False,
    ),  # fmt: skip
]
Fvcore = Annotated[bool, typer.Option("--fvcore/--no-fvcore", help="Also count FLOPs with fvcore (a jit trace).")]


class KernelsChoice(str, Enum):
    reference = "reference"
    fused = "fused"


Kernels = Annotated[
    KernelsChoice,
    typer.Option(
        "--kernels",
        help="reference: godprof's pure-PyTorch layers. fused: flash-linear-attention, mamba_ssm or "
        "causal_conv1d kernels for the kinds that have them, when importable on a CUDA device; kinds "
        "without them run the reference, and the result says which ran.",
    ),
]

Layers = Annotated[
    int | None,
    typer.Option(
        "--layers",
        min=1,
        help="Measure N of the layers (every layer kind kept in proportion) and extrapolate TTFT, TPOT, "
        "energy and FLOPs to the full depth; memory = exact analytic weights and cache + the measured "
        "working set. Chosen automatically, with a note, when the full model does not fit the device.",
        show_default=False,
    ),
]
Tp = Annotated[
    int,
    typer.Option(
        "--tp",
        min=1,
        max=1_000_000,
        help="Tensor parallel over N ranks, one process each: torchrun --nproc-per-node N -m godprof "
        "measure SPEC --tp N (NCCL on GPUs, gloo with --device cpu). Per-rank memory vs the analytic split, "
        "all-reduce time vs the plan's model; rank 0 prints.",
    ),
]

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
    kernels: Kernels = KernelsChoice.reference,
    threads: Threads = None,
    layers: Layers = None,
    tp: Tp = 1,
    fmt: FormatOpt = TableJson.table,
) -> None:
    """Build the spec as a PyTorch model (random weights, made on the device in the dtype) and measure it
    beside the estimate: memory, TTFT/TPOT, tokens/s, bandwidth, MBU/MFU, energy and FLOPs.

    Memory: allocator peaks and NVML on CUDA; exact tensor bytes on the CPU.

    Timings: CUDA events (perf_counter on CPU); median and p10/p90 over --iters.

    Energy: NVML's energy counter over >= 1 s of repeated work (CUDA only).

    FLOPs: torch's FlopCounterMode and fvcore, against the analytic count.

    Too big for the device: --layers N measures a truncated copy and extrapolates ("extrapolated
    from N of L layers"); without --layers this happens by itself when the full model does not fit.

    Several GPUs: torchrun --nproc-per-node N -m godprof measure SPEC --tp N.

    Exit codes: 3 does not fit in GPU memory, 4 no such device, 130 interrupted.

    Examples:

      godprof measure examples/tiny-dense.yaml --device cpu

      godprof measure llama-3-8b --gpu 0 --batch 8 --seq 2k --compile

      godprof measure examples/tiny-moe.yaml --device cpu --format json > moe.json

      godprof measure llama-3-70b --gpu 0 --layers 8

      torchrun --nproc-per-node 2 -m godprof measure examples/tiny-dense.yaml --device cpu --tp 2
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
            kernels=kernels.value,
        )
        if tp > 1:
            if layers is not None:
                fail("--tp and --layers do not combine yet: measure the truncated model on one device")
            from godprof.measure.distributed import measure_tp, rank_device, tp_tables

            try:
                dev = rank_device(dev)
            except NoDevice as e:
                fail(str(e), ExitCode.NO_DEVICE)
            if os.environ.get("RANK", "0") == "0":  # one progress bar: rank 0's
                tm = _run_with_progress(lambda s_, d_, c_, p_: measure_tp(s_, d_, c_, tp, p_), s, dev, cfg)
            else:
                tm = measure_tp(s, dev, cfg, tp)
            if tm is not None:  # rank 0 reports
                emit_json(tm.to_dict()) if fmt == TableJson.json else emit_tables(tp_tables(tm), fmt)
            return
        try:
            if layers is not None and layers < s.model.num_layers:
                m = _run_truncated(s, layers, dev, cfg, None)
            else:
                try:
                    m = _run_with_progress(measure, s, dev, cfg)
                except DoesNotFit as e:
                    m = _auto_truncate(s, dev, cfg, e)
        except NoDevice as e:
            fail(str(e), ExitCode.NO_DEVICE)
        except DoesNotFit as e:
            fail(str(e), ExitCode.DOES_NOT_FIT)
        except CompileFailed as e:
            fail(str(e), ExitCode.USAGE)
        except (MemoryError, RuntimeError) as e:  # an allocation the pre-check let through failed
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            if isinstance(e, RuntimeError) and "alloc" not in why.lower() and "out of memory" not in why.lower():
                raise
            fail(f"does not fit on {dev}: a tensor allocation failed ({why[:160]})", ExitCode.DOES_NOT_FIT)
    if fmt == TableJson.json:
        emit_json(m.to_dict())
        return
    from godprof.measure.report import measure_tables

    if hasattr(m, "truncation"):
        from godprof.measure.truncate import extrapolated_table

        emit_tables([*measure_tables(m.measured), extrapolated_table(m)], fmt)
        return
    emit_tables(measure_tables(m), fmt)


def _run_truncated(spec, layers, dev, cfg, note):  # noqa: ANN001, ANN202 - thin wrapper
    """``measure_truncated`` with the progress bar; ``note`` (why it was truncated) joins the notes."""
    from godprof.measure.truncate import measure_truncated

    tm = _run_with_progress(lambda s_, d_, c_, p_: measure_truncated(s_, layers, d_, c_, p_), spec, dev, cfg)
    tm.measured.notes[:0] = [n for n in (note, tm.note, *tm.extrapolated["warnings"]) if n]
    return tm


def _auto_truncate(spec, dev, cfg, e):  # noqa: ANN001, ANN202 - thin wrapper
    """The full model does not fit: measure as many layers as do (kinds in proportion), or re-raise."""
    from godprof.measure.memory import fused_attention
    from godprof.measure.truncate import layers_that_fit

    n = layers_that_fit(spec, cfg, e.free_bytes, fused_attention(spec, dev))
    if n < 1 or n >= spec.model.num_layers:
        raise e
    note = f"the full model does not fit ({e}); measured a truncated copy instead"
    return _run_truncated(spec, n, dev, cfg, note)


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
