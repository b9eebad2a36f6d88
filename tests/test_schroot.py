"""The schroot front door on a busybox image: argv parsing, namespaces, sessions, source promotes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roost.schroot.environment import filtered_environment
from roost.schroot.info import format_section
from roost.schroot.options import UsageError, parse, split_name
from tests.support.env import REPO, Env
from tests.support.images import set_config

# --- the command line (no root needed) -----------------------------------------------------


def test_parse_sbuild_command_lines() -> None:
    o = parse(["-d", "/build/x", "-c", "sid-1", "--run-session", "-q", "-u", "root", "-p", "--", "ls", "-l"])
    assert (o.action, o.chroots, o.directory, o.user, o.preserve, o.quiet) == (
        "run", ["sid-1"], "/build/x", "root", True, True
    )  # fmt: skip
    assert o.command == ["ls", "-l"]
    o = parse(["-c", "chroot:bookworm", "--begin-session"])
    assert (o.action, o.chroots, o.command) == ("begin", ["chroot:bookworm"], [])
    o = parse(["--info", "--chroot", "session:x"])
    assert (o.action, o.chroots) == ("info", ["session:x"])


def test_parse_grouped_attached_and_abbreviated_options() -> None:
    o = parse(["-qpcbookworm", "-ubuilder", "--dir=/tmp", "--all-so", "--end"])
    assert (o.quiet, o.preserve, o.chroots, o.user, o.directory, o.all_sources, o.action) == (
        True, True, ["bookworm"], "builder", "/tmp", True, "end"
    )  # fmt: skip
    o = parse(["-a", "-l", "--exclude-aliases"])
    assert o.all_chroots and o.all_sources and o.all_sessions and o.exclude_aliases and o.action == "list"


def test_parse_options_anywhere_before_dashes_like_schroot() -> None:
    o = parse(["-c", "x", "echo", "-l", "hi"])  # schroot reads -l as --list here too
    assert (o.action, o.command) == ("list", ["echo", "hi"])
    o = parse(["-c", "x", "--", "echo", "-l"])
    assert (o.action, o.command) == (None, ["echo", "-l"])
    assert parse(["-c", "x", "-"]).command == ["-"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "unrecognised option '--bogus'"),
        (["-Z"], "unrecognised option '-Z'"),
        (["-c"], "needs a value"),
        (["--chroot"], "needs a value"),
        (["--all"], ""),
        (["--a"], "ambiguous"),
        (["--list=x"], "takes no value"),
        (["-l", "-i"], "only one action"),
        (["-b", "--end-session"], "only one action"),
    ],
)
def test_parse_errors(argv: list[str], message: str) -> None:
    if not message:
        parse(argv)
        return
    with pytest.raises(UsageError, match=message):
        parse(argv)


def test_split_name() -> None:
    assert split_name("source:x", "chroot") == ("source", "x")
    assert split_name("x", "session") == ("session", "x")
    assert split_name("weird:x", "chroot") == ("weird", "x")


def test_environment_filter_of_preserve() -> None:
    env = {"FOO": "1", "LD_PRELOAD": "x", "LD_LIBRARY_PATH": "y", "BASH_ENV": "z", "IFS": " ", "PATH": "/bin"}
    assert filtered_environment(env) == {"FOO": "1", "PATH": "/bin"}


def test_info_sections_align_like_schroot() -> None:
    text = format_section("Chroot", [("Name", "sid"), ("Root Groups", ""), ("  setup.fstab", "sbuild/fstab")])
    assert text == (
        "  ─── Chroot ───\n"
        "  Name           sid\n"
        "  Root Groups    \n"
        "    setup.fstab  sbuild/fstab\n"
    )  # fmt: skip


def installed_launcher(directory: Path) -> Path:
    """bin/roost-schroot as scripts/install writes it (its interpreter line names this interpreter)."""
    lines = (REPO / "bin" / "roost-schroot").read_text().split("\n")
    lines[0] = f"#!{sys.executable} -IS"
    launcher = directory / "roost-schroot"
    launcher.write_text("\n".join(lines))
    launcher.chmod(0o755)
    return launcher


def test_help_and_version_need_nothing(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"]}
    r = subprocess.run([sys.executable, "-m", "roost", "schroot", "--help"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "--begin-session" in r.stdout and "source:NAME" in r.stdout
    launcher = str(installed_launcher(tmp_path))
    r = subprocess.run([sys.executable, launcher, "-V"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "schroot 1.6" in r.stdout, r.stderr


# --- on a busybox image ------------------------------------------------------------------


def s(e: Env, *argv: str, **kw: object) -> tuple[int, str, str]:
    r = e.roost("schroot", *argv, **kw)  # type: ignore[arg-type]
    return r.code, r.out, r.err


def test_list_info_location_with_aliases(bb: Env) -> None:
    set_config(bb, "bb", aliases=["busy", "box"], description="a busybox root")
    code, out, _ = s(bb, "-l")
    assert (code, out.split()) == (
        0,
        ["chroot:bb", "chroot:box", "chroot:box-source", "chroot:busy", "chroot:busy-source",
         "source:bb", "source:box", "source:busy"],
    )  # fmt: skip
    assert s(bb, "-l", "--all-chroots", "--exclude-aliases")[1] == "chroot:bb\n"
    assert s(bb, "-l", "-c", "busy", "-c", "source:box")[1] == "busy\nsource:box\n"
    code, out, err = s(bb, "-l", "-c", "busy", "-c", "nope")
    assert (code, out) == (1, "") and err == "roost: nope: chroot not found\n"
    code, out, _ = s(bb, "-i", "-c", "box")
    assert code == 0 and out.startswith("  ─── Chroot ───\n  Name                   bb\n")
    assert "  Aliases                busy box\n" in out and "  Description            a busybox root\n" in out
    code, out, _ = s(bb, "-i", "-c", "chroot:busy-source")
    assert "─── Source ───" in out and "a busybox root (source chroot)" in out and "Session Cloned         false" in out
    assert s(bb, "--location", "-c", "bb") == (0, "\n", "")
    code, out, _ = s(bb, "--config", "-c", "busy")  # an alias prints under its image's name, as with schroot
    assert code == 0 and "\n[bb]\naliases=busy,box\n" in out and "\ntype=roost-overlay\nunion-type=overlay\n" in out


def test_session_begin_run_end(bb: Env) -> None:
    set_config(bb, "bb", aliases=["busy"])
    code, out, _ = s(bb, "-b", "-c", "busy")
    sid = out.strip()
    assert code == 0 and sid.startswith("bb-")
    code, out, _ = s(bb, "-i", "-c", f"session:{sid}")
    assert f"  Mount Location         {bb.run / 'mnt' / sid / 'root'}\n" in out
    assert "  Session Purged         true\n" in out and "  Selected Chroot Name   busy\n" in out
    assert s(bb, "--location", "-c", f"session:{sid}")[1] == f"{bb.run / 'mnt' / sid / 'root'}\n"
    assert s(bb, "-l", "--all-sessions")[1] == f"session:{sid}\n"
    listed = bb.roost("session", "list", "--json").json()
    assert [(x["id"], x["alias"], x["failed"]) for x in listed] == [(sid, "busy", None)]
    code, out, _ = s(bb, "-r", "-c", sid, "-d", "/", "--", "sh", "-c", "echo $SCHROOT_SESSION_ID $SCHROOT_ALIAS_NAME")
    assert (code, out) == (0, f"{sid} busy\n")
    assert s(bb, "-r", "-c", f"session:{sid}", "--", "sh", "-c", "exit 4")[0] == 4
    # /root, not /tmp: the default profile binds the host's /tmp into the session
    assert s(bb, "-r", "-c", sid, "--", "sh", "-c", "cat > /root/in", input="piped\n")[0] == 0
    assert s(bb, "-r", "-c", sid, "-d", "/root", "--", "cat", "in")[1] == "piped\n"
    code, _, err = s(bb, "-r", "-c", sid, "--", "true", cwd="/usr/share")  # not in the busybox root
    assert code == 1 and "cannot change to directory" in err
    assert s(bb, "-r", "-c", f"chroot:{sid}", "--", "true")[0] == 1  # sessions live in session:
    assert s(bb, "-e", "-c", sid) == (0, "", "")
    assert s(bb, "-e", "-c", sid)[0] == 1
    assert bb.roost("session", "list", "--json").json() == []


def test_named_session_and_recover(bb: Env) -> None:
    assert s(bb, "-b", "-c", "bb", "-n", "build-1")[1] == "build-1\n"
    assert s(bb, "-b", "-c", "bb", "-n", "build-1")[0] == 1  # taken
    mnt = bb.run / "mnt" / "build-1" / "root"
    subprocess.run(["umount", "-R", str(mnt)], check=True)  # as after a reboot
    assert s(bb, "--recover-session", "-c", "build-1")[0] == 0
    assert s(bb, "-r", "-c", "build-1", "--", "test", "-d", "/proc/self")[0] == 0
    subprocess.run(["umount", "-R", str(mnt)], check=True)
    # -r takes the full path when the session needs recovery, and recovers it
    assert s(bb, "-r", "-c", "build-1", "--", "test", "-d", "/proc/self")[0] == 0
    assert s(bb, "-e", "-c", "session:build-1")[0] == 0


def test_source_session_promoted_at_end(bb: Env) -> None:
    sid = s(bb, "-b", "-c", "source:bb")[1].strip()
    out = s(bb, "-i", "-c", f"session:{sid}")[1]
    assert "  Session Purged         false\n" in out and "  Roost Kind             maintenance\n" in out
    assert s(bb, "-r", "-c", sid, "--", "touch", "/promoted")[0] == 0
    assert s(bb, "-r", "-c", sid, "--", "true")[0] == 0
    assert s(bb, "-e", "-c", sid)[0] == 0
    history = bb.roost("image", "history", "bb", "--json").json()
    assert [g["generation"] for g in history] == [1, 2]
    assert history[1]["message"] == f"schroot source:bb session {sid}"
    assert s(bb, "-c", "bb", "--", "test", "-e", "/promoted")[0] == 0


def test_source_session_with_a_failed_command_is_not_promoted(bb: Env) -> None:
    sid = s(bb, "-b", "-c", "source:bb")[1].strip()
    assert s(bb, "-r", "-c", sid, "--", "sh", "-c", "touch /half; exit 100")[0] == 100
    assert s(bb, "-r", "-c", sid, "--", "true")[0] == 0  # a later success does not undo the mark
    info = bb.roost("session", "info", sid, "--json").json()
    assert (info["kind"], info["failed"]) == ("maintenance", "sh -c 'touch /half; exit 100' exited 100")
    code, out, _ = s(bb, "-i", "-c", f"session:{sid}")
    assert "  Roost Failed           sh -c 'touch /half; exit 100' exited 100\n" in out
    code, out, err = s(bb, "-e", "-c", sid)
    assert code == 1 and "not promoted" in err and "stays at generation 1" in err
    assert [g["generation"] for g in bb.roost("image", "history", "bb", "--json").json()] == [1]
    assert s(bb, "-c", "bb", "--", "test", "-e", "/half")[0] == 1
    assert bb.roost("session", "list", "--json").json() == []


def test_automatic_source_session_promotes_only_on_success(bb: Env) -> None:
    code, _, err = s(bb, "-c", "source:bb", "--", "sh", "-c", "touch /a; exit 9")
    assert code == 9 and "not promoted" in err
    assert s(bb, "-c", "source:bb", "--", "touch", "/b")[0] == 0
    history = bb.roost("image", "history", "bb", "--json").json()
    assert [(g["generation"], g["message"]) for g in history] == [
        (1, history[0]["message"]),
        (2, "schroot -c source:bb -- touch /b"),
    ]
    assert s(bb, "-c", "bb", "--", "sh", "-c", "test -e /b && ! test -e /a")[0] == 0
    assert bb.roost("session", "list", "--json").json() == []


def test_environment_inside(bb: Env) -> None:
    out = s(bb, "-c", "bb", "-u", "nobody", "--", "env", env={"TERM": "vt100", "FOO": "x"})[1]
    env = dict(line.split("=", 1) for line in out.splitlines())
    sid = env.pop("SCHROOT_SESSION_ID")
    assert sid.startswith("bb-") and env.pop("ROOST_SESSION_ID") == sid
    assert env.pop("LANG", None) == bb.environ.get("LANG")  # the default profile keeps LANG
    assert env == {
        "HOME": "/nonexistent",
        "LOGNAME": "nobody",
        "USER": "nobody",
        "SHELL": "/bin/sh",  # nobody's shell (/usr/sbin/nologin) is not in the busybox root
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "TERM": "vt100",
        "ROOST_IMAGE": "bb",
        "SCHROOT_COMMAND": "env",
        "SCHROOT_USER": "root",
        "SCHROOT_GROUP": "root",
        "SCHROOT_UID": "0",
        "SCHROOT_GID": "0",
        "SCHROOT_CHROOT_NAME": "bb",
        "SCHROOT_ALIAS_NAME": "bb",
    }
    out = s(bb, "-c", "bb", "-p", "--", "env", env={"FOO": "x", "LD_PRELOAD": "/evil.so", "HOME": "/tmp"})[1]
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert env["FOO"] == "x" and "LD_PRELOAD" not in env and env["HOME"] == "/tmp"
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_login_shell_choice(bb: Env) -> None:
    """-s, else $SHELL with -p, else the user's shell, /bin/bash, /bin/sh: the first that exists inside."""
    script = "echo $0 $SHELL\n"
    assert s(bb, "-c", "bb", input=script)[1] == "-sh /bin/sh\n"
    assert s(bb, "-c", "bb", "-p", input=script, env={"SHELL": "/bin/zsh"})[1] == "/bin/sh /bin/sh\n"
    assert s(bb, "-c", "bb", "-p", input=script, env={"SHELL": "/bin/ash"})[1] == "/bin/ash /bin/ash\n"
    assert s(bb, "-c", "bb", "-s", "/bin/ash", input=script)[1] == "-ash /bin/ash\n"


