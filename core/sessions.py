"""Session operations: begin, end, promote, list, info, and running commands inside."""

from __future__ import annotations

import os
import sys

from . import access, backends, faults, generations, images, isolation, locks, mounts, process, procs, records
from .actor import now_iso
from .errors import BadInput, Conflict, RoostError, SystemFailure
from .generations import GenerationMeta
from .names import check_name
from .profiles import Profile, load_profile
from .records import Session
from .setup import setup
from .store import new_tx
from .struct import Struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Mapping, Sequence
    from typing import Any

    from .engine import Engine


class SessionInfo(Struct, frozen=True):
    """A session as listings show it: the record plus what the system says now."""

    session: Session
    state: str  # mounted, needs-recovery, beginning, ending, promoting
    processes: int | None = None
    changes: int | None = None
    #: Live figures of a session with a cgroup (core.isolation.usage).
    usage: dict[str, int | None] | None = None

    def to_json(self) -> dict[str, Any]:
        s = self.session
        out: dict[str, Any] = {
            "id": s.id,
            "image": s.image,
            "generation": s.generation,
            "kind": s.kind,
            "owner": s.owner,
            "created": s.created,
            "state": self.state,
            "backend": s.backend,
            "profile": s.profile,
            "mountpoint": s.mountpoint,
            "auto": s.auto,
            "alias": s.alias,
            "failed": s.failed,
            "network": s.network,
            "limits": s.limits,
            "architecture": s.architecture,
        }
        if self.usage is not None:
            out["usage"] = self.usage
        if self.processes is not None:
            out["processes"] = self.processes
        if self.changes is not None:
            out["changes"] = self.changes
        return out


# --- helpers ---------------------------------------------------------------------


def _access_lists(config: Any) -> dict[str, list[str]]:
    return {
        "users": list(config.users),
        "groups": list(config.groups),
        "root_users": list(config.root_users),
        "root_groups": list(config.root_groups),
    }


def _check(eng: Engine, session: Session, verb: str, as_uid: int | None = None) -> None:
    a = eng.actor
    access.check_session(a.user, a.uid, a.groups, session.access, session.uid, session.id, as_uid=as_uid, verb=verb)


def _new_id(eng: Engine, image: str) -> str:
    for _ in range(100):
        sid = f"{image[:55]}-{os.urandom(4).hex()}"
        if not os.path.exists(eng.store.session_record(sid)):
            return sid
    raise SystemFailure("cannot find a free session id")


def _read(eng: Engine, sid: str) -> Session:
    check_name(sid, "session id")
    return records.read(eng.store.sessions_dir, sid)


def _write(eng: Engine, session: Session) -> None:
    records.write(eng.store.sessions_dir, session)


def stack_of(eng: Engine, image: str, number: int) -> list[int]:
    return list(generations.read_meta(eng.store, image, number).stack)


# --- begin -----------------------------------------------------------------------


def begin(
    eng: Engine,
    image: str,
    *,
    name: str | None,
    maintenance: bool,
    auto: bool,
    alias: str | None = None,
    network: str | None = None,
    limits: Mapping[str, int | float | str] | None = None,
) -> Session:
    eng.require_root("session begin")
    config = images.require(eng, image)
    if name is not None:
        check_name(name, "session name")
    if alias == image:
        alias = None
    if alias is not None and alias not in config.aliases:
        raise BadInput(f"{alias!r} is not an alias of image {image}")
    profile: Profile = load_profile(config.profile, eng.settings.profiles_dir, eng.store.cache_dir)
    a = eng.actor
    level = access.check_begin(a.user, a.uid, a.groups, _access_lists(config), image)
    if maintenance and level != "root":
        raise BadInput(f"{a.user} may not maintain image {image} (not in its root-users)")
    net, session_limits = isolation.resolve(
        config, profile, maintenance=maintenance, network=network, limit_options=limits
    )
    eng.ready()
    backend = backends.get(config.backend)
    sid = name if name is not None else _new_id(eng, image)
    store = eng.store
    kind = "maintenance" if maintenance else "ordinary"
    try:
        slock = eng.session_lock(sid, "begin", wait=False)
    except Conflict:
        raise Conflict(f"session {sid} already exists") from None
    try:
        ilock = eng.image_lock(image, f"begin {sid}", exclusive=maintenance)
        try:
            number = generations.current(store, image)
            stack = stack_of(eng, image, number)
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
                access=_access_lists(config),
                personality=config.personality,
                command_prefix=list(config.command_prefix),
                alias=alias,
                network=net,
                limits=session_limits,
                architecture=config.architecture,
            )
            isolation.plan(eng, session)
            if maintenance:
                holder = images._live_writer(eng, image)
                if holder is not None:
                    raise Conflict(f"{image} is already being maintained by {holder.describe()}")
            backend.prepare(session)
            try:
                records.write(store.sessions_dir, session, create=True)
            except FileExistsError:
                raise Conflict(f"session {sid} already exists") from None
            if maintenance:
                lease = locks.Lease(session=sid, user=a.user, operation="maintenance", since=session.created, pid=a.pid)
                locks.write_lease(store.writer_lease(image), lease)
        finally:
            ilock.release()
        faults.crashpoint("begin", "recorded")
        try:
            _bring_up(eng, session, create=True)
            session.state = "active"
            _write(eng, session)
        except BaseException as e:
            try:
                _tear_down(eng, session, force=True, quiet=True)
                _finish(eng, session)
                slock.release(remove=True)
            except RoostError:
                pass  # left for recover, which finds the record still "beginning"
            eng.journal("session begin", image=image, session=sid, generation=number, result="failed", error=str(e))
            raise
    finally:
        slock.release()
    eng.journal("session begin", image=image, session=sid, generation=number, kind=kind)
    return session


