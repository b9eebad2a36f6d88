"""Image operations: create, list, info, history, rollback, remove, gc."""

from __future__ import annotations

import os

from . import backends, faults, generations, locks, mounts, records, syscalls
from .actor import now_iso
from .errors import BadInput, ConfigError, Conflict, NotFound, RoostError, SystemFailure
from .fsutil import atomic_write, ensure_dir, fsync_dir, sync_filesystem
from .generations import GenerationMeta
from .imageconf import ImageConfig, parse_image_config
from .names import check_name, is_valid_name
from .profiles import profile_path
from .store import new_tx
from .struct import Struct
from .yamlio import read_yaml

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Mapping
    from typing import Any

    from .engine import Engine
    from .importers import Source


class ImageInfo(Struct, frozen=True):
    name: str
    backend: str
    current: int
    profile: str
    sessions: int
    description: str = ""
    generations: int = 0
    size: int = 0
    writer: str | None = None
    config: ImageConfig | None = None
    storage: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "storage": self.storage,
            "name": self.name,
            "backend": self.backend,
            "current": self.current,
            "profile": self.profile,
            "sessions": self.sessions,
            "description": self.description,
            "generations": self.generations,
            "size": self.size,
            "writer": self.writer,
            "aliases": list(self.config.aliases) if self.config else [],
            "architecture": self.config.architecture if self.config else None,
            "network": self.config.network if self.config else None,
            "limits": self.config.limits if self.config else None,
        }


class GenerationInfo(Struct, frozen=True):
    generation: int
    parent: int | None
    created: str
    author: str
    message: str
    session: str | None
    size: int
    current: bool
    in_use: bool
    layers: int = 1

    @classmethod
    def of(cls, n: int, meta: GenerationMeta, *, current: bool, in_use: bool) -> GenerationInfo:
        """Generation *n* as history shows it, from its meta.yaml."""
        return cls(
            generation=n,
            parent=meta.parent,
            created=meta.created,
            author=meta.author,
            message=meta.message,
            session=meta.session,
            size=meta.size,
            current=current,
            in_use=in_use,
            layers=len(meta.stack),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "parent": self.parent,
            "created": self.created,
            "author": self.author,
            "message": self.message,
            "session": self.session,
            "size": self.size,
            "current": self.current,
            "in_use": self.in_use,
            "layers": self.layers,
        }


class GcResult(Struct, frozen=True):
    image: str
    removed: list[int] = []
    kept: list[int] = []
    freed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "removed": self.removed, "kept": self.kept, "freed": self.freed}


# --- reading -----------------------------------------------------------------------


def load_config(eng: Engine, name: str) -> ImageConfig:
    path = eng.store.image_yaml(name)
    try:
        data = read_yaml(path, eng.store.cache_dir)
    except FileNotFoundError:
        if not os.path.isdir(eng.store.image_dir(name)):
            raise NotFound(f"no image {name!r}") from None
        raise SystemFailure(f"image {name} has no image.yaml") from None
    return parse_image_config(data, path, backends.names())


def exists(eng: Engine, name: str) -> bool:
    """An image is a real directory: a symlink planted in images/ is not one."""
    import stat

    try:
        return stat.S_ISDIR(os.lstat(eng.store.image_dir(name)).st_mode)
    except FileNotFoundError:
        return False


def require(eng: Engine, name: str) -> ImageConfig:
    check_name(name, "image name")
    if not exists(eng, name):
        raise NotFound(f"no image {name!r}")
    return load_config(eng, name)


def aliases(eng: Engine) -> dict[str, list[str]]:
    """Every alias named in an image.yaml, with the images that claim it."""
    out: dict[str, list[str]] = {}
    for image in eng.store.image_names():
        try:
            config = load_config(eng, image)
        except NotFound:
            continue  # removed while we looked
        for alias in config.aliases:
            out.setdefault(alias, []).append(image)
    return out


def resolve(eng: Engine, name: str) -> str:
    """The image called *name*, or the one image that has *name* among its aliases."""
    check_name(name, "image name or alias")
    if exists(eng, name):
        return name
    owners = aliases(eng).get(name, [])
    if not owners:
        raise NotFound(f"no image or alias {name!r}")
    if len(owners) > 1:
        raise ConfigError(f"alias {name} is claimed by several images ({', '.join(owners)}): keep it in one image.yaml")
    return owners[0]


