"""A complete manifest of a tree, to compare two trees byte for byte.

Every entry records what a root file system must keep: type, mode (with
setuid, setgid and sticky bits), numeric owner, size, modification time in
nanoseconds, symlink target, device numbers, every extended attribute (ACLs
and capabilities included) and a hash of the content. Hard links are
recorded as groups of paths sharing one inode. The walk never leaves the
tree's file system (a mount below it is not part of the tree).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int | None
    target: bytes | None
    rdev: tuple[int, int] | None
    xattrs: tuple[tuple[str, bytes], ...]
    sha256: str | None


@dataclass(frozen=True)
class Manifest:
    entries: dict[bytes, Entry]
    links: frozenset[frozenset[bytes]]

    def diff(self, other: Manifest, limit: int = 20) -> list[str]:
        """What differs, one line per path (at most *limit* lines)."""
        out: list[str] = []
        for path in sorted(self.entries.keys() | other.entries.keys()):
            a, b = self.entries.get(path), other.entries.get(path)
            if a != b:
                out.append(f"{path!r}: {a} != {b}")
                if len(out) >= limit:
                    return out
        if self.links != other.links:
            only = sorted(map(sorted, self.links ^ other.links))
            out.append(f"hard-link groups differ: {only[:5]}")
        return out


_KINDS = (
    (stat.S_ISREG, "file"),
    (stat.S_ISDIR, "dir"),
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISCHR, "char"),
    (stat.S_ISBLK, "block"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "unknown"


def _xattrs(path: bytes) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names))


def _hash(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def manifest(root: str | os.PathLike[str], *, symlink_times: bool = True) -> Manifest:
    """The manifest of the tree at *root*; paths are relative (``b"."`` is the root itself)."""
    base = os.fsencode(root)
    device = os.lstat(base).st_dev
    entries: dict[bytes, Entry] = {}
    inodes: dict[int, list[bytes]] = {}
    stack = [b"."]
    while stack:
        rel = stack.pop()
        full = os.path.join(base, rel) if rel != b"." else base
        st = os.lstat(full)
        kind = _kind(st.st_mode)
        is_link = kind == "symlink"
        entries[rel] = Entry(
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size if kind in ("file", "symlink") else 0,
            mtime_ns=st.st_mtime_ns if symlink_times or not is_link else None,
            target=os.readlink(full) if is_link else None,
            rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("char", "block") else None,
            xattrs=_xattrs(full),
            sha256=_hash(full) if kind == "file" else None,
        )
        if kind != "dir" and st.st_nlink > 1:
            inodes.setdefault(st.st_ino, []).append(rel)
        if kind == "dir" and st.st_dev == device:
            for name in os.listdir(full):
                stack.append(os.path.join(rel, name) if rel != b"." else name)
    links = frozenset(frozenset(group) for group in inodes.values() if len(group) > 1)
    return Manifest(entries, links)