def _bring_up(eng: Engine, session: Session, *, create: bool) -> None:
    """Clone (when *create*), mount and set a session up; the caller tears down on failure."""
    backend = backends.get(session.backend)
    if create:
        backend.create_clone(session)
        faults.crashpoint("begin", "cloned")
    os.makedirs(session.mountpoint, mode=0o755, exist_ok=True)
    backend.mount(session)
    faults.crashpoint("begin", "mounted")
    isolation.start(session)
    setup(session)
    faults.crashpoint("begin", "profiled")


def _tear_down(eng: Engine, session: Session, *, force: bool, quiet: bool = False, keep_clone: bool = False) -> None:
    """Kill, unmount (deepest first), remove the clone and the mount point.

    Tolerates every half-made state, so begin's failure path, end and
    recover all share it. With *keep_clone* the clone stays (promote moves it).
    """
    procs.kill_in_root(session.mountpoint, eng.settings.end_grace)
    isolation.kill(session)  # what left the session's root but not its cgroup
    faults.crashpoint("end", "killed")
    mounts.unmount_tree(session.mountpoint, force=force)
    isolation.remove(session)
    faults.crashpoint("end", "unmounted")
    if not keep_clone:
        backend = backends.get(session.backend)
        if os.path.lexists(session.clone):
            backend.remove_clone(session)
    try:
        os.rmdir(session.mountpoint)
    except FileNotFoundError:
        pass
    except OSError as e:
        if not quiet:
            raise SystemFailure(f"cannot remove {session.mountpoint}: {e.strerror}") from None
    faults.crashpoint("end", "removed")


def _release_writer(eng: Engine, session: Session) -> None:
    path = eng.store.writer_lease(session.image)
    lease = locks.read_lease(path)
    if lease is None or lease.session != session.id:
        return
    if not images.exists(eng, session.image):
        return
    with eng.image_lock(session.image, f"release writer {session.id}"):
        lease = locks.read_lease(path)
        if lease is not None and lease.session == session.id:
            locks.clear_lease(path)


def _finish(eng: Engine, session: Session) -> None:
    """The last steps of every ending: the writer lease, the record, the lock file."""
    _release_writer(eng, session)
    faults.crashpoint("end", "unleased")
    records.remove(eng.store.sessions_dir, session.id)


# --- end -------------------------------------------------------------------------


def end(eng: Engine, sid: str, *, force: bool) -> None:
    eng.require_root("session end")
    session = _read(eng, sid)
    _check(eng, session, "end")
    eng.ready()
    slock = eng.session_lock(sid, "end")
    try:
        session = _read(eng, sid)  # it may have changed while we waited
        end_locked(eng, session, force=force)
        slock.release(remove=True)
    finally:
        slock.release()
    eng.journal("session end", image=session.image, session=sid, generation=session.generation, forced=force or None)


def end_locked(eng: Engine, session: Session, *, force: bool) -> None:
    """End *session*; the caller holds its lock."""
    if session.state != "ending":
        session.state = "ending"
        _write(eng, session)
    faults.crashpoint("end", "marked")
    _tear_down(eng, session, force=force)
    _finish(eng, session)


# --- failure mark ----------------------------------------------------------------


def mark_failed(eng: Engine, sid: str, reason: str) -> bool:
    """Record that *sid* must not be promoted automatically; False if it already was marked.

    Front doors that promote on success (the schroot front door's ``source:``
    sessions) mark a session when a command in it fails; the first reason stays.
    """
    eng.require_root("session mark")
    reason = reason.replace("\x00", "")[:4096] or "failed"
    session = _read(eng, sid)
    _check(eng, session, "mark")
    eng.ready()
    slock = eng.session_lock(sid, "mark failed")
    try:
        session = _read(eng, sid)
        if session.failed is not None:
            return False
        session.failed = reason
        _write(eng, session)
    finally:
        slock.release()
    eng.journal("session mark failed", image=session.image, session=sid, reason=reason)
    return True


