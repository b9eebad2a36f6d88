"""Generations of an image: their metadata, which are complete, which is current.

A generation *n* is complete when both ``generations/<n>/`` and
``generations/<n>.yaml`` exist; the YAML is written (durably) before the
directory is renamed into place, so a crash between the two leaves a YAML
whose ``tx`` names the staging directory to finish from. ``current`` is a
relative symlink ``generations/<n>``, replaced with rename(2).
"""

from __future__ import annotations

import os

from .errors import ConfigError, NotFound, SystemFailure
from .fsutil import atomic_write
from .store import Store
from .struct import Struct
from .yamlio import dump_yaml, read_yaml

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from typing import Any


class GenerationMeta(Struct, frozen=True):
    generation: int
    parent: int | None
    created: str
    author: str
    message: str
    session: str | None
    size: int
    backend: str
    stack: tuple[int, ...] = ()
    tx: str | None = None
    flattened: bool = False
    identity: str | None = None  # set on generations received from another host (core/replicate.py)

    def to_yaml(self) -> str:
        data: dict[str, Any] = {
            "generation": self.generation,
            "parent": self.parent,
            "created": self.created,
            "author": self.author,
            "message": self.message,
            "session": self.session,
            "size": self.size,
            "backend": self.backend,
            "stack": list(self.stack),
            "flattened": self.flattened,
            "tx": self.tx,
        }
        if self.identity is not None:
            data["identity"] = self.identity
        return dump_yaml(data)

    @classmethod
    def from_data(cls, data: Any, where: str) -> GenerationMeta:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: not a generation record")
        try:
            number = data["generation"]
            stack = tuple(int(n) for n in (data.get("stack") or [number]))
            parent = data.get("parent")
            return cls(
                generation=int(number),
                parent=int(parent) if parent is not None else None,
                created=str(data.get("created", "")),
                author=str(data.get("author", "")),
                message=str(data.get("message") or ""),
                session=str(data["session"]) if data.get("session") else None,
                size=int(data.get("size") or 0),
                backend=str(data.get("backend", "overlay")),
                stack=stack,
                tx=str(data["tx"]) if data.get("tx") else None,
                flattened=bool(data.get("flattened", False)),
                identity=str(data["identity"]) if data.get("identity") else None,
            )
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{where}: malformed generation record") from None


def read_meta(store: Store, image: str, number: int) -> GenerationMeta:
    path = store.generation_meta(image, number)
    try:
        data = read_yaml(path, store.cache_dir)
    except FileNotFoundError:
        raise NotFound(f"image {image} has no generation {number}") from None
    return GenerationMeta.from_data(data, path)


def write_meta(store: Store, image: str, meta: GenerationMeta) -> None:
    atomic_write(store.generation_meta(image, meta.generation), meta.to_yaml(), durable=True)


def scan(store: Store, image: str) -> tuple[list[int], set[int], set[int]]:
    """(complete numbers ascending, directories without YAML, YAML without directory)."""
    try:
        names = os.listdir(store.generations_dir(image))
    except FileNotFoundError:
        return [], set(), set()
    dirs, metas = set(), set()
    for name in names:
        if name.isdigit():
            dirs.add(int(name))
        elif name.endswith(".yaml") and name[:-5].isdigit():
            metas.add(int(name[:-5]))
    return sorted(dirs & metas), dirs - metas, metas - dirs


def complete(store: Store, image: str) -> list[int]:
    return scan(store, image)[0]


def highest(store: Store, image: str) -> int:
    """The highest generation number ever allocated that is still on disk (0 if none)."""
    done, dirs, metas = scan(store, image)
    return max([0, *done, *dirs, *metas])


def current(store: Store, image: str) -> int:
    link = store.current_link(image)
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        if not os.path.isdir(store.image_dir(image)):
            raise NotFound(f"no image {image!r}") from None
        raise SystemFailure(f"image {image} has no current generation (roost doctor --check)") from None
    except OSError as e:
        raise SystemFailure(f"{link}: {e.strerror}") from None
    head, _, number = target.rpartition("/")
    if head != "generations" or not number.isdigit():
        raise SystemFailure(f"{link} points at {target!r}, not at a generation")
    return int(number)


def commit(store: Store, image: str, meta: GenerationMeta, staging: str) -> None:
    """Make the tree staged at *staging* generation ``meta.generation`` of *image*, and current.

    Promote's commit, in the order recover relies on: the metadata (naming the
    transaction), then the directory renamed into place, then ``current`` switched,
    with a crash point after each step (core/faults.py).
    """
    from . import faults

    write_meta(store, image, meta)
    faults.crashpoint("promote", "committed")
    os.rename(staging, store.generation_dir(image, meta.generation))
    faults.crashpoint("promote", "renamed")
    switch(store, image, meta.generation)
    faults.crashpoint("promote", "switched")


def switch(store: Store, image: str, number: int) -> None:
    """Make *number* current: a fresh symlink renamed over ``current``, then fsync."""
    from .fsutil import fsync_dir, replace_symlink

    replace_symlink(f"generations/{number}", store.current_link(image))
    fsync_dir(store.image_dir(image))
