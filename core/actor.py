"""Who is asking: the person behind an operation, for records, locks and the policy.

roost in system mode runs as root. Run by root itself it acts for root; run
through sudo it acts for the person sudo names in ``SUDO_UID``: sessions are
theirs, the journal names them and the policy (core/policy.py) decides with
their name and groups, while the process keeps root's privileges to mount.

``SUDO_UID`` is trustworthy as long as the sudo rule lets nobody choose the
environment: sudo sets it itself, but a rule with ``SETENV`` (or ``sudo -E``
allowed) lets the caller set any variable for a root process, which is root
on the host whatever roost does (docs/security.md says so).
"""

from __future__ import annotations

import os
import pwd
import time

from .errors import NotPermitted


class Actor:
    """The person (and process) on whose behalf the engine acts.

    *real_root*: root itself, not someone through sudo. *via_sudo*: root
    acting for ``SUDO_UID``. *own_state*: an unprivileged user working on a
    state of their own (rootless mode), who is its administrator.
    """

    __slots__ = ("_groups", "own_state", "pid", "real_root", "uid", "user", "via_sudo")

    def __init__(
        self,
        uid: int,
        user: str,
        pid: int,
        groups: tuple[str, ...] | None = None,
        *,
        real_root: bool = False,
        via_sudo: bool = False,
        own_state: bool = False,
    ) -> None:
        self.uid = uid
        self.user = user
        self.pid = pid
        self._groups = groups
        self.real_root = real_root
        self.via_sudo = via_sudo
        self.own_state = own_state

    @classmethod
    def current(cls, environ: dict[str, str] | os._Environ[str] | None = None) -> Actor:
        env = os.environ if environ is None else environ
        euid = os.geteuid()
        behind = sudo_uid(env) if euid == 0 else None
        uid = euid if behind is None else behind
        user = user_name(uid)
        return cls(
            uid=uid,
            user=user,
            pid=os.getpid(),
            real_root=euid == 0 and behind is None,
            via_sudo=behind is not None,
        )

    @property
    def groups(self) -> tuple[str, ...]:
        """The names of the person's groups; looked up when the policy first asks (most commands never do)."""
        if self._groups is None:
            self._groups = group_names(self.user, self.uid)
        return self._groups

    @property
    def privileged(self) -> bool:
        """True when the process itself can mount and chroot."""
        return os.geteuid() == 0

    def describe(self) -> str:
        return f"{self.user} (through sudo)" if self.via_sudo else self.user


def sudo_uid(env: dict[str, str] | os._Environ[str]) -> int | None:
    """The uid of the person a root process runs for through sudo, or None for root itself.

    ``SUDO_UID=0`` (root using sudo) is root itself. A value that is not a
    number cannot be trusted to name anyone: the caller is refused.
    """
    value = env.get("SUDO_UID")
    if value is None or value == "0":
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 10:
        raise NotPermitted("SUDO_UID does not name a user: refusing to act for an unknown caller")
    return int(value)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_names(user: str, uid: int) -> tuple[str, ...]:
    import grp

    try:
        gid = pwd.getpwuid(uid).pw_gid
        gids = os.getgrouplist(user, gid)
    except (KeyError, OSError):
        return ()
    names = []
    for g in gids:
        try:
            names.append(grp.getgrgid(g).gr_name)
        except KeyError:
            continue
    return tuple(names)


def now_iso(t: float | None = None) -> str:
    """ISO 8601 in UTC, to the second: ``2026-11-23T20:06:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))
