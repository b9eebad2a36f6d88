"""The append-only history of operations: one JSON object per line.

Each state-changing operation appends exactly one line when it finishes,
whatever its result. A line is written with a single ``write(2)`` on an
``O_APPEND`` descriptor, so concurrent writers never interleave.

Every entry also goes to syslog (the journal on a systemd host) as one
``key=value`` line, ident ``roost``, facility ``user``, priority ``info``
(``err`` when the operation failed). The target is the ``syslog`` setting:
the path of a datagram socket (``/dev/log`` by default) or ``off``. Sending
is one datagram on a fresh socket; a missing or stuck syslog daemon never
fails or holds up an operation.
"""

from __future__ import annotations

import os

from . import fastjson
from .actor import Actor, now_iso

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Iterator
    from typing import Any


def append(
    path: str,
    actor: Actor,
    operation: str,
    *,
    result: str = "ok",
    image: str | None = None,
    session: str | None = None,
    generation: int | None = None,
    log_to: str | None = None,
    **detail: Any,
) -> dict[str, Any]:
    """Append one entry to the journal file at *path*, and send it to the syslog socket *log_to*."""
    entry: dict[str, Any] = {
        "time": now_iso(),
        "user": actor.user,
        "pid": actor.pid,
        "operation": operation,
        "image": image,
        "session": session,
        "generation": generation,
        "result": result,
    }
    entry.update({k: v for k, v in detail.items() if v is not None})
    line = fastjson.dumps(entry) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, line.encode("utf-8", "surrogateescape"))
    finally:
        os.close(fd)
    if log_to is not None and log_to != "off":
        send_syslog(log_to, syslog_message(entry), error=result != "ok")
    return entry


#: syslog facility ``user`` (1), severities ``info`` (6) and ``err`` (3): PRI = facility * 8 + severity.
_PRI_INFO = 1 * 8 + 6
_PRI_ERR = 1 * 8 + 3
_MAX_MESSAGE = 4096
_SIMPLE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.,:/+@-")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _value(value: Any) -> str:
    """A value as ``key=value`` shows it: bare when plain, else quoted like JSON; lists in brackets."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    text = str(value)
    if text and set(text) <= _SIMPLE:
        return text
    quoted = "".join(_ESCAPES.get(c, c if c >= " " else f"\\u{ord(c):04x}") for c in text)
    return f'"{quoted}"'


def syslog_message(entry: dict[str, Any]) -> str:
    """One journal entry as a syslog message: ``OPERATION RESULT key=value …``."""
    words = [str(entry.get("operation")), str(entry.get("result"))]
    for key, value in entry.items():
        if key in ("time", "pid", "operation", "result") or value is None:
            continue
        words.append(f"{key}={_value(value)}")
    return " ".join(words)


def send_syslog(target: str, message: str, *, error: bool = False) -> bool:
    """Send *message* to the syslog socket at *target* (RFC 3164, like syslog(3)); True if sent."""
    import _socket  # the socket module imports enum and selectors: milliseconds on every begin
    import time

    stamp = time.strftime("%b %e %H:%M:%S")
    data = f"<{_PRI_ERR if error else _PRI_INFO}>{stamp} roost[{os.getpid()}]: {message}"
    raw = data.encode("utf-8", "replace")[:_MAX_MESSAGE]
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    except OSError:
        return False
    try:
        sock.settimeout(0.5)
        sock.sendto(raw, target)
    except OSError:
        return False  # no syslog daemon, or a stuck one: the journal file still has the entry
    finally:
        sock.close()
    return True


def read(path: str, *, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Entries from byte *offset* on, and the offset to continue from next time.

    A torn last line (a writer killed mid-write) is skipped until it is complete.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], 0
    entries = []
    end = data.rfind(b"\n") + 1
    for raw in data[:end].splitlines():
        try:
            entry = fastjson.loads(raw.decode("utf-8", "replace"))
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries, offset + end


def tail(path: str, count: int = 100) -> list[dict[str, Any]]:
    """The last *count* entries, reading only the end of the file."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return []
    start = max(0, size - count * 512)
    if start:
        with open(path, "rb") as f:
            f.seek(start - 1)
            head = f.read(4096)
        newline = head.find(b"\n")
        start = start + newline if newline >= 0 else size
    entries, _ = read(path, offset=start)
    return entries[-count:]


def iter_all(path: str) -> Iterator[dict[str, Any]]:
    entries, _ = read(path)
    yield from entries
