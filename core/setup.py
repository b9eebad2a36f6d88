"""Setting a mounted session root up: /proc, /sys, /dev, the profile's mounts and files.

The steps run in order, like schroot's setup.d, and each names itself so a
failure says which step broke. Every step only adds mounts below the session
root or writes files inside its clone, so tearing a session down is always
the same: kill its processes, unmount everything below its root (deepest
first), remove the clone.

All targets are resolved inside the session root (:mod:`core.rootfs`), so a
symlink in the image cannot make a mount or a copied file land on the host.
"""

from __future__ import annotations

import os
import stat

from . import syscalls
from .errors import ConfigError, SystemFailure
from .records import Session
from .rootfs import Root, fd_path

_NOSUID_NODEV_NOEXEC = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
#: Devices of a private /dev: name -> (major, minor).
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}
#: NSS databases merged by name (the image's own entries win); others are replaced.
MERGED_DATABASES = ("passwd", "shadow", "group", "gshadow")


def setup(session: Session, host_root: str = "/") -> dict[str, list[str]]:
    """Mount and copy everything a session gets, below its mounted root.

    Returns the names of the host's entries merged into each of the session's
    user and group databases (``passwd``, ``group`` …): they belong to the host,
    and :func:`unmerge_nss` takes them out again before a promote.
    """
    with Root(session.mountpoint) as root:
        for name, step in (
            ("/proc", _proc),
            ("/sys", _sys),
            ("/dev", _dev),
        ):
            try:
                step(root, session)
            except OSError as e:
                raise SystemFailure(f"cannot set up {name} in session {session.id}: {e.strerror}") from None
        return apply_profile(root, session, host_root)


def apply_profile(root: Root, session: Session, host_root: str = "/") -> dict[str, list[str]]:
    """The profile's part of a session's set-up: its mounts, copied files and NSS databases.

    Shared by system sessions and rootless ones (core.rootless.setup), which
    differ only in how they get /proc, /sys and /dev. Returns what
    :func:`setup` returns.
    """
    merged: dict[str, list[str]] = {}
    for spec in session.mounts:
        try:
            _profile_mount(root, spec, host_root)
        except OSError as e:
            raise SystemFailure(
                f"cannot mount {spec.get('source') or spec['type']} on {spec['target']} "
                f"in session {session.id}: {e.strerror}"
            ) from None
    for path in session.copy_files:
        try:
            _copy_file(root, path, host_root)
        except OSError as e:
            raise SystemFailure(f"cannot copy {path} into session {session.id}: {e.strerror}") from None
    # A maintenance session gets only its owner's own account (and primary group): what
    # sbuild checks before it would add the building user to the image (getent passwd USER),
    # while a package's postinst still sees the image's accounts alone (adduser --system
    # finds no host user of the same name and makes its own).
    only = _owner_entries(session.owner, host_root) if session.maintenance else None
    for db in session.nss_databases:
        if only is not None and db not in only:
            continue
        try:
            added = _nss(root, db, host_root, None if only is None else only[db])
        except OSError as e:
            raise SystemFailure(f"cannot copy the {db} database into session {session.id}: {e.strerror}") from None
        if added:
            merged[db] = sorted(set(added) | set(session.nss_merged.get(db, ())))
    return merged


def _owner_entries(owner: str, host_root: str) -> dict[str, set[bytes]]:
    """The names a maintenance session of *owner* merges, by database: their user and primary group."""
    name = owner.encode("utf-8", "surrogateescape")
    gid = None
    for line in (_read_host("/etc/passwd", host_root) or b"").splitlines():
        fields = line.split(b":")
        if fields[0] == name and len(fields) > 3:
            gid = fields[3]
            break
    if gid is None:
        return {}
    groups = {
        fields[0]
        for fields in (ln.split(b":") for ln in (_read_host("/etc/group", host_root) or b"").splitlines())
        if len(fields) > 2 and fields[2] == gid
    }
    return {"passwd": {name}, "shadow": {name}, "group": groups, "gshadow": groups}


