"""Sessions through the real command line, on real overlay mounts of a busybox root."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.env import Env
from tests.support.mounts import mount_table, mounts_under


def test_begin_list_info_end_leaves_nothing(bb: Env) -> None:
    sid = bb.begin()
    assert sid.startswith("bb-")
    listed = bb.roost("session", "list", "--json").json()
    assert len(listed) == 1
    s = listed[0]
    assert {k: s[k] for k in ("id", "image", "generation", "kind", "owner", "state")} == {
        "id": sid,
        "image": "bb",
        "generation": 1,
        "kind": "ordinary",
        "owner": "root",
        "state": "mounted",
    }
    assert s["created"].endswith("Z")
    info = bb.roost("session", "info", sid, "--json").json()
    assert info["processes"] == 0 and info["mountpoint"] == str(bb.run / "mnt" / sid / "root")
    mnt = bb.run / "mnt" / sid / "root"
    targets = mounts_under(mnt)
    for sub in ("", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm"):
        assert str(mnt) + sub in targets
    bb.ok("session", "end", sid)
    # nothing of the session remains (invariant 7 in full: tests/test_invariants.py)
    assert mounts_under(mnt) == []
    assert not mnt.exists()
    assert not (bb.state / "sessions" / f"{sid}.json").exists()
    assert not (bb.state / "sessions" / sid).exists()
    assert not (bb.run / "locks" / f"session.{sid}.lock").exists()
    assert bb.roost("session", "list", "--json").json() == []


def test_named_session_and_duplicate_name(bb: Env) -> None:
    assert bb.begin("bb", "--name", "build-42") == "build-42"
    r = bb.roost("session", "begin", "bb", "--name", "build-42")
    assert r.code == 3 and "already exists" in r.err
    assert [s["id"] for s in bb.roost("session", "list", "--json").json()] == ["build-42"]
    bb.ok("session", "end", "build-42")


def test_run_passes_exit_codes_and_output(bb: Env) -> None:
    sid = bb.begin()
    assert bb.sh(sid, "exit 0").code == 0
    assert bb.sh(sid, "exit 7").code == 7
    # session run execs the command: a command killed by a signal kills roost with it,
    # so a shell sees 128+N exactly as if it had run the command itself
    assert bb.sh(sid, "kill -TERM $$").code == -signal.SIGTERM
    shell = subprocess.run(
        ["/bin/sh", "-c", f"{sys.executable} -m roost session run {sid} -- /bin/sh -c 'kill -TERM $$'; echo $?"],
        env=bb.environ,
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert shell.stdout == "143\n"
    r = bb.roost("session", "run", sid, "--", "no-such-command")
    assert r.code == 127 and "command not found" in r.err
    r = bb.sh(sid, "echo out; echo err >&2")
    assert (r.out, r.err) == ("out\n", "err\n")
    r = bb.roost("session", "run", sid, "--", "cat", input="piped\n")
    assert r.out == "piped\n"
    bb.ok("session", "end", sid)


def test_environment_is_cleared(bb: Env) -> None:
    sid = bb.begin()
    r = bb.sh(sid, "env | sort", env={"SECRET": "x", "TERM": "xterm-256color", "LANG": "C.UTF-8"})
    env = dict(line.split("=", 1) for line in r.out.splitlines())
    env.pop("PWD", None)
    env.pop("SHLVL", None)
    assert env == {
        "HOME": "/root",
        "LOGNAME": "root",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "SHELL": "/bin/sh",
        "TERM": "xterm-256color",
        "USER": "root",
        "LANG": "C.UTF-8",  # kept by the default profile
        "ROOST_SESSION_ID": sid,
        "ROOST_IMAGE": "bb",
    }
    r = bb.sh(sid, "echo $SECRET", "-p", env={"SECRET": "kept"})
    assert r.out == "kept\n"
    bb.ok("session", "end", sid)


def test_user_and_directory(bb: Env) -> None:
    sid = bb.begin()
    assert bb.sh(sid, "id -u; id -g; echo $HOME $USER", "-u", "nobody").out == "65534\n65534\n/nonexistent nobody\n"
    assert bb.sh(sid, "pwd", "-d", "/etc").out == "/etc\n"
    r = bb.roost("session", "run", sid, "--", "pwd", cwd="/tmp")
    assert r.out == "/tmp\n"  # the caller's directory, which exists in the session (bound by the profile)
    r = bb.roost("session", "run", sid, "--", "pwd", cwd="/var/lib")  # not in the busybox image
    assert r.code == 2 and "-d" in r.err
    r = bb.roost("session", "run", sid, "-d", "/nonexistent", "--", "pwd")
    assert r.code == 2
    r = bb.roost("session", "run", sid, "-u", "no-such-user", "--", "true")
    assert r.code == 4 and "no-such-user" in r.err
    bb.ok("session", "end", sid)


def test_kernel_file_systems_and_devices(bb: Env) -> None:
    sid = bb.begin()
    r = bb.sh(
        sid,
        "test -e /proc/self/status && echo proc;"
        "test -d /sys/kernel && echo sys;"
        "echo x > /dev/null && head -c 4 /dev/zero | wc -c;"
        "test -c /dev/urandom && echo urandom;"
        "echo shm > /dev/shm/x && cat /dev/shm/x;"
        "ls /dev/pts;"
        "touch /sys/x 2>/dev/null || echo sys-ro",
    )
    assert r.out.split() == ["proc", "sys", "4", "urandom", "shm", "ptmx", "sys-ro"]
    fstypes = {m.target: m.fstype for m in mount_table()}
    mnt = str(bb.run / "mnt" / sid / "root")
    assert fstypes[mnt] == "overlay"
    assert fstypes[mnt + "/dev/pts"] == "devpts"
    assert fstypes[mnt + "/dev/shm"] == "tmpfs"
    bb.ok("session", "end", sid)


def test_sessions_are_isolated_and_leave_the_image_alone(bb: Env) -> None:
    a, b = bb.begin(), bb.begin()
    assert bb.sh(a, "echo a > /etc/mine; rm /etc/hostname").code == 0
    assert bb.sh(b, "cat /etc/mine 2>/dev/null || echo absent; cat /etc/hostname").out == "absent\nbusybox\n"
    layer = bb.state / "images" / "bb" / "generations" / "1" / "layer"
    assert (layer / "etc" / "hostname").exists() and not (layer / "etc" / "mine").exists()
    bb.ok("session", "end", a)
    bb.ok("session", "end", b)


def test_end_kills_every_process_inside(bb: Env) -> None:
    sid = bb.begin()
    # one process that ignores SIGTERM: it dies by SIGKILL after the grace period (2 s here)
    bb.sh(sid, "trap '' TERM; (trap '' TERM; sleep 1000) >/dev/null 2>&1 & sleep 1000 >/dev/null 2>&1 & echo ok")
    assert bb.roost("session", "info", sid, "--json").json()["processes"] >= 2
    started = time.monotonic()
    bb.ok("session", "end", sid)
    assert time.monotonic() - started < 15
    assert mounts_under(bb.run / "mnt" / sid) == []


def test_automatic_session(bb: Env) -> None:
    r = bb.roost("run", "bb", "--", "/bin/sh", "-c", "echo $ROOST_IMAGE; touch /etc/x; exit 3")
    assert r.code == 3 and r.out == "bb\n"
    assert bb.roost("session", "list", "--json").json() == []
    assert mounts_under(bb.run / "mnt") == []
    assert bb.roost("run", "bb", "--", "nope").code == 127
    assert bb.roost("session", "list", "--json").json() == []
    r = bb.roost("run", "bb", "--", "/bin/sh", "-c", "test -e /etc/x || echo clean")
    assert r.out == "clean\n"


def test_automatic_session_ends_when_interrupted(bb: Env) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        proc = subprocess.Popen(
            [sys.executable, "-m", "roost", "run", "bb", "--", "/bin/sh", "-c", "echo go; sleep 1000"],
            env=bb.environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "go\n"
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert proc.returncode == 128 + sig, (sig, proc.returncode, proc.stderr.read() if proc.stderr else "")
        assert bb.roost("session", "list", "--json").json() == []
        assert mounts_under(bb.run / "mnt") == []


def test_automatic_session_of_a_killed_roost_is_ended_by_recover(bb: Env) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "roost", "run", "bb", "--", "/bin/sh", "-c", "echo go; sleep 1000"],
        env=bb.environ,
        stdout=subprocess.PIPE,
        cwd="/",
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"go\n"
    proc.kill()
    proc.wait()
    assert len(bb.roost("session", "list", "--json").json()) == 1
    report = bb.ok("session", "recover", "--all")
    assert "automatic session" in report
    assert bb.roost("session", "list", "--json").json() == []
    assert mounts_under(bb.run / "mnt") == []


def test_enter_gives_a_login_shell(bb: Env) -> None:
    sid = bb.begin()
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir("/")
        os.execve(
            sys.executable, [sys.executable, "-m", "roost", "session", "enter", sid], bb.environ | {"TERM": "dumb"}
        )
    out = b""
    os.write(fd, b"echo inside-$ROOST_SESSION_ID-$0; pwd; exit 5\n")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = out.decode(errors="replace")
    assert f"inside-{sid}--sh" in text
    assert "/root" in text
    assert os.waitstatus_to_exitcode(status) == 5
    bb.ok("session", "end", sid)


def durable(env: Env, image: str = "bb") -> None:
    """Make *image*'s ordinary sessions durable (image.yaml ``durable: true``)."""
    conf = env.state / "images" / image / "image.yaml"
    conf.write_text(conf.read_text() + "durable: true\n")


