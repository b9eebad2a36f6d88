"""Session cgroups once they are made: who is in them, killing through them, removing them, usage.

Apart from :mod:`core.cgroups` (where a session's cgroups go and how they are
made), which a begin with limits loads: ``end`` removes emptied cgroups with
one ``rmdir`` each (:func:`core.isolation.kill`) and loads this only for a
busy one; recover's orphans, the slice and the console's live figures need
it too.
"""

from __future__ import annotations

import errno
import os
import time

from .cgroups import hierarchies, read, write
from .errors import SystemFailure

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at start-up
    from collections.abc import Iterable, Sequence

    from .cgroups import Hierarchy

_SIGKILL = 9


def _tree(directory: str) -> list[str]:
    """*directory* and the cgroups below it, deepest first (children before their parents).

    A cgroup directory's link count is 2 plus its subdirectories (kernfs
    counts them), so a leaf — nearly every session directory — costs one
    stat instead of a listing of its thirty-odd files.
    """
    found = []
    pending = [directory]
    while pending:
        path = pending.pop()
        try:
            leaf = os.stat(path).st_nlink <= 2
        except OSError:  # gone meanwhile (or never there)
            continue
        found.append(path)
        if leaf:
            continue
        try:
            with os.scandir(path) as entries:
                pending.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            pass
    found.reverse()  # every directory was found after its parent
    return found


def members(directories: Iterable[str]) -> set[int]:
    """Every process in any of the directories or below them."""
    pids: set[int] = set()
    for directory in directories:
        for path in _tree(directory):
            text = read(os.path.join(path, "cgroup.procs"))
            if text:
                pids.update(int(p) for p in text.split())
    return pids


def signal(directories: Iterable[str], signum: int) -> int:
    """Send *signum* to every process in the directories; how many got it."""
    sent = 0
    for pid in members(directories):
        try:
            os.kill(pid, signum)
            sent += 1
        except ProcessLookupError:
            pass
    return sent


def kill(directories: Sequence[str], timeout: float = 10.0) -> int:
    """SIGKILL everything in the session's cgroups, until they are empty.

    cgroup v2's ``cgroup.kill`` kills the whole group at once, forks in
    flight included. Without it, a v1 freezer directory (sessions begun by
    an earlier roost, hosts without v1 pids) does the same in three steps:
    freeze (no member runs, so none forks), SIGKILL every member, thaw (each
    dies as it wakes). Else a v1 pids directory gets ``pids.max`` 0 (no
    member can fork any more) and its members are killed round after round,
    a fork in flight caught by the next round; without either, the rounds
    alone (a fork bomb is held by its pids limit). Returns how many
    processes were found.
    """
    live = [d for d in directories if os.path.isdir(d)]
    if not live:
        return 0
    found = members(live)
    if not found:
        return 0
    killed = False
    for directory in live:  # every v2 directory (there is one per session, but a caller may pass more)
        if os.path.exists(os.path.join(directory, "cgroup.kill")):
            try:
                write(os.path.join(directory, "cgroup.kill"), "1")
                killed = True
            except OSError:
                pass
    if not killed:
        killed = any(_kill_frozen(d) for d in live if os.path.exists(os.path.join(d, "freezer.state")))
    if not killed:
        for directory in live:
            if os.path.exists(os.path.join(directory, "pids.max")):
                try:
                    write(os.path.join(directory, "pids.max"), "0")  # nothing below forks any more
                except OSError:
                    pass
    deadline = time.monotonic() + timeout
    while True:
        left = members(live)
        if not left:
            return len(found)
        found |= left
        if time.monotonic() > deadline:
            raise SystemFailure(f"processes {', '.join(map(str, sorted(left)[:5]))} survive SIGKILL in {live[0]}")
        signal(live, _SIGKILL)
        time.sleep(0.005)


