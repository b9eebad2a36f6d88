"""Several hosts: one host's summary, and polling another host for its summary within a time limit.

``summary`` is what a host says about itself (``roost summary --json``): its
images, sessions, the locks held or stale, its load. :func:`poll` asks
another host for it over the shared ssh connection and never blocks longer
than it is told: a host that does not answer in time is reported as
unreachable, with why, and the next poll tries again. The console's Hosts
pane calls it from a worker, once per host per refresh.
"""

from __future__ import annotations

import os
import time

from .errors import RoostError
from .hosts import Host
from .struct import Struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .engine import Engine


def summary(eng: Engine) -> dict[str, Any]:
    """This host's images, sessions, locks (held and stale) and load, as one JSON-ready object."""
    import socket

    from .actor import now_iso

    load = os.getloadavg()
    return {
        "host": socket.gethostname(),
        "time": now_iso(),
        "load": [round(x, 2) for x in load],
        "cpus": os.cpu_count(),
        "images": [i.to_json() for i in eng.list_images()],
        "sessions": [s.to_json() for s in eng.list_sessions()],
        "locks": [lk.to_json() for lk in eng.locks()],
    }


class HostStatus(Struct, frozen=True):
    """The answer of one poll: the summary, or why there is none."""

    host: str
    reachable: bool
    seconds: float
    summary: dict[str, Any] | None = None
    error: str | None = None
    exit_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "reachable": self.reachable,
            "seconds": round(self.seconds, 3),
            "summary": self.summary,
            "error": self.error,
            "exit_code": self.exit_code,
        }


def poll(host: Host, timeout: float = 3.0, *, environ: dict[str, str] | None = None) -> HostStatus:
    """Ask *host* for its summary; returns within *timeout* seconds (plus a few ms to reap ssh), never raises.

    ``reachable`` is False when ssh cannot connect or the host does not
    answer in time; when it answers with an error (its roost refused, or
    failed), ``reachable`` is True and ``error`` says what it said.
    """
    import json

    from . import ssh

    start = time.monotonic()
    deadline = start + timeout

    def left() -> float:
        return max(0.05, deadline - time.monotonic())

    try:
        conn = ssh.Connection(host, environ=environ, batch=True, connect_timeout=timeout)
        conn.connect(timeout=left())
        proc = conn.run(["--json", "summary"], timeout=left())
    except ssh.Unreachable as e:
        return HostStatus(host.name, False, time.monotonic() - start, error=str(e))
    except RoostError as e:
        return HostStatus(host.name, False, time.monotonic() - start, error=str(e))
    seconds = time.monotonic() - start
    if proc.returncode == 255 and not conn.alive():
        return HostStatus(host.name, False, seconds, error=ssh.remote_error(proc.stderr, 255, host), exit_code=255)
    if proc.returncode != 0:
        error = ssh.remote_error(proc.stderr, proc.returncode, host)
        return HostStatus(host.name, True, seconds, error=error, exit_code=proc.returncode)
    if len(proc.stdout) > MOST_OUTPUT:
        return HostStatus(
            host.name, True, seconds, error=f"the summary is larger than {MOST_OUTPUT >> 20} MiB", exit_code=0
        )
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return HostStatus(host.name, True, seconds, error="the summary is not JSON", exit_code=0)
    if not isinstance(data, dict):
        return HostStatus(host.name, True, seconds, error="the summary is not a JSON object", exit_code=0)
    return HostStatus(host.name, True, seconds, summary=data, exit_code=0)


# --- what the console shows of another host ---------------------------------------------------

#: The most of each kind the console takes from one answer (a hostile host cannot make it hoard).
MOST = 5000


class HostView(Struct, frozen=True):
    """Another host's summary as the console's panes show it: the same view types as the local host's."""

    images: dict[str, Any]  # name -> core.views.ImageInfo
    sessions: dict[str, Any]  # id -> core.views.SessionInfo
    locks: tuple[Any, ...]  # core.locks.LockState
    load: tuple[float, ...]
    cpus: int | None
    hostname: str

    @property
    def held(self) -> int:
        """Locks held (not stale, not waited for)."""
        return sum(1 for lk in self.locks if not lk.stale and lk.mode != "waiting")


def clean(text: str, limit: int = 200) -> str:
    """*text* on one line, without control characters, at most *limit* characters (what a remote host says)."""
    out = "".join(c if c.isprintable() else " " for c in text[: limit * 4])
    out = " ".join(out.split())
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _text(data: dict[str, Any], key: str, default: str | None = None, limit: int = 200) -> str:
    value = data.get(key, default)
    if value is None and default is not None:
        value = default
    if not isinstance(value, str):
        raise ValueError(f"{key} is not text")
    return clean(value, limit)


def _number(data: dict[str, Any], key: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} is not a number")
    return value


def _name(data: dict[str, Any], key: str) -> str:
    from .names import is_valid_name

    value = data.get(key)
    if not isinstance(value, str) or not is_valid_name(value):
        raise ValueError(f"{key} is not a valid name")
    return value


