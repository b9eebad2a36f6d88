"""Reboot: every mount torn down and the runtime root wiped, as a reboot would; then
`session recover --all` brings every durable session back with its changes, and ends
every volatile one (its writes were never synced) as lost."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.faults import POINTS
from tests.support import stats
from tests.support.checks import consistent
from tests.support.env import Env
from tests.support.mounts import mounts_under


def reboot(env: Env) -> None:
    for target in sorted(mounts_under(env.run), key=len, reverse=True):
        subprocess.run(["umount", target], check=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(env.run)], check=True)


def durable(env: Env, image: str) -> None:
    conf = env.state / "images" / image / "image.yaml"
    conf.write_text(conf.read_text() + "durable: true\n")


def test_reboot_brings_every_session_back(bb: Env, busybox_tree: Path) -> None:
    bb.ok("image", "create", "second", "--from-dir", str(busybox_tree), "--backend", "dir")
    for image in ("bb", "second"):
        durable(bb, image)  # volatile sessions are lost in a reboot: the next test
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


#: Promote's steps after which its generation is committed (its metadata names the transaction).
COMMITTED = ("committed", "renamed", "switched", "ended")


@pytest.mark.parametrize("step", POINTS["promote"])
def test_reboot_during_a_volatile_sessions_promote_never_commits_a_torn_upper(bb: Env, step: str) -> None:
    """A power cut while an ordinary (volatile) session is promoted, at each of promote's steps.

    Before the commit its unsynced upper may be torn: the session is lost and
    ended, the image stays where it was. From the commit on, the generation was
    synced before its metadata was written: the promote is finished.
    """
    sid = bb.begin()
    untouched = bb.begin()  # no promote, same fate: lost
    bb.sh(sid, "echo promoted > /etc/work")
    killed = bb.roost("session", "promote", sid, "-m", "cut", env={"ROOST_CRASH_AT": f"promote:{step}"})
    assert killed.code == -9, killed
    stats.bump("operations killed")
    reboot(bb)
    states = {s["id"]: s["state"] for s in bb.roost("session", "list", "--json").json()}
    assert states[untouched] == "lost"
    report = bb.ok("session", "recover", "--all")
    assert f"session {untouched}: lost" in report
    current = bb.roost("image", "info", "bb", "--json").json()["current"]
    if step in COMMITTED:
        assert current == 2
        check = bb.begin()
        assert bb.sh(check, "cat /etc/work").out == "promoted\n"
        bb.ok("session", "end", check)
    else:
        assert current == 1
        assert f"session {sid}: lost" in report, report
    assert bb.roost("session", "list", "--json").json() == []
    assert not (bb.state / "sessions" / sid).exists()
    consistent(bb)
    assert bb.ok("session", "recover", "--all") == ""
