"""The interface every backend implements."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod  # abc is loaded with the interpreter: free

from ..records import Session
from ..struct import Struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing, collections and contextlib cost milliseconds at start-up
    from collections.abc import Iterator
    from contextlib import AbstractContextManager

    from ..diff.trees import Pruner
    from ..store import Store


class GenerationPaths(Struct, frozen=True):
    """Where one generation's data lives: ``generations/<n>/`` and its tree."""

    directory: str

    @property
    def tree(self) -> str:
        return os.path.join(self.directory, "layer")


class Site(Struct, frozen=True):
    """What a backend may need to know about the host: roots and pools from roost.yaml / image.yaml."""

    state_root: str
    run_root: str
    zfs_dataset: str | None = None
    btrfs_pool: str | None = None


class Orphan(Struct, frozen=True):
    """Data a backend keeps that no generation, staging or trash entry, record or clone names."""

    backend: str
    kind: str  # what it is, for people: "dataset"
    name: str  # how the backend names it


class Known:
    """What a state root names, read when a backend asks, in the order things move.

    A backend lists its own data first and reads this afterwards: pointers in
    the store's staging directory, then in each image (staging, generations,
    trash), then in the store's trash, then session records and clone
    directories. A generation that a concurrent promote, gc, create or remove
    moves from one place to the next is therefore always seen in one of them.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def pointer_dirs(self) -> Iterator[str]:
        """Every directory where roost keeps a pointer to a generation's data, area by area."""
        from . import pointer_dirs

        store = self.store
        yield from pointer_dirs(store.staging_dir)
        for name in store.image_names():
            yield from pointer_dirs(store.image_dir(name))
        yield from pointer_dirs(store.trash_dir)

    def sessions(self) -> list[Session]:
        """Every readable session record."""
        from .. import records

        return records.read_all(self.store.sessions_dir)[0]

    def clone_dirs(self) -> list[str]:
        """Every directory in the sessions directory (clones, with or without a record)."""
        where = self.store.sessions_dir
        return [p for p in (os.path.join(where, n) for n in sorted(os.listdir(where))) if os.path.isdir(p)]


class TooManyChanges(Exception):
    """A backend's change search gave up (too much changed): walking both trees is the better plan."""


class StreamEdit:
    """Rewrites a native stream as it is sent (the default passes it through)."""

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send for *chunk* (may hold some back)."""
        return chunk

    def end(self) -> bytes:
        """What is left to send once the stream has ended."""
        return b""


class NativeStream(ABC):
    """A backend's own stream of a generation between hosts (``btrfs send``, ``zfs send``), for one site.

    :attr:`kind` names the stream in roost's image stream (the backend's
    :attr:`Backend.native_kind`); the sender frames the output of
    :meth:`send`'s program and the receiver feeds it to :meth:`receive`'s
    program, both with checksums (core.replicate).
    """

    kind = ""

    @abstractmethod
    def receivable(self) -> bool:
        """Whether this host can receive the stream (an inventory tells the sender)."""

    @abstractmethod
    def identity(self, directory: str) -> dict[str, str] | None:
        """The file system's own name of the generation in *directory* (uuids, guid), or None."""

    @abstractmethod
    def parent_matches(self, mine: dict[str, str], theirs: dict[str, str]) -> bool:
        """Will the receiver, whose base generation has *theirs*, find the parent of an incremental stream
        whose base here has *mine*?"""

    @abstractmethod
    def send(self, directory: str, parent: str | None) -> tuple[list[str], str, StreamEdit | None]:
        """(argv, what it is, an edit of its output or None) sending *directory*, incrementally from *parent*."""

    @abstractmethod
    def receive(self, directory: str, label: str) -> tuple[list[str], str]:
        """(argv, what it is) receiving into *directory* (a new, empty staging entry) from standard input.

        *label* is unique (image and transaction), as for :meth:`Backend.init_generation`.
        """

    @abstractmethod
    def received(self, directory: str, label: str) -> None:
        """The receiving program succeeded: make *directory* a generation (names, properties)."""

    def received_size(self, directory: str, incremental: bool) -> int | None:
        """Bytes the received generation adds, if the stream tells more cheaply than the backend (None)."""
        return None


