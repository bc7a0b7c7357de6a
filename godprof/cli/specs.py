"""`godprof specs` (the bundled catalogue) and `godprof import` (Hugging Face config.json -> spec YAML)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from godprof.cli.common import TableJson, emit_json, emit_tables, err_console, fail, guard

if TYPE_CHECKING:
    from godprof.report.table import Table
    from godprof.spec import Spec


def bundled_specs() -> list[Spec]:
    """Every spec shipped in the package (``godprof.specs``), read with importlib.resources so it works
    from a wheel as well as from a checkout."""
    from importlib import resources

    from godprof.spec import bundled_spec_names, parse_spec_text

    root = resources.files("godprof.specs")
    return [
        parse_spec_text(root.joinpath(f"{n}.yaml").read_text(encoding="utf-8"), f"{n}.yaml (bundled)")
        for n in bundled_spec_names()
    ]


def catalogue_records(specs: list[Spec]) -> list[dict[str, Any]]:
    """One record per spec: exact analytic counts next to the published figures (integers, stable keys)."""
    from godprof.analytic import count_params

    out = []
    for s in specs:
        c = count_params(s)
        p = s.published
        out.append(
            {
                "name": s.name,
                "family": s.family,
                "num_layers": s.model.num_layers,
                "path": s.path,
                "params": {"total": c.total, "active": c.active},
                "published": {
                    "total": p.params_total if p else None,
                    "active": p.params_active if p else None,
                    "tolerance": p.tolerance if p else None,
                },
                "source": s.source,
                "description": s.description,
            }
        )
    return out


def catalogue_table(records: list[dict[str, Any]]) -> Table:
    from godprof.report.format import fmt_params
    from godprof.report.table import Table

    t = Table(
        "Bundled specs",
        ["name", "family", "layers", "total", "active", "published"],
        caption="Counts are exact (godprof.analytic); published: the vendors' total / active, as rounded. "
        "`godprof estimate NAME` for memory and FLOPs.",
    )
    for r in records:
        t.add(
            r["name"],
            r["family"],
            r["num_layers"],
            fmt_params(r["params"]["total"]),
            fmt_params(r["params"]["active"]),
            " / ".join(fmt_params(r["published"][k]) for k in ("total", "active") if r["published"][k]) or "-",
        )
    return t


FamilyOpt = Annotated[str | None, typer.Option("--family", help="Only this family: dense, moe, ssm, linear or hybrid.")]
FormatOpt = Annotated[TableJson, typer.Option("--format", "-f", help="table, or json (stable keys).")]
ConfigArg = Annotated[
    Path,
    typer.Argument(
        help="A Hugging Face config.json, or the model folder holding it (read from disk; nothing is downloaded).",
        show_default=False,
        metavar="CONFIG",
    ),
]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write the spec to this file (default: standard output).")
]
NameOpt = Annotated[
    str | None, typer.Option("--name", help="Spec name (default: the file name, or its folder for config.json).")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite --output if it exists.")]


def specs_cmd(family: FamilyOpt = None, fmt: FormatOpt = TableJson.table) -> None:
    """List the bundled architecture specs with family and total / active parameters.

    Each bundled spec names its source (config.json or paper) and the vendor's published figures;
    the counts shown are godprof's exact analytic ones. Use a name wherever a SPEC is expected.

    Examples:

    \b
      godprof specs
      godprof specs --family moe --format json
      godprof estimate deepseek-v3 --dtype fp8
    """
    from godprof.spec import FAMILIES

    if family is not None and family not in FAMILIES:
        fail(f"--family must be one of {', '.join(FAMILIES)}, got {family!r}")
    with guard():
        specs = [s for s in bundled_specs() if family is None or s.family == family]
        records = catalogue_records(specs)
    if fmt == TableJson.json:
        emit_json({"schema": "godprof.specs/1", "specs": records})
        return
    emit_tables([catalogue_table(records)], fmt)


def import_cmd(config: ConfigArg, output: OutputOpt = None, name: NameOpt = None, force: ForceOpt = False) -> None:
    """Convert a Hugging Face config.json into a godprof spec YAML, offline.

    The model_type picks the reader (llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, qwen3_moe,
    deepseek_v2, deepseek_v3, gemma2, gpt2, gpt_neox, gptj, mamba, mamba2, falcon_mamba, jamba,
    bamba); absent keys take transformers' defaults. The written spec loads back to exactly the same
    counts. You can also pass a config.json straight to any command that takes a SPEC.

    Examples:

    \b
      godprof import ~/models/Qwen3-8B/config.json -o qwen3-8b.yaml
      godprof import config.json | less
      godprof estimate ~/models/Mixtral-8x7B-v0.1/config.json --seq 32k
    """
    from godprof.analytic import count_params
    from godprof.errors import NotFoundError
    from godprof.hf import read_config_file, spec_document_from_hf_config, spec_yaml
    from godprof.report.format import fmt_params
    from godprof.spec import parse_spec, parse_spec_text

    with guard():
        if config.is_dir():  # a model folder (a downloaded checkpoint) holding its config.json
            config = config / "config.json"
        if output is not None:
            from godprof.checker import check_output

            check_output(output, [config], force)
        if not config.is_file():
            raise NotFoundError(f"no such file: {config}")
        doc = spec_document_from_hf_config(read_config_file(config), str(config), name)
        spec = parse_spec(doc, str(config))
        text = spec_yaml(doc)
        counts = count_params(spec)
        back = count_params(parse_spec_text(text, "<generated>"))
        if (back.total, back.active) != (counts.total, counts.active):  # pragma: no cover - a bug, not a user error
            fail(f"internal error: the generated YAML counts {back.total} != {counts.total}; please report")
        if output is None:
            typer.echo(text, nl=False)
            return
        output.write_text(text, encoding="utf-8")
    err_console().print(
        f"wrote {output}: {spec.name} ({spec.family}), {spec.model.num_layers} layers, "
        f"{fmt_params(counts.total)} params ({fmt_params(counts.active)} active)",
        markup=False,
        highlight=False,
    )
