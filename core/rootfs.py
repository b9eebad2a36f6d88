"""Paths inside a session root, resolved as the chroot would see them.

Every lookup below a session root goes through openat2(2) with
RESOLVE_IN_ROOT: a symlink in the image (``/etc/resolv.conf ->
/run/…``, or a hostile ``/build -> /``) is followed as if the session root
were ``/``, so a mount target or a copied file can never land outside it.
Mounts are made onto ``/proc/self/fd/N`` of the resolved O_PATH descriptor,
which closes the window between resolving a path and mounting on it.
"""

from __future__ import annotations

import errno
import os
import stat

from . import syscalls
from .errors import SystemFailure

O_PATH = getattr(os, "O_PATH", 0o10000000)
_RESOLVE = syscalls.RESOLVE_IN_ROOT | syscalls.RESOLVE_NO_MAGICLINKS


class Root:
    """An open session root directory; close it (or use ``with``) when done."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- lookups ----------------------------------------------------------------

    def open(self, rel: str, flags: int, mode: int = 0) -> int:
        return syscalls.openat2(self.fd, _rel(rel), flags, _RESOLVE, mode)

    def exists(self, rel: str) -> bool:
        try:
            fd = self.open(rel, O_PATH)
        except OSError:
            return False
        os.close(fd)
        return True

    def is_dir(self, rel: str) -> bool:
        try:
            fd = self.open(rel, O_PATH | os.O_DIRECTORY)
        except OSError:
            return False
        os.close(fd)
        return True

    def dir_fd(self, rel: str, *, create: bool = True, mode: int = 0o755) -> int:
        """An O_PATH descriptor of directory *rel*, creating missing components.

        A missing component that is a dangling symlink is created where the
        symlink points, resolved inside the root as the chroot would.
        """
        return self._make(_rel(rel), directory=True, create=create, mode=mode, depth=0)

    def file_fd(self, rel: str, *, create: bool = True, mode: int = 0o644) -> int:
        """An O_PATH descriptor of a non-directory *rel* (created empty if missing)."""
        return self._make(_rel(rel), directory=False, create=create, mode=mode, depth=0)

    def _make(self, rel: str, *, directory: bool, create: bool, mode: int, depth: int) -> int:
        flags = O_PATH | (os.O_DIRECTORY if directory else 0)
        try:
            return self.open(rel, flags)
        except OSError as e:
            if e.errno != errno.ENOENT or not create:
                raise
        if depth > 40:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), rel)
        parent_rel, name = os.path.split(rel)
        parent = self._make(parent_rel or ".", directory=True, create=True, mode=0o755, depth=depth + 1)
        try:
            real = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent)
            try:
                try:
                    st = os.stat(name, dir_fd=real, follow_symlinks=False)
                except FileNotFoundError:
                    st = None
                if st is not None and stat.S_ISLNK(st.st_mode):
                    # A dangling symlink: make what it points to, inside the root.
                    target = os.readlink(name, dir_fd=real)
                    if not target.startswith("/"):
                        target = os.path.join("/", self._relative_of(real), target)
                    fd = self._make(
                        _rel(os.path.normpath("/" + target)),
                        directory=directory,
                        create=True,
                        mode=mode,
                        depth=depth + 1,
                    )
                    os.close(fd)
                elif directory:
                    try:
                        os.mkdir(name, mode, dir_fd=real)
                    except FileExistsError:
                        pass
                else:
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode, dir_fd=real)
                    os.close(fd)
            finally:
                os.close(real)
        finally:
            os.close(parent)
        return self.open(rel, flags)

    def _relative_of(self, fd: int) -> str:
        """The path of an open directory as seen from inside the root."""
        real = os.readlink(fd_path(fd))
        top = os.readlink(fd_path(self.fd))
        if real == top:
            return ""
        if not real.startswith(top.rstrip("/") + "/"):
            raise OSError(errno.EXDEV, "resolved outside the session root", real)
        return real[len(top.rstrip("/")) + 1 :]

    # --- files ------------------------------------------------------------------

    def read(self, rel: str, limit: int = 16 << 20) -> bytes | None:
        """Contents of file *rel*, or None if it does not exist."""
        try:
            fd = self.open(rel, os.O_RDONLY)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            chunks = []
            size = 0
            while size <= limit:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write(self, rel: str, data: bytes, mode: int = 0o644, *, keep_times: bool = False) -> None:
        """Write file *rel*; a symlink in its place is replaced by a regular file.

        With *keep_times*, a file that was there keeps its access and
        modification times (a database merged in and taken out again looks
        untouched to a comparison of the trees).
        """
        rel = _rel(rel)
        parent_rel, name = os.path.split(rel)
        parent = self.dir_fd(parent_rel or ".")
        try:
            real = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent)
        finally:
            os.close(parent)
        times: tuple[int, int] | None = None
        try:
            try:
                st = os.stat(name, dir_fd=real, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    os.unlink(name, dir_fd=real)
                elif not stat.S_ISREG(st.st_mode):
                    raise SystemFailure(f"cannot write {rel} in {self.path}: not a regular file")
                else:
                    mode = stat.S_IMODE(st.st_mode)
                    if keep_times:
                        times = (st.st_atime_ns, st.st_mtime_ns)
            except FileNotFoundError:
                pass
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                mode,
                dir_fd=real,
            )
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if times is not None:
                    os.utime(fd, ns=times)
            finally:
                os.close(fd)
        finally:
            os.close(real)


def _rel(path: str) -> str:
    rel = path.lstrip("/")
    return rel or "."


def fd_path(fd: int) -> str:
    """The magic path that names an open descriptor, usable as a mount target."""
    return f"/proc/self/fd/{fd}"
