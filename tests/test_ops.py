"""Service integration: syslog, the boot-time unit, tmpfiles.d, the install script, the manual page, --version."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import roost
from core import journal, settings
from core.errors import ConfigError, SystemFailure
from core.locks import ensure_lock_dir
from core.store import Store
from roost import manpage
from roost.cli import build_parser, cmd_session_recover
from tests.support.env import REPO, Env
from tests.support.mounts import mounts_under

UNIT = REPO / "etc" / "systemd" / "roost-recover.service"
TMPFILES = REPO / "etc" / "tmpfiles.d" / "roost.conf"
MANPAGE = REPO / "man" / "roost.8"

# --- syslog --------------------------------------------------------------------------------

LINE = re.compile(rb"^<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d roost\[(\d+)\]: (.*)$", re.S)


@pytest.fixture
def syslog(env: Env) -> Iterator[socket.socket]:
    """The datagram socket the test environment's ROOST_SYSLOG names, bound."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(env.environ["ROOST_SYSLOG"])
    sock.setblocking(False)
    yield sock
    sock.close()
    os.unlink(env.environ["ROOST_SYSLOG"])


def received(sock: socket.socket) -> list[tuple[int, int, str]]:
    """(priority, pid, message) of every datagram waiting (they arrived before the command exited)."""
    out = []
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return out
        m = LINE.match(data)
        assert m, data
        out.append((int(m[1]), int(m[2]), m[3].decode()))


def journal_entries(env: Env) -> list[dict[str, object]]:
    return [json.loads(line) for line in (env.state / "journal.jsonl").read_text().splitlines()]


def test_every_journal_entry_goes_to_syslog_as_one_line(env: Env, syslog: socket.socket, busybox_tree: Path) -> None:
    env.ok("image", "create", "bb", "--from-dir", str(busybox_tree))
    ((prio, _, message),) = received(syslog)
    assert prio == 8 + 6  # facility user, severity info
    size = journal_entries(env)[-1]["size"]
    assert message == f"image create ok user=root image=bb generation=1 backend=overlay size={size}"
    sid = env.begin()
    env.ok("session", "end", sid)
    messages = [m for _, _, m in received(syslog)]
    assert messages == [
        f"session begin ok user=root image=bb session={sid} generation=1 kind=ordinary",
        f"session end ok user=root image=bb session={sid} generation=1",
    ]
    # session run does not journal, so it does not log either
    assert env.roost("run", "bb", "--", "true").code == 0
    assert [m.split(" ")[:2] for _, _, m in received(syslog)] == [["session", "begin"], ["session", "end"]]
    # a failure is logged with severity err and its error, quoted
    broken = env.base / "broken.tar"
    broken.write_bytes(b"this is not a tarball" * 100)
    assert env.roost("image", "create", "nope", "--from-tar", str(broken)).code == 5
    ((prio, _, message),) = received(syslog)
    assert prio == 8 + 3
    assert message.startswith('image create failed user=root image=nope error="unpacking ') and message.endswith('"')
    assert len(journal_entries(env)) == 6  # one syslog line per journal entry, no more


def test_syslog_off_sends_nothing_and_a_missing_socket_fails_nothing(
    env: Env, syslog: socket.socket, busybox_tree: Path
) -> None:
    env.ok("image", "create", "bb", "--from-dir", str(busybox_tree), env={"ROOST_SYSLOG": "off"})
    assert received(syslog) == []
    env.config.write_text(env.config.read_text() + "syslog: off\n")
    assert env.roost("session", "begin", "bb", env={"ROOST_SYSLOG": ""}).code == 0
    assert received(syslog) == []
    missing = str(env.base / "no-such.sock")
    sid = env.roost("session", "list", "--json").json()[0]["id"]
    env.ok("session", "end", sid, env={"ROOST_SYSLOG": missing})
    assert journal_entries(env)[-1]["operation"] == "session end"


def test_the_syslog_setting_is_validated(tmp_path: Path) -> None:
    conf = tmp_path / "roost.yaml"
    for value in ("relative/path", "[1, 2]", "7", "true"):
        conf.write_text(f"syslog: {value}\n")
        with pytest.raises(ConfigError, match="syslog"):
            settings.load(environ={"ROOST_CONFIG": str(conf)})
    conf.write_text("syslog: /run/systemd/journal/dev-log\n")
    assert settings.load(environ={"ROOST_CONFIG": str(conf)}).syslog == "/run/systemd/journal/dev-log"
    assert settings.load(environ={"ROOST_CONFIG": str(conf), "ROOST_SYSLOG": "off"}).syslog == "off"
    assert settings.load(environ={"ROOST_CONFIG": str(tmp_path / "none.yaml")}).syslog == "/dev/log"


