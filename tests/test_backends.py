"""One conformance suite for every backend, on real file systems.

Each scenario runs against overlay and dir (on the test's own state root),
btrfs (a state root on a loop-mounted btrfs), zfs (datasets in a file-backed
pool served by zfs-fuse) and squashfs and erofs (image files on loop
devices). After each test, the image is removed and nothing of the backend
may remain: no mount, loop device, subvolume or dataset.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.faults import POINTS
from tests.support import pools
from tests.support.env import Env, assert_no_leaks, make_env, need_root
from tests.support.mounts import detach_under, mounts_under

BACKENDS = ["overlay", "dir", "btrfs", "zfs", "squashfs", "erofs"]
#: Every backend, and btrfs a second time with a pool beside a state root on another file system.
VARIANTS = ["overlay", "dir", "btrfs", "btrfs-pool", "zfs", "squashfs", "erofs"]


# --- pools, once per test run ---------------------------------------------------------


# --- one environment per test, on the backend's file system ---------------------------


@dataclass
class Store:
    env: Env
    backend: str
    btrfs: Path | None = None
    dataset: str | None = None
    pool: Path | None = None

    def leftovers(self) -> list[str]:
        """Backend data that outlived every image and session (must be empty at the end)."""
        found = [f"loop device {d}" for d in _loops_below(self.env.base)]
        if self.btrfs is not None:
            for where in (self.env.base, self.pool):
                if where is not None and where.is_relative_to(self.btrfs):
                    found += [f"subvolume {s}" for s in pools.btrfs_subvolumes(self.btrfs, where)]
        if self.dataset is not None:
            containers = {self.dataset, f"{self.dataset}/gen", f"{self.dataset}/session"}
            found += [f"dataset {d}" for d in pools.zfs_datasets(self.dataset) if d not in containers]
        return found


def _loops_below(base: Path) -> list[str]:
    from core.backends.loop import devices_backed_by

    return devices_backed_by(str(base))


@pytest.fixture(params=VARIANTS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    need_root()
    variant = request.param
    backend = "btrfs" if variant == "btrfs-pool" else variant
    btrfs = dataset = pool = None
    if variant == "btrfs":
        btrfs = request.getfixturevalue("btrfs_mnt")
        base = Path(tempfile.mkdtemp(prefix="roost-test-", dir=btrfs))
    else:
        base = Path(tempfile.mkdtemp(prefix="roost-test-", dir=tmp_path_factory.getbasetemp()))
    env = make_env(base)
    if variant == "btrfs-pool":
        btrfs = request.getfixturevalue("btrfs_mnt")
        pool = Path(tempfile.mkdtemp(prefix="roost-pool-", dir=btrfs))
        with open(env.config, "a", encoding="utf-8") as f:
            f.write(f"btrfs-pool: {pool}\n")
    if backend == "zfs":
        pool = request.getfixturevalue("zfs_pool")
        dataset = f"{pool}/{base.name.replace('roost-test-', 't')}"
        subprocess.run(["zfs", "create", "-o", "mountpoint=none", "-o", "canmount=off", dataset], check=True)
        with open(env.config, "a", encoding="utf-8") as f:
            f.write(f"zfs-dataset: {dataset}\n")
    s = Store(env, backend, btrfs, dataset, pool)
    try:
        yield s
        for session in env.roost("session", "list", "--json").json():
            env.ok("session", "end", "--force", session["id"])
        for image in env.roost("image", "list", "--json").json():
            env.ok("image", "remove", "--force", image["name"])
        assert env.roost("doctor", "--check").code == 0
        assert s.leftovers() == []
        assert_no_leaks(base)
    finally:
        detach_under(base)  # after a failure: nothing mounted may make the removal wait on a daemon
        if dataset is not None:
            subprocess.run(["zfs", "destroy", "-r", dataset], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)
        if pool is not None:
            subprocess.run(["rm", "-rf", "--one-file-system", str(pool)], check=False)


@pytest.fixture
def img(store: Store, busybox_tree: Path) -> Store:
    """*store* with image ``bb`` (busybox) created in its backend."""
    store.env.ok("image", "create", "bb", "--from-dir", str(busybox_tree), "--backend", store.backend)
    return store


def current(env: Env, image: str = "bb") -> int:
    return int(env.roost("image", "info", image, "--json").json()["current"])


def consistent(env: Env) -> None:
    r = env.roost("doctor", "--check")
    assert r.code == 0, r.out + r.err
    for image in (env.state / "images").iterdir():
        for sub in ("staging", "trash"):
            assert not (image / sub).exists() or os.listdir(image / sub) == [], (image, sub)
    assert os.listdir(env.state / "staging") == [] and os.listdir(env.state / "trash") == []


# --- the scenarios ----------------------------------------------------------------------


def test_create_begin_many_sessions_write_and_isolation(img: Store) -> None:
    env = img.env
    info = env.roost("image", "info", "bb", "--json").json()
    assert info["backend"] == img.backend and info["current"] == 1 and info["size"] > 0
    ids = [env.begin() for _ in range(4)]
    for n, sid in enumerate(ids):
        r = env.sh(sid, f"echo {n} > /etc/mine; rm /etc/hostname; mkdir -p /opt/{n}; cat /etc/mine")
        assert r.code == 0 and r.out == f"{n}\n", r.err
    for n, sid in enumerate(ids):
        assert env.sh(sid, "cat /etc/mine; ls /opt; test -e /etc/hostname || echo gone").out == f"{n}\n{n}\ngone\n"
    fresh = env.begin()
    assert env.sh(fresh, "cat /etc/hostname; test -e /etc/mine || echo clean").out == "busybox\nclean\n"
    listed = {s["id"]: s for s in env.roost("session", "list", "--json").json()}
    assert set(listed) == {*ids, fresh} and {s["state"] for s in listed.values()} == {"mounted"}
    assert {s["backend"] for s in listed.values()} == {img.backend}
    for sid in [*ids, fresh]:
        env.ok("session", "end", sid)
        # invariant 7: nothing of the session remains
        assert mounts_under(env.run / "mnt" / sid) == [] and not (env.run / "mnt" / sid).exists()
        assert not (env.state / "sessions" / sid).exists()
    assert _loops_below(env.base) == []
    consistent(env)


def test_maintenance_promote_and_compare_and_swap(img: Store) -> None:
    env = img.env
    late = env.begin()
    env.sh(late, "echo late > /etc/late")
    m = env.begin("bb", "--maintenance")
    assert env.sh(m, "echo two > /etc/version; rm /etc/hostname; mkdir -p /usr/lib/x; echo y > /usr/lib/x/y").code == 0
    env.ok("session", "promote", m, "-m", "two")
    assert current(env) == 2
    assert env.roost("session", "list", "--json").json()[0]["id"] == late
    new = env.begin()
    assert env.sh(new, "cat /etc/version /usr/lib/x/y; test -e /etc/hostname || echo gone").out == "two\ny\ngone\n"
    env.ok("session", "end", new)
    # compare-and-swap: a session cloned from generation 1 cannot overwrite generation 2
    r = env.roost("session", "promote", late)
    assert r.code == 3 and "not a fast-forward" in r.err and len(r.err.strip().splitlines()) == 1
    assert current(env) == 2
    assert env.sh(late, "cat /etc/late /etc/hostname").out == "late\nbusybox\n"
    env.ok("session", "end", late)
    history = env.roost("image", "history", "bb", "--json").json()
    assert [(g["generation"], g["parent"], g["current"]) for g in history] == [(1, None, False), (2, 1, True)]
    assert history[1]["message"] == "two" and history[1]["session"] == m
    assert history[1]["size"] > 0  # measured, without walking the tree where the backend can
    consistent(env)


def _promote(env: Env, content: str) -> int:
    sid = env.begin("bb", "--maintenance")
    assert env.sh(sid, f"echo {content} > /etc/version").code == 0
    env.ok("session", "promote", sid, "-m", content)
    return current(env)


def test_rollback_and_gc_with_sessions_holding_old_generations(img: Store) -> None:
    env = img.env
    assert _promote(env, "g2") == 2
    holder = env.begin()  # holds generation 2
    assert _promote(env, "g3") == 3
    assert _promote(env, "g4") == 4
    env.ok("image", "rollback", "bb")  # back to 3
    assert current(env) == 3
    s3 = env.begin()
    assert env.sh(s3, "cat /etc/version").out == "g3\n"
    env.ok("session", "end", s3)
    assert _promote(env, "g5") == 5  # 5 on 3: 4 is a dead branch
    r = env.roost("image", "gc", "bb", "--keep", "1", "--json").json()
    # an overlay generation stands on the layers of its parents; every other backend's is complete
    kept = [1, 2, 3, 5] if img.backend == "overlay" else [2, 5]
    assert r[0]["kept"] == kept and r[0]["removed"] == sorted({1, 2, 3, 4, 5} - set(kept)), r
    assert [g["generation"] for g in env.roost("image", "history", "bb", "--json").json()] == kept
    # the session on generation 2 kept everything it needs, and so did generation 5
    assert env.sh(holder, "cat /etc/version; cat /bin/busybox > /dev/null && echo ok").out == "g2\nok\n"
    s5 = env.begin()
    assert env.sh(s5, "cat /etc/version /etc/hostname").out == "g5\nbusybox\n"
    env.ok("session", "end", s5)
    env.ok("session", "end", holder)
    env.ok("image", "rollback", "bb", "2")
    s2 = env.begin()
    assert env.sh(s2, "cat /etc/version").out == "g2\n"
    env.ok("session", "end", s2)
    r = env.roost("image", "gc", "bb", "--keep", "1", "--json").json()
    assert r[0]["removed"] == [] and r[0]["kept"] == kept  # current, the newest, and what they stand on
    consistent(env)


def test_recover_after_the_mounts_are_torn_down(img: Store) -> None:
    env = img.env
    thrown = env.begin()  # an ordinary session: volatile where the backend's sessions are overlays
    volatile = env.roost("session", "info", thrown, "--json").json()["durable"] is False
    conf = env.state / "images" / "bb" / "image.yaml"
    conf.write_text(conf.read_text() + "durable: true\n")
    sid = env.begin()
    assert env.roost("session", "info", sid, "--json").json()["durable"] is True
    m = env.begin("bb", "--maintenance")
    env.sh(sid, "echo precious > /root/work")
    env.sh(m, "echo maintained > /etc/m")
    env.sh(thrown, "echo unsynced > /root/work")
    # a reboot: every mount gone (and with them the loop devices), the runtime root wiped
    for target in sorted(mounts_under(env.run), key=len, reverse=True):
        subprocess.run(["umount", target], check=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(env.run)], check=True)
    assert _loops_below(env.base) == []
    states = {s["id"]: s["state"] for s in env.roost("session", "list", "--json").json()}
    assert states == {sid: "needs-recovery", m: "needs-recovery", thrown: "lost" if volatile else "needs-recovery"}
    report = env.ok("session", "recover", "--all")
    assert f"session {sid}: remounted" in report and f"session {m}: remounted" in report
    if volatile:  # its writes were never synced: ended, never remounted
        assert f"session {thrown}: lost" in report
        assert thrown not in {s["id"] for s in env.roost("session", "list", "--json").json()}
    else:
        assert f"session {thrown}: remounted" in report
        env.ok("session", "end", thrown)
    assert env.sh(sid, "cat /root/work").out == "precious\n"
    assert env.ok("session", "recover", "--all") == ""  # idempotent
    env.ok("session", "promote", m)
    s = env.begin()
    assert env.sh(s, "cat /etc/m").out == "maintained\n"
    for x in (s, sid):
        env.ok("session", "end", x)
    consistent(env)


def test_end_with_processes_still_running(img: Store) -> None:
    env = img.env
    sid = env.begin()
    env.sh(sid, "trap '' TERM; (trap '' TERM; sleep 1000) >/dev/null 2>&1 & sleep 1000 >/dev/null 2>&1 & echo")
    assert env.roost("session", "info", sid, "--json").json()["processes"] >= 2
    env.ok("session", "end", sid)
    assert mounts_under(env.run / "mnt") == []
    assert not (env.state / "sessions" / sid).exists()
    assert _loops_below(env.base) == []
    consistent(env)


@pytest.mark.parametrize("step", POINTS["promote"])
def test_promote_killed_at_each_step_then_recover(img: Store, step: str) -> None:
    env = img.env
    sid = env.begin("bb", "--maintenance")
    env.sh(sid, "echo new > /etc/new; rm /etc/hostname; mkdir -p /usr/lib/x && echo y > /usr/lib/x/y")
    r = env.roost("session", "promote", sid, "-m", "crash", env={"ROOST_CRASH_AT": f"promote:{step}"})
    assert r.code == -9, (step, r)
    report = env.ok("session", "recover", "--all")
    sessions = env.roost("session", "list", "--json").json()
    if current(env) == 2:
        assert sessions == [], (step, report)
    else:
        assert current(env) == 1, step
        assert [(s["id"], s["state"]) for s in sessions] == [(sid, "mounted")], (step, report)
        assert env.sh(sid, "cat /etc/new").out == "new\n"
        env.ok("session", "promote", sid)
    consistent(env)
    new = env.begin()
    assert env.sh(new, "cat /etc/new /usr/lib/x/y; test -e /etc/hostname || echo gone").out == "new\ny\ngone\n"
    env.ok("session", "end", new)
    assert [g["generation"] for g in env.roost("image", "history", "bb", "--json").json()] == [1, 2]
    consistent(env)


def test_convert_to_another_backend_and_back(img: Store) -> None:
    env = img.env
    _promote(env, "converted")
    other = "squashfs" if img.backend == "overlay" else "overlay"
    info = env.roost("image", "convert", "bb", "--backend", other, "--to", "copy", "--json").json()
    assert info["name"] == "copy" and info["backend"] == other and info["current"] == 1
    history = env.roost("image", "history", "copy", "--json").json()
    assert len(history) == 1 and "generation 2 of bb" in history[0]["message"]
    s = env.begin("copy")
    assert env.sh(s, "cat /etc/version /etc/hostname").out == "converted\nbusybox\n"
    r = env.roost("image", "convert", "copy", "--backend", img.backend)
    assert r.code == 3 and s in r.err  # in place only while idle
    env.ok("session", "end", s)
    env.ok("image", "convert", "copy", "--backend", img.backend)  # in place
    assert env.roost("image", "info", "copy", "--json").json()["backend"] == img.backend
    s = env.begin("copy")
    assert env.sh(s, "cat /etc/version").out == "converted\n"
    env.ok("session", "end", s)
    consistent(env)


def test_image_remove_leaves_nothing_behind(img: Store) -> None:
    env = img.env
    _promote(env, "two")
    env.begin()
    env.ok("image", "remove", "bb", "--force")
    assert env.roost("image", "list", "--json").json() == []
    assert img.leftovers() == []
    assert mounts_under(env.run / "mnt") == []
    consistent(env)


# --- choosing a backend -------------------------------------------------------------------


@pytest.fixture
def on_btrfs(btrfs_mnt: Path) -> Iterator[Env]:
    base = Path(tempfile.mkdtemp(prefix="roost-test-", dir=btrfs_mnt))
    env = make_env(base)
    yield env
    for image in env.roost("image", "list", "--json").json():
        env.ok("image", "remove", "--force", image["name"])
    assert pools.btrfs_subvolumes(btrfs_mnt, base) == []
    assert_no_leaks(base)
    subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


def test_doctor_reports_every_backend_and_why_not(env: Env) -> None:
    report = env.roost("doctor", "--backends", "--json").json()
    backends = {b["name"]: b for b in report["backends"]}
    assert list(backends) == BACKENDS
    assert report["default"] == "overlay"  # a state root on neither btrfs nor zfs
    assert backends["overlay"]["available"] and backends["dir"]["available"]
    assert backends["squashfs"]["available"] and backends["erofs"]["available"]
    assert not backends["btrfs"]["available"] and "not btrfs" in backends["btrfs"]["why"]
    assert not backends["zfs"]["available"] and "zfs-dataset" in backends["zfs"]["why"]
    text = env.ok("doctor")
    assert text.splitlines()[0].split()[:2] == ["BACKEND", "AVAILABLE"]
    assert "yes (default)" in next(line for line in text.splitlines() if line.startswith("overlay"))


def test_an_unavailable_backend_is_one_line_and_changes_nothing(env: Env, busybox_tree: Path) -> None:
    for backend, why in (("btrfs", "not btrfs"), ("zfs", "zfs-dataset")):
        r = env.roost("image", "create", "x", "--from-dir", str(busybox_tree), "--backend", backend)
        assert r.code == 2 and why in r.err and len(r.err.strip().splitlines()) == 1, r
    assert env.roost("image", "create", "x", "--from-dir", str(busybox_tree), "--backend", "zfs2").code == 2
    with open(env.config, "a", encoding="utf-8") as f:
        f.write(f"btrfs-pool: {env.base}\n")
    r = env.roost("image", "create", "x", "--from-dir", str(busybox_tree), "--backend", "btrfs")
    assert r.code == 2 and f"btrfs-pool {env.base} is on" in r.err and "not btrfs" in r.err, r
    assert env.roost("image", "list", "--json").json() == []
    assert not (env.state / "images" / "x").exists()
    with open(env.config, "a", encoding="utf-8") as f:
        f.write("zfs-dataset: no-such-pool/roost\n")
    r = env.roost("image", "create", "x", "--from-dir", str(busybox_tree), "--backend", "zfs")
    assert r.code == 2 and "no-such-pool/roost" in r.err and len(r.err.strip().splitlines()) == 1, r
    env.config.write_text("zfs-dataset: /not/a/dataset\n")
    r = env.roost("image", "list")
    assert r.code == 2 and "zfs-dataset" in r.err
    env.config.write_text("default-backend: btrf\n")
    r = env.roost("image", "list")
    assert r.code == 2 and "default-backend must be one of auto, overlay" in r.err
    env.config.write_text("end-grace: 2\n")
    env.ok("image", "create", "x", "--from-dir", str(busybox_tree))
    r = env.roost("image", "convert", "x", "--backend", "btrfs")
    assert r.code == 2 and "not btrfs" in r.err
    r = env.roost("image", "convert", "x", "--backend", "overlay")
    assert r.code == 2 and "already" in r.err
    assert [g["generation"] for g in env.roost("image", "history", "x", "--json").json()] == [1]


def test_the_best_backend_is_the_default_btrfs(on_btrfs: Env, busybox_tree: Path) -> None:
    env = on_btrfs
    assert env.roost("doctor", "--backends", "--json").json()["default"] == "btrfs"
    env.ok("image", "create", "auto", "--from-dir", str(busybox_tree))
    info = env.roost("image", "info", "auto", "--json").json()
    assert info["backend"] == "btrfs" and "btrfs" in info["storage"]
    assert "Storage" in env.ok("image", "info", "auto")
    with open(env.config, "a", encoding="utf-8") as f:
        f.write("default-backend: dir\n")  # the setting still wins
    env.ok("image", "create", "chosen", "--from-dir", str(busybox_tree))
    assert env.roost("image", "info", "chosen", "--json").json()["backend"] == "dir"


def test_the_best_backend_is_the_default_zfs(env: Env, zfs_pool: str, busybox_tree: Path) -> None:
    dataset = f"{zfs_pool}/{env.base.name.replace('roost-test-', 'd')}"
    subprocess.run(["zfs", "create", "-o", "mountpoint=none", "-o", "canmount=off", dataset], check=True)
    try:
        with open(env.config, "a", encoding="utf-8") as f:
            f.write(f"zfs-dataset: {dataset}\n")
        assert env.roost("doctor", "--backends", "--json").json()["default"] == "zfs"
        env.ok("image", "create", "auto", "--from-dir", str(busybox_tree))
        info = env.roost("image", "info", "auto", "--json").json()
        assert info["backend"] == "zfs" and dataset in info["storage"]
        env.ok("image", "remove", "auto")
        assert pools.zfs_datasets(dataset) == [dataset, f"{dataset}/gen", f"{dataset}/session"]
    finally:
        subprocess.run(["zfs", "destroy", "-r", dataset], capture_output=True, check=False)


def test_unmounting_right_after_many_files_were_closed_leaves_zfs_fuse_answering(
    env: Env, zfs_pool: str, tmp_path: Path
) -> None:
    """Releases of files just closed reach zfs-fuse after the unmount unless it waits for them.

    Lost, each keeps a reference the daemon waits for forever: the dataset
    stays busy and every mount it serves stops answering (core.mounts.drain_fuse).
    """
    from core import mounts
    from core.backends.zfs import zfs

    where = tmp_path / "mnt"
    for n in range(3):
        dataset = f"{zfs_pool}/{env.base.name.replace('roost-test-', 'u')}{n}"
        subprocess.run(["zfs", "create", "-o", f"mountpoint={where}", dataset], check=True, timeout=60)
        try:
            for i in range(300):
                (where / str(i)).mkdir()
                (where / str(i) / "f").write_text(f"{i}\n")
            fds = [os.open(where / str(i), os.O_RDONLY | os.O_DIRECTORY) for i in range(300)]
            fds += [os.open(where / str(i) / "f", os.O_RDONLY) for i in range(300)]
            for fd in fds:
                os.close(fd)
            mounts.unmount_tree(str(where))  # at once: the releases are still on their way
            zfs("destroy", dataset)  # busy for a moment at most (BUSY_WAIT), not for ever
        finally:
            mounts.unmount_tree(str(where), force=True)
            subprocess.run(["zfs", "destroy", "-r", dataset], capture_output=True, check=False, timeout=60)


def test_orphan_datasets_are_found_and_destroyed(env: Env, zfs_pool: str, busybox_tree: Path) -> None:
    dataset = f"{zfs_pool}/{env.base.name.replace('roost-test-', 'o')}"
    subprocess.run(["zfs", "create", "-o", "mountpoint=none", "-o", "canmount=off", dataset], check=True)
    try:
        with open(env.config, "a", encoding="utf-8") as f:
            f.write(f"zfs-dataset: {dataset}\n")
        env.ok("image", "create", "z", "--from-dir", str(busybox_tree))
        orphans = [f"{dataset}/gen/z.lost", f"{dataset}/session/forgotten"]
        for orphan in orphans:
            subprocess.run(["zfs", "create", "-o", f"roost:state={env.state}", orphan], check=True)
        foreign = f"{dataset}/session/other-state-root"
        subprocess.run(["zfs", "create", "-o", "roost:state=/elsewhere", foreign], check=True)
        r = env.roost("doctor", "--check")
        assert r.code == 5
        assert sorted(r.out.splitlines()) == [f"dataset {o} belongs to no generation or session" for o in orphans]
        report = env.ok("session", "recover", "--all")
        assert all(f"destroyed orphan dataset {o}" in report for o in orphans)
        assert env.roost("doctor", "--check").code == 0
        env.ok("image", "remove", "z")
        assert pools.zfs_datasets(dataset) == [dataset, f"{dataset}/gen", f"{dataset}/session", foreign]
    finally:
        subprocess.run(["zfs", "destroy", "-r", dataset], capture_output=True, check=False)


# --- every other crash point, on every backend ----------------------------------------------


# overlay's are in test_invariants.py, and dir clones and mounts sessions exactly as overlay does
@pytest.mark.parametrize("store", ["btrfs", "btrfs-pool", "zfs", "squashfs", "erofs"], indirect=True)
@pytest.mark.parametrize("op,step", [("begin", s) for s in POINTS["begin"]] + [("end", s) for s in POINTS["end"]])
def test_begin_and_end_killed_at_each_step_then_recover(img: Store, op: str, step: str) -> None:
    env = img.env
    crash = {"ROOST_CRASH_AT": f"{op}:{step}"}
    if op == "begin":
        assert env.roost("session", "begin", "bb", "--maintenance", env=crash).code == -9
    else:
        sid = env.begin("bb", "--maintenance")
        env.sh(sid, "sleep 1000 >/dev/null 2>&1 & echo")
        assert env.roost("session", "end", sid, env=crash).code == -9
    env.ok("session", "recover", "--all")
    assert env.roost("session", "list", "--json").json() == []
    assert mounts_under(env.run / "mnt") == [] and _loops_below(env.base) == []
    consistent(env)
    m = env.begin("bb", "--maintenance")  # nothing stale blocks the writer lock
    assert env.sh(m, "cat /etc/hostname").out == "busybox\n"
    env.ok("session", "end", m)


@pytest.mark.parametrize(
    "op,step",
    [("create", s) for s in POINTS["create"]]
    + [("gc", "trashed")]
    + [("remove", s) for s in POINTS["remove"]]
    + [("convert", s) for s in POINTS["convert"]],
)
def test_image_operations_killed_at_each_step_then_recover(img: Store, busybox_tree: Path, op: str, step: str) -> None:
    env = img.env
    for n in (2, 3):
        _promote(env, str(n))
    env.ok("image", "rollback", "bb", "2")
    _promote(env, "4")  # 4 on 2: 3 is a dead branch gc can take, 1 is old
    other = "squashfs" if img.backend == "overlay" else "overlay"
    argv = {
        "create": ("image", "create", "second", "--from-dir", str(busybox_tree), "--backend", img.backend),
        "gc": ("image", "gc", "bb", "--keep", "1"),
        "remove": ("image", "remove", "bb", "--force"),
        "convert": ("image", "convert", "bb", "--backend", other),
    }[op]
    if op == "remove":
        env.begin()
    r = env.roost(*argv, env={"ROOST_CRASH_AT": f"{op}:{step}"})
    assert r.code == -9, r
    env.ok("session", "recover", "--all")
    consistent(env)
    assert mounts_under(env.run / "mnt") == [] and _loops_below(env.base) == []
    images = {i["name"]: i["backend"] for i in env.roost("image", "list", "--json").json()}
    if op == "convert":
        assert images == {"bb": other if step == "exchanged" else img.backend}
    for image in images:
        sid = env.begin(image)
        assert env.sh(sid, "cat /etc/hostname").out == "busybox\n"
        if image == "bb":
            assert env.sh(sid, "cat /etc/version").out == "4\n"
        env.ok("session", "end", sid)
    for image in images:
        env.ok("image", "remove", image)
    assert img.leftovers() == []


# --- invariant 1 on every backend ------------------------------------------------------------


# overlay's (longer) run is test_invariants.py's
@pytest.mark.parametrize("store", ["dir", "btrfs", "btrfs-pool", "zfs", "squashfs", "erofs"], indirect=True)
def test_invariant_1_a_session_clones_exactly_one_complete_generation(img: Store) -> None:
    """While one process promotes and rolls back, another begins sessions in a loop."""
    env = img.env
    stop = threading.Event()
    observed: list[tuple[int, str]] = []
    errors: list[str] = []

    def writer() -> None:
        try:
            for i in range(8):
                sid = env.begin("bb", "--maintenance")
                script = f"rm -rf /gen; mkdir /gen; echo t{i} > /gen/a; echo t{i} > /gen/b"
                assert env.sh(sid, script).code == 0
                env.ok("session", "promote", sid, "-m", f"t{i}")
                if i % 3 == 2:
                    env.ok("image", "rollback", "bb")
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(f"writer: {e!r}")
        finally:
            stop.set()

    def reader() -> None:
        try:
            while not stop.is_set():
                r = env.roost("session", "begin", "bb", "--json")
                assert r.code == 0, r.err
                sid, generation = r.json()["id"], r.json()["generation"]
                observed.append((generation, env.sh(sid, "cat /gen/a /gen/b 2>/dev/null").out))
                env.ok("session", "end", sid)
        except BaseException as e:  # noqa: BLE001
            errors.append(f"reader: {e!r}")

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    tokens = {g["generation"]: g["message"] for g in env.roost("image", "history", "bb", "--json").json()}
    assert len(observed) >= 3
    for generation, seen in observed:
        expected = "" if generation == 1 else f"{tokens[generation]}\n{tokens[generation]}\n"
        assert seen == expected, (generation, seen)
    consistent(env)
