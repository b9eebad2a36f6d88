"""User namespaces: create one mapped through newuidmap/newgidmap, join one, run code in one.

Python 3.11 has neither ``os.unshare`` nor ``os.setns``; both are called
through ctypes, loaded on first use (``end`` never needs it: 3 ms of a cold
start). Joining uses a pidfd: ``setns(pidfd, CLONE_NEWUSER |
CLONE_NEWNS | CLONE_NEWPID)`` enters the user, mount and pid namespaces of a
process in one system call, and the pidfd pins the process, so a pid reused
after the holder died can never be joined by mistake (the start time is
checked after the pidfd is open).

A fresh namespace needs its maps written from outside: the child unshares,
tells the parent, the parent runs newuidmap and newgidmap on the child's pid,
then lets it go on as root of the namespace. That costs two helper processes
(a few milliseconds), so session commands join their holder's namespaces
instead, and only operations on sessions without a holder (a promote's
staging, gc, import, export) make fresh ones.
"""

from __future__ import annotations

import os

from ..errors import RoostError, SystemFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .ids import IdMap

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NAME = 15
_SIGKILL = 9

_loaded: Any = None


def libc() -> Any:
    """The C library through ctypes, loaded on first use. Call it before a fork whose child needs it."""
    global _loaded
    if _loaded is None:
        import ctypes

        lib = ctypes.CDLL(None, use_errno=True)
        lib.unshare.argtypes = [ctypes.c_int]
        lib.setns.argtypes = [ctypes.c_int, ctypes.c_int]
        _loaded = lib
    return _loaded


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


def unshare(flags: int) -> None:
    if libc().unshare(flags) != 0:
        err = _errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


def setns(fd: int, flags: int) -> None:
    if libc().setns(fd, flags) != 0:
        err = _errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def set_name(name: str) -> None:
    """The process name ``ps`` and ``/proc/PID/comm`` show (15 bytes at most)."""
    libc().prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def die_with_parent() -> None:
    libc().prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)


def starttime(pid: int) -> int | None:
    from ..procs import starttime as _starttime

    return _starttime(pid)


def open_process(pid: int, start: int | None) -> int:
    """A pidfd for *pid*, only if it is still the process that started at *start* (else ProcessLookupError)."""
    fd = os.pidfd_open(pid)
    if start is not None and starttime(pid) != start:
        os.close(fd)
        raise ProcessLookupError(pid)
    return fd


def wait_exit(pidfd: int, timeout: float | None = None) -> bool:
    """Wait until the process behind *pidfd* has exited (any process, not only a child)."""
    import select

    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    ms = None if timeout is None else int(timeout * 1000)
    return bool(poller.poll(ms))


def helper(name: str) -> str:
    """The path of newuidmap or newgidmap, or a clear error naming the package."""
    for directory in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        path = f"{directory}/{name}"
        if os.access(path, os.X_OK):
            return path
    from .. import programs

    return programs.require(name, "uidmap")


