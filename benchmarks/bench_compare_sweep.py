"""Wall time of `godprof compare` over 10 specs and of 1,000-point `godprof sweep`s (a benchmark, not a test).

Each case runs the installed `godprof` console script in fresh processes (cold interpreter, warm OS file
cache), so the figure is what a user waits for, Python start-up included. Target: < 1 s per command.
Plots are left out (--no-text-plot, JSON output): matplotlib's own import and rendering take ~1-2 s.

    python benchmarks/bench_compare_sweep.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

SPECS_DIR = Path(__file__).resolve().parent.parent / "specs"
PREFERRED = [
    "llama-3-8b", "llama-3-70b", "mixtral-8x7b", "mixtral-8x22b", "mamba-2.8b", "jamba-v0.1", "deepseek-v3",
    "qwen3-30b-a3b", "gemma-2-9b", "falcon-mamba-7b", "mistral-7b", "mamba2-2.7b",
]  # fmt: skip


def ten_specs() -> list[str]:
    have = {p.stem for p in SPECS_DIR.glob("*.yaml")}
    names = [n for n in PREFERRED if n in have] + sorted(have - set(PREFERRED))
    names = names[:10]
    while len(names) < 10:  # a young catalogue: repeat what exists
        names += names[: 10 - len(names)]
    return names


def time_once(cmd: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh process; CPU (user + sys) is less disturbed by a busy machine."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ns = ap.parse_args()
    exe = shutil.which("godprof")
    base = [exe] if exe else [sys.executable, "-m", "godprof"]
    specs = ten_specs()
    cases: list[tuple[str, list[str]]] = [
        ("compare, 10 specs, table", ["compare", *specs, "--gpu", "h100"]),
        ("compare, 10 specs, json", ["compare", *specs, "--gpu", "h100", "--format", "json"]),
    ]
    for name in ("llama-3-70b", "jamba-v0.1", "mixtral-8x22b", "mamba-2.8b"):
        if (SPECS_DIR / f"{name}.yaml").exists():
            args = ["sweep", name, "--context", "1k..1M", "--points", "1000", "--format", "json"]
            cases.append((f"sweep {name}, 1,000 points", args))
    args = ["sweep", *specs[:4], "--context", "1k..1M", "--points", "1000", "--format", "json"]
    cases.append(("sweep 4 specs x 1,000 points", args))
    print(f"specs: {' '.join(specs)}")
    load = os.getloadavg()[0]
    print(f"load average {load:.2f} on {os.cpu_count()} CPUs (wall times stretch on a busy machine)")
    head = f"{'case':<34} {'wall med':>8} {'wall min':>8} {'CPU med':>8}"
    print(f"{head}   (s, {ns.runs} runs, fresh processes)")
    for label, args in cases:
        time_once(base + args)  # warm the file cache
        runs = [time_once(base + args) for _ in range(ns.runs)]
        wall = [w for w, _ in runs]
        cpu = [c for _, c in runs]
        flag = "" if statistics.median(wall) < 1.0 else "   <- over 1 s"
        med_w, min_w, med_c = statistics.median(wall), min(wall), statistics.median(cpu)
        print(f"{label:<34} {med_w:8.3f} {min_w:8.3f} {med_c:8.3f}{flag}")


if __name__ == "__main__":
    main()
