"""Looking at sessions: listings, one session's details, and the state a session is shown in."""

from __future__ import annotations

from .. import backends, isolation_upkeep, locks, mounts, policy, procs, views
from ..names import check_object_name
from ..records import Session
from ..views import SessionInfo
from .records import read, read_all, session_target

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from ..context import Context


def display_state(session: Session, table: list[mounts.Mount], held: set[int] | None, lock_dir: str) -> str:
    """:func:`core.views.session_state` against a mount table."""
    return views.session_state(session, {m.target for m in table}, held, lock_dir)


def list_sessions(ctx: Context, image: str | None) -> list[SessionInfo]:
    """The sessions (of *image*, or all) the caller may use, with their displayed state."""
    if image is not None:
        check_object_name(image, "image name")
    found, _ = read_all(ctx)
    mounted = {m.target for m in mounts.mounts()}
    held = set(locks.kernel_flocks())
    viewer = views.Viewer(ctx.policy, ctx.actor)
    out = []
    for s in found:
        if image is not None and s.image != image:
            continue
        if not viewer.sees_session(s):
            continue  # listings show what the caller may use
        out.append(SessionInfo(s, views.session_state(s, mounted, held, ctx.store.lock_dir)))
    return out


def info(ctx: Context, sid: str, *, details: bool) -> SessionInfo:
    """Session *sid* and its displayed state; with *details*, its processes, changes and usage too."""
    session = read(ctx, sid)
    ctx.authorize(policy.SESSION_VIEW, session_target(session))
    state = display_state(session, mounts.mounts(), set(locks.kernel_flocks()), ctx.store.lock_dir)
    if not details:
        return SessionInfo(session, state)
    count = procs.count_in_roots([session.mountpoint])[session.mountpoint.rstrip("/")]
    changes = backends.get(session.backend).changes(session)
    return SessionInfo(session, state, processes=count, changes=changes, usage=isolation_upkeep.usage(session))
