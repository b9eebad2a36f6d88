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
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return HostStatus(host.name, True, seconds, error="the summary is not JSON", exit_code=0)
    if not isinstance(data, dict):
        return HostStatus(host.name, True, seconds, error="the summary is not a JSON object", exit_code=0)
    return HostStatus(host.name, True, seconds, summary=data, exit_code=0)
