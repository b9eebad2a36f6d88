"""The one place roost runs helper programs (cp, tar, mmdebstrap …).

Every command is built as a list, never through a shell, and a failure
becomes one :class:`SystemFailure` line that names the program and the last
line it printed on stderr. ``ROOST_DEBUG=1`` prints each command line.
``subprocess`` is imported when a command runs, not before: most roost
commands never run one.

A helper dies with roost (PR_SET_PDEATHSIG): if roost is killed while ``cp``
fills a staging directory, ``cp`` must not go on writing into a tree that
recover is about to remove.
"""

from __future__ import annotations

import os

from .errors import SystemFailure

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Sequence
    from subprocess import CompletedProcess, Popen
    from typing import Any


def require(program: str, package: str | None = None) -> str:
    """The path of *program*, or a clear error naming the Debian package to install."""
    import shutil

    path = shutil.which(program)
    if path is None:
        hint = f" (apt-get install {package})" if package else ""
        raise SystemFailure(f"{program} is not installed{hint}")
    return path


def _die_with_parent(prctl: Any, parent: int) -> None:
    """In the child, before exec: be killed when roost dies (and not outlive it already).

    Until it execs, the child holds every descriptor roost has, its locks
    included: this runs first and must be short.
    """
    pr_set_pdeathsig = 1
    prctl(pr_set_pdeathsig, 9, 0, 0, 0)  # SIGKILL
    if os.getppid() != parent:
        os._exit(1)  # roost died before the prctl took effect


def popen(argv: Sequence[str], **kwargs: Any) -> Popen[bytes]:
    """Start a helper that dies with roost; same arguments as subprocess.Popen."""
    import subprocess

    if os.environ.get("ROOST_DEBUG"):
        import shlex
        import sys

        print(f"roost: running {shlex.join(argv)}", file=sys.stderr)
    parent = os.getpid()
    import ctypes

    prctl = ctypes.CDLL(None).prctl  # looked up before the fork: the child only calls it
    try:
        return subprocess.Popen(list(argv), preexec_fn=lambda: _die_with_parent(prctl, parent), **kwargs)
    except FileNotFoundError:
        raise SystemFailure(f"{argv[0]} is not installed") from None


def run(argv: Sequence[str], *, what: str | None = None, **kwargs: Any) -> CompletedProcess[bytes]:
    """Run *argv* to completion; stderr is captured unless redirected by the caller."""
    import subprocess

    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    with popen(argv, **kwargs) as child:
        out, err = child.communicate()
    proc = subprocess.CompletedProcess(list(argv), child.returncode, out, err)
    if proc.returncode != 0:
        raise SystemFailure(failure_line(argv, proc.returncode, proc.stderr, what))
    return proc


def failure_line(argv: Sequence[str], code: int, stderr: bytes | None, what: str | None = None) -> str:
    tail = ""
    if stderr:
        lines = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
        if lines:
            tail = f": {lines[-1].strip()}"
    name = what or argv[0]
    return f"{name} failed (exit {code}){tail}"


def copy_tree(source: str, dest: str) -> None:
    """Copy *source* to the new directory *dest*, keeping owners, modes, links,
    devices, xattrs and ACLs, sharing extents where the file system can (reflink)."""
    run(["cp", "-a", "--reflink=auto", "--no-target-directory", "--", source, dest], what="copying the tree")
