"""Images through the real command line: create, list, info, history, rollback, gc, remove."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.env import Env, assert_no_leaks, make_env
from tests.support.images import snapshot


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
        _promote_version(bb, n)
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


def _promote_version(env: Env, n: int) -> None:
    sid = env.begin("bb", "--maintenance")
    env.sh(sid, f"echo {n} > /etc/version")
    env.ok("session", "promote", sid, "-m", f"version {n}")


def test_gc_keeps_current_recent_in_use_and_their_layers(bb: Env) -> None:
    holder = bb.begin()  # holds generation 1
    for n in range(2, 7):
        _promote_version(bb, n)  # 2..6, each a layer on the one before
    bb.ok("image", "rollback", "bb", "3")
    for n in (7, 8):
        _promote_version(bb, n)  # 7 on 3, 8 on 7: 4, 5 and 6 are now a dead branch
    dry = bb.roost("image", "gc", "bb", "--keep", "2", "--dry-run", "--json").json()[0]
    # current (8) and the last two (7, 8) are kept with the layers they stand on (3, 2, 1);
    # 1 is also in use by a session.
    assert dry["removed"] == [4, 5, 6]
    assert sorted(dry["kept"]) == [1, 2, 3, 7, 8]
    assert (bb.state / "images/bb/generations/5").is_dir()  # a dry run changes nothing
    result = bb.roost("image", "gc", "bb", "--keep", "2", "--json").json()[0]
    assert result["removed"] == [4, 5, 6] and result["freed"] > 0
    gens = [g["generation"] for g in bb.roost("image", "history", "bb", "--json").json()]
    assert gens == [1, 2, 3, 7, 8]
    assert not (bb.state / "images/bb/generations/5").exists()
    assert bb.sh(holder, "cat /etc/version 2>/dev/null || echo none").out == "none\n"
    bb.ok("session", "end", holder)
    sid = bb.begin()
    assert bb.sh(sid, "cat /etc/version").out == "8\n"
    bb.ok("session", "end", sid)
    _promote_version(bb, 9)
    assert bb.roost("image", "gc", "bb", "--keep", "0").code == 2


def test_gc_never_removes_a_generation_a_session_uses(bb: Env) -> None:
    _promote_version(bb, 2)
    bb.ok("image", "rollback", "bb", "1")
    holder = bb.begin()  # on 1
    _promote_version(bb, 3)  # 3 on 1: generation 2 is a dead branch ...
    bb.ok("image", "rollback", "bb", "2")
    user = bb.begin()  # ... but now a session uses it
    bb.ok("image", "rollback", "bb", "3")
    result = bb.roost("image", "gc", "bb", "--keep", "1", "--json").json()[0]
    assert result["removed"] == []
    assert bb.sh(user, "cat /etc/version").out == "2\n"
    bb.ok("session", "end", user)
    result = bb.roost("image", "gc", "bb", "--keep", "1", "--json").json()[0]
    assert result["removed"] == [2]
    bb.ok("session", "end", holder)


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


def test_bad_input_is_one_line_exit_2_and_changes_nothing(bb: Env, busybox_tree: Path) -> None:
    before = snapshot(bb.state)
    cases = [
        ("image", "create", "../x", "--from-dir", str(busybox_tree)),
        ("image", "create", "a/b", "--from-dir", str(busybox_tree)),
        ("image", "create", "", "--from-dir", str(busybox_tree)),
        ("image", "create", "ok", "--from-dir", "/nonexistent"),
        ("image", "create", "ok", "--from-dir", str(busybox_tree), "--backend", "lvm"),
        ("image", "create", "ok", "--from-dir", str(busybox_tree), "--profile", "nope"),
        ("image", "create", "ok", "--from-dir", str(busybox_tree), "--variant", "minbase"),
        ("image", "create", "ok"),
        ("image", "info", "../x"),
        ("session", "begin", "a/b"),
        ("session", "begin", "bb", "--name", "../evil"),
        ("session", "run", "../x", "--", "true"),
        ("session", "run", "bb-nope"),
        ("session", "end", "x/y"),
        ("image", "rollback", "bb", "zero"),
        ("image", "rollback", "bb", "0"),
        ("image", "gc", "bb", "--keep", "x"),
        ("frobnicate",),
        ("session",),
        ("--headless",),
    ]
    for args in cases:
        r = bb.roost(*args)
        assert r.code == 2, (args, r)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("roost: "), (args, r.err)
        assert "Traceback" not in r.err
    for args in (("image", "info", "nope"), ("session", "end", "nope"), ("image", "remove", "nope")):
        r = bb.roost(*args)
        assert r.code == 4 and len(r.err.strip().splitlines()) == 1, (args, r)
    assert snapshot(bb.state) == before


def test_malformed_image_yaml_is_reported_and_changes_nothing(bb: Env) -> None:
    conf = bb.state / "images" / "bb" / "image.yaml"
    for text in ("backend: [\n", "backend: lvm\n", "profile: ../../etc\n", "users: alice\n", "\x00\xff"):
        conf.write_bytes(text.encode("latin-1"))
        before = snapshot(bb.state)
        for args in (("session", "begin", "bb"), ("image", "info", "bb"), ("run", "bb", "--", "true")):
            r = bb.roost(*args)
            assert r.code == 2, (text, args, r)
            assert len(r.err.strip().splitlines()) == 1 and "image.yaml" in r.err
        assert snapshot(bb.state) == before
        assert bb.roost("session", "list", "--json").json() == []


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
            proc = subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "roost", *args],
                env=nobody,
                capture_output=True,
                text=True,
            )
            assert proc.returncode == 2, (args, proc)
            assert "needs root" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
        env.ok("session", "end", sid)
        env.ok("image", "remove", "bb")
    finally:
        assert_no_leaks(base)
        shutil.rmtree(base)
