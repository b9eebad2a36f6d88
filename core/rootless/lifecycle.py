"""Rootless images and sessions: the engine's operations for an ordinary user, step by step.

This is the rootless side of what core.images and core.session do as root,
on the same on-disk layout (DESIGN.md §3) with the same records, locks,
leases, generation metadata and compare-and-swap commit; only the steps that
need privileges differ:

=====================  ===========================================  ============================================
step                   system mode                                  rootless mode (here)
=====================  ===========================================  ============================================
clone                  mkdir upper, work                            the holder makes them, as the namespace's root
mount and set up       overlay + /proc, /sys, /dev on the host      :func:`holder.spawn`: in the holder's namespaces
run, enter             chroot, setuid, exec                         :func:`holder.exec_joined`: setns, fork, chroot
kill, unmount          /proc/*/root scan, umount deepest first      end: the holder retires (kills, detaches,
                                                                    removes, exits); promote: SIGKILL to it
remove clone, stage    remove_tree, rename                          the same calls, inside the namespace
is it up?              the mount table                              is the recorded holder alive?
=====================  ===========================================  ============================================

Every function takes a context: anything with ``settings``, ``store``,
``actor``, ``idmap``, ``progress``, ``lock(name, operation, exclusive=,
wait=)`` and ``journal(operation, **fields)`` (:class:`Context` here; the
engine's context in system mode has the same shape). The integration plan in
docs/design.md says which engine steps call which function.
"""

from __future__ import annotations

import os

from .. import fastjson, faults, generations, locks, process, procs, records
from ..actor import Actor, now_iso
from ..errors import BadInput, Conflict, NotFound, RoostError, SystemFailure
from ..fsutil import atomic_write, fsync_dir, sync_filesystem
from ..names import check_name
from ..records import Session
from ..settings import Settings
from ..store import Store, new_tx
from . import holder, userns
from .ids import IdMap

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, NoReturn

    from ..imageconf import ImageConfig
    from ..importers import Source

    Progress = Callable[[float | None, str], None]

BACKEND = "overlay"
IDMAP_FILE = "idmap.json"


def _no_progress(fraction: float | None, message: str) -> None:
    return None


