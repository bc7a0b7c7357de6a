"""`godprof compare`, `godprof sweep` and `godprof gpus`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from godprof.cli.common import Format, emit_json, emit_tables, guard, load, size, split_list
from godprof.cli.estimate import HeadroomOpt, PrefillChunkOpt, memory_model
from godprof.cli.options import SIZES, DTypeOpt, KVDType, LogitsChoice, LogitsOpt

if TYPE_CHECKING:
    from godprof.analytic.roofline import Efficiency
    from godprof.gpus import GPU

SpecsArg = Annotated[
    list[str],
    typer.Argument(
        help="Specs: YAML files, config.json files or bundled names (llama-3-8b, mamba-2.8b, ...).",
        metavar="SPEC...",
        show_default=False,
    ),
]
GpuOpt = Annotated[
    str,
    typer.Option(
        "--gpu",
        "-g",
        help="GPU key or alias from `godprof gpus` (h100, a100-80gb, mi300x, ...); a "
        "comma-separated list (h100,b200) gives a grid with --dtype.",
    ),
]
GpuFiles = Annotated[
    list[Path] | None,
    typer.Option("--gpu-file", help="Your own GPU YAML (keys as in godprof/data/gpus/*.yaml); repeatable."),
]
ComputeEff = Annotated[
    float | None,
    typer.Option("--compute-eff", min=0.01, max=1.0,
                 help="Replace the per-operation efficiency model by one flat fraction of the dense peak "
                      "FLOP/s (the old roofline; with --bandwidth-eff, default 0.6)."),
]  # fmt: skip
BandwidthEff = Annotated[
    float | None,
    typer.Option("--bandwidth-eff", min=0.01, max=1.0,
                 help="With --compute-eff: one flat fraction of the memory bandwidth (default 0.8)."),
]  # fmt: skip
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table, json (stable schema), csv or md.")]


def _gpu(name: str, files: list[Path] | None) -> GPU:
    from godprof.gpus import load_gpu

    return load_gpu(name, files or ())


def _eff(compute: float | None, bandwidth: float | None) -> Efficiency | None:
    from godprof.analytic.roofline import DEFAULT_EFFICIENCY, Efficiency

    if compute is None and bandwidth is None:
        return None
    for opt, value in (("--compute-eff", compute), ("--bandwidth-eff", bandwidth)):
        if value is not None and not 0 < value <= 1:  # NaN passes click's FloatRange
            raise ValueError(f"{opt}: must be a number in (0, 1], got {value}")
    return Efficiency(compute or DEFAULT_EFFICIENCY.compute, bandwidth or DEFAULT_EFFICIENCY.bandwidth)


def compare_cmd(
    specs: SpecsArg,
    gpu: GpuOpt = "h100",
    batch: Annotated[int, typer.Option("--batch", "-b", min=1, max=2**31 - 1, help="Sequences decoded together.")] = 1,
    context: Annotated[
        str, typer.Option("--context", "-c", help=f"Prompt + cache length: 8192, 8Ki, 128k ({SIZES}).")
    ] = "8192",
    dtype: DTypeOpt = "bf16",
    kv_dtype: KVDType = None,
    compute_eff: ComputeEff = None,
    bandwidth_eff: BandwidthEff = None,
    gpu_file: GpuFiles = None,
    logits: LogitsOpt = LogitsChoice.last,
    prefill_chunk: PrefillChunkOpt = 8192,
    headroom: HeadroomOpt = 0.1,
    fmt: FormatOpt = Format.table,
) -> None:
    """Architectures side by side on one GPU: one column per spec, the best value of each row in bold.

    Rows: total and active parameters, weight memory, KV bytes per token and SSM state per sequence,
    KV + state at the context, prefill and decode FLOPs per token, TTFT (prefill of the whole
    context) and TPOT (one decode step at the context), the largest context at batch 1 and batch at the
    context that fit one GPU, GPUs to hold the weights. Memory is the model estimate and plan share
    (weights + cache + the largest prefill pass's activations + runtime overheads within the GPU less
    --headroom); --format json's memory keys equal `godprof estimate`'s.

    Latency, two figures: the speed-of-light bound, max(FLOPs / peak, bytes / bandwidth) at 100% of the
    datasheet (no real run beats it), and the expected time of the per-operation efficiency model
    (GEMMs on a saturating curve in the token count, attention by kind, grouped MoE GEMMs, fixed costs
    per kernel: godprof/data/efficiency.yaml, with sources; a GPU file's efficiency: overrides it), with
    its % of speed of light. --compute-eff / --bandwidth-eff replace the model by two flat factors.

    Examples:

    \b
      godprof compare llama-3-8b mixtral-8x7b mamba-2.8b jamba-v0.1 --gpu h100
      godprof compare llama-3-8b mamba-2.8b --context 128Ki --batch 8 --dtype fp8
      godprof compare llama-3-8b mamba-2.8b --gpu h100,b200 --dtype bf16,int4
      godprof compare ~/models/Qwen3-8B specs/llama-3-8b.yaml
      godprof compare llama-3-8b mamba-2.8b --gpu l4 --format json
    """
    from godprof.report.compare import (
        Setup,
        compare,
        compare_csv_rows,
        compare_document,
        compare_grid_table,
        compare_table,
    )

    with guard():
        loaded = [load(s) for s in specs]
        ctx = size(context, "--context") or 1
        model = memory_model(prefill_chunk, logits.value, headroom)
        eff = _eff(compute_eff, bandwidth_eff)
        setups = [
            Setup(gpu=g, batch=batch, context=ctx, dtype=d, kv_dtype=kv_dtype, eff=eff, model=model)
            for g in (_gpu(n, gpu_file) for n in split_list(gpu, "--gpu"))
            for d in split_list(dtype, "--dtype")
        ]
        records = compare(loaded, setups)
    if fmt == Format.json:
        emit_json(compare_document(records))
    elif fmt == Format.csv:
        from godprof.report.table import tables_to_csv

        typer.echo(tables_to_csv(compare_csv_rows(records)), nl=False)
    else:
        n = len(loaded)
        tables = [compare_table(records[i * n : (i + 1) * n], st) for i, st in enumerate(setups)]
        emit_tables(([compare_grid_table(records, setups)] if len(setups) > 1 else []) + tables, fmt)


def _context_range(text: str) -> tuple[int, int]:
    lo_text, sep, hi_text = text.partition("..")
    lo = size(lo_text, "--context")
    hi = size(hi_text, "--context") if sep else lo
    assert lo is not None and hi is not None
    if hi < lo:
        from godprof.cli.common import fail

        fail(f"--context: the range must go up, got {text!r} (example: 1k..1M)")
    return lo, hi


def sweep_cmd(
    specs: SpecsArg,
    context: Annotated[
        str,
        typer.Option(
            "--context",
            "-c",
            help=f"Range LOW..HIGH (1Ki..1Mi = 1,024..1,048,576) or one length; log-spaced points ({SIZES}).",
        ),
    ] = "1Ki..1Mi",
    points: Annotated[
        int | None,
        typer.Option(
            "--points",
            "-n",
            min=1,
            max=10_000,
            help="Contexts in the range, at most 10,000 (default: one per doubling).",
        ),  # fmt: skip
    ] = None,
    batch: Annotated[
        list[int] | None,
        typer.Option("--batch", "-b", min=1, max=2**31 - 1, help="Batch size; repeat for several (default: 1)."),
    ] = None,
    gpu: GpuOpt = "h100",
    dtype: DTypeOpt = "bf16",
    kv_dtype: KVDType = None,
    compute_eff: ComputeEff = None,
    bandwidth_eff: BandwidthEff = None,
    gpu_file: GpuFiles = None,
    logits: LogitsOpt = LogitsChoice.last,
    prefill_chunk: PrefillChunkOpt = 8192,
    headroom: HeadroomOpt = 0.1,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", "-p", help="Write a plot: FILE.png, or FILE.html (self-contained)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the --plot file if it exists.")] = False,
    text_plot: Annotated[
        bool, typer.Option("--text-plot/--no-text-plot", help="Draw the terminal plot under the tables.")
    ] = True,
    fmt: FormatOpt = Format.table,
) -> None:
    """Memory, FLOPs and roofline latency across context lengths, with plots that show attention vs SSM.

    For each spec and batch, at log-spaced contexts: KV cache + SSM state, weights + cache + activations
    (and whether it fits the GPU), prefill FLOPs, decode FLOPs per token, expected TTFT and TPOT with
    their % of speed of light (see `godprof compare --help`).
    The terminal plot (and --plot FILE.png/.html, which needs matplotlib, the 'plot' extra)
    draws KV + state bytes and decode time against context on log axes, with the GPU memory as a line:
    attention's KV cache rises with slope 1, an SSM's state is flat.

    Examples:

    \b
      godprof sweep llama-3-8b mamba-2.8b jamba-v0.1 --plot sweep.png
      godprof sweep mixtral-8x7b -c 4Ki..256Ki -n 6 -b 1 -b 16 --gpu h200,b200
      godprof sweep llama-3-8b --points 1000 --format json > sweep.json
    """
    from godprof.report.compare import Setup
    from godprof.report.sweep import log_contexts, sweep, sweep_tables

    with guard():
        if plot is not None:
            from godprof.checker import check_output

            check_output(plot, [*specs, *(gpu_file or [])], force, "--plot")
        loaded = [load(s) for s in specs]
        lo, hi = _context_range(context)
        contexts = log_contexts(lo, hi, points)
        from godprof.checker import MAX_SWEEP_WORK

        work = len(contexts) * len(batch or [1]) * sum(s.model.num_layers for s in loaded)
        if work > MAX_SWEEP_WORK:
            raise ValueError(f"--points: {len(contexts):,} contexts x {len(batch or [1])} batch sizes x the specs' "
                             f"layers is {work:,} layer evaluations, over the bound of {MAX_SWEEP_WORK:,}; "
                             "give fewer --points")  # fmt: skip
        gpus = [_gpu(n, gpu_file) for n in split_list(gpu, "--gpu")]
        eff = _eff(compute_eff, bandwidth_eff)
        model = memory_model(prefill_chunk, logits.value, headroom)
        setups = [Setup(g, b, hi, d, kv_dtype, eff, model)
                  for g in gpus for d in split_list(dtype, "--dtype") for b in (batch or [1])]  # fmt: skip
        doc = sweep(loaded, setups, contexts)
        tables = sweep_tables(doc) if fmt in (Format.table, Format.md) or plot is not None else []
        written = None
        if plot is not None:
            from godprof.report.plot import write_plot

            written = write_plot(doc, plot, tables)
    if fmt == Format.json:
        from godprof.report.sweep import sweep_json

        typer.echo(sweep_json(doc), nl=False)
    elif fmt == Format.csv:
        from godprof.report.table import tables_to_csv

        typer.echo(tables_to_csv(doc["points"]), nl=False)
    else:
        emit_tables(tables, fmt)
        if text_plot:
            from godprof.report.plot import sweep_text_plots

            art = sweep_text_plots(doc)
            typer.echo(f"```\n{art}```\n" if fmt == Format.md else art, nl=False)
    if written is not None:
        from godprof.cli.common import err_console

        err_console().print(f"plot written to {written}", markup=False, highlight=False)


def gpus_cmd(
    name: Annotated[
        str | None, typer.Argument(help="Show one GPU (key or alias).", show_default=False, metavar="GPU")
    ] = None,
    gpu_file: GpuFiles = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """The GPU database: memory, bandwidth, dense peak FLOP/s per dtype, TDP, interconnect, datasheet source.

    Peaks are dense (never the 2:4 sparsity figures). Add your own card with --gpu-file FILE.yaml (copy a
    bundled entry: `godprof gpus h100 --format json` shows the fields; an optional `measured:` block with
    copy_bandwidth_gb_per_s and matmul_tflops replaces datasheet x efficiency in the roofline).

    Examples:

    \b
      godprof gpus
      godprof gpus mi300x --format json
      godprof gpus --gpu-file my-card.yaml
    """
    from godprof.gpus import list_gpus, load_gpu
    from godprof.report.format import fmt_bytes, fmt_rate
    from godprof.report.table import Table, tables_to_csv

    with guard():
        files = gpu_file or ()
        gpus = [load_gpu(name, files)] if name else list_gpus(files)
    if fmt == Format.json:
        emit_json({"schema": "godprof.gpus/1", "gpus": [g.to_dict() for g in gpus]})
        return
    dts = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")
    if fmt == Format.csv:
        rows = []
        for g in gpus:
            d = g.to_dict()
            d.pop("measured", None)
            d["aliases"] = " ".join(g.aliases)
            peaks = d.pop("peak_flops_per_s")
            d.update({f"peak_flops_per_s.{k}": peaks.get(k) for k in dts})
            rows.append(d)
        typer.echo(tables_to_csv(rows), nl=False)
        return
    if name:  # one GPU: every field, one per row
        g = gpus[0]
        t = Table(f"{g.name} ({g.key})", ["field", "value"])
        t.add("aliases", ", ".join(g.aliases) or "-")
        t.add("vendor", g.vendor)
        t.add("memory", f"{fmt_bytes(g.memory_bytes)} ({g.memory_bytes:,} B)")
        t.add("memory bandwidth", fmt_rate(g.hbm_bandwidth_bytes_per_s, "B/s"))
        for d, v in g.peak_flops_per_s.items():
            t.add(f"dense peak {d}", fmt_rate(v, "FLOP/s"))
        t.add("TDP", "not given" if "tdp_w" in g.omitted else f"{g.tdp_w:.0f} W")
        link = "not given" if "interconnect_gb_per_s" in g.omitted else fmt_rate(g.interconnect_bytes_per_s, "B/s")
        t.add("interconnect", f"{g.interconnect}, {link} per direction")
        if g.measured is not None:
            m = g.measured
            t.add("measured bandwidth", fmt_rate(m.bandwidth_bytes_per_s, "B/s"))
            for d, v in m.flops_per_s.items():
                t.add(f"measured matmul {d}", fmt_rate(v, "FLOP/s"))
        t.add("source", g.source)
        emit_tables([t], fmt)
        return
    t = Table("GPUs: dense peaks in TFLOP/s (fp16 = bf16), bandwidths decimal, links one direction",
              ["key", "memory", "bandwidth", "bf16", "fp8", "int8", "TDP", "link"])  # fmt: skip
    for g in gpus:
        peaks = [f"{g.peak_flops_per_s[d] / 1e12:,.0f}" if d in g.peak_flops_per_s else "-"
                 for d in ("bf16", "fp8", "int8")]  # fmt: skip
        key = g.key + (" *" if g.measured else "")
        t.add(key, fmt_bytes(g.memory_bytes), fmt_rate(g.hbm_bandwidth_bytes_per_s, "B/s"), *peaks,
              "-" if "tdp_w" in g.omitted else f"{g.tdp_w:.0f} W",
              "-" if "interconnect_gb_per_s" in g.omitted
              else f"{g.interconnect} {fmt_rate(g.interconnect_bytes_per_s, 'B/s')}")  # fmt: skip
    t.caption = "Names, aliases, fp32/tf32 peaks and datasheet sources: `godprof gpus KEY` or --format json."
    if any(g.measured for g in gpus):
        t.caption += " * has measured figures (used by the roofline)."
    emit_tables([t], fmt)
