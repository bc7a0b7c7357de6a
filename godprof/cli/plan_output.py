"""How ``godprof plan`` writes its result: JSON, Markdown, HTML or tables, to stdout or to ``-o FILE``.

Every file written is named on stderr (``wrote plan.md``), as ``sweep --plot`` and ``import -o`` do. A
Markdown report written to a file gets its figure as a PNG beside it (``plan.md`` -> ``plan.png``) and
links it, since wikis and GitHub do not show ``data:`` URIs; ``--embed-plot`` inlines it instead (the only
way to get the figure into Markdown on stdout). HTML always embeds it: an HTML report is one file.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any


class PlanFormat(str, Enum):
    table = "table"
    json = "json"
    md = "md"
    html = "html"


def _wrote(path: Path, what: str) -> None:
    from godprof.cli.common import err_console

    err_console().print(f"wrote {path}: {what}", markup=False, highlight=False, soft_wrap=True)


def emit_plan(kind: str, result: Any, fmt: PlanFormat, output: Path | None, plot: bool, embed_plot: bool) -> None:
    """Write the plan (``kind``: serve, train or swarm) in ``fmt`` to ``output`` or stdout."""
    if fmt == PlanFormat.json:
        from godprof.plan.contract import plan_json

        text = json.dumps(plan_json(kind, result), indent=2) + "\n"
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text, encoding="utf-8")
            _wrote(output, f"{kind} plan, JSON")
        return
    from godprof.plan import document

    if fmt == PlanFormat.md:
        figure = output.with_suffix(".png") if output is not None and not embed_plot else None
        text, png = document.markdown_report(kind, result, plot=plot, figure=Path(figure.name) if figure else None,
                                             embed=embed_plot)  # fmt: skip
        if output is None:
            sys.stdout.write(text)
            return
        output.write_text(text, encoding="utf-8")
        _wrote(output, f"{kind} plan, Markdown" + (", figure embedded" if embed_plot and plot else ""))
        if png is not None and figure is not None:
            figure.write_bytes(png)
            _wrote(figure, "the report's figure (PNG), linked from " + output.name)
        return
    if fmt == PlanFormat.html:
        text = document.html_report(kind, result, plot=plot)
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text, encoding="utf-8")
            _wrote(output, f"{kind} plan, self-contained HTML")
        return
    from godprof.cli.common import Format, emit_tables
    from godprof.plan.report import plan_tables

    tables = plan_tables(kind, result)
    if output is not None:
        output.write_text("\n".join(t.to_markdown() for t in tables), encoding="utf-8")
        _wrote(output, f"{kind} plan tables, Markdown")
        return
    emit_tables(tables, Format.table)
