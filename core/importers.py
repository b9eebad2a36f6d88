"""Filling a new image's first generation: from a directory, a tarball or mmdebstrap.

Each importer writes a complete tree into a directory that does not exist
yet, or exists and is empty (a btrfs subvolume, a mounted zfs dataset),
reporting progress as it goes (a fraction when it can be known).
"""

from __future__ import annotations

import os
import subprocess
import time

from . import programs
from .errors import BadInput, SystemFailure
from .struct import Struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections cost milliseconds at start-up
    from collections.abc import Callable
    from typing import Any

    from .callerfs import CallerFiles

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


#: mmdebstrap's variants.
VARIANTS = (
    "extract", "custom", "essential", "apt", "required", "minbase",
    "buildd", "important", "debootstrap", "-", "standard",
)  # fmt: skip
_SUITE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_PACKAGE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+-.:")
_ARCH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%")


def _word(value: str, allowed: frozenset[str], longest: int = 100) -> bool:
    """A plain word: only *allowed* characters, starting with a letter or digit (never an option)."""
    return 0 < len(value) <= longest and value[0].isalnum() and set(value.lower()) <= allowed


def check_mirror(mirror: str, *, local: bool) -> None:
    """A mirror URL mmdebstrap may fetch: http(s) (or ``mirror+http(s)``); ``file:`` only when *local*."""
    scheme, sep, rest = mirror.partition("://")
    schemes = ("http", "https", "mirror+http", "mirror+https") + (("file", "copy") if local else ())
    if not sep or scheme not in schemes or not rest or len(mirror) > 2000 or not set(mirror) <= _URL:
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise BadInput(f"--mirror: expected a URL starting with {allowed}")


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

    def check(self, files: CallerFiles | None = None) -> None:
        """Validate before any work is done: one clear line if the source is unusable.

        *files* opens what the caller named with the caller's rights (root's when None).
        """
        if self.kind == "dir":
            assert self.path is not None
            if not (files.is_dir(self.path) if files else os.path.isdir(self.path)):
                raise BadInput(f"--from-dir {self.path}: no such directory (or not yours to read)")
        elif self.kind == "tar":
            assert self.path is not None
            if not (files.is_file(self.path) if files else os.path.isfile(self.path)):
                raise BadInput(f"--from-tar {self.path}: no such file (or not yours to read)")
        elif self.kind == "mmdebstrap":
            if not self.suite or not _word(self.suite, _SUITE):
                raise BadInput(f"--mmdebstrap: invalid suite {self.suite!r}")
            if self.variant and self.variant not in VARIANTS:
                raise BadInput(f"--variant: unknown mmdebstrap variant {self.variant!r}")
            if self.arch is not None and not all(_word(a, _ARCH, 32) for a in self.arch.split(",")):
                raise BadInput(f"--arch: invalid architecture {self.arch!r} (e.g. amd64, arm64)")
            if self.include is not None and not all(_word(p, _PACKAGE) for p in self.include.split(",")):
                raise BadInput("--include: expected package names separated by commas")
            if self.mirror is not None:
                check_mirror(self.mirror, local=files is None or not files.drop)
            programs.require("mmdebstrap", "mmdebstrap")
            if self.arch is not None:
                from . import binfmt

                binfmt.check_arch(self.arch)
                runs, why = binfmt.status(self.arch)
                if not runs:
                    raise BadInput(f"--arch {self.arch}: this host cannot run {self.arch} binaries ({why})")
                if not all(binfmt.is_native(a) for a in self.arch.split(",")):
                    programs.require("arch-test", "arch-test")  # mmdebstrap checks foreign architectures with it
        else:
            raise BadInput(f"unknown source kind {self.kind!r}")


