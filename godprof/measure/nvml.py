"""Read-only NVML access (nvidia-ml-py's ``pynvml``): device memory, process memory, clocks, power, energy.

Every call only reads; no clock, power limit or mode is ever changed. Each reading returns None when
the driver does not support it (MIG slices, some virtualised GPUs) so a report can say "not
supported" instead of failing. The NVML device is matched to the torch device by UUID, which stays
right under ``CUDA_VISIBLE_DEVICES`` (torch index 0 may be NVML index 3); the index is the fallback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from godprof.measure.energy import MeterError


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


@dataclass(frozen=True)
class NvmlMemory:
    """NVML view of device memory in bytes: the whole device, and this process's share (CUDA context included)."""

    device_used_bytes: int
    device_total_bytes: int
    process_used_bytes: int | None  # None when NVML cannot attribute memory to this PID (containers)

    def to_dict(self) -> dict:
        return {
            "device_used_bytes": self.device_used_bytes,
            "device_total_bytes": self.device_total_bytes,
            "process_used_bytes": self.process_used_bytes,
        }


class Nvml:
    """One NVML device handle. Construct with ``Nvml.open(torch_index)``; None when NVML is unavailable."""

    def __init__(self, nv: Any, handle: Any, how: str):
        self.nv = nv
        self.handle = handle
        self.how = how  # "uuid" or "index": how the torch device was matched
        self.power_source: str | None = None  # "instant" (field value) or "average" once power was read

    @classmethod
    def open(cls, torch_index: int) -> tuple[Nvml | None, str | None]:
        """(device, None) or (None, why NVML is unavailable)."""
        try:
            import pynvml as nv
        except ImportError:
            return None, "nvidia-ml-py (pynvml) is not installed"
        try:
            nv.nvmlInit()
        except Exception as e:  # NVMLError_LibraryNotFound, driver not loaded, ...
            return None, f"NVML unavailable: {e}"
        try:
            import torch

            uuid = str(torch.cuda.get_device_properties(torch_index).uuid)
            if not uuid.startswith(("GPU-", "MIG-")):
                uuid = f"GPU-{uuid}"
            return cls(nv, nv.nvmlDeviceGetHandleByUUID(uuid), "uuid"), None
        except Exception:
            pass
        try:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            index = torch_index
            if visible:
                ids = [v.strip() for v in visible.split(",")]
                if torch_index < len(ids) and ids[torch_index].isdigit():
                    index = int(ids[torch_index])
            return cls(nv, nv.nvmlDeviceGetHandleByIndex(index), "index"), None
        except Exception as e:
            return None, f"NVML has no device for cuda:{torch_index}: {e}"

    def _try(self, fn: str, *args: Any) -> Any:
        try:
            return getattr(self.nv, fn)(*args)
        except Exception:
            return None

    # -- identity and clocks

    def info(self) -> dict:
        """Driver version, NVML device name, current SM / memory clocks (MHz), power limit (W)."""
        nv = self.nv
        limit = self._try("nvmlDeviceGetPowerManagementLimit", self.handle)
        cuda_drv = self._try("nvmlSystemGetCudaDriverVersion")
        return {
            "driver": _text(self._try("nvmlSystemGetDriverVersion") or "") or None,
            "cuda_driver": None if cuda_drv is None else f"{cuda_drv // 1000}.{cuda_drv % 1000 // 10}",
            "nvml_name": _text(self._try("nvmlDeviceGetName", self.handle) or "") or None,
            "sm_clock_mhz": self._try("nvmlDeviceGetClockInfo", self.handle, nv.NVML_CLOCK_SM),
            "memory_clock_mhz": self._try("nvmlDeviceGetClockInfo", self.handle, nv.NVML_CLOCK_MEM),
            "max_sm_clock_mhz": self._try("nvmlDeviceGetMaxClockInfo", self.handle, nv.NVML_CLOCK_SM),
            "power_limit_w": None if limit is None else limit / 1000,
            "matched_by": self.how,
            "power_source": self.power_source,
        }

    # -- memory

    def memory(self) -> NvmlMemory | None:
        mem = self._try("nvmlDeviceGetMemoryInfo", self.handle)
        if mem is None:
            return None
        procs = self._try("nvmlDeviceGetComputeRunningProcesses", self.handle) or []
        mine = [p for p in procs if getattr(p, "pid", None) == os.getpid()]
        used = getattr(mine[0], "usedGpuMemory", None) if mine else None
        return NvmlMemory(int(mem.used), int(mem.total), None if used is None else int(used))

    # -- energy and power (EnergyCounter / PowerMeter protocols)

    def read_mj(self) -> int:
        try:
            return int(self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception as e:
            raise MeterError(f"nvmlDeviceGetTotalEnergyConsumption: {e}") from None

    def read_mw(self) -> int:
        """Board power in milliwatts: the instant power field where the driver has it (``power_source``
        says which after ``probe``), else ``nvmlDeviceGetPowerUsage`` (a 1 s average on Ampere and newer)."""
        if self.power_source != "average":
            mw = self._instant_mw()
            if mw is not None:
                self.power_source = "instant"
                return mw
            self.power_source = "average"
        try:
            return int(self.nv.nvmlDeviceGetPowerUsage(self.handle))
        except Exception as e:
            raise MeterError(f"nvmlDeviceGetPowerUsage: {e}") from None

    def _instant_mw(self) -> int | None:
        """``nvmlDeviceGetFieldValues([NVML_FI_DEV_POWER_INSTANT])`` in milliwatts; None when unsupported."""
        nv = self.nv
        field = getattr(nv, "NVML_FI_DEV_POWER_INSTANT", None)
        if field is None or not hasattr(nv, "nvmlDeviceGetFieldValues"):
            return None
        try:
            (v,) = nv.nvmlDeviceGetFieldValues(self.handle, [field])
        except Exception:
            return None
        if getattr(v, "nvmlReturn", 1) != getattr(nv, "NVML_SUCCESS", 0):
            return None
        value = getattr(v, "value", None)
        mw = getattr(value, "uiVal", None)
        return None if mw is None else int(mw)

    def probe(self) -> tuple[Nvml | None, Nvml | None, list[str]]:
        """(energy counter, power meter, reasons) after one trial read of each: None where unsupported."""
        reasons = []
        counter = meter = None
        try:
            self.read_mj()
            counter = self
        except MeterError as e:
            reasons.append(str(e))
        try:
            self.read_mw()
            meter = self
        except MeterError as e:
            reasons.append(str(e))
        return counter, meter, reasons

    def close(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except Exception:
            pass
