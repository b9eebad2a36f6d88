"""The main screen with other hosts: a Hosts pane, the other panes filtered to the highlighted host.

When other hosts are configured the console's main screen is this one. The
Hosts pane lists this host first, then the others, each reachable or not,
with its images, sessions, locks held and load (what the app's hosts loop
last heard: tui/app.py). The Images, Sessions, History and Locks panes show
the host highlighted there, named on the top line and in the pane titles,
and every verb acts on that host: through the engine for this one, and for
another through ``roost`` on it over its shared ssh connection (core/ssh.py,
core/fleet.py), the same runner ``roost --host`` uses. Nothing here blocks
the event loop: each command runs in a thread worker, and what another host
answers is shown as one cleaned line, never obeyed.
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.containers import Container, Horizontal
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Footer

from core import fleet, ssh
from core.engine import Engine
from core.errors import Conflict, RoostError
from core.fleet import HostView
from core.hosts import Host
from core.watch import Figures, Snapshot

from .operations import operation
from .screen import PANES, MainScreen
from .widgets.detail import grid
from .widgets.dialogs import ChoiceDialog, ConfirmDialog, OutputDialog, PromptDialog
from .widgets.help import HelpScreen
from .widgets.history import HistoryPane
from .widgets.hosts import LOCAL, HostRow, HostsPane, state
from .widgets.images import ImagesPane
from .widgets.sessions import SessionsPane
from .widgets.table import DiffTable
from .widgets.topbar import TopBar

if TYPE_CHECKING:
    from .app import RoostConsole

#: Seconds a command on another host may take before the console gives up waiting for it.
ACTION_TIMEOUT = 600.0
#: Seconds the highlight rests on another host's image before its history is read.
HISTORY_AFTER = 0.3
#: Seconds the history of another host's image may take.
READ_TIMEOUT = 10.0

ORDER = ("hosts", *PANES)


def host_pairs(row: HostRow, host: Host | None) -> list[tuple[str, str | Text | None]]:
    """What the detail panel says about a host: nothing that changes on every poll."""
    text, _ = state(row)
    v = row.view
    pairs: list[tuple[str, str | Text | None]] = [
        ("state", text),
        ("why", row.error),
        ("address", f"{host.destination}" + (f" port {host.port}" if host and host.port else "") if host else None),
        ("about", host.description if host else "this host: the console's own engine"),
        ("calls itself", v.hostname if v and row.key != LOCAL else None),
        ("images", str(len(v.images)) if v else None),
        ("sessions", str(len(v.sessions)) if v else None),
        ("locks held", str(v.held) if v else None),
        ("load", " ".join(f"{x:.2f}" for x in v.load) + (f" on {v.cpus} CPUs" if v.cpus else "") if v else None),
        ("polled", "every 2 s, unreachable after 3 s without an answer" if row.key != LOCAL else None),
    ]
    return pairs


def _lines(text: str) -> str:
    """Another host's output, without control characters (tabs and line breaks kept)."""
    return "".join(c if c.isprintable() or c in "\t\n" else "?" for c in text)


