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
from typer.core import TyperGroup

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


class _Group(TyperGroup):
    """The command group: a usage error (bad option value, unknown option) is one line on stderr,
    ``error: ...`` naming the option, with exit 2, like every other godprof error; click's own form is a
    usage block plus the message. Everything else is click's standalone behaviour."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:  # fmt: skip
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:  # newer typer vendors click as typer._click; older ones use click itself
            from typer._click import exceptions as click  # type: ignore[import-not-found]
            from typer._click.utils import PacifyFlushWrapper  # type: ignore[import-not-found]
        except ImportError:  # pragma: no cover - depends on the typer release
            from click import exceptions as click  # type: ignore[no-redef]
            from click.utils import PacifyFlushWrapper  # type: ignore[no-redef]

        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `godprof`: the help, as click shows it
                e.show()
                sys.exit(e.exit_code)
            path = e.ctx.command_path if e.ctx is not None else "godprof"
            sys.stderr.write(f"error: {e.format_message()} (`{path} --help` explains every option)\n")
            sys.exit(e.exit_code)
        except click.ClickException as e:
            sys.stderr.write(f"error: {e.format_message()}\n")
            sys.exit(e.exit_code)
        except typer.Abort:
            sys.stderr.write("interrupted\n")
            sys.exit(130)
        except OSError as e:
            import errno

            if e.errno != errno.EPIPE:
                raise
            sys.stdout = PacifyFlushWrapper(sys.stdout)  # type: ignore[assignment]  # run() turns this exit into 0
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def make_app(names: tuple[str, ...] = tuple(COMMANDS)) -> typer.Typer:
    """A Typer app with the given commands registered (all of them by default)."""
    app = typer.Typer(
        name="godprof",
        cls=_Group,
        help="What a model architecture costs before and after you build it: parameters, VRAM, FLOPs, "
        "latency, energy, and GPUs to serve or train it.",
        no_args_is_help=True,
        add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain click help: wraps at the terminal width and never cuts an option name
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
