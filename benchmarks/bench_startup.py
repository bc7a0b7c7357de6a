"""Cold-start wall time of `godprof estimate` (a benchmark, not a test).

Runs the installed `godprof` console script in fresh processes (each one a cold interpreter; the OS file
cache is warm, as it is for a user running the command twice) and prints the median and spread.
The target is <= 0.25 s on the project's 2-core machines.

    python benchmarks/bench_startup.py [--runs 21] [-- estimate llama-3-8b --format json]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def time_once(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("args", nargs="*", default=[])
    ns = ap.parse_args()
    exe = shutil.which("godprof")
    base = [exe] if exe else [sys.executable, "-m", "godprof"]
    cases = (
        [ns.args]
        if ns.args
        else [
            ["estimate", "llama-3-8b"],
            ["estimate", "llama-3-8b", "--format", "json"],
            ["estimate", "jamba-v0.1", "--seq", "8k"],
        ]
    )
    print(f"{'command':45} {'median':>8} {'p10':>8} {'p90':>8}  ({ns.runs} runs, {' '.join(base)})")
    for args in cases:
        cmd = base + args
        time_once(cmd)  # warm the file cache and bytecode
        times = sorted(time_once(cmd) for _ in range(ns.runs))
        p10, p90 = times[len(times) // 10], times[(len(times) * 9) // 10]
        print(f"{' '.join(args):45} {statistics.median(times):8.3f} {p10:8.3f} {p90:8.3f}")


if __name__ == "__main__":
    main()
