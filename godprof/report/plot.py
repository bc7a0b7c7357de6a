"""Plots of a sweep (``godprof.report.sweep.sweep``): terminal text, a PNG, a self-contained HTML page.

Both show what separates attention from state-space models as context grows: KV + state bytes against
context on log-log axes (attention's KV cache is a line of slope 1, an SSM's state is flat) with the
GPU's memory as a horizontal line, and the expected decode step time (TPOT) against context.

matplotlib is optional (the ``plot`` extra) and imported only inside ``write_png``/``write_html``; the
terminal plot is drawn here in plain text.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from godprof.errors import GodprofError
from godprof.report.format import fmt_bytes, fmt_seconds

MARKERS = "*o+x%@&$"
OVERLAP = "#"  # two or more series in one cell

Series = tuple[str, list[float], list[float]]  # label, xs, ys


def sweep_series(doc: dict[str, Any], key: str) -> list[Series]:
    """(label, contexts, values) per (spec, batch, GPU, dtype) for one point field, e.g. 'cache_bytes' or
    'tpot_s'; the label names the batch, GPU and dtype only where the sweep has several."""
    multi = len(doc["batches"]) > 1
    gpus = len({s["gpu"] for s in doc.get("setups", [])}) > 1
    dtypes = len({s["dtype"] for s in doc.get("setups", [])}) > 1
    groups: dict[tuple[str, int, str, str], tuple[list[float], list[float]]] = {}
    for p in doc["points"]:
        xs, ys = groups.setdefault((p["spec"], p["batch"], p.get("gpu", ""), p.get("dtype", "")), ([], []))
        xs.append(float(p["context"]))
        ys.append(float(p[key]))
    out = []
    for (name, b, gpu, dtype), (xs, ys) in groups.items():
        extra = [f"batch {b}"] * multi + [gpu] * gpus + [dtype] * dtypes
        out.append((f"{name} ({', '.join(extra)})" if extra else name, xs, ys))
    return out


# --------------------------------------------------------------------------- terminal


def _fmt_ctx(x: float) -> str:
    n = int(round(x))
    for scale, suffix in ((1 << 20, "M"), (1 << 10, "k")):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{suffix}"
    return f"{n:,}"


def text_plot(
    series: Sequence[Series],
    title: str,
    y_fmt: Callable[[float], str],
    hline: tuple[str, float] | None = None,
    width: int = 60,
    height: int = 12,
) -> str:
    """A log-log line plot in plain text: one marker per series, a dashed horizontal line for ``hline``.

    Between sweep points the line is interpolated in log space column by column; zero or negative values
    (no KV, no state) are not drawn.
    """
    pos = [(lab, [(x, y) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]) for lab, xs, ys in series]
    ys_all = [y for _, pts in pos for _, y in pts] + ([hline[1]] if hline else [])
    xs_all = [x for _, pts in pos for x, _ in pts]
    if not ys_all or not xs_all:
        return f"{title}\n(nothing to plot)\n"
    x0, x1 = math.log10(min(xs_all)), math.log10(max(xs_all))
    y0, y1 = math.log10(min(ys_all)), math.log10(max(ys_all))
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 0.5, x1 + 0.5
    grid = [[" "] * width for _ in range(height)]

    def col(x: float) -> int:
        return round((math.log10(x) - x0) / (x1 - x0) * (width - 1))

    def row(y: float) -> int:
        return height - 1 - round((math.log10(y) - y0) / (y1 - y0) * (height - 1))

    if hline:
        r = row(hline[1])
        for c in range(width):
            grid[r][c] = "-"
    owner: dict[tuple[int, int], int] = {}  # cell -> series drawn there; shared cells get OVERLAP
    overlap = False

    def put(r: int, c: int, i: int) -> None:
        nonlocal overlap
        if owner.get((r, c), i) != i:
            grid[r][c] = OVERLAP
            overlap = True
        else:
            owner[(r, c)] = i
            grid[r][c] = MARKERS[i % len(MARKERS)]

    for i, (_, pts) in enumerate(pos):
        cells = {(row(y), col(x)) for x, y in pts}
        for (xa, ya), (xb, yb) in zip(pts, pts[1:], strict=False):
            ca, cb = col(xa), col(xb)
            for c in range(ca, cb + 1):
                f = 0.0 if cb == ca else (c - ca) / (cb - ca)
                ly = math.log10(ya) + f * (math.log10(yb) - math.log10(ya))
                cells.add((row(10**ly), c))
        for r, c in sorted(cells):
            put(r, c, i)
    labels = {0: y_fmt(10**y1), height - 1: y_fmt(10**y0), (height - 1) // 2: y_fmt(10 ** ((y0 + y1) / 2))}
    lw = max(len(v) for v in labels.values())
    lines = [title]
    for r in range(height):
        lines.append(f"{labels.get(r, ''):>{lw}} |{''.join(grid[r])}")
    lines.append(" " * lw + " +" + "-" * width)
    left, right, mid = _fmt_ctx(10**x0), _fmt_ctx(10**x1), _fmt_ctx(10 ** ((x0 + x1) / 2))
    axis = [" "] * width
    for text, at in ((left, 0), (mid, width // 2 - len(mid) // 2), (right, width - len(right))):
        axis[at : at + len(text)] = list(text)
    axis_line, xlabel = " " * lw + "  " + "".join(axis), "context (tokens, log)"
    fits = len(axis_line) + 2 + len(xlabel) <= 80  # within 80 columns, else the label goes under the axis
    lines += [axis_line + "  " + xlabel] if fits else [axis_line, " " * (lw + 2 + width - len(xlabel)) + xlabel]
    legend = [f"{MARKERS[i % len(MARKERS)]} {lab}" for i, (lab, _) in enumerate(pos)]
    if overlap:
        legend.append(f"{OVERLAP} overlap")
    if hline:
        legend.append(f"- {hline[0]}")
    line = ""
    for item in legend:  # the legend wraps between entries to stay within 80 columns
        if line and len(line) + 3 + len(item) > 80:
            lines.append(line)
            line = ""
        line = (line + "   " + item) if line else " " * lw + "  " + item
    lines.append(line)
    return "\n".join(lines) + "\n"


def sweep_text_plots(doc: dict[str, Any], width: int = 60, height: int = 12) -> str:
    """The terminal plots of a sweep: KV + state bytes (with the GPU memory line), TPOT and TTFT."""
    mem = doc["gpu_memory_bytes"]
    a = text_plot(
        sweep_series(doc, "cache_bytes"),
        "KV cache + SSM state vs context (log-log)",
        fmt_bytes,
        (f"{doc['roofline']['gpu_name']} memory {fmt_bytes(mem)}", float(mem)),
        width,
        height,
    )
    title = "Decode step time (expected TPOT) vs context (log-log)"
    b = text_plot(sweep_series(doc, "tpot_s"), title, fmt_seconds, None, width, height)
    title = "Prefill time (expected TTFT) vs context (log-log): quadratic attention bends up"
    c = text_plot(sweep_series(doc, "ttft_s"), title, fmt_seconds, None, width, height)
    return a + "\n" + b + "\n" + c


# --------------------------------------------------------------------------- PNG / HTML


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise GodprofError(
            "plotting needs matplotlib: pip install 'godprof[plot]' (the terminal plot needs nothing)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sweep_figure(doc: dict[str, Any]) -> Any:
    """A matplotlib Figure: left, KV + state (solid) and weights + cache + activations (dashed) in GiB vs
    context with the GPU memory line; middle, expected TPOT vs context; right, expected TTFT vs context
    (where quadratic attention, sparse attention's O(L k) and linear-time mixers part ways). Log axes."""
    plt = _pyplot()
    from matplotlib import ticker

    fig, (ax_m, ax_t, ax_p) = plt.subplots(1, 3, figsize=(17, 4.8), constrained_layout=True)
    gib = float(1 << 30)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    cache = sweep_series(doc, "cache_bytes")
    serving = sweep_series(doc, "serving_bytes")
    tpot = sweep_series(doc, "tpot_s")
    ttft = sweep_series(doc, "ttft_s")
    series = zip(cache, serving, tpot, ttft, strict=True)
    for i, ((lab, xs, ys), (_, _, ts), (_, _, tt), (_, _, pt)) in enumerate(series):
        c = colors[i % len(colors)]
        ax_m.plot(xs, [y / gib for y in ys], "-o", color=c, ms=3, label=f"{lab}: KV + state")
        ax_m.plot(xs, [y / gib for y in ts], "--", color=c, lw=1, label=f"{lab}: + weights, activations")
        ax_t.plot(xs, [y * 1e3 for y in tt], "-o", color=c, ms=3, label=lab)
        ax_p.plot(xs, pt, "-o", color=c, ms=3, label=lab)
    lines = {(s["gpu_name"], s["gpu_memory_bytes"]) for s in doc.get("setups", [])}
    lines = lines or {(doc["roofline"]["gpu_name"], doc["gpu_memory_bytes"])}
    for k, (gpu_name, mem_bytes) in enumerate(sorted(lines)):  # one memory line per GPU of the sweep
        mem = mem_bytes / gib
        ax_m.axhline(
            mem, color="black", lw=1.2, ls=(":", "-.", "--")[k % 3], label=f"{gpu_name} memory ({mem:.0f} GiB)"
        )
    for ax, ylab, title in (
        (ax_m, "GiB", "Memory vs context"),
        (ax_t, "ms per decode step", f"Expected decode step (TPOT) on {doc['gpu']}"),
        (ax_p, "seconds to first token", f"Expected prefill (TTFT) on {doc['gpu']}"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _fmt_ctx(v)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        lo, hi = ax.get_ylim()
        if hi < 100 * lo:  # under two decades: label the 2..9 ticks plainly (matplotlib writes 6x10^0)
            ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel(ylab)
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
        # below the axes, never over a curve (constrained_layout makes room for it)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    return fig


def _png_bytes(doc: dict[str, Any]) -> bytes:
    plt = _pyplot()
    fig = sweep_figure(doc)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # keeps the legends below the axes
    plt.close(fig)
    return buf.getvalue()


def write_png(doc: dict[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.write_bytes(_png_bytes(doc))
    return p


def write_html(doc: dict[str, Any], path: str | Path, tables: Sequence[Any] = ()) -> Path:
    """A self-contained page: the PNG embedded as base64 plus the sweep tables; nothing is fetched."""
    img = base64.b64encode(_png_bytes(doc)).decode("ascii")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>godprof sweep</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "td:first-child{text-align:left}</style>",
        "</head><body>",
        f"<h1>godprof sweep on {html.escape(doc['roofline']['gpu_name'])}</h1>",
        f"<img alt='memory and decode time vs context' src='data:image/png;base64,{img}'>",
    ]
    for t in tables:
        parts.append(f"<h3>{html.escape(t.title)}</h3><table><tr>")
        parts += [f"<th>{html.escape(c)}</th>" for c in t.columns]
        parts.append("</tr>")
        for r in t.rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
        parts.append("</table>")
        if t.caption:
            parts.append(f"<p>{html.escape(t.caption)}</p>")
    parts.append("</body></html>\n")
    p = Path(path)
    p.write_text("\n".join(parts), encoding="utf-8")
    return p


def write_plot(doc: dict[str, Any], path: str | Path, tables: Sequence[Any] = ()) -> Path:
    """PNG or HTML by the file's suffix (.png, .html/.htm); anything else is a user error."""
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        return write_png(doc, path)
    if suffix in (".html", ".htm"):
        return write_html(doc, path, tables)
    raise GodprofError(f"--plot: unsupported file type {suffix or '(none)'!r}; use a .png or .html file")
