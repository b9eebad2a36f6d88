"""Who is asking: the user behind an operation, for records, locks and permissions."""

from __future__ import annotations

import os
import pwd
import time


class Actor:
    """The person (and process) on whose behalf the engine acts.

    When root runs roost through sudo, the person is ``SUDO_USER``: sessions
    are owned by them and the journal names them, while the process keeps
    root's privileges to mount.
    """

    __slots__ = ("groups", "is_root", "pid", "uid", "user")

    def __init__(self, uid: int, user: str, pid: int, is_root: bool, groups: tuple[str, ...]) -> None:
        self.uid = uid
        self.user = user
        self.pid = pid
        self.is_root = is_root
        self.groups = groups

    @classmethod
    def current(cls, environ: dict[str, str] | os._Environ[str] | None = None) -> Actor:
        env = os.environ if environ is None else environ
        euid = os.geteuid()
        uid = euid
        sudo_uid = env.get("SUDO_UID", "")
        if euid == 0 and sudo_uid.isdigit():
            uid = int(sudo_uid)
        user = user_name(uid)
        if euid == 0 and uid != 0 and env.get("SUDO_USER"):
            user = env["SUDO_USER"]
        return cls(uid=uid, user=user, pid=os.getpid(), is_root=uid == 0, groups=group_names(user, uid))

    @property
    def privileged(self) -> bool:
        """True when the process itself can mount and chroot."""
        return os.geteuid() == 0


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
