"""One-call GPU validation of ``godprof measure``: everything the fidelity goals need, in <= 8 minutes on one
H100/H200, with pass/fail per goal.

Run it on the device machine from the repository root with the image's own python3 (torch, transformers
and nvidia-ml-py already there; nothing is installed or downloaded; godprof is imported from the
checkout)::

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/gpu_validate.py --out $OUT --budget 500

and on any machine, in seconds, on the CPU with tiny specs (what CI runs, tests/test_gpu_validate.py)::

    python benchmarks/gpu_validate.py --dry-run --out /tmp/validate

Each stage runs in its own subprocess with its own time limit (the smaller of its allowance and what is
left of ``--budget``), so a crash, an out-of-memory or a slow compile loses only that stage. Stages, in
order (``gpu_validate_stages.py``): env (versions, device, NVML capabilities: energy-counter tick
interval, average vs instant power, clock event reasons, whether NVML sees the process, CUDA context
bytes); ceilings (copy bandwidth, matrix-vector bandwidth at llama-3-8b's shapes, one layer's GEMVs as a
CUDA graph, a square GEMM); sdpa (which kernel each build shape gets); llama_b1 (llama-3-8b eager, batch
1 x 512, energy, FLOP counter); llama_b8 (batch 8 x 2048, eager); truncated (4 and 8 of 32 layers,
extrapolated); llama_compile (``--compile``, batch 1); moe (qwen1.5-moe-a2.7b); mamba (mamba-2.8b).

Writes to ``--out`` (default ``benchmarks/results/<gpu>-<date>/``): ``results.jsonl`` (one line per stage:
status, seconds, result), ``verdicts.json`` (pass/fail per goal, with the figures compared) and
``log.txt`` (each stage's stderr). Goals: peak VRAM within 2% of the estimate at batch 8 x 2048; TTFT
within 15% of the roofline (batch 8 x 2048); compiled TPOT within 10% of the roofline; compiled decode
bandwidth >= 80% of the measured copy bandwidth; decode energy from NVML's counter; no compilation inside
timing; truncated extrapolation within 5% of the full model (TPOT and TTFT); FLOP counter == analytic.
A goal whose figures are missing (a failed stage, no roofline for a device outside the GPU database)
reads ``pass: null`` with the reason. In a dry run the verdicts test the plumbing, not the hardware.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run_stage(name: str, dry: bool, result: Path) -> None:
    """Child process: run one stage and write its result as JSON."""
    sys.path[:0] = [str(ROOT), str(HERE)]
    from gpu_validate_stages import STAGES

    t0 = time.perf_counter()
    out = STAGES[name][0](dry)
    result.write_text(json.dumps({"result": out, "seconds": time.perf_counter() - t0}, default=str))


def spawn(name: str, dry: bool, limit_s: float, out: Path, log: Any) -> dict[str, Any]:
    """Run one stage in a subprocess (its own session, killed whole on timeout); its record."""
    result = out / f".{name}.json"
    result.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--result", str(result)]
    cmd += ["--dry-run"] if dry else []
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                         start_new_session=True)  # fmt: skip
    try:
        text, _ = p.communicate(timeout=limit_s)
        status = "ok" if p.returncode == 0 and result.exists() else f"error (exit {p.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        text, _ = p.communicate()
        status = f"timeout after {limit_s:.0f} s"
    seconds = time.perf_counter() - t0
    log.write(f"===== {name}: {status} in {seconds:.1f} s\n{text}\n")
    log.flush()
    rec: dict[str, Any] = {"stage": name, "status": status, "seconds": round(seconds, 2)}
    if status == "ok":
        rec["result"] = json.loads(result.read_text())["result"]
        result.unlink()
    else:
        rec["error_tail"] = text.strip().splitlines()[-3:] if text else []
    return rec


# --------------------------------------------------------------------------- verdicts


def _get(d: Any, *path: Any) -> Any:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _within(goal: str, estimate: Any, measured: Any, tol: float, what: str) -> dict[str, Any]:
    if estimate is None or measured in (None, 0):
        return {"goal": goal, "pass": None, "reason": f"no {what}"}
    err = (estimate - measured) / measured
    return {"goal": goal, "pass": abs(err) <= tol, "estimate": estimate, "measured": measured, "error": err,
            "tolerance": tol}  # fmt: skip


def verdicts(res: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pass/fail per fidelity goal from the stages' results (module docstring)."""
    b1, b8, comp = res.get("llama_b1"), res.get("llama_b8"), res.get("llama_compile")
    out: dict[str, dict[str, Any]] = {}
    out["peak_vram_b8"] = _within("peak VRAM within 2% of the estimate, batch 8 x 2048",
                                  _get(b8, "estimate", "memory", "total_bytes"),
                                  _get(b8, "measured", "peak_memory_bytes"), 0.02, "llama_b8 result")  # fmt: skip
    out["ttft_b8"] = _within("TTFT within 15% of the roofline, batch 8 x 2048", _get(b8, "roofline", "ttft_s"),
                             _get(b8, "measured", "ttft_s"), 0.15, "roofline TTFT (llama_b8 failed, or the "
                             "device is not in the GPU database)")  # fmt: skip
    out["tpot_compiled"] = _within("compiled TPOT within 10% of the roofline", _get(comp, "roofline", "tpot_s"),
                                   _get(comp, "measured", "tpot_s"), 0.10, "roofline TPOT (llama_compile failed, "
                                   "or the device is not in the GPU database)")  # fmt: skip
    copy = _get(res.get("ceilings"), "copy_bandwidth_bytes_per_s")
    bw = _get(comp, "measured", "achieved_bandwidth_bytes_per_s")
    out["compiled_bandwidth"] = (
        {"goal": "compiled decode >= 80% of copy bandwidth", "pass": None, "reason": "missing ceilings or compile"}
        if not copy or bw is None
        else {
            "goal": "compiled decode >= 80% of copy bandwidth",
            "pass": bw >= 0.8 * copy,
            "measured": bw,
            "copy_bandwidth": copy,
            "fraction": bw / copy,
        }  # fmt: skip
    )
    method = _get(b1, "measured", "energy", "decode", "method")
    on_gpu = _get(b1, "measured", "device", "type") == "cuda"
    out["energy_counter"] = {"goal": "decode energy from NVML's energy counter",
                             "pass": method == "nvml-energy-counter" if on_gpu else None, "method": method,
                             "reason": _get(b1, "measured", "energy", "decode", "reason")}  # fmt: skip
    v = _get(comp, "validate") or {}
    graphs = _get(comp, "config", "compiled", "graphs")
    at, end = v.get("graphs_at_timing"), v.get("graphs_at_end")
    out["no_compile_in_timing"] = {"goal": "no compilation inside timing (graphs after warm-up == at the end)",
                                   "pass": None if at is None or end is None else (at == end and bool(graphs)),
                                   "graphs": graphs, "graphs_at_timing": at, "graphs_at_end": end}  # fmt: skip
    if _get(comp, "compiled_while_timed"):  # godprof measure itself refused the timings
        out["no_compile_in_timing"].update({"pass": False, "reason": comp["compiled_while_timed"]})
    out["extrapolation"] = _extrapolation(res.get("truncated"), b1)
    out["flops_exact"] = _flops(res)
    return out


