"""roost's benchmark: every session operation against schroot and systemd-nspawn, one table.

    sudo ./scripts/bench [--runs 20] [--parallel 32] [--no-scale] [--no-btrfs] [--no-zfs]

Peers are installed from Debian and measured in the same run, on the same
Debian bookworm minbase root (mmdebstrap):

* schroot 1.6, a ``directory`` chroot with ``union-type=overlay`` and the
  sbuild profile; and a ``btrfs-snapshot`` chroot on the loop-mounted btrfs
  the roost btrfs backend uses;
* systemd-nspawn, non-boot, ``--volatile=overlay --read-only`` and
  ``--ephemeral`` on that btrfs.

roost runs the overlay backend on the temporary directory, the btrfs backend
with ``btrfs-pool:`` on that loop btrfs, and the zfs backend in a file-backed
pool under zfs-fuse (no schroot peer there: schroot mounts its zfs clones
with ``mount -t zfs``, which zfs-fuse does not provide).

Whole-process figures are medians (min–max) of N runs; roost's are also
given as ratios to the peer's. Engine-level figures time the operation
inside one process. Scaling rows compare the Debian root with a root ten
times larger (2 GB): begin and promote of a 1 MB change must stay flat.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from harness import (
    Figure,
    Roost,
    debian_root,
    end_schroot_sessions,
    machine,
    roost_install,
    schroot_chroot,
    table,
    timed,
    workdir,
)

from tests.support import pools


def ratio(mine: Figure, theirs: Figure | None) -> str:
    return f"{mine.median / theirs.median:.2f}×" if theirs else ""


class Report:
    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.interpreter: Figure | None = None  # python -I -c pass, the floor of every whole process

    def add(self, what: str, mine: Figure | None, peer: str = "", theirs: Figure | None = None, note: str = "") -> None:
        self.rows.append(
            [
                what,
                mine.show() if mine else "",
                peer,
                theirs.show() if theirs else "",
                ratio(mine, theirs) if mine else "",
                note,
            ]
        )

    def print(self) -> None:
        print(
            table(self.rows, ["operation", "roost median (min–max)", "peer", "peer median (min–max)", "ratio", "note"])
        )


# --- peers ------------------------------------------------------------------------------


def nspawn(root: Path, *extra: str) -> list[str]:
    return ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "-D", str(root), *extra, "--", "/bin/true"]


# --- measurements -----------------------------------------------------------------------


def whole_process(report: Report, roost: Roost, image: str, peer_name: str, peer: str | None, runs: int) -> None:
    """begin, run true, end, automatic and recover for roost and (optionally) a schroot chroot.

    ``schroot -r`` is roost-schroot's (what sbuild runs a few hundred times per
    build) against schroot's own, both in a session of the same kind as above.
    """
    kinds = ("begin", "run", "schroot-run", "end", "auto", "recover")
    mine: dict[str, list[float]] = {k: [] for k in kinds}
    theirs: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(runs):
        t, sid = timed(roost.argv("session", "begin", image), roost.env, capture=True)
        sid = sid.strip()
        mine["begin"].append(t)
        mine["run"].append(timed(roost.argv("session", "run", sid, "--", "true"), roost.env)[0])
        mine["schroot-run"].append(timed(roost.schroot_argv("-r", "-c", sid, "--", "true"), roost.env)[0])
        mnt = roost.env["ROOST_RUN"] + "/mnt/" + sid + "/root"  # behind its gate, <run>/mnt/ID
        subprocess.run(["umount", "-R", mnt], check=True)  # as a reboot would
        mine["recover"].append(timed(roost.argv("session", "recover", sid), roost.env)[0])
        mine["end"].append(timed(roost.argv("session", "end", sid), roost.env)[0])
        mine["auto"].append(timed(roost.argv("run", image, "--", "true"), roost.env)[0])
        if peer is None:
            continue
        t, session = timed(["schroot", "-b", "-c", peer], capture=True)
        session = session.strip()
        theirs["begin"].append(t)
        theirs["run"].append(timed(["schroot", "-r", "-c", session, "--", "true"])[0])
        location = _schroot_location(session)
        subprocess.run(["umount", "-R", location], check=True)
        theirs["recover"].append(timed(["schroot", "--recover-session", "-c", session])[0])
        theirs["end"].append(timed(["schroot", "-e", "-c", session])[0])
        theirs["auto"].append(timed(["schroot", "-c", peer, "--", "true"])[0])
    theirs["schroot-run"] = theirs["run"]  # schroot -r is the peer of both
    labels = {
        "begin": "begin",
        "run": "run … true",
        "schroot-run": "schroot -r … true",
        "end": "end",
        "auto": "automatic session",
        "recover": "recover one session",
    }
    for key, label in labels.items():
        note = f"target ≤ {TARGETS[key]}×" if key in TARGETS and peer else ""
        if key in ("run", "schroot-run") and report.interpreter is not None:
            above = (Figure(mine[key]).median - report.interpreter.median) * 1000
            note = f"interpreter start {above:+.1f} ms (target: ≤ +5 ms or ≤ 1.2×)"
        report.add(
            f"{label} [{image}]",
            Figure(mine[key]),
            peer_name if peer else "",
            Figure(theirs[key]) if theirs[key] else None,
            note,
        )


#: The issue's targets, as ratios to schroot in the same run.
TARGETS = {"begin": 0.3, "end": 0.3, "auto": 0.4}


def _schroot_location(session: str) -> str:
    out = subprocess.run(["schroot", "--location", "-c", f"session:{session}"], capture_output=True, text=True)
    return out.stdout.strip()


def automatic_vs_nspawn(
    report: Report, roost: Roost, image: str, root: Path, extra: list[str], label: str, runs: int
) -> None:
    mine = Figure([timed(roost.argv("run", image, "--", "true"), roost.env)[0] for _ in range(runs)])
    theirs = Figure([_nspawn_once(root, extra) for _ in range(runs)])
    report.add(f"automatic session [{image}]", mine, label, theirs)


def _nspawn_once(root: Path, extra: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(nspawn(root, *extra), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"systemd-nspawn failed: {proc.stderr.strip()}")
    return time.perf_counter() - started


def parallel(report: Report, roost: Roost, image: str, peer: str, n: int) -> None:
    def burst(argvs: list[list[str]], env: dict[str, str] | None) -> tuple[float, int]:
        started = time.perf_counter()
        procs = [
            subprocess.Popen(a, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/") for a in argvs
        ]
        failures = sum(1 for p in procs if p.wait() != 0)
        return time.perf_counter() - started, failures

    mine, mine_failed = burst([roost.argv("run", image, "--", "true")] * n, roost.env)
    theirs, theirs_failed = burst([["schroot", "-c", peer, "--", "true"]] * n, None)
    report.add(
        f"{n} parallel automatic sessions, wall [{image}]",
        Figure([mine]),
        "schroot dir+overlay",
        Figure([theirs]),
        f"failures: roost {mine_failed}, schroot {theirs_failed}",
    )


def engine_level(report: Report, roost: Roost, image: str, runs: int) -> None:
    """begin and end inside one process (no interpreter start, no imports)."""
    code = (
        "import sys, time, json\n"
        "from core.engine import Engine\n"
        "e = Engine(); e.ctx.ready()\n"
        "s = e.begin(sys.argv[1]); e.end(s.id)\n"
        "b, d = [], []\n"
        "for _ in range(int(sys.argv[2])):\n"
        "    t = time.perf_counter(); s = e.begin(sys.argv[1]); b.append(time.perf_counter() - t)\n"
        "    t = time.perf_counter(); e.end(s.id); d.append(time.perf_counter() - t)\n"
        "print(json.dumps([b, d]))\n"
    )
    import json

    out = subprocess.run(
        [sys.executable, "-c", code, image, str(runs)], env=roost.env, capture_output=True, text=True, check=True
    )
    begins, ends = json.loads(out.stdout)
    note = "target < 5 ms" if image == "deb" else "(the 5 ms target is overlay's)"
    report.add(f"engine-level begin [{image}]", Figure(begins), note=note)
    report.add(f"engine-level end [{image}]", Figure(ends), note=note)


def promote_small_change(roost: Roost, image: str, runs: int) -> tuple[Figure, Figure]:
    """(begin, promote) of a maintenance session that writes 1 MB, in-process."""
    code = (
        "import sys, time, json, os\n"
        "from core.engine import Engine\n"
        "e = Engine(); e.ctx.ready()\n"
        "b, p = [], []\n"
        "for i in range(int(sys.argv[2])):\n"
        "    t = time.perf_counter(); s = e.begin(sys.argv[1], maintenance=True); b.append(time.perf_counter() - t)\n"
        "    with open(os.path.join(s.mountpoint, 'var/tmp', f'change-{i}'), 'wb') as f:\n"
        "        f.write(os.urandom(1 << 20))\n"
        "    t = time.perf_counter(); e.promote(s.id, 'bench'); p.append(time.perf_counter() - t)\n"
        "print(json.dumps([b, p]))\n"
    )
    import json

    out = subprocess.run(
        [sys.executable, "-c", code, image, str(runs)], env=roost.env, capture_output=True, text=True, check=True
    )
    begins, promotes = json.loads(out.stdout)
    return Figure(begins), Figure(promotes)


def grow(root: Path, dest: Path, extra_bytes: int) -> Path:
    """A copy of *root* with *extra_bytes* of incompressible filler in /usr/share/filler."""
    subprocess.run(["cp", "-a", "--reflink=auto", str(root), str(dest)], check=True)
    filler = dest / "usr" / "share" / "filler"
    filler.mkdir()
    chunk = 8 << 20
    for i in range(extra_bytes // chunk):
        (filler / f"blob-{i:04d}").write_bytes(os.urandom(chunk))
    return dest


def scaling(report: Report, roost: Roost, small: str, large: str, label: str, runs: int) -> None:
    os.sync()  # the write-back of the freshly created images is not promote's cost
    b_small, p_small = promote_small_change(roost, small, runs)
    b_large, p_large = promote_small_change(roost, large, runs)
    report.add(f"begin, 200 MB root [{label}]", b_small)
    report.add(
        f"begin, 2 GB root [{label}]", b_large, note=f"large/small {b_large.median / b_small.median:.2f}× (flat ≤ 1.5×)"
    )
    report.add(f"promote 1 MB change, 200 MB root [{label}]", p_small)
    report.add(
        f"promote 1 MB change, 2 GB root [{label}]",
        p_large,
        note=f"large/small {p_large.median / p_small.median:.2f}×; target < 100 ms",
    )


def python_start(report: Report, runs: int) -> None:
    report.interpreter = Figure([timed([sys.executable, "-I", "-c", "pass"])[0] for _ in range(runs)])
    report.add("interpreter start (python -I -c pass)", report.interpreter)


# --- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=32)
    parser.add_argument("--no-scale", action="store_true", help="skip the 2 GB scaling rows")
    parser.add_argument("--no-btrfs", action="store_true", help="skip the btrfs peers and rows")
    parser.add_argument("--no-zfs", action="store_true", help="skip the zfs rows")
    args = parser.parse_args()
    runs = args.runs
    scale_runs = min(runs, 10)
    report = Report()
    started = time.time()
    with workdir() as base, ExitStack() as stack:
        root = debian_root(base)
        roost = stack.enter_context(roost_install(base))
        peer = stack.enter_context(schroot_chroot(root, base))
        roost.ok("image", "create", "deb", "--from-dir", str(root), "--profile", "sbuild")
        _config(roost, "deb", "overlay-max-depth: 64\n")
        python_start(report, runs)
        whole_process(report, roost, "deb", "schroot dir+overlay", peer.name, runs)
        automatic_vs_nspawn(
            report, roost, "deb", root, ["--volatile=overlay", "--read-only"], "nspawn volatile=overlay", runs
        )
        parallel(report, roost, "deb", peer.name, args.parallel)
        engine_level(report, roost, "deb", runs)
        large: Path | None = None
        if not args.no_scale:
            large = grow(root, base / "debian-large", 1800 << 20)
            roost.ok("image", "create", "large", "--from-dir", str(large), "--profile", "sbuild")
            _config(roost, "large", "overlay-max-depth: 64\n")
            scaling(report, roost, "deb", "large", "overlay", scale_runs)
            roost.ok("image", "remove", "large")
        if not args.no_btrfs:
            btrfs_rows(report, roost, base, root, large, runs, scale_runs)
        if not args.no_zfs:
            zfs_rows(report, roost, base, root, large, runs, scale_runs)
        print(f"roost benchmark, {time.strftime('%Y-%m-%d')}, {runs} runs per row, {machine()}")
        print(f"root: Debian bookworm minbase; took {time.time() - started:.0f} s")
        report.print()
    return 0


def btrfs_rows(
    report: Report, roost: Roost, base: Path, root: Path, large: Path | None, runs: int, scale_runs: int
) -> None:
    """roost on btrfs (btrfs-pool on a loop btrfs) against schroot btrfs-snapshot and nspawn --ephemeral there."""
    place = base / "btrfs"
    place.mkdir()
    with pools.btrfs_mount(place, size="8G") as mnt, _settings(roost, f"btrfs-pool: {mnt / 'pool'}\n"):
        (mnt / "pool").mkdir()
        subvol = mnt / "debian"
        subprocess.run(["btrfs", "-q", "subvolume", "create", str(subvol)], check=True)
        subprocess.run(["cp", "-a", "--reflink=auto", f"{root}/.", str(subvol)], check=True)
        snapshots = mnt / "snapshots"
        snapshots.mkdir()
        made = []
        try:
            with _schroot_btrfs(subvol, snapshots) as btrfs_peer:
                made.append("deb-btrfs")
                roost.ok(
                    "image", "create", "deb-btrfs", "--from-dir", str(root), "--profile", "sbuild", "--backend", "btrfs"
                )
                whole_process(report, roost, "deb-btrfs", "schroot btrfs-snapshot", btrfs_peer, runs)
                automatic_vs_nspawn(
                    report, roost, "deb-btrfs", subvol, ["--ephemeral"], "nspawn --ephemeral (btrfs)", runs
                )
                engine_level(report, roost, "deb-btrfs", runs)
                if large is not None:
                    made.append("large-btrfs")
                    roost.ok(
                        "image",
                        "create",
                        "large-btrfs",
                        "--from-dir",
                        str(large),
                        "--profile",
                        "sbuild",
                        "--backend",
                        "btrfs",
                    )
                    scaling(report, roost, "deb-btrfs", "large-btrfs", "btrfs", scale_runs)
        finally:
            _remove(roost, made)
            subprocess.run(["btrfs", "-q", "subvolume", "delete", str(subvol)], check=False)


def zfs_rows(
    report: Report, roost: Roost, base: Path, root: Path, large: Path | None, runs: int, scale_runs: int
) -> None:
    """roost on zfs, in a file-backed pool under zfs-fuse.

    No schroot peer: its zfs-snapshot chroots mount clones with ``mount -t zfs``,
    which zfs-fuse does not provide.
    """
    place = base / "zfs"
    place.mkdir()
    with pools.zfs_pool(place, size="8G") as pool:
        dataset = f"{pool}/roost"
        subprocess.run(["zfs", "create", "-o", "mountpoint=none", "-o", "canmount=off", dataset], check=True)
        made = []
        with _settings(roost, f"zfs-dataset: {dataset}\n"):
            try:
                made.append("deb-zfs")
                roost.ok(
                    "image", "create", "deb-zfs", "--from-dir", str(root), "--profile", "sbuild", "--backend", "zfs"
                )
                whole_process(report, roost, "deb-zfs", "", None, runs)
                engine_level(report, roost, "deb-zfs", runs)
                if large is not None:
                    made.append("large-zfs")
                    roost.ok(
                        "image",
                        "create",
                        "large-zfs",
                        "--from-dir",
                        str(large),
                        "--profile",
                        "sbuild",
                        "--backend",
                        "zfs",
                    )
                    scaling(report, roost, "deb-zfs", "large-zfs", "zfs", scale_runs)
            finally:
                _remove(roost, made)


@contextmanager
def _settings(roost: Roost, extra: str) -> Iterator[None]:
    """roost.yaml with *extra* appended, for as long as the block runs."""
    path = Path(roost.env["ROOST_CONFIG"])
    before = path.read_text()
    path.write_text(before + extra)
    try:
        yield
    finally:
        path.write_text(before)


def _create(roost: Roost, name: str, tree: Path, backend: str) -> None:
    roost.ok("image", "create", name, "--from-dir", str(tree), "--profile", "sbuild", "--backend", backend)


def _remove(roost: Roost, images: list[str]) -> None:
    for image in images:
        subprocess.run(roost.argv("image", "remove", "--force", image), env=roost.env, capture_output=True)


def _config(roost: Roost, image: str, extra: str) -> None:
    path = Path(roost.env["ROOST_ROOT"]) / "images" / image / "image.yaml"
    path.write_text(path.read_text() + extra)


@contextmanager
def _schroot_btrfs(subvol: Path, snapshots: Path) -> Iterator[str]:
    name = f"roost-bench-btrfs-{os.getpid()}"
    conf = Path("/etc/schroot/chroot.d") / name
    conf.write_text(
        f"[{name}]\ntype=btrfs-snapshot\nbtrfs-source-subvolume={subvol}\n"
        f"btrfs-snapshot-directory={snapshots}\nusers=root\nroot-users=root\nprofile=sbuild\n"
    )
    try:
        yield name
    finally:
        end_schroot_sessions(name)
        conf.unlink()


if __name__ == "__main__":
    sys.exit(main())
