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
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from godprof.checker import _show
from godprof.errors import NotFoundError, Problem, SpecError

PEAK_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4")
INTERCONNECTS = ("nvlink", "pcie", "infinity-fabric", "ici")  # ici: Google TPU inter-chip interconnect
GIB = 1 << 30
GB = 10**9
TERA = 10**12

_ALLOWED_KEYS = {
    "name", "vendor", "aliases", "device_names", "source", "memory_gib", "memory_gb", "memory_bytes",
    "hbm_bandwidth_gb_per_s", "hbm_bandwidth_bytes_per_s", "peak_tflops", "tdp_w", "interconnect",
    "interconnect_gb_per_s", "measured", "notes", "usd_per_hour", "usd_per_hour_source", "usd_per_hour_date",
    "runtime_overhead_mib", "efficiency",
}  # fmt: skip
_OVERHEAD_KEYS = {"cuda_context", "workspace", "comm_buffers", "source"}
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
    usd_per_hour: float | None = None  # a published on-demand price per GPU-hour (None: not sourced)
    usd_per_hour_source: str | None = None
    usd_per_hour_date: str | None = None
    # per GPU, bytes: cuda_context_bytes, workspace_bytes, comm_buffer_bytes and a source (None: the
    # defaults of godprof.analytic.inference_memory.RuntimeOverheads)
    runtime_overhead: dict[str, Any] | None = field(default=None, compare=False)
    # keys a user's file left out (tdp_w, interconnect_gb_per_s): stored as 0 and shown as unknown; a
    # command that needs one (plan: power, tensor-parallel links) refuses the card, naming the key
    omitted: tuple[str, ...] = field(default=(), compare=False)
    # the file's ``efficiency:`` overrides of godprof/data/efficiency.yaml (godprof.analytic.efficiency)
    efficiency: dict[str, Any] | None = field(default=None, compare=False)

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
            "tdp_w": None if "tdp_w" in self.omitted else self.tdp_w,
            "interconnect": self.interconnect,
            "interconnect_bytes_per_s": None
            if "interconnect_gb_per_s" in self.omitted
            else int(self.interconnect_bytes_per_s),
            "source": self.source,
        }
        if self.usd_per_hour is not None:
            d["usd_per_hour"] = self.usd_per_hour
            d["usd_per_hour_source"] = self.usd_per_hour_source
            d["usd_per_hour_date"] = self.usd_per_hour_date
        if self.runtime_overhead is not None:
            d["runtime_overhead"] = dict(self.runtime_overhead)
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
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < math.inf:
            self.err(key, f"expected a positive finite number, got {_show(v)}")
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
            elif isinstance(x := _as_number(x), bool) or not isinstance(x, int | float) or not 0 < x < math.inf:
                self.err(f"{key}.{dt}", f"expected a positive finite number of TFLOP/s, got {_show(x)}")
            else:
                out[dt] = float(x) * TERA
        return out


def _check_keys(r: _Reader, d: dict, allowed: set[str], prefix: str = "") -> None:
    for k in d:
        if k not in allowed:
            near = difflib.get_close_matches(str(k), sorted(allowed), n=1, cutoff=0.6)
            hint = f"; did you mean '{near[0]}'?" if near else f"; known keys: {', '.join(sorted(allowed))}"
            r.err(f"{prefix}{k}", f"unknown key '{k}'{hint}")


