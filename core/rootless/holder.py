"""The holder: one small process per rootless session that owns its namespaces.

A rootless session cannot mount in the host's mount namespace, so it lives in
namespaces of its own, kept alive by a holder process:

1. roost forks a child, which unshares a user, a mount and a pid namespace,
   forks the holder (pid 1 of the new pid namespace) and exits; roost writes
   the user namespace's uid and gid maps (newuidmap, newgidmap) through the
   holder's pid meanwhile, and the holder becomes root of the namespace;
2. the holder makes the clone's upper and work directories (when the session
   is new), mounts the overlay at the session's mount point — in its own mount
   namespace, so the host sees an empty directory — and sets the session up
   (:mod:`core.rootless.setup`), then says it is ready;
3. roost records the holder (pid and start time) and confirms; a holder that
   is never confirmed (roost died) exits, and its namespaces with it.

The holder then only reaps orphans, as an init does, until it is killed.

``run`` and ``enter`` join the holder: one ``pidfd_open`` and one ``setns``
into its user and pid namespaces; the command is forked there (a pid
namespace is entered by children only), enters the mount namespace, chroots
into the session and execs. Every process of a session is therefore in its
pid namespace. ``end`` asks the holder to retire (:func:`retire`): one
real-time signal, which the holder takes only from outside its pid namespace
(``si_code`` SI_USER and no sender pid it can see, so nothing in the session
can forge it). The holder kills every other process of the namespace, waits
until its own proc shows none, detaches the session's mounts and removes the
clone as root of the namespace (the files are owned by subordinate ids, which
the user may only touch from inside), then exits, and its namespaces go with
it. ``end`` thereby needs neither a helper process nor ctypes: a quarter of
its cost. A holder that does not finish is killed and the clone removed in a
fresh namespace; a holder started before this protocol (its record names no
``retire``) and promote, which keeps the upper directory, use :func:`stop`
instead: one SIGKILL to the holder (the kernel kills the rest of a pid
namespace when its init dies, and the mount namespace goes with its last
member), then the work is done joined to the holder's user namespace.

After a reboot or a killed holder the mounts are gone with the namespaces,
but the clone is intact: :func:`spawn` with ``create=False`` rebuilds the
session from it.
"""

from __future__ import annotations

import os

from ..errors import Conflict, SystemFailure
from ..struct import Struct
from . import userns

TYPE_CHECKING = False
if TYPE_CHECKING:  # session run imports this module: records (and with it the mount table's code) only for types
    from collections.abc import Callable
    from typing import Any, NoReturn

    from ..process import Launch
    from ..records import Session
    from .ids import IdMap

HOLDER_NAME = "roost-holder"
_JOIN = userns.CLONE_NEWUSER | userns.CLONE_NEWNS | userns.CLONE_NEWPID
_SIGKILL = 9
_SIGCONT = 18
_SI_USER = 0  # si_code of a signal sent with kill(2) or pidfd_send_signal(2): the kernel fills in the sender
#: How long end waits for a retiring holder before it kills it and removes the clone itself.
RETIRE_WAIT = 30.0


def _retire_signal() -> int:
    """SIGRTMIN (glibc's, as Python gives it): real-time signals queue, so a forged one cannot hide the real one."""
    import _signal  # type: ignore[import-not-found]

    return int(_signal.SIGRTMIN)


class HolderRef(Struct, frozen=True):
    """A running holder: its pid in the host's pid namespace and its start time (against pid reuse).

    *retires*: it ends the session itself when asked (:func:`retire`), which
    a session record says with ``backend_data["retire"]``; holders recorded
    before that protocol do not.
    """

    pid: int
    start: int
    retires: bool = False

    def to_json(self) -> list[int]:
        return [self.pid, self.start]

    @classmethod
    def from_json(cls, data: object, retires: bool = False) -> HolderRef | None:
        if isinstance(data, list) and len(data) == 2 and all(isinstance(v, int) for v in data):
            return cls(data[0], data[1], retires)
        return None


def of(session: Session) -> HolderRef | None:
    """The holder a session record names (``backend_data["holder"]``), if any."""
    data = session.backend_data
    return HolderRef.from_json(data.get("holder"), retires=data.get("retire") == 1)


