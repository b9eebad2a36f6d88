"""The operator console: ``roost`` with no command.

The console reads the state root through :class:`core.watch.Watcher` and acts
only through :class:`core.engine.Engine`. Two loops keep it current without
ever overlapping themselves: the refresh loop (every half second: a cheap poll
in a thread worker, then only what changed is shown) and the usage loop (every
two seconds: processes and disk use per session, within a time budget, and
memory and CPU of the sessions with a cgroup whose rows are on screen).

Data flows one way: the app publishes what it read as reactive attributes
(:attr:`RoostConsole.snapshot`, :attr:`RoostConsole.usage`), which the main
screen watches; the screen tells the app what it needs with messages (the
image whose history to read, the session to measure first, a refresh now).

With other hosts (hosts.yaml, or ``--host`` given more than once) a third
loop polls each of them on its own, in a thread worker bounded by a timeout
(core.fleet.poll): a host that stops answering is shown as unreachable after
that timeout and holds up neither the others nor a key press. The app
publishes what each host said as :attr:`RoostConsole.remote`, and the main
screen is the fleet screen (tui/fleet.py), with a Hosts pane.
"""

from __future__ import annotations

import gc
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.reactive import var
from textual.timer import Timer

from core.engine import Engine, open_engine
from core.errors import RoostError
from core.fleet import HostStatus
from core.hosts import Host
from core.records import Session
from core.watch import Figures, Snapshot, Usage, Watcher

from .messages import ImageHighlighted, RefreshRequested, SessionHighlighted
from .palette import SelectionCommands
from .screen import MainScreen
from .widgets.hosts import HostRow


class StateRead(Message):
    """What one poll of the state root found (None: nothing changed)."""

    def __init__(self, snapshot: Snapshot | None, error: str | None) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.error = error


class UsageMeasured(Message):
    def __init__(self, figures: dict[str, Figures], error: str | None) -> None:
        super().__init__()
        self.figures = figures
        self.error = error


#: Seconds between two showings of what other hosts answered (answers in between are shown together).
HOSTS_SHOWN = 0.5


class HostPolled(Message):
    """What one poll of another host found."""

    def __init__(self, host: Host, row: HostRow) -> None:
        super().__init__()
        self.host = host
        self.row = row


