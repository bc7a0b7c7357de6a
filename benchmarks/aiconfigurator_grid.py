"""The aiconfigurator 0.12 grid ``serving_fidelity.py`` compares godprof with: which models, GPUs, batches
and contexts, and ``refresh_aiconfigurator``, which reruns aiconfigurator (installed in a venv of its own,
never a godprof dependency) and writes ``data/aiconfigurator_0.12.json``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

AIC_FILE = Path(__file__).resolve().parent / "data" / "aiconfigurator_0.12.json"

# ----------------------------------------------------------------- the aiconfigurator grid
# godprof spec, aiconfigurator model, family, [(aic system, godprof GPU, tp)], godprof dtype, aic quant modes
_BF16 = {"gemm_quant_mode": "bfloat16", "kvcache_quant_mode": "bfloat16", "fmha_quant_mode": "bfloat16"}
_FP8B = {"gemm_quant_mode": "fp8_block", "moe_quant_mode": "fp8_block", "kvcache_quant_mode": "bfloat16"}
_HOPPER = [("h100_sxm", "h100-sxm", 1), ("h200_sxm", "h200", 1)]
AIC_MODELS = [
    ("llama-3-8b", "meta-llama/Meta-Llama-3.1-8B", "dense", _HOPPER, "bf16", _BF16),
    ("llama-3-70b", "meta-llama/Meta-Llama-3.1-70B", "dense", [(s, g, 4) for s, g, _ in _HOPPER], "bf16", _BF16),
    ("qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B", "moe", _HOPPER, "bf16", {**_BF16, "moe_quant_mode": "bfloat16"}),
    ("deepseek-v3", "deepseek-ai/DeepSeek-V3", "mla", [("h200_sxm", "h200", 8)], "fp8_block",
     {**_FP8B, "fmha_quant_mode": "bfloat16"}),
]  # fmt: skip
SHORT_SPEC = {"llama-3-8b": "l3-8b", "llama-3-70b": "l3-70b", "qwen3-30b-a3b": "q3-30b", "deepseek-v3": "dsv3"}
# static: one prefill of batch x isl, then osl decode steps (their mean is the TPOT), measured database and
# speed of light; agg: in-flight batching at a concurrency (TTFT under load, TPOT, throughput)
AIC_GRIDS = (
    ("static", (1, 8, 64, 256), (1024, 8192, 32768, 131072), 128, (("SILICON", ""), ("SOL", "sol_"))),
    ("agg", (8, 64, 256), (1024, 8192), 256, (("SILICON", ""),)),
)


def refresh_aiconfigurator(path: Path = AIC_FILE) -> dict[str, Any]:
    """Run aiconfigurator 0.12's ``cli_estimate`` (TensorRT-LLM database) over ``AIC_GRIDS`` and write
    ``path``. Needs the ``aiconfigurator`` package; runs offline on CPU."""
    import importlib.metadata as md
    import itertools
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from aiconfigurator.cli.api import cli_estimate

    points = []
    for (mode, batches, contexts, osl, dbs), (spec, model, family, systems, _dt, quant) in itertools.product(
        AIC_GRIDS, AIC_MODELS
    ):
        for (system, _gpu, tp), isl, batch in itertools.product(systems, contexts, batches):
            moe = {"moe_tp_size": 1, "moe_ep_size": tp} if family != "dense" else {}
            p: dict[str, Any] = dict(mode=mode, spec=spec, model=model, family=family, system=system, tp=tp,
                                     batch=batch, isl=isl, osl=osl)  # fmt: skip
            for db, key in dbs:
                try:
                    r = cli_estimate(model, system, mode=mode, backend_name="trtllm", database_mode=db, isl=isl,
                                     osl=osl, batch_size=batch, tp_size=tp, **moe, **quant)  # fmt: skip
                    p[key + "ttft_ms"], p[key + "tpot_ms"] = float(r.ttft), float(r.tpot)
                    if db == "SILICON":
                        p["memory_gb"], p["tokens_per_s"] = float(r.raw["memory"]), float(r.raw["tokens/s"])
                        p["backend_version"] = r.backend_version
                except Exception as e:  # noqa: BLE001 - a failed point is data, not a crash
                    p[key + "error"] = f"{type(e).__name__}: {e}"[:200]
            points.append(p)
            print(f"{mode} {spec} {system} tp{tp} b{batch} isl {isl}: {p.get('ttft_ms')} {p.get('tpot_ms')}")
    doc = {
        "schema": "godprof.benchmark.aiconfigurator/1",
        "aiconfigurator_version": md.version("aiconfigurator"),
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "how": "aiconfigurator.cli.api.cli_estimate(mode=<mode>, backend_name='trtllm', database_mode='SILICON' "
        "| 'SOL'). static: ttft_ms = one prefill of batch x isl tokens, tpot_ms = mean decode step over osl steps; "
        "agg: in-flight batching at concurrency = batch, ttft_ms under that load, tokens_per_s of the instance; "
        "memory_gb = aiconfigurator's per-GPU memory estimate",
        "gpu_memory_gb": {"h100_sxm": 80, "h200_sxm": 141},
        "points": points,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


# ----------------------------------------------------------------- godprof's figures
