"""`godprof estimate` and `godprof validate`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from godprof.cli.common import Format, TableJson, console, emit_json, emit_tables, guard, load, size, split_list
from godprof.cli.options import (
    AttnFlops,
    AttnFlopsOpt,
    Batch,
    Context,
    FlashOpt,
    FormatOpt,
    GroupSize,
    KVDType,
    LogitsChoice,
    LogitsOpt,
    Mode,
    ModeOpt,
    OptimizerChoice,
    OptimizerOpt,
    RecomputeChoice,
    RecomputeOpt,
    Seq,
    SpecArg,
)

if TYPE_CHECKING:
    from godprof.analytic.inference_memory import MemoryModel

ShippedDTypeOpt = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        "-d",
        help="Weight format for every Linear weight of the layers: fp32, bf16, fp16, fp8 (one fp32 scale per "
        "tensor), fp8_block (one fp32 scale per 128x128 block), int8, int4 (fp16 scale per --group-size "
        "inputs), mxfp4 (E2M1, E8M0 scale per 32), nvfp4 (E2M1, E4M3 scale per 16 + fp32 per tensor); "
        "embeddings, lm_head, norms and biases stay in bf16 under the quantised ones. Default: the formats the "
        "spec ships (its weights: section, or a config.json's quantization_config), bf16 where it says nothing. "
        "A comma-separated list (bf16,int4) gives one estimate per format, side by side.",
        show_default=False,
    ),
]

# The shared inference memory model's options (godprof.analytic.inference_memory); compare, sweep and plan
# import them from here so their names, defaults and help agree.
PrefillChunkOpt = Annotated[
    int,
    typer.Option(
        "--prefill-chunk",
        min=0,
        help="Tokens per prefill pass (chunked prefill, vLLM's max_num_batched_tokens): activations are those "
        "of the largest pass, whole prompts while they fit in it, else one chunk of one prompt. 0: no chunking "
        "(all batch x seq tokens at once).",
    ),
]
HeadroomOpt = Annotated[
    float,
    typer.Option(
        "--headroom",
        min=0.0,
        max=0.9,
        help="Fraction of each GPU's memory kept free (allocator fragmentation), beside the runtime overheads "
        "(CUDA context, library workspaces, communication buffers); 0.1 = vLLM's gpu_memory_utilization 0.9.",
    ),
]
FitGpuOpt = Annotated[
    str | None,
    typer.Option(
        "--gpu",
        "-g",
        help="Say whether the memory fits this GPU (key or alias from `godprof gpus`) and how much stays free; "
        "a comma-separated list (h100,b200) gives a grid with --dtype.",
        show_default=False,
    ),
]


def memory_model(prefill_chunk: int, logits: str, headroom: float) -> MemoryModel:
    """The shared inference memory model from the CLI options (``--prefill-chunk 0``: no chunking)."""
    from godprof.analytic.inference_memory import MemoryModel

    return MemoryModel(prefill_chunk or None, logits, headroom)


def estimate_cmd(
    spec: SpecArg,
    batch: Batch = 1,
    seq: Seq = "2048",
    context: Context = None,
    dtype: ShippedDTypeOpt = None,
    kv_dtype: KVDType = None,
    mode: ModeOpt = Mode.inference,
    optimizer: OptimizerOpt = OptimizerChoice.adamw,
    recompute: RecomputeOpt = RecomputeChoice.none,
    attention_flops: AttnFlopsOpt = AttnFlops.causal,
    flash: FlashOpt = True,
    logits: LogitsOpt = LogitsChoice.last,
    prefill_chunk: PrefillChunkOpt = 8192,
    gpu: FitGpuOpt = None,
    headroom: HeadroomOpt = 0.1,
    group_size: GroupSize = 128,
    mtp: Annotated[
        bool,
        typer.Option(
            "--mtp/--no-mtp",
            help="Count the spec's multi-token-prediction modules (DeepSeek-V3, GLM-4.5) in the totals, weights "
            "and FLOPs. They are always shown apart; by default they are left out, as transformers leaves them.",
        ),
    ] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Parameters, memory and FLOPs of an architecture, analytically: instant, no GPU, no torch.

    Counts are exact integers (total and active parameters, weight, KV-cache and SSM-state bytes) and
    formulas are documented in the godprof.analytic modules.

    Inference memory is the model compare, sweep and plan share: activations of the largest prefill
    pass (--prefill-chunk tokens, last-position logits unless --logits all); with --gpu, whether it fits
    beside the runtime overheads and --headroom, and how much stays free.

    Examples:

    \b
      godprof estimate llama-3-8b --seq 8k --batch 4 --gpu h100
      godprof estimate specs/mixtral-8x7b.yaml --dtype int4 --format json
      godprof estimate jamba-v0.1 -m train --recompute full --optimizer adamw8bit
      godprof estimate ~/models/Qwen3-8B --dtype bf16,int4 --gpu h100,l4
    """
    from godprof.analytic import Workload, estimate
    from godprof.analytic.estimate import shipped_formats

    with guard():
        s = load(spec)
        from godprof.gpus import load_gpu

        model = memory_model(prefill_chunk, logits.value, headroom)
        seq_n, ctx_n = size(seq, "--seq") or 1, size(context, "--context")
        gpus = [None] if gpu is None else [load_gpu(n) for n in split_list(gpu, "--gpu")]
        grid = []  # one estimate per weight format x GPU (--dtype bf16,int4 --gpu h100,b200)
        for d in [None] if dtype is None else split_list(dtype, "--dtype"):
            formats = shipped_formats(s, None) if d is None else None
            w = Workload(
                batch=batch,
                seq=seq_n,
                context=ctx_n,
                dtype=formats.default if formats is not None else d,
                kv_dtype=kv_dtype,
                mode=mode.value,
                optimizer=optimizer.value,
                recompute=recompute.value,
                flash_attention=flash,
                attention_flops=attention_flops.value,
                logits=logits.value,
                group_size=group_size,
            )
            grid += [estimate(s, w, include_mtp=mtp, formats=formats, memory_model=model, gpu=g) for g in gpus]
    from godprof.report.estimate import estimate_grid_document, estimate_grid_table, estimate_record, estimate_tables

    e = grid[0]
    if fmt == Format.json:
        emit_json(e.to_dict() if len(grid) == 1 else estimate_grid_document(grid))
    elif fmt == Format.csv:
        from godprof.report.table import tables_to_csv

        typer.echo(tables_to_csv([estimate_record(x) for x in grid]), nl=False)
    elif len(grid) == 1:
        emit_tables(estimate_tables(e), fmt)
    else:  # the parameters once, then the grid; `--format json` holds every estimate in full
        emit_tables(estimate_tables(e)[:2] + [estimate_grid_table(grid)], fmt)


