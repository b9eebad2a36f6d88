"""Session operations: begin, end, promote, list, info, and running commands inside."""

from __future__ import annotations

import os
import sys

from . import (
    backends,
    faults,
    generations,
    images,
    isolation,
    leases,
    locks,
    mounts,
    policy,
    process,
    procs,
    records,
    views,
)
from .actor import now_iso
from .errors import BadInput, Conflict, RoostError, SystemFailure
from .generations import GenerationMeta
from .names import check_object_name
from .profiles import Profile, load_profile
from .records import Session
from .setup import setup, unmerge_nss
from .store import new_tx
from .views import SessionInfo

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Mapping, Sequence

    from .context import Context
    from .imageconf import ImageConfig


# --- helpers ---------------------------------------------------------------------


def session_target(session: Session) -> policy.SessionTarget:
    """The session as the policy sees it: its owner and the access lists it was begun with."""
    return policy.SessionTarget(session.id, session.image, session.uid, session.access)


def _new_id(ctx: Context, image: str) -> str:
    for _ in range(100):
        sid = f"{image[:55]}-{os.urandom(4).hex()}"
        if not os.path.exists(ctx.store.session_record(sid)):
            return sid
    raise SystemFailure("cannot find a free session id")


def _check_prefix(words: Sequence[str]) -> list[str]:
    """A session's own command prefix (schroot's ``command-prefix``): at most 100 plain words."""
    prefix = list(words)
    if len(prefix) > 100 or not all(isinstance(w, str) and w and len(w) <= 4096 and "\x00" not in w for w in prefix):
        raise BadInput("a command prefix is at most 100 non-empty words without NUL")
    return prefix


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
    dataset = session.backend_data.get("dataset")
    if dataset is not None:
        parent = ctx.settings.zfs_dataset
        if not parent or not isinstance(dataset, str) or not dataset.startswith(f"{parent}/session/"):
            raise SystemFailure(f"{where}: the record names a dataset outside roost's own; refusing it")
    return session


def _read(ctx: Context, sid: str) -> Session:
    check_object_name(sid, "session id")
    ctx.store.check_trusted()
    return check_record(ctx, records.read(ctx.store.sessions_dir, sid))


def exists(ctx: Context, sid: str) -> bool:
    """Whether a record named *sid* exists (the name is taken)."""
    return os.path.lexists(ctx.store.session_record(sid))


def read(ctx: Context, sid: str) -> Session:
    """Session *sid*'s record, checked (:func:`check_record`); :class:`NotFound` if there is none."""
    return _read(ctx, sid)


def read_all(ctx: Context) -> tuple[list[Session], list[str]]:
    """Every readable, well-formed record, and the ids of those that are not."""
    ctx.store.check_trusted()
    found, broken = records.read_all(ctx.store.sessions_dir)
    good = []
    for session in found:
        try:
            good.append(check_record(ctx, session))
        except RoostError:
            broken.append(session.id)
    return good, broken


def _write(ctx: Context, session: Session) -> None:
    records.write(ctx.store.sessions_dir, session)


def stack_of(ctx: Context, image: str, number: int) -> list[int]:
    return list(generations.read_meta(ctx.store, image, number).stack)


# --- begin -----------------------------------------------------------------------


