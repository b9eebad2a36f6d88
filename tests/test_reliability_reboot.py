"""Reboot: every mount torn down and the runtime root wiped, as a reboot would; then
`session recover --all` brings every session back with its changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import stats
from tests.support.checks import consistent
from tests.support.env import Env
from tests.support.mounts import mounts_under


def reboot(env: Env) -> None:
    for target in sorted(mounts_under(env.run), key=len, reverse=True):
        subprocess.run(["umount", target], check=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(env.run)], check=True)


def test_reboot_brings_every_session_back(bb: Env, busybox_tree: Path) -> None:
    bb.ok("image", "create", "second", "--from-dir", str(busybox_tree), "--backend", "dir")
    ordinary = [bb.begin("bb"), bb.begin("second")]
    maintenance = bb.begin("bb", "--maintenance")
    for sid in [*ordinary, maintenance]:
        bb.sh(sid, f"echo {sid} > /root/work")
    # one session caught in the middle of a promote, one whose clone vanished with the reboot
    caught = bb.begin("second", "--maintenance")
    bb.sh(caught, "echo caught > /root/work")
    assert bb.roost("session", "promote", caught, env={"ROOST_CRASH_AT": "promote:unmounted"}).code == -9
    lost = bb.begin("bb")
    reboot(bb)
    subprocess.run(["rm", "-rf", "--one-file-system", str(bb.state / "sessions" / lost)], check=True)
    stats.bump("operations killed")
    report = bb.ok("session", "recover", "--all")
    assert f"session {lost}: its clone is gone" in report
    for sid in [*ordinary, maintenance, caught]:
        assert bb.sh(sid, "cat /root/work").out == f"{sid}\n".replace(caught, "caught"), sid
    # the maintenance session still holds its writer lock across the reboot
    assert bb.roost("session", "begin", "bb", "--maintenance").code == 3
    bb.ok("session", "promote", maintenance)
    bb.ok("session", "promote", caught)
    assert bb.roost("image", "info", "second", "--json").json()["current"] == 2
    bb.ok("session", "end", lost)  # reported, and endable
    for sid in ordinary:
        bb.ok("session", "end", sid)
    consistent(bb)
    assert bb.ok("session", "recover", "--all") == ""