def parse_gpu(data: Any, key: str, source: str, user: bool = False) -> GPU:
    """Validate one GPU document; every problem is reported at once (SpecError).

    A user's file (``user``) needs only what the roofline uses: ``name``, memory, bandwidth and
    ``peak_tflops``. Its ``source`` defaults to the file, ``vendor`` to unknown, ``interconnect`` to pcie;
    ``tdp_w`` and ``interconnect_gb_per_s`` are recorded as omitted (``GPU.omitted``), never guessed."""
    r = _Reader(source)
    if not isinstance(data, dict):
        raise SpecError(source, [Problem("", "expected a mapping of GPU fields")])
    _check_keys(r, data, _ALLOWED_KEYS)
    name = r.string(data, "name") or key
    vendor = r.string(data, "vendor", required=not user) or "unknown"
    src = r.string(data, "source", required=not user) or (f"user file {source}" if user else None)
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
    unpublished = "tdp_w" in data and data["tdp_w"] is None  # a bundled file writes `tdp_w: null`: no published TDP
    omitted = tuple(k for k in ("tdp_w", "interconnect_gb_per_s")
                    if (user or (k == "tdp_w" and unpublished)) and data.get(k) is None)  # fmt: skip
    tdp = r.number(data, "tdp_w", required=not user and not unpublished) or 0.0
    ic = r.string(data, "interconnect", required=not user) or "pcie"
    if ic not in INTERCONNECTS:
        r.err("interconnect", f"must be one of {', '.join(INTERCONNECTS)}, got {ic!r}")
    ic_bw = (r.number(data, "interconnect_gb_per_s", required=not user) or 0.0) * GB
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
    price, price_src, price_date = _price(r, data)
    overhead = _overhead(r, data.get("runtime_overhead_mib"))
    eff = data.get("efficiency")
    if eff is not None:
        from godprof.analytic.efficiency import check

        for msg in check(eff):
            key, _, text = msg.partition(": ")
            r.err(key, text)
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
        usd_per_hour=price,
        usd_per_hour_source=price_src,
        usd_per_hour_date=price_date,
        runtime_overhead=overhead,
        omitted=omitted,
        efficiency=eff,
    )


def _price(r: _Reader, data: dict) -> tuple[float | None, str | None, str | None]:
    """``usd_per_hour`` with its required ``usd_per_hour_source`` and ``usd_per_hour_date``."""
    if data.get("usd_per_hour") is None:
        for k in ("usd_per_hour_source", "usd_per_hour_date"):
            if k in data:
                r.err(k, "given without usd_per_hour")
        return None, None, None
    price = r.number(data, "usd_per_hour")
    src = r.string(data, "usd_per_hour_source")
    date = data.get("usd_per_hour_date")
    if date is None:
        r.err("", "missing required key 'usd_per_hour_date' (when the price was published, e.g. 2025-06)")
    return price, src, None if date is None else str(date)


def _overhead(r: _Reader, v: Any) -> dict[str, Any] | None:
    """``runtime_overhead_mib: {cuda_context, workspace, comm_buffers, source}`` in MiB, as bytes."""
    if v is None:
        return None
    if not isinstance(v, dict):
        r.err("runtime_overhead_mib", "expected a mapping: {cuda_context: 768, workspace: 256, comm_buffers: 512}")
        return None
    _check_keys(r, v, _OVERHEAD_KEYS, "runtime_overhead_mib.")
    out: dict[str, Any] = {}
    for k, name in (("cuda_context", "cuda_context_bytes"), ("workspace", "workspace_bytes"),
                    ("comm_buffers", "comm_buffer_bytes")):  # fmt: skip
        x = _as_number(v.get(k))
        if isinstance(x, bool) or not isinstance(x, int | float) or x < 0:
            r.err(f"runtime_overhead_mib.{k}", f"expected a number of MiB >= 0, got {x!r}")
            continue
        out[name] = int(x * (1 << 20))
    out["source"] = str(v.get("source") or "the GPU file")
    return out


def _load_text(text: str, key: str, source: str, user: bool = False) -> GPU:
    """Bounded, duplicate-free YAML (``godprof.checker.load_yaml``), then the GPU's fields."""
    from godprof.checker import load_yaml

    data, _ = load_yaml(text, source)
    return parse_gpu(data, key, source, user)


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
    from godprof.checker import read_text

    return _load_text(read_text(p), _norm(p.stem), str(p), user=True)


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
    keys and aliases; there is never a silent default. An alias that also begins other cards' names with a
    different memory size (``a100``: 40 GB or 80 GB) is ambiguous: NotFoundError lists the candidates. One
    whose candidates share the memory size (``h100``: SXM or PCIe, both 80 GB) means the card it is an alias
    of, and every report names that card in full.
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
            rivals = [
                o for o in gpus if o.key != g.key and (o.key.startswith(q) or any(a.startswith(q) for a in o.aliases))
            ]
            if {o.memory_bytes for o in rivals} - {g.memory_bytes}:
                cands = ", ".join(f"{o.key} ({o.memory_bytes / GIB:.0f} GiB)" for o in [g, *rivals])
                raise NotFoundError(f"ambiguous GPU {name!r}: it could be {cands}; give one of these keys")
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
