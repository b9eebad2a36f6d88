"""The schroot front door against schroot 1.6 itself, on the same Debian root.

Every command line runs twice: through ``/usr/bin/schroot`` (a temporary
``directory`` chroot with ``union-type=overlay`` and the sbuild profile in
/etc/schroot/chroot.d) and through ``roost schroot`` (the same chroot.d file,
imported with ``roost image import-schroot``). Standard output, the exit code,
the working directory and the environment must agree; where roost differs on
purpose, the difference is spelled out in ``DELIBERATE`` below and in
docs/schroot.md, and asserted as such.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.env import REPO, Env, assert_no_leaks, make_env, need_root
from tests.support.sbuild import sbuild_info

pytestmark = pytest.mark.slow

#: Variables roost sets that schroot does not (docs/schroot.md, "Environment").
ROOST_ONLY_VARIABLES = ("ROOST_SESSION_ID", "ROOST_IMAGE")

#: Differences kept on purpose (docs/schroot.md, "Deliberate differences"); each is asserted below.
DELIBERATE = {
    "source-failed-command": (
        "schroot keeps whatever a source chroot command changed, even when it failed; roost does not "
        "promote a source: session in which a command failed (-e says so and exits 1), so the image "
        "stays at its generation"
    ),
    "source-seen-at-end": (
        "schroot writes a source chroot's changes into its tree at once; roost's source: session is a "
        "clone promoted when it ends, so new sessions see the changes only then"
    ),
    "one-source-session": "schroot lets two source sessions write one tree; roost refuses a second writer",
    "profile-environment": "the roost profile's environment.keep variables pass without -p too",
    "session-ids": "generated session ids are IMAGE-8hex, not CHROOT-UUID",
    "roost-variables": "ROOST_SESSION_ID and ROOST_IMAGE are set inside as well",
    "config": "--config prints the keys roost has a meaning for, with type=roost-BACKEND (tests/test_clients.py)",
    "info-fields": "-i prints the fields roost has a meaning for (sbuild's all agree), Type is roost-BACKEND",
}


@dataclass
class Outcome:
    code: int
    out: str
    err: str


@dataclass
class Pair:
    """One chroot known to both schroot and roost, under the same name."""

    name: str
    alias: str
    base: Path
    root: Path
    host_only: Path
    env: Env
    conf: Path
    base_environ: dict[str, str] = field(default_factory=dict)

    def environ(self, extra: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> dict[str, str]:
        env = dict(self.base_environ)
        env.update(extra or {})
        for key in drop:
            env.pop(key, None)
        return env

    def schroot(self, *argv: str, cwd: str = "/", input: str | None = None, **kw: object) -> Outcome:
        return _run(["schroot", *argv], cwd, input, self.environ(**kw))  # type: ignore[arg-type]

    def roost(self, *argv: str, cwd: str = "/", input: str | None = None, **kw: object) -> Outcome:
        return _run([sys.executable, "-m", "roost", "schroot", *argv], cwd, input, self.environ(**kw))  # type: ignore[arg-type]

    def both(self, *argv: str, **kw: object) -> tuple[Outcome, Outcome]:
        return self.schroot(*argv, **kw), self.roost(*argv, **kw)  # type: ignore[arg-type]


def _run(argv: list[str], cwd: str, input: str | None, env: dict[str, str]) -> Outcome:
    proc = subprocess.run(argv, cwd=cwd, input=input, env=env, capture_output=True, text=True, timeout=120)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def _end_schroot_sessions(prefixes: tuple[str, ...]) -> None:
    listed = subprocess.run(["schroot", "-l", "--all-sessions"], capture_output=True, text=True).stdout.split()
    for line in listed:
        if line.split(":", 1)[-1].startswith(prefixes):
            subprocess.run(["schroot", "-e", "-f", "-c", line], capture_output=True)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, debian_tarball: Path) -> Iterator[Pair]:
    need_root()
    if not shutil.which("schroot"):
        pytest.skip("schroot is not installed")
    base = Path(tempfile.mkdtemp(prefix="roost-compat-", dir=tmp_path_factory.getbasetemp()))
    name = f"roost-compat-{os.getpid()}"
    alias = f"{name}-alias"
    root = base / "root"
    root.mkdir()
    subprocess.run(
        [
            "tar",
            "--zstd",
            "-xf",
            str(debian_tarball),
            "-C",
            str(root),
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
        ],
        check=True,
    )
    (base / "union").mkdir()
    host_only = base / "host-only"
    host_only.mkdir()
    build = Path("/var/lib/sbuild/build")  # the sbuild profile binds it (schroot needs it to exist)
    made_build = not build.exists()
    if made_build:
        build.mkdir(parents=True)
    conf = Path("/etc/schroot/chroot.d") / name
    conf.write_text(
        f"[{name}]\n"
        "description=roost compatibility test\n"
        "type=directory\n"
        f"directory={root}\n"
        "union-type=overlay\n"
        f"union-overlay-directory={base / 'union'}\n"
        "users=root\n"
        "root-users=root\n"
        f"aliases={alias}\n"
        "profile=sbuild\n"
    )
    env = make_env(base / "roost")
    p = Pair(name=name, alias=alias, base=base, root=root, host_only=host_only, env=env, conf=conf)
    p.base_environ = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LOGNAME": "root",
        "USER": "root",
        "TERM": "xterm",
        "LANG": "C.UTF-8",
        **{k: v for k, v in env.environ.items() if k.startswith("ROOST_") or k == "PYTHONPATH"},
    }
    try:
        imported = env.roost("image", "import-schroot", str(conf))
        assert imported.code == 0, imported.err
        yield p
    finally:
        _end_schroot_sessions((name, "roost-compat-s"))
        conf.unlink()
        if made_build:
            build.rmdir()
        for sid in env.roost("session", "list", "--json").json() if env.state.exists() else []:
            env.roost("session", "end", sid["id"], "--force")
        assert_no_leaks(base)
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=True)


# --- helpers ---------------------------------------------------------------------------


def parse_env(out: str, pair: Pair) -> dict[str, str]:
    """`env` output as a dict, minus roost's own variables, session ids made comparable."""
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    for key in ROOST_ONLY_VARIABLES:
        env.pop(key, None)
    sid = env.get("SCHROOT_SESSION_ID")
    if sid and re.fullmatch(re.escape(pair.name) + r"-[0-9a-f-]+", sid):
        env["SCHROOT_SESSION_ID"] = "<generated>"
    return env