class Context:
    """One user's rootless state: settings, paths, who acts, their id layout.

    Nothing is created until :meth:`ready`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        actor: Actor | None = None,
        idmap: IdMap | None = None,
        environ: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> None:
        if settings is None:
            from .config import load

            settings = load(environ=dict(environ) if environ is not None else None)
        self.settings = settings
        self.store = Store(settings)
        self.actor = actor if actor is not None else Actor.current()
        self._idmap = idmap
        self.progress: Progress = progress or _no_progress
        self._ready = False

    @property
    def idmap(self) -> IdMap:
        if self._idmap is None:
            from .ids import current

            self._idmap = current()
        return self._idmap

    def ready(self) -> None:
        """Create the state and runtime roots, and check the id layout against the recorded one."""
        if self._ready:
            return
        if os.geteuid() == 0:
            raise BadInput("rootless roost is for ordinary users; root uses the system mode")
        self.store.ensure()
        check_idmap(self.store.root, self.idmap)
        self._ready = True

    def lock(
        self, name: str, operation: str, *, exclusive: bool = True, wait: bool = True, straggler_grace: float = 0.0
    ) -> locks.Lock:
        lock = locks.Lock(self.store.lock_dir, name, self.actor, timeout=self.settings.lock_timeout)
        return lock.acquire(operation, exclusive=exclusive, wait=wait, straggler_grace=straggler_grace)

    def journal(self, operation: str, **fields: Any) -> None:
        from .. import journal

        try:
            journal.append(self.store.journal_path, self.actor, operation, log_to=self.settings.syslog, **fields)
        except OSError:
            pass  # the journal is history, not state


def check_idmap(state_root: str, idmap: IdMap) -> None:
    """Record the id layout on first use; refuse to work on a state root made with another one.

    Every file of every image is owned by ids of this layout: with another
    one (a changed /etc/subuid line), they would silently change owners.
    """
    path = os.path.join(state_root, IDMAP_FILE)
    try:
        with open(path, "rb") as f:
            recorded = IdMap.from_json(fastjson.loads(f.read(1 << 16).decode("utf-8", "replace")))
    except FileNotFoundError:
        atomic_write(path, fastjson.dumps(idmap.to_json()) + "\n", durable=True)
        return
    except ValueError:
        recorded = None
    if recorded is None:
        raise SystemFailure(f"{path} is unreadable: it records the ids the images of this state root use")
    if recorded != idmap:
        raise BadInput(
            f"the subordinate ids of {idmap.user} changed since {state_root} was made ({path}): its files "
            "would change owners; restore the old /etc/subuid and /etc/subgid lines"
        )


# --- images ------------------------------------------------------------------------------


def image_config(ctx: Any, image: str) -> ImageConfig:
    from ..imageconf import parse_image_config
    from ..yamlio import read_yaml

    path = ctx.store.image_yaml(image)
    try:
        data = read_yaml(path, ctx.store.cache_dir)
    except FileNotFoundError:
        if not os.path.isdir(ctx.store.image_dir(image)):
            raise NotFound(f"no image {image!r}") from None
        raise SystemFailure(f"image {image} has no image.yaml") from None
    config = parse_image_config(data, path)
    if config.backend != BACKEND:
        raise BadInput(f"image {image} uses the {config.backend} backend: rootless sessions need overlay")
    return config


def create_image(ctx: Any, name: str, source: Source, *, profile: str = "default", description: str = "") -> int:
    """A new overlay image from *source*, its files owned by the user's mapped ids; returns its size."""
    from ..generations import GenerationMeta
    from ..imageconf import parse_image_config
    from ..profiles import profile_path
    from ..yamlio import dump_yaml
    from . import content

    check_name(name, "image name")
    try:
        profile_path(profile, ctx.settings.profiles_dir)
    except NotFound as e:
        raise BadInput(str(e)) from None
    if len(description) > 4096 or "\x00" in description:
        raise BadInput("description is too long or holds a NUL")
    config = parse_image_config(
        {"backend": BACKEND, "profile": profile, "description": description, "root-users": [ctx.actor.user]},
        "image settings",
    )
    source.check()
    ctx.ready()
    store = ctx.store
    if os.path.isdir(store.image_dir(name)):
        raise Conflict(f"image {name} already exists")
    with ctx.lock(store.image_lock_name(name), "create"):
        if os.path.isdir(store.image_dir(name)):
            raise Conflict(f"image {name} already exists")
        tx = new_tx()
        tx_lock = ctx.lock(store.tx_lock_name(tx), f"create {name}")
        staging = os.path.join(store.staging_dir, tx)
        try:
            os.mkdir(staging, 0o755)
            gens = os.path.join(staging, "generations")
            os.mkdir(gens, 0o755)
            os.mkdir(os.path.join(gens, "1"), 0o700)
            tree = os.path.join(gens, "1", "layer")
            content.fill(source, tree, ctx.idmap, ctx.progress, tmpdir=staging)
            ctx.progress(None, "syncing")
            size = content.tree_size(tree, ctx.idmap)
            meta = GenerationMeta(
                generation=1,
                parent=None,
                created=now_iso(),
                author=ctx.actor.user,
                message=f"created from {source.describe()}",
                session=None,
                size=size,
                backend=BACKEND,
                stack=(1,),
                flattened=True,
            )
            atomic_write(os.path.join(gens, "1.yaml"), meta.to_yaml())
            header = "# roost image configuration (see roost(8), FILES). Edit freely; roost validates it on use.\n"
            atomic_write(os.path.join(staging, "image.yaml"), header + dump_yaml(config.to_yaml_dict()))
            os.symlink("generations/1", os.path.join(staging, "current"))
            sync_filesystem(staging)
            try:
                os.rename(staging, store.image_dir(name))
            except OSError as e:
                raise Conflict(f"image {name} already exists ({e.strerror})") from None
            fsync_dir(store.images_dir)
        except BaseException as e:
            content.discard(staging, ctx.idmap)
            ctx.journal("image create", image=name, result="failed", error=str(e))
            raise
        finally:
            tx_lock.release(remove=True)
    ctx.journal("image create", image=name, generation=1, backend=BACKEND, size=size, rootless=True)
    return size


def remove_image(ctx: Any, name: str) -> None:
    """Delete an image with no sessions: renamed into the trash, then removed inside the namespace."""
    from . import content

    image_config(ctx, name)
    ctx.ready()
    store = ctx.store
    with ctx.lock(store.image_lock_name(name), "remove"):
        found, _ = records.read_all(store.sessions_dir)
        users = [s.id for s in found if s.image == name]
        if users:
            raise Conflict(f"image {name} has sessions: {', '.join(users[:5])}")
        tx = new_tx()
        tx_lock = ctx.lock(store.tx_lock_name(tx), f"remove {name}")  # recover leaves the trash entry alone
        trash = os.path.join(store.trash_dir, tx)
        try:
            os.rename(store.image_dir(name), trash)
        except BaseException:
            tx_lock.release(remove=True)
            raise
    try:
        content.discard(trash, ctx.idmap)
    finally:
        tx_lock.release(remove=True)
    ctx.journal("image remove", image=name)