def _extrapolation(tr: Any, b1: Any) -> dict[str, Any]:
    goal = "truncated extrapolation within 5% of the full model (TPOT and TTFT, eager batch 1 x 512)"
    full_tpot, full_ttft = _get(b1, "measured", "tpot_s"), _get(b1, "measured", "ttft_s")
    if not tr or not full_tpot or not full_ttft:
        return {"goal": goal, "pass": None, "reason": "truncated or llama_b1 stage missing"}
    runs = {}
    for n, r in tr.items():
        x = r["extrapolated"]
        runs[n] = {
            "tpot_error": (x["tpot_s"] - full_tpot) / full_tpot,
            "ttft_error": (x["ttft_s"] - full_ttft) / full_ttft,
        }
    largest = runs[max(runs, key=int)]
    ok = abs(largest["tpot_error"]) <= 0.05 and abs(largest["ttft_error"]) <= 0.05
    return {"goal": goal, "pass": ok, "by_layers": runs, "judged_on_layers": max(runs, key=int)}


def _flops(res: dict[str, Any]) -> dict[str, Any]:
    goal = "FlopCounterMode matmul FLOPs == analytic (dense, MoE, SSM, truncated-extrapolated)"
    checks = {}
    for stage in ("llama_b1", "moe", "mamba"):
        f = _get(res.get(stage), "measured", "flops")
        if f is None:
            continue
        c = f["counters"][0]
        checks[stage] = {"counted": c["matmul"] if c["available"] else None, "analytic": f["analytic"]["matmul"],
                         "reason": c.get("reason")}  # fmt: skip
    for n, r in (res.get("truncated") or {}).items():
        x = r["extrapolated"].get("flops_forward")
        if x is not None:
            checks[f"truncated_{n}"] = {"counted": x["counted_extrapolated"], "analytic": x["analytic"]}
    if not checks:
        return {"goal": goal, "pass": None, "reason": "no FLOP counts"}
    return {"goal": goal, "pass": all(c["counted"] == c["analytic"] for c in checks.values()), "checks": checks}