def fill(source: Source, dest: str, progress: Progress, files: CallerFiles | None = None) -> None:
    """Write *source*'s tree into *dest*; what the caller named is read with the caller's rights (*files*)."""
    if source.kind == "dir":
        assert source.path is not None
        if files is not None and files.drop:
            _from_dir_as_caller(source.path, dest, progress, files)
        else:
            _from_dir(source.path, dest, progress)
    elif source.kind == "tar":
        assert source.path is not None
        _from_tar(source.path, dest, progress, files)
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
    argv = ["cp", "-a", "--reflink=auto", "--no-target-directory", "--", source, dest]
    with programs.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as child:
        assert child.stderr is not None
        os.set_blocking(child.stderr.fileno(), False)
        err = b""
        try:
            while child.poll() is None:
                copied = max(0, _used_blocks(parent) - before)
                progress(min(copied / total, 0.99), f"copying {source}")
                time.sleep(0.1)
                err += child.stderr.read() or b""
        except BaseException:
            _stop(child)  # cancelled (the progress callback raised), interrupted: cp writes no more
            raise
        err += child.stderr.read() or b""
    if child.returncode != 0:
        raise SystemFailure(programs.failure_line(argv, child.returncode, err, "copying the tree"))
    progress(1.0, f"copied {source}")


def _decompressor(head: bytes) -> tuple[list[str] | None, str | None]:
    for magic, argv, package in _MAGIC:
        if head.startswith(magic):
            return argv, package
    return None, None


def _from_dir_as_caller(source: str, dest: str, progress: Progress, files: CallerFiles) -> None:
    """Copy the tree at *source* the way its caller could read it: tar reading as the caller, writing as root.

    Owners, modes, links, devices and extended attributes are kept; a file
    the caller may not read stops the copy with tar's message.
    """
    if not os.path.isdir(dest):
        os.mkdir(dest, 0o755)
    reader = ["tar", "--create", "--file=-", f"--directory={source}", "--numeric-owner", "--xattrs", "--acls", "."]
    writer = [
        "tar",
        "--extract",
        "--file=-",
        f"--directory={dest}",
        "--same-owner",
        "--preserve-permissions",
        *TAR_KEEP,
    ]
    _pipeline([(reader, files.popen_kwargs()), (writer, {})], None, progress, f"copying {source}", 0)
    progress(1.0, f"copied {source}")


def _from_tar(
    path: str, dest: str, progress: Progress, files: CallerFiles | None = None, options: list[str] | None = None
) -> None:
    """Unpack tarball *path* into *dest*; *options* replace :data:`TAR_KEEP` (rootless mode: core.rootless.content)."""
    try:
        source = files.open(path, os.O_RDONLY) if files is not None else os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise BadInput(f"--from-tar {path}: {e.strerror}") from None
    try:
        _unpack(source, path, dest, progress, options)
    finally:
        os.close(source)


def _unpack(source: int, path: str, dest: str, progress: Progress, options: list[str] | None = None) -> None:
    """Unpack the (compressed) tarball open at *source* into *dest* (tar's keep options: *options* or TAR_KEEP)."""
    size = max(os.fstat(source).st_size, 1)
    head = os.pread(source, 8, 0)
    argv, package = _decompressor(head)
    if not os.path.isdir(dest):  # a backend may have made it already (a subvolume, a mounted dataset)
        os.mkdir(dest, 0o755)
    keep = TAR_KEEP if options is None else options
    tar = ["tar", "--extract", "--file=-", f"--directory={dest}", "--same-owner", "--preserve-permissions", *keep]
    if argv is not None:
        programs.require(argv[0], package)
    stages: list[tuple[list[str], dict[str, Any]]] = [(argv, {})] if argv is not None else []
    stages.append((tar, {}))
    _pipeline(stages, source, progress, f"unpacking {os.path.basename(path)}", size)
    progress(1.0, f"unpacked {os.path.basename(path)}")


