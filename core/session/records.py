"""Session records as the life-cycle steps use them: read and checked, written, named.

The file format itself (``<state>/sessions/<id>.json``, the states) is
:mod:`core.records`; this module adds what system mode requires before it
acts on a record: the state root is trusted and the record names only its
own session's places (:func:`check_record`).
"""

from __future__ import annotations

import os

from .. import generations, policy
from .. import records as files
from ..errors import RoostError, SystemFailure
from ..names import check_object_name, is_valid_name
from ..records import Session

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from ..context import Context


def session_target(session: Session) -> policy.SessionTarget:
    """The session as the policy sees it: its owner and the access lists it was begun with."""
    return policy.SessionTarget(session.id, session.image, session.uid, session.access)


def new_id(ctx: Context, image: str) -> str:
    """A free session id for *image*: the image's name and eight random hex digits."""
    for _ in range(100):
        sid = f"{image[:55]}-{os.urandom(4).hex()}"
        if not os.path.exists(ctx.store.session_record(sid)):
            return sid
    raise SystemFailure("cannot find a free session id")


def check_record(ctx: Context, session: Session) -> Session:
    """Refuse a record that names anything but its own places (before any action is taken on it).

    A record says where its session is mounted, where its clone lives and
    which layers it stands on; roost unmounts, deletes and mounts there as
    root. Whatever the record says, those must be this session's own mount
    point and clone and layers of its image's generations.
    """
    store = ctx.store
    where = store.session_record(session.id)
    mountpoints = (store.mountpoint(session.id), store.legacy_mountpoint(session.id))
    if session.mountpoint not in mountpoints or session.clone != store.session_clone(session.id):
        raise SystemFailure(f"{where}: the record names places that are not its session's own; refusing it")
    check_object_name(session.image, "image name")
    generations_dir = store.generations_dir(session.image) + "/"
    for lower in session.lowers:
        if not isinstance(lower, str) or not lower.startswith(generations_dir) or "/../" in lower + "/":
            raise SystemFailure(f"{where}: the record names a layer outside image {session.image}; refusing it")
    if session.package_cache is not None and not is_valid_name(session.package_cache):
        raise SystemFailure(f"{where}: the record names a package cache that is not a name; refusing it")
    dataset = session.backend_data.get("dataset")
    if dataset is not None:
        parent = ctx.settings.zfs_dataset
        if not parent or not isinstance(dataset, str) or not dataset.startswith(f"{parent}/session/"):
            raise SystemFailure(f"{where}: the record names a dataset outside roost's own; refusing it")
    return session


def exists(ctx: Context, sid: str) -> bool:
    """Whether a record named *sid* exists (the name is taken)."""
    return os.path.lexists(ctx.store.session_record(sid))


def read(ctx: Context, sid: str) -> Session:
    """Session *sid*'s record, checked (:func:`check_record`); :class:`NotFound` if there is none."""
    check_object_name(sid, "session id")
    ctx.store.check_trusted()
    return check_record(ctx, files.read(ctx.store.sessions_dir, sid))


def read_all(ctx: Context) -> tuple[list[Session], list[str]]:
    """Every readable, well-formed record, and the ids of those that are not."""
    ctx.store.check_trusted()
    found, broken = files.read_all(ctx.store.sessions_dir)
    good = []
    for session in found:
        try:
            good.append(check_record(ctx, session))
        except RoostError:
            broken.append(session.id)
    return good, broken


def write(ctx: Context, session: Session) -> None:
    """Replace *session*'s record atomically (tmp + rename)."""
    files.write(ctx.store.sessions_dir, session)


def stack_of(ctx: Context, image: str, number: int) -> list[int]:
    """The generations generation *number* of *image* stands on, itself first."""
    return list(generations.read_meta(ctx.store, image, number).stack)
