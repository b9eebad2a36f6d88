"""Whether a file or directory may be trusted: owned by us, writable by nobody else, all the way up.

roost reads its configuration, session records, leases and locks as root and
acts on what they say (mount here, delete that clone). A file that someone
else could have written, or a directory in which someone else could swap
entries, would let them choose those actions. Every such path is therefore
checked like OpenSSH's StrictModes: the file and each directory from ``/``
down must belong to root (or, in rootless mode, to the user running roost)
and be writable by nobody else, except sticky directories (``/tmp``), whose
entries only their owners may rename or remove.

Cheap on purpose (a handful of ``lstat`` calls): ``session run`` checks its
roots on every call.
"""

from __future__ import annotations

import os
import stat

from .errors import ConfigError, SystemFailure

_CHECKED: set[str] = set()
_ABOVE: set[str] = set()  # directories found trustworthy above a checked path, this process


def _owner_ok(uid: int) -> bool:
    return uid == 0 or uid == os.geteuid()


def unsafe_reason(st: os.stat_result, *, directory: bool) -> str | None:
    """Why an entry with this ``lstat`` may not be trusted, or None."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if directory and not stat.S_ISDIR(mode):
        return "is not a directory"
    if not _owner_ok(st.st_uid):
        return f"belongs to uid {st.st_uid}"
    if mode & 0o022 and not (directory and mode & stat.S_ISVTX):
        return f"is writable by {'others' if mode & 0o002 else 'its group'} (mode {stat.S_IMODE(mode):04o})"
    return None


def check_dir(path: str, what: str) -> None:
    """Raise :class:`SystemFailure` unless *path* and every directory above it may be trusted.

    A sticky directory that others may write (``/tmp``) is accepted above
    *path*, never as *path* itself. Each path is checked once per process.
    """
    if path in _CHECKED:
        return
    problem = dir_problem(path, _ABOVE)
    if problem is not None:
        raise SystemFailure(f"refusing to use {what} {path}: {problem}")
    _CHECKED.add(path)


def dir_problem(path: str, above: set[str] | None = None) -> str | None:
    """Why *path* (or a directory above it) may not be trusted, or None; a missing path is no problem.

    *above* holds directories already found trustworthy as directories above
    a path (the roots share most of theirs): they are not looked at again,
    and those found so now are added.
    """
    path = os.path.normpath(path)
    parts = [p for p in path.split("/") if p]
    here = "/"
    for i in range(len(parts) + 1):
        here = "/" + "/".join(parts[:i])
        last = i == len(parts)
        if above is not None and here in above and not last:
            continue
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return None  # created later, by us, with our modes
        why = unsafe_reason(st, directory=True)
        if why is None and last and st.st_mode & 0o022:
            why = f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
        if why is not None:
            return f"{here} {why}" if here != path else why
        if above is not None:
            above.add(here)
    return None


def check_owned_file(fd: int, path: str, what: str) -> None:
    """Raise :class:`ConfigError` unless the open file *fd* (at *path*) and its directories may be trusted."""
    why = unsafe_reason(os.fstat(fd), directory=False)
    if why is None:
        why = dir_problem(os.path.dirname(path) or "/")
    if why is not None:
        raise ConfigError(f"refusing {what} {path}: {why}")