def export_image(
    ctx: Any, name: str, path: str, *, generation: int | None = None, force: bool = False
) -> tuple[int, int]:
    """Write a generation (default: current) as a tarball with the ids inside (sbuild's unshare format).

    The file is the user's. Returns (the generation written, the file's size).
    """
    from ..exports import compression_of
    from . import content

    image_config(ctx, name)
    compressor, _, _ = compression_of(path)
    dest = os.path.abspath(path)
    if not os.path.isdir(os.path.dirname(dest)):
        raise BadInput(f"{path}: no such directory {os.path.dirname(dest)}")
    if os.path.lexists(dest) and not force:
        raise Conflict(f"{path} already exists (use --force to replace it)")
    ctx.ready()
    store = ctx.store
    with ctx.lock(store.image_lock_name(name), f"export {name}", exclusive=False):
        number = generation if generation is not None else generations.current(store, name)
        meta = generations.read_meta(store, name, number)
        lowers = [os.path.join(store.generation_dir(name, n), "layer") for n in meta.stack]
        scratch = os.path.join(store.stage_dir, new_tx())
        size = content.write_tarball(dest, lowers, scratch, compressor, ctx.idmap)
    ctx.journal("image export", image=name, generation=number, file=dest, size=size)
    return number, size


# --- sessions: begin ----------------------------------------------------------------------


def state_of(session: Session) -> str:
    """What listings show: ``mounted`` while the holder lives, ``needs-recovery`` when it died."""
    if session.state == "active":
        return "mounted" if holder.alive(holder.of(session)) else "needs-recovery"
    return session.state


def _new_id(store: Store, image: str) -> str:
    for _ in range(100):
        sid = f"{image[:55]}-{os.urandom(4).hex()}"
        if not os.path.exists(store.session_record(sid)):
            return sid
    raise SystemFailure("cannot find a free session id")


def _live_writer(ctx: Any, image: str) -> locks.Lease | None:
    lease = locks.read_lease(ctx.store.writer_lease(image))
    if lease is None:
        return None
    try:
        owner = records.read(ctx.store.sessions_dir, lease.session)
    except NotFound:
        return None
    except RoostError:
        return lease
    return lease if owner.maintenance or owner.state == "promoting" else None


def begin(
    ctx: Any,
    image: str,
    *,
    name: str | None = None,
    maintenance: bool = False,
    auto: bool = False,
    alias: str | None = None,
) -> Session:
    """A new session of the current generation of *image*, mounted in a holder of its own."""
    from ..backends.overlay import OverlayBackend
    from ..profiles import load_profile

    config = image_config(ctx, image)
    if name is not None:
        check_name(name, "session name")
    ctx.ready()
    store = ctx.store
    profile = load_profile(config.profile, ctx.settings.profiles_dir, store.cache_dir)
    sid = name if name is not None else _new_id(store, image)
    a = ctx.actor
    try:
        slock = ctx.lock(store.session_lock_name(sid), "begin", wait=False)
    except Conflict:
        raise Conflict(f"session {sid} already exists") from None
    try:
        with ctx.lock(store.image_lock_name(image), f"begin {sid}", exclusive=maintenance):
            number = generations.current(store, image)
            stack = list(generations.read_meta(store, image, number).stack)
            session = Session(
                id=sid,
                image=image,
                generation=number,
                kind="maintenance" if maintenance else "ordinary",
                owner=a.user,
                uid=a.uid,
                created=now_iso(),
                state="beginning",
                backend=BACKEND,
                profile=profile.name,
                mountpoint=store.mountpoint(sid),
                clone=store.session_clone(sid),
                lowers=OverlayBackend().lowers(store.generations_dir(image), stack),
                auto=auto,
                creator_pid=a.pid,
                creator_start=procs.starttime(a.pid),
                dev=profile.dev,
                mounts=[m.to_json() for m in profile.mounts],
                copy_files=list(profile.copy_files),
                nss_databases=list(profile.nss_databases),
                env_keep=list(profile.env_keep),
                env_set=[list(kv) for kv in profile.env_set],
                access={"users": [a.user], "groups": [], "root_users": [a.user], "root_groups": []},
                personality=config.personality,
                command_prefix=list(config.command_prefix),
                backend_data={"rootless": True},
                alias=alias,
            )
            if maintenance:
                writer = _live_writer(ctx, image)
                if writer is not None:
                    raise Conflict(f"{image} is already being maintained by {writer.describe()}")
            try:
                records.write(store.sessions_dir, session, create=True)
            except FileExistsError:
                raise Conflict(f"session {sid} already exists") from None
            if maintenance:
                lease = locks.Lease(session=sid, user=a.user, operation="maintenance", since=session.created, pid=a.pid)
                locks.write_lease(store.writer_lease(image), lease)
        faults.crashpoint("begin", "recorded")
        try:
            _bring_up(ctx, session, create=True)
        except BaseException as e:
            try:
                _tear_down(ctx, session)
                _finish(ctx, session)
                slock.release(remove=True)
            except RoostError:
                pass  # left for recover: the record still says beginning
            ctx.journal("session begin", image=image, session=sid, generation=number, result="failed", error=str(e))
            raise
    finally:
        slock.release()
    ctx.journal("session begin", image=image, session=sid, generation=number, kind=session.kind, rootless=True)
    return session


