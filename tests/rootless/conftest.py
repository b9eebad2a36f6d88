"""The rootless suite's fixtures: a real unprivileged user with subordinate ids, and what it must leave alone.

The suite runs as root (like every roost test) and runs roost as an ordinary
user it creates, ``roost-t-rl-<pid>``, with 65536 subordinate uids and gids
allocated by useradd under its own lock. At the end the user's ranges are
deleted, then the user, its group and its home (where its state lived).

Every test gets a fresh directory in that home for the XDG paths, and
checks afterwards that the host shows nothing of it: no mount naming it, no
process of the user or its subordinate ids, no file owned by them in the
places the user could write to outside it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Result, need_root
from tests.rootless.users import PREFIX, User, kill, make_user, processes_of, remove_user, running

DRIVER = Path(__file__).resolve().parent / "driver.py"
__all__ = ["DRIVER", "Rootless", "User", "running"]


@pytest.fixture(scope="session")
def rootless_user() -> Iterator[User]:
    need_root()
    for tool in ("useradd", "usermod", "userdel", "setpriv", "newuidmap", "newgidmap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (uidmap, passwd, util-linux)")
    user = make_user(f"{PREFIX}-{os.getpid()}")
    try:
        yield user
    finally:
        leftovers = processes_of(user)
        kill(leftovers)
        remove_user(user)
    assert not leftovers, f"processes of the rootless user were left running: {leftovers}"


def _mounts_naming(path: str) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return [line.strip() for line in f if path in line]


def stray_files(user: User, roots: list[str], skip: list[str]) -> list[str]:
    """Files owned by the user or its subordinate ids below *roots* (but not below *skip*).

    Only directories the user could write to are entered: world-writable ones
    and its own (or its subordinate ids'), which is where it could have made
    anything.
    """
    found = []
    stack = list(roots)
    while stack:
        where = stack.pop()
        if any(where == s or where.startswith(s.rstrip("/") + "/") for s in skip):
            continue
        try:
            entries = list(os.scandir(where))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            if any(entry.path == s or entry.path.startswith(s.rstrip("/") + "/") for s in skip):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if user.owns(st.st_uid) or user.owns_group(st.st_gid):
                found.append(entry.path)
            if entry.is_dir(follow_symlinks=False) and (st.st_mode & 0o002 or user.owns(st.st_uid)):
                stack.append(entry.path)
    return found


@dataclass
class Rootless:
    """One test's rootless roost: the user, its XDG directories, the driver run as that user."""

    user: User
    base: Path
    environ: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.base / "data" / "roost"

    @property
    def run_root(self) -> Path:
        return self.base / "state" / "roost" / "run"

    def command(self, *argv: str) -> list[str]:
        return self.user.command(*argv)

    def roost(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = 300,
        check: bool = False,
        cwd: str = "/",
        env: dict[str, str] | None = None,
    ) -> Result:
        proc = subprocess.run(
            self.command(sys.executable, str(DRIVER), *args),
            env=self.environ | (env or {}),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"driver {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return result

    def ok(self, *args: str, **kw: Any) -> str:
        return self.roost(*args, check=True, **kw).out

    def begin(self, image: str = "bb", *extra: str) -> str:
        return self.ok("begin", image, *extra).strip()

    def sh(self, session: str, script: str, *extra: str, **kw: Any) -> Result:
        return self.roost("run", session, *extra, "--", "/bin/sh", "-c", script, **kw)

    def sessions(self) -> list[dict[str, Any]]:
        return json.loads(self.ok("list"))  # type: ignore[no-any-return]

    def session(self, sid: str) -> dict[str, Any]:
        return next(s for s in self.sessions() if s["id"] == sid)

    def as_user(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*argv), env=self.environ, capture_output=True, text=True, check=True)

    def host_mounts(self) -> list[str]:
        """Lines of the host's mount table naming this test's directories (there must never be one)."""
        return _mounts_naming(str(self.base))


def _busybox_tree_as(user: User, where: Path, environ: dict[str, str]) -> Path:
    """The busybox test root, made by the user (so its files are the user's, as a user's tree is)."""
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from tests.rootfs import busybox; busybox(Path(sys.argv[2]))"
    )
    subprocess.run(user.command(sys.executable, "-c", code, str(REPO), str(where)), env=environ, check=True)
    return where


@pytest.fixture
def rl(rootless_user: User) -> Iterator[Rootless]:
    user = rootless_user
    made = subprocess.run(user.command("mktemp", "-d", "-p", str(user.home)), capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    base = Path(made.stdout.strip())
    os.chmod(base, 0o755)
    environ = {
        "HOME": str(user.home),
        "USER": user.name,
        "LOGNAME": user.name,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "XDG_DATA_HOME": str(base / "data"),
        "XDG_STATE_HOME": str(base / "state"),
        "XDG_CONFIG_HOME": str(base / "config"),
        "ROOST_SYSLOG": str(base / "syslog.sock"),  # never the host's syslog
        "PYTHONPATH": str(REPO),
    }
    r = Rootless(user, base, environ)
    r.as_user("mkdir", "-p", str(base / "config" / "roost"))
    r.as_user("sh", "-c", f"printf 'end-grace: 2\\nlock-timeout: 20\\n' > {base}/config/roost/roost.yaml")
    procs_before = processes_of(user)
    places = ["/tmp", "/var/tmp", "/dev/shm", str(user.home)]
    strays_before = set(stray_files(user, places, [str(base)]))
    yield r
    leaked_mounts = r.host_mounts()
    leaked_procs = [p for p in processes_of(user) if p not in procs_before]
    kill(leaked_procs)
    strays = sorted(set(stray_files(user, places, [str(base)])) - strays_before)
    from core.fsutil import remove_tree

    remove_tree(str(base))
    assert not leaked_mounts, f"the host's mount table shows rootless mounts: {leaked_mounts}"
    assert not leaked_procs, f"processes of the rootless user were left running: {leaked_procs}"
    assert not strays, f"files of the rootless user outside its state: {strays[:10]}"


@pytest.fixture
def rl_bb(rl: Rootless) -> Rootless:
    """A rootless environment with image ``bb`` (busybox, made from a tree the user made)."""
    tree = _busybox_tree_as(rl.user, rl.base / "bbtree", rl.environ)
    rl.ok("create", "bb", "--from-dir", str(tree))
    return rl
