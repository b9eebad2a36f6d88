"""Finding and ending the processes that live in a session.

A process belongs to a session when its root directory (``/proc/PID/root``)
is the session's mount point or lies below it; that is how chroot-based tools
have always told them apart, and it needs no cgroup or namespace.
"""

from __future__ import annotations

import os
import time

# Linux signal numbers: the signal module imports enum, milliseconds on every command.
SIGTERM = 15
SIGKILL = 9


def starttime(pid: int) -> int | None:
    """The process start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def alive(pid: int | None, start: int | None = None) -> bool:
    """True if *pid* runs and, when *start* is given, is the same process as then."""
    if not pid or pid <= 0:
        return False
    now = starttime(pid)
    if now is None:
        return False
    if _is_zombie(pid):
        return False
    return start is None or now == start


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] in (b"Z", b"X")
    except (OSError, ValueError):
        return True


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "?"


def in_root(path: str) -> list[int]:
    """Pids whose root directory is *path* or below it (zombies excluded)."""
    path = path.rstrip("/")
    prefix = path + "/"
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == me:
            continue
        try:
            root = os.readlink(f"/proc/{name}/root")
        except OSError:
            continue
        if (root == path or root.startswith(prefix)) and not _is_zombie(pid):
            found.append(pid)
    return found


def count_in_roots(paths: list[str]) -> dict[str, int]:
    """How many processes run inside each of *paths*, in one pass over /proc."""
    wanted = {p.rstrip("/"): 0 for p in paths}
    if not wanted:
        return {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            root = os.readlink(f"/proc/{name}/root")
        except OSError:
            continue
        while root and root != "/":
            if root in wanted:
                wanted[root] += 1
                break
            root = os.path.dirname(root)
    return wanted


def kill_in_root(path: str, grace: float) -> int:
    """End every process inside *path*: SIGTERM, then SIGKILL after *grace* seconds.

    Loops until none is left, so children forked while the first ones die are
    caught too. Returns how many processes were signalled.
    """
    signalled: set[int] = set()
    deadline = time.monotonic() + grace
    sig = SIGTERM
    hard_deadline = deadline + 10.0
    while True:
        pids = in_root(path)
        if not pids:
            return len(signalled)
        now = time.monotonic()
        if now >= deadline:
            sig = SIGKILL
        if now >= hard_deadline:
            from .errors import SystemFailure

            raise SystemFailure(f"processes {', '.join(map(str, pids[:5]))} in {path} survive SIGKILL")
        for pid in pids:
            if sig == SIGTERM and pid in signalled:
                continue
            try:
                os.kill(pid, sig)
                signalled.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.005 if now - (deadline - grace) < 0.1 else 0.02)
