"""``image publish --sbuild-tarball``: a generation as the tarball sbuild's unshare mode unpacks.

sbuild's unshare mode (``sbuild --chroot-mode=unshare``) builds in a tarball
it unpacks into a user namespace: ``~/.cache/sbuild/NAME.t*`` (or
``$XDG_CACHE_HOME/sbuild``), where NAME is the first of
``SUITE-ARCH-sbuild``, ``SUITE-sbuild``, ``SUITE-ARCH`` … that exists
(Sbuild/ChrootInfo.pm). Publishing writes one generation of an image
(default: current) there as ``NAME.tar.zst`` (or ``.tar``, ``.tar.gz``,
``.tar.xz``), NAME being ``SUITE-ARCH`` of the generation unless given:
SUITE from its ``/etc/os-release`` (``VERSION_CODENAME``), ARCH from its dpkg
database (the ``Architecture`` of dpkg itself, which is what ``dpkg
--print-architecture`` says inside). So roost's generations, history,
rollback and nightly plans maintain what unshare users build in.

The tar stream is export's (POSIX tar, numeric owners, xattrs, sorted,
reproducible) without the contents of ``/dev``: sbuild makes ``/dev`` itself,
and a device node cannot be unpacked in a user namespace.

Atomic: the data goes into a new file beside the tarball
(``.NAME.tar.zst.tmp-PID-…``, created exclusively, never through a symbolic
link), is synced, then renamed over the tarball. A reader sees the old
tarball or the new one, never part of one; a publish killed at any point
leaves the old tarball as it was, and its temporary file, which sbuild
never picks (the name starts with a dot) and the next publish of the same
tarball removes (its writer's pid is in its name and no longer runs).

Who writes: ``roost image publish`` writes with the caller's rights (through
sudo, a child that dropped to the caller's ids opens the file, as for
``image export``); its default directory is the caller's own
``~/.cache/sbuild``, created if missing. The ``publish:`` entry of image.yaml
is written after every promote by roost itself, so its directory must be
root's and writable by nobody else (like roost's own roots); users point
sbuild at it (``--chroot=PATH``) or link it into their cache. Either way
the tarball holds every file of the generation, as ``image export`` does,
so publishing needs the image's root level.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from . import backends, faults, generations, images, pins, policy, programs
from .actor import Actor
from .callerfs import CallerFiles
from .errors import BadInput, Conflict, RoostError, SystemFailure
from .exports import TAR_CREATE
from .fsutil import fsync_dir, temp_name
from .imageconf import TARBALL_COMPRESSIONS, ImageConfig, SbuildTarball
from .names import check_generation, is_valid_name, printable
from .rootfs import Root
from .store import new_tx
from .struct import Struct

if TYPE_CHECKING:
    from .context import Context

#: compression -> (suffix, compressor argv or None, its Debian package)
FORMATS: dict[str, tuple[str, list[str] | None, str | None]] = {
    "zstd": (".tar.zst", ["zstd", "-c", "-q", "-T0"], "zstd"),
    "gzip": (".tar.gz", ["gzip", "-c", "-n"], "gzip"),
    "xz": (".tar.xz", ["xz", "-c", "-T0"], "xz-utils"),
    "none": (".tar", None, None),
}
assert set(FORMATS) == set(TARBALL_COMPRESSIONS)

#: what sbuild's unshare mode lists as a tarball chroot (Sbuild/ChrootInfoUnshare.pm)
SBUILD_PATTERN = re.compile(r"[^-]+-[^-]+(-[^-]+)?(-sbuild)?")
#: mode of a published tarball: sbuild unpacks it as the user who builds
MODE = 0o644


class PublishResult(Struct, frozen=True):
    image: str
    generation: int
    path: str
    name: str
    compression: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return self.as_dict()


def default_directory(actor: Actor, environ: dict[str, str] | None = None) -> str:
    """Where sbuild's unshare mode looks for the caller's tarballs.

    ``$XDG_CACHE_HOME/sbuild`` or ``$HOME/.cache/sbuild`` as sbuild reads them,
    for someone running roost themselves; through sudo (whose environment is
    not the caller's) the caller's home from the password database.
    """
    import pwd

    env = os.environ if environ is None else environ
    if not actor.via_sudo and os.geteuid() == actor.uid:
        if env.get("XDG_CACHE_HOME"):
            return os.path.join(env["XDG_CACHE_HOME"], "sbuild")
        if env.get("HOME"):
            return os.path.join(env["HOME"], ".cache", "sbuild")
    try:
        home = pwd.getpwuid(actor.uid).pw_dir
    except KeyError:
        raise BadInput(f"uid {actor.uid} has no home directory: give the directory to publish into") from None
    return os.path.join(home, ".cache", "sbuild")


# --- the two ways in -------------------------------------------------------------------------


def publish(
    ctx: Context,
    image: str,
    directory: str | None = None,
    *,
    name: str | None = None,
    compression: str = "zstd",
    generation: int | None = None,
) -> PublishResult:
    """``roost image publish IMAGE --sbuild-tarball [DIRECTORY]``, written with the caller's rights."""
    ctx.require_privileged("image publish")
    config = images.authorize(ctx, policy.IMAGE_EXPORT, image)
    if generation is not None:
        generation = check_generation(generation)
    files = CallerFiles(ctx.actor)
    if directory is None:
        directory = default_directory(ctx.actor)
        _make_dirs(files, directory)
    directory = os.path.abspath(directory)
    if not files.is_dir(directory):
        raise BadInput(f"{directory}: no such directory (or not yours to write in)")
    return _publish(ctx, image, config, directory, files, name, compression, generation)


def after_promote(ctx: Context, image: str, number: int) -> PublishResult | None:
    """Write the tarball image.yaml's ``publish:`` asks for, after generation *number* was promoted.

    Raises :class:`SystemFailure` saying that the promote itself succeeded
    when publishing fails (the journal records both).
    """
    config = images.load_config(ctx, image)
    spec = config.publish
    if spec is None:
        return None
    try:
        return _publish_configured(ctx, image, config, spec, number)
    except RoostError as e:
        raise SystemFailure(
            f"{image} is at generation {number}, but publishing its sbuild tarball failed: {e}"
        ) from None


def _publish_configured(
    ctx: Context, image: str, config: ImageConfig, spec: SbuildTarball, number: int
) -> PublishResult:
    from . import trust

    directory = spec.directory
    problem = trust.dir_problem(directory)
    if problem is not None:
        raise BadInput(f"publish directory {directory}: {problem} (it must be root's, writable by nobody else)")
    if not os.path.isdir(directory) or os.path.islink(directory):
        raise BadInput(f"publish directory {directory} does not exist")
    files = CallerFiles(Actor(uid=0, user="root", pid=os.getpid(), groups=(), real_root=True))
    return _publish(ctx, image, config, directory, files, spec.name, spec.compression, number)


# --- the work -----------------------------------------------------------------------------


def _make_dirs(files: CallerFiles, directory: str) -> None:
    """Create *directory* and missing parents as the caller (``~/.cache/sbuild``)."""
    missing: list[str] = []
    here = directory
    while not files.is_dir(here):
        missing.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    for path in reversed(missing):
        try:
            files.mkdir(path, 0o755)
        except FileExistsError:
            pass
        except OSError as e:
            raise BadInput(f"{path}: {e.strerror}") from None


def tarball_format(compression: str, name: str | None) -> tuple[str, list[str] | None]:
    """The file suffix and compressor of *compression*, once it, the tarball *name* and the programs check out."""
    if compression not in FORMATS:
        raise BadInput(f"unknown compression {printable(compression)} (known: {', '.join(FORMATS)})")
    suffix, compressor, package = FORMATS[compression]
    if name is not None and not is_valid_name(name):
        raise BadInput(f"invalid tarball name {printable(name)}: use letters, digits and _ . + -")
    programs.require("tar", "tar")
    if compressor is not None:
        programs.require(compressor[0], package)
    return suffix, compressor


def _publish(
    ctx: Context,
    image: str,
    config: ImageConfig,
    directory: str,
    files: CallerFiles,
    name: str | None,
    compression: str,
    generation: int | None,
) -> PublishResult:
    suffix, compressor = tarball_format(compression, name)
    ctx.ready()
    store = ctx.store
    number = generation if generation is not None else generations.current(store, image)
    dest = ""
    try:
        with _generation_tree(ctx, image, config, number) as tree:
            chosen = name if name is not None else sbuild_name(tree, image, number)
            dest = os.path.join(directory, chosen + suffix)
            check_siblings(files, directory, chosen, dest)
            size = _write(ctx, tree, dest, compressor, files)
    except BaseException as e:
        ctx.journal(
            "image publish", image=image, generation=number, file=dest or directory, result="failed", error=str(e)
        )
        raise
    ctx.journal("image publish", image=image, generation=number, file=dest, size=size)
    return PublishResult(image=image, generation=number, path=dest, name=chosen, compression=compression, size=size)


@contextmanager
def _generation_tree(ctx: Context, image: str, config: ImageConfig, number: int) -> Iterator[str]:
    """A read-only view of generation *number*, pinned (gc and remove keep it) while it is read."""
    store = ctx.store
    backend = backends.get(config.backend)
    pin = pins.pin(ctx, image, number, f"publish {image} {number}")
    try:
        meta = generations.read_meta(store, image, number)
        lowers = backend.lowers(store.generations_dir(image), list(meta.stack))
        tx = new_tx()
        tx_lock = ctx.lock(store.tx_lock_name(tx), f"publish {image} {number}")
        scratch = os.path.join(store.stage_dir, tx)  # recover and doctor know the place
        try:
            os.mkdir(scratch, 0o700)
            try:
                with backend.view(store.generation_dir(image, number), lowers, scratch) as tree:
                    yield tree
            finally:
                os.rmdir(scratch)
        finally:
            tx_lock.release(remove=True)
    finally:
        pin.release(remove=True)


def sbuild_name(tree: str, image: str, number: int) -> str:
    """``SUITE-ARCH`` of the root file system *tree* (see the module's documentation)."""
    with Root(tree) as root:
        suite = _os_release_codename(root)
        arch = _dpkg_architecture(root)
    if not suite or not arch:
        missing = "VERSION_CODENAME in /etc/os-release" if not suite else "dpkg's Architecture in /var/lib/dpkg/status"
        raise BadInput(
            f"generation {number} of {image} does not say its suite and architecture (no {missing}): "
            "name the tarball (--name SUITE-ARCH)"
        )
    name = f"{suite}-{arch}"
    if not is_valid_name(name):
        raise BadInput(f"generation {number} of {image} gives the unusable name {printable(name)}: use --name")
    return name


def _read_inside(root: Root, rel: str, limit: int = 1 << 24) -> str | None:
    try:
        fd = root.open(rel, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = b""
        while len(data) <= limit and (chunk := os.read(fd, 1 << 20)):
            data += chunk
        return data.decode("utf-8", "replace")
    finally:
        os.close(fd)


def _os_release_codename(root: Root) -> str | None:
    for rel in ("etc/os-release", "usr/lib/os-release"):
        text = _read_inside(root, rel, 1 << 16)
        if text is None:
            continue
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "VERSION_CODENAME":
                value = value.strip().strip("\"'")
                return value or None
        return None
    return None


def _dpkg_architecture(root: Root) -> str | None:
    text = _read_inside(root, "var/lib/dpkg/status")
    if text is None:
        return None
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Package") == "dpkg" and "install ok installed" in fields.get("Status", ""):
            return fields.get("Architecture") or None
    return None


def check_siblings(files: CallerFiles, directory: str, name: str, dest: str) -> None:
    """Refuse when another tarball of the same name would make sbuild's choice a matter of readdir order."""
    try:
        entries = files.listdir(directory)
    except OSError as e:
        raise BadInput(f"{directory}: {e.strerror}") from None
    pattern = re.compile(re.escape(name) + r"\.t.+")
    others = sorted(e for e in entries if pattern.fullmatch(e) and e != os.path.basename(dest))
    if others:
        raise Conflict(
            f"{directory} already has {others[0]} for {name}: sbuild would take either one; "
            f"remove it, or publish with the same compression"
        )


def sweep_temporaries(files: CallerFiles, directory: str, dest: str) -> None:
    """Remove temporary files of *dest* whose writer died (a publish killed half-way)."""
    prefix = f".{os.path.basename(dest)}.tmp-"
    try:
        entries = files.listdir(directory)
    except OSError:
        return
    for entry in entries:
        if not entry.startswith(prefix):
            continue
        pid = entry[len(prefix) :].partition("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid() or os.path.exists(f"/proc/{pid}"):
            continue  # not one of ours, or its writer may still run
        try:
            files.unlink(os.path.join(directory, entry))
        except OSError:
            pass


def _write(ctx: Context, tree: str, dest: str, compressor: list[str] | None, files: CallerFiles) -> int:
    """Stream *tree* as tar (through *compressor*) into a new file and rename it over *dest*; its size."""
    directory = os.path.dirname(dest)
    sweep_temporaries(files, directory, dest)
    tmp: str | None = temp_name(dest)
    assert tmp is not None
    try:
        fd = files.create(tmp, MODE)
    except OSError as e:
        raise BadInput(f"{dest}: {e.strerror}") from None
    errs: list[IO[bytes]] = []
    tar: subprocess.Popen[bytes] | None = None
    squeeze: subprocess.Popen[bytes] | None = None
    try:
        os.fchmod(fd, MODE)  # whatever the caller's umask
        errs.append(tempfile.TemporaryFile())  # noqa: SIM115 - closed below
        tar = programs.popen(
            [*TAR_CREATE, "--exclude=./dev/*", f"--directory={tree}", "."],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errs[0],
        )
        sink = fd
        if compressor is not None:
            errs.append(tempfile.TemporaryFile())  # noqa: SIM115 - closed below
            squeeze = programs.popen(compressor, stdin=subprocess.PIPE, stdout=fd, stderr=errs[1])
            assert squeeze.stdin is not None
            sink = squeeze.stdin.fileno()
        _pump(ctx, tar, sink, dest)
        assert tar.stdout is not None
        tar.stdout.close()
        if squeeze is not None and squeeze.stdin is not None:
            squeeze.stdin.close()
        for proc, err in ((squeeze, errs[-1]), (tar, errs[0])):
            if proc is not None and proc.wait() != 0:
                err.seek(0)
                raise SystemFailure(
                    programs.failure_line(proc.args, proc.returncode, err.read(), f"publishing {dest}")  # type: ignore[arg-type]
                )
        try:
            os.fsync(fd)
        except OSError as e:
            raise SystemFailure(f"writing {dest}: {e.strerror}") from None
        faults.crashpoint("publish", "written")
        size = os.fstat(fd).st_size
        try:
            files.rename(tmp, dest, replace=True)
            tmp = None
        except OSError as e:
            raise SystemFailure(f"writing {dest}: {e.strerror}") from None
        fsync_dir(directory)
        ctx.progress(1.0, f"published {os.path.basename(dest)}")
        return size
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
        os.close(fd)
        if tmp is not None:
            try:
                files.unlink(tmp)
            except FileNotFoundError:
                pass


def _pump(ctx: Context, tar: subprocess.Popen[bytes], sink: int, dest: str) -> int:
    """Copy tar's output to *sink*; stops early when the reader of *sink* is gone (its status says why)."""
    assert tar.stdout is not None
    source = tar.stdout.fileno()
    total = 0
    name = os.path.basename(dest)
    while chunk := os.read(source, 1 << 20):
        view = memoryview(chunk)
        while view:
            try:
                written = os.write(sink, view)
            except BrokenPipeError:
                return total
            except OSError as e:
                raise SystemFailure(f"writing {dest}: {e.strerror}") from None
            view = view[written:]
        if total == 0:
            ctx.progress(None, f"publishing {name}")
        total += len(chunk)
        if total >= 8 << 20:
            faults.crashpoint("publish", "streaming")  # part of the data written, the old tarball in place
    return total
