"""Estimate report: tables of parameters, layer kinds, memory and FLOPs."""

from __future__ import annotations

from typing import Any

from godprof.analytic.estimate import Estimate
from godprof.analytic.memory import WeightsBreakdown
from godprof.dtypes import get_dtype
from godprof.report.format import fmt_bytes, fmt_flops, fmt_int, fmt_params
from godprof.report.table import Table, flatten

_MEMORY_ROWS = (
    ("weights", "weights_bytes"),
    ("KV cache", "kv_cache_bytes"),
    ("SSM state", "ssm_state_bytes"),
    ("activations", "activations_bytes"),
    ("gradients", "gradients_bytes"),
    ("optimizer state", "optimizer_bytes"),
)


def _weights_rows(mem: Table, weights: WeightsBreakdown) -> str:
    """One short row per weight format under the weights row; returns the caption naming the components
    each format stores (the base format also holds every bias, sink and SSM vector) and the quantised
    formats' layouts."""
    several = len(weights.by_format) > 1
    where = []
    for fmt, n in sorted(weights.by_format.items(), key=lambda kv: -kv[1]):
        names = ", ".join(c.replace("_", " ") for c in weights.components_in(fmt))
        if fmt == weights.base and several:
            names = f"{names} and other vectors" if names else "biases and vectors"
        mem.add(f"  in {fmt}", fmt_bytes(n), fmt_int(n))
        where.append(f"{fmt}: {names}")
    notes = [f"{f} = {get_dtype(f).note}" for f in weights.by_format if get_dtype(f).note]
    return "; ".join(where + notes)


def estimate_tables(e: Estimate) -> list[Table]:
    """The report's tables; the memory table names the format of each group of weight tensors, and whether
    they are the spec's shipped formats."""
    w = e.workload
    weights, as_shipped = e.weights, e.as_shipped
    p = e.params
    params = Table(f"{e.spec.name} ({e.spec.family}): parameters", ["component", "total", "active per token", "exact"])
    params.add("total", fmt_params(p.total), fmt_params(p.active), fmt_int(p.total))
    for comp, n in p.by_component.items():
        if n:
            params.add(
                f"  {comp.replace('_', ' ')}", fmt_params(n), fmt_params(p.active_by_component[comp]), fmt_int(n)
            )
    if p.mtp_total and not p.mtp_included:
        params.add(
            "MTP modules (apart; --mtp)", fmt_params(p.mtp_total), fmt_params(p.mtp_active), fmt_int(p.mtp_total)
        )

    layers = Table("Layers", ["kind", "mixer / ffn", "layers", "params per layer", "active per layer"])
    for k in p.by_layer_kind:
        layers.add(
            k.kind, f"{k.mixer} / {k.ffn}", k.layers, fmt_params(k.params_per_layer), fmt_params(k.active_per_layer)
        )

    split = len(weights.by_format) > 1 or not w.weight_dtype.is_float
    wname = "as shipped" if as_shipped and split else w.weight_dtype.name
    mem = Table(
        f"Memory: {w.mode}, batch {w.batch}, seq {w.seq:,}, context {w.ctx:,}, weights {wname}, "
        f"KV {w.cache_dtype.name}",
        ["item", "size", "bytes"],
    )
    legend = ""
    for label, key in _MEMORY_ROWS:
        if e.memory[key] or key in ("weights_bytes", "activations_bytes"):
            mem.add(label, fmt_bytes(e.memory[key]), fmt_int(e.memory[key]))
            if key == "weights_bytes" and split:
                legend = _weights_rows(mem, weights)
    mem.add("total", fmt_bytes(e.memory["total_bytes"]), fmt_int(e.memory["total_bytes"]))
    mem.highlight.add((len(mem.rows) - 1, 1))
    captions = []
    if w.mode == "inference":
        captions.append(f"Activations: the largest prefill pass ({e.memory_model.describe()})")
    if e.fit is not None:
        fit = e.fit
        mem.add("+ runtime overheads", fmt_bytes(fit["runtime_overhead_bytes"]), fmt_int(fit["runtime_overhead_bytes"]))
        verdict = "fits" if fit["fits"] else "does NOT fit"
        free = fit["free_bytes"]
        captions.append(
            f"On {fit['gpu']} ({fmt_bytes(fit['gpu_memory_bytes'])}, {fit['headroom']:.0%} kept free, runtime "
            f"overheads {fmt_bytes(fit['runtime_overhead_bytes'])}): {verdict}, "
            + (f"{fmt_bytes(free)} free" if free >= 0 else f"{fmt_bytes(-free)} short")
        )
    if e.memory["kv_bytes_per_token"]:
        captions.append(f"KV cache grows {fmt_bytes(e.memory['kv_bytes_per_token'])} per token per sequence")
    if legend:
        captions.append(f"Weight formats: {legend}")
    if captions:
        mem.caption = ". ".join(captions)

    f = e.flops
    fl = Table(
        "FLOPs (1 multiply-add = 2 FLOPs)",
        ["quantity", "FLOPs", "exact"],
        caption=f"forward: {w.batch} x {w.seq:,} tokens, {w.attention_flops} attention; decode: one token at "
        f"context {w.ctx:,}; train: per token, recompute {w.recompute}. SSM scan and conv are not in forward.",
    )
    rows = [("forward", "forward"), ("decode per token", "decode_per_token"), ("train per token", "train_per_token")]
    if f["ssm_scan"]:
        rows += [("SSM scan", "ssm_scan"), ("SSM conv1d", "conv")]
    for label, key in rows:
        fl.add(label, fmt_flops(f[key]), fmt_int(f[key]))
    return [params, layers, mem, fl]