def _check_aliases(eng: Engine, name: str, wanted: tuple[str, ...]) -> None:
    """Refuse aliases that already name another image or another image's alias."""
    taken = aliases(eng)
    for alias in wanted:
        if alias == name or exists(eng, alias):
            raise Conflict(f"alias {alias} is already the name of an image")
        others = [i for i in taken.get(alias, []) if i != name]
        if others:
            raise Conflict(f"alias {alias} is already an alias of image {others[0]}")


def _sessions_by_image(eng: Engine) -> dict[str, list[records.Session]]:
    found, _ = records.read_all(eng.store.sessions_dir)
    by_image: dict[str, list[records.Session]] = {}
    for s in found:
        by_image.setdefault(s.image, []).append(s)
    return by_image


def _writer(eng: Engine, name: str, mine: list[records.Session]) -> str | None:
    return writer_among(locks.read_lease(eng.store.writer_lease(name)), mine)


def writer_among(lease: locks.Lease | None, sessions: list[records.Session]) -> str | None:
    """The session holding *lease*, if the lease binds, judged against the records in *sessions*."""
    if lease is None:
        return None
    holder = next((s for s in sessions if s.id == lease.session), None)
    return lease.session if lease_binds(holder) else None


def lease_binds(holder: records.Session | None) -> bool:
    """Whether a writer lease still binds, given the record of the session it names (None: gone).

    A maintenance session holds the lease for its whole life; an ordinary
    session holds a temporary one only while its record says it is promoting.
    Anything else is left over by a killed operation (a promote killed before
    it marked its session, or while putting it back) and never blocks.
    """
    return holder is not None and (holder.maintenance or holder.state == "promoting")


def info(eng: Engine, name: str, by_image: dict[str, list[records.Session]] | None = None) -> ImageInfo:
    config = require(eng, name)
    if by_image is None:
        by_image = _sessions_by_image(eng)
    mine = by_image.get(name, [])
    done = generations.complete(eng.store, name)
    size = 0
    for n in done:
        try:
            size += generations.read_meta(eng.store, name, n).size
        except RoostError:
            continue
    return ImageInfo(
        name=name,
        backend=config.backend,
        current=generations.current(eng.store, name),
        profile=config.profile,
        sessions=len(mine),
        description=config.description,
        generations=len(done),
        size=size,
        writer=_writer(eng, name, mine),
        config=config,
        storage=_storage(eng, config.backend),
    )


def _storage(eng: Engine, backend: str) -> str:
    try:
        return backends.get(backend).storage(eng.site())
    except RoostError:
        return ""


def list_images(eng: Engine) -> list[ImageInfo]:
    by_image = _sessions_by_image(eng)
    out = []
    for name in eng.store.image_names():
        try:
            out.append(info(eng, name, by_image))
        except NotFound:
            continue  # removed while we listed
    return out


def _in_use(eng: Engine, name: str, sessions: list[records.Session]) -> set[int]:
    """Generations a session was cloned from, or whose layers a session mounts."""
    used = {s.generation for s in sessions}
    gens_dir = eng.store.generations_dir(name) + "/"
    for s in sessions:
        for lower in s.lowers:
            if lower.startswith(gens_dir):
                head = lower[len(gens_dir) :].split("/", 1)[0]
                if head.isdigit():
                    used.add(int(head))
    return used


def history(eng: Engine, name: str) -> list[GenerationInfo]:
    require(eng, name)
    cur = generations.current(eng.store, name)
    used = _in_use(eng, name, _sessions_by_image(eng).get(name, []))
    return [
        GenerationInfo.of(n, generations.read_meta(eng.store, name, n), current=n == cur, in_use=n in used)
        for n in generations.complete(eng.store, name)
    ]


# --- create --------------------------------------------------------------------------


