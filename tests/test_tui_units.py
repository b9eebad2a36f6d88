"""The console's pieces that need no state root: the diffing table, formats, cutting."""

from __future__ import annotations

import asyncio
from typing import Any

from textual.app import App, ComposeResult

from tui import format as fmt
from tui.widgets.pane import cut
from tui.widgets.table import C, Column, DiffTable


class TableApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.table = DiffTable(
            [Column("name", "NAME", 10), Column("size", "SIZE", 6, "right", gap=False)], sort_column="name"
        )
        self.table.cell_padding = 0  # as the panes have it

    def compose(self) -> ComposeResult:
        yield self.table


def rows(*items: tuple[str, int]) -> dict[str, tuple[C, ...]]:
    return {name: (C(name), C(fmt.size(n), sort=n)) for name, n in items}


def run(scenario: Any) -> None:
    async def main() -> None:
        app = TableApp()
        async with app.run_test() as pilot:
            await scenario(pilot, app.table)

    asyncio.run(main())


def test_diff_table_changes_only_what_differs_and_keeps_the_selection() -> None:
    async def scenario(pilot: Any, table: DiffTable) -> None:
        table.sync(rows(("b", 1), ("c", 2), ("a", 3)))
        assert [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(3)] == ["a", "b", "c"]
        assert table.select_key("b")
        cells_a = table.get_row("a")
        name_c = table.get_cell("c", "name")
        table.sync(rows(("b", 1), ("c", 2048), ("a", 3), ("aa", 4)))  # c's size changed, aa added
        assert table.selected_key == "b"  # the highlighted row stayed on its key
        assert all(x is y for x, y in zip(table.get_row("a"), cells_a, strict=True))  # untouched row
        assert table.get_cell("c", "name") is name_c  # untouched cell of a changed row
        assert str(table.get_cell("c", "size")).strip() == "2.0K"
        assert table.get_row_index("aa") == 1
        table.sync(rows(("c", 2048), ("aa", 4)))  # b (selected) and a gone
        assert table.selected_key in {"c", "aa"} and table.row_count == 2
        table.set_sort("size", reverse=True)
        assert [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(2)] == ["c", "aa"]

    run(scenario)


def test_diff_table_rebuilds_when_most_rows_go_and_fills_an_empty_table_at_once() -> None:
    async def scenario(pilot: Any, table: DiffTable) -> None:
        many = rows(*((f"s{i:04d}", i) for i in range(500)))
        table.sync(many)
        assert table.row_count == 500 and table.selected_key == "s0000"
        assert table.select_key("s0250")
        table.sync({k: v for k, v in many.items() if k in ("s0250", "s0499")})
        assert table.row_count == 2 and table.selected_key == "s0250"

    run(scenario)


def header(table: DiffTable) -> str:
    return table.render_line(0).text


def test_diff_table_shows_the_sort_column_in_its_header_and_keeps_widths_on_resize() -> None:
    """Pins what DiffTable relies on beyond DataTable's documented API (Textual is pinned):
    a column label changed in place shows once sort() has redrawn the table."""

    async def scenario(pilot: Any, table: DiffTable) -> None:
        table.sync(rows(("b", 1), ("a", 3)))
        await pilot.pause()
        assert header(table).startswith("NAME↑")
        table.set_sort("size", reverse=True)
        await pilot.pause()
        assert header(table).startswith("NAME ") and header(table).rstrip().endswith(" SIZE↓")
        assert [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(2)] == ["a", "b"]
        table.sync(rows(("a", 3)))
        await pilot.pause()
        assert header(table).rstrip().endswith(" SIZE↓")  # (drawn: what DataTable caches)
        table.set_sort("name")  # with one row (nothing to reorder), too
        await pilot.pause()
        assert header(table).startswith("NAME↑")
        assert table.select_key("a")
        table.set_columns([Column("name", "NAME", 14), Column("size", "SIZE", 8, "right", gap=False)])
        await pilot.pause()
        assert table.selected_key == "a" and table.row_count == 1
        assert header(table).startswith("NAME↑" + " " * 10) and header(table).rstrip().endswith("SIZE")
        assert str(table.get_cell("a", "size")) == "      3B"

    run(scenario)


