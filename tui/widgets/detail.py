"""The detail panel: everything known about the highlighted image, session, generation or lock."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from core.locks import LockState
from core.units import human_size
from core.views import GenerationInfo, ImageInfo, SessionInfo
from core.watch import Figures

from .. import format as fmt

Pairs = Sequence[tuple[str, str | Text | None]]

STATE_NOTES = {
    "mounted": "mounted",
    "needs-recovery": "needs recovery (r remounts it, changes intact)",
    "beginning": "beginning",
    "ending": "ending",
    "promoting": "being promoted",
}


def grid(title: str, pairs: Pairs) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.title = title
    table.title_justify = "left"
    table.title_style = "bold"
    for key, value in pairs:
        if value is None or value == "":
            continue
        table.add_row(key, value)
    return table


def image_detail(i: ImageInfo) -> Table:
    c = i.config
    return grid(
        f"image {i.name}",
        [
            ("description", i.description),
            ("backend", i.backend),
            ("current", f"generation {i.current} of {i.generations}"),
            ("size", human_size(i.size)),
            ("profile", i.profile),
            ("sessions", str(i.sessions)),
            ("maintained", f"by session {i.writer}" if i.writer else None),
            ("users", ", ".join(c.users) if c and c.users else None),
            ("root users", ", ".join(c.root_users) if c and c.root_users else None),
            ("aliases", ", ".join(c.aliases) if c and c.aliases else None),
        ],
    )


def session_detail(info: SessionInfo, figures: Figures | None, now: float) -> Table:
    s = info.session
    created = fmt.epoch(s.created)
    if figures is None:
        inside = "counting…"
    else:
        if not figures.measured:
            changes = "changes being measured"
        elif figures.disk is None:
            changes = "no layer of its own"
        else:
            changes = f"{human_size(figures.disk)} changed"
        inside = f"{figures.processes} process(es), {changes}"
    age = f"{fmt.long_duration(now - created)} (since {fmt.stamp(s.created)[5:]})" if created else s.created
    return grid(
        f"session {s.id}",
        [
            ("state", STATE_NOTES.get(info.state, info.state)),
            ("image", f"{s.image} gen {s.generation}"),
            ("kind", f"{s.kind}, owned by {s.owner}" + (", holds the writer lock" if s.maintenance else "")),
            ("age", age),
            ("inside", inside),
            ("profile", s.profile),
            ("mount", s.mountpoint),
        ],
    )


def generation_detail(image: str, g: GenerationInfo) -> Table:
    flags = [w for w, on in (("current", g.current), ("in use", g.in_use)) if on]
    return grid(
        f"{image} generation {g.generation}" + (f" ({', '.join(flags)})" if flags else ""),
        [
            ("parent", str(g.parent) if g.parent is not None else "none (first)"),
            ("created", f"{fmt.stamp(g.created)} by {g.author}"),
            ("session", g.session),
            ("size", human_size(g.size)),
            ("layers", str(g.layers)),
            ("message", g.message),
        ],
    )


def lock_detail(state: LockState, now: float) -> Table:
    since = fmt.epoch(state.since)
    if state.mode == "waiting":
        status = "waiting for it"
    elif state.stale:
        status = "stale: its holder is gone, the next taker overwrites it"
    else:
        status = "held"
    return grid(
        f"lock {state.lock}",
        [
            ("mode", state.mode),
            ("status", status),
            ("pid", str(state.pid) if state.pid else None),
            ("user", state.user),
            ("operation", state.operation),
            ("since", f"{fmt.stamp(state.since)} ({fmt.long_duration(now - since)})" if since else state.since),
        ],
    )


class DetailPanel(Static):
    """Shows one item; the console tells it which."""

    def __init__(self) -> None:
        super().__init__("", id="detail")
        self.border_title = "Detail"

    def show(self, renderable: Table | str) -> None:
        self.update(renderable)