def test_recover_after_reboot_keeps_changes(bb: Env) -> None:
    durable(bb)
    sid = bb.begin()
    keep = bb.begin()
    bb.sh(sid, "echo precious > /root/work")
    # a reboot: every mount gone, the runtime root wiped
    for target in sorted(mounts_under(bb.run), key=len, reverse=True):
        subprocess.run(["umount", target], check=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(bb.run)], check=True)
    states = {s["id"]: s["state"] for s in bb.roost("session", "list", "--json").json()}
    assert states == {sid: "needs-recovery", keep: "needs-recovery"}
    report = bb.ok("session", "recover", "--all")
    assert f"session {sid}: remounted" in report
    assert bb.sh(sid, "cat /root/work").out == "precious\n"
    assert bb.ok("session", "recover", "--all") == ""  # idempotent: nothing left to do
    # run on a session whose mounts vanished recovers it on the way
    for target in sorted(mounts_under(bb.run / "mnt" / keep), key=len, reverse=True):
        subprocess.run(["umount", target], check=True)
    assert bb.sh(keep, "echo back").out == "back\n"
    bb.ok("session", "end", sid)
    bb.ok("session", "end", keep)


def _volatile(env: Env, sid: str) -> bool:
    """Whether the session's root overlay skips syncs (``volatile``; newer kernels show ``fsync=volatile``)."""
    (root,) = [m for m in mount_table() if m.target == str(env.run / "mnt" / sid / "root")]
    return any(o in ("volatile", "fsync=volatile") for o in root.options.split(","))


