"""Typed reads from a config.json mapping, with transformers' defaults for absent keys, and the reader of
config.json files: bounded like every input (``godprof.checker``: size, nesting, number of values), with
a line for every key so that errors about a config.json name its line, and duplicate keys refused."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, NoReturn

from godprof.checker import MAX_DEPTH, MAX_LAYERS, MAX_NODES, MAX_SIZE, _show, read_text
from godprof.errors import Problem, SpecError

# source -> key path ("text_config.num_hidden_layers") -> line, for each config.json read (read_json_document)
_LINES: dict[str, dict[str, int]] = {}
# keys whose value is a layer count: bounded by godprof.checker.MAX_LAYERS like a spec's num_layers
_LAYER_KEYS = {"num_hidden_layers", "num_layers", "n_layer", "n_layers", "num_nextn_predict_layers"}

REQUIRED: Any = object()

ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_tanh": "gelu_tanh",
    "relu": "relu",
}


class Config:
    """Typed reads from a config.json mapping; the first bad key raises a SpecError naming it."""

    def __init__(self, data: dict[str, Any], source: str, prefix: str = ""):
        self.data = data
        self.source = source
        self.prefix = prefix  # "text_config." when reading a wrapper's text model

    def bad(self, key: str, message: str) -> NoReturn:
        lines = _LINES.get(self.source, {})
        path = self.prefix + key
        line = lines.get(path)
        while line is None and "." in path:  # a key a converter defaults: the line of its enclosing object
            path = path.rsplit(".", 1)[0]
            line = lines.get(path)
        raise SpecError(self.source, [Problem(self.prefix + key, message, line)])

    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, keys: str | tuple[str, ...], default: Any) -> tuple[str, Any]:
        names = (keys,) if isinstance(keys, str) else keys
        for k in names:
            if k in self.data:
                return k, self.data[k]
        if default is REQUIRED:
            self.bad(names[0], "missing required key")
        return names[0], default

    def int(self, keys: str | tuple[str, ...], default: Any = REQUIRED, *, minimum: int = 1) -> int:
        k, v = self._get(keys, default)
        return self._int_value(k, v, minimum)

    def _int_value(self, k: str, v: Any, minimum: int) -> int:
        """An integer in ``minimum..MAX_SIZE`` (``MAX_LAYERS`` for layer counts): floats, ``4096.0`` too,
        are refused as transformers' modules would refuse them (``nn.Linear(4096.0, ...)`` fails)."""
        if isinstance(v, bool) or not isinstance(v, int):
            what = "nothing (null)" if v is None else _show(v)
            self.bad(k, f"expected an integer, got {what}")
        if v < minimum:
            self.bad(k, f"must be >= {minimum}, got {v}")
        maximum = MAX_LAYERS if k in _LAYER_KEYS else MAX_SIZE
        if v > maximum:
            self.bad(k, f"must be at most {maximum:,}, got {_show(v)}")
        return v

    def opt_int(self, keys: str | tuple[str, ...], default: int | None = None, *, minimum: int = 1) -> int | None:
        """An integer that may be null (``q_lora_rank``, ``sliding_window``, ``head_dim``)."""
        k, v = self._get(keys, default)
        if v is None:
            return None
        return self._int_value(k, v, minimum)

    def bool(self, keys: str | tuple[str, ...], default: bool) -> bool:
        k, v = self._get(keys, default)
        if v is None:
            return default
        if not isinstance(v, bool):
            self.bad(k, f"expected true or false, got {_show(v)}")
        return v

    def float(self, keys: str | tuple[str, ...], default: Any = REQUIRED) -> float:
        k, v = self._get(keys, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.bad(k, f"expected a number, got {_show(v)}")
        try:
            f = float(v)
        except OverflowError:
            f = math.inf
        if not math.isfinite(f):
            self.bad(k, f"must be a finite number, got {_show(v)}")
        return f

    def str(self, keys: str | tuple[str, ...], default: Any = REQUIRED) -> str:
        k, v = self._get(keys, default)
        if not isinstance(v, str):
            self.bad(k, f"expected a string, got {_show(v)}")
        return v

    def int_list(self, key: str, default: list[int] | None = None) -> list[int]:
        _, v = self._get(key, default if default is not None else [])
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            self.bad(key, f"expected a list of layer indices, got {_show(v)}")
        return v

    def str_list(self, key: str) -> list[str] | None:
        v = self.data.get(key)
        if v is None:
            return None
        if not isinstance(v, list) or not all(isinstance(i, str) for i in v):
            self.bad(key, f"expected a list of strings, got {_show(v)}")
        return v

    def activation(self, keys: str | tuple[str, ...], default: str) -> str:
        k, _ = self._get(keys, default)
        name = self.str(keys, default)
        if name not in ACTIVATIONS:
            self.bad(k, f"unsupported activation {name!r}; supported: {', '.join(sorted(ACTIVATIONS))}")
        return ACTIVATIONS[name]

    def rope_theta(self, default: float) -> float:
        """``rope_theta`` at the top level (transformers 4.x files) or inside ``rope_parameters``."""
        rp = self.data.get("rope_parameters")
        if isinstance(rp, dict) and "rope_theta" in rp:
            return Config(rp, self.source, self.prefix + "rope_parameters.").float("rope_theta")
        return self.float(("rope_theta", "rotary_emb_base"), default)

    def partial_rotary(self, default: float) -> float:
        rp = self.data.get("rope_parameters")
        if isinstance(rp, dict) and "partial_rotary_factor" in rp:
            return Config(rp, self.source, self.prefix + "rope_parameters.").float("partial_rotary_factor")
        return self.float(("partial_rotary_factor", "rotary_pct"), default)


# --------------------------------------------------------------------------- reading config.json files

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|\n')


def key_lines(text: str, source: str) -> dict[str, int]:
    """Every key path of a JSON document (``text_config.hidden_size``, list items as ``layers.3``) -> its
    1-based line, in one iterative pass over the tokens. Refuses (SpecError with the line) a key given twice
    in one object, nesting past ``MAX_DEPTH`` and more than ``MAX_NODES`` keys and items."""
    lines: dict[str, int] = {}
    stack: list[list[Any]] = []  # per open container: [is_object, current key or index, keys seen, path]
    line, count, expect_key = 1, 0, False
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok == "\n":
            line += 1
            continue
        if tok in "{[":
            parent = f"{stack[-1][3]}.{stack[-1][1]}".lstrip(".") if stack else ""  # the key or index it is under
            stack.append([tok == "{", 0, set(), parent])
            if len(stack) > MAX_DEPTH:
                raise SpecError(source, [Problem("", f"nested deeper than {MAX_DEPTH} levels", line)])
            expect_key = tok == "{"
        elif tok in "}]":
            if stack:
                stack.pop()
            expect_key = False
        elif tok == ",":
            if stack:
                top = stack[-1]
                if top[0]:
                    expect_key = True
                else:
                    top[1] += 1
                    count += 1
        elif tok == ":":
            expect_key = False
        elif expect_key and stack and stack[-1][0]:  # a string in key position
            key = json.loads(tok) if "\\" in tok else tok[1:-1]
            top = stack[-1]
            path = f"{top[3]}.{key}".lstrip(".")
            if key in top[2]:
                raise SpecError(source, [Problem(path, f"key '{key}' is given twice in this object (the second "
                                                       "would silently win)", line)])  # fmt: skip
            top[2].add(key)
            top[1] = key
            lines.setdefault(path, line)
            count += 1
            expect_key = False
        if count > MAX_NODES:
            raise SpecError(source, [Problem("", f"holds more than {MAX_NODES:,} keys and values", line)])
        if tok != "\n" and tok.count("\n"):
            line += tok.count("\n")
    return lines


def read_json_document(path: str | Path) -> tuple[Any, dict[str, int]]:
    """A config.json file: (its data, key path -> line). Bounded and checked like every input (see
    ``godprof.checker``). NaN and Infinity parse (transformers writes ``Infinity`` in Nemotron-H's
    ``time_step_limit``); the readers refuse them wherever a value is used. ``Config`` errors about this
    file (its ``source``) then name their key's line."""
    source = str(path)
    text = read_text(path)
    lines = key_lines(text, source)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(source, [Problem("", f"invalid JSON: {e.msg}", e.lineno)]) from None
    except RecursionError:
        raise SpecError(source, [Problem("", f"nested deeper than {MAX_DEPTH} levels")]) from None
    _LINES[source] = lines
    return data, lines
