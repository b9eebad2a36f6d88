"""Running commands in sessions: the one run protocol every front door uses.

:func:`launch` resolves a command for a session (recovering it if its
mounts are gone); :func:`hold_for_run` takes the session's lock shared and
checks again; :func:`start` (a child) and :func:`exec_in` (in place of
roost) run it under that lock. :func:`run_in` and :func:`run_auto` (begin,
run, end) are built on them.
"""

from __future__ import annotations

import os
import sys

from .. import locks, mounts, policy, process
from ..errors import BadInput, Conflict
from .lifecycle import begin, end, isolated
from .records import read, session_target

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Mapping, Sequence

    from ..context import Context
    from ..records import Session


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
    session = read(ctx, sid)
    target = process.resolve_user(user, ctx.actor.uid if user is None else 0)
    action = policy.SESSION_ENTER if argv is None else policy.SESSION_RUN
    ctx.authorize(action, session_target(session), as_uid=target.pw_uid)
    if not _mounted(session) or not _intact(session):
        from ..recover import recover
        from .query import display_state

        if display_state(session, mounts.mounts(), None, ctx.store.lock_dir) == "lost":
            raise Conflict(
                f"session {sid} is lost (it ran without durability and the machine restarted): "
                f"roost session recover {sid} ends it"
            )
        recover(ctx, sid)
        session = read(ctx, sid)
        if not _mounted(session):
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


def _mounted(session: Session) -> bool:
    """Active, with its root mounted: what a command needs (core.views.session_state: "mounted").

    Asked on every command started in a session, so it does without the read
    model's module (core.views) and without the mount table, which grows with
    every session on the host (32 sessions at once each read it twice more).
    """
    return session.state == "active" and mounts.is_mount_root(session.mountpoint)


def _intact(session: Session) -> bool:
    """What core.isolation made for *session* is still there (nothing to check, and no import, for most)."""
    if not isolated(session):
        return True
    from .. import isolation

    return isolation.intact(session)


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
        session = read(ctx, sid)
        if not _mounted(session):
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
    # interrupted automatic session still ends cleanly. (_signal, as in core.process:
    # the signal module would load enum, functools and collections for one call.)
    import _signal  # type: ignore[import-not-found]

    blocking = forward_signals and not _not_main_thread()
    if blocking:
        _signal.pthread_sigmask(_signal.SIG_BLOCK, process.relayed_signals())
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
            _signal.pthread_sigmask(_signal.SIG_UNBLOCK, process.relayed_signals())