class FleetScreen(MainScreen):
    """The main screen, plus the Hosts pane (0) and the verbs run on the highlighted host."""

    BINDINGS: ClassVar = [Binding("0", "show_pane('hosts')", "Hosts", show=False, id="pane.hosts")]

    def __init__(
        self,
        engine: Engine,
        *,
        host: str,
        clock: Callable[[], float],
        tick_interval: float,
        terminal: Mapping[str, int],
        hosts: Sequence[Host],
        loadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
    ) -> None:
        super().__init__(engine, host=host, clock=clock, tick_interval=tick_interval, terminal=terminal)
        self.others = {h.name: h for h in hosts}
        self.loadavg = loadavg
        self.hosts_pane = HostsPane()
        self.active = "hosts"
        #: The other host the panes show and the verbs act on (None: this one).
        self.viewing: str | None = None
        #: The newest read of this host's state root (every part of it, changed or not).
        self.local: Snapshot | None = None
        #: The image of the viewed host whose history is shown, and what was read of it.
        self.remote_image: str | None = None
        self._history_key: tuple[str, str, int, int] | None = None
        self._local_row_shown: HostRow | None = None
        self._history_timer: Timer | None = None
        self._detail_shown: tuple[str, list[tuple[str, str | Text | None]]] | None = None
        #: The answer of the viewed host that the panes show (None: none yet, or this host).
        self._filled: HostRow | None = None
        self._connections: dict[str, ssh.Connection] = {}
        self._connections_lock = threading.Lock()

    @property
    def console(self) -> RoostConsole:
        from .app import RoostConsole

        app = self.app
        assert isinstance(app, RoostConsole)
        return app

    def compose(self) -> ComposeResult:
        yield TopBar(self.host, self.engine.store.root, fleet=True)
        with Container(id="panes", classes=f"-fleet -show-{self.active}"):
            yield self.hosts_pane
            yield self.images_pane
            yield self.sessions_pane
            yield self.history_pane
            yield self.locks_pane
        yield self.task_panel
        with Horizontal(id="bottom"):
            yield self.detail
            yield self.events
        yield Footer(compact=True)

    def on_mount(self) -> None:
        super().on_mount()
        self.watch(self.app, "remote", self._show_remote)

    # --- panes -----------------------------------------------------------------------------

    def pane(self, name: str) -> Any:
        return self.hosts_pane if name == "hosts" else super().pane(name)

    def _activate(self, name: str) -> None:
        self.query_one("#panes").set_class(name == "hosts", "-show-hosts")
        super()._activate(name)

    def action_show_pane(self, name: str) -> None:
        if name == "hosts":
            self._activate(name)
            self.hosts_pane.table.focus()
            return
        super().action_show_pane(name)

    def action_next_pane(self) -> None:
        self.action_show_pane(ORDER[(ORDER.index(self.active) + 1) % len(ORDER)])

    def action_previous_pane(self) -> None:
        self.action_show_pane(ORDER[(ORDER.index(self.active) - 1) % len(ORDER)])

    def action_help(self) -> None:
        self.app.push_screen(
            HelpScreen(
                [
                    ("Hosts (0)", [], HostsPane.HELP),
                    ("Images (1)", ImagesPane.BINDINGS, ImagesPane.HELP),
                    ("Sessions (2)", SessionsPane.BINDINGS, SessionsPane.HELP),
                    ("History (3)", HistoryPane.BINDINGS, HistoryPane.HELP),
                    ("Everywhere", [*self.BINDINGS, *MainScreen.BINDINGS, *self.app.BINDINGS], ""),
                ]
            )
        )

    def show_detail(self) -> None:
        if self.active != "hosts":
            self._detail_shown = None
            super().show_detail()
            return
        row = self.hosts_pane.selected_row()
        shown = None if row is None else (row.name, host_pairs(row, self.others.get(row.key)))
        if shown == self._detail_shown and shown is not None:
            return  # the same words: not redrawn (every host answers every 2 s)
        self._detail_shown = shown
        self.detail.show("No hosts." if shown is None else grid(f"host {shown[0]}", shown[1]))

    # --- what the hosts say ------------------------------------------------------------------

    def _local_row(self) -> HostRow:
        """This host's row, from the newest read of its state root (and its load now)."""
        snap = self.local
        if snap is None:
            return HostRow(LOCAL, self.host, None)
        view = HostView(
            images=dict(snap.images),
            sessions=dict(snap.sessions),
            locks=snap.locks,
            load=tuple(self.loadavg()),
            cpus=None,
            hostname=self.host,
        )
        return HostRow(LOCAL, self.host, True, view)

    def rows(self, *, local: bool = False) -> list[HostRow]:
        """This host first, then the others in the order given (*local*: read this host's row again)."""
        if local or self._local_row_shown is None:
            self._local_row_shown = self._local_row()
        rows = [self._local_row_shown]
        remote = self.console.remote
        for name in self.others:
            rows.append(remote.get(name) or HostRow(name, name, None))
        return rows

    def _show_snapshot(self, snapshot: Snapshot | None) -> None:
        if snapshot is None:
            return
        self.local = snapshot
        if "images" in snapshot.changed or "sessions" in snapshot.changed or "locks" in snapshot.changed:
            self.hosts_pane.show(self.rows(local=True))
        if self.viewing is None:
            super()._show_snapshot(snapshot)
        elif snapshot.events:
            self.events.add(snapshot.events)

    def _show_usage(self, usage: Mapping[str, Figures]) -> None:
        if self.viewing is None:
            super()._show_usage(usage)
        else:
            self.usage = usage

    def tick(self) -> None:
        super().tick()
        self.hosts_pane.show(self.rows(local=True))

    def _show_remote(self, remote: Mapping[str, HostRow]) -> None:
        self.hosts_pane.show(self.rows())
        if self.active == "hosts":
            self.show_detail()
        if self.viewing is not None and remote.get(self.viewing) is not self._filled:
            self._fill()  # only when the viewed host said something new

    @on(DiffTable.SelectionChanged)
    def _host_selected(self, event: DiffTable.SelectionChanged) -> None:
        if event.table is not self.hosts_pane.table:
            return
        viewing = None if event.key in (None, LOCAL) else event.key
        if viewing == self.viewing:
            return
        self.viewing = viewing
        self.query_one(TopBar).show_viewing(viewing)
        self.remote_image = None
        self._history_key = None
        self._fill()

    def _fill(self) -> None:
        """Show the viewed host in the Images, Sessions, History and Locks panes."""
        now = self.clock()
        if self.viewing is None:
            for pane in (self.images_pane, self.sessions_pane, self.locks_pane):
                pane.border_title = pane.TITLE
            snap = self.local
            if snap is not None:
                self.images_pane.show(snap.images)
                self.sessions_pane.show(snap.sessions, self.usage, now)
                self.locks_pane.show(snap.locks, now)
                self.history_pane.show(snap.history_image, snap.history)
                if self.images_pane.selected is not None and self.images_pane.selected != snap.history_image:
                    self._follow_image(self.images_pane.selected)
        else:
            name = self.viewing
            row = self.console.remote.get(name)
            self._filled = row
            view = row.view if row is not None else None
            if row is None or row.reachable is None:
                note = " (not answered yet)"
            else:
                note = "" if row.reachable else " (unreachable: as it last answered)"
            for pane in (self.images_pane, self.sessions_pane, self.locks_pane):
                pane.border_title = f"{pane.TITLE} on {name}{note}"
            self.images_pane.show(view.images if view else {})
            self.sessions_pane.show(view.sessions if view else {}, {}, now)
            self.locks_pane.show(view.locks if view else (), now)
            image = self.images_pane.selected
            if image is None:
                self.history_pane.show(None, ())
            elif view is not None and image in view.images:
                info = view.images[image]
                key = (name, image, info.current, info.generations)
                if key != self._history_key:
                    self._history_key = key
                    self.remote_image = image
                    # Read once the operator has stopped on it: moving through hosts starts no ssh per key.
                    if self._history_timer is not None:
                        self._history_timer.stop()
                    self._history_timer = self.set_timer(HISTORY_AFTER, partial(self._read_history, name, image))
        self.show_detail()
        self._update_footer()

    def _follow_image(self, image: str) -> None:
        if self.viewing is None:
            super()._follow_image(image)
        elif image != self.remote_image:
            self.remote_image = image
            self._history_key = None
            self._fill()

    @work(thread=True, exit_on_error=False, group="remote-history", exclusive=True)
    def _read_history(self, name: str, image: str) -> None:
        import json

        try:
            out = fleet.run(self.connection(name), ["--json", "image", "history", image], READ_TIMEOUT)
            generations, error = fleet.history(json.loads(out)), None
        except (RoostError, ValueError) as e:
            generations, error = (), fleet.clean(str(e))
        try:
            self.app.call_from_thread(self._history_read, name, image, generations, error)
        except RuntimeError:
            pass  # the console is closing

    def _history_read(self, name: str, image: str, generations: tuple[Any, ...], error: str | None) -> None:
        if (self.viewing, self.remote_image) != (name, image):
            return
        if error is not None:
            self._history_key = None
            self.fail(f"history of {image} on {name}: {error}")
        self.history_pane.show(image, generations)
        self.history_pane.border_title = f"History: {image} on {name}"
        if self.active == "history":
            self.show_detail()
        self._update_footer()

    # --- running roost on another host ---------------------------------------------------------

    def connection(self, name: str) -> ssh.Connection:
        """The shared ssh connection to host *name* (made in a worker: it looks up the caller)."""
        with self._connections_lock:
            conn = self._connections.get(name)
            if conn is None:
                conn = ssh.Connection(self.others[name], batch=True)
                self._connections[name] = conn
            return conn

    async def run_there(self, name: str, words: list[str], what: str, timeout: float = ACTION_TIMEOUT) -> str:
        """Run ``roost WORDS`` on host *name* in a thread worker; its output, or its error raised.

        A host whose last poll found it unreachable is not asked (the command would only wait
        for ssh to give up): the error says so at once, and the next poll tells when it is back.
        """
        self.check_reachable(name)
        return await self.call(lambda: fleet.run(self.connection(name), words, timeout), what)

    def check_reachable(self, name: str) -> None:
        row = self.console.remote.get(name)
        if row is not None and row.reachable is False:
            raise ssh.Unreachable(f"{name} is unreachable ({row.error}); try again once it answers")

    def _done_on(self, name: str) -> None:
        self.console.poll_host_now(name)

    # --- the verbs -----------------------------------------------------------------------------

    def _elsewhere(self, what: str) -> None:
        self.notify(
            f"{what} runs on this host only; for {self.viewing}: roost --host {self.viewing} …",
            severity="warning",
            markup=False,
        )

    def action_create_image(self) -> None:
        if self.viewing is None:
            super().action_create_image()
        else:
            self._elsewhere("creating an image from the console")

    def action_begin(self) -> None:
        if self.viewing is None:
            super().action_begin()
        elif (image := self._image()) is not None:
            self.remote_begin(f"{image} on {self.viewing}", self.viewing, image, False)

    def action_begin_maintenance(self) -> None:
        if self.viewing is None:
            super().action_begin_maintenance()
        elif (image := self._image()) is not None:
            self.remote_begin(f"{image} on {self.viewing}", self.viewing, image, True)

    def action_gc(self) -> None:
        if self.viewing is None:
            super().action_gc()
        elif (image := self._image()) is not None:
            self.remote_gc(f"{image} on {self.viewing}", self.viewing, image)

    def action_rollback(self) -> None:
        if self.viewing is None:
            super().action_rollback()
            return
        found = self.selected_generation()
        if found is None:
            self.notify("select a generation in the history pane first (3)", severity="warning")
            return
        image, g = found
        if g.current:
            self.notify(f"generation {g.generation} is already current for {image}", severity="warning")
            return
        self.remote_rollback(f"{image} on {self.viewing}", self.viewing, image, g.generation)

    def action_enter_session(self) -> None:
        if self.viewing is None:
            super().action_enter_session()
        elif (sid := self._session()) is not None:
            self.remote_enter(f"{sid} on {self.viewing}", self.viewing, sid)

    def action_run_command(self) -> None:
        if self.viewing is None:
            super().action_run_command()
        elif (sid := self._session()) is not None:
            self.remote_run(self.viewing, sid)

    def action_promote(self) -> None:
        if self.viewing is None:
            super().action_promote()
        elif (sid := self._session()) is not None:
            self.remote_promote(f"{sid} on {self.viewing}", self.viewing, sid)

    def action_end_session(self) -> None:
        if self.viewing is None:
            super().action_end_session()
        elif (sid := self._session()) is not None:
            self.remote_end(f"{sid} on {self.viewing}", self.viewing, sid)

    def action_switch_network(self) -> None:
        if self.viewing is None:
            super().action_switch_network()
            return
        info = self.selected_session()
        if info is None:
            self.notify("select a session first (2)", severity="warning")
            return
        sid = info.session.id
        self.remote_network(f"{sid} on {self.viewing}", self.viewing, sid, info.session.network)

    def action_recover(self) -> None:
        if self.viewing is None:
            super().action_recover()
        elif (sid := self._session()) is not None:
            self.remote_recover(f"{sid} on {self.viewing}", self.viewing, sid)

    # --- operations on another host (one per target, as on this one: tui/operations.py) ---------

    @work(group="operations", exit_on_error=False)
    @operation("begin session")
    async def remote_begin(self, target: str, name: str, image: str, maintenance: bool) -> None:
        words = ["session", "begin", image, *(["--maintenance"] if maintenance else [])]
        try:
            out = await self.run_there(name, words, f"begin {target}")
        finally:
            self._done_on(name)
        sid = fleet.clean(out.strip().splitlines()[-1], 80) if out.strip() else "?"
        kind = "maintenance session" if maintenance else "session"
        self.say(f"began {kind} {sid} on {image} on {name}")

    @work(group="operations", exit_on_error=False)
    @operation("gc")
    async def remote_gc(self, target: str, name: str, image: str) -> None:
        question: list[str | Text | Widget] = [
            Text.assemble("Delete old generations of ", (image, "bold"), " on ", (name, "bold"), "?"),
            "Those retention no longer keeps: never the current one, the newest, or one a session uses.",
            "They cannot be rolled back to afterwards.",
        ]
        if not await self.app.push_screen_wait(ConfirmDialog(f"Garbage-collect {image} on {name}", question, "Delete")):
            return
        try:
            out = await self.run_there(name, ["image", "gc", image], f"gc {target}")
        finally:
            self._done_on(name)
        last = fleet.clean(out.strip().splitlines()[-1]) if out.strip() else "done"
        self.say(f"{image} on {name}: {last}")

    @work(group="operations", exit_on_error=False)
    @operation("rollback")
    async def remote_rollback(self, target: str, name: str, image: str, generation: int) -> None:
        question: list[str | Text | Widget] = [
            Text.assemble(
                "Make generation ",
                (str(generation), "bold"),
                " of ",
                (image, "bold"),
                " on ",
                (name, "bold"),
                " current again?",
            ),
            "New sessions there clone it from now on; running sessions keep what they were cloned from,",
            "and no generation is deleted: rolling back again undoes this.",
        ]
        dialog = ConfirmDialog(
            f"Roll {image} on {name} back to generation {generation}", question, "Roll back", danger=False
        )
        if not await self.app.push_screen_wait(dialog):
            return
        try:
            await self.run_there(name, ["image", "rollback", image, str(generation)], f"rollback {target}")
        finally:
            self._done_on(name)
        self.say(f"{image} on {name} is now at generation {generation}")

    @work(group="operations", exit_on_error=False)
    @operation("end")
    async def remote_end(self, target: str, name: str, sid: str) -> None:
        info = self.sessions_pane.sessions.get(sid)
        about = f" ({info.session.kind}, {info.session.image} generation {info.session.generation})" if info else ""
        question: list[str | Text | Widget] = [
            Text.assemble("End session ", (sid, "bold"), " on ", (name, "bold"), f"{about}?"),
            "Lost for good:",
            "  • its changes, never promoted",
            "  • the processes running inside, killed (TERM, then KILL)",
        ]
        if info is not None and info.session.maintenance:
            question.append(f"  • its hold on {info.session.image}'s writer lock")
        if not await self.app.push_screen_wait(ConfirmDialog(f"End {sid} on {name}", question, "End session")):
            return
        try:
            try:
                await self.run_there(name, ["session", "end", sid], f"end {target}")
            except Conflict as error:
                if "busy" not in str(error):
                    raise
                question = [
                    Text.assemble("Session ", (sid, "bold"), " on ", (name, "bold"), " could not be unmounted:"),
                    Text(str(error), style="italic"),
                    "Force detaches the busy mounts: the session, its record and its changes are gone.",
                ]
                if not await self.app.push_screen_wait(ConfirmDialog(f"Force end {sid}", question, "Force end")):
                    return
                await self.run_there(name, ["session", "end", "--force", sid], f"end {target}")
        finally:
            self._done_on(name)
        self.say(f"ended session {sid} on {name}")

    @work(group="operations", exit_on_error=False)
    @operation("promote")
    async def remote_promote(self, target: str, name: str, sid: str) -> None:
        info = self.sessions_pane.sessions.get(sid)
        image = info.session.image if info else "its image"
        question: list[str | Text | Widget] = [
            Text.assemble(
                "Promote ", (sid, "bold"), " on ", (name, "bold"), " into ", (image, "bold"), "'s next generation?"
            ),
            "It becomes current there (the one before stays in history for rollback), and the session ends.",
            f"What it changed: roost --host {name} session diff {sid}",
            "A message says what changed:",
        ]
        dialog = PromptDialog(
            f"Promote {sid} on {name}", question, placeholder="e.g. install build-essential", accept="Promote"
        )
        message = await self.app.push_screen_wait(dialog)
        if message is None:
            return
        try:
            await self.run_there(name, ["session", "promote", sid, "-m", message.strip()], f"promote {target}")
        finally:
            self._done_on(name)
        self.say(f"promoted {sid} into {image} on {name}")

    @work(group="operations", exit_on_error=False)
    @operation("network")
    async def remote_network(self, target: str, name: str, sid: str, current: str) -> None:
        question: list[str | Text] = [
            Text.assemble(
                "Switch the network of ", (sid, "bold"), " on ", (name, "bold"), " (now ", (current, "bold"), ")?"
            ),
            "host: the host's network; none: loopback only; loopback: the host's network filtered to 127.0.0.1.",
            "Commands started from now on get the new one.",
        ]
        choices = [("host", "h"), ("none", "o"), ("loopback", "l")]
        choice = await self.app.push_screen_wait(
            ChoiceDialog(f"Network of {sid} on {name}", question, choices, current)
        )
        if choice is None or choice == current:
            return
        try:
            await self.run_there(name, ["session", "network", sid, choice], f"network {target}")
        finally:
            self._done_on(name)
        self.say(f"{sid} on {name}: network {current} -> {choice}")

    @work(group="operations", exit_on_error=False)
    @operation("recover")
    async def remote_recover(self, target: str, name: str, sid: str) -> None:
        try:
            out = await self.run_there(name, ["session", "recover", sid], f"recover {target}")
        finally:
            self._done_on(name)
        self.say(fleet.clean(out) if out.strip() else f"{sid} on {name}: nothing to recover")

    @work(group="operations", exit_on_error=False)
    @operation("enter")
    async def remote_enter(self, target: str, name: str, sid: str) -> None:
        """A login shell inside, over ``ssh -t``: the console steps aside until it exits."""
        self.check_reachable(name)
        conn = await self.call(lambda: self._connected(name), f"enter {target}")
        try:
            with self.app.suspend():
                proc = conn.popen(["session", "enter", sid], tty=True, die_with_parent=False, **self.terminal)
                code = proc.wait()
        except SuspendNotSupported:
            self.notify(
                "this console cannot hand over its terminal here; in a shell run: "
                f"roost --host {name} session enter {sid}",
                severity="warning",
                timeout=10,
                markup=False,
            )
            return
        except OSError as e:
            self.notify(f"enter {target}: {e.strerror}", severity="error", markup=False)
            return
        finally:
            self._done_on(name)
        self.say(f"back from session {sid} on {name} (ssh exited with {code})")

    def _connected(self, name: str) -> ssh.Connection:
        conn = self.connection(name)
        conn.connect(timeout=READ_TIMEOUT)
        return conn

    @work(group="operations", exit_on_error=False)
    async def remote_run(self, name: str, sid: str) -> None:
        prompt = PromptDialog(
            f"Run in {sid} on {name}",
            ["A command for /bin/sh -c, run as you, in / of the session:"],
            placeholder="e.g. apt-get update",
            accept="Run",
            allow_empty=False,
        )
        command = await self.app.push_screen_wait(prompt)
        if command is not None and command.strip():
            await self._remote_run(f"{sid} on {name}", name, sid, command)

    @operation("run")
    async def _remote_run(self, target: str, name: str, sid: str, command: str) -> None:
        self.check_reachable(name)
        dialog = OutputDialog(f"{sid} on {name}: {command}")
        await self.app.push_screen(dialog)
        try:
            code = await self.call(lambda: self._stream_there(name, sid, command, dialog), f"run {target}")
        finally:
            self._done_on(name)
        if dialog.interrupted:
            dialog.done(f"interrupted (exit status {code})")
        else:
            dialog.done("done (exit status 0)" if code == 0 else f"failed (exit status {code})")

    def _stream_there(self, name: str, sid: str, command: str, dialog: OutputDialog) -> int:
        """In a thread: ``roost session run`` there through ssh, its output streamed into *dialog*."""
        conn = self._connected(name)
        proc = conn.popen(
            ["session", "run", sid, "--", "/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        dialog.pid = proc.pid  # closing the dialog stops ssh, which ends the command's session
        app = self.app
        fd = proc.stdout.fileno()
        pending = b""
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], 0.2)
                if not ready:
                    if dialog.closed:
                        break
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                pending += chunk
                cut = pending.rfind(b"\n")
                if cut >= 0:
                    text = _lines(pending[: cut + 1].decode("utf-8", "replace"))
                    pending = pending[cut + 1 :]
                    app.call_from_thread(dialog.add, text)
            if pending:
                app.call_from_thread(dialog.add, _lines(pending.decode("utf-8", "replace")))
        finally:
            proc.stdout.close()
            if dialog.closed and proc.poll() is None:
                proc.terminate()
            code = proc.wait()
        if code == 255 and conn.lost(255):
            raise ssh.Unreachable(f"lost the connection to {name}")
        return code


__all__ = ["FleetScreen", "host_pairs"]