def begin(
    ctx: Context,
    image: str,
    *,
    name: str | None,
    maintenance: bool,
    auto: bool,
    alias: str | None = None,
    network: str | None = None,
    limits: Mapping[str, int | float | str] | None = None,
    command_prefix: Sequence[str] | None = None,
) -> Session:
    ctx.require_privileged("session begin")
    config = images.require(ctx, image)
    ctx.authorize(policy.SESSION_MAINTAIN if maintenance else policy.SESSION_BEGIN, images.target(image, config))
    if name is not None:
        check_object_name(name, "session name")
    if alias == image:
        alias = None
    if alias is not None and alias not in config.aliases:
        raise BadInput(f"{alias!r} is not an alias of image {image}")
    prefix = list(config.command_prefix) if command_prefix is None else _check_prefix(command_prefix)
    profile: Profile = load_profile(config.profile, ctx.settings.profiles_dir, ctx.store.cache_dir)
    a = ctx.actor
    net, session_limits = isolation.resolve(
        config, profile, maintenance=maintenance, network=network, limit_options=limits
    )
    if network is not None or limits is not None:
        _check_isolation(ctx, image, config, profile, maintenance, net, session_limits)
    ctx.ready()
    quota = None if ctx.policy.is_admin(a) else _quota(ctx)
    backend = backends.get(config.backend)
    sid = name if name is not None else _new_id(ctx, image)
    store = ctx.store
    kind = "maintenance" if maintenance else "ordinary"
    try:
        slock = ctx.session_lock(sid, "begin", wait=False)
    except Conflict:
        if quota is not None:
            quota.release()
        raise Conflict(f"session {sid} already exists") from None
    try:
        ilock = ctx.image_lock(image, f"begin {sid}", exclusive=maintenance)
        try:
            number = generations.current(store, image)
            stack = stack_of(ctx, image, number)
            session = Session(
                id=sid,
                image=image,
                generation=number,
                kind=kind,
                owner=a.user,
                uid=a.uid,
                created=now_iso(),
                state="beginning",
                backend=backend.name,
                profile=profile.name,
                mountpoint=store.mountpoint(sid),
                clone=store.session_clone(sid),
                lowers=backend.lowers(store.generations_dir(image), stack),
                auto=auto,
                creator_pid=a.pid,
                creator_start=procs.starttime(a.pid),
                dev=profile.dev,
                mounts=[m.to_json() for m in profile.mounts],
                copy_files=list(profile.copy_files),
                nss_databases=list(profile.nss_databases),
                env_keep=list(profile.env_keep),
                env_set=[list(kv) for kv in profile.env_set],
                access=views.access_lists(config),
                personality=config.personality,
                command_prefix=prefix,
                alias=alias,
                network=net,
                limits=session_limits,
                architecture=config.architecture,
            )
            isolation.plan(ctx, session)
            if maintenance:
                holder = leases.live_writer(ctx, image)
                if holder is not None:
                    raise Conflict(f"{image} is already being maintained by {holder.describe()}")
            backend.prepare(session)
            try:
                records.write(store.sessions_dir, session, create=True)
            except FileExistsError:
                raise Conflict(f"session {sid} already exists") from None
            finally:
                if quota is not None:
                    quota.release()  # the record counts from now on
            if maintenance:
                lease = locks.Lease(session=sid, user=a.user, operation="maintenance", since=session.created, pid=a.pid)
                locks.write_lease(store.writer_lease(image), lease)
        finally:
            ilock.release()
        faults.crashpoint("begin", "recorded")
        try:
            _bring_up(ctx, session, create=True)
            session.state = "active"
            _write(ctx, session)
        except BaseException as e:
            try:
                _tear_down(ctx, session, force=True, quiet=True)
                _finish(ctx, session)
                slock.release(remove=True)
            except RoostError:
                pass  # left for recover, which finds the record still "beginning"
            ctx.journal("session begin", image=image, session=sid, generation=number, result="failed", error=str(e))
            raise
    finally:
        slock.release()
    ctx.journal("session begin", image=image, session=sid, generation=number, kind=kind)
    return session


#: Networks from the least to the most isolated.
_STRICTNESS = {"host": 0, "loopback": 1, "none": 2}


def _check_isolation(
    ctx: Context,
    image: str,
    config: ImageConfig,
    profile: Profile,
    maintenance: bool,
    network: str,
    limits: Mapping[str, int | float] | None,
) -> None:
    """A session's own --network and --limit may only tighten what the image and profile say.

    Loosening (more network, higher limits, none at all) is for the image's
    root-users, who may run anything as root in its sessions anyway.
    """
    default_net, default_limits = isolation.resolve(
        config, profile, maintenance=maintenance, network=None, limit_options=None
    )
    looser = _STRICTNESS.get(network, 0) < _STRICTNESS.get(default_net, 0)
    if default_limits is not None:
        for key, value in default_limits.items():
            mine = (limits or {}).get(key)
            lower_is_stricter = True  # memory, swap, pids, cpu: a smaller number is a tighter limit
            if mine is None or (lower_is_stricter and mine > value):
                looser = True
    if looser:
        ctx.authorize(policy.SESSION_LOOSEN, images.target(image, config))


