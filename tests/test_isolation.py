"""Per-session network and resource limits on real namespaces and real cgroups.

Every test gets its own ``cgroup-parent`` (roost-t-is-…) and checks at its end
that no cgroup, kept network namespace, mount or process of it remains
(invariant 7). Servers the tests start listen on 127.0.0.1 on a port they
chose and stop with the test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from core import cgroups, cgroups_upkeep
from core.process import join_cgroups
from core.records import Session
from tests.support.env import Env, procs_below
from tests.support.mounts import is_mounted

V2 = next((h for h in cgroups.hierarchies() if h.version == 2), None)


class Listener:
    """A TCP server on the host's 127.0.0.1 that answers every connection with a greeting."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            try:
                conn.sendall(b"host-service\n")
            finally:
                conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def _cgroup_dirs(parent: str) -> list[str]:
    found = []
    for h in cgroups.hierarchies():
        path = os.path.join(h.path, parent)
        if os.path.isdir(path):
            found += [os.path.join(p, d) for p, dirs, _ in os.walk(path) for d in dirs]
            found.append(path)
    return found


@pytest.fixture
def iso(bb: Env) -> Iterator[Env]:
    """Image ``bb`` with a cgroup parent of the test's own; nothing of it may remain afterwards."""
    parent = f"roost-t-is-{os.getpid()}-{os.urandom(3).hex()}"
    with open(bb.config, "a", encoding="utf-8") as f:
        f.write(f"cgroup-parent: {parent}\n")
    yield bb
    sessions = bb.roost("session", "list", "--json").json()
    for s in sessions:
        bb.roost("session", "end", s["id"], "--force")
    bb.roost("session", "recover", "--all")  # the state root's cgroup slice outlives its sessions; recover removes it
    left = _cgroup_dirs(parent)
    for path in sorted(left, key=len, reverse=True):  # clean up before failing
        cgroups_upkeep.kill([path])
        os.rmdir(path)
    kept = [p for p in (bb.run / "netns").glob("*")] if (bb.run / "netns").exists() else []
    assert sessions == [], "a test left sessions behind"
    assert left == [], f"cgroups left behind: {left}"
    assert kept == [], f"network namespaces left behind: {kept}"


