"""Several hosts over SSH: a real sshd on 127.0.0.1, state roots behind it as hosts.

Every headless command is run through ``--host`` and compared with the same
command run locally; images are pushed and pulled between backends of the
same kind (overlay, btrfs, zfs) and across kinds, and each copy is checked
by exporting the generation on both sides (exports are byte-for-byte
reproducible); transfers are killed mid-way (the sender, ssh, the receiver)
and recovered; the receiver's compare-and-swap refuses a transfer planned
against a generation it no longer has.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import pools
from tests.support.env import REPO, Env, assert_no_leaks, make_env, need_root
from tests.support.sshd import Sshd, write_hosts

# --- the server, the hosts -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    need_root()
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Fleet:
    """State roots as hosts behind one sshd; each env reaches the others by name (a, b, c …)."""

    sshd: Sshd
    base: Path
    envs: dict[str, Env]
    hosts_file: Path
    control: Path
    extra_hosts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Env:
        return self.envs[name]

    def add_host(self, name: str, env: Env, **entry: Any) -> None:
        """Another hosts.yaml entry (e.g. the same state root with a crash point armed there)."""
        self.extra_hosts[name] = self.sshd.entry(env, **entry)
        self.write()

    def write(self) -> None:
        hosts = {name: self.sshd.entry(env) for name, env in self.envs.items()}
        hosts.update(self.extra_hosts)
        write_hosts(self.hosts_file, hosts)


def _cleanup(env: Env) -> None:
    r = env.roost("session", "list", "--json")
    for s in r.json() if r.code == 0 else []:
        env.roost("session", "end", "--force", s["id"])
    env.roost("session", "recover", "--all")
    r = env.roost("image", "list", "--json")
    for i in r.json() if r.code == 0 else []:
        env.ok("image", "remove", "--force", i["name"])


def make_fleet(sshd: Sshd, base: Path, bases: dict[str, Path], configs: dict[str, str] | None = None) -> Fleet:
    envs = {}
    for name, where in bases.items():
        env = make_env(where)
        if configs and name in configs:
            with open(env.config, "a", encoding="utf-8") as f:
                f.write(configs[name])
        envs[name] = env
    control = Path(tempfile.mkdtemp(prefix="roost-ssh-"))  # short: a socket's path has 107 bytes at most
    fleet = Fleet(sshd, base, envs, base / "hosts.yaml", control)
    fleet.write()
    for env in envs.values():
        env.environ.update(ROOST_HOSTS=str(fleet.hosts_file), ROOST_SSH_DIR=str(fleet.control))
    return fleet


def close_fleet(fleet: Fleet) -> None:
    fleet.sshd.close_masters(fleet.control)
    for env in fleet.envs.values():
        _cleanup(env)
    for env in fleet.envs.values():
        assert_no_leaks(env.base)
    deadline = time.monotonic() + 10
    while fleet.sshd.sessions() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fleet.sshd.sessions() == [], "ssh connections outlived the test"
    for name in os.listdir(fleet.control):
        os.unlink(fleet.control / name)  # lock files of the master connections
    fleet.control.rmdir()


@pytest.fixture
def fleet(sshd: Sshd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    base = Path(tempfile.mkdtemp(prefix="roost-fleet-", dir=tmp_path_factory.getbasetemp()))
    f = make_fleet(sshd, base, {n: base / n for n in ("a", "b", "c")})
    try:
        yield f
    finally:
        close_fleet(f)


def busybox(fleet: Fleet, busybox_tree: Path, *names: str, backend: str | None = None) -> None:
    for name in names:
        extra = ("--backend", backend) if backend else ()
        fleet[name].ok("image", "create", "bb", "--from-dir", str(busybox_tree), *extra)


def promote(env: Env, script: str, message: str = "", image: str = "bb") -> int:
    sid = env.begin(image, "--maintenance")
    r = env.sh(sid, script)
    assert r.code == 0, r
    env.ok("session", "promote", sid, "-m", message or script[:40])
    return current(env, image)


def current(env: Env, image: str = "bb") -> int:
    return int(env.roost("image", "info", image, "--json").json()["current"])


def history(env: Env, image: str = "bb") -> list[dict[str, Any]]:
    """What must travel with a generation: number, parent, time, author, message, session."""
    keys = ("generation", "parent", "created", "author", "message", "session", "current")
    return [{k: g[k] for k in keys} for g in env.roost("image", "history", image, "--json").json()]


def exported(env: Env, generation: int, image: str = "bb") -> bytes:
    """The generation as ``image export`` writes it: the same tree gives the same bytes."""
    path = env.base / f"export-{generation}-{time.monotonic_ns()}.tar"
    env.ok("image", "export", image, str(path), "--generation", str(generation))
    try:
        return path.read_bytes()
    finally:
        path.unlink()


def _tree_of(env: Env, tar: bytes, where: str) -> Any:
    from tests.support.manifest import manifest

    root = env.base / where
    root.mkdir()
    subprocess.run(
        ["tar", "-x", "-C", str(root), "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"],
        input=tar,
        check=True,
    )
    try:
        m = manifest(root)
        return {p: e.__class__(**{**e.__dict__, "mtime_ns": (e.mtime_ns or 0) // 10**9}) for p, e in m.entries.items()}
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=True)


def same_image(sender: Env, receiver: Env, image: str = "bb", *, seconds: bool = False) -> None:
    """The receiver has the sender's current generation with its history, tree for tree.

    With *seconds*, times are compared to the second (squashfs keeps no more).
    """
    mine, theirs = history(sender, image), history(receiver, image)
    got = {g["generation"]: g for g in theirs}
    chain = []
    n: int | None = current(sender, image)
    by_number = {g["generation"]: g for g in mine}
    while n is not None and n in by_number:
        chain.append(n)
        n = by_number[n]["parent"]
    for n in chain:
        if n not in got:
            break
        assert {k: v for k, v in got[n].items() if k != "current"} == {
            k: v for k, v in by_number[n].items() if k != "current"
        }
        mine_tar, theirs_tar = exported(sender, n, image), exported(receiver, n, image)
        if seconds:
            assert _tree_of(sender, mine_tar, "m") == _tree_of(receiver, theirs_tar, "t"), f"generation {n} differs"
        else:
            assert mine_tar == theirs_tar, f"generation {n} differs"
    assert current(receiver, image) == current(sender, image)


def consistent(env: Env) -> None:
    r = env.roost("doctor", "--check")
    assert r.code == 0, r.out + r.err
    for image in (env.state / "images").iterdir():
        for sub in ("staging", "trash"):
            assert not (image / sub).exists() or os.listdir(image / sub) == [], (image, sub)
    assert os.listdir(env.state / "staging") == [] and os.listdir(env.state / "trash") == []
    stage = env.run / "mnt" / ".stage"  # scratch mounts of views
    assert not stage.exists() or os.listdir(stage) == []


# --- hosts.yaml and HOST arguments (no connection) --------------------------------------------------


def test_hosts_yaml_defaults_urls_and_errors(tmp_path: Path) -> None:
    from core import hosts
    from core.errors import BadInput, ConfigError, NotFound

    path = tmp_path / "hosts.yaml"
    path.write_text(
        "defaults:\n  user: builder\n  command: sudo -n roost\n  ssh-options: {ConnectTimeout: 5}\n"
        "hosts:\n"
        "  b1: {address: build1.example.org}\n"
        "  b2: {address: 10.0.0.2, port: 2222, user: root, command: [roost, --quiet], ssh-options: {Port: 1}}\n"
    )
    environ = {"ROOST_HOSTS": str(path)}
    b1 = hosts.resolve("b1", environ)
    assert (b1.address, b1.user, b1.port, b1.command) == (
        "build1.example.org",
        "builder",
        None,
        ("sudo", "-n", "roost"),
    )
    assert dict(b1.options) == {"ConnectTimeout": "5"}
    b2 = hosts.resolve("b2", environ)
    assert (b2.user, b2.port, b2.command, b2.destination) == ("root", 2222, ("roost", "--quiet"), "root@10.0.0.2")
    assert dict(b2.options) == {"ConnectTimeout": "5", "Port": "1"}
    u = hosts.resolve("ssh://alice@[::1]:2022", environ)
    assert (u.address, u.user, u.port, u.command) == ("::1", "alice", 2022, ("sudo", "-n", "roost"))
    u = hosts.resolve("ssh://example.org", environ)
    assert (u.address, u.user, u.port) == ("example.org", "builder", None)
    with pytest.raises(NotFound):
        hosts.resolve("b3", environ)
    for bad in ("ssh://-oProxyCommand=x", "ssh://a b", "ssh://h:99999", "ssh://h/path", "../x"):
        with pytest.raises(BadInput):
            hosts.resolve(bad, environ)
    for text, why in [
        ("hosts: {x: {address: -oProxyCommand=evil}}", "invalid address"),
        ("hosts: {x: {address: h, colour: red}}", "unknown key 'colour'"),
        ("hosts: {x: {address: h, ssh-options: {ControlPath: /tmp/x}}}", "set by roost"),
        ("hosts: {x: {address: h, port: 0}}", "port must be"),
        ("hosts: {x: {address: h, command: []}}", "command must be"),
        ("hosts: {'bad name': {address: h}}", "invalid host name"),
        ("hostz: {}", "unknown key 'hostz'"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=why):
            hosts.resolve("x", environ)


def test_remote_words_are_quoted_for_the_remote_shell() -> None:
    from core import ssh

    words = ["session", "run", "s", "--", "sh", "-c", "echo \"$HOME\" 'it''s'; rm -rf / #", "", "a\nb", "-x"]
    line = ssh.quote(words)
    out = subprocess.run(
        ["sh", "-c", f'for w in {line}; do printf "<%s>" "$w"; done'], capture_output=True, text=True, check=True
    ).stdout
    assert out == "".join(f"<{w}>" for w in words)


def test_an_unknown_or_bad_host_is_one_line(env: Env) -> None:
    hosts = env.base / "hosts.yaml"
    hosts.write_text("hosts: {}\n")
    env.environ.update(ROOST_HOSTS=str(hosts), ROOST_SSH_DIR=str(env.base / "ssh"))
    r = env.roost("--host", "nosuch", "image", "list")
    assert (r.code, r.out) == (4, "") and r.err.count("\n") == 1 and "no host 'nosuch'" in r.err
    r = env.roost("--host", "ssh://-oProxyCommand=touch", "image", "list")
    assert r.code == 2 and r.err.count("\n") == 1, r
    port = subprocess.run(
        [sys.executable, "-c", "from tests.support.sshd import free_port; print(free_port())"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout.strip()
    r = env.roost("--host", f"ssh://root@127.0.0.1:{port}", "image", "list")
    assert r.code == 5 and r.err.count("\n") == 1 and "cannot reach" in r.err, r
    hosts.write_text("hosts: {x: {address: h, port: nope}}\n")
    r = env.roost("--host", "x", "image", "list")
    assert r.code == 2 and "port must be" in r.err and r.err.count("\n") == 1


# --- every headless command, remote and local ----------------------------------------------------------

_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_PID = re.compile(r'"pid": \d+')


def normalized(text: str, env: Env) -> str:
    text = text.replace(str(env.base), "BASE")
    text = _TIME.sub("TIME", text)
    return _PID.sub('"pid": PID', text)


def test_every_headless_command_gives_the_same_output_and_exit_code_remotely(fleet: Fleet, busybox_tree: Path) -> None:
    """The same sequence of commands on twin hosts: on a through --host a, on b locally.

    (``batch`` with --host runs the plan file of this host on the others: see its own test.)
    """
    remote, local = fleet["a"], fleet["b"]
    export = "{base}/bb.tar"
    commands: list[tuple[tuple[str, ...], str | None]] = [
        (("--version",), None),
        (("image", "create", "bb", "--from-dir", str(busybox_tree)), None),
        (("image", "list"), None),
        (("image", "list", "--json"), None),
        (("--json", "image", "info", "bb"), None),
        (("image", "info", "bb"), None),
        (("image", "history", "bb", "--json"), None),
        (("session", "begin", "bb", "--name", "s1", "--json"), None),
        (("session", "begin", "bb", "--name", "s1"), None),  # exit 3: it exists
        (("session", "list", "--json"), None),
        (("session", "list"), None),
        (("session", "info", "s1", "--json"), None),
        (("session", "run", "s1", "--", "sh", "-c", "echo out; echo err >&2; exit 3"), None),
        (("session", "run", "s1", "-d", "/", "--", "cat"), "piped input\n"),
        (("session", "run", "s1", "--", "sh", "-c", 'printf "[%s]" "$@"', "x", "a b", "'q'", "$HOME", ""), None),
        (("run", "bb", "--", "sh", "-c", "exit 4"), None),
        (("session", "begin", "bb", "--maintenance", "--name", "m1"), None),
        (("session", "run", "m1", "--", "sh", "-c", "echo two > /etc/version"), None),
        (("locks", "--json"), None),
        (("session", "promote", "m1", "-m", "two"), None),
        (("session", "promote", "s1"), None),  # exit 3: not a fast-forward
        (("image", "history", "bb"), None),
        (("image", "rollback", "bb"), None),
        (("image", "rollback", "bb", "2"), None),
        (("image", "gc", "bb", "--keep", "1", "--dry-run", "--json"), None),
        (("image", "export", "bb", export, "--json"), None),
        (("image", "convert", "bb", "--backend", "dir", "--to", "bbdir", "--json"), None),
        (("image", "remove", "bbdir"), None),
        (("image", "create", "bbtar", "--from-tar", export), None),
        (("image", "history", "bbtar", "--json"), None),
        (("image", "remove", "bbtar", "--force"), None),
        (("image", "import-schroot", "--all", "--dry-run", "--schroot-dir", "{base}"), None),
        (("session", "recover", "s1", "--json"), None),
        (("session", "recover", "--all"), None),
        (("schroot", "-l"), None),
        (("profile", "list", "--json"), None),
        (("profile", "show", "minimal"), None),
        (("doctor", "--backends", "--json"), None),
        (("doctor", "--check"), None),
        (("session", "end", "s1"), None),
        (("session", "end", "s1"), None),  # exit 4: gone
        (("image", "info", "no/such"), None),  # exit 2
        (("image", "gc", "bb", "--keep", "0"), None),  # exit 2
        (("image", "nosuchcommand"), None),  # exit 2 (argparse)
        (("locks",), None),
    ]
    for argv, stdin in commands:
        outputs = []
        for env, prefix in ((remote, ("--host", "a")), (local, ())):
            args = [a.replace("{base}", str(env.base)) for a in argv]
            r = env.roost(*prefix, *args, input=stdin)
            outputs.append((r.code, normalized(r.out, env), normalized(r.err, env)))
        assert outputs[0] == outputs[1], (argv, outputs)
    # the summary: same images and sessions (times and load are of the moment)
    got, want = remote.roost("--host", "a", "summary", "--json"), local.roost("summary", "--json")
    assert got.code == want.code == 0
    g, w = got.json(), want.json()
    assert set(g) == set(w) and [i["name"] for i in g["images"]] == [i["name"] for i in w["images"]]
    # read-only commands against the very same state root give the very same bytes
    same = (("image", "list", "--json"), ("image", "history", "bb", "--json"), ("image", "inventory", "bb", "--json"))
    for argv in (*same, ("session", "list"), ("locks",), ("profile", "list")):
        assert remote.roost("--host", "a", *argv) == remote.roost(*argv), argv


def test_session_enter_gets_a_terminal_through_ssh(fleet: Fleet, busybox_tree: Path) -> None:
    busybox(fleet, busybox_tree, "b")
    sid = fleet["b"].begin("bb")
    pid, fd = pty.fork()
    if pid == 0:  # the child: roost on a terminal of its own
        os.chdir("/")
        os.execve(
            sys.executable, [sys.executable, "-m", "roost", "--host", "b", "session", "enter", sid], fleet["a"].environ
        )
    out = b""
    sent = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        if b"\x1b[6n" in out[-16:]:
            os.write(fd, b"\x1b[1;1R")  # busybox's line editor asks where the cursor is
            out = out.replace(b"\x1b[6n", b"")
        if not sent and out.rstrip().endswith(b"#"):
            os.write(fd, b"[ -t 0 ] && [ -t 1 ] && echo ON-A-TTY-$((6*7)); exit 5\n")
            sent = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert b"ON-A-TTY-42" in out, out
    assert os.waitstatus_to_exitcode(status) == 5
    fleet["b"].ok("session", "end", sid)


def test_repeated_commands_share_one_connection(fleet: Fleet, busybox_tree: Path) -> None:
    busybox(fleet, busybox_tree, "b")
    for _ in range(4):
        fleet["a"].ok("--host", "b", "image", "list")
    fleet["c"].ok("--host", "b", "session", "list")  # another caller of the same user: the same master
    sockets = [p for p in fleet.control.iterdir() if p.is_socket()]
    assert len(sockets) == 1
    assert len(fleet.sshd.sessions()) == 1, "one connection to the server for every command"


# --- push and pull --------------------------------------------------------------------------------------


def test_push_and_pull_copy_history_incrementally_overlay(fleet: Fleet, busybox_tree: Path) -> None:
    a, b, c = fleet["a"], fleet["b"], fleet["c"]
    busybox(fleet, busybox_tree, "a")
    r = a.roost("image", "push", "bb", "b", "--json")
    assert r.code == 0, r
    assert r.json()["created"] and r.json()["kinds"] == {"1": "full"}
    same_image(a, b)
    promote(a, "echo two > /etc/version; mkdir -p /opt/x/y; echo f > /opt/x/y/f; ln -s /etc/version /opt/link", "two")
    promote(
        a,
        "rm /bin/ls; mv /opt/x /opt/renamed; echo three >> /etc/version; "
        "setfattr -n user.colour -v blue /etc/version 2>/dev/null || true; "
        "ln /etc/version /etc/hardlink; chmod 4755 /etc/hardlink; mknod /dev/null2 c 1 3",
        "three",
    )
    r = a.roost("image", "push", "bb", "b", "--json")
    assert r.code == 0, r
    report = r.json()
    assert report["generations"] == [2, 3] and report["kinds"] == {"2": "layer", "3": "layer"} and report["base"] == 1
    assert report["bytes"] < 200_000, "only the layers travel"
    same_image(a, b)
    # pulled by a third host, from the second: the history travels on
    r = c.roost("image", "pull", "b", "bb", "--json")
    assert r.code == 0 and r.json()["generations"] == [1, 2, 3], r
    same_image(a, c)
    # nothing to do: up to date, exit 0
    r = a.roost("image", "push", "bb", "b", "--json")
    assert r.code == 0 and r.json()["generations"] == [] and r.json()["current"] == 3
    # a rolled-back receiver is fast-forwarded (its current is in the sender's history)
    b.ok("image", "rollback", "bb", "1")
    r = a.roost("image", "push", "bb", "b")
    assert r.code == 0 and current(b) == 3, r
    # a session on the receiver sees the pushed tree
    sid = b.begin("bb")
    out = b.sh(sid, "cat /etc/version; ls /bin/ls 2>&1; cat /opt/renamed/y/f; readlink /opt/link").out
    assert out.splitlines()[:1] == ["two"] and "three" in out and "No such file" in out and "/etc/version" in out
    b.ok("session", "end", sid)
    for env in (a, b, c):
        consistent(env)


def test_a_flattened_generation_travels_as_a_difference(fleet: Fleet, busybox_tree: Path) -> None:
    """Past overlay-max-depth a promote writes a whole tree; the push still sends only what changed."""
    a, b = fleet["a"], fleet["b"]
    with open(a.config, "a", encoding="utf-8") as f:
        f.write("overlay-max-depth: 2\n")
    busybox(fleet, busybox_tree, "a")
    promote(a, "dd if=/dev/urandom of=/big bs=1M count=8 2>/dev/null", "two")
    a.ok("image", "push", "bb", "b")
    promote(a, "echo small > /etc/small; rm /bin/cat", "three")  # flattened: a complete tree
    r = a.roost("image", "push", "bb", "b", "--json")
    assert r.code == 0 and r.json()["kinds"] == {"3": "delta"}, r
    assert r.json()["bytes"] < 1_000_000, "the 8 MB file did not change and does not travel"
    same_image(a, b)


@pytest.mark.parametrize(
    "sender,receiver",
    [
        ("overlay", "dir"),
        ("dir", "overlay"),
        ("dir", "dir"),
        ("overlay", "squashfs"),
        ("squashfs", "overlay"),
        ("squashfs", "squashfs"),
        ("dir", "erofs"),
    ],
)
def test_push_across_backends(fleet: Fleet, busybox_tree: Path, sender: str, receiver: str) -> None:
    a, b = fleet["a"], fleet["b"]
    busybox(fleet, busybox_tree, "a", backend=sender)
    promote(a, "echo two > /etc/version; rm /bin/ls", "two")
    r = a.roost("image", "push", "bb", "b", "--backend", receiver, "--json")
    assert r.code == 0, r
    assert b.roost("image", "info", "bb", "--json").json()["backend"] == receiver
    promote(a, "echo three >> /etc/version; mkdir /opt/new; rm -r /etc/group", "three")
    r = a.roost("image", "push", "bb", "b", "--json")
    assert r.code == 0 and r.json()["kinds"] == {"3": "layer" if sender == "overlay" else "delta"}, r
    same_image(a, b, seconds=bool({"squashfs", "erofs"} & {sender, receiver}))
    consistent(b)


# --- on btrfs and zfs: their own send streams -----------------------------------------------------------


@pytest.fixture(scope="module")
def btrfs_mnt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    need_root()
    try:
        with pools.btrfs_mount(tmp_path_factory.mktemp("fleet-btrfs")) as mnt:
            yield mnt
    except pools.Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def zfs_pools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two pools: hosts keep their datasets in pools of their own (zfs receive finds origins pool-wide)."""
    need_root()
    try:
        with (
            pools.zfs_pool(tmp_path_factory.mktemp("fleet-zfs"), size="1G", name=f"roostfleeta{os.getpid()}") as a,
            pools.zfs_pool(tmp_path_factory.mktemp("fleet-zfs"), size="1G", name=f"roostfleetb{os.getpid()}") as b,
        ):
            yield a, b
    except pools.Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture
def btrfs_fleet(sshd: Sshd, btrfs_mnt: Path) -> Iterator[Fleet]:
    """Hosts a and b with their state roots on btrfs, c on the ordinary file system."""
    base = Path(tempfile.mkdtemp(prefix="roost-fleet-", dir=btrfs_mnt))
    other = Path(tempfile.mkdtemp(prefix="roost-fleet-"))
    f = make_fleet(sshd, base, {"a": base / "a", "b": base / "b", "c": other / "c"})
    try:
        yield f
    finally:
        try:
            close_fleet(f)
        finally:
            subprocess.run(["rm", "-rf", "--one-file-system", str(base), str(other)], check=False)


def test_push_between_btrfs_hosts_uses_btrfs_send(btrfs_fleet: Fleet, busybox_tree: Path) -> None:
    a, b, c = btrfs_fleet["a"], btrfs_fleet["b"], btrfs_fleet["c"]
    busybox(btrfs_fleet, busybox_tree, "a", backend="btrfs")
    r = a.roost("image", "push", "bb", "b", "--json")
    assert r.code == 0 and r.json()["kinds"] == {"1": "btrfs"}, r
    promote(a, "dd if=/dev/urandom of=/one bs=1K count=512 2>/dev/null; rm /bin/ls", "two")
    promote(a, "echo three > /etc/version", "three")
    r = a.roost("image", "push", "bb", "b", "--json")
    assert r.code == 0 and r.json()["kinds"] == {"2": "btrfs", "3": "btrfs"}, r
    assert r.json()["bytes"] < 1_000_000, "btrfs send -p sends the changes"
    same_image(a, b)
    # across kinds: btrfs to overlay and back
    r = c.roost("image", "pull", "b", "bb", "--json")
    assert r.code == 0 and r.json()["backend"] == "overlay" and r.json()["kinds"]["1"] == "full", r
    same_image(a, c)
    promote(c, "echo four > /etc/version", "four")
    r = c.roost("image", "push", "bb", "b", "--json")
    assert r.code == 0 and r.json()["kinds"] == {"4": "layer"}, r
    same_image(c, b)
    consistent(b)
    # a receiver killed when the subvolumes are staged: recover deletes them, nothing else changes
    btrfs_fleet.add_host("b-crash", b, environ={"ROOST_CRASH_AT": "receive:staged"})
    promote(a, "echo five > /etc/version", "five")
    before = history(b)
    r = a.roost("image", "push", "bb", "b-crash")
    assert r.code != 0
    b.ok("session", "recover", "--all")
    consistent(b)
    assert history(b) == before
    assert pools.btrfs_subvolumes(btrfs_fleet.base.parent, b.state / "images" / "bb" / "staging") == []