def mine(out: str, pair: Pair) -> str:
    """Only the lines about this test's chroot (the host may have other schroot chroots)."""
    return "".join(line + "\n" for line in out.splitlines() if pair.name in line)


def same(a: Outcome, b: Outcome) -> None:
    assert (a.code, a.out) == (b.code, b.out), f"schroot: {a}\nroost:   {b}"


# --- automatic sessions ----------------------------------------------------------------


@pytest.mark.parametrize("cwd", ["/", "/usr/share", "/root"])
def test_automatic_session_runs_in_the_callers_directory(pair: Pair, cwd: str) -> None:
    same(*pair.both("-c", pair.name, "--", "pwd", cwd=cwd))


def test_directory_missing_inside_fails_like_schroot(pair: Pair) -> None:
    s, r = pair.both("-c", pair.name, "--", "pwd", cwd=str(pair.host_only))
    same(s, r)
    assert s.code == 1


@pytest.mark.parametrize("directory", ["/etc", "/nonexistent"])
def test_directory_option(pair: Pair, directory: str) -> None:
    same(*pair.both("-c", pair.name, "-d", directory, "--", "pwd", cwd=str(pair.host_only)))


@pytest.mark.parametrize(
    "case",
    [
        ("plain", (), {}, ()),
        ("user", ("-u", "nobody"), {}, ()),
        ("no-term", (), {}, ("TERM",)),
        ("preserve", ("-p",), {"FOO": "bar", "LD_FOO": "1", "BASH_ENV": "/x", "PATH": "/opt/x:/usr/bin"}, ()),
        ("preserve-user", ("-p", "-u", "nobody"), {"FOO": "bar", "HOME": "/usr"}, ()),
    ],
    ids=lambda c: c[0],
)
def test_environment(pair: Pair, case: tuple[str, tuple[str, ...], dict[str, str], tuple[str, ...]]) -> None:
    _, options, extra, drop = case
    s, r = pair.both("-c", pair.name, *options, "--", "env", extra=extra, drop=drop)
    assert s.code == r.code == 0, (s.err, r.err)
    assert parse_env(s.out, pair) == parse_env(r.out, pair)