def recorded(ref: HolderRef) -> dict[str, Any]:
    """What a session record's ``backend_data`` says of *ref* (read back by :func:`of`)."""
    return {"holder": ref.to_json(), "retire": 1} if ref.retires else {"holder": ref.to_json()}


def alive(ref: HolderRef | None) -> bool:
    from ..procs import alive as _alive

    return ref is not None and _alive(ref.pid, ref.start)


# --- starting a holder --------------------------------------------------------------------


class Pending:
    """A holder that is set up and waits for :meth:`confirm` (or dies with :meth:`abandon`).

    *merged* is what the set-up merged into the session's user and group
    databases (core.setup.setup's result), for the record.
    """

    def __init__(self, ref: HolderRef, go: int, merged: dict[str, list[str]]) -> None:
        self.ref = ref
        self.merged = merged
        self._go = go

    def confirm(self) -> None:
        """The holder is recorded: let it live on its own."""
        if self._go >= 0:
            try:
                userns._write_all(self._go, b"K")
            finally:
                os.close(self._go)
                self._go = -1

    def abandon(self) -> None:
        """Let the holder go (it exits when it reads end-of-file), and wait until it has."""
        if self._go >= 0:
            try:
                fd = userns.open_process(self.ref.pid, self.ref.start)
            except ProcessLookupError:
                fd = -1
            os.close(self._go)
            self._go = -1
            if fd >= 0:
                try:
                    userns.wait_exit(fd, 10.0)
                finally:
                    os.close(fd)


def spawn(session: Session, idmap: IdMap, *, create: bool, host_root: str = "/") -> Pending:
    """Start the holder of *session* and wait until the session is mounted and set up inside it.

    With *create*, the holder first makes the clone's upper and work
    directories (the clone directory itself must exist, the user's, mode
    0700); without, it mounts the clone that is there (recover). The mount
    point must exist. Raises :class:`SystemFailure` with the holder's own
    message if anything fails; nothing is then mounted anywhere (the
    namespaces died with the holder), but a clone made so far stays for the
    caller to remove.
    """
    userns.libc()  # before the fork: the child unshares at once
    msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
    map_r, map_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _child(parent, session, create, host_root, keep=(msg_w, map_r, go_r))
    os.close(msg_w)
    os.close(map_r)
    os.close(go_r)
    ref: HolderRef | None = None
    try:
        with os.fdopen(msg_r, "rb", buffering=0) as messages:
            lines = _lines(messages)
            first = next(lines, b"")
            if first[:1] != b"P":
                errno_value = int(first[1:]) if first[:1] == b"E" and first[1:].isdigit() else 0
                raise SystemFailure(userns.unshare_failure(errno_value))
            holder = int(first[1:])
            start = userns.starttime(holder)
            if start is None:
                raise SystemFailure(f"the holder of session {session.id} died while starting")
            ref = HolderRef(holder, start, retires=True)
            # The maps are the user namespace's: written through the holder's pid (the child that
            # made the namespace may be gone already), while the holder waits for them.
            userns.map_ids(holder, idmap)
            userns._write_all(map_w, b"M")
            os.close(map_w)
            map_w = -1
            merged: Any = {}
            for line in lines:
                if line[:1] == b"R":
                    from .. import fastjson

                    merged = fastjson.loads(line[1:].decode("utf-8", "surrogateescape") or "{}")
                    break
                elif line[:1] == b"E":
                    raise SystemFailure(line[1:].decode(errors="replace"))
            else:
                raise SystemFailure(f"the holder of session {session.id} died while setting it up")
    except BaseException:
        os.close(go_w)
        if map_w >= 0:
            os.close(map_w)
        _reap(pid)
        if ref is not None:
            _kill_and_wait(ref)
        raise
    _reap(pid)
    assert ref is not None
    return Pending(ref, go_w, merged if isinstance(merged, dict) else {})


def _lines(reader: Any) -> Any:
    buffer = b""
    while True:
        chunk = reader.read(4096)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _say(fd: int, message: str) -> None:
    userns._write_all(fd, message.replace("\n", " ").encode(errors="replace") + b"\n")


