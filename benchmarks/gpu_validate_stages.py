"""The stages of ``benchmarks/gpu_validate.py``; each runs in its own process and returns one JSON-able dict.

Every stage takes ``dry`` (CPU, tiny specs and sizes, seconds) and otherwise runs on cuda:0 at the sizes the
fidelity goals name. Nothing here changes a device setting; it only reads them.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import statistics
import time
from dataclasses import fields
from typing import Any

import torch

GPU_SPECS = {"dense": "llama-3-8b", "moe": "qwen1.5-moe-a2.7b", "ssm": "mamba-2.8b"}
DRY_SPECS = {"dense": "examples/tiny-dense.yaml", "moe": "examples/tiny-moe.yaml", "ssm": "examples/tiny-ssm.yaml"}


def _dev(dry: bool) -> torch.device:
    return torch.device("cpu") if dry else torch.device("cuda", 0)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _time(fn: Any, dev: torch.device, reps: int) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs after one untimed run (CUDA events on CUDA)."""
    fn()
    _sync(dev)
    out = []
    for _ in range(reps):
        if dev.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- env


def _nvml_probe(dry: bool) -> dict[str, Any]:
    """Energy-counter tick interval (read every 2 ms for 1.5 s), average vs instant power, clock event
    reasons, whether NVML lists this process, and NVML used memory."""
    try:
        import pynvml as nv

        nv.nvmlInit()
    except Exception as e:
        return {"available": False, "reason": f"{type(e).__name__}: {e}"}
    out: dict[str, Any] = {"available": True}
    h = nv.nvmlDeviceGetHandleByIndex(0)

    def attempt(key: str, fn: Any) -> None:
        try:
            out[key] = fn()
        except Exception as e:
            out[key] = f"unsupported: {type(e).__name__}: {e}"

    attempt("name", lambda: str(nv.nvmlDeviceGetName(h)))
    attempt("power_avg_mw", lambda: nv.nvmlDeviceGetPowerUsage(h))
    attempt("power_instant_mw", lambda: nv.nvmlDeviceGetFieldValues(h, [nv.NVML_FI_DEV_POWER_INSTANT])[0].value.uiVal)
    attempt("clock_event_reasons", lambda: int(nv.nvmlDeviceGetCurrentClocksEventReasons(h)))
    attempt("memory_used_bytes", lambda: int(nv.nvmlDeviceGetMemoryInfo(h).used))
    attempt("sees_this_pid", lambda: any(p.pid == os.getpid() for p in nv.nvmlDeviceGetComputeRunningProcesses(h)))

    def ticks() -> dict[str, Any]:
        t_end, last, changes = time.perf_counter() + (0.2 if dry else 1.5), None, []
        while time.perf_counter() < t_end:
            v = nv.nvmlDeviceGetTotalEnergyConsumption(h)
            if last is not None and v != last[1]:
                changes.append(time.perf_counter() - last[0])
                last = (time.perf_counter(), v)
            elif last is None:
                last = (time.perf_counter(), v)
            time.sleep(0.002)
        return {"ticks": len(changes), "median_interval_s": statistics.median(changes) if changes else None}

    attempt("energy_counter", ticks)
    nv.nvmlShutdown()
    return out


def stage_env(dry: bool) -> dict[str, Any]:
    dev = _dev(dry)
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": _version("transformers"),
        "nvidia-ml-py": _version("nvidia-ml-py"),
        "fvcore": _version("fvcore"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "device": str(dev),
    }
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        torch.empty(1, device=dev)  # a context, so NVML can see this process
        b = torch.backends.cuda
        out.update(
            name=torch.cuda.get_device_name(dev),
            capability=f"{p.major}.{p.minor}",
            memory_bytes=int(p.total_memory),
            sdpa={"flash": b.flash_sdp_enabled(), "efficient": b.mem_efficient_sdp_enabled(),
                  "cudnn": b.cudnn_sdp_enabled(), "math": b.math_sdp_enabled(),
                  "math_bf16_reduction": getattr(b, "fp16_bf16_reduction_math_sdp_allowed", lambda: None)()},
        )  # fmt: skip
    out["nvml"] = _nvml_probe(dry)
    if dev.type == "cuda" and isinstance(out["nvml"].get("memory_used_bytes"), int):
        out["context_bytes"] = out["nvml"]["memory_used_bytes"] - torch.cuda.memory_reserved(dev)
    return out


