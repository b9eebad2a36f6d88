"""Creating an image from the console: the dialog that asks where from, and the panel that shows the work.

The dialog checks what is cheap (a valid name, a path that exists, a suite);
everything else is the engine's to refuse, in one line. The work itself runs
in a thread worker (tui/operations.py); :class:`CreateTask` is what that
worker and the event loop share: the worker reports progress into it (and is
stopped there when the operator cancels), the panel reads it on a timer.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Button, Input, Label, Log, ProgressBar, Select, Static

from core.errors import Cancelled
from core.importers import Source
from core.names import is_valid_name

#: The kinds of source, as the dialog offers them: (label, kind, what the path field holds).
KINDS = (
    ("a tarball (.tar, .tar.gz, .tar.xz, .tar.zst)", "tar", "Tarball"),
    ("a directory (copied)", "dir", "Directory"),
    ("mmdebstrap (a Debian suite)", "mmdebstrap", "Suite"),
    ("schroot's chroots (one image each)", "schroot", "schroot dir"),
)

#: What the path field suggests for each kind.
PLACEHOLDERS = {
    "tar": "/srv/roots/bookworm.tar.zst",
    "dir": "/srv/chroot/bookworm",
    "mmdebstrap": "e.g. bookworm, trixie, unstable",
    "schroot": "/etc/schroot (schroot.conf and chroot.d)",
}


@dataclass(frozen=True)
class CreateRequest:
    """What the operator asked for: an image *name* from *source*."""

    name: str
    source: Source
    profile: str
    backend: str | None


@dataclass(frozen=True)
class ImportRequest:
    """What the operator asked for: schroot's chroots (in *schroot_dir*) as images."""

    schroot_dir: str
    backend: str | None


class CreateDialog(ModalScreen[CreateRequest | ImportRequest | None]):
    """Where a new image comes from, and its name, profile and backend; enter creates, escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(self, default_backend: str) -> None:
        super().__init__(classes="dialog")
        self.default_backend = default_backend

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog-box", classes="create") as box:
            box.border_title = "Create an image"
            yield Static("A new image, generation 1, from:", classes="dialog-line")
            with Horizontal(classes="field"):
                yield Label("Source", classes="field-label")
                options = [(label, kind) for label, kind, _ in KINDS]
                yield Select(options, value="tar", allow_blank=False, id="kind", compact=True)
            with Horizontal(classes="field"):
                yield Label("Tarball", id="path-label", classes="field-label")
                yield Input(placeholder="/srv/roots/bookworm.tar.zst", id="path", compact=True)
            with Vertical(id="mmdebstrap-fields"):
                with Horizontal(classes="field"):
                    yield Label("Variant", classes="field-label")
                    yield Input(placeholder="mmdebstrap's default (debootstrap)", id="variant", compact=True)
                with Horizontal(classes="field"):
                    yield Label("Arch", classes="field-label")
                    yield Input(placeholder="this host's", id="arch", compact=True)
                with Horizontal(classes="field"):
                    yield Label("Mirror", classes="field-label")
                    yield Input(placeholder="mmdebstrap's default", id="mirror", compact=True)
            with Vertical(id="image-fields"):
                with Horizontal(classes="field"):
                    yield Label("Name", classes="field-label")
                    yield Input(placeholder="e.g. bookworm-amd64", id="name", compact=True)
                with Horizontal(classes="field"):
                    yield Label("Profile", classes="field-label")
                    yield Input(value="default", id="profile", compact=True)
            with Horizontal(classes="field"):
                yield Label("Backend", classes="field-label")
                yield Input(placeholder=f"{self.default_backend} (the default)", id="backend", compact=True)
            yield Static("", id="create-error", classes="dialog-line")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel (esc)", id="cancel")
                yield Button("Create (enter)", id="accept", variant="primary")

    def on_mount(self) -> None:
        self._show_kind("tar")
        self.query_one("#path", Input).focus()

    @on(Select.Changed, "#kind")
    def _kind_changed(self, event: Select.Changed) -> None:
        self._show_kind(str(event.value))

    def _show_kind(self, kind: str) -> None:
        label = next(what for _, k, what in KINDS if k == kind)
        self.query_one("#path-label", Label).update(label)
        self.query_one("#path", Input).placeholder = PLACEHOLDERS[kind]
        self.query_one("#mmdebstrap-fields").display = kind == "mmdebstrap"
        # schroot's chroots name themselves, and their profiles come from schroot's configuration.
        self.query_one("#image-fields").display = kind != "schroot"

    def request(self) -> CreateRequest | ImportRequest | str:
        """The request the fields describe, or why they do not describe one (one line)."""

        def field(name: str) -> str:
            return self.query_one(f"#{name}", Input).value.strip()

        kind = str(self.query_one("#kind", Select).value)
        path = field("path")
        if kind == "schroot":
            directory = os.path.abspath(path or "/etc/schroot")
            if not os.path.isdir(directory):
                return f"{directory}: no such directory"
            return ImportRequest(directory, field("backend") or None)
        if not path:
            return f"{'a suite' if kind == 'mmdebstrap' else 'a path'} is needed"
        if kind == "tar" and not os.path.isfile(path):
            return f"{path}: no such file"
        if kind == "dir" and not os.path.isdir(path):
            return f"{path}: no such directory"
        name = field("name")
        if not name:
            return "the new image needs a name"
        if not is_valid_name(name):
            return f"{name!r} is not a valid name (letters, digits, _ . + -; up to 64)"
        if kind == "mmdebstrap":
            source = Source(
                "mmdebstrap",
                suite=path,
                variant=field("variant") or None,
                arch=field("arch") or None,
                mirror=field("mirror") or None,
            )
        else:
            source = Source(kind, path=os.path.abspath(path))
        return CreateRequest(name, source, field("profile") or "default", field("backend") or None)

    @on(Input.Submitted)
    @on(Button.Pressed, "#accept")
    def accept(self) -> None:
        found = self.request()
        if isinstance(found, str):
            self.query_one("#create-error", Static).update(found)
            return
        self.dismiss(found)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class CreateTask:
    """One create's progress, shared by its worker thread (which reports) and the console (which reads).

    :meth:`cancel` makes the worker's next report raise :class:`Cancelled`: the
    engine unwinds from there as from any error (the staging tree, its
    helpers and its mounts go), so nothing of the image is kept.
    """

    def __init__(self, name: str, what: str) -> None:
        self.name = name
        self.what = what
        self.fraction: float | None = None
        self.stage = ""  # the last line that came with a fraction: what the bar is measuring
        self.lines: deque[str] = deque(maxlen=200)
        self.added = 0  # lines reported so far (the panel shows those it has not shown)
        self.cancelled = False
        self._lock = threading.Lock()

    def report(self, fraction: float | None, text: str) -> None:
        """The engine's progress callback (in the worker thread)."""
        if self.cancelled:
            raise Cancelled(f"creating {self.name} was cancelled; nothing of it was kept")
        with self._lock:
            self.fraction = fraction
            if fraction is not None:
                self.stage = text
            if not self.lines or self.lines[-1] != text:
                self.lines.append(text)
                self.added += 1

    def cancel(self) -> None:
        self.cancelled = True

    def read(self, shown: int) -> tuple[float | None, str, list[str], int]:
        """The fraction and its stage, the lines added since *shown* lines were read, and how many there are now."""
        with self._lock:
            new = min(self.added - shown, len(self.lines))
            return self.fraction, self.stage, list(self.lines)[len(self.lines) - new :], self.added


