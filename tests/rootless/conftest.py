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

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.env import REPO, need_root
from tests.support.rootless import Rootless, busybox_tree_as, stray_files
from tests.support.rootless_users import PREFIX, User, kill, make_user, processes_of, remove_user


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
    tree = busybox_tree_as(rl.user, rl.base / "bbtree", rl.environ)
    rl.ok("image", "create", "bb", "--from-dir", str(tree))
    return rl
