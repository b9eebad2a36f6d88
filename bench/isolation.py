"""What per-session network and resource limits cost: begin, run, end and automatic sessions.

    sudo .venv/bin/python bench/isolation.py [--runs 30]

One Debian bookworm minbase root (the same cached mmdebstrap tarball as
bench/run.py), five images that differ only in image.yaml: no isolation,
``network: none``, ``network: loopback``, ``limits`` (memory, swap, pids,
cpu-quota) and both none and limits. The five are measured round-robin in
every round, the order turning by one each round, so load on the machine (and
the kernel's deferred work after one of them) falls on all of them alike; each row
gives the median (min–max) and its cost over the plain image in the same run.
The goal (≤ 2 ms added to begin and to an automatic session) is set for
``network: none`` and for limits, each; loopback and the two together are
measured beside them.
The peer is systemd-nspawn with and without ``--private-network`` on the same
root (the cost of a namespace of its own there). Engine-level rows time begin
and end inside one process, where a millisecond is not lost in the noise of
an interpreter's start.

Besides wall time, every whole-process row gives the CPU time (user + system)
the process used, from wait4(2): on a busy machine wall times wait for the
CPU, CPU times much less so, and the added cost shows in both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from harness import Figure, Roost, debian_root, machine, roost_install, table, workdir

VARIANTS = {
    "plain": "",
    "none": "network: none\n",
    "loopback": "network: loopback\n",
    "limits": "limits: {memory: 2G, swap: 0, pids: 4096, cpu-quota: 2}\n",
    "none+limits": "network: none\nlimits: {memory: 2G, swap: 0, pids: 4096, cpu-quota: 2}\n",
}


#: The variants the goal is set for (≤ 2 ms added to begin and to an automatic session, each);
#: loopback and both together are measured beside them.
GOALS = ("none", "limits")


def image_of(variant: str) -> str:
    return "deb-" + variant.replace("+", "-")


def measured(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process and its children, stdout) of one whole process."""
    import os

    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err.decode().strip()}")
    return wall, usage.ru_utime + usage.ru_stime, out.decode()


KEYS = ("begin", "run", "end", "auto")


def whole_process(roost: Roost, runs: int) -> dict[str, dict[str, list[float]]]:
    """begin, run … true, end and automatic session of every variant, round-robin: wall and CPU times.

    The order turns by one variant every round: the kernel's deferred work after one variant (a
    network namespace or a v2 cgroup freed after an RCU grace period) would otherwise always land
    on the same next one.
    """
    out: dict[str, dict[str, list[float]]] = {v: {k: [] for key in KEYS for k in (key, key + ".cpu")} for v in VARIANTS}

    def note(variant: str, key: str, wall: float, cpu: float) -> None:
        out[variant][key].append(wall)
        out[variant][key + ".cpu"].append(cpu)

    names = list(VARIANTS)
    for round_ in range(runs):
        turn = round_ % len(names)
        for variant in names[turn:] + names[:turn]:
            image = image_of(variant)
            wall, cpu, sid = measured(roost.argv("session", "begin", image), roost.env)
            note(variant, "begin", wall, cpu)
            wall, cpu, _ = measured(roost.argv("session", "run", sid.strip(), "--", "true"), roost.env)
            note(variant, "run", wall, cpu)
            wall, cpu, _ = measured(roost.argv("session", "end", sid.strip()), roost.env)
            note(variant, "end", wall, cpu)
            wall, cpu, _ = measured(roost.argv("run", image, "--", "true"), roost.env)
            note(variant, "auto", wall, cpu)
    return out


ENGINE = """
import json, sys, time
from core.engine import Engine
e = Engine(); e.ctx.ready()
images = json.loads(sys.argv[1]); runs = int(sys.argv[2])
for image in images.values():
    e.end(e.begin(image).id)
out = {v: {"begin": [], "end": [], "begin.cpu": [], "end.cpu": []} for v in images}
for _ in range(runs):
    for variant, image in images.items():
        t, c = time.perf_counter(), time.thread_time()
        s = e.begin(image)
        out[variant]["begin"].append(time.perf_counter() - t); out[variant]["begin.cpu"].append(time.thread_time() - c)
        t, c = time.perf_counter(), time.thread_time()
        e.end(s.id)
        out[variant]["end"].append(time.perf_counter() - t); out[variant]["end.cpu"].append(time.thread_time() - c)
print(json.dumps(out))
"""


def engine_level(roost: Roost, runs: int) -> dict[str, dict[str, list[float]]]:
    images = {v: image_of(v) for v in VARIANTS}
    proc = subprocess.run(
        [sys.executable, "-c", ENGINE, json.dumps(images), str(runs)],
        env=roost.env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, dict[str, list[float]]] = json.loads(proc.stdout)
    return result


