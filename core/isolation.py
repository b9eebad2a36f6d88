"""What keeps a session apart beyond its root: its network, its resource limits, its architecture.

The session life cycle calls a small interface:

==================  ===================================================================
:func:`resolve`     at begin: the network and limits (session options > image.yaml >
                    profile; maintenance sessions keep ``host`` unless asked)
:func:`plan`        at begin, before the record is first written: name the cgroup
                    directories and network namespace file, so a begin killed
                    half-way leaves nothing recover cannot find
:func:`start`       at bring-up (begin and recover): register qemu for a foreign
                    architecture, make the cgroups, attach loopback filters, make and
                    keep the network namespace
:func:`intact`      recover: is everything :func:`start` made still there?
:func:`kill`        end, after the process-tree scan: SIGKILL whatever is left in the
                    session's cgroups (processes that left its root) and remove
                    them; an empty one goes in one ``rmdir`` (the usual case)
:func:`remove`      end, after the unmount: the kept network namespace
==================  ===================================================================

The rest lives apart, so that a begin with limits loads only the above:
switching a live session's network in :mod:`core.netswitch`, live usage
figures, orphans (recover) and the doctor's rows in :mod:`core.isolation_upkeep`.

Every ``run`` and ``enter`` joins what the record names (``cgroups``, the
loopback leaf ``filtered``, ``netns``) just before its chroot
(:func:`core.process.exec_launch`): one write per hierarchy and one
``setns(2)``, nothing at all for a session without them.

Network modes:

``host``
    the host's network namespace (the default; maintenance sessions keep it
    unless asked otherwise: apt must reach its mirrors).
``none``
    a namespace of the session's own with only ``lo`` up, shared by all its
    processes (a server one command starts answers the next command on
    127.0.0.1); nothing outside it is reachable, not even the host's loopback.
``loopback``
    the host's namespace, but sockets may only reach loopback addresses: the
    host's own services on 127.0.0.1 and ::1 (an apt proxy, a local mirror) are
    reachable, nothing beyond the host is, and a bind to the wildcard address
    binds loopback (:mod:`core.sockfilter`).

Switching a live session (:func:`core.netswitch.set_network`) changes what its *next*
commands join. ``setns(2)`` only ever moves the caller and a process's cgroup
only changes when it is moved, so processes already running keep the network
they started with until they exit: a ``none`` namespace left behind lives on
(unmounted) while processes are in it, a loopback filter stays on its cgroup.
"""

from __future__ import annotations

import os

from . import records
from .errors import SystemFailure
from .records import Session

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at start-up
    from collections.abc import Mapping

    from . import cgroups
    from .context import Context
    from .imageconf import ImageConfig
    from .profiles import Profile

#: The child of a session's cgroup v2 directory that carries the loopback filters.
LOOPBACK_LEAF = "loopback"
#: What :func:`plan` planned in this process, by session: begin's :func:`start` needs no second plan.
_planned: dict[str, list[cgroups.Group]] = {}


def _netns_path(ctx: Context, sid: str) -> str:
    return os.path.join(ctx.store.run, "netns", sid)


def _v2_dir(session: Session) -> str | None:
    """The session's directory in the cgroup v2 hierarchy, if it has one."""
    from . import cgroups

    v2 = next((h for h in cgroups.hierarchies() if h.version == 2), None)
    if v2 is None:
        return None
    return next((p for p in session.cgroups if p.startswith(v2.path.rstrip("/") + "/")), None)


def resolve(
    config: ImageConfig,
    profile: Profile,
    *,
    maintenance: bool,
    network: str | None,
    limit_options: Mapping[str, int | float | str] | None,
) -> tuple[str, dict[str, int | float] | None]:
    """The network and limits a new session gets (session options > image.yaml > profile)."""
    if network is not None:
        chosen = records.check_network(network, "--network")
    elif maintenance:
        chosen = "host"  # apt must reach its mirrors; --network overrides
    else:
        chosen = config.network or profile.network or "host"
    if profile.limits is None and config.limits is None and limit_options is None:
        return chosen, None  # the usual case: no cgroup, nothing imported
    from .limits import merge

    return chosen, merge(profile.limits, config.limits, limit_options)


def plan(ctx: Context, session: Session) -> None:
    """Name what :func:`start` will make, in the record (``netns``, ``cgroups``, ``filtered``)."""
    session.netns = _netns_path(ctx, session.id) if session.network == "none" else None
    session.filtered = None
    session.cgroups = []
    if session.limits is None and session.network != "loopback":
        return
    from . import cgroups

    found = cgroups.hierarchies()
    if session.network == "loopback" and not any(h.version == 2 for h in found):
        raise SystemFailure(
            "network: loopback needs the cgroup v2 hierarchy for its socket filters "
            "(mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified)"
        )
    key = cgroups.state_key(ctx.store.root)
    groups = cgroups.plan(
        session.limits or {},
        ctx.settings.cgroup_parent,
        key,
        session.id,
        account=session.limits is not None,
        filters=session.network == "loopback",
        found=found,
    )
    session.cgroups = [g.path for g in groups]
    _planned[session.id] = groups  # start, in this process, makes them as planned
    if session.network == "loopback":
        v2 = next(g.path for g in groups if g.hierarchy.version == 2)
        session.filtered = os.path.join(v2, LOOPBACK_LEAF)


