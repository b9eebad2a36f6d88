"""The writer lease of an image: which session may change it, judged by one rule everywhere.

A maintenance session lives across many commands and across reboots, so the
image's writer lock cannot be a flock held by a process. It is
``images/<name>/writer.json`` (see :mod:`core.locks`), naming the session,
written and removed only under the image's flock. Begin, promote, rollback,
recover, doctor, ``roost locks``, image listings and the console all ask
:func:`binds` whether a lease still holds.
"""

from __future__ import annotations

from . import locks, records
from .errors import NotFound, RoostError
from .names import is_reserved, is_valid_name

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from .context import Context


def binds(holder: records.Session | None) -> bool:
    """Whether a writer lease still binds, given the record of the session it names (None: gone).

    A maintenance session holds the lease for its whole life; an ordinary
    session holds a temporary one only while its record says it is promoting.
    Anything else is left over by a killed operation (a promote killed before
    it marked its session, or while putting it back) and never blocks.
    """
    return holder is not None and (holder.maintenance or holder.state == "promoting")


def holder_among(lease: locks.Lease | None, sessions: list[records.Session]) -> str | None:
    """The session holding *lease*, if the lease binds, judged against the records in *sessions*."""
    if lease is None:
        return None
    holder = next((s for s in sessions if s.id == lease.session), None)
    return lease.session if binds(holder) else None


def binds_on_disk(ctx: Context, lease: locks.Lease) -> bool:
    """:func:`binds`, reading the record of the session *lease* names.

    An unreadable record keeps the lease binding: recover deals with the
    record first, and nothing is lost by waiting for it.
    """
    if not is_valid_name(lease.session) or is_reserved(lease.session):
        return False
    try:
        holder = records.read(ctx.store.sessions_dir, lease.session)
    except NotFound:
        return False
    except RoostError:
        return True
    return binds(holder)


def read(ctx: Context, image: str) -> locks.Lease | None:
    """The lease file of *image*, whether it binds or not."""
    return locks.read_lease(ctx.store.writer_lease(image))


def live_writer(ctx: Context, image: str) -> locks.Lease | None:
    """The writer lease of *image* if it binds (stale leases don't count)."""
    lease = read(ctx, image)
    if lease is None:
        return None
    return lease if binds_on_disk(ctx, lease) else None


def take(ctx: Context, image: str, session: str, operation: str, since: str) -> None:
    """Write *session*'s lease on *image*; the caller holds the image's lock."""
    lease = locks.Lease(session=session, user=ctx.actor.user, operation=operation, since=since, pid=ctx.actor.pid)
    locks.write_lease(ctx.store.writer_lease(image), lease)


def release(ctx: Context, image: str, session: str) -> None:
    """Remove *session*'s lease on *image* if it still holds it (under the image's lock)."""
    import os

    path = ctx.store.writer_lease(image)
    lease = locks.read_lease(path)
    if lease is None or lease.session != session:
        return
    if not os.path.isdir(ctx.store.image_dir(image)):
        return
    with ctx.image_lock(image, f"release writer {session}"):
        lease = locks.read_lease(path)
        if lease is not None and lease.session == session:
            locks.clear_lease(path)


def clear_stale(ctx: Context, image: str) -> locks.Lease | None:
    """Remove *image*'s lease if it no longer binds (the caller holds the image's lock); returns it if so."""
    lease = read(ctx, image)
    if lease is not None and not binds_on_disk(ctx, lease):
        locks.clear_lease(ctx.store.writer_lease(image))
        return lease
    return None