def test_environment_names_chroot_alias_and_command(pair: Pair) -> None:
    script = "echo $SCHROOT_CHROOT_NAME $SCHROOT_ALIAS_NAME; echo $SCHROOT_COMMAND"
    for name in (pair.name, pair.alias, f"chroot:{pair.alias}"):
        same(*pair.both("-c", name, "--", "sh", "-c", script))


@pytest.mark.parametrize(
    "command",
    [["sh", "-c", "exit 7"], ["no-such-command"], ["/etc/passwd"], ["sh", "-c", "kill -TERM $$"], ["true"]],
    ids=["exit-7", "not-found", "not-executable", "killed", "true"],
)
def test_exit_codes(pair: Pair, command: list[str]) -> None:
    same(*pair.both("-c", pair.name, "--", *command))


def test_stdin_reaches_the_command(pair: Pair) -> None:
    same(*pair.both("-c", pair.name, "--", "sh", "-c", "cat | wc -c", input="hello\n" * 100))


@pytest.mark.parametrize("argv", [["-c", "no-such-chroot", "--", "true"], ["--no-such-option"], ["-c"]])
def test_errors_exit_1(pair: Pair, argv: list[str]) -> None:
    s, r = pair.both(*argv)
    same(s, r)
    assert s.code == 1


# --- login shells ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        ("/usr", (), {}),
        ("host-only", (), {}),
        ("host-only", ("-p",), {"HOME": "/usr/share"}),
        ("/", ("-d", "/etc"), {}),
    ],
    ids=["cwd", "fallback-home", "fallback-preserved-home", "directory"],
)
def test_login_shell_directory(pair: Pair, case: tuple[str, tuple[str, ...], dict[str, str]]) -> None:
    cwd, options, extra = case
    where = str(pair.host_only) if cwd == "host-only" else cwd
    same(*pair.both("-c", pair.name, *options, cwd=where, input="pwd; echo $0\n", extra=extra))


@pytest.mark.parametrize(
    ("options", "shell"),
    [((), None), (("-p",), None), (("-p",), "/bin/zsh"), (("-p",), "/bin/sh"), (("-s", "/bin/sh"), None),
     (("-u", "nobody", "-s", "/bin/sh"), None)],
    ids=["plain", "preserve", "preserve-missing-shell", "preserve-shell", "shell", "user-shell"],
)  # fmt: skip
def test_login_shell_environment(pair: Pair, options: tuple[str, ...], shell: str | None) -> None:
    extra = {"FOO": "bar", **({"SHELL": shell} if shell else {})}
    s, r = pair.both("-c", pair.name, *options, input="echo $0; env\n", extra=extra)
    assert s.code == r.code == 0, (s.err, r.err)
    assert s.out.splitlines()[0] == r.out.splitlines()[0]
    assert parse_env(s.out, pair) == parse_env(r.out, pair)


@pytest.mark.parametrize("flag", ["-q", "-v", "--quiet", "--verbose"])
def test_quiet_and_verbose_leave_stdout_alone(pair: Pair, flag: str) -> None:
    same(*pair.both(flag, "-c", pair.name, "--", "echo", "hello"))