def test_ordinary_sessions_skip_syncs_maintenance_and_durable_ones_do_not(bb: Env) -> None:
    ordinary = bb.begin()
    maintenance = bb.begin("bb", "--maintenance")
    assert _volatile(bb, ordinary)
    assert not _volatile(bb, maintenance)
    shown = {s["id"]: s["durable"] for s in bb.roost("session", "list", "--json").json()}
    assert shown == {ordinary: False, maintenance: True}
    bb.ok("session", "end", maintenance)
    durable(bb)
    kept = bb.begin()
    assert not _volatile(bb, kept)
    assert bb.roost("session", "info", kept, "--json").json()["durable"] is True
    for sid in (ordinary, kept):
        bb.ok("session", "end", sid)


def test_durable_setting_is_checked(bb: Env) -> None:
    conf = bb.state / "images" / "bb" / "image.yaml"
    before = conf.read_text()
    for bad in ("maybe", "1", "'true'", "[true]", "{a: b}"):
        conf.write_text(before + f"durable: {bad}\n")
        r = bb.roost("session", "begin", "bb")
        assert r.code == 2 and "durable must be true or false" in r.err, (bad, r.err)
        assert len(r.err.strip().splitlines()) == 1
    conf.write_text(before)
    assert bb.roost("session", "list", "--json").json() == []


