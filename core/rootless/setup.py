"""Mounting a rootless session, inside its holder's user, mount and pid namespaces.

What a user namespace allows differs from what root may do, so three steps
differ from core.setup (the profile's mounts, copied files and NSS databases
are the same code, :func:`core.setup.apply_profile`):

- the overlay is mounted with ``userxattr`` (its whiteouts, opaque markers
  and origins live in ``user.overlay.*``, which an unprivileged mounter may
  write); the kernel then refuses ``redirect_dir`` and ``metacopy``;
- ``/proc`` is a new proc of the session's own pid namespace (only a pid
  namespace's owner may mount its proc); ``/sys`` is the host's, bound
  recursively and read-only (mounting sysfs needs the network namespace's
  owner, and a session keeps the host's network);
- ``/dev`` is a tmpfs on which the host's null, zero, full, random, urandom and
  tty nodes are bound (mknod is refused in a user namespace), with a new
  devpts instance and a tmpfs ``/dev/shm``, as sbuild's unshare mode does.

Three differences in the profile's part: a ``bind`` of a directory with mounts
below it is made recursive, an optional bind of a directory the user may not
enter is left out as if it did not exist (:func:`recursive_binds`), and the
host files the user may not read (``/etc/shadow``, ``/etc/gshadow``) are
neither copied nor merged: a rootless session gets what its user can see.

Every mount lives in the holder's mount namespace: nothing appears in the
host's mount table, and all of it goes when the namespace goes.
"""

from __future__ import annotations

import ctypes
import os

from .. import syscalls
from ..backends.overlayfs import _check as check_overlay_path
from ..errors import SystemFailure
from ..records import Session
from ..rootfs import Root, fd_path
from ..setup import DEV_LINKS, DEVICES, _mount_at, _proc, _target, apply_profile

#: Options of a rootless session's overlay. userxattr: the overlay's own
#: attributes in user.overlay.* (trusted.* needs the host's root); with it the
#: kernel turns redirect_dir and metacopy off. index=off: one layer is a lower of
#: many sessions.
OVERLAY_OPTIONS = "userxattr,index=off"
_PAGE = 4096

