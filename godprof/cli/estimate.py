"""`godprof estimate` and `godprof validate`."""

from __future__ import annotations

from typing import Annotated

import typer

from godprof.cli.common import Format, console, emit_json, emit_tables, guard, load, size
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

ShippedDTypeOpt = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        "-d",
        help="Weight format for every Linear weight of the layers: fp32, bf16, fp16, fp8 (one fp32 scale per "
        "tensor), fp8_block (one fp32 scale per 128x128 block), int8, int4 (fp16 scale per --group-size "
        "inputs), mxfp4 (E2M1, E8M0 scale per 32), nvfp4 (E2M1, E4M3 scale per 16 + fp32 per tensor); "
        "embeddings, lm_head, norms and biases stay in bf16 under the quantised ones. Default: the formats the "
        "spec ships (its weights: section, or a config.json's quantization_config), bf16 where it says nothing.",
        show_default=False,
    ),
]


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
    logits: LogitsOpt = LogitsChoice.all,
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

    Examples:

      godprof estimate llama-3-8b --seq 8k --batch 4

      godprof estimate specs/mixtral-8x7b.yaml --dtype int4 --format json

      godprof estimate jamba-v0.1 --mode train --recompute full --optimizer adamw8bit
    """
    from godprof.analytic import Workload, estimate
    from godprof.analytic.estimate import shipped_formats

    with guard():
        s = load(spec)
        formats = shipped_formats(s, None) if dtype is None else None
        w = Workload(
            batch=batch,
            seq=size(seq, "--seq") or 1,
            context=size(context, "--context"),
            dtype=formats.default if formats is not None else dtype,
            kv_dtype=kv_dtype,
            mode=mode.value,
            optimizer=optimizer.value,
            recompute=recompute.value,
            flash_attention=flash,
            attention_flops=attention_flops.value,
            logits=logits.value,
            group_size=group_size,
        )
        e = estimate(s, w, include_mtp=mtp, formats=formats)
    if fmt == Format.json:
        emit_json(e.to_dict())
        return
    if fmt == Format.csv:
        from godprof.report.estimate import estimate_record
        from godprof.report.table import tables_to_csv

        typer.echo(tables_to_csv([estimate_record(e)]), nl=False)
        return
    from godprof.report.estimate import estimate_tables

    emit_tables(estimate_tables(e), fmt)


def validate_cmd(
    specs: Annotated[list[str], typer.Argument(help="Spec files, config.json files or bundled names.")],
) -> None:
    """Check specs and report every problem with its file, key path and line (exit 2 if any is invalid)."""
    from godprof.analytic import count_params
    from godprof.errors import GodprofError
    from godprof.report.format import fmt_params

    bad = 0
    for ref in specs:
        try:
            s = load(ref)
        except GodprofError as e:
            bad += 1
            for line in str(e).splitlines():
                console().print(f"error: {line}", style="bold red", markup=False, highlight=False, soft_wrap=True)
            continue
        c = count_params(s)
        console().print(
            f"ok: {ref}: {s.name} ({s.family}), {s.model.num_layers} layers, "
            f"{fmt_params(c.total)} params ({fmt_params(c.active)} active)",
            markup=False,
            highlight=False,
        )
    if bad:
        raise typer.Exit(2)