# --- listing and information ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["-l"],
        ["-l", "--all-chroots"],
        ["-l", "--all-source-chroots"],
        ["-l", "--all"],
        ["-l", "--all", "--exclude-aliases"],
    ],
    ids=lambda a: " ".join(a),
)
def test_list(pair: Pair, argv: list[str]) -> None:
    s, r = pair.both(*argv)
    assert s.code == r.code == 0
    assert mine(s.out, pair) == mine(r.out, pair)


def test_list_named_chroots(pair: Pair) -> None:
    same(*pair.both("-l", "-c", pair.name, "-c", f"source:{pair.alias}", "-c", f"chroot:{pair.alias}"))
    same(*pair.both("-l", "-c", pair.name, "-c", "no-such-chroot"))


@pytest.mark.parametrize("prefix", ["", "chroot:", "source:"])
def test_info_as_sbuild_reads_it(pair: Pair, prefix: str) -> None:
    s, r = pair.both("-i", "-c", prefix + pair.alias)
    assert s.code == r.code == 0
    assert sbuild_info(s.out) == sbuild_info(r.out)


def test_info_of_everything_as_sbuild_reads_it(pair: Pair) -> None:
    s, r = pair.both("-i")
    assert s.code == r.code == 0
    theirs = [i for i in sbuild_info(s.out) if i["Name"] == pair.name]
    ours = [i for i in sbuild_info(r.out) if i["Name"] == pair.name]
    assert theirs == ours and [i["Namespace"] for i in ours] == ["chroot", "source"]


@pytest.mark.parametrize("prefix", ["", "source:"])
def test_location_of_a_chroot(pair: Pair, prefix: str) -> None:
    same(*pair.both("--location", "-c", prefix + pair.name))


# --- sessions, the way sbuild drives them -----------------------------------------------------


def test_session_lifecycle_like_sbuild(pair: Pair) -> None:
    sid = f"roost-compat-s{os.getpid()}"
    same(*pair.both("-b", "-c", f"chroot:{pair.name}", "-n", sid))
    try:
        s, r = pair.both("--info", "--chroot", f"session:{sid}")
        assert s.code == r.code == 0
        theirs, ours = sbuild_info(s.out), sbuild_info(r.out)
        assert len(theirs) == len(ours) == 1
        for info in (theirs[0], ours[0]):
            assert os.path.isdir(info.pop("Location"))  # sbuild checks -d on it
        assert theirs == ours == [{"Namespace": "session", "Name": sid, "Session Purged": "1", "Aliases": ""}]
        s, r = pair.both("--location", "-c", f"session:{sid}")
        assert s.code == r.code == 0 and os.path.isdir(s.out.strip()) and os.path.isdir(r.out.strip())
        same(*pair.both("-l", "-c", f"session:{sid}"))
        assert mine(pair.schroot("-l", "--all-sessions").out, pair) == ""  # sid does not contain the name
        assert f"session:{sid}\n" in pair.schroot("-l", "--all-sessions").out
        assert f"session:{sid}\n" in pair.roost("-l", "--all-sessions").out

        run = ("-c", sid, "--run-session", "-q", "-u", "root", "-p", "--")
        s, r = pair.both("-d", "/", *run, "sh", "-c", "pwd; env", extra={"FOO": "bar"})
        assert s.code == r.code == 0
        assert s.out.splitlines()[0] == r.out.splitlines()[0] == "/"
        assert parse_env(s.out, pair) == parse_env(r.out, pair)
        same(*pair.both("-d", "/", *run, "sh", "-c", "cat > /tmp/compat", input="data\n"))
        same(*pair.both("-d", "/tmp", *run, "sh", "-c", "pwd; cat compat"))
        same(*pair.both(*run, "pwd", cwd="/usr/share"))
        same(*pair.both("-d", "/", *run, "test", "-d", "/nonexistent"))
        same(*pair.both("-r", "-c", f"session:{sid}", "-d", "/", "--", "sh", "-c", "exit 3"))
        same(*pair.both("--recover-session", "-c", sid))
    finally:
        s, r = pair.both("-c", sid, "--end-session")
    same(s, r)
    assert s.code == 0
    same(*pair.both("-e", "-c", sid))  # already gone: exit 1 for both
    same(*pair.both("-r", "-c", sid, "--", "true"))


