"""Session operations, whole processes: roost against schroot 1.6 on the same Debian root.

    sudo .venv/bin/python bench/sessions.py [--runs N]

schroot runs a ``directory`` chroot with ``union-type=overlay`` and the
sbuild profile; roost an overlay image of the same tree with its sbuild
profile. Each row is the median (min–max) of N runs of a whole process, and
roost's figure as a ratio to schroot's.
"""

from __future__ import annotations

import argparse
import sys
import time

from harness import Figure, debian_root, machine, roost_install, schroot_chroot, table, timed, workdir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    n = args.runs
    with workdir() as base:
        root = debian_root(base)
        with roost_install(base) as roost, schroot_chroot(root, base) as peer:
            roost.ok("image", "create", "bench", "--from-dir", str(root), "--profile", "sbuild")
            figures: dict[str, dict[str, list[float]]] = {"roost": {}, "schroot": {}, "python": {}}

            def add(who: str, op: str, seconds: float) -> None:
                figures[who].setdefault(op, []).append(seconds)

            python = [sys.executable, "-I", "-c", "pass"]
            for _ in range(n):
                t, sid = timed(roost.argv("session", "begin", "bench"), roost.env, capture=True)
                add("roost", "begin", t)
                sid = sid.strip()
                add("roost", "run true", timed(roost.argv("session", "run", sid, "--", "true"), roost.env)[0])
                add("roost", "end", timed(roost.argv("session", "end", sid), roost.env)[0])
                t, session = peer.begin()
                add("schroot", "begin", t)
                add("schroot", "run true", timed(["schroot", "-r", "-c", session, "--", "true"])[0])
                add("schroot", "end", timed(["schroot", "-e", "-c", session])[0])
                add("roost", "automatic", timed(roost.argv("run", "bench", "--", "true"), roost.env)[0])
                add("schroot", "automatic", timed(["schroot", "-c", peer.name, "--", "true"])[0])
                add("python", "start", timed(python)[0])
            rows = []
            for op in ("begin", "run true", "end", "automatic"):
                mine, theirs = Figure(figures["roost"][op]), Figure(figures["schroot"][op])
                rows.append([op, mine.show(), theirs.show(), f"{mine.median / theirs.median:.2f}×"])
            interp = Figure(figures["python"]["start"])
            rows.append(["python -I -c pass", interp.show(), "", ""])
            print(f"roost vs schroot 1.6, {n} runs each, {time.strftime('%Y-%m-%d')}, {machine()}")
            print(table(rows, ["operation", "roost median (min–max)", "schroot median (min–max)", "ratio"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