# --------------------------------------------------------------------------- ceilings


def stage_ceilings(dry: bool) -> dict[str, Any]:
    """Copy bandwidth (read + write bytes / time), matrix-vector bandwidth at llama-3-8b's shapes (weight
    bytes / time), one layer's 7 GEMVs replayed as a CUDA graph, and a square GEMM's FLOP/s."""
    dev = _dev(dry)
    dt = torch.float32 if dry else torch.bfloat16
    size = (32 << 20) if dry else (2 << 30)
    bufs = [torch.empty(size // 2, dtype=torch.uint8, device=dev) for _ in range(2)]  # source, destination
    t = _time(lambda: bufs[1].copy_(bufs[0]), dev, 3 if dry else 10)
    out: dict[str, Any] = {"copy_bandwidth_bytes_per_s": size / t, "copy_bytes": size}
    bufs.clear()
    scale = 32 if dry else 1
    shapes = {"gate_up": (4096, 14336), "kv": (4096, 1024), "down": (14336, 4096), "lm_head": (4096, 128256)}
    gemv = {}
    for name, (n_in, n_out) in shapes.items():
        w = torch.randn(n_out // scale, n_in // scale, dtype=dt, device=dev)
        x = torch.randn(1, n_in // scale, dtype=dt, device=dev)
        s = _time(lambda w=w, x=x: x @ w.T, dev, 5 if dry else 20)
        gemv[name] = {"seconds": s, "bandwidth_bytes_per_s": w.numel() * w.element_size() / s}
        del w, x
    out["gemv"] = gemv
    if dev.type == "cuda":  # q, k, v, o, gate, up, down of one layer, as one CUDA graph: the best decode can do
        layer = [(4096, 4096), (4096, 1024), (4096, 1024), (4096, 4096), (4096, 14336), (4096, 14336), (14336, 4096)]
        ws = [torch.randn(o, i, dtype=dt, device=dev) for i, o in layer]
        xs = [torch.randn(1, i, dtype=dt, device=dev) for i, _ in layer]
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            for x, w in zip(xs, ws, strict=True):
                x @ w.T
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for x, w in zip(xs, ws, strict=True):
                x @ w.T
        s = _time(graph.replay, dev, 50)
        out["layer_gemv_graph"] = {"seconds": s, "bandwidth_bytes_per_s": sum(w.numel() * 2 for w in ws) / s}
        del ws, xs, graph
    n = 256 if dry else 8192
    a = torch.randn(n, n, dtype=dt, device=dev)
    b = torch.randn(n, n, dtype=dt, device=dev)
    s = _time(lambda: a @ b, dev, 3 if dry else 10)
    out["gemm"] = {"n": n, "flops_per_s": 2 * n**3 / s}
    return out


# --------------------------------------------------------------------------- sdpa

# (name, batch, q heads, kv heads, q len, kv len, qk dim, v dim, causal, fp32)
SDPA_CASES = (
    ("llama_prefill_gqa", 1, 32, 8, 512, 512, 128, 128, True, False),
    ("llama_decode_gqa", 1, 32, 8, 1, 513, 128, 128, False, False),
    ("mla_absorbed_decode", 1, 128, 1, 1, 513, 576, 512, False, False),
    ("mla_prefill", 1, 128, 128, 512, 512, 192, 128, True, False),
    ("gqa_prefill_fp32", 1, 32, 8, 512, 512, 128, 128, True, True),
)
KERNEL_WORDS = (("flash", "flash"), ("efficient", "efficient"), ("fmha", "efficient"), ("cudnn", "cudnn"),
                ("_math", "math"), ("bmm", "math"), ("softmax", "math"))  # fmt: skip


def _kernel(names: list[str]) -> str:
    for word, kind in KERNEL_WORDS:
        if any(word in n.lower() for n in names):
            return kind
    return "unknown"


def stage_sdpa(dry: bool) -> dict[str, Any]:
    """Which SDPA kernel each build shape gets (profiler event names), its time and transient bytes."""
    from torch.nn.functional import scaled_dot_product_attention as sdpa
    from torch.profiler import ProfilerActivity, profile

    dev = _dev(dry)
    out = {}
    for name, b, hq, hk, sq, sk, dqk, dv, causal, fp32 in SDPA_CASES:
        if dry:
            hq, hk, sq, sk = max(1, hq // 16), max(1, hk // 16), min(sq, 32), min(sk, 33)
            hq = max(hq, hk)
        dt = torch.float32 if (fp32 or dry) else torch.bfloat16
        q = torch.randn(b, hq, sq, dqk, dtype=dt, device=dev)
        k = torch.randn(b, hk, sk, dqk, dtype=dt, device=dev)
        v = torch.randn(b, hk, sk, dv, dtype=dt, device=dev)

        def run(q=q, k=k, v=v, causal=causal, gqa=hq != hk) -> torch.Tensor:
            return sdpa(q, k, v, is_causal=causal and q.shape[2] > 1, enable_gqa=gqa)

        try:
            seconds = _time(run, dev, 5)
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
            with profile(activities=acts) as prof:
                run()
                _sync(dev)
            names = sorted({e.key for e in prof.key_averages()})
            transient = torch.cuda.max_memory_allocated(dev) - base if dev.type == "cuda" else None
            out[name] = {"kernel": _kernel([n for n in names if "attention" in n.lower() or "fmha" in n.lower()
                                            or "flash" in n.lower() or "bmm" in n or "softmax" in n]),
                         "seconds": seconds, "transient_bytes": transient,
                         "events": [n for n in names if not n.startswith("aten::empty")][:12]}  # fmt: skip
        except Exception as e:
            out[name] = {"kernel": "error", "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        del q, k, v
    return out


# --------------------------------------------------------------------------- measurements


def _config(**kw: Any) -> Any:
    """A MeasureConfig from the keys this godprof's MeasureConfig has (others are dropped and listed)."""
    from godprof.measure import MeasureConfig

    known = {f.name for f in fields(MeasureConfig)}
    return MeasureConfig(**{k: v for k, v in kw.items() if k in known})


def _eager_backend_compile() -> None:
    """Dry runs compile with dynamo's eager backend (tracing, guards and graph counts without inductor's
    C++ build, which takes minutes on a CPU)."""
    orig = torch.compile

    def compile_eager(model: Any = None, **kw: Any) -> Any:
        kw.pop("mode", None)
        kw.pop("options", None)
        kw["backend"] = "eager"
        return orig(model, **kw) if model is not None else orig(**kw)

    torch.compile = compile_eager


def _graphs() -> int:
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"].get("unique_graphs", 0))
    except Exception:
        return -1


def _measure(spec_name: str, dry: bool, compile: bool = False, **kw: Any) -> dict[str, Any]:
    from godprof.measure import measure
    from godprof.spec import load_spec

    if compile and dry:
        _eager_backend_compile()
    cfg = _config(compile=compile, fvcore=False, dtype="fp32" if dry else "bf16", **kw)
    seen: dict[str, int] = {}

    def progress(task: str, done: int, total: int) -> None:  # graphs when timing starts (after warm-up)
        if done >= 3 and "graphs_at_timing" not in seen:
            seen["graphs_at_timing"] = _graphs()

    m = measure(load_spec(spec_name), _dev(dry), cfg, progress)
    d = m.to_dict()
    d["validate"] = {"graphs_at_timing": seen.get("graphs_at_timing"), "graphs_at_end": _graphs(),
                     "config_dropped": sorted(set(kw) - {f.name for f in fields(type(cfg))})}  # fmt: skip
    return d


def _sizes(dry: bool, batch: int, seq: int, new: int, iters: int) -> dict[str, int]:
    if dry:
        return {"batch": min(batch, 2), "seq": min(seq, 32), "new_tokens": 2, "iters": 1, "warmup": 0}
    return {"batch": batch, "seq": seq, "new_tokens": new, "iters": iters, "warmup": 2}


def stage_llama_b1(dry: bool) -> dict[str, Any]:
    spec = (DRY_SPECS if dry else GPU_SPECS)["dense"]
    return _measure(spec, dry, energy=True, energy_min_s=2.0, flops=True, **_sizes(dry, 1, 512, 32, 5))


def stage_llama_b8(dry: bool) -> dict[str, Any]:
    spec = (DRY_SPECS if dry else GPU_SPECS)["dense"]
    return _measure(spec, dry, energy=False, flops=False, **_sizes(dry, 8, 2048, 16, 3))


def stage_truncated(dry: bool) -> dict[str, Any]:
    """The dense model cut to an eighth and a quarter of its layers (4 and 8 of llama-3-8b's 32), at
    llama_b1's workload, each extrapolated to full depth."""
    from godprof.measure.truncate import measure_truncated
    from godprof.spec import load_spec

    spec = load_spec((DRY_SPECS if dry else GPU_SPECS)["dense"])
    cfg = _config(energy=False, flops=True, fvcore=False, dtype="fp32" if dry else "bf16", **_sizes(dry, 1, 512, 32, 5))
    out = {}
    for n in sorted({max(1, spec.model.num_layers // 8), max(2, spec.model.num_layers // 4)}):
        t = measure_truncated(spec, n, _dev(dry), cfg)
        out[str(n)] = {"extrapolated": t.extrapolated, "measured_tpot_s": t.measured.tpot.median_s,
                       "measured_ttft_s": t.measured.ttft.median_s, "base_tpot_s": t.base.tpot.median_s}  # fmt: skip
    return out


def stage_llama_compile(dry: bool) -> dict[str, Any]:
    spec = (DRY_SPECS if dry else GPU_SPECS)["dense"]
    sizes = _sizes(dry, 1, 512, 32, 5)
    sizes["warmup"] = 1
    try:
        return _measure(spec, dry, compile=True, energy=True, energy_min_s=2.0, flops=False, **sizes)
    except Exception as e:  # CompiledWhileTimed (compilation inside timing) is a verdict, not a crash
        if type(e).__name__ != "CompiledWhileTimed":
            raise
        return {"compiled_while_timed": str(e), "validate": {"graphs_at_end": _graphs()}}


def stage_moe(dry: bool) -> dict[str, Any]:
    spec = (DRY_SPECS if dry else GPU_SPECS)["moe"]
    return _measure(spec, dry, energy=False, flops=True, **_sizes(dry, 1, 512, 32, 5))


def stage_mamba(dry: bool) -> dict[str, Any]:
    spec = (DRY_SPECS if dry else GPU_SPECS)["ssm"]
    return _measure(spec, dry, energy=False, flops=True, **_sizes(dry, 1, 512, 32, 5))


# name -> (function, seconds allowed on an H100/H200, seconds allowed in a dry run: generous, since a CPU
# shared with other work can be many times slower than an idle one)
STAGES = {
    "env": (stage_env, 30, 150),
    "ceilings": (stage_ceilings, 40, 150),
    "sdpa": (stage_sdpa, 30, 150),
    "llama_b1": (stage_llama_b1, 90, 150),
    "llama_b8": (stage_llama_b8, 75, 150),
    "truncated": (stage_truncated, 60, 150),
    "llama_compile": (stage_llama_compile, 300, 150),
    "moe": (stage_moe, 75, 150),
    "mamba": (stage_mamba, 60, 150),
}
