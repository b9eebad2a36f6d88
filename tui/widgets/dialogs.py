"""Modal dialogs: confirmations that name their target, prompts, and command output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, RichLog, Static


class ConfirmDialog(ModalScreen[bool]):
    """Yes or no, for an action that changes or destroys something; the question names it.

    A line may be a widget of its own (what a diff computed in a worker says, say).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,n", "cancel", "Cancel", id="dialog.cancel"),
        Binding("y", "confirm", "Confirm", id="dialog.confirm"),
    ]

    def __init__(self, title: str, lines: Sequence[str | Text | Widget], confirm: str, *, danger: bool = True) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.lines = list(lines)
        self.confirm_label = confirm
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog-box", classes="danger" if self.danger else "") as box:
            box.border_title = self.title_text
            for line in self.lines:
                yield line if isinstance(line, Widget) else Static(line, classes="dialog-line")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel (n)", id="cancel")
                yield Button(f"{self.confirm_label} (y)", id="confirm", variant="error" if self.danger else "primary")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    @on(Button.Pressed, "#confirm")
    def action_confirm(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)


class PromptDialog(ModalScreen[str | None]):
    """One line of text (a promote message, a command to run); enter accepts, escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(
        self,
        title: str,
        lines: Sequence[str | Text | Widget],
        *,
        placeholder: str = "",
        value: str = "",
        accept: str = "OK",
        allow_empty: bool = True,
    ) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.lines = list(lines)
        self.placeholder = placeholder
        self.value = value
        self.accept_label = accept
        self.allow_empty = allow_empty

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog-box") as box:
            box.border_title = self.title_text
            for line in self.lines:
                yield line if isinstance(line, Widget) else Static(line, classes="dialog-line")
            yield Input(value=self.value, placeholder=self.placeholder, id="prompt")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel (esc)", id="cancel")
                yield Button(f"{self.accept_label} (enter)", id="accept", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#prompt", Input).focus()

    @on(Input.Submitted, "#prompt")
    @on(Button.Pressed, "#accept")
    def accept(self) -> None:
        value = self.query_one("#prompt", Input).value
        if not value.strip() and not self.allow_empty:
            self.notify("type something first, or press escape", severity="warning")
            return
        self.dismiss(value)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ChoiceDialog(ModalScreen[str | None]):
    """One of a few choices (a session's network), each a button with a key of its own; escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="dialog.cancel")]

    def __init__(
        self, title: str, lines: Sequence[str | Text], choices: Sequence[tuple[str, str]], current: str
    ) -> None:
        """*choices*: (value, key) pairs; the *current* value cannot be chosen again."""
        super().__init__(classes="dialog")
        self.title_text = title
        self.lines = list(lines)
        self.choices = list(choices)
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog-box") as box:
            box.border_title = self.title_text
            for line in self.lines:
                yield Static(line, classes="dialog-line")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel (esc)", id="cancel")
                for value, key in self.choices:
                    now = value == self.current
                    label = f"{value} (now)" if now else f"{value} ({key})"
                    yield Button(label, id=f"choice-{value}", variant="default" if now else "primary", disabled=now)

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_key(self, event: events.Key) -> None:
        for value, key in self.choices:
            if event.key == key and value != self.current:
                event.stop()
                self.dismiss(value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        name = event.button.id or ""
        if name.startswith("choice-"):
            self.dismiss(name.removeprefix("choice-"))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class OutputDialog(ModalScreen[None]):
    """The output of a command run inside a session, as it arrives."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="output.close"),
        Binding("ctrl+c", "interrupt", "Interrupt", id="output.interrupt"),
    ]

    def __init__(self, title: str) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.pid: int | None = None
        self.finished = False
        self.interrupted = False
        self.closed = False

    def compose(self) -> ComposeResult:
        with Vertical(id="output-box") as box:
            box.border_title = self.title_text
            yield RichLog(id="output", max_lines=2000, wrap=True, markup=False, highlight=False)
            yield Label("running… (ctrl+c interrupts, escape closes)", id="output-status")

    def on_mount(self) -> None:
        self.query_one("#output", RichLog).focus()

    def add(self, text: str) -> None:
        if not self.is_attached:
            return  # closed while the command still wrote
        log = self.query_one("#output", RichLog)
        for line in text.splitlines():
            log.write(Text(line, end=""))

    def done(self, status: str) -> None:
        self.finished = True
        self.pid = None
        if self.is_attached:
            self.query_one("#output-status", Label).update(f"{status} (escape closes)")

    def action_interrupt(self) -> None:
        self._signal()

    def action_close(self) -> None:
        self._signal()
        self.closed = True
        self.dismiss(None)

    def _signal(self) -> None:
        import os
        import signal

        if self.pid is not None and not self.finished:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.interrupted = True
            except ProcessLookupError:
                pass
