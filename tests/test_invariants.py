"""The invariants of DESIGN.md §4, each proven against real mounts and real processes."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.errors import SystemFailure
from core.faults import POINTS
from core.fsutil import remove_tree
from tests.support.checks import consistent
from tests.support.env import Env
from tests.support.mounts import mounts_under

# --- invariant 1 --------------------------------------------------------------------------


def test_invariant_1_a_session_clones_exactly_one_complete_generation(bb: Env) -> None:
    """While one process promotes and rolls back, others begin sessions in a loop."""
    stop = threading.Event()
    observed: list[tuple[int, str]] = []
    errors: list[str] = []

    def writer() -> None:
        rng = random.Random(1)
        try:
            for i in range(30):
                sid = bb.begin("bb", "--maintenance")
                token = f"t{i}"
                script = (
                    f"rm -rf /gen; mkdir /gen; echo {token} > /gen/a; echo {token} > /gen/b; "
                    f"echo {token} > /gen/marker-{token}"
                )
                assert bb.sh(sid, script).code == 0
                bb.ok("session", "promote", sid, "-m", token)
                if rng.random() < 0.4:
                    history = bb.roost("image", "history", "bb", "--json").json()
                    target = rng.choice([g["generation"] for g in history if not g["current"]])
                    r = bb.roost("image", "rollback", "bb", str(target))
                    assert r.code == 0, r.err
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(f"writer: {e!r}")
        finally:
            stop.set()

    def reader() -> None:
        try:
            while not stop.is_set():
                r = bb.roost("session", "begin", "bb", "--json")
                assert r.code == 0, r.err
                sid = r.json()["id"]
                generation = r.json()["generation"]
                seen = bb.sh(sid, "cat /gen/a /gen/b 2>/dev/null; ls /gen 2>/dev/null").out
                observed.append((generation, seen))
                bb.ok("session", "end", sid)
        except BaseException as e:  # noqa: BLE001
            errors.append(f"reader: {e!r}")

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    tokens = {g["generation"]: g["message"] for g in bb.roost("image", "history", "bb", "--json").json()}
    assert len(observed) >= 20
    generations_seen = set()
    for generation, seen in observed:
        token = tokens[generation]
        expected = "" if generation == 1 else f"{token}\n{token}\na\nb\nmarker-{token}\n"
        assert seen == expected, (generation, seen)
        generations_seen.add(generation)
    assert len(generations_seen) > 3  # sessions really did straddle promotes and rollbacks
    consistent(bb)


# --- invariant 2 --------------------------------------------------------------------------


@pytest.mark.parametrize("step", POINTS["promote"])
def test_invariant_2_promote_killed_at_each_step_then_recover(bb: Env, step: str) -> None:
    sid = bb.begin("bb", "--maintenance")
    bb.sh(sid, "echo new > /etc/new; rm /etc/hostname; mkdir -p /usr/lib/x && echo y > /usr/lib/x/y")
    r = bb.roost("session", "promote", sid, "-m", "crash", env={"ROOST_CRASH_AT": f"promote:{step}"})
    assert r.code == -9, (step, r)
    report = bb.ok("session", "recover", "--all")
    current = int(os.readlink(bb.state / "images" / "bb" / "current").split("/")[1])
    sessions = bb.roost("session", "list", "--json").json()
    if current == 2:
        # the generation was committed: recover rolled the promote forward and ended the session
        assert sessions == [], (step, report)
        assert "promote finished" in report or step == "ended"
    else:
        # not committed: the session is back, usable, with its changes
        assert current == 1, step
        assert [(s["id"], s["state"]) for s in sessions] == [(sid, "mounted")], (step, report)
        assert bb.sh(sid, "cat /etc/new").out == "new\n"
        bb.ok("session", "promote", sid)  # and it can still be promoted
    consistent(bb)
    new = bb.begin()
    assert bb.sh(new, "cat /etc/new /usr/lib/x/y; test -e /etc/hostname || echo gone").out == "new\ny\ngone\n"
    bb.ok("session", "end", new)
    history = bb.roost("image", "history", "bb", "--json").json()
    assert [g["generation"] for g in history] == [1, 2]
    consistent(bb)


@pytest.mark.parametrize("step", ["leased", "marked", "unmounted", "staged", "committed", "switched"])
def test_invariant_2_ordinary_promote_crash_releases_the_writer_lock(bb: Env, step: str) -> None:
    sid = bb.begin()
    bb.sh(sid, "echo x > /etc/x")
    r = bb.roost("session", "promote", sid, env={"ROOST_CRASH_AT": f"promote:{step}"})
    assert r.code == -9
    bb.ok("session", "recover", "--all")
    assert not any(lk["lock"] == "writer.bb" and not lk["stale"] for lk in bb.roost("locks", "--json").json())
    m = bb.begin("bb", "--maintenance")  # the writer lock is free again
    bb.ok("session", "end", m)
    for s in bb.roost("session", "list", "--json").json():
        bb.ok("session", "end", s["id"])
    consistent(bb)


def test_a_promote_killed_before_marking_its_session_leaves_no_binding_writer_lock(bb: Env) -> None:
    """Found by the soak: killed between writing its temporary writer lease and marking the
    session, the promote of an ordinary session left a lease naming a live session, and every
    maintenance session, rollback and promote of the image was refused until that session ended."""
    sid = bb.begin()
    r = bb.roost("session", "promote", sid, env={"ROOST_CRASH_AT": "promote:leased"})
    assert r.code == -9
    assert (bb.state / "images" / "bb" / "writer.json").exists()  # the lease is there ...
    writer = [lk for lk in bb.roost("locks", "--json").json() if lk["lock"] == "writer.bb"]
    assert [lk["stale"] for lk in writer] == [True]  # ... shown as stale ...
    check = bb.roost("doctor", "--check")
    assert check.code != 0 and f"interrupted promote of {sid}" in check.out + check.err
    m = bb.begin("bb", "--maintenance")  # ... and blocking nothing, even before recover
    bb.ok("session", "end", m)
    assert bb.sh(sid, "echo usable").out == "usable\n"
    bb.ok("session", "promote", sid)  # the session itself can be promoted again
    bb.ok("session", "recover", "--all")
    assert not (bb.state / "images" / "bb" / "writer.json").exists()
    consistent(bb)


# --- invariant 3 --------------------------------------------------------------------------


def test_invariant_3_removal_never_crosses_a_mount(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "file").write_text("x")
    host = tmp_path / "host"
    host.mkdir()
    (host / "canary").write_text("alive\n")
    subprocess.run(["mount", "--bind", str(host), str(tree / "a" / "b")], check=True)
    try:
        with pytest.raises(SystemFailure, match="mounted below"):
            remove_tree(str(tree))
        assert (host / "canary").read_text() == "alive\n"
        assert (tree / "a" / "file").exists()  # refused before deleting anything
    finally:
        subprocess.run(["umount", str(tree / "a" / "b")], check=True)
    remove_tree(str(tree))
    assert not tree.exists()
    assert (host / "canary").read_text() == "alive\n"


def test_invariant_3_end_never_deletes_through_a_bind_mount(env: Env, busybox_tree: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "canary").write_text("alive\n")
    (env.profiles / "canary.yaml").write_text(f"mounts:\n  - {{type: bind, source: {shared}, target: /srv/shared}}\n")
    env.ok("image", "create", "c", "--from-dir", str(busybox_tree), "--profile", "canary")
    for force in (False, True):
        sid = env.begin("c")
        assert env.sh(sid, "cat /srv/shared/canary").out == "alive\n"
        # a host process keeps the bind mount busy
        holder = subprocess.Popen(["sleep", "1000"], cwd=env.run / "mnt" / sid / "root" / "srv" / "shared")
        try:
            args = ("session", "end", sid) + (("--force",) if force else ())
            r = env.roost(*args)
            if force:
                assert r.code == 0, r.err
                assert env.roost("session", "list", "--json").json() == []
            else:
                assert r.code == 3 and "busy" in r.err and str(holder.pid) in r.err
                assert env.roost("session", "list", "--json").json()[0]["id"] == sid
        finally:
            holder.kill()
            holder.wait()
        if not force:
            env.ok("session", "end", sid)  # still endable
        assert (shared / "canary").read_text() == "alive\n"
    assert mounts_under(env.run / "mnt") == []
    consistent(env)


# --- invariant 5 (locks) is in test_locks.py; 6 (bad input) in test_images.py; 7 in test_sessions.py


def test_headless_and_hot_paths_never_import_textual(bb: Env) -> None:
    sid = bb.begin()
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['roost'] + sys.argv[1:]\n"
        "import atexit\n"
        "atexit.register(lambda: print('TEXTUAL' if 'textual' in sys.modules else 'clean', file=sys.stderr))\n"
        "from roost.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    for args in (["session", "begin", "bb"], ["--headless", "session", "list"], ["--headless", "image", "list"]):
        r = subprocess.run(
            [sys.executable, "-c", probe, *args], env=bb.environ, capture_output=True, text=True, cwd="/"
        )
        assert r.stderr.strip().endswith("clean"), (args, r.stderr)
    # session run execs the command; what it imported before is what its process ran with
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "roost", "session", "run", sid, "--", "/bin/true"],
        env=bb.environ,
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert r.returncode == 0
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    for heavy in ("textual", "yaml", "json", "argparse", "core.engine", "subprocess", "typing", "dataclasses"):
        assert heavy not in imported, f"session run imported {heavy}"
    # begin and end load the engine, but nothing heavy (parsed YAML comes from the cache)
    for args in (["session", "begin", "bb"], ["session", "end", "SID"]):
        args = [sid if a == "SID" else a for a in args]
        r = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "roost", *args],
            env=bb.environ,
            capture_output=True,
            text=True,
            cwd="/",
        )
        assert r.returncode == 0, r.stderr
        imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}
        heavy = {"textual", "yaml", "json", "argparse", "typing", "dataclasses", "socket", "enum", "subprocess", "re"}
        assert not heavy & imported, f"{args[:2]} imported {heavy & imported}"
        if args[1] == "begin":
            sid = r.stdout.strip()
    for s in bb.roost("session", "list", "--json").json():
        bb.ok("session", "end", s["id"])
    time.sleep(0)
