"""The Locks pane: every lock that is held, stale or waited for, with its holder."""

from __future__ import annotations

from collections.abc import Sequence

from core.locks import LockState

from .. import format as fmt
from .pane import Col, Pane
from .table import C


def lock_key(state: LockState) -> str:
    return f"{state.lock}\x00{state.mode}\x00{state.pid}"


def lock_status(state: LockState) -> tuple[str, str]:
    if state.mode == "waiting":
        return "waits", "italic"
    if state.stale:
        return "stale", "bold yellow"
    return "live", ""


class LocksPane(Pane):
    PANE = "locks"
    TITLE = "Locks"
    COLUMNS = (
        Col("lock", "LOCK", 14, flex=True, middle=True),
        Col("mode", "MODE", 5, 9),
        Col("pid", "PID", 7, justify="right"),
        Col("user", "USER", 7, 8),
        Col("operation", "OPERATION", 10, 16),
        Col("held", "HELD", 4, justify="right"),
        Col("state", "STATE", 5),
    )
    SORT = "lock"

    def __init__(self) -> None:
        super().__init__()
        self.locks: Sequence[LockState] = ()
        self.now = 0.0

    def show(self, locks: Sequence[LockState], now: float) -> None:
        self.locks = locks
        self.now = now
        rows = {}
        for s in locks:
            status, style = lock_status(s)
            rows[lock_key(s)] = self.cells(
                (
                    C(s.lock, sort=(s.lock, s.mode)),
                    C(s.mode, style),
                    C(str(s.pid) if s.pid else "-", sort=s.pid or 0),
                    C(s.user),
                    C(s.operation),
                    C(fmt.age(s.since, now), sort=s.since),
                    C(status, style),
                )
            )
        self.sync(rows)
        stale = sum(1 for s in locks if s.stale)
        self.border_subtitle = f"{len(locks)}" + (f", {stale} stale" if stale else "")

    def relayout(self) -> None:
        self.show(self.locks, self.now)

    def selected_lock(self) -> LockState | None:
        key = self.selected
        return next((s for s in self.locks if lock_key(s) == key), None)