class RoostConsole(App[int]):
    """The console on one state root."""

    CSS_PATH = Path(__file__).with_name("roost.tcss")  # absolute: subclasses live elsewhere
    TITLE = "roost"
    COMMANDS: ClassVar = App.COMMANDS | {SelectionCommands}
    BINDINGS: ClassVar = [Binding("ctrl+q", "quit", "Quit", show=False, priority=True, id="app.quit")]
    NOTIFICATION_TIMEOUT = 5

    #: The newest poll that found something: the screen shows what it says changed.
    snapshot: var[Snapshot | None] = var(None, always_update=True)
    #: Processes and disk use per live session (a new mapping on every measurement).
    usage: var[Mapping[str, Figures]] = var(dict, always_update=True)
    #: What each other host said at its newest poll (a new mapping on every answer).
    remote: var[Mapping[str, HostRow]] = var(dict, always_update=True)

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], float] = time.time,
        host: str | None = None,
        interval: float = 0.5,
        usage_interval: float = 2.0,
        tick_interval: float = 10.0,
        terminal: Mapping[str, int] | None = None,
        hosts: Sequence[Host] = (),
        poll_host: Callable[[Host], HostStatus] | None = None,
        host_interval: float = 2.0,
        host_timeout: float = 3.0,
        loadavg: Callable[[], tuple[float, float, float]] | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.clock = clock
        self.host = host or socket.gethostname()
        self.interval = interval
        self.usage_interval = usage_interval
        self.tick_interval = tick_interval
        #: Where a shell entered from the console reads and writes (a test may point it elsewhere).
        self.terminal = dict(terminal or {"stdin": 0, "stdout": 1, "stderr": 2})
        self.watcher = Watcher(engine)
        self.meter = Usage()
        #: The image whose history the watcher reads (the one highlighted in the images pane).
        self.history_image: str | None = None
        #: The session the usage loop measures first (the highlighted one).
        self.measure_first: str | None = None
        #: True once the first full read is shown, and once every session has been measured.
        self.loaded = False
        self.usage_loaded = False
        self._polling = False
        self._again = False
        self._force = False
        self._timer: Timer | None = None
        self._shown_errors: set[str] = set()
        #: The other hosts, in the order given; how one is polled, how often, and how long it may take.
        self.hosts = list(hosts)
        self.poll_host = poll_host
        self.host_interval = host_interval
        self.host_timeout = host_timeout
        #: This host's load, as the Hosts pane shows it (the screenshots freeze it, as they freeze the clock).
        self.loadavg = loadavg or os.getloadavg
        self._hosts_polling: set[str] = set()
        self._hosts_again: set[str] = set()
        self._host_timers: dict[str, Timer] = {}
        self._rows_pending: dict[str, HostRow] = {}
        self._rows_timer: Timer | None = None
        engine.ctx.on_wait = lambda message: self.notify(message, timeout=4, markup=False)

    def get_default_screen(self) -> MainScreen:
        if self.hosts:
            from .fleet import FleetScreen

            return FleetScreen(
                self.engine,
                host=self.host,
                clock=self.clock,
                tick_interval=self.tick_interval,
                terminal=self.terminal,
                hosts=self.hosts,
                loadavg=self.loadavg,
            )
        return MainScreen(
            self.engine,
            host=self.host,
            clock=self.clock,
            tick_interval=self.tick_interval,
            terminal=self.terminal,
        )

    @property
    def main(self) -> MainScreen:
        """The main screen (under any dialogs)."""
        screen = self.screen_stack[0]
        assert isinstance(screen, MainScreen)
        return screen

    @property
    def shown_sessions(self) -> frozenset[str]:
        """The sessions whose rows are on screen now: only their memory and CPU are read.

        Asked of the Sessions pane each round rather than told by it: rows given before the
        table's first layout have no height yet, and no event follows that layout.
        """
        return self.main.sessions_pane.shown_keys() if self.screen_stack else frozenset()

    @property
    def polling(self) -> bool:
        """A poll of the state root is running (its result not shown yet)."""
        return self._polling

    def on_mount(self) -> None:
        # The workers (polls, tree walks) share the GIL with the event loop: hand it back
        # to the event loop sooner than Python's default 5 ms, so keys are answered at once.
        sys.setswitchinterval(0.001)
        self._kick()
        self.set_timer(0.05, self._measure_usage)
        for host in self.hosts:
            self._start_host_poll(host)

    def on_unmount(self) -> None:
        self.watcher.close()

    # --- what the screen asks for -------------------------------------------------------------

    @on(ImageHighlighted)
    def _follow_image(self, message: ImageHighlighted) -> None:
        if message.image != self.history_image:
            self.history_image = message.image
            self.request_refresh()

    @on(SessionHighlighted)
    def _measure_first(self, message: SessionHighlighted) -> None:
        self.measure_first = message.session

    @on(RefreshRequested)
    def _refresh_requested(self, message: RefreshRequested) -> None:
        self.request_refresh(force=message.force)

    # --- the refresh loop -------------------------------------------------------------------

    def request_refresh(self, *, force: bool = False) -> None:
        """Poll now (or right after the poll that is running)."""
        self._force = self._force or force
        if self._polling:
            self._again = True
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._kick()

    def _kick(self) -> None:
        self._timer = None
        self._polling = True
        image, force = self.history_image, self._force
        self._force = False
        self._read_state(image, force)

    @work(thread=True, exit_on_error=False, group="refresh")
    def _read_state(self, image: str | None, force: bool) -> None:
        error = None
        snapshot = None
        try:
            snapshot = self.poll(image, force)
        except RoostError as e:
            error = str(e)
        except Exception as e:  # noqa: BLE001 - a failed poll is shown and retried, never fatal
            error = f"{type(e).__name__}: {e}"
        self.post_message(StateRead(snapshot, error))

    def poll(self, image: str | None, force: bool) -> Snapshot | None:
        """Read what changed in the state root (in a thread worker); None if nothing did."""
        return self.watcher.poll(image=image, force=force)

    def on_state_read(self, message: StateRead) -> None:
        if message.error:
            self._report(f"cannot read the state: {message.error}")
        if message.snapshot is not None:
            self.show(message.snapshot)
        self._polling = False
        if self._again:
            self._again = False
            self._kick()
        else:
            self._timer = self.set_timer(self.interval, self._kick)

    def show(self, snapshot: Snapshot) -> None:
        """Publish a poll's result (on the event loop): the screen shows what changed."""
        for error in snapshot.errors:
            self._report(error)
        with self.batch_update():
            self.snapshot = snapshot
        if not self.loaded and (snapshot.history_image is not None or not snapshot.images):
            self.loaded = True
            # What the first, full read built lives as long as the console: keep it out of
            # the collector's full passes, which would otherwise stall key presses.
            gc.freeze()

    def _report(self, error: str) -> None:
        """An error of the state root, shown once (not on every poll)."""
        if error not in self._shown_errors:
            self._shown_errors.add(error)
            self.notify(error, severity="error", timeout=10, markup=False)

    # --- the hosts loop: each other host polled on its own ---------------------------------------

    @work(thread=True, exit_on_error=False, group="hosts")
    def _poll_host(self, host: Host) -> None:
        from core import fleet

        try:
            poll = self.poll_host or partial(fleet.poll, timeout=self.host_timeout)
            status = poll(host)
        except Exception as e:  # noqa: BLE001 - a poll that fails is a host that did not answer, never fatal
            status = HostStatus(host.name, False, 0.0, error=f"{type(e).__name__}: {e}")
        view = None
        error = fleet.clean(status.error) if status.error else None
        if status.summary is not None:
            try:
                view = fleet.view(status.summary)
            except ValueError as e:
                error = f"not a summary: {fleet.clean(str(e))}"
        about = fleet.clean(host.description, 80)
        row = HostRow(host.name, host.name, status.reachable, view, error, status.seconds, about)
        self.post_message(HostPolled(host, row))

    def _start_host_poll(self, host: Host) -> None:
        self._host_timers.pop(host.name, None)
        self._hosts_polling.add(host.name)
        self._poll_host(host)

    def on_host_polled(self, message: HostPolled) -> None:
        host = message.host
        self._hosts_polling.discard(host.name)
        row = message.row
        before = self._rows_pending.get(row.key) or self.remote.get(row.key)
        if row.view is None and before is not None and before.view is not None:
            row = row._replace(view=before.view)  # shown as it last answered, marked unreachable or failing
        # Answers are published together, at most every HOSTS_SHOWN seconds: with many hosts,
        # one redraw for a burst of answers rather than one each.
        self._rows_pending[row.key] = row
        if self._rows_timer is None:
            self._rows_timer = self.set_timer(HOSTS_SHOWN, self._publish_rows)
        if host.name in self._hosts_again:
            self._hosts_again.discard(host.name)
            self._start_host_poll(host)
        else:
            self._host_timers[host.name] = self.set_timer(self.host_interval, partial(self._start_host_poll, host))

    def _publish_rows(self) -> None:
        self._rows_timer = None
        rows, self._rows_pending = self._rows_pending, {}
        if rows:
            with self.batch_update():
                self.remote = {**self.remote, **rows}

    def poll_host_now(self, name: str) -> None:
        """Poll host *name* now (after an operation there), or right after the poll that is running."""
        host = next((h for h in self.hosts if h.name == name), None)
        if host is None:
            return
        if name in self._hosts_polling:
            self._hosts_again.add(name)
            return
        timer = self._host_timers.pop(name, None)
        if timer is not None:
            timer.stop()
        self._start_host_poll(host)

    # --- the usage loop ---------------------------------------------------------------------

    def _measure_usage(self) -> None:
        sessions = [i.session for i in self.snapshot.sessions.values()] if self.snapshot else []
        self._measure(sessions, self.measure_first, self.shown_sessions)

    @work(thread=True, exit_on_error=False, group="usage")
    def _measure(self, sessions: list[Session], first: str | None, shown: frozenset[str]) -> None:
        try:
            figures = self.meter.measure(sessions, first=first, loads=self.read_loads, watched=shown)
            error = None
        except Exception as e:  # noqa: BLE001 - measuring is best effort
            figures, error = {}, f"{type(e).__name__}: {e}"
        self.post_message(UsageMeasured(figures, error))

    def read_loads(self, sessions: list[Session]) -> Mapping[str, Mapping[str, int | None]]:
        """Memory and CPU of *sessions* (in the usage worker); a refusal is shown once, not retried as an error."""
        try:
            return self.engine.session_usage(sessions)
        except RoostError as e:
            self.call_from_thread(self._report, f"cannot read memory and CPU: {e}")
            return {}

    def on_usage_measured(self, message: UsageMeasured) -> None:
        if message.error:
            self._report(f"cannot measure sessions: {message.error}")
        snapshot = self.snapshot
        if snapshot is not None:
            live = snapshot.sessions
            usage = {sid: f for sid, f in self.usage.items() if sid in live}
            if message.figures:
                usage.update(message.figures)
                self.show_usage(usage)
            else:
                self.set_reactive(RoostConsole.usage, usage)  # sessions that are gone: nothing to show
            if live.keys() <= usage.keys():
                self.usage_loaded = all(f.measured for f in usage.values())
        self.set_timer(self.usage_interval if snapshot else 0.1, self._measure_usage)

    def show_usage(self, usage: Mapping[str, Figures]) -> None:
        """Publish new figures (on the event loop): the screen shows them."""
        with self.batch_update():
            self.usage = usage


def run_console(root: str | None = None, hosts: Sequence[str] | None = None, mode: str | None = None) -> int:
    """Run the console on the state root *root* (or the configured one); the exit code.

    *mode* (``system``, ``user``, or None: from who runs it) picks the engine as
    the command line does (core.engine.open_engine): an ordinary user's console
    shows their own rootless state.

    *hosts* (the console's ``--host`` options) are the other hosts it shows;
    without them, every host in hosts.yaml. Each is checked as ``--host``
    checks it (core/hosts.py): a bad one is one line and exit code 2 or 4.
    """
    from core import hosts as hostsfile

    try:
        if hosts:
            others = [hostsfile.resolve(spec) for spec in dict.fromkeys(hosts)]
        else:
            others = list(hostsfile.load().hosts.values())
        engine = open_engine(mode, root=root)
    except RoostError as e:
        print(f"roost: {e}", file=sys.stderr)
        return e.exit_code
    app = RoostConsole(engine, hosts=others)
    code = app.run()
    return code if isinstance(code, int) else (app.return_code or 0)
