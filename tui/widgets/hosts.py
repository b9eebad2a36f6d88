"""The Hosts pane: this host and the other build hosts, each reachable or not, with what it holds.

Shown only when other hosts are configured (hosts.yaml, or ``--host`` given to
the console more than once). This host comes first, then the others in the
order they were given. The highlighted row is the host the other panes show
and the verbs act on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from core.fleet import HostView

from .pane import Col, Pane
from .table import C

#: The key of this host's row (no host name from hosts.yaml or ssh:// URL can be it).
LOCAL = "\x00local"


class HostRow(NamedTuple):
    """What the pane shows of one host."""

    key: str  # LOCAL or the host's name
    name: str
    #: None: not answered yet; True: answered (maybe with an error); False: unreachable.
    reachable: bool | None
    view: HostView | None = None
    error: str | None = None
    seconds: float | None = None
    #: The host's description in hosts.yaml.
    about: str = ""


def state(row: HostRow) -> tuple[str, str]:
    if row.reachable is None:
        return "asking…", "italic"
    if not row.reachable:
        return "unreachable", "bold red"
    if row.error is not None:
        return "error", "bold yellow"
    return "up", "green"


class HostsPane(Pane):
    PANE = "hosts"
    TITLE = "Hosts"
    HELP = "the highlighted host is the one the other panes show and the keys act on"
    COLUMNS = (
        Col("host", "HOST", 12, 20),
        Col("state", "STATE", 11),
        Col("images", "IMG", 3, justify="right"),
        Col("sessions", "SESS", 4, justify="right"),
        Col("locks", "LOCKS", 5, justify="right"),
        Col("load", "LOAD", 4, 14, justify="right"),
        Col("note", "NOTE", 8, flex=True),
    )
    SORT = "host"

    def __init__(self) -> None:
        super().__init__()
        self.rows: Sequence[HostRow] = ()

    def show(self, rows: Sequence[HostRow]) -> None:
        self.rows = rows
        wide = self.widths["load"] >= 14
        out = {}
        for order, row in enumerate(rows):
            text, style = state(row)
            v = row.view
            shown = (v.load if wide else v.load[:1]) if v is not None else ()
            load = " ".join(f"{x:.2f}" for x in shown) or "-"
            # Nothing that changes on every poll (how long it took is in the detail): a row is
            # redrawn only when what the host holds changed.
            if row.error is not None:
                note = row.error
            elif row.key == LOCAL:
                note = "this host"
            elif row.about:
                note = row.about
            else:
                note = f"calls itself {v.hostname}" if v is not None and v.hostname else ""
            out[row.key] = self.cells(
                (
                    C(row.name, "bold" if row.key == LOCAL else "", order),
                    C(text, style),
                    C(str(len(v.images)) if v else "-", sort=len(v.images) if v else -1),
                    C(str(len(v.sessions)) if v else "-", sort=len(v.sessions) if v else -1),
                    C(str(v.held) if v else "-", sort=v.held if v else -1),
                    C(load, sort=v.load[0] if v and v.load else -1.0),
                    C(note, "dim" if row.error is None else ""),
                )
            )
        self.sync(out)
        down = sum(1 for r in rows if r.reachable is False)
        self.border_subtitle = f"{len(rows)}" + (f", {down} unreachable" if down else "")

    def relayout(self) -> None:
        self.show(self.rows)

    def selected_row(self) -> HostRow | None:
        key = self.selected
        return next((r for r in self.rows if r.key == key), None)
