"""Spec documents as data: YAML parsed once with line numbers, and a checker that collects every problem.

Used by the spec parser, by every layer kind's schema (``godprof.kinds``) and by plan's workload and
swarm files, so each reports ``file:line: key.path: message`` the same way.
"""

from __future__ import annotations

import difflib
from typing import Any

import yaml

from godprof.errors import Problem, SpecError

KeyPath = tuple[str | int, ...]


def load_yaml(
    text: str, source: str | None = None, error: type[SpecError] = SpecError
) -> tuple[Any, dict[KeyPath, int]]:
    """Parse a YAML document once, with the safe constructors only (no tags that build objects), and
    map every key path to its 1-based line. Invalid YAML raises ``error`` naming the line."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        msg = getattr(e, "problem", None) or str(e)
        raise error(source, [Problem("", f"invalid YAML: {msg}", line)]) from None
    finally:
        loader.dispose()
    lines: dict[KeyPath, int] = {}

    def walk(node: yaml.Node, path: KeyPath) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                lines[(*path, key)] = k.start_mark.line + 1
                walk(v, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, i)] = item.start_mark.line + 1
                walk(item, (*path, i))

    if root is not None:
        walk(root, ())
    return data, lines


def _fmt_path(path: KeyPath) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class Checker:
    """Collects every problem in a document instead of stopping at the first."""

    def __init__(self, source: str | None, lines: dict[KeyPath, int]):
        self.source = source
        self.lines = lines
        self.problems: list[Problem] = []

    def line(self, path: KeyPath) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def err(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(_fmt_path(path), message, self.line(path)))

    def raise_if_any(self) -> None:
        if self.problems:
            self.problems.sort(key=lambda p: p.line or 0)
            raise SpecError(self.source, self.problems)

    # -- typed field readers; each returns a usable default after recording a problem

    def mapping(self, value: Any, path: KeyPath) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.err(path, f"expected a mapping, got {_typename(value)}")
            return {}
        return value

    def keys(self, d: dict[str, Any], path: KeyPath, allowed: set[str], required: set[str]) -> None:
        for k in d:
            if k not in allowed:
                near = difflib.get_close_matches(str(k), sorted(allowed), n=1, cutoff=0.6)
                hint = f"; did you mean '{near[0]}'?" if near else f"; known keys: {', '.join(sorted(allowed))}"
                self.err((*path, k), f"unknown key '{k}'{hint}")
        for k in sorted(required - set(d)):
            self.err(path, f"missing required key '{k}'")

    def int_(self, d: dict, key: str, path: KeyPath, default: int | None = None, *, minimum: int = 1) -> int:
        if key not in d or d[key] is None:
            return default if default is not None else minimum
        v = d[key]
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            self.err((*path, key), f"expected an integer, got {_typename(v)} {v!r}")
            return default if default is not None else minimum
        if v < minimum:
            what = "positive" if minimum == 1 else f">= {minimum}"
            self.err((*path, key), f"must be {what}, got {v}")
            return default if default is not None else minimum
        return v

    def opt_int(self, d: dict, key: str, path: KeyPath, *, minimum: int = 1) -> int | None:
        if d.get(key) is None:
            return None
        return self.int_(d, key, path, minimum=minimum)

    def bool_(self, d: dict, key: str, path: KeyPath, default: bool) -> bool:
        if key not in d or d[key] is None:
            return default
        v = d[key]
        if not isinstance(v, bool):
            self.err((*path, key), f"expected true or false, got {v!r}")
            return default
        return v

    def float_(self, d: dict, key: str, path: KeyPath, default: float, *, positive: bool = True) -> float:
        if key not in d or d[key] is None:
            return default
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.err((*path, key), f"expected a number, got {v!r}")
            return default
        if positive and v <= 0:
            self.err((*path, key), f"must be positive, got {v}")
            return default
        return float(v)

    def str_(self, d: dict, key: str, path: KeyPath, default: str | None = None) -> str | None:
        if key not in d or d[key] is None:
            return default
        v = d[key]
        if not isinstance(v, str):
            self.err((*path, key), f"expected a string, got {v!r}")
            return default
        return v

    def choice(self, d: dict, key: str, path: KeyPath, choices: tuple[str, ...], default: str) -> str:
        v = self.str_(d, key, path, default)
        if v not in choices:
            self.err((*path, key), f"must be one of {', '.join(choices)}, got {v!r}")
            return default
        return v


def _typename(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "nothing"}.get(
        type(v), type(v).__name__
    )
