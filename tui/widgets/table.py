"""A DataTable updated by diff: rows are keyed, cells sort by keys of their own.

Panes hand :meth:`DiffTable.sync` the rows they want to show (already
filtered); the table removes the rows that are gone, rewrites only the cells
that changed, adds the new rows and sorts once if anything that matters for
the order moved. The highlighted row stays on the same key, so a refresh
never moves an operator's selection, and nothing flickers.

Only DataTable's public API is used. One thing it does not document is
relied on, and tests/test_tui_units.py checks it against the pinned Textual:
a column's label (``DataTable.columns[key].label``) changed in place shows
once ``sort()`` has redrawn the table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, Self

from rich.console import Console, ConsoleOptions
from rich.measure import Measurement
from rich.text import Text
from textual.coordinate import Coordinate
from textual.geometry import Region
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowDoesNotExist, RowKey


class C(NamedTuple):
    """One cell as a pane computes it: the text, its style, and what it sorts by."""

    text: str
    style: str = ""
    sort: Any = None


Row = tuple[C, ...]


@dataclass(frozen=True)
class Column:
    """A column as the table shows it; *gap* adds the space that separates it from the next."""

    key: str
    label: str
    width: int
    justify: str = "left"
    gap: bool = True

    @property
    def render_width(self) -> int:
        return self.width + 1 if self.gap else self.width


class Cell(Text):
    """A rendered cell that sorts by its own key, not by its text, and knows its width."""

    __slots__ = ("column_width", "sort_key")

    def __init__(self, cell: C, column: Column) -> None:
        text = cell.text.rjust(column.width) if column.justify == "right" else cell.text
        if column.gap:
            text += " "
        super().__init__(text, style=cell.style, end="", no_wrap=True)
        self.sort_key = cell.sort if cell.sort is not None else cell.text
        self.column_width = column.render_width

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        # DataTable measures every cell of every new row (to fit automatic widths, which
        # this table has none of): a cell knows its width without laying out its text.
        return Measurement(self.column_width, self.column_width)


def _sort_value(cell: Any) -> Any:
    return cell.sort_key if isinstance(cell, Cell) else str(cell)


class DiffTable(DataTable[Cell]):
    """A row-cursor DataTable with keyed rows, fixed column widths and sync by diff."""

    #: Removing rows one by one costs O(rows) each; past this many, rebuild instead.
    REBUILD_AT = 64

    _batching = False  # inside a sync: plain refreshes wait for its end
    _refresh_due = False

    class SelectionChanged(Message):
        """The key under the cursor changed (by the operator or by a refresh)."""

        def __init__(self, table: DiffTable, key: str | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, DiffTable.SelectionChanged) and message.table is self.table

        @property
        def control(self) -> DiffTable:
            return self.table

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        sort_column: str | None = None,
        reverse: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, cursor_type="row")
        self.column_specs = list(columns)
        self.sort_column = sort_column
        self.reverse = reverse
        #: What each shown row is, by key: what the next sync is compared with.
        self.model: dict[str, Row] = {}
        # The keys add_row and add_column gave back: passing the very objects the table
        # stores makes its lookups identity hits.
        self._row_keys: dict[str, RowKey] = {}
        self._column_keys: list[ColumnKey] = []
        self._last_key: str | None = None
        #: The row to put the cursor back on once the table is filled again (see set_columns).
        self._keep: str | None = None

    def on_mount(self) -> None:
        self._ensure_columns()

    def _ensure_columns(self) -> None:
        if not self.columns:
            self._column_keys = [
                self.add_column(self.label_for(col), width=col.render_width, key=col.key) for col in self.column_specs
            ]

    def label_for(self, col: Column) -> Text:
        label = col.label
        if col.key == self.sort_column:
            label = label[: max(1, col.width - 1)] + ("↓" if self.reverse else "↑")
        if col.justify == "right":
            label = label.rjust(col.width)
        return Text(label + (" " if col.gap else ""), no_wrap=True)

    def set_columns(self, columns: Sequence[Column]) -> None:
        """New widths (the terminal was resized): the table is built again with the same rows.

        When the set of columns changed, the rows cannot be kept: the next :meth:`sync`
        fills the table (and puts the cursor back on the row it was on).
        """
        same = [c.key for c in columns] == [c.key for c in self.column_specs]
        self.column_specs = list(columns)
        keep = self.selected_key
        rows = self.model if same else {}
        if not same:
            self._keep = keep
        self.clear(columns=True)
        self.model = {}
        self._row_keys = {}
        self._ensure_columns()
        self._fill(rows, keep)

    # --- selection ---------------------------------------------------------------------

    @property
    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value
        except CellDoesNotExist:
            return None
        return key

    def select_key(self, key: str) -> bool:
        """Move the cursor to *key*; False if no such row is shown."""
        try:
            index = self.get_row_index(key)
        except RowDoesNotExist:
            return False
        if index != self.cursor_row:
            self.move_cursor(row=index, animate=False)
        self._announce()
        return True

    def _announce(self) -> None:
        key = self.selected_key
        if key != self._last_key:
            self._last_key = key
            self.post_message(self.SelectionChanged(self, key))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._announce()

    # --- sorting -----------------------------------------------------------------------

    def set_sort(self, column: str | None, reverse: bool = False) -> None:
        self.sort_column = column
        self.reverse = reverse
        for col in self.column_specs:
            shown = self.columns.get(ColumnKey(col.key))
            if shown is not None:
                shown.label = self.label_for(col)
        keep = self.selected_key
        # Sorting redraws the whole table, the header with its new labels too.
        self.sort(
            *([column] if column is not None and column in self.columns else []), key=_sort_value, reverse=reverse
        )
        if keep is not None:
            self.select_key(keep)

    def _sort(self) -> None:
        if self.sort_column is not None and self.sort_column in self.columns and self.row_count > 1:
            self.sort(self.sort_column, key=_sort_value, reverse=self.reverse)

    # --- the diff ----------------------------------------------------------------------

    def refresh(self, *regions: Region, repaint: bool = True, layout: bool = False, recompose: bool = False) -> Self:
        """As Widget.refresh; within a sync, plain whole-widget refreshes become one at its end.

        (update_cell refreshes the table on every call: a thousand changed cells
        would be a thousand dirty-region computations for one redraw.)
        """
        if self._batching and repaint and not (regions or layout or recompose):
            self._refresh_due = True
            return self
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    @contextmanager
    def _one_refresh(self) -> Iterator[None]:
        self._batching = True
        try:
            yield
        finally:
            self._batching = False
            if self._refresh_due:
                self._refresh_due = False
                self.refresh()

    def _cells(self, row: Row) -> list[Cell]:
        return [Cell(c, spec) for c, spec in zip(row, self.column_specs, strict=True)]

    def sync(self, rows: Mapping[str, Row]) -> None:
        """Show exactly *rows*, in sort order, changing only what differs."""
        self._ensure_columns()
        keep = self.selected_key if self.row_count else self._keep
        self._keep = None
        model = self.model
        gone = [k for k in model if k not in rows]
        if (len(gone) > self.REBUILD_AT and len(gone) > len(model) // 4) or (not model and rows):
            index = self.cursor_row
            self.clear()
            self.model = {}
            self._row_keys = {}
            self._fill(rows, keep, index)
            return
        resort = False
        sort_index = next((i for i, c in enumerate(self.column_specs) if c.key == self.sort_column), None)
        for key in gone:
            self.remove_row(self._row_keys.pop(key))
            del model[key]
        with self._one_refresh():
            for key, row in rows.items():
                old = model.get(key)
                if old is None:
                    self._row_keys[key] = self.add_row(*self._cells(row), key=key)
                    model[key] = row
                    resort = True
                elif old != row:
                    row_key = self._row_keys[key]
                    for i, (a, b) in enumerate(zip(old, row, strict=True)):
                        if a != b:
                            self.update_cell(row_key, self._column_keys[i], Cell(b, self.column_specs[i]))
                            if i == sort_index:
                                resort = True
                    model[key] = row
            if resort:
                self._sort()
        if keep is not None and keep in model:
            self.select_key(keep)
        else:
            self._announce()

    def _fill(self, rows: Mapping[str, Row], keep: str | None, index: int = 0) -> None:
        """Add *rows* to an empty table, sort once, and put the cursor back on *keep*."""
        self.model = dict(rows)
        for key, row in rows.items():
            self._row_keys[key] = self.add_row(*self._cells(row), key=key)
        self._sort()
        if keep is not None and keep in self.model:
            self.select_key(keep)
        else:
            if self.row_count:
                self.move_cursor(row=min(index, self.row_count - 1), animate=False)
            self._announce()
