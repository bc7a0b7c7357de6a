"""Spec documents as data: YAML parsed once with line numbers, and a checker that collects every problem.

Used by the spec parser, by every layer kind's schema (``godprof.kinds``) and by plan's workload and
swarm files, so each reports ``file:line: key.path: message`` the same way.

Input bounds (the README's "Input bounds" lists them for users). Every document godprof reads is data
from someone else, so the work it can cause is bounded before it is parsed:

- a file is at most ``MAX_FILE_BYTES`` (4 MiB; the largest bundled spec or config.json is ~30 KiB),
  UTF-8 text without NUL bytes;
- a YAML or JSON document nests at most ``MAX_DEPTH`` (64) levels and expands to at most
  ``MAX_NODES`` (100,000) values, aliases counted as often as they are used (so an alias bomb is
  refused before anything walks it); a key appears once per mapping;
- every size is an integer (never a float, ``2560.0`` included, nor a boolean) from its minimum to
  ``MAX_SIZE`` (2^31 - 1); a model has at most ``MAX_LAYERS`` (10,000) layers; token counts given as
  options (``--seq``, ``--context``, ...) go up to ``MAX_TOKENS`` (2^40); every number is finite;
- a sweep evaluates at most ``MAX_SWEEP_WORK`` (2,000,000) layer-contexts: points x batches x layers.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Any

import yaml

from godprof.errors import OutputError, Problem, SpecError

KeyPath = tuple[str | int, ...]

MAX_FILE_BYTES = 4 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_SIZE = 2**31 - 1
MAX_LAYERS = 10_000
MAX_TOKENS = 2**40
MAX_SWEEP_WORK = 2_000_000  # sweep: contexts x batches x layers (summed over specs) evaluated, ~5 s on one core


def read_text(path: str | Path, error: type[SpecError] = SpecError, source: str | None = None) -> str:
    """The text of a user's file, or ``error`` with one line saying why it cannot be read: missing,
    a folder, unreadable, over ``MAX_FILE_BYTES``, binary (NUL bytes) or not UTF-8."""
    p = Path(path)
    src = source or str(p)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except IsADirectoryError:
        raise error(src, [Problem("", "is a folder, not a file")]) from None
    except FileNotFoundError:
        raise error(src, [Problem("", "no such file")]) from None
    except PermissionError:
        raise error(src, [Problem("", "cannot be read: permission denied")]) from None
    except OSError as e:
        raise error(src, [Problem("", f"cannot be read: {e.strerror or e}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise error(src, [Problem("", f"is over {MAX_FILE_BYTES >> 20} MiB: not a spec, config or workload file")])
    if b"\0" in raw:
        raise error(src, [Problem("", "is a binary file (it holds NUL bytes), not YAML or JSON text")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise error(src, [Problem("", f"is not UTF-8 text (byte {e.start} cannot be decoded)", line)]) from None


def check_output(
    path: str | Path, inputs: list[str | Path | None], force: bool = False, option: str = "--output"
) -> Path:
    """The path an output option names, checked before any work is done: never one of the command's
    ``inputs`` (not even with ``--force``), an existing file only with ``force``, in a folder that exists
    and can be written. Raises OutputError (exit 2) with one line otherwise."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{option} {p}: is a folder; give a file name")
    for ref in inputs:
        if ref is None:
            continue
        try:
            same = Path(ref).exists() and p.exists() and p.samefile(ref)
        except OSError:
            same = False
        if same:
            raise OutputError(f"{option} {p}: is an input of this command; refusing to overwrite it")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{option} {p}: folder {parent} does not exist")
    if p.exists() and not force:
        raise OutputError(f"{option} {p}: exists; pass --force to overwrite it")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise OutputError(f"{option} {p}: cannot be written (permission denied)")
    return p


