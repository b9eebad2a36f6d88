"""What starting roost costs: the interpreter, `roost --version` and `--help`, and whole session
operations, through each way roost can be installed.

    sudo .venv/bin/python bench/startup.py [--runs 40]

Ways, measured interleaved in one run on one busybox image (overlay, minimal
profile) in a temporary state root:

* ``launcher``: bin/roost as scripts/install writes it on PATH (an interpreter
  line naming the environment's python3 with ``-I -S``);
* ``pip script``: bin/roost as pip installs it into an environment (a shell
  line finds the environment's python3 and starts it with ``-I -S``);
* ``console_scripts``: the wrapper pip generates for an entry point
  (``roost = "roost.main:main"``), which roost shipped before: it imports
  ``re`` and runs ``site``.

The environment is made here (``python3 -m venv --without-pip``) with roost
and its dependencies linked into its site-packages, as a non-editable
``pip install`` leaves them. Figures are medians (min–max); "added" is the
median minus the interpreter's own start (``python3 -I -S -c pass``), the
floor of any Python command; ratios are against the launcher.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from harness import REPO, Figure, machine, table, timed, workdir

#: pip's console_scripts wrapper, as pip 23 writes it
CONSOLE_SCRIPT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from roost.main import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def environment(base: Path) -> Path:
    """A virtual environment holding roost and its dependencies (linked), without pip."""
    env = base / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site = env / "lib" / version / "site-packages"
    for package in ("core", "roost", "tui"):
        (site / package).symlink_to(REPO / package)
    ours = Path(sysconfig.get_path("purelib"))
    for module in ("yaml", "_yaml", "textual", "rich", "markdown_it", "mdurl", "pygments", "platformdirs"):
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        if source.is_relative_to(ours):
            (site / source.name).symlink_to(source)
    return env


def installs(base: Path, env: Path) -> dict[str, Path]:
    python = env / "bin" / "python3"
    lines = (REPO / "bin" / "roost").read_text().split("\n")
    pip_script = env / "bin" / "roost"
    pip_script.write_text("\n".join(lines))  # pip copies bin/roost as it is (its first line is not #!python)
    launcher = base / "launcher" / "roost"
    launcher.parent.mkdir()
    launcher.write_text("\n".join([f"#!{python} -IS", *lines[1:]]))
    wrapper = base / "console_scripts" / "roost"
    wrapper.parent.mkdir()
    wrapper.write_text(CONSOLE_SCRIPT.format(python=python))
    for path in (pip_script, launcher, wrapper):
        path.chmod(0o755)
    return {"launcher": launcher, "pip script": pip_script, "console_scripts": wrapper}


def busybox_root(base: Path) -> Path:
    root = base / "bb"
    for d in ("bin", "etc", "tmp", "proc", "dev"):
        (root / d).mkdir(parents=True)
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise SystemExit("bench/startup.py needs busybox-static (apt-get install busybox-static)")
    (root / "bin" / "busybox").write_bytes(busybox.read_bytes())
    (root / "bin" / "busybox").chmod(0o755)
    for name in ("sh", "true"):
        (root / "bin" / name).symlink_to("busybox")
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/startup.py mounts sessions: run it as root")
    with workdir() as base:
        env_dir = environment(base)
        ways = installs(base, env_dir)
        python = str(env_dir / "bin" / "python3")
        environ = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        environ.update(
            ROOST_ROOT=str(base / "state"), ROOST_RUN=str(base / "run"), ROOST_CONFIG=str(base / "roost.yaml")
        )
        (base / "roost.yaml").write_text("# benchmark configuration: defaults\n")
        tree = busybox_root(base)
        timed(
            [str(ways["launcher"]), "image", "create", "bb", "--from-dir", str(tree), "--profile", "minimal"], environ
        )

        floors = {
            "python3 -I -S -c pass": [python, "-I", "-S", "-c", "pass"],
            "python3 -c pass": [python, "-c", "pass"],
        }
        samples: dict[tuple[str, str], list[float]] = {}

        def add(way: str, op: str, seconds: float) -> None:
            samples.setdefault((way, op), []).append(seconds)

        for _ in range(args.runs):
            for label, argv in floors.items():
                add("interpreter", label, timed(argv, environ)[0])
            for way, exe in ways.items():
                add(way, "--version", timed([str(exe), "--version"], environ)[0])
                add(way, "--help", timed([str(exe), "--help"], environ)[0])
                elapsed, out = timed([str(exe), "session", "begin", "bb"], environ, capture=True)
                add(way, "session begin", elapsed)
                sid = out.strip()
                add(way, "session run … true", timed([str(exe), "session", "run", sid, "--", "true"], environ)[0])
                add(way, "session end", timed([str(exe), "session", "end", sid], environ)[0])
        timed([str(ways["launcher"]), "image", "remove", "bb"], environ)

    floor = Figure(samples[("interpreter", "python3 -I -S -c pass")])
    rows = []
    for label in floors:
        f = Figure(samples[("interpreter", label)])
        rows.append(["interpreter", label, f.show(), f"{(f.median - floor.median) * 1000:+.1f} ms", ""])
    for op in ("--version", "--help", "session begin", "session run … true", "session end"):
        base_fig = Figure(samples[("launcher", op)])
        for way in ways:
            f = Figure(samples[(way, op)])
            added = f"{(f.median - floor.median) * 1000:+.1f} ms"
            rows.append([way, op, f.show(), added, f"{f.median / base_fig.median:.2f}×"])
    print(machine())
    print(f"runs: {args.runs}, interleaved; added: over python3 -I -S -c pass; ratio: against the launcher")
    print(table(rows, ["install", "operation", "wall median (min–max)", "added", "/launcher"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
