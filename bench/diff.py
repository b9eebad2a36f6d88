"""roost's diff benchmark: a session with 10,000 changed files on a 2 GB root.

    sudo .venv/bin/python bench/diff.py [--runs 5] [--no-btrfs] [--zfs]

The root is Debian bookworm minbase (mmdebstrap) grown to 2 GB with about
50,000 files of 1-48 KiB in 500 directories and 600 MiB of 8 MiB blobs. A
maintenance session of it gets, through its mount, 10,000 changed files: 4,000
appended to, 1,000 rewritten at the same size, 3,000 added (30 of them in new
directories), 1,500 removed, 500 chmodded. A second session gets four times
as many, to show that memory does not grow with the change.

Measured for roost, whole processes through the launcher ``scripts/install``
writes (interpreter start included): ``session diff --summary``, ``session
diff --json`` (written to /dev/null), ``image diff --json`` of the promoted
generation against its parent; and ``session diff`` inside one process
(engine-level). Each row gives the wall time, the CPU time (user + system:
what a busy, shared machine disturbs least) and the peak resident memory,
all three from GNU time for whole processes. Peers, in the same run on the same two trees (the
generation, and the session's own mount bound without the profile's mounts):
``rsync -aniHAX --delete`` (a dry run itemizing every change), ``diff -rq``,
and, as the floor of any overlay diff, ``find`` over the session's upper
directory. Caches are warm: every command runs once before it is timed.

btrfs rows: the same on a loop-mounted btrfs (``btrfs-pool:``); zfs rows
(``--zfs``, slow: every file goes through the zfs-fuse daemon) walk both
trees.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from harness import Figure, Roost, debian_root, machine, roost_install, table, workdir

from tests.support import pools

SMALL_FILES = 50_000
DIRS = 500
BLOBS = 75
BLOB = 8 << 20
QUICK = False  # --quick: a smoke run of the script itself (5,000 files, 1,000 changes); its figures mean nothing


class Measured:
    """Wall times, CPU times and peak resident memory of one operation over several runs."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.cpu: list[float] = []  # user + system seconds
        self.rss: list[int] = []  # KiB

    def show(self) -> str:
        return Figure(self.times).show()

    def cpu_time(self) -> str:
        return f"{Figure(self.cpu).median * 1000:.0f} ms" if self.cpu else ""

    def memory(self) -> str:
        return f"{max(self.rss) / 1024:.1f} MiB" if self.rss else ""


def timed_rss(
    argv: Sequence[str], env: dict[str, str] | None = None, *, capture: bool = False
) -> tuple[float, float, int, str]:
    """Run *argv* under GNU time: (wall seconds, CPU seconds, peak RSS in KiB, stdout if *capture*).

    GNU time is small: the peak it reports is the command's own, not that of
    a fork of this (much larger) interpreter.
    """
    with tempfile.NamedTemporaryFile("r") as report, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%U %S %M", "-o", report.name, *argv],
            env=env,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            stderr=err,
            cwd="/",
            check=False,
        )
        elapsed = time.perf_counter() - started
        if proc.returncode != 0 and not (argv[0] == "diff" and proc.returncode == 1):  # diff: 1 = they differ
            err.seek(0)
            raise RuntimeError(
                f"{' '.join(argv)} exited {proc.returncode}: {err.read().decode(errors='replace')[:500]}"
            )
        user, system, rss = report.read().split()[-3:]
    out = proc.stdout.decode(errors="surrogateescape") if capture else ""
    return elapsed, float(user) + float(system), int(rss), out


def measure(argv: Sequence[str], runs: int, env: dict[str, str] | None = None) -> tuple[Measured, str]:
    """Run once (warming the caches, output kept), then time *runs* runs."""
    m = Measured()
    first = timed_rss(argv, env, capture=True)[3]
    for _ in range(runs):
        elapsed, cpu, rss, _ = timed_rss(argv, env)
        m.times.append(elapsed)
        m.cpu.append(cpu)
        m.rss.append(rss)
    return m, first


# --- the root and its changes ------------------------------------------------------------------


def big_root(base: Path) -> Path:
    """Debian minbase grown to about 2 GB: many small files and some blobs, deterministic."""
    root = debian_root(base)
    rng = random.Random(16)
    filler = root / "usr" / "share" / "filler"
    for d in range(DIRS):
        (filler / f"d{d:03d}").mkdir(parents=True)
    for i in range(SMALL_FILES):
        (filler / f"d{i % DIRS:03d}" / f"f{i:05d}").write_bytes(rng.randbytes(rng.randint(1, 48) << 10))
    blobs = filler / "blobs"
    blobs.mkdir()
    for i in range(BLOBS):
        (blobs / f"blob-{i:03d}").write_bytes(rng.randbytes(BLOB))
    return root


