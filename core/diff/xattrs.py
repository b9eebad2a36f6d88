"""Extended attributes of an entry named by a directory descriptor and a name, never followed.

Linux 6.13 added ``listxattrat(2)`` and ``getxattrat(2)``; called here through
ctypes. On older kernels the entry is named ``/proc/self/fd/N/NAME`` instead:
as safe (the last component is not followed, the directory is the one the
descriptor holds) but several times slower, as the path walks through /proc.
Errors are raised as :class:`OSError` with the errno, like ``os.listxattr``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_syscall = _libc.syscall

_SYS_GETXATTRAT = ctypes.c_long(464)  # one number on every architecture (the unified table, 6.13)
_SYS_LISTXATTRAT = ctypes.c_long(465)
_NOFOLLOW = ctypes.c_uint(0x100)  # AT_SYMLINK_NOFOLLOW
_MAX = 65536  # XATTR_LIST_MAX and XATTR_SIZE_MAX


class _XattrArgs(ctypes.Structure):
    _fields_ = [("value", ctypes.c_uint64), ("size", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


_buffer = ctypes.create_string_buffer(_MAX)
_address = ctypes.addressof(_buffer)
_args = _XattrArgs(_address, _MAX, 0)
_args_size = ctypes.c_size_t(ctypes.sizeof(_XattrArgs))
_list_size = ctypes.c_size_t(_MAX)
_native: bool | None = None  # unknown until the first call
_lock = threading.Lock()  # one shared buffer: one call at a time


def _fail() -> None:
    err = ctypes.get_errno()
    raise OSError(err, os.strerror(err))


def names(dirfd: int, name: str) -> list[str]:
    """The names of the extended attributes of *name* in the directory *dirfd* (itself if *name* is empty)."""
    global _native
    if not name:
        return os.listxattr(dirfd)
    if _native is not False:
        with _lock:
            n = _syscall(_SYS_LISTXATTRAT, ctypes.c_int(dirfd), os.fsencode(name), _NOFOLLOW, _buffer, _list_size)
            if n >= 0:
                _native = True
                return [os.fsdecode(a) for a in ctypes.string_at(_address, n).split(b"\0") if a]
            if ctypes.get_errno() != errno.ENOSYS:
                _fail()
            _native = False
    return os.listxattr(f"/proc/self/fd/{dirfd}/{name}", follow_symlinks=False)


def get(dirfd: int, name: str, attr: str) -> bytes:
    """The value of attribute *attr* of *name* in the directory *dirfd* (OSError ENODATA if it has none)."""
    global _native
    if not name:
        return os.getxattr(dirfd, attr)
    if _native is not False:
        with _lock:
            n = _syscall(
                _SYS_GETXATTRAT,
                ctypes.c_int(dirfd),
                os.fsencode(name),
                _NOFOLLOW,
                os.fsencode(attr),
                ctypes.byref(_args),
                _args_size,
            )
            if n >= 0:
                _native = True
                return ctypes.string_at(_address, n)
            if ctypes.get_errno() != errno.ENOSYS:
                _fail()
            _native = False
    return os.getxattr(f"/proc/self/fd/{dirfd}/{name}", attr, follow_symlinks=False)