def _bring_up(ctx: Any, session: Session, *, create: bool) -> None:
    """Start the session's holder (making the clone when *create*) and record it as active."""
    if create:
        os.mkdir(session.clone, 0o700)
        faults.crashpoint("begin", "cloned")
    _make_mountpoint(ctx, session)
    pending = holder.spawn(session, ctx.idmap, create=create)
    try:
        faults.crashpoint("begin", "mounted")  # set up, not recorded: the holder exits unconfirmed
        if pending.merged != session.nss_merged:
            session.nss_merged = pending.merged
        session.backend_data = {**session.backend_data, **holder.recorded(pending.ref)}
        session.state = "active"
        records.write(ctx.store.sessions_dir, session)
        faults.crashpoint("begin", "profiled")  # recorded, not confirmed: recover starts a new holder
    except BaseException:
        pending.abandon()
        raise
    pending.confirm()


def _tear_down(ctx: Any, session: Session, after: Callable[[], Any] | None = None) -> Any:
    """Kill everything in the session (its mounts go with it), then remove its clone (or call *after*).

    With a live holder that retires, the holder does it all and exits
    (:func:`holder.retire`); with one that does not, or with *after*, a child
    joined to its user namespace kills it and does the work; with none (it
    died, or never started) the mounts went with its namespaces already, and
    the work is done in a fresh one. Whatever a retiring holder left of the
    clone is removed the same way. Removes the mount point. Returns what
    *after* returns.
    """

    def remove_clone() -> None:
        from ..fsutil import remove_tree

        remove_tree(session.clone)

    work = after or remove_clone
    ref = holder.of(session)
    result = None
    try:
        if not holder.alive(ref):
            raise Conflict("no holder")
        assert ref is not None
        if after is None and ref.retires:
            holder.retire(ref)
            if os.path.lexists(session.clone):
                raise Conflict("the holder left the clone")
        else:
            result = holder.stop(ref, work)
    except Conflict:  # no holder, or it died meanwhile
        if after is not None or os.path.lexists(session.clone):
            result = userns.run_mapped(ctx.idmap, work)
    _remove_mountpoint(ctx, session.id, session.mountpoint)
    return result


def _make_mountpoint(ctx: Any, session: Session) -> None:
    """``<run>/mnt/<id>/root`` behind the session's gate, the user's own (0700).

    On the host nothing is ever mounted there: the session's mounts live in its holder's namespace.
    """
    gate = ctx.store.session_gate(session.id)
    if session.mountpoint != gate:
        os.makedirs(gate, mode=0o700, exist_ok=True)
    os.makedirs(session.mountpoint, mode=0o755, exist_ok=True)


def _remove_mountpoint(ctx: Any, sid: str, mountpoint: str) -> None:
    gate = ctx.store.session_gate(sid)
    for path in (mountpoint, gate) if mountpoint != gate else (gate,):
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass


def _release_writer(ctx: Any, session: Session) -> None:
    path = ctx.store.writer_lease(session.image)
    lease = locks.read_lease(path)
    if lease is None or lease.session != session.id or not os.path.isdir(ctx.store.image_dir(session.image)):
        return
    with ctx.lock(ctx.store.image_lock_name(session.image), f"release writer {session.id}"):
        lease = locks.read_lease(path)
        if lease is not None and lease.session == session.id:
            locks.clear_lease(path)


def _finish(ctx: Any, session: Session) -> None:
    _release_writer(ctx, session)
    records.remove(ctx.store.sessions_dir, session.id)


# --- sessions: end ----------------------------------------------------------------------------


def end(ctx: Any, sid: str) -> None:
    """Kill everything in the session and its holder, remove its clone, its mount point and its record."""
    session = read(ctx, sid)
    ctx.ready()
    slock = ctx.lock(ctx.store.session_lock_name(sid), "end")
    try:
        session = read(ctx, sid)
        _end_locked(ctx, session)
        slock.release(remove=True)
    finally:
        slock.release()
    ctx.journal("session end", image=session.image, session=sid, generation=session.generation)


def _end_locked(ctx: Any, session: Session) -> None:
    if session.state != "ending":
        session.state = "ending"
        records.write(ctx.store.sessions_dir, session)
    faults.crashpoint("end", "marked")
    _tear_down(ctx, session)
    faults.crashpoint("end", "removed")
    _finish(ctx, session)


