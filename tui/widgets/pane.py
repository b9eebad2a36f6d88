"""What every pane shares: a titled box around a DiffTable whose columns fit the width.

Columns have a narrow and a wide width; one column (an id, a message) takes
the space that is left. Cells are cut to their width here (ids in the middle,
so the unique end stays visible), never by the terminal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical

from .table import C, Column, DiffTable, Row

#: Inner widths from which a pane uses its columns' wide widths.
WIDE_AT = 90


@dataclass(frozen=True)
class Col:
    """A column of a pane: its narrow width, its wide width, and whether it takes what is left."""

    key: str
    label: str
    width: int
    wide: int | None = None
    justify: str = "left"
    flex: bool = False
    middle: bool = False  # cut in the middle rather than at the end


def cut(text: str, width: int, *, middle: bool = False) -> str:
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    if middle:
        tail = (width - 1) // 2 + (width - 1) % 2
        head = width - 1 - tail
        return f"{text[:head]}…{text[len(text) - tail :]}"
    return text[: width - 1] + "…"


class Pane(Vertical):
    """A titled pane holding one DiffTable."""

    PANE: ClassVar[str] = ""
    TITLE: ClassVar[str] = ""
    COLUMNS: ClassVar[tuple[Col, ...]] = ()
    SORT: ClassVar[str | None] = None
    HELP: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__(id=self.PANE, classes="pane")
        self.border_title = self.TITLE
        self.widths: dict[str, int] = {c.key: c.width for c in self.COLUMNS}
        self.table = DiffTable(
            [self._column(c) for c in self.COLUMNS],
            sort_column=self.SORT,
            id=f"{self.PANE}-table",
        )
        self.table.cell_padding = 0

    def compose(self) -> ComposeResult:
        yield self.table

    def _column(self, col: Col, width: int | None = None) -> Column:
        w = width if width is not None else col.width
        return Column(col.key, cut(col.label, w), w, col.justify, gap=col is not self.COLUMNS[-1])

    # --- widths ------------------------------------------------------------------------

    def allocate(self, inner: int) -> dict[str, int]:
        wide = inner >= WIDE_AT
        widths = {c.key: (c.wide or c.width) if wide else c.width for c in self.COLUMNS}
        flex = next((c for c in self.COLUMNS if c.flex), None)
        if flex is not None:
            gaps = len(self.COLUMNS) - 1
            used = sum(w for k, w in widths.items() if k != flex.key) + gaps
            widths[flex.key] = max(flex.width, inner - used)
        return widths

    def on_resize(self, event: events.Resize) -> None:
        inner = self.size.width - 1  # the table keeps a one-column gutter for its scrollbar
        widths = self.allocate(inner)
        if widths == self.widths:
            return
        self.widths = widths
        self.table.set_columns([self._column(c, widths[c.key]) for c in self.COLUMNS])
        self.relayout()

    def relayout(self) -> None:
        """Widths changed: recompute every row (only cells whose text changed are redrawn)."""
        self.table.refresh()

    # --- rows ----------------------------------------------------------------------------

    def cells(self, values: Iterable[C]) -> Row:
        """Cut each cell to its column's width."""
        out = []
        for col, c in zip(self.COLUMNS, values, strict=True):
            w = self.widths[col.key]
            text = cut(c.text, w, middle=col.middle)
            out.append(c if text == c.text else C(text, c.style, c.sort if c.sort is not None else c.text))
        return tuple(out)

    def sync(self, rows: Mapping[str, Row]) -> None:
        self.table.sync(rows)

    @property
    def selected(self) -> str | None:
        return self.table.selected_key