def test_formats_are_short_and_stable() -> None:
    assert [fmt.size(n) for n in (None, 0, 512, 4096, 12_900_000, 1 << 30)] == [
        "-",
        "0",
        "512B",
        "4.0K",
        "12.3M",
        "1.0G",
    ]
    assert [fmt.duration(s) for s in (None, 5, 59, 60, 7199, 7200, 47 * 3600, 49 * 3600)] == [
        "?",
        "<1m",
        "<1m",
        "1m",
        "119m",
        "2h",
        "47h",
        "2d",
    ]
    assert fmt.stamp("2026-11-23T20:20:11Z") == "2026-11-23 20:20"
    now = fmt.epoch("2026-11-24T09:30:00Z")
    assert now is not None
    assert fmt.when("2026-11-24T09:27:15Z", now) == "09:27" and fmt.when("2026-11-21T18:11:27Z", now) == "11-21"
    assert fmt.event_target({"image": "bb", "generation": 3}) == "bb@3"
    assert fmt.event_target({"session": "bb-1", "image": "bb"}) == "bb-1"


def test_cut_keeps_the_unique_end_of_ids() -> None:
    assert cut("bookworm-amd64-3f9c2a1e", 20, middle=True) == "bookworm-…4-3f9c2a1e"
    assert cut("short", 20, middle=True) == "short"
    assert cut("apt-get upgrade: Debian 12.9", 12) == "apt-get upg…"
    assert len(cut("x" * 100, 7, middle=True)) == 7


def test_optional_columns_show_where_they_fit_and_the_table_keeps_its_selection_when_they_come() -> None:
    from tui.widgets.sessions import SessionsPane

    pane = SessionsPane()
    narrow = pane.allocate(77)  # 80 columns, one pane at a time
    assert narrow["network"] == 4 and narrow["memory"] == 0 and narrow["cpu"] == 0
    assert narrow["state"] == 8 and narrow["id"] >= 14
    wide = pane.allocate(93)  # 160 columns, the sessions pane of the grid
    assert wide["network"] and wide["memory"] and wide["cpu"]
    shown = [w for w in wide.values() if w]
    assert sum(shown) + len(shown) - 1 == 93  # the id column takes exactly what is left
    roomy = pane.allocate(130)
    assert roomy["state"] == 14 and roomy["owner"] == 8  # wide widths once everything fits
    assert [c.key for c in pane._columns(narrow)] == [
        *("id", "image", "generation", "kind", "owner", "network"),
        *("age", "processes", "disk", "state"),
    ]

    async def scenario(pilot: Any, table: DiffTable) -> None:
        table.sync(rows(("a", 1), ("b", 2), ("c", 3)))
        table.select_key("b")
        table.set_columns([Column("name", "NAME", 10, gap=False)])  # another set of columns: rows go
        assert table.row_count == 0
        table.sync({k: (C(k),) for k in ("a", "b", "c")})
        assert table.selected_key == "b"  # and the cursor comes back to where it was

    run(scenario)


def test_cpu_share_is_over_the_time_between_two_readings() -> None:
    from core import views

    first = views.load({"memory": 10 << 20, "cpu_usec": 5_000_000, "pids": 3}, None, 0.0)
    assert first.cpu_percent is None and first.memory == 10 << 20  # a rate needs two readings
    second = views.load({"memory": 11 << 20, "cpu_usec": 8_000_000, "pids": 3}, first, 2.0)
    assert second.cpu_percent == 150.0  # 3 s of CPU in 2 s: one and a half CPUs
    assert views.load({"memory": None, "cpu_usec": None}, second, 2.0).cpu_percent is None
    assert fmt.percent(None) == "…" and fmt.percent(150.0) == "150%" and fmt.percent(4321.0) == "999%"


def test_diff_summaries_read_in_a_few_lines() -> None:
    from core.diff.dpkg import PackageChange
    from core.diff.model import DiffSummary
    from tui.widgets import diffs

    up = PackageChange("hello", "amd64", "upgraded", "2.10-2", "2.10-3", "hello")
    new = PackageChange("nano", "amd64", "installed", None, "7.2-1", "nano")
    summary = DiffSummary([up, new], added=3, changed=1, size_delta=2048)
    assert diffs.text(diffs.summary_pairs(summary)) == (
        "packages: 1 upgraded, 1 installed: hello, nano\nfiles: 3 added, 0 removed, 1 changed (+2.0 KiB)"
    )
    assert diffs.summary_pairs(DiffSummary(None))[0] == ("packages", "no dpkg database")
    back = diffs.rollback_pairs([up.__class__("hello", "amd64", "downgraded", "2.10-3", "2.10-2", "hello")])
    assert back[1] == ("", "  • hello 2.10-3 -> 2.10-2 (downgraded)")
    many = [PackageChange(f"p{i}", "all", "removed", "1", None, f"p{i}") for i in range(9)]
    assert diffs.rollback_pairs(many)[-1][1].startswith("  … and 3 more")