def estimate_record(e: Estimate) -> dict[str, Any]:
    """One flat record (CSV row) of an estimate: scalar fields only."""
    d = e.to_dict()
    d["params"] = {k: v for k, v in d["params"].items() if k != "by_layer_kind"}
    d["spec"] = {k: v for k, v in d["spec"].items() if k != "layer_kinds"}
    return flatten(d)


ESTIMATES_SCHEMA = "godprof.estimates/1"


def estimate_grid_document(grid: list[Estimate]) -> dict[str, Any]:
    """Several estimates of one spec (a --dtype x --gpu grid) as one JSON object: ``{schema, estimates}``,
    each estimate exactly the ``godprof.estimate/1`` document of the same options."""
    return {"schema": ESTIMATES_SCHEMA, "estimates": [e.to_dict() for e in grid]}


def estimate_grid_table(grid: list[Estimate]) -> Table:
    """One row per weight format x GPU: weights, KV cache + state, activations, total and, with a GPU, the
    memory left free (negative: missing)."""
    gpus = any(e.fit is not None for e in grid)
    cols = ["weights as", *(["GPU"] if gpus else []), "weights", "KV + state", "activations", "total"]
    t = Table(f"{grid[0].spec.name}: memory by weight format" + (" and GPU" if gpus else ""),
              cols + (["free on GPU", "fits"] if gpus else []), keys=2 if gpus else 1)  # fmt: skip
    for e in grid:
        m = e.memory
        w = e.workload
        name = "as shipped" if e.as_shipped and len(e.weights.by_format) > 1 else w.weight_dtype.name
        cells = [name, *([e.fit["gpu"] if e.fit else "-"] if gpus else []), fmt_bytes(m["weights_bytes"]),
                 fmt_bytes(m["kv_cache_bytes"] + m["ssm_state_bytes"]), fmt_bytes(m["activations_bytes"]),
                 fmt_bytes(m["total_bytes"])]  # fmt: skip
        if gpus:
            free = e.fit["free_bytes"] if e.fit else None
            cells += ["-" if free is None else ("-" if free < 0 else "") + fmt_bytes(abs(free)),
                      "-" if e.fit is None else ("yes" if e.fit["fits"] else "no")]  # fmt: skip
        t.add(*cells)
    w0 = grid[0].workload
    t.caption = (f"{w0.mode}, batch {w0.batch}, seq {w0.seq:,}, context {w0.ctx:,}, KV {w0.cache_dtype.name}. "
                 "Full tables: one --dtype at a time; every figure: --format json.")  # fmt: skip
    return t