def create(
    eng: Engine,
    name: str,
    source: Source,
    *,
    backend: str | None,
    profile: str,
    description: str,
    settings: Mapping[str, Any] | None = None,
) -> ImageInfo:
    """A new image from *source*; *settings* are further image.yaml keys (users, aliases …)."""
    eng.require_root("image create")
    check_name(name, "image name")
    backend_obj = choose_backend(eng, backend)
    try:
        profile_path(profile, eng.settings.profiles_dir)
    except NotFound as e:
        raise BadInput(str(e)) from None
    if len(description) > 4096 or "\x00" in description:
        raise BadInput("description is too long or holds a NUL")
    root_users = [] if eng.actor.uid == 0 else [eng.actor.user]
    wanted: dict[str, Any] = {"root-users": root_users, **(settings or {})}
    if eng.actor.uid != 0 and eng.actor.user not in wanted["root-users"]:
        wanted["root-users"] = [*wanted["root-users"], eng.actor.user]
    wanted.update(backend=backend_obj.name, description=description, profile=profile)
    try:
        config = parse_image_config(wanted, "image settings", backends.names())
    except ConfigError as e:
        raise BadInput(str(e)) from None
    source.check()
    eng.ready()
    if exists(eng, name):
        raise Conflict(f"image {name} already exists")
    _check_aliases(eng, name, config.aliases)
    store = eng.store
    with eng.image_lock(name, "create"):
        if exists(eng, name):
            raise Conflict(f"image {name} already exists")
        _check_aliases(eng, name, config.aliases)
        tx = new_tx()
        tx_lock = eng.lock(store.tx_lock_name(tx), f"create {name}")
        try:
            staging = os.path.join(store.staging_dir, tx)
            try:
                os.mkdir(staging, 0o755)
                os.mkdir(os.path.join(staging, "generations"), 0o755)
                gen_dir = os.path.join(staging, "generations", "1")
                tree = backend_obj.init_generation(gen_dir, eng.site(), f"{name}.{tx}")
                from .importers import fill

                fill(source, tree, eng.progress)
                config = _with_architecture(config, source, tree)
                eng.progress(None, "syncing")
                backend_obj.finish_generation(gen_dir)
                size = backend_obj.generation_size(gen_dir)
                meta = GenerationMeta(
                    generation=1,
                    parent=None,
                    created=now_iso(),
                    author=eng.actor.user,
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
                eng.journal("image create", image=name, result="failed", error=str(e))
                raise
        finally:
            tx_lock.release(remove=True)
    eng.journal("image create", image=name, generation=1, backend=backend_obj.name, size=size)
    return info(eng, name)


def _with_architecture(config: ImageConfig, source: Source, tree: str) -> ImageConfig:
    """Record the tree's architecture (and mmdebstrap's suite) in image.yaml, unless given."""
    from .binfmt import tree_arch

    changes: dict[str, Any] = {}
    if config.architecture is None:
        changes["architecture"] = source.arch if source.kind == "mmdebstrap" and source.arch else tree_arch(tree)
    if config.suite is None and source.kind == "mmdebstrap" and source.suite:
        changes["suite"] = source.suite
    return config.replace(**changes) if changes else config


def choose_backend(eng: Engine, backend: str | None) -> backends.Backend:
    """The backend a new image gets: the one asked for, else ``default-backend`` (``auto``: the best here).

    Raises :class:`BadInput` (one line, nothing changed) when it cannot work on this host.
    """
    name = backend or eng.settings.default_backend
    site = eng.site()
    chosen = backends.best(site) if name == backends.AUTO else backends.get(name)
    chosen.require(site)
    return chosen


def _discard_staging(staging: str) -> None:
    if os.path.lexists(staging):
        mounts.unmount_tree(staging, force=True)  # a tree mounted to be filled (zfs)
        backends.discard(staging)


def _config_yaml(config: ImageConfig) -> str:
    from .yamlio import dump_yaml

    header = "# roost image configuration (see roost(8), FILES). Edit freely; roost validates it on use.\n"
    return header + dump_yaml(config.to_yaml_dict())


# --- convert -------------------------------------------------------------------------


def convert(eng: Engine, name: str, backend: str, *, new_name: str | None) -> ImageInfo:
    """Write the current generation of *name* into *backend* as a new image.

    With *new_name*, a new image of that name; without, *name* itself is
    replaced (refused while it has sessions): the new image is built beside
    it and swapped in with one atomic exchange, so a crash leaves either the
    old image or the new one. History does not follow: the new image starts
    at generation 1, whose message names where it came from.
    """
    eng.require_root("image convert")
    config = require(eng, name)
    target = new_name or name
    check_name(target, "image name")
    backend_obj = choose_backend(eng, backend)
    in_place = target == name
    if in_place and backend_obj.name == config.backend:
        raise BadInput(f"image {name} already uses the {config.backend} backend")
    if not in_place and exists(eng, target):
        raise Conflict(f"image {target} already exists")
    if in_place:
        _refuse_sessions(eng, name, "convert")
    eng.ready()
    store = eng.store
    source_backend = backends.get(config.backend)
    new_config = config.replace(backend=backend_obj.name)
    tx = new_tx()
    staging = os.path.join(store.staging_dir, tx)
    tx_lock = eng.lock(store.tx_lock_name(tx), f"convert {name}")
    scratch = os.path.join(store.mnt_dir, f".stage-{tx}")
    try:
        try:
            with eng.image_lock(name, f"convert {name}", exclusive=False):
                number = generations.current(store, name)
                stack = list(generations.read_meta(store, name, number).stack)
                gen_dir = store.generation_dir(name, number)
                lowers = source_backend.lowers(store.generations_dir(name), stack)
                os.mkdir(staging, 0o755)
                os.mkdir(os.path.join(staging, "generations"), 0o755)
                new_dir = os.path.join(staging, "generations", "1")
                tree = backend_obj.init_generation(new_dir, eng.site(), f"{target}.{tx}")
                os.makedirs(scratch, exist_ok=True)
                with source_backend.view(gen_dir, lowers, scratch) as view:
                    from .importers import Source, fill

                    fill(Source("dir", path=view), tree, eng.progress)
            eng.progress(None, "syncing")
            backend_obj.finish_generation(new_dir)
            meta = GenerationMeta(
                generation=1,
                parent=None,
                created=now_iso(),
                author=eng.actor.user,
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
                with eng.image_lock(name, f"convert {name}"):
                    _refuse_sessions(eng, name, "convert")
                    syscalls.exchange(staging, store.image_dir(name))
                    fsync_dir(store.images_dir)
                    faults.crashpoint("convert", "exchanged")
                _delete_image_tree(staging, config.backend)  # the old image, now in staging
            else:
                with eng.image_lock(target, "create"):
                    try:
                        os.rename(staging, store.image_dir(target))
                    except OSError as e:
                        raise Conflict(f"image {target} already exists ({e.strerror})") from None
                    fsync_dir(store.images_dir)
        except BaseException as e:
            _discard_staging(staging)
            eng.journal("image convert", image=name, result="failed", error=str(e))
            raise
        finally:
            if os.path.isdir(scratch):
                mounts.unmount_tree(scratch, force=True)
                os.rmdir(scratch)
    finally:
        tx_lock.release(remove=True)
    eng.journal("image convert", image=name, target=target, backend=backend_obj.name, generation=number)
    return info(eng, target)


def _refuse_sessions(eng: Engine, name: str, verb: str) -> None:
    mine = _sessions_by_image(eng).get(name, [])
    if mine:
        ids = ", ".join(s.id for s in mine[:5]) + (" …" if len(mine) > 5 else "")
        raise Conflict(f"cannot {verb} {name} in place while it has sessions ({ids}): end them first")


# --- rollback ------------------------------------------------------------------------


def _live_writer(eng: Engine, name: str) -> locks.Lease | None:
    """The writer lease of *name* if it binds (see :func:`lease_binds`; stale leases don't count)."""
    lease = locks.read_lease(eng.store.writer_lease(name))
    if lease is None:
        return None
    return lease if lease_binds_on_disk(eng, lease) else None


def lease_binds_on_disk(eng: Engine, lease: locks.Lease) -> bool:
    """:func:`lease_binds`, reading the record of the session *lease* names.

    An unreadable record keeps the lease binding: recover deals with the
    record first, and nothing is lost by waiting for it.
    """
    if not is_valid_name(lease.session):
        return False
    try:
        holder = records.read(eng.store.sessions_dir, lease.session)
    except NotFound:
        return False
    except RoostError:
        return True
    return lease_binds(holder)


def rollback(eng: Engine, name: str, generation: int | None) -> int:
    eng.require_root("image rollback")
    require(eng, name)
    eng.ready()
    with eng.image_lock(name, "rollback"):
        cur = generations.current(eng.store, name)
        if generation is None:
            parent = generations.read_meta(eng.store, name, cur).parent
            if parent is None:
                raise BadInput(f"generation {cur} of {name} has no parent: name the generation to roll back to")
            generation = parent
        if generation not in generations.complete(eng.store, name):
            raise NotFound(f"image {name} has no generation {generation}")
        if generation == cur:
            return generation  # already there: rolling back is idempotent, nothing to record
        writer = _live_writer(eng, name)
        if writer is not None:
            raise Conflict(f"{name} is being maintained by {writer.describe()}: promote or end it first")
        generations.switch(eng.store, name, generation)
        faults.crashpoint("rollback", "switched")
    eng.journal("image rollback", image=name, generation=generation, previous=cur)
    return generation


# --- remove --------------------------------------------------------------------------


def remove(eng: Engine, name: str, *, force: bool) -> None:
    eng.require_root("image remove")
    config = require(eng, name)
    eng.ready()
    from . import sessions as session_ops

    _refuse_pinned(eng, name)
    mine = _sessions_by_image(eng).get(name, [])
    if mine and not force:
        ids = ", ".join(s.id for s in mine[:5]) + (" …" if len(mine) > 5 else "")
        raise Conflict(f"image {name} is used by {len(mine)} session(s) ({ids}); use --force to end them")
    for s in mine:
        try:
            session_ops.end(eng, s.id, force=True)
        except NotFound:
            pass
    faults.crashpoint("remove", "sessions-ended")
    store = eng.store
    tx = new_tx()
    lock = eng.image_lock(name, "remove")
    try:
        left = _sessions_by_image(eng).get(name, [])
        if left:
            raise Conflict(f"sessions of {name} began while it was being removed: {', '.join(s.id for s in left[:5])}")
        _refuse_pinned(eng, name, sweep=True)
        tx_lock = eng.lock(store.tx_lock_name(tx), f"remove {name}")
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
    eng.journal("image remove", image=name, forced=force or None, ended=len(mine) or None)


def _pinned(eng: Engine, name: str, *, sweep: bool = False) -> set[int]:
    """Generations of *name* a reader (an export) has pinned; see core/pins.py."""
    from . import pins

    return set(pins.pinned(eng, name, sweep=sweep))


def _refuse_pinned(eng: Engine, name: str, *, sweep: bool = False) -> None:
    from . import pins

    held = pins.pinned(eng, name, sweep=sweep)
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


def gc(eng: Engine, name: str | None, *, keep: int | None, dry_run: bool) -> list[GcResult]:
    if not dry_run:
        eng.require_root("image gc")
    if keep is not None and keep < 1:
        raise BadInput("--keep must be at least 1")
    names = [name] if name is not None else eng.store.image_names()
    if name is not None:
        require(eng, name)
    if not dry_run:
        eng.ready()
    return [_gc_one(eng, n, keep, dry_run) for n in names]


def _gc_one(eng: Engine, name: str, keep: int | None, dry_run: bool) -> GcResult:
    config = load_config(eng, name)
    retention = keep or config.retention or eng.settings.retention
    store = eng.store
    lock = None if dry_run else eng.image_lock(name, "gc")
    trash = None
    try:
        done = generations.complete(store, name)
        cur = generations.current(store, name)
        roots = {cur, *done[-retention:]}
        roots |= _in_use(eng, name, _sessions_by_image(eng).get(name, []))
        roots |= _pinned(eng, name, sweep=not dry_run)  # generations being exported
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
        tx_lock = eng.lock(store.tx_lock_name(tx), f"gc {name}")
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
            backend = backends.get(config.backend)
            for n in victims:
                backend.remove_generation(os.path.join(trash, str(n)))
            backends.discard(trash)
        finally:
            tx_lock.release(remove=True)
    finally:
        if lock is not None:
            lock.release()
    eng.journal("image gc", image=name, removed=victims, freed=freed)
    return GcResult(name, victims, sorted(keep_set & set(done)), freed)


# --- locks ---------------------------------------------------------------------------


def lock_view(eng: Engine) -> list[locks.LockState]:
    """Every flock that is held, stale or waited for, and every writer lease."""
    states = locks.lock_states(eng.store.lock_dir)
    for name in eng.store.image_names():
        lease = locks.read_lease(eng.store.writer_lease(name))
        if lease is None:
            continue
        stale = not lease_binds_on_disk(eng, lease)
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
