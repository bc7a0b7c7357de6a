"""Measure the bundled specs that fit one GPU (a benchmark, not a test) and write JSON + Markdown results.

For every spec (default: all bundled specs) and batch size (default: 1 and 8) in bf16:
``godprof.measure.measure`` builds the model on the device with random weights and measures peak memory,
TTFT/TPOT, tokens/s, achieved bandwidth, MBU/MFU, energy per token and the FLOP counters, beside the
estimate. A spec whose weights + cache + activations (the estimate) exceed the free memory is skipped
and listed as such; a CUDA out-of-memory during the run is recorded as "does not fit".

Also recorded, for the issue's targets:
- the card's device-to-device copy bandwidth (a 2 x 1 GiB ``copy_``, read + write bytes / time), the
  figure decode bandwidth is compared with ("decode >= 80% of measured copy bandwidth with --compile");
- with ``--hf``, Hugging Face transformers' implementation of the same config (``AutoModelForCausalLM
  .from_config``, random weights, bf16, its DynamicCache) timed on the same workload, for specs that
  have a config.json under tests/fixtures/hf/ ("no slower than transformers").

Results: ``<out>/measure-<device>-<UTC date>.json`` (machine, driver, torch/CUDA versions, every record
in full) and ``.md`` (one summary table). Nothing is written for a spec that was not run.

    python benchmarks/measure_bench.py                              # all bundled specs on cuda:0
    python benchmarks/measure_bench.py --specs llama-3-8b --batches 1,16 --compile --hf
    python benchmarks/measure_bench.py --device cpu --threads 1 --specs examples/tiny-dense.yaml --seq 64  # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

try:
    import torch

    from godprof.measure import DoesNotFit, MeasureConfig, NoDevice, measure, resolve_device
    from godprof.measure.report import activation_peak, rel_error
except ImportError as _e:  # one line, not a traceback: this benchmark needs the measure extra
    sys.exit(f"measure_bench: needs torch and godprof's measure extra (pip install 'godprof[measure]'): {_e}")

from godprof.analytic import Workload, estimate
from godprof.errors import GodprofError
from godprof.report.format import fmt_bytes, fmt_pct, fmt_rate, fmt_seconds
from godprof.spec import bundled_spec_names, load_spec

ROOT = Path(__file__).resolve().parents[1]
HF_FIXTURES = ROOT / "tests" / "fixtures" / "hf"


def copy_bandwidth(dev: torch.device, nbytes: int = 1 << 30, iters: int = 10) -> dict[str, Any]:
    """Device-to-device copy of ``nbytes``: (read + write) bytes per second, median of ``iters`` copies."""
    if dev.type != "cuda":
        return {"bytes_per_s": None, "reason": "copy bandwidth is measured on CUDA only"}
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    times = []
    for i in range(iters + 2):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        torch.cuda.synchronize(dev)
        if i >= 2:
            times.append(a.elapsed_time(b) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    times.sort()
    med = times[len(times) // 2]
    return {"bytes_per_s": 2 * nbytes / med, "copy_bytes": nbytes, "median_s": med, "iters": iters}


def hf_config_for(name: str) -> Path | None:
    """tests/fixtures/hf/<name>.json, or a fixture whose stem starts with the spec name (mistral-7b-v0.1)."""
    exact = HF_FIXTURES / f"{name}.json"
    if exact.is_file():
        return exact
    found = sorted(HF_FIXTURES.glob(f"{name}*.json"))
    return found[0] if found else None


def time_hf(cfg_path: Path, dev: torch.device, batch: int, seq: int, new_tokens: int, iters: int, warmup: int) -> dict:
    """TTFT / TPOT medians of transformers' model for the same config and workload (CUDA events)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.loads(cfg_path.read_text())
    raw = {k: v for k, v in raw.items() if not k.startswith("_")}
    model_type = raw.pop("model_type")
    config = AutoConfig.for_model(model_type, **raw)
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16).eval()
    ids = torch.randint(0, config.vocab_size, (batch, seq), device=dev)
    cuda = dev.type == "cuda"

    def mark() -> Any:
        if cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def secs(a: Any, b: Any) -> float:
        return a.elapsed_time(b) / 1e3 if cuda else b - a

    ttft, tpot = [], []
    with torch.no_grad():
        for i in range(warmup + iters):
            if cuda:
                torch.cuda.synchronize(dev)
            m0 = mark()
            out = model(ids, use_cache=True, logits_to_keep=1)
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            marks = [mark()]
            past = out.past_key_values
            for _ in range(new_tokens):
                out = model(tok, past_key_values=past, use_cache=True)
                past = out.past_key_values
                tok = out.logits[:, -1].argmax(-1, keepdim=True)
                marks.append(mark())
            if cuda:
                torch.cuda.synchronize(dev)
            if i >= warmup:
                ttft.append(secs(m0, marks[0]))
                tpot += [secs(a, b) for a, b in zip(marks, marks[1:], strict=False)]
    del model, past, out
    if cuda:
        torch.cuda.empty_cache()
    ttft.sort()
    tpot.sort()
    return {"config": str(cfg_path.relative_to(ROOT)), "ttft_s": ttft[len(ttft) // 2], "tpot_s": tpot[len(tpot) // 2]}


def machine(dev: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(dev),
    }
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
        try:
            import pynvml

            pynvml.nvmlInit()
            drv = pynvml.nvmlSystemGetDriverVersion()
            info["driver"] = drv.decode() if isinstance(drv, bytes) else drv
        except Exception as e:  # no NVML: say so
            info["driver"] = f"unknown ({e})"
    else:
        info["cpu"] = platform.processor() or platform.machine()
        info["threads"] = torch.get_num_threads()
    return info


def run_one(ref: str, dev: torch.device, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    spec = load_spec(ref)
    rec: dict[str, Any] = {"spec": spec.name, "ref": ref, "batch": batch, "seq": args.seq}
    dtype = args.dtype or ("bf16" if dev.type == "cuda" else "fp32")
    w = Workload(batch=batch, seq=args.seq, context=args.seq + args.new_tokens, dtype=dtype, logits="last")
    need = estimate(spec, w).memory["total_bytes"]
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        if need > 0.95 * free:
            rec.update(status="skipped", reason=f"estimate {fmt_bytes(need)} > 95% of free {fmt_bytes(free)}")
            return rec
    cfg = MeasureConfig(
        batch=batch,
        seq=args.seq,
        new_tokens=args.new_tokens,
        dtype=dtype,
        warmup=args.warmup,
        iters=args.iters,
        compile=args.compile,
        energy=not args.no_energy,
        fvcore=not args.no_fvcore,
    )
    try:
        m = measure(spec, dev, cfg, lambda d, a, b: print(f"  {spec.name} b{batch}: {d}", file=sys.stderr))
    except DoesNotFit as e:
        rec.update(status="does not fit", reason=str(e))
        return rec
    rec.update(status="ok", result=m.to_dict(), activation_peak_bytes=activation_peak(m))
    if args.hf:
        cfg_path = hf_config_for(spec.name)
        if cfg_path is None:
            rec["hf"] = {"status": "no config.json fixture"}
        else:
            try:
                rec["hf"] = time_hf(cfg_path, dev, batch, args.seq, args.new_tokens, args.iters, args.warmup)
            except Exception as e:  # transformers version drift, missing kernels: record and go on
                rec["hf"] = {"status": f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    return rec


def _flop_err(c: dict[str, Any]) -> str:
    if not c.get("available", True) or c.get("matmul_error") is None:
        return "-"
    return fmt_pct(c["matmul_error"])


def markdown(meta: dict[str, Any], records: list[dict[str, Any]]) -> str:
    m = meta["machine"]
    lines = [
        f"# godprof measure benchmark, {meta['date']}",
        "",
        f"- device: {m.get('gpu') or m.get('cpu')} ({m['device']}); driver {m.get('driver', '-')}",
        f"- torch {m['torch']}, CUDA {m['cuda']}, Python {m['python']}, {m['platform']}",
        f"- workload: seq {meta['args']['seq']}, {meta['args']['new_tokens']} new tokens, {meta['args']['iters']} "
        f"iters after {meta['args']['warmup']} warm-up, compile {meta['args']['compile']}",
        f"- copy bandwidth: {fmt_rate(meta['copy_bandwidth'].get('bytes_per_s'), 'B/s')}",
        "",
        "| spec | batch | status | peak mem (est / measured / err) | TTFT | TPOT | tok/s | bandwidth | MBU | "
        "vs copy BW | J/token | FLOPs err (torch / fvcore) | HF TTFT / TPOT |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    copy_bw = meta["copy_bandwidth"].get("bytes_per_s")
    for r in records:
        if r["status"] != "ok":
            lines.append(f"| {r['spec']} | {r['batch']} | {r['status']}: {r.get('reason', '')} |" + " |" * 10)
            continue
        d = r["result"]
        me, est = d["measured"], d["estimate"]
        peak_est = est["memory"]["total_bytes"]
        mem = (f"{fmt_bytes(peak_est)} / {fmt_bytes(me['peak_memory_bytes'])} / "
               f"{fmt_pct(rel_error(peak_est, me['peak_memory_bytes']))}")  # fmt: skip
        bw = me["achieved_bandwidth_bytes_per_s"]
        mbu = "-" if me["mbu"] is None else f"{me['mbu'] * 100:.0f}%"
        vs_copy = "-" if not copy_bw else f"{bw / copy_bw * 100:.0f}%"
        j = "-" if me["energy_j_per_token"] is None else f"{me['energy_j_per_token']:.3g} J"
        errs = " / ".join(_flop_err(c) for c in (me["flops"] or {}).get("counters", []))
        hf = r.get("hf") or {}
        hf_txt = (f"{fmt_seconds(hf['ttft_s'])} / {fmt_seconds(hf['tpot_s'])}" if "ttft_s" in hf
                  else hf.get("status", "-"))  # fmt: skip
        rates = [fmt_seconds(me["ttft_s"]), fmt_seconds(me["tpot_s"]), fmt_rate(me["tokens_per_s"], "tok/s")]
        cells = [r["spec"], r["batch"], "ok", mem, *rates, fmt_rate(bw, "B/s"), mbu, vs_copy, j, errs or "-", hf_txt]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [
        "",
        "Peak-memory error = (estimate - measured) / measured. FLOPs error: (analytic - counted) / counted matmul "
        "FLOPs.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda:N or cpu (default: cuda:0)")
    ap.add_argument("--specs", default=None, help="comma-separated names or paths (default: every bundled spec)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--dtype", default=None, help="default: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--hf", action="store_true", help="also time transformers' model of the same config")
    ap.add_argument("--no-energy", action="store_true")
    ap.add_argument("--no-fvcore", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (CPU runs)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        dev = resolve_device(args.device, None)
    except NoDevice as e:  # no GPU here: say so in one line (exit 4, as `godprof measure` does)
        print(f"measure_bench: {e}", file=sys.stderr)
        raise SystemExit(4) from None
    specs = args.specs.split(",") if args.specs else bundled_spec_names()
    batches = [int(b) for b in args.batches.split(",")]
    meta: dict[str, Any] = {
        "schema": "godprof.measure-bench/1",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(dev),
        "args": vars(args),
        "copy_bandwidth": copy_bandwidth(dev),
    }
    records = []
    for ref in specs:
        for batch in batches:
            print(f"{ref} batch {batch}", file=sys.stderr)
            try:
                records.append(run_one(ref, dev, batch, args))
            except KeyboardInterrupt:
                raise
            except GodprofError as e:  # a bad spec name or file: one line, and the others still run
                print(f"  error: {str(e).splitlines()[0]}", file=sys.stderr)
                records.append({"spec": ref, "ref": ref, "batch": batch, "status": "error", "reason": str(e)})
            except Exception as e:  # a bug: its traceback, and the others' results are still written
                traceback.print_exc()
                records.append({"spec": ref, "ref": ref, "batch": batch, "status": "error", "reason": repr(e)})
            print(f"  -> {records[-1]['status']}", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", (meta["machine"].get("gpu") or dev.type).lower()).strip("-")
    stem = out / f"measure-{slug}-{meta['date'][:10]}"
    stem.with_suffix(".json").write_text(json.dumps({**meta, "records": records}, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(meta, records))
    print(f"wrote {stem}.json and {stem}.md", file=sys.stderr)


if __name__ == "__main__":
    main()
