"""Image operations: create, list, info, history, rollback, remove, gc."""

from __future__ import annotations

import os

from . import backends, faults, generations, locks, mounts, policy, records, syscalls
from .actor import now_iso
from .errors import BadInput, ConfigError, Conflict, NotFound, NotPermitted, RoostError
from .fsutil import atomic_write, ensure_dir, fsync_dir, sync_filesystem
from .generations import GenerationMeta
from .imageconf import ImageConfig, parse_image_config
from .imagerefs import aliases as aliases
from .imagerefs import authorize as authorize
from .imagerefs import exists as exists
from .imagerefs import load_config as load_config
from .imagerefs import require as require
from .imagerefs import resolve as resolve
from .imagerefs import target as target
from .names import check_object_name
from .profiles import profile_path
from .store import new_tx
from .struct import Struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Mapping
    from typing import Any

    from .context import Context
    from .importers import Source
    from .views import GenerationInfo, ImageInfo


class GcResult(Struct, frozen=True):
    image: str
    removed: list[int] = []
    kept: list[int] = []
    freed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "removed": self.removed, "kept": self.kept, "freed": self.freed}


# --- reading -----------------------------------------------------------------------


def visible_names(ctx: Context) -> list[str]:
    """The images the caller may see (the policy's ``see``), sorted."""
    return [n for n in ctx.store.image_names() if _permits(ctx, policy.IMAGE_VIEW, n)]


def exists_for(ctx: Context, name: str) -> bool:
    """Whether image *name* exists: names are no secret (the state root lists them to everyone)."""
    ctx.authorize(policy.HOST_VIEW)
    check_object_name(name, "image name")
    return exists(ctx, name)


def current_generation(ctx: Context, name: str) -> int:
    authorize(ctx, policy.IMAGE_VIEW, name)
    return generations.current(ctx.store, name)


def _check_aliases(ctx: Context, name: str, wanted: tuple[str, ...]) -> None:
    """Refuse a name or aliases that clash with another image's name or aliases (one namespace)."""
    taken = aliases(ctx)
    owners = [i for i in taken.get(name, []) if i != name]
    if owners:
        raise Conflict(f"{name} is already an alias of image {owners[0]}")
    for alias in wanted:
        if alias == name or exists(ctx, alias):
            raise Conflict(f"alias {alias} is already the name of an image")
        others = [i for i in taken.get(alias, []) if i != name]
        if others:
            raise Conflict(f"alias {alias} is already an alias of image {others[0]}")


def _sessions_by_image(ctx: Context) -> dict[str, list[records.Session]]:
    found, _ = records.read_all(ctx.store.sessions_dir)
    by_image: dict[str, list[records.Session]] = {}
    for s in found:
        by_image.setdefault(s.image, []).append(s)
    return by_image


def info(ctx: Context, name: str, by_image: dict[str, list[records.Session]] | None = None) -> ImageInfo:
    config = authorize(ctx, policy.IMAGE_VIEW, name)
    if by_image is None:
        by_image = _sessions_by_image(ctx)
    metas = {}
    for n in generations.complete(ctx.store, name):
        try:
            metas[n] = generations.read_meta(ctx.store, name, n)
        except RoostError:
            continue
    from . import leases, views

    return views.image_info(
        name,
        config,
        generations.current(ctx.store, name),
        metas,
        by_image.get(name, []),
        leases.read(ctx, name),
        storage=_storage(ctx, config.backend),
        access=ctx.policy.level(ctx.actor, config.access_lists()),
    )


def _storage(ctx: Context, backend: str) -> str:
    try:
        return backends.get(backend).storage(ctx.site())
    except RoostError:
        return ""


def list_images(ctx: Context) -> list[ImageInfo]:
    by_image = _sessions_by_image(ctx)
    out = []
    for name in ctx.store.image_names():
        try:
            out.append(info(ctx, name, by_image))
        except (NotFound, NotPermitted):
            continue  # removed while we listed, or not the caller's to see
    return out


