"""Isolation's upkeep: live usage figures, orphans for recover, problems and rows for ``roost doctor``.

Kept apart from :mod:`core.isolation`, which every begin with limits or a
network mode loads.
"""

from __future__ import annotations

import os

from . import records
from .errors import BadInput, Conflict, NotFound, SystemFailure
from .isolation import intact

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .context import Context
    from .records import Session


# --- usage ---------------------------------------------------------------------------


def usage(session: Session) -> dict[str, int | None] | None:
    """Memory (bytes, peak), CPU time (µs), processes and OOM kills of a session with a cgroup; else None."""
    if not session.cgroups:
        return None
    from . import cgroups_upkeep

    return cgroups_upkeep.usage(session.cgroups)


def usages(sessions: Sequence[Session]) -> dict[str, dict[str, int | None]]:
    """:func:`usage` of every session that has a cgroup, by id (what the console polls)."""
    out = {}
    for s in sessions:
        figures = usage(s)
        if figures is not None:
            out[s.id] = figures
    return out


# --- recover ---------------------------------------------------------------------------


def orphans(ctx: Context, found: Sequence[Session], report: list[str]) -> None:
    """Kill and remove cgroups, and unmount namespaces, that no session record names.

    A candidate is removed only under its session's lock and after looking for
    its record again, so a begin under way (record written, cgroup being
    made) is never mistaken for a leftover. A namespace file of a known
    session that its record no longer names was left by an interrupted switch.
    With no session at all, the state root's cgroup slice goes too (sessions
    leave it for the next one: core.cgroups_upkeep.remove).
    """
    from . import cgroups, cgroups_upkeep, netns

    for sid, kind, path in _strays(ctx, found):
        try:
            lock = ctx.session_lock(sid, "recover", wait=False)
        except (Conflict, BadInput):
            continue  # an operation on that session is under way (or a name roost never made)
        current: Session | None = None
        try:
            try:
                current = records.read(ctx.store.sessions_dir, sid)
            except NotFound:
                current = None  # no record: a true leftover
            except SystemFailure:
                continue  # unreadable: recover of that session decides
            if kind == "cgroup":
                if current is not None and path in current.cgroups:
                    continue
                cgroups_upkeep.kill([path])
                cgroups_upkeep.remove([path])
            else:
                if current is not None and current.netns == path:
                    continue
                netns.remove(path)
            report.append(f"removed orphan {kind} {path}")
        finally:
            lock.release(remove=current is None and not os.path.exists(ctx.store.session_record(sid)))
    if not found:
        try:
            cgroups_upkeep.remove_slice(ctx.settings.cgroup_parent, cgroups.state_key(ctx.store.root))
        except OSError:
            pass


def check(ctx: Context, found: Sequence[Session], busy: Callable[[str], bool]) -> list[str]:
    """Problems for ``doctor --check``: isolation a live session lacks, leftovers no record names.

    *busy* tells whether a session's lock is held (an operation under way: not a problem).
    """
    problems = []
    for s in found:
        if s.state == "active" and not busy(s.id) and not intact(s):
            problems.append(f"session {s.id}: its network namespace or cgroups are missing (needs recovery)")
    problems += [f"{kind} {path} belongs to no session" for sid, kind, path in _strays(ctx, found) if not busy(sid)]
    return problems


def _strays(ctx: Context, found: Sequence[Session]) -> list[tuple[str, str, str]]:
    """(session id, kind, path) of the cgroups under this state root's key and the network namespace
    files that no record in *found* names (candidates: callers look again under the session's lock)."""
    from . import cgroups, cgroups_upkeep

    named = {s.id: s for s in found}
    out: list[tuple[str, str, str]] = []
    try:
        stray = cgroups_upkeep.leftovers(ctx.settings.cgroup_parent, cgroups.state_key(ctx.store.root), set(named))
        out += [(os.path.basename(p), "cgroup", p) for p in stray]
    except OSError:
        pass
    directory = os.path.join(ctx.store.run, "netns")
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        names = []
    for name in names:
        path = os.path.join(directory, name)
        owner = named.get(name)
        if owner is None or owner.netns != path:
            out.append((name, "network namespace", path))
    return out


def doctor_lines(ctx: Context) -> list[tuple[str, str, str]]:
    """(feature, available, how) rows for ``roost doctor``."""
    from . import binfmt, cgroups, limits

    rows: list[tuple[str, str, str]] = []
    has_netns = os.path.exists("/proc/self/ns/net")
    rows.append(("network: none", "yes" if has_netns else "no", "a network namespace of the session's own"))
    found = cgroups.hierarchies()
    v2 = next((h for h in found if h.version == 2), None)
    rows.append(
        (
            "network: loopback",
            "yes" if v2 is not None else "no",
            f"socket filters on cgroup v2 ({v2.path})" if v2 else "needs the cgroup v2 hierarchy mounted",
        )
    )
    for key in limits.KEYS:
        v2_name, v1_name = cgroups.CONTROLLER_OF[key]
        if v2 is not None and v2_name in v2.controllers:
            rows.append((f"limits: {key}", "yes", f"cgroup v2 {v2_name} ({v2.path})"))
            continue
        h1 = next((h for h in found if h.version == 1 and v1_name in h.controllers), None)
        if h1 is not None:
            rows.append((f"limits: {key}", "yes", f"cgroup v1 {v1_name} ({h1.path})"))
        else:
            rows.append((f"limits: {key}", "no", f"no {v2_name} controller in cgroup v2 or v1"))
    for arch, ok, why in binfmt.report():
        rows.append((f"architecture: {arch}", "yes" if ok else "no", why))
    return rows
