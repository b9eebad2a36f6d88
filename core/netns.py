"""A session's own network namespace (``network: none``): made, joined, kept, removed.

A network namespace lives as long as something refers to it. roost makes one
with ``unshare(CLONE_NEWNET)`` in the calling thread, brings its ``lo`` up,
bind-mounts the thread's ``ns/net`` on ``<run>/netns/<id>`` (what ``ip netns
add`` does) and returns to the namespace it came from, all without a process.
The bind mount keeps the namespace alive between commands; every ``run`` and
``enter`` joins it with one ``setns(2)`` on that file before its chroot
(:func:`join`, on the hot path: ``os`` and ``_ctypes`` only, no ``ctypes``
package); ``end`` unmounts it, and the kernel frees the namespace when the
last process in it is gone.

``setns`` only ever moves the caller: switching a live session's network
changes what its *next* commands join, never the namespace of a process
already running (:mod:`core.isolation`).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
#: statfs f_type of nsfs, where every namespace file lives
NSFS_MAGIC = 0x6E736673

_functions: dict[str, Any] = {}


def _call(name: str, *args: int) -> None:
    """Call libc's *name* through ``_ctypes`` alone (the ``ctypes`` package costs ~7 ms to import, this ~0.2 ms)."""
    import _ctypes

    c: Any = _ctypes  # the private API that ctypes itself is built on
    fn = _functions.get(name)
    if fn is None:

        class _Int(c._SimpleCData):  # type: ignore[misc,name-defined]
            _type_ = "i"

        class _Fn(c.CFuncPtr):  # type: ignore[misc,name-defined]
            _flags_ = c.FUNCFLAG_CDECL | c.FUNCFLAG_USE_ERRNO
            _restype_ = _Int

        class _Lib:
            _handle = c.dlopen(None, 2)  # RTLD_NOW: the running program, libc included

        fn = _functions[name] = _Fn((name, _Lib()))
    if fn(*args) != 0:
        err = c.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _libc_setns(fd: int, nstype: int) -> None:
    _call("setns", fd, nstype)


def join(path: str) -> None:
    """Move the calling thread into the network namespace kept at *path*."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _libc_setns(fd, CLONE_NEWNET)
    finally:
        os.close(fd)


def is_kept(path: str) -> bool:
    """True when *path* is a namespace file bind-mounted in place (not the empty file under it)."""
    try:
        st = os.stat(path)
        return st.st_dev != os.stat(os.path.dirname(path)).st_dev and st.st_size == 0
    except OSError:
        return False


def _lo_up() -> None:
    """Bring ``lo`` up in the current thread's namespace (it then has 127.0.0.1 and ::1)."""
    import _socket
    import fcntl

    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = b"lo".ljust(16, b"\0") + b"\0" * 24
        flags = int.from_bytes(fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request)[16:18], "little")
        request = b"lo".ljust(16, b"\0") + (flags | _IFF_UP).to_bytes(2, "little") + b"\0" * 22
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, request)
    finally:
        sock.close()


def create(path: str) -> None:
    """Make a new network namespace with ``lo`` up and keep it at *path* (which must not exist)."""
    from . import syscalls

    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _call("unshare", CLONE_NEWNET)
        try:
            _lo_up()
            syscalls.mount("/proc/thread-self/ns/net", path, None, syscalls.MS_BIND)
        finally:
            _libc_setns(home, CLONE_NEWNET)
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    finally:
        os.close(home)


def remove(path: str) -> None:
    """Unmount and delete a kept namespace (idempotent); its processes keep it until they exit."""
    from . import syscalls

    for _ in range(4):  # a namespace file mounted twice (a concurrent recover) needs two
        if not is_kept(path):
            break
        try:
            syscalls.umount(path, syscalls.MNT_DETACH)
        except OSError:
            break
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def enter(path: str) -> int:
    """Move the calling thread into the namespace kept at *path*; a descriptor of the one it left, for :func:`leave`."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        join(path)
    except BaseException:
        os.close(home)
        raise
    return home


def leave(home: int) -> None:
    """Move the calling thread back into the namespace :func:`enter` left (and close *home*)."""
    try:
        _libc_setns(home, CLONE_NEWNET)
    finally:
        os.close(home)


class Entered:
    """``with Entered(path):`` — the calling thread in that namespace for a moment (None: stay)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.home = -1

    def __enter__(self) -> Entered:
        if self.path is not None:
            self.home = enter(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.home >= 0:
            home, self.home = self.home, -1
            leave(home)
