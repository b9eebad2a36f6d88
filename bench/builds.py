"""Whole builds: sbuild on real Debian packages through roost, schroot 1.6 and sbuild's unshare mode.

One buildd root serves all three peers: sbuild-createchroot makes it (as
tests/test_sbuild.py does; debootstrap from the Debian archive) and writes its
schroot definition (a ``directory`` chroot), which schroot uses with
``union-type=overlay`` (sessions thrown away as roost's are); roost imports that definition (``image
import-schroot``) and sbuild reaches roost through the schroot front door
(``$conf->set('SCHROOT', …)``); sbuild's unshare mode builds in the tarball
``roost image publish --sbuild-tarball`` writes of the same generation, as a
user of its own (unshare mode needs subordinate ids), removed afterwards.

A peer ``roost-rootless`` is roost's rootless mode: sbuild run by the same
ordinary user as the unshare peer, its schroot mode pointed at that user's
roost-schroot, in an image the user made from the same tarball (no sudo, no
root anywhere). A fourth peer, ``roost+cache``, is roost with its package cache
(core/pkgcache.py; image.yaml ``suite`` and ``package-cache: true``, and sbuild's
``$apt_keep_downloaded_packages = 1``), warmed by one untimed build of each
package first; plain ``roost`` has it off.

For each run, for each package, the peers build one after another in an
order that rotates with the run. Printed per package and peer: the medians
of sbuild's own Package-Time, Install-Time and Build-Time (its log's summary,
whole seconds) and the wall time, with roost's ratios to each peer; then
whether the .debs agree across peers (file lists with modes, owners, sizes and
link targets, and control data; modification times are not compared).

    python3 bench/builds.py [--runs N] [--packages tree,jq,rsync] [--peers roost,schroot,…] [--nocheck]

Nothing outside the temporary directory is left behind: the chroot.d file,
sbuild's chroot link, the build user, schroot sessions and roost's state go.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Roost, end_schroot_sessions, machine, roost_install, rootless_launcher, table, workdir
from tests.support import rootless_users

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
PEERS = ("roost", "roost+cache", "roost-rootless", "schroot", "unshare")
ROOSTS = ("roost", "roost+cache", "roost-rootless")
AS_USER = ("roost-rootless", "unshare")  # the peers sbuild runs for as the benchmark's ordinary user
OTHERS = ("schroot", "unshare")
#: Light (tree), dozens of build dependencies (jq: ruby for its manual, valgrind, bison, flex …),
#: a test suite that writes many files (rsync's `make check` builds and compares trees).
PACKAGES = ("tree", "jq", "rsync")
TIMES = ("Package-Time", "Install-Time", "Build-Time")
USER = f"roost-t-bd-b{os.getpid()}"  # the unshare peer's user, removed at the end


def arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()


def run(argv: list[str], cwd: Path | None = None, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@dataclass
class Chroot:
    name: str
    tree: Path
    conf: Path


class Createchroot:
    """sbuild-createchroot's chroot, its chroot.d file and /etc/sbuild/chroot link, removed on exit."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.prefix = f"roost-bench-{os.getpid()}"
        self.name = f"{self.prefix}-{arch()}-sbuild"
        self.link_dir = Path("/etc/sbuild/chroot")
        self.link_dir_existed = self.link_dir.exists()
        self.before = set(os.listdir("/etc/schroot/chroot.d"))

    def __enter__(self) -> Chroot:
        tree = self.base / "chroot"
        run(["sbuild-createchroot", f"--chroot-prefix={self.prefix}", SUITE, str(tree), MIRROR], timeout=1800)
        written = [f for f in set(os.listdir("/etc/schroot/chroot.d")) - self.before if f.startswith(self.name)]
        if len(written) != 1:
            raise RuntimeError(f"sbuild-createchroot wrote {written}")
        conf = Path("/etc/schroot/chroot.d") / written[0]
        # Sessions on an overlay, as roost's are: sbuild-createchroot writes union-type=none where it
        # cannot load the overlay module itself, and schroot then builds in the tree in place.
        union = self.base / "schroot-union"
        union.mkdir()
        lines = [x for x in conf.read_text().splitlines() if not x.startswith(("union-type=", "union-overlay-"))]
        conf.write_text("\n".join([*lines, "union-type=overlay", f"union-overlay-directory={union}"]) + "\n")
        return Chroot(self.name, tree, conf)

    def __exit__(self, *exc: object) -> None:
        end_schroot_sessions(self.name)
        for f in set(os.listdir("/etc/schroot/chroot.d")) - self.before:
            if f.startswith(self.name):
                os.unlink(os.path.join("/etc/schroot/chroot.d", f))
        link = self.link_dir / self.name
        if link.is_symlink():
            link.unlink()
        if not self.link_dir_existed and self.link_dir.exists() and not os.listdir(self.link_dir):
            self.link_dir.rmdir()