def _child(parent: int, session: Session, create: bool, host_root: str, keep: tuple[int, int, int]) -> None:
    """The forked child: unshare, fork the holder at once (it waits for the maps), report its pid. Never returns.

    Forking before the maps are written lets the fork overlap newuidmap and newgidmap.
    """
    msg_w, map_r, go_r = keep
    try:
        userns.close_except(keep)  # a lock the caller holds must not live on in the holder
        userns.die_with_parent()
        if os.getppid() != parent:
            os._exit(1)
        os.setsid()  # no terminal: ctrl+c in the caller's terminal never reaches the holder
        try:
            userns.unshare(userns.CLONE_NEWUSER | userns.CLONE_NEWNS | userns.CLONE_NEWPID)
        except OSError as e:
            _say(msg_w, f"E{e.errno}")
            os._exit(1)
        holder = os.fork()
        if holder == 0:
            _holder(session, create, host_root, msg_w, map_r, go_r)
        _say(msg_w, f"P{holder}")
    except BaseException:  # noqa: BLE001 - a forked child never returns into the caller
        os._exit(1)
    os._exit(0)


def _holder(session: Session, create: bool, host_root: str, msg_w: int, map_r: int, go_r: int) -> None:
    """pid 1 of the session: mount and set up, report, then reap orphans until killed. Never returns."""
    try:
        # Loaded while newuidmap and newgidmap run, not after: the set-up's code costs a millisecond.
        from .. import syscalls
        from . import setup

        if userns._read_byte(map_r) != b"M":
            os._exit(1)  # never mapped: the caller died or gave up
        os.close(map_r)
        userns.become_root()
        userns.set_name(HOLDER_NAME)
        try:
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_SLAVE)
            setup.make_clone(session, create=create)
            setup.mount_overlay(session)
            merged = setup.setup(session, host_root)
        except SystemFailure as e:
            _say(msg_w, "E" + e.message)
            os._exit(1)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            _say(msg_w, f"Ecannot set up session {session.id}: {where}{e.strerror}")
            os._exit(1)
        from .. import fastjson

        _say(msg_w, "R" + fastjson.dumps(merged))
        os.close(msg_w)
        if userns._read_byte(go_r) != b"K":
            os._exit(1)  # never recorded: the caller died or gave up
        os.close(go_r)
        os.chdir("/")
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if null > 2:
            os.close(null)
        _reap_forever(session)
    except BaseException:  # noqa: BLE001 - the holder never returns into roost's code
        os._exit(1)


def _reap_forever(session: Session) -> NoReturn:
    """Reap orphans, as an init does, until the session's owner asks the holder to retire."""
    import _signal

    # pid 1 of a pid namespace gets only the signals it handles from inside it: Python's SIGINT
    # handler would let `kill -INT 1` in the session end the session. No handler, no such signal.
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
    chld, retire_sig = _signal.SIGCHLD, _retire_signal()
    # Blocked, the retire signal is queued whoever sends it (processes in the session too, since a
    # blocked signal is never ignored): only one from outside the pid namespace counts.
    _signal.pthread_sigmask(_signal.SIG_BLOCK, {chld, retire_sig})
    while True:
        _reap_exited()
        info = _signal.sigwaitinfo({chld, retire_sig})
        if info.si_signo == retire_sig and info.si_code == _SI_USER and info.si_pid == 0:
            _retire(session)


def _reap_exited() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _retire(session: Session) -> NoReturn:
    """End the session from inside: kill the rest of the pid namespace, wait until none of it is left,
    detach the session's mounts, remove the clone, exit (0 only when all of it was done).

    A fresh proc of the namespace, mounted nowhere (the session's own /proc could be covered from
    inside), tells when the last process is gone, joined ones (``run``, ``enter``) included.
    """
    import time

    from .. import syscalls
    from ..fsutil import remove_tree

    deadline = time.monotonic() + RETIRE_WAIT
    proc_root = syscalls.detached_mount("proc")
    proc = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=proc_root)
    while True:
        try:
            os.kill(-1, _SIGKILL)  # from pid 1: every process of its namespace but itself
        except ProcessLookupError:
            pass
        _reap_exited()
        if not any(name.isdigit() and name != "1" for name in os.listdir(proc)):
            break
        if time.monotonic() > deadline:
            os._exit(1)  # end kills the holder and removes the clone itself
        time.sleep(0.001)
    os.close(proc)
    os.close(proc_root)
    syscalls.umount(session.mountpoint, syscalls.MNT_DETACH)
    remove_tree(session.clone)
    os._exit(0)


# --- joining -----------------------------------------------------------------------------


