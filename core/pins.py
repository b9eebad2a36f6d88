"""Pins: a generation being read (exported) must not be deleted under its reader.

A pin is an exclusive flock named ``pin.<image>.<generation>.<tx>`` in the
lock directory, held by the reading process for as long as it reads, so it
shows its holder in ``roost locks`` like every other lock and vanishes
with its process. It is taken under the image's lock (after checking that
the generation exists); gc and image removal look for held pins under the
same lock, so a pin can never be missed nor a pinned generation deleted.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import generations, locks
from .errors import NotFound
from .store import new_tx

if TYPE_CHECKING:
    from .context import Context

PREFIX = "pin."


def pin(ctx: Context, image: str, generation: int, operation: str) -> locks.Lock:
    """Pin *generation* of *image*; release the returned lock (with ``remove=True``) when done."""
    with ctx.image_lock(image, f"pin {generation} for {operation}", exclusive=False):
        if generation not in generations.complete(ctx.store, image):
            raise NotFound(f"image {image} has no generation {generation}")
        return ctx.lock(f"{PREFIX}{image}.{generation}.{new_tx()}", operation, wait=False)


def pinned(ctx: Context, image: str, *, sweep: bool = False) -> dict[int, list[locks.LockState]]:
    """Generations of *image* pinned by a live process, with the pins' holders.

    With *sweep* (the caller holds the image's lock exclusively), the files of
    pins whose holder died are removed.
    """
    lock_dir = ctx.store.lock_dir
    prefix = f"{PREFIX}{image}."
    try:
        names = [n for n in os.listdir(lock_dir) if n.startswith(prefix) and n.endswith(locks.LOCK_SUFFIX)]
    except FileNotFoundError:
        return {}
    if not names:
        return {}
    states = {s.lock: s for s in locks.lock_states(lock_dir) if s.lock.startswith(prefix)}
    out: dict[int, list[locks.LockState]] = {}
    for name in names:
        lock = name.removesuffix(locks.LOCK_SUFFIX)
        parts = lock[len(prefix) :].split(".")
        if len(parts) != 2 or not parts[0].isdigit():
            continue  # another image whose name starts with this one's, followed by a dot
        state = states.get(lock)
        if state is not None and not state.stale:
            out.setdefault(int(parts[0]), []).append(state)
        elif sweep:
            try:
                os.unlink(os.path.join(lock_dir, name))
            except FileNotFoundError:
                pass
    return out


def describe(pins: dict[int, list[locks.LockState]]) -> str:
    """One phrase naming who holds the pins, for an error line."""
    holders = [f"generation {n} by pid {s.pid} ({s.user}, {s.operation})" for n, ss in sorted(pins.items()) for s in ss]
    more = f" and {len(holders) - 3} more" if len(holders) > 3 else ""
    return ", ".join(holders[:3]) + more
