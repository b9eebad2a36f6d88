"""``image export``: one generation's complete tree as a tarball that ``--from-tar`` restores exactly.

The tarball is POSIX (pax) tar with numeric owners, nanosecond modification
times, extended attributes (ACLs and file capabilities included), device
nodes, FIFOs, hard links and sparse files, members sorted by name (the same
generation always gives the same archive). The compression follows the
file's suffix. The generation is read through its backend's read-only view
(an overlay mount of its layers, removed afterwards) while a pin keeps gc
and ``image remove`` from deleting it; the file is written beside its
destination under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from . import backends, generations, images, pins, policy, programs
from .callerfs import CallerFiles
from .errors import BadInput, Conflict, RoostError, SystemFailure
from .fsutil import fsync_dir, temp_name
from .importers import TAR_KEEP
from .names import check_generation
from .store import new_tx

if TYPE_CHECKING:
    from .context import Context

#: suffix -> (compressor argv or None, Debian package, name)
COMPRESSIONS: tuple[tuple[str, list[str] | None, str | None, str], ...] = (
    (".tar", None, None, "none"),
    (".tar.gz", ["gzip", "-c"], "gzip", "gzip"),
    (".tgz", ["gzip", "-c"], "gzip", "gzip"),
    (".tar.xz", ["xz", "-c", "-T0"], "xz-utils", "xz"),
    (".txz", ["xz", "-c", "-T0"], "xz-utils", "xz"),
    (".tar.zst", ["zstd", "-c", "-q", "-T0"], "zstd", "zstd"),
    (".tzst", ["zstd", "-c", "-q", "-T0"], "zstd", "zstd"),
    (".tar.bz2", ["bzip2", "-c"], "bzip2", "bzip2"),
)

#: tar options of an export: everything a root file system needs, reproducibly.
TAR_CREATE = [
    "tar",
    "--create",
    "--file=-",
    "--format=posix",
    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",  # no pid, no access times
    "--sort=name",
    "--sparse",
    "--sparse-version=0.0",  # later versions put the pid in member names: not reproducible
    *TAR_KEEP,
]


@dataclass(frozen=True)
class ExportResult:
    image: str
    generation: int
    path: str
    compression: str
    size: int  # bytes of the file written
    tar_bytes: int | None  # bytes of the uncompressed tar stream (None: not measured, a rootless export)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "generation": self.generation,
            "path": self.path,
            "compression": self.compression,
            "size": self.size,
            "tar_bytes": self.tar_bytes,
        }


def compression_of(path: str) -> tuple[list[str] | None, str | None, str]:
    """(compressor argv, its package, its name) for *path*'s suffix; BadInput for any other."""
    name = os.path.basename(path)
    for suffix, argv, package, label in COMPRESSIONS:
        if name.endswith(suffix) and len(name) > len(suffix):
            return argv, package, label
    known = ", ".join(s for s, *_ in COMPRESSIONS)
    raise BadInput(f"{path}: the file name must end in one of {known} (it chooses the compression)")


def export(ctx: Context, image: str, path: str, *, generation: int | None = None, force: bool = False) -> ExportResult:
    ctx.require_privileged("image export")
    config = images.authorize(ctx, policy.IMAGE_EXPORT, image)
    if generation is not None:
        generation = check_generation(generation)
    compressor, package, label = compression_of(path)
    dest = os.path.abspath(path)
    parent = os.path.dirname(dest)
    files = CallerFiles(ctx.actor)  # the file is written as the caller could write it
    if not files.is_dir(parent):
        raise BadInput(f"{path}: no such directory {parent} (or not yours to write in)")
    if files.is_dir(dest):
        raise BadInput(f"{path} is a directory")
    if not force and _exists(files, dest):
        raise Conflict(f"{path} already exists (use --force to replace it)")
    programs.require("tar", "tar")
    if compressor is not None:
        programs.require(compressor[0], package)
    backend = backends.get(config.backend)
    ctx.ready()
    store = ctx.store
    number = generation if generation is not None else generations.current(store, image)
    pin = pins.pin(ctx, image, number, f"export {image} {number}")
    try:
        meta = generations.read_meta(store, image, number)
        estimate = 0
        for layer in meta.stack:
            try:
                estimate += generations.read_meta(store, image, layer).size
            except RoostError:
                continue
        lowers = backend.lowers(store.generations_dir(image), list(meta.stack))
        tx = new_tx()
        tx_lock = ctx.lock(store.tx_lock_name(tx), f"export {image} {number}")
        scratch = os.path.join(store.stage_dir, tx)  # recover and doctor know the place
        try:
            os.mkdir(scratch, 0o700)
            try:
                with backend.view(store.generation_dir(image, number), lowers, scratch) as tree:
                    size, streamed = _write(ctx, tree, dest, compressor, estimate, files, force)
            finally:
                os.rmdir(scratch)
        finally:
            tx_lock.release(remove=True)
    except BaseException as e:
        ctx.journal("image export", image=image, generation=number, file=dest, result="failed", error=str(e))
        raise
    finally:
        pin.release(remove=True)
    ctx.journal("image export", image=image, generation=number, file=dest, size=size)
    return ExportResult(image, number, dest, label, size, streamed)


