"""Switching a live session's network (``roost session network``): what its next commands join.

Kept apart from :mod:`core.isolation`, which every begin with limits or a
network mode loads.
"""

from __future__ import annotations

import os

from . import records
from .errors import BadInput, Conflict, SystemFailure
from .isolation import LOOPBACK_LEAF, _netns_path, _v2_dir, start

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .context import Context
    from .records import Session


def set_network(ctx: Context, sid: str, mode: str) -> tuple[str, int]:
    """Switch session *sid* to *mode*; (the mode it had, processes that keep the old network)."""
    from . import images, netns, policy, procs
    from . import session as session_ops

    ctx.require_privileged("session network")
    if mode not in records.NETWORKS:
        raise BadInput(f"network must be one of {', '.join(records.NETWORKS)}, not {mode[:40]!r}")
    session = session_ops.read(ctx, sid)
    ctx.authorize(policy.SESSION_NETWORK, session_ops.session_target(session))
    strictness = {"host": 0, "loopback": 1, "none": 2}
    if strictness[mode] < strictness.get(session.network, 0):  # more network than it has: root-users only
        ctx.authorize(policy.SESSION_LOOSEN, images.target(session.image, images.require(ctx, session.image)))
    ctx.ready()
    slock = ctx.session_lock(sid, "network")
    try:
        session = session_ops.read(ctx, sid)
        if session.state != "active":
            raise Conflict(f"session {sid} is {session.state}, not active")
        old = session.network
        if old == mode:
            return old, 0
        previous_netns = session.netns
        session.network = mode
        if mode == "none":
            session.netns = _netns_path(ctx, sid)
        else:
            session.netns = None
        if mode == "loopback":
            if _v2_dir(session) is None:
                plan_only_cgroups(ctx, session)
            v2 = _v2_dir(session)
            if v2 is None:
                raise SystemFailure("network: loopback needs the cgroup v2 hierarchy for its socket filters")
            session.filtered = os.path.join(v2, LOOPBACK_LEAF)
        else:
            session.filtered = None
        start(session)
        records.write(ctx.store.sessions_dir, session)
        if previous_netns is not None and previous_netns != session.netns:
            netns.remove(previous_netns)  # its processes keep it until they exit
        if mode == "none" or old == "none":
            _remount_sys(session)
        running = procs.count_in_roots([session.mountpoint])[session.mountpoint.rstrip("/")]
    finally:
        slock.release()
    ctx.journal(
        "session network", image=session.image, session=sid, generation=session.generation, network=mode, was=old
    )
    return old, running


def plan_only_cgroups(ctx: Context, session: Session) -> None:
    """Give a session the cgroup v2 directory a loopback filter needs (beside what it has)."""
    from . import cgroups

    groups = cgroups.plan(
        session.limits or {},
        ctx.settings.cgroup_parent,
        cgroups.state_key(ctx.store.root),
        session.id,
        account=session.limits is not None,
        filters=True,
        v2=True,
    )
    session.cgroups = [g.path for g in groups if g.hierarchy.version == 2] + [
        p for p in session.cgroups if p not in {g.path for g in groups if g.hierarchy.version == 2}
    ]
    records.write(ctx.store.sessions_dir, session)  # named before made: recover finds it


def _remount_sys(session: Session) -> None:
    """sysfs shows the network namespace it was mounted in: mount a fresh /sys for the new one."""
    from .setup import remount_sys

    remount_sys(session)