def test_volatile_session_unmounted_without_a_reboot_is_remounted_with_its_changes(bb: Env) -> None:
    sid = bb.begin()
    bb.sh(sid, "echo kept > /root/work")
    for target in sorted(mounts_under(bb.run / "mnt" / sid), key=len, reverse=True):
        subprocess.run(["umount", target], check=True)
    # the kernel's mark is there, so overlayfs itself would refuse this upper
    assert (bb.state / "sessions" / sid / "work" / "work" / "incompat" / "volatile").is_dir()
    assert bb.roost("session", "info", sid, "--json").json()["state"] == "needs-recovery"
    assert f"session {sid}: remounted" in bb.ok("session", "recover", sid)
    assert bb.sh(sid, "cat /root/work").out == "kept\n"
    assert _volatile(bb, sid)
    bb.ok("session", "end", sid)


def test_volatile_session_is_lost_after_a_reboot_and_ended_by_recover(bb: Env) -> None:
    lost = bb.begin()
    bb.sh(lost, "echo gone > /root/work")
    durable(bb)
    kept = bb.begin()
    bb.sh(kept, "echo precious > /root/work")
    maintenance = bb.begin("bb", "--maintenance")
    bb.sh(maintenance, "echo maintained > /etc/work")
    # a reboot: every mount gone, the runtime root wiped
    for target in sorted(mounts_under(bb.run), key=len, reverse=True):
        subprocess.run(["umount", target], check=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(bb.run)], check=True)
    states = {s["id"]: s["state"] for s in bb.roost("session", "list", "--json").json()}
    assert states == {lost: "lost", kept: "needs-recovery", maintenance: "needs-recovery"}
    r = bb.roost("session", "run", lost, "--", "true")
    assert r.code == 3 and "is lost" in r.err and len(r.err.strip().splitlines()) == 1
    r = bb.roost("session", "promote", lost, "-m", "torn")
    assert r.code == 3 and "is lost" in r.err
    assert bb.roost("image", "info", "bb", "--json").json()["current"] == 1
    report = bb.ok("session", "recover", "--all")
    assert f"session {lost}: lost (it ran without durability and the machine restarted); ended" in report
    assert f"session {kept}: remounted" in report and f"session {maintenance}: remounted" in report
    assert sorted(s["id"] for s in bb.roost("session", "list", "--json").json()) == sorted([kept, maintenance])
    assert not (bb.state / "sessions" / lost).exists()
    assert bb.sh(kept, "cat /root/work").out == "precious\n"
    bb.ok("session", "promote", maintenance)
    bb.ok("session", "end", kept)
    assert bb.ok("session", "recover", "--all") == ""


def test_promoting_a_volatile_session_syncs_it_like_any_other(bb: Env) -> None:
    sid = bb.begin()
    bb.sh(sid, "echo promoted > /etc/work")
    bb.ok("session", "promote", sid, "-m", "from an ordinary session")
    check = bb.begin()
    assert bb.sh(check, "cat /etc/work").out == "promoted\n"
    # the generation holds the session's writes, never overlayfs's volatile mark
    assert not list((bb.state / "images" / "bb" / "generations").glob("*/layer/**/incompat"))
    bb.ok("session", "end", check)


