"""Backends: how generations are stored and how sessions are cloned from them.

Every backend answers the same small set of questions (see :class:`Backend`);
the engine does the rest (locks, metadata, the atomic switch of ``current``,
the journal), so a backend never decides what is current or what may be
deleted. Sessions of every backend are mounted at ``<run>/mnt/<id>``.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .base import Backend, GenerationPaths, Known, NativeStream, Orphan, Site, StreamEdit, TooManyChanges

#: Every backend, in the order listings show them. This module imports nothing
#: else at load (core.settings reads the names on every command); a backend's
#: module is imported the first time it is asked for: a session of an overlay
#: image never pays for the zfs backend's imports.
NAMES = ("overlay", "dir", "btrfs", "zfs", "squashfs", "erofs")
#: Where each backend's class lives (module in this package, class name).
_CLASSES = {
    "overlay": ("overlay", "OverlayBackend"),
    "dir": ("dir", "DirBackend"),
    "btrfs": ("btrfs", "BtrfsBackend"),
    "zfs": ("zfs", "ZfsBackend"),
    "squashfs": ("imagefile", "SquashfsBackend"),
    "erofs": ("imagefile", "ErofsBackend"),
}
#: Backends :func:`best` tries, in order, before overlay: those whose clones are O(1) file system snapshots.
_PREFERRED = ("btrfs", "zfs")
_LOADED: dict[str, Backend] = {}

#: The value of ``default-backend`` that lets roost choose (see :func:`best`).
AUTO = "auto"


def __getattr__(name: str) -> object:
    """``backends.Backend``, ``backends.Site`` … without importing them at load."""
    if name in (
        "Backend",
        "GenerationPaths",
        "Known",
        "NativeStream",
        "Orphan",
        "Site",
        "StreamEdit",
        "TooManyChanges",
    ):
        from . import base

        return getattr(base, name)
    raise AttributeError(name)


def _load(name: str) -> Backend:
    module, cls = _CLASSES[name]
    backend: Backend = getattr(__import__(f"{__name__}.{module}", fromlist=[cls]), cls)()
    _LOADED[name] = backend
    return backend


def get(name: str) -> Backend:
    """The backend called *name*; unknown names are bad input (exit 2)."""
    if name not in _CLASSES:
        from ..errors import BadInput

        raise BadInput(f"unknown backend {name!r} (known: {', '.join(names())})")
    return _LOADED.get(name) or _load(name)


def names() -> tuple[str, ...]:
    return NAMES


def all() -> list[Backend]:
    """Every backend, in :data:`NAMES` order (each module imported on first use).

    Named for ``for b in backends.all()``; this module uses no builtin ``all``.
    """
    return [get(name) for name in NAMES]


def available(site: Site) -> list[Backend]:
    """The backends that can work for *site*."""
    return [b for b in all() if b.unavailable(site) is None]


def best(site: Site) -> Backend:
    """The backend a new image gets when nobody chose one.

    btrfs when the state root (or btrfs-pool) is on btrfs, zfs when a parent dataset is
    configured and usable, else overlay (which works on any file system
    with overlayfs).
    """
    for name in _PREFERRED:
        if get(name).unavailable(site) is None:
            return get(name)
    return get("overlay")


def report(site: Site) -> list[tuple[str, str | None, str]]:
    """(backend, why it is unavailable or None, what it is) for every backend."""
    return [(b.name, b.unavailable(site), b.summary) for b in all()]


def discard(path: str) -> None:
    """Remove a generation, staging, trash or clone directory of any backend, never through a mount.

    Every backend removes its part first (:meth:`Backend.discard`: what the
    directory names outside itself, such as a dataset or a subvolume in a
    pool, and subvolumes inside it); the rest is removed with
    :func:`~core.fsutil.remove_tree`.
    """
    from ..fsutil import remove_tree

    if not os.path.lexists(path):
        return
    for backend in all():
        backend.discard(path)
    if os.path.lexists(path):
        remove_tree(path)


def pointer_dirs(path: str) -> list[str]:
    """Directories at or below *path* where roost keeps a pointer to a generation's data."""
    return structural_dirs(path) + [d for e in _entries(path) for d in structural_dirs(os.path.join(path, e))]


def structural_dirs(path: str) -> list[str]:
    """Where roost writes pointers below *path*: a generation, staging or trash entry, an image
    directory (``generations/<n>``, ``staging/<tx>``, ``trash/<tx>/<n>``) or a directory of them."""
    found = [path, *_numbered(path), *_image_dirs(path)]
    for entry in _entries(path):
        found += _image_dirs(os.path.join(path, entry))
    return found


_IMAGE_ENTRIES = frozenset(("image.yaml", "generations", "current", "staging", "trash", "writer.json"))


def _looks_like_image(path: str) -> bool:
    """An image directory (or one being created): nothing in it a user's tree could have put there."""
    try:
        entries = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return "generations" in entries and not any(e not in _IMAGE_ENTRIES and not e.startswith(".") for e in entries)


def _entries(path: str) -> list[str]:
    try:
        return [e for e in os.listdir(path) if os.path.isdir(os.path.join(path, e))]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _numbered(path: str) -> list[str]:
    return [os.path.join(path, e) for e in _entries(path) if e.isdigit()]


def _image_dirs(image_dir: str) -> list[str]:
    if not _looks_like_image(image_dir):
        return []
    found = _numbered(os.path.join(image_dir, "generations"))
    found += [os.path.join(image_dir, "staging", tx) for tx in _entries(os.path.join(image_dir, "staging"))]
    for tx in _entries(os.path.join(image_dir, "trash")):
        found += _numbered(os.path.join(image_dir, "trash", tx))
    return found


__all__ = [
    "AUTO",
    "NAMES",
    "Backend",
    "GenerationPaths",
    "Known",
    "NativeStream",
    "Orphan",
    "Site",
    "StreamEdit",
    "TooManyChanges",
    "all",
    "available",
    "best",
    "discard",
    "get",
    "names",
    "pointer_dirs",
    "report",
    "structural_dirs",
]
