"""Backends: how generations are stored and how sessions are cloned from them.

Every backend answers the same small set of questions (see :class:`Backend`);
the engine does the rest (locks, metadata, the atomic switch of ``current``,
the journal), so a backend never decides what is current or what may be
deleted. Sessions of every backend are mounted at ``<run>/mnt/<id>``.
"""

from __future__ import annotations

import os

from .base import Backend, GenerationPaths, Site

#: Every backend, in the order listings show them. A backend's module is imported
#: the first time it is asked for: a session of an overlay image never pays for
#: the zfs backend's imports.
_NAMES = ("overlay", "dir", "btrfs", "zfs", "squashfs", "erofs")
_LOADED: dict[str, Backend] = {}


def _load(name: str) -> Backend:
    backend: Backend
    if name == "overlay":
        from .overlay import OverlayBackend

        backend = OverlayBackend()
    elif name == "dir":
        from .dir import DirBackend

        backend = DirBackend()
    elif name == "btrfs":
        from .btrfs import BtrfsBackend

        backend = BtrfsBackend()
    elif name == "zfs":
        from .zfs import ZfsBackend

        backend = ZfsBackend()
    elif name == "squashfs":
        from .imagefile import SquashfsBackend

        backend = SquashfsBackend()
    else:
        from .imagefile import ErofsBackend

        backend = ErofsBackend()
    _LOADED[name] = backend
    return backend


#: The value of ``default-backend`` that lets roost choose (see :func:`best`).
AUTO = "auto"


def get(name: str) -> Backend:
    from ..errors import BadInput

    if name not in _NAMES:
        raise BadInput(f"unknown backend {name!r} (known: {', '.join(names())})")
    return _LOADED.get(name) or _load(name)


def names() -> tuple[str, ...]:
    return _NAMES


def best(site: Site) -> Backend:
    """The backend a new image gets when nobody chose one.

    btrfs when the state root (or btrfs-pool) is on btrfs, zfs when a parent dataset is
    configured and usable, else overlay (which works on any file system
    with overlayfs).
    """
    for name in ("btrfs", "zfs"):
        if get(name).unavailable(site) is None:
            return get(name)
    return get("overlay")


def report(site: Site) -> list[tuple[str, str | None, str]]:
    """(backend, why it is unavailable or None, what it is) for every backend."""
    return [(b.name, b.unavailable(site), b.summary) for b in map(get, _NAMES)]


def discard(path: str) -> None:
    """Remove a generation, staging, trash or clone directory of any backend, never through a mount.

    What the directory names outside itself (a zfs dataset) is destroyed
    through its backend; btrfs subvolumes inside it are deleted as
    subvolumes; the rest is removed with :func:`~core.fsutil.remove_tree`.
    Pointers are only looked for where roost writes them (``<n>/snapshot``,
    ``<tx>/snapshot``, ``<image>/generations/<n>/snapshot``, a zfs clone's
    ``dataset``, a ``layer`` or clone link into a btrfs pool), never inside a
    tree an image or a session could fill.
    """
    from ..fsutil import remove_tree
    from . import btrfs, zfs

    if not os.path.lexists(path):
        return
    if os.path.islink(path) and os.path.basename(os.path.dirname(path)) == "sessions":
        btrfs.remove_linked(path)  # a btrfs session clone in a pool
        return
    if os.path.isdir(path) and not os.path.islink(path):
        for directory in _structural_dirs(path):
            if os.path.isfile(os.path.join(directory, zfs.POINTER)):
                get("zfs").remove_generation(directory)
            layer = os.path.join(directory, "layer")
            if os.path.islink(layer):
                btrfs.remove_linked(layer)  # a btrfs generation in a pool
        if os.path.isdir(path) and not btrfs.is_subvolume(path) and os.listdir(path) == ["dataset"]:
            zfs.destroy_session_dataset(os.path.join(path, "dataset"))
        if os.path.isdir(path) and btrfs.on_btrfs(path):
            btrfs.remove_tree_and_subvolumes(path)
            return
    remove_tree(path)


def pointer_dirs(path: str) -> list[str]:
    """Directories at or below *path* where roost keeps a pointer to a generation's data."""
    return _structural_dirs(path) + [d for e in _entries(path) for d in _structural_dirs(os.path.join(path, e))]


def _structural_dirs(path: str) -> list[str]:
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
    return "generations" in entries and all(e in _IMAGE_ENTRIES or e.startswith(".") for e in entries)


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


__all__ = ["AUTO", "Backend", "GenerationPaths", "Site", "best", "discard", "get", "names", "pointer_dirs", "report"]