def test_session_whose_clone_is_gone_is_reported_and_endable(bb: Env) -> None:
    sid = bb.begin()
    for target in sorted(mounts_under(bb.run / "mnt" / sid), key=len, reverse=True):
        subprocess.run(["umount", target], check=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(bb.state / "sessions" / sid)], check=True)
    report = bb.ok("session", "recover", "--all")
    assert "clone is gone" in report
    assert bb.roost("session", "list", "--json").json()[0]["state"] == "needs-recovery"
    bb.ok("session", "end", sid)
    assert bb.roost("session", "list", "--json").json() == []


# --- promote ---------------------------------------------------------------------------


def test_maintenance_promote_makes_a_layer(bb: Env) -> None:
    sid = bb.begin("bb", "--maintenance")
    assert bb.sh(sid, "echo 2 > /etc/version; rm /etc/hostname; mkdir -p /opt/tool; echo t > /opt/tool/t").code == 0
    bb.ok("session", "promote", sid, "-m", "two")
    assert bb.roost("session", "list", "--json").json() == []
    assert mounts_under(bb.run / "mnt") == []
    gens = bb.state / "images" / "bb" / "generations"
    assert os.readlink(bb.state / "images" / "bb" / "current") == "generations/2"
    assert "stack:\n- 2\n- 1\n" in (gens / "2.yaml").read_text()
    assert not (gens / "2" / "layer" / "bin" / "busybox").exists()  # a layer, not a copy
    new = bb.begin()
    assert bb.sh(new, "cat /etc/version /opt/tool/t; test -e /etc/hostname || echo gone").out == "2\nt\ngone\n"
    bb.ok("session", "end", new)
    history = bb.roost("image", "history", "bb", "--json").json()
    assert history[-1]["session"] == sid and history[-1]["message"] == "two" and history[-1]["author"] == "root"


def test_one_maintenance_session_and_ordinary_sessions_never_wait(bb: Env) -> None:
    m = bb.begin("bb", "--maintenance")
    r = bb.roost("session", "begin", "bb", "--maintenance")
    assert r.code == 3 and m in r.err
    started = time.monotonic()
    o = bb.begin()
    assert time.monotonic() - started < 10
    locks = bb.roost("locks", "--json").json()
    writer = [lk for lk in locks if lk["lock"] == "writer.bb"]
    assert writer and writer[0]["mode"] == "lease" and not writer[0]["stale"] and writer[0]["user"] == "root"
    r = bb.roost("session", "promote", o)
    assert r.code == 3 and "maintained" in r.err
    assert bb.sh(o, "echo still-usable").out == "still-usable\n"
    bb.ok("session", "end", m)
    bb.ok("session", "promote", o)  # the writer lock is free now
    assert bb.roost("image", "info", "bb", "--json").json()["current"] == 2
    assert not any(lk["lock"] == "writer.bb" for lk in bb.roost("locks", "--json").json())


def test_promote_is_compare_and_swap(bb: Env) -> None:
    late = bb.begin()
    bb.sh(late, "echo late > /etc/late")
    first = bb.begin("bb", "--maintenance")
    bb.sh(first, "echo first > /etc/first")
    bb.ok("session", "promote", first)
    before = (bb.state / "images" / "bb" / "current").readlink()
    r = bb.roost("session", "promote", late, "-m", "too late")
    assert r.code == 3 and "not a fast-forward" in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert (bb.state / "images" / "bb" / "current").readlink() == before
    assert bb.roost("session", "info", late, "--json").json()["state"] == "mounted"
    assert bb.sh(late, "cat /etc/late").out == "late\n"
    assert not any(lk["lock"] == "writer.bb" for lk in bb.roost("locks", "--json").json())
    bb.ok("session", "end", late)