def mark_failed(ctx: Any, sid: str, reason: str) -> bool:
    """Record that *sid* must not be promoted automatically (as system mode's); False if it already was marked."""
    reason = reason.replace("\x00", "")[:4096] or "failed"
    read(ctx, sid)
    ctx.ready()
    slock = ctx.lock(ctx.store.session_lock_name(sid), "mark failed")
    try:
        session = read(ctx, sid)
        if session.failed is not None:
            return False
        session.failed = reason
        records.write(ctx.store.sessions_dir, session)
    finally:
        slock.release()
    ctx.journal("session mark failed", image=session.image, session=sid, reason=reason)
    return True


def state_problems(ctx: Any) -> list[str]:
    """What is wrong in the user's state root, one line each (``roost doctor``): holders, not mounts, are checked.

    Changes nothing: an operation still running (its lock is held) is no problem.
    """
    store = ctx.store
    problems: list[str] = store.problems()
    if problems:
        return problems
    held = set(locks.kernel_flocks())

    def busy(lock_name: str) -> bool:
        try:
            return os.stat(os.path.join(store.lock_dir, lock_name + ".lock")).st_ino in held
        except FileNotFoundError:
            return False

    found, broken = records.read_all(store.sessions_dir)
    problems += [f"session {sid}: unreadable record (roost session recover {sid})" for sid in broken]
    for s in found:
        state = state_of(s)
        if state == "needs-recovery":
            problems.append(f"session {s.id}: its holder is gone (roost session recover {s.id})")
        elif state != "mounted" and not busy(store.session_lock_name(s.id)):
            problems.append(f"session {s.id}: interrupted while {state} (roost session recover {s.id})")
    for where in (store.staging_dir, store.trash_dir):
        for entry in _listdir(where):
            if not busy(store.tx_lock_name(entry)):
                problems.append(f"leftover {os.path.join(where, entry)} (roost session recover --all)")
    return problems


def read(ctx: Any, sid: str) -> Session:
    check_name(sid, "session id")
    session = records.read(ctx.store.sessions_dir, sid)
    if not session.backend_data.get("rootless"):
        raise BadInput(f"session {sid} is not a rootless session")
    return session


def list_sessions(ctx: Any) -> list[tuple[Session, str]]:
    found, _ = records.read_all(ctx.store.sessions_dir)
    return [(s, state_of(s)) for s in found]


def processes(session: Session) -> list[int]:
    """Host pids of the processes running in the session (not counting its holder)."""
    ref = holder.of(session)
    return holder.processes(ref) if ref is not None else []


# --- sessions: promote --------------------------------------------------------------------------


def promote(ctx: Any, sid: str, message: str = "") -> int:
    """The session's changes become the image's next generation (compare-and-swap), then the session ends."""
    if len(message) > 4096 or "\x00" in message:
        raise BadInput("the message is too long or holds a NUL")
    session = read(ctx, sid)
    config = image_config(ctx, session.image)
    ctx.ready()
    store = ctx.store
    image = session.image
    slock = ctx.lock(store.session_lock_name(sid), "promote")
    try:
        session = read(ctx, sid)
        if session.state != "active":
            raise Conflict(f"session {sid} is {session.state}, not active (roost session recover {sid})")
        if not holder.alive(holder.of(session)):
            _bring_up(ctx, session, create=False)  # mounted again, so the host's users can be taken out
        max_depth = config.overlay_max_depth or ctx.settings.overlay_max_depth
        with ctx.lock(store.image_lock_name(image), f"promote {sid}"):
            cur = generations.current(store, image)
            if cur != session.generation:
                raise Conflict(
                    f"session {sid} was cloned from generation {session.generation}, but {image} is now at "
                    f"generation {cur}: not a fast-forward, nothing promoted"
                )
            writer = _live_writer(ctx, image)
            temporary = False
            if session.maintenance:
                if writer is None or writer.session != sid:
                    raise Conflict(f"session {sid} no longer holds the writer lock of {image}")
            else:
                if writer is not None:
                    raise Conflict(f"{image} is being maintained by {writer.describe()}: only it may promote")
                lease = locks.Lease(
                    session=sid, user=ctx.actor.user, operation="promote", since=now_iso(), pid=ctx.actor.pid
                )
                locks.write_lease(store.writer_lease(image), lease)
                temporary = True
                faults.crashpoint("promote", "leased")  # a temporary lease, the session not yet marked
            base_stack = list(generations.read_meta(store, image, cur).stack)
            tx = new_tx()
            session.state = "promoting"
            session.promote = {
                "tx": tx,
                "base": cur,
                "flatten": len(base_stack) + 1 > max_depth,
                "temporary_lease": temporary,
                "message": message,
                "author": ctx.actor.user,
            }
            records.write(store.sessions_dir, session)
        faults.crashpoint("promote", "marked")
        staging = os.path.join(store.image_staging(image), tx)
        tx_lock = ctx.lock(store.tx_lock_name(tx), f"promote {sid}")  # recover leaves its staging alone
        try:
            os.makedirs(store.image_staging(image), mode=0o700, exist_ok=True)
            os.mkdir(staging, 0o700)
            _unmerge_host_users(session)
            size = int(_tear_down(ctx, session, _stager(session, staging, store.stage_dir, tx)))
            faults.crashpoint("promote", "staged")
        except BaseException:
            _undo_stage(ctx, session, staging)
            tx_lock.release(remove=True)
            raise
        try:
            number = _commit(ctx, session, staging, size, base_stack)
        finally:
            tx_lock.release(remove=True)
        _remove_clone(ctx, session)
        _finish(ctx, session)
        slock.release(remove=True)
    finally:
        slock.release()
    ctx.journal("session promote", image=image, session=sid, generation=number, base=session.generation)
    return number


