"""Comparing two directory trees, streamed, and skipping what two trees share.

A :class:`Tree` is one root as a reader sees it: a single directory, or a
stack of overlay layers merged the way the kernel's overlayfs merges them
(whiteouts, opaque directories, redirects; see :meth:`Tree.child`). No mount
is needed to read a stack, and two stacks that share layers (a session's
upper directory over its generation's layers; a generation's layer over its
parent's stack) are compared only where their layers differ: a directory
whose merged layers are the same real directories in both trees is the same
subtree, and within a directory only the names found in the layers that are
not shared can differ.

:func:`compare` walks both trees depth first in name order and yields
:class:`~core.diff.model.FileChange` records as it goes. Memory is bounded by
the depth of the trees and the width of the widest directory compared, never
by the number of files: nothing is collected.

Everything is read through directory file descriptors (``openat2`` with
``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`` from each layer's root, then
``*at`` calls, ``listxattrat``), so a tree being changed underneath (a live session) can make
an entry vanish but can never lead the walk out of its root. Files are opened
with ``O_NOATIME``: reading never changes what a later diff sees.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from .. import syscalls
from . import xattrs
from .model import FileChange, FileState

_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_NOATIME = getattr(os, "O_NOATIME", 0)
_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV)

OVERLAY_PREFIX = "trusted.overlay."
OPAQUE = "trusted.overlay.opaque"
REDIRECT = "trusted.overlay.redirect"
WHITEOUT = "trusted.overlay.whiteout"
_ESCAPED = "trusted.overlay.overlay."
_CHUNK = 1 << 18


class DirFds:
    """Open directories of the layers being read, shared by the two trees of one comparison.

    Layer roots are registered once (a layer both trees share gets one id,
    which is what makes shared directories recognisable); directories below
    them are opened on demand and kept in a small LRU cache, so a deep walk
    over many layers holds a bounded number of descriptors.
    """

    def __init__(self, capacity: int = 192) -> None:
        self.capacity = capacity
        self.paths: list[str] = []
        self.roots: list[int] = []
        self._cache: OrderedDict[tuple[int, str], int] = OrderedDict()
        self._last: tuple[int, str] | None = None
        self._last_fd = -1

    def register(self, path: str) -> int:
        """The id of the layer rooted at *path* (opened now; the same path gets the same id)."""
        real = os.path.realpath(path)
        if real in self.paths:
            return self.paths.index(real)
        self.roots.append(_open_dir(real))
        self.paths.append(real)
        return len(self.paths) - 1

    def get(self, layer: int, rel: str) -> int:
        """An open descriptor of directory *rel* of *layer* (raises OSError)."""
        if not rel:
            return self.roots[layer]
        key = (layer, rel)
        if key == self._last:
            return self._last_fd  # the common case: the same directory again
        fd = self._cache.get(key)
        if fd is not None:
            self._cache.move_to_end(key)
            self._last, self._last_fd = key, fd
            return fd
        fd = _open_below(self.roots[layer], rel)
        self._cache[key] = fd
        if len(self._cache) > self.capacity:
            _, old = self._cache.popitem(last=False)
            os.close(old)
        self._last, self._last_fd = key, fd
        return fd

    def close(self) -> None:
        self._last = None
        for fd in self._cache.values():
            os.close(fd)
        self._cache.clear()
        for fd in self.roots:
            os.close(fd)
        self.roots.clear()
        self.paths.clear()


def _open_dir(path: str) -> int:
    try:
        return os.open(path, _DIR_OPEN | _NOATIME)
    except PermissionError:  # O_NOATIME needs ownership or CAP_FOWNER
        return os.open(path, _DIR_OPEN)


def _open_below(root: int, rel: str) -> int:
    resolve = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS
    try:
        return syscalls.openat2(root, rel, _DIR_OPEN | _NOATIME, resolve)
    except PermissionError:
        return syscalls.openat2(root, rel, _DIR_OPEN, resolve)


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


class Node:
    """An entry of a tree: the topmost object found for a name, and (directories) the layers it merges."""

    __slots__ = ("layer", "rel", "st", "stack")

    def __init__(self, layer: int, rel: str, st: os.stat_result, stack: tuple[tuple[int, str], ...] | None) -> None:
        self.layer = layer  # index, in its tree, of the layer holding the object
        self.rel = rel  # its path relative to that layer's root ("" for the root)
        self.st = st
        self.stack = stack  # directories: (layer index, rel) of each merged directory, topmost first

    @property
    def is_dir(self) -> bool:
        return self.stack is not None


class _Lookup:
    """The state of one overlay lookup (the kernel's ``struct ovl_lookup_data``)."""

    __slots__ = ("is_dir", "name", "redirected", "stop")

    def __init__(self, name: str) -> None:
        self.name = name  # relative to the parent, or absolute (after an absolute redirect)
        self.is_dir = False
        self.stop = False
        self.redirected = False


class Tree:
    """One root to compare: a directory (*overlay* False) or a stack of overlay layers, topmost first."""

    def __init__(self, layers: Sequence[str], fds: DirFds, *, overlay: bool) -> None:
        if not layers:
            raise ValueError("a tree needs at least one layer")
        self.fds = fds
        self.ids = [fds.register(p) for p in layers]
        self.overlay = overlay
        self._root_stack = tuple((i, "") for i in range(len(self.ids)))

    # --- reading one layer ----------------------------------------------------------

    def _fd(self, layer: int, rel: str) -> int | None:
        try:
            return self.fds.get(self.ids[layer], rel)
        except OSError as e:
            if e.errno in _MISSING:
                return None
            raise

    def _lstat(self, layer: int, rel_dir: str, name: str) -> os.stat_result | None:
        fd = self._fd(layer, rel_dir)
        if fd is None:
            return None
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError as e:
            if e.errno in _MISSING or e.errno == errno.ENAMETOOLONG:
                return None
            raise

    def _where(self, layer: int, rel: str) -> tuple[int, str] | None:
        """Object *rel* of *layer* as (its directory's descriptor, its name); the root as (its descriptor, "")."""
        head, _, name = rel.rpartition("/")
        fd = self._fd(layer, head if name else "")
        return None if fd is None else (fd, name)

    def _xattr_names(self, layer: int, rel: str) -> list[str]:
        where = self._where(layer, rel)
        if where is None:
            return []
        try:
            return xattrs.names(*where)
        except OSError as e:
            if e.errno in (*_MISSING, errno.ENOTSUP, errno.EPERM):
                return []
            raise

    def _getxattr(self, layer: int, rel: str, attr: str) -> bytes | None:
        where = self._where(layer, rel)
        if where is None:
            return None
        try:
            return xattrs.get(*where, attr)
        except OSError as e:
            if e.errno in (*_MISSING, errno.ENODATA, errno.ENOTSUP, errno.EPERM):
                return None
            raise

    def _is_whiteout(self, layer: int, rel: str, st: os.stat_result) -> bool:
        """A character device 0/0, or an empty regular file with the overlay.whiteout xattr."""
        mode = st.st_mode
        if stat.S_ISCHR(mode):
            return st.st_rdev == 0
        if stat.S_ISREG(mode) and st.st_size == 0:
            return self._getxattr(layer, rel, WHITEOUT) is not None
        return False

    # --- the root, names and lookups ------------------------------------------------

    def root(self) -> Node:
        st = os.fstat(self.fds.roots[self.ids[0]])
        stack = self._root_stack if self.overlay else ((0, ""),)
        return Node(0, "", st, stack)

    def names(self, node: Node, layers: Sequence[tuple[int, str]] | None = None) -> set[str]:
        """Names in the directories *layers* of *node* (default: all it merges); whiteouts included."""
        found: set[str] = set()
        assert node.stack is not None
        for layer, rel in node.stack if layers is None else layers:
            fd = self._fd(layer, rel)
            if fd is None:
                continue
            try:
                with os.scandir(fd) as it:
                    found.update(e.name for e in it)
            except OSError as e:
                if e.errno not in _MISSING:
                    raise
        return found

    def child(self, parent: Node, name: str) -> Node | None:
        """The entry *name* in directory *parent*, or None if there is none (or it is whited out).

        For a stack of layers this is the kernel's ``ovl_lookup``: each
        layer the parent merges is asked in turn; a whiteout or a
        non-directory ends the search (a non-directory below a directory is
        ignored), so does an opaque directory; a directory's redirect xattr
        makes the layers below look the name up where it points (a relative
        redirect in the same parent, an absolute one from the layers' roots,
        from then on walking the root's stack).
        """
        assert parent.stack is not None
        if not self.overlay:
            st = self._lstat(0, parent.rel, name)
            if st is None:
                return None
            rel = _join(parent.rel, name)
            return Node(0, rel, st, ((0, rel),) if stat.S_ISDIR(st.st_mode) else None)
        d = _Lookup(name)
        top: tuple[int, str, os.stat_result] | None = None
        merged: list[tuple[int, str]] = []
        base = parent.stack
        i = 0
        while i < len(base):
            layer, rel_dir = base[i]
            found = self._lookup_layer(layer, rel_dir, d)
            if found is not None:
                rel, st = found
                if top is None:
                    top = (layer, rel, st)
                if d.is_dir:
                    merged.append((layer, rel))
            if d.stop:
                break
            if d.redirected and d.name.startswith("/") and base is not self._root_stack:
                base = self._root_stack  # the kernel's "poe = roe": go on below this layer from the root
                i = layer + 1
                continue
            i += 1
        if top is None:
            return None
        layer, rel, st = top
        return Node(layer, rel, st, tuple(merged) if d.is_dir else None)

    def _lookup_layer(self, layer: int, rel_dir: str, d: _Lookup) -> tuple[str, os.stat_result] | None:
        """``ovl_lookup_layer``: *d*'s name in one layer (one name, or an absolute path walked from the root)."""
        if not d.name.startswith("/"):
            return self._lookup_single(layer, rel_dir, d.name, d, 0, "")
        path = d.name
        parts = path[1:].split("/")
        where = ""
        found: tuple[str, os.stat_result] | None = None
        for index, part in enumerate(parts):
            post = "/" + "/".join(parts[index + 1 :]) if index + 1 < len(parts) else ""
            # Counted from the end, as the kernel does: a redirect on the way rewrites the prefix.
            prelen = len(d.name) - len(part) - len(post)
            found = self._lookup_single(layer, where, part, d, prelen, post)
            if found is None:
                return None
            if not post:
                return found
            rel, st = found
            if not stat.S_ISDIR(st.st_mode):
                return None
            where = rel
        return found

    def _lookup_single(
        self, layer: int, rel_dir: str, name: str, d: _Lookup, prelen: int, post: str
    ) -> tuple[str, os.stat_result] | None:
        """``ovl_lookup_single``: one component in one layer; updates *d* (stop, is_dir, redirect)."""
        if not name or name in (".", ".."):
            return None
        st = self._lstat(layer, rel_dir, name)
        if st is None:
            return None
        rel = _join(rel_dir, name)
        if self._is_whiteout(layer, rel, st):
            d.stop = True
            return None
        last = not post
        if not stat.S_ISDIR(st.st_mode):
            d.stop = True
            return None if d.is_dir else (rel, st)
        if last:
            d.is_dir = True
        attrs = self._xattr_names(layer, rel)
        if OPAQUE in attrs and self._getxattr(layer, rel, OPAQUE) == b"y":
            d.stop = True
            return rel, st
        if REDIRECT in attrs:
            target = self._getxattr(layer, rel, REDIRECT)
            if target:
                text = os.fsdecode(target)
                if text.startswith("/"):
                    d.name = text + post
                elif "/" not in text:
                    d.name = d.name[:prelen] + text + post
                d.redirected = True
        return rel, st

    # --- what an entry is ----------------------------------------------------------------

    def key(self, node: Node) -> object:
        """What the entry is made of: equal keys in two trees of one comparison mean the same object."""
        if node.stack is not None:
            return tuple((self.ids[layer], rel) for layer, rel in node.stack)
        return (self.ids[node.layer], node.rel)

    def real_id(self, node: Node) -> tuple[int, int]:
        return (node.st.st_dev, node.st.st_ino)

    def xattrs(self, node: Node) -> dict[str, bytes]:
        """The extended attributes a reader of the tree sees (overlay's own are hidden, escaped ones shown)."""
        out: dict[str, bytes] = {}
        for attr in self._xattr_names(node.layer, node.rel):
            shown = attr
            if self.overlay and attr.startswith(OVERLAY_PREFIX):
                if not attr.startswith(_ESCAPED):
                    continue
                shown = OVERLAY_PREFIX + attr[len(_ESCAPED) :]
            value = self._getxattr(node.layer, node.rel, attr)
            if value is not None:
                out[shown] = value
        return out

    def readlink(self, node: Node) -> str:
        head, _, name = node.rel.rpartition("/")
        fd = self._fd(node.layer, head)
        if fd is None:
            return ""
        try:
            return os.readlink(name, dir_fd=fd)
        except OSError as e:
            if e.errno in (*_MISSING, errno.EINVAL):
                return ""
            raise

    def open(self, node: Node) -> int | None:
        """A descriptor of regular file *node*, or None if it went away."""
        head, _, name = node.rel.rpartition("/")
        fd = self._fd(node.layer, head)
        if fd is None:
            return None
        try:
            try:
                return os.open(name, _FILE_OPEN | _NOATIME, dir_fd=fd)
            except PermissionError:
                return os.open(name, _FILE_OPEN, dir_fd=fd)
        except OSError as e:
            if e.errno in _MISSING:
                return None
            raise

    def scan(self, node: Node) -> Iterator[os.DirEntry[str]]:
        """The raw entries of a single-layer directory (for pruned walks)."""
        fd = self._fd(node.layer, node.rel)
        if fd is None:
            return
        with os.scandir(fd) as it:
            yield from it

    def state(self, node: Node, *, xattrs: dict[str, bytes] | None = None) -> FileState:
        if xattrs is None:
            xattrs = self.xattrs(node)
        target = self.readlink(node) if stat.S_ISLNK(node.st.st_mode) else None
        return FileState.of(node.st, target=target, xattrs=tuple(sorted(xattrs)))


class Pruner:
    """Where two related trees can differ, as a file system told us (:meth:`core.backends.Backend.change_search`).

    *changed* holds the inode numbers that changed on either side; *dirty*
    holds every directory (``/``-rooted path) at or below which something
    changed. Directories outside *dirty* are the same in both trees; inside
    a dirty one, an entry of the same name and inode number on both sides
    whose inode did not change is the same object: only the other entries,
    and dirty subdirectories, are compared (their names come from the
    directories' listings, without a stat).
    """

    def __init__(self, changed: set[int], dirty: set[str]) -> None:
        self.changed = changed
        self.dirty = dirty


def compare(
    old: Tree,
    new: Tree,
    *,
    related_since: int | None = None,
    settled_before: int | None = None,
    pruner: Pruner | None = None,
) -> Iterator[FileChange]:
    """Every path that differs between *old* and *new*, depth first in name order.

    Trees *related_since* a time (nanoseconds since the epoch) are snapshots
    or clones of one another (btrfs, zfs) made then: equal inode numbers
    with equal change times before it are the same, unchanged file, not
    compared further (a change time at or after it may be a change made in
    the same tick: compared).

    Regular files of equal size and modification time have equal contents
    only if they were *settled_before* the trees parted (nanoseconds): a
    file written again in the tick its copy was taken keeps its time on file
    systems that count whole seconds (zfs-fuse), so a modification time at or
    after it, or no bound at all, has the contents compared (git's "racy"
    entries). With a *pruner*, only where it points is walked.
    """
    return _Walk(old, new, related_since, settled_before, pruner).run()


class _Frame:
    __slots__ = ("names", "new", "old", "path")

    def __init__(self, path: str, old: Node | None, new: Node | None, names: list[str]) -> None:
        self.path = path
        self.old = old
        self.new = new
        self.names = iter(names)


class _Walk:
    #: How many hard-linked files remember their first path (for ``link_to``).
    MAX_LINKS = 100_000

    def __init__(
        self, old: Tree, new: Tree, related_since: int | None, settled_before: int | None, pruner: Pruner | None
    ) -> None:
        self.old = old
        self.new = new
        self.related_since = -1 if related_since is None else related_since
        self.settled_before = -1 if settled_before is None else settled_before
        self.pruner = pruner
        self.links: dict[tuple[int, int], str] = {}

    def run(self) -> Iterator[FileChange]:
        o, n = self.old.root(), self.new.root()
        if self.pruner is not None and "/" not in self.pruner.dirty:
            return
        what, oxa, nxa = self._differences(o, n)
        if what:
            yield self._change("/", "changed", o, n, what, oxa, nxa)
        stack: list[_Frame] = []
        frame = self._both("/", o, n)
        if frame is not None:
            stack.append(frame)
        while stack:
            frame = stack[-1]
            name = next(frame.names, None)
            if name is None:
                stack.pop()
                continue
            path = frame.path.rstrip("/") + "/" + name
            oc = self.old.child(frame.old, name) if frame.old is not None else None
            nc = self.new.child(frame.new, name) if frame.new is not None else None
            if oc is None and nc is None:
                continue
            if oc is None:
                assert nc is not None
                yield self._change(path, "added", None, nc)
                if nc.is_dir:
                    stack.append(_Frame(path, None, nc, sorted(self.new.names(nc))))
                continue
            if nc is None:
                yield self._change(path, "removed", oc, None)
                if oc.is_dir:
                    stack.append(_Frame(path, oc, None, sorted(self.old.names(oc))))
                continue
            if self.old.key(oc) == self.new.key(nc):
                continue  # the same object (a layer both trees share)
            what, oxa, nxa = self._differences(oc, nc)
            if what:
                yield self._change(path, "changed", oc, nc, what, oxa, nxa)
            if oc.is_dir and nc.is_dir:
                child = self._both(path, oc, nc)
                if child is not None:
                    stack.append(child)
            elif oc.is_dir:
                stack.append(_Frame(path, oc, None, sorted(self.old.names(oc))))
            elif nc.is_dir:
                stack.append(_Frame(path, None, nc, sorted(self.new.names(nc))))

    def _both(self, path: str, o: Node, n: Node) -> _Frame | None:
        """The frame comparing two directories, with only the names that can differ; None if none can."""
        old, new = self.old, self.new
        if self.pruner is not None:
            if path not in self.pruner.dirty:
                return None
            # An entry with the same inode number on both sides, an inode no transaction touched,
            # is the same unchanged object: only the others (and dirty directories) are compared.
            changed, dirty = self.pruner.changed, self.pruner.dirty
            prefix = path.rstrip("/") + "/"
            before = {e.name: e.inode() for e in old.scan(o)}
            picked = []
            for e in new.scan(n):
                ino = before.pop(e.name, None)
                dirty_dir = e.is_dir(follow_symlinks=False) and prefix + e.name in dirty
                if ino != e.inode() or ino in changed or dirty_dir:
                    picked.append(e.name)
            picked.extend(before)  # only in the old tree
            return _Frame(path, o, n, sorted(picked))
        ok, nk = old.key(o), new.key(n)
        if ok == nk:
            return None
        assert isinstance(ok, tuple) and isinstance(nk, tuple)
        assert o.stack is not None and n.stack is not None
        shared = 0
        while shared < min(len(ok), len(nk)) and ok[-1 - shared] == nk[-1 - shared]:
            shared += 1
        if shared:
            # Below the shared layers both trees look names up alike: only names in the others can differ.
            names = old.names(o, o.stack[: len(ok) - shared]) | new.names(n, n.stack[: len(nk) - shared])
        else:
            names = old.names(o) | new.names(n)
        return _Frame(path, o, n, sorted(names))

    def _differences(
        self, o: Node, n: Node
    ) -> tuple[tuple[str, ...], dict[str, bytes] | None, dict[str, bytes] | None]:
        """Which aspects of two entries differ (and the xattrs read on the way)."""
        so, sn = o.st, n.st
        fo, fn = stat.S_IFMT(so.st_mode), stat.S_IFMT(sn.st_mode)
        if fo != fn:
            return ("type",), None, None
        if so.st_ctime_ns < self.related_since and so.st_ino == sn.st_ino and so.st_ctime_ns == sn.st_ctime_ns:
            return (), None, None  # a snapshot's unchanged inode: any change would have moved ctime past the clone
        what: set[str] = set()
        if fo == stat.S_IFREG:
            if so.st_size != sn.st_size:
                what.update(("size", "content"))
            elif (so.st_mtime_ns != sn.st_mtime_ns or sn.st_mtime_ns >= self.settled_before) and not self._same_content(
                o, n
            ):
                what.add("content")
            if so.st_mtime_ns != sn.st_mtime_ns:
                what.add("mtime")
        elif fo == stat.S_IFLNK:
            if self.old.readlink(o) != self.new.readlink(n):
                what.add("target")
        elif fo in (stat.S_IFCHR, stat.S_IFBLK) and so.st_rdev != sn.st_rdev:
            what.add("device")
        if fo != stat.S_IFLNK and stat.S_IMODE(so.st_mode) != stat.S_IMODE(sn.st_mode):
            what.add("mode")
        if so.st_uid != sn.st_uid or so.st_gid != sn.st_gid:
            what.add("owner")
        if fo != stat.S_IFDIR and so.st_nlink != sn.st_nlink:
            what.add("links")
        oxa, nxa = self.old.xattrs(o), self.new.xattrs(n)
        if oxa != nxa:
            what.add("xattrs")
        from .model import ASPECTS

        return tuple(a for a in ASPECTS if a in what), oxa, nxa

    def _same_content(self, o: Node, n: Node) -> bool:
        a = self.old.open(o)
        if a is None:
            return False
        try:
            b = self.new.open(n)
            if b is None:
                return False
            try:
                while True:
                    x = os.read(a, _CHUNK)
                    y = os.read(b, _CHUNK)
                    if x != y:
                        return False
                    if not x:
                        return True
            finally:
                os.close(b)
        finally:
            os.close(a)

    def _change(
        self,
        path: str,
        change: str,
        o: Node | None,
        n: Node | None,
        what: tuple[str, ...] = (),
        oxa: dict[str, bytes] | None = None,
        nxa: dict[str, bytes] | None = None,
    ) -> FileChange:
        old = self.old.state(o, xattrs=oxa) if o is not None else None
        new = self.new.state(n, xattrs=nxa) if n is not None else None
        link_to = None
        if n is not None and not n.is_dir and n.st.st_nlink > 1:
            key = self.new.real_id(n)
            link_to = self.links.get(key)
            if link_to is None and len(self.links) < self.MAX_LINKS:
                self.links[key] = path
        return FileChange(path, change, old, new, what, link_to)