# --------------------------------------------------------------------------- driver


def gpu_slug(dry: bool) -> str:
    """The device's name for the output folder, from NVML (the driver never initialises CUDA itself)."""
    if dry:
        return "cpu-dryrun"
    try:
        import pynvml

        pynvml.nvmlInit()
        name = str(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0)))
        pynvml.nvmlShutdown()
    except Exception:
        name = "gpu"
    name = name.lower().replace("nvidia", "")
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "gpu"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--out", type=Path, help="output folder (default benchmarks/results/<gpu>-<date>/)")
    ap.add_argument("--budget", type=float, default=500.0, help="seconds for all stages together (default 500)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny specs, seconds: checks the plumbing")
    ap.add_argument("--only", help="comma-separated stage names (default: all, in order)")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.stage:
        run_stage(a.stage, a.dry_run, a.result)
        return 0
    sys.path[:0] = [str(HERE)]
    from gpu_validate_stages import STAGES

    names = list(STAGES) if not a.only else [n.strip() for n in a.only.split(",")]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        ap.error(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    out = a.out or ROOT / "benchmarks" / "results" / f"{gpu_slug(a.dry_run)}-{dt.date.today().isoformat()}"
    out.mkdir(parents=True, exist_ok=True)
    t_end = time.perf_counter() + a.budget
    res: dict[str, dict[str, Any]] = {}
    with (out / "results.jsonl").open("w") as jl, (out / "log.txt").open("w") as log:
        for name in names:
            allowed = STAGES[name][2 if a.dry_run else 1]
            left = t_end - time.perf_counter()
            if left < 5:
                rec: dict[str, Any] = {"stage": name, "status": "skipped (budget spent)", "seconds": 0}
            else:
                rec = spawn(name, a.dry_run, min(allowed, left), out, log)
            print(f"{name:14s} {rec['status']} ({rec['seconds']:.1f} s)", flush=True)
            jl.write(json.dumps(rec, default=str) + "\n")
            jl.flush()
            if rec["status"] == "ok":
                res[name] = rec["result"]
    v = verdicts(res)
    doc = {"dry_run": a.dry_run, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "stages_ok": sorted(res), "verdicts": v}  # fmt: skip
    (out / "verdicts.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    for k, r in v.items():
        mark = {True: "PASS", False: "FAIL", None: "n/a "}[r["pass"]]
        print(f"{mark} {k}: {r['goal']}" + (f" ({r['reason']})" if r.get("reason") and r["pass"] is None else ""))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
