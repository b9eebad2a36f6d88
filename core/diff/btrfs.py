"""Where two btrfs snapshots can differ, found in the file system's own tree.

Every btrfs inode records the transaction that last changed it. A session's
clone and every promoted generation are snapshots taken, step by step, from
an earlier generation, so an inode that no transaction touched since that
ancestor was sealed is the same object in both, with the same number. A tree
search with a minimum transaction id skips every unchanged node of the
subvolume's tree (this is ``btrfs subvolume find-new``): the cost follows
the size of the change, not of the tree. The changed inodes' paths
(``INO_PATHS``) name the directories a comparison has to enter; everything
else is skipped (see :class:`core.diff.trees.Pruner`).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import stat
import struct

from ..backends.btrfs import _HEADER, IOC_GET_SUBVOL_INFO, IOC_TREE_SEARCH, _SearchArgs, _SearchKey, _SubvolInfo
from ..errors import SystemFailure
from .trees import Pruner

_MAGIC = 0x94
_INODE_ITEM_KEY = 1
_INODE_ITEM_SIZE = 160
_ROOT_DIR = 256  # BTRFS_FIRST_FREE_OBJECTID: a subvolume's top directory
_MAX = (1 << 64) - 1
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _InoPathArgs(ctypes.Structure):
    _fields_ = [
        ("inum", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
        ("reserved", ctypes.c_uint64 * 4),
        ("fspath", ctypes.c_uint64),
    ]


IOC_INO_PATHS = (3 << 30) | (ctypes.sizeof(_InoPathArgs) << 16) | (_MAGIC << 8) | 35
_PATHS_BUFFER = 64 * 1024

#: Above this many changed inodes the search gives up and the caller walks both trees.
MAX_CHANGED = 200_000


class TooManyChanges(Exception):
    """More inodes changed than :data:`MAX_CHANGED`: walking the trees is the better plan."""


def sealed_transid(subvolume: str) -> int:
    """The transaction by which *subvolume* (a read-only generation) got its last change.

    The root item's generation: every change to the subvolume's tree
    rewrites its root, so no item in it is newer.
    """
    fd = os.open(subvolume, _DIR)
    try:
        buf = bytearray(ctypes.sizeof(_SubvolInfo))
        fcntl.ioctl(fd, IOC_GET_SUBVOL_INFO, buf)
        return int(_SubvolInfo.from_buffer(buf).generation)
    except OSError as e:
        raise SystemFailure(f"cannot read subvolume information of {subvolume}: {e.strerror}") from None
    finally:
        os.close(fd)


def changed_inodes(subvolume: str, since: int, limit: int = MAX_CHANGED) -> dict[int, bool]:
    """Inodes of *subvolume* changed after transaction *since*: number -> is a directory.

    Raises :class:`TooManyChanges` past *limit*.
    """
    fd = os.open(subvolume, _DIR)
    found: dict[int, bool] = {}
    try:
        args = _SearchArgs()
        key = args.key
        key.tree_id = 0  # the subvolume of fd
        key.max_objectid = key.max_offset = key.max_transid = _MAX
        key.max_type = 255
        key.min_transid = since + 1
        while True:
            key.nr_items = 4096
            buf = bytearray(args)
            fcntl.ioctl(fd, IOC_TREE_SEARCH, buf)
            done = _SearchArgs.from_buffer(buf)
            count = done.key.nr_items
            if count == 0:
                return found
            data = bytes(buf[ctypes.sizeof(_SearchKey) :])
            pos = 0
            objectid = offset = 0
            item_type = 0
            for _ in range(count):
                _, objectid, offset, item_type, length = struct.unpack_from("<QQQII", data, pos)
                if item_type == _INODE_ITEM_KEY and length >= _INODE_ITEM_SIZE:
                    transid = struct.unpack_from("<Q", data, pos + _HEADER + 8)[0]
                    if transid > since:
                        mode = struct.unpack_from("<I", data, pos + _HEADER + 52)[0]
                        found[objectid] = stat.S_ISDIR(mode)
                        if len(found) > limit:
                            raise TooManyChanges(f"more than {limit} inodes changed")
                pos += _HEADER + length
            if offset < _MAX:
                key.min_objectid, key.min_type, key.min_offset = objectid, item_type, offset + 1
            elif item_type < 255:
                key.min_objectid, key.min_type, key.min_offset = objectid, item_type + 1, 0
            elif objectid < _MAX:
                key.min_objectid, key.min_type, key.min_offset = objectid + 1, 0, 0
            else:
                return found
    except OSError as e:
        raise SystemFailure(f"cannot search subvolume {subvolume}: {e.strerror}") from None
    finally:
        os.close(fd)


def inode_paths(fd: int, inode: int) -> list[str]:
    """Every path (relative to the subvolume of *fd*) of *inode*: one per hard link."""
    if inode == _ROOT_DIR:
        return [""]
    buffer = ctypes.create_string_buffer(_PATHS_BUFFER)
    args = _InoPathArgs()
    args.inum = inode
    args.size = _PATHS_BUFFER
    args.fspath = ctypes.addressof(buffer)
    raw = bytearray(args)
    try:
        fcntl.ioctl(fd, IOC_INO_PATHS, raw)
    except OSError:
        return []  # gone again (unlinked while we looked), or an orphan still open somewhere
    _left, _missing, count, _missed = struct.unpack_from("<IIII", buffer.raw, 0)
    base = 16
    paths = []
    for i in range(count):
        offset = struct.unpack_from("<Q", buffer.raw, base + 8 * i)[0]
        start = base + offset
        end = buffer.raw.index(b"\0", start)
        paths.append(os.fsdecode(buffer.raw[start:end]))
    return paths


def pruner(trees: list[tuple[str, int]]) -> Pruner:
    """What changed in each of (subvolume, since) as one :class:`Pruner` (raises :class:`TooManyChanges`)."""
    changed: set[int] = set()
    dirty: set[str] = set()
    for subvolume, since in trees:
        inodes = changed_inodes(subvolume, since, MAX_CHANGED - len(changed))
        changed.update(inodes)
        fd = os.open(subvolume, _DIR)
        try:
            for inode, is_dir in inodes.items():
                for rel in inode_paths(fd, inode):
                    _mark("/" + rel if is_dir else "/" + os.path.dirname(rel), dirty)
        finally:
            os.close(fd)
    return Pruner(changed, dirty)


def _mark(path: str, dirty: set[str]) -> None:
    path = path.rstrip("/") or "/"
    while path not in dirty:
        dirty.add(path)
        if path == "/":
            return
        path = os.path.dirname(path)