def fetch_sources(base: Path, packages: list[str]) -> dict[str, Path]:
    """Each source package's .dsc (apt-get source with private lists; nothing changed on the host)."""
    apt = base / "apt"
    for d in ("lists/partial", "cache/archives/partial", "parts"):
        (apt / d).mkdir(parents=True)
    (apt / "sources.list").write_text(f"deb-src {MIRROR} {SUITE} main\n")
    options = [
        f"-oDir::Etc::SourceList={apt / 'sources.list'}",
        f"-oDir::Etc::SourceParts={apt / 'parts'}",
        f"-oDir::State::Lists={apt / 'lists'}",
        f"-oDir::Cache={apt / 'cache'}",
        "-oAPT::Sandbox::User=root",
        "-qq",
    ]
    run(["apt-get", *options, "update"], timeout=600)
    found = {}
    for pkg in packages:
        src = base / "src" / pkg
        src.mkdir(parents=True)
        run(["apt-get", *options, "source", "--download-only", pkg], cwd=src, timeout=600)
        (dsc,) = src.glob("*.dsc")
        found[pkg] = dsc
    return found


def write_launcher(roost: Roost, base: Path) -> Path:
    """The front door sbuild runs: roost-schroot with the benchmark's roots (sbuild clears the environment)."""
    launcher = base / "roost-schroot-bench"
    exports = " ".join(f"{k}={v}" for k, v in roost.env.items() if k.startswith("ROOST_"))
    launcher.write_text(f'#!/bin/sh\nexport {exports}\nexec {roost.schroot_launcher} "$@"\n')
    launcher.chmod(0o755)
    return launcher


def sbuildrc(path: Path, extra: str = "", options: str = "parallel=2") -> Path:
    path.write_text(
        "$run_lintian = 0;\n$run_autopkgtest = 0;\n$run_piuparts = 0;\n"
        f"$build_environment = {{ 'DEB_BUILD_OPTIONS' => '{options}' }};\n" + extra + "1;\n"
    )
    path.chmod(0o644)
    return path


@dataclass
class Build:
    times: dict[str, int]
    wall: float
    out: Path


@dataclass
class Results:
    builds: dict[tuple[str, str], list[Build]] = field(default_factory=dict)

    def add(self, pkg: str, peer: str, build: Build) -> None:
        self.builds.setdefault((pkg, peer), []).append(build)

    def median(self, pkg: str, peer: str, key: str) -> float:
        got = self.builds.get((pkg, peer), [])
        values = [b.wall if key == "wall" else b.times[key] for b in got if key == "wall" or key in b.times]
        return statistics.median(values) if values else float("nan")


def summary(log: str) -> dict[str, int]:
    found = {}
    for key in TIMES:
        m = re.search(rf"^{key}: (\d+)$", log, re.M)
        if m:
            found[key] = int(m.group(1))
    return found


def build_log(out: Path) -> str:
    logs = sorted(p for p in out.glob("*.build") if not p.is_symlink())
    return logs[-1].read_text(errors="replace") if logs else ""


