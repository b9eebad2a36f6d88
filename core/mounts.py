"""Reading the mount table and taking mount trees down, deepest first.

Reading the table needs only ``os``: :mod:`core.syscalls` (ctypes, milliseconds
to load) is imported by the functions that mount, unmount or ask statx.
"""

from __future__ import annotations

import errno
import os

from .errors import Conflict, SystemFailure
from .struct import Struct


class Mount(Struct, frozen=True):
    """One line of /proc/self/mountinfo."""

    mount_id: int
    parent_id: int
    root: str
    target: str
    fstype: str
    source: str
    options: str
    super_options: str
    optional: tuple[str, ...] = ()
    device: str = ""  # major:minor of the file system

    @property
    def shared(self) -> bool:
        """True when mounts below this one propagate to peers (``shared:N``)."""
        return any(tag.startswith("shared:") for tag in self.optional)


def _unescape(field: str) -> str:
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        c = field[i]
        if c == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _escape(path: str) -> str:
    """A path as mountinfo writes it (space, tab, newline and backslash in octal)."""
    if not any(c in path for c in " \t\n\\"):
        return path
    return path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")


def parse_mountinfo(text: str, near: str | None = None) -> list[Mount]:
    """Parse mountinfo; with *near*, only the lines that mention that path (much faster)."""
    mounts = []
    needle = _escape(near) if near else None
    for line in text.splitlines():
        if needle is not None and needle not in line:
            continue
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split(" ")
        rest = right.split(" ")
        if len(fields) < 6 or len(rest) < 3:
            continue
        mounts.append(
            Mount(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                root=_unescape(fields[3]),
                target=_unescape(fields[4]),
                options=fields[5],
                fstype=rest[0],
                source=_unescape(rest[1]),
                super_options=rest[2],
                optional=tuple(fields[6:]),
                device=fields[2],
            )
        )
    return mounts


#: The mount table as this process last read it (:func:`last_read`).
_last: str | None = None


def _read() -> str:
    global _last
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        _last = f.read()
    return _last


def mounts(near: str | None = None) -> list[Mount]:
    """The mount table; with *near*, only mounts whose line mentions that path."""
    return parse_mountinfo(_read(), near)


def last_read() -> str:
    """The mountinfo text this process read last (read now if it has not): for what no command changes.

    Where the cgroup hierarchies are mounted, for one. The kernel writes the
    whole table out for every read, and it grows with every session on the
    host: a begin that has read it once need not have it written out again.
    """
    return _last if _last is not None else _read()


def _below(target: str, path: str) -> bool:
    return target == path or target.startswith(path.rstrip("/") + "/")


def mounts_below(path: str, table: list[Mount] | None = None) -> list[Mount]:
    """Mounts at or below *path*, deepest (and most recently stacked) first."""
    path = os.path.normpath(path)
    table = mounts(path) if table is None else table
    found = [(i, m) for i, m in enumerate(table) if _below(m.target, path)]
    found.sort(key=lambda im: (im[1].target.count("/"), im[0]), reverse=True)
    return [m for _, m in found]


def is_mounted(path: str, table: list[Mount] | None = None) -> bool:
    path = os.path.normpath(path)
    table = mounts(path) if table is None else table
    return any(m.target == path for m in table)


def is_mount_root(path: str) -> bool:
    """Whether something is mounted at *path*, found without reading the mount table.

    The mount table grows with every session on the host, and the kernel
    writes all of it out for each read; this asks the kernel about one entry.
    The parent is opened with symbolic links refused at every component (a
    symlink anywhere in the way answers False); the entry's mount id differs
    from its directory's exactly when a mount sits on it.
    """
    from . import syscalls

    parent, name = os.path.split(os.path.normpath(path))
    if not name:
        return True
    try:
        fd = _open_parent(parent)
    except OSError:
        return False
    try:
        return syscalls.mount_id(fd, name) != syscalls.mount_id(fd)
    except OSError:
        return False
    finally:
        os.close(fd)


def _open_parent(parent: str) -> int:
    """*parent* as an O_PATH directory, with symbolic links refused at every component of it."""
    from . import syscalls

    return syscalls.openat2(
        syscalls.AT_FDCWD,
        parent,
        os.O_PATH | os.O_DIRECTORY,
        syscalls.RESOLVE_NO_SYMLINKS | syscalls.RESOLVE_NO_MAGICLINKS,
    )