def test_errors_are_one_line_and_exit_1(bb: Env) -> None:
    for argv in (
        ["-c", "nope", "--", "true"],
        ["-r", "-c", "nope", "--", "true"],
        ["-b", "-c", "bb", "--", "true"],
        ["-c", "bb", "-u", "no-such-user", "--", "true"],
        ["-c", "bb", "-d", "relative", "--", "true"],
        ["-o", "key=value", "-c", "bb", "--", "true"],
        ["-b", "-c", "session:nope"],
        ["--bogus"],
    ):
        code, out, err = s(bb, *argv)
        assert (code, out) == (1, ""), argv
        assert err.count("\n") == 1 and err.startswith("roost: "), (argv, err)
    assert bb.roost("session", "list", "--json").json() == []


def test_signals_reach_the_command_and_the_session_ends(bb: Env) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "roost", "schroot", "-c", "bb", "--", "sh", "-c", "echo up; exec sleep 60"],
        env=bb.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 1 and "terminated by SIGTERM" in err
    assert bb.roost("session", "list", "--json").json() == []


def test_run_fast_path_agrees_with_the_engine(bb: Env) -> None:
    """The fast path of -r and the full one give the same environment and status."""
    sid = s(bb, "-b", "-c", "bb")[1].strip()
    fast = s(bb, "-r", "-c", sid, "-d", "/tmp", "--", "sh", "-c", "pwd; env | sort; exit 3")
    # a waiting lock holder makes the fast path step aside; the engine then runs it
    lock = bb.run / "locks" / f"session.{sid}.lock"
    import fcntl

    fd = os.open(lock, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "roost", "schroot", "-r", "-c", sid, "-d", "/tmp", "--", "sh", "-c",
             "pwd; env | sort; exit 3"],
            env=bb.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not list(bb.run.glob(f"locks/session.{sid}.lock.wait-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    out = proc.communicate(timeout=60)[0]
    assert (proc.returncode, out) == (fast[0], fast[1]) == (3, fast[1])
    assert out.startswith("/tmp\n")
    assert s(bb, "-e", "-c", sid)[0] == 0


def test_roost_schroot_entry_point(bb: Env) -> None:
    r = subprocess.run(
        [sys.executable, str(installed_launcher(bb.base)), "-c", "bb", "--", "echo", "ok"],
        env=bb.environ,
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr


def test_run_fast_path_loads_neither_engine_nor_yaml(bb: Env) -> None:
    """-r, which sbuild runs a few hundred times per build, through both doors: nothing heavy imported."""
    sid = s(bb, "-b", "-c", "bb")[1].strip()
    launcher = str(installed_launcher(bb.base))
    try:
        for argv in ([launcher], ["-m", "roost", "schroot"], ["-m", "roost", "-q", "--headless", "schroot"]):
            r = subprocess.run(
                [sys.executable, "-X", "importtime", *argv, "-r", "-c", sid, "--", "true"],
                env=bb.environ,
                capture_output=True,
                text=True,
                cwd="/",
            )
            imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}
            assert r.returncode == 0, [line for line in r.stderr.splitlines() if "|" not in line]
            heavy = {"core.engine", "yaml", "json", "argparse", "typing", "dataclasses", "signal", "textual"}
            assert not heavy & imported, f"{argv[-1]} -r imported {heavy & imported}"
    finally:
        assert s(bb, "-e", "-c", sid)[0] == 0


def test_alias_resolution_conflicts(bb: Env, busybox_tree: Path) -> None:
    bb.ok("image", "create", "bb2", "--from-dir", str(busybox_tree))
    set_config(bb, "bb", aliases=["shared"])
    set_config(bb, "bb2", aliases=["shared"])
    code, _, err = s(bb, "-c", "shared", "--", "true")
    assert code == 1 and "claimed by several images" in err
    set_config(bb, "bb2", aliases=["bb"])  # an alias that is another image's name: ambiguous, refused
    code, _, err = s(bb, "-c", "bb", "--", "true")
    assert code == 1 and "an alias of image bb2" in err, err
