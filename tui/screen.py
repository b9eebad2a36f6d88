"""The main screen: four panes, the detail panel, the event log, and the verbs on the selection.

Wide terminals show all four panes in a grid; narrow ones (under 120 columns)
show one at a time, chosen with 1-4, tab or a click on the top line. Every
verb is a screen action, so a key in the footer, a line in the help screen
and a command in the palette all run the same code, and ``check_action``
greys out what does not apply to the selection. The actions pick their target
from the selection and start the operation (tui/operations.py) on it.

The screen shows what the app publishes (it watches the app's ``snapshot``
and ``usage``) and tells the app what it needs with messages (tui/messages.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal
from textual.widget import Widget
from textual.widgets import Footer

from core.engine import Engine
from core.views import GenerationInfo, ImageInfo, SessionInfo
from core.watch import Figures, Snapshot

from .messages import ImageHighlighted, RefreshRequested, SessionHighlighted
from .operations import OperationsScreen
from .widgets import diffs
from .widgets.create import CreateTask, TaskPanel
from .widgets.detail import DetailPanel, generation_detail, image_detail, lock_detail, session_detail
from .widgets.events import EventLog
from .widgets.help import HelpScreen
from .widgets.history import HistoryPane
from .widgets.images import ImagesPane
from .widgets.locks import LocksPane
from .widgets.pane import Pane
from .widgets.sessions import SessionsPane
from .widgets.table import DiffTable
from .widgets.topbar import TopBar

PANES = ("images", "sessions", "history", "locks")

HINTS = {
    "images": "No images yet. Press c to create one: from a tarball, a directory, mmdebstrap or schroot's chroots.",
    "sessions": "No sessions. Pick an image (1) and press b to begin one, m for a maintenance session.",
    "history": "Pick an image (1) to see its generations.",
    "locks": "Nobody holds or waits for a lock.",
}

#: Which verbs need what kind of selection.
IMAGE_VERBS = {"begin", "begin_maintenance", "gc"}
SESSION_VERBS = {"enter_session", "run_command", "promote", "end_session", "recover", "switch_network"}


class MainScreen(OperationsScreen):
    AUTO_FOCUS = None
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]

    BINDINGS: ClassVar = [
        Binding("1", "show_pane('images')", "Images", show=False, id="pane.images"),
        Binding("2", "show_pane('sessions')", "Sessions", show=False, id="pane.sessions"),
        Binding("3", "show_pane('history')", "History", show=False, id="pane.history"),
        Binding("4", "show_pane('locks')", "Locks", show=False, id="pane.locks"),
        Binding("tab", "next_pane", "Next pane", show=False, id="pane.next"),
        Binding("shift+tab", "previous_pane", "Previous pane", show=False, id="pane.previous"),
        Binding("slash", "filter", "Filter", show=False, key_display="/", id="filter"),
        Binding(
            "ctrl+x",
            "cancel_create",
            "Cancel create",
            id="create.cancel",
            tooltip="Stop the image being created; nothing of it is kept",
        ),
        Binding("ctrl+r", "refresh", "Refresh", show=False, id="refresh", tooltip="Read everything again now"),
        Binding("colon", "app.command_palette", "Commands", show=False, key_display=":", id="palette"),
        Binding("question_mark", "help", "Help", key_display="?", id="help"),
        Binding("q", "app.quit", "Quit", id="quit"),
    ]

    def __init__(
        self,
        engine: Engine,
        *,
        host: str,
        clock: Callable[[], float],
        tick_interval: float,
        terminal: Mapping[str, int],
    ) -> None:
        super().__init__(engine, terminal=terminal)
        self.host = host
        self.clock = clock
        self.tick_interval = tick_interval
        self.active = "sessions"
        self.images_pane = ImagesPane()
        self.sessions_pane = SessionsPane()
        self.history_pane = HistoryPane()
        self.locks_pane = LocksPane()
        self.detail = DetailPanel()
        self.events = EventLog(clock)
        self.task_panel = TaskPanel()
        #: The first read found no images: the images pane was shown, offering to create one.
        self.offered_create = False
        #: The image whose history is shown (or asked for), and the per-session figures shown.
        self.history_image: str | None = None
        self.usage: Mapping[str, Figures] = {}
        self._pending_session: str | None = None
        self._pending_image: str | None = None
        self._footer_state: tuple[bool | None, ...] = ()
        #: What generations changed against their parents, by (image, generation, created).
        self.changes_read: dict[tuple[str, int, str], diffs.Pairs] = {}
        self._diffing: tuple[str, int, str] | None = None
        self._wanted_diff: tuple[tuple[str, int, str], int] | None = None

    def compose(self) -> ComposeResult:
        yield TopBar(self.host, self.engine.store.root)
        with Container(id="panes", classes=f"-show-{self.active}"):
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
        self.action_show_pane(self.active)
        self.watch(self.app, "snapshot", self._show_snapshot)
        self.watch(self.app, "usage", self._show_usage)
        self.set_interval(self.tick_interval, self.tick)

    def on_unmount(self) -> None:
        self.cancel_create()  # the console is closing: a create stops at its next report, keeping nothing

    def on_resize(self, event: events.Resize) -> None:
        # Crossing the narrow/wide breakpoint hides and shows panes, which can take
        # the focus away; the active pane gets it back once the layout settled.
        self.call_after_refresh(self._refocus)

    def on_screen_resume(self) -> None:
        self.call_after_refresh(self._refocus)

    def _refocus(self) -> None:
        if self.focused is None and self.is_current:
            self.pane(self.active).table.focus()

    def pane(self, name: str) -> Pane:
        return {
            "images": self.images_pane,
            "sessions": self.sessions_pane,
            "history": self.history_pane,
            "locks": self.locks_pane,
        }[name]

    # --- data ----------------------------------------------------------------------------

    def _show_snapshot(self, snapshot: Snapshot | None) -> None:
        """Show what changed; unchanged panes are not touched."""
        if snapshot is None:
            return
        now = self.clock()
        changed = snapshot.changed
        if "images" in changed:
            self.images_pane.show(snapshot.images)
            if self._pending_image is not None and self.images_pane.table.select_key(self._pending_image):
                self._pending_image = None
            if not snapshot.images and not self.offered_create:
                # A first-time user sees where images come from: the images pane and its hint (c).
                self.offered_create = True
                self.call_after_refresh(self.action_show_pane, "images")  # after the first focus has landed
            if self.history_image is None and self.images_pane.selected is not None:
                self._follow_image(self.images_pane.selected)
        if "sessions" in changed:
            self.sessions_pane.show(snapshot.sessions, self.usage, now)
            if self._pending_session is not None and self.sessions_pane.table.select_key(self._pending_session):
                self._pending_session = None
        if "history" in changed:
            self.history_pane.show(snapshot.history_image, snapshot.history)
        if "locks" in changed:
            self.locks_pane.show(snapshot.locks, now)
        if snapshot.events:
            self.events.add(snapshot.events)
        if changed - {"events"}:
            self.show_detail()
            self._update_footer()

    def _show_usage(self, usage: Mapping[str, Figures]) -> None:
        self.usage = usage
        self.sessions_pane.show(self.sessions_pane.sessions, usage, self.clock())
        if self.active == "sessions":
            self.show_detail()

    def _follow_image(self, image: str) -> None:
        """Show the history of *image* from the next poll on."""
        self.history_image = image
        self.post_message(ImageHighlighted(image))

    def tick(self) -> None:
        """Time passed: ages and held-for durations (only cells whose text changes are redrawn)."""
        now = self.clock()
        self.sessions_pane.show(self.sessions_pane.sessions, self.usage, now)
        self.locks_pane.show(self.locks_pane.locks, now)

    def select_image(self, name: str) -> None:
        """Highlight image *name* in the images pane, now or as soon as a refresh shows it."""
        self.action_show_pane("images")
        if not self.images_pane.table.select_key(name):
            self._pending_image = name

    def show_task(self, task: CreateTask | None) -> None:
        if task is None:
            self.task_panel.finish()
        else:
            self.task_panel.start(task)
        self._update_footer()

    def select_session(self, sid: str) -> None:
        """Highlight *sid* in the sessions pane, now or as soon as a refresh shows it."""
        self.action_show_pane("sessions")
        if not self.sessions_pane.table.select_key(sid):
            self._pending_session = sid

    # --- selection and detail ----------------------------------------------------------

    def selected_image(self) -> ImageInfo | None:
        key = self.images_pane.selected
        return self.images_pane.images.get(key) if key is not None else None

    def selected_session(self) -> SessionInfo | None:
        return self.sessions_pane.selected_info()

    def selected_generation(self) -> tuple[str, GenerationInfo] | None:
        g = self.history_pane.selected_generation()
        image = self.history_pane.image
        return (image, g) if g is not None and image is not None else None

    def show_detail(self) -> None:
        now = self.clock()
        item: Any = None
        if self.active == "images":
            image = self.selected_image()
            item = image_detail(image) if image else None
        elif self.active == "sessions":
            info = self.selected_session()
            item = session_detail(info, self.usage.get(info.session.id), now) if info else None
        elif self.active == "history":
            found = self.selected_generation()
            item = generation_detail(*found, self.generation_changes(*found)) if found else None
        else:
            lock = self.locks_pane.selected_lock()
            item = lock_detail(lock, now) if lock else None
        self.detail.show(item if item is not None else HINTS[self.active])

    # --- what a generation changed ------------------------------------------------------

    def generation_changes(self, image: str, g: GenerationInfo) -> diffs.Pairs:
        """What *g* changed against its parent: known, or "computing…" while a worker reads it.

        One diff runs at a time; the operator moving on meanwhile asks for the newest
        highlighted generation next. Generations never change once made, so what was
        read is kept (by image, number and creation time).
        """
        if g.parent is None:
            return [("changes", "the first generation: nothing before it")]
        key = (image, g.generation, g.created)
        known = self.changes_read.get(key)
        if known is not None:
            return known
        self._wanted_diff = (key, g.parent)
        if self._diffing is None:
            self._start_diff()
        return [("changes", diffs.COMPUTING)]

    @property
    def diff_pending(self) -> bool:
        """A generation's changes are being read (or waiting to be)."""
        return self._diffing is not None

    def _start_diff(self) -> None:
        wanted, self._wanted_diff = self._wanted_diff, None
        if wanted is None or wanted[0] in self.changes_read:
            return
        self._diffing = wanted[0]
        self._diff_generation(*wanted)

    @work(thread=True, exit_on_error=False, group="history-diff")
    def _diff_generation(self, key: tuple[str, int, str], parent: int) -> None:
        image, generation, _ = key
        pairs = diffs.compute(lambda: diffs.generation_changes(self.engine, image, generation, parent))
        try:
            self.app.call_from_thread(self._generation_diffed, key, pairs)
        except RuntimeError:
            pass  # the console is shutting down

    def _generation_diffed(self, key: tuple[str, int, str], pairs: diffs.Pairs) -> None:
        self.changes_read[key] = pairs
        self._diffing = None
        self._start_diff()
        if self.active == "history":
            self.show_detail()

    @on(DiffTable.SelectionChanged)
    def _selection_changed(self, event: DiffTable.SelectionChanged) -> None:
        table, key = event.table, event.key
        if table is self.images_pane.table and key is not None and self.history_image != key:
            self._follow_image(key)
        if table is self.pane(self.active).table:
            self.show_detail()
        if table is self.sessions_pane.table:
            self.post_message(SessionHighlighted(key))
        self._update_footer()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        node: Widget | None = event.widget
        while node is not None and not isinstance(node, Pane):
            node = node.parent  # type: ignore[assignment]
        if node is not None and self.active != node.PANE:
            self._activate(node.PANE)

    # --- panes -----------------------------------------------------------------------------

    def _activate(self, name: str) -> None:
        self.active = name
        panes = self.query_one("#panes")
        for other in PANES:
            panes.set_class(other == name, f"-show-{other}")
        self.query_one(TopBar).show_active(name)
        self.show_detail()
        self._update_footer()

    def action_show_pane(self, name: str) -> None:
        if name not in PANES:
            return
        self._activate(name)
        self.pane(name).table.focus()

    def action_next_pane(self) -> None:
        self.action_show_pane(PANES[(PANES.index(self.active) + 1) % len(PANES)])

    def action_previous_pane(self) -> None:
        self.action_show_pane(PANES[(PANES.index(self.active) - 1) % len(PANES)])

    def action_filter(self) -> None:
        self.action_show_pane("sessions")
        self.sessions_pane.action_filter()

    def action_refresh(self) -> None:
        self.changes_read.clear()  # what a generation changed, and what could not be read, is read again too
        self.post_message(RefreshRequested(force=True))
        self.notify("reading everything again", timeout=1.5)

    def action_help(self) -> None:
        self.app.push_screen(
            HelpScreen(
                [
                    ("Images (1)", ImagesPane.BINDINGS, ImagesPane.HELP),
                    ("Sessions (2)", SessionsPane.BINDINGS, SessionsPane.HELP),
                    ("History (3)", HistoryPane.BINDINGS, HistoryPane.HELP),
                    ("Everywhere", [*self.BINDINGS, *self.app.BINDINGS], ""),
                ]
            )
        )

    # --- verbs -----------------------------------------------------------------------------

    def _update_footer(self) -> None:
        """Refresh the footer only when what the verbs allow changed (it rebuilds itself each time)."""
        verbs = (*IMAGE_VERBS, *SESSION_VERBS, "rollback", "cancel_create")
        state = tuple(self.check_action(a, ()) for a in verbs)
        if state != self._footer_state:
            self._footer_state = state
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in IMAGE_VERBS:
            return True if self.selected_image() is not None else None
        if action in SESSION_VERBS:
            info = self.selected_session()
            if info is None:
                return None
            if action == "recover":
                return True if info.state in ("needs-recovery", "lost") else None
            if action in ("enter_session", "run_command", "promote", "switch_network") and info.state not in (
                "mounted",
                "needs-recovery",
            ):
                return None
            return True
        if action == "cancel_create":
            return self.creating is not None  # hidden from the footer while nothing is being created
        if action == "rollback":
            found = self.selected_generation()
            return True if found is not None and not found[1].current else None
        return True

    def _image(self) -> str | None:
        image = self.selected_image()
        if image is None:
            self.notify("select an image first (1)", severity="warning")
            return None
        return image.name

    def _session(self) -> str | None:
        info = self.selected_session()
        if info is None:
            self.notify("select a session first (2)", severity="warning")
            return None
        return info.session.id

    def action_create_image(self) -> None:
        self.ask_create()

    def action_cancel_create(self) -> None:
        if self.creating is None:
            self.notify("no image is being created", severity="warning")
            return
        self.cancel_create()
        self.task_panel.cancelling()
        self.say(f"cancelling the creation of {self.creating.name}")

    def action_begin(self) -> None:
        if (name := self._image()) is not None:
            self.begin_session(name)

    def action_begin_maintenance(self) -> None:
        if (name := self._image()) is not None:
            self.begin_maintenance(name)

    def action_gc(self) -> None:
        if (name := self._image()) is not None:
            self.collect_garbage(name)

    def action_rollback(self) -> None:
        found = self.selected_generation()
        if found is None:
            self.notify("select a generation in the history pane first (3)", severity="warning")
            return
        image, g = found
        if g.current:
            self.notify(f"generation {g.generation} is already current for {image}", severity="warning")
            return
        current = next((x.generation for x in self.history_pane.generations if x.current), 0)
        self.roll_back(image, g.generation, current)

    def action_enter_session(self) -> None:
        if (sid := self._session()) is not None:
            self.enter_session(sid)

    def action_run_command(self) -> None:
        if (sid := self._session()) is not None:
            self.run_in_session(sid)

    def action_promote(self) -> None:
        if (sid := self._session()) is not None:
            self.promote_session(sid)

    def action_end_session(self) -> None:
        if (sid := self._session()) is not None:
            self.end_session(sid)

    def action_switch_network(self) -> None:
        info = self.selected_session()
        if info is None:
            self.notify("select a session first (2)", severity="warning")
            return
        self.switch_network(info.session.id, info.session.network)

    def action_recover(self) -> None:
        if (sid := self._session()) is not None:
            self.recover_session(sid)