def containing(path: str, table: list[Mount] | None = None) -> Mount | None:
    """The mount that *path* lies on (the last one stacked on the longest prefix)."""
    path = os.path.normpath(path)
    table = mounts() if table is None else table
    best: Mount | None = None
    for m in table:
        if _below(path, m.target) and (best is None or len(m.target) >= len(best.target)):
            best = m
    return best


def _mount_of(path: str) -> Mount | None:
    """The mount on *path* if one sits there, else the one holding it, parsing its line alone.

    statx names the mount (the top of a stack on *path*); of the mount
    table, only that line is parsed. None when the kernel has no mount ids
    for statx (before Linux 5.8) or a symbolic link is in the way.
    """
    from . import syscalls

    parent, name = os.path.split(path)
    try:
        fd = _open_parent(parent)
        try:
            prefix = f"{syscalls.mount_id(fd, name)} "
        finally:
            os.close(fd)
    except OSError:
        return None
    for line in _read().splitlines():
        if line.startswith(prefix):
            found = parse_mountinfo(line)
            return found[0] if found else None
    return None


def make_private_mount_dir(path: str) -> bool:
    """Make sure mounts created below *path* never propagate to other namespaces.

    If *path* lies on a shared mount (systemd makes / shared), bind it onto
    itself and mark the bind private, once. Returns True if it did so.
    Every begin asks: the mount on *path* (or holding it) is found by its
    id, without parsing the table, which grows with every session.
    """
    from . import syscalls

    path = os.path.normpath(path)
    here = _mount_of(path)
    if here is None:  # no mount ids: the whole table
        table = mounts()
        stacked = [m for m in table if m.target == path]
        here = stacked[-1] if stacked else containing(path, table)
    if here is None:
        return False
    if here.target == path:
        if here.shared:
            syscalls.mount(None, path, None, syscalls.MS_PRIVATE)
        return False
    if not here.shared:
        return False
    syscalls.mount(path, path, None, syscalls.MS_BIND)
    syscalls.mount(None, path, None, syscalls.MS_PRIVATE)
    return True


def unmount_tree(path: str, *, force: bool = False) -> list[str]:
    """Unmount everything at or below *path*, deepest first.

    Without *force* a busy mount raises :class:`Conflict` naming the mount
    (the caller decides whether to kill what holds it); with *force* a busy
    mount is detached lazily (MNT_DETACH), which removes it from the tree at
    once so nothing below can be reached through it any more.
    Returns the targets that were unmounted.
    """
    from . import syscalls

    done: list[str] = []
    drained = False
    for _ in range(8):  # stacked mounts may need more than one pass
        pending = mounts_below(path)
        if not pending:
            return done
        if not drained:
            drain_fuse(last_fuse_mounts(pending, path))
            drained = True
        passed_over = False
        for m in pending:
            try:
                umount_exact(m)
            except OSError as e:
                if e.errno in (errno.EINVAL, errno.ENOENT, errno.ELOOP, errno.ESTALE):
                    passed_over = True  # gone, covered by a mount we take down next, or moved
                    continue  # the next pass looks again
                if e.errno == errno.EBUSY:
                    if any(o.parent_id == m.mount_id for o in pending):
                        passed_over = True  # a mount on it was out of reach this pass (covered)
                        continue  # the next pass gets it
                    if not force:
                        raise Conflict(f"{m.target} is busy: {busy_holders(m.target)}") from None
                    try:
                        umount_exact(m, syscalls.MNT_DETACH)
                    except OSError as e2:
                        raise SystemFailure(f"cannot detach {m.target}: {e2.strerror}") from None
                else:
                    raise SystemFailure(f"cannot unmount {m.target}: {e.strerror}") from None
            done.append(m.target)
        if not passed_over:
            # Every mount of the table is gone. One that appeared since under a
            # mount of the tree made that unmount fail as busy (and was detached
            # with it, or raised); none can be left without a pass over it.
            return done
    left = mounts_below(path)
    if left:
        raise SystemFailure(f"cannot unmount {left[0].target}: still mounted after 8 passes")
    return done


#: How long an unmount waits for FUSE daemons to answer what the kernel queued for them.
FUSE_DRAIN_WAIT = 10.0


