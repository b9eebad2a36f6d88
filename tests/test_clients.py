"""Debian's schroot clients, the real tools, against roost and against schroot 1.6 on one Debian root.

autopkgtest (with its schroot virtualisation server) and piuparts (``--schroot``)
find schroot on ``PATH``: run once as they are, they use ``/usr/bin/schroot``
and a temporary ``directory`` chroot with ``union-type=overlay`` in
/etc/schroot/chroot.d; run again with a directory first on ``PATH`` that holds
a ``schroot`` starting roost's front door (the one line of configuration
docs/schroot.md gives each client), they use the same chroot imported as a
roost image. Each tool's own verdict (its exit code, its summary) must be the
same both ways, and nothing may be left: no session of either, no mount, no
process. Then the command-line details those tools rely on (``--config``,
``-o``, long ``--session-name``s, ``-l``, ``-i``, ``--location`` for every form
of name) are compared one by one. Where roost differs on purpose, the
difference is named in ``DELIBERATE`` (and in docs/schroot.md) and asserted.

The tools reach the Debian archive (apt dependencies, piuparts' upgrade test),
as tests/test_sbuild.py does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from roost.schroot.sessionnames import session_id
from tests.support.env import REPO, Env, assert_no_leaks, make_env, need_root, procs_below
from tests.support.mounts import mounts_under
from tests.support.sbuild import sbuild_info

pytestmark = pytest.mark.slow

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
DEMO = REPO / "tests" / "packages" / "roost-demo"

#: Differences kept on purpose (docs/schroot.md, "Deliberate differences"); each is asserted below.
DELIBERATE = {
    "config-type": "--config says type=roost-BACKEND (a roost image is no directory chroot); the other keys agree",
    "option-keys": "-o takes the keys of roost-schroot's own table (command-prefix), the same for every image",
    "long-session-names": (
        "a session name longer than 64 characters is kept under a roost id (55 characters, a dash, 8 hex "
        "digits of its SHA-256): every command naming it reaches the session; -l --all-sessions and "
        "SCHROOT_SESSION_ID show the id"
    ),
}


@dataclass
class Outcome:
    code: int
    out: str
    err: str


@dataclass
class Pair:
    """One chroot known to schroot and to roost under the same name, and a PATH for each."""

    name: str
    alias: str
    base: Path
    env: Env
    shim: Path  # a directory holding `schroot`: roost's front door
    debs: Path
    conf: Path  # schroot's chroot.d file
    environ: dict[str, str] = field(default_factory=dict)

    def path(self, roost: bool) -> str:
        return f"{self.shim}:{self.environ['PATH']}" if roost else self.environ["PATH"]

    def run(self, argv: list[str], *, roost: bool, cwd: str = "/", timeout: float = 120) -> Outcome:
        env = self.environ | {"PATH": self.path(roost)}
        proc = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        return Outcome(proc.returncode, proc.stdout, proc.stderr)

    def both(self, *argv: str) -> tuple[Outcome, Outcome]:
        return self.run(["schroot", *argv], roost=False), self.run(["schroot", *argv], roost=True)

    def roost_sessions(self) -> list[str]:
        return [s["id"] for s in self.env.roost("session", "list", "--json").json()]

    def schroot_sessions(self) -> list[str]:
        listed = subprocess.run(["schroot", "-l", "--all-sessions"], capture_output=True, text=True).stdout.split()
        return [s.split(":", 1)[1] for s in listed if s.split(":", 1)[1].startswith((self.name, "roost-clients-s"))]

    def journal(self) -> list[dict[str, object]]:
        text = (self.env.state / "journal.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]


def same(a: Outcome, b: Outcome) -> None:
    assert (a.code, a.out) == (b.code, b.out), f"schroot: {a}\nroost:   {b}"


def _build_deb(out: Path, package: str, version: str, *, leftover: bool = False) -> Path:
    """A real .deb made with dpkg-deb: a shell-script hello, or a package that leaves a file after purge."""
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    tree = out / f"{package}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr" / "bin").mkdir(parents=True)
    (tree / "usr" / "share" / "doc" / package).mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
        "Maintainer: roost test suite <roost@localhost>\nInstalled-Size: 8\nSection: devel\nPriority: optional\n"
        f"Description: {package} for piuparts through roost-schroot\n"
        " Built by tests/test_clients.py.\n"
    )
    (tree / "usr" / "bin" / package).write_text('#!/bin/sh\necho "Hello, world!"\n')
    (tree / "usr" / "bin" / package).chmod(0o755)
    (tree / "usr" / "share" / "doc" / package / "copyright").write_text("roost test package; GPL-3+.\n")
    if leftover:  # piuparts must fail it: purging leaves a file behind
        (tree / "DEBIAN" / "postinst").write_text("#!/bin/sh\nset -e\necho left > /var/lib/roost-demo-leftover\n")
        (tree / "DEBIAN" / "postinst").chmod(0o755)
    deb = out / f"{package}_{version}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(deb)], check=True, capture_output=True)
    return deb


def _end_schroot_sessions(prefixes: tuple[str, ...]) -> None:
    listed = subprocess.run(["schroot", "-l", "--all-sessions"], capture_output=True, text=True).stdout.split()
    for line in listed:
        if line.split(":", 1)[-1].startswith(prefixes):
            subprocess.run(["schroot", "-e", "-f", "-c", line], capture_output=True)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, debian_tarball: Path) -> Iterator[Pair]:
    need_root()
    for tool in ("schroot", "autopkgtest", "piuparts", "lsof", "dpkg-deb"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (apt-get install schroot autopkgtest piuparts)")
    base = Path(tempfile.mkdtemp(prefix="roost-clients-", dir=tmp_path_factory.getbasetemp()))
    name = f"roost-clients-chroot-{os.getpid()}"  # piuparts' session names for it are longer than 64
    alias = f"{name}-alias"
    root = base / "root"
    root.mkdir()
    subprocess.run(
        ["tar", "--zstd", "-xf", str(debian_tarball), "-C", str(root), "--numeric-owner", "--xattrs",
         "--xattrs-include=*"],
        check=True,
    )  # fmt: skip
    (base / "union").mkdir()
    conf = Path("/etc/schroot/chroot.d") / name
    conf.write_text(
        f"[{name}]\n"
        "description=roost clients test\n"
        "type=directory\n"
        f"directory={root}\n"
        "union-type=overlay\n"
        f"union-overlay-directory={base / 'union'}\n"
        "users=root\n"
        "groups=root,sbuild\n"
        "root-users=root\n"
        "root-groups=root,sbuild\n"
        f"aliases={alias}\n"
        # nothing of the host's that changes under piuparts' feet (the sbuild profile binds the
        # host's build directory, which other builds on this host write into)
        "profile=minimal\n"
    )
    env = make_env(base / "roost")
    shim = base / "shim"
    shim.mkdir()
    exports = " ".join(f"{k}={v}" for k, v in env.environ.items() if k.startswith("ROOST_") or k == "PYTHONPATH")
    (shim / "schroot").write_text(f'#!/bin/sh\nexport {exports}\nexec {sys.executable} -m roost schroot "$@"\n')
    (shim / "schroot").chmod(0o755)
    debs = base / "debs"
    debs.mkdir()
    p = Pair(name=name, alias=alias, base=base, env=env, shim=shim, debs=debs, conf=conf)
    p.environ = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                 "LANG": "C.UTF-8", "USER": "root", "LOGNAME": "root"}  # fmt: skip
    try:
        imported = env.roost("image", "import-schroot", str(conf), timeout=600)
        assert imported.code == 0, imported.err
        # the package lists, through each one's source chroot (roost: generation 2)
        for roost in (False, True):
            r = p.run(["schroot", "-c", f"source:{name}", "-u", "root", "--", "apt-get", "-q", "update"],
                      roost=roost, timeout=600)  # fmt: skip
            assert r.code == 0, (roost, r.err[-2000:])
        assert env.roost("image", "info", name, "--json").json()["current"] == 2
        _build_deb(debs, "hello", "2.10-3+roost1")
        _build_deb(debs, "roost-demo-leftover", "1.0", leftover=True)
        yield p
    finally:
        _end_schroot_sessions((name, "roost-clients-s"))
        conf.unlink()
        if env.state.exists():
            for sid in p.roost_sessions():
                env.roost("session", "end", sid, "--force")
        assert_no_leaks(base)
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=True)


def _nothing_left(pair: Pair) -> None:
    """No session of either, no mount, no process left by a tool's run."""
    assert pair.roost_sessions() == [] and pair.schroot_sessions() == []
    assert mounts_under(pair.env.run / "mnt") == []
    assert [p for p in os.listdir(pair.env.run / "mnt") if not p.startswith(".")] == []
    schroot_mounts = [m for m in mounts_under("/run/schroot/mount") if f"/{pair.name}" in m]
    assert schroot_mounts == []
    assert procs_below(str(pair.env.run)) == [] and procs_below(str(pair.base)) == []
    assert [p for p in procs_below("/run/schroot/mount") if pair.name in _root_of(p)] == []


