"""A package cache shared by the sessions of one suite and architecture: apt downloads once per host.

``<state>/package-cache/<suite>-<arch>/debs/`` holds .debs, root's, never
written in place. A session of a Debian image (image.yaml names its ``suite``
and ``architecture``; ``package-cache: false`` turns it off) gets at its
``/var/cache/apt/archives`` an overlay of its own:

- the lower is ``sessions/<id>/lower``, hard links to the cache's files made
  at begin and never changed while mounted (overlayfs forbids changing a
  lower under a mount), so apt finds every cached .deb and downloads only
  the rest;
- the upper and work directories are ``sessions/<id>/upper`` and ``work``:
  what apt downloads (and any change to a cached file, copied up) stays
  the session's.

When the session ends, each new .deb in its upper is copied into the cache
only if its SHA-256 is the one the image's own apt lists give for that file
name (``var/lib/apt/lists/*_Packages`` in the generation's layers, which only
maintenance sessions write and apt verified against the archive's signed
Release files); the hash is taken of the bytes copied, so nothing a session
changes afterwards counts. A file a session's root planted under any name is
therefore never offered to another session. The cache is a separate mount,
never part of the session's own tree, so no promote can carry it into a
generation. Only layered backends (overlay, dir) have lists readable without
a mount; other backends' sessions do without the cache.
"""

from __future__ import annotations

import os
import stat

from .backends.overlayfs import mount_overlay
from .fsutil import ensure_dir, remove_tree
from .records import Session
from .rootfs import Root, fd_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .store import Store

TARGET = "var/cache/apt/archives"
LISTS = "var/lib/apt/lists"
_CHUNK = 1 << 20
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.+~%_-")


def is_deb_name(name: str) -> bool:
    """What apt names a downloaded package: ``name_version_arch.deb`` (':' of an epoch as ``%3a``)."""
    return (
        6 <= len(name) <= 255 and name.endswith(".deb") and name[0].isalnum() and name.isascii()
        and set(name) <= _NAME_CHARS
    )  # fmt: skip


def key(suite: str | None, architecture: str | None) -> str | None:
    """The cache a session of *suite* and *architecture* shares (None: unknown, no cache)."""
    if not suite or not architecture:
        return None
    return f"{suite}-{architecture}"


def root_dir(store: Store) -> str:
    return os.path.join(store.root, "package-cache")


def cache_dir(store: Store, name: str) -> str:
    return os.path.join(root_dir(store), name)


def session_dir(store: Store, session: Session) -> str:
    assert session.package_cache is not None
    return os.path.join(cache_dir(store, session.package_cache), "sessions", session.id)


def attach(store: Store, session: Session) -> bool:
    """Mount the cache at the session's ``/var/cache/apt/archives`` (if the image has one); True if mounted.

    Called after the session's root is mounted and set up; tearing the
    session down unmounts it with everything else below the root. Raises
    OSError or SystemFailure (the session's own layers removed) if it cannot.
    """
    if session.package_cache is None:
        return False
    with Root(session.mountpoint) as root:
        try:
            fd = root.dir_fd(TARGET, create=False)  # resolved inside the root, as the chroot would
        except OSError:
            return False  # not a Debian tree: nothing to share
        try:
            st, top = os.fstat(fd), os.fstat(root.fd)
            if (st.st_dev, st.st_ino) == (top.st_dev, top.st_ino):
                return False  # a link to the root itself: never mounted over
            _mount(store, session, fd)
        finally:
            os.close(fd)
    return True


def _mount(store: Store, session: Session, fd: int) -> None:
    """Make the session's layers (or keep them, on a remount) and mount them at the directory *fd*."""
    assert session.package_cache is not None
    base = cache_dir(store, session.package_cache)
    debs = os.path.join(base, "debs")
    ensure_dir(root_dir(store), 0o755)
    ensure_dir(base, 0o755)
    ensure_dir(debs, 0o755)
    ensure_dir(os.path.join(base, "sessions"), 0o700)
    mine = session_dir(store, session)
    lower, upper, work = (os.path.join(mine, d) for d in ("lower", "upper", "work"))
    if not os.path.isdir(upper):  # a remount (recover) keeps the session's own layers
        if os.path.lexists(mine):
            remove_tree(mine)
        os.mkdir(mine, 0o700)
        os.mkdir(lower, 0o755)
        _link_all(debs, lower)
        os.mkdir(upper, 0o755)
        os.mkdir(work, 0o700)
    try:
        mount_overlay(fd_path(fd), [lower], upper, work, private=False)  # below the private session root
    except BaseException:
        remove_tree(mine)
        raise


