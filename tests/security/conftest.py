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

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import sudo
from tests.support.env import assert_no_leaks, need_root
from tests.support.trust import Cast, grant

PREFIX = "roost-t-sec"


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
