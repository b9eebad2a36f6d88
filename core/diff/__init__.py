"""Diffs: what a session changed, what differs between two generations.

Files added, removed and changed (size, mode, owner, symlink target,
extended attributes, hard links) and, where the roots have dpkg, packages
installed, removed, upgraded and downgraded. The entries are streamed;
see :mod:`core.diff.ops` for the operations and how each backend is read.
"""

from __future__ import annotations

from .dpkg import PackageChange, compare_versions
from .model import DiffSummary, FileChange, FileState
from .ops import Diff, image_diff, session_diff

__all__ = [
    "Diff",
    "DiffSummary",
    "FileChange",
    "FileState",
    "PackageChange",
    "compare_versions",
    "image_diff",
    "session_diff",
]
