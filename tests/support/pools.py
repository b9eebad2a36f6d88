"""Real file systems for backend tests and benchmarks: a loop-mounted btrfs, a zfs-fuse pool.

Both are made from sparse temporary files and torn down completely (also
when a test fails): the btrfs is mounted with ``-o loop`` (an autoclearing
loop device, gone with the unmount); the zfs pool is destroyed, and a
zfs-fuse daemon started here is stopped by its pid. A zfs-fuse daemon that
was already running is used as it is and never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Unavailable(Exception):
    """What a pool needs is missing here (a package, a kernel module)."""


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def loops_backed_by(path: Path) -> list[str]:
    out = subprocess.run(["losetup", "-j", str(path)], capture_output=True, text=True, check=False).stdout
    return [line.split(":", 1)[0] for line in out.splitlines() if line.strip()]


@contextmanager
def btrfs_mount(base: Path, size: str = "3G") -> Iterator[Path]:
    """A btrfs file system on a sparse file below *base*, mounted at ``base/mnt``."""
    if not shutil.which("mkfs.btrfs"):
        raise Unavailable("btrfs-progs is not installed (apt-get install btrfs-progs)")
    image = base / "btrfs.img"
    mnt = base / "mnt"
    mnt.mkdir(parents=True)
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    _run("mkfs.btrfs", "-q", str(image))
    _run("mount", "-o", "loop", str(image), str(mnt))
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        for dev in loops_backed_by(image):  # autoclear detaches it; this is the fallback
            subprocess.run(["losetup", "-d", dev], check=False)
        image.unlink()


def _zfs_ready() -> bool:
    return subprocess.run(["zpool", "list", "-H"], capture_output=True, check=False).returncode == 0


@contextmanager
def zfs_pool(base: Path, size: str = "2G", name: str | None = None) -> Iterator[str]:
    """A zfs pool on a sparse file below *base*, served by zfs-fuse (started here if none runs).

    *name* defaults to ``roosttest<pid>``; a second pool in the same run needs another.
    """
    if not shutil.which("zpool") or not shutil.which("zfs"):
        raise Unavailable("zfs is not installed (apt-get install zfs-fuse)")
    if not os.path.exists("/dev/fuse"):
        raise Unavailable("no /dev/fuse")
    daemon: subprocess.Popen[bytes] | None = None
    running = subprocess.run(["pgrep", "-x", "zfs-fuse"], capture_output=True, check=False).returncode == 0
    if not running:
        if not shutil.which("zfs-fuse"):
            raise Unavailable("no zfs daemon runs and zfs-fuse is not installed (apt-get install zfs-fuse)")
        os.makedirs("/var/run/zfs", exist_ok=True)
        os.makedirs("/var/lock/zfs", exist_ok=True)
        daemon = subprocess.Popen(
            ["zfs-fuse", "--no-daemon", "--no-kstat-mount"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    name = name or f"roosttest{os.getpid()}"
    image = base / "zpool.img"
    created = False
    try:
        deadline = time.monotonic() + 30
        while not _zfs_ready():
            if daemon is not None and daemon.poll() is not None:
                raise Unavailable(f"zfs-fuse exited with {daemon.returncode}")
            if time.monotonic() > deadline:
                raise Unavailable("the zfs daemon does not answer")
            time.sleep(0.1)
        subprocess.run(["truncate", "-s", size, str(image)], check=True)
        _run("zpool", "create", "-o", "cachefile=none", "-m", "none", name, str(image))
        created = True
        yield name
    finally:
        if created:
            subprocess.run(["zpool", "destroy", "-f", name], capture_output=True, check=False)
        if image.exists():
            image.unlink()
        if daemon is not None:
            daemon.terminate()
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def zfs_datasets(parent: str) -> list[str]:
    out = subprocess.run(
        ["zfs", "list", "-H", "-t", "all", "-o", "name", "-r", parent], capture_output=True, text=True, check=False
    ).stdout
    return [line for line in out.splitlines() if line]


def btrfs_subvolumes(mnt: Path, below: Path) -> list[str]:
    """Subvolumes of the btrfs at *mnt* whose path lies below *below*."""
    out = _run("btrfs", "subvolume", "list", str(mnt))
    rel = str(below.relative_to(mnt))
    found = []
    for line in out.splitlines():
        path = line.split(" path ", 1)[-1]
        if path == rel or path.startswith(rel + "/"):
            found.append(path)
    return found