@pytest.fixture
def zfs_fleet(sshd: Sshd, zfs_pools: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Hosts a and b on zfs, each in a pool of its own, and a third one, d, beside a in a's pool; c on overlay."""
    base = Path(tempfile.mkdtemp(prefix="roost-fleet-", dir=tmp_path_factory.getbasetemp()))
    tag = base.name.replace("roost-fleet-", "f")
    datasets = {"a": f"{zfs_pools[0]}/{tag}a", "b": f"{zfs_pools[1]}/{tag}b", "d": f"{zfs_pools[0]}/{tag}d"}
    for d in datasets.values():
        subprocess.run(["zfs", "create", "-o", "mountpoint=none", "-o", "canmount=off", d], check=True)
    configs = {n: f"zfs-dataset: {d}\n" for n, d in datasets.items()}
    f = make_fleet(sshd, base, {n: base / n for n in ("a", "b", "c", "d")}, configs)
    try:
        yield f
        close_fleet(f)
        for d in datasets.values():
            left = [x for x in pools.zfs_datasets(d) if x not in (d, f"{d}/gen", f"{d}/session")]
            assert left == [], left
    finally:
        for d in datasets.values():
            subprocess.run(["zfs", "destroy", "-r", d], capture_output=True, check=False)


def test_push_between_zfs_hosts_uses_zfs_send(zfs_fleet: Fleet, busybox_tree: Path) -> None:
    a, b, c, d = zfs_fleet["a"], zfs_fleet["b"], zfs_fleet["c"], zfs_fleet["d"]
    busybox(zfs_fleet, busybox_tree, "a", backend="zfs")
    r = a.roost("image", "push", "bb", "b", "--json")
    assert r.code == 0 and r.json()["kinds"] == {"1": "zfs"}, r
    promote(a, "dd if=/dev/urandom of=/one bs=1K count=256 2>/dev/null; rm /bin/ls", "two")
    r = a.roost("image", "push", "bb", "b", "--json")
    assert r.code == 0 and r.json()["kinds"] == {"2": "zfs"}, r
    assert r.json()["bytes"] < 1_000_000, "zfs send -i sends the changes"
    same_image(a, b)
    r = c.roost("image", "pull", "b", "bb", "--json")  # zfs to overlay
    assert r.code == 0 and r.json()["backend"] == "overlay", r
    same_image(a, c)
    # two state roots in one pool: zfs would clone d's generations from a's snapshots; d takes differences
    r = a.roost("image", "push", "bb", "d", "--json")
    assert r.code == 0 and r.json()["kinds"] == {"1": "full", "2": "delta"}, r
    same_image(a, d)
    for env in (b, d):
        consistent(env)
    # a receiver killed when the dataset is received: recover destroys it, nothing else changes
    zfs_fleet.add_host("b-crash", b, environ={"ROOST_CRASH_AT": "receive:staged"})
    promote(a, "echo three > /etc/version", "three")
    before = history(b)
    r = a.roost("image", "push", "bb", "b-crash")
    assert r.code != 0
    b.ok("session", "recover", "--all")
    consistent(b)
    assert history(b) == before
    parent = next(ln.split(":", 1)[1].strip() for ln in b.config.read_text().splitlines() if ln.startswith("zfs-"))
    assert len(pools.zfs_datasets(f"{parent}/gen")) == 1 + 2 * 2  # gen, and two generations with a snapshot each


# --- interrupted transfers, refusals -----------------------------------------------------------------


def _processes(match: Any) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if match(cmdline, environ):
            found.append(int(name))
    return found


def _roost_of(env: Env, *words: str) -> Any:
    """Matches the roost process of *env*'s state root running *words*."""
    root = f"ROOST_ROOT={env.state}".encode()
    want = [w.encode() for w in words]

    def match(cmdline: list[bytes], environ: list[bytes]) -> bool:
        return root in environ and b"roost" in cmdline and all(w in cmdline for w in want)

    return match


def _staged_bytes(env: Env) -> int:
    total = 0
    for where in (env.state / "images" / "bb" / "staging", env.state / "staging"):
        for dirpath, _, files in os.walk(where):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
    return total


@pytest.mark.parametrize("victim", ["sender", "ssh", "receiver"])
@pytest.mark.parametrize("direction", ["push", "pull"])
def test_a_transfer_killed_midway_leaves_the_receiver_unchanged(
    fleet: Fleet, busybox_tree: Path, victim: str, direction: str
) -> None:
    a, b = fleet["a"], fleet["b"]
    busybox(fleet, busybox_tree, "a")
    a.ok("image", "push", "bb", "b")
    promote(a, "dd if=/dev/urandom of=/big bs=1M count=160 2>/dev/null", "big")
    before = (history(b), exported(b, 1))
    local, sender, receiver = (a, a, b) if direction == "push" else (b, a, b)
    argv = ("image", "push", "bb", "b") if direction == "push" else ("image", "pull", "a", "bb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "roost", *argv],
        env=local.environ,
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while _staged_bytes(receiver) < 20 << 20:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    if victim == "ssh":
        targets = [p for p in _processes(lambda c, e: c[:1] == [b"ssh"]) if _parent(p) == proc.pid]
    elif (victim == "sender") == (direction == "push"):
        targets = [proc.pid]  # the local roost
    else:
        words = ("send",) if victim == "sender" else ("receive",)
        targets = _processes(_roost_of(sender if victim == "sender" else receiver, "image", *words))
    assert len(targets) == 1, (victim, targets)
    os.kill(targets[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    if targets[0] != proc.pid:  # a killed roost says nothing; otherwise one line says what happened
        assert err.decode().count("\n") == 1, err
    deadline = time.monotonic() + 30
    while _processes(_roost_of(receiver, "image", "receive")) or _processes(_roost_of(sender, "image", "send")):
        assert time.monotonic() < deadline, "the other side keeps running"
        time.sleep(0.05)
    for env in (a, b):
        env.ok("session", "recover", "--all")
        consistent(env)
    assert (history(b), exported(b, 1)) == before, "the receiver is unchanged"
    r = local.roost(*argv)  # and the next transfer completes
    assert r.code == 0, r
    same_image(a, b)


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


@pytest.mark.parametrize("step", ["staged", "committed", "renamed", "switched"])
def test_a_receiver_killed_at_each_step_then_recover(fleet: Fleet, busybox_tree: Path, step: str) -> None:
    a, b = fleet["a"], fleet["b"]
    busybox(fleet, busybox_tree, "a")
    a.ok("image", "push", "bb", "b")
    fleet.add_host("b-crash", b, environ={"ROOST_CRASH_AT": f"receive:{step}"})
    promote(a, "echo two > /etc/version", "two")
    promote(a, "echo three > /etc/version", "three")
    r = a.roost("image", "push", "bb", "b-crash")
    assert r.code != 0
    b.ok("session", "recover", "--all")
    consistent(b)
    # current is a complete generation: the old one, or (killed after the switch) the new one
    assert current(b) == (3 if step == "switched" else 1)
    if step in ("staged", "committed"):
        assert [g["generation"] for g in history(b)] == [1], "nothing of the transfer is left"
    r = a.roost("image", "push", "bb", "b", "--json")
    assert r.code == 0, r
    same_image(a, b)


def test_push_is_refused_when_the_receiver_changed_on_its_own(fleet: Fleet, busybox_tree: Path) -> None:
    a, b = fleet["a"], fleet["b"]
    busybox(fleet, busybox_tree, "a")
    a.ok("image", "push", "bb", "b")
    promote(a, "echo a > /etc/a", "on a")
    promote(b, "echo b > /etc/b", "on b")
    before = history(b)
    r = a.roost("image", "push", "bb", "b")
    assert r.code == 3 and "not a fast-forward" in r.err and r.err.count("\n") == 1, r
    r = b.roost("image", "pull", "a", "bb")
    assert r.code == 3 and "not a fast-forward" in r.err and r.err.count("\n") == 1, r
    assert history(b) == before
    # a generation number the receiver already used for something else
    b.ok("image", "rollback", "bb", "1")
    r = a.roost("image", "push", "bb", "b")
    assert r.code == 3 and "another generation 2" in r.err, r
    assert history(b)[-1]["generation"] == 2 and current(b) == 1
    consistent(b)


def _stream(sender: Env, receiver: Env) -> bytes:
    inventory = receiver.roost("image", "inventory", "bb", "--json")
    assert inventory.code == 0
    proc = subprocess.run(
        [sys.executable, "-m", "roost", "image", "send", "bb"],
        input=inventory.out.encode(),
        env=sender.environ,
        capture_output=True,
        cwd="/",
        check=True,
    )
    return proc.stdout


def test_the_receiver_compares_and_swaps_like_promote(fleet: Fleet, busybox_tree: Path) -> None:
    """A stream planned against generation 1 is refused once the receiver moved on, before and at commit."""
    a, b = fleet["a"], fleet["b"]
    busybox(fleet, busybox_tree, "a")
    a.ok("image", "push", "bb", "b")
    promote(a, "echo two > /etc/version", "two")
    stream = _stream(a, b)
    # the receiver moves on while the stream is under way: the last frame waits until it has
    proc = subprocess.Popen(
        [sys.executable, "-m", "roost", "image", "receive", "bb"],
        env=b.environ,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
    )
    assert proc.stdin is not None
    proc.stdin.write(stream[:-69])  # all but the end frame (5 bytes of header, 64 of digest)
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while not any((b.state / "images" / "bb" / "staging").glob("*/layer")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.5)
    moved = promote(b, "echo mine > /etc/mine", "moved on")
    proc.stdin.write(stream[-69:])
    proc.stdin.close()
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == 3 and b"moved on" in err and err.count(b"\n") == 1, err
    assert current(b) == moved and [g["generation"] for g in history(b)] == [1, 2]
    assert history(b)[-1]["message"] == "moved on"
    consistent(b)
    # and when it moved on before the stream even arrives (c has generation 1 only)
    c = fleet["c"]
    a.ok("image", "rollback", "bb", "1")
    a.ok("image", "push", "bb", "c")
    a.ok("image", "rollback", "bb", "2")
    stream = _stream(a, c)
    promote(c, "true", "again")
    before = history(c)
    proc2 = subprocess.run(
        [sys.executable, "-m", "roost", "image", "receive", "bb"],
        input=stream,
        env=c.environ,
        capture_output=True,
        cwd="/",
    )
    assert proc2.returncode == 3 and b"moved on" in proc2.stderr, proc2.stderr
    assert history(c) == before
    consistent(c)


def test_a_corrupted_stream_is_refused_and_leaves_nothing(fleet: Fleet, busybox_tree: Path) -> None:
    a, b = fleet["a"], fleet["b"]
    busybox(fleet, busybox_tree, "a")
    a.ok("image", "push", "bb", "b")
    promote(a, "dd if=/dev/urandom of=/f bs=1K count=64 2>/dev/null", "two")
    stream = bytearray(_stream(a, b))
    stream[len(stream) // 2] ^= 0xFF  # one bit flipped in the middle of the data
    before = history(b)
    proc = subprocess.run(
        [sys.executable, "-m", "roost", "image", "receive", "bb"],
        input=bytes(stream),
        env=b.environ,
        capture_output=True,
        cwd="/",
    )
    assert proc.returncode == 5 and b"checksum" in proc.stderr and proc.stderr.count(b"\n") == 1, proc.stderr
    assert history(b) == before
    consistent(b)  # not even recover is needed: the receive cleaned up after itself
    proc = subprocess.run(
        [sys.executable, "-m", "roost", "image", "receive", "bb"],
        input=bytes(stream[: len(stream) // 3]),
        env=b.environ,
        capture_output=True,
        cwd="/",
    )
    assert proc.returncode == 5 and b"ended early" in proc.stderr, proc.stderr
    consistent(b)


# --- batch on several hosts, polling -----------------------------------------------------------------


def test_batch_runs_a_plan_on_several_hosts_and_reports_each(fleet: Fleet, busybox_tree: Path) -> None:
    busybox(fleet, busybox_tree, "a", "b")  # c has no image bb: its run fails
    plan = fleet.base / "plan.yaml"
    plan.write_text(
        "steps:\n"
        "  - begin: {image: bb, as: s}\n"
        "  - run: {session: s, command: 'echo ran on $(cat /etc/hostname)'}\n"
        "  - end: s\n"
    )
    r = fleet["a"].roost("batch", str(plan), "--host", "a", "--host", "b", "--json")
    assert r.code == 0, r
    report = r.json()
    assert report["ok"] and [h["host"] for h in report["hosts"]] == ["a", "b"]
    for h in report["hosts"]:
        assert h["ok"] and h["report"]["file"] == str(plan)
        assert [s["kind"] for s in h["report"]["steps"]] == ["begin", "run", "end"]
        assert "ran on busybox" in h["output"]
    r = fleet["a"].roost("batch", str(plan), "--host", "a", "--host", "c", "--host", "b")
    assert r.code == 4, r  # c's exit code: the image does not exist there
    assert "== a: ok" in r.out and "== c: failed (exit code 4)" in r.out and "== b: ok" in r.out
    assert "roost: -:" not in r.out + r.err and "failed on 1 of 3 hosts (c)" in r.err
    r = fleet["a"].roost("--host", "b", "batch", str(plan))  # one host, as a global option
    assert r.code == 0 and "== b: ok" in r.out, r
    bad = fleet.base / "bad.yaml"
    bad.write_text("steps:\n  - explode: {}\n")
    r = fleet["a"].roost("batch", str(bad), "--host", "a", "--host", "b")
    assert r.code == 2 and "unknown step" in r.err and r.err.count("\n") == 1, r  # checked here, first
    for env in fleet.envs.values():
        assert env.roost("session", "list", "--json").json() == []


def test_poll_answers_within_its_time_limit_even_from_a_stopped_host(fleet: Fleet, busybox_tree: Path) -> None:
    from core import fleet as fleet_ops
    from core import hosts

    busybox(fleet, busybox_tree, "b")
    environ = dict(fleet["a"].environ)
    b = hosts.resolve("b", environ)
    status = fleet_ops.poll(b, 10.0, environ=environ)
    assert status.reachable and status.error is None, status
    assert [i["name"] for i in status.summary["images"]] == ["bb"]  # type: ignore[index]
    stopped = [fleet.sshd.pid, *fleet.sshd.sessions()]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        status = fleet_ops.poll(b, 1.5, environ=environ)
        took = time.monotonic() - start
        assert not status.reachable and status.error and took < 2.0, (status, took)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    status = fleet_ops.poll(b, 10.0, environ=environ)
    assert status.reachable, status
    closed = hosts.resolve(f"ssh://root@127.0.0.1:{_closed_port()}", environ)
    start = time.monotonic()
    status = fleet_ops.poll(closed, 1.5, environ=environ)
    assert not status.reachable and "cannot reach" in (status.error or "") and time.monotonic() - start < 2.0


def _closed_port() -> int:
    from tests.support.sshd import free_port

    return free_port()


def test_json_of_push_and_inventory(fleet: Fleet, busybox_tree: Path) -> None:
    a = fleet["a"]
    busybox(fleet, busybox_tree, "a")
    inv = a.roost("image", "inventory", "bb", "--json").json()
    assert inv["exists"] and inv["backend"] == "overlay" and inv["current"] == 1
    assert [g["generation"] for g in inv["generations"]] == [1] and len(inv["current_identity"]) == 32
    assert a.roost("image", "inventory", "nosuch", "--json").json()["exists"] is False
    r = a.roost("image", "push", "bb", "b", "--json")
    keys = {
        "image",
        "created",
        "backend",
        "generations",
        "kinds",
        "base",
        "current",
        "bytes",
        "seconds",
        "host",
    }
    assert r.code == 0 and keys <= set(r.json()), r
    assert (
        json.loads(fleet["b"].ok("image", "inventory", "bb", "--json"))["current_identity"] == inv["current_identity"]
    )


# --- who ssh runs as ------------------------------------------------------------------------------


@pytest.fixture
def sudo_user() -> Iterator[tuple[str, Path]]:
    """A user of our own (prefix roost-t-fl) with a home directory; removed afterwards."""
    import pwd

    name = f"roost-t-fl{os.getpid() % 100000}"
    home = Path(tempfile.mkdtemp(prefix="roost-t-fl-home-"))
    subprocess.run(["useradd", "--home-dir", str(home), "--no-create-home", "--shell", "/bin/sh", name], check=True)
    try:
        pw = pwd.getpwnam(name)
        os.chown(home, pw.pw_uid, pw.pw_gid)
        os.chmod(home, 0o755)
        yield name, home
    finally:
        subprocess.run(["userdel", name], check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(home)], check=False)


def test_under_sudo_ssh_runs_as_the_person_not_as_root(fleet: Fleet, busybox_tree: Path, sudo_user: Any) -> None:
    """sudo rights here never become root's ssh identity there: ssh runs as SUDO_USER, with their keys."""
    import pwd
    import shutil

    name, home = sudo_user
    pw = pwd.getpwnam(name)
    busybox(fleet, busybox_tree, "b")
    # The caller's hosts file is read with the caller's rights: the test's own (in a directory
    # only root may enter) is refused, a copy of it in their home is read.
    environ = {"SUDO_USER": name, "SUDO_UID": str(pw.pw_uid), "SUDO_GID": str(pw.pw_gid)}
    r = fleet["a"].roost("--host", "b", "image", "list", env=environ)
    assert r.code == 2 and "Permission denied" in r.err and r.err.count("\n") == 1, r
    mine = home / "hosts.yaml"

    def hosts_for_them() -> None:
        shutil.copy(fleet.hosts_file, mine)
        os.chown(mine, pw.pw_uid, pw.pw_gid)

    hosts_for_them()
    # ROOST_SSH_DIR empty: the caller's own directory, /tmp/roost-ssh-UID
    environ.update(ROOST_HOSTS=str(mine), ROOST_SSH_DIR="")
    control = Path(f"/tmp/roost-ssh-{pw.pw_uid}")
    try:
        # the hosts entry names root's key, which only root can read: not the caller's
        r = fleet["a"].roost("--host", "b", "image", "list", env=environ)
        assert r.code == 5 and "cannot reach b" in r.err and r.err.count("\n") == 1, r
        assert control.stat().st_uid == pw.pw_uid and not any(p.is_socket() for p in control.iterdir())
        # with a key of their own (which the other host accepts), it works, on their connection
        for source, target in ((fleet.sshd.user_key, home / "id"), (fleet.sshd.known_hosts, home / "known_hosts")):
            shutil.copy(source, target)
            os.chown(target, pw.pw_uid, pw.pw_gid)
        options = dict(fleet.sshd.ssh_options(), IdentityFile=str(home / "id"))
        options["UserKnownHostsFile"] = str(home / "known_hosts")
        fleet.extra_hosts["b-mine"] = dict(fleet.sshd.entry(fleet["b"]), **{"ssh-options": options})
        fleet.write()
        hosts_for_them()
        r = fleet["a"].roost("--host", "b-mine", "image", "list", env=environ)
        assert r.code == 0 and "bb" in r.out, r
        sockets = [p for p in control.iterdir() if p.is_socket()]
        assert len(sockets) == 1 and sockets[0].stat().st_uid == pw.pw_uid
        # a control directory of someone else's is refused
        r = fleet["a"].roost("--host", "b-mine", "image", "list", env=dict(environ, ROOST_SSH_DIR=str(fleet.control)))
        assert r.code == 5 and "refusing to use it" in r.err, r
    finally:
        if control.exists():
            fleet.sshd.close_masters(control)
            subprocess.run(["rm", "-rf", "--one-file-system", str(control)], check=False)
