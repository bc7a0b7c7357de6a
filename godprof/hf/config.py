"""Typed reads from a config.json mapping, with transformers' defaults for absent keys."""

from __future__ import annotations

from typing import Any, NoReturn

from godprof.errors import Problem, SpecError

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
        raise SpecError(self.source, [Problem(self.prefix + key, message)])

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
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            self.bad(k, f"expected an integer, got {v!r}")
        if v < minimum:
            self.bad(k, f"must be >= {minimum}, got {v}")
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
            self.bad(k, f"expected true or false, got {v!r}")
        return v

    def float(self, keys: str | tuple[str, ...], default: Any = REQUIRED) -> float:
        k, v = self._get(keys, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.bad(k, f"expected a number, got {v!r}")
        return float(v)

    def str(self, keys: str | tuple[str, ...], default: Any = REQUIRED) -> str:
        k, v = self._get(keys, default)
        if not isinstance(v, str):
            self.bad(k, f"expected a string, got {v!r}")
        return v

    def int_list(self, key: str, default: list[int] | None = None) -> list[int]:
        _, v = self._get(key, default if default is not None else [])
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            self.bad(key, f"expected a list of layer indices, got {v!r}")
        return v

    def str_list(self, key: str) -> list[str] | None:
        v = self.data.get(key)
        if v is None:
            return None
        if not isinstance(v, list) or not all(isinstance(i, str) for i in v):
            self.bad(key, f"expected a list of strings, got {v!r}")
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
