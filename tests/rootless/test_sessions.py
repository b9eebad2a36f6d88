"""Rootless sessions, run by a real unprivileged user: life cycle, promote, a killed holder and recover.

Every test also checks (in the ``rl`` fixture) that the host's mount table,
process table and the places the user could write to show nothing of it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.support.mounts import mount_table
from tests.support.rootless import ROOST, Rootless, members, running


def sessions_mounted_at(rl: Rootless) -> list[str]:
    """Session directories in the runtime root's mnt/ (its .stage scratch directory is the store's own)."""
    return [name for name in os.listdir(rl.run_root / "mnt") if name != ".stage"]


def holder_pid(rl: Rootless, sid: str) -> int:
    pid, _start = rl.session(sid)["holder"]
    return int(pid)


def test_life_cycle_begin_run_enter_end_leaves_nothing(rl_bb: Rootless) -> None:
    rl = rl_bb
    sid = rl.begin()
    s = rl.session(sid)
    assert s["state"] == "mounted" and s["kind"] == "ordinary" and s["processes"] == 0
    pid = holder_pid(rl, sid)
    with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
        assert f.read().strip() == "roost-holder"
    assert os.stat(f"/proc/{pid}").st_uid == rl.user.subuid  # root of the namespace: the first subordinate id
    # the session is mounted in the holder's mount namespace, and nowhere in the host's
    inside = {m.target: m for m in mount_table(pid)}
    for sub in ("", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm"):
        assert f"{s['mountpoint']}{sub}" in inside
    assert "userxattr" in inside[s["mountpoint"]].options
    assert rl.host_mounts() == []
    assert os.listdir(s["mountpoint"]) == []  # the host sees an empty directory

    # run: the caller's own ids inside, exit codes and signals passed through
    r = rl.sh(sid, "id -u; id -g; cat /proc/self/uid_map | wc -l; echo $ROOST_SESSION_ID")
    assert r.code == 0, r.err
    assert r.out.split() == [str(rl.user.uid), str(rl.user.gid), "3", sid]
    assert rl.sh(sid, "exit 7").code == 7
    assert rl.sh(sid, "kill -TERM $$").code == -signal.SIGTERM
    r = rl.roost(
        "session",
        "run",
        sid,
        "-u",
        "root",
        "--",
        "/bin/sh",
        "-c",
        "id -u; echo data > /root/made-by-root; ps -o pid,comm",
    )
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "0"
    assert any(line.split() == ["1", "roost-holder"] for line in lines)  # pid 1 of the session is its holder
    # root-owned files inside are owned by the first subordinate id on disk
    made = rl.state / "sessions" / sid / "upper" / "root" / "made-by-root"
    assert os.stat(made).st_uid == rl.user.subuid and os.stat(made).st_gid == rl.user.subgid
    # the user's own files keep the user's ids on disk (keep-id)
    r = rl.roost(
        "session", "run", sid, "-u", "root", "--", "/bin/sh", "-c", f"mkdir /work && chown {rl.user.uid} /work"
    )
    assert r.code == 0, r.err
    assert rl.sh(sid, "echo mine > /work/mine").code == 0
    mine = rl.state / "sessions" / sid / "upper" / "work" / "mine"
    assert (os.stat(mine).st_uid, os.stat(mine).st_gid) == (rl.user.uid, rl.user.gid)

    # the holder, pid 1 of the session, takes no signal from inside it
    script = "kill -INT 1; kill -TERM 1; kill -HUP 1; (sleep 0.1 &); sleep 0.5; echo sent"  # an orphan wakes it
    r = rl.roost("session", "run", sid, "-u", "root", "--", "/bin/sh", "-c", script)
    assert r.out == "sent\n", r.err
    assert running(pid) and rl.session(sid)["state"] == "mounted"

    # enter, non-interactively: a login shell that reads its commands from stdin
    r = rl.roost("session", "enter", sid, input="echo in-$ROOST_IMAGE; pwd; exit 3\n")
    assert r.code == 3 and r.out.splitlines() == ["in-bb", str(rl.user.home)], r.err

    # a process left running is killed by end, with the holder
    r = rl.sh(sid, "sleep 600 >/dev/null 2>&1 & echo started")
    assert r.out == "started\n"
    assert rl.session(sid)["processes"] == 1
    rl.ok("session", "end", sid)
    assert not running(pid)
    assert rl.sessions() == []
    assert not (rl.state / "sessions" / sid).exists()
    assert not (rl.state / "sessions" / f"{sid}.json").exists()
    assert not (rl.run_root / "mnt" / sid).exists()
    assert not (rl.run_root / "locks" / f"session.{sid}.lock").exists()


def test_changes_stay_in_the_session_until_promoted(rl_bb: Rootless) -> None:
    rl = rl_bb
    sid = rl.begin("bb", "--maintenance")
    r = rl.roost(
        "session",
        "run",
        sid,
        "-u",
        "root",
        "--",
        "/bin/sh",
        "-c",
        "echo one > /etc/motd; rm /etc/hostname; mkdir -p /opt/x",
    )
    assert r.code == 0, r.err
    other = rl.begin()
    assert rl.sh(other, "cat /etc/motd").code != 0  # not in a sibling session
    assert rl.promote(sid, "-m", "motd") == 2
    history = rl.history("bb")
    assert history["current"] == 2
    assert [g["message"] for g in history["generations"]] == ["created from dir " + str(rl.base / "bbtree"), "motd"]
    assert history["generations"][1]["layers"] == 2  # stacked on generation 1
    # the new generation is the promoted upper, owned by the mapped ids, with a user.overlay whiteout
    layer = rl.state / "images" / "bb" / "generations" / "2" / "layer"
    assert os.stat(layer / "etc" / "motd").st_uid == rl.user.subuid
    hostname = os.lstat(layer / "etc" / "hostname")
    assert os.major(hostname.st_rdev) == 0 and os.minor(hostname.st_rdev) == 0  # a whiteout
    r = rl.roost("run", "bb", "--", "/bin/sh", "-c", "cat /etc/motd; test -e /etc/hostname || echo gone; ls /opt")
    assert r.code == 0 and r.out == "one\ngone\nx\n", r.err
    # compare-and-swap: the sibling was cloned from generation 1, which is no longer current
    r = rl.roost("session", "run", other, "-u", "root", "--", "/bin/sh", "-c", "echo two > /etc/motd")
    assert r.code == 0
    r = rl.roost("session", "promote", other)
    assert r.code == 3 and "not a fast-forward" in r.err
    assert rl.session(other)["state"] == "mounted"  # refused, changed nothing
    assert rl.sh(other, "cat /etc/motd").out == "two\n"
    rl.ok("session", "end", other)
    assert rl.sessions() == []


def test_killed_holder_then_recover_rebuilds_the_session_from_its_clone(rl_bb: Rootless) -> None:
    rl = rl_bb
    sid = rl.begin()
    assert rl.roost("session", "run", sid, "-u", "root", "--", "/bin/sh", "-c", "echo kept > /root/state").code == 0
    rl.sh(sid, "sleep 600 >/dev/null 2>&1 &")
    pid = holder_pid(rl, sid)
    assert rl.session(sid)["processes"] == 1
    session_procs = members(pid)
    assert len(session_procs) == 1
    os.kill(pid, signal.SIGKILL)  # as a reboot, or the OOM killer, would
    deadline = time.monotonic() + 10
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    # the kernel took everything in the session with its holder: processes and mounts
    assert not any(running(p) for p in session_procs)
    assert rl.session(sid)["state"] == "needs-recovery"
    assert rl.host_mounts() == []
    report = rl.recover()
    assert report == [f"remounted session {sid} (holder {holder_pid(rl, sid)})"]
    assert rl.session(sid)["state"] == "mounted"
    r = rl.roost("session", "run", sid, "-u", "root", "--", "/bin/sh", "-c", "cat /root/state")
    assert r.code == 0 and r.out == "kept\n", r.err
    # run recovers by itself too
    os.kill(holder_pid(rl, sid), signal.SIGKILL)
    time.sleep(0.2)
    r = rl.roost("session", "run", sid, "-u", "root", "--", "/bin/cat", "/root/state")
    assert r.code == 0 and r.out == "kept\n", r.err
    rl.ok("session", "end", sid)


def test_end_after_the_holder_died_removes_the_clone(rl_bb: Rootless) -> None:
    rl = rl_bb
    sid = rl.begin()
    assert (
        rl.roost(
            "session",
            "run",
            sid,
            "-u",
            "root",
            "--",
            "/bin/sh",
            "-c",
            "mkdir -p /var/deep/er && echo x > /var/deep/er/f",
        ).code
        == 0
    )
    os.kill(holder_pid(rl, sid), signal.SIGKILL)
    time.sleep(0.2)
    rl.ok("session", "end", sid)
    assert not (rl.state / "sessions" / sid).exists()
    assert rl.sessions() == []


def record(rl: Rootless, sid: str) -> dict[str, Any]:
    with open(rl.state / "sessions" / f"{sid}.json", encoding="utf-8") as f:
        return json.load(f)  # type: ignore[no-any-return]


def test_end_asks_the_holder_to_retire_and_nothing_inside_can_forge_that(rl_bb: Rootless) -> None:
    rl = rl_bb
    sid = rl.begin()
    assert record(rl, sid)["backend_data"]["retire"] == 1
    pid = holder_pid(rl, sid)
    # The retire signal from inside the session (root there, the holder's own uid) is not the owner's:
    # sent with kill(2) it carries a sender pid the holder can see; queued with sigqueue(3), an si_code
    # that is not SI_USER. Neither ends the session, however often.
    rtmin = int(signal.SIGRTMIN)
    r = rl.sh(sid, f"for i in 1 2 3 4 5; do kill -{rtmin} 1; done; echo sent", "-u", "root")
    assert r.out == "sent\n", r.err
    # rt_sigqueueinfo(2) with a siginfo of our own: si_code SI_QUEUE (-1), si_pid 0 as from outside
    number = {"x86_64": 129, "aarch64": 138}[os.uname().machine]
    forge = (
        "import ctypes, os, signal, struct\n"
        "from core.rootless import holder\n"
        f"holder.join(holder.HolderRef({pid}, {rl.session(sid)['holder'][1]}))\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "info = ctypes.create_string_buffer(struct.pack('iiixxxxiI', signal.SIGRTMIN, 0, -1, 0, 0), 128)\n"
        "child = os.fork()\n"  # in the session's pid namespace, as every process of the session
        "if child == 0:\n"
        "    for _ in range(20):\n"
        "        os.kill(1, signal.SIGRTMIN)\n"
        f"        assert libc.syscall({number}, 1, int(signal.SIGRTMIN), info) == 0, ctypes.get_errno()\n"
        "    os._exit(0)\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))\n"
    )
    r2 = subprocess.run(
        rl.command(sys.executable, "-c", forge), env=rl.environ, capture_output=True, text=True, cwd="/"
    )
    assert r2.returncode == 0 and r2.stdout == "0\n", r2.stderr
    time.sleep(0.2)
    assert running(pid) and rl.session(sid)["state"] == "mounted"
    assert rl.sh(sid, "echo still").out == "still\n"
    # A command still running through `session run` (joined from outside) and an orphan inside both go.
    waiting = subprocess.Popen(
        rl.command(*ROOST, "session", "run", sid, "--", "/bin/sh", "-c", "sleep 600 & sleep 600"),
        env=rl.environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
    )
    try:
        deadline = time.monotonic() + 30
        while rl.session(sid)["processes"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rl.session(sid)["processes"] >= 2
        rl.ok("session", "end", sid)
        assert waiting.wait(timeout=30) != 0
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert not running(pid)
    assert rl.sessions() == []
    assert not (rl.state / "sessions" / sid).exists()
    assert not (rl.run_root / "mnt" / sid).exists()


def test_end_of_a_session_whose_holder_predates_retiring(rl_bb: Rootless) -> None:
    """A record without ``retire`` (begun by an earlier roost): end kills the holder and removes the clone itself."""
    rl = rl_bb
    sid = rl.begin()
    path = rl.state / "sessions" / f"{sid}.json"
    data = record(rl, sid)
    del data["backend_data"]["retire"]
    with open(path, "w", encoding="utf-8") as f:  # the same file: its owner and mode stay the user's
        json.dump(data, f)
    pid = holder_pid(rl, sid)
    assert rl.sh(sid, "mkdir -p /var/deep && echo x > /var/deep/f; sleep 600 >/dev/null 2>&1 &", "-u", "root").code == 0
    rl.ok("session", "end", sid)
    assert not running(pid)
    assert rl.sessions() == []
    assert not (rl.state / "sessions" / sid).exists()


def test_what_a_retiring_holder_leaves_of_the_clone_end_removes(rl_bb: Rootless) -> None:
    """The holder fails half-way through removing the clone (made to, here): end removes the rest."""
    rl = rl_bb
    code = (
        "import os, sys\n"
        "from core import fsutil\n"
        "from core.rootless.engine import RootlessEngine\n"
        "real = fsutil.remove_tree\n"
        "def half(path):\n"
        "    if os.getpid() != 1:\n"
        "        return real(path)\n"
        "    real(os.path.join(path, 'upper', 'etc'))\n"  # pid 1 is the retiring holder: part of it, then fail
        f"    open({str(rl.base / 'holder-failed')!r}, 'w').close()\n"
        "    raise OSError(5, 'failed on purpose')\n"
        "fsutil.remove_tree = half\n"
        "e = RootlessEngine()\n"
        "s = e.begin('bb')\n"
        "print(s.id, s.clone, flush=True)\n"
        "e.end(s.id)\n"
        "print(os.path.lexists(s.clone))\n"
    )
    r = subprocess.run(
        rl.command(sys.executable, "-c", code), env=rl.environ, capture_output=True, text=True, cwd="/", timeout=120
    )
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()
    sid, _clone = first.split()
    assert second == "False"
    assert (rl.base / "holder-failed").exists()  # the holder did try, and failed half-way
    assert rl.sessions() == []
    assert not (rl.state / "sessions" / sid).exists()


def test_automatic_session_passes_the_exit_code_and_leaves_nothing(rl_bb: Rootless) -> None:
    rl = rl_bb
    r = rl.roost("run", "bb", "--", "/bin/sh", "-c", "echo $ROOST_IMAGE; exit 5")
    assert r.code == 5 and r.out == "bb\n"
    assert rl.sessions() == []
    assert os.listdir(rl.state / "sessions") == []
    assert sessions_mounted_at(rl) == []


@pytest.mark.parametrize("delay", [0.0, 0.003, 0.01, 0.03])
def test_a_killed_begin_leaves_nothing_after_recover(rl_bb: Rootless, delay: float) -> None:
    import subprocess

    from tests.support.rootless import ROOST

    rl = rl_bb
    # kill roost at some instant after its record appeared: while the holder is set up,
    # before it is confirmed, or after
    proc = subprocess.Popen(
        rl.command(*ROOST, "session", "begin", "bb", "--name", "killed"),
        env=rl.environ,
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (rl.state / "sessions" / "killed.json").exists():
        time.sleep(0.0005)
    time.sleep(delay)
    proc.kill()
    proc.wait()
    # a holder that was never confirmed exits by itself; recover finishes or undoes the rest
    rl.recover()
    left = rl.sessions()
    assert left == [] or [s["state"] for s in left] == ["mounted"]
    if left:
        assert rl.sh("killed", "echo alive").out == "alive\n"
        rl.ok("session", "end", "killed")
    assert rl.sessions() == []
    assert os.listdir(rl.state / "sessions") == []
    assert sessions_mounted_at(rl) == []


def test_errors_are_one_line_with_their_codes(rl_bb: Rootless) -> None:
    rl = rl_bb
    r = rl.roost("session", "begin", "nope")
    assert r.code == 4 and r.err == "roost: no image 'nope'\n"
    r = rl.roost("session", "begin", "bb", "--name", "bad/name")
    assert r.code == 2 and len(r.err.splitlines()) == 1
    sid = rl.begin("bb", "--name", "twice")
    r = rl.roost("session", "begin", "bb", "--name", "twice")
    assert r.code == 3 and "already exists" in r.err
    r = rl.roost("session", "run", sid, "-u", "nobody-such", "--", "true")
    assert r.code == 4
    rl.ok("session", "end", sid)
    r = rl.roost("session", "end", sid)
    assert r.code == 4


def test_enter_on_a_terminal_hands_ctrl_c_to_the_command_not_the_shell(rl_bb: Rootless) -> None:
    import pty
    import select

    from tests.support.rootless import ROOST

    rl = rl_bb
    sid = rl.begin()
    pid, fd = pty.fork()
    if pid == 0:  # the child becomes the user, as setpriv would, and runs roost on the terminal
        try:
            os.setgroups([])
            os.setgid(rl.user.gid)
            os.setuid(rl.user.uid)
            os.execve(ROOST[0], [*ROOST, "session", "enter", sid], {**rl.environ, "TERM": "dumb"})
        finally:
            os._exit(127)
    out = b""

    def read_until(needle: bytes, timeout: float = 20) -> None:
        nonlocal out
        deadline = time.monotonic() + timeout
        while needle not in out and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    return

    try:
        os.write(fd, b"echo ready-$ROOST_IMAGE; sleep 600\n")
        read_until(b"ready-bb")
        time.sleep(0.3)
        os.write(fd, b"\x03")  # ctrl+c: the terminal signals its foreground group, the sleep dies
        os.write(fd, b"echo still-here; exit 4\n")
        read_until(b"still-here\r\n")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert b"still-here" in out, out
    assert os.waitstatus_to_exitcode(status) == 4
    assert rl.session(sid)["processes"] == 0
    rl.ok("session", "end", sid)


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.06, 0.12, 0.2, 0.3])
def test_a_killed_promote_is_finished_or_undone_by_recover(rl_bb: Rootless, delay: float) -> None:
    import subprocess

    from tests.support.rootless import ROOST

    rl = rl_bb
    sid = rl.begin("bb", "--maintenance")
    assert rl.roost("session", "run", sid, "-u", "root", "--", "/bin/sh", "-c", "echo promoted > /etc/change").code == 0
    record = rl.state / "sessions" / f"{sid}.json"
    proc = subprocess.Popen(
        rl.command(*ROOST, "session", "promote", sid),
        env=rl.environ,
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if b'"promoting"' in record.read_bytes():
                break
        except FileNotFoundError:
            break
        time.sleep(0.0005)
    time.sleep(delay)
    proc.kill()
    proc.wait()
    rl.recover()
    history = rl.history("bb")
    left = rl.sessions()
    if history["current"] == 2:  # rolled forward: the session is gone, its change is the image's
        assert left == []
    else:  # undone: the image is as it was, the session keeps its change and works
        assert history["current"] == 1 and [g["generation"] for g in history["generations"]] == [1]
        assert [s["state"] for s in left] == ["mounted"]
        assert rl.sh(sid, "cat /etc/change").out == "promoted\n"
        rl.promote(sid)
    r = rl.roost("run", "bb", "--", "/bin/cat", "/etc/change")
    assert r.out == "promoted\n", r.err
    assert rl.sessions() == []
    assert os.listdir(rl.state / "images" / "bb" / "staging") == []


CRASH_POINTS = [
    "begin:recorded",
    "begin:cloned",
    "begin:mounted",
    "begin:profiled",
    "end:marked",
    "end:removed",
    "promote:leased",
    "promote:marked",
    "promote:staged",
    "promote:committed",
    "promote:renamed",
    "promote:switched",
]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_points_are_recovered(rl_bb: Rootless, point: str) -> None:
    """roost killed at each step (SIGKILL at a crash point): recover finishes or undoes it, nothing leaks."""
    rl = rl_bb
    operation = point.split(":")[0]
    crash = {"ROOST_CRASH_AT": point}
    sid = "victim"
    if operation == "begin":
        r = rl.roost("session", "begin", "bb", "--name", sid, env=crash)
        assert r.code == -9, r.err
    else:
        rl.begin("bb", "--name", sid)
        script = "echo changed > /etc/change"
        assert rl.roost("session", "run", sid, "-u", "root", "--", "/bin/sh", "-c", script).code == 0
        r = rl.roost("session", operation, sid, env=crash)
        assert r.code == -9, r.err
    rl.recover()
    left = rl.sessions()
    history = rl.history("bb")
    if operation == "promote":
        if history["current"] == 2:
            assert left == []  # rolled forward
        else:
            assert [s["state"] for s in left] == ["mounted"]  # undone, changes kept
            assert rl.sh(sid, "cat /etc/change").out == "changed\n"
            rl.promote(sid)
        assert rl.roost("run", "bb", "--", "/bin/cat", "/etc/change").out == "changed\n"
    elif operation == "begin":
        assert left == [] or [s["state"] for s in left] == ["mounted"]
        if left:
            assert rl.sh(sid, "echo up").out == "up\n"
    else:
        assert left == []
    for s in rl.sessions():
        rl.ok("session", "end", s["id"])
    rl.recover()
    assert os.listdir(rl.state / "sessions") == []
    assert sessions_mounted_at(rl) == []
    staging = rl.state / "images" / "bb" / "staging"
    assert not staging.exists() or os.listdir(staging) == []
    assert not (rl.state / "images" / "bb" / "writer.json").exists()
    assert [p for p in os.listdir(rl.run_root / "locks") if not p.startswith("image.")] == []


def test_parallel_automatic_sessions_all_succeed_and_leave_nothing(rl_bb: Rootless) -> None:
    import subprocess

    from tests.support.rootless import ROOST

    rl = rl_bb
    procs = [
        subprocess.Popen(
            rl.command(*ROOST, "run", "bb", "--", "/bin/sh", "-c", f"echo {i}; exit {i}"),
            env=rl.environ,
            cwd="/",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(8)
    ]
    results = [(p.wait(timeout=300), p.stdout.read() if p.stdout else b"", p.stderr) for p in procs]
    for p in procs:
        for stream in (p.stdout, p.stderr):
            if stream is not None:
                stream.close()
    assert [(code, out) for code, out, _ in results] == [(i, f"{i}\n".encode()) for i in range(8)]
    assert rl.sessions() == []
    assert os.listdir(rl.state / "sessions") == []
    assert sessions_mounted_at(rl) == []


def test_a_deep_stack_is_flattened_inside_the_namespace(rl_bb: Rootless) -> None:
    rl = rl_bb
    image_yaml = rl.state / "images" / "bb" / "image.yaml"
    rl.as_user("sh", "-c", f"echo 'overlay-max-depth: 2' >> {image_yaml}")
    for n, script in ((2, "echo one > /etc/one; rm /etc/hostname"), (3, "echo two > /etc/two; rm /etc/one")):
        sid = rl.begin("bb", "--maintenance")
        assert rl.roost("session", "run", sid, "-u", "root", "--", "/bin/sh", "-c", script).code == 0
        assert rl.promote(sid) == n
    history = rl.history("bb")
    assert [g["layers"] for g in history["generations"]] == [1, 2, 1]  # the third is complete
    layer = rl.state / "images" / "bb" / "generations" / "3" / "layer"
    assert os.stat(layer / "etc" / "two").st_uid == rl.user.subuid
    assert not os.path.lexists(layer / "etc" / "one") and not os.path.lexists(layer / "etc" / "hostname")
    assert os.stat(layer / "bin" / "busybox").st_uid == rl.user.subuid  # merged in, owners kept
    r = rl.roost("run", "bb", "--", "/bin/sh", "-c", "cat /etc/two; ls /etc/one /etc/hostname 2>&1 | wc -l")
    assert r.out == "two\n2\n", r.err


def test_the_host_users_merged_into_a_session_are_never_promoted(rl_bb: Rootless) -> None:
    rl = rl_bb
    sid = rl.begin()  # an ordinary session: the host's users and groups are merged into its databases
    r = rl.sh(sid, "grep -c '^" + rl.user.name + ":' /etc/passwd")
    assert r.out == "1\n", r.err
    add = "echo 'builder:x:2000:2000::/build:/bin/sh' >> /etc/passwd"
    r = rl.roost("session", "run", sid, "-u", "root", "--", "/bin/sh", "-c", add)
    assert r.code == 0, r.err
    rl.promote(sid)
    passwd = (rl.state / "images" / "bb" / "generations" / "2" / "layer" / "etc" / "passwd").read_text()
    assert rl.user.name not in passwd and "root:x:0:0" in passwd and "builder:x:2000" in passwd
