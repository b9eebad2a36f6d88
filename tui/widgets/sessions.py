"""The Sessions pane: live sessions, sortable (s, S) and filterable (/)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input

from core.views import SessionInfo
from core.watch import Figures

from .. import format as fmt
from .pane import Col, Pane
from .table import C, Row

#: How a state reads in a narrow STATE column, and its style.
STATES = {
    "mounted": ("mounted", "mounted", ""),
    "needs-recovery": ("needs-recovery", "recover!", "bold red"),
    "lost": ("lost", "lost", "bold red"),
    "beginning": ("beginning", "begin…", "italic"),
    "ending": ("ending", "ending", "italic"),
    "promoting": ("promoting", "promote…", "italic"),
}

SORTABLE = (
    "id",
    "image",
    "generation",
    "kind",
    "owner",
    "network",
    "age",
    "processes",
    "cpu",
    "memory",
    "disk",
    "state",
)

#: How a network mode reads in the NET column.
NETWORKS = {"host": "host", "none": "none", "loopback": "loop"}


class SessionsPane(Pane):
    PANE = "sessions"
    TITLE = "Sessions"
    HELP = "enter: same as e (a shell inside)"
    COLUMNS = (
        Col("id", "ID", 14, flex=True, middle=True),
        Col("image", "IMAGE", 12, 14, middle=True),
        Col("generation", "GEN", 3, justify="right"),
        Col("kind", "KIND", 5),
        Col("owner", "OWNER", 7, 8),
        Col("network", "NET", 4, optional=1),
        Col("age", "AGE", 4, justify="right"),
        Col("processes", "PROC", 4, justify="right"),
        Col("cpu", "CPU", 4, justify="right", optional=3),
        Col("memory", "MEM", 5, justify="right", optional=2),
        Col("disk", "DISK", 6, justify="right"),
        Col("state", "STATE", 8, 14),
    )
    SORT = "id"
    BINDINGS: ClassVar = [
        Binding("e", "screen.enter_session", "Enter", id="session.enter", tooltip="A login shell inside the session"),
        Binding("x", "screen.run_command", "Run", id="session.run", tooltip="Run a command inside and show its output"),
        Binding(
            "p",
            "screen.promote",
            "Promote",
            id="session.promote",
            tooltip="Make the session the image's next generation (then it ends)",
        ),
        Binding(
            "d",
            "screen.end_session",
            "End",
            id="session.end",
            tooltip="Kill what runs inside, unmount, and delete the session's changes",
        ),
        Binding(
            "n",
            "screen.switch_network",
            "Network",
            id="session.network",
            tooltip="Switch the network the session's next commands get (host, none, loopback)",
        ),
        Binding(
            "r", "screen.recover", "Recover", id="session.recover", tooltip="Remount a session that needs recovery"
        ),
        Binding("slash", "filter", "Filter", id="session.filter", key_display="/", tooltip="Filter sessions by text"),
        Binding("s", "sort", "Sort", id="session.sort", show=False, tooltip="Sort by the next column"),
        Binding("S", "sort_reverse", "Reverse", id="session.reverse", show=False, tooltip="Reverse the sort order"),
        Binding("escape", "clear_filter", "Clear filter", id="session.clear", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sessions: Mapping[str, SessionInfo] = {}
        self.usage: Mapping[str, Figures] = {}
        self.now = 0.0
        self.filter_text = ""
        self.filter_input = Input(placeholder="filter: id, image, owner, kind, network or state", id="sessions-filter")
        self._cache: dict[str, tuple[object, ...]] = {}

    def compose(self) -> ComposeResult:
        yield self.table
        yield self.filter_input

    def on_mount(self) -> None:
        self.filter_input.display = False

    def shown_keys(self) -> frozenset[str]:
        """The sessions whose rows are on screen now (none while the pane is hidden)."""
        table = self.table
        if not self.display or not table.row_count:
            return frozenset()
        top = int(table.scroll_y)
        height = max(0, table.scrollable_content_region.height - 1)  # the header row
        return frozenset(str(row.key.value) for row in table.ordered_rows[top : top + height])

    # --- rows ----------------------------------------------------------------------------

    def _row(self, info: SessionInfo, figures: Figures | None, wide_state: bool) -> Row:
        s = info.session
        long, short, style = STATES.get(info.state, (info.state, info.state, ""))
        if figures is None:
            processes, disk = C("…", "dim", -1), C("…", "dim", -1)
        else:
            processes = C(str(figures.processes), "" if figures.processes else "dim", figures.processes)
            measured = figures.measured
            disk = C(fmt.size(figures.disk), sort=figures.disk or 0) if measured else C("…", "dim", -1)
        load = figures.load if figures is not None else None
        if not s.cgroups:
            cpu, memory = C("-", "dim", -2), C("-", "dim", -2)  # no cgroup: nothing accounts it
        elif load is None:
            cpu, memory = C("…", "dim", -1), C("…", "dim", -1)
        else:
            cpu = C(fmt.percent(load.cpu_percent), sort=load.cpu_percent if load.cpu_percent is not None else -1)
            memory = C(fmt.size(load.memory), sort=load.memory if load.memory is not None else -1)
        created = fmt.epoch(s.created) or 0.0
        return self.cells(
            (
                C(s.id, "bold" if s.maintenance else ""),
                C(s.image),
                C(str(s.generation), sort=s.generation),
                C("maint" if s.maintenance else "ord", "yellow" if s.maintenance else ""),
                C(s.owner),
                C(NETWORKS.get(s.network, s.network), "" if s.network == "host" else "cyan", s.network),
                C(fmt.duration(self.now - created) if created else "?", sort=-created),
                processes,
                cpu,
                memory,
                disk,
                C(long if wide_state else short, style, info.state),
            )
        )

    def matches(self, info: SessionInfo) -> bool:
        if not self.filter_text:
            return True
        s = info.session
        haystack = f"{s.id} {s.image} {s.owner} {s.kind} {info.state} {s.generation} {s.network}".lower()
        return all(word in haystack for word in self.filter_text.lower().split())

    def show(self, sessions: Mapping[str, SessionInfo], usage: Mapping[str, Figures], now: float) -> None:
        self.sessions = sessions
        self.usage = usage
        self.now = now
        wide_state = self.widths["state"] >= 14
        rows: dict[str, Row] = {}
        cache = self._cache
        fresh: dict[str, tuple[object, ...]] = {}
        for sid, info in sessions.items():
            if not self.matches(info):
                continue
            figures = usage.get(sid)
            created = fmt.epoch(info.session.created) or 0.0
            stamp = (info, figures, fmt.duration(now - created), wide_state, self.widths["id"])
            hit = cache.get(sid)
            if hit is not None and hit[0] is info and hit[1] is figures and hit[2:-1] == stamp[2:]:
                row = hit[-1]
            else:
                row = self._row(info, figures, wide_state)
            fresh[sid] = (*stamp, row)
            rows[sid] = row  # type: ignore[assignment]
        self._cache = fresh
        self.sync(rows)
        self._subtitle()

    def _subtitle(self) -> None:
        total = len(self.sessions)
        shown = self.table.row_count
        recovery = sum(1 for i in self.sessions.values() if i.state in ("needs-recovery", "lost"))
        parts = [f"{shown}/{total}" if self.filter_text else f"{total}"]
        if recovery:
            parts.append(f"{recovery} need recovery")
        if self.filter_text:
            parts.append(f"filter: {self.filter_text}")
        self.border_subtitle = ", ".join(parts)

    def relayout(self) -> None:
        self.show(self.sessions, self.usage, self.now)

    def selected_info(self) -> SessionInfo | None:
        key = self.selected
        return self.sessions.get(key) if key is not None else None

    # --- filter and sort -------------------------------------------------------------------

    def action_filter(self) -> None:
        self.filter_input.display = True
        self.filter_input.value = self.filter_text
        self.filter_input.focus()

    def action_clear_filter(self) -> None:
        self.filter_input.display = False
        if self.filter_text:
            self.filter_text = ""
            self.filter_input.value = ""
            self.relayout()
        self.table.focus()

    @on(Input.Changed, "#sessions-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.filter_text = event.value.strip()
        self.relayout()

    @on(Input.Submitted, "#sessions-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not self.filter_text:
            self.filter_input.display = False
        self.table.focus()

    def action_sort(self) -> None:
        current = self.table.sort_column or "id"
        sortable = [key for key in SORTABLE if self.widths[key]]  # not by a column hidden at this width
        following = sortable[(sortable.index(current) + 1) % len(sortable)] if current in sortable else "id"
        self.table.set_sort(following, self.table.reverse)
        self.notify(f"sessions sorted by {following}", timeout=1.5)

    def action_sort_reverse(self) -> None:
        self.table.set_sort(self.table.sort_column, not self.table.reverse)

    async def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        await self.app.run_action("screen.enter_session")
