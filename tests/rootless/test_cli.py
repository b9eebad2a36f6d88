"""roost's command line in user mode: the mode, its refusals, and the image commands on a user's own state."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.env import REPO
from tests.support.rootless import ROOST, Rootless


def test_a_user_asking_for_the_system_mode_or_both_modes_is_refused_with_one_line(rl: Rootless) -> None:
    for args, message in (
        (["--system", "image", "list"], "roost: --system needs root"),
        (["--system", "session", "run", "s1", "--", "true"], "roost: --system needs root"),
        (["--system", "--user", "image", "list"], "roost: --system and --user contradict each other"),
    ):
        r = rl.roost(*args)
        assert r.code == 2 and len(r.err.splitlines()) == 1 and r.err.startswith(message), (args, r.err)
    assert not rl.state.exists()  # refused before anything was made
    # --user is what the user gets anyway
    assert json.loads(rl.ok("--user", "--json", "image", "list")) == []


def test_root_asking_for_the_user_mode_is_refused(tmp_path: object) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "ROOST_ROOT": f"{tmp_path}/state"}
    r = subprocess.run(
        [sys.executable, "-m", "roost", "--user", "--headless", "image", "list"],
        env=env,
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert r.returncode == 2 and r.stderr == (
        "roost: --user is for ordinary users: root's images and sessions are the system's\n"
    )
    assert not os.path.exists(f"{tmp_path}/state")


def test_a_state_root_of_someone_else_is_refused(rl: Rootless) -> None:
    theirs = rl.base / "theirs"  # made by the suite, as root: not the user's
    theirs.mkdir(mode=0o755)
    r = rl.roost("session", "begin", "bb", env={"ROOST_ROOT": str(theirs)})
    assert r.code == 2 and len(r.err.splitlines()) == 1 and "belongs to uid 0, not to you" in r.err, r.err
    # session run's fast path reads no record there either: the full path refuses with the same line
    (theirs / "sessions").mkdir()
    (theirs / "sessions" / "s1.json").write_text('{"id": "s1", "state": "active"}')
    r = rl.roost("session", "run", "s1", "--", "true", env={"ROOST_ROOT": str(theirs)})
    assert r.code == 2 and len(r.err.splitlines()) == 1 and "belongs to uid 0, not to you" in r.err, r.err
    assert sorted(os.listdir(theirs)) == ["sessions"]
    other = rl.base / "other"
    other.mkdir(mode=0o777)  # anyone may write there: the user's roots may not be below it
    os.chmod(other, 0o777)
    r = rl.roost("image", "create", "x", "--from-dir", "/nonexistent", env={"ROOST_ROOT": f"{other}/roost"})
    assert r.code != 0 and len(r.err.splitlines()) == 1, r.err
    assert os.listdir(other) == []


def test_what_rootless_mode_cannot_do_is_refused_with_one_line(rl_bb: Rootless) -> None:
    rl = rl_bb
    tree = str(rl.base / "bbtree")
    for args, code, message in (
        (["image", "create", "d", "--backend", "dir", "--from-dir", tree], 2, "overlay backend only"),
        (["session", "begin", "bb", "--network", "none"], 2, "--network is not available for rootless sessions"),
        (["image", "convert", "bb", "--backend", "dir"], 2, "image convert is not available in rootless mode"),
    ):
        r = rl.roost(*args)
        assert r.code == code and len(r.err.splitlines()) == 1 and message in r.err, (args, r.err)
    assert rl.sessions() == []
    assert json.loads(rl.ok("--json", "image", "list"))[0]["name"] == "bb"


def test_images_list_info_history_rollback_and_gc(rl_bb: Rootless) -> None:
    rl = rl_bb
    for n in (2, 3):
        sid = rl.begin("bb", "--maintenance")
        assert rl.sh(sid, f"echo {n} > /etc/gen", "-u", "root").code == 0
        assert rl.promote(sid, "-m", f"gen {n}") == n
    (image,) = json.loads(rl.ok("--json", "image", "list"))
    assert (image["name"], image["backend"], image["current"], image["sessions"]) == ("bb", "overlay", 3, 0)
    info = json.loads(rl.ok("--json", "image", "info", "bb"))
    assert info["current"] == 3
    assert [g["message"] for g in rl.history()["generations"]][1:] == ["gen 2", "gen 3"]
    rl.ok("image", "rollback", "bb", "2")
    assert rl.history()["current"] == 2
    r = rl.roost("run", "bb", "--", "/bin/cat", "/etc/gen")
    assert r.out == "2\n", r.err
    rl.ok("image", "rollback", "bb", "1")
    sid = rl.begin("bb", "--maintenance")
    assert rl.sh(sid, "echo 4 > /etc/gen", "-u", "root").code == 0
    assert rl.promote(sid) == 4
    # gc: generation 4 stands on 1 alone; 2 and 3 go, removed inside the user's namespace
    out = json.loads(rl.ok("--json", "image", "gc", "bb", "--keep", "1"))
    assert out[0]["removed"] == [2, 3], out
    assert [g["generation"] for g in rl.history()["generations"]] == [1, 4]
    assert os.listdir(rl.state / "images" / "bb" / "trash") == []
    assert rl.roost("run", "bb", "--", "/bin/cat", "/etc/gen").out == "4\n"
    r = rl.roost("--json", "session", "list")
    assert json.loads(r.out) == []


def test_session_run_takes_the_fast_path_and_the_full_path_alike(rl_bb: Rootless) -> None:
    rl = rl_bb
    sid = rl.begin()
    # the plain form (fast path: no engine) and a form only argparse reads (the full path)
    assert rl.roost("session", "run", sid, "--", "/bin/sh", "-c", "exit 9").code == 9
    assert rl.roost("--user", "session", "run", "--user", "root", sid, "--", "/bin/sh", "-c", "id -u").out == "0\n"
    script = "echo $MARK"
    r = rl.roost("session", "run", "--preserve-environment", sid, "--", "/bin/sh", "-c", script, env={"MARK": "m"})
    assert r.out == "m\n", r.err
    info = rl.session(sid)
    assert info["rootless"] is True and info["state"] == "mounted" and info["processes"] == 0
    rl.ok("session", "end", sid)
    r = rl.roost("session", "run", sid, "--", "true")
    assert r.code == 4 and len(r.err.splitlines()) == 1, r.err


def test_roost_picks_the_user_mode_without_being_told(rl_bb: Rootless) -> None:
    rl = rl_bb
    proc = subprocess.run(rl.command(*ROOST, "--json", "image", "list"), env=rl.environ, capture_output=True, text=True)
    assert proc.returncode == 0 and [i["name"] for i in json.loads(proc.stdout)] == ["bb"]


def test_doctor_reports_overlay_as_the_one_backend_and_no_problem(rl: Rootless) -> None:
    out = json.loads(rl.ok("--json", "doctor"))
    available = [b["name"] for b in out["backends"] if b["available"]]
    assert available == ["overlay"] and out["default"] == "overlay"
    assert {b["why"] for b in out["backends"] if not b["available"]} == {"not in rootless mode"}
    assert out["problems"] == []
    assert not rl.state.exists()  # doctor makes nothing


def test_the_user_unit_brings_sessions_back_after_their_holders_died(rl_bb: Rootless) -> None:
    import signal
    import time

    from tests.support.rootless import running

    unit = (REPO / "etc" / "systemd" / "user" / "roost-recover.service").read_text()
    (exec_start,) = [line.partition("=")[2] for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = exec_start.split()
    assert argv[0] == "%h/.local/roost/bin/roost" and "WantedBy=default.target" in unit.splitlines()
    rl = rl_bb
    sid = rl.begin()
    assert rl.sh(sid, "echo kept > /root/work", "-u", "root").code == 0
    pid = int(rl.session(sid)["holder"][0])
    os.kill(pid, signal.SIGKILL)  # as a reboot does
    deadline = time.monotonic() + 10
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc = subprocess.run(
        rl.command(sys.executable, "-m", "roost", *argv[1:]), env=rl.environ, capture_output=True, text=True, cwd="/"
    )
    assert proc.returncode == 0 and f"remounted session {sid}" in proc.stdout, proc.stderr
    assert rl.roost("session", "run", sid, "-u", "root", "--", "/bin/cat", "/root/work").out == "kept\n"
    rl.ok("session", "end", sid)