def _target(root: Root, rel: str, *, directory: bool = True) -> int:
    """Resolve a mount target inside the root; never the root itself (``/proc -> /`` in a hostile image)."""
    fd = root.dir_fd(rel) if directory else root.file_fd(rel)
    st, top = os.fstat(fd), os.fstat(root.fd)
    if (st.st_dev, st.st_ino) == (top.st_dev, top.st_ino):
        os.close(fd)
        raise SystemFailure(f"{rel} in the image resolves to its root directory; refusing to mount over it")
    return fd


def _mount_at(
    root: Root, rel: str, source: str | None, fstype: str | None, flags: int, data: str | None = None
) -> None:
    fd = _target(root, rel)
    try:
        syscalls.mount(source, fd_path(fd), fstype, flags, data)
    finally:
        os.close(fd)


def _proc(root: Root, session: Session) -> None:
    _mount_at(root, "proc", "proc", "proc", _NOSUID_NODEV_NOEXEC)


def _sys(root: Root, session: Session) -> None:
    if session.netns is None:
        _mount_at(root, "sys", "sysfs", "sysfs", _NOSUID_NODEV_NOEXEC | syscalls.MS_RDONLY)
        return
    from .netns import Entered

    with Entered(session.netns):  # sysfs shows the interfaces of the namespace that mounts it
        _mount_at(root, "sys", "sysfs", "sysfs", _NOSUID_NODEV_NOEXEC | syscalls.MS_RDONLY)


def remount_sys(session: Session) -> None:
    """A fresh /sys for a session whose network changed (the old one is detached)."""
    from . import mounts

    for m in mounts.mounts_below(session.mountpoint):
        if m.fstype == "sysfs" and m.target == os.path.join(session.mountpoint, "sys"):
            syscalls.umount(m.target, syscalls.MNT_DETACH)
    with Root(session.mountpoint) as root:
        try:
            _sys(root, session)
        except OSError as e:
            raise SystemFailure(f"cannot set up /sys in session {session.id}: {e.strerror}") from None