def _quota(ctx: Context) -> locks.Lock:
    """Refuse a begin past ``max-sessions-per-user``; else the user's lock, held until the new record exists.

    Every session holds mounts (a dozen per session), so one user's sessions
    could fill the host's mount table; administrators are not counted.
    """
    a = ctx.actor
    lock = ctx.lock(f"user.{a.uid}", "begin")
    try:
        limit = ctx.settings.max_sessions_per_user
        found, _ = records.read_all(ctx.store.sessions_dir)
        mine = sum(1 for s in found if s.uid == a.uid)
        if mine >= limit:
            raise Conflict(
                f"{a.user} already has {mine} sessions (max-sessions-per-user: {limit} in roost.yaml): end some first"
            )
    except BaseException:
        lock.release()
        raise
    return lock


def _bring_up(ctx: Context, session: Session, *, create: bool) -> None:
    """Clone (when *create*), mount and set a session up; the caller tears down on failure."""
    backend = backends.get(session.backend)
    if create:
        backend.create_clone(session)
        faults.crashpoint("begin", "cloned")
    _make_mountpoint(ctx, session)
    backend.mount(session)
    faults.crashpoint("begin", "mounted")
    isolation.start(session)
    merged = setup(session)
    if merged != session.nss_merged:
        session.nss_merged = merged
    faults.crashpoint("begin", "profiled")


def _tear_down(ctx: Context, session: Session, *, force: bool, quiet: bool = False, keep_clone: bool = False) -> None:
    """Kill, unmount (deepest first), remove the clone and the mount point.

    Tolerates every half-made state, so begin's failure path, end and
    recover all share it. With *keep_clone* the clone stays (promote moves it).
    """
    procs.kill_in_root(session.mountpoint, ctx.settings.end_grace)
    isolation.kill(session)  # what left the session's root but not its cgroup
    faults.crashpoint("end", "killed")
    mounts.unmount_tree(session.mountpoint, force=force)
    isolation.remove(session)
    faults.crashpoint("end", "unmounted")
    if not keep_clone:
        backend = backends.get(session.backend)
        if os.path.lexists(session.clone):
            backend.remove_clone(session)
    gate = ctx.store.session_gate(session.id)
    for path in (session.mountpoint, gate) if session.mountpoint != gate else (gate,):
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            if not quiet:
                raise SystemFailure(f"cannot remove {path}: {e.strerror}") from None
    faults.crashpoint("end", "removed")


def _make_mountpoint(ctx: Context, session: Session) -> None:
    """``<run>/mnt/<id>/root``, behind a gate only the session's owner may pass (docs/security.md)."""
    from .fsutil import ensure_dir, grant_traverse

    gate = ctx.store.session_gate(session.id)
    if session.mountpoint == gate:  # a session begun before gates: mounted at the gate's place
        ensure_dir(gate, 0o755)
        return
    ensure_dir(gate, 0o700, exact=True)
    if session.uid != 0:
        grant_traverse(gate, session.uid)
    ensure_dir(session.mountpoint, 0o755)


def _finish(ctx: Context, session: Session) -> None:
    """The last steps of every ending: the writer lease, the record, the lock file."""
    leases.release(ctx, session.image, session.id)
    faults.crashpoint("end", "unleased")
    records.remove(ctx.store.sessions_dir, session.id)


# --- end -------------------------------------------------------------------------


def end(ctx: Context, sid: str, *, force: bool) -> None:
    ctx.require_privileged("session end")
    session = _read(ctx, sid)
    ctx.authorize(policy.SESSION_END, session_target(session))
    ctx.ready()
    slock = ctx.session_lock(sid, "end")
    try:
        session = _read(ctx, sid)  # it may have changed while we waited
        end_locked(ctx, session, force=force)
        slock.release(remove=True)
    finally:
        slock.release()
    ctx.journal("session end", image=session.image, session=sid, generation=session.generation, forced=force or None)


def end_locked(ctx: Context, session: Session, *, force: bool) -> None:
    """End *session*; the caller holds its lock."""
    if session.state != "ending":
        session.state = "ending"
        _write(ctx, session)
    faults.crashpoint("end", "marked")
    _tear_down(ctx, session, force=force)
    _finish(ctx, session)


# --- failure mark ----------------------------------------------------------------


def mark_failed(ctx: Context, sid: str, reason: str) -> bool:
    """Record that *sid* must not be promoted automatically; False if it already was marked.

    Front doors that promote on success (the schroot front door's ``source:``
    sessions) mark a session when a command in it fails; the first reason stays.
    """
    ctx.require_privileged("session mark")
    reason = reason.replace("\x00", "")[:4096] or "failed"
    session = _read(ctx, sid)
    ctx.authorize(policy.SESSION_MARK, session_target(session))
    ctx.ready()
    slock = ctx.session_lock(sid, "mark failed")
    try:
        session = _read(ctx, sid)
        if session.failed is not None:
            return False
        session.failed = reason
        _write(ctx, session)
    finally:
        slock.release()
    ctx.journal("session mark failed", image=session.image, session=sid, reason=reason)
    return True


