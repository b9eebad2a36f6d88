"""This roost against another checkout of itself, alternately, in one run: is a change a regression?

    sudo .venv/bin/python bench/versus.py BASE [--rounds 40] [--bursts 10] [--parallel 32]

BASE is another roost source tree, for instance the commit before a change:
``git worktree add --detach /tmp/base 0fb31f1``. Each tree gets its own
temporary state and runtime root and the same image (the cached Debian
bookworm minbase root, ``--from-dir``, sbuild profile), and runs through a
launcher like the one scripts/install writes (``python -I -S``, the tree and
this environment's site-packages on the path by hand).

Each round runs, for base and then this tree: ``session begin``, ``session run
… true``, ``session end`` and an automatic session (``run IMAGE -- true``).
Then bursts of ``--parallel`` automatic sessions at once, base and this tree
alternately. Figures are wall medians (min–max) and CPU medians (user and
system time of the processes, from wait4), and this tree's over base's. Unlike
bench/run.py's ratios to schroot, nothing here divides by a peer's own noise,
and the parallel row is a median of bursts rather than one burst.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from harness import REPO, Figure, Roost, debian_root, machine, remove_all, table, workdir

OPERATIONS = ("begin", "run … true", "end", "automatic session")


class Side:
    """One source tree with its own state root and launcher."""

    def __init__(self, name: str, tree: Path, base: Path) -> None:
        self.name = name
        self.tree = tree
        home = base / name
        home.mkdir()
        self.launcher = home / "roost"
        self.launcher.write_text(
            f"#!{sys.executable} -IS\n"
            "import sys\n"
            f"sys.path[:0] = [{str(tree)!r}]\n"
            f"sys.path.append({sysconfig.get_path('purelib')!r})\n"
            "from roost.main import main\n"
            "sys.exit(main())\n"
        )
        self.launcher.chmod(0o755)
        (home / "roost.yaml").write_text("# benchmark configuration: defaults\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        self.env.update(
            ROOST_ROOT=str(home / "state"), ROOST_RUN=str(home / "run"), ROOST_CONFIG=str(home / "roost.yaml")
        )
        self.wall: dict[str, list[float]] = {op: [] for op in (*OPERATIONS, "parallel")}
        self.cpu: dict[str, list[float]] = {op: [] for op in (*OPERATIONS, "parallel")}

    def argv(self, *args: str) -> list[str]:
        return [str(self.launcher), *args]

    def run(self, *args: str) -> tuple[str, float, float]:
        """One whole process: its stdout, wall and CPU seconds. Fails loudly."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True, cwd="/")
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name}: roost {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout, wall, _cpu_since(before)

    def burst(self, image: str, n: int) -> tuple[float, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        argv = self.argv("run", image, "--", "true")
        procs = [
            subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
            for _ in range(n)
        ]
        failed = [p for p in procs if p.wait() != 0]
        wall = time.perf_counter() - started
        if failed:
            err = failed[0].stderr.read().decode(errors="replace").strip() if failed[0].stderr else ""
            raise RuntimeError(f"{self.name}: {len(failed)} of {n} parallel automatic sessions failed: {err}")
        for p in procs:
            if p.stderr:
                p.stderr.close()
        return wall, _cpu_since(before)

    def record(self, op: str, wall: float, cpu: float) -> None:
        self.wall[op].append(wall)
        self.cpu[op].append(cpu)


def _cpu_since(before: resource.struct_rusage) -> float:
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@contextmanager
def installed(side: Side, root: Path) -> Iterator[Side]:
    """The image on *side*'s state root; every session and image removed afterwards."""
    side.run("image", "create", "deb", "--from-dir", str(root), "--profile", "sbuild")
    try:
        yield side
    finally:
        remove_all(Roost(side.launcher, side.env, side.launcher))


def describe(tree: Path) -> str:
    proc = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return proc.stdout.strip()[:90] if proc.returncode == 0 else str(tree)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, help="another roost source tree")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=32)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/versus.py measures system mode: run it as root")
    base_tree = args.base.resolve()
    if not (base_tree / "roost" / "main.py").is_file():
        raise SystemExit(f"{base_tree} is not a roost source tree (no roost/main.py)")
    started = time.time()
    with workdir() as work, ExitStack() as stack:
        root = debian_root(work)
        sides = [Side("base", base_tree, work), Side("this", REPO, work)]
        for side in sides:
            stack.enter_context(installed(side, root))
        for side in sides:  # warm the caches, compiled modules included
            sid = side.run("session", "begin", "deb")[0].strip()
            side.run("session", "end", sid)
        for _ in range(args.rounds):
            for side in sides:
                out, wall, cpu = side.run("session", "begin", "deb")
                sid = out.strip()
                side.record("begin", wall, cpu)
                side.record("run … true", *side.run("session", "run", sid, "--", "true")[1:])
                side.record("end", *side.run("session", "end", sid)[1:])
                side.record("automatic session", *side.run("run", "deb", "--", "true")[1:])
        for side in sides:
            side.burst("deb", args.parallel)  # one burst each to warm
        for _ in range(args.bursts):
            for side in sides:
                side.record("parallel", *side.burst("deb", args.parallel))
    base, this = sides
    rows = []
    for op in (*OPERATIONS, "parallel"):
        label = f"{args.parallel} automatic sessions at once" if op == "parallel" else op
        bw, tw = Figure(base.wall[op]), Figure(this.wall[op])
        bc, tc = Figure(base.cpu[op]), Figure(this.cpu[op])
        rows.append(
            [
                label,
                bw.show(),
                tw.show(),
                f"{tw.median / bw.median:.2f}×",
                f"{bc.median * 1000:.1f} ms",
                f"{tc.median * 1000:.1f} ms",
                f"{tc.median / bc.median:.2f}×",
            ]
        )
    print(f"roost against another checkout, {time.strftime('%Y-%m-%d')}, {machine()}")
    print(f"base: {describe(base_tree)}")
    print(f"this: {describe(REPO)}")
    print(f"{args.rounds} rounds, {args.bursts} bursts of {args.parallel}; took {time.time() - started:.0f} s")
    print(
        table(
            rows,
            [
                "operation",
                "base wall median (min–max)",
                "this wall median (min–max)",
                "wall",
                "base CPU",
                "this CPU",
                "CPU",
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
