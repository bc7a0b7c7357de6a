"""Shared CLI pieces: consoles, exit codes, output formats, error handling, option parsing.

Kept light (no rich at import): ``godprof estimate`` must start in a fraction of a second.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum, IntEnum
from functools import cache
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from godprof.errors import GodprofError

if TYPE_CHECKING:
    from rich.console import Console

    from godprof.report.table import Table
    from godprof.spec import Spec


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # an unexpected failure (a bug: please report it)
    USAGE = 2  # a bad spec, option or name; the message says which
    DOES_NOT_FIT = 3  # the model/workload does not fit the memory available
    NO_DEVICE = 4  # the requested device is missing (no CUDA, bad GPU index)
    INTERRUPTED = 130  # Ctrl-C


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    md = "md"


class TableJson(str, Enum):
    table = "table"
    json = "json"


@cache
def console() -> Console:
    from rich.console import Console

    class _Stdout(Console):
        def on_broken_pipe(self) -> None:
            """A reader that stopped early (``| head``) is not an error: discard the rest and exit 0."""
            import os

            self.quiet = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(0)

    return _Stdout(emoji=False)  # no :code: replacement (and no 6 ms import of the emoji table)


@cache
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, emoji=False)


def fail(message: str, code: ExitCode = ExitCode.USAGE) -> NoReturn:
    """Print a one-line (or one-per-problem) error to stderr and exit with ``code``; no traceback."""
    for line in message.splitlines() or [""]:
        err_console().print(f"error: {line}", style="bold red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(int(code))


@contextmanager
def guard() -> Iterator[None]:
    """Turn user errors into clean exits: GodprofError/ValueError -> 2, Ctrl-C -> 130."""
    try:
        yield
    except GodprofError as e:
        fail(str(e))
    except ValueError as e:
        fail(str(e))
    except KeyboardInterrupt:
        err_console().print("interrupted", style="yellow")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


def load(ref: str) -> Spec:
    """Load a spec by path or bundled name (errors handled by ``guard``)."""
    from godprof.spec import load_spec

    return load_spec(ref)


def size(text: str | None, what: str) -> int | None:
    """Parse a size option with the one rule every option uses (``godprof.report.format.SIZE_RULE``: 8k =
    8,000, 8Ki = 8,192); exits 2 with the option named on failure."""
    if text is None:
        return None
    from godprof.checker import MAX_TOKENS
    from godprof.report.format import parse_size

    try:
        n = parse_size(text)
    except ValueError as e:
        fail(f"{what}: {e}")
    if n > MAX_TOKENS:
        fail(f"{what}: {text!r} is over the bound of {MAX_TOKENS:,} (2^40) tokens")
    return n


def split_list(text: str, what: str) -> list[str]:
    """A comma-separated option ('h100,b200', 'bf16,int4') as its distinct non-empty items, in order."""
    items = list(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    if not items:
        fail(f"{what}: give at least one value (a list is comma-separated: h100,b200)")
    return items


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def emit_tables(tables: list[Table], fmt: Format | TableJson) -> None:
    """Print tables as rich tables (``table``) or Markdown (``md``). Tables fit the terminal (80 columns in a
    pipe) without cutting a cell: wide ones fold or stack (``Table.renderables``)."""
    if fmt == Format.md:
        sys.stdout.write("\n".join(t.to_markdown() for t in tables))
        return
    c = console()
    for t in tables:
        for part in t.renderables(c.width):
            c.print(part)