def _alive(pid: int) -> bool:
    """A process that runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def record(env: Env, sid: str) -> dict[str, object]:
    return json.loads((env.state / "sessions" / f"{sid}.json").read_text())


def netns_of(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


# --- network: none ---------------------------------------------------------------------


def test_network_none_cannot_reach_the_hosts_loopback_and_its_own_lo_works(iso: Env, listener: Listener) -> None:
    sid = iso.begin("bb", "--network", "none")
    kept = iso.run / "netns" / sid
    assert record(iso, sid)["netns"] == str(kept) and is_mounted(kept)
    # the host's service is there (the host reaches it) but not from the session
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as c:
        assert c.recv(64) == b"host-service\n"
    r = iso.sh(sid, f"nc -w 2 127.0.0.1 {listener.port} </dev/null; echo rc=$?")
    assert "rc=1" in r.out and "host-service" not in r.out, (r.out, r.err)
    assert "refused" in r.err
    assert listener.accepted == 1
    r = iso.sh(sid, "nc -w 2 192.0.2.1 80 </dev/null; echo rc=$?")  # TEST-NET: no route at all
    assert "rc=1" in r.out and "unreachable" in r.err, r.err
    # lo inside works, within one command and from one command to the next (one namespace per session)
    r = iso.sh(sid, "nc -l -p 8123 -e echo inside & sleep 0.3; nc -w 2 127.0.0.1 8123 </dev/null")
    assert r.out == "inside\n", (r.out, r.err)
    server = subprocess.Popen(
        [sys.executable, "-m", "roost", "session", "run", sid, "--", "nc", "-l", "-p", "8124", "-e", "echo", "again"],
        env=iso.environ,
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        r = iso.sh(sid, "for i in 1 2 3 4 5 6 7 8 9 10; do nc -w 2 127.0.0.1 8124 </dev/null && break; sleep 0.2; done")
        assert r.out == "again\n", (r.out, r.err)
    finally:
        server.wait(timeout=30)
    # what the session sees: lo, and nothing else, in /proc/net/dev and in its own /sys
    r = iso.sh(sid, "ls /sys/class/net; grep : /proc/net/dev | cut -d: -f1")
    assert r.out.split() == ["lo", "lo"], r.out
    info = iso.roost("session", "info", sid, "--json").json()
    assert info["network"] == "none" and info["limits"] is None
    assert [s["network"] for s in iso.roost("session", "list", "--json").json()] == ["none"]
    iso.ok("session", "end", sid)
    assert not kept.exists() and not is_mounted(kept)


def test_network_comes_from_image_yaml_or_profile_and_maintenance_keeps_host(iso: Env) -> None:
    (iso.profiles / "offline.yaml").write_text("description: builds without network\nnetwork: none\n")
    image_yaml = iso.state / "images" / "bb" / "image.yaml"
    image_yaml.write_text(image_yaml.read_text().replace("profile: default", "profile: offline"))
    sid = iso.begin("bb")
    assert iso.sh(sid, "ls /sys/class/net").out.split() == ["lo"]
    iso.ok("session", "end", sid)
    image_yaml.write_text(image_yaml.read_text() + "network: loopback\n")  # image.yaml wins over the profile
    sid = iso.begin("bb")
    assert record(iso, sid)["network"] == "loopback"
    iso.ok("session", "end", sid)
    sid = iso.begin("bb", "--network", "host")  # the session's own option wins over both
    assert record(iso, sid)["network"] == "host" and record(iso, sid)["cgroups"] == []
    iso.ok("session", "end", sid)
    sid = iso.begin("bb", "--maintenance")  # apt must reach its mirrors
    assert record(iso, sid)["network"] == "host"
    iso.ok("session", "end", sid)
    r = iso.roost("run", "bb", "--network", "none", "--", "ls", "/sys/class/net")
    assert (r.code, r.out) == (0, "lo\n"), r.err


def test_a_forked_command_is_born_in_the_sessions_namespace_and_cgroups_and_its_parent_goes_back(iso: Env) -> None:
    """process.start opens the cgroup files and enters the namespace around the fork: the caller's thread returns."""
    import pwd

    from core import process
    from core.errors import SystemFailure

    host_ns = os.readlink("/proc/thread-self/ns/net")
    sid = iso.begin("bb", "--network", "none", "--limit", "pids=64")
    dirs = record(iso, sid)["cgroups"]
    assert isinstance(dirs, list)
    fds_before = sorted(os.listdir("/proc/self/fd"))
    checks = " && ".join(f'grep -q ":{_relative(d)}$" /proc/self/cgroup' for d in dirs)
    script = f'test "$(readlink /proc/self/ns/net)" != "{host_ns}" && {checks}'
    launch = process.prepare(record(iso, sid), ["/bin/sh", "-c", script], user=pwd.getpwuid(0), directory="/")
    pid = process.start(launch)
    assert process.exit_code(os.waitpid(pid, 0)[1]) == 0
    assert os.readlink("/proc/thread-self/ns/net") == host_ns
    assert sorted(os.listdir("/proc/self/fd")) == fds_before
    # a cgroup that cannot be opened: the caller is told, nothing starts, nothing is left open or entered
    launch.cgroups = [*launch.cgroups, dirs[0] + "-gone"]
    with pytest.raises(SystemFailure, match="cannot join the session's cgroup"):
        process.start(launch)
    assert os.readlink("/proc/thread-self/ns/net") == host_ns
    assert sorted(os.listdir("/proc/self/fd")) == fds_before
    iso.ok("session", "end", sid)


# --- network: loopback ---------------------------------------------------------------------


def _listening(port: int) -> list[str]:
    """Local addresses of sockets listening on *port* (from /proc/net/tcp and tcp6)."""
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        with open(table, encoding="ascii") as f:
            next(f)
            for line in f:
                fields = line.split()
                address, hexport = fields[1].split(":")
                if int(hexport, 16) != port or fields[3] != "0A":
                    continue
                raw = bytes.fromhex(address)
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # host-order words
                found.append(socket.inet_ntop(family, words))
    return found


