"""Fit the gemm efficiency parameters of godprof's per-operation model to measurements, report the
residuals, and write a YAML fragment to paste into godprof/data/efficiency.yaml or a GPU file.

    python benchmarks/calibrate.py --published benchmarks/published_kernels.yaml
    python benchmarks/calibrate.py --results benchmarks/results/<gpu>-<date>/results.jsonl -o fragment.yaml

Inputs (either or both):
- ``--results``: the ``results.jsonl`` that benchmarks/gpu_validate.py writes (one JSON record per stage:
  ``{"stage", "status", "seconds", "result"}``). The ``env`` stage names the device (its GPU database
  entry gives the datasheet peaks; ``--gpu`` overrides); the ``ceilings`` stage gives GEMV points (M = 1,
  bf16 weights, ``seconds`` and ``bandwidth_bytes_per_s`` per shape), one layer's 7 GEMVs as a CUDA
  graph and a square GEMM. Stages that ran ``godprof measure`` (``llama_b1``, ``moe``, ...) are not fitted:
  their measured TTFT/TPOT are set beside godprof's bound and expected time as end-to-end residuals.
- ``--published``: a file of published kernel figures (benchmarks/published_kernels.yaml's format).

Model (``godprof.analytic.efficiency.GemmEfficiency``): ``t = kernels x fixed + max(F / (peak x c(M)),
B / (bandwidth x b))`` with ``c(M) = compute_max x M / (M + m_half)``. The four parameters minimise the
sum of squared log residuals (Nelder-Mead on unconstrained transforms, so the fractions stay in (0, 1)).
Pure Python; needs no GPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GEMV_SHAPES = {"gate_up": (4096, 14336), "kv": (4096, 1024), "down": (14336, 4096), "lm_head": (4096, 128256)}
MEASURE_STAGES = {"llama_b1", "llama_b8", "llama_compile", "moe", "mamba"}


@dataclass(frozen=True)
class Point:
    """One measured kernel: its FLOPs and bytes, M (tokens), kernels launched, the card's peaks, seconds."""

    label: str
    flops: float
    nbytes: float
    m: float
    kernels: int
    peak_flops: float
    bandwidth: float
    seconds: float


def model_s(theta: tuple[float, float, float, float], p: Point) -> float:
    fixed, cmax, mh, bw = theta
    c = p.flops / (p.peak_flops * cmax * p.m / (p.m + mh)) if p.flops > 0 else 0.0
    return p.kernels * fixed + max(c, p.nbytes / (p.bandwidth * bw))


def _unpack(x: list[float]) -> tuple[float, float, float, float]:
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    return (math.exp(x[0]), sig(x[1]), math.exp(x[2]), sig(x[3]))


def loss(x: list[float], pts: list[Point]) -> float:
    th = _unpack(x)
    return sum(math.log(model_s(th, p) / p.seconds) ** 2 for p in pts)


def nelder_mead(f: Any, x0: list[float], iters: int = 4000, step: float = 0.5) -> list[float]:
    """Minimise ``f`` from ``x0`` (the textbook simplex method: reflect, expand, contract, shrink)."""
    n = len(x0)
    simplex = [list(x0)] + [[x0[j] + (step if j == i else 0.0) for j in range(n)] for i in range(n)]
    vals = [f(s) for s in simplex]
    for _ in range(iters):
        order = sorted(range(n + 1), key=lambda i: vals[i])
        simplex, vals = [simplex[i] for i in order], [vals[i] for i in order]
        if abs(vals[-1] - vals[0]) < 1e-12:
            break
        centroid = [sum(s[j] for s in simplex[:-1]) / n for j in range(n)]
        worst = simplex[-1]
        refl = [c + (c - w) for c, w in zip(centroid, worst, strict=True)]
        fr = f(refl)
        if fr < vals[0]:
            exp = [c + 2 * (c - w) for c, w in zip(centroid, worst, strict=True)]
            fe = f(exp)
            simplex[-1], vals[-1] = (exp, fe) if fe < fr else (refl, fr)
        elif fr < vals[-2]:
            simplex[-1], vals[-1] = refl, fr
        else:
            con = [c + 0.5 * (w - c) for c, w in zip(centroid, worst, strict=True)]
            fc = f(con)
            if fc < vals[-1]:
                simplex[-1], vals[-1] = con, fc
            else:
                best = simplex[0]
                simplex = [best] + [[b + 0.5 * (s - b) for b, s in zip(best, sj, strict=True)] for sj in simplex[1:]]
                vals = [vals[0]] + [f(s) for s in simplex[1:]]
    return simplex[min(range(n + 1), key=lambda i: vals[i])]


PARAMS = ("kernel_fixed_us", "compute_max", "m_half_tokens", "bandwidth")


