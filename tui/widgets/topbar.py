"""The top line: where the console looks, and which pane is shown (click or press 1-4)."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

PANE_TITLES = (("images", "Images"), ("sessions", "Sessions"), ("history", "History"), ("locks", "Locks"))


class TopBar(Static):
    def __init__(self, host: str, root: str) -> None:
        super().__init__("", id="topbar")
        self.host = host
        self.root = root
        self.active = "sessions"

    def on_mount(self) -> None:
        self.draw()

    def show_active(self, pane: str) -> None:
        self.active = pane
        self.draw()

    def draw(self) -> None:
        parts: list[str | tuple[str, str] | Content] = [(" roost", "bold"), f" on {self.host}  "]
        for number, (key, title) in enumerate(PANE_TITLES, 1):
            style = "reverse" if key == self.active else ""
            parts.append(Content.from_markup(f"[{style} @click=screen.show_pane('{key}')] {number} {title} [/]"))
            parts.append(" ")
        parts.append((f" {self.root}", "dim"))
        self.update(Content.assemble(*parts))