def _root_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/root")
    except OSError:
        return ""  # gone meanwhile


def _begins_since(pair: Pair, mark: int) -> list[dict[str, object]]:
    return [e for e in pair.journal()[mark:] if e["operation"] == "session begin" and e["image"] == pair.name]


# --- autopkgtest ---------------------------------------------------------------------------------

#: the verdicts autopkgtest gives the demo package's tests (tests/packages/roost-demo/debian/tests/control)
DEMO_VERDICTS = {
    "apt-dependency": "PASS",
    "sees-no-traces": "PASS",
    "runs-as-root": "PASS",
    "artifacts": "PASS",
    "expected-failure": "FAIL",
}


def _summary(out: Path) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in (out / "summary").read_text().splitlines() if line.strip()}


def test_autopkgtest_gives_the_same_verdicts_through_roost(pair: Pair) -> None:
    """`autopkgtest … -- schroot NAME`: apt dependencies, needs-root, artifacts, a revert between tests, a failure."""
    results = {}
    mark = len(pair.journal())
    for roost in (False, True):
        out = pair.base / f"autopkgtest-{'roost' if roost else 'schroot'}"
        argv = ["autopkgtest", "-B", "--user=nobody", "-o", str(out), f"{DEMO}/", "--", "schroot", pair.name]
        r = pair.run(argv, roost=roost, cwd=str(pair.base), timeout=900)
        results[roost] = r
        # the tool's own verdict: 4, at least one test failed (the one that fails on purpose)
        assert r.code == 4, (roost, r.out[-3000:], r.err[-3000:])
        assert _summary(out) == DEMO_VERDICTS, (roost, (out / "summary").read_text())
        assert (out / "artifacts" / "report.txt").read_text() == "made in the testbed by nobody\n"
        assert (out / "artifacts" / "nested" / "numbers").read_text().splitlines() == [str(i) for i in range(1, 1001)]
        log = (out / "log").read_text()
        assert "apt-dependency: hello is installed and greets" in log and "sees-no-traces: clean testbed" in log
        _nothing_left(pair)
    assert results[False].code == results[True].code
    # roost did what autopkgtest asked of its schroot: a named session, then a revert (end, begin again)
    begins = _begins_since(pair, mark)
    assert len(begins) == 2 and all(b["kind"] == "ordinary" and b["generation"] == 2 for b in begins), begins
    ends = [e for e in pair.journal()[mark:] if e["operation"] == "session end" and e["result"] == "ok"]
    assert {e["session"] for e in ends} >= {b["session"] for b in begins}


