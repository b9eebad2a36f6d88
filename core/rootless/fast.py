"""``session run`` in rootless mode without the engine: the shape roost/fastpath.py takes in phase 2.

Read the record (the C JSON scanner), check it is a live rootless session of
this user, resolve the command (core.process.prepare, as system mode), take
the session lock shared, join the holder and exec there
(:func:`core.rootless.holder.exec_joined`, which releases the lock once the
command has exec'd). No engine, no id layout, no YAML. Anything unusual — a
record in another state, a dead holder (the session needs recover), a busy
lock — returns, doing nothing, and the full path decides and explains.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..settings import Settings


def run(
    settings: Settings,
    sid: str,
    command: Sequence[str] | None,
    *,
    user: str | None = None,
    directory: str | None = None,
    preserve_env: bool = False,
) -> None:
    """Run *command* (a login shell: None) in session *sid* and end as it ended (never returns).

    Returns, having done nothing, when the full path must decide.
    """
    from .. import fastjson, names, process, procs
    from ..errors import RoostError
    from . import holder

    if not names.is_valid_name(sid) or os.geteuid() == 0:
        return
    sessions = os.path.join(settings.state_root, "sessions")
    try:
        for path in (settings.state_root, sessions):
            if not _own_dir(os.lstat(path)):
                return  # not the user's own: the full path refuses it with its line
        fd = os.open(os.path.join(sessions, sid + ".json"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, encoding="utf-8") as f:
            if os.fstat(fd).st_uid != os.geteuid():
                return
            record = fastjson.loads(f.read())
    except (OSError, ValueError):
        return
    if not isinstance(record, dict) or record.get("state") != "active" or record.get("id") != sid:
        return
    data = record.get("backend_data")
    ref = holder.HolderRef.from_json(data.get("holder")) if isinstance(data, dict) and data.get("rootless") else None
    if ref is None or record.get("uid") != os.getuid() or not procs.alive(ref.pid, ref.start):
        return
    try:
        target = process.resolve_user(user, os.getuid())
        launch = process.prepare(record, command, user=target, directory=directory, preserve_env=preserve_env)
    except (RoostError, TypeError, ValueError):
        return
    lock = _shared_lock(os.path.join(settings.run_root, "locks", f"session.{sid}.lock"))
    if lock is None:
        return
    try:
        holder.exec_joined(ref, launch, lambda: os.close(lock))
    except RoostError:  # the holder died since: the full path recovers
        os.close(lock)


def _own_dir(st: os.stat_result) -> bool:
    """A real directory of this user's that nobody else may write."""
    import stat

    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _shared_lock(path: str) -> int | None:
    """The session lock, shared, if it can be had at once and is the live lock file."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino != os.stat(path, follow_symlinks=False).st_ino:
            raise OSError
    except OSError:
        os.close(fd)
        return None
    return fd
