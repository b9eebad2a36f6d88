"""Filling a new image's first generation: from a directory, a tarball or mmdebstrap.

Each importer writes a complete tree into a directory that does not exist
yet, or exists and is empty (a btrfs subvolume, a mounted zfs dataset),
reporting progress as it goes (a fraction when it can be known).
"""

from __future__ import annotations

import os
import subprocess
import time

from . import commands
from .errors import BadInput, SystemFailure
from .struct import Struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Callable
    from typing import Any

    Progress = Callable[[float | None, str], None]


#: Magic bytes of the compressions ``--from-tar`` understands.
_MAGIC = (
    (b"\x1f\x8b", ["gzip", "-dc"], "gzip"),
    (b"\xfd7zXZ\x00", ["xz", "-dc"], "xz-utils"),
    (b"\x28\xb5\x2f\xfd", ["zstd", "-dcq"], "zstd"),
    (b"BZh", ["bzip2", "-dc"], "bzip2"),
)

#: tar options that keep everything a root file system needs.
TAR_KEEP = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"]


class Source(Struct, frozen=True):
    """Where a new image comes from."""

    kind: str  # "dir", "tar" or "mmdebstrap"
    path: str | None = None
    suite: str | None = None
    variant: str | None = None
    mirror: str | None = None
    include: str | None = None
    arch: str | None = None

    def describe(self) -> str:
        if self.kind == "mmdebstrap":
            return f"mmdebstrap {self.suite} ({self.variant or 'default'} variant)"
        return f"{self.kind} {self.path}"

    def check(self) -> None:
        """Validate before any work is done: one clear line if the source is unusable."""
        if self.kind == "dir":
            assert self.path is not None
            if not os.path.isdir(self.path):
                raise BadInput(f"--from-dir {self.path}: no such directory")
        elif self.kind == "tar":
            assert self.path is not None
            if not os.path.isfile(self.path):
                raise BadInput(f"--from-tar {self.path}: no such file")
        elif self.kind == "mmdebstrap":
            if not self.suite or not all(c.isalnum() or c in "-_." for c in self.suite):
                raise BadInput(f"--mmdebstrap: invalid suite {self.suite!r}")
            if self.variant and self.variant not in (
                "extract", "custom", "essential", "apt", "required", "minbase",
                "buildd", "important", "debootstrap", "-", "standard",
            ):  # fmt: skip
                raise BadInput(f"--variant: unknown mmdebstrap variant {self.variant!r}")
            commands.require("mmdebstrap", "mmdebstrap")
        else:
            raise BadInput(f"unknown source kind {self.kind!r}")


def fill(source: Source, dest: str, progress: Progress) -> None:
    if source.kind == "dir":
        assert source.path is not None
        _from_dir(source.path, dest, progress)
    elif source.kind == "tar":
        assert source.path is not None
        _from_tar(source.path, dest, progress)
    else:
        _from_mmdebstrap(source, dest, progress)


def _used_blocks(path: str) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _tree_bytes(path: str) -> int:
    total = 0
    stack = [path]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    return total


def _from_dir(source: str, dest: str, progress: Progress) -> None:
    progress(None, f"measuring {source}")
    total = max(_tree_bytes(source), 1)
    parent = os.path.dirname(dest)
    before = _used_blocks(parent)
    argv = ["cp", "-a", "--reflink=auto", "--no-target-directory", source, dest]
    with commands.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as child:
        assert child.stderr is not None
        os.set_blocking(child.stderr.fileno(), False)
        err = b""
        while child.poll() is None:
            copied = max(0, _used_blocks(parent) - before)
            progress(min(copied / total, 0.99), f"copying {source}")
            time.sleep(0.1)
            err += child.stderr.read() or b""
        err += child.stderr.read() or b""
    if child.returncode != 0:
        raise SystemFailure(commands.failure_line(argv, child.returncode, err, "copying the tree"))
    progress(1.0, f"copied {source}")


def _decompressor(path: str) -> tuple[list[str] | None, str | None]:
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, argv, package in _MAGIC:
        if head.startswith(magic):
            return argv, package
    return None, None


def _from_tar(path: str, dest: str, progress: Progress, options: list[str] | None = None) -> None:
    """Unpack tarball *path* into *dest*; *options* replace :data:`TAR_KEEP` (rootless mode: core.rootless.content)."""
    import tempfile

    size = max(os.path.getsize(path), 1)
    argv, package = _decompressor(path)
    if not os.path.isdir(dest):  # a backend may have made it already (a subvolume, a mounted dataset)
        os.mkdir(dest, 0o755)
    keep = TAR_KEEP if options is None else options
    tar = ["tar", "--extract", "--file=-", f"--directory={dest}", "--same-owner", "--preserve-permissions", *keep]
    pipeline = [argv, tar] if argv is not None else [tar]
    if argv is not None:
        commands.require(argv[0], package)
    procs: list[tuple[subprocess.Popen[bytes], Any]] = []
    try:
        upstream = subprocess.PIPE
        for i, cmd in enumerate(pipeline):
            # stderr goes to files: a chatty tar must never block on a full pipe while we feed it
            err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
            stdout = subprocess.PIPE if i + 1 < len(pipeline) else subprocess.DEVNULL
            proc = commands.popen(cmd, stdin=upstream, stdout=stdout, stderr=err)
            if procs and procs[-1][0].stdout is not None:
                procs[-1][0].stdout.close()  # only the next process reads it now
            procs.append((proc, err))
            upstream = proc.stdout  # type: ignore[assignment]
        feed = procs[0][0].stdin
        assert feed is not None
        fed = 0
        last = 0.0
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    feed.write(chunk)
                    fed += len(chunk)
                    now = time.monotonic()
                    if now - last > 0.2:
                        progress(fed / size, f"unpacking {os.path.basename(path)}")
                        last = now
        except BrokenPipeError:
            pass  # the reader died; its exit status says why
        finally:
            try:
                feed.close()
            except BrokenPipeError:
                pass
        for proc, err in procs:
            if proc.wait() != 0:
                err.seek(0)
                raise SystemFailure(commands.failure_line(proc.args, proc.returncode, err.read(), f"unpacking {path}"))  # type: ignore[arg-type]
    finally:
        for proc, err in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            err.close()
    progress(1.0, f"unpacked {os.path.basename(path)}")


def _from_mmdebstrap(source: Source, dest: str, progress: Progress) -> None:
    argv = ["mmdebstrap", "--mode=root", "--format=directory"]
    if source.variant:
        argv.append(f"--variant={source.variant}")
    if source.arch:
        argv.append(f"--architectures={source.arch}")
    if source.include:
        argv.append(f"--include={source.include}")
    argv += [str(source.suite), dest]
    if source.mirror:
        argv.append(source.mirror)
    progress(None, f"running mmdebstrap {source.suite}")
    proc = commands.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    tail: list[str] = []
    for raw in proc.stderr:
        line = raw.decode(errors="replace").rstrip()
        if not line:
            continue
        tail = [*tail[-19:], line]
        progress(None, line[:120])
    if proc.wait() != 0:
        raise SystemFailure(commands.failure_line(argv, proc.returncode, "\n".join(tail).encode(), "mmdebstrap"))
    progress(1.0, f"mmdebstrap {source.suite} done")