def _exists(files: CallerFiles, path: str) -> bool:
    try:
        os.close(files.open(path, os.O_PATH | os.O_NOFOLLOW))
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def _write(
    ctx: Context,
    tree: str,
    dest: str,
    compressor: list[str] | None,
    estimate: int,
    files: CallerFiles,
    replace: bool,
) -> tuple[int, int]:
    """Stream *tree* as tar (through *compressor*) into *dest*; (file size, tar bytes).

    The temporary file is created, and renamed into place, with the caller's rights (*files*).
    """
    tmp = temp_name(dest)
    try:
        fd = files.create(tmp, 0o600)
    except OSError as e:
        raise BadInput(f"{dest}: {e.strerror}") from None
    errs: list[IO[bytes]] = []
    tar: subprocess.Popen[bytes] | None = None
    squeeze: subprocess.Popen[bytes] | None = None
    done = False
    try:
        errs.append(tempfile.TemporaryFile())  # noqa: SIM115 - closed below
        tar = programs.popen(
            [*TAR_CREATE, f"--directory={tree}", "."], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errs[0]
        )
        sink = fd
        if compressor is not None:
            errs.append(tempfile.TemporaryFile())  # noqa: SIM115 - closed below
            squeeze = programs.popen(compressor, stdin=subprocess.PIPE, stdout=fd, stderr=errs[1])
            assert squeeze.stdin is not None
            sink = squeeze.stdin.fileno()
        streamed = _pump(ctx, tar, sink, dest, estimate)
        assert tar.stdout is not None
        tar.stdout.close()  # if the pump stopped early, tar now fails instead of blocking
        if squeeze is not None and squeeze.stdin is not None:
            squeeze.stdin.close()
        # The compressor first: when it fails (a full disk), tar's broken pipe is only a consequence.
        for proc, err in ((squeeze, errs[-1]), (tar, errs[0])):
            if proc is not None and proc.wait() != 0:
                err.seek(0)
                raise SystemFailure(
                    programs.failure_line(proc.args, proc.returncode, err.read(), f"exporting to {dest}")  # type: ignore[arg-type]
                )
        try:
            os.fsync(fd)
        except OSError as e:
            raise SystemFailure(f"writing {dest}: {e.strerror}") from None
        size = os.fstat(fd).st_size
        os.close(fd)
        fd = -1
        try:
            files.rename(tmp, dest, replace=replace)
        except FileExistsError:
            raise Conflict(f"{dest} already exists (use --force to replace it)") from None
        except OSError as e:
            raise SystemFailure(f"writing {dest}: {e.strerror}") from None
        done = True
        fsync_dir(os.path.dirname(dest))
        ctx.progress(1.0, f"exported {os.path.basename(dest)}")
        return size, streamed
    finally:
        for proc in (tar, squeeze):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if tar is not None and tar.stdout is not None and not tar.stdout.closed:
            tar.stdout.close()
        if squeeze is not None and squeeze.stdin is not None and not squeeze.stdin.closed:
            try:
                squeeze.stdin.close()
            except BrokenPipeError:
                pass
        for err in errs:
            err.close()
        if fd >= 0:
            os.close(fd)
        if not done:
            try:
                files.unlink(tmp)
            except FileNotFoundError:
                pass


def _pump(ctx: Context, tar: subprocess.Popen[bytes], sink: int, dest: str, estimate: int) -> int:
    """Copy tar's output to *sink*, reporting progress; returns the bytes copied.

    Stops early (and lets the exit statuses tell why) when the reader of
    *sink* is gone.
    """
    assert tar.stdout is not None
    source = tar.stdout.fileno()
    total = 0
    last = 0.0
    name = os.path.basename(dest)
    while chunk := os.read(source, 1 << 20):
        view = memoryview(chunk)
        while view:
            try:
                written = os.write(sink, view)
            except BrokenPipeError:
                return total  # the compressor died; its status says why
            except OSError as e:
                raise SystemFailure(f"writing {dest}: {e.strerror}") from None
            view = view[written:]
        total += len(chunk)
        now = time.monotonic()
        if now - last > 0.2:
            fraction = min(total / estimate, 0.99) if estimate > 0 else None
            ctx.progress(fraction, f"exporting {name}")
            last = now
    return total
