"""Rendering a table model as LaTeX (booktabs), Markdown (tabulate) or CSV (pandas).

A `Table` holds plain cells: leading row labels (str), then values; a value cell is a `Value` or a
list of them, shown joined by " / " (PatchGuard's "clean / adversarial"). `–` marks a missing value,
`*` one averaged over fewer items than its peers, and bold the value a layout singles out. A
`Compared` value carries a published figure beside the measured one: "61.2 (paper 62.0, −0.8)",
the difference measured minus published; in CSV, three columns (value, paper, difference).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from tabulate import tabulate

MISSING = "–"
INCOMPLETE = "*"
REPEATED = "†"  # a mean over repeated evaluations of a randomized detector


@dataclass(frozen=True)
class Value:
    """One number of a table: None is missing; `complete` False marks it `*`; `bold` singles it out;
    `repeated` marks it `†`, a mean over repeated evaluations of a randomized detector."""

    number: float | None
    complete: bool = True
    bold: bool = False
    repeated: bool = False

    def text(self) -> str:
        if self.number is None:
            return MISSING
        return f"{self.number:.1f}" + ("" if self.complete else INCOMPLETE) + (REPEATED if self.repeated else "")


@dataclass(frozen=True)
class Compared:
    """A measured value beside a published one (`reference` None: none published); `source` names it."""

    measured: Value
    reference: float | None
    source: str = "paper"

    @property
    def difference(self) -> float | None:
        if self.measured.number is None or self.reference is None:
            return None
        return round(self.measured.number, 1) - round(self.reference, 1)

    def reference_text(self) -> str:
        return MISSING if self.reference is None else f"{self.reference:.1f}"

    def difference_text(self) -> str:
        difference = self.difference
        if difference is None:
            return MISSING
        return f"{difference:+.1f}".replace("-", MINUS) if abs(difference) >= 0.05 else "±0.0"

    def text(self) -> str:
        return _part_text(self, "text")


MINUS = "−"


@dataclass
class Table:
    """Plain text cells; a cell is a list of parts joined by " / ", each a label or a Value."""

    caption: str
    header: list[str]
    groups: list[list[list]]  # row groups, a rule between groups
    label: str
    header_spans: list[tuple[str, int]] | None = None  # LaTeX: a header line above `latex_header`
    latex_header: list[str] | None = None  # LaTeX: the header under the spans (default `header`)
    csv_only_columns: int = 0  # leading columns that only CSV shows (the caption names them)
    part_names: tuple[str, ...] = ("clean", "adversarial")  # CSV: a cell of several parts, one column each


def _latex_text(text: str) -> str:
    specials = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "ε": r"$\epsilon$", "∞": r"$\infty$", "³": r"\textsuperscript{3}", "–": "--", "×": r"$\times$",
                MINUS: r"$-$", "±": r"$\pm$"}
    return "".join(specials.get(ch, ch) for ch in text)


def _part_text(part, fmt: str) -> str:
    if isinstance(part, Compared):
        if part.reference is None:
            return _part_text(part.measured, fmt)
        beside = f"({part.source} {part.reference_text()}" + (
            ")" if part.measured.number is None else f", {part.difference_text()})")
        return _part_text(part.measured, fmt) + " " + (_latex_text(beside) if fmt == "latex" else beside)
    if not isinstance(part, Value):
        return _latex_text(str(part)) if fmt == "latex" else str(part)
    text = part.text()
    if fmt == "latex":
        text = _latex_text(text)
        return rf"\textbf{{{text}}}" if part.bold else text
    if fmt == "markdown":
        text = text.replace(INCOMPLETE, "\\" + INCOMPLETE)
        return f"**{text}**" if part.bold else text
    return text


def _cell_text(cell, fmt: str) -> str:
    parts = cell if isinstance(cell, list) else [cell]
    return " / ".join(_part_text(p, fmt) for p in parts)


def _shown_rows(table: Table, fmt: str) -> list[list[list[str]]]:
    """Cell texts per group; outside CSV, leading label columns drop `csv_only_columns` and a label
    repeated from the row above (with the same labels to its left) is left blank, as in the paper."""
    skip = 0 if fmt == "csv" else table.csv_only_columns
    groups = []
    for group in table.groups:
        rows, above = [], None
        for row in group:
            row = row[skip:]
            texts = [_cell_text(c, fmt) for c in row]
            if fmt != "csv" and above is not None:
                for i, cell in enumerate(row):
                    if not isinstance(cell, str) or cell != above[i]:
                        break
                    texts[i] = ""
            rows.append(texts)
            above = row
        groups.append(rows)
    return groups


def _csv_frame(tables: list[Table]) -> pd.DataFrame:
    """One column per part of a "clean / adversarial" cell ("PatchGuard clean", "PatchGuard adversarial"),
    so each number can be read on its own."""
    table = tables[0]
    cells = [row for t in tables for g in t.groups for row in g]
    widths = [max((len(row[i]) if isinstance(row[i], list) else 1) for row in cells) for i in range(len(table.header))]
    compared = [any(isinstance(p, Compared) for row in cells
                    for p in (row[i] if isinstance(row[i], list) else [row[i]])) for i in range(len(table.header))]
    source = next((p.source for row in cells for c in row for p in (c if isinstance(c, list) else [c])
                   if isinstance(p, Compared)), "paper")
    columns = []
    for name, width, with_reference in zip(table.header, widths, compared):
        for j in range(width):
            column = f"{name} {table.part_names[j]}" if width > 1 else name
            columns += [column, f"{column} {source}", f"{column} difference"] if with_reference else [column]
    rows = []
    for row in cells:
        texts = []
        for cell, width, with_reference in zip(row, widths, compared):
            parts = cell if isinstance(cell, list) else [cell]
            parts = parts + [None] * (width - len(parts))
            for p in parts:
                if not with_reference:
                    texts.append("" if p is None else _part_text(p, "csv"))
                elif isinstance(p, Compared):
                    reference = "" if p.reference is None else f"{p.reference:.1f}"
                    difference = "" if p.difference is None else f"{p.difference:.1f}"
                    texts += [_part_text(p.measured, "csv"), reference, difference]
                else:
                    texts += ["" if p is None else _part_text(p, "csv"), "", ""]
        rows.append(texts)
    return pd.DataFrame(rows, columns=columns)


def render(tables: list[Table], fmt: str) -> str:
    if fmt == "csv":
        return _csv_frame(tables).to_csv(index=False)
    if fmt == "markdown":
        blocks = []
        for table in tables:
            rows = [row for g in _shown_rows(table, fmt) for row in g]
            body = tabulate(rows, headers=table.header[table.csv_only_columns:], tablefmt="github",
                            disable_numparse=True)
            blocks.append(f"{table.caption}\n\n{body}\n")
        return "\n".join(blocks)
    return "\n".join(_latex_table(t) for t in tables)


def _latex_table(table: Table) -> str:
    first_row = table.groups[0][0][table.csv_only_columns:]
    n_labels = next((i for i, cell in enumerate(first_row) if not isinstance(cell, str)), len(first_row))
    spec = "l" * n_labels + "c" * (len(first_row) - n_labels)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_latex_text(table.caption)}}}",
             rf"\label{{{table.label}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if table.header_spans:
        spans, rules, column = [], [], 1
        for name, width in table.header_spans:
            spans.append(_latex_text(name) if width == 1 else rf"\multicolumn{{{width}}}{{c}}{{{_latex_text(name)}}}")
            if name:
                rules.append(rf"\cmidrule(lr){{{column}-{column + width - 1}}}")
            column += width
        lines += [" & ".join(spans) + r" \\", "".join(rules)]
    header = table.latex_header or table.header[table.csv_only_columns:]
    lines.append(" & ".join(_latex_text(h) for h in header) + r" \\")
    for group in _shown_rows(table, "latex"):
        lines.append(r"\midrule")
        lines += [" & ".join(row) + r" \\" for row in group]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)

