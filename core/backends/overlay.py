"""overlay (the default): a generation is a layer on top of its parent's stack.

A session is an overlay mount of the stack with its own upper and work
directories (O(1) to begin). Promote renames the session's upper directory
into the new generation (O(change)); past ``overlay-max-depth`` layers, the
promote writes the merged tree instead, and the stack starts again.
"""

from __future__ import annotations

import os

from ..records import Session
from .base import Backend
from .overlayfs import UpperClone, materialize, mount_overlay


class OverlayBackend(UpperClone, Backend):
    name = "overlay"
    summary = "a generation is a layer on its parent's stack; a session is an overlay mount"
    layered = True

    def mount(self, session: Session) -> None:
        mount_overlay(
            session.mountpoint, session.lowers, self._upper(session), self._work(session), volatile=session.volatile
        )

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