class Backend(ABC):
    """How one storage technology keeps generations and clones sessions.

    A generation is written in a staging directory and renamed into place by
    the engine; a backend only fills directories it is given and mounts
    sessions. ``generations/<n>/`` always exists as a directory: it holds the
    data itself (overlay, dir, btrfs: a ``layer`` tree or subvolume;
    squashfs/erofs: one image file) or names it (zfs: the snapshot), so the
    engine's commit protocol (metadata, rename, switch) is the same for all.
    Generation *stacks* (for layered backends) are lists of generation
    numbers, newest first, resolved to paths by :meth:`lowers`.
    """

    name = ""
    #: True when a promote always writes a complete generation (no layering).
    always_flatten = False
    #: One line for ``roost doctor``: what a generation and a session are.
    summary = ""

    # --- the host ---------------------------------------------------------------

    def unavailable(self, site: Site) -> str | None:
        """Why this backend cannot be used for *site* (one line), or None if it can."""
        return None

    def require(self, site: Site) -> None:
        """Raise :class:`BadInput` (one line, nothing changed) if the backend is unusable here."""
        why = self.unavailable(site)
        if why is not None:
            from ..errors import BadInput

            raise BadInput(f"backend {self.name} is not available: {why}")

    def storage(self, site: Site) -> str:
        """Where this backend keeps its data, for ``image info``."""
        return os.path.join(site.state_root, "images")

    # --- generations ------------------------------------------------------------

    def init_generation(self, directory: str, site: Site, label: str) -> str:
        """Create an empty generation directory; return the directory its tree must be written to.

        *label* is unique (image name and transaction) for backends that
        name things outside the directory. The caller fills the tree, then
        calls :meth:`finish_generation`.
        """
        os.mkdir(directory, 0o700)
        return GenerationPaths(directory).tree

    def finish_generation(self, directory: str) -> None:
        """The tree of a new generation is complete: seal it (read-only, compressed, snapshot)."""
        return None  # nothing to seal by default

    def generation_size(self, directory: str) -> int:
        """Bytes the generation (or its own layer) takes."""
        from ..fsutil import tree_size

        return tree_size(GenerationPaths(directory).tree)

    def sync(self, directory: str) -> None:
        """Make a staged generation durable (one syncfs, DESIGN.md §7)."""
        from ..fsutil import sync_filesystem

        sync_filesystem(directory)

    def lowers(self, generations_dir: str, stack: list[int]) -> list[str]:
        """Real paths of the layers of a generation, topmost first (recorded in sessions)."""
        return [GenerationPaths(os.path.join(generations_dir, str(n))).tree for n in stack]

    def remove_generation(self, directory: str) -> None:
        """Delete a generation directory (or a staging or trash directory) and what it names."""
        from . import discard

        discard(directory)

    def view(self, directory: str, lowers: list[str], scratch: str) -> AbstractContextManager[str]:
        """A read-only directory showing the complete tree of a generation.

        *lowers* are the generation's layers (as :meth:`lowers` returns them);
        *scratch* is an empty directory the backend may mount on.
        """
        return _StackedView(lowers, scratch)

    #: The kind of :meth:`native`'s stream in roost's image stream (the backend's name), if it has one.
    native_kind: str | None = None

    def native(self, site: Site) -> NativeStream | None:
        """This backend's own stream between hosts for *site*, if it has one (see :attr:`native_kind`)."""
        return None

    # --- what the backend leaves behind -----------------------------------------------

    def discard(self, path: str) -> None:
        """Remove what this backend left at or below *path* that a plain tree removal cannot.

        *path* is a staging, trash, generation or clone directory (or link) of
        any backend: data it names outside itself (datasets, subvolumes in a
        pool) and data a plain walk refuses (subvolumes) are this method's;
        :func:`core.backends.discard` asks every backend, then removes the rest.
        Only looks for pointers where roost writes them (see
        :func:`core.backends.pointer_dirs`), never inside a tree an image or a
        session fills, and never deletes through a mount.
        """
        return None  # by default a backend leaves only plain trees

    def orphans(self, site: Site, known: Known) -> list[Orphan]:
        """This backend's data for *site* that nothing in *known* names (read after listing)."""
        return []

    def remove_orphan(self, orphan: Orphan) -> None:
        """Delete one of :meth:`orphans`."""
        raise NotImplementedError(f"backend {self.name} reports no orphans")

    # --- reading trees (diff) ---------------------------------------------------------

    #: Generations are overlay layers readable in place: two trees are compared by
    #: reading only the layers they do not share.
    layered = False
    #: Generations and clones are snapshots of one another: an inode both trees hold with
    #: a change time from before the later one was made is the same, unchanged file.
    shared_inodes = False
    #: Name of :meth:`change_search` in diff output ("layers" and "tree" are diff's own),
    #: and what it does, in words.
    search_method: str | None = None
    search_summary = ""

    def upper(self, session: Session) -> str | None:
        """The directory holding what *session* wrote over its generation (an overlay upper), or None."""
        return None

    def in_place(self, path: str) -> str | None:
        """The complete tree of a generation layer or a session clone, readable without a mount, or None."""
        return None

    def change_search(self, pairs: list[tuple[str, str]]) -> Pruner | None:
        """Where each tree can differ from its ancestor, as (tree, ancestor) pairs of :meth:`in_place` paths.

        None when the backend cannot tell (both trees are walked); raises
        :class:`TooManyChanges` when walking is cheaper.
        """
        return None

    # --- sessions ---------------------------------------------------------------

    #: Sessions can be mounted without durability (``Session.volatile``: their writes are never synced).
    volatile_sessions = False

    def forget_volatile(self, session: Session) -> None:
        """Let a volatile session's clone be mounted again (the machine has not restarted since it was)."""
        return None  # nothing marks a clone by default

    def prepare(self, session: Session) -> None:
        """Fill ``session.backend_data`` before the record is first written (names of clones …)."""
        return None  # by default the clone's place says it all

    @abstractmethod
    def create_clone(self, session: Session) -> None:
        """Make the session's clone at ``session.clone`` (named in ``backend_data`` by :meth:`prepare`)."""

    @abstractmethod
    def mount(self, session: Session) -> None:
        """Mount the session's root at ``session.mountpoint`` (which exists, empty)."""

    @abstractmethod
    def remove_clone(self, session: Session) -> None:
        """Delete the session's clone (it is unmounted) and what it names."""

    @abstractmethod
    def has_clone(self, session: Session) -> bool:
        """True if the session's clone exists."""

    def changes(self, session: Session) -> int | None:
        """Bytes the session has written, if the backend can tell cheaply."""
        return None

    @abstractmethod
    def stage(self, session: Session, staging: str, *, flatten: bool, scratch: str) -> bool:
        """Write the session's state as a generation into *staging* (which exists).

        The session is unmounted. Returns True if the generation is complete
        (flattened), False if it is a layer on top of the session's stack.
        *scratch* is an empty directory the backend may mount on.
        """

    def staged_size(self, session: Session, staging: str) -> int:
        """Bytes the generation staged from *session* adds (what history shows as its size)."""
        return self.generation_size(staging)

    @abstractmethod
    def unstage(self, session: Session, staging: str) -> None:
        """Undo :meth:`stage` so the session is as it was (the caller then removes *staging*).

        Must cope with every point a crash can interrupt :meth:`stage` at.
        """


class _StackedView:
    """The default view: the single layer itself, or the layers stacked read-only on a scratch directory.

    A class rather than ``contextlib.contextmanager``: importing contextlib (and
    with it collections and functools) would cost every begin and end a
    millisecond.
    """

    def __init__(self, lowers: list[str], scratch: str) -> None:
        self.lowers = lowers
        self.scratch = scratch
        self.mounted = False

    def __enter__(self) -> str:
        if len(self.lowers) == 1:
            return self.lowers[0]
        from .. import mounts
        from .overlayfs import mount_overlay

        try:
            mount_overlay(self.scratch, self.lowers)
        except BaseException:  # a half-made mount is taken down too
            mounts.unmount_tree(self.scratch, force=True)
            raise
        self.mounted = True
        return self.scratch

    def __exit__(self, *exc_info: object) -> None:
        if self.mounted:
            from .. import mounts

            self.mounted = False
            mounts.unmount_tree(self.scratch, force=True)