def _in_use(ctx: Context, name: str, sessions: list[records.Session]) -> set[int]:
    from . import views

    return views.in_use(ctx.store.generations_dir(name), sessions)


def history(ctx: Context, name: str) -> list[GenerationInfo]:
    authorize(ctx, policy.IMAGE_VIEW, name)
    complete = generations.complete(ctx.store, name)
    metas = {n: generations.read_meta(ctx.store, name, n) for n in complete}
    used = _in_use(ctx, name, _sessions_by_image(ctx).get(name, []))
    from . import views

    return views.history(complete, metas, generations.current(ctx.store, name), used)


# --- create --------------------------------------------------------------------------


def create(
    ctx: Context,
    name: str,
    source: Source,
    *,
    backend: str | None,
    profile: str,
    description: str,
    settings: Mapping[str, Any] | None = None,
) -> ImageInfo:
    """A new image from *source*; *settings* are further image.yaml keys (users, aliases …)."""
    ctx.require_privileged("image create")
    ctx.authorize(policy.IMAGE_CREATE)
    check_object_name(name, "image name")
    backend_obj = choose_backend(ctx, backend)
    try:
        profile_path(profile, ctx.settings.profiles_dir)
    except NotFound as e:
        raise BadInput(str(e)) from None
    if len(description) > 4096 or "\x00" in description:
        raise BadInput("description is too long or holds a NUL")
    # Access is granted in image.yaml, never as a side effect of creating (docs/security.md).
    wanted: dict[str, Any] = {"root-users": [], **(settings or {})}
    wanted.update(backend=backend_obj.name, description=description, profile=profile)
    try:
        config = parse_image_config(wanted, "image settings", backends.names())
    except ConfigError as e:
        raise BadInput(str(e)) from None
    from .callerfs import CallerFiles

    files = CallerFiles(ctx.actor)  # what the caller named is read with the caller's rights
    source.check(files)
    ctx.ready()
    if exists(ctx, name):
        raise Conflict(f"image {name} already exists")
    _check_aliases(ctx, name, config.aliases)
    store = ctx.store
    with ctx.image_lock(name, "create"):
        if exists(ctx, name):
            raise Conflict(f"image {name} already exists")
        _check_aliases(ctx, name, config.aliases)
        tx = new_tx()
        tx_lock = ctx.lock(store.tx_lock_name(tx), f"create {name}")
        try:
            staging = os.path.join(store.staging_dir, tx)
            try:
                os.mkdir(staging, 0o755)
                os.mkdir(os.path.join(staging, "generations"), 0o755)
                gen_dir = os.path.join(staging, "generations", "1")
                tree = backend_obj.init_generation(gen_dir, ctx.site(), f"{name}.{tx}")
                from .importers import fill

                fill(source, tree, ctx.progress, files)
                config = _with_architecture(config, source, tree)
                ctx.progress(None, "syncing")
                backend_obj.finish_generation(gen_dir)
                size = backend_obj.generation_size(gen_dir)
                meta = GenerationMeta(
                    generation=1,
                    parent=None,
                    created=now_iso(),
                    author=ctx.actor.user,
                    message=f"created from {source.describe()}",
                    session=None,
                    size=size,
                    backend=backend_obj.name,
                    stack=(1,),
                    flattened=True,
                )
                atomic_write(os.path.join(staging, "generations", "1.yaml"), meta.to_yaml())
                atomic_write(os.path.join(staging, "image.yaml"), _config_yaml(config))
                os.symlink("generations/1", os.path.join(staging, "current"))
                sync_filesystem(staging)
                faults.crashpoint("create", "staged")
                try:
                    os.rename(staging, store.image_dir(name))
                except OSError as e:
                    raise Conflict(f"image {name} already exists ({e.strerror})") from None
                fsync_dir(store.images_dir)
                faults.crashpoint("create", "renamed")
            except BaseException as e:
                _discard_staging(staging)
                ctx.journal("image create", image=name, result="failed", error=str(e))
                raise
        finally:
            tx_lock.release(remove=True)
    ctx.journal("image create", image=name, generation=1, backend=backend_obj.name, size=size)
    return info(ctx, name)


