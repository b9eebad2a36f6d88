"""A rootless roost for one test: the user's XDG directories, roost's command line run as that user, leak checks.

Plain code; tests/rootless/conftest.py makes the fixtures (``rootless_user``,
``rl``, ``rl_bb``) from it, and the rootless tests import the types from here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.env import REPO, Result
from tests.support.mounts import mounts_naming
from tests.support.rootless_users import User, running

#: roost's own command line, headless, as the user starts it (the rootless mode is picked because the user is not root).
ROOST = [sys.executable, "-m", "roost", "--headless"]
__all__ = ["ROOST", "Rootless", "User", "busybox_tree_as", "members", "running", "stray_files"]


def members(holder: int) -> list[int]:
    """Host pids of the processes in the pid namespace of *holder* (a session's), the holder excepted."""
    try:
        ns = os.stat(f"/proc/{holder}/ns/pid").st_ino
    except FileNotFoundError:
        return []
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != holder:
            try:
                if os.stat(f"/proc/{name}/ns/pid").st_ino == ns:
                    found.append(int(name))
            except (FileNotFoundError, PermissionError):
                continue
    return found


def stray_files(user: User, roots: list[str], skip: list[str]) -> list[str]:
    """Files owned by the user or its subordinate ids below *roots* (but not below *skip*).

    Only directories the user could write to are entered: world-writable ones
    and its own (or its subordinate ids'), which is where it could have made
    anything.
    """
    found = []
    stack = list(roots)
    while stack:
        where = stack.pop()
        if any(where == s or where.startswith(s.rstrip("/") + "/") for s in skip):
            continue
        try:
            entries = list(os.scandir(where))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            if any(entry.path == s or entry.path.startswith(s.rstrip("/") + "/") for s in skip):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if user.owns(st.st_uid) or user.owns_group(st.st_gid):
                found.append(entry.path)
            if entry.is_dir(follow_symlinks=False) and (st.st_mode & 0o002 or user.owns(st.st_uid)):
                stack.append(entry.path)
    return found


@dataclass
class Rootless:
    """One test's rootless roost: the user, its XDG directories, ``roost --headless`` run as that user."""

    user: User
    base: Path
    environ: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.base / "data" / "roost"

    @property
    def run_root(self) -> Path:
        return self.base / "state" / "roost" / "run"

    def command(self, *argv: str) -> list[str]:
        return self.user.command(*argv)

    def roost(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = 300,
        check: bool = False,
        cwd: str = "/",
        env: dict[str, str] | None = None,
    ) -> Result:
        """``roost --headless ARGS…`` as the user (global options such as ``--json`` may lead *args*)."""
        proc = subprocess.run(
            self.command(*ROOST, *args),
            env=self.environ | (env or {}),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
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

    def sessions(self) -> list[dict[str, Any]]:
        return json.loads(self.ok("--json", "session", "list"))  # type: ignore[no-any-return]

    def session(self, sid: str) -> dict[str, Any]:
        """``session info --json``: the record as listings show it, with its holder and process count."""
        return json.loads(self.ok("--json", "session", "info", sid))  # type: ignore[no-any-return]

    def history(self, image: str = "bb") -> dict[str, Any]:
        """``image history --json``, as the current generation and the list of generations."""
        gens = json.loads(self.ok("--json", "image", "history", image))
        return {"current": next(g["generation"] for g in gens if g["current"]), "generations": gens}

    def promote(self, session: str, *extra: str) -> int:
        """Promote *session*; the generation it became (the image's current one)."""
        image = self.session(session)["image"]
        self.ok("session", "promote", session, *extra)
        return int(self.history(image)["current"])

    def recover(self) -> list[str]:
        return json.loads(self.ok("--json", "session", "recover", "--all"))  # type: ignore[no-any-return]

    def as_user(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*argv), env=self.environ, capture_output=True, text=True, check=True)

    def host_mounts(self) -> list[str]:
        """Lines of the host's mount table naming this test's directories (there must never be one)."""
        return mounts_naming(str(self.base))


def busybox_tree_as(user: User, where: Path, environ: dict[str, str]) -> Path:
    """The busybox test root, made by the user (so its files are the user's, as a user's tree is)."""
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from tests.support.rootfs import busybox; busybox(Path(sys.argv[2]))"
    )
    subprocess.run(user.command(sys.executable, "-c", code, str(REPO), str(where)), env=environ, check=True)
    return where
