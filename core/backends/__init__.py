"""Backends: how generations are stored and how sessions are cloned from them.

Every backend answers the same small set of questions (see :class:`Backend`);
the engine does the rest (locks, metadata, the atomic switch of ``current``,
the journal), so a backend never decides what is current or what may be
deleted. Sessions of every backend are mounted at ``<run>/mnt/<id>``.
"""

from __future__ import annotations

from .base import Backend, GenerationPaths
from .dir import DirBackend
from .overlay import OverlayBackend

_REGISTRY: dict[str, Backend] = {b.name: b for b in (OverlayBackend(), DirBackend())}


def get(name: str) -> Backend:
    from ..errors import BadInput

    try:
        return _REGISTRY[name]
    except KeyError:
        raise BadInput(f"unknown backend {name!r} (known: {', '.join(names())})") from None


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


__all__ = ["Backend", "GenerationPaths", "get", "names"]
