"""The event log: what the console and everyone else did, from the journal, as it happens."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from rich.text import Text
from textual import events
from textual.widgets import RichLog

from .. import format as fmt

#: Below this width an event line drops the word that says what kind of thing was acted on.
COMPACT_BELOW = 60


def event_line(entry: dict[str, Any], now: float, *, compact: bool = False) -> Text:
    failed = entry.get("result") not in (None, "ok")
    operation = str(entry.get("operation", "?"))
    if compact:
        operation = operation.rsplit(" ", 1)[-1]
    line = Text(no_wrap=True, end="")
    line.append(fmt.when(str(entry.get("time", "")), now), "dim")
    line.append(" ")
    line.append(f"{entry.get('user', '?')!s:<6}", "bold")
    line.append(" ")
    line.append(operation, "red" if failed else "")
    target = fmt.event_target(entry)
    if target:
        line.append(" ")
        line.append(target)
    if failed:
        line.append(" failed", "bold red")
        error = entry.get("error")
        if error:
            line.append(f": {error}", "red")
    return line


class EventLog(RichLog):
    """The journal's newest lines, appended as they are written."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(id="events", max_lines=500, wrap=False, markup=False, highlight=False, auto_scroll=True)
        self.border_title = "Events"
        self.can_focus = False
        self.clock = clock
        self.entries: deque[dict[str, Any]] = deque(maxlen=500)
        self.compact = False

    def add(self, entries: Iterable[dict[str, Any]]) -> None:
        now = self.clock()
        for entry in entries:
            self.entries.append(entry)
            self.write(event_line(entry, now, compact=self.compact), scroll_end=True)

    def on_resize(self, event: events.Resize) -> None:
        compact = self.size.width < COMPACT_BELOW
        if compact != self.compact:
            self.compact = compact
            self.clear()
            now = self.clock()
            for entry in self.entries:
                self.write(event_line(entry, now, compact=compact), scroll_end=True)
