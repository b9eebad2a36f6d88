"""Nothing is ever deleted through a mount: a session whose profile bind-mounts a host
directory with a canary file is ended in every hard way; the canary always survives, and
the session is either fully gone or still listed and endable."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.faults import POINTS
from tests.support import stats
from tests.support.checks import consistent
from tests.support.env import Env
from tests.support.mounts import mounts_under


@pytest.fixture
def canary(env: Env, busybox_tree: Path, tmp_path: Path) -> Iterator[Path]:
    shared = tmp_path / "shared"
    (shared / "deep" / "er").mkdir(parents=True)
    (shared / "canary").write_text("alive\n")
    (shared / "deep" / "er" / "canary").write_text("alive\n")
    (env.profiles / "canary.yaml").write_text(
        f"mounts:\n  - {{type: bind, source: {shared}, target: /srv/shared}}\n"
        f"  - {{type: rbind, source: {shared}, target: /srv/rshared}}\n"
    )
    env.ok("image", "create", "c", "--from-dir", str(busybox_tree), "--profile", "canary")
    yield shared
    assert (shared / "canary").read_text() == "alive\n"
    assert (shared / "deep" / "er" / "canary").read_text() == "alive\n"


def alive(shared: Path) -> None:
    stats.bump("states checked")
    assert (shared / "canary").read_text() == "alive\n"
    assert (shared / "deep" / "er" / "canary").read_text() == "alive\n"


def listed(env: Env) -> list[str]:
    return [s["id"] for s in env.roost("session", "list", "--json").json()]


@pytest.mark.parametrize("hold", ["cwd", "open-file"])
def test_end_while_a_host_process_keeps_the_mount_busy(env: Env, canary: Path, hold: str) -> None:
    sid = env.begin("c")
    inside = env.run / "mnt" / sid / "root" / "srv" / "shared"
    if hold == "cwd":
        holder = subprocess.Popen(["sleep", "1000"], cwd=inside / "deep")
    else:
        holder = subprocess.Popen(["sh", "-c", "exec 3<canary; exec sleep 1000"], cwd=inside)
    try:
        r = env.roost("session", "end", sid)
        assert r.code == 3 and "busy" in r.err and str(holder.pid) in r.err, r
        alive(canary)
        assert listed(env) == [sid]  # still listed ...
        assert env.roost("session", "info", sid, "--json").json()["state"] == "needs-recovery"
    finally:
        holder.kill()
        holder.wait()
    env.ok("session", "end", sid)  # ... and endable
    alive(canary)
    assert listed(env) == [] and mounts_under(env.run / "mnt") == []
    consistent(env)


def test_end_force_detaches_a_busy_mount_and_deletes_nothing_through_it(env: Env, canary: Path) -> None:
    sid = env.begin("c")
    holder = subprocess.Popen(["sleep", "1000"], cwd=env.run / "mnt" / sid / "root" / "srv" / "rshared" / "deep")
    try:
        env.ok("session", "end", "--force", sid)
        alive(canary)
        assert listed(env) == []
        assert mounts_under(env.run / "mnt") == []
    finally:
        holder.kill()
        holder.wait()
    alive(canary)
    consistent(env)


@pytest.mark.parametrize("step", POINTS["end"])
def test_crash_mid_end_keeps_the_canary(env: Env, canary: Path, step: str) -> None:
    sid = env.begin("c")
    env.sh(sid, "sleep 1000 >/dev/null 2>&1 & echo")
    r = env.roost("session", "end", sid, env={"ROOST_CRASH_AT": f"end:{step}"})
    assert r.code == -9
    stats.bump("operations killed")
    alive(canary)
    assert listed(env) in ([sid], [])  # fully gone, or still listed ...
    env.ok("session", "recover", "--all")
    alive(canary)
    if listed(env):
        env.ok("session", "end", sid)  # ... and endable
    alive(canary)
    assert listed(env) == [] and mounts_under(env.run / "mnt") == []
    consistent(env)


def test_image_remove_force_ends_sessions_without_touching_the_canary(env: Env, canary: Path) -> None:
    sessions = [env.begin("c") for _ in range(3)]
    env.sh(sessions[0], "echo inside > /srv/shared/from-session")
    env.ok("image", "remove", "--force", "c")
    alive(canary)
    assert (canary / "from-session").read_text() == "inside\n"
    assert listed(env) == [] and mounts_under(env.run / "mnt") == []
    assert not (env.state / "images" / "c").exists()
    consistent(env)


def test_a_mount_made_inside_the_session_is_taken_down_too(env: Env, canary: Path, tmp_path: Path) -> None:
    """Mounts the session made itself (here: another bind of the canary) go before the clone."""
    sid = env.begin("c")
    extra = env.run / "mnt" / sid / "root" / "root" / "again"
    extra.mkdir()
    subprocess.run(["mount", "--bind", str(canary), str(extra)], check=True)
    env.ok("session", "end", sid)
    alive(canary)
    assert mounts_under(env.run / "mnt") == []
    consistent(env)


def _propagation(path: Path) -> str:
    argv = ["findmnt", "-n", "-o", "PROPAGATION", "--mountpoint", str(path)]
    return subprocess.run(argv, capture_output=True, text=True).stdout.strip()


def test_the_runtime_mount_directory_is_made_private_on_a_shared_mount_once_and_again_if_shared(
    tmp_path: Path,
) -> None:
    """Nothing a session mounts may propagate out: a shared mount under ``<run>/mnt`` gets a private bind.

    Every begin asks (core.mounts.make_private_mount_dir); the mount on or
    holding the directory is found by its id, not by parsing the whole table.
    """
    from core import mounts

    shared, quiet = tmp_path / "shared", tmp_path / "quiet"
    for base in (shared, quiet):
        base.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "roost-test", str(base)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(shared)], check=True)
        subprocess.run(["mount", "--make-private", str(quiet)], check=True)
        mnt = shared / "run" / "mnt"
        mnt.mkdir(parents=True)
        assert mounts.make_private_mount_dir(str(mnt)) is True
        assert _propagation(mnt) == "private"
        assert mounts.make_private_mount_dir(str(mnt) + "/") is False  # a private mount already: nothing to do
        assert mounts_under(mnt) == [str(mnt)]
        subprocess.run(["mount", "--make-shared", str(mnt)], check=True)  # someone made it shared again
        assert mounts.make_private_mount_dir(str(mnt)) is False
        assert _propagation(mnt) == "private" and mounts_under(mnt) == [str(mnt)]
        calm = quiet / "run" / "mnt"
        calm.mkdir(parents=True)
        assert mounts.make_private_mount_dir(str(calm)) is False  # on a private mount: nothing to bind
        assert mounts_under(calm) == []
    finally:
        for base in (shared, quiet):
            subprocess.run(["umount", "-R", str(base)], check=False)
