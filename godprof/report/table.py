"""A plain table model and its renderings (rich, Markdown, CSV). Reports build Tables; the CLI prints."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    highlight: set[tuple[int, int]] = field(default_factory=set)  # (row, col) cells to emphasise
    caption: str | None = None

    def add(self, *cells: Any) -> None:
        self.rows.append([str(c) for c in cells])

    def to_rich(self) -> Any:
        from rich.table import Table as RichTable

        t = RichTable(title=self.title, caption=self.caption, title_justify="left", caption_justify="left")
        for i, col in enumerate(self.columns):
            t.add_column(col, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for r, row in enumerate(self.rows):
            t.add_row(*(f"[bold green]{c}[/]" if (r, i) in self.highlight else c for i, c in enumerate(row)))
        return t

    def to_markdown(self) -> str:
        def esc(c: str) -> str:
            return c.replace("|", "\\|")

        lines = [f"### {self.title}", "", "| " + " | ".join(esc(c) for c in self.columns) + " |"]
        lines.append("|" + "|".join([" --- "] + [" ---: "] * (len(self.columns) - 1)) + "|")
        for r, row in enumerate(self.rows):
            cells = [f"**{esc(c)}**" if (r, i) in self.highlight else esc(c) for i, c in enumerate(row)]
            lines.append("| " + " | ".join(cells) + " |")
        if self.caption:
            lines += ["", self.caption]
        return "\n".join(lines) + "\n"


def tables_to_csv(rows: list[dict[str, Any]]) -> str:
    """Flat records (one dict per row) as CSV with a header; columns in first-seen order."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are kept as JSON-ish strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
