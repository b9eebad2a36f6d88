"""The detail panel: everything known about the highlighted image, session, generation or lock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from core.locks import LockState
from core.units import human_size
from core.views import GenerationInfo, ImageInfo, Load, SessionInfo
from core.watch import Figures

from .. import format as fmt

Pairs = Sequence[tuple[str, str | Text | None]]

STATE_NOTES = {
    "mounted": "mounted",
    "needs-recovery": "needs recovery (r remounts it, changes intact)",
    "lost": "lost: it ran without durability and the machine restarted (r ends it, its changes are not kept)",
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
            ("network", NETWORK_NOTES.get(s.network, s.network)),
            ("limits", limits_note(s.limits)),
            ("usage", usage_note(figures.load if figures is not None else None) if s.cgroups else None),
            ("profile", s.profile),
            ("mount", s.mountpoint),
        ],
    )


NETWORK_NOTES = {
    "host": "host (the host's network)",
    "none": "none (a namespace of its own: loopback only)",
    "loopback": "loopback (the host's, filtered to 127.0.0.1 and ::1)",
}


def limits_note(limits: Mapping[str, object] | None) -> str:
    """``memory 2G, pids 512``; what no limits means."""
    if limits is None:
        return "none (no cgroup)"
    if not limits:
        return "none (tracked in a cgroup)"
    return ", ".join(
        f"{key} {human_size(value) if key in ('memory', 'swap') and isinstance(value, int) else value}"
        for key, value in limits.items()
    )


def usage_note(load: Load | None) -> str:
    """``memory 120.0 MiB (peak 300.0 MiB), CPU 12% (4.2 s in all)``, from the session's cgroup."""
    if load is None:
        return "being read…"
    parts = []
    if load.memory is not None:
        peak = f" (peak {human_size(load.memory_peak)})" if load.memory_peak is not None else ""
        parts.append(f"memory {human_size(load.memory)}{peak}")
    if load.cpu_usec is not None:
        rate = f"{fmt.percent(load.cpu_percent)}" if load.cpu_percent is not None else "…"
        parts.append(f"CPU {rate} ({load.cpu_usec / 1e6:.1f} s in all)")
    if load.oom_kills:
        parts.append(f"{load.oom_kills} killed for memory")
    return ", ".join(parts) or "not accounted here"


def generation_detail(image: str, g: GenerationInfo, changes: Pairs | None = None) -> Table:
    """A generation; *changes*: what it changed against its parent (computed elsewhere, in a worker)."""
    flags = [w for w, on in (("current", g.current), ("in use", g.in_use)) if on]
    return grid(
        f"{image} generation {g.generation}" + (f" ({', '.join(flags)})" if flags else ""),
        [
            ("parent", str(g.parent) if g.parent is not None else "none (first)"),
            ("created", f"{fmt.stamp(g.created)} by {g.author}"),
            ("message", g.message),
            *(changes or ()),
            ("session", g.session),
            ("size", human_size(g.size)),
            ("layers", str(g.layers)),
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