def _transform(name: str, v: float) -> float:
    """A parameter's value in the unconstrained space ``_unpack`` maps back from."""
    if name == "kernel_fixed_us":
        return math.log(v * 1e-6)
    if name == "m_half_tokens":
        return math.log(v)
    v = min(max(v, 1e-6), 1 - 1e-9)
    return math.log(v / (1 - v))


def fit(pts: list[Point], fixed: dict[str, float] | None = None) -> tuple[float, float, float, float]:
    """The four gemm parameters (fixed_s, compute_max, m_half_tokens, bandwidth) that fit ``pts`` best;
    ``fixed`` holds some at given values (what the points cannot identify, e.g. bandwidth when no point is
    memory-bound)."""
    fixed = fixed or {}
    free = [i for i, n in enumerate(PARAMS) if n not in fixed]
    if len(pts) < len(free):
        raise SystemExit(f"calibrate: {len(pts)} points; at least {len(free)} are needed to fit {len(free)} parameters")
    base = [_transform(n, fixed[n]) if n in fixed else 0.0 for n in PARAMS]

    def full(x: list[float]) -> list[float]:
        out = list(base)
        for i, v in zip(free, x, strict=True):
            out[i] = v
        return out

    grid = {0: (math.log(2e-6), math.log(8e-6)), 1: (0.5, 1.5), 2: (math.log(16), math.log(256)), 3: (0.5, 1.5)}
    starts: list[list[float]] = [[]]
    for i in free:
        starts = [s + [v] for s in starts for v in grid[i]]
    f = lambda x: loss(full(x), pts)  # noqa: E731
    best = min((nelder_mead(f, s) for s in starts), key=f)
    return _unpack(full(best))


# --------------------------------------------------------------------------- inputs


def _gpu(name: str) -> Any:
    from godprof.gpus import load_gpu

    return load_gpu(name)


def published_points(path: Path) -> list[Point]:
    doc = yaml.safe_load(path.read_text())
    out = []
    for s in doc["sets"]:
        g = _gpu(s["gpu"])
        peak = g.peak_flops(s["dtype"])
        e, eo = s["bytes_per_element"], s.get("out_bytes_per_element", s["bytes_per_element"])
        for b, m, n, k, fps in ((*row[:4], float(row[4])) for row in s["points"]):
            flops = 2.0 * b * m * n * k
            nbytes = b * ((m * k + k * n) * e + m * n * eo)
            out.append(Point(f"{s['name']} b{b} {m}x{n}x{k}", flops, nbytes, m, 1, peak, g.hbm_bandwidth_bytes_per_s,
                             flops / fps))  # fmt: skip
    return out


def read_results(path: Path) -> dict[str, Any]:
    """Stage name -> result of the records that ran ok."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec.get("status") == "ok" and isinstance(rec.get("result"), dict):
                out[rec["stage"]] = rec["result"]
    return out


def results_gpu(res: dict[str, Any], override: str | None) -> Any:
    from godprof.gpus import find_gpu_for_device

    if override:
        return _gpu(override)
    name = res.get("env", {}).get("name")
    g = find_gpu_for_device(name) if name else None
    if g is None:
        raise SystemExit(f"calibrate: device {name!r} is not in the GPU database; pass --gpu NAME")
    return g


def results_points(res: dict[str, Any], g: Any) -> list[Point]:
    c = res.get("ceilings")
    if not c:
        return []
    peak, bw = g.peak_flops("bf16"), g.hbm_bandwidth_bytes_per_s
    out = []
    for name, r in c.get("gemv", {}).items():
        nbytes = r["bandwidth_bytes_per_s"] * r["seconds"]  # bf16 weights: 2 bytes, 2 FLOPs each
        out.append(Point(f"gemv {name}", nbytes, nbytes, 1, 1, peak, bw, r["seconds"]))
    if "layer_gemv_graph" in c:
        r = c["layer_gemv_graph"]
        nbytes = r["bandwidth_bytes_per_s"] * r["seconds"]
        out.append(Point("layer of 7 GEMVs (CUDA graph)", nbytes, nbytes, 1, 7, peak, bw, r["seconds"]))
    if "gemm" in c:
        n = c["gemm"]["n"]
        flops = 2.0 * n**3
        out.append(Point(f"gemm {n}^3", flops, 3 * 2 * n * n, n, 1, peak, bw, flops / c["gemm"]["flops_per_s"]))
    return out


def end_to_end(res: dict[str, Any], g: Any) -> list[dict[str, Any]]:
    """Measured TTFT/TPOT of the measure stages beside godprof's bound and expected time on ``g``."""
    from godprof.analytic import roofline as R
    from godprof.analytic.params import count_params
    from godprof.spec import load_spec

    rows = []
    for stage in sorted(MEASURE_STAGES & set(res)):
        d = res[stage]
        try:
            spec = load_spec(d["estimate"]["spec"]["name"])
            cfg, meas = d["config"], d["measured"]
        except (KeyError, TypeError, Exception):  # a record from another schema: nothing to compare
            continue
        c = count_params(spec)
        b, s, dtype = cfg["batch"], cfg["seq"], cfg["dtype"]
        ctx = cfg.get("decode_context") or s
        for phase, step, got in (("ttft", R.prefill_step(spec, c, g, b, s, dtype), meas.get("ttft_s")),
                                 ("tpot", R.decode_step(spec, c, g, b, ctx, dtype), meas.get("tpot_s"))):  # fmt: skip
            if got:
                rows.append({"stage": stage, "phase": phase, "measured_s": got, "bound_s": step.bound_s,
                             "expected_s": step.expected_s, "expected_over_measured": step.expected_s / got,
                             "bound_beaten": got < step.bound_s})  # fmt: skip
    return rows