def default_backend(ctx: Context) -> str:
    """The backend ``image create`` uses when none is given (``default-backend``, or the best here)."""
    ctx.authorize(policy.HOST_VIEW)
    name = ctx.settings.default_backend
    return backends.best(ctx.site()).name if name == backends.AUTO else name


def _with_architecture(config: ImageConfig, source: Source, tree: str) -> ImageConfig:
    """Record the tree's architecture (and mmdebstrap's suite) in image.yaml, unless given."""
    from .binfmt import tree_arch

    changes: dict[str, Any] = {}
    if config.architecture is None:
        changes["architecture"] = source.arch if source.kind == "mmdebstrap" and source.arch else tree_arch(tree)
    if config.suite is None and source.kind == "mmdebstrap" and source.suite:
        changes["suite"] = source.suite
    return config.replace(**changes) if changes else config


def choose_backend(ctx: Context, backend: str | None) -> backends.Backend:
    """The backend a new image gets: the one asked for, else ``default-backend`` (``auto``: the best here).

    Raises :class:`BadInput` (one line, nothing changed) when it cannot work on this host.
    """
    name = backend or ctx.settings.default_backend
    site = ctx.site()
    chosen = backends.best(site) if name == backends.AUTO else backends.get(name)
    chosen.require(site)
    return chosen


def _discard_staging(staging: str) -> None:
    if os.path.lexists(staging):
        if os.path.isdir(staging) and not os.path.islink(staging):
            from . import procs

            procs.kill_in_root(staging, 0.5)  # a cancelled mmdebstrap's chrooted maintainer scripts
        mounts.unmount_tree(staging, force=True)  # a tree mounted to be filled (zfs), mmdebstrap's /proc
        backends.discard(staging)


def _config_yaml(config: ImageConfig) -> str:
    from .yamlio import dump_yaml

    header = "# roost image configuration (see roost(8), FILES). Edit freely; roost validates it on use.\n"
    return header + dump_yaml(config.to_yaml_dict())


# --- convert -------------------------------------------------------------------------


