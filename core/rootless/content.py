"""Image content as an ordinary user: import, export, measure and delete inside the namespace.

Files of a rootless image are owned by the user's subordinate ids on disk.
The user cannot create, chown, read every one of or delete such files from
outside, so everything that writes, reads or removes a tree runs as root of
a user namespace mapped through :mod:`core.rootless.ids` (a child made by
:func:`core.rootless.userns.run_mapped`):

- ``--from-tar``: tar unpacks inside, so the archive's ids (0 for root, as in
  sbuild's and mmdebstrap's unshare tarballs) become the mapped ids. Device
  nodes cannot be made in a user namespace and a session has its own /dev
  anyway, so ``./dev/*`` is left out (as sbuild's unshare mode does). Only
  ``user.*`` and ``security.*`` extended attributes are restored (``trusted.*``
  needs the host's root);
- ``--from-dir``: copied inside with ``cp -a``; files owned by subordinate ids
  keep their owner, files owned by the user become root's (a tree a user made
  can hold no root-owned file); a file owned by anyone else cannot be
  represented and is refused, naming it;
- ``--mmdebstrap SUITE``: mmdebstrap's unshare mode runs as root of the
  user's namespace (so it makes its own namespaces inside, with no newuidmap)
  and writes a tarball to a pipe, unpacked there as above; its temporary
  directory is in the private staging directory, so even a killed mmdebstrap
  leaves nothing owned by a subordinate id outside the user's state;
- export: tar reads the generation inside (the layers stacked read-only as a
  ``userxattr`` overlay in a private mount namespace) and writes to a file
  the user opened: the archive carries the ids inside, the file is the user's;
- removal and sizes: :func:`discard` and :func:`tree_size` walk inside.
"""

from __future__ import annotations

import os
import stat
import subprocess

from .. import programs
from ..errors import BadInput, SystemFailure
from . import userns
from .ids import IdMap

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..importers import Source

    Progress = Callable[[float | None, str], None]

#: tar options for unpacking inside a user namespace (compare core.importers.TAR_KEEP).
TAR_KEEP_ROOTLESS = [
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=user.*",
    "--xattrs-include=security.*",
    "--acls",
    "--anchored",
    "--wildcards",
    "--exclude=./dev/*",
    "--exclude=dev/*",
]


def _no_progress(fraction: float | None, message: str) -> None:
    return None


# --- import --------------------------------------------------------------------------


def foreign_file(tree: str, idmap: IdMap) -> tuple[str, int, int] | None:
    """The first file below *tree* whose owner or group the user's namespace cannot represent, if any."""
    stack = [tree]
    while stack:
        where = stack.pop()
        st = os.lstat(where)
        if not idmap.owns_host_uid(st.st_uid) or idmap.inside_gid(st.st_gid) is None:
            return where, st.st_uid, st.st_gid
        if stat.S_ISDIR(st.st_mode):
            try:
                entries = os.scandir(where)
            except PermissionError:
                if st.st_uid != idmap.uid:
                    continue  # a subordinate id's closed directory (/root, say): only those ids made it
                raise BadInput(f"--from-dir: cannot read {where} (permission denied)") from None
            with entries:
                stack.extend(e.path for e in entries)
    return None


def _own_files_to_root(tree: str, idmap: IdMap) -> None:
    """Inside the namespace: files of the user's own uid or gid become root's (0)."""
    uid, gid = idmap.uid, idmap.gid
    stack = [tree]
    while stack:
        where = stack.pop()
        st = os.lstat(where)
        if st.st_uid == uid or st.st_gid == gid:
            mode = stat.S_IMODE(st.st_mode)
            os.lchown(where, 0 if st.st_uid == uid else -1, 0 if st.st_gid == gid else -1)
            if mode & 0o6000 and not stat.S_ISLNK(st.st_mode):
                os.chmod(where, mode)  # chown clears set-id bits
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(where) as entries:
                stack.extend(e.path for e in entries)


def fill(source: Source, dest: str, idmap: IdMap, progress: Progress | None = None, *, tmpdir: str) -> None:
    """Write the tree of *source* into *dest* (not yet existing; its parent is the user's).

    *tmpdir* is a directory of the user's state (a staging directory) for
    helpers' temporary files.
    """
    report = progress or _no_progress
    source.check()
    if source.kind == "dir":
        assert source.path is not None
        _from_dir(source.path, dest, idmap, report)
    elif source.kind == "tar":
        assert source.path is not None
        path = os.path.abspath(source.path)
        if not os.access(path, os.R_OK):
            raise BadInput(f"--from-tar {source.path}: not readable")
        userns.run_mapped(idmap, lambda: _unpack_inside(path, dest), progress=report)
    else:
        _from_mmdebstrap(source, dest, idmap, report, tmpdir)


