"""The invariants of DESIGN.md §4, each proven against real mounts and real processes."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.errors import SystemFailure
from core.faults import POINTS
from core.fsutil import remove_tree
from tests.support import stats
from tests.support.checks import consistent
from tests.support.env import REPO, Env, procs_below
from tests.support.images import promote_version, set_config, snapshot
from tests.support.mounts import mounts_naming, mounts_under

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


# --- invariant 4 --------------------------------------------------------------------------


def test_invariant_4_gc_keeps_current_recent_in_use_and_their_layers(bb: Env) -> None:
    holder = bb.begin()  # holds generation 1
    for n in range(2, 7):
        promote_version(bb, n)  # 2..6, each a layer on the one before
    bb.ok("image", "rollback", "bb", "3")
    for n in (7, 8):
        promote_version(bb, n)  # 7 on 3, 8 on 7: 4, 5 and 6 are now a dead branch
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
    promote_version(bb, 9)
    assert bb.roost("image", "gc", "bb", "--keep", "0").code == 2


def test_invariant_4_gc_never_removes_a_generation_a_session_uses(bb: Env) -> None:
    promote_version(bb, 2)
    bb.ok("image", "rollback", "bb", "1")
    holder = bb.begin()  # on 1
    promote_version(bb, 3)  # 3 on 1: generation 2 is a dead branch ...
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


def test_invariant_4_a_session_record_and_retention_protect_generations_across_a_reboot_and_a_killed_gc(
    bb: Env,
) -> None:
    """Retention from image.yaml, a session whose mounts a reboot took (only its record names its
    generation), and a gc killed after trashing: only the generation nothing protects goes."""
    set_config(bb, "bb", retention=1)
    promote_version(bb, 2)
    promote_version(bb, 3)  # generation 3 on 2 on 1
    bb.ok("image", "rollback", "bb", "1")
    promote_version(bb, 4)  # generation 4 on 1
    bb.ok("image", "rollback", "bb", "1")
    promote_version(bb, 5)  # generation 5 on 1: current, and the last one (retention 1)
    bb.ok("image", "rollback", "bb", "3")
    sid = bb.begin()  # on generation 3, which stands on 2
    bb.ok("image", "rollback", "bb", "5")
    assert bb.sh(sid, "cat /etc/version").out == "3\n"
    for target in reversed(mounts_under(bb.run / "mnt" / sid)):  # a reboot took its mounts
        subprocess.run(["umount", target], check=True)
    states = {s["id"]: (s["state"], s["generation"]) for s in bb.roost("session", "list", "--json").json()}
    assert states == {sid: ("needs-recovery", 3)}
    dry = bb.roost("image", "gc", "bb", "--dry-run", "--json").json()[0]
    assert dry["removed"] == [4] and dry["kept"] == [1, 2, 3, 5]
    r = bb.roost("image", "gc", "bb", env={"ROOST_CRASH_AT": "gc:trashed"})
    assert r.code == -9, r
    stats.bump("operations killed")
    bb.ok("session", "recover", "--all")
    consistent(bb)
    history = {g["generation"]: g["current"] for g in bb.roost("image", "history", "bb", "--json").json()}
    assert history == {1: False, 2: False, 3: False, 5: True}
    assert bb.sh(sid, "cat /etc/version").out == "3\n"  # recover remounted it from its own generation
    new = bb.begin()
    assert bb.sh(new, "cat /etc/version").out == "5\n"
    bb.ok("session", "end", new)
    bb.ok("session", "end", sid)
    assert bb.roost("image", "gc", "bb", "--json").json()[0]["removed"] == [2, 3]  # nothing holds them now
    assert [g["generation"] for g in bb.roost("image", "history", "bb", "--json").json()] == [1, 5]
    assert sorted(os.listdir(bb.state / "images" / "bb" / "generations")) == ["1", "1.yaml", "5", "5.yaml"]
    bb.ok("image", "rollback", "bb", "1")
    promote_version(bb, 6)  # generation 6 on 1: the last one
    bb.ok("image", "rollback", "bb", "5")  # 5: current, and nothing else protects it
    assert bb.roost("image", "gc", "bb", "--json").json()[0]["removed"] == []
    bb.ok("image", "rollback", "bb", "6")
    assert bb.roost("image", "gc", "bb", "--json").json()[0]["removed"] == [5]
    consistent(bb)


# --- invariant 5 --------------------------------------------------------------------------


def test_invariant_5_locks_shows_the_holder_and_a_dead_holder_is_stale_and_blocks_nothing(bb: Env) -> None:
    lock_dir = bb.run / "locks"
    code = (
        f"import sys, time; sys.path.insert(0, {str(REPO)!r})\n"
        "from core.actor import Actor\nfrom core.locks import Lock\n"
        f"Lock({str(lock_dir)!r}, 'image.bb', Actor.current()).acquire('promote bb-x')\n"
        "print('held', flush=True); time.sleep(1000)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    live = [s for s in bb.roost("locks", "--json").json() if s["lock"] == "image.bb"]
    assert live == [
        {
            "lock": "image.bb",
            "pid": child.pid,
            "user": "root",
            "operation": "promote bb-x",
            "since": live[0]["since"],
            "stale": False,
            "mode": "exclusive",
        }
    ]
    child.kill()
    child.wait()
    stale = [s for s in bb.roost("locks", "--json").json() if s["lock"] == "image.bb"]
    assert stale[0]["stale"] is True
    sid = bb.begin()  # a stale holder never blocks
    bb.ok("session", "end", sid)


@pytest.mark.parametrize("op,step", [("promote", "staged"), ("gc", "trashed"), ("rollback", "switched")])
def test_invariant_5_an_operation_killed_holding_its_locks_leaves_visible_stale_holders_that_block_nothing(
    bb: Env, op: str, step: str
) -> None:
    promote_version(bb, 2)
    bb.ok("image", "rollback", "bb", "1")
    promote_version(bb, 3)  # 3 on 1: generation 2 is a dead branch gc may take
    if op == "promote":
        argv: tuple[str, ...] = ("session", "promote", bb.begin("bb", "--maintenance"))
    else:
        argv = {"gc": ("image", "gc", "bb", "--keep", "1"), "rollback": ("image", "rollback", "bb", "1")}[op]
    # a lock that blocked would now fail within a second (exit 3) instead of waiting
    bb.config.write_text("# test configuration\nend-grace: 2\nlock-timeout: 1\n")
    before = bb.roost("locks", "--json").json()  # a maintenance session's writer lease, held by the session
    assert all(lk["mode"] == "lease" and not lk["stale"] for lk in before), before
    r = bb.roost(*argv, env={"ROOST_CRASH_AT": f"{op}:{step}"})
    assert r.code == -9, r
    stats.bump("operations killed")
    held = bb.roost("locks", "--json").json()
    left = [lk for lk in held if lk not in before]  # what the killed process held
    assert left, held
    for lk in left:
        assert lk["user"] == "root" and op in lk["operation"] and lk["since"] and lk["mode"] != "waiting", lk
    pids = {lk["pid"] for lk in left if lk["mode"] != "lease"}  # a lease's holder is a session, not a process
    assert len(pids) == 1 and isinstance(next(iter(pids)), int), left
    assert not os.path.exists(f"/proc/{next(iter(pids))}")
    assert all(lk["stale"] for lk in left if lk["mode"] != "lease"), left  # the kernel released them: stale
    # before any recover, the dead holder blocks neither the image lock (shared or exclusive) nor
    # its own session and transaction locks, which recover takes
    sid = bb.begin()
    assert bb.sh(sid, "echo usable").out == "usable\n"
    bb.ok("session", "end", sid)
    assert bb.roost("image", "gc", "bb", "--keep", "10", "--json").code == 0
    bb.ok("session", "recover", "--all")
    for s in bb.roost("session", "list", "--json").json():
        bb.ok("session", "end", s["id"])
    consistent(bb)


# --- invariant 6 --------------------------------------------------------------------------


def test_invariant_6_bad_input_is_one_line_exit_2_and_changes_nothing(bb: Env, busybox_tree: Path) -> None:
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


def test_invariant_6_malformed_image_config_is_one_line_and_changes_nothing(bb: Env) -> None:
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


VALID_NAMES = ["a", "Z", "7", "a" * 64, "A0_.+-z", "x.y+z-1_2"]
INVALID_NAMES = ["", "a" * 65, ".a", "-a", "_a", "+a", "a/b", "a b", "a:b", "a@b", "é", "a\nb", ".."]


def test_invariant_6_names_match_exactly_the_documented_pattern(bb: Env, busybox_tree: Path) -> None:
    pattern = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$"  # DESIGN.md §4, invariant 6
    assert all(re.fullmatch(pattern, n) for n in VALID_NAMES)
    assert not any(re.fullmatch(pattern, n) for n in INVALID_NAMES)
    for name in VALID_NAMES:  # every name the pattern allows is taken, by sessions and images alike
        assert bb.begin("bb", f"--name={name}") == name
        assert bb.sh(name, "echo $ROOST_SESSION_ID").out == f"{name}\n"
        bb.ok("session", "end", name)
    for name in ("a" * 64, "A0_.+-z"):
        bb.ok("image", "create", name, "--from-dir", str(busybox_tree))
        assert bb.roost("--json", "image", "info", name).json()["generations"] == 1
    before = snapshot(bb.state)
    for name in INVALID_NAMES:
        for argv in (
            ("session", "begin", "bb", f"--name={name}"),
            ("image", "create", name, "--from-dir", str(busybox_tree)),
        ):
            r = bb.roost(*argv)
            assert r.code == 2, (argv, r)
            lines = r.err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("roost: ") and "Traceback" not in r.err, (argv, r.err)
    assert snapshot(bb.state) == before
    assert bb.roost("session", "list", "--json").json() == []


# --- invariant 7 --------------------------------------------------------------------------


def loops_backed_below(base: Path) -> list[str]:
    """Loop devices whose backing file is below *base* (as losetup sees them, not as roost does)."""
    listed = json.loads(subprocess.run(["losetup", "--json", "--list"], capture_output=True, text=True).stdout or "{}")
    return sorted(
        f"{d['name']} {d['back-file']}"
        for d in listed.get("loopdevices", [])
        if (d.get("back-file") or "").startswith(f"{base}/")
    )


def session_traces(env: Env, sid: str) -> dict[str, list[str]]:
    """Everything on the host that still names or holds session *sid*."""
    mnt = env.run / "mnt" / sid
    marker = f"ROOST_SESSION_ID={sid}".encode()
    procs = set(procs_below(str(mnt)))
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        procs.add(int(name))
            except OSError:
                continue
    paths = [
        os.path.join(dirpath, name)
        for root in (env.state, env.run)
        for dirpath, dirnames, filenames in os.walk(root)
        for name in dirnames + filenames
        if sid in name
    ]
    return {
        "mounts": mounts_naming(sid),
        "loop devices": loops_backed_below(env.base),
        "processes": [str(p) for p in sorted(procs)],
        "records and clones": sorted(paths),
    }


# the crash points of end are the engine's, the same for every backend: overlay runs them
@pytest.mark.parametrize(
    "backend,crash", [(b, None) for b in ("overlay", "dir", "squashfs")] + [("overlay", s) for s in POINTS["end"]]
)
def test_invariant_7_after_end_nothing_of_the_session_remains(
    env: Env, busybox_tree: Path, tmp_path: Path, backend: str, crash: str | None
) -> None:
    """A session with a bind mount from its profile, a background process that ignores SIGTERM and a
    detached one; after `end` (or an `end` killed at one of its steps, then `recover`) nothing names it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (env.profiles / "extra.yaml").write_text(f"mounts:\n  - {{type: bind, source: {shared}, target: /srv/shared}}\n")
    env.ok("image", "create", "i", "--from-dir", str(busybox_tree), "--backend", backend, "--profile", "extra")
    idle = loops_backed_below(env.base)  # what the image alone holds
    sid = env.begin("i")
    script = (
        "echo x > /srv/shared/f; trap '' TERM; (trap '' TERM; sleep 1000) >/dev/null 2>&1 &"
        " setsid sleep 1000 >/dev/null 2>&1 & echo ok"
    )
    assert env.sh(sid, script).out == "ok\n"
    alive = session_traces(env, sid)
    assert alive["mounts"] and alive["processes"] and alive["records and clones"], alive  # the probe sees a session
    if backend == "squashfs":
        assert alive["loop devices"] != idle, alive  # the generation's file is loop-mounted for the session
    if crash is None:
        env.ok("session", "end", sid)
    else:
        assert env.roost("session", "end", sid, env={"ROOST_CRASH_AT": f"end:{crash}"}).code == -9
        stats.bump("operations killed")
        env.ok("session", "recover", "--all")
        if env.roost("session", "list", "--json").json():  # killed before the end was recorded: end it again
            env.ok("session", "end", sid)
    gone = session_traces(env, sid)
    assert gone == {"mounts": [], "loop devices": idle, "processes": [], "records and clones": []}
    assert env.roost("session", "list", "--json").json() == []
    assert (shared / "f").read_text() == "x\n"  # the host's side of the bind mount is untouched
    consistent(env)


# --- not an invariant of §4, but a rule of the design (docs/design.md, "The hot path") ------


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
    # nor does an automatic session (it blocks signals through _signal, not the signal module)
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "roost", "run", "bb", "--", "/bin/true"],
        env=bb.environ,
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert r.returncode == 0, r.stderr
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    assert not heavy & imported, f"run IMAGE imported {heavy & imported}"
    assert "signal" not in imported
    for s in bb.roost("session", "list", "--json").json():
        bb.ok("session", "end", s["id"])
    time.sleep(0)
