"""Serving workloads for capacity planning: what traffic a deployment must carry, and its SLOs.

A workload is data, kept apart from the model spec (the same spec serves many workloads). It is given
on the command line or as a YAML file, validated with the spec loader's checker so every bad value is
reported as ``file:line: key: message``::

    name: chat
    prompt_tokens: 1024        # tokens in each request's prompt
    output_tokens: 256         # tokens generated per sample
    concurrency: 64            # requests in flight at once ...
    # rate: 10                 # ... or a request rate (requests/s); not both
    samples_per_prompt: 1      # best-of-n: n samples share the prompt's KV cache
    slo:
      ttft: 1s                 # time to first token (number = seconds, or "500ms")
      tpot: 50ms               # time per output token
    dtype: bf16                # weight format (the --dtype option overrides)
    kv_dtype: fp8              # KV cache format (the --kv-dtype option overrides)
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from godprof.checker import MAX_SIZE, MAX_TOKENS, read_text
from godprof.errors import NotFoundError, SpecError
from godprof.spec import Checker, KeyPath, load_yaml

_TOP_KEYS = {
    "name", "description", "prompt_tokens", "output_tokens", "concurrency", "rate", "samples_per_prompt",
    "slo", "dtype", "kv_dtype",
}  # fmt: skip
_SLO_KEYS = {"ttft", "tpot"}

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(s|ms|us|µs|min)?\s*$", re.IGNORECASE)
_UNIT_S = {None: 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "min": 60.0}


class WorkloadError(SpecError):
    """A workload or swarm file that cannot be used; lists every problem with its line."""


def parse_duration_s(value: Any) -> float:
    """A duration in seconds from a number (seconds) or a string with a unit: '50ms', '1.5s', '200us'.

    Raises ValueError with a one-line message for anything else (negative, zero, unknown unit).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r} (examples: 0.05, 50ms, 1s)")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"not a duration: {value!r} (examples: 0.05, 50ms, 1s)")
        seconds = float(m.group(1)) * _UNIT_S[m.group(2).lower() if m.group(2) else None]
    if not seconds > 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be finite, got {value!r}")
    return seconds


@dataclass(frozen=True)
class ServingWorkload:
    """The traffic one deployment must carry.

    Exactly one of ``concurrency`` (requests in flight) and ``rate_per_s`` (request arrivals per second)
    sizes the deployment; with neither, the plan sizes for one request in flight and reports the
    concurrency a replica could hold. ``samples_per_prompt`` (best-of-n) decodes n sequences per request
    that share the prompt's KV cache. SLOs are upper bounds on time to first token and time per output
    token, in seconds.
    """

    prompt_tokens: int = 1024
    output_tokens: int = 256
    concurrency: int | None = None
    rate_per_s: float | None = None
    samples_per_prompt: int = 1
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    dtype: str | None = None
    kv_dtype: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        for key, most in (("prompt_tokens", MAX_TOKENS), ("output_tokens", MAX_TOKENS),
                          ("samples_per_prompt", MAX_SIZE), ("concurrency", MAX_SIZE)):  # fmt: skip
            v = getattr(self, key)
            if v is not None and not 1 <= v <= most:
                raise ValueError(f"{key} must be from 1 to {most:,}, got {v}")
        if self.rate_per_s is not None and not 0 < self.rate_per_s < math.inf:
            raise ValueError(f"rate must be a positive finite number, got {self.rate_per_s}")
        if self.concurrency is not None and self.rate_per_s is not None:
            raise ValueError("give either a concurrency or a request rate, not both")
        for key in ("slo_ttft_s", "slo_tpot_s"):
            v = getattr(self, key)
            if v is not None and not 0 < v < math.inf:
                raise ValueError(f"{key} must be a positive finite number of seconds, got {v}")

    @property
    def context_tokens(self) -> int:
        """Tokens a sequence holds at the end of generation: prompt + output."""
        return self.prompt_tokens + self.output_tokens

    def scaled(self, share: float) -> ServingWorkload:
        """This workload with ``share`` of its traffic (a swarm member's part): the rate is scaled, a
        concurrency is scaled and rounded up (a member with any traffic holds at least one request)."""
        from dataclasses import replace

        if self.rate_per_s is not None:
            return replace(self, rate_per_s=self.rate_per_s * share)
        if self.concurrency is not None:
            return replace(self, concurrency=max(1, math.ceil(self.concurrency * share - 1e-9)))
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["context_tokens"] = self.context_tokens
        return d


def _duration(c: Checker, d: dict, key: str, path: KeyPath) -> float | None:
    if d.get(key) is None:
        return None
    try:
        return parse_duration_s(d[key])
    except ValueError as e:
        c.err((*path, key), str(e))
        return None


def _dtype_name(c: Checker, d: dict, key: str) -> str | None:
    name = c.str_(d, key, ())
    if name is None:
        return None
    from godprof.dtypes import get_dtype

    try:
        return get_dtype(name).name
    except NotFoundError as e:
        c.err((key,), str(e))
        return None


def parse_workload(data: Any, source: str | None = None, lines: dict[KeyPath, int] | None = None) -> ServingWorkload:
    """Validate a workload document (already parsed YAML); raises WorkloadError listing every problem."""
    c = Checker(source, lines or {})
    d = c.mapping(data, ())
    if c.problems:
        raise WorkloadError(source, c.problems)
    c.keys(d, (), _TOP_KEYS, {"prompt_tokens", "output_tokens"})
    prompt = c.int_(d, "prompt_tokens", (), maximum=MAX_TOKENS)
    output = c.int_(d, "output_tokens", (), maximum=MAX_TOKENS)
    conc = c.opt_int(d, "concurrency", ())
    rate = c.float_(d, "rate", (), 0.0) if d.get("rate") is not None else None
    if rate == 0.0:
        rate = None
    if conc is not None and rate is not None:
        c.err(("rate",), "give either concurrency or rate (requests/s), not both")
    n = c.int_(d, "samples_per_prompt", (), 1)
    ttft = tpot = None
    if d.get("slo") is not None:
        sd = c.mapping(d["slo"], ("slo",))
        c.keys(sd, ("slo",), _SLO_KEYS, set())
        ttft = _duration(c, sd, "ttft", ("slo",))
        tpot = _duration(c, sd, "tpot", ("slo",))
    dtype = _dtype_name(c, d, "dtype")
    kv = _dtype_name(c, d, "kv_dtype")
    name = c.str_(d, "name", ())
    c.str_(d, "description", ())
    if c.problems:
        c.problems.sort(key=lambda p: p.line or 0)
        raise WorkloadError(source, c.problems)
    return ServingWorkload(
        prompt_tokens=prompt,
        output_tokens=output,
        concurrency=conc if rate is None else None,
        rate_per_s=rate,
        samples_per_prompt=n,
        slo_ttft_s=ttft,
        slo_tpot_s=tpot,
        dtype=dtype,
        kv_dtype=kv,
        name=name,
    )


def load_yaml_document(path: str | Path) -> tuple[Any, dict[KeyPath, int], str]:
    """Read a YAML file with the safe loader: (data, line table, source name). Bad YAML raises
    WorkloadError with the line; a missing file raises NotFoundError."""
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"no such file: {path}")
    data, lines = load_yaml(read_text(p, WorkloadError), str(p), WorkloadError)
    return data, lines, str(p)


def load_workload(path: str | Path) -> ServingWorkload:
    """Load and validate a workload YAML file (see the module docstring for the format)."""
    data, lines, source = load_yaml_document(path)
    return parse_workload(data, source, lines)