# --- promote ---------------------------------------------------------------------


def promote(eng: Engine, sid: str, message: str) -> int:
    eng.require_root("session promote")
    if len(message) > 4096 or "\x00" in message:
        raise BadInput("the message is too long or holds a NUL")
    session = _read(eng, sid)
    _check(eng, session, "promote")
    config = images.require(eng, session.image)
    eng.ready()
    store = eng.store
    image = session.image
    slock = eng.session_lock(sid, "promote")
    try:
        session = _read(eng, sid)
        if session.state != "active":
            raise Conflict(f"session {sid} is {session.state}, not active (roost session recover {sid})")
        backend = backends.get(session.backend)
        max_depth = config.overlay_max_depth or eng.settings.overlay_max_depth
        with eng.image_lock(image, f"promote {sid}"):
            cur = generations.current(store, image)
            if cur != session.generation:
                raise Conflict(
                    f"session {sid} was cloned from generation {session.generation}, but {image} is now at "
                    f"generation {cur}: not a fast-forward, nothing promoted"
                )
            writer = images._live_writer(eng, image)
            temporary = False
            if session.maintenance:
                if writer is None or writer.session != sid:
                    raise Conflict(f"session {sid} no longer holds the writer lock of {image}")
            else:
                if writer is not None:
                    raise Conflict(f"{image} is being maintained by {writer.describe()}: only it may promote")
                lease = locks.Lease(
                    session=sid, user=eng.actor.user, operation="promote", since=now_iso(), pid=eng.actor.pid
                )
                locks.write_lease(store.writer_lease(image), lease)
                temporary = True
            base_stack = stack_of(eng, image, cur)
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
                "author": eng.actor.user,
            }
            _write(eng, session)
        faults.crashpoint("promote", "marked")
        try:
            procs.kill_in_root(session.mountpoint, eng.settings.end_grace)
            mounts.unmount_tree(session.mountpoint)
        except RoostError:
            _abandon_promote(eng, session)
            raise
        faults.crashpoint("promote", "unmounted")
        number = complete_promote(eng, session)
        slock.release(remove=True)
    finally:
        slock.release()
    eng.journal("session promote", image=image, session=sid, generation=number, base=session.generation)
    return number


def _abandon_promote(eng: Engine, session: Session) -> None:
    """Put a session whose promote could not start back to active (it stays mounted or recoverable)."""
    info = session.promote or {}
    session.state = "active"
    session.promote = None
    _write(eng, session)
    if info.get("temporary_lease"):
        _release_writer(eng, session)


def complete_promote(eng: Engine, session: Session) -> int:
    """Stage, commit and switch; then end the session. The session is unmounted and locked.

    Also the roll-forward path of recover: when the transaction already
    committed its generation, only the missing steps are done.
    """
    store = eng.store
    image = session.image
    info = session.promote or {}
    tx = str(info["tx"])
    base = int(info["base"])
    backend = backends.get(session.backend)
    staging = os.path.join(store.image_staging(image), tx)
    number = _generation_of_tx(eng, image, tx)
    if number is None:
        tx_lock = eng.lock(store.tx_lock_name(tx), f"promote {session.id}")
        try:
            number = _stage_and_commit(eng, session, backend, staging)
        finally:
            tx_lock.release(remove=True)
    else:
        with eng.image_lock(image, f"recover promote {session.id}"):
            gen_dir = store.generation_dir(image, number)
            if not os.path.isdir(gen_dir):
                if not os.path.isdir(staging):
                    os.unlink(store.generation_meta(image, number))
                    raise SystemFailure(f"generation {number} of {image} lost its data; session {session.id} kept")
                os.rename(staging, gen_dir)
            if generations.current(store, image) == base:
                generations.switch(store, image, number)
    _tear_down(eng, session, force=True)
    _finish(eng, session)
    faults.crashpoint("promote", "ended")
    return number


