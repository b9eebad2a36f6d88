"""Where two btrfs snapshots can differ, found in the file system's own tree.

Every btrfs inode records the transaction that last changed it. A session's
clone and every promoted generation are snapshots taken, step by step, from
an earlier generation, so an inode that no transaction touched since that
ancestor was sealed is the same object in both, with the same number. A tree
search with a minimum transaction id skips every unchanged node of the
subvolume's tree (this is ``btrfs subvolume find-new``): the cost follows
the size of the change, not of the tree. The changed inodes' paths
(``INO_PATHS``) name the directories a comparison has to enter; everything
else is skipped (see :class:`core.diff.trees.Pruner`). Diff asks for it through
:meth:`core.backends.btrfs.BtrfsBackend.change_search`.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import stat
import struct

from ..diff.trees import Pruner
from ..errors import SystemFailure
from .base import TooManyChanges
from .btrfs import _HEADER, IOC_GET_SUBVOL_INFO, _SearchKey, _SubvolInfo

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


class _InoLookupArgs(ctypes.Structure):
    _fields_ = [("treeid", ctypes.c_uint64), ("objectid", ctypes.c_uint64), ("name", ctypes.c_char * 4080)]


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (_MAGIC << 8) | nr


IOC_INO_PATHS = _iowr(35, ctypes.sizeof(_InoPathArgs))
IOC_INO_LOOKUP = _iowr(18, ctypes.sizeof(_InoLookupArgs))
IOC_TREE_SEARCH_V2 = _iowr(17, ctypes.sizeof(_SearchKey) + 8)
_PATHS_BUFFER = 64 * 1024
_SEARCH_BUFFER = 256 * 1024
_INODE_REF_KEY = 12
_INODE_EXTREF_KEY = 13

#: Above this many changed inodes the search gives up and the caller walks both trees.
MAX_CHANGED = 200_000


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


class Changed:
    """What a search found: changed inodes (number -> is a directory) and the directories holding them."""

    def __init__(self) -> None:
        self.inodes: dict[int, bool] = {}
        self.parents: dict[int, set[int]] = {}  # changed non-directory -> the directories it is linked in


def changed_inodes(subvolume: str, since: int, limit: int = MAX_CHANGED) -> Changed:
    """Inodes of *subvolume* changed after transaction *since*, with their parent directories.

    The search returns whole tree leaves written after *since*; in them, an
    inode item newer than *since* is a changed inode, and the reference items
    that follow it (same leaf, as a rule) name the directories it is in.
    Raises :class:`~core.backends.base.TooManyChanges` past *limit*.
    """
    fd = os.open(subvolume, _DIR)
    found = Changed()
    inodes, parents = found.inodes, found.parents
    head = ctypes.sizeof(_SearchKey) + 8
    buf = bytearray(head + _SEARCH_BUFFER)
    key = _SearchKey.from_buffer(buf)
    key.tree_id = 0  # the subvolume of fd
    key.max_objectid = key.max_offset = key.max_transid = _MAX
    key.max_type = 255
    key.min_transid = since + 1
    struct.pack_into("<Q", buf, ctypes.sizeof(_SearchKey), _SEARCH_BUFFER)
    unpack_header = struct.Struct("<QQQII").unpack_from
    u64 = struct.Struct("<Q").unpack_from
    u32 = struct.Struct("<I").unpack_from
    try:
        while True:
            key.nr_items = 1 << 30
            fcntl.ioctl(fd, IOC_TREE_SEARCH_V2, buf)
            count = key.nr_items
            if count == 0:
                return found
            pos = head
            objectid = offset = 0
            item_type = 0
            for _ in range(count):
                _, objectid, offset, item_type, length = unpack_header(buf, pos)
                data = pos + _HEADER
                if item_type == _INODE_ITEM_KEY:
                    if length >= _INODE_ITEM_SIZE and u64(buf, data + 8)[0] > since:
                        inodes[objectid] = stat.S_ISDIR(u32(buf, data + 52)[0])
                        if len(inodes) > limit:
                            raise TooManyChanges(f"more than {limit} inodes changed")
                elif item_type == _INODE_REF_KEY:
                    if inodes.get(objectid) is False:
                        parents.setdefault(objectid, set()).add(offset)  # the key's offset: the directory
                elif item_type == _INODE_EXTREF_KEY and inodes.get(objectid) is False and length >= 8:
                    parents.setdefault(objectid, set()).add(u64(buf, data)[0])
                pos = data + length
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
        del key  # the buffer is exported while a ctypes view of it lives
        os.close(fd)


def directory_path(fd: int, inode: int) -> str | None:
    """The path of directory *inode* in the subvolume of *fd* ("" for its top), or None if it is gone."""
    if inode == _ROOT_DIR:
        return ""
    args = _InoLookupArgs()
    args.objectid = inode
    raw = bytearray(args)
    try:
        fcntl.ioctl(fd, IOC_INO_LOOKUP, raw)
    except OSError:
        return None
    name = bytes(raw[16:])
    return os.fsdecode(name[: name.index(b"\0")]).rstrip("/")


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
        found = changed_inodes(subvolume, since, MAX_CHANGED - len(changed))
        changed.update(found.inodes)
        directories = {inode for inode, is_dir in found.inodes.items() if is_dir}
        fd = os.open(subvolume, _DIR)
        try:
            for inode, is_dir in found.inodes.items():
                if is_dir:
                    continue
                held = found.parents.get(inode)
                if held:
                    directories.update(held)
                else:  # its references were in an older leaf: ask for its paths
                    for rel in inode_paths(fd, inode):
                        _mark("/" + os.path.dirname(rel), dirty)
            for inode in directories:
                where = directory_path(fd, inode)
                if where is not None:
                    _mark("/" + where, dirty)
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
