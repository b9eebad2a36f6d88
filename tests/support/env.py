"""A private roost installation for one test, the command under test, and the leak check.

Plain code, not fixtures: tests/conftest.py builds its fixtures (``env``, ``bb`` …)
from these, and tests, benchmarks and other support modules import them from here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import stats
from tests.support.mounts import mounts_under

REPO = Path(__file__).resolve().parents[2]


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts, chroot)")


# --- the command under test -----------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Env:
    """A private roost installation: state root, runtime root, config, profiles."""

    base: Path
    state: Path
    run: Path
    config: Path
    profiles: Path
    environ: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Env({self.base})"

    def roost(
        self, *args: str, input: str | None = None, check: bool = False, timeout: float = 120, **kw: Any
    ) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "roost", *args],
            env=self.environ | kw.pop("env", {}),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=kw.pop("cwd", "/"),
            **kw,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"roost {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return result

    def ok(self, *args: str, **kw: Any) -> str:
        return self.roost(*args, check=True, **kw).out

    def begin(self, image: str = "bb", *extra: str) -> str:
        return self.ok("session", "begin", image, *extra).strip()

    def sh(self, session: str, script: str, *extra: str, **kw: Any) -> Result:
        return self.roost("session", "run", session, *extra, "--", "/bin/sh", "-c", script, **kw)

    def engine(self) -> Any:
        from core.engine import Engine
        from core.settings import load

        return Engine(load(environ=self.environ))

    def settings(self) -> Any:
        from core.settings import load

        return load(environ=self.environ)


def make_env(base: Path) -> Env:
    state, run, profiles = base / "state", base / "run", base / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    config = base / "roost.yaml"
    config.write_text("# test configuration\nend-grace: 2\nlock-timeout: 20\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    environ.pop("SUDO_USER", None)
    environ.pop("SUDO_UID", None)
    environ.update(
        ROOST_ROOT=str(state),
        ROOST_RUN=str(run),
        ROOST_CONFIG=str(config),
        ROOST_PROFILES=str(profiles),
        # syslog goes to a socket a test may bind (tests/test_ops.py), never to the host's
        ROOST_SYSLOG=str(base / "syslog.sock"),
        PYTHONPATH=str(REPO),
    )
    return Env(base=base, state=state, run=run, config=config, profiles=profiles, environ=environ)


def procs_below(path: str) -> list[int]:
    prefix = path.rstrip("/") + "/"
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                root = os.readlink(f"/proc/{name}/root")
            except OSError:
                continue
            if root.startswith(prefix):
                found.append(int(name))
    return found


def assert_no_leaks(base: Path) -> None:
    """Fail (after cleaning up) if mounts, processes or session cgroups remain below *base*.

    The state root's cgroup slices (``<hierarchy>/<parent>/<key>``), which roost
    keeps between sessions, go too; a session's directory still in one is a leak.
    """
    procs = procs_below(str(base))
    for pid in procs:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    leaked = mounts_under(base)
    cgroups_left = _remove_cgroup_slices(base / "state")
    if leaked or procs or cgroups_left:
        stats.bump("leaks found", len(leaked) + len(procs) + len(cgroups_left))
    for target in sorted(leaked, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
    assert not leaked, f"mounts left behind: {leaked}"
    assert not procs, f"processes left running in sessions: {procs}"
    assert not cgroups_left, f"session cgroups left behind: {cgroups_left}"


def _remove_cgroup_slices(state: Path) -> list[str]:
    """Remove the cgroup slices of the state root *state*; the session directories that were still in them."""
    from core import cgroups, cgroups_upkeep

    try:
        key = cgroups.state_key(str(state))
    except OSError:
        return []
    left = []
    for h in cgroups.hierarchies():
        try:
            parents = [e.path for e in os.scandir(h.path) if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for parent in parents:
            slice_dir = os.path.join(parent, key)
            if not os.path.isdir(slice_dir):
                continue
            for path in cgroups_upkeep._tree(slice_dir):
                if path != slice_dir:
                    left.append(path)
                    cgroups_upkeep.kill([path])
                os.rmdir(path)
            try:
                os.rmdir(parent)  # empty once no state root uses it (roost's own default parent included)
            except OSError:
                pass
    return left
