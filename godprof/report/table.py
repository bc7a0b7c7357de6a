"""A plain table model and its renderings (rich, Markdown, CSV). Reports build Tables; the CLI prints.

Terminal rendering never cuts a cell: a table wider than the terminal (or the 80 columns a pipe gets)
folds its columns into several tables that repeat its label columns (``Table.keys``), and a table too
wide even for that is stacked, each row as ``column: value`` lines. Only prose columns (``Table.prose``: notes, risks,
reasons) wrap, between words; names and numbers are never wrapped, folded or ellipsised. Titles and
captions are wrapped as left-aligned prose at the terminal width, not at the table's.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

# A boxed rich table with padding 1: each column costs its text plus 3 (two pads and a rule), plus 1.
_COLUMN_CHROME = 3
_PROSE_MIN_WIDTH = 24  # a prose column is not squeezed narrower than this (or its longest word)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    highlight: set[tuple[int, int]] = field(default_factory=set)  # (row, col) cells to emphasise
    caption: str | None = None
    prose: set[int] = field(default_factory=set)  # columns of prose: left-aligned, may wrap between words
    keys: int = 1  # leading columns that name a row: repeated in every part when the table folds

    def add(self, *cells: Any) -> None:
        self.rows.append([str(c) for c in cells])

    def to_rich(self) -> Any:
        """One rich table (title and caption included) at its natural width; see ``renderables``."""
        return self._rich(list(range(len(self.columns))), self.title, caption=self.caption)

    def _rich(self, cols: list[int], title: str | None, caption: str | None = None) -> Any:
        from rich.table import Table as RichTable
        from rich.text import Text

        t = RichTable(title=title, caption=caption, title_justify="left", caption_justify="left")
        for i in cols:
            right = i >= self.keys and i not in self.prose
            t.add_column(self.columns[i], justify="right" if right else "left", no_wrap=i not in self.prose)
        for r, row in enumerate(self.rows):
            t.add_row(*(Text(row[i], style="bold green" if (r, i) in self.highlight else "") for i in cols))
        return t

    def _widths(self) -> tuple[list[int], list[int]]:
        """Natural and minimum display width of each column (they differ only for prose columns)."""
        from rich.cells import cell_len

        natural, minimum = [], []
        for i, head in enumerate(self.columns):
            cells = [head] + [row[i] for row in self.rows if i < len(row)]
            nat = max(cell_len(c) for c in cells)
            natural.append(nat)
            if i in self.prose:
                word = max((cell_len(w) for c in cells for w in c.split()), default=1)
                minimum.append(min(nat, max(word, _PROSE_MIN_WIDTH)))
            else:
                minimum.append(nat)
        return natural, minimum

    def renderables(self, width: int) -> list[Any]:
        """Rich renderables that fit ``width`` columns without cutting a name or number.

        The table as it is when it fits; else its columns folded into parts, each titled "(part i of n:
        columns)" and repeating the first ``keys`` columns; else, when those and one more column do not
        fit, each row stacked as ``column: value`` lines. Title and caption are prose wrapped at ``width``.
        Widths count prose columns at their minimum (``_PROSE_MIN_WIDTH`` or their longest word)."""
        from rich.text import Text

        _, minimum = self._widths()

        def span(cols: list[int]) -> int:
            return sum(minimum[i] + _COLUMN_CHROME for i in cols) + 1

        out: list[Any] = [Text(self.title, style="italic")] if self.title else []
        keys = list(range(min(self.keys, len(self.columns))))
        data = list(range(len(keys), len(self.columns)))
        if span(keys + data) <= width:
            out.append(self._rich(keys + data, None))
        elif all(span(keys + [i]) <= width for i in data):
            parts: list[list[int]] = [[]]
            for i in data:
                if parts[-1] and span(keys + parts[-1] + [i]) > width:
                    parts.append([])
                parts[-1].append(i)
            for n, part in enumerate(parts, 1):
                names = ", ".join(self.columns[i] for i in part if self.columns[i])
                out.append(Text(f"(part {n} of {len(parts)}: {names})", style="dim"))
                out.append(self._rich(keys + part, None))
        else:
            out.extend(self._stacked(width))
        if self.caption:
            out.append(Text(self.caption))
        return out

    def _stacked(self, width: int) -> list[Any]:
        """Each row as ``column: value`` lines: on one line where they fit, else the value on the next line,
        indented (prose wraps between words there; a single word wider than the terminal folds)."""
        from rich.cells import cell_len
        from rich.text import Text

        out: list[Any] = []
        for r, row in enumerate(self.rows):
            out.append(Text(f"{self.columns[0] or 'row'}: {row[0]}", style="bold"))
            for i in range(1, len(self.columns)):
                label, value = f"  {self.columns[i] or '-'}:", row[i] if i < len(row) else ""
                style = "bold green" if (r, i) in self.highlight else ""
                if cell_len(label) + 1 + cell_len(value) <= width:
                    out.append(Text.assemble(label + " ", (value, style)))
                else:
                    out.append(Text(label))
                    out.append(Text("    " + value, style=style, overflow="fold"))
        return out

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
