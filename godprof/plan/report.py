"""Plan reports: tables for the terminal, and self-contained Markdown / HTML capacity-planning documents.

Renderers return data (Tables, strings); only the CLI prints. Plots are drawn with matplotlib when it is
installed and embedded as base64 PNG (``data:`` URIs), so a document is one file; without matplotlib the
documents are complete minus the figure.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from godprof.plan.serving import Candidate, ServePlan, batch_curve
from godprof.plan.swarm import SwarmPlan, summarize_dense
from godprof.plan.training import TrainPlan
from godprof.report.format import fmt_bytes, fmt_flops, fmt_int, fmt_params, fmt_seconds
from godprof.report.table import Table

GIB = 1 << 30


def _usd(x: float | None) -> str:
    return "-" if x is None else (f"${x:,.2f}" if x >= 0.1 else f"${x:.4f}")


def _kwh(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3g} kWh" if x >= 1 else f"{x * 1000:.3g} Wh")


def _tps(x: float | None) -> str:
    return "-" if x is None else (f"{x:,.0f}" if x >= 10 else f"{x:.2g}")


def _per_million(kwh: float, usd: float | None) -> str:
    return _kwh(kwh) + ("" if usd is None else f" and {_usd(usd)}")


def _flops(x: float) -> str:
    """Large FLOP counts in scientific notation (6.19e23 FLOP), which is how training budgets are quoted."""
    return fmt_flops(x) if x < 1e18 else f"{x:.3g} FLOP".replace("e+", "e")


def _hours(h: float) -> str:
    if h >= 24 * 365:
        return f"{h / 24 / 365:.2f} years"
    if h >= 48:
        return f"{h / 24:.1f} days"
    return f"{h:.1f} h"


def _workload_line(p: ServePlan | SwarmPlan) -> str:
    wl = p.workload
    traffic = (
        f"{wl.rate_per_s:g} requests/s" if wl.rate_per_s is not None
        else f"{wl.concurrency or 1} concurrent requests"
    )  # fmt: skip
    parts = [f"{wl.prompt_tokens:,} prompt + {wl.output_tokens:,} output tokens", traffic]
    if wl.samples_per_prompt > 1:
        parts.append(f"best-of-{wl.samples_per_prompt} (shared prompt KV)")
    if wl.slo_ttft_s is not None:
        parts.append(f"TTFT ≤ {fmt_seconds(wl.slo_ttft_s)}")
    if wl.slo_tpot_s is not None:
        parts.append(f"TPOT ≤ {fmt_seconds(wl.slo_tpot_s)}")
    return " · ".join(parts)


# --------------------------------------------------------------------------- serving


def serve_tables(p: ServePlan) -> list[Table]:
    head = f"{p.spec.name} · weights {p.options.dtype} · KV {p.kv_dtype} · {_workload_line(p)}"
    c = p.chosen
    tables = []
    if c is None:
        t = Table(f"{head}\nDoes not fit", ["", "what is missing"])
        t.add("does not fit", p.missing or "")
    else:
        t = Table(f"{head}\nPlan: {c.layout.gpus} x {c.gpu.name} ({c.layout.label()})", ["item", "value"])
        usable = c.gpu.memory_bytes * (1 - p.options.headroom)
        rows = [
            ("layout", f"tp {c.layout.tp} · pp {c.layout.pp} · ep {c.layout.ep} · {c.layout.replicas} replica(s)"),
            ("GPUs", f"{c.layout.gpus} ({c.layout.gpus_per_replica} per replica)"),
            ("weights per GPU", fmt_bytes(c.memory["weights_bytes"])),
            ("KV cache + state per GPU", fmt_bytes(c.memory["kv_cache_bytes"])),
            ("activations per GPU", fmt_bytes(c.memory["activations_bytes"])),
            ("memory per GPU", f"{fmt_bytes(c.memory['total_bytes'])} of {fmt_bytes(usable)} usable"),
            ("max concurrency per replica", f"{c.max_concurrency:,} requests (memory)"),
            ("batch per replica", f"{c.batch:,} (limit {c.batch_limit:,}: {c.limited_by})"),
            ("TTFT", fmt_seconds(c.ttft_s)),
            ("TPOT", f"{fmt_seconds(c.tpot_s)} ({c.bound}-bound decode, comm {c.comm_share:.0%})"),
            ("output tokens/s per GPU", _tps(c.tokens_per_s_per_gpu)),
            ("output tokens/s, all", _tps(c.tokens_per_s)),
            ("power per GPU", f"{c.power_w_per_gpu:.0f} W of {c.gpu.tdp_w:.0f} W TDP"),
            ("energy per 1M output tokens", _kwh(c.energy_kwh_per_mtok)),
            ("cost per 1M output tokens", _usd(c.usd_per_mtok)),
        ]
        for r in rows:
            t.add(*r)
        t.highlight.add((1, 1))
    tables.append(t)
    tables.append(alternatives_table(p))
    if p.risks:
        tables.append(risks_table(p.risks))
    return tables


def risks_table(risks: list[str]) -> Table:
    t = Table("Risks", ["#", "risk"])
    for i, x in enumerate(risks, 1):
        t.add(i, x)
    return t


def alternatives_table(p: ServePlan) -> Table:
    t = Table(
        "Alternatives" if p.chosen else "Layouts tried (closest first)",
        ["GPU", "layout", "GPUs", "max conc.", "TTFT", "TPOT", "tok/s/GPU", "energy/1M", "$/1M", "note"],
    )
    rows: list[Candidate] = ([p.chosen] if p.chosen else []) + p.alternatives()
    if not p.chosen:
        rows = sorted(p.candidates, key=lambda c: (c.missing_bytes_per_gpu, c.layout.gpus))[:8]
    for i, c in enumerate(rows):
        t.add(
            c.gpu.key,
            c.layout.label(),
            c.layout.gpus,
            fmt_int(c.max_concurrency) if c.max_concurrency else "-",
            fmt_seconds(c.ttft_s) if c.ttft_s else "-",
            fmt_seconds(c.tpot_s) if c.tpot_s else "-",
            _tps(c.tokens_per_s_per_gpu) if c.fits else "-",
            _kwh(c.energy_kwh_per_mtok) if c.fits else "-",
            _usd(c.usd_per_mtok) if c.fits else "-",
            "chosen" if (p.chosen is not None and i == 0) else (c.short_reason or "fits"),
        )
    if p.chosen:
        t.highlight.update({(0, j) for j in range(3)})
    return t


# --------------------------------------------------------------------------- training


def train_tables(p: TrainPlan) -> list[Table]:
    cfg = p.cfg
    head = (
        f"{p.spec.name} · train on {p.gpu.name} · {cfg.dtype} · seq {cfg.seq:,} · ZeRO-{cfg.zero} · "
        f"recompute {cfg.recompute} · MFU {cfg.mfu:g}"
    )
    s = Table(f"{head}\nCompute", ["quantity", "value"])
    s.add("parameters (active)", f"{fmt_params(p.counts.total)} ({fmt_params(p.counts.active)})")
    s.add("tokens", f"{fmt_params(p.tokens)} ({p.tokens_source})")
    s.add("training FLOPs (with recomputation)", _flops(p.flops["hardware"]))
    s.add("model FLOPs (no recomputation)", _flops(p.flops["model"]))
    s.add("6ND (reference)", _flops(p.flops["six_nd"]))
    s.add("GPU-hours", f"{p.gpu_hours:,.0f}")
    s.add("effective MFU (model FLOPs)", f"{p.effective_mfu:.3f}")
    tables = [s]
    if p.chosen is None:
        t = Table("Does not fit", ["", "what is missing"])
        t.add("does not fit", p.missing or "")
        tables.append(t)
    else:
        c = p.chosen
        lay = c.layout
        usable = p.gpu.memory_bytes * (1 - cfg.headroom)
        m = Table(
            f"Layout: {lay.gpus} GPUs · tp {lay.tp} · pp {lay.pp} · dp {lay.replicas}"
            + (f" · ep {lay.ep}" if lay.ep > 1 else "")
            + (f" (smallest that fits: {p.smallest.layout.gpus})" if p.smallest else ""),
            ["memory per GPU", "size"],
        )
        for label, key in (
            ("weights", "weights_bytes"),
            ("gradients", "gradients_bytes"),
            ("optimizer state", "optimizer_bytes"),
            ("activations", "activations_bytes"),
            ("ZeRO-3 gathered layers", "zero3_gather_bytes"),
        ):
            if c.memory[key]:
                m.add(label, fmt_bytes(c.memory[key]))
        m.add("total", f"{fmt_bytes(c.memory['total_bytes'])} of {fmt_bytes(usable)} usable")
        m.highlight.add((len(m.rows) - 1, 1))
        tables.append(m)
        r = p.run
        run = Table(f"Run on {r['gpus']} GPUs", ["quantity", "value"])
        run.add("wall clock", _hours(r["wall_clock_hours"]))
        run.add("steps (global batch)", f"{r['steps']:,} ({cfg.global_batch_tokens:,} tokens)")
        run.add("power per GPU", f"{r['power_w_per_gpu']:.0f} W")
        run.add("energy (GPU boards)", f"{r['energy_mwh']:,.1f} MWh")
        run.add("cost", _usd(r["cost_usd"]))
        run.add("checkpoint (weights + optimizer)", fmt_bytes(r["checkpoint_bytes"]))
        run.add(
            "checkpoint write",
            fmt_seconds(r["checkpoint_write_s"]) + (" (assumed 10 GB/s)" if r["checkpoint_write_assumed"] else ""),
        )
        run.add("failure rate", f"{r['failure_rate_per_gpu_hour']:.3g} per GPU-hour")
        if r["mtbf_hours"] is not None:
            run.add("job MTBF", _hours(r["mtbf_hours"]))
            run.add("expected interruptions", f"{r['expected_interruptions']:.1f}")
            run.add("checkpoint interval (Young/Daly)", fmt_seconds(r["checkpoint_interval_s"]))
            run.add("time lost to checkpoints + redo", f"{r['checkpoint_overhead_fraction']:.1%}")
        tables.append(run)
    alt = Table("Layouts (fewest GPUs first)", ["tp", "pp", "dp", "GPUs", "memory per GPU", "fits", "note"])
    for a in p.candidates[:10]:
        alt.add(a.layout.tp, a.layout.pp, a.layout.replicas, a.layout.gpus, fmt_bytes(a.memory["total_bytes"]),
                "yes" if a.fits else "no", a.reason or "")  # fmt: skip
    tables.append(alt)
    if p.risks:
        tables.append(risks_table(p.risks))
    return tables


# --------------------------------------------------------------------------- swarm


def swarm_tables(sp: SwarmPlan) -> list[Table]:
    head = f"swarm {sp.swarm.name} · {_workload_line(sp)}"
    mt = Table(f"{head}\nMembers", ["member", "spec", "share", "GPU", "layout", "GPUs", "TTFT", "TPOT", "tok/s",
                                     "energy/1M", "note"])  # fmt: skip
    for m in sp.members:
        c = m.plan.chosen
        if c is None:
            mt.add(m.name, m.plan.spec.name, f"{m.share:.0%}", "-", "-", "-", "-", "-", "-", "-", m.plan.missing or "")
        elif m.role == "router":
            mt.add(m.name, m.plan.spec.name, f"{m.share:.0%}", c.gpu.key, c.layout.label(), c.layout.gpus,
                   fmt_seconds(c.ttft_s), fmt_seconds(c.tpot_s), "-", "-",
                   f"router, {m.plan.workload.output_tokens} tokens out")  # fmt: skip
        else:
            mt.add(m.name, m.plan.spec.name, f"{m.share:.0%}", c.gpu.key, c.layout.label(), c.layout.gpus,
                   fmt_seconds(c.ttft_s), fmt_seconds(c.tpot_s), _tps(c.tokens_per_s), _kwh(c.energy_kwh_per_mtok),
                   c.limited_by)  # fmt: skip
    tables = [mt]
    tables.append(versus_table(sp))
    if sp.risks:
        tables.append(risks_table(sp.risks))
    return tables


def versus_table(sp: SwarmPlan) -> Table:
    cols = ["", f"swarm ({len([m for m in sp.members if m.role == 'specialist'])} specialists"
                + (" + router)" if any(m.role == "router" for m in sp.members) else ")")]  # fmt: skip
    dense = summarize_dense(sp.against) if sp.against is not None else None
    if dense is not None:
        cols.append(f"dense {sp.against.spec.name}")  # type: ignore[union-attr]
    t = Table("Swarm vs one dense model, same traffic" if dense else "Swarm totals", cols)
    s = sp.totals if sp.fits else {}

    def row(label: str, key: str, f) -> None:
        cells = [label, f(s.get(key)) if s.get(key) is not None else "-"]
        if dense is not None:
            cells.append(f(dense.get(key)) if dense.get(key) is not None else "-")
        t.add(*cells)

    row("GPUs", "gpus", str)
    row("VRAM provisioned", "vram_bytes", fmt_bytes)
    row("VRAM used", "vram_used_bytes", fmt_bytes)
    row("weights", "weights_bytes", fmt_bytes)
    row("TTFT (mean, router included)", "ttft_s", fmt_seconds)
    row("TPOT (mean)", "tpot_s", fmt_seconds)
    row("output tokens/s", "tokens_per_s", _tps)
    row("power", "power_w", lambda x: f"{x / 1000:.2f} kW")
    row("energy per 1M output tokens", "energy_kwh_per_million_tokens", _kwh)
    row("cost per 1M output tokens", "usd_per_million_tokens", _usd)
    if dense is not None and not dense.get("fits"):
        t.caption = f"dense model: {dense.get('missing')}"
    if not sp.fits:
        t.caption = (t.caption + "\n" if t.caption else "") + f"swarm: {sp.missing}"
    return t


# --------------------------------------------------------------------------- documents


def _plot_png(kind: str, plan: Any) -> bytes | None:
    """A PNG for the document, or None without matplotlib (the report stays complete without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    fig = None
    try:
        if kind == "serve":
            pts = batch_curve(plan)
            if not pts:
                return None
            fig, ax = plt.subplots(figsize=(7, 3.6))
            b = [x["batch"] for x in pts]
            ax.plot(b, [x["tpot_s"] * 1e3 for x in pts], marker="o", ms=3, label="TPOT (ms)")
            ax.set_xscale("log")
            ax.set_xlabel("requests per replica")
            ax.set_ylabel("TPOT (ms)")
            ax2 = ax.twinx()
            ax2.plot(b, [x["tokens_per_s_per_gpu"] for x in pts], color="tab:green", marker="s", ms=3,
                     label="tokens/s per GPU")  # fmt: skip
            ax2.set_ylabel("output tokens/s per GPU", color="tab:green")
            ax2.legend(loc="lower right", fontsize=8)
            if plan.workload.slo_tpot_s:
                ax.axhline(plan.workload.slo_tpot_s * 1e3, color="tab:red", ls="--", lw=1, label="TPOT SLO")
            ax.axvline(plan.chosen.batch, color="gray", ls=":", lw=1, label="operating batch")
            ax.legend(loc="upper left", fontsize=8)
            ax.set_title(f"{plan.spec.name} on {plan.chosen.gpu.key} ({plan.chosen.layout.label()}): batch vs latency",
                         fontsize=9)  # fmt: skip
        elif kind == "train":
            cands = plan.candidates[:10]
            if not cands:
                return None
            fig, ax = plt.subplots(figsize=(7, 3.6))
            labels = [f"tp{c.layout.tp} pp{c.layout.pp}\ndp{c.layout.replicas}" for c in cands]
            ax.bar(labels, [c.memory["total_bytes"] / GIB for c in cands],
                   color=["tab:green" if c.fits else "tab:gray" for c in cands])  # fmt: skip
            ax.axhline(plan.gpu.memory_bytes * (1 - plan.cfg.headroom) / GIB, color="tab:red", ls="--", lw=1,
                       label="usable per GPU")  # fmt: skip
            ax.set_ylabel("GiB per GPU")
            ax.tick_params(axis="x", labelsize=7)
            ax.legend(fontsize=8)
            ax.set_title(f"{plan.spec.name}: memory per GPU by layout (ZeRO-{plan.cfg.zero})", fontsize=9)
        else:
            if not plan.fits or plan.against is None or plan.against.chosen is None:
                return None
            d = summarize_dense(plan.against)
            s = plan.totals
            keys = [
                ("GPUs", "gpus", 1),
                ("power kW", "power_w", 1e-3),
                ("Wh / 1M tok", "energy_kwh_per_million_tokens", 1e3),
            ]
            fig, axes = plt.subplots(1, len(keys), figsize=(8, 3))
            for ax, (label, key, scale) in zip(axes, keys, strict=True):
                ax.bar(["swarm", "dense"], [s[key] * scale, d[key] * scale], color=["tab:blue", "tab:orange"])
                ax.set_title(label, fontsize=9)
            fig.suptitle(f"swarm {plan.swarm.name} vs {plan.against.spec.name}", fontsize=10)
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        return buf.getvalue()
    except Exception:
        return None
    finally:
        if fig is not None:
            plt.close(fig)


def _method_lines(kind: str) -> list[str]:
    common = [
        "Latency is a roofline bound on each GPU, max(FLOPs / (peak × 0.6), bytes / (bandwidth × 0.8)) unless the "
        "GPU database holds measured rates (godprof.analytic.roofline), split ideally over tensor-parallel ranks.",
        "Tensor-parallel all-reduce (two per block) costs 2(tp−1)/tp × bytes / link bandwidth (ring all-reduce, "
        "Patarasuk & Yuan 2009; NCCL's bus-bandwidth factor) plus 5 µs latency per all-reduce.",
        "Power per GPU = TDP × (0.2 + 0.8 × u), u = compute utilisation + ½ × HBM utilisation (capped at 1); "
        "GPU boards only: multiply by your PUE for the facility.",
    ]
    if kind == "train":
        return [
            "Training FLOPs = 3 × forward (6N plus attention) + recomputation (Kaplan et al. 2020; Korthikanti et "
            "al. 2022); GPU-hours = FLOPs / (dense peak × MFU).",
            "Memory: 16-bit weights and gradients, AdamW state 12 B/param, sharded by ZeRO stage (Rajbhandari et "
            "al. 2020) after the tensor/pipeline split; activations of one micro-batch / tp.",
            "Chinchilla tokens = 20 × parameters (Hoffmann et al. 2022). Checkpoint interval "
            "τ = √(2 × write time × MTBF) (Young 1974, Daly 2006); failure rate default from the Llama 3 paper "
            "(419 unexpected interruptions in 54 days on 16,384 GPUs).",
            common[2],
        ]
    return common + [
        "Continuous batching: TPOT = decode step + batch × prefill time / output tokens; TTFT = prefill + one "
        "step. KV memory is held at prompt + output tokens; best-of-n shares the prompt's KV.",
        "Memory per GPU: weights + KV/state + one 8k-token prefill chunk of activations ≤ (1 − headroom) × capacity.",
    ]


def _assumptions(kind: str, plan: Any) -> list[str]:
    if kind == "train":
        c = plan.cfg
        return [
            f"GPU: {plan.gpu.name} ({fmt_bytes(plan.gpu.memory_bytes)}, {c.headroom:.0%} kept free), "
            f"{c.gpus_per_node} per node",
            f"{c.dtype} mixed precision, {c.optimizer}, ZeRO-{c.zero}, recompute {c.recompute}, sequence {c.seq:,}, "
            f"micro-batch {c.micro_batch}, global batch {c.global_batch_tokens:,} tokens",
            f"MFU {c.mfu:g} of the dense {c.dtype} peak",
            f"failure rate {c.failure_rate_per_gpu_hour:.3g} per GPU-hour; "
            + ("checkpoint write time given" if c.checkpoint_write_s else "checkpoint written at 10 GB/s"),
        ]
    o = plan.options
    out = [
        f"traffic: {_workload_line(plan)}",
        f"weights {o.dtype}; {o.headroom:.0%} of each GPU kept free; {o.gpus_per_node} GPUs per node"
        + (f"; at most {o.max_gpus} GPUs" if o.max_gpus else ""),
    ]
    if o.usd_per_gpu_hour is not None:
        out.append(f"price: ${o.usd_per_gpu_hour:g} per GPU-hour")
    return out


def _summary(kind: str, plan: Any) -> str:
    if kind == "serve":
        c = plan.chosen
        if c is None:
            return f"**Does not fit.** {plan.missing}"
        return (
            f"Serve **{plan.spec.name}** on **{c.layout.gpus} × {c.gpu.name}** ({c.layout.label()}): TTFT "
            f"{fmt_seconds(c.ttft_s)}, TPOT {fmt_seconds(c.tpot_s)}, {_tps(c.tokens_per_s_per_gpu)} output "
            f"tokens/s per GPU, {_per_million(c.energy_kwh_per_mtok, c.usd_per_mtok)} per million output tokens."
        )
    if kind == "train":
        if plan.chosen is None:
            return f"**Does not fit.** {plan.missing}"
        r = plan.run
        return (
            f"Train **{plan.spec.name}** on {fmt_params(plan.tokens)} tokens: {_flops(plan.flops['hardware'])}, "
            f"**{plan.gpu_hours:,.0f} GPU-hours** on {plan.gpu.name}; the smallest layout that fits uses "
            f"{plan.smallest.layout.gpus} GPUs; on {r['gpus']} GPUs the run takes {_hours(r['wall_clock_hours'])} and "
            f"{r['energy_mwh']:,.1f} MWh."
        )
    if not plan.fits:
        return f"**The swarm does not fit.** {plan.missing}"
    s = plan.totals
    text = (
        f"The swarm **{plan.swarm.name}** needs **{s['gpus']} GPUs**, "
        f"{_per_million(s['energy_kwh_per_million_tokens'], s['usd_per_million_tokens'])} per million output tokens."
    )
    if plan.against is not None:
        d = summarize_dense(plan.against)
        if d.get("fits"):
            text += (
                f" One dense **{plan.against.spec.name}** serving the same traffic needs **{d['gpus']} GPUs**, "
                f"{_per_million(d['energy_kwh_per_million_tokens'], d['usd_per_million_tokens'])} per million."
            )
        else:
            text += f" The dense {plan.against.spec.name} does not fit: {d.get('missing')}"
    return text


def _tables(kind: str, plan: Any) -> list[Table]:
    return {"serve": serve_tables, "train": train_tables, "swarm": swarm_tables}[kind](plan)


def _title(kind: str, plan: Any) -> str:
    if kind == "serve":
        return f"Capacity plan: serving {plan.spec.name}"
    if kind == "train":
        return f"Capacity plan: training {plan.spec.name}"
    return f"Capacity plan: swarm {plan.swarm.name}" + (f" vs {plan.against.spec.name}" if plan.against else "")


def _risks(kind: str, plan: Any) -> list[str]:
    return list(plan.risks)


def markdown_report(kind: str, plan: Any, plot: bool = True) -> str:
    """A self-contained Markdown document (``kind``: serve, train or swarm)."""
    lines = [f"# {_title(kind, plan)}", "", _summary(kind, plan), "", "## Assumptions", ""]
    lines += [f"- {a}" for a in _assumptions(kind, plan)]
    lines += ["", "## Plan", ""]
    for t in _tables(kind, plan):
        if t.title == "Risks":
            continue
        t2 = Table(t.title.split("\n")[-1], t.columns, t.rows, t.highlight, t.caption)
        lines.append(t2.to_markdown())
    png = _plot_png(kind, plan) if plot else None
    if png:
        lines += ["## Figure", "", f"![plot](data:image/png;base64,{base64.b64encode(png).decode()})", ""]
    lines += ["## Risks", ""]
    lines += [f"- {r}" for r in _risks(kind, plan)] or ["- none found by the model"]
    lines += ["", "## Method", ""]
    lines += [f"- {m}" for m in _method_lines(kind)]
    lines += ["", "_Generated by godprof plan; figures are model estimates, not measurements._", ""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0 1.2em}th,td{border:1px solid #ddd;padding:.3em .6em;font-size:.9em}
th{background:#f4f4f4;text-align:left}td{text-align:right}td:first-child{text-align:left}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}.hl{font-weight:700;color:#1a7f37}
.summary{background:#f6f8fa;border-left:4px solid #0969da;padding:.6em 1em}
"""


def _html_table(t: Table) -> str:
    out = [f"<table><caption>{html.escape(t.title.split(chr(10))[-1])}</caption><tr>"]
    out += [f"<th>{html.escape(c)}</th>" for c in t.columns]
    out.append("</tr>")
    for r, row in enumerate(t.rows):
        cells = "".join(
            f'<td class="hl">{html.escape(c)}</td>' if (r, i) in t.highlight else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    if t.caption:
        out.append(f"<p>{html.escape(t.caption)}</p>")
    return "".join(out)


def _md_inline(text: str) -> str:
    """Escape, then turn **bold** into <strong>."""
    parts = html.escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def html_report(kind: str, plan: Any, plot: bool = True) -> str:
    """A self-contained HTML document (inline CSS, plot as a data: URI)."""
    title = _title(kind, plan)
    body = [f"<h1>{html.escape(title)}</h1>", f'<p class="summary">{_md_inline(_summary(kind, plan))}</p>']
    body.append(
        "<h2>Assumptions</h2><ul>" + "".join(f"<li>{html.escape(a)}</li>" for a in _assumptions(kind, plan)) + "</ul>"
    )
    body.append("<h2>Plan</h2>")
    body += [_html_table(t) for t in _tables(kind, plan) if t.title != "Risks"]
    png = _plot_png(kind, plan) if plot else None
    if png:
        body.append(f'<h2>Figure</h2><img alt="plot" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    risks = _risks(kind, plan) or ["none found by the model"]
    body.append("<h2>Risks</h2><ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in risks) + "</ul>")
    body.append("<h2>Method</h2><ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in _method_lines(kind)) + "</ul>")
    body.append("<p><em>Generated by godprof plan; figures are model estimates, not measurements.</em></p>")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
