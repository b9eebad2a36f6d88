"""The operator console: ``roost`` with no command.

The console reads the state root through :class:`core.watch.Watcher` and acts
only through :class:`core.engine.Engine`. Two loops keep it current without
ever overlapping themselves: the refresh loop (every half second: a cheap poll
in a thread worker, then only what changed is shown) and the usage loop (every
two seconds: processes and disk use per session, within a time budget).
"""

from __future__ import annotations

import gc
import json
import os
import socket
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from textual import events
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.timer import Timer

from core.engine import Engine
from core.errors import RoostError
from core.watch import Figures, Snapshot, Usage, Watcher

from .commands import RoostCommands
from .operations import Operations
from .screen import MainScreen


class StateUpdate(Message):
    """What one poll of the state root found (None: nothing changed)."""

    def __init__(self, snapshot: Snapshot | None, error: str | None, seconds: float) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.error = error
        self.seconds = seconds


class UsageUpdate(Message):
    def __init__(self, figures: dict[str, Figures], error: str | None) -> None:
        super().__init__()
        self.figures = figures
        self.error = error


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


class RoostConsole(App[int]):
    """The console on one state root."""

    CSS_PATH = "roost.tcss"
    TITLE = "roost"
    COMMANDS: ClassVar = App.COMMANDS | {RoostCommands}
    BINDINGS: ClassVar = [Binding("ctrl+q", "quit", "Quit", show=False, priority=True, id="app.quit")]
    NOTIFICATION_TIMEOUT = 5

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], float] = time.time,
        host: str | None = None,
        interval: float = 0.5,
        usage_interval: float = 2.0,
        tick_interval: float = 10.0,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.clock = clock
        self.host = host or socket.gethostname()
        self.interval = interval
        self.usage_interval = usage_interval
        self.tick_interval = tick_interval
        self.watcher = Watcher(engine)
        self.meter = Usage()
        self.usage: dict[str, Figures] = {}
        self.usage_first: str | None = None
        self.snapshot: Snapshot | None = None
        self.history_image: str | None = None
        self.operations = Operations(self)
        self.stats = RefreshStats()
        #: Where a shell entered from the console reads and writes (a test may point it elsewhere).
        self.terminal: dict[str, int] = {"stdin": 0, "stdout": 1, "stderr": 2}
        self.loaded = False
        self.usage_loaded = False
        self._fetching = False
        self._again = False
        self._force = False
        self._timer: Timer | None = None
        self._shown_errors: set[str] = set()
        engine.ctx.on_wait = lambda message: self.notify(message, timeout=4, markup=False)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key):
            self.stats.keys.append(time.monotonic() - event.time)
        await super().on_event(event)

    def get_default_screen(self) -> MainScreen:
        return MainScreen()

    @property
    def main(self) -> MainScreen:
        screen = self.screen_stack[0]
        assert isinstance(screen, MainScreen)
        return screen

    def on_mount(self) -> None:
        # The workers (polls, tree walks) share the GIL with the event loop: hand it back
        # to the event loop sooner than Python's default 5 ms, so keys are answered at once.
        sys.setswitchinterval(0.001)
        self._kick()
        self.set_timer(0.05, self._usage_kick)
        self.set_interval(self.tick_interval, self.main.tick)

    def on_unmount(self) -> None:
        self.watcher.close()
        path = os.environ.get("ROOST_CONSOLE_STATS")
        if path:
            with open(path, "w", encoding="utf-8") as f:
                json.dump(self.stats.summary(), f)

    # --- the refresh loop -------------------------------------------------------------------

    def request_refresh(self, *, force: bool = False) -> None:
        """Poll now (or right after the poll that is running)."""
        self._force = self._force or force
        if self._fetching:
            self._again = True
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._kick()

    def _kick(self) -> None:
        self._timer = None
        self._fetching = True
        image, force = self.history_image, self._force
        self._force = False
        self.run_worker(
            lambda: self._poll(image, force), thread=True, exit_on_error=False, group="refresh", name="refresh"
        )

    def _poll(self, image: str | None, force: bool) -> None:
        started = time.perf_counter()
        error = None
        snapshot = None
        try:
            snapshot = self.watcher.poll(image=image, force=force)
        except RoostError as e:
            error = str(e)
        except Exception as e:  # noqa: BLE001 - a failed poll is shown and retried, never fatal
            error = f"{type(e).__name__}: {e}"
        self.post_message(StateUpdate(snapshot, error, time.perf_counter() - started))

    def on_state_update(self, message: StateUpdate) -> None:
        started = time.perf_counter()
        snapshot = message.snapshot
        if message.error:
            self._report(f"cannot read the state: {message.error}")
        if snapshot is not None:
            self.snapshot = snapshot
            for error in snapshot.errors:
                self._report(error)
            with self.batch_update():
                self.main.apply(snapshot)
            self.stats.add(message.seconds, time.perf_counter() - started)
            if not self.loaded and (snapshot.history_image is not None or not snapshot.images):
                self.loaded = True
                # What the first, full read built lives as long as the console: keep it out of
                # the collector's full passes, which would otherwise stall key presses.
                gc.freeze()
        self._fetching = False
        if self._again:
            self._again = False
            self._kick()
        else:
            self._timer = self.set_timer(self.interval, self._kick)

    def _report(self, error: str) -> None:
        """An error of the state root, shown once (not on every poll)."""
        if error not in self._shown_errors:
            self._shown_errors.add(error)
            self.notify(error, severity="error", timeout=10, markup=False)

    # --- the usage loop ---------------------------------------------------------------------

    def _usage_kick(self) -> None:
        sessions = [i.session for i in self.snapshot.sessions.values()] if self.snapshot else []
        first = self.usage_first

        def measure() -> None:
            try:
                figures = self.meter.measure(sessions, first=first)
                error = None
            except Exception as e:  # noqa: BLE001 - measuring is best effort
                figures, error = {}, f"{type(e).__name__}: {e}"
            self.post_message(UsageUpdate(figures, error))

        self.run_worker(measure, thread=True, exit_on_error=False, group="usage", name="usage")

    def on_usage_update(self, message: UsageUpdate) -> None:
        if message.error:
            self._report(f"cannot measure sessions: {message.error}")
        if message.figures:
            self.usage.update(message.figures)
        if self.snapshot is not None:
            for gone in set(self.usage) - self.snapshot.sessions.keys():
                del self.usage[gone]
            if message.figures:
                started = time.perf_counter()
                with self.batch_update():
                    self.main.apply_usage()
                self.stats.usage.append(time.perf_counter() - started)
            if self.snapshot.sessions.keys() <= self.usage.keys():
                self.usage_loaded = all(f.measured for f in self.usage.values())
        self.set_timer(self.usage_interval if self.snapshot else 0.1, self._usage_kick)

    # --- for operations ---------------------------------------------------------------------

    def select_session(self, sid: str) -> None:
        self.main.select_session(sid)


def run_console(root: str | None = None) -> int:
    """Run the console on the state root *root* (or the configured one); the exit code."""
    try:
        engine = Engine(root=root)
    except RoostError as e:
        print(f"roost: {e}", file=sys.stderr)
        return e.exit_code
    app = RoostConsole(engine)
    code = app.run()
    return code if isinstance(code, int) else (app.return_code or 0)
