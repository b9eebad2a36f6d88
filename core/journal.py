"""The append-only history of operations: one JSON object per line.

Each state-changing operation appends exactly one line when it finishes,
whatever its result. A line is written with a single ``write(2)`` on an
``O_APPEND`` descriptor, so concurrent writers never interleave.
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
    **detail: Any,
) -> dict[str, Any]:
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
    return entry


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