# --- promote ---------------------------------------------------------------------


def promote(ctx: Context, sid: str, message: str) -> int:
    ctx.require_privileged("session promote")
    if len(message) > 4096 or "\x00" in message:
        raise BadInput("the message is too long or holds a NUL")
    session = _read(ctx, sid)
    config = images.require(ctx, session.image)
    # Promote writes into the image: decided against the image as it is now, not as it was at begin.
    ctx.authorize(policy.SESSION_PROMOTE, images.target(session.image, config))
    ctx.authorize(policy.SESSION_VIEW, session_target(session))
    ctx.ready()
    store = ctx.store
    image = session.image
    slock = ctx.session_lock(sid, "promote")
    try:
        session = _read(ctx, sid)
        if session.state != "active":
            raise Conflict(f"session {sid} is {session.state}, not active (roost session recover {sid})")
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
            tx = new_tx()
            session.state = "promoting"
            session.promote = {
                "tx": tx,
                "base": cur,
                "flatten": flatten,
                "temporary_lease": temporary,
                "message": message,
                "author": ctx.actor.user,
            }
            _write(ctx, session)
        faults.crashpoint("promote", "marked")
        try:
            procs.kill_in_root(session.mountpoint, ctx.settings.end_grace)
            unmerge_nss(session)  # the host's users are never baked into a generation
            mounts.unmount_tree(session.mountpoint)
        except RoostError:
            _abandon_promote(ctx, session)
            raise
        faults.crashpoint("promote", "unmounted")
        number = complete_promote(ctx, session)
        slock.release(remove=True)
    finally:
        slock.release()
    ctx.journal("session promote", image=image, session=sid, generation=number, base=session.generation)
    if config.publish is not None:  # image.yaml asks for the new generation to be published
        from . import publish

        publish.after_promote(ctx, image, number)
    return number


def _abandon_promote(ctx: Context, session: Session) -> None:
    """Put a session whose promote could not start back to active (it stays mounted or recoverable)."""
    info = session.promote or {}
    session.state = "active"
    session.promote = None
    _write(ctx, session)
    if info.get("temporary_lease"):
        leases.release(ctx, session.image, session.id)


def complete_promote(ctx: Context, session: Session) -> int:
    """Stage, commit and switch; then end the session. The session is unmounted and locked.

    Also the roll-forward path of recover: when the transaction already
    committed its generation, only the missing steps are done.
    """
    store = ctx.store
    image = session.image
    info = session.promote or {}
    tx = str(info["tx"])
    base = int(info["base"])
    backend = backends.get(session.backend)
    staging = os.path.join(store.image_staging(image), tx)
    number = _generation_of_tx(ctx, image, tx)
    if number is None:
        tx_lock = ctx.lock(store.tx_lock_name(tx), f"promote {session.id}")
        try:
            number = _stage_and_commit(ctx, session, backend, staging)
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
            if generations.current(store, image) == base:
                generations.switch(store, image, number)
    _tear_down(ctx, session, force=True)
    _finish(ctx, session)
    faults.crashpoint("promote", "ended")
    return number