def test_deep_stacks_are_flattened(bb: Env) -> None:
    conf = bb.state / "images" / "bb" / "image.yaml"
    conf.write_text(conf.read_text() + "overlay-max-depth: 3\n")
    for n in range(2, 7):
        sid = bb.begin("bb", "--maintenance")
        bb.sh(sid, f"echo {n} > /etc/version; echo {n} > /etc/v{n}")
        bb.ok("session", "promote", sid)
    history = bb.roost("image", "history", "bb", "--json").json()
    assert [g["layers"] for g in history] == [1, 2, 3, 1, 2, 3]
    flat = bb.state / "images" / "bb" / "generations" / "4" / "layer"
    assert (flat / "bin" / "busybox").exists() and (flat / "etc" / "v2").exists()
    sid = bb.begin()
    assert bb.sh(sid, "cat /etc/version; ls /etc | grep -c '^v[0-9]'").out == "6\n5\n"
    bb.ok("session", "end", sid)


def test_directory_renames_across_layers(bb: Env) -> None:
    """dpkg renames directories that live in lower layers (Debian #836211): redirect_dir=on."""
    sid = bb.begin("bb", "--maintenance")
    bb.sh(sid, "mkdir -p /usr/lib/pkg/sub && echo data > /usr/lib/pkg/sub/file")
    bb.ok("session", "promote", sid)
    sid = bb.begin("bb", "--maintenance")
    r = bb.sh(
        sid,
        "mv /usr/lib/pkg /usr/lib/pkg.old && mv /etc /etc.moved && mv /etc.moved /etc && cat /usr/lib/pkg.old/sub/file",
    )
    assert r.code == 0 and r.out == "data\n", r.err
    bb.ok("session", "promote", sid)
    sid = bb.begin()
    r = bb.sh(sid, "cat /usr/lib/pkg.old/sub/file; test -e /usr/lib/pkg || echo moved; cat /etc/hostname")
    assert r.out == "data\nmoved\nbusybox\n"
    bb.ok("session", "end", sid)


# --- profiles ----------------------------------------------------------------------------


