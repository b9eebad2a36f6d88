"""zfs: a generation is a snapshot of a dataset, a session a clone of it.

Everything lives under one parent dataset ``P`` (``zfs-dataset:`` in
roost.yaml), which belongs to one state root::

    P/gen/<image>.<tx>@<image>.<tx>   generation: a read-only dataset and its one snapshot
    P/session/<id>                    session: a clone of a generation's snapshot

``generations/<n>/snapshot`` names the generation's snapshot, so the
engine's commit protocol (metadata, rename of the staging directory, switch
of ``current``) is the same as for every other backend. Names are unique
(the transaction is in them): ``zfs promote`` never meets a clash.

Nothing is mounted where nobody expects it: every dataset roost makes has
``canmount=noauto``; containers and generations have ``mountpoint=none``; a
session's clone has its mount point under the runtime root and is mounted
with ``zfs mount`` (zfs-fuse's daemon performs FUSE mounts; the kernel
module mounts directly), and unmounted by the engine like any other mount.

Promote snapshots the session's clone and renames the clone into ``P/gen``:
O(1). Deleting a generation whose snapshot other generations were cloned
from (rollback branches, or simply the parent of the next one) uses
``zfs promote`` on one of those clones, so the snapshot and the blocks they
need move to it; the deleted generation's dataset is then destroyed, and
its snapshot is destroyed with ``-d`` (deferred: ZFS destroys it when its
last clone goes). A snapshot a session is cloned from is never touched:
the engine never deletes such a generation, and the code refuses to.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .. import mounts, programs, syscalls
from ..errors import SystemFailure
from ..fsutil import atomic_write, remove_tree
from ..records import Session
from .base import Backend, Known, NativeStream, Orphan, Site, StreamEdit

POINTER = "snapshot"
STATE_PROPERTY = "roost:state"


def encode(name: str) -> str:
    """A roost name as a ZFS name component (ZFS has ':' where roost names have '+')."""
    return name.replace("+", ":")


#: How long a destroy or rename waits for a dataset that was just unmounted: the
#: unmount is done by the kernel at once, but zfs-fuse learns of it a moment later.
BUSY_WAIT = 20.0


def zfs(*args: str, what: str | None = None) -> str:
    """Run zfs(8) and return its standard output.

    A destroy or rename refused with "dataset is busy" is retried for up to
    :data:`BUSY_WAIT` seconds (growing pauses): a FUSE unmount reaches the
    zfs-fuse daemon asynchronously.
    """
    pause = 0.01
    deadline = time.monotonic() + BUSY_WAIT
    while True:
        try:
            proc = programs.run(["zfs", *args], what=what or f"zfs {args[0]}", stdout=subprocess.PIPE)
        except SystemFailure as e:
            if args[0] in ("destroy", "rename") and "busy" in str(e) and time.monotonic() < deadline:
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
                continue
            raise
        return proc.stdout.decode(errors="surrogateescape")


def exists(name: str) -> bool:
    proc = subprocess.run(["zfs", "list", "-H", "-o", "name", name], capture_output=True, check=False)
    return proc.returncode == 0


def read_pointer(directory: str) -> str | None:
    try:
        with open(os.path.join(directory, POINTER), encoding="utf-8") as f:
            value = f.read().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return value or None


def parent_of(snapshot_or_dataset: str) -> str:
    """The parent dataset P of ``P/gen/…`` or ``P/session/…``."""
    name = snapshot_or_dataset.split("@", 1)[0]
    for sub in ("/gen/", "/session/"):
        if sub in name:
            return name.rsplit(sub, 1)[0]
    raise SystemFailure(f"{snapshot_or_dataset} is not a dataset roost made")


def _ensure_containers(parent: str) -> None:
    for sub in ("gen", "session"):
        name = f"{parent}/{sub}"
        if not exists(name):
            proc = subprocess.run(
                ["zfs", "create", "-o", "canmount=off", "-o", "mountpoint=none", name],
                capture_output=True,
                check=False,
            )
            if proc.returncode != 0 and not exists(name):
                raise SystemFailure(programs.failure_line(["zfs", "create"], proc.returncode, proc.stderr))


def _datasets(parent: str) -> list[tuple[str, str, str]]:
    """(name, origin, roost:state) of every file system below *parent*."""
    out = zfs("list", "-H", "-t", "filesystem", "-o", f"name,origin,{STATE_PROPERTY}", "-r", parent)
    rows = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            rows.append((parts[0], parts[1], parts[2]))
    return rows


def _snapshots(dataset: str) -> list[str]:
    out = zfs("list", "-H", "-t", "snapshot", "-o", "name", "-s", "creation", "-d", "1", dataset)
    return [line for line in out.splitlines() if line]


def destroy_dataset(dataset: str) -> None:
    """Destroy a generation's dataset, handing snapshots other datasets were cloned from to them.

    Every snapshot held by a generation being deleted is dead (a live
    generation's snapshot only ever lives in its own dataset); clones of
    those snapshots are other generations, which take them over with
    ``zfs promote``; the dead snapshots are then destroyed, deferred while
    a clone still needs them.
    """
    if "/gen/" not in dataset or "@" in dataset:
        raise SystemFailure(f"{dataset} is not a generation's dataset")
    if not exists(dataset):
        return
    parent = parent_of(dataset)
    for _ in range(64):
        snaps = _snapshots(dataset)
        if not snaps:
            zfs("destroy", dataset)
            return
        clones: dict[str, list[str]] = {}
        for name, origin, _ in _datasets(parent):
            if origin in snaps:
                clones.setdefault(origin, []).append(name)
        if not clones:
            zfs("destroy", "-r", dataset)
            return
        latest = max(clones, key=snaps.index)
        heirs = sorted(clones[latest], key=lambda n: (f"{parent}/gen/" not in n, n))
        heir = heirs[0]
        if not heir.startswith(f"{parent}/gen/"):
            raise SystemFailure(f"{latest} is still cloned by {heir}: refusing to destroy {dataset}")
        moved = [s.split("@", 1)[1] for s in snaps[: snaps.index(latest) + 1]]
        zfs("promote", heir)
        for short in moved:
            zfs("destroy", "-d", f"{heir}@{short}")
    raise SystemFailure(f"cannot destroy {dataset}: its snapshots keep moving")


def datasets_of(site: Site) -> list[str]:
    """Generation and session datasets below the parent dataset that belong to *site*'s state root."""
    parent = site.zfs_dataset
    if not parent or not exists(f"{parent}/gen"):
        return []
    return [
        name
        for name, _, state in _datasets(parent)
        if state == site.state_root and (name.startswith(f"{parent}/gen/") or name.startswith(f"{parent}/session/"))
    ]


def is_live_view(dataset: str) -> bool:
    """A temporary clone :meth:`ZfsBackend.view` made, whose process still runs."""
    leaf = dataset.rsplit("/", 1)[-1]
    if not leaf.startswith("_view-"):
        return False
    try:
        os.kill(int(leaf.split("-")[1]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def destroy_session_dataset(pointer: str) -> None:
    """Destroy the clone a zfs session's clone directory names (recover of a broken record)."""
    with open(pointer, encoding="utf-8") as f:
        dataset = f.read().strip()
    if "/session/" not in dataset or "@" in dataset:
        raise SystemFailure(f"{pointer} does not name a session's dataset")
    if exists(dataset):
        zfs("destroy", "-r", dataset)
    os.unlink(pointer)


def _plain_directory(path: str) -> bool:
    """On its parent's file system: a directory roost made, not a subvolume (a clone of another backend)."""
    return os.lstat(path).st_dev == os.lstat(os.path.dirname(path)).st_dev


class ZfsStream(NativeStream):
    """``zfs send -i`` and ``zfs receive``: a generation's snapshot, incrementally from its parent's."""

    kind = "zfs"

    def __init__(self, site: Site) -> None:
        self.site = site
        self._guids: dict[str, str] | None = None

    def receivable(self) -> bool:
        return not self._pool_shared()

    def _pool_shared(self) -> bool:
        """Whether another state root keeps datasets in our pool.

        ``zfs receive`` of an incremental stream clones the received generation from
        the snapshot with the stream's origin guid, wherever it is in the pool: with
        the sender's own datasets in the same pool, that could be the sender's, and
        the two state roots would depend on each other. Such a receiver takes tree
        differences instead.
        """
        parent = self.site.zfs_dataset
        if not parent:
            return False
        try:
            out = zfs("get", "-H", "-r", "-o", "value", STATE_PROPERTY, parent.split("/", 1)[0])
        except SystemFailure:
            return True
        return any(v not in ("-", "", self.site.state_root) for v in out.splitlines())

    def _guids_of_generations(self) -> dict[str, str]:
        parent = self.site.zfs_dataset
        if not parent:
            return {}
        try:  # zfs-fuse's zfs list has no -p: get gives the exact values (and -t is not known to its get)
            out = zfs("get", "-H", "-p", "-r", "-o", "name,value", "guid", f"{parent}/gen")
        except SystemFailure:
            return {}
        rows = (line.split("\t") for line in out.splitlines())
        return {r[0]: r[1] for r in rows if len(r) == 2 and "@" in r[0]}

    def identity(self, directory: str) -> dict[str, str] | None:
        if self._guids is None:
            self._guids = self._guids_of_generations()
        snapshot = read_pointer(directory)
        if snapshot is not None and snapshot in self._guids:
            return {"guid": self._guids[snapshot]}
        return None

    def parent_matches(self, mine: dict[str, str], theirs: dict[str, str]) -> bool:
        # zfs receive finds the origin by our base snapshot's guid
        return mine.get("guid") == theirs.get("guid")

    def send(self, directory: str, parent: str | None) -> tuple[list[str], str, StreamEdit | None]:
        argv = ["zfs", "send"]
        if parent is not None:
            argv += ["-i", _pointer_of(parent)]
        return [*argv, _pointer_of(directory)], "zfs send", None

    def receive(self, directory: str, label: str) -> tuple[list[str], str]:
        parent = self.site.zfs_dataset
        if not parent:
            from ..errors import BadInput

            raise BadInput("no zfs-dataset is configured here: cannot receive a zfs stream")
        leaf = encode(label)
        dataset = f"{parent}/gen/{leaf}"
        atomic_write(os.path.join(directory, POINTER), f"{dataset}@{leaf}\n")
        _ensure_containers(parent)
        return ["zfs", "receive", "-u", f"{dataset}@{leaf}"], "zfs receive"

    def received(self, directory: str, label: str) -> None:
        parent = self.site.zfs_dataset
        dataset = _pointer_of(directory).split("@", 1)[0]
        origin = zfs("get", "-H", "-o", "value", "origin", dataset).strip()
        if origin not in ("-", "") and not origin.startswith(f"{parent}/gen/"):
            zfs("destroy", dataset)
            raise SystemFailure(f"zfs cloned the received generation from {origin}, outside {parent}: refused")
        for prop in ("canmount=noauto", "mountpoint=none", "readonly=on", f"{STATE_PROPERTY}={self.site.state_root}"):
            zfs("set", prop, dataset)


def _pointer_of(directory: str) -> str:
    snapshot = read_pointer(directory)
    if snapshot is None:
        raise SystemFailure(f"{directory} names no zfs snapshot")
    return snapshot


class ZfsBackend(Backend):
    name = "zfs"
    always_flatten = True
    summary = "a generation is a snapshot of a dataset; a session is a clone of it"
    shared_inodes = True  # a clone keeps its snapshot's inode numbers and change times

    def unavailable(self, site: Site) -> str | None:
        if shutil.which("zfs") is None:
            return "zfs is not installed (apt-get install zfsutils-linux, or zfs-fuse)"
        if not site.zfs_dataset:
            return "no parent dataset configured (set zfs-dataset: POOL/DATASET in roost.yaml)"
        proc = subprocess.run(["zfs", "list", "-H", "-o", "name", site.zfs_dataset], capture_output=True, check=False)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
            return f"dataset {site.zfs_dataset} is not usable ({lines[-1].strip() if lines else 'zfs list failed'})"
        return None

    def storage(self, site: Site) -> str:
        return f"datasets under {site.zfs_dataset} (zfs)"

    # --- generations ------------------------------------------------------------

    def init_generation(self, directory: str, site: Site, label: str) -> str:
        self.require(site)
        assert site.zfs_dataset is not None
        os.mkdir(directory, 0o700)
        leaf = encode(label)
        dataset = f"{site.zfs_dataset}/gen/{leaf}"
        atomic_write(os.path.join(directory, POINTER), f"{dataset}@{leaf}\n")
        _ensure_containers(site.zfs_dataset)
        tree = os.path.join(directory, "tree")
        zfs(
            "create",
            "-o",
            "canmount=noauto",
            "-o",
            f"mountpoint={tree}",
            "-o",
            f"{STATE_PROPERTY}={site.state_root}",
            dataset,
        )
        if not mounts.is_mounted(tree):
            zfs("mount", dataset)
        return tree

    def finish_generation(self, directory: str) -> None:
        snapshot = self._pointer(directory)
        dataset = snapshot.split("@", 1)[0]
        tree = os.path.join(directory, "tree")
        mounts.unmount_tree(tree)
        zfs("set", "mountpoint=none", dataset)
        if os.path.isdir(tree):
            os.rmdir(tree)
        zfs("set", "readonly=on", dataset)
        zfs("snapshot", snapshot)

    def _pointer(self, directory: str) -> str:
        return _pointer_of(directory)

    native_kind = ZfsStream.kind

    def native(self, site: Site) -> NativeStream | None:
        return ZfsStream(site)

    def generation_size(self, directory: str) -> int:
        dataset = self._pointer(directory).split("@", 1)[0]
        return int(zfs("get", "-H", "-p", "-o", "value", "used", dataset).strip() or 0)

    def lowers(self, generations_dir: str, stack: list[int]) -> list[str]:
        return [os.path.join(generations_dir, str(stack[0]), POINTER)]

    # --- what is left behind ----------------------------------------------------

    def discard(self, path: str) -> None:
        """Destroy the datasets that pointers at or below *path* name (generations, a session's clone)."""
        if not os.path.isdir(path) or os.path.islink(path):
            return
        from . import structural_dirs

        for directory in structural_dirs(path):
            if os.path.isfile(os.path.join(directory, POINTER)):
                self.remove_generation(directory)
        if os.path.isdir(path) and os.listdir(path) == ["dataset"] and _plain_directory(path):
            destroy_session_dataset(os.path.join(path, "dataset"))

    def orphans(self, site: Site, known: Known) -> list[Orphan]:
        """Datasets of *site*'s state root that no generation, staging entry, record or clone names.

        The datasets are listed first, then *known* is read (in the order
        generations move), so a generation moved meanwhile is still found.
        """
        if not site.zfs_dataset or self.unavailable(site) is not None:
            return []
        listed = datasets_of(site)
        if not listed:
            return []
        named: set[str] = set()
        for directory in known.pointer_dirs():
            snapshot = read_pointer(directory)
            if snapshot is not None:
                named.add(snapshot.split("@", 1)[0])
        named |= {str(s.backend_data["dataset"]) for s in known.sessions() if s.backend_data.get("dataset")}
        for clone in known.clone_dirs():
            pointer = os.path.join(clone, "dataset")
            if os.path.isfile(pointer):
                with open(pointer, encoding="utf-8") as f:
                    named.add(f.read().strip())
        return [Orphan(self.name, "dataset", d) for d in listed if d not in named and not is_live_view(d)]

    def remove_orphan(self, orphan: Orphan) -> None:
        if "/session/" in orphan.name:
            zfs("destroy", "-r", orphan.name)
        else:
            destroy_dataset(orphan.name)

    def remove_generation(self, directory: str) -> None:
        if os.path.isdir(directory):
            mounts.unmount_tree(directory, force=True)  # an image create that died while filling
        snapshot = read_pointer(directory)
        if snapshot is not None:
            destroy_dataset(snapshot.split("@", 1)[0])
        remove_tree(directory)

    @contextmanager
    def view(self, directory: str, lowers: list[str], scratch: str) -> Iterator[str]:
        snapshot = self._pointer(directory)
        parent = parent_of(snapshot)
        dataset = f"{parent}/session/_view-{os.getpid()}-{os.urandom(3).hex()}"
        state = zfs("get", "-H", "-o", "value", STATE_PROPERTY, snapshot.split("@", 1)[0]).strip()
        zfs(
            "clone",
            "-o",
            "canmount=noauto",
            "-o",
            f"mountpoint={scratch}",
            "-o",
            "readonly=on",
            "-o",
            f"{STATE_PROPERTY}={state}",
            snapshot,
            dataset,
        )
        try:
            if not mounts.is_mounted(scratch):
                zfs("mount", dataset)
            yield scratch
        finally:
            mounts.unmount_tree(scratch, force=True)
            zfs("destroy", dataset)

    # --- sessions ---------------------------------------------------------------

    def prepare(self, session: Session) -> None:
        with open(session.lowers[0], encoding="utf-8") as f:
            origin = f.read().strip()
        session.backend_data = {
            "origin": origin,
            "dataset": f"{parent_of(origin)}/session/{encode(session.id)}",
        }

    @staticmethod
    def _dataset(session: Session) -> str:
        return str(session.backend_data["dataset"])

    def create_clone(self, session: Session) -> None:
        os.mkdir(session.clone, 0o700)
        dataset = self._dataset(session)
        atomic_write(os.path.join(session.clone, "dataset"), dataset + "\n")
        state_root = os.path.dirname(os.path.dirname(session.clone))
        zfs(
            "clone",
            "-o",
            "canmount=noauto",
            "-o",
            f"mountpoint={session.mountpoint}",
            "-o",
            f"{STATE_PROPERTY}={state_root}",
            str(session.backend_data["origin"]),
            dataset,
        )

    def has_clone(self, session: Session) -> bool:
        return exists(self._dataset(session))

    def changes(self, session: Session) -> int | None:
        try:
            return int(zfs("get", "-H", "-p", "-o", "value", "used", self._dataset(session)).strip())
        except (SystemFailure, ValueError):
            return None

    def mount(self, session: Session) -> None:
        if not mounts.is_mounted(session.mountpoint):
            zfs("mount", self._dataset(session), what=f"mounting {self._dataset(session)}")
        syscalls.mount(None, session.mountpoint, None, syscalls.MS_PRIVATE)

    def remove_clone(self, session: Session) -> None:
        dataset = self._dataset(session)
        if exists(dataset):
            zfs("destroy", "-r", dataset)
        remove_tree(session.clone)

    def stage(self, session: Session, staging: str, *, flatten: bool, scratch: str) -> bool:
        dataset = self._dataset(session)
        parent = parent_of(dataset)
        leaf = encode(f"{session.image}.{os.path.basename(staging)}")
        target = f"{parent}/gen/{leaf}"
        atomic_write(os.path.join(staging, POINTER), f"{target}@{leaf}\n")
        zfs("snapshot", f"{dataset}@{leaf}")
        zfs("rename", dataset, target)
        zfs("set", "mountpoint=none", target)
        zfs("set", "readonly=on", target)
        return True

    def unstage(self, session: Session, staging: str) -> None:
        dataset = self._dataset(session)
        snapshot = read_pointer(staging)
        if snapshot is None:
            return
        target, leaf = snapshot.split("@", 1)
        if exists(target) and not exists(dataset):
            zfs("set", "readonly=off", target)
            zfs("rename", target, dataset)
            zfs("set", f"mountpoint={session.mountpoint}", dataset)
        if exists(f"{dataset}@{leaf}"):
            zfs("destroy", f"{dataset}@{leaf}")
        os.unlink(os.path.join(staging, POINTER))