def join(ref: HolderRef, flags: int = _JOIN) -> int:
    """Enter *flags* of the holder's namespaces (this process must have a single thread); returns its pidfd.

    Raises :class:`Conflict` when the holder is gone (the session needs recover).
    """
    try:
        fd = userns.open_process(ref.pid, ref.start)
    except ProcessLookupError:
        raise Conflict(f"the holder {ref.pid} of the session is gone (roost session recover)") from None
    try:
        userns.setns(fd, flags)
    except OSError as e:
        os.close(fd)
        raise _join_failure(ref, e) from None
    return fd


def _join_failure(ref: HolderRef, e: OSError) -> Exception:
    if e.errno == 3:  # ESRCH: it died (a zombie still has a pid, no namespaces)
        return Conflict(f"the holder {ref.pid} of the session is gone (roost session recover)")
    return SystemFailure(f"cannot join the namespaces of holder {ref.pid}: {e.strerror}")


def mapped_groups(groups: list[int]) -> list[int]:
    """Those of *groups* that exist in this process's user namespace (read from its gid_map after joining)."""
    extents = []
    with open("/proc/self/gid_map", encoding="ascii") as f:
        for line in f:
            inside, _, count = (int(v) for v in line.split())
            extents.append((inside, count))
    return [g for g in groups if any(inside <= g < inside + count for inside, count in extents)]


def _command(launch: Launch) -> None:
    """In the forked command, already in the session's namespaces: exec it. Never returns."""
    from ..process import exec_launch

    launch.groups = mapped_groups(launch.groups)
    os.setgroups(launch.groups)  # the host's other groups do not exist in the namespace
    exec_launch(launch)


def exec_joined(ref: HolderRef, launch: Launch, release: Callable[[], None] | None = None) -> NoReturn:
    """``session run``: join, fork the command, wait (relaying signals) and exit as it did. Never returns.

    *release* (the session lock's release, say) is called once the command
    has exec'd (or failed to): a close-on-exec pipe tells. Raises, before
    anything ran, :class:`Conflict` when the holder is gone.
    """
    # This process joins the user and pid namespaces (the pid namespace holds its children only); the
    # command alone enters the mount namespace, so a waiting roost never keeps the session's mounts alive.
    holder_fd = join(ref, userns.CLONE_NEWUSER | userns.CLONE_NEWPID)
    started_r, started_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(started_r)
        try:
            userns.setns(holder_fd, userns.CLONE_NEWNS)
        except OSError as e:
            os.write(2, f"roost: {_join_failure(ref, e)}\n".encode(errors="replace"))
            os._exit(launch.failure_code or 127)
        _start_command(launch)
    os.close(holder_fd)
    os.close(started_w)
    from ..process import wait_relaying

    if release is not None:
        while True:
            try:
                os.read(started_r, 1)  # end of file: the command exec'd, or died trying
                break
            except InterruptedError:
                continue
        release()
    os.close(started_r)
    _exit_as(wait_relaying(pid))


def _start_command(launch: Launch) -> None:
    try:
        _command(launch)
    except BaseException as e:  # noqa: BLE001 - the child must never return into the caller
        try:
            os.write(2, f"roost: {e}\n".encode(errors="replace"))
        finally:
            os._exit(launch.failure_code or 127)


def _exit_as(status: int) -> NoReturn:
    """End this process as the command ended: the same exit code, or the same signal."""
    import _signal

    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        _signal.signal(sig, _signal.SIG_DFL)
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


def spawn_command(
    ref: HolderRef,
    launch: Launch,
    *,
    stdin: int = 0,
    stdout: int = 1,
    stderr: int = 2,
    foreground: int | None = None,
) -> int:
    """Fork a process that runs *launch* in the session; returns its pid (waitpid gives the command's status).

    The process joins the holder and forks the command there (the caller
    stays outside the session's namespaces, and may have threads); it relays
    INT, TERM, HUP and QUIT to the command and ends as the command ended. With
    *foreground* (a terminal), it is the terminal's foreground job, as
    :func:`core.process.spawn` makes it.
    """
    from ..process import run_child

    pid = os.fork()
    if pid == 0:
        run_child(launch, lambda: exec_joined(ref, launch), stdin, stdout, stderr, foreground)
    return pid


# --- processes and the end -----------------------------------------------------------------