def _commit(ctx: Any, session: Session, staging: str, size: int, base_stack: list[int]) -> int:
    """Under the image lock: compare and swap, then the staged layer becomes the next generation."""
    from ..generations import GenerationMeta

    store = ctx.store
    image = session.image
    info = session.promote or {}
    with ctx.lock(store.image_lock_name(image), f"promote {session.id}"):
        cur = generations.current(store, image)
        if cur != int(info["base"]):
            _undo_stage(ctx, session, staging)
            raise Conflict(f"{image} moved to generation {cur} during the promote of {session.id}: nothing promoted")
        number = generations.highest(store, image) + 1
        flattened = bool(info["flatten"])
        meta = GenerationMeta(
            generation=number,
            parent=cur,
            created=now_iso(),
            author=str(info.get("author") or ctx.actor.user),
            message=str(info.get("message") or ""),
            session=session.id,
            size=size,
            backend=BACKEND,
            stack=(number,) if flattened else (number, *base_stack),
            tx=str(info["tx"]),
            flattened=flattened,
        )
        generations.commit(store, image, meta, staging)
    return number


def _unmerge_host_users(session: Session) -> None:
    """The host's users and groups merged in at set-up never become part of a generation (core.setup.unmerge_nss)."""
    ref = holder.of(session)
    if session.nss_merged and ref is not None:
        from ..setup import unmerge_nss

        holder.call_inside(ref, lambda: unmerge_nss(session))


def _stager(session: Session, staging: str, stage_dir: str, tx: str) -> Callable[[], int]:
    """What runs inside the namespace once the session is down: the staged layer, and its size.

    A layer promote moves the upper directory into *staging*; a flattening
    one copies the merged view there and leaves the upper in place. Either
    way the work directory goes (a holder makes a new one), so a promote
    that cannot commit leaves a session that recover mounts again, changes
    and all.
    """
    from . import setup

    def stage() -> int:
        from ..fsutil import remove_tree, tree_size

        layer = os.path.join(staging, "layer")
        if session.promote and session.promote.get("flatten"):
            _materialize([setup.upper(session), *session.lowers], layer, os.path.join(stage_dir, tx))
        else:
            os.rename(setup.upper(session), layer)
        remove_tree(setup.work(session))
        size = tree_size(layer)
        sync_filesystem(staging)
        return size

    return stage


def _remove_clone(ctx: Any, session: Session) -> None:
    """After a commit: the clone directory is empty (a layer promote), else removed inside."""
    try:
        os.rmdir(session.clone)
    except FileNotFoundError:
        pass
    except OSError:
        from . import content

        content.discard(session.clone, ctx.idmap)


def _materialize(lowers: list[str], dest: str, scratch: str) -> None:
    """Inside the user namespace: copy the merged view of *lowers* (topmost first) to *dest*.

    The view is mounted in a mount namespace of this process's own.
    """
    from .. import programs, syscalls
    from .setup import OVERLAY_OPTIONS

    userns.unshare(userns.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_SLAVE)
    os.mkdir(scratch, 0o700)
    try:
        data = "lowerdir=" + ":".join(lowers) + "," + OVERLAY_OPTIONS
        syscalls.mount("overlay", scratch, "overlay", syscalls.MS_RDONLY, data)
        try:
            programs.copy_tree(scratch, dest)
        finally:
            syscalls.umount(scratch, syscalls.MNT_DETACH)
    finally:
        os.rmdir(scratch)


