"""Image replication between hosts: ``roost image push`` of a 1 MB change, against its peers.

Two state roots stand behind one sshd on 127.0.0.1 (the one tests/support/sshd.py
starts: keys of its own, a free port, stopped at the end) as hosts "src" and
"dst". For a Debian minbase image (about 200 MB) and the same image grown to
2 GB, each run promotes a 1 MB change on src (a new generation) and then
measures, over the same ssh connection:

* ``roost image push IMAGE dst``: the whole command (inventory, stream,
  receive, commit), and the bytes of its stream;
* ``rsync -aHAX --delete`` of the new generation's whole tree onto dst's copy
  of the previous one (what people do by hand: it walks both trees);
* sending the whole generation: a tar of its complete tree, piped over ssh
  (what a transfer without increments costs).

Goals (issue 17): bytes within 2× of the change, time flat in image size.
``--btrfs`` adds the same rows on a loop-mounted btrfs (``btrfs send -p``).

``--console`` measures the console instead: the real ``roost`` in a
pseudo-terminal (bench/console.py's), on a state root of its own, with
``--hosts`` other hosts (20 state roots behind the one sshd, each with an
image, each with an ssh connection of its own as separate hosts would have),
against the same console with no other hosts, in the same run. Key press to
render (bench/console.py's measure): moving between hosts in the Hosts pane
(every press refills the other panes with that host's answer and reads its
image's history over ssh), and moving in the Images pane while the hosts are
polled. Goal (issue 17): under 100 ms.

    sudo .venv/bin/python bench/fleet.py [--runs 5] [--no-large] [--btrfs]
    sudo .venv/bin/python bench/fleet.py --console [--hosts 20] [--keys 40]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness import REPO, Figure, Roost, debian_root, machine, roost_install, table, workdir

sys.path.insert(0, str(REPO))

from tests.support import pools
from tests.support.sshd import Sshd, write_hosts

CHANGE = 1 << 20
#: The whole generation as one stream: roost's own tar options for a "full" generation.
WHOLE_TAR = ["tar", "--create", "--file=-", "--format=posix", "--sparse", "--one-file-system", "--numeric-owner"]
WHOLE_TAR += ["--xattrs", "--xattrs-include=*", "--acls"]


def rsync_argv(ssh: list[str]) -> list[str]:
    """rsync -aHAX of one file system, numeric owners, through *ssh* (the shared connection)."""
    return ["rsync", "-aHAX", "-x", "--numeric-ids", "-e", " ".join(ssh)]


@dataclass
class Row:
    label: str
    seconds: list[float] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)

    def cells(self) -> list[str]:
        f = Figure(self.seconds)
        sent = sorted(self.sent)[len(self.sent) // 2]
        return [self.label, f.show(), f"{sent / 2**20:10.2f} MiB", f"{sent / CHANGE:8.2f}×"]


@contextmanager
def hosts(base: Path, sshd: Sshd) -> Iterator[tuple[Roost, Roost, dict[str, str]]]:
    """Two roost installs, src and dst, and a hosts.yaml naming both."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "src").mkdir()
    (base / "dst").mkdir()
    with roost_install(base / "src") as src, roost_install(base / "dst") as dst:
        entries = {}
        for name, r in (("src", src), ("dst", dst)):
            keep = ("ROOST_ROOT", "ROOST_RUN", "ROOST_CONFIG")
            entries[name] = {
                "address": "127.0.0.1",
                "port": sshd.port,
                "user": "root",
                "command": ["env", *(f"{k}={r.env[k]}" for k in keep), str(r.launcher)],
                "ssh-options": sshd.ssh_options(),
            }
        hosts_file = write_hosts(base / "hosts.yaml", entries)
        control = Path(f"/tmp/roost-bench-ssh-{os.getpid()}")
        control.mkdir(mode=0o700)
        extra = {"ROOST_HOSTS": str(hosts_file), "ROOST_SSH_DIR": str(control)}
        src.env.update(extra)
        dst.env.update(extra)
        try:
            yield src, dst, extra
        finally:
            sshd.close_masters(control)
            subprocess.run(["rm", "-rf", str(control)], check=False)


def ssh_command(sshd: Sshd, control: str) -> list[str]:
    """ssh as the peers use it: the same options and the same shared connection as roost's."""
    argv = ["ssh", "-p", str(sshd.port), "-o", f"ControlPath={control}", "-o", "ControlMaster=no"]
    for key, value in sshd.ssh_options().items():
        argv += ["-o", f"{key}={value}"]
    return argv


def control_socket(extra: dict[str, str]) -> str:
    sockets = [p for p in Path(extra["ROOST_SSH_DIR"]).iterdir() if p.is_socket()]
    assert len(sockets) == 1, sockets
    return str(sockets[0])


def session_root(r: Roost, image: str) -> tuple[str, str]:
    """An ordinary session of *image* (its root is the generation's whole tree): (id, mount point)."""
    out = r.ok("session", "begin", image, "--json")
    data = json.loads(out)
    return data["id"], data["mountpoint"]