def _dev(root: Root, session: Session) -> None:
    if session.dev == "host":
        fd = _target(root, "dev")
        try:
            syscalls.mount("/dev", fd_path(fd), None, syscalls.MS_BIND)
            syscalls.mount(None, fd_path(fd), None, syscalls.MS_SLAVE)
        finally:
            os.close(fd)
    else:
        _mount_at(root, "dev", "tmpfs", "tmpfs", syscalls.MS_NOSUID | syscalls.MS_STRICTATIME, "mode=755,size=4m")
        dev = root.open("dev", os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name, (major, minor) in DEVICES.items():
                os.mknod(name, stat.S_IFCHR | 0o666, os.makedev(major, minor), dir_fd=dev)
                os.chmod(name, 0o666, dir_fd=dev)  # mknod honours the umask
            for name, target in DEV_LINKS.items():
                os.symlink(target, name, dir_fd=dev)
            os.mkdir("pts", 0o755, dir_fd=dev)
            os.mkdir("shm", 0o1777, dir_fd=dev)
        finally:
            os.close(dev)
    _mount_at(
        root,
        "dev/pts",
        "devpts",
        "devpts",
        syscalls.MS_NOSUID | syscalls.MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )
    if session.dev == "host":
        # The host's /dev/ptmx belongs to the host's devpts; point it at ours.
        fd = root.file_fd("dev/ptmx")
        try:
            syscalls.mount(root.path + "/dev/pts/ptmx", fd_path(fd), None, syscalls.MS_BIND)
        finally:
            os.close(fd)
    _mount_at(root, "dev/shm", "tmpfs", "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "mode=1777")


def _profile_mount(root: Root, spec: dict[str, object], host_root: str) -> None:
    kind = spec["type"]
    target = str(spec["target"])
    if kind == "tmpfs":
        options = spec.get("options")
        _mount_at(
            root, target, "tmpfs", "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, str(options) if options else None
        )
        return
    source = os.path.join(host_root, str(spec["source"]).lstrip("/"))
    try:
        st = os.stat(source)
    except FileNotFoundError:
        if spec.get("optional"):
            return
        raise ConfigError(f"bind mount source {spec['source']} does not exist on this host") from None
    fd = _target(root, target, directory=stat.S_ISDIR(st.st_mode))
    try:
        where = fd_path(fd)
        rec = syscalls.MS_REC if kind == "rbind" else 0
        syscalls.mount(source, where, None, syscalls.MS_BIND | rec)
    finally:
        os.close(fd)
    # Re-resolve: the descriptor names the directory under the new mount.
    fd = root.open(target, os.O_PATH if hasattr(os, "O_PATH") else 0o10000000)
    try:
        where = fd_path(fd)
        # Host mount events flow in, nothing flows back out to the host.
        syscalls.mount(None, where, None, syscalls.MS_SLAVE | (syscalls.MS_REC if kind == "rbind" else 0))
        if spec.get("readonly"):
            syscalls.mount(None, where, None, syscalls.MS_REMOUNT | syscalls.MS_BIND | syscalls.MS_RDONLY)
    finally:
        os.close(fd)


def _read_host(path: str, host_root: str) -> bytes | None:
    try:
        with open(os.path.join(host_root, path.lstrip("/")), "rb") as f:
            return f.read(16 << 20)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _copy_file(root: Root, path: str, host_root: str) -> None:
    data = _read_host(path, host_root)
    if data is None:
        return  # schroot skips files the host does not have; so do we
    if root.read(path) == data:
        return  # unchanged: no copy-up
    root.write(path, data)


def _entry_name(line: bytes) -> bytes:
    return line.split(b":", 1)[0]


def merge_database(image: bytes, host: bytes) -> tuple[bytes, list[bytes]]:
    """The image's entries, then the host's entries whose name the image lacks; and those names."""
    lines = image.splitlines()
    names = {_entry_name(ln) for ln in lines if ln and not ln.startswith(b"#")}
    extra = [ln for ln in host.splitlines() if ln and not ln.startswith(b"#") and _entry_name(ln) not in names]
    if not extra:
        return image, []
    out = b"\n".join(lines + extra)
    return out + b"\n", [_entry_name(ln) for ln in extra]


def _nss(root: Root, db: str, host_root: str, only: set[bytes] | None = None) -> list[str]:
    """Copy or merge the host's *db* into the session; the names of host entries merged in.

    With *only*, just the host's entries of those names are merged (a database
    that is copied whole is then left as the image has it).
    """
    host = _read_host(f"/etc/{db}", host_root)
    if host is None:
        return []
    path = f"/etc/{db}"
    current = root.read(path)
    added: list[bytes] = []
    if only is not None:
        if db not in MERGED_DATABASES or current is None:
            return []
        host = b"".join(ln + b"\n" for ln in host.splitlines() if _entry_name(ln) in only)
    if db in MERGED_DATABASES and current is not None:
        wanted, added = merge_database(current, host)
    else:
        wanted = host
    if wanted != current:
        mode = 0o640 if db in ("shadow", "gshadow") else 0o644
        root.write(path, wanted, mode, keep_times=True)
    return [n.decode("utf-8", "surrogateescape") for n in added]


def without_entries(content: bytes, names: list[str]) -> bytes | None:
    """*content* of a merged database without the entries named *names* (what promote
    writes back), or None when it has none of them."""
    host = {n.encode("utf-8", "surrogateescape") for n in names}
    lines = content.splitlines()
    kept = [ln for ln in lines if not ln or ln.startswith(b"#") or _entry_name(ln) not in host]
    if len(kept) == len(lines):
        return None
    return b"".join(ln + b"\n" for ln in kept)


def unmerge_nss(session: Session) -> None:
    """Take the host's entries merged by :func:`setup` out of the session's databases again.

    Called by promote before the session's tree becomes a generation: users of
    the host are never baked into an image. Entries the session added itself
    (a package's system user) stay.
    """
    if not session.nss_merged:
        return
    with Root(session.mountpoint) as root:
        for db, names in session.nss_merged.items():
            if db not in MERGED_DATABASES:
                continue
            path = f"/etc/{db}"
            try:
                current = root.read(path)
            except OSError:
                current = None
            if current is None:
                continue
            restored = without_entries(current, names)
            if restored is not None:
                try:
                    root.write(path, restored, keep_times=True)
                except OSError as e:
                    raise SystemFailure(f"cannot restore {path} in session {session.id}: {e.strerror}") from None
