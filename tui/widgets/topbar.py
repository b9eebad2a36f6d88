"""The top line: where the console looks, and which pane is shown (click or press 1-4, and 0 with other hosts)."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

PANE_TITLES = (("images", "Images"), ("sessions", "Sessions"), ("history", "History"), ("locks", "Locks"))


class TopBar(Static):
    def __init__(self, host: str, root: str, *, fleet: bool = False) -> None:
        super().__init__("", id="topbar")
        self.host = host
        self.root = root
        self.active = "sessions"
        #: Other hosts are shown: the Hosts pane (0) comes first, and the host the panes show is named.
        self.fleet = fleet
        self.viewing: str | None = None

    def on_mount(self) -> None:
        self.draw()

    def show_active(self, pane: str) -> None:
        self.active = pane
        self.draw()

    def show_viewing(self, host: str | None) -> None:
        """The other host the panes show (None: this one)."""
        self.viewing = host
        self.draw()

    def draw(self) -> None:
        parts: list[str | tuple[str, str] | Content] = [(" roost", "bold"), f" on {self.host}  "]
        if self.viewing is not None:
            parts = [(" roost", "bold"), f" on {self.host}, showing ", (self.viewing, "bold reverse"), "  "]
        titles = [(0, "hosts", "Hosts")] if self.fleet else []
        titles += [(n, key, title) for n, (key, title) in enumerate(PANE_TITLES, 1)]
        for number, key, title in titles:
            style = "reverse" if key == self.active else ""
            parts.append(Content.from_markup(f"[{style} @click=screen.show_pane('{key}')] {number} {title} [/]"))
            parts.append(" ")
        if self.viewing is None:
            parts.append((f" {self.root}", "dim"))
        self.update(Content.assemble(*parts))