def _check_yaml_size(text: str, source: str | None, error: type[SpecError]) -> None:
    """Refuse a YAML document that nests past ``MAX_DEPTH`` or expands past ``MAX_NODES`` values, by
    one pass over libyaml's events (iterative: no recursion, no expansion) before anything builds it."""

    def refuse(message: str, mark: Any) -> None:
        raise error(source, [Problem("", message, mark.line + 1 if mark is not None else None)])

    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    stack: list[list[Any]] = []  # [anchor, expanded values so far] per open collection
    sizes: dict[str, int] = {}  # anchor -> values it expands to
    total = 0
    try:
        for ev in yaml.parse(text, Loader=loader_cls):
            if isinstance(ev, yaml.CollectionStartEvent):
                stack.append([ev.anchor, 1])
                if len(stack) > MAX_DEPTH:
                    refuse(f"nested deeper than {MAX_DEPTH} levels", ev.start_mark)
                continue
            if isinstance(ev, yaml.CollectionEndEvent):
                anchor, n = stack.pop()
            elif isinstance(ev, yaml.ScalarEvent):
                anchor, n = ev.anchor, 1
            elif isinstance(ev, yaml.AliasEvent):
                anchor, n = None, sizes.get(ev.anchor, 1)
            else:
                continue
            if anchor is not None:
                sizes[anchor] = n
            if stack:
                stack[-1][1] += n
            else:
                total += n
            if total + sum(s[1] for s in stack) > MAX_NODES:  # every value parsed so far, expanded
                refuse(f"expands to more than {MAX_NODES:,} values (aliases counted each time they are used)",
                       ev.start_mark)  # fmt: skip
    except yaml.YAMLError:
        return  # the full parse reports it with its line


