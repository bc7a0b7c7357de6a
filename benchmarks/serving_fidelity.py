"""Serving fidelity: godprof beside published measurements and aiconfigurator 0.12 (a benchmark, not a test).

References, committed under ``benchmarks/data`` so this runs offline and without aiconfigurator:
``published_serving.yaml`` (MLPerf Inference v5.0 Llama-2-70B, NVIDIA closed division; TensorRT-LLM's
performance overview; vLLM / SGLang on DeepSeek-R1: each with its URL and setup) and
``aiconfigurator_0.12.json`` (aiconfigurator's static-mode prefill and decode-step figures, measured
database and speed of light, over dense, MoE and MLA models x batch 1-256 x context 1k-128k on H100/H200;
``--refresh-aiconfigurator`` rebuilds it with the Python of a venv holding ``aiconfigurator==0.12.0``).

godprof's figures come from its Python API, looked up at run time (a figure the API in place cannot give
reads "n/a"). A published setup: the serving plan (``plan.serving.evaluate``) at the published layout,
offline at the largest batch memory, SLOs and the engine's batch cap allow, server at the largest batch
meeting the SLOs, else at the published concurrency. A grid point: the per-operation model
(``roofline.prefill_step`` / ``decode_step``, expected and bound; else the flat roofline) of one
tensor-parallel rank (``tensor_parallel.rank_spec``; kinds it cannot split are divided by tp) plus its
all-reduces (``analytic.efficiency``); expert-parallel all-to-all is left out. Speed of light (sol) of a
published setup: the roofline at 100% of the datasheet, the replica's GPUs as one ideal GPU: TTFT >= one
request's prefill, TPOT >= a batch-1 decode step, throughput <= the batch godprof's memory model holds
over one decode step plus the prefills it absorbs (beaten: the bound is not one, or the engine held more).

Targets (issue 11): throughput and TPOT within 15%, TTFT within 25% of the published measurements;
decode within 15% of aiconfigurator on dense and MoE models; the speed-of-light bound never beaten.

    python benchmarks/serving_fidelity.py                  # table; writes results/serving-fidelity/<date>.*
    /work/aic-venv/bin/python benchmarks/serving_fidelity.py --refresh-aiconfigurator
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent)]  # the grid module beside this script
from aiconfigurator_grid import AIC_FILE, AIC_MODELS, SHORT_SPEC, refresh_aiconfigurator  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
PUBLISHED = DATA / "published_serving.yaml"
RESULTS = HERE / "results" / "serving-fidelity"
TARGETS = {"throughput": 0.15, "tpot": 0.15, "ttft": 0.25, "decode": 0.15}  # relative error allowed
NA = "n/a"


def _try(f: Any) -> Any:
    """f(), or None when the API in place cannot give it (or gives a non-finite number)."""
    try:
        v = f()
    except Exception:  # noqa: BLE001 - the API is moving under this script: a missing figure reads n/a
        return None
    return None if isinstance(v, float) and not math.isfinite(v) else v


class Godprof:
    """godprof's API, imported lazily; every figure is None when the API in place cannot give it."""

    def __init__(self) -> None:
        from godprof.analytic import roofline as R
        from godprof.analytic.params import count_params
        from godprof.gpus import load_gpu
        from godprof.spec import load_spec

        self.R, self.count, self.gpu, self._load = R, count_params, load_gpu, load_spec
        self.sol_eff = R.Efficiency(1.0, 1.0)
        self._cache: dict[Any, Any] = {}

    def model(self, name: str, tp: int = 1) -> tuple[Any, Any, int]:
        """(spec, counts, divisor): one tensor-parallel rank's spec when godprof can split it (divisor 1),
        else the whole spec with the divisor tp (an ideal split)."""
        if (name, tp) not in self._cache:
            local = DATA / f"{name}.yaml"
            spec, div = self._load(str(local) if local.exists() else name), tp
            if tp > 1:
                rank = _try(lambda: _rank_spec(spec, tp))
                spec, div = (rank, 1) if rank is not None else (spec, tp)
            self._cache[(name, tp)] = (spec, self.count(spec), div)
        return self._cache[(name, tp)]

    def _phase(self, phase: str, s: Any, c: Any, g: Any, args: tuple, dtype: str, kv: str | None) -> tuple:
        """(expected, bound) seconds of a prefill or decode step on one GPU."""
        R = self.R
        if hasattr(R, f"{phase}_step"):  # the per-operation model: StepTime(bound_s, expected_s)
            st = _try(lambda: getattr(R, f"{phase}_step")(s, c, g, *args, dtype, kv))
            return (st.expected_s, st.bound_s) if st is not None else (None, None)
        f = R.prefill_time_s if phase == "prefill" else R.decode_step_time_s
        return (_try(lambda: f(s, c, g, *args, dtype, kv_dtype=kv)),
                _try(lambda: f(s, c, g, *args, dtype, kv_dtype=kv, eff=self.sol_eff)))  # fmt: skip

    def step(self, spec: str, gpu: str, tp: int, batch: int, isl: int, osl: int, dtype: str,
             kv: str | None) -> dict[str, float | None]:  # fmt: skip
        """Prefill of batch x isl and the mean decode step (context isl + osl/2), expected and bound, on one
        tensor-parallel rank, plus the rank's all-reduces of the tokens' activations."""
        s, c, div = self.model(spec, tp)
        full, g, out = self.model(spec)[0], self.gpu(gpu), {}
        for phase, tokens, args in (("prefill", batch * isl, (batch, isl)), ("decode", batch, (batch, isl + osl // 2))):
            exp, sol = self._phase(phase, s, c, g, args, dtype, kv)
            ar_exp, ar_sol = _allreduce(full, g, tp, tokens)
            out[f"{phase}_s"] = exp / div + ar_exp if exp is not None and ar_exp is not None else None
            out[f"{phase}_sol_s"] = sol / div + ar_sol if sol is not None and ar_sol is not None else None
        return out

    def serving(self, e: dict[str, Any]) -> dict[str, Any]:
        """The serving plan's throughput (output tokens/s, all replicas), TTFT and TPOT for a published setup
        at its layout (see the module docstring for the batch it runs at)."""
        from godprof.plan import serving as S
        from godprof.plan.workload import ServingWorkload

        spec, counts, _ = self.model(e["spec"])
        gpu, lay = self.gpu(e["gpu"]), e["layout"]
        tp, pp, reps = lay.get("tp", 1), lay.get("pp", 1), lay.get("replicas", 1)
        fields = set(getattr(S.ServeOptions, "__dataclass_fields__", {}))
        kw = dict(dtype=e["dtype"], kv_dtype=e.get("kv_dtype"), tp=tp, pp=pp, max_batch=e.get("max_batch"))
        opts = S.ServeOptions(**{k: v for k, v in kw.items() if k in fields and v is not None})
        slo = e.get("slo", {})
        base = dict(prompt_tokens=e["input_tokens"], output_tokens=e["output_tokens"], slo_ttft_s=slo.get("ttft_s"),
                    slo_tpot_s=slo.get("tpot_s"))  # fmt: skip
        probe = S.evaluate(spec, counts, gpu, tp, pp, ServingWorkload(**base), opts)
        if not probe.max_concurrency:
            return {"note": probe.reason or "does not fit"}
        total = e.get("concurrency")
        if total is None:
            per_rep = probe.batch_limit or probe.max_concurrency
            total = min(per_rep, e.get("max_batch") or per_rep) * reps
        c = S.evaluate(spec, counts, gpu, tp, pp, ServingWorkload(**base, concurrency=int(total)), opts)
        scale = reps / max(1, c.layout.replicas)  # the plan sizes replicas itself; keep the published count
        return {"throughput": c.tokens_per_s * scale or None, "ttft_s": c.ttft_s or None, "tpot_s": c.tpot_s or None,
                "max_concurrency": probe.max_concurrency, "batch": c.batch,
                "note": f"plan: batch {c.batch} x {c.layout.replicas} replicas" + (f"; {c.reason}" if c.reason else ""),
                "tpot_bound_s": getattr(c, "tpot_bound_s", None) or None}  # fmt: skip

    def serving_sol(self, e: dict[str, Any], batch: int | None) -> dict[str, float | None]:
        """Speed-of-light bounds for a published setup (module docstring); no throughput bound without a
        batch."""
        R, (s, c, _), g = self.R, self.model(e["spec"]), self.gpu(e["gpu"])
        lay, isl, osl, dtype, kv = e["layout"], e["input_tokens"], e["output_tokens"], e["dtype"], e.get("kv_dtype")
        per, ctx, eff = lay.get("tp", 1) * lay.get("pp", 1), isl + osl // 2, self.sol_eff

        def tput() -> float | None:
            r = R.rates(g, dtype, eff)
            compute = (R.decode_flops(s, c, batch, ctx) + batch / osl * R.prefill_flops(s, c, 1, isl)) / r.flops_per_s
            memory = R.decode_bytes(s, c, batch, ctx, dtype, kv) / r.bytes_per_s
            return lay.get("replicas", 1) * batch / (max(compute, memory) / per) if batch else None

        return {
            "ttft_s": _try(lambda: R.prefill_time_s(s, c, g, 1, isl, dtype, eff=eff, kv_dtype=kv) / per),
            "tpot_s": _try(lambda: R.decode_step_time_s(s, c, g, 1, ctx, dtype, kv_dtype=kv, eff=eff) / per),
            "throughput": _try(tput),
        }


def _rank_spec(spec: Any, tp: int) -> Any:
    from godprof.analytic.tensor_parallel import rank_spec

    return rank_spec(spec, tp)


def _allreduce(s: Any, g: Any, tp: int, tokens: int) -> tuple[float | None, float | None]:
    """(expected, bound) seconds of the tensor-parallel all-reduces of one forward pass of ``tokens`` (bf16
    activations of the hidden size, ``allreduces_per_forward`` of them)."""
    if tp <= 1:
        return 0.0, 0.0
    try:
        from godprof.analytic import efficiency as E
        from godprof.analytic.tensor_parallel import allreduces_per_forward

        n, nbytes, link = allreduces_per_forward(s), tokens * s.model.hidden_size * 2, g.interconnect_bytes_per_s
        return n * E.allreduce_time_s(nbytes, tp, link, E.model_for(g)), n * E.allreduce_bound_s(nbytes, tp, link)
    except Exception:  # noqa: BLE001 - no communication model in place: no figure
        return None, None


# ----------------------------------------------------------------- comparison
def _row(source: str, case: str, metric: str, ref: float | None, exp: float | None, sol: float | None,
         target: float | None, lower_is_better: bool) -> dict[str, Any]:  # fmt: skip
    """One comparison: ratio = godprof expected / reference; ``ok`` whether within the target; ``sol_ok``
    whether the reference respects godprof's bound (time >= sol, throughput <= sol)."""
    ratio = exp / ref if exp and ref else None
    ok = None if ratio is None or target is None else abs(ratio - 1) <= target
    sol_ok = None if not (sol and ref) else (ref >= sol * (1 - 1e-9) if lower_is_better else ref <= sol * (1 + 1e-9))
    return dict(source=source, case=case, metric=metric, reference=ref, godprof=exp, sol=sol, ratio=ratio,
                target=target, ok=ok, sol_ok=sol_ok)  # fmt: skip


METRICS = (("throughput", "output_tokens_per_s", 1, False), ("ttft", "ttft_ms", 1e-3, True),
           ("tpot", "tpot_ms", 1e-3, True))  # fmt: skip


def compare_published(gp: Godprof, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for e in entries:
        try:
            got = gp.serving(e)
        except Exception as err:  # noqa: BLE001 - a moving API: the row reads n/a and says why
            got = {"note": f"{type(err).__name__}: {err}"}
        reps = e["layout"].get("replicas", 1)
        sol = gp.serving_sol(
            e, math.ceil(e["concurrency"] / reps) if e.get("concurrency") else got.get("max_concurrency")
        )
        for metric, key, scale, lower in METRICS:
            if e["measured"].get(key) is not None:
                k = "throughput" if metric == "throughput" else f"{metric}_s"
                r = _row(e["source_name"], e["id"], metric, e["measured"][key] * scale, got.get(k), sol.get(k),
                         TARGETS[metric], lower)  # fmt: skip
                extra = {"plan_batch": got.get("batch"), "plan_tpot_bound_s": got.get("tpot_bound_s")}
                rows.append({**r, "note": got.get("note", ""), **(extra if metric == "tpot" else {})})
    return rows


def compare_aiconfigurator(gp: Godprof, doc: dict[str, Any], limit: int | None = None) -> list[dict[str, Any]]:
    """Rows for grid points that fit memory by aiconfigurator's own estimate. Static points: prefill (TTFT)
    and decode step (TPOT) beside aiconfigurator's measured-database figure (its SOL as ``aic_sol``); the
    decode target applies to dense and MoE models. Agg points: the serving plan's TTFT under load, TPOT and
    throughput at that concurrency beside aiconfigurator's in-flight batching (shown, no target)."""
    info, cap, rows = {m[0]: m for m in AIC_MODELS}, doc.get("gpu_memory_gb", {}), []
    for p in doc["points"]:
        if "ttft_ms" not in p or p.get("memory_gb", 0) > cap.get(p["system"], math.inf):
            continue
        spec, _m, family, systems, dtype, quant = info[p["spec"]]
        gpu = next(g for name, g, _tp in systems if name == p["system"])
        kv = "fp8" if quant.get("kvcache_quant_mode") == "fp8" else None
        case = f"{SHORT_SPEC.get(spec, spec)} {gpu[:4].upper()} tp{p['tp']} b{p['batch']} {p['isl'] // 1024}k"
        if p.get("mode", "static") == "agg":
            e = dict(spec=spec, gpu=gpu, dtype=dtype, kv_dtype=kv, layout={"tp": p["tp"]}, input_tokens=p["isl"],
                     output_tokens=p["osl"], concurrency=p["batch"], source_name=f"aiconfigurator agg {family}",
                     id=case, measured={"output_tokens_per_s": p["tokens_per_s"], "ttft_ms": p["ttft_ms"],
                                        "tpot_ms": p["tpot_ms"]})  # fmt: skip
            rows += [{**r, "target": None, "ok": None} for r in compare_published(gp, [e])]
            continue
        got = gp.step(spec, gpu, p["tp"], p["batch"], p["isl"], p["osl"], dtype, kv)
        target = TARGETS["decode"] if family in ("dense", "moe") else None
        for metric, ref, t in (("prefill", "ttft_ms", None), ("decode", "tpot_ms", target)):
            r = _row(f"aiconfigurator {family}", case, metric, p[ref] * 1e-3, got[f"{metric}_s"],
                     got[f"{metric}_sol_s"], t, True)  # fmt: skip
            rows.append({**r, "aic_sol": p["sol_" + ref] * 1e-3 if p.get("sol_" + ref) is not None else None})
        if limit and len(rows) >= limit:
            break
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per source and metric: rows compared, within target, worst case (largest |ratio - 1|), bound beaten."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        s = out.setdefault((r["source"], r["metric"]), dict(source=r["source"], metric=r["metric"], n=0, within=0,
                           targeted=0, worst=None, worst_case="", sol_beaten=0))  # fmt: skip
        if r["ratio"] is None:
            continue
        s["n"] += 1
        s["targeted"] += r["ok"] is not None
        s["within"] += r["ok"] is True
        if s["worst"] is None or abs(r["ratio"] - 1) > abs(s["worst"] - 1):
            s["worst"], s["worst_case"] = r["ratio"], r["case"]
        s["sol_beaten"] += r["sol_ok"] is False
    return list(out.values())


def verdicts(rows: list[dict[str, Any]]) -> dict[str, bool | None]:
    """Pass / fail per target of the issue (None where no row could be compared)."""
    pub = [r for r in rows if not r["source"].startswith("aiconfigurator")]
    aic = [r for r in rows if r["source"].startswith("aiconfigurator")]
    checks = {
        "throughput within 15% of published": [r["ok"] for r in pub if r["metric"] == "throughput"],
        "TPOT within 15% of published": [r["ok"] for r in pub if r["metric"] == "tpot"],
        "TTFT within 25% of published": [r["ok"] for r in pub if r["metric"] == "ttft"],
        "decode within 15% of aiconfigurator (dense, MoE)": [r["ok"] for r in aic if r["metric"] == "decode"],
        "speed-of-light never beaten": [r["sol_ok"] for r in rows],
    }
    return {k: all(got) if (got := [v for v in vals if v is not None]) else None for k, vals in checks.items()}


# ----------------------------------------------------------------- output
def _f(v: Any, unit: str = "") -> str:
    if v is None:
        return NA
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "s":
        return f"{v * 1e3:.1f}ms" if v < 10 else f"{v:.1f}s"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _within(s: dict[str, Any]) -> str:
    return f"{s['within']}/{s['targeted']}" if s["targeted"] else "no target"


def _mark(v: bool | None) -> str:
    return NA if v is None else ("pass" if v else "FAIL")


SHORT = {"throughput": "tok/s", "ttft": "TTFT", "tpot": "TPOT", "prefill": "prefil", "decode": "decode"}


def table(rows: list[dict[str, Any]], width: int = 80) -> list[str]:
    """Rows as fixed-width text lines no wider than ``width`` (80 by default)."""
    out = [f"{'case':27} {'metric':6} {'ref':>8} {'godprof':>8} {'ratio':>6} {'sol':>8} {'ok':>4} {'sol?':>4}"]
    out.append("-" * len(out[0]))
    for r in rows:
        u = "" if r["metric"] == "throughput" else "s"
        m, ref, exp, ratio, sol = SHORT.get(r["metric"], r["metric"]), _f(r["reference"], u), _f(r["godprof"], u), \
            _f(r["ratio"], "x"), _f(r["sol"], u)  # fmt: skip
        out.append(f"{r['case'][:27]:27} {m[:6]:6} {ref:>8} {exp:>8} {ratio:>6} {sol:>8} {_mark(r['ok']):>4} "
                   f"{_mark(r['sol_ok']):>4}")  # fmt: skip
    return [line[:width] for line in out]


def markdown(rows: list[dict[str, Any]], summary: list[dict[str, Any]], verdict: dict[str, Any],
             meta: dict[str, Any]) -> str:  # fmt: skip
    md = [f"# Serving fidelity, {meta['date']}", "",
          f"godprof at `{meta['godprof']}`; aiconfigurator figures from `{AIC_FILE.name}` (version "
          f"{meta['aiconfigurator']}, {meta['aic_generated']}); published figures from `{PUBLISHED.name}` (URLs and "
          "setups there). Ratio = godprof expected / reference; sol = godprof's speed-of-light bound; sol? = the "
          "reference respects it. Made by `python benchmarks/serving_fidelity.py`.",
          "", "## Targets", "", "| target | verdict |", "|---|---|"]  # fmt: skip
    md += [f"| {k} | {_mark(v)} |" for k, v in verdict.items()]
    md += ["", "## Worst case per source", "", "| source | metric | compared | within target | worst ratio | worst "
           "case | bound beaten |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    md += [f"| {s['source']} | {s['metric']} | {s['n']} | {_within(s)} | {_f(s['worst'], 'x')} | "
           f"{s['worst_case']} | {s['sol_beaten']} |" for s in summary]  # fmt: skip
    md += ["", "## All rows", "", "| source | case | metric | reference | godprof | ratio | sol | aic sol | ok | sol? "
           "| note |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        u = "" if r["metric"] == "throughput" else "s"
        cells = (r["source"], r["case"], r["metric"], _f(r["reference"], u), _f(r["godprof"], u), _f(r["ratio"], "x"),
                 _f(r["sol"], u), _f(r.get("aic_sol"), u), _mark(r["ok"]), _mark(r["sol_ok"]),
                 str(r.get("note", "")).replace("|", "/")[:80])  # fmt: skip
        md.append("| " + " | ".join(cells) + " |")
    md += ["", "## Caveats (from the data files)", ""] + [f"- {c}" for c in meta.get("caveats", [])]
    return "\n".join(md) + "\n"


def load_published(path: Path = PUBLISHED) -> list[dict[str, Any]]:
    import yaml

    doc = yaml.safe_load(path.read_text())
    return [{**e, "source_name": s["name"], "url": s["url"]} for s in doc["sources"] for e in s["entries"]]


def caveats(path: Path = PUBLISHED) -> list[str]:
    """The data file's assumptions and gaps (``*_note`` and ``not_found`` keys), one line each."""
    import yaml

    out = []
    for s in yaml.safe_load(path.read_text())["sources"]:
        for item in [s, *s["entries"]]:
            out += [
                f"{item.get('id', s['name'])}: {v}" for k, v in item.items() if k.endswith("note") or k == "not_found"
            ]
    return out


def run(out_dir: Path | None = RESULTS) -> dict[str, Any]:
    import subprocess

    gp, aic = Godprof(), json.loads(AIC_FILE.read_text())
    rows = compare_published(gp, load_published()) + compare_aiconfigurator(gp, aic)
    rev = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    meta = {"date": dt.date.today().isoformat(), "godprof": (rev.stdout.strip() or "unknown") + " + working tree",
            "aiconfigurator": aic.get("aiconfigurator_version"), "aic_generated": aic.get("generated"),
            "caveats": caveats()}  # fmt: skip
    doc = {"schema": "godprof.benchmark.serving_fidelity/1", **meta, "targets": TARGETS,
           "verdicts": verdicts(rows), "summary": summarise(rows), "rows": rows}  # fmt: skip
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{meta['date']}.json").write_text(json.dumps(doc, indent=1) + "\n")
        (out_dir / f"{meta['date']}.md").write_text(markdown(rows, doc["summary"], doc["verdicts"], meta))
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refresh-aiconfigurator", action="store_true",
                    help=f"rebuild data/{AIC_FILE.name} (needs the aiconfigurator package, not godprof)")  # fmt: skip
    ap.add_argument("--all-rows", action="store_true", help="print the aiconfigurator rows too")
    ap.add_argument("--no-write", action="store_true", help="print only; leave results/ alone")
    ns = ap.parse_args(argv)
    if ns.refresh_aiconfigurator:
        print(f"wrote {AIC_FILE} ({len(refresh_aiconfigurator()['points'])} points)")
        return 0
    doc = run(None if ns.no_write else RESULTS)
    rows = doc["rows"] if ns.all_rows else [r for r in doc["rows"] if not r["source"].startswith("aiconfig")]
    print("\n".join(table(rows)) + "\n")
    for s in doc["summary"]:
        print(f"{s['source'][:24]:24} {s['metric']:10} worst {_f(s['worst'], 'x'):>6}  within {_within(s):9}  "
              f"bound beaten {s['sol_beaten']}")  # fmt: skip
    print()
    for k, v in doc["verdicts"].items():
        print(f"{k:60} {_mark(v)}")
    if not ns.no_write:
        print(f"\nwrote {RESULTS / doc['date']}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