def measure(
    label: str, src: Roost, dst: Roost, extra: dict[str, str], sshd: Sshd, tree: Path, runs: int, backend: str
) -> list[Row]:
    image = f"{label.split()[0]}-{backend}"
    src.ok("image", "create", image, "--from-dir", str(tree), "--profile", "minimal", "--backend", backend)
    src.ok("image", "push", image, "dst")  # the first copy: not measured
    ssh = ssh_command(sshd, control_socket(extra))
    mirror = Path(dst.env["ROOST_ROOT"]).parent / f"rsync-{image}"
    sid, root = session_root(src, image)
    try:  # rsync's copy of generation 1 on dst: its starting point, like roost's
        subprocess.run([*rsync_argv(ssh), f"{root}/", f"root@127.0.0.1:{mirror}/"], check=True)
    finally:
        src.ok("session", "end", sid)
    push = Row(f"roost image push [{label}, {backend}]")
    stream = Row(f"  of which the stream, received and committed [{label}, {backend}]")
    rsync = Row(f"rsync -aHAX over ssh [{label}]")
    whole = Row(f"whole generation, tar over ssh [{label}]")
    for i in range(runs):
        sid = src.ok("session", "begin", image, "--maintenance").strip()
        src.ok("session", "run", sid, "--", "sh", "-c", f"head -c {CHANGE} /dev/urandom > /var/tmp/change-{i}")
        src.ok("session", "promote", sid, "-m", f"1 MB change {i}")
        os.sync()  # the write-back of the promote is not the transfer's cost
        started = time.perf_counter()
        out = src.ok("image", "push", image, "dst", "--json")
        push.seconds.append(time.perf_counter() - started)
        push.sent.append(int(json.loads(out)["bytes"]))
        stream.seconds.append(float(json.loads(out)["seconds"]))  # measured by the receiver
        stream.sent.append(push.sent[-1])
        sid, root = session_root(src, image)
        try:
            started = time.perf_counter()
            proc = subprocess.run(
                [*rsync_argv(ssh), "--delete", "--stats", f"{root}/", f"root@127.0.0.1:{mirror}/"],
                capture_output=True,
                text=True,
                check=True,
            )
            rsync.seconds.append(time.perf_counter() - started)
            found = re.search(r"Total bytes sent: ([\d,.]+)", proc.stdout)
            assert found is not None, proc.stdout
            rsync.sent.append(int(found.group(1).replace(",", "").replace(".", "")))
            started = time.perf_counter()
            tar = subprocess.Popen(
                [*WHOLE_TAR, f"--directory={root}", "."], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
            counted = subprocess.run(
                [*ssh, "root@127.0.0.1", "wc -c"], stdin=tar.stdout, capture_output=True, text=True, check=True
            )
            tar.wait()
            whole.seconds.append(time.perf_counter() - started)
            whole.sent.append(int(counted.stdout.split()[0]))
        finally:
            src.ok("session", "end", sid)
    subprocess.run(["rm", "-rf", "--one-file-system", str(mirror)], check=False)
    for r in (src, dst):
        r.ok("image", "remove", image)
    return [push, stream, rsync, whole]


def grow(root: Path, dest: Path, extra_bytes: int) -> Path:
    """A copy of *root* with *extra_bytes* of incompressible filler (as bench/run.py's scaling rows)."""
    subprocess.run(["cp", "-a", "--reflink=auto", str(root), str(dest)], check=True)
    filler = dest / "usr" / "share" / "filler"
    filler.mkdir()
    chunk = 8 << 20
    for i in range(extra_bytes // chunk):
        (filler / f"blob-{i:04d}").write_bytes(os.urandom(chunk))
    return dest


def console_keys(base: Path, sshd: Sshd, n_hosts: int, n_keys: int) -> int:
    """The console with *n_hosts* other hosts against the console alone: key press to render."""
    from console import Terminal, keys

    from tests.support.env import make_env
    from tests.support.rootfs import busybox

    tree = busybox(base / "busybox")
    envs = {}
    for name in ["here", *(f"host{i:02d}" for i in range(1, n_hosts + 1))]:
        env = make_env(base / name)
        env.ok("image", "create", "bb", "--from-dir", str(tree))
        envs[name] = env
    entries = {}
    for name, env in envs.items():
        if name != "here":
            # SetEnv only makes each host's options (hence its shared connection) its own, as separate hosts have.
            options = {**sshd.ssh_options(), "SetEnv": f"ROOST_BENCH_HOST={name}"}
            entries[name] = {**sshd.entry(env), "ssh-options": options}
    hosts_file = write_hosts(base / "hosts.yaml", entries)
    control = Path(f"/tmp/roost-bench-ssh-{os.getpid()}")
    control.mkdir(mode=0o700)
    here = envs["here"]
    rows = []
    none = str(base / "none.yaml")
    runs = [(f"{n_hosts} other hosts", str(hosts_file), False), ("no other hosts", none, False)]
    # The hosts are state roots on this machine: answering a poll costs this machine's CPUs too.
    # The third run puts that cost on the machine without the console knowing other hosts.
    runs.append((f"no other hosts, {n_hosts} polled beside it", none, True))
    try:
        for label, hosts, beside in runs:
            env = {**here.environ, "ROOST_HOSTS": hosts, "ROOST_SSH_DIR": str(control), "TERM": "xterm-256color"}
            poller = None
            if beside:
                poller = subprocess.Popen(
                    [sys.executable, "-c", POLLER],
                    env={**env, "ROOST_HOSTS": str(hosts_file)},
                    stdin=subprocess.DEVNULL,
                )
            term = Terminal([sys.executable, "-m", "roost"], env, (160, 48))
            try:
                # The first screen, then every host's first answer (3 s timeout); the hosts' answers
                # keep redrawing rows as their loads move, so "quiet" is short here.
                term.wait_quiet(0.2, timeout=120)
                time.sleep(6.0)
                if hosts != str(hosts_file):
                    series = [("Images pane: down/up", b"1")]
                else:
                    series = [("Hosts pane: down/up between hosts", b"0"), ("Images pane: down/up", b"1")]
                for what, pane in series:
                    term.key(pane)
                    figure = keys(term, n_keys)
                    rows.append((label, what, figure))
            finally:
                term.quit()
                if poller is not None:
                    poller.terminate()
                    poller.wait()
            sshd.close_masters(control)
    finally:
        sshd.close_masters(control)
        subprocess.run(["rm", "-rf", str(control)], check=False)
        for env in envs.values():
            env.roost("image", "remove", "--force", "bb")
    print(f"# {machine()}, load {os.getloadavg()[0]:.2f}; the console with other hosts, {n_keys} keys per row")
    print(table([[a, b, f.show(), f.p95()] for a, b, f in rows], ["console", "key press to render", "median", "p95"]))
    alone = next(f for a, b, f in rows if a == "no other hosts")
    beside = next(f for a, b, f in rows if a.endswith("beside it"))
    for a, b, f in rows:
        if a == f"{n_hosts} other hosts":
            print(
                f"{b} with {a}: median {f.median / alone.median:.2f}× the console alone, "
                f"{f.median / beside.median:.2f}× the console alone while the hosts are polled beside it "
                f"(goal: under 100 ms; median {f.median * 1000:.1f} ms)"
            )
    return 0


#: What polls the hosts beside the console in the third run: the console's own loop, without the console.
POLLER = """
import threading, time
from core import fleet, hosts
def loop(host):
    while True:
        fleet.poll(host, timeout=3.0)
        time.sleep(2.0)
for h in hosts.load().hosts.values():
    threading.Thread(target=loop, args=(h,), daemon=True).start()
time.sleep(3600)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="1 MB changes pushed per image size (default 5)")
    parser.add_argument("--no-large", action="store_true", help="skip the 2 GB image")
    parser.add_argument("--btrfs", action="store_true", help="also on a loop-mounted btrfs (btrfs send -p)")
    parser.add_argument("--console", action="store_true", help="measure the console with other hosts instead")
    parser.add_argument("--hosts", type=int, default=20, help="other hosts the console shows (default 20)")
    parser.add_argument("--keys", type=int, default=40, help="key presses per series (default 40)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/fleet.py mounts file systems and starts sshd: run it as root", file=sys.stderr)
        return 2
    if args.console:
        with workdir() as base:
            sshd = Sshd(base / "sshd")
            try:
                return console_keys(base, sshd, args.hosts, args.keys)
            finally:
                sshd.stop()
    started = time.monotonic()
    rows: list[Row] = []
    with workdir() as base:
        small = debian_root(base)
        trees = [("200 MB", small)]
        if not args.no_large:
            trees.append(("2 GB", grow(small, base / "large", 1800 << 20)))
        sshd = Sshd(base / "sshd")
        try:
            with hosts(base / "overlay", sshd) as (src, dst, extra):
                for label, tree in trees:
                    rows += measure(label, src, dst, extra, sshd, tree, args.runs, "overlay")
            if args.btrfs:
                place = base / "btrfs"
                place.mkdir()
                with pools.btrfs_mount(place, size="12G") as mnt:
                    try:
                        with hosts(mnt / "roots", sshd) as (src, dst, extra):
                            for label, tree in trees:
                                rows += measure(label, src, dst, extra, sshd, tree, args.runs, "btrfs")[:2]
                    finally:
                        subprocess.run(["rm", "-rf", "--one-file-system", str(mnt / "roots")], check=False)
        finally:
            sshd.stop()
    print(f"# {machine()}, load {os.getloadavg()[0]:.2f}; {args.runs} runs per row, {time.monotonic() - started:.0f} s")
    print(table([r.cells() for r in rows], ["operation", "median (min–max)", "sent (median)", "÷ change"]))
    pushes = {r.label: r for r in rows if r.label.startswith("roost")}
    for backend in ("overlay", "btrfs"):
        a, b = pushes.get(f"roost image push [200 MB, {backend}]"), pushes.get(f"roost image push [2 GB, {backend}]")
        if a and b:
            ratio = Figure(b.seconds).median / Figure(a.seconds).median
            print(f"push time 2 GB / 200 MB [{backend}]: {ratio:.2f}× (flat ≤ 1.5×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
