"""Images through the real command line: create, list, info, history, rollback, gc, remove."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from tests.support.env import Env, assert_no_leaks, make_env
from tests.support.images import promote_version


def test_create_list_info_history(bb: Env) -> None:
    listed = bb.roost("image", "list", "--json").json()
    assert [(i["name"], i["backend"], i["current"], i["profile"], i["sessions"]) for i in listed] == [
        ("bb", "overlay", 1, "default", 0)
    ]
    info = bb.roost("--json", "image", "info", "bb").json()
    assert info["generations"] == 1 and info["size"] > 0
    history = bb.roost("image", "history", "bb", "--json").json()
    assert len(history) == 1
    g = history[0]
    assert g["generation"] == 1 and g["parent"] is None and g["current"] and not g["in_use"]
    assert g["author"] == "root" and g["created"].endswith("Z") and g["size"] > 0
    text = bb.ok("image", "list")
    assert text.splitlines()[0].split() == ["NAME", "BACKEND", "CURRENT", "PROFILE", "SESSIONS", "SIZE"]
    image_yaml = (bb.state / "images" / "bb" / "image.yaml").read_text()
    assert "backend: overlay" in image_yaml and "profile: default" in image_yaml
    assert os.readlink(bb.state / "images" / "bb" / "current") == "generations/1"


def test_create_from_tarballs_of_every_compression(env: Env, busybox_tree: Path, tmp_path: Path) -> None:
    for suffix, flag in ((".tar", None), (".tar.gz", "gzip"), (".tar.xz", "xz"), (".tar.zst", "zstd")):
        tarball = tmp_path / f"root{suffix}"
        argv = ["tar", "--numeric-owner", "-C", str(busybox_tree), "-cf", str(tarball), "."]
        if flag:
            argv.insert(1, f"--use-compress-program={flag}")
        subprocess.run(argv, check=True)
        name = "t" + suffix.replace(".", "-")
        env.ok("image", "create", name, "--from-tar", str(tarball))
        sid = env.begin(name)
        assert env.sh(sid, "cat /etc/hostname").out == "busybox\n"
        env.ok("session", "end", sid)


def test_dir_backend_promote_writes_full_trees(env: Env, busybox_tree: Path) -> None:
    env.ok("image", "create", "d", "--from-dir", str(busybox_tree), "--backend", "dir")
    sid = env.begin("d")
    assert env.sh(sid, "echo two > /etc/version && rm /etc/hostname").code == 0
    env.ok("session", "promote", sid, "-m", "second")
    tree = env.state / "images" / "d" / "generations" / "2" / "layer"
    assert (tree / "etc" / "version").read_text() == "two\n"
    assert not (tree / "etc" / "hostname").exists()
    assert (tree / "bin" / "busybox").exists()
    sid = env.begin("d")
    assert env.sh(sid, "cat /etc/version; test -e /etc/hostname || echo gone").out == "two\ngone\n"
    env.ok("session", "end", sid)


def test_rollback_and_history(bb: Env) -> None:
    for n in (2, 3):
        promote_version(bb, n)
    history = bb.roost("image", "history", "bb", "--json").json()
    assert [(g["generation"], g["parent"], g["current"], g["message"]) for g in history] == [
        (1, None, False, "created from dir " + history[0]["message"].split("dir ", 1)[1]),
        (2, 1, False, "version 2"),
        (3, 2, True, "version 3"),
    ]
    bb.ok("image", "rollback", "bb")
    assert bb.roost("image", "info", "bb", "--json").json()["current"] == 2
    sid = bb.begin()
    assert bb.sh(sid, "cat /etc/version").out == "2\n"
    bb.ok("session", "end", sid)
    bb.ok("image", "rollback", "bb", "3")
    assert bb.roost("image", "info", "bb", "--json").json()["current"] == 3
    r = bb.roost("image", "rollback", "bb", "3")  # already current: nothing to do, not an error
    assert r.code == 0 and "now at generation 3" in r.err
    r = bb.roost("image", "rollback", "bb", "9")
    assert r.code == 4
    journal = [line for line in (bb.state / "journal.jsonl").read_text().splitlines() if "rollback" in line]
    assert len(journal) == 2


def test_rollback_is_refused_while_maintained(bb: Env) -> None:
    sid = bb.begin("bb", "--maintenance")
    bb.sh(sid, "touch /x")
    other = bb.begin()
    bb.sh(other, "touch /y")
    bb.ok("session", "promote", sid)  # maintenance promote -> generation 2
    m2 = bb.begin("bb", "--maintenance")
    r = bb.roost("image", "rollback", "bb")
    assert r.code == 3 and m2 in r.err
    bb.ok("session", "end", m2)
    bb.ok("image", "rollback", "bb")
    bb.ok("session", "end", other)


def test_remove_refuses_while_used_unless_forced(bb: Env) -> None:
    sid = bb.begin()
    bb.sh(sid, "sleep 1000 >/dev/null 2>&1 & echo started")
    r = bb.roost("image", "remove", "bb")
    assert r.code == 3 and sid in r.err
    assert (bb.state / "images" / "bb").is_dir()
    bb.ok("image", "remove", "bb", "--force")
    assert not (bb.state / "images" / "bb").exists()
    assert bb.roost("session", "list", "--json").json() == []
    assert bb.roost("image", "list", "--json").json() == []
    assert os.listdir(bb.state / "trash") == []


def test_not_root_gets_a_clear_error(busybox_tree: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="roost-test-nonroot-"))
    try:
        os.chmod(base, 0o755)
        env = make_env(base)
        env.ok("image", "create", "bb", "--from-dir", str(busybox_tree))
        sid = env.begin()
        nobody = env.environ | {"HOME": "/"}
        for args in (
            ("session", "begin", "bb"),
            ("session", "end", sid),
            ("session", "run", sid, "--", "true"),
            ("session", "promote", sid),
            ("session", "recover", "--all"),
            ("run", "bb", "--", "true"),
            ("image", "rollback", "bb"),
            ("image", "gc", "bb"),
            ("image", "remove", "bb"),
            ("image", "create", "x", "--from-dir", "/"),
        ):
            nonroot = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "roost"]
            # the system's state, asked for (--system): refused, with sudo named
            proc = subprocess.run([*nonroot, "--system", *args], env=nobody, capture_output=True, text=True)
            assert proc.returncode == 2, (args, proc)
            assert "needs root" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
            # by default a user is in their own (rootless) mode, where root's state root is not theirs
            proc = subprocess.run([*nonroot, *args], env=nobody, capture_output=True, text=True)
            assert proc.returncode == 2, (args, proc)
            assert "belongs to uid 0, not to you" in proc.stderr, (args, proc.stderr)
            assert len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
        env.ok("session", "end", sid)
        env.ok("image", "remove", "bb")
    finally:
        assert_no_leaks(base)
        shutil.rmtree(base)


def _children(existing: frozenset[int] = frozenset()) -> list[int]:
    """The processes this test process started that still exist (zombies included), but for *existing*
    (what the session's fixtures started before the test: a zfs-fuse daemon)."""
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me and int(entry) not in existing:
                found.append(int(entry))
    return found


@pytest.mark.parametrize("kind", ["tar", "dir"])
def test_create_cancelled_by_its_progress_callback_stops_its_helpers_and_keeps_nothing(
    env: Env, busybox_tree: Path, tmp_path: Path, kind: str
) -> None:
    existing = frozenset(_children())  # the session's daemons are not this test's helpers
    from core.engine import Engine
    from core.errors import Cancelled
    from core.importers import Source

    if kind == "tar":
        path = tmp_path / "bb.tar.gz"
        subprocess.run(["tar", "-czf", str(path), "-C", str(busybox_tree), "."], check=True)
        source = Source("tar", path=str(path))
    else:
        # Big enough that cp is still copying when it is first asked how far it got.
        tree = tmp_path / "tree"
        subprocess.run(["cp", "-a", str(busybox_tree), str(tree)], check=True)
        with open(tree / "big", "wb") as f:
            for _ in range(64):
                f.write(os.urandom(1 << 20))
        source = Source("dir", path=str(tree))
    seen: list[str] = []
    running: list[list[int]] = []
    # The helpers are stopped (SIGSTOP) when the create is cancelled: they can only end if roost
    # kills them. Were roost to wait for them instead, the watchdog resumes them so the test
    # ends, failing.
    resumed: list[int] = []

    def resume() -> None:
        for pid in running[0] if running else []:
            resumed.append(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    watchdog = threading.Timer(60, resume)

    def progress(fraction: float | None, text: str) -> None:
        seen.append(text)
        if text.startswith(("unpacking", "copying")):  # the helpers (gzip and tar, cp) are running now
            running.append(_children(existing))
            for pid in running[0]:
                os.kill(pid, signal.SIGSTOP)
            watchdog.start()
            raise Cancelled("cancelled")

    engine = Engine(env.settings(), progress=progress)
    try:
        with pytest.raises(Cancelled):
            engine.create_image("cancelled", source)
    finally:
        watchdog.cancel()
    assert running and running[0], f"no helper was running when the create was cancelled: {seen}"
    assert not resumed, "roost waited for its stopped helpers instead of killing them"
    assert _children(existing) == []  # killed and reaped
    assert not (env.state / "images" / "cancelled").exists()
    assert os.listdir(env.state / "staging") == []
    assert not [n for n in os.listdir(env.run / "locks") if n.startswith("tx.")]
    assert env.roost("image", "list", "--json").json() == []
    last = env.state.joinpath("journal.jsonl").read_text().splitlines()[-1]
    assert '"result": "failed"' in last or '"result":"failed"' in last


def _group_members(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[2]) == pgid:
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_create_cancelled_while_mmdebstrap_runs_kills_its_process_group_and_keeps_nothing(env: Env) -> None:
    existing = frozenset(_children())  # the session's daemons are not this test's helpers
    from core.engine import Engine
    from core.errors import Cancelled
    from core.importers import Source

    started: list[int] = []

    def progress(fraction: float | None, text: str) -> None:
        if not text.startswith("running mmdebstrap"):  # a line of mmdebstrap's own: it is running
            started.extend(_children(existing))
            raise Cancelled("cancelled")

    engine = Engine(env.settings(), progress=progress)
    # A mirror nothing answers on: the create is cancelled long before mmdebstrap would need it.
    source = Source("mmdebstrap", suite="bookworm", variant="minbase", mirror="http://127.0.0.1:9/debian")
    with pytest.raises(Cancelled):
        engine.create_image("cancelled", source)
    assert len(started) == 1, started  # mmdebstrap, leading its own process group
    assert _children(existing) == []
    assert _group_members(started[0]) == []
    assert os.listdir(env.state / "staging") == []
    assert not (env.state / "images" / "cancelled").exists()
    assert not [n for n in os.listdir(env.run / "locks") if n.startswith("tx.")]


def test_helpers_with_nothing_to_count_still_report_so_a_cancel_stops_them() -> None:
    """A copy as a sudo caller (tar reading as the caller into tar writing as root) counts no bytes:
    it reports on a tick while it runs, so a cancel does not wait for the copy to finish."""
    existing = frozenset(_children())  # the session's daemons are not this test's helpers
    from core import importers
    from core.errors import Cancelled

    reports: list[str] = []
    started: list[int] = []

    def progress(fraction: float | None, text: str) -> None:
        reports.append(text)
        if len(reports) == 1:
            started.extend(_children(existing))
        else:
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        importers._pipeline([(["sleep", "30"], {})], None, progress, "copying", 0)
    assert reports == ["copying", "copying"]
    assert len(started) == 1
    assert _children(existing) == []


def test_a_foreign_architecture_without_arch_test_is_one_line_and_changes_nothing(env: Env, tmp_path: Path) -> None:
    """mmdebstrap checks foreign architectures with arch-test: roost says so before it runs anything."""
    mmdebstrap = shutil.which("mmdebstrap")
    assert mmdebstrap is not None, "mmdebstrap is not installed"
    foreign = "arm64" if os.uname().machine != "aarch64" else "amd64"
    path = tmp_path / "bin"  # mmdebstrap alone on PATH: no arch-test
    path.mkdir()
    (path / "mmdebstrap").symlink_to(mmdebstrap)
    r = env.roost("image", "create", "x", "--mmdebstrap", "bookworm", "--arch", foreign, env={"PATH": str(path)})
    if "qemu-user-static" in r.err:
        pytest.skip("qemu-user-static is not installed")
    assert r.code != 0 and r.err == "roost: arch-test is not installed (apt-get install arch-test)\n", r
    assert env.roost("image", "list", "--json").json() == []
