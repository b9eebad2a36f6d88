"""A real unprivileged user with subordinate ids, for the rootless suite and bench/rootless.py.

useradd allocates the 65536 subordinate uids and gids under its own lock
(``-K SUB_UID_COUNT``), so users made at the same time by other tests never
share a range. :func:`remove_user` deletes the ranges, then the user, its
group and its home (where its rootless state lived).
"""

from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

PREFIX = "roost-t-rl"
COUNT = 65536


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path
    subuid: int
    subgid: int

    def owns(self, uid: int) -> bool:
        return uid == self.uid or self.subuid <= uid < self.subuid + COUNT

    def owns_group(self, gid: int) -> bool:
        return gid == self.gid or self.subgid <= gid < self.subgid + COUNT

    def command(self, *argv: str) -> list[str]:
        """*argv* run as this user (from root)."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", *argv]


def _range(path: str, name: str) -> int | None:
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[0] == name and int(parts[2]) >= COUNT:
                return int(parts[1])
    return None


def make_user(name: str) -> User:
    """Create *name* (it must start with the suite's prefix) with a home and subordinate ranges."""
    assert name.startswith("roost-t-"), name  # the suites' users: roost-t-rl-… (rootless), roost-t-r2-… (sbuild)
    subprocess.run(
        ["useradd", "--create-home", "--shell", "/bin/sh", "--comment", "roost rootless tests",
         "-K", f"SUB_UID_COUNT={COUNT}", "-K", f"SUB_GID_COUNT={COUNT}", name],
        check=True,
    )  # fmt: skip
    entry = pwd.getpwnam(name)
    subuid, subgid = _range("/etc/subuid", name), _range("/etc/subgid", name)
    user = User(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir), subuid or 0, subgid or 0)
    if subuid is None or subgid is None:
        remove_user(user)
        raise RuntimeError(f"useradd gave {name} no subordinate ranges of {COUNT} ids (see /etc/login.defs)")
    os.chmod(user.home, 0o755)  # the suite (root) and the namespaces' root read it
    return user


def running(pid: int) -> bool:
    """True if *pid* exists and is not a zombie (a dead holder waits for the host's init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3] not in (b"Z", b"X")


def processes_of(user: User) -> list[int]:
    """Running processes of the user or of its subordinate ids."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                st = os.stat(f"/proc/{name}")
            except FileNotFoundError:
                continue
            if user.owns(st.st_uid) and running(int(name)):
                found.append(int(name))
    return found


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def remove_user(user: User) -> None:
    """Delete the user's subordinate ranges, the user, its group and its home; check they are gone."""
    if user.subuid and user.subgid:
        subprocess.run(
            ["usermod", "--del-subuids", f"{user.subuid}-{user.subuid + COUNT - 1}",
             "--del-subgids", f"{user.subgid}-{user.subgid + COUNT - 1}", user.name],
            check=False,
        )  # fmt: skip
    subprocess.run(["userdel", "--remove", user.name], check=False, capture_output=True)
    for path in ("/etc/subuid", "/etc/subgid", "/etc/passwd", "/etc/group"):
        with open(path, encoding="utf-8") as f:
            if f"{user.name}:" in f.read():
                raise RuntimeError(f"{user.name} is still in {path}")