def test_autopkgtest_as_an_ordinary_user_through_sudo(pair: Pair) -> None:
    """What debci does: autopkgtest run by an ordinary user, here with schroot-sudo-path's `schroot`.

    The user is in group sbuild, which the chroot's root-groups name: schroot (setuid) and
    roost (through sudo) both give them root on the testbed, and the verdicts agree.
    """
    from tests.support import sudo

    inst = sudo.make_installation("roost-t-cl")
    try:
        tester = inst.add_user("tester", ["sbuild"])
        inst.allow_sudo()
        r = inst.root("image", "import-schroot", str(pair.conf), timeout=600)
        assert r.code == 0, r.err
        r = inst.root(
            "schroot", "-c", f"source:{pair.name}", "-u", "root", "--", "apt-get", "-q", "update", timeout=600
        )
        assert r.code == 0, r.err
        sudo_path = inst.base / "schroot-sudo-path"  # what scripts/install makes in /usr/local/lib/roost
        sudo_path.mkdir()
        (sudo_path / "schroot").write_text(f'#!/bin/sh\nexec sudo -n {inst.schroot_bin} "$@"\n')
        (sudo_path / "schroot").chmod(0o755)
        home = inst.home(tester)
        shutil.copytree(DEMO, home / "roost-demo")
        subprocess.run(["chown", "-R", f"{tester}:", str(home / "roost-demo")], check=True)
        summaries = {}
        for roost in (False, True):
            out = home / f"out-{'roost' if roost else 'schroot'}"
            path = f"{sudo_path}:/usr/local/bin:/usr/bin:/bin" if roost else "/usr/local/bin:/usr/bin:/bin"
            r = inst.as_user(
                tester, "env", f"PATH={path}", "autopkgtest", "-B", "--user=nobody", "-o", str(out),
                f"{home}/roost-demo/", "--", "schroot", pair.name, timeout=900,
            )  # fmt: skip
            assert r.code == 4, (roost, r.out[-3000:], r.err[-3000:])
            summaries[roost] = _summary(out)
            assert (out / "artifacts" / "report.txt").read_text() == "made in the testbed by nobody\n"
        # needs-root tests ran (a testbed without root would SKIP them): root-groups gave root on both
        assert summaries[False] == summaries[True] == DEMO_VERDICTS
        journal = [json.loads(line) for line in (inst.state / "journal.jsonl").read_text().splitlines()]
        begins = [e for e in journal if e["operation"] == "session begin" and e["user"] == tester]
        assert len(begins) == 2 and all(e["kind"] == "ordinary" for e in begins)
        assert json.loads(inst.root_ok("session", "list", "--json")) == []
        assert mounts_under(inst.runtime / "mnt") == [] and pair.schroot_sessions() == []
    finally:
        sudo.remove(inst)


