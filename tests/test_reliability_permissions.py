"""Permissions through sudo: the image's users, groups and root-users decide who may begin,
run and enter what, and as whom (the host's system users daemon, bin and sys play the parts)."""

from __future__ import annotations

import os
import sys

from tests import stats
from tests.checks import consistent
from tests.conftest import Env, Result


def as_user(env: Env, user: str, uid: int, *args: str) -> Result:
    """roost run by root through sudo on behalf of *user*."""
    return env.roost(*args, env={"SUDO_USER": user, "SUDO_UID": str(uid), "SUDO_GID": str(uid)})


def denied(r: Result) -> None:
    stats.bump("hostile inputs tried")
    assert r.code == 2, r
    assert len(r.err.strip().splitlines()) == 1 and "may" in r.err, r.err


def test_users_groups_and_root_users_decide(bb: Env) -> None:
    conf = bb.state / "images" / "bb" / "image.yaml"
    conf.write_text(conf.read_text() + "users: [daemon]\nroot-users: [bin]\n")
    # not listed at all
    denied(as_user(bb, "sys", 3, "session", "begin", "bb"))
    denied(as_user(bb, "sys", 3, "run", "bb", "--", "true"))
    # a user: begins, runs as themselves, nothing more
    mine = as_user(bb, "daemon", 1, "session", "begin", "bb").out.strip()
    info = bb.roost("session", "info", mine, "--json").json()
    assert info["owner"] == "daemon"
    r = as_user(bb, "daemon", 1, "session", "run", mine, "--", "id", "-u")
    assert (r.code, r.out) == (0, "1\n"), r
    r = as_user(bb, "daemon", 1, "run", "bb", "--", "id", "-u")
    assert (r.code, r.out) == (0, "1\n"), r
    denied(as_user(bb, "daemon", 1, "session", "run", mine, "-u", "root", "--", "id", "-u"))
    denied(as_user(bb, "daemon", 1, "run", "bb", "-u", "root", "--", "id", "-u"))
    denied(as_user(bb, "daemon", 1, "session", "begin", "bb", "--maintenance"))
    # a root-user: anything, in anyone's session
    theirs = as_user(bb, "bin", 2, "session", "begin", "bb").out.strip()
    r = as_user(bb, "bin", 2, "session", "run", mine, "-u", "root", "--", "id", "-u")
    assert (r.code, r.out) == (0, "0\n"), r
    # a user may not end, run in, enter or promote another user's session
    denied(as_user(bb, "daemon", 1, "session", "end", theirs))
    denied(as_user(bb, "daemon", 1, "session", "run", theirs, "--", "true"))
    denied(as_user(bb, "daemon", 1, "session", "enter", theirs))
    denied(as_user(bb, "daemon", 1, "session", "promote", theirs))
    assert bb.roost("session", "info", theirs, "--json").json()["state"] == "mounted"
    as_user(bb, "bin", 2, "session", "end", mine)  # root-users may end others' sessions
    assert [s["id"] for s in bb.roost("session", "list", "--json").json()] == [theirs]
    maint = as_user(bb, "bin", 2, "session", "begin", "bb", "--maintenance")
    assert maint.code == 0, maint
    as_user(bb, "bin", 2, "session", "end", maint.out.strip())
    as_user(bb, "bin", 2, "session", "end", theirs)
    # groups: sys's group lets sys in
    conf.write_text(conf.read_text() + "groups: [sys]\n")
    r = as_user(bb, "sys", 3, "run", "bb", "--", "id", "-u")
    assert (r.code, r.out) == (0, "3\n"), r
    consistent(bb)


def test_image_create_through_sudo_makes_the_creator_a_root_user(env: Env, busybox_tree) -> None:  # type: ignore[no-untyped-def]
    r = as_user(env, "daemon", 1, "image", "create", "theirs", "--from-dir", str(busybox_tree))
    assert r.code == 0, r
    conf = (env.state / "images" / "theirs" / "image.yaml").read_text()
    assert "root-users:\n- daemon\n" in conf
    r = as_user(env, "daemon", 1, "run", "theirs", "-u", "root", "--", "id", "-u")
    assert (r.code, r.out) == (0, "0\n"), r
    denied(as_user(env, "bin", 2, "session", "begin", "theirs"))
    history = env.roost("image", "history", "theirs", "--json").json()
    assert history[0]["author"] == "daemon"


def test_locks_and_journal_name_the_person_behind_sudo(bb: Env) -> None:
    conf = bb.state / "images" / "bb" / "image.yaml"
    conf.write_text(conf.read_text() + "root-users: [bin]\n")
    sid = as_user(bb, "bin", 2, "session", "begin", "bb", "--maintenance").out.strip()
    (writer,) = [lk for lk in bb.roost("locks", "--json").json() if lk["lock"] == "writer.bb"]
    assert writer["user"] == "bin"
    as_user(bb, "bin", 2, "session", "end", sid)
    last = (bb.state / "journal.jsonl").read_text().splitlines()[-1]
    assert '"user":"bin"' in last and '"operation":"session end"' in last
    assert os.geteuid() == 0 and sys.platform == "linux"
