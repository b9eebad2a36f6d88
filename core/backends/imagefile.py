"""squashfs and erofs: a generation is one compressed, read-only image file.

``generations/<n>/root.squashfs`` (or ``root.erofs``) is the whole tree. A
session loop-mounts it read-only at its mount point (through an
autoclearing loop device, see :mod:`.loop`) and stacks an overlay mount on
top, with the session's own upper and work directories: begin stays O(1).
Promote writes a new image file of the merged view, O(image): this is the
compact format for shipping images between hosts, not the fastest to
promote. The image tools come from squashfs-tools and erofs-utils.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from .. import mounts, programs
from ..errors import SystemFailure
from ..fsutil import remove_tree
from ..records import Session
from .base import Backend, Site
from .loop import mount_image
from .overlayfs import UpperClone, mount_overlay


def _filesystems() -> set[str]:
    try:
        with open("/proc/filesystems", encoding="utf-8") as f:
            return {line.split()[-1] for line in f if line.strip()}
    except OSError:
        return set()


class ImageFileBackend(UpperClone, Backend):
    always_flatten = True
    fstype = ""
    program = ""
    package = ""

    @property
    def filename(self) -> str:
        return f"root.{self.fstype}"

    def build_argv(self, tree: str, out: str) -> list[str]:
        raise NotImplementedError

    def unavailable(self, site: Site) -> str | None:
        if shutil.which(self.program) is None:
            return f"{self.program} is not installed (apt-get install {self.package})"
        if self.fstype not in _filesystems():
            return f"the kernel has no {self.fstype} support (modprobe {self.fstype})"
        if not os.path.exists("/dev/loop-control"):
            return "no loop devices (/dev/loop-control is missing; modprobe loop)"
        if "overlay" not in _filesystems():
            return "the kernel has no overlayfs (modprobe overlay)"
        return None

    def _image(self, directory: str) -> str:
        return os.path.join(directory, self.filename)

    def _build(self, tree: str, directory: str) -> None:
        out = self._image(directory)
        tmp = os.path.join(directory, f".{self.filename}.part")
        if os.path.exists(tmp):
            os.unlink(tmp)
        programs.run(self.build_argv(tree, tmp), what=f"writing the {self.fstype} image")
        os.rename(tmp, out)

    # --- generations ------------------------------------------------------------

    def init_generation(self, directory: str, site: Site, label: str) -> str:
        self.require(site)
        os.mkdir(directory, 0o700)
        return os.path.join(directory, "tree")

    def finish_generation(self, directory: str) -> None:
        tree = os.path.join(directory, "tree")
        self._build(tree, directory)
        remove_tree(tree)

    def generation_size(self, directory: str) -> int:
        return os.stat(self._image(directory)).st_blocks * 512

    def lowers(self, generations_dir: str, stack: list[int]) -> list[str]:
        return [self._image(os.path.join(generations_dir, str(stack[0])))]

    @contextmanager
    def view(self, directory: str, lowers: list[str], scratch: str) -> Iterator[str]:
        mount_image(lowers[0], scratch, self.fstype)
        try:
            yield scratch
        finally:
            mounts.unmount_tree(scratch, force=True)

    # --- sessions ---------------------------------------------------------------

    def mount(self, session: Session) -> None:
        # The image is mounted at the session's mount point and the overlay is
        # stacked on the same point, its lower resolved before it covers the
        # image: unmounting the mount point (deepest, latest first) takes both
        # down and the loop device with them.
        mount_image(session.lowers[0], session.mountpoint, self.fstype)
        try:
            mount_overlay(
                session.mountpoint,
                [session.mountpoint],
                self._upper(session),
                self._work(session),
                volatile=session.volatile,
            )
        except SystemFailure:
            mounts.unmount_tree(session.mountpoint, force=True)
            raise

    def stage(self, session: Session, staging: str, *, flatten: bool, scratch: str) -> bool:
        mount_image(session.lowers[0], scratch, self.fstype)
        try:
            mount_overlay(scratch, [self._upper(session), scratch])
            self._build(scratch, staging)
        finally:
            mounts.unmount_tree(scratch, force=True)
        return True

    def unstage(self, session: Session, staging: str) -> None:
        return None  # the session's upper directory was only read


class SquashfsBackend(ImageFileBackend):
    name = "squashfs"
    fstype = "squashfs"
    program = "mksquashfs"
    package = "squashfs-tools"
    summary = "a generation is a squashfs image file; a session is an overlay over its loop mount"

    def build_argv(self, tree: str, out: str) -> list[str]:
        return ["mksquashfs", tree, out, "-noappend", "-comp", "zstd", "-quiet", "-no-progress"]


class ErofsBackend(ImageFileBackend):
    name = "erofs"
    fstype = "erofs"
    program = "mkfs.erofs"
    package = "erofs-utils"
    summary = "a generation is an erofs image file; a session is an overlay over its loop mount"

    def build_argv(self, tree: str, out: str) -> list[str]:
        return ["mkfs.erofs", "-zlz4hc", "--quiet", out, tree]
