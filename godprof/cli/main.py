"""The `godprof` command. Each command lives in its own module and is registered here, explicitly.

Command modules import only typer and light godprof modules at import time; heavy imports (rich
rendering, torch) happen inside the command. Typer inspects the signature of every registered command
each time it runs, so `run()` builds an app holding only the command being invoked (and imports only
its module): `godprof estimate` does not pay for `plan`'s forty options. `app` is the whole CLI, for
`godprof --help`, unknown commands and tests.
"""

from __future__ import annotations

import sys
from functools import cache
from importlib import import_module
from typing import Any

import typer

from godprof import __version__

# name -> (module, function), in the order `godprof --help` lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "estimate": ("godprof.cli.estimate", "estimate_cmd"),
    "validate": ("godprof.cli.estimate", "validate_cmd"),
    "compare": ("godprof.cli.compare", "compare_cmd"),
    "sweep": ("godprof.cli.compare", "sweep_cmd"),
    "gpus": ("godprof.cli.compare", "gpus_cmd"),
    "measure": ("godprof.cli.measure", "measure_cmd"),
    "plan": ("godprof.cli.plan", "plan_cmd"),
    "specs": ("godprof.cli.specs", "specs_cmd"),
    "import": ("godprof.cli.specs", "import_cmd"),
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"godprof {__version__}")
        raise typer.Exit()


def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """godprof: analytic estimates (no GPU), PyTorch measurements, comparisons and capacity plans."""


def make_app(names: tuple[str, ...] = tuple(COMMANDS)) -> typer.Typer:
    """A Typer app with the given commands registered (all of them by default)."""
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
    app.callback()(main)
    for name in names:
        module, function = COMMANDS[name]
        app.command(name)(getattr(import_module(module), function))
    return app


@cache
def full_app() -> typer.Typer:
    return make_app()


def __getattr__(name: str) -> Any:
    if name == "app":  # built on first use, so importing this module stays cheap
        return full_app()
    raise AttributeError(name)


def run() -> None:
    args = sys.argv[1:]
    app = make_app((args[0],)) if args and args[0] in COMMANDS else full_app()
    try:
        app()
    except SystemExit as e:
        # A reader that stops early (`godprof estimate x | head -3`) closes the pipe: click catches the
        # EPIPE, swaps in a wrapper that silences further flushes, and exits 1. That is not a failure.
        if e.code == 1 and type(sys.stdout).__name__ == "PacifyFlushWrapper":
            raise SystemExit(0) from None
        raise
