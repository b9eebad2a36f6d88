"""A host as the trust model expects it: roost installed for root, people reaching it through sudo.

The cast (real users, made for the module and removed after it):

========  =============================================================
eve       a sudo rule for roost and roost-schroot, and no rights at all
bob       in ``users`` of image ``shared``
gus       in group ``builders``, which is in ``groups`` of ``shared``
rita      in ``root-users`` of ``shared``
ada       in ``admins``, roost.yaml's ``admin-group``
========  =============================================================

Images: ``shared`` (alias ``shared-alias``) and ``private`` (nobody's but
the administrators'), both busybox roots. ``max-sessions-per-user`` is 3.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import assert_no_leaks, need_root
from tests.support import sudo

PREFIX = "roost-t-sec"


@dataclass
class Cast:
    inst: sudo.Installation
    eve: str
    bob: str
    gus: str
    rita: str
    ada: str
    builders: str
    admins: str


@pytest.fixture(scope="module")
def cast(busybox_tree: Path) -> Iterator[Cast]:
    need_root()
    for program in ("sudo", "visudo", "useradd", "runuser"):
        if not sudo.which(program):
            pytest.skip(f"{program} is not installed (apt-get install sudo passwd util-linux)")
    inst = sudo.make_installation(PREFIX)
    try:
        admins = inst.add_group("admins")
        builders = inst.add_group("builders")
        eve = inst.add_user("eve")
        bob = inst.add_user("bob")
        gus = inst.add_user("gus", [builders])
        rita = inst.add_user("rita")
        ada = inst.add_user("ada", [admins])
        inst.write(f"admin-group: {admins}\nmax-sessions-per-user: 3\n")
        # a careless host keeps roost's variables through sudo: roost itself must refuse them
        inst.allow_sudo(keep=("ROOST_ROOT", "ROOST_RUN", "ROOST_CONFIG", "ROOST_PROFILES", "ROOST_SYSLOG"))
        inst.root_ok("image", "create", "shared", "--from-dir", str(busybox_tree))
        inst.root_ok("image", "create", "private", "--from-dir", str(busybox_tree))
        grant(inst, "shared", users=[bob], groups=[builders], root_users=[rita], aliases=["shared-alias"])
        yield Cast(inst, eve, bob, gus, rita, ada, builders, admins)
    finally:
        sudo.remove(inst)
        assert_no_leaks(inst.base)


def grant(inst: sudo.Installation, image: str, **lists: list[str]) -> None:
    """Edit image.yaml as an operator would (users, groups, root-users, aliases …)."""
    path = inst.state / "images" / image / "image.yaml"
    data = yaml.safe_load(path.read_text())
    for key, value in lists.items():
        data[key.replace("_", "-")] = value
    path.write_text(yaml.safe_dump(data))


def fingerprint(root: Path) -> dict[str, str]:
    """Every file and link below *root* with a digest of what it holds (directories by name)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("mnt",)]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if name.endswith((".lock",)) or ".wait-" in name or "/cache/" in f"/{rel}":
                continue  # lock files and parse caches come and go with every command
            if os.path.islink(path):
                out[rel] = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def state_fingerprint(inst: sudo.Installation) -> dict[str, str]:
    """The state root minus the journal (a refused operation may say so there)."""
    found = fingerprint(inst.state)
    found.pop("journal.jsonl", None)
    return found


def refused(result: object, code: int = 2, words: str = "") -> None:
    """One clear line on stderr, the exit code, no traceback."""
    r = result  # tests.conftest.Result
    err: str = r.err  # type: ignore[attr-defined]
    assert r.code == code, (r.code, err)  # type: ignore[attr-defined]
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("roost: "), err
    assert words in lines[0], (words, err)
