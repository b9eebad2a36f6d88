"""Files a caller names, opened with the caller's rights.

roost runs as root for people who reach it through sudo. A path such a person
gives (a plan, a schroot configuration, a tarball to import, a tree to copy,
where to write an export) must be read or written as *they* could, never with
root's rights: otherwise ``roost batch /etc/shadow`` would read a root-only
file for them. Each operation here runs in a short-lived child that has
dropped to the caller's uid, gids and groups; an opened file comes back to
roost as a descriptor (SCM_RIGHTS), so roost reads or writes it afterwards
without the path being looked up again.

For root itself (and for an unprivileged user, who has only their own rights
anyway) the operations are done directly.
"""

from __future__ import annotations

import os
import pwd
import socket

from .actor import Actor
from .errors import BadInput

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Callable


class Credentials:
    """The uid, gid and supplementary gids a caller's child runs with."""

    __slots__ = ("gid", "groups", "uid")

    def __init__(self, uid: int, gid: int, groups: list[int]) -> None:
        self.uid = uid
        self.gid = gid
        self.groups = groups

    @classmethod
    def of(cls, actor: Actor) -> Credentials:
        try:
            entry = pwd.getpwuid(actor.uid)
        except KeyError:
            return cls(actor.uid, 65534, [])  # a uid without an entry gets no group's rights
        try:
            groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
        except OSError:
            groups = [entry.pw_gid]
        return cls(actor.uid, entry.pw_gid, groups)

    def drop(self) -> None:
        """In a child: become the caller, for good."""
        os.setgroups(self.groups)
        os.setresgid(self.gid, self.gid, self.gid)
        os.setresuid(self.uid, self.uid, self.uid)


def needs_caller_rights(actor: Actor) -> bool:
    """True when roost has more rights than the person it acts for (root through sudo)."""
    return actor.via_sudo and os.geteuid() == 0


class CallerFiles:
    """File operations on paths a caller named, with the caller's rights (see the module's documentation)."""

    def __init__(self, actor: Actor) -> None:
        self.actor = actor
        self.drop = needs_caller_rights(actor)
        self.credentials = Credentials.of(actor) if self.drop else None

    # --- the child --------------------------------------------------------------

    def _as_caller(self, work: Callable[[], int | None]) -> int | None:
        """Run *work* in a child with the caller's rights; the descriptor it returns comes back, or None.

        Raises :class:`OSError` with the child's errno when *work* failed.
        """
        assert self.credentials is not None
        credentials = self.credentials
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            code = 0
            try:
                ours.close()
                credentials.drop()
                fd = work()
                fds = [fd] if fd is not None else []
                socket.send_fds(theirs, [b"ok"], fds)
            except OSError as e:
                try:
                    theirs.sendall(f"er{e.errno or 5}".encode())
                except OSError:
                    pass
            except BaseException:  # noqa: BLE001 - the child must never return into the caller
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        try:
            message, fds, _, _ = socket.recv_fds(ours, 64, 1)
        finally:
            ours.close()
            os.waitpid(pid, 0)
        if message.startswith(b"ok"):
            return fds[0] if fds else None
        for fd in fds:
            os.close(fd)
        if message.startswith(b"er") and message[2:].isdigit():
            number = int(message[2:])
            raise OSError(number, os.strerror(number))
        raise OSError(5, "the caller's helper failed")

    # --- operations -------------------------------------------------------------

    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        """A descriptor of *path* opened as the caller could (raises OSError as open(2) would)."""
        flags |= os.O_CLOEXEC
        if "\x00" in path:
            raise FileNotFoundError(2, "a file name may not hold a NUL byte", path)
        if not self.drop:
            return os.open(path, flags, mode)
        fd = self._as_caller(lambda: os.open(path, flags, mode))
        assert fd is not None
        return fd

    def read(self, path: str, limit: int, what: str = "") -> bytes:
        """The first *limit* + 1 bytes of the regular file *path*; :class:`BadInput` naming the path on failure."""
        try:
            fd = self.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise BadInput(f"{path}: no such file") from None
        except OSError as e:
            raise BadInput(f"{path}: {e.strerror}") from None
        except ValueError:
            raise BadInput("a file name may not hold a NUL byte") from None
        try:
            import errno
            import stat

            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise BadInput(f"{path}: {os.strerror(errno.EISDIR)}")
            if not stat.S_ISREG(mode):
                raise BadInput(f"{path}: not a regular file")
            chunks: list[bytes] = []
            size = 0
            while size <= limit:
                chunk = os.read(fd, min(1 << 20, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)
        except OSError as e:
            raise BadInput(f"{path}: {e.strerror}") from None
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str]:
        """The entries of directory *path*, listed as the caller could (OSError otherwise)."""
        if not self.drop:
            return os.listdir(path)
        fd = self.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def is_dir(self, path: str) -> bool:
        try:
            fd = self.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return False
        os.close(fd)
        return True

    def is_file(self, path: str) -> bool:
        import stat

        try:
            fd = self.open(path, os.O_PATH if hasattr(os, "O_PATH") else os.O_RDONLY)
        except OSError:
            return False
        try:
            return stat.S_ISREG(os.fstat(fd).st_mode)
        finally:
            os.close(fd)

    def create(self, path: str, mode: int = 0o644) -> int:
        """Create the new file *path* (O_EXCL, no symlink followed) as the caller; its descriptor, for writing."""
        return self.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)

    def rename(self, source: str, dest: str, *, replace: bool) -> None:
        """Rename *source* to *dest* as the caller; without *replace*, never over an existing *dest*."""

        def work() -> None:
            if replace:
                os.rename(source, dest)
            else:
                os.link(source, dest)  # fails if dest exists
                os.unlink(source)
            return None

        if not self.drop:
            work()
            return
        self._as_caller(work)

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        """Create directory *path* as the caller (raises OSError as mkdir(2) would)."""

        def work() -> None:
            os.mkdir(path, mode)
            return None

        if not self.drop:
            work()
            return
        self._as_caller(work)

    def unlink(self, path: str) -> None:
        def work() -> None:
            os.unlink(path)
            return None

        if not self.drop:
            work()
            return
        self._as_caller(work)

    def popen_kwargs(self) -> dict[str, object]:
        """Arguments for subprocess.Popen that run a helper program (tar reading a tree) as the caller."""
        if self.credentials is None:
            return {}
        c = self.credentials
        return {"user": c.uid, "group": c.gid, "extra_groups": c.groups}