def _items(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise ValueError(f"{key} is not a list of objects")
    if len(value) > MOST:
        raise ValueError(f"more than {MOST} {key}")
    return value


def view(summary: dict[str, Any]) -> HostView:
    """The panes' view of another host's *summary*; ValueError (one line) when it is not a summary.

    Names (images, sessions) must be valid names, every other string is cut to
    one printable line: what a host answers is shown, never obeyed.
    """
    from .locks import LockState
    from .records import Session
    from .views import ImageInfo, SessionInfo

    images: dict[str, Any] = {}
    for i in _items(summary, "images"):
        name = _name(i, "name")
        writer = i.get("writer")
        images[name] = ImageInfo(
            name=name,
            backend=_text(i, "backend", limit=20),
            current=_number(i, "current"),
            profile=_text(i, "profile", "", 40),
            sessions=_number(i, "sessions", 0),
            description=_text(i, "description", ""),
            generations=_number(i, "generations", 0),
            size=_number(i, "size", 0),
            writer=clean(writer, 80) if isinstance(writer, str) else None,
            storage=_text(i, "storage", ""),
            access=_text(i, "access", "none", 10),
        )
    sessions: dict[str, Any] = {}
    for s in _items(summary, "sessions"):
        sid = _name(s, "id")
        network = s.get("network", "host")
        limits = s.get("limits")
        record = Session(
            id=sid,
            image=_name(s, "image"),
            generation=_number(s, "generation"),
            kind="maintenance" if s.get("kind") == "maintenance" else "ordinary",
            owner=_text(s, "owner", "", 32),
            uid=-1,
            created=_text(s, "created", "", 40),
            state="active",
            backend=_text(s, "backend", "", 20),
            profile=_text(s, "profile", "", 40),
            mountpoint=_text(s, "mountpoint", "", 200),
            clone="",
            lowers=[],
            auto=s.get("auto") is True,
            network=clean(network, 10) if isinstance(network, str) else "host",
            limits=limits if isinstance(limits, dict) else None,
        )
        processes = s.get("processes")
        sessions[sid] = SessionInfo(
            session=record,
            state=_text(s, "state", "", 20),
            processes=processes if isinstance(processes, int) and not isinstance(processes, bool) else None,
        )
    locks = []
    for lk in _items(summary, "locks"):
        pid = lk.get("pid")
        locks.append(
            LockState(
                lock=_text(lk, "lock", limit=100),
                pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                user=_text(lk, "user", "", 32),
                operation=_text(lk, "operation", "", 40),
                since=_text(lk, "since", "", 40),
                stale=lk.get("stale") is True,
                mode=_text(lk, "mode", "", 10),
            )
        )
    raw_load = summary.get("load", [])
    if not isinstance(raw_load, list) or not all(isinstance(x, (int, float)) for x in raw_load[:3]):
        raise ValueError("load is not a list of numbers")
    cpus = summary.get("cpus")
    return HostView(
        images=images,
        sessions=sessions,
        locks=tuple(locks),
        load=tuple(float(x) for x in raw_load[:3]),
        cpus=cpus if isinstance(cpus, int) and not isinstance(cpus, bool) else None,
        hostname=clean(summary["host"], 64) if isinstance(summary.get("host"), str) else "",
    )


def history(data: object) -> tuple[Any, ...]:
    """Another host's ``image history --json`` as :class:`core.views.GenerationInfo`; ValueError if it is not one."""
    from .views import GenerationInfo

    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise ValueError("the history is not a list of objects")
    if len(data) > MOST:
        raise ValueError(f"more than {MOST} generations")
    out = []
    for g in data:
        parent = g.get("parent")
        session = g.get("session")
        out.append(
            GenerationInfo(
                generation=_number(g, "generation"),
                parent=parent if isinstance(parent, int) and not isinstance(parent, bool) else None,
                created=_text(g, "created", "", 40),
                author=_text(g, "author", "", 32),
                message=_text(g, "message", "", 200),
                session=clean(session, 80) if isinstance(session, str) else None,
                size=_number(g, "size", 0),
                current=g.get("current") is True,
                in_use=g.get("in_use") is True,
                layers=_number(g, "layers", 1),
            )
        )
    return tuple(out)


#: The most output a command on another host may give the console (more is refused, not shown).
MOST_OUTPUT = 16 << 20


def run(conn: Any, words: list[str], timeout: float | None = None, *, input: bytes | None = None) -> str:
    """Run ``roost WORDS`` on *conn*'s host and return its output; its failure as the same error a local call raises.

    The exit code picks the error (2 bad input, 3 conflict, 4 not found, 5 or
    ssh's 255: system error) and the message is the other roost's last line,
    cleaned to one printable line: what a host answers is shown, never obeyed.
    """
    from . import ssh
    from .errors import BadInput, CommandFailed, Conflict, NotFound, SystemFailure

    conn.connect(timeout=timeout)
    proc = conn.run(words, input=input, timeout=timeout)
    if len(proc.stdout) > MOST_OUTPUT:
        raise SystemFailure(f"{conn.host.name} answered with more than {MOST_OUTPUT >> 20} MiB")
    if proc.returncode == 0:
        text: str = proc.stdout.decode("utf-8", "replace")
        return text
    message = clean(ssh.remote_error(proc.stderr[-65536:], proc.returncode, conn.host))
    where = f"on {conn.host.name}: {message}"
    if proc.returncode == 255 and conn.lost(255):
        raise ssh.Unreachable(f"lost the connection to {conn.host.name}")
    kinds: dict[int, type[RoostError]] = {2: BadInput, 3: Conflict, 4: NotFound, 5: SystemFailure, 255: SystemFailure}
    kind = kinds.get(proc.returncode)
    if kind is None:
        raise CommandFailed(where, proc.returncode)
    raise kind(where)