def convert(ctx: Context, name: str, backend: str, *, new_name: str | None) -> ImageInfo:
    """Write the current generation of *name* into *backend* as a new image.

    With *new_name*, a new image of that name; without, *name* itself is
    replaced (refused while it has sessions): the new image is built beside
    it and swapped in with one atomic exchange, so a crash leaves either the
    old image or the new one. History does not follow: the new image starts
    at generation 1, whose message names where it came from.
    """
    ctx.require_privileged("image convert")
    config = authorize(ctx, policy.IMAGE_CONVERT, name)
    dest = new_name or name
    check_object_name(dest, "image name")
    backend_obj = choose_backend(ctx, backend)
    in_place = dest == name
    if in_place and backend_obj.name == config.backend:
        raise BadInput(f"image {name} already uses the {config.backend} backend")
    if not in_place:
        ctx.authorize(policy.IMAGE_CREATE)
        if exists(ctx, dest):
            raise Conflict(f"image {dest} already exists")
        _check_aliases(ctx, dest, ())
    if in_place:
        _refuse_sessions(ctx, name, "convert")
    ctx.ready()
    store = ctx.store
    source_backend = backends.get(config.backend)
    # A copy under a new name leaves the aliases with the original (names and aliases are one namespace).
    new_config = config.replace(backend=backend_obj.name, aliases=() if not in_place else config.aliases)
    tx = new_tx()
    staging = os.path.join(store.staging_dir, tx)
    tx_lock = ctx.lock(store.tx_lock_name(tx), f"convert {name}")
    scratch = os.path.join(store.stage_dir, tx)
    try:
        try:
            with ctx.image_lock(name, f"convert {name}", exclusive=False):
                number = generations.current(store, name)
                stack = list(generations.read_meta(store, name, number).stack)
                gen_dir = store.generation_dir(name, number)
                lowers = source_backend.lowers(store.generations_dir(name), stack)
                os.mkdir(staging, 0o755)
                os.mkdir(os.path.join(staging, "generations"), 0o755)
                new_dir = os.path.join(staging, "generations", "1")
                tree = backend_obj.init_generation(new_dir, ctx.site(), f"{dest}.{tx}")
                os.makedirs(scratch, mode=0o700, exist_ok=True)
                with source_backend.view(gen_dir, lowers, scratch) as view:
                    from .importers import Source, fill

                    fill(Source("dir", path=view), tree, ctx.progress)
            ctx.progress(None, "syncing")
            backend_obj.finish_generation(new_dir)
            meta = GenerationMeta(
                generation=1,
                parent=None,
                created=now_iso(),
                author=ctx.actor.user,
                message=f"converted from generation {number} of {name} ({config.backend})",
                session=None,
                size=backend_obj.generation_size(new_dir),
                backend=backend_obj.name,
                stack=(1,),
                flattened=True,
            )
            atomic_write(os.path.join(new_dir + ".yaml"), meta.to_yaml())
            atomic_write(os.path.join(staging, "image.yaml"), _config_yaml(new_config))
            os.symlink("generations/1", os.path.join(staging, "current"))
            sync_filesystem(staging)
            faults.crashpoint("convert", "staged")
            if in_place:
                with ctx.image_lock(name, f"convert {name}"):
                    _refuse_sessions(ctx, name, "convert")
                    syscalls.exchange(staging, store.image_dir(name))
                    fsync_dir(store.images_dir)
                    faults.crashpoint("convert", "exchanged")
                _delete_image_tree(staging, config.backend)  # the old image, now in staging
            else:
                with ctx.image_lock(dest, "create"):
                    _check_aliases(ctx, dest, ())
                    try:
                        os.rename(staging, store.image_dir(dest))
                    except OSError as e:
                        raise Conflict(f"image {dest} already exists ({e.strerror})") from None
                    fsync_dir(store.images_dir)
        except BaseException as e:
            _discard_staging(staging)
            ctx.journal("image convert", image=name, result="failed", error=str(e))
            raise
        finally:
            if os.path.isdir(scratch):
                mounts.unmount_tree(scratch, force=True)
                os.rmdir(scratch)
    finally:
        tx_lock.release(remove=True)
    ctx.journal("image convert", image=name, dest=dest, backend=backend_obj.name, generation=number)
    return info(ctx, dest)


def _refuse_sessions(ctx: Context, name: str, verb: str) -> None:
    mine = _sessions_by_image(ctx).get(name, [])
    if mine:
        ids = ", ".join(s.id for s in mine[:5]) + (" …" if len(mine) > 5 else "")
        raise Conflict(f"cannot {verb} {name} in place while it has sessions ({ids}): end them first")


# --- rollback ------------------------------------------------------------------------


def rollback(ctx: Context, name: str, generation: int | None) -> int:
    ctx.require_privileged("image rollback")
    authorize(ctx, policy.IMAGE_ROLLBACK, name)
    ctx.ready()
    with ctx.image_lock(name, "rollback"):
        cur = generations.current(ctx.store, name)
        if generation is None:
            parent = generations.read_meta(ctx.store, name, cur).parent
            if parent is None:
                raise BadInput(f"generation {cur} of {name} has no parent: name the generation to roll back to")
            generation = parent
        if generation not in generations.complete(ctx.store, name):
            raise NotFound(f"image {name} has no generation {generation}")
        if generation == cur:
            return generation  # already there: rolling back is idempotent, nothing to record
        from .leases import live_writer

        writer = live_writer(ctx, name)
        if writer is not None:
            raise Conflict(f"{name} is being maintained by {writer.describe()}: promote or end it first")
        generations.switch(ctx.store, name, generation)
        faults.crashpoint("rollback", "switched")
    ctx.journal("image rollback", image=name, generation=generation, previous=cur)
    return generation