def _stage_and_commit(eng: Engine, session: Session, backend: backends.Backend, staging: str) -> int:
    """Write the new generation into *staging*, then commit and switch under the image lock."""
    store = eng.store
    image = session.image
    info = session.promote or {}
    tx = str(info["tx"])
    base = int(info["base"])
    os.makedirs(store.image_staging(image), mode=0o700, exist_ok=True)
    if not os.path.isdir(staging):
        os.mkdir(staging, 0o700)
    scratch = os.path.join(store.mnt_dir, f".stage-{tx}")
    os.makedirs(scratch, exist_ok=True)
    try:
        flattened = backend.stage(session, staging, flatten=bool(info.get("flatten")), scratch=scratch)
    except BaseException:
        backend.unstage(session, staging)
        backends.discard(staging)
        _abandon_promote(eng, session)
        raise
    finally:
        os.rmdir(scratch)
    faults.crashpoint("promote", "staged")
    size = backend.staged_size(session, staging)
    backend.sync(staging)
    faults.crashpoint("promote", "synced")
    with eng.image_lock(image, f"promote {session.id}"):
        cur = generations.current(store, image)
        if cur != base:
            backend.unstage(session, staging)
            backends.discard(staging)
            _abandon_promote(eng, session)
            raise Conflict(f"{image} moved to generation {cur} during the promote of {session.id}: nothing promoted")
        number = generations.highest(store, image) + 1
        stack = (number,) if flattened else (number, *stack_of(eng, image, base))
        meta = GenerationMeta(
            generation=number,
            parent=base,
            created=now_iso(),
            author=str(info.get("author") or eng.actor.user),
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


def _generation_of_tx(eng: Engine, image: str, tx: str) -> int | None:
    """The generation a promote transaction committed, if it got that far."""
    _, _, metas_only = generations.scan(eng.store, image)
    candidates = generations.complete(eng.store, image)[-8:] + sorted(metas_only)
    for n in candidates:
        try:
            if generations.read_meta(eng.store, image, n).tx == tx:
                return n
        except RoostError:
            continue
    return None


# --- listing ---------------------------------------------------------------------


def display_state(session: Session, table: list[mounts.Mount], held: set[int] | None, lock_dir: str) -> str:
    if session.state == "active":
        return "mounted" if mounts.is_mounted(session.mountpoint, table) else "needs-recovery"
    if held is not None:
        try:
            ino = os.stat(os.path.join(lock_dir, f"session.{session.id}.lock")).st_ino
        except FileNotFoundError:
            ino = -1
        if ino in held:
            return session.state
    return "needs-recovery"


def list_sessions(eng: Engine, image: str | None) -> list[SessionInfo]:
    if image is not None:
        check_name(image, "image name")
    found, _ = records.read_all(eng.store.sessions_dir)
    table = mounts.mounts()
    held = set(locks.kernel_flocks())
    out = []
    for s in found:
        if image is not None and s.image != image:
            continue
        out.append(SessionInfo(s, display_state(s, table, held, eng.store.lock_dir)))
    return out


def info(eng: Engine, sid: str, *, details: bool) -> SessionInfo:
    session = _read(eng, sid)
    state = display_state(session, mounts.mounts(), set(locks.kernel_flocks()), eng.store.lock_dir)
    if not details:
        return SessionInfo(session, state)
    count = procs.count_in_roots([session.mountpoint])[session.mountpoint.rstrip("/")]
    changes = backends.get(session.backend).changes(session)
    return SessionInfo(session, state, processes=count, changes=changes, usage=isolation.usage(session))


# --- running commands ------------------------------------------------------------


def launch(
    eng: Engine,
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
    eng.require_root("session run")
    session = _read(eng, sid)
    target = process.resolve_user(user, eng.actor.uid if user is None else 0)
    _check(eng, session, "enter" if argv is None else "run in", as_uid=target.pw_uid)
    state = display_state(session, mounts.mounts(), None, eng.store.lock_dir)
    if state != "mounted" or not isolation.intact(session):
        from .recover import recover

        recover(eng, sid)
        session = _read(eng, sid)
        if display_state(session, mounts.mounts(), None, eng.store.lock_dir) != "mounted":
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
    eng: Engine,
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
        eng,
        sid,
        argv,
        user=user,
        directory=directory,
        preserve_env=preserve_env,
        environ=environ,
        caller_cwd=caller_cwd,
        extra_env=extra_env,
    )
    pid = process.spawn(spec, stdin=stdin, stdout=stdout, stderr=stderr)
    return _wait(pid, forward_signals)


def run_auto(
    eng: Engine,
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
    target = process.resolve_user(user, eng.actor.uid if user is None else 0)
    # Signals that arrive while the session is being set up or torn down wait
    # (blocked) until the command runs, and are then relayed to it: an
    # interrupted automatic session still ends cleanly.
    import signal

    blocking = forward_signals and not _not_main_thread()
    if blocking:
        signal.pthread_sigmask(signal.SIG_BLOCK, process.relayed_signals())
    try:
        session = begin(eng, image, name=None, maintenance=False, auto=True, network=network, limits=limits)
        try:
            _check(eng, session, "run in", as_uid=target.pw_uid)
            spec = process.prepare(
                session.to_json(),
                argv,
                user=target,
                directory=directory,
                preserve_env=preserve_env,
                environ=environ,
                caller_cwd=caller_cwd,
            )
            pid = process.spawn(spec)
            return _wait(pid, forward_signals, unblock=blocking)
        finally:
            end(eng, session.id, force=True)
    finally:
        if blocking:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, process.relayed_signals())