def _pipeline(
    stages: list[tuple[list[str], dict[str, Any]]], feed: int | None, progress: Progress, label: str, size: int
) -> None:
    """Run helper programs piped into each other; feed the first from descriptor *feed* (if any).

    Each stage's stderr goes to a file (a chatty tar must never block on a
    full pipe); the first failing stage's last line becomes the error.
    """
    import tempfile

    procs: list[tuple[subprocess.Popen[bytes], Any]] = []
    try:
        upstream: Any = subprocess.PIPE if feed is not None else subprocess.DEVNULL
        for i, (cmd, extra) in enumerate(stages):
            err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
            stdout = subprocess.PIPE if i + 1 < len(stages) else subprocess.DEVNULL
            proc = programs.popen(cmd, stdin=upstream, stdout=stdout, stderr=err, **extra)
            if procs and procs[-1][0].stdout is not None:
                procs[-1][0].stdout.close()  # only the next process reads it now
            procs.append((proc, err))
            upstream = proc.stdout
        if feed is not None:
            pipe = procs[0][0].stdin
            assert pipe is not None
            fed = 0
            last = 0.0
            try:
                while chunk := os.read(feed, 1 << 20):
                    pipe.write(chunk)
                    fed += len(chunk)
                    now = time.monotonic()
                    if now - last > 0.2:
                        progress(min(fed / size, 0.99), label)
                        last = now
            except BrokenPipeError:
                pass  # the reader died; its exit status says why
            finally:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass
        else:
            # Nothing to count: report on a tick until the last stage ends, so a caller can stop it.
            while True:
                progress(None, label)
                try:
                    procs[-1][0].wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for proc, err in procs:
            if proc.wait() != 0:
                err.seek(0)
                raise SystemFailure(programs.failure_line(proc.args, proc.returncode, err.read(), label))  # type: ignore[arg-type]
    finally:
        for proc, err in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            err.close()


def _stop(proc: subprocess.Popen[bytes], *, group: bool = False) -> None:
    """Kill a helper (and its process group, with *group*) and reap it."""
    import signal

    try:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


#: The stages mmdebstrap announces on stderr (``I: running apt-get update...``), with
#: where each starts in a whole run: measured on bookworm's minbase and buildd variants,
#: where installing the essential and then the remaining packages take two thirds.
MMDEBSTRAP_STAGES = (
    ("running apt-get update", 0.02),
    ("downloading packages", 0.08),
    ("extracting archives", 0.15),
    ("installing essential packages", 0.30),
    ("installing remaining packages", 0.65),
    ("cleaning package lists", 0.97),
)


class MmdebstrapProgress:
    """mmdebstrap's stderr as progress: its stages as a fraction and a name, its other lines as they are.

    mmdebstrap draws no bar of its own unless stderr is a terminal, but it
    names each stage as it starts. A stage sets the fraction (never
    backwards); a warning or any other line is passed on at the fraction
    reached, so a caller's bar holds still while the line is shown.
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.fraction: float | None = None
        self.stage = 0

    def line(self, line: str) -> None:
        text = line[3:].rstrip(". ") if line.startswith("I: ") else None
        if text is not None:
            for i, (name, start) in enumerate(MMDEBSTRAP_STAGES, 1):
                if text.startswith(name) and i > self.stage:
                    self.stage, self.fraction = i, start
                    self.progress(start, f"{text} (stage {i} of {len(MMDEBSTRAP_STAGES)})"[:120])
                    return
        self.progress(self.fraction, line[:120])


def _from_mmdebstrap(source: Source, dest: str, progress: Progress) -> None:
    if source.arch is not None:
        from . import binfmt

        for done in binfmt.ensure(source.arch):  # maintainer scripts run through qemu
            progress(None, done)
    argv = ["mmdebstrap", "--mode=root", "--format=directory"]
    if source.variant:
        argv.append(f"--variant={source.variant}")
    if source.arch:
        argv.append(f"--architectures={source.arch}")
    if source.include:
        argv.append(f"--include={source.include}")
    argv += ["--", str(source.suite), dest]  # checked words (Source.check), and never options
    if source.mirror:
        argv.append(source.mirror)
    progress(None, f"running mmdebstrap {source.suite}")
    # A process group of its own: stopping it stops the apt, dpkg and maintainer scripts it started.
    proc = programs.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    assert proc.stderr is not None
    tail: list[str] = []
    stages = MmdebstrapProgress(progress)
    try:
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            tail = [*tail[-19:], line]
            stages.line(line)
    except BaseException:
        _stop(proc, group=True)  # what it mounted in the target goes with the staging tree
        raise
    finally:
        proc.stderr.close()
    if proc.wait() != 0:
        raise SystemFailure(programs.failure_line(argv, proc.returncode, "\n".join(tail).encode(), "mmdebstrap"))
    progress(1.0, f"mmdebstrap {source.suite} done")
