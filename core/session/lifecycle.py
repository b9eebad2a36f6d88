"""A session's life cycle: begin, bring up, tear down, finish, end; and marking it failed.

Each step is public because recover (core/recover.py) runs the same steps
to finish or undo what an interrupted operation left: :func:`tear_down` and
:func:`finish` end a session from any half-made state, :func:`bring_up`
mounts an existing clone again.
"""

from __future__ import annotations

import os

from .. import backends, faults, locks, mounts, policy, procs
from .. import records as files
from ..errors import BadInput, Conflict, RoostError, SystemFailure
from ..records import Session
from .records import new_id, read, session_target, stack_of, write

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Mapping, Sequence

    from ..context import Context
    from ..imageconf import ImageConfig
    from ..profiles import Profile

# What only begin needs (images, generations, profiles, the profile's set-up)
# is imported in begin and bring_up: end, which build tools run as often as
# begin, does without (BENCHMARKS.md, "Start-up").


def _check_prefix(words: Sequence[str]) -> list[str]:
    """A session's own command prefix (schroot's ``command-prefix``): at most 100 plain words."""
    prefix = list(words)
    if len(prefix) > 100 or not all(isinstance(w, str) and w and len(w) <= 4096 and "\x00" not in w for w in prefix):
        raise BadInput("a command prefix is at most 100 non-empty words without NUL")
    return prefix


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
    """A new session of *image*'s current generation, cloned, mounted and set up (its record says active)."""
    from .. import generations
    from .. import imagerefs as images  # not core.images: four times the code to load
    from ..actor import now_iso
    from ..names import check_object_name
    from ..profiles import load_profile

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
    profile = load_profile(config.profile, ctx.settings.profiles_dir, ctx.store.cache_dir)
    a = ctx.actor
    if (
        network is None
        and limits is None
        and not (config.network or profile.network or config.limits or profile.limits)
    ):
        net, session_limits = "host", None  # most sessions: core.isolation is not even imported
    else:
        from .. import isolation

        net, session_limits = isolation.resolve(
            config, profile, maintenance=maintenance, network=network, limit_options=limits
        )
        if network is not None or limits is not None:
            _check_isolation(ctx, image, config, profile, maintenance, net, session_limits)
    ctx.ready()
    quota = None if ctx.policy.is_admin(a) else _quota(ctx)
    backend = backends.get(config.backend)
    sid = name if name is not None else new_id(ctx, image)
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
                access=config.access_lists(),
                personality=config.personality,
                command_prefix=prefix,
                alias=alias,
                network=net,
                limits=session_limits,
                architecture=config.architecture,
            )
            if not maintenance and not config.durable and backend.volatile_sessions:
                session.volatile = True  # a throw-away session: never promoted without a sync first
                session.boot = files.boot_id()
            if config.suite and config.architecture and config.package_cache is not False and backend.layered:
                session.package_cache = f"{config.suite}-{config.architecture}"  # core.pkgcache
            if net != "host" or session_limits is not None:
                from .. import isolation

                isolation.plan(ctx, session)
            if maintenance:
                from ..leases import live_writer

                holder = live_writer(ctx, image)
                if holder is not None:
                    raise Conflict(f"{image} is already being maintained by {holder.describe()}")
            backend.prepare(session)
            try:
                files.write(store.sessions_dir, session, create=True)
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
            bring_up(ctx, session, create=True)
            session.state = "active"
            write(ctx, session)
        except BaseException as e:
            try:
                tear_down(ctx, session, force=True, quiet=True)
                finish(ctx, session)
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
    from .. import imagerefs, isolation

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
        ctx.authorize(policy.SESSION_LOOSEN, imagerefs.target(image, config))


def _quota(ctx: Context) -> locks.Lock:
    """Refuse a begin past ``max-sessions-per-user``; else the user's lock, held until the new record exists.

    Every session holds mounts (a dozen per session), so one user's sessions
    could fill the host's mount table; administrators are not counted.
    """
    a = ctx.actor
    lock = ctx.lock(f"user.{a.uid}", "begin")
    try:
        limit = ctx.settings.max_sessions_per_user
        found, _ = files.read_all(ctx.store.sessions_dir)
        mine = sum(1 for s in found if s.uid == a.uid)
        if mine >= limit:
            raise Conflict(
                f"{a.user} already has {mine} sessions (max-sessions-per-user: {limit} in roost.yaml): end some first"
            )
    except BaseException:
        lock.release()
        raise
    return lock


# --- the steps begin, end, promote and recover share --------------------------------


