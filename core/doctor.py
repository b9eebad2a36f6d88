"""Consistency checks of a state root against the mount table and the records.

``roost doctor --check`` prints every mismatch, one per line, and exits
non-zero if there is any. Operations in progress (their locks held) are
not mismatches, so the check can run beside a busy host; tests run it after
every crash and recover.
"""

from __future__ import annotations

import os

from . import generations, leases, locks, mounts, policy
from . import session as session_ops
from .errors import RoostError
from .fsutil import is_temp_name
from .names import is_valid_name

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from .context import Context


def backends(ctx: Context) -> list[tuple[str, str | None, str]]:
    """(backend, why it cannot be used here or None, what it is) for every backend."""
    from . import backends as registry

    ctx.authorize(policy.HOST_VIEW)
    return registry.report(ctx.site())


def check(ctx: Context) -> list[str]:
    ctx.authorize(policy.HOST_ADMIN)
    store = ctx.store
    problems: list[str] = store.problems()
    if any("mount directory" not in p for p in problems):
        return problems  # nothing in roots others could write is read, let alone believed
    held = set(locks.kernel_flocks())
    table = mounts.mounts()
    sessions, broken = session_ops.read_all(ctx)
    for sid in broken:
        problems.append(f"session {sid}: unreadable record")
    known = {s.id for s in sessions}
    by_id = {s.id: s for s in sessions}

    def busy(lock_name: str) -> bool:
        try:
            return os.stat(os.path.join(store.lock_dir, lock_name + ".lock")).st_ino in held
        except FileNotFoundError:
            return False

    # store-level leftovers
    for directory in (store.staging_dir, store.trash_dir):
        for tx in _listdir(directory):
            if not busy(store.tx_lock_name(tx)):
                problems.append(f"leftover {os.path.join(directory, tx)}")
    for directory in (store.sessions_dir, store.images_dir):
        for name in _listdir(directory):
            if is_temp_name(name):
                problems.append(f"leftover temporary file {os.path.join(directory, name)}")

    # images and generations
    for entry in _listdir(store.images_dir):
        path = os.path.join(store.images_dir, entry)
        if os.path.islink(path) or not os.path.isdir(path):
            problems.append(f"{path} is not an image directory (a symlink or a file); remove it")
    for name in store.image_names():
        where = f"image {name}"
        if not os.path.isfile(store.image_yaml(name)):
            problems.append(f"{where}: no image.yaml")
        done, dirs_only, metas_only = generations.scan(store, name)
        try:
            cur = generations.current(store, name)
            if cur not in done:
                problems.append(f"{where}: current names generation {cur}, which is not complete")
        except RoostError as e:
            problems.append(f"{where}: {e}")
        for n in sorted(dirs_only):
            problems.append(f"{where}: generation {n} has data but no metadata")
        for n in done:
            problems += _private(store.generation_dir(name, n), f"{where}: generation {n}")
        for n in sorted(metas_only):
            problems.append(f"{where}: generation {n} has metadata but no data")
        for n in done:
            try:
                meta = generations.read_meta(store, name, n)
            except RoostError as e:
                problems.append(f"{where}: {e}")
                continue
            for layer in meta.stack:
                if layer not in done:
                    problems.append(f"{where}: generation {n} stands on missing generation {layer}")
        for sub in ("staging", "trash"):
            for tx in _listdir(os.path.join(store.image_dir(name), sub)):
                if not busy(store.tx_lock_name(tx)):
                    problems.append(f"{where}: leftover {sub}/{tx}")
        for entry in _listdir(store.image_dir(name)) + _listdir(store.generations_dir(name)):
            if is_temp_name(entry):
                problems.append(f"{where}: leftover temporary {entry}")
        lease = locks.read_lease(store.writer_lease(name))
        if lease is not None and lease.session not in known:
            problems.append(f"{where}: writer lock held by missing session {lease.session} (stale)")
        elif (
            lease is not None
            and not leases.binds(by_id[lease.session])
            and not busy(store.session_lock_name(lease.session))  # a promote is marking it
        ):
            problems.append(f"{where}: writer lock left by an interrupted promote of {lease.session} (stale)")

    # sessions against the mount table
    for s in sessions:
        where = f"session {s.id}"
        if busy(store.session_lock_name(s.id)):
            continue  # an operation is under way
        if s.state != "active":
            problems.append(f"{where}: interrupted while {s.state} (roost session recover)")
            continue
        if not os.path.isdir(s.clone):
            problems.append(f"{where}: its clone {s.clone} is missing")
        else:
            problems += _private(s.clone, f"{where}: its clone")
        if not mounts.is_mounted(s.mountpoint, table):
            problems.append(f"{where}: not mounted (needs recovery)")
        for lower in s.lowers:
            if not os.path.exists(lower):
                problems.append(f"{where}: layer {lower} is missing")
    for name in _listdir(store.mnt_dir):
        path = os.path.join(store.mnt_dir, name)
        if name in known or path == store.stage_dir:
            continue
        if mounts.mounts_below(path, table):
            problems.append(f"mount at {path} belongs to no session")
        else:
            problems.append(f"leftover mount point {path}")
    for tx in _listdir(store.stage_dir):
        path = os.path.join(store.stage_dir, tx)
        if busy(store.tx_lock_name(tx)):
            continue
        if mounts.mounts_below(path, table):
            problems.append(f"scratch mount at {path} belongs to no operation")
        else:
            problems.append(f"leftover scratch mount point {path}")
    for name in _listdir(store.sessions_dir):
        path = os.path.join(store.sessions_dir, name)
        if (
            is_valid_name(name)
            and name not in known
            and os.path.isdir(path)
            and not busy(store.session_lock_name(name))
        ):
            problems.append(f"clone {path} belongs to no session")
    problems += _backend_leftovers(ctx)
    from .isolation_upkeep import check as isolation_check

    problems += isolation_check(ctx, sessions, lambda sid: busy(store.session_lock_name(sid)))
    return problems


def _backend_leftovers(ctx: Context) -> list[str]:
    """Data backends keep outside the state root that nothing names (zfs datasets)."""
    from . import backends as registry

    site = ctx.site()
    known = registry.Known(ctx.store)
    problems = []
    for backend in registry.all():
        try:
            orphans = backend.orphans(site, known)
        except RoostError as e:
            problems.append(f"cannot list the data of backend {backend.name}: {e}")
            continue
        problems += [f"{o.kind} {o.name} belongs to no generation or session" for o in orphans]
    return problems


def _private(path: str, what: str) -> list[str]:
    """A problem if others may reach into *path* (an image's tree holds setuid programs)."""
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return []
    if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o077:
        return [f"{what} {path} is open to others (mode {stat.S_IMODE(st.st_mode):04o}, want 0700)"]
    return []


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []
