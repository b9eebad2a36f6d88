"""A DataTable updated by diff: rows are keyed, cells sort by keys of their own.

Panes hand :meth:`DiffTable.sync` the rows they want to show (already
filtered); the table removes the rows that are gone, rewrites only the cells
that changed, adds the new rows and sorts once if anything that matters for
the order moved. The highlighted row stays on the same key, so a refresh
never moves an operator's selection, and nothing flickers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from rich.text import Text
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets._data_table import Row as DataRow
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
    """A rendered cell that sorts by its own key, not by its text."""

    __slots__ = ("sort_key",)

    def __init__(self, cell: C, column: Column) -> None:
        text = cell.text.rjust(column.width) if column.justify == "right" else cell.text
        if column.gap:
            text += " "
        super().__init__(text, style=cell.style, end="", no_wrap=True)
        self.sort_key = cell.sort if cell.sort is not None else cell.text


def _sort_value(cell: Any) -> Any:
    return cell.sort_key if isinstance(cell, Cell) else str(cell)


class DiffTable(DataTable[Cell]):
    """A row-cursor DataTable with keyed rows, fixed column widths and sync by diff."""

    #: Removing rows one by one costs O(rows) each; past this many, rebuild instead.
    REBUILD_AT = 64

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
        self.model: dict[str, Row] = {}
        self._last_key: str | None = None

    def on_mount(self) -> None:
        self._ensure_columns()

    def _ensure_columns(self) -> None:
        if self.columns:
            return
        for col in self.column_specs:
            self.add_column(self.label_for(col), width=col.render_width, key=col.key)
        self.set_sort(self.sort_column, self.reverse)

    def label_for(self, col: Column) -> Text:
        label = col.label
        if col.key == self.sort_column:
            label = label[: max(1, col.width - 1)] + ("↓" if self.reverse else "↑")
        if col.justify == "right":
            label = label.rjust(col.width)
        return Text(label + (" " if col.gap else ""), no_wrap=True)

    def set_columns(self, columns: Sequence[Column]) -> None:
        """New widths (the terminal was resized): labels and widths, not the rows."""
        self.column_specs = list(columns)
        for col in self.column_specs:
            column = self.columns.get(col.key)  # type: ignore[call-overload]
            if column is not None:
                column.width = col.render_width
                column.label = self.label_for(col)
        self._require_update_dimensions = True
        self.refresh()

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
            column_ = self.columns.get(col.key)  # type: ignore[call-overload]
            if column_ is not None:
                column_.label = self.label_for(col)
        keep = self.selected_key
        self._sort()
        if keep is not None:
            self.select_key(keep)
        self.refresh()

    def _sort(self) -> None:
        if self.sort_column is not None and self.row_count > 1:
            self.sort(self.sort_column, key=_sort_value, reverse=self.reverse)

    # --- the diff ----------------------------------------------------------------------

    def _cells(self, row: Row) -> list[Cell]:
        return [Cell(c, spec) for c, spec in zip(row, self.column_specs, strict=True)]

    def sync(self, rows: Mapping[str, Row]) -> None:
        """Show exactly *rows*, in sort order, changing only what differs."""
        self._ensure_columns()
        keep = self.selected_key
        model = self.model
        gone = [k for k in model if k not in rows]
        if len(gone) > self.REBUILD_AT and len(gone) > len(model) // 4:
            self._rebuild(rows, keep)
            return
        if not model and len(rows) > self.REBUILD_AT:
            self._rebuild(rows, keep)
            return
        resort = False
        sort_index = next((i for i, c in enumerate(self.column_specs) if c.key == self.sort_column), None)
        for key in gone:
            self.remove_row(key)
            del model[key]
        changed = False
        for key, row in rows.items():
            old = model.get(key)
            if old is None:
                self.add_row(*self._cells(row), key=key)
                model[key] = row
                resort = True
            elif old != row:
                for i, (a, b) in enumerate(zip(old, row, strict=True)):
                    if a != b:
                        self._set_cell(key, self.column_specs[i], b)
                        if i == sort_index:
                            resort = True
                model[key] = row
                changed = True
        self._skip_measuring()
        if resort:
            self._sort()
        elif changed:
            self.refresh()
        if keep is not None and keep in model:
            self.select_key(keep)
        else:
            self._announce()

    def _set_cell(self, key: str, spec: Column, cell: C) -> None:
        """update_cell without its refresh: one refresh follows the whole diff.

        (DataTable.update_cell refreshes the widget on every call, which costs a
        thousand region computations when a thousand ages tick over at once.
        Textual is pinned, so its internals here are known.)
        """
        self._data[RowKey(key)][ColumnKey(spec.key)] = Cell(cell, spec)
        self._update_count += 1

    def _skip_measuring(self) -> None:
        """Every column has a fixed width and every row one line: new rows need no measuring.

        (DataTable measures every cell of every new row when idle, to fit
        auto-width columns: nine thousand measurements for a thousand sessions.
        It still recomputes the table's size, which is all this table needs.)
        """
        self._new_rows.clear()

    def _add_rows(self, rows: Mapping[str, Row]) -> None:
        """add_row for many rows at once, into an empty table.

        (add_row re-validates the cursor and checks for idle on every call; for
        a thousand rows that is most of the first refresh. This does what it
        does for rows of one line without labels, once.)
        """
        columns = [ColumnKey(spec.key) for spec in self.column_specs]
        start = self.row_count
        for offset, (key, row) in enumerate(rows.items()):
            row_key = RowKey(key)
            self._row_locations[row_key] = start + offset
            self._data[row_key] = dict(zip(columns, self._cells(row), strict=True))
            self.rows[row_key] = DataRow(row_key, 1, None, False)
        self._require_update_dimensions = True
        self._update_count += 1
        self.cursor_coordinate = self.cursor_coordinate
        if start == 0 and self.row_count and self.show_cursor and self.cursor_type != "none":
            self._highlight_cursor()
        self.check_idle()
        self.refresh()

    def _rebuild(self, rows: Mapping[str, Row], keep: str | None) -> None:
        index = self.cursor_row
        self.clear()
        self.model = dict(rows)
        self._add_rows(rows)
        self._sort()
        if keep is not None and keep in self.model:
            self.select_key(keep)
        else:
            if self.row_count:
                self.move_cursor(row=min(index, self.row_count - 1), animate=False)
            self._announce()