def start(session: Session) -> None:
    """Make (or, after a reboot, remake) the session's isolation; idempotent."""
    if _foreign(session.architecture):
        from . import binfmt

        binfmt.ensure(str(session.architecture))
    if session.cgroups:
        _start_cgroups(session)
    if session.filtered is not None:
        _start_filter(session.filtered)
    if session.netns is not None and not _kept(session.netns):
        from . import netns
        from .mounts import make_private_mount_dir

        if os.path.lexists(session.netns):
            os.unlink(session.netns)  # the empty file a reboot left

        directory = os.path.dirname(session.netns)
        try:
            os.mkdir(directory, 0o755)
            make_private_mount_dir(directory)  # once, as <run>/mnt: nothing mounted here propagates out
        except FileExistsError:
            pass
        try:
            netns.create(session.netns)
        except OSError as e:
            raise SystemFailure(f"cannot make the network namespace of session {session.id}: {e.strerror}") from None


def _foreign(arch: str | None) -> bool:
    """An architecture this host runs through qemu (no import for the host's own)."""
    if arch is None or arch == records.HOST_ARCH:
        return False
    from . import binfmt

    return not binfmt.is_native(arch)


def _kept(path: str) -> bool:
    from .netns import is_kept

    return is_kept(path)


def _start_cgroups(session: Session) -> None:
    from . import cgroups

    planned_here = _planned.pop(session.id, None)
    if planned_here is not None and [g.path for g in planned_here] == session.cgroups:
        cgroups.create(planned_here, session.limits or {})  # begin: as plan named them a moment ago
        return
    first = session.cgroups[0]
    key_dir = os.path.dirname(first)
    parent, key = os.path.basename(os.path.dirname(key_dir)), os.path.basename(key_dir)
    found = cgroups.hierarchies()
    planned = {
        g.path: g
        for g in cgroups.plan(
            session.limits or {},
            parent,
            key,
            session.id,
            account=session.limits is not None,
            filters=session.filtered is not None,
            v2=_v2_dir(session) is not None,
            found=found,
        )
    }
    # What the record names is made; a directory the plan has no controllers for (a
    # session begun by an earlier roost, which planned differently) is made bare.
    groups = [planned.get(path) or cgroups.group_at(path, found) for path in session.cgroups]
    limited = {p for p, g in planned.items() if g.controllers & cgroups.limiting(session.limits or {})}
    if None in groups or not limited <= set(session.cgroups):
        raise SystemFailure(
            f"the cgroup hierarchies changed since session {session.id} began "
            f"(it had {', '.join(session.cgroups)}); end it and begin another"
        )
    cgroups.create([g for g in groups if g is not None], session.limits or {})


def _start_filter(leaf: str) -> None:
    from . import sockfilter

    try:
        os.mkdir(leaf, 0o755)
    except FileExistsError:
        if sockfilter.attached(leaf):
            return
    except OSError as e:
        raise SystemFailure(f"cannot create cgroup {leaf}: {e.strerror}") from None
    sockfilter.attach(leaf)


def intact(session: Session) -> bool:
    """Everything :func:`start` makes is in place (cheap: a few stats)."""
    if session.netns is not None and not _kept(session.netns):
        return False
    if _foreign(session.architecture):
        from .binfmt import registered

        if not registered(str(session.architecture)):
            return False
    return all(os.path.isdir(p) for p in [*session.cgroups, *([session.filtered] if session.filtered else [])])


def kill(session: Session) -> int:
    """SIGKILL what is left in the session's cgroups and remove them (the loopback leaf first); how many processes.

    A cgroup with no process and no cgroup below it goes in one ``rmdir(2)``
    (the kernel refuses a busy one): at ``end`` the process-tree scan has
    usually got everything, and no cgroup code is even loaded.
    """
    busy = []
    for directory in session.cgroups:
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass
        except OSError:
            busy.append(directory)  # EBUSY: processes in it, or cgroups below it
    if not busy:
        return 0
    from . import cgroups_upkeep

    found = cgroups_upkeep.kill(busy)
    cgroups_upkeep.remove(busy)
    return found


def remove(session: Session) -> None:
    """Remove the kept network namespace (:func:`kill` removed the cgroups)."""
    if session.netns is not None:
        from . import netns

        netns.remove(session.netns)