_SYS_MOUNT_SETATTR = 442
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_MOUNT_ATTR_RDONLY = 0x1


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _read_only_tree(fd: int, path: str) -> None:
    """mount_setattr(AT_RECURSIVE): the mount at *fd* and every mount below it read-only, slaves."""
    attr = _MountAttr(_MOUNT_ATTR_RDONLY, 0, syscalls.MS_SLAVE, 0)
    rc = _libc.syscall(
        ctypes.c_long(_SYS_MOUNT_SETATTR),
        ctypes.c_int(fd),
        ctypes.c_char_p(b""),
        ctypes.c_uint(_AT_EMPTY_PATH | _AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount_setattr: {os.strerror(err)}", path)


def upper(session: Session) -> str:
    return os.path.join(session.clone, "upper")


def work(session: Session) -> str:
    return os.path.join(session.clone, "work")


def make_clone(session: Session, *, create: bool) -> None:
    """The session's upper and work directories, owned by the namespace's root (run inside it).

    The clone directory itself is the user's (made outside); the upper
    directory becomes the session's ``/``, so it must be root's inside. When
    mounting an existing clone, a missing work directory (a promote that
    could not commit removed it) is made again.
    """
    if create:
        os.mkdir(upper(session), 0o755)
    try:
        os.mkdir(work(session), 0o700)
    except FileExistsError:
        if create:
            raise


def mount_overlay(session: Session) -> None:
    data = (
        "lowerdir="
        + ":".join(check_overlay_path(p) for p in session.lowers)
        + f",upperdir={check_overlay_path(upper(session))},workdir={check_overlay_path(work(session))},"
        + OVERLAY_OPTIONS
    )
    if len(data) >= _PAGE:
        raise SystemFailure(f"overlay options for {session.id} exceed a page ({len(data)} bytes): flatten the image")
    try:
        syscalls.mount("overlay", session.mountpoint, "overlay", 0, data)
    except OSError as e:
        raise SystemFailure(
            f"cannot mount the overlay of session {session.id} in its user namespace: {e.strerror} "
            "(the file system of the state root must support user.* extended attributes: roost doctor)"
        ) from None


def setup(session: Session, host_root: str = "/") -> dict[str, list[str]]:
    """Mount and copy everything a session gets, below its mounted root (in the holder).

    Returns the host's entries merged into the session's user and group
    databases, as core.setup.setup does (promote takes them out again).
    """
    # What the user may see of the profile is decided first, while the mount table is still small.
    readable = [db for db in session.nss_databases if os.access(f"{host_root}/etc/{db}", os.R_OK)]
    copies = [path for path in session.copy_files if os.access(host_root + path, os.R_OK)]
    binds = recursive_binds(session.mounts, host_root)
    profile = session.replace(mounts=binds, nss_databases=readable, copy_files=copies)
    with Root(session.mountpoint) as root:
        for name, step in (("/proc", _proc), ("/sys", _sys), ("/dev", _dev)):
            try:
                step(root, session)
            except OSError as e:
                raise SystemFailure(f"cannot set up {name} in session {session.id}: {e.strerror}") from None
        return apply_profile(root, profile, host_root)


def recursive_binds(specs: list[dict[str, object]], host_root: str = "/") -> list[dict[str, object]]:
    """The profile's mounts, with a ``bind`` of a directory that has mounts below it made ``rbind``.

    In a user namespace the kernel refuses to bind a directory without the
    mounts below it (they could hide what they cover): such a bind takes them
    along, as the host shows them.
    """
    from ..mounts import Mount, mounts, mounts_below

    table: list[Mount] | None = None  # read once, and only if a bind needs it (reading it costs milliseconds)
    out = []
    for spec in specs:
        if spec.get("type") in ("bind", "rbind"):
            source = os.path.join(host_root, str(spec.get("source", "")).lstrip("/"))
            if spec.get("optional") and not _enterable(source):
                continue  # optional, and not the user's to see (sbuild's /var/lib/sbuild/build): as if absent
            if spec.get("type") == "bind":
                table = mounts() if table is None else table
                if any(m.target != source for m in mounts_below(source, table)):
                    spec = {**spec, "type": "rbind"}
        out.append(spec)
    return out


def _enterable(path: str) -> bool:
    """False if *path* exists but this process may not reach or read it."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True  # absent: the profile's own rule for optional mounts applies
    except OSError:
        return False
    return os.access(path, os.R_OK | os.X_OK)


def _sys(root: Root, session: Session) -> None:
    fd = _target(root, "sys")
    try:
        syscalls.mount("/sys", fd_path(fd), None, syscalls.MS_BIND | syscalls.MS_REC)
    finally:
        os.close(fd)
    fd = root.open("sys", os.O_PATH | os.O_DIRECTORY)  # the new mount, not the directory under it
    try:
        _read_only_tree(fd, root.path + "/sys")
    finally:
        os.close(fd)


def _bind_node(dev_fd: int, name: str, source: str) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666, dir_fd=dev_fd)
    os.close(fd)
    target = os.open(name, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=dev_fd)
    try:
        syscalls.mount(source, fd_path(target), None, syscalls.MS_BIND)
    finally:
        os.close(target)


def _dev(root: Root, session: Session) -> None:
    if session.dev == "host":
        fd = _target(root, "dev")
        try:  # a slave already: the holder made its whole mount namespace one
            syscalls.mount("/dev", fd_path(fd), None, syscalls.MS_BIND | syscalls.MS_REC)
        finally:
            os.close(fd)
    else:
        _mount_at(root, "dev", "tmpfs", "tmpfs", syscalls.MS_NOSUID | syscalls.MS_STRICTATIME, "mode=755,size=4m")
        dev = root.open("dev", os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in DEVICES:
                _bind_node(dev, name, "/dev/" + name)
            for name, link in DEV_LINKS.items():
                os.symlink(link, name, dir_fd=dev)
            os.mkdir("pts", 0o755, dir_fd=dev)
            os.mkdir("shm", 0o1777, dir_fd=dev)
            os.chmod("shm", 0o1777, dir_fd=dev)  # mkdir honours the umask
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
        fd = root.file_fd("dev/ptmx")
        try:
            syscalls.mount(root.path + "/dev/pts/ptmx", fd_path(fd), None, syscalls.MS_BIND)
        finally:
            os.close(fd)
    _mount_at(root, "dev/shm", "tmpfs", "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "mode=1777")