def change(mount: Path, scale: int, seed: int) -> int:
    """Change ``10,000 × scale`` files (``QUICK``: a tenth) of the filler through a session's mount."""
    rng = random.Random(seed)
    filler = mount / "usr" / "share" / "filler"
    there = [p for p in (filler / f"d{i % DIRS:03d}" / f"f{i:05d}" for i in range(SMALL_FILES)) if p.exists()]
    unit = scale * (100 if QUICK else 1000)
    path = rng.sample(there, 7 * unit)
    appended, rewritten, removed, chmodded = (
        path[: 4 * unit],
        path[4 * unit : 5 * unit],
        path[5 * unit : 6 * unit + unit // 2],
        path[6 * unit + unit // 2 :],
    )
    for p in appended:
        with open(p, "ab") as f:
            f.write(b"appended\n")
    for p in rewritten:
        size = p.stat().st_size
        p.write_bytes(rng.randbytes(size))
    for p in removed:
        p.unlink()
    for p in chmodded:
        p.chmod(0o600)
    for i in range(3 * unit):
        if i < 3 * unit // 100:
            d = filler / f"new-{seed}-{i:03d}"
            d.mkdir()
            (d / "first").write_bytes(rng.randbytes(4096))
        else:
            (filler / f"d{i % DIRS:03d}" / f"added-{seed}-{i:05d}").write_bytes(rng.randbytes(2048))
    return 10 * unit


@contextmanager
def bound(source: str, target: Path) -> Iterator[Path]:
    """*source*'s own mount, without the mounts below it (the profile's /proc, /dev …), read-only."""
    target.mkdir()
    subprocess.run(["mount", "--bind", source, str(target)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)
        target.rmdir()


# --- measurements --------------------------------------------------------------------------------


ENGINE = """\
import json, os, sys, time
from core.engine import Engine
e = Engine()
t, c = time.perf_counter(), os.times()
n = 0
with e.session_diff(sys.argv[1]) as d:
    for _ in d.entries():
        n += 1
elapsed, c2 = time.perf_counter() - t, os.times()
cpu = c2.user - c.user + c2.system - c.system
print(json.dumps([elapsed, cpu, 0, n]))
"""


def rows_for(label: str, roost: Roost, image: str, old_tree: Path, base: Path, runs: int, out: list[list[str]]) -> None:
    """Begin a session of *image*, change it, measure roost and the peers, promote, measure the image diff."""
    env = roost.env
    sid = roost.ok("session", "begin", image, "--maintenance").strip()
    info = json.loads(roost.ok("session", "info", sid, "--json"))
    changed = change(Path(info["mountpoint"]), 1, seed=1)
    os.sync()

    def add(what: str, m: Measured, note: str = "", peer: Measured | None = None) -> None:
        ratio = f"{Figure(m.times).median / Figure(peer.times).median:.2f}×" if peer else ""
        out.append([f"{what} [{label}]", m.show(), m.cpu_time(), m.memory(), ratio, note])
        print("  ".join(out[-1]), flush=True)  # as it comes: a long run that fails keeps what it measured

    summary, text = measure(roost.argv("session", "diff", sid, "--summary", "--json"), runs, env)
    counts = json.loads(text)["summary"]["files"]
    entries = counts["added"] + counts["removed"] + counts["changed"]
    listing, _ = measure(roost.argv("session", "diff", sid, "--json"), runs, env)
    engine = Measured()
    for run in range(runs + 1):  # the first warms up
        _, _, rss, stdout = timed_rss([sys.executable, "-c", ENGINE, sid], env, capture=True)
        elapsed, cpu, _, n = json.loads(stdout)
        if run:
            engine.times.append(elapsed)
            engine.cpu.append(cpu)
            engine.rss.append(rss)
    upper = Path(env["ROOST_ROOT"]) / "sessions" / sid / "upper"
    with bound(info["mountpoint"], base / f"view-{label}") as new_tree:
        rsync, itemized = measure(["rsync", "-aniHAX", "--delete", f"{new_tree}/", f"{old_tree}/"], runs)
        diff, _ = measure(["diff", "-rq", str(old_tree), str(new_tree)], runs)
    if upper.is_dir():
        find, _ = measure(["find", str(upper), "-printf", "%y %m %s %p\n"], runs)
    else:
        find = None
    note = f"{changed} files changed: {entries} entries (with directories); rsync itemized {len(itemized.splitlines())}"
    add("session diff --summary, whole process", summary, note, rsync)
    add("session diff --json, whole process", listing, "goal: < 1 s, < 100 MiB", rsync)
    add("session diff, engine-level (in one process)", engine, f"{n} entries")
    add("peer: rsync -aniHAX --delete (dry run)", rsync)
    add("peer: diff -rq", diff, "", rsync)
    if find is not None:
        add("floor: find over the upper directory", find)

    roost.ok("session", "promote", sid, "-m", "10,000 changed files")
    generation, _ = measure(roost.argv("image", "diff", image, "--json"), runs, env)
    add("image diff --json (generation against its parent)", generation, "", rsync)

    sid = roost.ok("session", "begin", image, "--maintenance").strip()
    info = json.loads(roost.ok("session", "info", sid, "--json"))
    four_changed = change(Path(info["mountpoint"]), 4, seed=2)
    os.sync()
    four, _ = measure(roost.argv("session", "diff", sid, "--json"), runs, env)
    add(
        f"session diff --json, {four_changed} changed files",
        four,
        f"memory ×4 change: {max(four.rss) / max(listing.rss):.2f}×",
    )
    roost.ok("session", "end", sid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-btrfs", action="store_true", help="skip the btrfs rows")
    parser.add_argument("--zfs", action="store_true", help="add the zfs rows (slow under zfs-fuse)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of this script: small root, few changes")
    args = parser.parse_args(argv)
    if args.quick:
        global QUICK, SMALL_FILES, DIRS, BLOBS
        QUICK, SMALL_FILES, DIRS, BLOBS = True, 5000, 50, 2
    if os.geteuid() != 0:
        print("bench/diff.py mounts file systems: run it as root", file=sys.stderr)
        return 2
    print(machine(), flush=True)
    started = time.monotonic()
    rows: list[list[str]] = []
    with workdir() as base, roost_install(base) as roost:
        root = big_root(base)
        files = sum(len(f) for _, _, f in os.walk(root))
        size = int(subprocess.run(["du", "-sb", str(root)], capture_output=True, text=True).stdout.split()[0])
        print(f"root: {size / 2**30:.2f} GiB, {files} files", flush=True)
        interpreter, _ = measure([sys.executable, "-I", "-c", "pass"], args.runs)
        row = [
            "interpreter start (python -I -c pass)",
            interpreter.show(),
            interpreter.cpu_time(),
            interpreter.memory(),
        ]
        rows.append([*row, "", ""])
        roost.ok("image", "create", "big", "--from-dir", str(root), "--profile", "minimal")
        layer = Path(roost.env["ROOST_ROOT"]) / "images" / "big" / "generations" / "1" / "layer"
        rows_for("overlay", roost, "big", layer, base, args.runs, rows)
        roost.ok("image", "remove", "big")
        if not args.no_btrfs:
            btrfs_rows(roost, root, base, args.runs, rows)
        if args.zfs:
            zfs_rows(roost, root, base, args.runs, rows)
    print(table(rows, ["operation", "wall median (min–max)", "CPU median", "peak RSS", "wall vs rsync", "note"]))
    print(f"whole run: {time.monotonic() - started:.0f} s")
    return 0


@contextmanager
def settings(roost: Roost, extra: str) -> Iterator[None]:
    path = Path(roost.env["ROOST_CONFIG"])
    before = path.read_text()
    path.write_text(before + extra)
    try:
        yield
    finally:
        path.write_text(before)


def btrfs_rows(roost: Roost, root: Path, base: Path, runs: int, rows: list[list[str]]) -> None:
    place = base / "btrfs"
    place.mkdir()
    with pools.btrfs_mount(place, size="12G") as mnt, settings(roost, f"btrfs-pool: {mnt / 'pool'}\n"):
        (mnt / "pool").mkdir()
        try:
            roost.ok(
                "image", "create", "big-btrfs", "--from-dir", str(root), "--profile", "minimal", "--backend", "btrfs"
            )
            layer = (Path(roost.env["ROOST_ROOT"]) / "images" / "big-btrfs" / "generations" / "1" / "layer").resolve()
            rows_for("btrfs", roost, "big-btrfs", layer, base, runs, rows)
        finally:
            subprocess.run(roost.argv("image", "remove", "--force", "big-btrfs"), env=roost.env, capture_output=True)


def zfs_rows(roost: Roost, root: Path, base: Path, runs: int, rows: list[list[str]]) -> None:
    place = base / "zfs"
    place.mkdir()
    with pools.zfs_pool(place, size="12G") as pool:
        dataset = f"{pool}/roost"
        subprocess.run(["zfs", "create", "-o", "mountpoint=none", "-o", "canmount=off", dataset], check=True)
        with settings(roost, f"zfs-dataset: {dataset}\n"):
            try:
                roost.ok(
                    "image", "create", "big-zfs", "--from-dir", str(root), "--profile", "minimal", "--backend", "zfs"
                )
                view = base / "zfs-view"
                view.mkdir()
                snapshot = Path(roost.env["ROOST_ROOT"]) / "images" / "big-zfs" / "generations" / "1" / "snapshot"
                origin = snapshot.read_text().strip()
                clone = f"{dataset}/bench-view"
                subprocess.run(
                    ["zfs", "clone", "-o", f"mountpoint={view}", "-o", "readonly=on", origin, clone], check=True
                )
                subprocess.run(["zfs", "mount", clone], capture_output=True)
                try:
                    rows_for("zfs", roost, "big-zfs", view, base, runs, rows)
                finally:
                    subprocess.run(["umount", str(view)], capture_output=True)
                    subprocess.run(["zfs", "destroy", clone], capture_output=True)
            finally:
                subprocess.run(roost.argv("image", "remove", "--force", "big-zfs"), env=roost.env, capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