def test_generated_session_ids_are_passed_back(pair: Pair) -> None:
    s, r = pair.both("-b", "-c", pair.alias)
    assert s.code == r.code == 0
    theirs, ours = s.out.strip(), r.out.strip()
    assert theirs.startswith(pair.name + "-") and ours.startswith(pair.name + "-")  # id formats differ (documented)
    assert "\n" not in theirs and "\n" not in ours
    s = pair.schroot("-r", "-c", theirs, "--", "sh", "-c", "echo $SCHROOT_SESSION_ID $SCHROOT_ALIAS_NAME")
    r = pair.roost("-r", "-c", ours, "--", "sh", "-c", "echo $SCHROOT_SESSION_ID $SCHROOT_ALIAS_NAME")
    assert (s.code, s.out, r.code, r.out) == (0, f"{theirs} {pair.alias}\n", 0, f"{ours} {pair.alias}\n")
    same(pair.schroot("-e", "-c", theirs), pair.roost("-e", "-c", ours))


# --- source chroots ----------------------------------------------------------------------------


def test_source_changes_reach_the_chroot(pair: Pair) -> None:
    mark = f"/compat-source-{os.getpid()}"
    same(*pair.both("-c", pair.name, "--", "test", "-e", mark))  # not there yet: 1
    same(*pair.both("-c", f"source:{pair.name}", "-u", "root", "--", "touch", mark))
    same(*pair.both("-c", pair.name, "--", "test", "-e", mark))  # there: 0
    # a source session begun and ended like sbuild-update does it
    s, r = pair.both("-b", "-c", f"source:{pair.alias}")
    assert s.code == r.code == 0
    for sid, side in ((s.out.strip(), pair.schroot), (r.out.strip(), pair.roost)):
        info = sbuild_info(side("-i", "-c", f"session:{sid}").out)
        assert [(i["Namespace"], i["Session Purged"]) for i in info] == [("session", "0")]
        assert side("-r", "-c", sid, "-u", "root", "-d", "/", "--", "rm", mark).code == 0
        assert side("-e", "-c", sid).code == 0
    same(*pair.both("-c", pair.name, "--", "test", "-e", mark))  # gone again: 1
    history = pair.env.roost("image", "history", pair.name, "--json").json()
    assert [g["message"].split(" ")[0:2] for g in history[-2:]] == [
        ["schroot", "-c"],
        ["schroot", "source:" + pair.alias],
    ]


def test_source_failed_command_is_a_deliberate_difference(pair: Pair) -> None:
    mark = f"/compat-failed-{os.getpid()}"
    s, r = pair.both("-b", "-c", f"source:{pair.name}")
    assert s.code == r.code == 0
    script = f"touch {mark}; exit 3"
    theirs = pair.schroot("-r", "-c", s.out.strip(), "--", "sh", "-c", script)
    ours = pair.roost("-r", "-c", r.out.strip(), "--", "sh", "-c", script)
    assert theirs.code == ours.code == 3
    theirs, ours = pair.schroot("-e", "-c", s.out.strip()), pair.roost("-e", "-c", r.out.strip())
    # DELIBERATE["source-failed-command"]
    assert (theirs.code, ours.code) == (0, 1), (theirs, ours)
    assert "not promoted" in ours.err
    theirs, ours = pair.both("-c", pair.name, "--", "test", "-e", mark)
    assert (theirs.code, ours.code) == (0, 1)
    assert pair.schroot("-c", f"source:{pair.name}", "--", "rm", mark).code == 0
    assert "source-failed-command" in DELIBERATE


