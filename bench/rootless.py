"""roost's rootless mode against schroot 1.6 (as root) and roost's own system mode, in one run.

    sudo .venv/bin/python bench/rootless.py [--runs 20]

On the same Debian bookworm minbase root (the cached mmdebstrap tarball),
with the sbuild profile everywhere:

* roost in system mode (root, overlay backend, the launcher scripts/install
  writes);
* schroot 1.6, a ``directory`` chroot with ``union-type=overlay``;
* roost in rootless mode, run by an ordinary user made for the benchmark
  (``roost-t-rl-b<pid>``, 65536 subordinate ids, removed at the end): roost's
  own command line (the user mode is picked because the user is not root),
  started like the launcher starts roost (``python -IS``, site-packages added
  by hand).

Rows: begin, ``run … true``, end, automatic session (whole processes,
medians of N), and rootless begin and end inside one process with the time of
the holder's start split out. The issue's goal: rootless begin, end and
automatic session ≤ 0.3× schroot and within 1.5× of system mode.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from harness import (
    REPO,
    Figure,
    Timer,
    debian_root,
    machine,
    roost_install,
    rootless_launcher,
    schroot_chroot,
    table,
    timed,
    workdir,
)

from tests.support.rootless_users import PREFIX, User, kill, make_user, processes_of, remove_user

#: The issue's targets for the rootless rows.
TARGET_SCHROOT = 0.3
TARGET_SYSTEM = 1.5


def engine_level(user: User, env: dict[str, str], runs: int) -> dict[str, list[float]]:
    """Rootless begin and end in one process, the holder's start (fork, maps, mounts) timed apart."""
    code = (
        "import sys, time, json\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from core.rootless import holder\n"
        "from core.rootless.engine import RootlessEngine\n"
        "e = RootlessEngine(); e.ctx.ready()\n"
        "spawned = []\n"
        "real = holder.spawn\n"
        "def timed_spawn(*a, **k):\n"
        "    t = time.perf_counter(); p = real(*a, **k); spawned.append(time.perf_counter() - t); return p\n"
        "holder.spawn = timed_spawn\n"
        "s = e.begin('deb'); e.end(s.id)\n"
        "b, d = [], []\n"
        "for _ in range(int(sys.argv[1])):\n"
        "    t = time.perf_counter(); s = e.begin('deb'); b.append(time.perf_counter() - t)\n"
        "    t = time.perf_counter(); e.end(s.id); d.append(time.perf_counter() - t)\n"
        "print(json.dumps({'begin': b, 'end': d, 'spawn': spawned[1:]}))\n"
    )
    out = subprocess.run(user.command(sys.executable, "-c", code, str(runs)), env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"engine-level rootless run failed: {out.stderr.strip()}")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def sbuild_setup(user: User, rootless: Path, env: dict[str, str], runs: int) -> dict[str, list[float]]:
    """sbuild's own set-up and tear-down of a build's chroot (bench/sbuild_setup.pl), as *user*, alternately:
    sbuild's unshare mode on a buildd tarball, and sbuild's schroot mode through roost-schroot on a rootless
    image of the same tarball. "bare" leaves out sbuild's commands in the new chroot (the same in both modes).
    """
    from tests.support.rootfs import debian_tarball

    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    chroot = f"bookworm-{arch}-sbuild"
    tarball = user.home / f"{chroot}.tar.zst"
    shutil.copy(debian_tarball(variant="buildd"), tarball)
    os.chown(tarball, user.uid, user.gid)
    subprocess.run(
        user.command(str(rootless), "image", "create", chroot, "--from-tar", str(tarball), "--profile", "sbuild"),
        env=env,
        check=True,
        capture_output=True,
    )
    door = user.home / "roost-schroot"
    exports = " ".join(f"{k}={v}" for k, v in env.items() if k != "PATH")
    door.write_text(f'#!/bin/sh\nexport {exports}\nexec {rootless} schroot "$@"\n')
    door.chmod(0o755)
    script = str(REPO / "bench" / "sbuild_setup.pl")
    out: dict[str, list[float]] = {}
    for _ in range(runs):
        for peer, mode, target in (("unshare", "unshare", str(tarball)), ("rootless", "schroot", chroot)):
            for extra in ("bare", "whole"):
                proc = subprocess.run(
                    user.command("perl", script, mode, "bookworm", target, "1", extra),
                    env={**env, "ROOST_SCHROOT": str(door)},
                    cwd=user.home,
                    capture_output=True,
                    text=True,
                )
                if proc.returncode != 0:
                    raise RuntimeError(f"sbuild's {mode} set-up failed: {proc.stderr.strip()[-2000:]}")
                up, down = (float(x) for x in proc.stdout.split()[-2:])
                out.setdefault(f"{peer} {extra} set-up", []).append(up)
                out.setdefault(f"{peer} {extra} tear-down", []).append(down)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--sbuild-runs", type=int, default=8, help="runs of sbuild's set-up against its unshare mode (0: none)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/rootless.py: runs schroot and makes a user; run it as root", file=sys.stderr)
        return 2
    runs = args.runs
    started = time.time()
    rows: list[list[str]] = []
    with workdir() as base, ExitStack() as stack:
        root = debian_root(base)
        roost = stack.enter_context(roost_install(base))
        peer = stack.enter_context(schroot_chroot(root, base))
        roost.ok("image", "create", "deb", "--from-dir", str(root), "--profile", "sbuild")
        user = make_user(f"{PREFIX}-b{os.getpid()}")
        as_user: Timer | None = None
        try:
            from tests.support.rootfs import debian_tarball

            tarball = user.home / "debian.tar.zst"
            shutil.copy(debian_tarball(), tarball)
            os.chown(tarball, user.uid, user.gid)
            rootless, env = rootless_launcher(user)
            rl = [str(rootless), "--headless"]
            subprocess.run(
                user.command(*rl, "image", "create", "deb", "--from-tar", str(tarball), "--profile", "sbuild"),
                env=env,
                check=True,
                capture_output=True,
            )
            interpreter = Figure([timed([sys.executable, "-I", "-c", "pass"])[0] for _ in range(runs)])
            as_user = Timer(user.command(), env)
            keys = ("begin", "run", "end", "auto")
            mine: dict[str, list[float]] = {k: [] for k in keys}
            system: dict[str, list[float]] = {k: [] for k in keys}
            theirs: dict[str, list[float]] = {k: [] for k in keys}
            for _ in range(runs):
                # rootless
                t, sid = as_user.timed([*rl, "session", "begin", "deb"], capture=True)
                sid = sid.strip()
                mine["begin"].append(t)
                mine["run"].append(as_user.timed([*rl, "session", "run", sid, "--", "true"])[0])
                mine["end"].append(as_user.timed([*rl, "session", "end", sid])[0])
                mine["auto"].append(as_user.timed([*rl, "run", "deb", "--", "true"])[0])
                # system mode
                t, sid = timed(roost.argv("session", "begin", "deb"), roost.env, capture=True)
                sid = sid.strip()
                system["begin"].append(t)
                system["run"].append(timed(roost.argv("session", "run", sid, "--", "true"), roost.env)[0])
                system["end"].append(timed(roost.argv("session", "end", sid), roost.env)[0])
                system["auto"].append(timed(roost.argv("run", "deb", "--", "true"), roost.env)[0])
                # schroot
                t, session = timed(["schroot", "-b", "-c", peer.name], capture=True)
                session = session.strip()
                theirs["begin"].append(t)
                theirs["run"].append(timed(["schroot", "-r", "-c", session, "--", "true"])[0])
                theirs["end"].append(timed(["schroot", "-e", "-c", session])[0])
                theirs["auto"].append(timed(["schroot", "-c", peer.name, "--", "true"])[0])
            inside = engine_level(user, env, runs)
            setups = sbuild_setup(user, rootless, env, args.sbuild_runs) if args.sbuild_runs else {}
        finally:
            if as_user is not None:
                as_user.close()
            leftovers = processes_of(user)
            kill(leftovers)
            # the user's state is in its home, which userdel removes (as root, whatever owns the files)
            remove_user(user)
        rows.append(["interpreter start (python -I -c pass)", interpreter.show(), "", "", "", "", ""])
        labels = {"begin": "begin", "run": "run … true", "end": "end", "auto": "automatic session"}
        for key, label in labels.items():
            m, s, p = Figure(mine[key]), Figure(system[key]), Figure(theirs[key])
            vs_schroot = m.median / p.median
            vs_system = m.median / s.median
            note = ""
            if key != "run":
                met = vs_schroot <= TARGET_SCHROOT and vs_system <= TARGET_SYSTEM
                note = f"goal ≤ {TARGET_SCHROOT}× schroot, ≤ {TARGET_SYSTEM}× system: {'met' if met else 'missed'}"
            rows.append(
                [f"{label} [deb]", m.show(), s.show(), p.show(), f"{vs_system:.2f}×", f"{vs_schroot:.2f}×", note]
            )
        rows.append(["engine-level rootless begin [deb]", Figure(inside["begin"]).show(), "", "", "", "", ""])
        rows.append(
            ["  of which the holder's start", Figure(inside["spawn"]).show(), "", "", "", "", "fork, maps, mounts"]
        )
        rows.append(["engine-level rootless end [deb]", Figure(inside["end"]).show(), "", "", "", "", ""])
        print(f"roost rootless benchmark, {time.strftime('%Y-%m-%d')}, {runs} runs per row, {machine()}")
        print(f"root: Debian bookworm minbase, sbuild profile; took {time.time() - started:.0f} s")
        headers = ["operation", "rootless", "system mode", "schroot dir+overlay", "/system", "/schroot", "note"]
        print(table(rows, headers))
        if setups:
            sb_rows = []
            for what, label in (
                ("bare set-up", "set-up: session ready / tarball unpacked"),
                ("whole set-up", "set-up with sbuild's commands in the chroot"),
                ("whole tear-down", "tear-down"),
            ):
                m, u = Figure(setups[f"rootless {what}"]), Figure(setups[f"unshare {what}"])
                ratio = m.median / u.median
                note = "" if what != "bare set-up" else f"goal ≤ 0.1×: {'met' if ratio <= 0.1 else 'missed'}"
                sb_rows.append([label, m.show(), u.show(), f"{ratio:.2f}×", note])
            print()
            print(f"sbuild's own set-up of a build (bench/sbuild_setup.pl), {args.sbuild_runs} runs, alternately;")
            print("Debian bookworm buildd tarball (mmdebstrap --variant=buildd), as the benchmark's user")
            print(table(sb_rows, ["sbuild", "roost rootless (schroot mode)", "unshare mode", "ratio", "note"]))
        if leftovers:
            print(f"warning: processes of the benchmark user were left running: {leftovers}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
