"""The few Linux system calls Python's ``os`` module does not offer.

mount(2), umount2(2), syncfs(2), openat2(2) with RESOLVE_IN_ROOT, statx(2)
for a mount id and the new mount API (fsopen, fsconfig, fsmount) for a
detached mount, called through ctypes so that setting up a session costs a
handful of system calls instead of a dozen ``mount`` processes.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_STRICTATIME = 0x1000000

# umount2(2) flags
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

# openat2(2) resolve flags
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_IN_ROOT = 0x10
AT_FDCWD = -100

_SYS_OPENAT2 = 437
_SYS_FSOPEN = 430  # the new mount API has the same numbers on every architecture
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_FSOPEN_CLOEXEC = 0x1
_FSCONFIG_CMD_CREATE = 6
_FSMOUNT_CLOEXEC = 0x1
_SYS_STATX = 332
_STATX_MNT_ID = 0x1000
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_EMPTY_PATH = 0x1000

_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.syncfs.argtypes = [ctypes.c_int]
_libc.syscall.restype = ctypes.c_long


def _fs(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def _raise(what: str, path: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}", path)


def mount(
    source: str | None,
    target: str,
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2); raises OSError with the target as filename."""
    if _libc.mount(_fs(source), _fs(target), _fs(fstype), flags, _fs(data)) != 0:
        _raise("mount", target)


def umount(target: str, flags: int = 0) -> None:
    """umount2(2); raises OSError (EBUSY, EINVAL when not a mount point …)."""
    if _libc.umount2(_fs(target), flags | UMOUNT_NOFOLLOW) != 0:
        _raise("umount", target)


def syncfs(fd: int) -> None:
    """Flush the whole file system holding *fd* (one call instead of an fsync per file)."""
    if _libc.syncfs(fd) != 0:
        _raise("syncfs", f"fd {fd}")


def detached_mount(fstype: str) -> int:
    """A new mount of the pseudo file system *fstype* that is in no mount table: an O_PATH descriptor
    of its root (fsopen, fsconfig, fsmount). It goes when the descriptor is closed, so nothing is
    ever left mounted; raises OSError where the kernel lacks the new mount API (before 5.2)."""
    fs = _libc.syscall(ctypes.c_long(_SYS_FSOPEN), ctypes.c_char_p(fstype.encode()), ctypes.c_uint(_FSOPEN_CLOEXEC))
    if fs < 0:
        _raise("fsopen", fstype)
    try:
        if (
            _libc.syscall(
                ctypes.c_long(_SYS_FSCONFIG),
                ctypes.c_int(fs),
                ctypes.c_uint(_FSCONFIG_CMD_CREATE),
                None,
                None,
                ctypes.c_int(0),
            )
            < 0
        ):
            _raise("fsconfig", fstype)
        fd = _libc.syscall(
            ctypes.c_long(_SYS_FSMOUNT), ctypes.c_int(fs), ctypes.c_uint(_FSMOUNT_CLOEXEC), ctypes.c_uint(0)
        )
        if fd < 0:
            _raise("fsmount", fstype)
        return int(fd)
    finally:
        os.close(fs)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open *path* below *dirfd* with the given RESOLVE_* rules."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd = _libc.syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        _raise("openat2", path)
    return int(fd)


class _StatxTimestamp(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32), ("_pad", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    _fields_ = [
        ("stx_mask", ctypes.c_uint32),
        ("stx_blksize", ctypes.c_uint32),
        ("stx_attributes", ctypes.c_uint64),
        ("stx_nlink", ctypes.c_uint32),
        ("stx_uid", ctypes.c_uint32),
        ("stx_gid", ctypes.c_uint32),
        ("stx_mode", ctypes.c_uint16),
        ("_pad1", ctypes.c_uint16),
        ("stx_ino", ctypes.c_uint64),
        ("stx_size", ctypes.c_uint64),
        ("stx_blocks", ctypes.c_uint64),
        ("stx_attributes_mask", ctypes.c_uint64),
        ("stx_atime", _StatxTimestamp),
        ("stx_btime", _StatxTimestamp),
        ("stx_ctime", _StatxTimestamp),
        ("stx_mtime", _StatxTimestamp),
        ("stx_rdev_major", ctypes.c_uint32),
        ("stx_rdev_minor", ctypes.c_uint32),
        ("stx_dev_major", ctypes.c_uint32),
        ("stx_dev_minor", ctypes.c_uint32),
        ("stx_mnt_id", ctypes.c_uint64),
        ("_spare", ctypes.c_uint64 * 13),
    ]


def mount_id(fd: int, name: str = "") -> int:
    """The id of the mount holding the open file *fd*, or its entry *name* (statx STATX_MNT_ID).

    Two directories on the same file system but under different bind mounts
    have the same st_dev; only the mount id tells them apart. With *name*, a
    symbolic link is not followed, and a mount point gives the id of the
    mount on it.
    """
    buf = _Statx()
    rc = _libc.syscall(
        ctypes.c_long(_SYS_STATX),
        ctypes.c_int(fd),
        ctypes.c_char_p(os.fsencode(name)),
        ctypes.c_int((0 if name else _AT_EMPTY_PATH) | _AT_SYMLINK_NOFOLLOW),
        ctypes.c_uint(_STATX_MNT_ID),
        ctypes.byref(buf),
    )
    if rc != 0:
        _raise("statx", name or f"fd {fd}")
    if not buf.stx_mask & _STATX_MNT_ID:
        raise OSError(95, "statx: the kernel does not report mount ids", f"fd {fd}")
    return int(buf.stx_mnt_id)


RENAME_EXCHANGE = 2
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_AT_FDCWD = AT_FDCWD


def exchange(a: str, b: str) -> None:
    """renameat2(RENAME_EXCHANGE): swap two paths atomically (both must exist)."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        _raise("renameat2", a)