def _stage_and_commit(ctx: Context, session: Session, backend: backends.Backend, staging: str) -> int:
    """Write the new generation into *staging*, then commit and switch under the image lock."""
    store = ctx.store
    image = session.image
    info = session.promote or {}
    tx = str(info["tx"])
    base = int(info["base"])
    os.makedirs(store.image_staging(image), mode=0o700, exist_ok=True)
    if not os.path.isdir(staging):
        os.mkdir(staging, 0o700)
    scratch = os.path.join(store.stage_dir, tx)
    os.makedirs(scratch, mode=0o700, exist_ok=True)
    try:
        flattened = backend.stage(session, staging, flatten=bool(info.get("flatten")), scratch=scratch)
    except BaseException:
        backend.unstage(session, staging)
        backends.discard(staging)
        _abandon_promote(ctx, session)
        raise
    finally:
        os.rmdir(scratch)
    faults.crashpoint("promote", "staged")
    size = backend.staged_size(session, staging)
    backend.sync(staging)
    faults.crashpoint("promote", "synced")
    with ctx.image_lock(image, f"promote {session.id}"):
        cur = generations.current(store, image)
        if cur != base:
            backend.unstage(session, staging)
            backends.discard(staging)
            _abandon_promote(ctx, session)
            raise Conflict(f"{image} moved to generation {cur} during the promote of {session.id}: nothing promoted")
        number = generations.highest(store, image) + 1
        stack = (number,) if flattened else (number, *stack_of(ctx, image, base))
        meta = GenerationMeta(
            generation=number,
            parent=base,
            created=now_iso(),
            author=str(info.get("author") or ctx.actor.user),
            message=str(info.get("message") or ""),
            session=session.id,
            size=size,
            backend=backend.name,
            stack=stack,
            tx=tx,
            flattened=flattened,
        )
        generations.write_meta(store, image, meta)
        faults.crashpoint("promote", "committed")
        os.rename(staging, store.generation_dir(image, number))
        faults.crashpoint("promote", "renamed")
        generations.switch(store, image, number)
        faults.crashpoint("promote", "switched")
    return number


def _generation_of_tx(ctx: Context, image: str, tx: str) -> int | None:
    """The generation a promote transaction committed, if it got that far."""
    _, _, metas_only = generations.scan(ctx.store, image)
    candidates = generations.complete(ctx.store, image)[-8:] + sorted(metas_only)
    for n in candidates:
        try:
            if generations.read_meta(ctx.store, image, n).tx == tx:
                return n
        except RoostError:
            continue
    return None


# --- listing ---------------------------------------------------------------------


def display_state(session: Session, table: list[mounts.Mount], held: set[int] | None, lock_dir: str) -> str:
    """:func:`core.views.session_state` against a mount table."""
    return views.session_state(session, {m.target for m in table}, held, lock_dir)


def list_sessions(ctx: Context, image: str | None) -> list[SessionInfo]:
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
    session = _read(ctx, sid)
    ctx.authorize(policy.SESSION_VIEW, session_target(session))
    state = display_state(session, mounts.mounts(), set(locks.kernel_flocks()), ctx.store.lock_dir)
    if not details:
        return SessionInfo(session, state)
    count = procs.count_in_roots([session.mountpoint])[session.mountpoint.rstrip("/")]
    changes = backends.get(session.backend).changes(session)
    return SessionInfo(session, state, processes=count, changes=changes, usage=isolation.usage(session))


# --- running commands ------------------------------------------------------------


def launch(
    ctx: Context,
    sid: str,
    argv: Sequence[str] | None,
    *,
    user: str | None,
    directory: str | None,
    preserve_env: bool,
    environ: Mapping[str, str] | None,
    caller_cwd: str | None,
    extra_env: Mapping[str, str] | None = None,
) -> process.Launch:
    """Resolve a command (or a login shell when *argv* is None) for *sid*, recovering it if needed."""
    ctx.require_privileged("session run")
    session = _read(ctx, sid)
    target = process.resolve_user(user, ctx.actor.uid if user is None else 0)
    action = policy.SESSION_ENTER if argv is None else policy.SESSION_RUN
    ctx.authorize(action, session_target(session), as_uid=target.pw_uid)
    state = display_state(session, mounts.mounts(), None, ctx.store.lock_dir)
    if state != "mounted" or not isolation.intact(session):
        from .recover import recover

        recover(ctx, sid)
        session = _read(ctx, sid)
        if display_state(session, mounts.mounts(), None, ctx.store.lock_dir) != "mounted":
            raise Conflict(f"session {sid} is {session.state} and could not be recovered")
    return process.prepare(
        session.to_json(),
        argv,
        user=target,
        directory=directory,
        preserve_env=preserve_env,
        environ=environ,
        caller_cwd=caller_cwd,
        extra_env=extra_env,
    )