def map_ids(pid: int, idmap: IdMap) -> None:
    """Write the uid and gid maps of the user namespace of *pid*: newuidmap and newgidmap, side by side.

    Both are setuid helpers that start slowly (several milliseconds each), so
    they run at the same time, started with posix_spawn (no fork of this
    process, no import of subprocess).
    """
    started = []
    pipes = []
    commands = (idmap.newuidmap_args(pid), idmap.newgidmap_args(pid))
    try:
        for argv in commands:
            err_r, err_w = os.pipe2(os.O_CLOEXEC)  # a helper's few lines of complaint fit in a pipe
            pipes.append(err_r)
            try:
                started.append(
                    os.posix_spawn(
                        helper(argv[0]),
                        argv,
                        {"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
                        file_actions=[
                            (os.POSIX_SPAWN_DUP2, err_w, 2),
                            (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
                        ],
                    )
                )
            finally:
                os.close(err_w)
        failures = []
        for child, err_r, argv in zip(started, pipes, commands, strict=False):
            _, status = os.waitpid(child, 0)
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                text = os.read(err_r, 65536).decode(errors="replace")
                lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
                tool = argv[0]
                failures.append(
                    f"{tool} failed (exit {code}){': ' + lines[-1] if lines else ''} "
                    f"(check /etc/sub{tool[3:6]} and that {tool} is setuid root: roost doctor)"
                )
        if failures:
            raise SystemFailure(failures[0])
    finally:
        for fd in pipes:
            os.close(fd)


def become_root() -> None:
    """In a namespace whose maps are written: become its root (uid and gid 0, no supplementary groups).

    Changing ids makes a process non-dumpable, and the kernel lets nobody
    but the host's root join the namespaces of a non-dumpable process
    (setns checks ptrace access): the process marks itself dumpable again,
    so its user, who owns the namespace, can join it.
    """
    os.setresgid(0, 0, 0)
    os.setgroups([])
    os.setresuid(0, 0, 0)
    libc().prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_byte(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 1)
        except InterruptedError:
            continue


def fork_mapped(idmap: IdMap, *, flags: int = 0) -> int:
    """Fork a child that is root of a fresh user namespace (plus *flags*: CLONE_NEWNS …).

    Returns 0 in the child, which is mapped through *idmap* and must end with
    ``os._exit``; in the parent, the child's pid (reap it with waitpid). The
    child dies with its parent. Raises in the parent when the namespace cannot
    be made or mapped (the child is reaped then).
    """
    libc()  # loaded before the fork: the child must not spend its first milliseconds importing
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(go_w)
            die_with_parent()
            if os.getppid() != parent:
                os._exit(1)
            try:
                unshare(CLONE_NEWUSER | flags)
            except OSError as e:
                _write_all(ready_w, b"E" + str(e.errno).encode())
                os._exit(1)
            _write_all(ready_w, b"U")
            os.close(ready_w)
            if _read_byte(go_r) != b"M":
                os._exit(1)
            os.close(go_r)
            become_root()
        except BaseException:  # noqa: BLE001 - a forked child never returns into the caller on failure
            os._exit(1)
        return 0
    os.close(ready_w)
    os.close(go_r)
    try:
        answer = os.read(ready_r, 64)
        if answer != b"U":
            raise SystemFailure(unshare_failure(int(answer[1:]) if answer[1:].isdigit() else 0))
        map_ids(pid, idmap)
        _write_all(go_w, b"M")
    except BaseException:
        os.close(go_w)
        go_w = -1
        os.kill(pid, _SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(ready_r)
        if go_w >= 0:
            os.close(go_w)
    return pid


def unshare_failure(errno_value: int) -> str:
    """One line saying why the kernel refused an unprivileged user namespace, and how to allow it."""
    if errno_value == 28:  # ENOSPC
        return "the kernel allows no more user namespaces (sysctl user.max_user_namespaces=15000)"
    if os.path.exists("/proc/sys/kernel/unprivileged_userns_clone"):
        return (
            "the kernel refuses user namespaces to ordinary users "
            "(sysctl kernel.unprivileged_userns_clone=1, or see roost doctor)"
        )
    return f"cannot create a user namespace: {os.strerror(errno_value) if errno_value else 'refused'} (roost doctor)"


# --- running Python code in a fresh namespace -------------------------------------------


_ERRORS = ("BadInput", "NotPermitted", "ConfigError", "Conflict", "NotFound", "SystemFailure")


def run_mapped(
    idmap: IdMap,
    fn: Callable[[], Any],
    *,
    flags: int = 0,
    progress: Callable[[float | None, str], None] | None = None,
    keep: tuple[int, ...] = (),
) -> Any:
    """Call *fn* as root of a fresh user namespace (plus *flags*) in a child; return what it returns.

    The result must be marshal-able (None, numbers, strings, lists, dicts).
    A :class:`RoostError` raised by *fn* is raised again here with its
    message and class; anything else becomes a :class:`SystemFailure`. While
    *fn* runs, :func:`report` in the child reaches *progress* here.

    The child closes every inherited descriptor above 2 but *keep*: a lock
    this process holds must not stay held by a child that is still dying
    after this process was killed (recover would find it busy).
    """
    return _call(lambda: fork_mapped(idmap, flags=flags), fn, progress, keep)


def run_forked(
    fn: Callable[[], Any], progress: Callable[[float | None, str], None] | None = None, keep: tuple[int, ...] = ()
) -> Any:
    """Call *fn* in a forked child that dies with this process (it may enter namespaces); as :func:`run_mapped`."""
    parent = os.getpid()
    libc()

    def fork() -> int:
        pid = os.fork()
        if pid == 0:
            die_with_parent()
            if os.getppid() != parent:
                os._exit(1)
        return pid

    return _call(fork, fn, progress, keep)


def close_except(keep: tuple[int, ...]) -> None:
    """Close every descriptor above 2 but *keep*."""
    low = 3
    for fd in sorted(set(keep)):
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, 1 << 20)


def _call(
    fork: Callable[[], int],
    fn: Callable[[], Any],
    progress: Callable[[float | None, str], None] | None,
    keep: tuple[int, ...] = (),
) -> Any:
    import marshal

    result_r, result_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = fork()
    except BaseException:
        os.close(result_r)
        os.close(result_w)
        raise
    if pid == 0:
        close_except((result_w, *keep))
        global _report_fd
        _report_fd = result_w
        try:
            value = fn()
            message = marshal.dumps(("ok", value))
        except RoostError as e:
            kind = type(e).__name__
            message = marshal.dumps(("error", kind if kind in _ERRORS else "SystemFailure", e.message))
        except OSError as e:
            message = marshal.dumps(("error", "SystemFailure", os_error_line(e)))
        except BaseException as e:  # noqa: BLE001 - everything must reach the parent as one line
            message = marshal.dumps(("error", "SystemFailure", f"{type(e).__name__}: {e}"))
        try:
            _send(result_w, message)
        finally:
            os._exit(0)
    os.close(result_w)
    try:
        outcome: Any = None
        with os.fdopen(result_r, "rb", buffering=0) as reader:
            while True:
                frame = _receive(reader)
                if frame is None:
                    break
                item = marshal.loads(frame)
                if item[0] == "progress":
                    if progress is not None:
                        progress(item[1], item[2])
                    continue
                outcome = item
    finally:
        _, status = os.waitpid(pid, 0)
    if outcome is None:
        raise SystemFailure(f"a helper in the user namespace died ({_status_line(status)})")
    if outcome[0] == "ok":
        return outcome[1]
    from .. import errors

    raise getattr(errors, outcome[1])(outcome[2])


_report_fd = -1


def report(fraction: float | None, message: str) -> None:
    """From inside :func:`run_mapped`: tell the caller's progress callback."""
    import marshal

    if _report_fd >= 0:
        _send(_report_fd, marshal.dumps(("progress", fraction, message)))


def _send(fd: int, payload: bytes) -> None:
    _write_all(fd, len(payload).to_bytes(4, "little") + payload)


def _receive(reader: Any) -> bytes | None:
    head = _read_exactly(reader, 4)
    if head is None:
        return None
    return _read_exactly(reader, int.from_bytes(head, "little"))


def _read_exactly(reader: Any, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = reader.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def os_error_line(e: OSError) -> str:
    """An OSError as roost prints one: ``PATH: REASON``."""
    return f"{e.filename}: {e.strerror}" if e.filename else str(e.strerror or e)


def _status_line(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"killed by signal {-code}" if code < 0 else f"exit {code}"