class TaskPanel(Vertical):
    """Above the event log while an image is created: a progress bar and the last lines of progress."""

    def __init__(self) -> None:
        super().__init__(id="task")
        self.current: CreateTask | None = None
        self._shown = 0
        self._timer: Timer | None = None
        self.display = False

    def compose(self) -> ComposeResult:
        with Horizontal(id="task-top"):
            yield ProgressBar(total=None, show_eta=False, id="task-bar")
            yield Button("Cancel (ctrl+x)", id="task-cancel", variant="error", compact=True)
        yield Log(max_lines=200, id="task-log", auto_scroll=True)

    def start(self, task: CreateTask) -> None:
        self.current = task
        self._shown = 0
        self.border_title = f"Creating {task.name} {task.what}"
        self.border_subtitle = ""
        self.query_one("#task-bar", ProgressBar).update(total=None, progress=0)
        self.query_one("#task-log", Log).clear()
        self.query_one("#task-cancel", Button).disabled = False
        self.display = True
        self._timer = self.set_interval(0.1, self.show_progress)

    def show_progress(self) -> None:
        task = self.current
        if task is None:
            return
        fraction, stage, lines, self._shown = task.read(self._shown)
        bar = self.query_one("#task-bar", ProgressBar)
        if fraction is None:
            bar.update(total=None)
        else:
            bar.update(total=100, progress=round(fraction * 100))
        self.border_subtitle = stage  # mmdebstrap's stage by name, as the command line shows it
        if lines:
            self.query_one("#task-log", Log).write_lines(lines)

    def cancelling(self) -> None:
        self.query_one("#task-cancel", Button).disabled = True
        if self.current is not None:
            self.border_title = f"Cancelling {self.current.name}: it stops at its next step, keeping nothing"

    def finish(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.current = None
        self.display = False

    @on(Button.Pressed, "#task-cancel")
    async def _cancel_pressed(self) -> None:
        await self.app.run_action("screen.cancel_create")
