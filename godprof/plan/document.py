"""Self-contained Markdown and HTML capacity-planning documents of a plan.

A document has a summary, the assumptions, the plan's tables, a figure, the risks and the method. The
figure is drawn with matplotlib when it is installed: the HTML document embeds it as a base64 PNG
(``data:`` URI) so it stays one file; the Markdown document links a PNG written beside the .md (wikis and
GitHub do not show data URIs), or embeds it when asked. Without matplotlib the documents are complete
minus the figure.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from godprof.plan.report import GIB, _flops, _hours, _per_million, _tps, _workload_line, plan_tables
from godprof.plan.serving import batch_curve
from godprof.plan.swarm import summarize_dense
from godprof.report.format import fmt_bytes, fmt_params, fmt_seconds
from godprof.report.table import Table


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
            if plan.workload.slo_tpot_s:
                ax.axhline(plan.workload.slo_tpot_s * 1e3, color="tab:red", ls="--", lw=1, label="TPOT SLO")
            ax.axvline(plan.chosen.batch, color="gray", ls=":", lw=1, label="operating batch")
            # one legend for both axes, below the plot, so no curve is ever hidden behind it
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = ax2.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=4, fontsize=8,
                      frameon=False)  # fmt: skip
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
            ax.axhline(plan.usable_bytes / GIB, color="tab:red", ls="--", lw=1,
                       label="usable per GPU")  # fmt: skip
            ax.set_ylabel("GiB per GPU")
            ax.tick_params(axis="x", labelsize=7)
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)  # outside the bars
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
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # keeps the outside legends
        return buf.getvalue()
    except Exception:
        return None
    finally:
        if fig is not None:
            plt.close(fig)


def _method_lines(kind: str) -> list[str]:
    common = [
        "Latency on each GPU, split ideally over tensor-parallel ranks: the speed-of-light bound max(FLOPs / peak, "
        "bytes / bandwidth) at 100% of the datasheet, and the expected time of the per-operation efficiency model "
        "(godprof.analytic.step_time; fractions with their sources in godprof/data/efficiency.yaml).",
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
        "Continuous batching with chunked prefill (vLLM, SGLang, TRT-LLM): each engine step carries the decodes "
        "and batch × prompt × τ / output prefill tokens in passes of --prefill-chunk tokens, one read of the "
        "weights per pass; pipeline stages run pp micro-batches, so prefill overlaps across stages. TPOT = the "
        "mean inter-token latency at steady state, step / τ (τ = (1 − a^(k+1)) / (1 − a) tokens per step with "
        "speculative decoding, else 1); TTFT under load = half a step's wait + the prompt's chunks, one step "
        "each (+ M/D/1 queueing for a request rate; + KV transfer with disaggregated prefill). A prefix cache "
        "hit rate h leaves (1 − h) × prompt tokens to prefill. KV memory is held at prompt + output tokens; "
        "best-of-n shares the prompt's KV.",
        "Memory per GPU: weights + KV/state + the largest prefill pass's activations (8,192-token chunks, "
        "last-position logits) ≤ (1 − headroom) × capacity − runtime overheads (CUDA context, workspaces, "
        "communication buffers).",
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


def _title(kind: str, plan: Any) -> str:
    if kind == "serve":
        return f"Capacity plan: serving {plan.spec.name}"
    if kind == "train":
        return f"Capacity plan: training {plan.spec.name}"
    return f"Capacity plan: swarm {plan.swarm.name}" + (f" vs {plan.against.spec.name}" if plan.against else "")


def _risks(kind: str, plan: Any) -> list[str]:
    return list(plan.risks)


def markdown_report(
    kind: str, plan: Any, plot: bool = True, figure: Path | None = None, embed: bool = False
) -> tuple[str, bytes | None]:
    """A Markdown document (``kind``: serve, train or swarm) and its figure as PNG bytes (or None).

    The figure is linked as ``figure`` (a path relative to the document, which the caller writes the PNG
    to) or, with ``embed``, inlined as a data URI. With neither, the document has no figure."""  # fmt: skip
    lines = [f"# {_title(kind, plan)}", "", _summary(kind, plan), "", "## Assumptions", ""]
    lines += [f"- {a}" for a in _assumptions(kind, plan)]
    lines += ["", "## Plan", ""]
    for t in plan_tables(kind, plan):
        if t.title == "Risks":
            continue
        t2 = Table(t.title.split("\n")[-1], t.columns, t.rows, t.highlight, t.caption)
        lines.append(t2.to_markdown())
    png = _plot_png(kind, plan) if plot and (embed or figure is not None) else None
    if png:
        src = f"data:image/png;base64,{base64.b64encode(png).decode()}" if embed else str(figure)
        lines += ["## Figure", "", f"![plot]({src})", ""]
    lines += ["## Risks", ""]
    lines += [f"- {r}" for r in _risks(kind, plan)] or ["- none found by the model"]
    lines += ["", "## Method", ""]
    lines += [f"- {m}" for m in _method_lines(kind)]
    lines += ["", "_Generated by godprof plan; figures are model estimates, not measurements._", ""]
    return "\n".join(lines), (None if embed else png)


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
    body += [_html_table(t) for t in plan_tables(kind, plan) if t.title != "Risks"]
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