PARTS = """
import json, os, sys, time
from types import SimpleNamespace
from core import cgroups, cgroups_upkeep, isolation, netns, sockfilter
from core.process import join_cgroups
base, parent, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
limits = {"memory": 2 << 30, "swap": 0, "pids": 4096, "cpu-quota": 2.0}
out = {k: [] for k in ("netns create", "netns join and back", "netns remove", "cgroups plan+create", "cgroups join",
                        "cgroups end (emptied)", "loopback filters attach")}
v2 = next((h for h in cgroups.hierarchies() if h.version == 2), None)
for i in range(runs):
    path = f"{base}/ns{i}"
    t = time.perf_counter(); netns.create(path); out["netns create"].append(time.perf_counter() - t)
    t = time.perf_counter()
    with netns.Entered(path):
        pass
    out["netns join and back"].append(time.perf_counter() - t)
    t = time.perf_counter(); netns.remove(path); out["netns remove"].append(time.perf_counter() - t)
    t = time.perf_counter()
    groups = cgroups.plan(limits, parent, "bench", f"s{i}")
    cgroups.create(groups, limits)
    out["cgroups plan+create"].append(time.perf_counter() - t)
    pid = os.fork()
    if pid == 0:
        t = time.perf_counter(); join_cgroups([g.path for g in groups]); elapsed = time.perf_counter() - t
        os.write(1, f"{elapsed}\\n".encode()); os._exit(0)
    os.waitpid(pid, 0)
    session = SimpleNamespace(cgroups=[g.path for g in groups])
    t = time.perf_counter(); isolation.kill(session); out["cgroups end (emptied)"].append(time.perf_counter() - t)
    if v2 is not None:
        leaf = os.path.join(v2.path, parent + f"-filter-{i}")
        os.mkdir(leaf)
        t = time.perf_counter(); sockfilter.attach(leaf); out["loopback filters attach"].append(time.perf_counter() - t)
        os.rmdir(leaf)
cgroups_upkeep.remove_slice(parent, "bench")
print(json.dumps(out))
"""


def parts(roost: Roost, base: Path, parent: str, runs: int) -> tuple[dict[str, list[float]], list[float]]:
    """Each mechanism alone, in one process: (figures by part, cgroup join times from the forked children)."""
    proc = subprocess.run(
        [sys.executable, "-c", PARTS, str(base), parent, str(runs)],
        env=roost.env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = proc.stdout.strip().splitlines()
    joins = [float(x) for x in lines[:-1]]
    result: dict[str, list[float]] = json.loads(lines[-1])
    return result, joins


def nspawn(root: Path, runs: int) -> dict[str, list[float]]:
    base = ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "-D", str(root), "--volatile=overlay"]
    out: dict[str, list[float]] = {"plain": [], "private-network": []}
    for _ in range(runs):
        for variant, extra in (("plain", []), ("private-network", ["--private-network"])):
            started = time.perf_counter()
            proc = subprocess.run([*base, "--read-only", *extra, "--", "/bin/true"], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"systemd-nspawn failed: {proc.stderr.strip()}")
            out[variant].append(time.perf_counter() - started)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-nspawn", action="store_true", help="leave out the systemd-nspawn peer")
    args = parser.parse_args()
    started = time.time()
    rows: list[list[str]] = []

    def add(
        what: str,
        variant: str,
        figure: Figure,
        base: Figure | None,
        note: str = "",
        cpu: Figure | None = None,
        cpu_base: Figure | None = None,
    ) -> None:
        added = "" if base is None else f"{(figure.median - base.median) * 1000:+.2f} ms"
        cpu_shown = "" if cpu is None else f"{cpu.median * 1000:.1f} ms"
        cpu_added = "" if cpu is None or cpu_base is None else f"{(cpu.median - cpu_base.median) * 1000:+.2f} ms"
        rows.append([what, variant, figure.show(), added, cpu_shown, cpu_added, note])

    with workdir() as base, roost_install(base) as roost:
        root = debian_root(base)
        for variant, extra in VARIANTS.items():
            image = image_of(variant)
            roost.ok("image", "create", image, "--from-dir", str(root), "--profile", "sbuild")
            path = Path(roost.env["ROOST_ROOT"]) / "images" / image / "image.yaml"
            path.write_text(path.read_text() + extra)
        cgroup_parent = f"roost-bench-{int(started)}"
        with open(roost.env["ROOST_CONFIG"], "a", encoding="utf-8") as f:
            f.write(f"cgroup-parent: {cgroup_parent}\n")
        whole = whole_process(roost, args.runs)
        engine = engine_level(roost, args.runs)
        peer = None if args.no_nspawn else nspawn(root, args.runs)
        (base / "netns").mkdir()
        pieces, joins = parts(roost, base / "netns", cgroup_parent, args.runs)
        labels = {"begin": "begin", "run": "run … true", "end": "end", "auto": "automatic session"}
        for key, label in labels.items():
            plain = Figure(whole["plain"][key])
            plain_cpu = Figure(whole["plain"][key + ".cpu"])
            for variant in VARIANTS:
                fig = Figure(whole[variant][key])
                note = "goal ≤ +2 ms" if key in ("begin", "auto") and variant in GOALS else ""
                first = variant == "plain"
                cpu = Figure(whole[variant][key + ".cpu"])
                add(label, variant, fig, None if first else plain, note, cpu, None if first else plain_cpu)
        for key in ("begin", "end"):
            plain, plain_cpu = Figure(engine["plain"][key]), Figure(engine["plain"][key + ".cpu"])
            for variant in VARIANTS:
                first = variant == "plain"
                add(
                    f"engine-level {key}",
                    variant,
                    Figure(engine[variant][key]),
                    None if first else plain,
                    "",
                    Figure(engine[variant][key + ".cpu"]),
                    None if first else plain_cpu,
                )
        pieces["cgroups join"] = joins
        for name, samples in pieces.items():
            if samples:
                add(f"part: {name}", "", Figure(samples), None, "in one process")
        if peer is not None:
            plain = Figure(peer["plain"])
            add("nspawn --volatile=overlay", "plain", plain, None, "peer")
            add("nspawn --volatile=overlay", "--private-network", Figure(peer["private-network"]), plain, "peer")
    print(f"roost isolation benchmark, {time.strftime('%Y-%m-%d')}, {args.runs} rounds, {machine()}")
    print(f"root: Debian bookworm minbase, sbuild profile; took {time.time() - started:.0f} s")
    print(table(rows, ["operation", "session", "wall median (min–max)", "added", "CPU median", "added", "note"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
