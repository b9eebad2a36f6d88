"""Shared pieces of roost's benchmarks: timing, peers, temporary installs, tables.

Every benchmark measures roost and its peers in the same run, on the same
root file system, and prints roost's figures as ratios to the peer's. Nothing
here touches /var/lib/roost: state and runtime roots are temporary, and a
schroot chroot definition lives in /etc/schroot/chroot.d only while the
benchmark runs.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.rootless_users import User

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@dataclass
class Figure:
    """Wall times of one operation, in seconds."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def show(self) -> str:
        return f"{self.median * 1000:8.1f} ms ({self.low * 1000:.1f}–{self.high * 1000:.1f})"

    def p95(self) -> str:
        ordered = sorted(self.samples)
        return f"{ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000:.1f} ms"


def timed(argv: Sequence[str], env: dict[str, str] | None = None, capture: bool = False) -> tuple[float, str]:
    """Run a whole process; its wall time and (optionally) its stdout. Fails loudly."""
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd="/")
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return elapsed, proc.stdout if capture else ""


_TIMER = """
import json, subprocess, sys, time
for line in sys.stdin:
    argv = json.loads(line)
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd="/")
    elapsed = time.perf_counter() - started
    print(json.dumps([elapsed, proc.returncode, proc.stdout, proc.stderr]), flush=True)
"""


class Timer:
    """Times whole processes from a driver already running as another user (``prefix``: setpriv …).

    Starting each timed command through setpriv would add its own exec and
    group lookup (about 1.3 ms) to that peer's figures only; the driver times
    exactly as :func:`timed` does, as the user.
    """

    def __init__(self, prefix: Sequence[str], env: dict[str, str]) -> None:
        self._proc = subprocess.Popen(
            [*prefix, sys.executable, "-I", "-c", _TIMER],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd="/",
        )

    def timed(self, argv: Sequence[str], capture: bool = False) -> tuple[float, str]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(list(argv)) + "\n")
        self._proc.stdin.flush()
        elapsed, code, out, err = json.loads(self._proc.stdout.readline())
        if code != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {code}: {err.strip()}")
        return elapsed, out if capture else ""

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait()

    def __enter__(self) -> Timer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repeat(n: int, fn: Callable[[], float]) -> Figure:
    return Figure([fn() for _ in range(n)])


def machine() -> str:
    cpus = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    python = platform.python_version()
    return f"{platform.node()}: Linux {platform.release()}, {cpus} CPUs, {mem:.0f} GiB, Python {python}"


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


# --- roost, installed the way scripts/install does it --------------------------------


@dataclass
class Roost:
    launcher: Path
    env: dict[str, str]
    schroot_launcher: Path  # roost-schroot, the front door sbuild runs

    def argv(self, *args: str) -> list[str]:
        return [str(self.launcher), *args]

    def schroot_argv(self, *args: str) -> list[str]:
        return [str(self.schroot_launcher), *args]

    def ok(self, *args: str) -> str:
        return timed(self.argv(*args), self.env, capture=True)[1]