# --- piuparts ------------------------------------------------------------------------------------


def _piuparts(pair: Pair, deb: Path, *, roost: bool, extra: tuple[str, ...] = ()) -> Outcome:
    # Sessions (schroot's profiles, roost's always) have the host's /sys, which piuparts would compare
    # before and after like the rest of the tree: on a busy host it changes (a device, a mount elsewhere).
    argv = ["piuparts", "-I", "/sys/.*", "-d", SUITE, "-m", MIRROR, *extra, "--schroot", pair.name, str(deb)]
    return pair.run(argv, roost=roost, cwd=str(pair.base), timeout=900)


def test_piuparts_installs_purges_and_upgrades_through_roost(pair: Pair) -> None:
    """`piuparts --schroot NAME hello.deb`: install and purge, then upgrade from the archive's hello, then purge."""
    deb = next(pair.debs.glob("hello_*.deb"))
    mark = len(pair.journal())
    for roost in (False, True):
        r = _piuparts(pair, deb, roost=roost)
        log = r.out + r.err
        assert r.code == 0, (roost, log[-4000:])
        for verdict in ("PASS: Installation and purging test.", "PASS: Installation, upgrade and purging tests.",
                        "PASS: All tests."):  # fmt: skip
            assert verdict in log, (roost, verdict)
        _nothing_left(pair)
        if roost:
            # piuparts named its session CHROOT-<uuid1>-piuparts, longer than roost's names: mapped, not refused
            given = re.search(r"'--session-name', '([^']+)'", log)
            assert given is not None and len(given.group(1)) > 64
            begins = _begins_since(pair, mark)
            assert [b["session"] for b in begins] == [session_id(given.group(1))]
            assert "--preserve-environment" in log  # every command piuparts ran came through -p


def test_piuparts_fails_the_same_package_through_roost(pair: Pair) -> None:
    deb = next(pair.debs.glob("roost-demo-leftover_*.deb"))
    for roost in (False, True):
        r = _piuparts(pair, deb, roost=roost, extra=("--no-upgrade-test",))
        log = r.out + r.err
        assert r.code == 1, (roost, log[-4000:])
        assert "FAIL: Package purging left files on system" in log, (roost, log[-4000:])
        assert "/var/lib/roost-demo-leftover" in log
        _nothing_left(pair)


# --- the command line those tools rely on --------------------------------------------------------


