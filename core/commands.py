"""The one place roost runs helper programs (cp, tar, mmdebstrap …).

Every command is built as a list, never through a shell, and a failure
becomes one :class:`SystemFailure` line that names the program and the last
line it printed on stderr. ``ROOST_DEBUG=1`` prints each command line.
``subprocess`` is imported when a command runs, not before: most roost
commands never run one.
"""

from __future__ import annotations

import os

from .errors import SystemFailure

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Sequence
    from subprocess import CompletedProcess


def require(program: str, package: str | None = None) -> str:
    """The path of *program*, or a clear error naming the Debian package to install."""
    import shutil

    path = shutil.which(program)
    if path is None:
        hint = f" (apt-get install {package})" if package else ""
        raise SystemFailure(f"{program} is not installed{hint}")
    return path


def run(argv: Sequence[str], *, what: str | None = None, **kwargs: object) -> CompletedProcess[bytes]:
    """Run *argv* to completion; stderr is captured unless redirected by the caller."""
    import subprocess

    if os.environ.get("ROOST_DEBUG"):
        import shlex
        import sys

        print(f"roost: running {shlex.join(argv)}", file=sys.stderr)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    try:
        proc = subprocess.run(list(argv), check=False, **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError:
        raise SystemFailure(f"{argv[0]} is not installed") from None
    if proc.returncode != 0:
        raise SystemFailure(failure_line(argv, proc.returncode, proc.stderr, what))
    return proc  # type: ignore[no-any-return]


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
    run(["cp", "-a", "--reflink=auto", "--no-target-directory", source, dest], what="copying the tree")