def _host_address() -> str:
    """An address of this host that is not loopback (the one the default route leaves by)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # UDP connect sends nothing
        return str(s.getsockname()[0])


def test_network_loopback_reaches_the_hosts_loopback_services_and_nothing_else(iso: Env, listener: Listener) -> None:
    if V2 is None:
        pytest.xfail("network: loopback needs the cgroup v2 hierarchy, which this host does not mount")
    sid = iso.begin("bb", "--network", "loopback")
    r = iso.sh(sid, f"nc -w 2 127.0.0.1 {listener.port} </dev/null")
    assert r.out == "host-service\n", r.err
    host = _host_address()
    r = iso.sh(sid, f"nc -w 2 {host} 22 </dev/null; echo rc=$?")
    assert "rc=1" in r.out and "not permitted" in r.err, (r.out, r.err)
    r = iso.sh(sid, "nc -w 2 192.0.2.1 80 </dev/null; echo rc=$?")
    assert "rc=1" in r.out and "not permitted" in r.err, (r.out, r.err)
    # a server bound to the wildcard address listens on loopback only
    port = listener.port + 1 if listener.port < 65000 else listener.port - 1
    server = subprocess.Popen(
        [sys.executable, "-m", "roost", "session", "run", sid, "--", "nc", "-l", "-p", str(port), "-e", "echo", "x"],
        env=iso.environ,
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            if _listening(port):
                break
            time.sleep(0.1)
        (address,) = _listening(port)  # busybox nc binds the wildcard (:: or 0.0.0.0) ...
        assert address in ("127.0.0.1", "::1")  # ... which became loopback
        with socket.create_connection((address, port), timeout=5) as c:
            assert c.recv(16) == b"x\n"
    finally:
        server.wait(timeout=30)
    iso.ok("session", "end", sid)


# --- switching a live session ----------------------------------------------------------------


def _running_in(env: Env, command: str) -> list[int]:
    """The pids of *command* running in a session of *env* (never another test's, even one running beside)."""
    out = subprocess.run(["pgrep", "-f", command], capture_output=True, text=True).stdout
    return sorted(set(int(p) for p in out.split()) & set(procs_below(str(env.base))))


def test_switching_a_live_session_moves_its_next_commands_and_running_processes_keep_theirs(iso: Env) -> None:
    sid = iso.begin("bb")
    host_ns = netns_of("self")
    iso.sh(sid, "exec sleep 300 </dev/null >/dev/null 2>&1 &")
    (first,) = _running_in(iso, "sleep 300")
    r = iso.roost("session", "network", sid, "none")
    assert r.code == 0 and "1 process(es) already running" in r.err, r.err
    inside = iso.sh(sid, "readlink /proc/self/ns/net; ls /sys/class/net").out.split()
    assert inside[0] != host_ns and inside[1:] == ["lo"]
    assert netns_of(first) == host_ns  # setns moves only the caller: the running sleep keeps the host's
    iso.sh(sid, "exec sleep 301 </dev/null >/dev/null 2>&1 &")
    (second,) = _running_in(iso, "sleep 301")
    assert netns_of(second) == inside[0]
    # back to host: the namespace file is unmounted, the sleep started in it keeps it (alive while it runs)
    iso.ok("session", "network", sid, "host")
    kept = iso.run / "netns" / sid
    assert not is_mounted(kept) and not kept.exists()
    assert netns_of(second) == inside[0]
    r = iso.sh(sid, "readlink /proc/self/ns/net; ls /sys/class/net")
    assert r.out.split()[0] == host_ns and "lo" in r.out.split()[1:] and len(r.out.split()) > 2
    assert iso.roost("session", "info", sid, "--json").json()["network"] == "host"
    r = iso.roost("session", "network", sid, "host")
    assert r.code == 0 and "already has network host" in r.err
    r = iso.roost("session", "network", sid, "offline")
    assert r.code == 2 and len(r.err.splitlines()) == 1
    iso.ok("session", "end", sid)  # both sleeps die with the session
    assert not _alive(first) and not _alive(second)


def test_the_schroot_door_takes_network_options_and_sbuilds_build_environment(iso: Env) -> None:
    r = iso.roost("schroot", "-c", "bb", "-o", "network=none", "--", "ls", "/sys/class/net")
    assert (r.code, r.out) == (0, "lo\n"), r.err
    r = iso.roost("schroot", "-c", "bb", "-o", "union-type=none", "--", "true")
    assert r.code == 1 and "not permitted" in r.err and "network" in r.err and len(r.err.splitlines()) == 1
    sid = iso.roost("schroot", "-b", "-c", "bb").out.strip()
    r = iso.roost("schroot", "-r", "-c", sid, "--", "ls", "/sys/class/net")
    assert r.code == 0 and len(r.out.split()) > 1
    # what sbuild's $build_environment = {ROOST_NETWORK => 'none'} gives the build command
    r = iso.roost("schroot", "-r", "-c", sid, "-p", "--", "ls", "/sys/class/net", env={"ROOST_NETWORK": "none"})
    assert (r.code, r.out) == (0, "lo\n"), r.err
    assert record(iso, sid)["network"] == "none"
    info = _info_rows(iso.roost("schroot", "-i", "-c", f"session:{sid}").out)
    assert info["Roost Network"] == "none" and info["Roost Architecture"] == "amd64"
    r = iso.roost("schroot", "-r", "-c", sid, "-o", "network=host", "--", "ls", "/sys/class/net")
    assert r.code == 0 and len(r.out.split()) > 1
    assert iso.roost("schroot", "-e", "-c", sid).code == 0


def _info_rows(text: str) -> dict[str, str]:
    """``schroot -i`` output as a mapping (keys and values are separated by two spaces or more)."""
    import re

    rows = {}
    for line in text.splitlines():
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        if len(parts) == 2:
            rows[parts[0]] = parts[1]
    return rows


def _with(dirs: object, *names: str) -> str:
    """The one directory among *dirs* that has one of the files *names*."""
    assert isinstance(dirs, list)
    found = [d for d in dirs if any(os.path.exists(os.path.join(d, n)) for n in names)]
    assert len(found) == 1, (dirs, names)
    return str(found[0])


def _relative(directory: str) -> str:
    """A cgroup directory as /proc/PID/cgroup names it (relative to its hierarchy's mount)."""
    h = next(h for h in cgroups.hierarchies() if directory.startswith(h.path.rstrip("/") + "/"))
    return directory[len(h.path.rstrip("/")) :]


# --- resource limits ---------------------------------------------------------------------------


def test_memory_limit_kills_the_allocation_inside_and_the_session_survives(iso: Env) -> None:
    sid = iso.begin("bb", "--limit", "memory=64M", "--limit", "swap=0")
    r = iso.sh(sid, "dd if=/dev/zero of=/dev/null bs=160M count=1 2>/dev/null; echo dd=$?; echo after")
    assert r.out == "dd=137\nafter\n", (r.out, r.err)  # dd was killed (SIGKILL), its shell went on
    assert iso.sh(sid, "echo usable").out == "usable\n"
    info = iso.roost("session", "info", sid, "--json").json()
    assert info["limits"] == {"memory": 64 << 20, "swap": 0}
    usage = info["usage"]
    assert usage["oom_kills"] >= 1 and usage["memory_peak"] <= 64 << 20 and usage["memory"] < 64 << 20
    text = iso.ok("session", "info", sid)
    assert "Limits:" in text and "memory 64.0 MiB" in text and "OOM kills:" in text
    iso.ok("session", "end", sid)


def test_a_fork_bomb_stops_at_the_pids_limit_and_the_host_still_answers(iso: Env) -> None:
    sid = iso.begin("bb", "--limit", "pids=32", "--limit", "cpu-quota=0.5")
    bomb = subprocess.Popen(
        [sys.executable, "-m", "roost", "session", "run", sid, "--", "sh", "-c", "b() { while :; do b & done; }; b"],
        env=iso.environ,
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        usage: dict[str, int] = {}
        while time.monotonic() < deadline:
            usage = iso.roost("session", "info", sid, "--json").json()["usage"]
            if usage["pids"] >= 30:
                break
            time.sleep(0.2)
        assert 30 <= usage["pids"] <= 32, usage
        time.sleep(1)
        usage = iso.roost("session", "info", sid, "--json").json()["usage"]
        assert usage["pids"] <= 32  # held there
        # the host answers: a command outside, and roost itself
        assert subprocess.run(["true"], timeout=10).returncode == 0
        assert iso.roost("session", "list", "--json", timeout=30).json()[0]["id"] == sid
    finally:
        iso.ok("session", "end", sid)
        bomb.wait(timeout=30)


def _left_the_root(iso: Env, sid: str, command: str, *pgrep: str) -> int:
    """Start *command* from session *sid* so that it leaves the session's root; its pid (found by ``pgrep *pgrep``).

    setsid and the background: reparented to init; chroot to this process's
    root through /proc: outside the session's root, where the process-tree
    scan of ``end`` cannot see it. Only the session's cgroups still hold it.
    """
    r = iso.sh(sid, f"(setsid chroot /proc/{os.getpid()}/root {command} </dev/null >/dev/null 2>&1 &) ; echo forked")
    assert r.out == "forked\n", r.err
    pids: list[int] = []
    for _ in range(50):
        out = subprocess.run(["pgrep", *pgrep], capture_output=True, text=True).stdout
        pids = [int(p) for p in out.split()]
        if pids:
            break
        time.sleep(0.1)
    (pid,) = pids
    assert os.readlink(f"/proc/{pid}/root") == "/"  # the process-tree scan cannot see it
    return pid


def test_end_kills_through_the_cgroup_a_process_that_double_forked_and_left_the_sessions_root(iso: Env) -> None:
    sid = iso.begin("bb", "--limit", "pids=64")
    me = os.getpid()
    seconds = 100000 + me % 100000  # a command line no other test's process has
    escaped = _left_the_root(iso, sid, f"/bin/sleep {seconds}", "-x", "-f", f"/bin/sleep {seconds}")
    with open(f"/proc/{escaped}/stat", encoding="ascii") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) != me  # not our child either
    assert escaped in cgroups_upkeep.members(record(iso, sid)["cgroups"])  # type: ignore[arg-type]
    iso.ok("session", "end", sid)
    assert not _alive(escaped)


def test_limits_come_from_profile_then_image_yaml_then_options_and_max_removes_one(iso: Env) -> None:
    (iso.profiles / "capped.yaml").write_text("limits: {memory: 1G, pids: 500, cpu-weight: 50}\n")
    image_yaml = iso.state / "images" / "bb" / "image.yaml"
    image_yaml.write_text(
        image_yaml.read_text().replace("profile: default", "profile: capped") + "limits: {memory: 512M, pids: max}\n"
    )
    sid = iso.begin("bb", "--limit", "cpu-quota=150%")
    assert record(iso, sid)["limits"] == {"memory": 512 << 20, "cpu-weight": 50, "cpu-quota": 1.5}
    dirs = record(iso, sid)["cgroups"]
    assert isinstance(dirs, list)
    memory = _with(dirs, "memory.max", "memory.limit_in_bytes")
    limit_file = "memory.max" if os.path.exists(os.path.join(memory, "memory.max")) else "memory.limit_in_bytes"
    assert Path(memory, limit_file).read_text().strip() == str(512 << 20)
    cpu = _with(dirs, "cpu.max", "cpu.cfs_quota_us")
    if os.path.exists(os.path.join(cpu, "cpu.max")):
        assert Path(cpu, "cpu.max").read_text().split() == ["150000", "100000"]
        assert Path(cpu, "cpu.weight").read_text().strip() == "50"
    else:
        assert Path(cpu, "cpu.cfs_quota_us").read_text().strip() == "150000"
        assert Path(cpu, "cpu.cfs_period_us").read_text().strip() == "100000"  # the kernel's default, not written
        assert Path(cpu, "cpu.shares").read_text().strip() == str(50 * 1024 // 100)
    # every command joins every one of them
    lines = iso.sh(sid, "cat /proc/self/cgroup").out.splitlines()
    for d in dirs:
        assert any(line.endswith(":" + _relative(d)) for line in lines), (d, lines)
    iso.ok("session", "end", sid)


def test_io_weight_is_written_where_the_host_weighs_io(iso: Env) -> None:
    sid = iso.begin("bb", "--limit", "io-weight=50")
    dirs = record(iso, sid)["cgroups"]
    io = _with(dirs, "io.weight", "io.bfq.weight", "blkio.weight", "blkio.bfq.weight")
    name = next(n for n in ("io.weight", "io.bfq.weight", "blkio.weight", "blkio.bfq.weight") if Path(io, n).exists())
    assert Path(io, name).read_text().split()[-1] == "50", name  # v2 files read "default 50"
    iso.ok("session", "end", sid)


def test_bad_limits_and_networks_are_one_line_and_change_nothing(iso: Env) -> None:
    for args in (
        ["--limit", "memory=lots"],
        ["--limit", "memory"],
        ["--limit", "pids=1"],
        ["--limit", "disk=1G"],
        ["--limit", "cpu-quota=0"],
        ["--network", "internet"],
    ):
        r = iso.roost("session", "begin", "bb", *args)
        assert r.code == 2 and len(r.err.splitlines()) == 1, (args, r.err)
    image_yaml = iso.state / "images" / "bb" / "image.yaml"
    original = image_yaml.read_text()
    image_yaml.write_text(original + "network: internet\n")
    r = iso.roost("session", "begin", "bb")
    assert r.code == 2 and "network must be one of" in r.err and "image.yaml" in r.err
    image_yaml.write_text(original + "limits: {memory: 1G, swap: lots}\n")
    r = iso.roost("session", "begin", "bb")
    assert r.code == 2 and "limits.swap" in r.err
    image_yaml.write_text(original)
    assert iso.roost("session", "list", "--json").json() == []


def test_recover_after_a_reboot_remakes_the_namespace_and_cgroups(iso: Env) -> None:
    sid = iso.begin("bb", "--network", "none", "--limit", "memory=128M")
    rec = record(iso, sid)
    dirs = rec["cgroups"]
    assert isinstance(dirs, list) and dirs
    # a reboot: every mount gone, every cgroup gone (the runtime root kept, as tmpfs would not)
    subprocess.run(["umount", "-R", str(iso.run / "mnt" / sid / "root")], check=True)
    subprocess.run(["umount", str(iso.run / "netns" / sid)], check=True)
    for d in sorted(dirs, key=len, reverse=True):
        os.rmdir(d)
    r = iso.roost("session", "run", sid, "--", "ls", "/sys/class/net")  # finds it unmounted and recovers it
    assert (r.code, r.out) == (0, "lo\n"), r.err
    assert all(os.path.isdir(d) for d in dirs) and is_mounted(iso.run / "netns" / sid)
    memory = _with(dirs, "memory.max", "memory.limit_in_bytes")
    limit_file = "memory.max" if os.path.exists(os.path.join(memory, "memory.max")) else "memory.limit_in_bytes"
    assert Path(memory, limit_file).read_text().strip() == str(128 << 20)
    # the namespace alone went missing (someone unmounted it): recover puts it back
    subprocess.run(["umount", str(iso.run / "netns" / sid)], check=True)
    r = iso.roost("doctor", "--check")
    assert r.code == 5 and f"session {sid}: its network namespace or cgroups are missing" in r.out, r.out
    report = iso.ok("session", "recover", sid)
    assert iso.roost("doctor", "--check").code == 0
    assert "isolation restored" in report and is_mounted(iso.run / "netns" / sid)
    iso.ok("session", "end", sid)


def test_a_session_begun_under_the_earlier_plan_recovers_as_it_was_and_ends(iso: Env) -> None:
    """A record that names a v2 directory and no freezer (roost before the freezer) is remade as named."""
    if V2 is None:
        pytest.xfail("no cgroup v2 hierarchy mounted here")
    sid = iso.begin("bb", "--limit", "pids=64")
    rec = record(iso, sid)
    dirs = rec["cgroups"]
    assert isinstance(dirs, list)
    v2_dir = V2.path.rstrip("/") + _relative(dirs[0])
    earlier = [v2_dir] + [d for d in dirs if "/freezer/" not in d and "/cpuacct/" not in d]
    # a reboot: mounts and cgroups gone; the record as the earlier roost wrote it
    subprocess.run(["umount", "-R", str(iso.run / "mnt" / sid / "root")], check=True)
    for d in sorted(dirs, key=len, reverse=True):
        os.rmdir(d)
        os.rmdir(os.path.dirname(d))  # its <parent>/<key> and <parent>: this test's own
        os.rmdir(os.path.dirname(os.path.dirname(d)))
    rec["cgroups"] = earlier
    (iso.state / "sessions" / f"{sid}.json").write_text(json.dumps(rec))
    r = iso.sh(sid, "exec sleep 304 </dev/null >/dev/null 2>&1 &")  # recovers it, then runs
    assert r.code == 0, r.err
    assert all(os.path.isdir(d) for d in earlier) and not any(os.path.isdir(d) for d in set(dirs) - set(earlier))
    (sleeper,) = cgroups_upkeep.members([earlier[0]])
    assert Path(_with(earlier, "pids.max"), "pids.max").read_text().strip() == "64"
    iso.ok("session", "end", sid)  # through the v2 directory's cgroup.kill
    assert not _alive(sleeper)
    assert not any(os.path.isdir(d) for d in earlier)


def test_an_interrupted_begin_leaves_no_namespace_or_cgroup_after_recover(iso: Env) -> None:
    r = iso.roost(
        "session", "begin", "bb", "--network", "none", "--limit", "pids=100", env={"ROOST_CRASH_AT": "begin:profiled"}
    )
    assert r.code != 0
    (left,) = iso.roost("session", "list", "--json").json()
    assert left["state"] == "needs-recovery" or left["state"] == "beginning"
    assert any((iso.run / "netns").iterdir())
    iso.ok("session", "recover", "--all")
    assert iso.roost("session", "list", "--json").json() == []
    assert iso.roost("doctor", "--check").code == 0


def test_orphan_cgroups_and_namespaces_are_removed_by_recover(iso: Env) -> None:
    sid = iso.begin("bb", "--network", "none", "--limit", "pids=100")
    rec = record(iso, sid)
    (iso.state / "sessions" / f"{sid}.json").rename(iso.base / "hidden.json")  # as if the record were lost
    try:
        problems = iso.roost("doctor", "--check").out
        assert f"network namespace {iso.run / 'netns' / sid} belongs to no session" in problems
        assert all(f"cgroup {d} belongs to no session" in problems for d in rec["cgroups"])  # type: ignore[union-attr]
        report = iso.ok("session", "recover", "--all")
        assert f"removed orphan network namespace {iso.run / 'netns' / sid}" in report
        assert all(f"removed orphan cgroup {d}" in report for d in rec["cgroups"])  # type: ignore[union-attr]
    finally:
        (iso.base / "hidden.json").unlink()


# --- cgroup v2 ---------------------------------------------------------------------------------


def test_limits_on_cgroup_v2_when_it_has_the_controllers(iso: Env) -> None:
    if V2 is None or not {"memory", "pids"} <= V2.controllers:
        have = "no cgroup v2" if V2 is None else f"cgroup v2 controllers: {' '.join(sorted(V2.controllers)) or 'none'}"
        pytest.xfail(f"this host keeps memory and pids on cgroup v1 ({have}); the v1 path is what runs here")
    sid = iso.begin("bb", "--limit", "memory=64M", "--limit", "pids=40")
    dirs = record(iso, sid)["cgroups"]
    assert isinstance(dirs, list)
    (v2_dir,) = [d for d in dirs if d.startswith(V2.path)]
    assert dirs == [v2_dir]  # everything from v2: one directory
    assert Path(v2_dir, "memory.max").read_text().strip() == str(64 << 20)
    assert Path(v2_dir, "pids.max").read_text().strip() == "40"
    r = iso.sh(sid, "dd if=/dev/zero of=/dev/null bs=160M count=1 2>/dev/null; echo dd=$?")
    assert r.out == "dd=137\n"
    iso.ok("session", "end", sid)


def test_the_v2_directory_tracks_and_kills_even_without_controllers(iso: Env) -> None:
    """A session with socket filters always has a v2 directory; it counts CPU and kills with cgroup.kill."""
    if V2 is None:
        pytest.xfail("no cgroup v2 hierarchy mounted here")
    sid = iso.begin("bb", "--limit", "pids=64", "--network", "loopback")
    dirs = record(iso, sid)["cgroups"]
    assert isinstance(dirs, list)
    v2_dir = next(d for d in dirs if d.startswith(V2.path))
    iso.sh(sid, "exec sleep 302 </dev/null >/dev/null 2>&1 &")
    members = sorted(cgroups_upkeep.members([v2_dir]))  # in its loopback leaf
    assert len(members) == 1
    assert Path(v2_dir, "cgroup.kill").exists()
    cpu = iso.sh(sid, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo $i")
    assert cpu.out == "20000\n"
    usage = iso.roost("session", "info", sid, "--json").json()["usage"]
    assert usage["cpu_usec"] > 0  # v2's cpu.stat counts without the cpu controller
    iso.ok("session", "end", sid)
    assert not _alive(int(members[0]))


def _v1(controller: str) -> cgroups.Hierarchy | None:
    return next((h for h in cgroups.hierarchies() if controller in h.controllers and h.version == 1), None)


def test_a_v1_pids_directory_stands_in_for_an_empty_v2_directory(iso: Env) -> None:
    """Where v2 has no controllers, a session with limits lives in v1 only: joining v2 waits for RCU.

    Its v1 pids directory, made without a pids limit too, counts every
    process and ends them: ``pids.max`` 0 (nothing in it forks any more),
    then SIGKILL, even a process that forks all the time and left the
    session's root. cpuacct counts its CPU time; no freezer directory is made.
    """
    pids = _v1("pids")
    if V2 is None or pids is None or {"memory", "pids"} & V2.controllers:
        pytest.xfail("this host's cgroups are not the v1 controllers beside an empty v2 that this case is about")
    sid = iso.begin("bb", "--limit", "memory=256M")
    dirs = record(iso, sid)["cgroups"]
    assert isinstance(dirs, list)
    assert not any(d.startswith(V2.path.rstrip("/") + "/") for d in dirs), dirs
    freezer = _v1("freezer")
    assert freezer is None or not any(d.startswith(freezer.path.rstrip("/") + "/") for d in dirs), dirs
    pids_dir = next(d for d in dirs if d.startswith(pids.path.rstrip("/") + "/"))
    assert Path(pids_dir, "pids.max").read_text().strip() == "max"  # no limit: it counts and kills
    marker = 200000 + os.getpid() % 100000  # a command line no other test's process has
    shell = _left_the_root(iso, sid, f"/bin/sh -c 'while :; do /bin/true; done; : {marker}'", "-f", f": {marker}")
    cpu = iso.sh(sid, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo $i")
    assert cpu.out == "20000\n"
    usage = iso.roost("session", "info", sid, "--json").json()["usage"]
    assert usage["cpu_usec"] > 0 and usage["pids"] >= 1  # cpuacct, and the pids controller
    iso.ok("session", "end", sid)
    assert not _alive(shell)
    assert not cgroups_upkeep.members([pids_dir]) and not any(os.path.exists(d) for d in dirs)


def test_without_a_v1_pids_hierarchy_the_v1_freezer_kills() -> None:
    """A host without v1 pids: the session's v1 freezer directory ends its processes (freeze, SIGKILL, thaw)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: makes cgroups")
    found = [h for h in cgroups.hierarchies() if not (h.version == 1 and "pids" in h.controllers)]
    if not any(h.version == 1 and "freezer" in h.controllers for h in found) or not any(
        h.version == 1 and "memory" in h.controllers for h in found
    ):
        pytest.xfail("no v1 freezer and memory hierarchies here")
    parent = f"roost-t-fz-{os.getpid()}-{os.urandom(3).hex()}"
    groups = cgroups.plan({"memory": 64 << 20}, parent, "k", "s", found=found, v2=False)
    names = {c for g in groups for c in g.controllers}
    assert "freezer" in names and "pids" not in names, groups
    dirs = [g.path for g in groups]
    cgroups.create(groups, {"memory": 64 << 20})
    sleeper = subprocess.Popen(["sleep", "305"])
    try:
        join_cgroups(dirs, sleeper.pid)
        frozen = next(d for d in dirs if os.path.exists(os.path.join(d, "freezer.state")))
        assert cgroups_upkeep.members([frozen]) == {sleeper.pid}
        assert cgroups_upkeep.kill(dirs) == 1
        assert sleeper.wait(timeout=10) == -9
        assert Path(frozen, "freezer.state").read_text().strip() == "THAWED"
        cgroups_upkeep.remove(dirs)
        assert not any(os.path.exists(d) for d in dirs)
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        cgroups_upkeep.remove(dirs)
        cgroups_upkeep.remove_slice(parent, "k", found)


def test_end_removes_empty_cgroups_in_one_rmdir_and_kills_in_busy_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """An emptied session cgroup goes in one rmdir, nothing read; a busy one (a process, a cgroup below) is killed."""
    if os.geteuid() != 0:
        pytest.skip("needs root: makes cgroups")
    from core import isolation

    parent = f"roost-t-em-{os.getpid()}-{os.urandom(3).hex()}"
    groups = cgroups.plan({"pids": 64}, parent, "k", "s")
    session = cast("Session", SimpleNamespace(cgroups=[g.path for g in groups]))
    dirs = session.cgroups
    killed: list[list[str]] = []
    real = cgroups_upkeep.kill
    monkeypatch.setattr(cgroups_upkeep, "kill", lambda ds: killed.append(list(ds)) or real(ds))
    sleeper = subprocess.Popen(["sleep", "306"])
    try:
        cgroups.create(groups, {"pids": 64})
        assert isolation.kill(session) == 0
        assert killed == [] and not any(os.path.exists(d) for d in dirs)
        cgroups.create(groups, {"pids": 64})
        os.mkdir(os.path.join(dirs[0], "below"))
        join_cgroups(dirs[-1:], sleeper.pid)
        assert isolation.kill(session) == 1
        assert sorted(killed[0]) == sorted({dirs[0], dirs[-1]})  # only the busy ones
        assert sleeper.wait(timeout=10) == -9
        assert not any(os.path.exists(d) for d in dirs)  # the cgroup below first
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        cgroups_upkeep.remove(dirs)
        cgroups_upkeep.remove_slice(parent, "k")


def test_end_finds_and_kills_a_process_in_a_cgroup_made_below_the_sessions_own(iso: Env) -> None:
    """Root in a session can make child cgroups of its own and move into them: end walks below."""
    sid = iso.begin("bb", "--limit", "pids=64")
    dirs = record(iso, sid)["cgroups"]
    assert isinstance(dirs, list)
    iso.sh(sid, "exec sleep 304 </dev/null >/dev/null 2>&1 &")
    (pid,) = cgroups_upkeep.members(dirs)
    made = []
    for d in dirs:  # what a process of the session could do as root, in every hierarchy
        child = os.path.join(d, "inner", "deeper")
        os.makedirs(child)
        made.append(child)
        Path(child, "cgroup.procs").write_text(str(pid))
        assert Path(d, "cgroup.procs").read_text().split() == []
    assert cgroups_upkeep.members(dirs) == {pid}
    assert [p for p in cgroups_upkeep._tree(dirs[0]) if p.startswith(dirs[0])] == [
        os.path.join(dirs[0], "inner", "deeper"),
        os.path.join(dirs[0], "inner"),
        dirs[0],
    ]
    iso.ok("session", "end", sid)
    assert not _alive(pid)
    assert not any(os.path.exists(d) for d in dirs)


def test_the_state_roots_cgroup_slice_outlives_its_sessions_until_recover(iso: Env) -> None:
    """``<parent>/<key>`` stays for the next session (ten mkdirs and rmdirs less); recover removes it, empty."""
    sid = iso.begin("bb", "--limit", "pids=64")
    dirs = record(iso, sid)["cgroups"]
    assert isinstance(dirs, list) and dirs
    slices = sorted({os.path.dirname(d) for d in dirs})
    iso.ok("session", "end", sid)
    assert not any(os.path.exists(d) for d in dirs)
    assert all(os.path.isdir(s) and os.listdir(s) for s in slices)  # kept: a cgroup directory is never empty
    assert iso.roost("doctor", "--check").code == 0  # a slice is not a leftover
    again = iso.begin("bb", "--limit", "pids=64")
    iso.ok("session", "recover", "--all")  # a session lives: its slice stays
    assert all(os.path.isdir(s) for s in slices)
    iso.ok("session", "end", again)
    iso.ok("session", "recover", "--all")
    assert not any(os.path.exists(s) for s in slices)
    assert not any(os.path.exists(os.path.dirname(s)) for s in slices)  # the test's own parent, empty, too
