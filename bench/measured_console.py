"""The console with the benchmark's timers installed from the outside, run as `roost` runs it.

    .venv/bin/python bench/measured_console.py STATS.json     (bench/console.py starts it in a pty)

A subclass of the console times the steps the console has anyway: the poll
(``RoostConsole.poll``, in its worker thread), showing a poll's result
(``show``) and new usage figures (``show_usage``) on the event loop, and how
long key presses waited between the terminal's input thread and the event
loop (``on_event``). It then runs through roost's own entry point with no
arguments, exactly as an operator starts the console, and writes what it
measured to STATS.json when the console exits. Nothing of this is in the
product.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual import events

import tui.app
from core.watch import Figures, Snapshot


@dataclass
class RefreshStats:
    """How long refreshes took: the poll (in a worker) and showing it (on the event loop).

    The first refresh (everything read and shown from nothing) is kept apart
    from the ones after it, which show only what changed; ``usage`` is showing
    new per-session figures; ``keys`` is how long key presses waited, from the
    terminal's input thread to the event loop taking them.
    """

    first: tuple[float, float] | None = None
    polls: deque[float] = field(default_factory=lambda: deque(maxlen=5000))
    shows: deque[float] = field(default_factory=lambda: deque(maxlen=5000))
    usage: deque[float] = field(default_factory=lambda: deque(maxlen=5000))
    keys: deque[float] = field(default_factory=lambda: deque(maxlen=5000))

    def add(self, poll: float, show: float) -> None:
        if self.first is None:
            self.first = (poll, show)
        else:
            self.polls.append(poll)
            self.shows.append(show)

    def summary(self) -> dict[str, Any]:
        def figures(samples: deque[float]) -> dict[str, float]:
            if not samples:
                return {}
            ordered = sorted(samples)
            return {
                "median_ms": statistics.median(ordered) * 1000,
                "p95_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000,
                "min_ms": ordered[0] * 1000,
                "max_ms": ordered[-1] * 1000,
                "count": len(ordered),
            }

        first = {"poll_ms": self.first[0] * 1000, "show_ms": self.first[1] * 1000} if self.first else {}
        return {
            "first": first,
            "poll": figures(self.polls),
            "show": figures(self.shows),
            "usage": figures(self.usage),
            "keys": figures(self.keys),
        }


class MeasuredConsole(tui.app.RoostConsole):
    """The console, timing its own steps; :data:`STATS` names where the figures go."""

    STATS = ""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.stats = RefreshStats()
        self._poll_seconds = 0.0  # written by the poll's worker, read when its result is shown

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key):
            self.stats.keys.append(time.monotonic() - event.time)
        await super().on_event(event)

    def poll(self, image: str | None, force: bool) -> Snapshot | None:
        started = time.perf_counter()
        try:
            return super().poll(image, force)
        finally:
            self._poll_seconds = time.perf_counter() - started

    def show(self, snapshot: Snapshot) -> None:
        started = time.perf_counter()
        super().show(snapshot)
        self.stats.add(self._poll_seconds, time.perf_counter() - started)

    def show_usage(self, usage: Mapping[str, Figures]) -> None:
        started = time.perf_counter()
        super().show_usage(usage)
        self.stats.usage.append(time.perf_counter() - started)

    def on_unmount(self) -> None:
        with open(self.STATS, "w", encoding="utf-8") as f:
            json.dump(self.stats.summary(), f)


def main() -> int:
    MeasuredConsole.STATS = sys.argv[1]
    tui.app.RoostConsole = MeasuredConsole  # type: ignore[misc]  # what `roost` builds, from here on
    from roost.main import main as roost

    return roost([])


if __name__ == "__main__":
    sys.exit(main())