def _unpack_inside(path: str, dest: str) -> None:
    from ..importers import _from_tar

    _from_tar(path, dest, userns.report, options=TAR_KEEP_ROOTLESS)


def _from_dir(path: str, dest: str, idmap: IdMap, progress: Progress) -> None:
    progress(None, f"checking owners in {path}")
    foreign = foreign_file(path, idmap)
    if foreign is not None:
        where, uid, gid = foreign
        raise BadInput(
            f"--from-dir: {where} is owned by {uid}:{gid}, which is neither yours nor one of your "
            "subordinate ids: a rootless image cannot hold it (use a tarball, which carries ids)"
        )

    def copy() -> None:
        userns.report(None, f"copying {path}")
        programs.copy_tree(path, dest)
        _own_files_to_root(dest, idmap)

    userns.run_mapped(idmap, copy, progress=progress)
    progress(1.0, f"copied {path}")


def mmdebstrap_argv(source: Source) -> list[str]:
    argv = ["mmdebstrap", "--mode=unshare", "--format=tar"]
    if source.variant:
        argv.append(f"--variant={source.variant}")
    if source.arch:
        argv.append(f"--architectures={source.arch}")
    if source.include:
        argv.append(f"--include={source.include}")
    argv += [str(source.suite), "-"]
    if source.mirror:
        argv.append(source.mirror)
    return argv


def _from_mmdebstrap(source: Source, dest: str, idmap: IdMap, progress: Progress, tmpdir: str) -> None:
    """mmdebstrap's unshare mode, run as root of the user's namespace, piped into tar there.

    Run as root, mmdebstrap needs no newuidmap of its own: its namespaces are
    made inside the user's, so the tarball carries exactly the ids the image
    uses, and its temporary directory can live in the user's private staging
    directory (mmdebstrap run by the user directly would need one its
    subordinate root can reach from outside, like /tmp, and a killed one
    would leave subordinate-owned files there).
    """
    argv = mmdebstrap_argv(source)
    progress(None, f"running mmdebstrap {source.suite}")

    from ..importers import MmdebstrapProgress

    def inside() -> None:
        env = {**os.environ, "TMPDIR": tmpdir}
        mm = programs.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert mm.stdout is not None and mm.stderr is not None
        os.mkdir(dest, 0o755)
        tar_argv = [
            "tar", "--extract", "--file=-", f"--directory={dest}", "--same-owner", "--preserve-permissions",
            *TAR_KEEP_ROOTLESS,
        ]  # fmt: skip
        import tempfile

        with tempfile.TemporaryFile(dir=tmpdir) as tar_err:
            tar = programs.popen(tar_argv, stdin=mm.stdout, stdout=subprocess.DEVNULL, stderr=tar_err)
            mm.stdout.close()  # tar reads it now
            tail: list[str] = []
            stages = MmdebstrapProgress(userns.report)
            for raw in mm.stderr:
                line = raw.decode(errors="replace").rstrip()
                if line:
                    tail = [*tail[-19:], line]
                    stages.line(line)
            code = mm.wait()
            tar_code = tar.wait()
            if code != 0:  # its failure explains the truncated stream tar saw
                raise SystemFailure(programs.failure_line(argv, code, "\n".join(tail).encode(), "mmdebstrap"))
            if tar_code != 0:
                tar_err.seek(0)
                raise SystemFailure(tar_failure(tar_argv, tar_code, tar_err.read(), "unpacking mmdebstrap's tarball"))

    userns.run_mapped(idmap, inside, progress=progress)
    progress(1.0, f"mmdebstrap {source.suite} done")


def tar_failure(argv: list[str], code: int, stderr: bytes, what: str) -> str:
    """One line for a failed tar: its first complaint, not its closing "Exiting with failure status"."""
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    useful = [ln for ln in lines if "Exiting with failure status" not in ln]
    detail = f": {useful[0]}" if useful else ""
    more = f" (and {len(useful) - 1} more)" if len(useful) > 1 else ""
    return f"{what} failed (exit {code}){detail}{more}"


