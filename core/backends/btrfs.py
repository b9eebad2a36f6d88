"""btrfs: a generation is a read-only subvolume, a session a writable snapshot of it.

``generations/<n>/layer`` is a read-only subvolume; a session's clone
``sessions/<id>`` is a writable snapshot of it (O(1)), bind-mounted at the
session's mount point. Promote takes a read-only snapshot of the session
into the staging directory (O(1)); the engine renames it into place. All of
it must be on one btrfs file system: the state root's.

Subvolumes are created, snapshotted and deleted with the kernel's btrfs
ioctls (what ``btrfs subvolume`` and libbtrfsutil call), never with a
recursive remove: deleting a subvolume drops its tree in one call.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat

from .. import mounts, syscalls
from ..errors import SystemFailure
from ..fsutil import remove_tree
from ..records import Session
from .base import Backend, GenerationPaths, Site

_MAGIC = 0x94
_NAME_MAX = 4039
SUBVOL_RDONLY = 1 << 1
FIRST_FREE_OBJECTID = 256  # the inode number of every subvolume's root directory


class _VolArgsV2(ctypes.Structure):
    _fields_ = [
        ("fd", ctypes.c_int64),
        ("transid", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("unused", ctypes.c_uint64 * 4),
        ("name", ctypes.c_char * (_NAME_MAX + 1)),
    ]


class _VolArgs(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int64), ("name", ctypes.c_char * 4088)]


def _iow(nr: int, size: int) -> int:
    return (1 << 30) | (size << 16) | (_MAGIC << 8) | nr


def _ior(nr: int, size: int) -> int:
    return (2 << 30) | (size << 16) | (_MAGIC << 8) | nr


IOC_SNAP_CREATE_V2 = _iow(23, ctypes.sizeof(_VolArgsV2))
IOC_SUBVOL_CREATE_V2 = _iow(24, ctypes.sizeof(_VolArgsV2))
IOC_SNAP_DESTROY = _iow(15, ctypes.sizeof(_VolArgs))
IOC_SUBVOL_GETFLAGS = _ior(25, 8)
IOC_SUBVOL_SETFLAGS = _iow(26, 8)

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _name(path: str) -> bytes:
    name = os.fsencode(os.path.basename(path))
    if not name or len(name) > _NAME_MAX:
        raise SystemFailure(f"bad subvolume name {path!r}")
    return name


def create_subvolume(path: str) -> None:
    parent = os.open(os.path.dirname(path), _DIR)
    try:
        args = _VolArgsV2()
        args.name = _name(path)
        fcntl.ioctl(parent, IOC_SUBVOL_CREATE_V2, bytearray(args))
    except OSError as e:
        raise SystemFailure(f"cannot create subvolume {path}: {e.strerror}") from None
    finally:
        os.close(parent)


def snapshot(source: str, dest: str, *, readonly: bool) -> None:
    """Snapshot the subvolume *source* as the new subvolume *dest* (same file system)."""
    src = os.open(source, _DIR)
    try:
        parent = os.open(os.path.dirname(dest), _DIR)
        try:
            args = _VolArgsV2()
            args.fd = src
            args.flags = SUBVOL_RDONLY if readonly else 0
            args.name = _name(dest)
            fcntl.ioctl(parent, IOC_SNAP_CREATE_V2, bytearray(args))
        finally:
            os.close(parent)
    except OSError as e:
        raise SystemFailure(f"cannot snapshot {source} as {dest}: {e.strerror}") from None
    finally:
        os.close(src)


def set_readonly(path: str, readonly: bool = True) -> None:
    fd = os.open(path, _DIR)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, IOC_SUBVOL_GETFLAGS, buf)
        flags = int.from_bytes(buf, "little")
        flags = flags | SUBVOL_RDONLY if readonly else flags & ~SUBVOL_RDONLY
        fcntl.ioctl(fd, IOC_SUBVOL_SETFLAGS, flags.to_bytes(8, "little"))
    except OSError as e:
        raise SystemFailure(f"cannot make {path} read-only: {e.strerror}") from None
    finally:
        os.close(fd)


def is_subvolume(path: str) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_ino == FIRST_FREE_OBJECTID and on_btrfs(path)


def on_btrfs(path: str) -> bool:
    m = mounts.containing(os.path.realpath(path))
    return m is not None and m.fstype == "btrfs"


def delete_subvolume(path: str) -> None:
    """Delete the subvolume at *path* (and subvolumes nested in it), never through a mount."""
    below = mounts.mounts_below(os.path.realpath(path))
    if below:
        raise SystemFailure(f"refusing to delete subvolume {path}: {below[0].target} is mounted below it")
    for _ in range(2):
        parent = os.open(os.path.dirname(path), _DIR)
        try:
            args = _VolArgs()
            args.name = _name(path)
            fcntl.ioctl(parent, IOC_SNAP_DESTROY, bytearray(args))
            return
        except OSError as e:
            if e.errno == errno.ENOENT:
                return
            if e.errno != errno.ENOTEMPTY:
                raise SystemFailure(f"cannot delete subvolume {path}: {e.strerror}") from None
        finally:
            os.close(parent)
        for nested in _nested_subvolumes(path):  # made by a command inside a session
            delete_subvolume(nested)
    raise SystemFailure(f"cannot delete subvolume {path}: it still holds subvolumes")


def _nested_subvolumes(path: str) -> list[str]:
    """Subvolumes directly nested in the subvolume *path* (not below them), on the same mount."""
    top = os.open(path, _DIR)
    try:
        mnt = syscalls.mount_id(top)
        dev = os.fstat(top).st_dev
    finally:
        os.close(top)
    found = []
    stack = [path]
    while stack:
        where = stack.pop()
        with os.scandir(where) as it:
            for entry in it:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                if st.st_dev == dev:
                    stack.append(entry.path)
                    continue
                fd = os.open(entry.path, _DIR)
                try:
                    same_mount = syscalls.mount_id(fd) == mnt
                finally:
                    os.close(fd)
                if same_mount and st.st_ino == FIRST_FREE_OBJECTID:
                    found.append(entry.path)
    return found


def remove_tree_and_subvolumes(path: str) -> None:
    """Remove *path*: subvolumes in it are deleted as subvolumes, the rest like :func:`remove_tree`.

    Never crosses a mount: refuses (removing nothing) if anything is mounted below.
    """
    if not os.path.lexists(path):
        return
    below = mounts.mounts_below(os.path.realpath(path))
    if below:
        raise SystemFailure(f"refusing to remove {path}: {below[0].target} is mounted below it")
    if is_subvolume(path):
        delete_subvolume(path)
        return
    if os.path.isdir(path) and not os.path.islink(path):
        for nested in _nested_subvolumes(path):
            delete_subvolume(nested)
    remove_tree(path)


class BtrfsBackend(Backend):
    name = "btrfs"
    always_flatten = True
    summary = "a generation is a read-only subvolume; a session is a writable snapshot of it"

    def unavailable(self, site: Site) -> str | None:
        if not os.path.exists("/proc/fs/btrfs") and not _kernel_has("btrfs"):
            return "the kernel has no btrfs support (modprobe btrfs)"
        probe = site.state_root
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        m = mounts.containing(os.path.realpath(probe))
        fstype = m.fstype if m is not None else "unknown"
        if fstype != "btrfs":
            return f"the state root {site.state_root} is on {fstype}, not btrfs"
        return None

    def storage(self, site: Site) -> str:
        return f"read-only subvolumes in {os.path.join(site.state_root, 'images')} (btrfs)"

    def init_generation(self, directory: str, site: Site, label: str) -> str:
        self.require(site)
        os.mkdir(directory, 0o700)
        tree = GenerationPaths(directory).tree
        create_subvolume(tree)
        os.chmod(tree, 0o755)
        return tree

    def finish_generation(self, directory: str) -> None:
        set_readonly(GenerationPaths(directory).tree)

    def create_clone(self, session: Session) -> None:
        snapshot(session.lowers[0], session.clone, readonly=False)

    def has_clone(self, session: Session) -> bool:
        return is_subvolume(session.clone)

    def mount(self, session: Session) -> None:
        try:
            syscalls.mount(session.clone, session.mountpoint, None, syscalls.MS_BIND)
            syscalls.mount(None, session.mountpoint, None, syscalls.MS_PRIVATE)
        except OSError as e:
            raise SystemFailure(f"cannot bind {session.clone} at {session.mountpoint}: {e.strerror}") from None

    def remove_clone(self, session: Session) -> None:
        remove_tree_and_subvolumes(session.clone)

    def stage(self, session: Session, staging: str, *, flatten: bool, scratch: str) -> bool:
        snapshot(session.clone, GenerationPaths(staging).tree, readonly=True)
        return True

    def unstage(self, session: Session, staging: str) -> None:
        tree = GenerationPaths(staging).tree
        if is_subvolume(tree):
            delete_subvolume(tree)


def _kernel_has(fstype: str) -> bool:
    try:
        with open("/proc/filesystems", encoding="utf-8") as f:
            return any(line.split()[-1] == fstype for line in f if line.strip())
    except OSError:
        return False
