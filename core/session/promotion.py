"""Promote: turn a session into its image's next generation, as one transaction.

The steps (docs/design.md, "Promote"): :func:`promote` checks
compare-and-swap, takes or checks the writer lease and records the
transaction (:class:`PromoteTx`) in the session's record with ``state:
promoting``; it unmounts the session and calls :func:`complete_promote`,
which stages, commits and switches (:func:`stage_and_commit`) and ends the
session. Recover (core/recover.py) reads the same :class:`PromoteTx` back:
if :func:`generation_of_tx` finds the generation it committed, it rolls
forward with :func:`complete_promote`; otherwise it undoes the staging and
puts the session back with :func:`abandon_promote`.
"""

from __future__ import annotations

import os

from .. import backends, faults, generations, images, leases, mounts, policy, procs
from ..actor import now_iso
from ..errors import BadInput, Conflict, RoostError, SystemFailure
from ..generations import GenerationMeta
from ..records import Session
from ..setup import unmerge_nss
from ..store import new_tx
from ..struct import Struct
from .lifecycle import finish, tear_down
from .records import read, session_target, stack_of, write

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from typing import Any

    from ..context import Context


class PromoteTx(Struct, frozen=True):
    """A promote transaction, as the session's record carries it while its state is ``promoting``.

    On disk it is the record's ``promote`` object, with the same keys
    (``tx`` for :attr:`id`), so records written by earlier versions read back.
    """

    #: The transaction id (core.store.new_tx): names ``staging/<id>``, its lock, and the generation's ``tx``.
    id: str
    #: The generation the session was cloned from; the promote commits only while it is still current.
    base: int
    #: Whether the new generation is a full copy (the backend always flattens, or the stack is too deep).
    flatten: bool
    #: Whether the promote took the writer lease for itself (an ordinary session) and releases it if undone.
    temporary_lease: bool
    #: The generation's message, and who promoted.
    message: str = ""
    author: str = ""

    def to_record(self) -> dict[str, Any]:
        """The ``promote`` object of the session's record."""
        return {
            "tx": self.id,
            "base": self.base,
            "flatten": self.flatten,
            "temporary_lease": self.temporary_lease,
            "message": self.message,
            "author": self.author,
        }

    @staticmethod
    def id_of(session: Session) -> str | None:
        """The transaction id *session*'s record names, even if the rest of its transaction is malformed.

        Recover keeps that transaction's staging (it may hold the session's
        changes) and puts it back, whatever else the record lost.
        """
        data = session.promote
        tx = data.get("tx") if isinstance(data, dict) else None
        return tx if isinstance(tx, str) and tx else None

    @classmethod
    def of(cls, session: Session) -> PromoteTx | None:
        """The transaction *session*'s record names; None if it names none, or none that is well-formed."""
        data = session.promote
        if not isinstance(data, dict):
            return None
        tx, base = data.get("tx"), data.get("base")
        if not isinstance(tx, str) or not tx or isinstance(base, bool) or not isinstance(base, int):
            return None
        return cls(
            id=tx,
            base=base,
            flatten=bool(data.get("flatten")),
            temporary_lease=bool(data.get("temporary_lease")),
            message=str(data.get("message") or ""),
            author=str(data.get("author") or ""),
        )


def promote(ctx: Context, sid: str, message: str) -> int:
    """Promote session *sid* into the next generation of its image; returns the generation's number."""
    ctx.require_privileged("session promote")
    if len(message) > 4096 or "\x00" in message:
        raise BadInput("the message is too long or holds a NUL")
    session = read(ctx, sid)
    config = images.require(ctx, session.image)
    # Promote writes into the image: decided against the image as it is now, not as it was at begin.
    ctx.authorize(policy.SESSION_PROMOTE, images.target(session.image, config))
    ctx.authorize(policy.SESSION_VIEW, session_target(session))
    ctx.ready()
    store = ctx.store
    image = session.image
    slock = ctx.session_lock(sid, "promote")
    try:
        session = read(ctx, sid)
        if session.state != "active":
            raise Conflict(f"session {sid} is {session.state}, not active (roost session recover {sid})")
        if session.lost:  # its unsynced writes may be torn: they never become a generation
            raise Conflict(
                f"session {sid} is lost (it ran without durability and the machine restarted): nothing promoted"
            )
        backend = backends.get(session.backend)
        max_depth = config.overlay_max_depth or ctx.settings.overlay_max_depth
        with ctx.image_lock(image, f"promote {sid}"):
            cur = generations.current(store, image)
            if cur != session.generation:
                raise Conflict(
                    f"session {sid} was cloned from generation {session.generation}, but {image} is now at "
                    f"generation {cur}: not a fast-forward, nothing promoted"
                )
            writer = leases.live_writer(ctx, image)
            temporary = False
            if session.maintenance:
                if writer is None or writer.session != sid:
                    raise Conflict(f"session {sid} no longer holds the writer lock of {image}")
            else:
                if writer is not None:
                    raise Conflict(f"{image} is being maintained by {writer.describe()}: only it may promote")
                leases.take(ctx, image, sid, "promote", now_iso())
                temporary = True
            base_stack = stack_of(ctx, image, cur)
            flatten = backend.always_flatten or len(base_stack) + 1 > max_depth
            faults.crashpoint("promote", "leased")  # an ordinary session's temporary lease, not yet marked
            txn = PromoteTx(
                id=new_tx(),
                base=cur,
                flatten=flatten,
                temporary_lease=temporary,
                message=message,
                author=ctx.actor.user,
            )
            session.state = "promoting"
            session.promote = txn.to_record()
            write(ctx, session)
        faults.crashpoint("promote", "marked")
        try:
            procs.kill_in_root(session.mountpoint, ctx.settings.end_grace)
            unmerge_nss(session)  # the host's users are never baked into a generation
            mounts.unmount_tree(session.mountpoint)
        except RoostError:
            abandon_promote(ctx, session, txn)
            raise
        faults.crashpoint("promote", "unmounted")
        number = complete_promote(ctx, session, txn)
        slock.release(remove=True)
    finally:
        slock.release()
    ctx.journal("session promote", image=image, session=sid, generation=number, base=session.generation)
    if config.publish is not None:  # image.yaml asks for the new generation to be published
        from .. import publish

        publish.after_promote(ctx, image, number)
    return number