def validate_cmd(
    specs: Annotated[
        list[str],
        typer.Argument(help="Spec files, config.json files, model folders or bundled names.", metavar="SPEC..."),
    ],
    fmt: Annotated[
        TableJson, typer.Option("--format", "-f", help="table (one line per spec or problem, for grep) or json.")
    ] = TableJson.table,
) -> None:
    """Check specs and report every problem with its file, key path and line (exit 2 if any is invalid).

    One line per valid spec (ok: ...) and per problem (error: FILE:LINE: KEY: message), never wrapped, so
    `godprof validate specs/*.yaml | grep error` works. --format json: {schema: godprof.validate/1, valid,
    invalid, results: [{ref, ok, spec, params, problems: [{file, line, key_path, message}]}]}.
    """
    from godprof.analytic import count_params
    from godprof.errors import GodprofError, SpecError
    from godprof.report.format import fmt_params

    results = []
    for ref in specs:
        try:
            s = load(ref)
        except GodprofError as e:
            if isinstance(e, SpecError):
                problems = [{"file": e.source, "line": p.line, "key_path": p.key_path, "message": p.message}
                            for p in e.problems]  # fmt: skip
            else:
                problems = [{"file": None, "line": None, "key_path": "", "message": str(e)}]
            results.append({"ref": ref, "ok": False, "spec": None, "params": None, "problems": problems})
            if fmt == TableJson.table:
                for line in str(e).splitlines():
                    console().print(f"error: {line}", style="bold red", markup=False, highlight=False,
                                    soft_wrap=True)  # fmt: skip
            continue
        c = count_params(s)
        results.append({"ref": ref, "ok": True, "spec": {"name": s.name, "family": s.family, "path": s.path},
                        "params": {"total": c.total, "active": c.active}, "problems": []})  # fmt: skip
        if fmt == TableJson.table:
            console().print(
                f"ok: {ref}: {s.name} ({s.family}), {s.model.num_layers} layers, "
                f"{fmt_params(c.total)} params ({fmt_params(c.active)} active)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    bad = sum(not r["ok"] for r in results)
    if fmt == TableJson.json:
        emit_json({"schema": "godprof.validate/1", "valid": len(results) - bad, "invalid": bad, "results": results})
    if bad:
        raise typer.Exit(2)