# --- export -------------------------------------------------------------------------


def _view(lowers: list[str], scratch: str) -> str:
    """Inside a fresh mount namespace: the generation made of *lowers* (topmost first), read-only."""
    from .. import syscalls
    from .setup import OVERLAY_OPTIONS

    if len(lowers) == 1:
        return lowers[0]
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_SLAVE)
    data = "lowerdir=" + ":".join(lowers) + "," + OVERLAY_OPTIONS
    syscalls.mount("overlay", scratch, "overlay", syscalls.MS_RDONLY, data)
    return scratch


def export_tree(
    lowers: list[str],
    scratch: str,
    out_fd: int,
    compressor: list[str] | None,
    idmap: IdMap,
    *,
    without_dev: bool = False,
) -> None:
    """Write the generation made of *lowers* (topmost first) as a tar stream to *out_fd*.

    tar runs inside a user and mount namespace: a stack of layers is mounted
    read-only (userxattr) on *scratch* there, never in the host's mount table.
    *without_dev* leaves out what ``/dev`` holds (a tarball for sbuild's
    unshare mode, which makes its own /dev).
    """
    from ..exports import TAR_CREATE

    def inside() -> None:
        tree = _view(lowers, scratch)
        dev = ["--exclude=./dev/*"] if without_dev else []
        create = [*TAR_CREATE, "--xattrs-exclude=user.overlay.*", *dev, f"--directory={tree}", "."]
        if compressor is None:
            programs.run(create, stdout=out_fd, what="tar")
            return
        tar = programs.popen(create, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            programs.run(compressor, stdin=tar.stdout, stdout=out_fd, what=compressor[0])
        finally:
            tar.stdout.close()
            _, tar_err = tar.communicate()
        if tar.returncode != 0:
            raise SystemFailure(programs.failure_line(create, tar.returncode, tar_err, "tar"))

    userns.run_mapped(idmap, inside, flags=userns.CLONE_NEWNS, keep=(out_fd,))


def write_tarball(
    dest: str,
    lowers: list[str],
    scratch: str,
    compressor: list[str] | None,
    idmap: IdMap,
    *,
    without_dev: bool = False,
    mode: int | None = None,
) -> int:
    """:func:`export_tree` into *dest*, atomically: a new file beside it, synced, renamed over it; its size.

    *scratch* (made and removed here) is where the layers are mounted inside;
    *mode*, if given, is the file's mode whatever the umask.
    """
    from ..fsutil import fsync_dir, temp_name

    tmp = temp_name(dest)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    done = False
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        os.mkdir(scratch, 0o700)
        try:
            export_tree(lowers, scratch, fd, compressor, idmap, without_dev=without_dev)
        finally:
            os.rmdir(scratch)
        os.fsync(fd)
        size = os.fstat(fd).st_size
        os.replace(tmp, dest)
        done = True
        fsync_dir(os.path.dirname(dest))
        return size
    finally:
        os.close(fd)
        if not done:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def sbuild_name(lowers: list[str], scratch: str, idmap: IdMap, image: str, number: int) -> str:
    """``SUITE-ARCH`` of the generation made of *lowers*, read inside (core.publish.sbuild_name)."""
    from ..publish import sbuild_name as name_of

    def inside() -> str:
        return name_of(_view(lowers, scratch), image, number)

    os.mkdir(scratch, 0o700)  # where the layers are mounted inside; made and removed here
    try:
        return str(userns.run_mapped(idmap, inside, flags=userns.CLONE_NEWNS))
    finally:
        os.rmdir(scratch)


# --- trees ----------------------------------------------------------------------------


def discard(path: str, idmap: IdMap) -> None:
    """Remove *path* (a clone, a generation, a staging or trash entry) as root of the namespace.

    The removal never crosses a mount (core.fsutil.remove_tree); nothing of a
    rootless session is ever mounted in the host's mount table anyway.
    """
    if not os.path.lexists(path):
        return
    from ..fsutil import remove_tree

    userns.run_mapped(idmap, lambda: remove_tree(path))


def tree_size(path: str, idmap: IdMap) -> int:
    """Bytes the tree at *path* takes, measured inside (the user may not enter every directory)."""
    from ..fsutil import tree_size as size

    return int(userns.run_mapped(idmap, lambda: size(path)))