def _link_all(debs: str, lower: str) -> None:
    for entry in os.scandir(debs):
        if is_deb_name(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.link(entry.path, os.path.join(lower, entry.name))
            except FileNotFoundError:
                pass  # emptied by an administrator meanwhile


def detach(store: Store, session: Session) -> list[str]:
    """After the session is unmounted: keep its verified new .debs in the cache, remove its layers.

    Returns the names of the .debs added to the cache.
    """
    if session.package_cache is None:
        return []
    mine = session_dir(store, session)
    if not os.path.isdir(mine):
        return []
    added: list[str] = []
    try:
        added = _harvest(store, session, os.path.join(mine, "upper"))
    except OSError:
        pass  # a cache not filled this time costs a download later, nothing else
    remove_tree(mine)  # never crosses a mount (invariant 3)
    return added


def _harvest(store: Store, session: Session, upper: str) -> list[str]:
    try:
        names = [e.name for e in os.scandir(upper) if is_deb_name(e.name) and e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    assert session.package_cache is not None
    debs = os.path.join(cache_dir(store, session.package_cache), "debs")
    names = [n for n in names if not os.path.lexists(os.path.join(debs, n))]
    if not names:
        return []
    expected = trusted_hashes(session.lowers, set(names))
    added = []
    for name in sorted(names):
        want = expected.get(name)
        if want is not None and _copy_verified(os.path.join(upper, name), debs, name, want):
            added.append(name)
    return added


def _pool_name(name: str) -> tuple[bytes, bytes] | None:
    """(the pool's file name, the version) of apt's name of a downloaded package.

    apt names it ``package_version_arch.deb`` with the version's ':' as ``%3a``;
    the pool leaves the epoch out of the file name.
    """
    package, _, rest = name[: -len(".deb")].partition("_")
    version, _, arch = rest.rpartition("_")
    if not package or not version or not arch:
        return None
    epoch, quoted, plain = version.partition("%3a")
    if not quoted:
        epoch, plain = "", version
    if "%" in plain:
        return None
    full = f"{epoch}:{plain}" if quoted else plain
    return f"{package}_{plain}_{arch}.deb".encode(), full.encode()


def trusted_hashes(lowers: list[str], names: set[str]) -> dict[str, str]:
    """SHA-256 (hex) of each of *names* (apt's file names) as the apt lists in the layers *lowers* give it.

    A stanza counts only if its ``Filename`` ends in the pool's name of the
    file and its ``Version`` is the version apt's name spells.
    """
    import re

    wanted: dict[bytes, tuple[str, bytes]] = {}
    for n in names:
        pool = _pool_name(n)
        if pool is not None:
            wanted[pool[0]] = (n, pool[1])
    found: dict[str, str] = {}
    pattern = re.compile(rb"^Filename: (?:[^\n]*/)?([^/\n]+\.deb)\n", re.M)
    sha = re.compile(rb"^SHA256: ([0-9a-f]{64})$", re.M)
    version_line = re.compile(rb"^Version: (\S+)$", re.M)
    for layer in lowers:
        lists = os.path.join(layer, LISTS)
        try:
            entries = [
                e for e in os.scandir(lists) if e.name.endswith("_Packages") and e.is_file(follow_symlinks=False)
            ]
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            with open(entry.path, "rb") as f:
                data = f.read()
            for m in pattern.finditer(data):
                entry_of = wanted.get(m.group(1))
                if entry_of is None or entry_of[0] in found:
                    continue
                start = data.rfind(b"\n\n", 0, m.start()) + 1
                end = data.find(b"\n\n", m.end() - 1)  # the Filename line may end the stanza
                stanza = data[start : len(data) if end < 0 else end]
                h, v = sha.search(stanza), version_line.search(stanza)
                if h is not None and v is not None and v.group(1) == entry_of[1]:
                    found[entry_of[0]] = h.group(1).decode()
    return found


def _copy_verified(source: str, debs: str, name: str, want: str) -> bool:
    """Copy *source* into the cache as *name* if the bytes copied hash to *want*; atomically, never replacing."""
    import hashlib

    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    tmp = os.path.join(debs, f".{name}.tmp-{os.getpid()}")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        digest = hashlib.sha256()
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            while chunk := os.read(fd, _CHUNK):
                digest.update(chunk)
                os.write(out, chunk)
            os.fchmod(out, 0o644)
        finally:
            os.close(out)
        if digest.hexdigest() != want:
            return False
        try:
            os.link(tmp, os.path.join(debs, name))  # never over a file another session put there
        except FileExistsError:
            return False
        return True
    finally:
        os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def orphans(store: Store, known: set[str]) -> list[str]:
    """Session directories of every cache whose session has no record (*known*: the ids that do)."""
    out = []
    base = root_dir(store)
    try:
        caches = sorted(os.listdir(base))
    except FileNotFoundError:
        return []
    for name in caches:
        sessions = os.path.join(base, name, "sessions")
        try:
            ids = sorted(os.listdir(sessions))
        except (FileNotFoundError, NotADirectoryError):
            continue
        out += [os.path.join(sessions, sid) for sid in ids if sid not in known]
    return out
