"""Session records: ``<state>/sessions/<id>.json``, one per session.

A record is self-contained: it names the generation and the real layer paths
the session was cloned from (never the ``current`` link), and carries the
profile as it was resolved at begin, so recover after a reboot rebuilds
exactly the same session even if the image or the profile changed since.

States (``state`` field):

* ``beginning`` – the record exists, the clone and mounts are being made;
* ``active`` – ready (shown as *mounted*, or *needs-recovery* when its mount
  is gone, e.g. after a reboot);
* ``ending`` – being torn down;
* ``promoting`` – being turned into a generation (``promote`` says how far).

A session whose record says beginning, ending or promoting while nobody
holds its lock was interrupted; ``recover`` finishes or undoes the step.
"""

from __future__ import annotations

import os

from . import fastjson
from .errors import ConfigError, NotFound, SystemFailure
from .fsutil import atomic_write, is_temp_name
from .names import is_reserved, is_valid_name
from .struct import Struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from typing import Any

KINDS = ("ordinary", "maintenance")
STATES = ("beginning", "active", "ending", "promoting")
#: A session's network (core.isolation); core.limits parses the rest of its isolation.
NETWORKS = ("host", "none", "loopback")


#: uname -m -> the Debian architecture of the usual hosts (core.binfmt has the full table).
#: A session of this architecture needs no qemu: core.isolation tells by this table first.
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine)


class Session(Struct):
    id: str
    image: str
    generation: int
    kind: str
    owner: str
    uid: int
    created: str
    state: str
    backend: str
    profile: str
    mountpoint: str
    clone: str
    lowers: list[str]
    auto: bool = False
    creator_pid: int | None = None
    creator_start: int | None = None
    dev: str = "private"
    mounts: list[dict[str, Any]] = []
    copy_files: list[str] = []
    nss_databases: list[str] = []
    env_keep: list[str] = []
    env_set: list[list[str]] = []
    access: dict[str, list[str]] = {}
    personality: str | None = None
    command_prefix: list[str] = []
    promote: dict[str, Any] | None = None
    backend_data: dict[str, Any] = {}
    #: The name the session was asked for by (an alias of its image), if not the image's own.
    alias: str | None = None
    #: Why the session must not be promoted automatically (a command in it failed), if so.
    failed: str | None = None
    #: Names of the host's entries merged into each user/group database (taken out before a promote).
    nss_merged: dict[str, list[str]] = {}
    #: Isolation (core.isolation): network mode, the namespace file kept for ``none``, resource
    #: limits (None: no cgroup), the cgroup directories, the loopback filter's cgroup, the architecture.
    network: str = "host"
    netns: str | None = None
    limits: dict[str, Any] | None = None
    cgroups: list[str] = []
    filtered: str | None = None
    architecture: str | None = None
    #: The session's writes are never synced (overlayfs ``volatile``): a machine crash or reboot
    #: loses them, and recover ends it as *lost*. ``boot`` is the kernel's boot id at begin.
    volatile: bool = False
    boot: str | None = None
    #: The package cache (core.pkgcache) the session shares: ``<suite>-<arch>``, or None.
    package_cache: str | None = None

    @property
    def maintenance(self) -> bool:
        return self.kind == "maintenance"

    @property
    def lost(self) -> bool:
        """A volatile session whose writes may be torn: the machine restarted since it was mounted.

        Known by a different boot id, or by its mount point gone with the
        runtime root (what a reboot does to /run, and how the tests simulate one).
        """
        return self.volatile and (self.boot != boot_id() or not os.path.isdir(self.mountpoint))

    def to_json(self) -> dict[str, Any]:
        return self.as_dict()

    @classmethod
    def from_json(cls, data: Any, where: str) -> Session:
        if not isinstance(data, dict):
            raise SystemFailure(f"{where}: not a session record")
        known = cls._fields
        try:
            session = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:
            raise SystemFailure(f"{where}: incomplete session record ({e})") from None
        if session.kind not in KINDS or session.state not in STATES or not is_valid_name(session.id):
            raise SystemFailure(f"{where}: malformed session record")
        return session


_boot: list[str] = []


def check_network(value: object, where: str) -> str:
    """A ``network:`` value from image.yaml, a profile or ``--network`` (here: every begin has it loaded)."""
    if value not in NETWORKS:
        raise ConfigError(f"{where}: network must be one of {', '.join(NETWORKS)}, not {str(value)[:40]!r}")
    return str(value)


def boot_id() -> str:
    """The kernel's id of this boot (a new one after every reboot), read once per process."""
    if not _boot:
        try:
            with open("/proc/sys/kernel/random/boot_id", "rb") as f:  # bytes: no codec to import on begin
                _boot.append(f.read().strip().decode())
        except OSError:
            _boot.append("")
    return _boot[0]


def record_path(sessions_dir: str, session_id: str) -> str:
    return os.path.join(sessions_dir, session_id + ".json")


def read(sessions_dir: str, session_id: str) -> Session:
    path = record_path(sessions_dir, session_id)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, encoding="utf-8", errors="surrogateescape") as f:
            raw = f.read(1 << 20)
    except FileNotFoundError:
        raise NotFound(f"no session {session_id!r}") from None
    except OSError as e:
        raise SystemFailure(f"{path}: {e.strerror} (not a plain session record)") from None
    try:
        data = fastjson.loads(raw)
    except ValueError:
        raise SystemFailure(f"{path}: corrupt session record (roost session recover repairs it)") from None
    return Session.from_json(data, path)


def write(sessions_dir: str, session: Session, *, create: bool = False) -> None:
    """Write a record: with *create*, fail if it exists (the id is taken)."""
    path = record_path(sessions_dir, session.id)
    data = fastjson.dumps(session.to_json()).encode("utf-8", "surrogateescape")
    if create:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    else:
        atomic_write(path, data)


def remove(sessions_dir: str, session_id: str) -> None:
    try:
        os.unlink(record_path(sessions_dir, session_id))
    except FileNotFoundError:
        pass


def ids(sessions_dir: str) -> list[str]:
    """The ids of the session records in *sessions_dir*: regular ``<id>.json`` files with a valid id."""
    try:
        entries = list(os.scandir(sessions_dir))
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        name = entry.name
        if (
            name.endswith(".json")
            and not is_temp_name(name)
            and is_valid_name(name[:-5])
            and not is_reserved(name[:-5])
            and entry.is_file(follow_symlinks=False)
        ):
            out.append(name[:-5])
    return sorted(out)


def read_all(sessions_dir: str) -> tuple[list[Session], list[str]]:
    """Every readable record, and the ids whose record is unreadable."""
    sessions, broken = [], []
    for sid in ids(sessions_dir):
        try:
            sessions.append(read(sessions_dir, sid))
        except NotFound:
            continue
        except SystemFailure:
            broken.append(sid)
    return sessions, broken
