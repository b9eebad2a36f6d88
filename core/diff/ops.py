"""The diff operations: what a session changed, what differs between two generations.

``session_diff`` and ``image_diff`` check the arguments and the caller's
access at once and return a :class:`Diff`, which takes what reading needs
(a shared lock on the session, pins on the generations, read-only views
where a backend needs a mount) when entered as a context manager and gives
it all back on leaving. A diff then answers, each on demand:

* :meth:`Diff.packages`: the dpkg packages installed, removed, upgraded and
  downgraded (two status files read; no file is walked);
* :meth:`Diff.entries`: the changed files, streamed in path order;
* :meth:`Diff.summary`: the packages and the counts, keeping no file list.

How the two trees are compared depends on what the backend can tell
(``method``; see "reading trees" in :class:`core.backends.Backend`):
``layers`` where a session's writes are an overlay upper directory, or
generations are overlay layers (overlay and dir; a squashfs or erofs
session): only the layers the two trees do not share are read, so a
session costs its upper directory and a generation against its parent costs
its own layer; the backend's own change search (``btrfs``: a tree search for
inodes changed since the common ancestor names the directories to enter);
``tree`` everywhere else: both trees are walked, and where clones share
their snapshot's inodes (zfs) unchanged files are recognised by inode and
change time.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, BinaryIO

from .. import backends, generations, images, mounts, pins, policy, syscalls
from .. import session as session_ops
from ..errors import BadInput, Conflict, NotFound
from ..names import check_generation
from ..store import new_tx
from . import dpkg
from .model import DiffSummary, FileChange
from .trees import DirFds, Node, Pruner, Tree, compare

if TYPE_CHECKING:
    from ..context import Context

#: Diff's own methods; a backend's change search names and describes itself (Backend.search_method).
METHODS = {
    "layers": "read only the layers the two trees do not share",
    "tree": "walked both trees",
}


# --- who may see a diff -------------------------------------------------------------------


# A session's diff is for whoever may see the session (policy.SESSION_VIEW: its owner
# while a user of the image, the image's root-users, administrators). A generation's diff
# names paths anywhere in the root, also in directories only root may read inside (/root,
# private keys): it is for the image's root-users (policy.IMAGE_DIFF), as export is.


# --- the diff object ----------------------------------------------------------------------


class Diff:
    """Two roots being compared; enter it (``with``) before asking anything."""

    def __init__(
        self, ctx: Context, origin: dict[str, Any], target: dict[str, Any], opener: Callable[[Diff], None]
    ) -> None:
        self.ctx = ctx
        self.origin = origin  # JSON: what the diff starts from
        self.target = target  # JSON: what it arrives at
        self.method = ""
        self.note: str | None = None
        self.old: Tree | None = None
        self.new: Tree | None = None
        self.related_since: int | None = None  # see trees.compare
        self.settled_before: int | None = None  # see trees.compare
        self.merged: dict[str, list[str]] = {}  # path: the host's entries the session's set-up merged in
        self._opener = opener
        self._search: tuple[backends.Backend, list[tuple[str, str]]] | None = None  # (tree, its ancestor) pairs
        self._pruner: Pruner | None = None
        self._planned = False
        self._stack: ExitStack | None = None
        self.fds = DirFds()

    # --- resources ---

    def __enter__(self) -> Diff:
        self._stack = ExitStack()
        try:
            self._opener(self)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.fds.close()  # first: an open directory keeps a view's mount busy
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()

    @property
    def stack(self) -> ExitStack:
        if self._stack is None:
            raise RuntimeError("enter the diff (with …) first")
        return self._stack

    def _trees(self) -> tuple[Tree, Tree]:
        if self.old is None or self.new is None:
            raise RuntimeError("enter the diff (with …) first")
        return self.old, self.new

    # --- answers ---

    def plan(self) -> str:
        """Decide how files are compared (a backend's change search runs now); returns the method."""
        if self._planned:
            return self.method
        self._planned = True
        if self._search is not None:
            backend, pairs = self._search
            try:
                self._pruner = backend.change_search(pairs)
            except backends.TooManyChanges as e:
                self.method = "tree"
                self.note = f"{e}: both trees walked"
        return self.method

    def describe(self) -> str:
        """What :attr:`method` does, in words."""
        if self._search is not None and self.method == self._search[0].search_method:
            return self._search[0].search_summary
        return METHODS.get(self.method, self.method)

    def header(self) -> dict[str, Any]:
        return {"from": self.origin, "to": self.target, "method": self.method, "note": self.note}

    def packages(self) -> list[dpkg.PackageChange] | None:
        """Packages installed, removed, upgraded and downgraded; None when neither root has dpkg."""
        old, new = self._trees()
        before, after = _read_status(old), _read_status(new)
        if before is None and after is None:
            return None
        return dpkg.changes(before or [], after or [])

    def entries(self) -> Iterator[FileChange]:
        """Every changed path, depth first in name order, read as it is yielded."""
        old, new = self._trees()
        self.plan()
        changes = compare(
            old, new, related_since=self.related_since, settled_before=self.settled_before, pruner=self._pruner
        )
        if not self.merged:
            return changes
        return (c for c in changes if not self._only_merged_entries(c))

    def _only_merged_entries(self, change: FileChange) -> bool:
        """Whether *change* is only the host's entries the session's set-up merged into its /etc/passwd
        (or group, shadow, gshadow): promote takes them out again, so they are no change."""
        names = self.merged.get(change.path)
        if not names or change.change != "changed" or not set(change.what) <= {"content", "size"}:
            return False
        from ..setup import without_entries

        old, new = self._trees()
        before, after = _read_file(old, change.path), _read_file(new, change.path)
        return before is not None and after is not None and without_entries(after, names) == before

    def summary(self) -> DiffSummary:
        """Packages and counts; walks the files but keeps none of them."""
        out = DiffSummary(self.packages())
        for change in self.entries():
            out.add(change)
        return out


#: The largest status file read (dpkg's for all of Debian is about a tenth of it): a root's
#: owner must not make roost read without bound.
MAX_STATUS = 128 << 20


def _node_at(tree: Tree, path: str) -> Node | None:
    """The entry at *path* in *tree*, reached one name at a time (a symbolic link is never followed)."""
    node = tree.root()
    for part in path.strip("/").split("/"):
        found = tree.child(node, part) if node.is_dir else None
        if found is None:
            return None
        node = found
    return node


def _read_status(tree: Tree) -> list[dpkg.Package] | None:
    """The packages of dpkg's status file in *tree* (never following a symlink out of it)."""
    node = _node_at(tree, dpkg.STATUS)
    if node is None or not stat.S_ISREG(node.st.st_mode):
        return None
    if node.st.st_size > MAX_STATUS:
        raise BadInput(f"/{dpkg.STATUS} is {node.st.st_size} bytes, more than a status file dpkg writes")
    fd = tree.open(node)
    if fd is None:
        return None
    with open(fd, "rb") as f:
        return list(dpkg.read_status(_bounded_lines(f, MAX_STATUS)))


#: The largest user or group database read to tell roost's merged entries from a change.
MAX_DATABASE = 16 << 20


def _read_file(tree: Tree, path: str, limit: int = MAX_DATABASE) -> bytes | None:
    """The contents of the regular file *path* of *tree* (never following a symlink), if at most *limit* bytes."""
    node = _node_at(tree, path)
    if node is None or not stat.S_ISREG(node.st.st_mode) or node.st.st_size > limit:
        return None
    fd = tree.open(node)
    if fd is None:
        return None
    with open(fd, "rb") as f:
        data = f.read(limit + 1)
    return data if len(data) <= limit else None


def _bounded_lines(f: BinaryIO, limit: int) -> Iterator[bytes]:
    """The lines of *f*, each at most 64 KiB (longer ones come in pieces), *limit* bytes in all."""
    total = 0
    while total < limit:
        line = f.readline(1 << 16)
        if not line:
            return
        total += len(line)
        yield line
    raise BadInput(f"/{dpkg.STATUS} grew past {limit} bytes while it was read")


# --- sessions -----------------------------------------------------------------------------


def session_diff(ctx: Context, sid: str) -> Diff:
    """What session *sid* changed against the generation it was cloned from."""
    ctx.require_privileged("session diff")
    session = session_ops.read(ctx, sid)
    ctx.authorize(policy.SESSION_VIEW, session_ops.session_target(session))
    origin = {"image": session.image, "generation": session.generation}
    target = {"session": session.id, "image": session.image, "generation": session.generation}
    return Diff(ctx, origin, target, lambda d: _open_session(d, sid))


def _open_session(d: Diff, sid: str) -> None:
    ctx = d.ctx
    ctx.ready()
    store = ctx.store
    # Shared: promote and end (exclusive) wait until the diff is read; run and other diffs do not.
    lock = ctx.session_lock(sid, f"diff {sid}", exclusive=False)
    d.stack.callback(lock.release)
    session = session_ops.read(ctx, sid)  # it may have ended while we waited
    if session.state != "active":
        raise Conflict(f"session {sid} is {session.state}: nothing to compare")
    d.merged = {f"/etc/{db}": names for db, names in session.nss_merged.items() if names}
    d.settled_before = _since(session.created)  # every write to the session came after its clone
    backend = backends.get(session.backend)
    gen_dir = store.generation_dir(session.image, session.generation)
    label = f"diff {sid}"
    upper = backend.upper(session)
    if upper is not None:  # the session's writes are an overlay upper over its generation
        if backend.layered:
            layers = session.lowers
            d.old = Tree(layers, d.fds, overlay=True)
        else:
            layers = [_view(d, backend, gen_dir, session.lowers, label)]
            d.old = Tree(layers, d.fds, overlay=False)
        d.new = Tree([upper, *layers], d.fds, overlay=True)
        d.method = "layers"
        return
    # a clone of the generation's snapshot, read in place where the backend can, else the
    # generation through a view and the clone where it is mounted (without what the profile
    # mounted inside it)
    old, new = backend.in_place(session.lowers[0]), backend.in_place(session.clone)
    if new is None and not mounts.is_mounted(session.mountpoint):
        raise Conflict(f"session {sid} is not mounted (roost session recover {sid})")
    if old is None:
        old = _view(d, backend, gen_dir, session.lowers, label)
    if new is None:
        new = _bind(d, session.mountpoint, label)
    d.old = Tree([old], d.fds, overlay=False)
    d.new = Tree([new], d.fds, overlay=False)
    if backend.shared_inodes:
        d.related_since = _since(session.created)
    _walk_or_search(d, backend, [(new, old)])


def _walk_or_search(d: Diff, backend: backends.Backend, pairs: list[tuple[str, str]]) -> None:
    """Compare with the backend's change search where it has one (run by :meth:`Diff.plan`), else walk."""
    if backend.search_method is not None:
        d.method = backend.search_method
        d._search = (backend, pairs)
        return
    d.method = "tree"
    if backend.shared_inodes:
        d.note = f"{backend.name}: both trees walked (unchanged files recognised by inode and change time)"


# --- images -------------------------------------------------------------------------------


def image_diff(ctx: Context, name: str, old: int | None = None, new: int | None = None) -> Diff:
    """What differs from generation *old* to generation *new* of image *name*.

    *new* defaults to the current generation, *old* to *new*'s parent.
    """
    ctx.require_privileged("image diff")
    config = images.authorize(ctx, policy.IMAGE_DIFF, name)
    store = ctx.store
    if old is not None:
        old = check_generation(old)
    if new is not None:
        new = check_generation(new)
    done = generations.complete(store, name)
    if new is None:
        new = generations.current(store, name)
    for n in (old, new):
        if n is not None and n not in done:
            raise NotFound(f"image {name} has no generation {n}")
    if old is None:
        parent = generations.read_meta(store, name, new).parent
        if parent is None:
            raise BadInput(f"generation {new} of {name} has no parent: name the generation to compare it with")
        if parent not in done:
            raise NotFound(f"generation {parent} of {name} (the parent of {new}) is gone (removed by gc)")
        old = parent
    first, second = old, new
    origin = {"image": name, "generation": first}
    target = {"image": name, "generation": second}
    return Diff(ctx, origin, target, lambda d: _open_image(d, name, config.backend, first, second))


def _open_image(d: Diff, name: str, backend_name: str, old: int, new: int) -> None:
    ctx = d.ctx
    ctx.ready()
    store = ctx.store
    for n in sorted({old, new}):
        pin = pins.pin(ctx, name, n, f"diff {name} {old} {new}")
        d.stack.callback(pin.release, remove=True)
    d.settled_before = _settled(ctx, name, old, new)
    backend = backends.get(backend_name)
    gens = store.generations_dir(name)
    lowers = {n: backend.lowers(gens, list(generations.read_meta(store, name, n).stack)) for n in (old, new)}
    if backend.layered:
        d.old = Tree(lowers[old], d.fds, overlay=True)
        d.new = Tree(lowers[new], d.fds, overlay=True)
        d.method = "layers"
        return
    # each generation's tree in place where the backend can, else through a view
    trees: dict[int, str] = {}
    for n in (old, new):
        tree = backend.in_place(lowers[n][0])
        trees[n] = tree or _view(d, backend, store.generation_dir(name, n), lowers[n], f"diff {name} {old} {new}")
    d.old = Tree([trees[old]], d.fds, overlay=False)
    d.new = Tree([trees[new]], d.fds, overlay=False)
    if not backend.shared_inodes:  # trees that share nothing (one image file each): walked
        d.method = "tree"
        return
    ancestor = _common_ancestor(d, name, old, new)
    if ancestor is not None:
        d.related_since = _since(generations.read_meta(store, name, ancestor).created)
    base = backend.in_place(backend.lowers(gens, [ancestor])[0]) if ancestor is not None else None
    if backend.search_method is not None and base is None:
        d.method = "tree"
        d.note = f"{backend.name}: no common ancestor left to search from: both trees walked"
        return
    pairs = [(trees[n], base) for n in sorted({old, new}) if n != ancestor] if base is not None else []
    _walk_or_search(d, backend, pairs)


def _since(created: str) -> int | None:
    """The change time before which an inode both trees share is unchanged, for a clone made at *created*.

    Every change to a clone happens after it was made, and moves the inode's
    change time to then or later; a change time *earlier* than that is the
    snapshot's own. File systems that keep times in whole seconds (zfs-fuse)
    make a change in the same second look unchanged by change time alone: the
    bound is a whole second before *created* (ISO 8601, UTC, as records keep
    it); None when it cannot be read (then nothing is trusted by change time).
    """
    import calendar
    import time

    try:
        t = calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return None
    return (t - 1) * 1_000_000_000


def _ancestry(ctx: Context, name: str, number: int) -> list[int]:
    """*number* and the generations it descends from, as far as their metadata is still there."""
    chain = [number]
    seen = {number}
    while True:
        try:
            parent = generations.read_meta(ctx.store, name, chain[-1]).parent
        except NotFound:
            return chain
        if parent is None or parent in seen:
            return chain
        chain.append(parent)
        seen.add(parent)


def _settled(ctx: Context, name: str, old: int, new: int) -> int | None:
    """The time before which both generations' files were settled: their newest common ancestor's making.

    Each generation's changes since then were made in sessions begun from it
    or its descendants, so after it (trees.compare); None when no ancestor's
    metadata is left (then contents of equal-looking files are compared).
    """
    for n in _shared_ancestry(ctx, name, old, new):
        try:
            return _since(generations.read_meta(ctx.store, name, n).created)
        except NotFound:
            return None
    return None


def _shared_ancestry(ctx: Context, name: str, old: int, new: int) -> list[int]:
    """The generations both *old* and *new* descend from (either of them, possibly), newest first."""
    theirs = set(_ancestry(ctx, name, old))
    return [n for n in _ancestry(ctx, name, new) if n in theirs]


def _common_ancestor(d: Diff, name: str, old: int, new: int) -> int | None:
    """The newest generation both descend from (one of them, possibly) that still exists; pinned."""
    ctx = d.ctx
    done = set(generations.complete(ctx.store, name))
    for n in _shared_ancestry(ctx, name, old, new):
        if n in done:
            if n not in (old, new):
                try:
                    pin = pins.pin(ctx, name, n, f"diff {name} {old} {new}")
                except NotFound:
                    return None
                d.stack.callback(pin.release, remove=True)
            return n
    return None


# --- read-only views ----------------------------------------------------------------------


def _scratch(d: Diff, label: str) -> str:
    """An empty directory under the runtime root to mount a view on, known to recover and doctor."""
    ctx = d.ctx
    tx = new_tx()
    tx_lock = ctx.tx_lock(tx, label)
    d.stack.callback(tx_lock.release, remove=True)
    scratch = os.path.join(ctx.store.stage_dir, tx)
    os.mkdir(scratch, 0o700)
    d.stack.callback(os.rmdir, scratch)
    return scratch


def _view(d: Diff, backend: backends.Backend, gen_dir: str, lowers: list[str], label: str) -> str:
    scratch = _scratch(d, label)
    return d.stack.enter_context(backend.view(gen_dir, lowers, scratch))


def _bind(d: Diff, source: str, label: str) -> str:
    """*source*'s own mount (not the mounts below it) bound read-only at a scratch directory."""
    scratch = _scratch(d, label)
    syscalls.mount(source, scratch, None, syscalls.MS_BIND)
    d.stack.callback(mounts.unmount_tree, scratch, force=True)
    syscalls.mount(None, scratch, None, syscalls.MS_PRIVATE)
    syscalls.mount(None, scratch, None, syscalls.MS_REMOUNT | syscalls.MS_BIND | syscalls.MS_RDONLY)
    return scratch