@contextmanager
def roost_install(base: Path) -> Iterator[Roost]:
    """A temporary state and runtime root, and the launchers scripts/install writes (roost, roost-schroot)."""
    for name in ("roost", "roost-schroot"):
        text = (REPO / "bin" / name).read_text()
        lines = text.split("\n")
        lines[0] = f"#!{sys.executable} -IS"  # as scripts/install writes it
        # the repository first: an editable install is found through a .pth file, which -S skips
        text = "\n".join(lines).replace("\nimport sys\n", f"\nimport sys\n\nsys.path.append({str(REPO)!r})\n", 1)
        (base / name).write_text(text)
        (base / name).chmod(0o755)
    launcher = base / "roost"
    (base / "roost.yaml").write_text("# benchmark configuration: defaults\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    env.update(ROOST_ROOT=str(base / "state"), ROOST_RUN=str(base / "run"), ROOST_CONFIG=str(base / "roost.yaml"))
    roost = Roost(launcher, env, base / "roost-schroot")
    try:
        yield roost
    finally:
        remove_all(roost)


def remove_all(roost: Roost) -> None:
    """End every session and remove every image of *roost*'s state root (what a benchmark leaves)."""
    for s in _json(roost, "session", "list", "--json"):
        subprocess.run(roost.argv("session", "end", "--force", s["id"]), env=roost.env, capture_output=True)
    for i in _json(roost, "image", "list", "--json"):
        subprocess.run(roost.argv("image", "remove", "--force", i["name"]), env=roost.env, capture_output=True)
    # the state root's cgroup slices stay between sessions: recover removes them once none is left
    subprocess.run(roost.argv("session", "recover", "--all"), env=roost.env, capture_output=True)


def _json(roost: Roost, *args: str) -> list[dict[str, object]]:
    import json

    proc = subprocess.run(roost.argv(*args), env=roost.env, capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else []


# --- schroot ------------------------------------------------------------------------


@dataclass
class Schroot:
    name: str

    def begin(self) -> tuple[float, str]:
        elapsed, out = timed(["schroot", "-b", "-c", self.name], capture=True)
        return elapsed, out.strip()


@contextmanager
def schroot_chroot(root: Path, base: Path, *, profile: str = "sbuild") -> Iterator[Schroot]:
    """A schroot 1.6 ``directory`` chroot with union-type=overlay over *root*."""
    if not shutil.which("schroot"):
        raise SystemExit("schroot is not installed (apt-get install schroot)")
    name = f"roost-bench-{os.getpid()}"
    union = base / "schroot-union"
    union.mkdir()
    conf = Path("/etc/schroot/chroot.d") / name
    conf.write_text(
        f"[{name}]\n"
        "description=roost benchmark peer\n"
        "type=directory\n"
        f"directory={root}\n"
        "union-type=overlay\n"
        f"union-overlay-directory={union}\n"
        "users=root\n"
        "root-users=root\n"
        f"profile={profile}\n"
    )
    made_build = False
    build = Path("/var/lib/sbuild/build")
    if profile in ("sbuild", "buildd") and not build.exists():
        build.mkdir(parents=True)
        made_build = True
    try:
        yield Schroot(name)
    finally:
        end_schroot_sessions(name)
        conf.unlink()
        if made_build:
            build.rmdir()
            for parent in (build.parent,):
                try:
                    parent.rmdir()
                except OSError:
                    pass


def end_schroot_sessions(chroot: str) -> None:
    """End every schroot session of *chroot* (those a failed measurement left)."""
    listed = subprocess.run(["schroot", "--list", "--all-sessions"], capture_output=True, text=True).stdout
    for line in listed.split():
        if chroot in line:
            subprocess.run(["schroot", "-e", "-c", line], capture_output=True)


def debian_root(base: Path) -> Path:
    """A Debian bookworm minbase root, unpacked from the cached mmdebstrap tarball."""
    from tests.support.rootfs import debian_tarball

    tarball = debian_tarball()
    root = base / "debian"
    root.mkdir()
    subprocess.run(
        ["tar", "--zstd", "-xf", str(tarball), "-C", str(root), "--numeric-owner", "--xattrs", "--xattrs-include=*"],
        check=True,
    )
    return root


@contextmanager
def workdir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="roost-bench-"))
    try:
        yield base
    finally:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            leftover = [m for m in f if str(base) in m]
        if leftover:
            print(f"warning: mounts left under {base}; not removing it", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


def rootless_launcher(user: User) -> tuple[Path, dict[str, str]]:
    """roost for *user* as its launcher starts it (-IS, paths added by hand), and the environment to run it in.

    The tree is compiled first: the user cannot write its __pycache__ (an installation is compiled too).
    """
    import compileall
    import sysconfig

    for package in ("core", "roost"):
        compileall.compile_dir(str(REPO / package), quiet=1)
    path = user.home / "roost-rootless"
    paths = [sysconfig.get_path("purelib"), str(REPO)]
    path.write_text(
        f"#!{sys.executable} -IS\n"
        "import gc, sys\n"
        "gc.disable()  # as bin/roost\n"
        f"sys.path.extend({paths!r})\n"
        "from roost.main import launch\n"
        "launch()\n"
    )
    path.chmod(0o755)
    env = {
        "HOME": str(user.home),
        "USER": user.name,
        "LOGNAME": user.name,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "ROOST_SYSLOG": str(user.home / "no-syslog.sock"),
    }
    return path, env