def abandon_promote(ctx: Context, session: Session, txn: PromoteTx | None) -> None:
    """Put a session whose promote could not finish back to active, with its changes.

    The session is locked; it stays mounted, or recover mounts it again.
    The temporary writer lease *txn* took, if any, is released. Recover
    passes None for a record whose transaction is missing or malformed.
    """
    session.state = "active"
    session.promote = None
    write(ctx, session)
    if txn is not None and txn.temporary_lease:
        leases.release(ctx, session.image, session.id)


def complete_promote(ctx: Context, session: Session, txn: PromoteTx) -> int:
    """Stage, commit and switch; then end the session. The session is unmounted and locked.

    Also the roll-forward path of recover: when the transaction already
    committed its generation, only the missing steps are done.
    """
    store = ctx.store
    image = session.image
    backend = backends.get(session.backend)
    staging = os.path.join(store.image_staging(image), txn.id)
    number = generation_of_tx(ctx, image, txn.id)
    if number is None:
        tx_lock = ctx.lock(store.tx_lock_name(txn.id), f"promote {session.id}")
        try:
            number = stage_and_commit(ctx, session, txn, backend, staging)
        finally:
            tx_lock.release(remove=True)
    else:
        with ctx.image_lock(image, f"recover promote {session.id}"):
            gen_dir = store.generation_dir(image, number)
            if not os.path.isdir(gen_dir):
                if not os.path.isdir(staging):
                    os.unlink(store.generation_meta(image, number))
                    raise SystemFailure(f"generation {number} of {image} lost its data; session {session.id} kept")
                os.rename(staging, gen_dir)
            if generations.current(store, image) == txn.base:
                generations.switch(store, image, number)
    tear_down(ctx, session, force=True)
    finish(ctx, session)
    faults.crashpoint("promote", "ended")
    return number


def stage_and_commit(ctx: Context, session: Session, txn: PromoteTx, backend: backends.Backend, staging: str) -> int:
    """Write the new generation into *staging*, then commit and switch under the image lock.

    If staging fails, or the image moved on meanwhile, the staging is undone
    and the session put back (:func:`abandon_promote`) before the error rises.
    """
    store = ctx.store
    image = session.image
    os.makedirs(store.image_staging(image), mode=0o700, exist_ok=True)
    if not os.path.isdir(staging):
        os.mkdir(staging, 0o700)
    scratch = os.path.join(store.stage_dir, txn.id)
    os.makedirs(scratch, mode=0o700, exist_ok=True)
    try:
        flattened = backend.stage(session, staging, flatten=txn.flatten, scratch=scratch)
    except BaseException:
        backend.unstage(session, staging)
        backends.discard(staging)
        abandon_promote(ctx, session, txn)
        raise
    finally:
        os.rmdir(scratch)
    faults.crashpoint("promote", "staged")
    size = backend.staged_size(session, staging)
    backend.sync(staging)
    faults.crashpoint("promote", "synced")
    with ctx.image_lock(image, f"promote {session.id}"):
        cur = generations.current(store, image)
        if cur != txn.base:
            backend.unstage(session, staging)
            backends.discard(staging)
            abandon_promote(ctx, session, txn)
            raise Conflict(f"{image} moved to generation {cur} during the promote of {session.id}: nothing promoted")
        number = generations.highest(store, image) + 1
        stack = (number,) if flattened else (number, *stack_of(ctx, image, txn.base))
        meta = GenerationMeta(
            generation=number,
            parent=txn.base,
            created=now_iso(),
            author=txn.author or ctx.actor.user,
            message=txn.message,
            session=session.id,
            size=size,
            backend=backend.name,
            stack=stack,
            tx=txn.id,
            flattened=flattened,
        )
        generations.commit(store, image, meta, staging)
    return number


def generation_of_tx(ctx: Context, image: str, tx: str) -> int | None:
    """The generation promote transaction *tx* committed to *image*, if it got that far (its YAML names *tx*)."""
    _, _, metas_only = generations.scan(ctx.store, image)
    candidates = generations.complete(ctx.store, image)[-8:] + sorted(metas_only)
    for n in candidates:
        try:
            if generations.read_meta(ctx.store, image, n).tx == tx:
                return n
        except RoostError:
            continue
    return None
