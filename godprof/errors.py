"""Errors a user can cause and godprof reports without a traceback.

Every user-facing error carries enough to find the problem: the file, the key path and the line.
The CLI maps each class to an exit code (``godprof.cli.common.ExitCode``).
"""

from __future__ import annotations

from dataclasses import dataclass


class GodprofError(Exception):
    """Base class for errors that are the user's to fix (bad spec, unknown GPU, bad option)."""


@dataclass(frozen=True)
class Problem:
    """One validation problem: where it is and what is wrong."""

    key_path: str
    message: str
    line: int | None = None

    def render(self, source: str | None) -> str:
        where = source or "<spec>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        key = f" {self.key_path}:" if self.key_path else ""
        return f"{where}:{key} {self.message}"


class SpecError(GodprofError):
    """A spec (YAML or config.json) that cannot be used; lists every problem found."""

    def __init__(self, source: str | None, problems: list[Problem]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.render(source) for p in problems))


class NotFoundError(GodprofError):
    """A name (spec, GPU, dtype) that matches nothing; the message lists the nearest names."""


class OutputError(GodprofError):
    """An output path (``-o``, ``--plot``) that cannot or must not be written: the message says why."""