def _pid_ns(pid: int | str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/pid")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def processes(ref: HolderRef) -> list[int]:
    """Host pids of the processes in the session (its pid namespace), the holder excepted."""
    ns = _pid_ns(ref.pid)
    if ns is None or not alive(ref):
        return []
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != ref.pid and _pid_ns(name) == ns:
            found.append(int(name))
    return found


def _kill_and_wait(ref: HolderRef, timeout: float = 30.0) -> bool:
    """SIGKILL the holder (the kernel then kills its whole pid namespace); True once it is gone."""
    import _signal

    try:
        fd = userns.open_process(ref.pid, ref.start)
    except ProcessLookupError:
        return True
    try:
        _signal.pidfd_send_signal(fd, _SIGKILL)
        return userns.wait_exit(fd, timeout)
    except ProcessLookupError:
        return True
    finally:
        os.close(fd)


def call_inside(ref: HolderRef, fn: Callable[[], Any]) -> Any:
    """Call *fn* in a child joined to the holder's user and mount namespaces, as their root.

    The session stays up; *fn* sees its mounts (promote takes the host's
    users out of its databases this way). Returns what *fn* returns.
    """
    try:
        fd = userns.open_process(ref.pid, ref.start)
    except ProcessLookupError:
        raise Conflict(f"the holder {ref.pid} of the session is gone") from None

    def inside() -> Any:
        try:
            userns.setns(fd, userns.CLONE_NEWUSER | userns.CLONE_NEWNS)
        except OSError as e:
            raise _join_failure(ref, e) from None
        userns.become_root()  # files it writes are root's inside, as the image's are
        os.chdir("/")
        return fn()

    try:
        return userns.run_forked(inside, keep=(fd,))
    finally:
        os.close(fd)


def retire(ref: HolderRef) -> bool:
    """Ask a holder that retires (``ref.retires``) to end its session, and wait until it has exited.

    True when it exited by itself within :data:`RETIRE_WAIT`; the caller
    then checks that the clone is gone (a holder that failed half-way
    leaves the rest). False when it could not be asked or did not finish:
    it is killed then, and the caller removes the clone in a fresh
    namespace. Raises :class:`Conflict` when the holder is already gone.
    """
    import _signal

    try:
        fd = userns.open_process(ref.pid, ref.start)
    except ProcessLookupError:
        raise Conflict(f"the holder {ref.pid} of the session is gone") from None
    try:
        try:
            _signal.pidfd_send_signal(fd, _retire_signal())
            _signal.pidfd_send_signal(fd, _SIGCONT)  # a stopped holder could not retire
        except ProcessLookupError:
            return True
        except OSError:  # EAGAIN: the session flooded the queue of real-time signals
            pass
        else:
            if userns.wait_exit(fd, RETIRE_WAIT):
                return True
        _signal.pidfd_send_signal(fd, _SIGKILL)
        userns.wait_exit(fd, RETIRE_WAIT)
        return False
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def stop(ref: HolderRef, after: Callable[[], Any] | None = None) -> Any:
    """End a live holder: kill everything in the session, then call *after* as root of its user namespace.

    A child joins the holder's user namespace (only: joining its mount
    namespace too would keep the mounts alive until the child exits, and
    cost a second teardown), kills the holder through its pidfd and waits
    until it is gone. The kernel kills the rest of the pid namespace first,
    and the mount namespace — the session's mounts with it — goes with its
    last member, before the holder counts as exited. *after* (removing the
    clone, or staging its upper directory for a promote) then touches files
    owned by subordinate ids with nothing mounted on them anywhere. Returns
    what *after* returns. Raises :class:`Conflict` when the holder is already
    gone (call :func:`core.rootless.userns.run_mapped` instead).
    """
    try:
        fd = userns.open_process(ref.pid, ref.start)
    except ProcessLookupError:
        raise Conflict(f"the holder {ref.pid} of the session is gone") from None

    def inside() -> Any:
        import _signal

        try:
            userns.setns(fd, userns.CLONE_NEWUSER)
        except OSError as e:
            raise _join_failure(ref, e) from None
        userns.become_root()
        _signal.pidfd_send_signal(fd, _SIGKILL)
        if not userns.wait_exit(fd, 30.0):
            raise SystemFailure(f"the holder {ref.pid} survives SIGKILL")
        return after() if after is not None else None

    try:
        return userns.run_forked(inside, keep=(fd,))
    finally:
        os.close(fd)