def _kill_frozen(directory: str, timeout: float = 2.0) -> bool:
    """Freeze a v1 freezer directory, SIGKILL its members, thaw it: nobody forks in between. False: cannot freeze.

    A member the freezer cannot stop in time (a task in uninterruptible
    sleep) still gets its SIGKILL; :func:`kill`'s rounds catch the rest.
    """
    state = os.path.join(directory, "freezer.state")
    try:
        write(state, "FROZEN")
    except OSError:
        return False
    try:
        deadline = time.monotonic() + timeout
        while (read(state) or "").strip() == "FREEZING" and time.monotonic() < deadline:
            time.sleep(0.001)
        signal([directory], _SIGKILL)
    finally:
        try:
            write(state, "THAWED")
        except OSError:
            pass
    return True


def remove(directories: Sequence[str], timeout: float = 5.0) -> None:
    """Remove the (empty) session directories and what is below them; their parents stay.

    ``<parent>/<key>`` (the state root's slice) and ``<parent>`` outlive the
    session: making and removing them with every session that begins and ends
    alone cost ten more mkdirs and rmdirs, about a third of what limits add to
    an automatic session. :func:`remove_slice` (``session recover --all`` on a
    state root without sessions) removes them.
    """
    deadline = time.monotonic() + timeout
    for directory in directories:
        try:
            os.rmdir(directory)  # a leaf (or gone already, after kill): one call
            continue
        except FileNotFoundError:
            continue
        except OSError:
            pass
        for path in _tree(directory):  # the loopback leaf before the session's own directory
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise SystemFailure(f"cannot remove cgroup {path}: {e.strerror}") from None
                    signal([path], _SIGKILL)  # a process that was still exiting, or joined late
                    time.sleep(0.01)


def remove_slice(parent: str, key: str, found: Sequence[Hierarchy] | None = None) -> list[str]:
    """Remove this state root's ``<parent>/<key>`` in every hierarchy, and ``<parent>``, where empty; what went.

    A directory still in use (a session's below it, another state root's
    beside it) stays. A begin that finds its parent gone makes it again
    (:func:`create`).
    """
    removed = []
    for h in hierarchies() if found is None else found:
        key_dir = os.path.join(h.path, parent, key)
        for path in (key_dir, os.path.dirname(key_dir)):
            try:
                os.rmdir(path)
                removed.append(path)
            except OSError:
                break
    return removed


def _stat_value(text: str | None, key: str) -> int | None:
    if not text:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else None


def usage(directories: Sequence[str]) -> dict[str, int | None]:
    """What the session uses now: memory (bytes) and its peak, CPU time (µs), processes, OOM kills.

    A figure the session's hierarchies do not account is None.
    """
    out: dict[str, int | None] = dict.fromkeys(("memory", "memory_peak", "cpu_usec", "pids", "oom_kills"))
    for d in directories:
        if out["memory"] is None:
            v2 = _int(read(os.path.join(d, "memory.current")))
            v1 = None if v2 is not None else _int(read(os.path.join(d, "memory.usage_in_bytes")))
            if v2 is not None:
                out["memory"] = v2
                out["memory_peak"] = _int(read(os.path.join(d, "memory.peak")))
                out["oom_kills"] = _stat_value(read(os.path.join(d, "memory.events")), "oom_kill")
            elif v1 is not None:
                out["memory"] = v1
                out["memory_peak"] = _int(read(os.path.join(d, "memory.max_usage_in_bytes")))
                out["oom_kills"] = _stat_value(read(os.path.join(d, "memory.oom_control")), "oom_kill")
        if out["cpu_usec"] is None:
            usec = _stat_value(read(os.path.join(d, "cpu.stat")), "usage_usec")
            if usec is None:
                ns = _int(read(os.path.join(d, "cpuacct.usage")))
                usec = None if ns is None else ns // 1000
            out["cpu_usec"] = usec
        if out["pids"] is None:
            out["pids"] = _int(read(os.path.join(d, "pids.current")))
    return out


def leftovers(parent: str, key: str, known: set[str], found: Sequence[Hierarchy] | None = None) -> list[str]:
    """Session directories of this state root (under *parent*/*key*) that no record names."""
    found = hierarchies() if found is None else found
    out = []
    for h in found:
        base = os.path.join(h.path, parent, key)
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in sorted(names):
            path = os.path.join(base, name)
            if name not in known and os.path.isdir(path):
                out.append(path)
    return out
