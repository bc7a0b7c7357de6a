"""``--kernels reference|fused``: which implementation each layer kind runs in a measurement.

``reference`` (the default) is godprof's pure-PyTorch build, the readable definition whose FLOPs and
memory the analytic model mirrors. ``fused`` asks every module that has a ``fused(device)`` hook (the
kinds whose stages flash-linear-attention, mamba_ssm or causal_conv1d implement; see their build
modules) to switch to those kernels. A hook returns what will run, or raises ``FusedUnavailable`` with
the reason (not CUDA, a package not installed), and that kind keeps the reference: a fallback is
recorded and noted, never an error, so one command line works on every machine. Nothing here names a
kind: labels are the modules' class names.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from godprof.build.fused import FusedUnavailable


def select_kernels(model: nn.Module, choice: str, dev: torch.device, notes: list[str]) -> dict[str, Any]:
    """Apply ``choice`` to every module with a ``fused`` hook; returns ``{"requested", "by_kind"}`` where
    by_kind maps a module class to ``{"implementation", "fell_back", "reason"}``, and adds a note
    naming the kinds that fell back."""
    by_kind: dict[str, dict[str, Any]] = {}
    for mod in model.modules():
        hook = getattr(mod, "fused", None)
        if not callable(hook):
            continue
        label = type(mod).__name__
        if choice != "fused":
            by_kind.setdefault(label, {"implementation": "reference", "fell_back": False, "reason": None})
            continue
        try:
            impl = hook(dev)
        except FusedUnavailable as e:
            by_kind[label] = {"implementation": "reference", "fell_back": True, "reason": str(e)}
            continue
        by_kind.setdefault(label, {"implementation": impl, "fell_back": False, "reason": None})
    fell = {k: v["reason"] for k, v in by_kind.items() if v["fell_back"]}
    if fell:
        reasons = sorted(set(fell.values()))
        notes.append(f"--kernels fused: {', '.join(sorted(fell))} ran the reference ({'; '.join(reasons)})")
    if choice == "fused" and not by_kind:
        notes.append("--kernels fused: no layer kind of this model has fused kernels; all ran the reference")
    return {"requested": choice, "by_kind": by_kind}