# --------------------------------------------------------------------------- output


def fragment(theta: tuple[float, float, float, float], source: str) -> str:
    fixed, cmax, mh, bw = theta
    doc = {"efficiency": {"gemm": {"compute_max": round(cmax, 3), "m_half_tokens": round(mh, 1),
                                   "bandwidth": round(bw, 3), "kernel_fixed_us": round(fixed * 1e6, 2),
                                   "source": source}}}  # fmt: skip
    return yaml.safe_dump(doc, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, help="gpu_validate.py's results.jsonl")
    ap.add_argument("--published", type=Path, help="published kernel figures (published_kernels.yaml format)")
    ap.add_argument("--gpu", help="GPU database name for --results (default: the env stage's device)")
    ap.add_argument("-o", "--out", type=Path, help="write the YAML fragment here (default: stdout)")
    ap.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"hold a parameter ({', '.join(PARAMS)}) at a value instead of fitting it",
    )
    ap.add_argument("--json", type=Path, help="also write parameters and residuals as JSON here")
    a = ap.parse_args(argv)
    if not a.results and not a.published:
        ap.error("give --results, --published or both")
    pts: list[Point] = []
    inputs, e2e = [], []
    if a.published:
        pts += published_points(a.published)
        inputs.append(a.published.name)
    if a.results:
        res = read_results(a.results)
        g = results_gpu(res, a.gpu)
        got = results_points(res, g)
        pts += got
        inputs.append(f"{a.results} ({g.name})")
        e2e = end_to_end(res, g)
        if not got and not a.published:
            raise SystemExit(f"calibrate: {a.results} has no ok 'ceilings' stage to fit")
    fixed = {}
    for item in a.fix:
        name, _, value = item.partition("=")
        if name not in PARAMS:
            ap.error(f"--fix {item}: unknown parameter (one of {', '.join(PARAMS)})")
        fixed[name] = float(value)
    theta = fit(pts, fixed)
    resid = [(p.label, p.seconds, model_s(theta, p)) for p in pts]
    rms = math.sqrt(sum(math.log(m / s) ** 2 for _, s, m in resid) / len(resid))
    worst = max(resid, key=lambda r: abs(math.log(r[2] / r[1])))
    print(f"fitted {len(pts)} points: kernel_fixed {theta[0] * 1e6:.2f} us, compute_max {theta[1]:.3f}, "
          f"m_half {theta[2]:.1f} tokens, bandwidth {theta[3]:.3f}", file=sys.stderr)  # fmt: skip
    print(f"residuals (model / measured): rms {100 * (math.exp(rms) - 1):.1f}%, worst {worst[0]} "
          f"{worst[2] / worst[1]:.2f}x", file=sys.stderr)  # fmt: skip
    for label, s, m in resid:
        print(f"  {label:42s} measured {s * 1e6:9.1f} us  model {m * 1e6:9.1f} us  {m / s:5.2f}x", file=sys.stderr)
    for r in e2e:
        print(f"  end-to-end {r['stage']} {r['phase']}: measured {r['measured_s'] * 1e3:.3f} ms, bound "
              f"{r['bound_s'] * 1e3:.3f} ms, expected {r['expected_s'] * 1e3:.3f} ms"
              f"{'  BOUND BEATEN' if r['bound_beaten'] else ''}", file=sys.stderr)  # fmt: skip
    held = "".join(f", {k} held at {v:g}" for k, v in fixed.items())
    source = (f"benchmarks/calibrate.py on {', '.join(inputs)}, {dt.date.today().isoformat()}: {len(pts)} points, "
              f"rms residual {100 * (math.exp(rms) - 1):.1f}%{held}")  # fmt: skip
    text = fragment(theta, source)
    if a.out:
        a.out.write_text(text)
    else:
        sys.stdout.write(text)
    if a.json:
        a.json.write_text(json.dumps({"theta": {"kernel_fixed_s": theta[0], "compute_max": theta[1],
            "m_half_tokens": theta[2], "bandwidth": theta[3]}, "rms_log_residual": rms,
            "residuals": [{"label": lab, "measured_s": s, "model_s": m} for lab, s, m in resid],
            "end_to_end": e2e}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