# --- remove --------------------------------------------------------------------------


def remove(ctx: Context, name: str, *, force: bool) -> None:
    ctx.require_privileged("image remove")
    config = authorize(ctx, policy.IMAGE_REMOVE, name)
    ctx.ready()
    from . import session as session_ops

    _refuse_pinned(ctx, name)
    mine = _sessions_by_image(ctx).get(name, [])
    if mine and not force:
        ids = ", ".join(s.id for s in mine[:5]) + (" …" if len(mine) > 5 else "")
        raise Conflict(f"image {name} is used by {len(mine)} session(s) ({ids}); use --force to end them")
    for s in mine:
        try:
            session_ops.end(ctx, s.id, force=True)
        except NotFound:
            pass
    faults.crashpoint("remove", "sessions-ended")
    store = ctx.store
    tx = new_tx()
    lock = ctx.image_lock(name, "remove")
    try:
        left = _sessions_by_image(ctx).get(name, [])
        if left:
            raise Conflict(f"sessions of {name} began while it was being removed: {', '.join(s.id for s in left[:5])}")
        _refuse_pinned(ctx, name, sweep=True)
        tx_lock = ctx.lock(store.tx_lock_name(tx), f"remove {name}")
        try:
            trash = ensure_dir(os.path.join(store.trash_dir, tx), 0o700)
            os.rename(store.image_dir(name), os.path.join(trash, name))
            fsync_dir(store.images_dir)
            faults.crashpoint("remove", "trashed")
            lock.release(remove=True)
            _delete_image_tree(os.path.join(trash, name), config.backend)
            os.rmdir(trash)
        finally:
            tx_lock.release(remove=True)
    finally:
        lock.release()
    ctx.journal("image remove", image=name, forced=force or None, ended=len(mine) or None)


def _pinned(ctx: Context, name: str, *, sweep: bool = False) -> set[int]:
    """Generations of *name* a reader (an export) has pinned; see core/pins.py."""
    from . import pins

    return set(pins.pinned(ctx, name, sweep=sweep))


def _refuse_pinned(ctx: Context, name: str, *, sweep: bool = False) -> None:
    from . import pins

    held = pins.pinned(ctx, name, sweep=sweep)
    if held:
        raise Conflict(f"image {name} is being read ({pins.describe(held)}); try again when that is done")


def _delete_image_tree(path: str, backend_name: str) -> None:
    """Delete a whole image directory: generations through their backend, then the rest."""
    try:
        backend = backends.get(backend_name)
    except BadInput:
        backend = backends.get("overlay")
    gens = os.path.join(path, "generations")
    if os.path.isdir(gens):
        for entry in os.listdir(gens):
            if entry.isdigit():
                backend.remove_generation(os.path.join(gens, entry))
    backends.discard(path)


# --- gc ------------------------------------------------------------------------------


def gc(ctx: Context, name: str | None, *, keep: int | None, dry_run: bool) -> list[GcResult]:
    if not dry_run:
        ctx.require_privileged("image gc")
    if keep is not None and keep < 1:
        raise BadInput("--keep must be at least 1")
    action = policy.IMAGE_VIEW if dry_run else policy.IMAGE_GC
    if name is not None:
        authorize(ctx, action, name)
        names = [name]
    else:
        if not dry_run:
            ctx.authorize(policy.IMAGE_GC)
        names = [n for n in ctx.store.image_names() if _permits(ctx, action, n)]
    if not dry_run:
        ctx.ready()
    return [_gc_one(ctx, n, keep, dry_run) for n in names]


