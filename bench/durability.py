"""What durability costs a build's dependency install: dpkg inside a session, per way of skipping syncs.

A Debian bookworm image gets the .debs of a set of packages (default: what a
debhelper build needs beyond minbase) in its apt cache through a maintenance
session; then each measured session installs them with ``apt-get install
--no-download`` (dpkg's unpack and configure, no network), timed around that
one command. The ways, interleaved, N runs each:

- ``durable``: the upper layer synced as always (image.yaml ``durable: true``);
- ``volatile``: roost's default for ordinary sessions (overlayfs ``volatile``);
- ``durable+unsafe-io`` and ``volatile+unsafe-io``: dpkg's ``--force-unsafe-io`` too;
- ``tmpfs upper``: the sessions' clones (upper and work) on a tmpfs, synced or not
  (a second state root whose ``sessions`` directory is a tmpfs mount).

Prints medians and the ratio to ``durable``. Everything lives in a temporary
directory; nothing is left behind.

    python3 bench/durability.py [--runs N] [--packages "build-essential debhelper"]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Roost, machine, roost_install, table, workdir
from tests.support.rootfs import debian_tarball

WAYS = ("durable", "volatile", "durable+unsafe-io", "volatile+unsafe-io", "tmpfs upper")


def set_durable(roost: Roost, image: str, durable: bool) -> None:
    conf = Path(roost.env["ROOST_ROOT"]) / "images" / image / "image.yaml"
    lines = [line for line in conf.read_text().splitlines() if not line.startswith("durable:")]
    conf.write_text("\n".join([*lines, f"durable: {'true' if durable else 'false'}"]) + "\n")


def run(roost: Roost, sid: str, script: str) -> str:
    proc = subprocess.run(
        roost.argv("session", "run", sid, "-u", "root", "-d", "/", "--", "sh", "-ec", script),
        env=roost.env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script!r} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def prepare(roost: Roost, tarball: Path, packages: str) -> int:
    """The image, with the packages' .debs in its apt cache; returns how many .debs."""
    roost.ok("image", "create", "deb", "--from-tar", str(tarball))
    sid = roost.ok("session", "begin", "deb", "--maintenance").strip()
    run(roost, sid, f"apt-get update -q >/dev/null && apt-get install -y -q --download-only {packages} >/dev/null")
    count = int(run(roost, sid, "ls /var/cache/apt/archives/*.deb | wc -l").strip())
    roost.ok("session", "promote", sid, "-m", "lists and the packages' .debs")
    return count


def install_once(roost: Roost, packages: str, unsafe: bool) -> float:
    sid = roost.ok("session", "begin", "deb").strip()
    try:
        option = " -o Dpkg::Options::=--force-unsafe-io" if unsafe else ""
        started = time.perf_counter()
        script = f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-download{option} {packages} >/dev/null"
        run(roost, sid, script)
        return time.perf_counter() - started
    finally:
        subprocess.run(roost.argv("session", "end", sid), env=roost.env, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--packages", default="build-essential debhelper")
    args = parser.parse_args()
    tarball = debian_tarball()
    with workdir() as base:
        (base / "disk").mkdir()
        (base / "tmpfs").mkdir()
        with roost_install(base / "disk") as disk, roost_install(base / "tmpfs") as ram:
            debs = prepare(disk, tarball, args.packages)
            prepare(ram, tarball, args.packages)
            sessions = Path(ram.env["ROOST_ROOT"]) / "sessions"
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700,size=8g", "tmpfs", str(sessions)], check=True)
            try:
                samples: dict[str, list[float]] = {w: [] for w in WAYS}
                for _ in range(args.runs):
                    for way in WAYS:
                        roost = ram if way == "tmpfs upper" else disk
                        set_durable(roost, "deb", way.startswith("durable") or way == "tmpfs upper")
                        samples[way].append(install_once(roost, args.packages, "unsafe-io" in way))
            finally:
                subprocess.run(["umount", str(sessions)], check=True)
    print(f"# durability: apt-get install --no-download of {debs} .debs ({args.packages}), {args.runs} runs each")
    print(f"# {machine()}; state root on {fs_of(base.parent)}")
    base_median = statistics.median(samples["durable"])
    rows = []
    for way in WAYS:
        s = samples[way]
        median = statistics.median(s)
        rows.append([way, f"{median:.2f} s", f"{min(s):.2f}–{max(s):.2f}", f"{median / base_median:.2f}×"])
    print(table(rows, ["way", "median", "range", "vs durable"]))


def fs_of(path: Path) -> str:
    out = subprocess.run(["df", "--output=fstype,source", str(path)], capture_output=True, text=True).stdout
    return " ".join(out.split()[2:4]) if out else "?"


if __name__ == "__main__":
    main()