def _undo_stage(ctx: Any, session: Session, staging: str) -> None:
    """Put a staged upper back into the session's clone, drop the staging directory, make the session active.

    The session stays, with its changes, needing recover to be mounted again.
    """
    from . import content, setup

    layer = os.path.join(staging, "layer")
    upper = setup.upper(session)

    def put_back() -> None:
        if os.path.isdir(layer) and not os.path.exists(upper):
            os.rename(layer, upper)  # a layer promote moved it; a flattening one left the upper in place

    if os.path.lexists(staging):
        userns.run_mapped(ctx.idmap, put_back)
        content.discard(staging, ctx.idmap)
    info = session.promote or {}
    session.state = "active"
    session.promote = None
    records.write(ctx.store.sessions_dir, session)
    if info.get("temporary_lease"):
        _release_writer(ctx, session)


# --- sessions: running commands ----------------------------------------------------------------


def launch(
    ctx: Any,
    sid: str,
    argv: Sequence[str] | None,
    *,
    user: str | None = None,
    directory: str | None = None,
    preserve_env: bool = False,
    environ: Mapping[str, str] | None = None,
    caller_cwd: str | None = None,
) -> tuple[holder.HolderRef, process.Launch]:
    """The holder to join and the command to run (a login shell when *argv* is None).

    A session whose holder died is recovered first.
    """
    session = read(ctx, sid)
    ref = holder.of(session)
    if session.state != "active" or not holder.alive(ref):
        recover(ctx, sid)
        session = read(ctx, sid)
        ref = holder.of(session)
        if session.state != "active" or ref is None or not holder.alive(ref):
            raise Conflict(f"session {sid} is {session.state} and could not be recovered")
    assert ref is not None
    target = process.resolve_user(user, ctx.actor.uid if user is None else 0)
    if ctx.idmap.host_uid(target.pw_uid) is None or ctx.idmap.host_gid(target.pw_gid) is None:
        raise BadInput(
            f"user {target.pw_name} ({target.pw_uid}:{target.pw_gid}) has no ids in your user namespace "
            f"(it maps 0-{_highest(ctx.idmap)})"
        )
    spec = process.prepare(
        session.to_json(),
        argv,
        user=target,
        directory=directory,
        preserve_env=preserve_env,
        environ=environ,
        caller_cwd=caller_cwd,
    )
    return ref, spec


def _highest(idmap: IdMap) -> int:
    return max(e.inside + e.count - 1 for e in idmap.uids)


def exec_in(ctx: Any, sid: str, argv: Sequence[str] | None, **options: Any) -> NoReturn:
    """``session run``: the command runs in the session, this process ends as it ended. Never returns."""
    ref, spec = launch(ctx, sid, argv, **options)
    lock = ctx.lock(ctx.store.session_lock_name(sid), "run", exclusive=False)  # end waits until it has exec'd
    if not holder.alive(ref):
        lock.release()
        raise Conflict(f"session {sid} ended or lost its holder meanwhile")
    holder.exec_joined(ref, spec, lock.release)


def run_in(
    ctx: Any,
    sid: str,
    argv: Sequence[str] | None,
    *,
    stdin: int = 0,
    stdout: int = 1,
    stderr: int = 2,
    forward_signals: bool = True,
    **options: Any,
) -> int:
    """Run *argv* (or a login shell) in session *sid* in a child; its exit code as a shell reports it."""
    ref, spec = launch(ctx, sid, argv, **options)
    pid = holder.spawn_command(ref, spec, stdin=stdin, stdout=stdout, stderr=stderr)
    return _wait(pid, forward_signals)


def _wait(pid: int, forward: bool) -> int:
    if forward:
        return process.exit_code(process.wait_relaying(pid))
    _, status = os.waitpid(pid, 0)
    return process.exit_code(status)


def run_auto(ctx: Any, image: str, argv: Sequence[str], **options: Any) -> int:
    """An automatic session: begin, run *argv*, end, whatever the command did."""
    import _signal  # type: ignore[import-not-found]

    if not argv:
        raise BadInput("no command given (put it after --)")
    relayed = process.relayed_signals()
    _signal.pthread_sigmask(_signal.SIG_BLOCK, relayed)
    try:
        session = begin(ctx, image, auto=True)
        try:
            ref, spec = launch(ctx, session.id, argv, **options)
            pid = holder.spawn_command(ref, spec)
            return process.exit_code(process.wait_relaying(pid, unblock=True))
        finally:
            end(ctx, session.id)
    finally:
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, relayed)


# --- recover ----------------------------------------------------------------------------------


def recover(ctx: Any, sid: str | None = None) -> list[str]:
    """Bring sessions back after their holders died (a reboot), finish or undo interrupted operations.

    Returns what was done, one line each. Sessions whose lock is held (an
    operation runs on them) are left alone.
    """
    ctx.ready()
    report: list[str] = []
    if sid is not None:
        read(ctx, sid)
        ids = [sid]
    else:
        ids = records.ids(ctx.store.sessions_dir)
    for one in ids:
        try:
            slock = ctx.lock(ctx.store.session_lock_name(one), "recover", wait=sid is not None)
        except Conflict:
            continue
        try:
            try:
                session = read(ctx, one)
            except (NotFound, BadInput):
                continue
            except SystemFailure:
                _broken_record(ctx, one, report)
                slock.release(remove=True)
                continue
            if _recover_locked(ctx, session, report):
                slock.release(remove=True)
        finally:
            slock.release()
    if sid is None:
        _sweep(ctx, report)
    if report:
        ctx.journal("session recover", detail="; ".join(report)[:4000])
    return report