def _permits(ctx: Context, action: str, name: str) -> bool:
    try:
        authorize(ctx, action, name)
    except (NotFound, NotPermitted):
        return False
    return True


def _gc_one(ctx: Context, name: str, keep: int | None, dry_run: bool) -> GcResult:
    config = load_config(ctx, name)
    retention = keep or config.retention or ctx.settings.retention
    store = ctx.store
    lock = None if dry_run else ctx.image_lock(name, "gc")
    trash = None
    try:
        done = generations.complete(store, name)
        cur = generations.current(store, name)
        roots = {cur, *done[-retention:]}
        roots |= _in_use(ctx, name, _sessions_by_image(ctx).get(name, []))
        roots |= _pinned(ctx, name, sweep=not dry_run)  # generations being exported
        keep_set: set[int] = set()
        metas = {n: generations.read_meta(store, name, n) for n in done}
        for n in roots:
            keep_set.add(n)
            if n in metas:
                keep_set.update(metas[n].stack)  # layers a kept generation stands on
        victims = [n for n in done if n not in keep_set]
        freed = sum(metas[n].size for n in victims)
        if dry_run or not victims:
            return GcResult(name, victims, sorted(keep_set & set(done)), freed)
        tx = new_tx()
        tx_lock = ctx.lock(store.tx_lock_name(tx), f"gc {name}")
        try:
            trash = ensure_dir(store.image_trash(name), 0o700)
            trash = ensure_dir(os.path.join(trash, tx), 0o700)
            for n in victims:
                os.rename(store.generation_meta(name, n), os.path.join(trash, f"{n}.yaml"))
                os.rename(store.generation_dir(name, n), os.path.join(trash, str(n)))
            fsync_dir(store.generations_dir(name))
            faults.crashpoint("gc", "trashed")
            assert lock is not None
            lock.release()
            if ctx.rootless:  # files of subordinate ids: removed inside the user's namespace
                from .rootless import content

                content.discard(trash, ctx.idmap)  # type: ignore[attr-defined]
            else:
                backend = backends.get(config.backend)
                for n in victims:
                    backend.remove_generation(os.path.join(trash, str(n)))
                backends.discard(trash)
        finally:
            tx_lock.release(remove=True)
    finally:
        if lock is not None:
            lock.release()
    ctx.journal("image gc", image=name, removed=victims, freed=freed)
    return GcResult(name, victims, sorted(keep_set & set(done)), freed)


# --- locks ---------------------------------------------------------------------------


def lock_view(ctx: Context) -> list[locks.LockState]:
    """Every flock that is held, stale or waited for, and every writer lease (those the caller may see)."""
    from .leases import binds_on_disk

    states = locks.lock_states(ctx.store.lock_dir)
    visible = [n for n in ctx.store.image_names() if _permits(ctx, policy.IMAGE_VIEW, n)]
    if not ctx.policy.is_admin(ctx.actor):
        states = [st for st in states if _lock_visible(ctx, st.lock, visible)]
    for name in visible:
        lease = locks.read_lease(ctx.store.writer_lease(name))
        if lease is None:
            continue
        stale = not binds_on_disk(ctx, lease)
        states.append(
            locks.LockState(
                lock=f"writer.{name}",
                pid=None,
                user=lease.user,
                operation=lease.operation,
                since=lease.since,
                stale=stale,
                mode="lease",
            )
        )
    return states


def _lock_visible(ctx: Context, lock: str, images: list[str]) -> bool:
    """Whether someone who is not an administrator sees *lock*: their images' locks and their own sessions'."""
    kind, _, rest = lock.partition(".")
    if kind in ("image", "writer"):
        return rest in images
    if kind == "pin":
        return any(rest.startswith(f"{image}.") for image in images)
    if kind == "session":
        from . import session as session_ops

        try:
            return ctx.permits(policy.SESSION_VIEW, session_ops.session_target(session_ops.read(ctx, rest)))
        except RoostError:
            return False
    return False
