"""The interface every backend implements."""

from __future__ import annotations

import os

from ..records import Session
from ..struct import Struct


class GenerationPaths(Struct, frozen=True):
    """Where one generation's data lives: ``generations/<n>/`` and its tree."""

    directory: str

    @property
    def tree(self) -> str:
        return os.path.join(self.directory, "layer")


class Backend:
    """How one storage technology keeps generations and clones sessions.

    A generation is written in a staging directory and renamed into place by
    the engine; a backend only fills directories it is given and mounts
    sessions. Generation *stacks* (for layered backends) are lists of
    generation numbers, newest first, resolved to paths by :meth:`lowers`.
    """

    name = ""
    #: True when a promote always writes a complete tree (no layering).
    always_flatten = False

    def init_generation(self, directory: str) -> str:
        """Create an empty generation directory; return where its tree must be written."""
        os.mkdir(directory, 0o700)
        return GenerationPaths(directory).tree

    def lowers(self, generations_dir: str, stack: list[int]) -> list[str]:
        """Real paths of the layers of a generation, topmost first."""
        return [GenerationPaths(os.path.join(generations_dir, str(n))).tree for n in stack]

    def create_clone(self, session: Session) -> None:
        raise NotImplementedError

    def mount(self, session: Session) -> None:
        """Mount the session's root at ``session.mountpoint`` (which exists, empty)."""
        raise NotImplementedError

    def remove_clone(self, session: Session) -> None:
        raise NotImplementedError

    def has_clone(self, session: Session) -> bool:
        raise NotImplementedError

    def stage(self, session: Session, staging: str, *, flatten: bool, scratch: str) -> bool:
        """Write the session's state as a generation tree into *staging* (which exists).

        The session is unmounted. Returns True if the tree is complete
        (flattened), False if it is a layer on top of the session's stack.
        *scratch* is an empty directory the backend may mount on.
        """
        raise NotImplementedError

    def unstage(self, session: Session, staging: str) -> None:
        """Undo :meth:`stage` so the session is as it was (the caller then removes *staging*)."""
        raise NotImplementedError

    def remove_generation(self, directory: str) -> None:
        from ..fsutil import remove_tree

        remove_tree(directory)

    def view(self, lowers: list[str], scratch: str) -> LayersView:
        """A read-only view of one generation's complete tree, given its layers (topmost first).

        Use it as a context manager; it yields the tree's path. *scratch* is an
        empty directory the backend may mount on; nothing stays mounted when the
        context ends. Backends that keep generations otherwise override this.
        """
        return LayersView(lowers, scratch)


class LayersView:
    """A single complete layer is its own view; a stack is mounted read-only as overlay."""

    def __init__(self, lowers: list[str], scratch: str) -> None:
        self.lowers = lowers
        self.scratch = scratch
        self.mounted = False

    def __enter__(self) -> str:
        if len(self.lowers) == 1:
            return self.lowers[0]
        from .overlayfs import mount_overlay

        self.mounted = True  # even a half-made mount is taken down on the way out
        try:
            mount_overlay(self.scratch, self.lowers)
        except BaseException:
            self.__exit__()
            raise
        return self.scratch

    def __exit__(self, *exc: object) -> None:
        if self.mounted:
            from .. import mounts

            self.mounted = False
            mounts.unmount_tree(self.scratch, force=True)