def test_syslog_messages_quote_what_needs_quoting() -> None:
    entry = {
        "time": "t",
        "user": "alice",
        "pid": 1,
        "operation": "image gc",
        "image": "bb",
        "session": None,
        "generation": None,
        "result": "ok",
        "removed": [2, 3],
        "error": 'two words "quoted"',
        "file": "/srv/x.tar.zst",
    }
    assert journal.syslog_message(entry) == (
        'image gc ok user=alice image=bb removed=[2,3] error="two words \\"quoted\\"" file=/srv/x.tar.zst'
    )


# --- the boot-time unit and tmpfiles.d ---------------------------------------------------------


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's unit syntax: sections of keys that may repeat."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, raw
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_unit_runs_recover_all_once_at_boot_before_users() -> None:
    unit = parse_unit(UNIT.read_text())
    service = unit["Service"]
    assert service["Type"] == ["oneshot"] and service["RemainAfterExit"] == ["yes"]
    (exec_start,) = service["ExecStart"]
    argv = exec_start.split()
    assert argv[0] == "/usr/local/bin/roost"
    args = build_parser().parse_args(argv[1:])
    assert args.headless and args.all and args.func is cmd_session_recover
    after = " ".join(unit["Unit"]["After"]).split()
    assert "local-fs.target" in after and "systemd-tmpfiles-setup.service" in after
    before = " ".join(unit["Unit"]["Before"]).split()
    assert {"systemd-user-sessions.service", "cron.service"} <= set(before)
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    # recover mounts in the host's namespace: no sandboxing that would hide its mounts
    sandbox = {"PrivateMounts", "PrivateTmp", "ProtectSystem", "ProtectHome", "MountFlags", "RootDirectory"}
    assert not sandbox & set(service)


def test_the_units_command_brings_sessions_back_after_a_reboot(bb: Env) -> None:
    # A maintenance session keeps full durability, so it comes back; an ordinary one ran
    # without (volatile) and is reported lost and ended (tests/test_reliability_reboot.py).
    sid = bb.begin("bb", "--maintenance")
    volatile = bb.begin()
    assert bb.sh(sid, "echo kept > /root/work").code == 0
    for target in sorted(mounts_under(bb.run), key=len, reverse=True):
        subprocess.run(["umount", target], check=True)
    subprocess.run(["rm", "-rf", "--one-file-system", str(bb.run)], check=True)
    argv = parse_unit(UNIT.read_text())["Service"]["ExecStart"][0].split()
    proc = subprocess.run(
        [sys.executable, "-m", "roost", *argv[1:]], env=bb.environ, capture_output=True, text=True, cwd="/"
    )
    assert proc.returncode == 0, proc.stderr
    assert f"session {sid}: remounted" in proc.stdout
    assert f"session {volatile}: lost" in proc.stdout, proc.stdout
    assert bb.sh(sid, "cat /root/work").out == "kept\n"
    assert [s["id"] for s in bb.roost("session", "list", "--json").json()] == [sid]
    bb.ok("session", "end", sid)


def tmpfiles_lines() -> list[list[str]]:
    return [line.split() for line in TMPFILES.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_tmpfiles_creates_the_runtime_root_the_engine_expects() -> None:
    run = settings.DEFAULT_RUN_ROOT
    assert tmpfiles_lines() == [
        ["d", run, "0755", "root", "root", "-"],
        ["d", f"{run}/locks", "0700", "root", "root", "-"],
        ["d", f"{run}/mnt", "0711", "root", "root", "-"],
        ["d", f"{run}/mnt/.stage", "0700", "root", "root", "-"],
    ]
    store = Store(settings.Settings())
    assert (store.run, store.lock_dir, store.mnt_dir) == (run, f"{run}/locks", f"{run}/mnt")
    assert store.stage_dir == f"{run}/mnt/.stage"


def test_what_systemd_tmpfiles_makes_is_accepted_by_roost(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not shutil.which("systemd-tmpfiles"):
        pytest.skip("systemd-tmpfiles is not installed (apt-get install systemd)")
    subprocess.run(["systemd-tmpfiles", "--create", f"--root={tmp_path}", str(TMPFILES)], check=True)
    run = tmp_path / settings.DEFAULT_RUN_ROOT.lstrip("/")
    locks = run / "locks"
    st = locks.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == 0 and st.st_gid == 0
    assert stat.S_IMODE((run / "mnt").stat().st_mode) == 0o711
    assert stat.S_IMODE((run / "mnt" / ".stage").stat().st_mode) == 0o700
    Store(settings.Settings(state_root=str(tmp_path / "state"), run_root=str(run))).ensure()
    assert ensure_lock_dir(str(locks)) == str(locks)
    assert stat.S_IMODE(locks.stat().st_mode) == 0o700
    # and what it would refuse, had tmpfiles.d said otherwise
    os.chmod(locks, 0o755)
    with pytest.raises(SystemFailure, match="mode 0700"):
        ensure_lock_dir(str(locks))


def run_install(sysroot: Path, bindir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / "install-system-files")],
        env={**os.environ, "ROOST_SYSROOT": str(sysroot), "ROOST_BINDIR": str(bindir)},
        capture_output=True,
        text=True,
    )


