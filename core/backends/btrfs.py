"""btrfs: a generation is a read-only subvolume, a session a writable snapshot of it.

``generations/<n>/layer`` is a read-only subvolume; a session's clone
``sessions/<id>`` is a writable snapshot of it (O(1)), bind-mounted at the
session's mount point. Promote takes a read-only snapshot of the session
into the staging directory (O(1)); the engine renames it into place. All of
it must be on one btrfs file system: the state root's, or a pool directory
(``btrfs-pool:`` in roost.yaml) when the state root is elsewhere. With a
pool, the subvolumes live in ``<pool>/gen/<image>.<tx>`` and
``<pool>/session/<id>``, and ``layer`` and the clone are symbolic links to
them, made before the subvolume (so a crash leaves a link recover follows).

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
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from .. import mounts, syscalls
from ..errors import SystemFailure
from ..fsutil import remove_tree
from ..records import Session
from .base import Backend, GenerationPaths, NativeStream, Site

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..diff.trees import Pruner

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


def remove_subvolumes(path: str) -> None:
    """Delete the subvolume *path*, or the subvolumes in the directory tree *path*; other files stay.

    Never crosses a mount: refuses (deleting nothing) if anything is mounted below
    a tree that holds subvolumes.
    """
    if os.path.islink(path) or not os.path.isdir(path):
        return
    found = [path] if is_subvolume(path) else _nested_subvolumes(path)
    if not found:
        return  # a plain tree: left to the caller, which checks for mounts itself
    below = mounts.mounts_below(os.path.realpath(path))
    if below:
        raise SystemFailure(f"refusing to remove {path}: {below[0].target} is mounted below it")
    for subvolume in found:
        delete_subvolume(subvolume)


def remove_tree_and_subvolumes(path: str) -> None:
    """Remove *path*: subvolumes in it are deleted as subvolumes, the rest like :func:`remove_tree`."""
    remove_subvolumes(path)
    if os.path.lexists(path):
        remove_tree(path)


def _real(path: str) -> str:
    return os.path.realpath(path) if os.path.islink(path) else path


def _pool_of(subvolume: str) -> str | None:
    """The pool a pool subvolume (``<pool>/gen/x`` or ``<pool>/session/x``) lies in."""
    parent = os.path.dirname(subvolume)
    if os.path.basename(parent) in ("gen", "session"):
        return os.path.dirname(parent)
    return None


def remove_linked(link: str) -> None:
    """Remove a ``layer`` or clone link into a pool, and the subvolume it names."""
    target = os.readlink(link)
    if os.path.isabs(target) and _pool_of(target) is not None and is_subvolume(target):
        delete_subvolume(target)
    os.unlink(link)


class BtrfsBackend(Backend):
    name = "btrfs"
    always_flatten = True
    summary = "a generation is a read-only subvolume; a session is a writable snapshot of it"

    def discard(self, path: str) -> None:
        """Delete the pool subvolumes that links at *path* name, and the subvolumes in the tree at *path*.

        A link in ``sessions/`` is a clone in a pool; a ``layer`` link in a
        generation, staging or trash entry is a generation in a pool. On
        btrfs, subvolumes in the tree are deleted as subvolumes (a plain walk
        refuses them: each has its own st_dev), without crossing a mount;
        the rest of the tree is left to :func:`core.backends.discard`.
        """
        if os.path.islink(path):
            if os.path.basename(os.path.dirname(path)) == "sessions":
                remove_linked(path)  # a session's clone in a pool
            return
        if not os.path.isdir(path):
            return
        from . import structural_dirs

        for directory in structural_dirs(path):
            layer = os.path.join(directory, "layer")
            if os.path.islink(layer):
                remove_linked(layer)  # a generation in a pool
        if os.path.isdir(path) and on_btrfs(path):
            remove_subvolumes(path)

    def unavailable(self, site: Site) -> str | None:
        if not os.path.exists("/proc/fs/btrfs") and not _kernel_has("btrfs"):
            return "the kernel has no btrfs support (modprobe btrfs)"
        if site.btrfs_pool:
            if not os.path.isdir(site.btrfs_pool):
                return f"btrfs-pool {site.btrfs_pool} is not a directory"
            fstype = _fstype(site.btrfs_pool)
            return None if fstype == "btrfs" else f"btrfs-pool {site.btrfs_pool} is on {fstype}, not btrfs"
        fstype = _fstype(site.state_root)
        if fstype != "btrfs":
            return f"the state root {site.state_root} is on {fstype}, not btrfs (nor is btrfs-pool: set)"
        return None

    def storage(self, site: Site) -> str:
        where = site.btrfs_pool or os.path.join(site.state_root, "images")
        return f"read-only subvolumes in {where} (btrfs)"

    def init_generation(self, directory: str, site: Site, label: str) -> str:
        self.require(site)
        os.mkdir(directory, 0o700)
        tree = GenerationPaths(directory).tree
        if site.btrfs_pool:
            gens = os.path.join(site.btrfs_pool, "gen")
            os.makedirs(gens, mode=0o700, exist_ok=True)
            target = os.path.join(gens, label)
            os.symlink(target, tree)
            tree = target
        create_subvolume(tree)
        os.chmod(tree, 0o755)
        return tree

    def finish_generation(self, directory: str) -> None:
        set_readonly(_real(GenerationPaths(directory).tree))

    def generation_size(self, directory: str) -> int:
        from ..fsutil import tree_size

        return tree_size(_real(GenerationPaths(directory).tree))

    def sync(self, directory: str) -> None:
        from ..fsutil import sync_filesystem

        sync_filesystem(directory)
        tree = GenerationPaths(directory).tree
        if os.path.islink(tree):
            sync_filesystem(_real(tree))  # the pool is another file system

    def create_clone(self, session: Session) -> None:
        source = _real(session.lowers[0])
        pool = _pool_of(source) if source != session.lowers[0] else None
        if pool is None:
            snapshot(source, session.clone, readonly=False)
            return
        sessions = os.path.join(pool, "session")
        os.makedirs(sessions, mode=0o700, exist_ok=True)
        target = os.path.join(sessions, session.id)
        os.symlink(target, session.clone)
        snapshot(source, target, readonly=False)

    def has_clone(self, session: Session) -> bool:
        return is_subvolume(_real(session.clone))

    def mount(self, session: Session) -> None:
        clone = _real(session.clone)
        try:
            syscalls.mount(clone, session.mountpoint, None, syscalls.MS_BIND)
            syscalls.mount(None, session.mountpoint, None, syscalls.MS_PRIVATE)
        except OSError as e:
            raise SystemFailure(f"cannot bind {clone} at {session.mountpoint}: {e.strerror}") from None

    def remove_clone(self, session: Session) -> None:
        if os.path.islink(session.clone):
            remove_linked(session.clone)
        else:
            remove_tree_and_subvolumes(session.clone)

    def stage(self, session: Session, staging: str, *, flatten: bool, scratch: str) -> bool:
        tree = GenerationPaths(staging).tree
        clone = _real(session.clone)
        pool = _pool_of(clone) if clone != session.clone else None
        if pool is not None:
            target = os.path.join(pool, "gen", f"{session.image}.{os.path.basename(staging)}")
            os.symlink(target, tree)
            tree = target
        snapshot(clone, tree, readonly=True)
        return True

    def staged_size(self, session: Session, staging: str) -> int:
        # what the session wrote (like an overlay layer), found without walking the tree
        tree = _real(GenerationPaths(staging).tree)
        return written_since(tree, created_transid(_real(session.clone)))

    def changes(self, session: Session) -> int | None:
        try:
            clone = _real(session.clone)
            return written_since(clone, created_transid(clone))
        except (OSError, SystemFailure):
            return None

    def unstage(self, session: Session, staging: str) -> None:
        tree = GenerationPaths(staging).tree
        if os.path.islink(tree):
            remove_linked(tree)
        elif is_subvolume(tree):
            delete_subvolume(tree)

    @contextmanager
    def view(self, directory: str, lowers: list[str], scratch: str) -> Iterator[str]:
        yield _real(lowers[0])

    native_kind = "btrfs"

    def native(self, site: Site) -> NativeStream | None:
        from .btrfssend import BtrfsStream

        return BtrfsStream(site)

    # --- reading trees (diff) ---------------------------------------------------------

    shared_inodes = True
    search_method = "btrfs"
    search_summary = "entered only directories the btrfs tree search found changed"

    def in_place(self, path: str) -> str | None:
        return os.path.realpath(path)  # a subvolume, or the pool subvolume a link names

    def change_search(self, pairs: list[tuple[str, str]]) -> Pruner | None:
        """A tree search for inodes changed since each ancestor was sealed (see :mod:`.btrfschanges`)."""
        from ..fsutil import sync_filesystem
        from .btrfschanges import pruner, sealed_transid

        # btrfs writes inode changes into its tree at commit: commit first, then search.
        for path in sorted({tree for tree, _ in pairs}):
            sync_filesystem(path)
        return pruner([(tree, sealed_transid(ancestor)) for tree, ancestor in pairs])


def _fstype(path: str) -> str:
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    m = mounts.containing(os.path.realpath(probe))
    return m.fstype if m is not None else "unknown"


class _SearchKey(ctypes.Structure):
    _fields_ = [
        ("tree_id", ctypes.c_uint64),
        ("min_objectid", ctypes.c_uint64),
        ("max_objectid", ctypes.c_uint64),
        ("min_offset", ctypes.c_uint64),
        ("max_offset", ctypes.c_uint64),
        ("min_transid", ctypes.c_uint64),
        ("max_transid", ctypes.c_uint64),
        ("min_type", ctypes.c_uint32),
        ("max_type", ctypes.c_uint32),
        ("nr_items", ctypes.c_uint32),
        ("unused", ctypes.c_uint32),
        ("unused1", ctypes.c_uint64 * 4),
    ]


class _SearchArgs(ctypes.Structure):
    _fields_ = [("key", _SearchKey), ("buf", ctypes.c_char * (4096 - ctypes.sizeof(_SearchKey)))]


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_uint64), ("nsec", ctypes.c_uint32)]


class _SubvolInfo(ctypes.Structure):
    _fields_ = [
        ("treeid", ctypes.c_uint64),
        ("name", ctypes.c_char * 256),
        ("parent_id", ctypes.c_uint64),
        ("dirid", ctypes.c_uint64),
        ("generation", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("uuid", ctypes.c_uint8 * 16),
        ("parent_uuid", ctypes.c_uint8 * 16),
        ("received_uuid", ctypes.c_uint8 * 16),
        ("ctransid", ctypes.c_uint64),
        ("otransid", ctypes.c_uint64),
        ("stransid", ctypes.c_uint64),
        ("rtransid", ctypes.c_uint64),
        ("ctime", _Timespec),
        ("otime", _Timespec),
        ("stime", _Timespec),
        ("rtime", _Timespec),
        ("reserved", ctypes.c_uint64 * 8),
    ]


IOC_TREE_SEARCH = (3 << 30) | (ctypes.sizeof(_SearchArgs) << 16) | (_MAGIC << 8) | 17
IOC_GET_SUBVOL_INFO = _ior(60, ctypes.sizeof(_SubvolInfo))
_EXTENT_DATA_KEY = 108
_HEADER = 32  # struct btrfs_ioctl_search_header: transid, objectid, offset (u64); type, len (u32)
_FILE_EXTENT_INLINE = 0


def created_transid(path: str) -> int:
    """The transaction in which the subvolume (or snapshot) at *path* was created."""
    fd = os.open(path, _DIR)
    try:
        info = _SubvolInfo()
        buf = bytearray(info)
        fcntl.ioctl(fd, IOC_GET_SUBVOL_INFO, buf)
        return int(_SubvolInfo.from_buffer(buf).otransid)
    finally:
        os.close(fd)


def subvolume_uuids(path: str) -> tuple[str, str]:
    """(uuid, received uuid) of the subvolume at *path*, as hex ("" for a received uuid never set)."""
    fd = os.open(path, _DIR)
    try:
        buf = bytearray(_SubvolInfo())
        fcntl.ioctl(fd, IOC_GET_SUBVOL_INFO, buf)
        info = _SubvolInfo.from_buffer(buf)
        received = bytes(info.received_uuid)
        return bytes(info.uuid).hex(), "" if received == bytes(16) else received.hex()
    except OSError as e:
        raise SystemFailure(f"cannot read the uuids of {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def real_path(path: str) -> str:
    """The subvolume a ``layer`` or clone path names (itself, or the pool subvolume it links to)."""
    return _real(path)


def uses_pool(path: str) -> bool:
    """True when the generation or clone at *path* is a link into a btrfs pool."""
    return os.path.islink(path)


def written_since(path: str, transid: int) -> int:
    """Bytes of file data the subvolume at *path* got after transaction *transid*.

    Walks only what changed: the tree search skips every node older than
    *transid* (this is ``btrfs subvolume find-new``), so the cost follows the
    size of the change, not of the tree.
    """
    fd = os.open(path, _DIR)
    total = 0
    try:
        args = _SearchArgs()
        key = args.key
        key.tree_id = 0  # the subvolume of fd
        key.max_objectid = key.max_offset = key.max_transid = (1 << 64) - 1
        key.min_transid = transid + 1
        key.min_type = key.max_type = _EXTENT_DATA_KEY
        while True:
            key.nr_items = 4096
            buf = bytearray(args)
            fcntl.ioctl(fd, IOC_TREE_SEARCH, buf)
            done = _SearchArgs.from_buffer(buf)
            count = done.key.nr_items
            if count == 0:
                return total
            data = bytes(buf[ctypes.sizeof(_SearchKey) :])
            pos = 0
            objectid = offset = 0
            item_type = _EXTENT_DATA_KEY
            for _ in range(count):
                _, objectid, offset, item_type, length = struct.unpack_from("<QQQII", data, pos)
                item = data[pos + _HEADER : pos + _HEADER + length]
                pos += _HEADER + length
                if item_type != _EXTENT_DATA_KEY or len(item) < 21:
                    continue
                generation, ram_bytes = struct.unpack_from("<QQ", item)
                if generation <= transid:
                    continue
                if item[20] == _FILE_EXTENT_INLINE:
                    total += ram_bytes
                elif len(item) >= 53:
                    total += struct.unpack_from("<Q", item, 45)[0]  # num_bytes
            key.min_objectid, key.min_type, key.min_offset = objectid, item_type, offset
            if offset < (1 << 64) - 1:
                key.min_offset = offset + 1
            elif objectid < (1 << 64) - 1:
                key.min_objectid, key.min_type, key.min_offset = objectid + 1, 0, 0
            else:
                return total
    except OSError as e:
        raise SystemFailure(f"cannot measure {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def _kernel_has(fstype: str) -> bool:
    try:
        with open("/proc/filesystems", encoding="utf-8") as f:
            return any(line.split()[-1] == fstype for line in f if line.strip())
    except OSError:
        return False
