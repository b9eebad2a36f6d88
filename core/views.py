"""What listings show: the view types and the pure functions that build them.

``roost image list/info/history``, ``roost session list/info`` and the
console's watcher (core/watch.py) all show images, generations and sessions
the same way, so the rules live here once: what makes a session *mounted*,
which generations are *in use*, which lease names the *writer*, and what the
caller may see at all (the policy). Builders take what was read (records,
configurations, metadata, mount targets) and read nothing themselves, so the
watcher can feed them from its caches and the commands from disk.
"""

from __future__ import annotations

import os

from . import leases, policy
from .struct import Struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Container, Iterable, Mapping
    from typing import Any

    from .actor import Actor
    from .generations import GenerationMeta
    from .imageconf import ImageConfig
    from .locks import Lease
    from .records import Session


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
    #: What the caller may do with the image: admin, root (root-users), user or none (core/policy.py).
    access: str = "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "access": self.access,
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
        """Generation *n* as history shows it, from its metadata."""
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


class SessionInfo(Struct, frozen=True):
    """A session as listings show it: the record plus what the system says now."""

    session: Session
    state: str  # mounted, needs-recovery, lost, beginning, ending, promoting
    processes: int | None = None
    changes: int | None = None
    #: Live figures of a session with a cgroup (core.isolation_upkeep.usage).
    usage: dict[str, int | None] | None = None

    def to_json(self) -> dict[str, Any]:
        s = self.session
        out: dict[str, Any] = {
            "id": s.id,
            "image": s.image,
            "generation": s.generation,
            "kind": s.kind,
            "owner": s.owner,
            "created": s.created,
            "state": self.state,
            "backend": s.backend,
            "profile": s.profile,
            "mountpoint": s.mountpoint,
            "auto": s.auto,
            "alias": s.alias,
            "failed": s.failed,
            "network": s.network,
            "limits": s.limits,
            "architecture": s.architecture,
            "durable": not s.volatile,
        }
        if self.usage is not None:
            out["usage"] = self.usage
        if self.processes is not None:
            out["processes"] = self.processes
        if self.changes is not None:
            out["changes"] = self.changes
        if s.backend_data.get("rootless"):
            out["rootless"] = True
            out["holder"] = s.backend_data.get("holder")  # [pid, start time] of its holder process
        return out


class Load(Struct, frozen=True):
    """Memory and CPU a session with a cgroup uses now (the console's MEM and CPU columns).

    ``cpu_percent`` is the CPU time used between two readings over the time
    between them, in percent of one CPU (200 is two CPUs busy); None on a
    session's first reading, since a rate needs two.
    """

    memory: int | None = None
    memory_peak: int | None = None
    cpu_usec: int | None = None
    cpu_percent: float | None = None
    pids: int | None = None
    oom_kills: int | None = None


def load(figures: Mapping[str, int | None], previous: Load | None, elapsed: float) -> Load:
    """A session's :class:`Load` from *figures* (:func:`core.isolation_upkeep.usage`), *elapsed* s after *previous*."""
    cpu = figures.get("cpu_usec")
    percent = None
    if cpu is not None and previous is not None and previous.cpu_usec is not None and elapsed > 0:
        percent = max(0.0, (cpu - previous.cpu_usec) / (elapsed * 1e6) * 100.0)
    return Load(
        memory=figures.get("memory"),
        memory_peak=figures.get("memory_peak"),
        cpu_usec=cpu,
        cpu_percent=percent,
        pids=figures.get("pids"),
        oom_kills=figures.get("oom_kills"),
    )


# --- the rules -----------------------------------------------------------------------


def session_state(session: Session, mounted: Container[str], held: Container[int] | None, lock_dir: str) -> str:
    """What listings call a session's state.

    An active session is *mounted* when its mount point is among the *mounted*
    targets, else it *needs-recovery* (after a reboot, say). A session in the
    middle of an operation (beginning, ending, promoting) shows that state
    while the operation holds its lock (*held*: inodes of held flocks; None
    when unknown), and *needs-recovery* once nobody does. A volatile session
    the machine restarted under is *lost* instead: recover ends it.
    """
    if session.state == "active":
        if os.path.normpath(session.mountpoint) in mounted:
            return "mounted"
        return "lost" if session.lost else "needs-recovery"
    if held is not None:
        try:
            ino = os.stat(os.path.join(lock_dir, f"session.{session.id}.lock")).st_ino
        except FileNotFoundError:
            ino = -1
        if ino in held:
            return session.state
    return "lost" if session.lost else "needs-recovery"


def in_use(generations_dir: str, sessions: Iterable[Session]) -> set[int]:
    """Generations a session was cloned from, or whose layers a session mounts."""
    used: set[int] = set()
    prefix = generations_dir.rstrip("/") + "/"
    for s in sessions:
        used.add(s.generation)
        for lower in s.lowers:
            if lower.startswith(prefix):
                head = lower[len(prefix) :].split("/", 1)[0]
                if head.isdigit():
                    used.add(int(head))
    return used


def image_info(
    name: str,
    config: ImageConfig,
    current: int,
    metas: Mapping[int, GenerationMeta],
    sessions: list[Session],
    lease: Lease | None,
    *,
    storage: str = "",
    access: str = "none",
) -> ImageInfo:
    """An image as listings show it, from its configuration, its complete generations and its sessions."""
    return ImageInfo(
        name=name,
        backend=config.backend,
        current=current,
        profile=config.profile,
        sessions=len(sessions),
        description=config.description,
        generations=len(metas),
        size=sum(m.size for m in metas.values()),
        writer=leases.holder_among(lease, sessions),
        config=config,
        storage=storage,
        access=access,
    )


def history(
    complete: Iterable[int], metas: Mapping[int, GenerationMeta], current: int, used: Container[int]
) -> list[GenerationInfo]:
    """An image's generations as history shows them (those whose metadata could be read)."""
    return [
        GenerationInfo.of(n, meta, current=n == current, in_use=n in used)
        for n in complete
        if (meta := metas.get(n)) is not None
    ]


class Viewer:
    """What one caller may see (the policy's ``see`` actions): listings show nothing else."""

    __slots__ = ("actor", "rules")

    def __init__(self, rules: policy.Policy, actor: Actor) -> None:
        self.rules = rules
        self.actor = actor

    def level(self, config: ImageConfig) -> str:
        return self.rules.level(self.actor, config.access_lists())

    def sees_image(self, name: str, config: ImageConfig) -> bool:
        return self.rules.permits(self.actor, policy.IMAGE_VIEW, policy.ImageTarget(name, config.access_lists()))

    def sees_session(self, session: Session) -> bool:
        target = policy.SessionTarget(session.id, session.image, session.uid, session.access)
        return self.rules.permits(self.actor, policy.SESSION_VIEW, target)

    @property
    def sees_everything(self) -> bool:
        return self.rules.is_admin(self.actor)
