"""dir: every generation is a complete directory tree.

Sessions are overlay mounts over the tree (O(1) to begin, like schroot's
directory chroots with union-type=overlay); a promote copies the merged
view into a new tree (reflinked where the file system can) and renames it
into place. Choose it for trees other tools read directly.
"""

from __future__ import annotations

from .overlay import OverlayBackend


class DirBackend(OverlayBackend):
    name = "dir"
    always_flatten = True
    summary = "a generation is a complete directory tree; a session is an overlay mount over it"