class Peers:
    def __init__(
        self,
        base: Path,
        chroot: Chroot,
        roost: Roost,
        tarball: Path | None,
        user: rootless_users.User | None,
        options: str,
    ) -> None:
        self.base = base
        self.chroot = chroot
        self.roost = roost
        self.tarball = tarball
        self.user = user
        door = f"$conf->set('SCHROOT', '{write_launcher(roost, base)}');\n"
        rootless_door = f"$conf->set('SCHROOT', '{self.rootless_door()}');\n" if user is not None else ""
        # sbuild deletes what apt downloaded unless told to keep it (its default: the chroot's cache is thrown away)
        keep = "$apt_keep_downloaded_packages = 1;\n"
        self.rc = {
            "schroot": sbuildrc(base / "sbuildrc-schroot", "", options),
            "roost": sbuildrc(base / "sbuildrc-roost", door, options),
            "roost+cache": sbuildrc(base / "sbuildrc-roost-cache", door + keep, options),
            "unshare": sbuildrc(base / "sbuildrc-unshare", "$chroot_mode = 'unshare';\n", options),
            "roost-rootless": sbuildrc(base / "sbuildrc-rootless", rootless_door, options),
        }

    def rootless_door(self) -> Path:
        """The user's roost-schroot (rootless mode), and their image of the tarball under the chroot's name."""
        assert self.user is not None and self.tarball is not None
        launcher, env = rootless_launcher(self.user)
        create = [str(launcher), "image", "create", self.chroot.name, "--from-tar", str(self.tarball)]
        argv = self.user.command(*create, "--profile", "sbuild")
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the rootless image: {proc.stderr.strip()}")
        door = self.user.home / "roost-schroot"
        exports = " ".join(f"{k}={v}" for k, v in env.items() if k != "PATH")
        door.write_text(f'#!/bin/sh\nexport {exports}\nexec {launcher} schroot "$@"\n')
        door.chmod(0o755)
        return door

    def package_cache(self, on: bool) -> None:
        """Turn roost's package cache on or off for the image (its image.yaml)."""
        conf = Path(self.roost.env["ROOST_ROOT"]) / "images" / self.chroot.name / "image.yaml"
        lines = [x for x in conf.read_text().splitlines() if not x.startswith(("suite:", "package-cache:"))]
        lines += [f"suite: {SUITE}", f"package-cache: {'true' if on else 'false'}"]
        conf.write_text("\n".join(lines) + "\n")

    def build(self, peer: str, dsc: Path, out: Path) -> Build:
        out.mkdir(parents=True)
        argv = ["sbuild", "-d", SUITE]
        environ = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "SBUILD_CONFIG": str(self.rc[peer]),
        }
        if peer in ("roost", "roost+cache"):
            self.package_cache(peer == "roost+cache")
        if peer in AS_USER:
            assert self.user is not None and self.tarball is not None
            os.chown(out, self.user.uid, self.user.gid)
            environ["HOME"] = str(self.user.home)
            command = self.user.command("env", "-i", *(f"{k}={v}" for k, v in environ.items()), *argv)
            command += [f"--chroot={self.tarball}" if peer == "unshare" else f"--chroot={self.chroot.name}", str(dsc)]
            env = None
        else:
            environ["HOME"] = "/root"
            command = [*argv, "-c", self.chroot.name, str(dsc)]
            env = environ
        started = time.perf_counter()
        proc = subprocess.run(command, cwd=out, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        log = build_log(out)
        if proc.returncode != 0 or "Status: successful" not in log:
            raise RuntimeError(f"{peer}: sbuild {dsc.name} failed ({proc.returncode}):\n{(log or proc.stdout)[-4000:]}")
        return Build(summary(log), wall, out)


# --- comparing the packages ------------------------------------------------------------


def deb_content(deb: Path) -> tuple[list[str], str]:
    """(file list without times, control data) of a .deb."""
    listing = run(["dpkg-deb", "--contents", str(deb)]).stdout.splitlines()
    files = []
    for line in listing:
        parts = line.split(None, 5)  # mode owner/group size date time name [-> target]
        if len(parts) == 6:
            files.append(f"{parts[0]} {parts[1]} {parts[2]} {parts[5]}")
    control = run(["dpkg-deb", "--field", str(deb)]).stdout
    return sorted(files), control


def compare(outs: dict[str, Path]) -> list[str]:
    """Differences between the peers' .debs (an empty list: identical content)."""
    names = {peer: sorted(p.name for p in out.glob("*.deb")) for peer, out in outs.items()}
    problems = []
    first = next(iter(outs))  # roost, when it ran
    reference = names[first]
    for peer, found in names.items():
        if found != reference:
            problems.append(f"{peer} built {found}, {first} {reference}")
    for name in reference:
        contents = {peer: deb_content(out / name) for peer, out in outs.items() if (out / name).exists()}
        base_files, base_control = contents[first]
        for peer, (files, control) in contents.items():
            if files != base_files:
                only = sorted(set(files) ^ set(base_files))[:3]
                problems.append(f"{name}: file list of {peer} differs from {first}'s ({only})")
            if control != base_control:
                problems.append(f"{name}: control data of {peer} differs from {first}'s")
    return problems


def versions() -> str:
    def first(argv: list[str]) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True)
        return (proc.stdout or proc.stderr).splitlines()[0].strip() if proc.returncode == 0 else "?"

    return f"{first(['sbuild', '--version'])}; {first(['schroot', '--version'])}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="builds of each package by each peer (default 5)")
    parser.add_argument("--packages", default=",".join(PACKAGES), help="source packages (default: %(default)s)")
    parser.add_argument("--peers", default=",".join(PEERS), help="which peers build (default: %(default)s)")
    parser.add_argument("--nocheck", action="store_true", help="DEB_BUILD_OPTIONS=nocheck: no test suites")
    args = parser.parse_args()
    peers_run = [p for p in PEERS if p in args.peers.split(",")]
    if not peers_run:
        raise SystemExit(f"--peers: choose from {', '.join(PEERS)}")
    options = "parallel=2 nocheck" if args.nocheck else "parallel=2"
    packages = [p for p in args.packages.split(",") if p]
    for tool in ("sbuild", "sbuild-createchroot", "schroot", "debootstrap", "newuidmap"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (scripts/packages: TEST_PACKAGES)")
    results = Results()
    started = time.time()
    rootless_users.PREFIX = "roost-t-bd"  # this benchmark's users carry its own prefix
    with workdir() as base:
        base.chmod(0o755)  # the unshare peer's user reads the sources and the tarball
        dscs = fetch_sources(base, packages)
        run(["chmod", "-R", "a+rX", str(base / "src")])
        user = rootless_users.make_user(USER) if set(AS_USER) & set(peers_run) else None
        try:
            if user is not None:
                run(["usermod", "-aG", "sbuild", USER])
            with Createchroot(base) as chroot, roost_install(base) as roost:
                roost.ok("image", "import-schroot", str(chroot.conf), "--json")
                tarball = None
                if user is not None:
                    published = base / "published"
                    published.mkdir(mode=0o755)
                    roost.ok("image", "publish", chroot.name, "--sbuild-tarball", str(published))
                    (tarball,) = published.glob("*.tar*")
                    tarball.chmod(0o644)
                peers = Peers(base, chroot, roost, tarball, user, options)
                if "roost+cache" in peers_run:
                    for pkg in packages:  # untimed: fills the cache
                        b = peers.build("roost+cache", dscs[pkg], base / "out" / f"{pkg}-warm-up")
                        print(f"warm-up {pkg} roost+cache: {b.times} wall {b.wall:.1f} s", file=sys.stderr)
                prepared = time.time() - started
                for n in range(args.runs):
                    for pkg in packages:
                        k = n % len(peers_run)
                        order = peers_run[k:] + peers_run[:k]
                        for peer in order:
                            out = base / "out" / f"{pkg}-{peer}-{n}"
                            b = peers.build(peer, dscs[pkg], out)
                            results.add(pkg, peer, b)
                            print(f"run {n + 1} {pkg} {peer}: {b.times} wall {b.wall:.1f} s", file=sys.stderr)
                differences = {
                    pkg: compare({p: results.builds[(pkg, p)][0].out for p in peers_run}) for pkg in packages
                }
                cached = len(list((Path(roost.env["ROOST_ROOT"]) / "package-cache").glob("*/debs/*.deb")))
        finally:
            if user is not None:
                rootless_users.kill(rootless_users.processes_of(user))
                rootless_users.remove_user(user)
    print(f"# DEB_BUILD_OPTIONS={options}")
    report(results, packages, peers_run, differences, args.runs, prepared)
    if "roost+cache" in peers_run:
        print(f"roost's package cache held {cached} .debs at the end")


def report(
    results: Results,
    packages: list[str],
    peers: list[str],
    differences: dict[str, list[str]],
    runs: int,
    prepared: float,
) -> None:
    print(f"# builds: sbuild on {', '.join(packages)}; {runs} run(s) each, interleaved; medians in seconds")
    print(f"# {machine()}; {versions()}; buildd root ready after {prepared:.0f} s")
    rows = []
    for pkg in packages:
        for peer in peers:
            row = [pkg, peer]
            for key in (*TIMES, "wall"):
                value = results.median(pkg, peer, key)
                row.append(f"{value:.1f}" if key == "wall" else f"{value:g}")
            rows.append(row)
        for mine_name in (r for r in ROOSTS if r in peers):
            for other in (o for o in (*OTHERS, "roost") if o in peers and o != mine_name):
                row = [pkg, f"{mine_name} / {other}"]
                for key in (*TIMES, "wall"):
                    mine, theirs = results.median(pkg, mine_name, key), results.median(pkg, other, key)
                    row.append(f"{mine / theirs:.2f}×" if theirs else "–")
                rows.append(row)
    print(table(rows, ["package", "peer", *TIMES, "wall"]))
    for mine_name in (r for r in ROOSTS if r in peers):
        for other in (o for o in OTHERS if o in peers):
            ratios = [
                results.median(p, mine_name, "Package-Time") / results.median(p, other, "Package-Time")
                for p in packages
                if results.median(p, other, "Package-Time")
            ]
            if ratios:
                median = statistics.median(ratios)
                print(f"median over packages of {mine_name} / {other} Package-Time: {median:.2f}×")
    for pkg in packages:
        found = differences[pkg]
        print(f"{pkg}: .debs " + ("identical in content across peers" if not found else "DIFFER: " + "; ".join(found)))


if __name__ == "__main__":
    main()
