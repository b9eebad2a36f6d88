"""Recover: finish or undo whatever an interrupted operation left, and remount sessions.

Idempotent and cheap enough to run at every boot (and on demand when a
command finds its session unmounted). It only ever deletes half-made
leftovers: staging and trash directories nobody holds a lock on, temporary
files and links of dead writers, records of begins that never finished,
mounts and clones that no record names. Sessions whose operation is still
running (their lock is held) are left alone.
"""

from __future__ import annotations

import os

from . import backends, faults, generations, images, isolation, leases, locks, mounts, policy, procs, records
from . import session as session_ops
from .errors import Conflict, NotFound, RoostError
from .fsutil import is_temp_name, remove_tree
from .names import is_valid_name
from .records import Session
from .session import PromoteTx

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from .context import Context


def recover(ctx: Context, sid: str | None = None) -> list[str]:
    """Recover one session (*sid*) or everything; returns what was done, one line each."""
    ctx.require_privileged("session recover")
    if sid is not None:
        session = session_ops.read(ctx, sid)
        ctx.authorize(policy.SESSION_RECOVER, session_ops.session_target(session))
    else:
        ctx.authorize(policy.HOST_ADMIN)
    ctx.ready()
    report: list[str] = []
    if sid is not None:
        _image(ctx, session.image, report)
        _session(ctx, sid, report)
        return report
    _store(ctx, report)
    for name in ctx.store.image_names():
        _image(ctx, name, report)
    for session_id in records.ids(ctx.store.sessions_dir):
        _session(ctx, session_id, report)
    _orphans(ctx, report)
    ctx.journal("session recover", actions=len(report))
    return report


def _tx_free(ctx: Context, tx: str) -> bool:
    """True if no live process holds the lock of transaction *tx*."""
    if not is_valid_name(tx):
        return True
    try:
        lock = ctx.lock(ctx.store.tx_lock_name(tx), "recover", wait=False, straggler_grace=locks.TX_STRAGGLER_GRACE)
    except Conflict:
        return False
    lock.release(remove=True)
    return True


