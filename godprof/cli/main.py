"""The `godprof` command. Each command lives in its own module and is registered here, explicitly.

Command modules import only typer and light godprof modules at import time; heavy imports (rich
rendering, torch) happen inside the command, so `godprof estimate` starts fast.
"""

from __future__ import annotations

import typer

from godprof import __version__
from godprof.cli import compare, estimate
from godprof.cli import measure as measure_cli
from godprof.cli import plan as plan_cli
from godprof.cli import specs as specs_cli

app = typer.Typer(
    name="godprof",
    help="What a model architecture costs before and after you build it: parameters, VRAM, FLOPs, "
    "latency, energy, and GPUs to serve or train it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"godprof {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """godprof: analytic estimates (no GPU), PyTorch measurements, comparisons and capacity plans."""


app.command("estimate")(estimate.estimate_cmd)
app.command("validate")(estimate.validate_cmd)
app.command("compare")(compare.compare_cmd)
app.command("sweep")(compare.sweep_cmd)
app.command("gpus")(compare.gpus_cmd)
app.command("measure")(measure_cli.measure_cmd)
app.command("plan")(plan_cli.plan_cmd)
app.command("specs")(specs_cli.specs_cmd)
app.command("import")(specs_cli.import_cmd)


def run() -> None:
    app()
