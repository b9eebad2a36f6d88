"""What per-session network and resource limits cost: begin, run, end and automatic sessions.

    sudo .venv/bin/python bench/isolation.py [--runs 30]

One Debian bookworm minbase root (the same cached mmdebstrap tarball as
bench/run.py), five images that differ only in image.yaml: no isolation,
``network: none``, ``network: loopback``, ``limits`` (memory, swap, pids,
cpu-quota) and both none and limits. The five are measured round-robin in
every round, so load on the machine falls on all of them alike; each row
gives the median (min–max) and its cost over the plain image in the same run.
The peer is systemd-nspawn with and without ``--private-network`` on the same
root (the cost of a namespace of its own there). Engine-level rows time begin
and end inside one process, where a millisecond is not lost in the noise of
an interpreter's start.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from harness import Figure, Roost, debian_root, machine, roost_install, table, timed, workdir

VARIANTS = {
    "plain": "",
    "none": "network: none\n",
    "loopback": "network: loopback\n",
    "limits": "limits: {memory: 2G, swap: 0, pids: 4096, cpu-quota: 2}\n",
    "none+limits": "network: none\nlimits: {memory: 2G, swap: 0, pids: 4096, cpu-quota: 2}\n",
}


def image_of(variant: str) -> str:
    return "deb-" + variant.replace("+", "-")


def whole_process(roost: Roost, runs: int) -> dict[str, dict[str, list[float]]]:
    """begin, run … true, end and automatic session of every variant, round-robin."""
    out: dict[str, dict[str, list[float]]] = {v: {"begin": [], "run": [], "end": [], "auto": []} for v in VARIANTS}
    for _ in range(runs):
        for variant in VARIANTS:
            image = image_of(variant)
            t, sid = timed(roost.argv("session", "begin", image), roost.env, capture=True)
            sid = sid.strip()
            out[variant]["begin"].append(t)
            out[variant]["run"].append(timed(roost.argv("session", "run", sid, "--", "true"), roost.env)[0])
            out[variant]["end"].append(timed(roost.argv("session", "end", sid), roost.env)[0])
            out[variant]["auto"].append(timed(roost.argv("run", image, "--", "true"), roost.env)[0])
    return out


ENGINE = """
import json, sys, time
from core.engine import Engine
e = Engine(); e.ready()
images = json.loads(sys.argv[1]); runs = int(sys.argv[2])
for image in images.values():
    e.end(e.begin(image).id)
out = {v: {"begin": [], "end": []} for v in images}
for _ in range(runs):
    for variant, image in images.items():
        t = time.perf_counter(); s = e.begin(image); out[variant]["begin"].append(time.perf_counter() - t)
        t = time.perf_counter(); e.end(s.id); out[variant]["end"].append(time.perf_counter() - t)
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

    def add(what: str, variant: str, figure: Figure, base: Figure | None, note: str = "") -> None:
        added = "" if base is None else f"{(figure.median - base.median) * 1000:+.2f} ms"
        rows.append([what, variant, figure.show(), added, note])

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
        labels = {"begin": "begin", "run": "run … true", "end": "end", "auto": "automatic session"}
        for key, label in labels.items():
            plain = Figure(whole["plain"][key])
            for variant in VARIANTS:
                fig = Figure(whole[variant][key])
                note = "goal ≤ +2 ms" if key in ("begin", "auto") and variant != "plain" else ""
                add(label, variant, fig, None if variant == "plain" else plain, note)
        for key in ("begin", "end"):
            plain = Figure(engine["plain"][key])
            for variant in VARIANTS:
                add(f"engine-level {key}", variant, Figure(engine[variant][key]), None if variant == "plain" else plain)
        if peer is not None:
            plain = Figure(peer["plain"])
            add("nspawn --volatile=overlay", "plain", plain, None, "peer")
            add("nspawn --volatile=overlay", "--private-network", Figure(peer["private-network"]), plain, "peer")
    print(f"roost isolation benchmark, {time.strftime('%Y-%m-%d')}, {args.runs} rounds, {machine()}")
    print(f"root: Debian bookworm minbase, sbuild profile; took {time.time() - started:.0f} s")
    print(table(rows, ["operation", "session", "median (min–max)", "added", "note"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