def _dead_temp(name: str) -> bool:
    """A temporary file (``.x.tmp-PID-RAND``) whose writer is gone."""
    if not is_temp_name(name):
        return False
    try:
        pid = int(name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return True
    return not procs.alive(pid)


def _sweep_temps(directory: str, report: list[str]) -> None:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if _dead_temp(name):
            path = os.path.join(directory, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    remove_tree(path)
                else:
                    os.unlink(path)
                report.append(f"removed temporary {path}")
            except FileNotFoundError:
                pass


def _store(ctx: Context, report: list[str]) -> None:
    store = ctx.store
    for directory in (store.staging_dir, store.trash_dir):
        for tx in sorted(os.listdir(directory)):
            if _tx_free(ctx, tx):
                path = os.path.join(directory, tx)
                _remove_leftover_tree(path)
                report.append(f"removed leftover {path}")
    _sweep_temps(store.sessions_dir, report)
    _sweep_temps(store.images_dir, report)


def _remove_leftover_tree(path: str) -> None:
    """Remove a staging or trash tree; its backend deletes generation-like parts (datasets, subvolumes).

    Whatever an interrupted helper left running or mounted in it goes first
    (mmdebstrap mounts /proc and /dev in its target and chroots into it).
    """
    if os.path.isdir(path) and not os.path.islink(path):
        procs.kill_in_root(path, 0.5)
        mounts.unmount_tree(path, force=True)
    backends.discard(path)


def _promoting_txs(ctx: Context, image: str) -> set[str]:
    found, _ = records.read_all(ctx.store.sessions_dir)
    txs = (PromoteTx.id_of(s) for s in found if s.image == image and s.state == "promoting")
    return {tx for tx in txs if tx is not None}


def _image(ctx: Context, name: str, report: list[str]) -> None:
    store = ctx.store
    if not os.path.isdir(store.image_dir(name)):
        return
    try:
        config = images.load_config(ctx, name)
        backend = backends.get(config.backend)
    except RoostError as e:
        report.append(f"image {name}: {e}")
        return
    with ctx.image_lock(name, "recover"):
        _sweep_temps(store.image_dir(name), report)
        _sweep_temps(store.generations_dir(name), report)
        busy = _promoting_txs(ctx, name)
        staging = store.image_staging(name)
        if os.path.isdir(staging):
            for tx in sorted(os.listdir(staging)):
                if tx in busy or not _tx_free(ctx, tx):
                    continue  # a promote is under way, or its session's recovery decides
                _remove_leftover_tree(os.path.join(staging, tx))
                report.append(f"image {name}: removed half-made staging/{tx}")
        trash = store.image_trash(name)
        if os.path.isdir(trash):
            for tx in sorted(os.listdir(trash)):
                if not _tx_free(ctx, tx):
                    continue
                path = os.path.join(trash, tx)
                for entry in os.listdir(path):
                    if entry.isdigit():
                        backend.remove_generation(os.path.join(path, entry))
                backends.discard(path)
                report.append(f"image {name}: emptied trash/{tx}")
        done, dirs_only, metas_only = generations.scan(store, name)
        try:
            cur: int | None = generations.current(store, name)
        except RoostError:
            cur = None
        for n in sorted(dirs_only):
            if n == cur:
                continue
            backend.remove_generation(store.generation_dir(name, n))
            report.append(f"image {name}: removed incomplete generation {n}")
        for n in sorted(metas_only):
            committed: str | None
            try:
                committed = generations.read_meta(store, name, n).tx
            except RoostError:
                committed = None
            if committed in busy:
                continue  # a promote committed it; its session's recovery finishes it
            os.unlink(store.generation_meta(name, n))
            report.append(f"image {name}: removed metadata of missing generation {n}")
        if cur is None or cur not in done:
            report.append(f"image {name}: current does not name a complete generation (roost doctor --check)")
        stale = leases.clear_stale(ctx, name)
        if stale is not None:
            report.append(f"image {name}: released the stale writer lock of session {stale.session}")


def _session(ctx: Context, sid: str, report: list[str]) -> None:
    try:
        slock = ctx.session_lock(sid, "recover", wait=False)
    except Conflict:
        return  # an operation is under way on it
    removed = False
    try:
        try:
            session = session_ops.read(ctx, sid)
        except NotFound:
            removed = True
            return
        except RoostError:
            _broken_record(ctx, sid, report)
            removed = True
            return
        faults.crashpoint("recover", "session")
        removed = _session_locked(ctx, session, report)
    finally:
        slock.release(remove=removed)


def _session_locked(ctx: Context, session: Session, report: list[str]) -> bool:
    """Recover one locked session; True if it is gone afterwards."""
    sid = session.id
    if session.state == "beginning":
        session_ops.tear_down(ctx, session, force=True, quiet=True)
        session_ops.finish(ctx, session)
        report.append(f"session {sid}: removed (its begin was interrupted)")
        return True
    if session.state == "ending":
        session_ops.tear_down(ctx, session, force=True, quiet=True)
        session_ops.finish(ctx, session)
        report.append(f"session {sid}: ended (its end was interrupted)")
        return True
    if session.state == "promoting":
        txn = PromoteTx.of(session)
        if txn is not None and session_ops.generation_of_tx(ctx, session.image, txn.id) is not None:
            mounts.unmount_tree(session.mountpoint, force=True)
            number = session_ops.complete_promote(ctx, session, txn)
            report.append(f"session {sid}: promote finished as generation {number} of {session.image}")
            ctx.journal("session promote", image=session.image, session=sid, generation=number, recovered=True)
            return True
        tx = PromoteTx.id_of(session)
        if tx is not None:
            staging = os.path.join(ctx.store.image_staging(session.image), tx)
            backend = backends.get(session.backend)
            if os.path.isdir(staging):
                backend.unstage(session, staging)
                backends.discard(staging)
        session_ops.abandon_promote(ctx, session, txn)
        report.append(f"session {sid}: interrupted promote undone, session kept")
    if session.auto and not procs.alive(session.creator_pid, session.creator_start):
        session_ops.tear_down(ctx, session, force=True, quiet=True)
        session_ops.finish(ctx, session)
        report.append(f"session {sid}: ended (automatic session whose command is gone)")
        return True
    if session.lost:
        # Its writes were never synced and the machine restarted: the upper may be torn (the
        # kernel refuses to mount it again anyway). Nothing of it is kept.
        session_ops.tear_down(ctx, session, force=True, quiet=True)
        session_ops.finish(ctx, session)
        report.append(f"session {sid}: lost (it ran without durability and the machine restarted); ended")
        ctx.journal("session end", image=session.image, session=sid, generation=session.generation, lost=True)
        return True
    backend = backends.get(session.backend)
    if not backend.has_clone(session):
        report.append(f"session {sid}: its clone is gone; end it with roost session end {sid}")
        return False
    if _fully_mounted(session):
        if not isolation.intact(session):
            isolation.start(session)  # a namespace, cgroup or qemu registration that went missing
            report.append(f"session {sid}: isolation restored")
        return False
    mounts.unmount_tree(session.mountpoint, force=True)
    if session.volatile:
        backend.forget_volatile(session)  # same boot: its writes are intact in the page cache
    try:
        session_ops.bring_up(ctx, session, create=False)
    except RoostError as e:
        mounts.unmount_tree(session.mountpoint, force=True)
        report.append(f"session {sid}: cannot remount: {e}")
        return False
    report.append(f"session {sid}: remounted")
    return False


def _fully_mounted(session: Session) -> bool:
    table = mounts.mounts()
    if not mounts.is_mounted(session.mountpoint, table):
        return False
    below = {m.target for m in mounts.mounts_below(session.mountpoint, table)}
    base = {session.mountpoint + p for p in ("/proc", "/sys", "/dev", "/dev/pts", "/dev/shm")}
    return base <= below


def _broken_record(ctx: Context, sid: str, report: list[str]) -> None:
    """A record that cannot be read: a begin killed while writing it. Remove what it could name."""
    store = ctx.store
    _remove_mount_point(ctx, store.session_gate(sid), [])
    backends.discard(store.session_clone(sid))
    records.remove(store.sessions_dir, sid)
    report.append(f"session {sid}: removed an unreadable record and its leftovers")


def leftovers(ctx: Context) -> list[tuple[backends.Backend, backends.Orphan]]:
    """What every backend keeps for this state root that no generation, staging entry or record names.

    Each backend lists its own data first and then reads what the state root
    names, in the order things move (see :class:`core.backends.Known`), so a
    generation moved by a concurrent promote, gc, create or remove is never
    taken for a leftover.
    """
    site = ctx.site()
    known = backends.Known(ctx.store)
    return [(b, orphan) for b in backends.all() for orphan in b.orphans(site, known)]


def _backend_orphans(ctx: Context, report: list[str]) -> None:
    for backend, orphan in leftovers(ctx):
        backend.remove_orphan(orphan)
        report.append(f"destroyed orphan {orphan.kind} {orphan.name}")


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _remove_mount_point(ctx: Context, path: str, report: list[str]) -> None:
    """A mount point (or a session's gate with its mount point) that nothing names: empty it, remove it."""
    procs.kill_in_root(path, ctx.settings.end_grace)
    mounts.unmount_tree(path, force=True)
    try:
        inner = os.path.join(path, "root")
        if os.path.isdir(inner) and not os.path.islink(inner):
            os.rmdir(inner)
        os.rmdir(path)
        report.append(f"removed orphan mount point {path}")
    except OSError:
        pass


def _orphans(ctx: Context, report: list[str]) -> None:
    """Mounts, mount points, clones, backend data (datasets) and lock files that no record names."""
    _backend_orphans(ctx, report)
    store = ctx.store
    known = set(records.ids(store.sessions_dir))
    from .isolation_upkeep import orphans

    orphans(ctx, session_ops.read_all(ctx)[0], report)
    from . import pkgcache

    for path in pkgcache.orphans(store, known):
        remove_tree(path)  # a session's own cache layers, its record gone (never crosses a mount)
        report.append(f"removed orphan package cache layers {path}")
    for name in _listdir(store.mnt_dir):
        if name in known or name == os.path.basename(store.stage_dir):
            continue
        _remove_mount_point(ctx, os.path.join(store.mnt_dir, name), report)
    for tx in _listdir(store.stage_dir):
        if _tx_free(ctx, tx):  # a promote's or an export's scratch mount whose operation died
            _remove_mount_point(ctx, os.path.join(store.stage_dir, tx), report)
    for name in os.listdir(store.sessions_dir):
        path = os.path.join(store.sessions_dir, name)
        if is_valid_name(name) and not name.endswith(".json") and name not in known and os.path.isdir(path):
            try:
                lock = ctx.session_lock(name, "recover", wait=False)
            except Conflict:
                continue
            try:
                if not os.path.exists(store.session_record(name)):
                    backends.discard(path)
                    report.append(f"removed orphan clone {path}")
            finally:
                lock.release(remove=True)
    for name in os.listdir(store.lock_dir):
        if name.startswith("session.") and name.endswith(".lock"):
            sid = name[len("session.") : -len(".lock")]
            if sid in known or not is_valid_name(sid):
                continue
            try:
                lock = ctx.session_lock(sid, "recover", wait=False)
            except Conflict:
                continue
            if not os.path.exists(store.session_record(sid)):
                lock.release(remove=True)
            else:
                lock.release()