def hold_for_run(ctx: Context, sid: str, launch: process.Launch) -> locks.Lock:
    """The run protocol's first half: session *sid*'s lock, shared, once it is mounted and *launch* is allowed.

    Every way a command starts in a session (``session run``, ``run``, plans,
    the schroot door, the console) holds this until the command has exec'd,
    so ``end`` and ``promote`` cannot unmount underneath a starting command.
    The record is read again under the lock: *launch* must still be for this
    session's root, and the policy is asked again for the user it runs as.
    """
    lock = ctx.session_lock(sid, "run", exclusive=False)
    try:
        session = _read(ctx, sid)
        if display_state(session, mounts.mounts(session.mountpoint), None, ctx.store.lock_dir) != "mounted":
            raise Conflict(f"session {sid} ended or changed while the command was starting")
        if launch.root != session.mountpoint:
            raise Conflict(f"session {sid} changed while the command was starting")
        ctx.authorize(policy.SESSION_RUN, session_target(session), as_uid=launch.uid)
    except BaseException:
        lock.release()
        raise
    return lock


def start(
    ctx: Context,
    sid: str,
    launch: process.Launch,
    *,
    stdin: int = 0,
    stdout: int = 1,
    stderr: int = 2,
    foreground: int | None = None,
) -> int:
    """Start *launch* in session *sid* (see :func:`hold_for_run`); returns the child's pid once it exec'd."""
    lock = hold_for_run(ctx, sid, launch)
    try:
        return process.start(launch, stdin=stdin, stdout=stdout, stderr=stderr, foreground=foreground)
    finally:
        lock.release()


def exec_in(ctx: Context, sid: str, launch: process.Launch) -> None:
    """Replace this process with *launch* in session *sid*; the shared lock is close-on-exec. Does not return."""
    hold_for_run(ctx, sid, launch)
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    process.exec_launch(launch)


def _wait(pid: int, forward: bool, *, unblock: bool = False) -> int:
    """Wait for *pid*; relay signals to it (see :func:`process.wait_relaying`) when *forward*."""
    if not forward or _not_main_thread():
        _, status = os.waitpid(pid, 0)
        return process.exit_code(status)
    return process.exit_code(process.wait_relaying(pid, unblock=unblock))


def _not_main_thread() -> bool:
    threading = sys.modules.get("threading")  # never imported: no other thread was started with it
    return threading is not None and threading.current_thread() is not threading.main_thread()


def run_in(
    ctx: Context,
    sid: str,
    argv: Sequence[str],
    *,
    user: str | None = None,
    directory: str | None = None,
    preserve_env: bool = False,
    environ: Mapping[str, str] | None = None,
    caller_cwd: str | None = None,
    stdin: int = 0,
    stdout: int = 1,
    stderr: int = 2,
    forward_signals: bool = True,
    extra_env: Mapping[str, str] | None = None,
) -> int:
    """Run *argv* in session *sid* in a child process and return its exit code."""
    spec = launch(
        ctx,
        sid,
        argv,
        user=user,
        directory=directory,
        preserve_env=preserve_env,
        environ=environ,
        caller_cwd=caller_cwd,
        extra_env=extra_env,
    )
    pid = start(ctx, sid, spec, stdin=stdin, stdout=stdout, stderr=stderr)
    return _wait(pid, forward_signals)


def run_auto(
    ctx: Context,
    image: str,
    argv: Sequence[str],
    *,
    user: str | None = None,
    directory: str | None = None,
    preserve_env: bool = False,
    environ: Mapping[str, str] | None = None,
    caller_cwd: str | None = None,
    forward_signals: bool = True,
    network: str | None = None,
    limits: Mapping[str, int | float | str] | None = None,
) -> int:
    """An automatic session: begin, run *argv*, end — the end happens whatever the command did."""
    if not argv:
        raise BadInput("no command given (put it after --)")
    target = process.resolve_user(user, ctx.actor.uid if user is None else 0)
    # Signals that arrive while the session is being set up or torn down wait
    # (blocked) until the command runs, and are then relayed to it: an
    # interrupted automatic session still ends cleanly.
    import signal

    blocking = forward_signals and not _not_main_thread()
    if blocking:
        signal.pthread_sigmask(signal.SIG_BLOCK, process.relayed_signals())
    try:
        session = begin(ctx, image, name=None, maintenance=False, auto=True, network=network, limits=limits)
        try:
            ctx.authorize(policy.SESSION_RUN, session_target(session), as_uid=target.pw_uid)
            spec = process.prepare(
                session.to_json(),
                argv,
                user=target,
                directory=directory,
                preserve_env=preserve_env,
                environ=environ,
                caller_cwd=caller_cwd,
            )
            pid = start(ctx, session.id, spec)
            return _wait(pid, forward_signals, unblock=blocking)
        finally:
            end(ctx, session.id, force=True)
    finally:
        if blocking:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, process.relayed_signals())
