"""Backends side by side: begin, end and promote on a small root and on one ten times larger.

    sudo .venv/bin/python bench/backends.py [--runs N] [--backends overlay,btrfs,…]

Each backend gets its own temporary state root where it works: btrfs on a
loop-mounted btrfs, zfs in a file-backed pool served by zfs-fuse (started
and stopped here when none runs), the others on the temporary directory's
file system. The small root is a busybox root plus filler files; the large
one has ten times the files and bytes. Every figure is the median (min–max)
of N whole processes, the two sizes alternating within each run; "promote"
promotes a maintenance session that changed one small file. The last columns are the large/small ratios: begin and
promote must stay flat (under 1.5×) for overlay, btrfs and zfs, whose clones
and promotes are O(1) or O(change).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from harness import REPO, Figure, machine, roost_install, table, timed, workdir

sys.path.insert(0, str(REPO))

from tests.support import pools, rootfs

ALL = ["overlay", "dir", "btrfs", "zfs", "squashfs", "erofs"]
FLAT = {"overlay", "btrfs", "zfs"}
FILES = 1000  # filler files in the small root; the large one has ten times as many
FILE_SIZE = 8192


def make_root(root: Path, files: int) -> tuple[int, int]:
    """A busybox root plus *files* filler files; returns (entries, bytes)."""
    rootfs.busybox(root)
    per_dir = 100
    for n in range(files):
        d = root / "usr" / "share" / "filler" / f"d{n // per_dir:04d}"
        if n % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{n:06d}").write_bytes(os.urandom(FILE_SIZE // 4) * 4)
    entries = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        entries += len(dirnames) + len(filenames)
        size += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in filenames)
    return entries, size


@contextmanager
def state_base(backend: str, base: Path) -> Iterator[tuple[Path, str | None]]:
    """Where *backend*'s state root goes, and its zfs parent dataset."""
    with ExitStack() as stack:
        if backend == "btrfs":
            place = base / "btrfs"
            place.mkdir()
            yield stack.enter_context(pools.btrfs_mount(place, size="4G")) / "roost", None
        elif backend == "zfs":
            place = base / "zfs"
            place.mkdir()
            pool = stack.enter_context(pools.zfs_pool(place, size="4G"))
            dataset = f"{pool}/roost"
            timed(["zfs", "create", "-o", "mountpoint=none", "-o", "canmount=off", dataset])
            yield base / "zfs-roost", dataset
        else:
            yield base / backend, None


def measure(backend: str, base: Path, roots: dict[str, Path], runs: int) -> dict[str, dict[str, Figure]]:
    results: dict[str, dict[str, Figure]] = {}
    with state_base(backend, base) as (where, dataset):
        where.mkdir(parents=True, exist_ok=True)
        with roost_install(where) as roost:
            if dataset is not None:
                with open(where / "roost.yaml", "a", encoding="utf-8") as f:
                    f.write(f"zfs-dataset: {dataset}\n")
            samples: dict[str, dict[str, list[float]]] = {size: {} for size in roots}
            for size, root in roots.items():
                started = time.perf_counter()
                roost.ok("image", "create", size, "--from-dir", str(root), "--backend", backend)
                samples[size]["create"] = [time.perf_counter() - started]
            # sizes alternate inside each run, so a busy neighbour slows both alike
            for i in range(runs):
                for size in roots:
                    add = samples[size].setdefault
                    t, sid = timed(roost.argv("session", "begin", size), roost.env, capture=True)
                    add("begin", []).append(t)
                    add("end", []).append(timed(roost.argv("session", "end", sid.strip()), roost.env)[0])
                    sid = roost.ok("session", "begin", size, "--maintenance").strip()
                    roost.ok("session", "run", sid, "--", "/bin/sh", "-c", f"echo {i} > /etc/change")
                    add("promote", []).append(timed(roost.argv("session", "promote", sid), roost.env)[0])
            for size in roots:
                results[size] = {op: Figure(values) for op, values in samples[size].items()}
                roost.ok("image", "remove", size)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--backends", default=",".join(ALL))
    args = parser.parse_args()
    chosen = [b for b in args.backends.split(",") if b]
    with workdir() as base:
        roots = {"small": base / "small", "large": base / "large"}
        small = make_root(roots["small"], FILES)
        busybox = small[0] - FILES - FILES // 100  # entries of the busybox root itself
        shape = {"small": small, "large": make_root(roots["large"], FILES * 10 + 9 * busybox)}
        rows = []
        flat_ok = True
        for backend in chosen:
            r = measure(backend, base, roots, args.runs)
            for size in ("small", "large"):
                f = r[size]
                create = f"{f['create'].median:.1f} s"
                rows.append([backend, size, create, f["begin"].show(), f["end"].show(), f["promote"].show()])
            ratios = {op: r["large"][op].median / r["small"][op].median for op in ("begin", "end", "promote")}
            flat = all(ratios[op] <= 1.5 for op in ("begin", "promote"))
            if backend in FLAT and not flat:
                flat_ok = False
            rows.append(
                [
                    backend,
                    "large/small",
                    "",
                    f"{ratios['begin']:.2f}×",
                    f"{ratios['end']:.2f}×",
                    f"{ratios['promote']:.2f}×" + ("" if backend not in FLAT else (" flat" if flat else " NOT FLAT")),
                ]
            )
        print(f"roost backends, {args.runs} runs each, {time.strftime('%Y-%m-%d')}, {machine()}")
        for size, (entries, nbytes) in shape.items():
            print(f"{size} root: {entries} entries, {nbytes / 2**20:.1f} MiB")
        print(table(rows, ["backend", "root", "create", "begin", "end", "promote"]))
    return 0 if flat_ok else 1


if __name__ == "__main__":
    sys.exit(main())
