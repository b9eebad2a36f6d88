"""What every pane shares: a titled box around a DiffTable whose columns fit the width.

Columns have a narrow and a wide width; one column (an id, a message) takes
the space that is left. Optional columns come first, where they fit beside the
others at their narrow widths; then the others widen where they can. Cells are
cut to their width here (ids in the middle, so the unique end stays visible),
never by the terminal.
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
    #: Shown only where it fits (1 first, then 2, …) with every other column at its narrow width; 0: always.
    optional: int = 0


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
        #: Before the first layout: narrow widths, optional columns hidden.
        self.widths: dict[str, int] = {c.key: 0 if c.optional else c.width for c in self.COLUMNS}
        self.table = DiffTable(
            self._columns(self.widths),
            sort_column=self.SORT,
            id=f"{self.PANE}-table",
        )
        self.table.cell_padding = 0

    def compose(self) -> ComposeResult:
        yield self.table

    def _columns(self, widths: Mapping[str, int]) -> list[Column]:
        """The table's columns at *widths*: hidden ones (width 0) left out, the last one without a gap."""
        shown = [c for c in self.COLUMNS if widths[c.key]]
        return [
            Column(c.key, cut(c.label, widths[c.key]), widths[c.key], c.justify, gap=c is not shown[-1]) for c in shown
        ]

    # --- widths ------------------------------------------------------------------------

    def allocate(self, inner: int) -> dict[str, int]:
        """Column widths for *inner* columns of text (hidden optional columns: 0)."""
        widths = {c.key: 0 if c.optional else c.width for c in self.COLUMNS}
        flex = next((c for c in self.COLUMNS if c.flex), None)

        def spare() -> int:
            shown = [k for k, w in widths.items() if w]
            return inner - sum(widths[k] for k in shown) - (len(shown) - 1)

        for col in sorted((c for c in self.COLUMNS if c.optional), key=lambda c: c.optional):
            if spare() >= col.width + 1:
                widths[col.key] = col.width
        if inner >= WIDE_AT:
            for col in self.COLUMNS:
                if widths[col.key] and col.wide and col is not flex and spare() >= col.wide - widths[col.key]:
                    widths[col.key] = col.wide
        if flex is not None:
            widths[flex.key] = max(flex.width, widths[flex.key] + spare())
        return widths

    def on_resize(self, event: events.Resize) -> None:
        inner = self.size.width - 1  # the table keeps a one-column gutter for its scrollbar
        widths = self.allocate(inner)
        if widths == self.widths:
            return
        self.widths = widths
        self.table.set_columns(self._columns(widths))
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
            if not w:
                continue  # a column hidden at this width
            text = cut(c.text, w, middle=col.middle)
            out.append(c if text == c.text else C(text, c.style, c.sort if c.sort is not None else c.text))
        return tuple(out)

    def sync(self, rows: Mapping[str, Row]) -> None:
        self.table.sync(rows)

    @property
    def selected(self) -> str | None:
        return self.table.selected_key
