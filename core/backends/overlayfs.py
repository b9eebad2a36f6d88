"""overlayfs mounts and clones shared by the overlay, dir, squashfs and erofs backends."""

from __future__ import annotations

import os

from .. import mounts, syscalls
from ..errors import SystemFailure
from ..fsutil import remove_tree, tree_size
from ..records import Session

#: Options every session mount gets (DESIGN.md §7): redirect_dir=on so dpkg can
#: rename directories that live in lower layers (the EXDEV failure of Debian
#: #836211), and so redirects recorded in lower layers are followed;
#: index=off so one layer can be a lower of many mounts.
OPTIONS = "redirect_dir=on,index=off,metacopy=off"
_PAGE = 4096
_FORBIDDEN = frozenset(",:\\\n")


def _check(path: str) -> str:
    if _FORBIDDEN & set(path):
        raise SystemFailure(f"overlay paths must not contain ',', ':' or '\\\\': {path!r}")
    return path


def mount_overlay(
    target: str,
    lowers: list[str],
    upper: str | None = None,
    work: str | None = None,
    *,
    volatile: bool = False,
    private: bool = True,
) -> None:
    """Mount an overlay of *lowers* (topmost first) at *target*, writable when *upper* and *work* are given.

    *volatile* skips every sync of the upper layer (overlayfs's ``volatile``):
    the kernel then leaves ``work/work/incompat/volatile`` behind and refuses
    to mount the layer again until it is removed (:func:`forget_volatile`).
    Without *private* the mount keeps the propagation it gets from its parent
    (a mount below a session's private root is private already; *target* may
    then be a descriptor's path, which names the directory under the new mount).
    """
    data = "lowerdir=" + ":".join(_check(p) for p in lowers)
    flags = 0
    if upper is not None and work is not None:
        data += f",upperdir={_check(upper)},workdir={_check(work)}"
        if volatile:
            data += ",volatile"
    else:
        flags |= syscalls.MS_RDONLY
    data += "," + OPTIONS
    if len(data) >= _PAGE:
        raise SystemFailure(f"overlay options for {target} exceed a page ({len(data)} bytes): flatten the image")
    try:
        syscalls.mount("overlay", target, "overlay", flags, data)
    except OSError as e:
        raise SystemFailure(f"cannot mount overlay at {target}: {e.strerror}") from None
    if private:
        syscalls.mount(None, target, None, syscalls.MS_PRIVATE)


def materialize(lowers: list[str], dest: str, scratch: str) -> None:
    """Copy the merged view of *lowers* (topmost first) to the new directory *dest*."""
    from .. import programs  # not with the module: sessions begin and end without it

    if len(lowers) == 1:
        programs.copy_tree(lowers[0], dest)
        return
    mount_overlay(scratch, lowers)
    try:
        programs.copy_tree(scratch, dest)
    finally:
        mounts.unmount_tree(scratch, force=True)


def is_mountpoint(path: str) -> bool:
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path)).st_dev or mounts.is_mounted(path)
    except FileNotFoundError:
        return False


def forget_volatile(work: str) -> None:
    """Remove the mark a volatile mount leaves in its work directory *work* (so it can be mounted again).

    Only right when the machine has not restarted since that mount: its
    writes are then intact in the page cache (core.records.Session.lost).
    """
    mark = os.path.join(work, "work", "incompat", "volatile")
    if os.path.isdir(mark) and not os.path.islink(mark):
        remove_tree(mark)


class UpperClone:
    """A session clone that is an overlay upper and work directory (overlay, dir, squashfs, erofs)."""

    @staticmethod
    def _upper(session: Session) -> str:
        return os.path.join(session.clone, "upper")

    def upper(self, session: Session) -> str | None:
        return self._upper(session)

    @staticmethod
    def _work(session: Session) -> str:
        return os.path.join(session.clone, "work")

    def create_clone(self, session: Session) -> None:
        os.mkdir(session.clone, 0o700)
        os.mkdir(self._upper(session), 0o755)
        os.mkdir(self._work(session), 0o700)

    def has_clone(self, session: Session) -> bool:
        return os.path.isdir(self._upper(session))

    #: Sessions can skip syncs (an overlay upper mounted ``volatile``).
    volatile_sessions = True

    def forget_volatile(self, session: Session) -> None:
        forget_volatile(self._work(session))

    def changes(self, session: Session) -> int | None:
        upper = self._upper(session)
        return tree_size(upper) if os.path.isdir(upper) else None

    def remove_clone(self, session: Session) -> None:
        remove_tree(session.clone)
