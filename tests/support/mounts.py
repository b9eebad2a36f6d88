"""The one place tests read the kernel's mount table (/proc/<pid>/mountinfo).

Written apart from core.mounts on purpose: the tests check roost's mounts
with a parser of their own rather than with the code under test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 …)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class Mount:
    target: str
    fstype: str
    source: str
    options: str  # per-mount and super-block options, comma-joined
    line: str  # the raw mountinfo line


def mount_table(pid: int | str = "self") -> list[Mount]:
    """Every mount of *pid*'s mount namespace, in the kernel's order."""
    table = []
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            head, _, tail = line.rstrip("\n").partition(" - ")
            fields, rest = head.split(), tail.split()
            table.append(
                Mount(
                    target=_unescape(fields[4]),
                    fstype=rest[0],
                    source=_unescape(rest[1]) if len(rest) > 1 else "",
                    options=fields[5] + ("," + rest[2] if len(rest) > 2 else ""),
                    line=line.rstrip("\n"),
                )
            )
    return table


def mounts_under(path: Path | str, pid: int | str = "self") -> list[str]:
    """Mount points at *path* or below it, in the kernel's order (reverse it to unmount)."""
    top = str(path).rstrip("/") or "/"
    prefix = top.rstrip("/") + "/"
    return [m.target for m in mount_table(pid) if m.target == top or m.target.startswith(prefix)]


def is_mounted(path: Path | str, pid: int | str = "self") -> bool:
    """Whether something is mounted exactly at *path*."""
    return any(m.target == str(path) for m in mount_table(pid))


def mounts_naming(text: str, pid: int | str = "self") -> list[str]:
    """Raw mountinfo lines that mention *text* anywhere: target, source, root or options (overlay lowerdir=…)."""
    return [m.line for m in mount_table(pid) if text in m.line]


def mount_count(pid: int | str = "self") -> int:
    return len(mount_table(pid))


def detach_under(path: Path | str) -> list[str]:
    """Lazily detach every mount at or below *path*, deepest first; the targets detached.

    For a fixture's last resort after a failed test, before it removes its
    directory: a lazy unmount needs no answer from a file system's server, so
    a FUSE mount whose daemon stopped answering (zfs-fuse) cannot hang the
    removal in the kernel.
    """
    import subprocess

    found = mounts_under(path)
    for target in reversed(found):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    return found