def drain_fuse(devices: set[str], wait: float = FUSE_DRAIN_WAIT) -> None:
    """Wait until the FUSE connections of *devices* (``major:minor``) have no request in flight.

    Closing a file on a FUSE mount sends its release to the daemon later, in
    the background, and unmounting aborts the connection, dropping what is
    still queued. zfs-fuse then waits forever for the references those
    releases would have dropped: its unmount loops, the dataset stays busy and
    every other mount it serves stops answering. So before unmounting, the
    connections' counts of waiting requests (the fuse control file system,
    mounted detached: it is in no mount table) are read until they are zero.
    Without that file system, a short pause instead.
    """
    from . import syscalls

    if not devices:
        return
    import time

    names = []
    for device in devices:
        major, _, minor = device.partition(":")
        if major.isdigit() and minor.isdigit():
            names.append(str(int(major) << 20 | int(minor)))  # the kernel's dev_t names the connection
    try:
        control = syscalls.detached_mount("fusectl")
    except OSError:
        time.sleep(0.5)
        return
    deadline = time.monotonic() + wait
    pause = 0.005
    try:
        while names and time.monotonic() < deadline:
            names = [n for n in names if _fuse_waiting(control, n)]
            if names:
                time.sleep(pause)
                pause = min(pause * 2, 0.2)
    finally:
        os.close(control)


def last_fuse_mounts(pending: list[Mount], path: str, table: list[Mount] | None = None) -> set[str]:
    """The FUSE file systems (``major:minor``) of *pending* that are mounted nowhere but below *path*.

    Only taking down the last mount of one aborts its connection: a bind of
    the host's FUSE mount into a session is left to its daemon (and a busy
    host mount never makes an end wait). The whole mount *table* is read only
    when *pending* has a FUSE mount.
    """
    fuse = {m.device for m in pending if m.fstype == "fuse" or m.fstype.startswith("fuse.")}
    if not fuse:
        return fuse
    path = os.path.normpath(path)
    table = mounts() if table is None else table
    return fuse - {m.device for m in table if m.device in fuse and not _below(m.target, path)}


def _fuse_waiting(control: int, name: str) -> bool:
    try:
        fd = os.open(f"{name}/waiting", os.O_RDONLY | os.O_CLOEXEC, dir_fd=control)
    except OSError:
        return False  # no such connection (any more)
    try:
        return os.read(fd, 32).strip() not in (b"0", b"")
    finally:
        os.close(fd)


def umount_exact(m: Mount, flags: int = 0) -> None:
    """Unmount exactly the mount *m*, never what a symbolic link makes its path lead to.

    Paths below a session root are the session's to change: a symlink planted
    where a directory was (in a host directory bound into the session, say)
    must not turn an unmount into one of a mount elsewhere. So the mount
    point's parent is opened with symbolic links refused at every component,
    the entry there must be the root of mount *m* itself (its mount id), and
    the unmount goes through that open directory, not through the path again.
    Raises OSError: ELOOP (a symlink in the way), ESTALE (the entry is not
    that mount), or whatever umount2(2) says.
    """
    from . import syscalls

    parent, name = os.path.split(m.target)
    if not name:
        raise OSError(errno.EINVAL, "refusing to unmount /", m.target)
    fd = _open_parent(parent)
    try:
        if syscalls.mount_id(fd, name) != m.mount_id:
            raise OSError(errno.ESTALE, "not the mount it was", m.target)
        syscalls.umount(f"/proc/self/fd/{fd}/{name}", flags)  # the last component is never followed
    finally:
        os.close(fd)


def busy_holders(path: str, limit: int = 3) -> str:
    """Describe processes whose cwd, root or open files lie at or below *path*."""
    holders = []
    prefix = path.rstrip("/") + "/"
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = entry.name
        why = None
        for link in ("cwd", "root"):
            try:
                dest = os.readlink(f"/proc/{pid}/{link}")
            except OSError:
                continue
            if dest == path or dest.startswith(prefix):
                why = f"{link} {dest}"
                break
        if why is None:
            try:
                for fd in os.scandir(f"/proc/{pid}/fd"):
                    try:
                        dest = os.readlink(fd.path)
                    except OSError:
                        continue
                    if dest == path or dest.startswith(prefix):
                        why = f"open file {dest}"
                        break
            except OSError:
                pass
        if why is not None:
            try:
                with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
                    comm = f.read().strip()
            except OSError:
                comm = "?"
            holders.append(f"pid {pid} ({comm}, {why})")
            if len(holders) >= limit:
                break
    if not holders:
        return "held by the kernel or by a process in another mount namespace"
    return "; ".join(holders)