def test_source_changes_are_seen_when_the_session_ends(pair: Pair) -> None:
    mark = f"/compat-seen-{os.getpid()}"
    s, r = pair.both("-b", "-c", f"source:{pair.name}")
    assert s.code == r.code == 0
    sids = {"schroot": s.out.strip(), "roost": r.out.strip()}
    try:
        assert pair.schroot("-r", "-c", sids["schroot"], "--", "touch", mark).code == 0
        assert pair.roost("-r", "-c", sids["roost"], "--", "touch", mark).code == 0
        theirs, ours = pair.both("-c", pair.name, "--", "test", "-e", mark)
        assert (theirs.code, ours.code) == (0, 1)  # DELIBERATE["source-seen-at-end"]
        # DELIBERATE["one-source-session"]
        theirs, ours = pair.both("-b", "-c", f"source:{pair.name}")
        assert (theirs.code, ours.code) == (0, 1) and "already being maintained" in ours.err
        assert pair.schroot("-e", "-c", theirs.out.strip()).code == 0
    finally:
        assert pair.schroot("-e", "-c", sids["schroot"]).code == 0
        assert pair.roost("-e", "-c", sids["roost"]).code == 0
    same(*pair.both("-c", pair.name, "--", "test", "-e", mark))  # both: 0
    same(*pair.both("-c", f"source:{pair.name}", "--", "rm", mark))


def test_profile_environment_is_a_deliberate_difference(pair: Pair) -> None:
    extra = {"DEB_BUILD_OPTIONS": "nocheck", "UNLISTED": "x"}
    s, r = pair.both("-c", pair.name, "--", "env", extra=extra)
    theirs, ours = parse_env(s.out, pair), parse_env(r.out, pair)
    assert "DEB_BUILD_OPTIONS" not in theirs and ours.pop("DEB_BUILD_OPTIONS") == "nocheck"  # DELIBERATE[...]
    assert theirs == ours and "UNLISTED" not in ours
    s, r = pair.both("-c", pair.name, "-p", "--", "env", extra=extra)
    assert parse_env(s.out, pair) == parse_env(r.out, pair)  # with -p both pass everything
    assert "profile-environment" in DELIBERATE


def test_roost_variables_and_config_are_deliberate_differences(pair: Pair) -> None:
    s, r = pair.both("-c", pair.name, "--", "env")
    ours = dict(line.split("=", 1) for line in r.out.splitlines())
    theirs = dict(line.split("=", 1) for line in s.out.splitlines())
    assert ours["ROOST_IMAGE"] == pair.name and ours["ROOST_SESSION_ID"] == ours["SCHROOT_SESSION_ID"]
    assert not any(k.startswith("ROOST_S") or k == "ROOST_IMAGE" for k in theirs)  # DELIBERATE["roost-variables"]
    theirs_, ours_ = pair.both("--config", "-c", pair.name)
    assert (theirs_.code, ours_.code) == (0, 0) and f"\n[{pair.name}]\n" in theirs_.out  # DELIBERATE["config"]
    assert "\ntype=directory\n" in theirs_.out and "\ntype=roost-overlay\n" in ours_.out
    same(*pair.both("-o", "foo=bar", "-c", pair.name, "--", "true"))  # a key nobody may modify: 1 for both
    s, r = pair.both("-i", "-c", pair.name)
    theirs_type = re.search(r"^  Type +(\S+)$", s.out, re.M)
    ours_type = re.search(r"^  Type +(\S+)$", r.out, re.M)
    assert theirs_type and ours_type and (theirs_type.group(1), ours_type.group(1)) == ("directory", "roost-overlay")
    assert {"roost-variables", "config", "info-fields", "session-ids"} <= set(DELIBERATE)


def test_no_sessions_left(pair: Pair) -> None:
    assert pair.env.roost("session", "list", "--json").json() == []
    assert mine(pair.schroot("-l", "--all-sessions").out, pair) == ""
    assert REPO.exists()
