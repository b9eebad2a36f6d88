"""overlay (the default): a generation is a layer on top of its parent's stack.

A session is an overlay mount of the stack with its own upper and work
directories (O(1) to begin). Promote renames the session's upper directory
into the new generation (O(change)); past ``overlay-max-depth`` layers, the
promote writes the merged tree instead, and the stack starts again.
"""

from __future__ import annotations

import os

from ..fsutil import remove_tree, tree_size
from ..records import Session
from .base import Backend
from .overlayfs import materialize, mount_overlay


class OverlayBackend(Backend):
    name = "overlay"
    summary = "a generation is a layer on its parent's stack; a session is an overlay mount"

    @staticmethod
    def _upper(session: Session) -> str:
        return os.path.join(session.clone, "upper")

    @staticmethod
    def _work(session: Session) -> str:
        return os.path.join(session.clone, "work")

    def create_clone(self, session: Session) -> None:
        os.mkdir(session.clone, 0o700)
        os.mkdir(self._upper(session), 0o755)
        os.mkdir(self._work(session), 0o700)

    def has_clone(self, session: Session) -> bool:
        return os.path.isdir(self._upper(session))

    def changes(self, session: Session) -> int | None:
        upper = self._upper(session)
        return tree_size(upper) if os.path.isdir(upper) else None

    def mount(self, session: Session) -> None:
        mount_overlay(session.mountpoint, session.lowers, self._upper(session), self._work(session))

    def remove_clone(self, session: Session) -> None:
        remove_tree(session.clone)

    def stage(self, session: Session, staging: str, *, flatten: bool, scratch: str) -> bool:
        tree = os.path.join(staging, "layer")
        if flatten or self.always_flatten:
            materialize([self._upper(session), *session.lowers], tree, scratch)
            return True
        os.rename(self._upper(session), tree)
        return False

    def unstage(self, session: Session, staging: str) -> None:
        tree = os.path.join(staging, "layer")
        if os.path.isdir(tree) and not os.path.exists(self._upper(session)):
            os.rename(tree, self._upper(session))
