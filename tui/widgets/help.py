"""The help screen (?): every key of every pane, from the same bindings the footer shows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

NAVIGATION = [
    ("↑ ↓", "move in the focused pane (pgup, pgdn, home and end too)"),
    ("1 2 3 4", "go to a pane: images, sessions, history, locks (tab, shift+tab: the next, the previous)"),
    ("mouse", "optional: click rows, buttons and the pane names on the top line"),
]


def _bindings(items: Iterable[BindingType]) -> list[Binding]:
    out = []
    for item in items:
        if isinstance(item, Binding):
            out.append(item)
        elif isinstance(item, tuple) and len(item) >= 2:
            out.append(Binding(*item))
    return out


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close", id="help.close")]

    def __init__(self, sections: Sequence[tuple[str, Sequence[BindingType], str]]) -> None:
        super().__init__(classes="dialog")
        self.sections = sections

    def key_name(self, binding: Binding) -> str:
        if binding.key_display:
            return binding.key_display
        return " ".join(self.app.get_key_display(Binding(k, binding.action)) for k in binding.key.split(","))

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True, min_width=8, max_width=12)
        table.add_column()
        for title, bindings, note in self.sections:
            table.add_row(Text(title, style="bold underline"), "")
            for b in _bindings(bindings):
                if not b.description:
                    continue
                text = Text(b.description)
                if b.tooltip:
                    text.append(f": {b.tooltip[0].lower()}{b.tooltip[1:]}", style="dim")
                table.add_row(self.key_name(b), text)
            if note:
                key, _, what = note.partition(": ")
                table.add_row(key, Text(what))
            table.add_row("", "")
        table.add_row(Text("Moving around", style="bold underline"), "")
        for keys, what in NAVIGATION:
            table.add_row(keys, what)
        with VerticalScroll(id="help-box") as box:
            box.border_title = "roost console: keys"
            box.border_subtitle = "escape closes"
            yield Static(table)

    def action_close(self) -> None:
        self.dismiss(None)