def test_install_puts_everything_in_place_and_enables_the_unit(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not shutil.which("systemctl"):
        pytest.skip("systemctl is not installed (apt-get install systemd)")
    sysroot, bindir = tmp_path / "root", tmp_path / "bin"
    bindir.mkdir()
    launcher = bindir / "roost"
    launcher.write_text(f'#!/bin/sh\nexec {sys.executable} -m roost "$@"\n')
    launcher.chmod(0o755)
    for _ in range(2):  # running it again changes nothing
        proc = run_install(sysroot, bindir)
        assert proc.returncode == 0, proc.stderr
    unit = sysroot / "etc/systemd/system/roost-recover.service"
    assert unit.read_text() == UNIT.read_text().replace("ExecStart=/usr/local/bin/roost ", f"ExecStart={bindir}/roost ")
    wants = sysroot / "etc/systemd/system/multi-user.target.wants/roost-recover.service"
    assert os.readlink(wants) == "/etc/systemd/system/roost-recover.service"
    installed = {
        "etc/tmpfiles.d/roost.conf": TMPFILES,
        "usr/local/share/man/man8/roost.8": MANPAGE,
        "usr/local/share/bash-completion/completions/roost": REPO / "completions" / "roost.bash",
        "usr/local/share/zsh/site-functions/_roost": REPO / "completions" / "_roost",
    }
    for path, source in installed.items():
        assert (sysroot / path).read_bytes() == source.read_bytes(), path
        assert stat.S_IMODE((sysroot / path).stat().st_mode) == 0o644
    assert not [p for p in (sysroot / "etc/systemd/system").iterdir() if p.name.startswith(".")]
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr


# --- the manual page and the version -------------------------------------------------------------


def test_the_manual_page_is_up_to_date_with_the_parser() -> None:
    assert MANPAGE.read_text() == manpage.render(build_parser()), "man/roost.8 is out of date: run scripts/manpage"


def commands(parser: object, words: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                nested = any(isinstance(a, argparse._SubParsersAction) for a in child._actions)
                if nested:
                    yield from commands(child, (*words, name))
                else:
                    yield (*words, name)


def test_the_manual_page_renders_cleanly_and_names_every_command() -> None:
    if not shutil.which("groff"):
        pytest.skip("groff is not installed (apt-get install groff-base)")
    proc = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(MANPAGE)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    if not shutil.which("man"):
        pytest.skip("man is not installed (apt-get install man-db)")
    shown = subprocess.run(
        ["man", "-l", str(MANPAGE)],
        env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "300"},  # wide: no line breaks inside a synopsis
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown.startswith("ROOST(8)")
    flat = " ".join(shown.split())
    found = list(commands(build_parser()))
    assert ("image", "export") in found and ("batch",) in found
    for words in found:
        assert "roost " + " ".join(words) in flat, words
    for section in ("SYNOPSIS", "COMMANDS", "SCHROOT COMPATIBILITY", "EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"):
        assert f"\n{section}\n" in shown
    # every option of the schroot front door, as its --help lists it
    from roost.schroot.options import HELP

    front_door = flat.split("SCHROOT COMPATIBILITY", 1)[1].split("EXIT STATUS", 1)[0]
    options = [line.split()[0] for line in HELP.splitlines() if line.startswith("  -")]
    assert len(options) >= 20 and "-c," in options
    for option in options:
        assert option in front_door, option
    for long_option in ("--chroot=chroot", "--preserve-environment", "--recover-session", "--all-source-chroots"):
        assert long_option in front_door, long_option


def test_troff_escaping() -> None:
    assert manpage.esc("--from-tar a\\b") == "\\-\\-from\\-tar a\\eb"
    assert manpage.esc(".hidden\n'quoted") == "\\&.hidden\n\\&'quoted"
    assert manpage.esc("TAB…") == "TAB\\[u2026]"


def test_the_version_is_written_in_one_place(env: Env) -> None:
    assert env.roost("--version").out == f"roost {roost.__version__}\n"
    assert importlib.metadata.version("roost") == roost.__version__
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and not re.search(r"(?m)^version\s*=\s*\"", pyproject)
    assert f'"roost {roost.__version__}"' in MANPAGE.read_text().split("\n")[1]