def bring_up(ctx: Context, session: Session, *, create: bool) -> None:
    """Clone (when *create*), mount and set *session* up; the caller tears down on failure.

    Begin runs it with *create*; recover without, to mount a session whose
    mounts are gone (after a reboot) on the clone it still has.
    """
    from ..setup import setup

    backend = backends.get(session.backend)
    if create:
        backend.create_clone(session)
        faults.crashpoint("begin", "cloned")
    _make_mountpoint(ctx, session)
    backend.mount(session)
    faults.crashpoint("begin", "mounted")
    if isolated(session):
        from .. import isolation

        isolation.start(session)
    merged = setup(session)
    if merged != session.nss_merged:
        session.nss_merged = merged
    if session.package_cache is not None:
        from .. import pkgcache

        try:
            attached = pkgcache.attach(ctx.store, session)
        except (OSError, RoostError):
            attached = False  # a session without the cache downloads what it needs: nothing else is lost
        if not attached:
            session.package_cache = None
    faults.crashpoint("begin", "profiled")


def tear_down(ctx: Context, session: Session, *, force: bool, quiet: bool = False, keep_clone: bool = False) -> None:
    """Kill, unmount (deepest first), remove the clone and the mount point.

    Tolerates every half-made state, so begin's failure path, end and
    recover all share it. With *keep_clone* the clone stays (promote moves it).
    """
    procs.kill_in_root(session.mountpoint, ctx.settings.end_grace)
    has_isolation = isolated(session)
    if has_isolation:
        from .. import isolation

        isolation.kill(session)  # what left the session's root but not its cgroup; then the cgroups go
    faults.crashpoint("end", "killed")
    mounts.unmount_tree(session.mountpoint, force=force)
    if has_isolation:
        isolation.remove(session)
    faults.crashpoint("end", "unmounted")
    if not keep_clone:
        if session.package_cache is not None:
            from .. import pkgcache

            pkgcache.detach(ctx.store, session)  # verified new .debs into the cache, then its layers go
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


def isolated(session: Session) -> bool:
    """Whether *session* has anything of core.isolation's: a network namespace, cgroups, a
    socket filter, or an architecture not the host's (qemu). Most have none, and begin and
    end then do without the module."""
    foreign = session.architecture is not None and session.architecture != files.HOST_ARCH
    return foreign or bool(session.cgroups) or session.netns is not None or session.filtered is not None


def _make_mountpoint(ctx: Context, session: Session) -> None:
    """``<run>/mnt/<id>/root``, behind a gate only the session's owner may pass (docs/security.md)."""
    from ..fsutil import ensure_dir, grant_traverse

    gate = ctx.store.session_gate(session.id)
    if session.mountpoint == gate:  # a session begun before gates: mounted at the gate's place
        ensure_dir(gate, 0o755)
        return
    ensure_dir(gate, 0o700, exact=True)
    if session.uid != 0:
        grant_traverse(gate, session.uid)
    ensure_dir(session.mountpoint, 0o755)


def finish(ctx: Context, session: Session) -> None:
    """The last steps of every ending, after :func:`tear_down`: the writer lease, then the record.

    The caller releases (and removes) the session's lock file afterwards.
    """
    lease = locks.read_lease(ctx.store.writer_lease(session.image))
    if lease is not None and lease.session == session.id:  # maintenance, or a promote cut short
        from .. import leases

        leases.release(ctx, session.image, session.id)
    faults.crashpoint("end", "unleased")
    files.remove(ctx.store.sessions_dir, session.id)


# --- end -------------------------------------------------------------------------


def end(ctx: Context, sid: str, *, force: bool) -> None:
    """End session *sid*: kill what runs in it, unmount it, remove its clone and its record."""
    ctx.require_privileged("session end")
    session = read(ctx, sid)
    ctx.authorize(policy.SESSION_END, session_target(session))
    ctx.ready()
    slock = ctx.session_lock(sid, "end")
    try:
        session = read(ctx, sid)  # it may have changed while we waited
        end_locked(ctx, session, force=force)
        slock.release(remove=True)
    finally:
        slock.release()
    ctx.journal("session end", image=session.image, session=sid, generation=session.generation, forced=force or None)


def end_locked(ctx: Context, session: Session, *, force: bool) -> None:
    """End *session*; the caller holds its lock."""
    if session.state != "ending":
        session.state = "ending"
        write(ctx, session)
    faults.crashpoint("end", "marked")
    tear_down(ctx, session, force=force)
    finish(ctx, session)


# --- failure mark ----------------------------------------------------------------


def mark_failed(ctx: Context, sid: str, reason: str) -> bool:
    """Record that *sid* must not be promoted automatically; False if it already was marked.

    Front doors that promote on success (the schroot front door's ``source:``
    sessions) mark a session when a command in it fails; the first reason stays.
    """
    ctx.require_privileged("session mark")
    reason = reason.replace("\x00", "")[:4096] or "failed"
    session = read(ctx, sid)
    ctx.authorize(policy.SESSION_MARK, session_target(session))
    ctx.ready()
    slock = ctx.session_lock(sid, "mark failed")
    try:
        session = read(ctx, sid)
        if session.failed is not None:
            return False
        session.failed = reason
        write(ctx, session)
    finally:
        slock.release()
    ctx.journal("session mark failed", image=session.image, session=sid, reason=reason)
    return True
