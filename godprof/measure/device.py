"""The device side of a measurement: resolving ``--gpu`` / ``--device``, describing the device, timing
marks on its timeline, host RAM, and releasing memory afterwards."""

from __future__ import annotations

import gc
import os
import platform
import time
from typing import Any

import torch

from godprof.measure.config import NoDevice

# --------------------------------------------------------------------------- device


def resolve_device(device: str | None, gpu: int | None) -> torch.device:
    """``--gpu N`` -> cuda:N; ``--device cpu|cuda|cuda:N``; neither -> cuda:0 when CUDA exists.

    Raises NoDevice for a missing CUDA or an index out of range, ValueError for an unknown device.
    """
    if gpu is not None and device is not None and device != f"cuda:{gpu}":
        raise ValueError(f"--gpu {gpu} and --device {device} disagree; give one of them")
    if gpu is not None:
        if gpu < 0:
            raise ValueError(f"--gpu must be >= 0, got {gpu}")
        dev = torch.device("cuda", gpu)
    elif device is None:
        if not torch.cuda.is_available():
            raise NoDevice("no CUDA device is available; use --device cpu to measure on the CPU")
        dev = torch.device("cuda", 0)
    else:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"measure runs on cpu or cuda, not {dev.type}")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", 0)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NoDevice(f"{dev} requested but CUDA is not available (torch {torch.__version__}, "
                           f"built with CUDA {torch.version.cuda or 'none'})")  # fmt: skip
        n = torch.cuda.device_count()
        if dev.index >= n:
            raise NoDevice(f"no GPU {dev.index}: {n} CUDA device(s) visible (indices 0..{n - 1})")
    return dev


def device_info(dev: torch.device, nvml: Any | None, nvml_reason: str | None) -> dict[str, Any]:
    """Device name, driver, torch / CUDA versions, clocks (read only) and the GPU-database match."""
    info: dict[str, Any] = {
        "type": dev.type,
        "index": dev.index,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "host": platform.node(),
    }
    if dev.type == "cpu":
        info.update(
            name=platform.processor() or platform.machine() or "cpu",
            machine=platform.machine(),
            threads=torch.get_num_threads(),
            cpu_count=os.cpu_count(),
            gpu_db=None,
        )
        return info
    p = torch.cuda.get_device_properties(dev)
    info.update(
        name=torch.cuda.get_device_name(dev),
        capability=f"{p.major}.{p.minor}",
        multiprocessors=p.multi_processor_count,
        memory_bytes=int(p.total_memory),
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    )
    if nvml is not None:
        info.update(nvml.info())
    else:
        info["nvml"] = nvml_reason
    from godprof.gpus import find_gpu_for_device

    g = find_gpu_for_device(info["name"])
    info["gpu_db"] = None if g is None else g.key
    return info


# --------------------------------------------------------------------------- timing


class Marks:
    """Timestamps on the device timeline: CUDA events on CUDA, perf_counter on CPU."""

    def __init__(self, dev: torch.device):
        self.dev = dev
        self.cuda = dev.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.dev)

    def seconds(self, a: Any, b: Any) -> float:
        return a.elapsed_time(b) / 1e3 if self.cuda else b - a


def host_memory() -> tuple[int | None, int | None]:
    """(available, total) RAM in bytes from /proc/meminfo (Linux); (None, None) elsewhere."""
    try:
        info = dict(line.split(":", 1) for line in open("/proc/meminfo", encoding="ascii").read().splitlines())
        kib = {k: int(v.split()[0]) * 1024 for k, v in info.items() if k in ("MemAvailable", "MemTotal")}
        return kib.get("MemAvailable"), kib.get("MemTotal")
    except (OSError, ValueError):
        return None, None


def release(dev: torch.device) -> None:
    """Free what the measurement held: collect cycles, then return cached blocks to the driver."""
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