def _tx_free(ctx: Any, tx: str) -> bool:
    try:
        lock = ctx.lock(ctx.store.tx_lock_name(tx), "recover", wait=False, straggler_grace=locks.TX_STRAGGLER_GRACE)
        lock.release(remove=True)
    except Conflict:
        return False
    return True


def _sweep(ctx: Any, report: list[str]) -> None:
    """Leftovers of killed operations: stale writer leases, staging and trash entries nobody works on."""
    from . import content

    store = ctx.store
    found, _ = records.read_all(store.sessions_dir)
    promoting = {str((s.promote or {}).get("tx")) for s in found if s.state == "promoting"}
    for image in store.image_names():
        with ctx.lock(store.image_lock_name(image), "recover"):
            lease = locks.read_lease(store.writer_lease(image))
            if lease is not None and lease.session != "?" and _live_writer(ctx, image) is None:
                locks.clear_lease(store.writer_lease(image))
                report.append(f"cleared the stale writer lease of {image} ({lease.describe()})")
        for entry in _listdir(store.image_staging(image)):
            if entry not in promoting and _tx_free(ctx, entry):
                content.discard(os.path.join(store.image_staging(image), entry), ctx.idmap)
                report.append(f"removed the leftover staging directory {entry} of {image}")
    for where in (store.staging_dir, store.trash_dir):
        for entry in _listdir(where):
            if _tx_free(ctx, entry):
                content.discard(os.path.join(where, entry), ctx.idmap)
                report.append(f"removed the leftover {os.path.join(where, entry)}")


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _broken_record(ctx: Any, sid: str, report: list[str]) -> None:
    """A record that cannot be read: a begin killed while writing it, before any holder. Remove what it names."""
    from . import content

    store = ctx.store
    content.discard(store.session_clone(sid), ctx.idmap)
    _remove_mountpoint(ctx, sid, store.mountpoint(sid))
    records.remove(store.sessions_dir, sid)
    report.append(f"session {sid}: removed an unreadable record and its leftovers")


def _recover_locked(ctx: Any, session: Session, report: list[str]) -> bool:
    """Recover one session whose lock we hold; True if it is gone afterwards."""
    if session.state in ("beginning", "ending"):
        _tear_down(ctx, session)
        _finish(ctx, session)
        report.append(f"removed session {session.id} (interrupted while {session.state})")
        return True
    if session.state == "promoting":
        return _recover_promote(ctx, session, report)
    if session.auto and not procs.alive(session.creator_pid, session.creator_start):
        _end_locked(ctx, session)
        report.append(f"ended automatic session {session.id} (its creator is gone)")
        return True
    if holder.alive(holder.of(session)):
        return False
    _bring_up(ctx, session, create=False)
    ref = holder.of(session)
    report.append(f"remounted session {session.id} (holder {ref.pid if ref else '?'})")
    return False


def _recover_promote(ctx: Any, session: Session, report: list[str]) -> bool:
    store = ctx.store
    info = session.promote or {}
    tx = str(info.get("tx"))
    base = int(info.get("base") or 0)
    image = session.image
    staging = os.path.join(store.image_staging(image), tx)
    if not _tx_free(ctx, tx):  # the promote still runs (it holds its transaction's lock)
        return False
    committed = None
    for n in generations.complete(store, image) + sorted(generations.scan(store, image)[2]):
        try:
            if generations.read_meta(store, image, n).tx == tx:
                committed = n
        except RoostError:
            continue
    if committed is None:
        # Staging starts once the holder is dead: a live holder means nothing was staged, and the
        # session (with whatever runs in it) simply goes on.
        up = holder.alive(holder.of(session))
        _undo_stage(ctx, session, staging)
        if not up:
            _bring_up(ctx, session, create=False)
        report.append(f"undid the interrupted promote of session {session.id}; it keeps its changes")
        return False
    with ctx.lock(store.image_lock_name(image), f"recover promote {session.id}"):
        gen_dir = store.generation_dir(image, committed)
        if not os.path.isdir(gen_dir) and os.path.isdir(staging):
            os.rename(staging, gen_dir)
        if generations.current(store, image) == base:
            generations.switch(store, image, committed)
    _tear_down(ctx, session)
    _finish(ctx, session)
    report.append(f"finished the promote of session {session.id} (generation {committed})")
    return True