def _config(out: str) -> dict[str, dict[str, str]]:
    """`schroot --config` as autopkgtest reads it: sections of key=value lines."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in out.splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line and not line.startswith("#") and current is not None:
            key, _, value = line.partition("=")
            current[key] = value
    return sections


#: --config keys whose values agree with schroot's for the same chroot
CONFIG_KEYS = ("aliases", "command-prefix", "description", "environment-filter", "groups", "preserve-environment",
               "profile", "root-groups", "root-users", "union-type", "users")  # fmt: skip


def test_config_agrees_where_autopkgtest_reads_it(pair: Pair) -> None:
    for name in (pair.name, f"chroot:{pair.name}", pair.alias, f"chroot:{pair.alias}"):
        s, r = pair.both("--config", "--chroot", name)
        assert s.code == r.code == 0, (s, r)
        theirs, ours = _config(s.out), _config(r.out)
        assert list(theirs) == list(ours) == [pair.name]  # an alias prints under the chroot's own name
        assert {k: theirs[pair.name][k] for k in CONFIG_KEYS} == {k: ours[pair.name][k] for k in CONFIG_KEYS}
        # DELIBERATE["config-type"]: not a directory chroot (autopkgtest would refuse one without a union type)
        assert (theirs[pair.name]["type"], ours[pair.name]["type"]) == ("directory", "roost-overlay")
    for name in (f"source:{pair.name}", f"source:{pair.alias}"):
        s, r = pair.both("--config", "-c", name)
        assert s.code == r.code == 0 and _config(s.out) == _config(r.out) == {}  # schroot prints no source chroot
    for name in ("no-such-chroot", f"{pair.name}-source", f"session:{pair.name}"):
        s, r = pair.both("--config", "-c", name)
        assert (s.code, s.out) == (r.code, "") == (1, ""), (name, s, r)
    assert "config-type" in DELIBERATE


def test_list_info_location_and_config_for_every_form_of_name(pair: Pair) -> None:
    sid = f"roost-clients-s{os.getpid()}"
    same(*pair.both("-b", "-c", pair.name, "-n", sid))
    try:
        forms = [pair.name, f"chroot:{pair.name}", f"source:{pair.name}", pair.alias, f"chroot:{pair.alias}",
                 f"source:{pair.alias}", f"{pair.alias}-source", f"chroot:{pair.alias}-source",
                 f"{pair.name}-source", f"chroot:{pair.name}-source", f"session:{sid}", sid, f"chroot:{sid}",
                 f"source:{sid}", "no-such-chroot", "session:no-such-session"]  # fmt: skip
        for form in forms:
            for action in ("-l", "-i", "--location", "--config"):
                s, r = pair.both(action, "-c", form)
                assert s.code == r.code, (action, form, s, r)
                if s.code != 0:
                    assert s.out == r.out == "", (action, form)
                    continue
                if action == "-l":
                    assert s.out == r.out == f"{form}\n"
                elif action == "-i":
                    theirs, ours = sbuild_info(s.out), sbuild_info(r.out)
                    if form.startswith("session:"):
                        for info in theirs + ours:
                            assert os.path.isdir(info.pop("Location"))
                    assert theirs == ours, (form, theirs, ours)
                elif action == "--location":
                    if form.startswith("session:"):
                        assert os.path.isdir(s.out.strip()) and os.path.isdir(r.out.strip())
                    else:
                        assert s.out == r.out, (form, s.out, r.out)
        # several names at once, and every name form -l takes, as schroot echoes them
        names = ["-c", pair.name, "-c", f"source:{pair.alias}", "-c", f"session:{sid}", "-c", f"{pair.alias}-source"]
        same(*pair.both("-l", *names))
        s, r = pair.both("-l", "--all-sessions")
        assert f"session:{sid}\n" in s.out and f"session:{sid}\n" in r.out
    finally:
        same(*pair.both("-e", "-c", sid))
    _nothing_left(pair)


def test_long_session_names_as_piuparts_generates_them(pair: Pair) -> None:
    long = f"{pair.name}-{uuid.uuid1()}-piuparts"
    assert len(long) > 64
    ours = session_id(long)
    assert len(ours) == 64 and ours.startswith(long[:55])
    same(*pair.both("--begin-session", "--chroot", pair.name, "--session-name", long))  # both print the name given
    try:
        same(*pair.both("-l", "-c", f"session:{long}"))
        s, r = pair.both("--chroot", f"session:{long}", "--location")
        assert s.code == r.code == 0 and os.path.isdir(s.out.strip()) and os.path.isdir(r.out.strip())
        assert r.out.strip().endswith(f"/mnt/{ours}/root")
        run = ("--preserve-environment", "--run-session", "--chroot", f"session:{long}", "--directory", "/", "-u",
               "root", "--")  # fmt: skip
        same(*pair.both(*run, "sh", "-c", "echo data > /tmp/long; cat /tmp/long; pwd"))
        same(*pair.both("-r", "-c", long, "--", "cat", "/tmp/long"))  # a bare name: session: first, as schroot
        theirs, mine = pair.both("-i", "-c", f"session:{long}")
        assert [i["Name"] for i in sbuild_info(theirs.out)] == [long]
        # DELIBERATE["long-session-names"]: roost's own listings and variables show the id
        assert [i["Name"] for i in sbuild_info(mine.out)] == [ours]
        s, r = pair.both("-r", "-c", long, "--", "sh", "-c", "echo $SCHROOT_SESSION_ID")
        assert (s.code, s.out, r.code, r.out) == (0, f"{long}\n", 0, f"{ours}\n")
        assert f"session:{ours}\n" in pair.run(["schroot", "-l", "--all-sessions"], roost=True).out
        assert pair.roost_sessions() == [ours]
        # a second session of the same name is refused by both
        s, r = pair.both("-b", "-c", pair.name, "-n", long)
        assert s.code == r.code == 1 and r.out == s.out == ""
    finally:
        s, r = pair.both("--end-session", "--chroot", f"session:{long}")
    same(s, r)
    assert s.code == 0
    same(*pair.both("-e", "-c", long))  # gone: 1 for both
    # a name no file system takes is refused by both
    s, r = pair.both("-b", "-c", pair.name, "-n", "x" * 300)
    assert s.code == r.code == 1
    _nothing_left(pair)
    assert "long-session-names" in DELIBERATE


def test_option_keys(pair: Pair) -> None:
    # a key nobody allows: refused by both when a session begins or runs, ignored by listings
    same(*pair.both("-o", "foo=bar", "-c", pair.name, "--", "true"))
    s, r = pair.both("--option=foo=bar", "-c", pair.name, "--", "true")
    assert s.code == r.code == 1 and "foo" in r.err and len(r.err.splitlines()) == 1
    same(*pair.both("-l", "-o", "foo=bar", "-c", pair.name))
    same(*pair.both("-i", "-o", "foo", "-c", "no-such-chroot"))
    # DELIBERATE["option-keys"]: roost-schroot's table has command-prefix; schroot allows no key of that name
    script = ("sh", "-c", "echo ${ROOST_PREFIXED:-unset}")
    s, r = pair.both("-o", "command-prefix=env,ROOST_PREFIXED=yes", "-c", pair.name, "--", *script)
    assert (s.code, r.code, r.out) == (1, 0, "yes\n"), (s, r)
    sid = pair.run(["schroot", "-b", "-c", pair.alias, "-o", "command-prefix=env,ROOST_PREFIXED=kept"], roost=True)
    assert sid.code == 0, sid.err
    session = sid.out.strip()
    try:
        r = pair.run(["schroot", "-r", "-c", session, "--", *script], roost=True)
        assert (r.code, r.out) == (0, "kept\n")  # the session keeps the prefix it began with
        r = pair.run(["schroot", "-r", "-c", session, "-o", "command-prefix=nice", "--", "true"], roost=True)
        assert r.code == 1 and "applies only when a session begins" in r.err
        r = pair.run(["schroot", "-b", "-c", pair.name, "-o", "command-prefix=a,,b"], roost=True)
        assert r.code == 1 and "command-prefix" in r.err and r.out == ""
    finally:
        assert pair.run(["schroot", "-e", "-c", session], roost=True).code == 0
    _nothing_left(pair)
    assert "option-keys" in DELIBERATE


def test_nothing_is_left(pair: Pair) -> None:
    _nothing_left(pair)
    assert subprocess.run(["schroot", "-l"], capture_output=True, text=True).returncode == 0
