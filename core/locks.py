"""flock(2) locks that say who holds them, and leases that outlive a process.

Locks live in ``<run root>/locks``, a directory that must be root's and mode
0700 (never a world-writable one such as /var/lock, where anyone could plant
a file or a symlink). An exclusive holder writes a small JSON record (pid,
process start time, user, operation, since) into the lock file it holds; the
kernel releases the flock when the holder dies, and the leftover record is
then shown as *stale* and overwritten by the next holder.

Waits are bounded: a waiter polls with a growing back-off, announces itself
in a ``<lock>.wait-<pid>`` file (so the console can list who waits), tells
its caller once who it waits for, and gives up with :class:`Conflict` after
the configured timeout.

A *lease* is a lock held by something that is not a process: the writer
lease of an image belongs to its maintenance session for as long as the
session exists, across commands and reboots. Leases are JSON files in the
state root, changed only under the image's flock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

from . import fastjson, procs
from .actor import Actor, now_iso
from .errors import Conflict, SystemFailure
from .struct import Struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Callable

LOCK_SUFFIX = ".lock"
WAIT_MARK = ".wait-"
# A transaction's lock whose process died is released by the children it forked within
# milliseconds (they exec, closing it, or die with it); recover waits this long for them.
TX_STRAGGLER_GRACE = 1.0


def ensure_lock_dir(path: str, what: str = "lock directory") -> str:
    """Create a root-only directory (locks, cache), or check that the existing one is safe."""
    parent = os.path.dirname(path)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise SystemFailure(f"{what} {path} is not a directory (a symlink?); refusing to use it")
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise SystemFailure(
            f"{what} {path} must be owned by uid {os.geteuid()} with mode 0700 "
            f"(it has uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it"
        )
    return path


class Holder(Struct, frozen=True):
    pid: int | None
    user: str
    operation: str
    since: str
    start: int | None = None

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid else "no process"
        return f"{who} ({self.user}, {self.operation}, since {self.since})"

    def to_json(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "start": self.start,
            "user": self.user,
            "operation": self.operation,
            "since": self.since,
        }

    @classmethod
    def from_json(cls, data: object) -> Holder | None:
        if not isinstance(data, dict):
            return None
        pid = data.get("pid")
        start = data.get("start")
        return cls(
            pid=pid if isinstance(pid, int) else None,
            user=str(data.get("user", "?")),
            operation=str(data.get("operation", "?")),
            since=str(data.get("since", "?")),
            start=start if isinstance(start, int) else None,
        )


def _orphaned(holder: Holder | None) -> bool:
    """True if *holder* names a process that is gone (a lock record being written names no one yet)."""
    return holder is not None and holder.pid is not None and not procs.alive(holder.pid, holder.start)


def _read_record(fd_or_path: int | str) -> Holder | None:
    try:
        if isinstance(fd_or_path, int):
            raw = os.pread(fd_or_path, 4096, 0)
        else:
            with open(fd_or_path, "rb") as f:
                raw = f.read(4096)
    except OSError:
        return None
    if not raw.strip():
        return None
    try:
        return Holder.from_json(fastjson.loads(raw.decode("utf-8", "replace")))
    except ValueError:
        return None


class Lock:
    """One named flock in the lock directory; use as a context manager or acquire/release."""

    def __init__(self, lock_dir: str, name: str, actor: Actor, *, timeout: float = 60.0) -> None:
        self.lock_dir = lock_dir
        self.name = name
        self.path = os.path.join(lock_dir, name + LOCK_SUFFIX)
        self.actor = actor
        self.timeout = timeout
        self.fd: int | None = None
        self.exclusive = False

    def acquire(
        self,
        operation: str,
        *,
        exclusive: bool = True,
        wait: bool = True,
        on_wait: Callable[[str], None] | None = None,
        straggler_grace: float = 0.0,
    ) -> Lock:
        """Take the lock, waiting up to the timeout unless *wait* is false.

        *straggler_grace*: for a lock only ever held exclusively by the process
        it records (a transaction's), wait up to this long when that process
        is dead but a child it forked still holds the descriptor.
        """
        if self.fd is not None:
            raise RuntimeError(f"lock {self.name} already held")
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        started = time.monotonic()
        announced = told = False
        straggler_deadline: float | None = None
        wait_file: str | None = None
        try:
            while True:
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
                except OSError as e:
                    hint = " (a symlink planted there?)" if e.errno == errno.ELOOP else ""
                    raise SystemFailure(f"cannot open lock file {self.path}: {e.strerror}{hint}") from None
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read_record(fd)
                    os.close(fd)
                    if straggler_grace and _orphaned(holder):
                        # The recorded holder is dead, yet the flock is held: by a child it
                        # forked that has not exec'd (closing the descriptor) or died with it
                        # yet, a matter of milliseconds. A caller asking "does anyone still
                        # work on this?" must not take that straggler for work.
                        if straggler_deadline is None:
                            straggler_deadline = time.monotonic() + straggler_grace
                        if time.monotonic() < straggler_deadline:
                            time.sleep(delay)
                            delay = min(delay * 2, 0.05)
                            continue
                    if not wait or time.monotonic() >= deadline:
                        who = holder.describe() if holder else "another process"
                        waited = "" if not wait else f"; gave up after {self.timeout:g} s"
                        raise Conflict(f"{self.describe()} is held by {who}{waited}") from None
                    if not announced:
                        wait_file = self._announce_wait(operation)
                        announced = True
                    if not told and on_wait is not None and time.monotonic() - started >= 0.2:
                        who = holder.describe() if holder else "another process"
                        on_wait(f"waiting for {self.describe()}, held by {who}")
                        told = True
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
                    continue
                except BaseException:
                    os.close(fd)
                    raise
                # The file may have been unlinked by its last holder between our open
                # and our flock; a lock on an unlinked inode protects nothing.
                try:
                    if os.fstat(fd).st_ino != os.stat(self.path, follow_symlinks=False).st_ino:
                        raise FileNotFoundError
                except FileNotFoundError:
                    os.close(fd)
                    continue
                break
        finally:
            if wait_file is not None:
                _unlink_quietly(wait_file)
        self.fd = fd
        self.exclusive = exclusive
        if exclusive:
            self._write_record(operation)
        return self

    def _write_record(self, operation: str) -> None:
        assert self.fd is not None
        holder = Holder(
            pid=self.actor.pid,
            start=procs.starttime(self.actor.pid),
            user=self.actor.user,
            operation=operation,
            since=now_iso(),
        )
        data = fastjson.dumps(holder.to_json()).encode() + b"\n"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def _announce_wait(self, operation: str) -> str | None:
        path = f"{self.path}{WAIT_MARK}{self.actor.pid}"
        record = Holder(self.actor.pid, self.actor.user, operation, now_iso(), procs.starttime(self.actor.pid))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError:
            return None
        try:
            os.write(fd, fastjson.dumps(record.to_json()).encode())
        finally:
            os.close(fd)
        return path

    def release(self, *, remove: bool = False) -> None:
        """Release the lock; with *remove*, unlink the lock file first (while still held)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            if remove:
                _unlink_quietly(self.path)
            elif self.exclusive:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor drops the flock

    def describe(self) -> str:
        kind, _, what = self.name.partition(".")
        return f"the {kind} lock of {what}" if what else f"lock {self.name}"

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- inspection -----------------------------------------------------------------


class LockState(Struct, frozen=True):
    """What ``roost locks`` shows for one lock."""

    lock: str
    pid: int | None
    user: str
    operation: str
    since: str
    stale: bool
    mode: str  # "exclusive", "shared", "lease" or "waiting"

    def to_json(self) -> dict[str, object]:
        return {
            "lock": self.lock,
            "pid": self.pid,
            "user": self.user,
            "operation": self.operation,
            "since": self.since,
            "stale": self.stale,
            "mode": self.mode,
        }


def kernel_flocks(text: str | None = None) -> dict[int, list[tuple[int, str, bool]]]:
    """Inode -> [(pid, "WRITE"|"READ", blocked)] from /proc/locks (or *text* read from it), flock entries only."""
    table: dict[int, list[tuple[int, str, bool]]] = {}
    if text is None:
        try:
            with open("/proc/locks", encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError:
            return table
    for line in text.splitlines():
        parts = line.split()
        blocked = len(parts) > 1 and parts[1] == "->"
        if blocked:
            parts = parts[:1] + parts[2:]
        if len(parts) < 6 or parts[1] != "FLOCK":
            continue
        try:
            pid = int(parts[4])
            inode = int(parts[5].rsplit(":", 1)[1])
        except (ValueError, IndexError):
            continue
        table.setdefault(inode, []).append((pid, parts[3], blocked))
    return table


def lock_states(lock_dir: str, kernel: dict[int, list[tuple[int, str, bool]]] | None = None) -> list[LockState]:
    """Every lock in *lock_dir* that is held, stale or waited for (*kernel*: a :func:`kernel_flocks` table)."""
    try:
        names = sorted(os.listdir(lock_dir))
    except FileNotFoundError:
        return []
    if kernel is None:
        kernel = kernel_flocks()
    out: list[LockState] = []
    for name in names:
        path = os.path.join(lock_dir, name)
        if WAIT_MARK in name:
            lock = name.split(WAIT_MARK, 1)[0].removesuffix(LOCK_SUFFIX)
            rec = _read_record(path)
            if rec is None or not procs.alive(rec.pid, rec.start):
                continue  # a waiter that died: nothing to show
            out.append(LockState(lock, rec.pid, rec.user, rec.operation, rec.since, False, "waiting"))
            continue
        if not name.endswith(LOCK_SUFFIX):
            continue
        lock = name.removesuffix(LOCK_SUFFIX)
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            continue
        inode = st.st_ino
        # Released locks are empty files (a session's stays until it ends): nothing to read.
        rec = _read_record(path) if st.st_size else None
        holders = [h for h in kernel.get(inode, []) if not h[2]]
        writers = [h for h in holders if h[1] == "WRITE"]
        if writers:
            pid = writers[0][0]
            if rec is not None and rec.pid == pid:
                out.append(LockState(lock, pid, rec.user, rec.operation, rec.since, False, "exclusive"))
            else:
                out.append(LockState(lock, pid, "?", "?", "?", False, "exclusive"))
        elif holders:
            for pid, _, _ in holders:
                out.append(LockState(lock, pid, _owner_of(pid), "shared", "?", False, "shared"))
        elif rec is not None:
            out.append(LockState(lock, rec.pid, rec.user, rec.operation, rec.since, True, "exclusive"))
    return out


def _owner_of(pid: int) -> str:
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return "?"
    from .actor import user_name

    return user_name(uid)


# --- leases ---------------------------------------------------------------------


class Lease(Struct, frozen=True):
    """A lock owned by a session rather than a process (the image writer lock)."""

    session: str
    user: str
    operation: str
    since: str
    pid: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "session": self.session,
            "user": self.user,
            "operation": self.operation,
            "since": self.since,
            "pid": self.pid,
        }

    def describe(self) -> str:
        return f"session {self.session} ({self.user}, {self.operation}, since {self.since})"


def read_lease(path: str) -> Lease | None:
    try:
        with open(path, "rb") as f:
            data = fastjson.loads(f.read(4096).decode("utf-8", "replace"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return Lease(session="?", user="?", operation="unreadable lease", since="?")
    if not isinstance(data, dict) or not isinstance(data.get("session"), str):
        return Lease(session="?", user="?", operation="unreadable lease", since="?")
    pid = data.get("pid")
    return Lease(
        session=data["session"],
        user=str(data.get("user", "?")),
        operation=str(data.get("operation", "?")),
        since=str(data.get("since", "?")),
        pid=pid if isinstance(pid, int) else None,
    )


def write_lease(path: str, lease: Lease) -> None:
    from .fsutil import atomic_write

    atomic_write(path, fastjson.dumps(lease.to_json()) + "\n", durable=True)


def clear_lease(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