def load_yaml(
    text: str, source: str | None = None, error: type[SpecError] = SpecError
) -> tuple[Any, dict[KeyPath, int]]:
    """Parse a YAML document once, with the safe constructors only (no tags that build objects), and
    map every key path to its 1-based line. Invalid YAML, a key given twice in one mapping, and a document
    past the bounds above raise ``error`` naming the line."""
    if len(text) > MAX_FILE_BYTES:
        raise error(source, [Problem("", f"is over {MAX_FILE_BYTES >> 20} MiB: not a spec, config or workload file")])
    _check_yaml_size(text, source, error)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        msg = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise error(source, [Problem("", f"invalid YAML: {msg}", line)]) from None
    except (RecursionError, MemoryError, TypeError, ValueError, OverflowError) as e:
        # TypeError: an unhashable mapping key ({[1]: x}); ValueError/OverflowError: a timestamp or number
        # the constructors reject
        raise error(source, [Problem("", f"invalid YAML: {type(e).__name__}: {str(e)[:80]}")]) from None
    finally:
        loader.dispose()
    lines: dict[KeyPath, int] = {}
    dupes: list[Problem] = []

    def walk(node: yaml.Node, path: KeyPath) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for k, v in node.value:
                key = k.value
                if isinstance(k, yaml.ScalarNode) and key != "<<":
                    if key in seen:
                        dupes.append(Problem(_fmt_path((*path, key)), f"key '{key}' is given twice in this mapping"
                                             " (the second would silently win)", k.start_mark.line + 1))  # fmt: skip
                    seen.add(key)
                if not isinstance(key, str | int):
                    continue
                lines.setdefault((*path, key), k.start_mark.line + 1)
                walk(v, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault((*path, i), item.start_mark.line + 1)
                walk(item, (*path, i))

    if root is not None:
        walk(root, ())
    if dupes:
        raise error(source, dupes)
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
        self.bad_mappings: set[KeyPath] = set()  # mappings holding a value a reader refused

    def line(self, path: KeyPath) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def err(self, path: KeyPath, message: str) -> None:
        """Record a problem, unless it lies in a mapping already found wrong (not a mapping, a required key
        missing, a value refused): checks there would see the readers' stand-ins and report consequences,
        not causes. One line per mistake."""
        if any(path[: len(bad)] == bad for bad in self.bad_mappings):
            return
        self.problems.append(Problem(_fmt_path(path), message, self.line(path)))

    def bad_value(self, path: KeyPath, message: str) -> None:
        """A value a typed reader refused (it returns a stand-in): recorded, and later problems in its
        mapping are left out (``err``)."""
        self.problems.append(Problem(_fmt_path(path), message, self.line(path)))
        self._poison(path[:-1])

    def _poison(self, path: KeyPath) -> None:
        if path:  # the document as a whole stays open: its sections are checked independently
            self.bad_mappings.add(path)

    def raise_if_any(self) -> None:
        if self.problems:
            self.problems.sort(key=lambda p: p.line or 0)
            raise SpecError(self.source, self.problems)

    # -- typed field readers; each returns a usable default after recording a problem

    def mapping(self, value: Any, path: KeyPath) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.err(path, f"expected a mapping, got {_typename(value)}")
            self._poison(path)
            return {}
        return value

    def keys(self, d: dict[str, Any], path: KeyPath, allowed: set[str], required: set[str]) -> None:
        for k in d:
            if k not in allowed:
                near = difflib.get_close_matches(str(k), sorted(allowed), n=1, cutoff=0.6)
                hint = f"; did you mean '{near[0]}'?" if near else f"; known keys: {', '.join(sorted(allowed))}"
                self.err((*path, k), f"unknown key '{k}'{hint}")
        missing = sorted(required - set(d))
        if missing and not any(path[: len(bad)] == bad for bad in self.bad_mappings):
            for k in missing:
                self.problems.append(Problem(_fmt_path(path), f"missing required key '{k}'", self.line(path)))
            self._poison(path)

    def int_(
        self,
        d: dict,
        key: str,
        path: KeyPath,
        default: int | None = None,
        *,
        minimum: int = 1,
        maximum: int = MAX_SIZE,
    ) -> int:
        """An integer in ``minimum..maximum``. Absent: ``default`` (a missing required key is reported by
        ``keys``). ``null`` means absent when there is a default and is an error when there is none. Floats
        (``2560.0`` too), booleans, NaN and infinity are errors: a size is written as an integer."""
        fallback = default if default is not None else minimum
        if key not in d:
            return fallback
        v = d[key]
        if v is None:
            if default is None:
                self.bad_value((*path, key), "is null; give an integer")
            return fallback
        if isinstance(v, bool) or not isinstance(v, int):
            hint = f" (write {int(v)})" if isinstance(v, float) and math.isfinite(v) and v.is_integer() else ""
            self.bad_value((*path, key), f"expected an integer, got {_typename(v)} {_show(v)}{hint}")
            return fallback
        if v < minimum:
            what = "positive" if minimum == 1 else f">= {minimum}"
            self.bad_value((*path, key), f"must be {what}, got {v}")
            return fallback
        if v > maximum:
            self.bad_value((*path, key), f"must be at most {maximum:,}, got {_show(v)}")
            return fallback
        return v

    def opt_int(self, d: dict, key: str, path: KeyPath, *, minimum: int = 1, maximum: int = MAX_SIZE) -> int | None:
        if d.get(key) is None:
            return None
        return self.int_(d, key, path, minimum=minimum, maximum=maximum)

    def bool_(self, d: dict, key: str, path: KeyPath, default: bool) -> bool:
        if key not in d or d[key] is None:
            return default
        v = d[key]
        if not isinstance(v, bool):
            self.bad_value((*path, key), f"expected true or false, got {_show(v)}")
            return default
        return v

    def float_(self, d: dict, key: str, path: KeyPath, default: float, *, positive: bool = True) -> float:
        """A finite number (an integer is fine); ``positive`` requires > 0. NaN and infinity are errors."""
        if key not in d or d[key] is None:
            return default
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.bad_value((*path, key), f"expected a number, got {_show(v)}")
            return default
        try:
            f = float(v)
        except OverflowError:
            f = math.inf
        if not math.isfinite(f):
            self.bad_value((*path, key), f"must be a finite number, got {_show(v)}")
            return default
        if positive and f <= 0:
            self.bad_value((*path, key), f"must be positive, got {v}")
            return default
        return f

    def str_(self, d: dict, key: str, path: KeyPath, default: str | None = None) -> str | None:
        if key not in d or d[key] is None:
            return default
        v = d[key]
        if not isinstance(v, str):
            self.bad_value((*path, key), f"expected a string, got {_show(v)}")
            return default
        return v

    def choice(self, d: dict, key: str, path: KeyPath, choices: tuple[str, ...], default: str) -> str:
        v = self.str_(d, key, path, default)
        if v not in choices:
            self.bad_value((*path, key), f"must be one of {', '.join(choices)}, got {_show(v)}")
            return default
        return v


def _show(v: Any, limit: int = 60) -> str:
    """``repr(v)`` cut to ``limit`` characters (a value may be a whole nested document)."""
    r = repr(v) if not isinstance(v, int) or isinstance(v, bool) or abs(v) < 10**30 else f"{v:.3e}"
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _typename(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "nothing"}.get(
        type(v), type(v).__name__
    )
