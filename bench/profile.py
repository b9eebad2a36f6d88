"""Where a whole ``roost session begin`` or ``end`` spends its time: cProfile of the real launcher.

    sudo .venv/bin/python bench/profile.py [--op begin|end|auto] [--runs 20] [--top 25]

Profiles the launcher scripts/install writes, on an overlay image of the
Debian minbase root with the sbuild profile, in a temporary state root. The
profile of N runs is merged and printed by internal time, after the
interpreter's own start-up (``python -IS -c pass``) and the whole-process
median, so that what remains above the floor can be read off the table.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Figure, Roost, debian_root, machine, roost_install, table, timed, workdir

PROBE = """\
import cProfile, sys
sys.argv = [sys.argv[1], *sys.argv[3:]]
profiler = cProfile.Profile()
code = 0
profiler.enable()
try:
    exec(compile(open(sys.argv[0]).read(), sys.argv[0], "exec"), {"__name__": "__main__"})
except SystemExit as e:
    code = e.code or 0
finally:
    profiler.disable()
    profiler.dump_stats(OUT)
sys.exit(code)
"""


def profiled(roost_argv: list[str], env: dict[str, str], out: Path) -> str:
    """Run the launcher under cProfile (started before its first import); its stdout."""
    code = PROBE.replace("OUT", repr(str(out)))
    proc = subprocess.run(
        [sys.executable, "-IS", "-c", code, roost_argv[0], "-", *roost_argv[1:]],
        env=env,
        capture_output=True,
        text=True,
        cwd="/",
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(roost_argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--op", choices=("begin", "end", "auto"), default="end")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with workdir() as base, roost_install(base) as roost, tempfile.TemporaryDirectory() as scratch:
        root = debian_root(base)
        roost.ok("image", "create", "deb", "--from-dir", str(root), "--profile", "sbuild")
        wall: list[float] = []
        dumps: list[str] = []
        for i in range(args.runs):
            out = Path(scratch) / f"{i}.prof"
            if args.op == "begin":
                started = time.perf_counter()
                sid = profiled(roost.argv("session", "begin", "deb"), roost.env, out).strip()
                wall.append(time.perf_counter() - started)
                roost.ok("session", "end", sid)
            elif args.op == "end":
                sid = roost.ok("session", "begin", "deb").strip()
                started = time.perf_counter()
                profiled(roost.argv("session", "end", sid), roost.env, out)
                wall.append(time.perf_counter() - started)
            else:
                started = time.perf_counter()
                profiled(roost.argv("run", "deb", "--", "true"), roost.env, out)
                wall.append(time.perf_counter() - started)
            dumps.append(str(out))
        floor = Figure([timed([sys.executable, "-IS", "-c", "pass"])[0] for _ in range(args.runs)])
        plain = Figure([_plain(roost, args.op) for _ in range(args.runs)])
        stats = pstats.Stats(dumps[0], stream=io.StringIO())
        for dump in dumps[1:]:
            stats.add(dump)
        entries = stats.stats  # type: ignore[attr-defined]  # {(file, line, name): (cc, nc, tt, ct, callers)}
        n = args.runs
        total = sum(tt for _, _, tt, _, _ in entries.values()) / n
        print(f"roost {args.op}, cProfile of {n} whole processes, {time.strftime('%Y-%m-%d')}, {machine()}")
        print(f"interpreter start (python -IS -c pass): {floor.show()}")
        print(f"roost {args.op}, whole process, no profiler:  {plain.show()}")
        print(f"under the profiler: {Figure(wall).show()}; profiled time {total * 1000:.1f} ms per run\n")
        shares: dict[str, float] = {}
        for key, (_, _, tt, _, _) in entries.items():
            shares[_category(key)] = shares.get(_category(key), 0.0) + tt / n
        rows = [
            [what, f"{t * 1000:.2f} ms", f"{100 * t / total:.0f}%"]
            for what, t in sorted(shares.items(), key=lambda kv: -kv[1])
        ]
        print(table(rows, ["where the profiled time goes", "per run", "share"]) + "\n")
        top = sorted(entries.items(), key=lambda kv: -kv[1][2])[: args.top]
        rows = [
            [_name(key), f"{nc / n:.0f}", f"{tt / n * 1000:.2f} ms", f"{100 * tt / n / total:.1f}%"]
            for key, (_, nc, tt, _, _) in top
        ]
        print(table(rows, ["function (internal time)", "calls per run", "per run", "share"]))
    return 0


def _plain(roost: Roost, op: str) -> float:
    if op == "begin":
        t, sid = timed(roost.argv("session", "begin", "deb"), roost.env, capture=True)
        roost.ok("session", "end", sid.strip())
        return t
    if op == "end":
        sid = roost.ok("session", "begin", "deb").strip()
        return timed(roost.argv("session", "end", sid), roost.env)[0]
    return timed(roost.argv("run", "deb", "--", "true"), roost.env)[0]


def _name(key: tuple[str, int, str]) -> str:
    file, line, name = key
    if file == "~":
        return name
    short = file.split("/work/", 1)[-1] if "/core/" in file or "/roost/" in file else os.path.basename(file)
    return f"{short}:{line}({name})"


IMPORTING = ("marshal.loads", "_imp.", "io.open_code", "builtins.exec", "_abc.")


def _category(key: tuple[str, int, str]) -> str:
    """A coarse account: importing, class bodies, system calls by kind, roost's own Python."""
    file, _, name = key
    if file.startswith("<frozen importlib") or any(i in name for i in IMPORTING) or "read' of '_io.Buffered" in name:
        return "importing modules (finding, reading, unmarshalling)"
    if "__build_class__" in name or "__new__ of type" in name or name == "<module>":
        return "module and class bodies run at import"
    if "builtins.compile" in name:
        return "compiling the launcher (a first compile: python -c pass pays it too)"
    if file.endswith("core/syscalls.py") or "umount" in name or "mount" in name:
        return "mount and umount system calls"
    if "posix." in name or "_io." in name or "fcntl." in name:
        return "other system calls (stat, open, read, rmdir, unlink, flock, kill …)"
    if file.startswith("/") and ("/core/" in file or "/roost/" in file):
        return "roost's own Python code"
    return "library and built-in Python code"


if __name__ == "__main__":
    sys.exit(main())