def test_site_profile_mounts_copies_and_escape_proof_targets(env: Env, busybox_tree: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "canary").write_text("host data\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = tmp_path / "tree"
    subprocess.run(["cp", "-a", str(busybox_tree), str(tree)], check=True)
    # a hostile image: its mount target and a copied file are symlinks pointing "outside"
    (tree / "build").rmdir()
    os.symlink(f"/../../../../../../../..{outside}", tree / "build")
    os.symlink(f"/../../../../..{outside}/resolv", tree / "etc" / "resolv.conf")
    (env.profiles / "site.yaml").write_text(
        "description: test\n"
        "mounts:\n"
        f"  - {{type: bind, source: {shared}, target: /build}}\n"
        "  - {type: tmpfs, target: /var/cache/x, options: size=1m}\n"
        f"  - {{type: bind, source: {shared}, target: /ro, readonly: true}}\n"
        "  - {type: bind, source: /nonexistent, target: /opt, optional: true}\n"
        "copy-files: [/etc/resolv.conf]\n"
        "environment: {set: {FROM_PROFILE: 'yes'}}\n"
    )
    env.ok("image", "create", "evil", "--from-dir", str(tree), "--profile", "site")
    sid = env.begin("evil")
    r = env.sh(
        sid,
        "cat /build/canary; echo $FROM_PROFILE; touch /ro/x 2>/dev/null || echo ro; "
        "test -L /etc/resolv.conf || echo copied",
    )
    assert r.out == "host data\nyes\nro\ncopied\n", r.err
    assert mounts_under(outside) == []  # the bind landed inside the session, not on the host
    assert os.listdir(outside) == []
    mnt = env.run / "mnt" / sid / "root"
    assert str(mnt / outside.relative_to("/")) in mounts_under(mnt)
    env.ok("session", "end", sid)
    assert (shared / "canary").read_text() == "host data\n"
    r = env.roost("image", "create", "x", "--from-dir", str(tree), "--profile", "missing")
    assert r.code == 2


def test_nss_databases_reach_ordinary_sessions_only(bb: Env) -> None:
    host_users = [line.split(":")[0] for line in Path("/etc/passwd").read_text().splitlines() if line]
    extra = next(u for u in host_users if u not in ("root", "nobody"))
    sid = bb.begin()
    assert extra in bb.sh(sid, "cut -d: -f1 /etc/passwd").out.split()
    bb.ok("session", "end", sid)
    sid = bb.begin("bb", "--maintenance")
    assert bb.sh(sid, "cut -d: -f1 /etc/passwd").out.split() == ["root", "nobody"]
    bb.ok("session", "end", sid)


@pytest.mark.parametrize("profile", ["default", "minimal", "sbuild", "buildd"])
def test_builtin_profiles_begin(env: Env, busybox_tree: Path, profile: str) -> None:
    env.ok("image", "create", profile, "--from-dir", str(busybox_tree), "--profile", profile)
    sid = env.begin(profile)
    assert env.sh(sid, "echo ok").out == "ok\n"
    env.ok("session", "end", sid)


def test_journal_records_every_operation(bb: Env) -> None:
    sid = bb.begin("bb", "--maintenance")
    bb.ok("session", "promote", sid)
    sid = bb.begin()
    bb.ok("session", "end", sid)
    bb.ok("image", "rollback", "bb")
    entries = [json.loads(line) for line in (bb.state / "journal.jsonl").read_text().splitlines()]
    ops = [e["operation"] for e in entries]
    assert ops == ["image create", "session begin", "session promote", "session begin", "session end", "image rollback"]
    for e in entries:
        assert e["user"] == "root" and e["result"] == "ok" and e["time"].endswith("Z") and e["image"] == "bb"
    assert entries[2]["generation"] == 2 and entries[2]["session"]


def test_hostile_image_symlinks_cannot_reach_host_mounts(env: Env, busybox_tree: Path, tmp_path: Path) -> None:
    """An image whose /proc, /sys, /dev and /tmp are absolute symlinks into host places."""
    tree = tmp_path / "tree"
    subprocess.run(["cp", "-a", str(busybox_tree), str(tree)], check=True)
    for name, target in (("proc", "/var/proc"), ("sys", "/usr"), ("dev", "/run"), ("tmp", "/../../etc")):
        (tree / name).rmdir()
        os.symlink(target, tree / name)

    def host_mounts() -> list[str]:
        # other suites may mount below /tmp on a shared machine; everything else is ours to watch
        return [m for m in mounts_under(Path("/")) if not m.startswith("/tmp/") or m.startswith(str(env.base))]

    before = host_mounts()
    env.ok("image", "create", "hostile", "--from-dir", str(tree))
    sid = env.begin("hostile")
    mnt = env.run / "mnt" / sid / "root"
    # every mount landed inside the session, wherever the symlinks pointed
    now = host_mounts()
    added = [m for m in now if m not in before]
    assert added and all(m == str(mnt) or m.startswith(str(mnt) + "/") for m in added), added
    assert env.sh(sid, "echo x > /dev/null && test -e /proc/self/status && echo ok").out == "ok\n"
    env.ok("session", "end", sid)
    assert host_mounts() == before
    # a target that resolves to the session root itself is refused, and nothing is left
    (tree / "proc").unlink()
    os.symlink("/", tree / "proc")
    env.ok("image", "create", "rootproc", "--from-dir", str(tree))
    r = env.roost("session", "begin", "rootproc")
    assert r.code == 5 and "refusing to mount over it" in r.err and len(r.err.splitlines()) == 1
    assert env.roost("session", "list", "--json").json() == []
    assert host_mounts() == before
