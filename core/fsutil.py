"""File-system helpers: write-then-rename, a removal that never crosses a mount, sizes.

Everything here follows one rule: a reader sees either the old state or the
new one, never a torn file, and nothing is ever deleted through a mount.
"""

from __future__ import annotations

import errno
import os
import stat

from .errors import SystemFailure

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def temp_name(path: str) -> str:
    """A sibling name for a temporary file that recover recognises (``.*.tmp-*``)."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.tmp-{os.getpid()}-{os.urandom(3).hex()}")


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and ".tmp-" in name


def atomic_write(path: str, data: bytes | str, *, durable: bool = False, mode: int = 0o644) -> None:
    """Replace *path* with *data* in one rename.

    With *durable*, the data and the directory entry are fsynced, so the new
    content survives a power loss; without it the write is still atomic with
    respect to crashes of the writing process.
    """
    if isinstance(data, str):
        data = data.encode()
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    if durable:
        fsync_dir(os.path.dirname(path) or ".")


def fsync_dir(path: str) -> None:
    fd = os.open(path, _DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: str) -> None:
    """syncfs(2) on the file system holding *path*: one flush for a whole tree."""
    from . import syscalls

    fd = os.open(path, _DIR_FLAGS)
    try:
        syscalls.syncfs(fd)
    finally:
        os.close(fd)


def replace_symlink(target: str, link: str) -> None:
    """Point *link* at *target* atomically: a fresh symlink renamed over the old one."""
    tmp = temp_name(link)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        os.unlink(tmp)
        raise


def ensure_dir(path: str, mode: int = 0o755, *, exact: bool = False) -> str:
    """Make directory *path* (mode *mode*); with *exact*, an existing one of ours gets that mode too."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise SystemFailure(f"{path} exists and is not a directory") from None
        if exact and stat.S_IMODE(st.st_mode) != mode and st.st_uid == os.geteuid():
            os.chmod(path, mode, follow_symlinks=False)
        return path
    if exact:
        os.chmod(path, mode)  # mkdir honours the umask
    return path


def remove_tree(path: str) -> None:
    """Remove *path* and everything below it without ever crossing a mount.

    Refuses (raising :class:`SystemFailure`, removing nothing) when anything is
    mounted at or below *path*; while walking, every directory is checked to
    lie on the same mount as *path* itself (same st_dev and the same statx
    mount id, which also catches bind mounts of the same file system), and
    symlinks are removed, never followed.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    from . import mounts, syscalls  # here, not at the top: records use this module, and ctypes costs 3 ms

    below = mounts.mounts_below(os.path.realpath(path))
    if below:
        raise SystemFailure(f"refusing to remove {path}: {below[0].target} is mounted below it")
    top = os.open(path, _DIR_FLAGS)
    try:
        dev = os.fstat(top).st_dev
        mnt = syscalls.mount_id(top)
        _remove_contents(top, path, dev, mnt)
    finally:
        os.close(top)
    os.rmdir(path)


def _remove_contents(top: int, path: str, dev: int, mnt: int) -> None:
    from . import syscalls

    # An explicit stack instead of recursion: image trees can be deep.
    stack: list[tuple[int, list[os.DirEntry[str]], str]] = [(top, list(os.scandir(top)), path)]
    rescans = 0
    try:
        while stack:
            fd, entries, where = stack[-1]
            if not entries:
                # Something still writing (a helper dying with a killed roost) may have
                # added entries since the scan: look again before giving up.
                again = list(os.scandir(fd))
                if again:
                    rescans += 1
                    if rescans > 1000:
                        raise SystemFailure(f"cannot remove {where}: something keeps writing into it")
                    stack[-1] = (fd, again, where)
                    continue
                stack.pop()
                if stack:
                    parent_fd = stack[-1][0]
                    os.close(fd)
                    os.rmdir(os.path.basename(where), dir_fd=parent_fd)
                continue
            entry = entries.pop()
            if entry.is_dir(follow_symlinks=False):
                child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                child_path = os.path.join(where, entry.name)
                if os.fstat(child).st_dev != dev or syscalls.mount_id(child) != mnt:
                    os.close(child)
                    raise SystemFailure(f"refusing to remove {child_path}: it is on another mount")
                stack.append((child, list(os.scandir(child)), child_path))
            else:
                try:
                    os.unlink(entry.name, dir_fd=fd)
                except FileNotFoundError:
                    pass
    finally:
        for fd, _, _ in stack[1:]:
            os.close(fd)


def tree_size(path: str) -> int:
    """Bytes allocated by the tree at *path* (hard links counted once, one file system)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    try:
        root_dev = os.lstat(path).st_dev
    except FileNotFoundError:
        return 0
    stack = [path]
    while stack:
        where = stack.pop()
        try:
            it = os.scandir(where)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                continue
            raise
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if st.st_dev != root_dev:
                    continue
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return total


def grant_traverse(path: str, uid: int) -> bool:
    """Let user *uid* (only) pass through directory *path*: a POSIX ACL ``user:UID:--x``.

    *path* keeps its mode for everyone else (0700: root's). Returns False when
    the file system has no ACLs (the owner then cannot pass either).
    """
    import struct

    user_obj, user, group_obj, mask, other = 0x01, 0x02, 0x04, 0x10, 0x20
    unset = 0xFFFFFFFF
    entries = [(user_obj, 7, unset), (user, 1, uid), (group_obj, 0, unset), (mask, 1, unset), (other, 0, unset)]
    blob = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, who) for tag, perm, who in entries)
    try:
        os.setxattr(path, "system.posix_acl_access", blob, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return False
        raise
    return True
