"""The GPU database: one YAML per GPU in ``godprof/data/gpus`` (package data), plus users' own files.

Each file is data with unit-bearing keys and the datasheet it came from::

    name: NVIDIA H100 SXM5 80GB
    vendor: nvidia
    aliases: [h100, h100-sxm5]
    device_names: ["H100 80GB HBM3"]     # text of torch.cuda.get_device_name(), for find_gpu_for_device
    source: https://...                   # the datasheet (required)
    memory_gib: 80                        # or memory_gb (decimal) or memory_bytes
    hbm_bandwidth_gb_per_s: 3350          # device memory, decimal GB/s (or hbm_bandwidth_bytes_per_s)
    peak_tflops: {bf16: 989.4, fp8: 1978.9, ...}   # DENSE tensor peaks; never the 2:4 sparsity figures
    tdp_w: 700
    interconnect: nvlink                  # nvlink | pcie | infinity-fabric
    interconnect_gb_per_s: 450            # per GPU, one direction
    measured:                             # optional: figures measured on a real card
      copy_bandwidth_gb_per_s: 2950       # device-to-device copy (read + write counted)
      matmul_tflops: {bf16: 720}
      note: godprof measure, 2026-11-20

When ``measured`` is present, the roofline (``godprof.analytic.roofline``) uses those figures instead
of datasheet x efficiency. Memory capacities are the nominal sizes (HBM and GDDR are built from
power-of-two chips, so "80GB" is 80 GiB); the driver keeps a few hundred MiB of it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from godprof.errors import NotFoundError, Problem, SpecError

PEAK_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4")
INTERCONNECTS = ("nvlink", "pcie", "infinity-fabric")
GIB = 1 << 30
GB = 10**9
TERA = 10**12

_ALLOWED_KEYS = {
    "name", "vendor", "aliases", "device_names", "source", "memory_gib", "memory_gb", "memory_bytes",
    "hbm_bandwidth_gb_per_s", "hbm_bandwidth_bytes_per_s", "peak_tflops", "tdp_w", "interconnect",
    "interconnect_gb_per_s", "measured", "notes",
}  # fmt: skip
_MEASURED_KEYS = {"copy_bandwidth_gb_per_s", "matmul_tflops", "note", "source"}


@dataclass(frozen=True)
class Measured:
    """Figures measured on a card (e.g. by ``godprof measure``): sustained rates, not datasheet peaks."""

    bandwidth_bytes_per_s: float | None = None
    flops_per_s: dict[str, float] = field(default_factory=dict)
    note: str | None = None


@dataclass(frozen=True)
class GPU:
    key: str  # file stem, e.g. "h100-sxm"
    name: str  # "NVIDIA H100 SXM5 80GB"
    aliases: tuple[str, ...]
    vendor: str
    memory_bytes: int
    hbm_bandwidth_bytes_per_s: float
    peak_flops_per_s: dict[str, float]  # dense peaks by dtype
    tdp_w: float
    interconnect: str
    interconnect_bytes_per_s: float  # per GPU, one direction
    source: str
    device_names: tuple[str, ...] = ()
    measured: Measured | None = None
    path: str | None = field(default=None, compare=False)

    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for matmuls in ``dtype``. int4 weights are dequantised and computed in bf16.

        A dtype the card has no tensor-core path for (fp8 on Ampere) raises NotFoundError.
        """
        d = {"int4": "bf16", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(dtype, dtype)
        if d not in self.peak_flops_per_s:
            have = ", ".join(self.peak_flops_per_s)
            raise NotFoundError(f"{self.name} has no {dtype} peak in the GPU database (it lists {have})")
        return self.peak_flops_per_s[d]

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB

    def to_dict(self) -> dict[str, Any]:
        """JSON record: bytes and bytes/s as integers, FLOP/s as floats."""
        d: dict[str, Any] = {
            "key": self.key,
            "name": self.name,
            "vendor": self.vendor,
            "aliases": list(self.aliases),
            "memory_bytes": self.memory_bytes,
            "hbm_bandwidth_bytes_per_s": int(self.hbm_bandwidth_bytes_per_s),
            "peak_flops_per_s": dict(self.peak_flops_per_s),
            "tdp_w": self.tdp_w,
            "interconnect": self.interconnect,
            "interconnect_bytes_per_s": int(self.interconnect_bytes_per_s),
            "source": self.source,
        }
        if self.measured is not None:
            m = self.measured
            d["measured"] = {
                "bandwidth_bytes_per_s": None if m.bandwidth_bytes_per_s is None else int(m.bandwidth_bytes_per_s),
                "flops_per_s": dict(m.flops_per_s),
                "note": m.note,
            }
        return d


# --------------------------------------------------------------------------- parsing


def _norm(name: str) -> str:
    """Lookup form of a name: lower case, spaces and underscores as dashes."""
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def _as_number(v: Any) -> Any:
    """YAML 1.1 reads '1.0e12' (no sign after e) as a string; accept such numeric strings."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


class _Reader:
    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []

    def err(self, key: str, message: str) -> None:
        self.problems.append(Problem(key, message))

    def number(self, d: dict, key: str, *, required: bool = True) -> float | None:
        if key not in d or d[key] is None:
            if required:
                self.err("", f"missing required key '{key}'")
            return None
        v = _as_number(d[key])
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            self.err(key, f"expected a positive number, got {v!r}")
            return None
        return float(v)

    def string(self, d: dict, key: str, *, required: bool = True) -> str | None:
        v = d.get(key)
        if v is None:
            if required:
                self.err("", f"missing required key '{key}'")
            return None
        if not isinstance(v, str) or not v.strip():
            self.err(key, f"expected a non-empty string, got {v!r}")
            return None
        return v

    def strings(self, d: dict, key: str) -> tuple[str, ...]:
        v = d.get(key) or []
        if not isinstance(v, list) or not all(isinstance(x, str | int) for x in v):
            self.err(key, f"expected a list of names, got {v!r}")
            return ()
        return tuple(str(x) for x in v)

    def tflops(self, v: Any, key: str) -> dict[str, float]:
        if not isinstance(v, dict) or not v:
            self.err(key, "expected a mapping of dtype -> dense TFLOP/s, e.g. {bf16: 989.4}")
            return {}
        out: dict[str, float] = {}
        for dt, x in v.items():
            if dt not in PEAK_DTYPES:
                near = difflib.get_close_matches(str(dt), PEAK_DTYPES, n=1)
                hint = f"; did you mean '{near[0]}'?" if near else f"; known: {', '.join(PEAK_DTYPES)}"
                self.err(f"{key}.{dt}", f"unknown dtype '{dt}'{hint}")
            elif isinstance(x := _as_number(x), bool) or not isinstance(x, int | float) or x <= 0:
                self.err(f"{key}.{dt}", f"expected a positive number of TFLOP/s, got {x!r}")
            else:
                out[dt] = float(x) * TERA
        return out


def _check_keys(r: _Reader, d: dict, allowed: set[str], prefix: str = "") -> None:
    for k in d:
        if k not in allowed:
            near = difflib.get_close_matches(str(k), sorted(allowed), n=1, cutoff=0.6)
            hint = f"; did you mean '{near[0]}'?" if near else f"; known keys: {', '.join(sorted(allowed))}"
            r.err(f"{prefix}{k}", f"unknown key '{k}'{hint}")


def parse_gpu(data: Any, key: str, source: str) -> GPU:
    """Validate one GPU document; every problem is reported at once (SpecError)."""
    r = _Reader(source)
    if not isinstance(data, dict):
        raise SpecError(source, [Problem("", "expected a mapping of GPU fields")])
    _check_keys(r, data, _ALLOWED_KEYS)
    name = r.string(data, "name") or key
    vendor = r.string(data, "vendor") or "unknown"
    src = r.string(data, "source")
    mem_keys = [k for k in ("memory_gib", "memory_gb", "memory_bytes") if k in data]
    memory = 0
    if len(mem_keys) != 1:
        r.err("", "give exactly one of memory_gib, memory_gb, memory_bytes")
    else:
        v = r.number(data, mem_keys[0])
        if v is not None:
            memory = int(round(v * {"memory_gib": GIB, "memory_gb": GB, "memory_bytes": 1}[mem_keys[0]]))
    bw_keys = [k for k in ("hbm_bandwidth_gb_per_s", "hbm_bandwidth_bytes_per_s") if k in data]
    bandwidth = 0.0
    if len(bw_keys) != 1:
        r.err("", "give exactly one of hbm_bandwidth_gb_per_s, hbm_bandwidth_bytes_per_s")
    else:
        v = r.number(data, bw_keys[0])
        if v is not None:
            bandwidth = v * (GB if bw_keys[0] == "hbm_bandwidth_gb_per_s" else 1)
    peaks = r.tflops(data.get("peak_tflops"), "peak_tflops")
    tdp = r.number(data, "tdp_w") or 0.0
    ic = r.string(data, "interconnect") or "pcie"
    if ic not in INTERCONNECTS:
        r.err("interconnect", f"must be one of {', '.join(INTERCONNECTS)}, got {ic!r}")
    ic_bw = (r.number(data, "interconnect_gb_per_s") or 0.0) * GB
    measured = None
    if data.get("measured") is not None:
        m = data["measured"]
        if not isinstance(m, dict):
            r.err("measured", "expected a mapping")
        else:
            _check_keys(r, m, _MEASURED_KEYS, "measured.")
            bw = r.number(m, "copy_bandwidth_gb_per_s", required=False)
            fl = r.tflops(m["matmul_tflops"], "measured.matmul_tflops") if "matmul_tflops" in m else {}
            measured = Measured(None if bw is None else bw * GB, fl, m.get("note") or m.get("source"))
    aliases = r.strings(data, "aliases")
    device_names = r.strings(data, "device_names")
    if r.problems:
        raise SpecError(source, r.problems)
    assert src is not None
    return GPU(
        key=key,
        name=name,
        aliases=tuple(_norm(a) for a in aliases),
        vendor=vendor,
        memory_bytes=memory,
        hbm_bandwidth_bytes_per_s=bandwidth,
        peak_flops_per_s=peaks,
        tdp_w=tdp,
        interconnect=ic,
        interconnect_bytes_per_s=ic_bw,
        source=src,
        device_names=device_names,
        measured=measured,
        path=source,
    )


def _load_text(text: str, key: str, source: str) -> GPU:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(source, [Problem("", f"not valid YAML: {e}".splitlines()[0])]) from None
    return parse_gpu(data, key, source)


@cache
def _bundled() -> tuple[GPU, ...]:
    folder = resources.files("godprof.data.gpus")
    out = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            key = entry.name[: -len(".yaml")]
            out.append(_load_text(entry.read_text(encoding="utf-8"), key, f"godprof/data/gpus/{entry.name}"))
    return tuple(out)


def load_gpu_file(path: str | Path) -> GPU:
    """One user GPU file; its key is the file stem."""
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"GPU file not found: {p}")
    return _load_text(p.read_text(encoding="utf-8"), _norm(p.stem), str(p))


def list_gpus(extra_files: Sequence[str | Path] = ()) -> list[GPU]:
    """Bundled GPUs plus users' files; a user file whose key matches a bundled GPU replaces it."""
    by_key = {g.key: g for g in _bundled()}
    for f in extra_files:
        g = load_gpu_file(f)
        by_key[g.key] = g
    return list(by_key.values())


def load_gpu(name: str, extra_files: Sequence[str | Path] = ()) -> GPU:
    """A GPU by key, alias or full name (case-insensitive; spaces and dashes alike).

    User files (``extra_files``) are searched first. An unknown name raises NotFoundError with the nearest
    keys and aliases; there is never a silent default.
    """
    gpus = list_gpus(extra_files)
    users = {_norm(Path(f).stem) for f in extra_files}
    q = _norm(name)
    # user files first, then exact keys, then aliases and full names
    ordered = sorted(gpus, key=lambda g: g.key not in users)
    for g in ordered:
        if q == g.key:
            return g
    for g in ordered:
        if q in g.aliases or q == _norm(g.name):
            return g
    names = [g.key for g in gpus] + [a for g in gpus for a in g.aliases]
    near = difflib.get_close_matches(q, names, n=4, cutoff=0.4)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    known = ", ".join(g.key for g in gpus)
    raise NotFoundError(f"unknown GPU {name!r}{hint}; `godprof gpus` lists them: {known}")


def find_gpu_for_device(device_name: str, extra_files: Sequence[str | Path] = ()) -> GPU | None:
    """The database entry for a ``torch.cuda.get_device_name()`` text such as 'NVIDIA H100 80GB HBM3'.

    Each entry's ``device_names`` are matched as whole words (so 'L4' does not match 'L40S'); the longest
    matching pattern wins. None when nothing matches (the caller decides what to do; no guessing).
    """
    best: tuple[int, GPU] | None = None
    for g in list_gpus(extra_files):
        for pat in g.device_names:
            rx = r"(?<![A-Za-z0-9])" + re.escape(pat) + r"(?![A-Za-z0-9])"
            if re.search(rx, device_name, flags=re.IGNORECASE) and (best is None or len(pat) > best[0]):
                best = (len(pat), g)
    return None if best is None else best[1]
