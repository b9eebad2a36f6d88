"""``image push`` and ``image pull``: copy the generations another host lacks, with their history.

Who does what
-------------
The *receiver* describes what it has (:func:`inventory`: every complete
generation with its identity, its current one, what it can receive). The
*sender* decides (:func:`plan`): the newest generation of its current
chain that the receiver also has is the *base*; the generations after it
are sent, oldest first, each as the smallest stream that rebuilds it on top
of the one before. The receiver (:func:`receive`) builds each generation in
a staging directory of its own under a transaction lock, exactly like a
promote, and commits all of them with promote's steps (metadata written
durably, staging directory renamed into ``generations/<n>``, ``current``
switched) under the image lock, after the same compare-and-swap: its
``current`` must still be the generation the sender planned against.
Anything else, at any moment, leaves the receiver as it was; what a killed
transfer left in staging, recover removes like a killed promote's.

A generation's identity is the ``identity`` its record carries (every
received generation has one) or, for generations made here, a hash of its
record: number, parent, time, author, message, session, transaction and
size. Numbers travel with the history: a received generation keeps its
number, parent, author, message and time. A receiver whose current
generation is not in the sender's history (it promoted on its own), or that
has another generation under a number the sender needs, refuses (exit 3).

Streams
-------
What a generation's stream holds, by ``kind``:

``btrfs``  ``btrfs send -p`` of its read-only subvolume against the one before
           (both sides btrfs, the receiver's base received from the same
           subvolume); ``btrfs send`` without a parent for the first one.
``zfs``    ``zfs send -i`` against the snapshot before (the receiver's base has
           the same snapshot guid), a full ``zfs send`` for the first one.
``layer``  an overlay generation standing on the one before: a tar of its
           layer, whiteouts, opaque directories and redirects included.
``delta``  the difference between the two trees, as an overlay layer: a tar of
           what was added or changed (files compared by type, mode, owner,
           size, modification time, link target, device and extended
           attributes) and a list of whiteouts for what was removed. Used for
           flattened generations, dir, squashfs, erofs and across backends.
``full``   a tar of the whole tree: the first generation of an image the
           receiver does not have.

The receiver stores ``layer`` and ``delta`` streams as the new generation's
layer on an overlay image; other backends (and an overlay image past its
``overlay-max-depth``) get the tree the layer makes over the previous
generation, copied into a new generation through the backend.

The wire format is frames: one type byte, a 4-byte length, the payload.
``H`` header (JSON), then per generation ``G`` (JSON: number and kind),
``W`` whiteouts (NUL-separated paths), ``D`` data, ``E`` (JSON: the sha256 of
the data, verified before the generation is kept), and at the end ``Z``:
the sha256 of every byte before it. A stream that ends early, a digest that
does not match or a frame out of place aborts the receive.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import IO, TYPE_CHECKING, Any

from . import backends, faults, generations, images, leases, mounts, pins, policy
from .backends.overlayfs import mount_overlay
from .errors import BadInput, ConfigError, Conflict, NotFound, RoostError, SystemFailure
from .fsutil import atomic_write, fsync_dir, remove_tree, sync_filesystem, tree_size
from .generations import GenerationMeta
from .importers import TAR_KEEP
from .names import check_object_name, is_valid_name
from .store import new_tx

if TYPE_CHECKING:
    from collections.abc import Callable

    from .context import Context
    from .hosts import Host

MAGIC = b"roost image stream 1\n"
CHUNK = 1 << 20
MAX_FRAME = 64 << 20
#: How a generation travels when not in its backend's own stream (whose kind is the backend's name).
TREE_KINDS = ("layer", "delta", "full")

#: tar options of every stream: POSIX tar, sparse files, owners by number, xattrs, ACLs.
TAR_CREATE = ["tar", "--create", "--file=-", "--format=posix", "--sparse", *TAR_KEEP]
TAR_EXTRACT = ["tar", "--extract", "--file=-", "--same-owner", "--preserve-permissions", *TAR_KEEP]
#: An overlay layer's origin handles name inodes of this host's lower layers: meaningless elsewhere.
LAYER_EXCLUDES = ["--xattrs-exclude=trusted.overlay.origin"]

_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08


class StreamError(SystemFailure):
    """The stream ended early or is malformed: the sender (or the connection) went away."""


# --- identity --------------------------------------------------------------------------


def identity(meta: GenerationMeta) -> str:
    """A generation's name across hosts: its recorded identity, else a hash of its record."""
    if meta.identity:
        return meta.identity
    fields = [meta.generation, meta.parent, meta.created, meta.author, meta.message, meta.session, meta.tx, meta.size]
    return hashlib.sha256(json.dumps(fields, separators=(",", ":")).encode()).hexdigest()[:32]


# --- what a host has ---------------------------------------------------------------------


def inventory(ctx: Context, image: str) -> dict[str, Any]:
    """What this host has of *image* and what it can receive (read by the sender's :func:`plan`)."""
    check_object_name(image, "image name")
    site = ctx.site()
    available = [name for name, why, _ in backends.report(site) if why is None]
    streams = {b.name: s for b in backends.all() if (s := b.native(site)) is not None}
    out: dict[str, Any] = {
        "version": 1,
        "image": image,
        "exists": False,
        "backends": available,
        "default_backend": images.default_backend(ctx),
        "native": {name: name in available and s.receivable() for name, s in streams.items()},
    }
    if not images.exists(ctx, image):
        ctx.authorize(policy.HOST_VIEW)
        return out
    config = images.authorize(ctx, policy.IMAGE_VIEW, image)
    store = ctx.store
    cur = generations.current(store, image)
    stream = streams.get(config.backend)
    listed = []
    cur_identity = None
    for n in generations.complete(store, image):
        try:
            meta = generations.read_meta(store, image, n)
        except RoostError:
            continue
        entry: dict[str, Any] = {"generation": n, "identity": identity(meta), "parent": meta.parent}
        native = _native_of(stream, store.generation_dir(image, n)) if stream is not None else None
        if native is not None:
            entry["native"] = native
        listed.append(entry)
        if n == cur:
            cur_identity = entry["identity"]
    out.update(
        exists=True,
        backend=config.backend,
        current=cur,
        current_identity=cur_identity,
        generations=listed,
    )
    return out


def _native_of(stream: backends.NativeStream, directory: str) -> dict[str, str] | None:
    """The file system's own name of a generation (a btrfs subvolume's uuids, a zfs snapshot's guid)."""
    try:
        return stream.identity(directory)
    except (OSError, RoostError):
        return None


# --- the sender's plan ---------------------------------------------------------------------


class Plan:
    """What to send: the base both sides have, the generations after it, how each travels."""

    def __init__(self, image: str, backend: str, target: str) -> None:
        self.image = image
        self.backend = backend  # the sender's
        self.target = target  # the receiver's (for a new image: the one it gets)
        self.base: int | None = None
        self.expected: str | None = None  # the receiver's current identity (None: it has no such image)
        self.sends: list[int] = []
        self.kinds: dict[int, str] = {}
        self.metas: dict[int, GenerationMeta] = {}
        self.current = 0
        self.switch_to: int | None = None  # set when the receiver has everything but another current
        self.native_base: dict[str, str] = {}  # the receiver's base as its file system names it

    @property
    def nothing(self) -> bool:
        return not self.sends and self.switch_to is None


def plan(ctx: Context, image: str, theirs: dict[str, Any], *, backend: str | None = None, peer: str = "") -> Plan:
    """Decide what *image* needs on the receiver described by *theirs*; Conflict when it is not a fast-forward."""
    config = images.require(ctx, image)
    store = ctx.store
    peer = peer or "the other host"
    if not isinstance(theirs, dict) or theirs.get("version") != 1:
        raise BadInput(f"{peer} described its image in a form this roost does not know")
    cur = generations.current(store, image)
    done = set(generations.complete(store, image))
    chain: list[int] = []  # newest first, following parents while they are here
    metas: dict[int, GenerationMeta] = {}
    n: int | None = cur
    while n is not None and n in done and n not in metas:
        metas[n] = generations.read_meta(store, image, n)
        chain.append(n)
        n = metas[n].parent
    ids = {n: identity(metas[n]) for n in chain}
    if not theirs.get("exists"):
        known = list(theirs.get("backends") or [])
        if backend is not None:
            if backend not in known:
                raise BadInput(f"{peer} cannot keep images in the {backend} backend (it has {', '.join(known)})")
            target = backend
        else:
            target = config.backend if config.backend in known else str(theirs.get("default_backend") or "overlay")
        p = Plan(image, config.backend, target)
        p.sends = list(reversed(chain))
    else:
        target = str(theirs.get("backend"))
        if backend is not None and backend != target:
            raise BadInput(f"--backend is for new images: {image} on {peer} uses {target}")
        p = Plan(image, config.backend, target)
        listed = [g for g in theirs.get("generations") or [] if isinstance(g, dict)]
        by_id = {str(g.get("identity")): g for g in listed}
        numbers = {g.get("generation") for g in listed}
        their_current = theirs.get("current_identity")
        if their_current not in ids.values():
            raise Conflict(
                f"{image} on {peer} is at generation {theirs.get('current')}, which is not in this host's history "
                f"of {image} (it changed on its own): not a fast-forward, nothing sent"
            )
        base = next(n for n in chain if ids[n] in by_id)
        if by_id[ids[base]].get("generation") != base:
            raise Conflict(f"{peer} keeps generation {base} of {image} under another number: nothing sent")
        p.base = base
        p.expected = str(their_current)
        p.sends = [n for n in reversed(chain) if n > base]
        for n in p.sends:
            if n in numbers:
                raise Conflict(f"{peer} has another generation {n} of {image}: not a fast-forward, nothing sent")
        if not p.sends and their_current != ids[cur]:
            p.switch_to = cur
        p.native_base = dict(by_id[ids[base]].get("native") or {})
    p.metas = metas
    p.current = cur
    _choose_kinds(ctx, p, theirs)
    return p


def _choose_kinds(ctx: Context, p: Plan, theirs: dict[str, Any]) -> None:
    native = theirs.get("native") or {}
    kind: str | None = None
    stream = backends.get(p.backend).native(ctx.site())
    if p.sends and p.backend == p.target and stream is not None and native.get(p.backend):
        if p.base is None:
            kind = stream.kind
        else:
            mine = _native_of(stream, ctx.store.generation_dir(p.image, p.base))
            if mine and p.native_base and stream.parent_matches(mine, p.native_base):
                kind = stream.kind
    previous = p.base
    for n in p.sends:
        meta = p.metas[n]
        if kind is not None:
            p.kinds[n] = kind
        elif previous is None:
            p.kinds[n] = "full"
        elif (
            p.backend == "overlay"
            and not meta.flattened
            and meta.parent == previous
            and tuple(meta.stack) == (n, *p.metas[previous].stack)
        ):
            p.kinds[n] = "layer"
        else:
            p.kinds[n] = "delta"
        previous = n


# --- frames ------------------------------------------------------------------------------------


class _Writer:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sha = hashlib.sha256()
        self.bytes = 0

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.bytes += len(data)

    def frame(self, kind: bytes, payload: bytes) -> None:
        data = struct.pack(">cI", kind, len(payload)) + payload
        self.sha.update(data)
        self._write(data)

    def json(self, kind: bytes, value: Any) -> None:
        self.frame(kind, json.dumps(value, separators=(",", ":")).encode())

    def start(self) -> None:
        self.sha.update(MAGIC)
        self._write(MAGIC)

    def end(self) -> None:
        digest = self.sha.hexdigest()
        self._write(struct.pack(">cI", b"Z", len(digest)) + digest.encode())


class _Reader:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sha = hashlib.sha256()
        self.bytes = 0

    def exactly(self, size: int) -> bytes:
        parts = []
        left = size
        while left:
            chunk = os.read(self.fd, min(left, CHUNK))
            if not chunk:
                raise StreamError("the image stream ended early (the sender or the connection went away)")
            parts.append(chunk)
            left -= len(chunk)
        self.bytes += size
        return b"".join(parts)

    def start(self) -> None:
        magic = self.exactly(len(MAGIC))
        if magic != MAGIC:
            raise StreamError("not an image stream of this roost version")
        self.sha.update(magic)

    def frame(self) -> tuple[bytes, bytes]:
        head = self.exactly(5)
        kind, size = struct.unpack(">cI", head)
        if size > MAX_FRAME:
            raise StreamError("malformed image stream (a frame is too large)")
        payload = self.exactly(size)
        if kind != b"Z":
            self.sha.update(head)
            self.sha.update(payload)
        return kind, payload

    def expect(self, kind: bytes) -> bytes:
        got, payload = self.frame()
        if got != kind:
            raise StreamError(f"malformed image stream (frame {got!r} where {kind!r} belongs)")
        return payload

    def json(self, kind: bytes) -> Any:
        try:
            return json.loads(self.expect(kind))
        except ValueError:
            raise StreamError("malformed image stream (bad JSON)") from None


# --- helpers around the engine ----------------------------------------------------------------


@contextmanager
def _scratch(ctx: Context, what: str) -> Iterator[str]:
    """An empty directory to mount on, ``<run>/mnt/.stage/<tx>`` under its transaction's lock (recover knows it)."""
    tx = new_tx()
    lock = ctx.tx_lock(tx, what)
    path = os.path.join(ctx.store.stage_dir, tx)
    try:
        os.mkdir(path, 0o700)
        try:
            yield path
        finally:
            mounts.unmount_tree(path, force=True)
            os.rmdir(path)
    finally:
        lock.release(remove=True)


@contextmanager
def _view(ctx: Context, image: str, backend: backends.Backend, number: int, what: str) -> Iterator[str]:
    """The complete tree of generation *number* of this host's *image*, read-only."""
    store = ctx.store
    stack = list(generations.read_meta(store, image, number).stack)
    lowers = backend.lowers(store.generations_dir(image), stack)
    with _scratch(ctx, what) as scratch, backend.view(store.generation_dir(image, number), lowers, scratch) as tree:
        yield tree


class _Helper:
    """A helper program (tar, btrfs, zfs) whose stderr goes to a file, so it never blocks on it."""

    def __init__(self, argv: list[str], what: str, **kwargs: Any) -> None:
        from . import programs

        self.what = what
        self.err: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        self.proc = programs.popen(argv, stderr=self.err, **kwargs)

    def finish(self) -> None:
        from . import programs

        code = self.proc.wait()
        self.err.seek(0)
        err = self.err.read()
        self.err.close()
        if code != 0:
            raise SystemFailure(programs.failure_line(self.proc.args, code, err, self.what))  # type: ignore[arg-type]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.err.closed:
            self.err.close()


# --- send -----------------------------------------------------------------------------------


def check_send(ctx: Context, image: str) -> None:
    """May the caller send all of *image* to another host? As for an export: its root-users."""
    images.authorize(ctx, policy.IMAGE_EXPORT, image)


def send(
    ctx: Context,
    image: str,
    theirs: dict[str, Any] | Callable[[], dict[str, Any]],
    out: int,
    *,
    backend: str | None = None,
    peer: str = "",
    on_plan: Callable[[Plan], None] | None = None,
) -> dict[str, Any]:
    """Write the stream that brings the receiver described by *theirs* to this host's current *image*.

    *theirs* may be a function that reads the receiver's inventory: it is called
    once the caller may send. Raises :class:`Conflict` (nothing written) when
    that is not a fast-forward; ``BrokenPipeError`` when the reader goes away.
    """
    import socket

    ctx.require_privileged("image send")
    check_send(ctx, image)
    if callable(theirs):
        theirs = theirs()
    ctx.ready()
    p = plan(ctx, image, theirs, backend=backend, peer=peer)
    if on_plan is not None:
        on_plan(p)
    config = images.require(ctx, image)
    mine = backends.get(p.backend)
    writer = _Writer(out)
    started = time.monotonic()
    with ExitStack() as stack:
        for n in sorted({*p.sends, *([p.base] if p.base is not None else [])}):
            stack.callback(pins.pin(ctx, image, n, f"send {image} {n}").release, remove=True)
        header = {
            "version": 1,
            "image": image,
            "from": socket.gethostname(),
            "config": config.to_yaml_dict(),
            "backend": p.target,
            "expected": p.expected,
            "base": p.base,
            "current": p.current,
            "switch": p.switch_to,
            "switch_identity": identity(p.metas[p.switch_to]) if p.switch_to is not None else None,
            "generations": [_meta_json(p.metas[n], p.kinds[n]) for n in p.sends],
        }
        writer.start()
        writer.json(b"H", header)
        previous = p.base
        for n in p.sends:
            writer.json(b"G", {"generation": n, "kind": p.kinds[n]})
            ctx.progress(None, f"sending generation {n} of {image} ({p.kinds[n]})")
            _send_one(ctx, image, mine, p.kinds[n], n, previous, writer)
            previous = n
        writer.end()
    seconds = time.monotonic() - started
    ctx.journal(
        "image send", image=image, to=peer or None, generations=p.sends or None, base=p.base, bytes=writer.bytes
    )
    return {
        "image": image,
        "generations": p.sends,
        "kinds": {str(n): p.kinds[n] for n in p.sends},
        "base": p.base,
        "current": p.current,
        "bytes": writer.bytes,
        "seconds": round(seconds, 3),
    }


def _meta_json(meta: GenerationMeta, kind: str) -> dict[str, Any]:
    return {
        "generation": meta.generation,
        "parent": meta.parent,
        "created": meta.created,
        "author": meta.author,
        "message": meta.message,
        "session": meta.session,
        "identity": identity(meta),
        "kind": kind,
    }


def _send_one(
    ctx: Context,
    image: str,
    backend: backends.Backend,
    kind: str,
    number: int,
    previous: int | None,
    writer: _Writer,
) -> None:
    store = ctx.store
    gen_dir = store.generation_dir(image, number)
    prev_dir = store.generation_dir(image, previous) if previous is not None else None
    what = f"send {image} {number}"
    if kind not in TREE_KINDS:  # the backend's own stream (checked by the plan)
        stream = backend.native(ctx.site())
        if stream is None or stream.kind != kind:
            raise SystemFailure(f"backend {backend.name} has no {kind} stream")
        argv, program, edit = stream.send(gen_dir, prev_dir)
        _pump_out(writer, argv, program, edit=edit)
    elif kind == "layer":
        layer = os.path.join(gen_dir, "layer")
        _pump_out(writer, [*TAR_CREATE, *LAYER_EXCLUDES, f"--directory={layer}", "."], "tar of the layer")
    elif kind == "full":
        with _view(ctx, image, backend, number, what) as tree:
            _pump_out(writer, [*TAR_CREATE, f"--directory={tree}", "."], "tar of the generation")
    else:
        assert previous is not None
        with (
            _view(ctx, image, backend, previous, what) as before,
            _view(ctx, image, backend, number, what) as after,
            tempfile.TemporaryFile() as names,
        ):
            removed = tree_delta(before, after, names)
            for i in range(0, len(removed), 4096):
                writer.frame(b"W", b"\x00".join(removed[i : i + 4096]))
            names.seek(0)
            argv = [
                *TAR_CREATE,
                f"--directory={after}",
                "--no-recursion",
                "--null",
                "--verbatim-files-from",
                "--files-from=-",
            ]
            _pump_out(writer, argv, "tar of the changes", stdin=names)


def _pump_out(
    writer: _Writer,
    argv: list[str],
    what: str,
    stdin: Any = subprocess.DEVNULL,
    edit: backends.StreamEdit | None = None,
) -> None:
    """Run *argv*, framing its standard output as data (through *edit*, if given); then its digest."""
    helper = _Helper(argv, what, stdin=stdin, stdout=subprocess.PIPE)
    sha = hashlib.sha256()
    total = 0

    def put(data: bytes) -> None:
        nonlocal total
        if data:
            sha.update(data)
            total += len(data)
            writer.frame(b"D", data)

    try:
        assert helper.proc.stdout is not None
        source = helper.proc.stdout.fileno()
        while chunk := os.read(source, CHUNK):
            put(edit.feed(chunk) if edit is not None else chunk)
        helper.proc.stdout.close()
        helper.finish()
        if edit is not None:
            put(edit.end())
    finally:
        helper.kill()
    writer.json(b"E", {"sha256": sha.hexdigest(), "bytes": total})


# --- the difference of two trees ---------------------------------------------------------------


def _xattrs(path: bytes) -> list[tuple[str, bytes]]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
    out = []
    for name in sorted(names):
        try:
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return out


def _same(a: bytes, sa: os.stat_result, b: bytes, sb: os.stat_result) -> bool:
    """Whether entry *b* (after) is what *a* (before) was: type, mode, owner, content by size and time, xattrs."""
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return False
    if (sa.st_mode, sa.st_uid, sa.st_gid) != (sb.st_mode, sb.st_uid, sb.st_gid):
        return False
    if sa.st_mtime_ns != sb.st_mtime_ns:
        return False
    mode = sa.st_mode
    if stat.S_ISREG(mode) and sa.st_size != sb.st_size:
        return False
    if stat.S_ISLNK(mode) and os.readlink(a) != os.readlink(b):
        return False
    if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) and sa.st_rdev != sb.st_rdev:
        return False
    return _xattrs(a) == _xattrs(b)


def tree_delta(before: str, after: str, names: IO[bytes]) -> list[bytes]:
    """What turns tree *before* into tree *after*, as an overlay layer would hold it.

    Writes (NUL-separated, in depth-first order: a directory, then all that is
    below it, as tar expects) the paths of *after* that a tar of the layer must
    hold: everything added or changed, the whole of a new directory, and every
    directory above such a path (with its own metadata). Returns the paths
    whose whiteouts the layer needs: entries of *before* gone from *after*.
    Walks both trees once, comparing metadata (like rsync's quick check, a
    file is unchanged when type, mode, owners, size, modification time and
    xattrs are).
    """
    top_a, top_b = os.fsencode(before), os.fsencode(after)
    listed: set[bytes] = set()
    removed: list[bytes] = []

    def put(rel: bytes) -> None:
        listed.add(rel)
        names.write(b"./" + rel + b"\x00" if rel else b".\x00")

    def ensure(rel: bytes) -> None:
        """List *rel*'s parent directories that are not listed yet, top first (they are being walked)."""
        missing = []
        parent = os.path.dirname(rel)
        while parent not in listed:
            missing.append(parent)
            if not parent:
                break
            parent = os.path.dirname(parent)
        for d in reversed(missing):
            put(d)

    def add(rel: bytes) -> None:
        ensure(rel)
        if rel not in listed:
            put(rel)

    def add_tree(rel: bytes) -> None:
        """*rel* and everything below it, depth first."""
        add(rel)
        walk = [iter(sorted(os.listdir(os.path.join(top_b, rel))))]
        where = [rel]
        while walk:
            name = next(walk[-1], None)
            if name is None:
                walk.pop()
                where.pop()
                continue
            child = os.path.join(where[-1], name)
            st = os.lstat(os.path.join(top_b, child))
            if stat.S_ISSOCK(st.st_mode):
                continue  # tar does not keep sockets
            put(child)
            if stat.S_ISDIR(st.st_mode):
                walk.append(iter(sorted(os.listdir(os.path.join(top_b, child)))))
                where.append(child)

    if not _same(top_a, os.lstat(top_a), top_b, os.lstat(top_b)):
        put(b"")

    def level(rel: bytes) -> tuple[bytes, Iterator[bytes], set[bytes], set[bytes]]:
        names_a = set(os.listdir(os.path.join(top_a, rel) if rel else top_a))
        names_b = set(os.listdir(os.path.join(top_b, rel) if rel else top_b))
        return rel, iter(sorted(names_a | names_b)), names_a, names_b

    stack = [level(b"")]
    while stack:
        rel, it, names_a, names_b = stack[-1]
        name = next(it, None)
        if name is None:
            stack.pop()
            continue
        child = os.path.join(rel, name) if rel else name
        pa, pb = os.path.join(top_a, child), os.path.join(top_b, child)
        if name not in names_b:
            ensure(child)
            removed.append(child)
            continue
        sb = os.lstat(pb)
        if stat.S_ISSOCK(sb.st_mode):
            continue
        sa = os.lstat(pa) if name in names_a else None
        if sa is None or stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
            add_tree(child) if stat.S_ISDIR(sb.st_mode) else add(child)
            continue
        if not _same(pa, sa, pb, sb):
            add(child)
        if stat.S_ISDIR(sb.st_mode):
            stack.append(level(child))  # depth first: what is below comes right after the directory
    if b"" not in listed:
        put(b"")  # the root's own metadata always travels (a lone "." at the end sets nothing below it)
    return removed


# --- receive ------------------------------------------------------------------------------------


class _Staged:
    """A generation received into its staging directory, not yet committed."""

    def __init__(self, number: int, directory: str, stack: tuple[int, ...], flattened: bool, size: int) -> None:
        self.number = number
        self.directory = directory
        self.stack = stack
        self.flattened = flattened
        self.size = size


def _check_header(header: Any, image: str) -> dict[str, Any]:
    def bad(why: str) -> StreamError:
        return StreamError(f"malformed image stream header ({why})")

    if not isinstance(header, dict) or header.get("version") != 1:
        raise bad("unknown version")
    if header.get("image") != image:
        raise BadInput(f"the stream holds image {header.get('image')!r}, not {image}")
    gens = header.get("generations")
    if not isinstance(gens, list):
        raise bad("generations")
    previous = header.get("base")
    if previous is not None and (not isinstance(previous, int) or previous < 1):
        raise bad("base")
    for g in gens:
        if not isinstance(g, dict):
            raise bad("generation")
        n = g.get("generation")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or (previous is not None and n <= previous):
            raise bad("generation numbers")
        if g.get("kind") not in (*TREE_KINDS, *_native_kinds()):
            raise bad(f"kind {g.get('kind')!r}")
        parent = g.get("parent")
        if parent is not None and (not isinstance(parent, int) or parent >= n):
            raise bad("parent")
        if g["kind"] in ("layer", "delta") and (previous is None or parent != previous):
            raise bad("parent of an incremental generation")
        for key in ("created", "author", "message", "identity"):
            if not isinstance(g.get(key), str) or len(g[key]) > 4096 or "\x00" in g[key]:
                raise bad(key)
        if g.get("session") is not None and not is_valid_name(g.get("session")):
            raise bad("session")
        previous = n
    for key in ("expected", "switch_identity"):
        if header.get(key) is not None and not isinstance(header.get(key), str):
            raise bad(key)
    if header.get("switch") is not None and (gens or not isinstance(header.get("switch"), int)):
        raise bad("switch")
    if not isinstance(header.get("config"), dict) or not isinstance(header.get("backend"), str):
        raise bad("config")
    return header


def receive(ctx: Context, image: str, inp: int, *, peer: str = "") -> dict[str, Any]:
    """Read an image stream from *inp* and commit what it holds (see the module's description).

    Nothing changes unless the whole stream arrived intact and the
    compare-and-swap holds; a failure at any point removes what was staged.
    """
    ctx.require_privileged("image receive")
    check_receive(ctx, image)  # before a byte is read
    started = time.monotonic()
    reader = _Reader(inp)
    reader.start()
    header = _check_header(reader.json(b"H"), image)
    peer = peer or str(header.get("from") or "")
    exists = images.exists(ctx, image)
    if exists:
        config = images.authorize(ctx, policy.IMAGE_RECEIVE, image)
        if header.get("expected") is None:
            raise Conflict(f"image {image} already exists here, but the sender planned a new one: nothing received")
        changes = bool(header["generations"]) or header.get("switch") is not None
        _check_current(ctx, image, str(header["expected"]), lease=changes)
        backend = backends.get(config.backend)
    else:
        ctx.authorize(policy.IMAGE_CREATE)
        if header.get("expected") is not None:
            raise Conflict(f"image {image} no longer exists here: nothing received")
        config = _new_config(ctx, image, header)
        backend = images.choose_backend(ctx, config.backend)
    ctx.ready()
    store = ctx.store
    max_depth = config.overlay_max_depth or ctx.settings.overlay_max_depth
    staged: list[_Staged] = []
    with ExitStack() as cleanup:
        if exists:
            base = header.get("base")
            if isinstance(base, int):
                cleanup.callback(pins.pin(ctx, image, base, f"receive {image}").release, remove=True)
            root = None
        else:
            root = _new_image_staging(ctx, image, cleanup)
        failed = True
        if root is not None:
            cleanup.callback(_discard, root, failing=lambda: failed)
        try:
            for g in header["generations"]:
                frame = reader.json(b"G")
                if frame != {"generation": g["generation"], "kind": g["kind"]}:
                    raise StreamError("malformed image stream (generations out of order)")
                tx = new_tx()
                if root is None:
                    lock = ctx.lock(store.tx_lock_name(tx), f"receive {image} {g['generation']}")
                    cleanup.callback(lock.release, remove=True)
                    os.makedirs(store.image_staging(image), mode=0o700, exist_ok=True)
                    directory = os.path.join(store.image_staging(image), tx)
                else:
                    directory = os.path.join(root, "generations", str(g["generation"]))
                cleanup.callback(_discard, directory, failing=lambda: failed)
                ctx.progress(None, f"receiving generation {g['generation']} of {image} ({g['kind']})")
                staged.append(
                    _receive_one(ctx, image, backend, g, directory, tx, reader, staged, root, max_depth, header)
                )
            digest = reader.expect(b"Z").decode(errors="replace")
            if digest != reader.sha.hexdigest():
                raise StreamError("the image stream's checksum does not match: nothing received")
            faults.crashpoint("receive", "staged")
            metas = [
                _received_meta(g, s, backend.name, os.path.basename(s.directory))
                for g, s in zip(header["generations"], staged, strict=True)
            ]
            if root is None:
                current = _commit(ctx, image, header, staged, metas)
            else:
                current = _commit_new(ctx, image, config, root, staged, metas)
            failed = False
        except BaseException as e:
            ctx.journal("image receive", image=image, peer=peer or None, result="failed", error=str(e))
            raise
    ctx.journal(
        "image receive",
        image=image,
        peer=peer or None,
        generations=[s.number for s in staged] or None,
        current=current,
        bytes=reader.bytes,
    )
    return {
        "image": image,
        "created": not exists,
        "backend": backend.name,
        "generations": [s.number for s in staged],
        "kinds": {str(g["generation"]): g["kind"] for g in header["generations"]},
        "base": header.get("base"),
        "current": current,
        "bytes": reader.bytes,
        "seconds": round(time.monotonic() - started, 3),
    }


def check_receive(ctx: Context, image: str) -> None:
    """May the caller receive *image*? Into an existing image: its root-users; a new one: who may create."""
    check_object_name(image, "image name")
    if images.exists(ctx, image):
        images.authorize(ctx, policy.IMAGE_RECEIVE, image)
    else:
        ctx.authorize(policy.IMAGE_CREATE)


def _discard(directory: str, *, failing: Callable[[], bool]) -> None:
    if failing() and os.path.lexists(directory):
        mounts.unmount_tree(directory, force=True)
        backends.discard(directory)


def _check_current(ctx: Context, image: str, expected: str, *, lease: bool = True) -> int:
    """The receiver's current generation, if its identity is *expected* (the compare of compare-and-swap).

    With *lease*, also refuse while a maintenance session holds the image (it would
    otherwise find its image changed under it, as with a rollback).
    """
    store = ctx.store
    cur = generations.current(store, image)
    if identity(generations.read_meta(store, image, cur)) != expected:
        raise Conflict(
            f"{image} moved on here (it is now at generation {cur}, not the one the transfer was planned "
            "against): nothing received"
        )
    holder = leases.live_writer(ctx, image) if lease else None
    if holder is not None:
        raise Conflict(f"{image} is being maintained by {holder.describe()}: promote or end it first")
    return cur


def _new_config(ctx: Context, image: str, header: dict[str, Any]) -> Any:
    from .imageconf import parse_image_config
    from .profiles import profile_path

    wanted = dict(header["config"])  # its access lists included: the image's settings travel with it
    wanted["backend"] = header["backend"]
    try:
        config = parse_image_config(wanted, f"the settings of image {image} in the stream", backends.names())
    except ConfigError as e:
        raise BadInput(str(e)) from None
    try:
        profile_path(config.profile, ctx.settings.profiles_dir)
    except NotFound:
        raise BadInput(f"image {image} uses profile {config.profile}, which this host does not have") from None
    return config


def _new_image_staging(ctx: Context, image: str, cleanup: ExitStack) -> str:
    """``<state>/staging/<tx>/``: a new image being received, under its transaction's lock."""
    store = ctx.store
    tx = new_tx()
    lock = ctx.lock(store.tx_lock_name(tx), f"receive {image}")
    cleanup.callback(lock.release, remove=True)
    root = os.path.join(store.staging_dir, tx)
    os.mkdir(root, 0o755)
    os.mkdir(os.path.join(root, "generations"), 0o755)
    return root


def _dir_of(ctx: Context, image: str, number: int, staged: list[_Staged], root: str | None) -> str:
    for s in staged:
        if s.number == number:
            return s.directory
    if root is not None:
        raise StreamError(f"malformed image stream (generation {number} is not in it)")
    return ctx.store.generation_dir(image, number)


def _stack_of(ctx: Context, image: str, number: int, staged: list[_Staged]) -> tuple[int, ...]:
    for s in staged:
        if s.number == number:
            return s.stack
    return tuple(generations.read_meta(ctx.store, image, number).stack)


def _receive_one(
    ctx: Context,
    image: str,
    backend: backends.Backend,
    g: dict[str, Any],
    directory: str,
    tx: str,
    reader: _Reader,
    staged: list[_Staged],
    root: str | None,
    max_depth: int,
    header: dict[str, Any],
) -> _Staged:
    number = int(g["generation"])
    kind = str(g["kind"])
    site = ctx.site()
    label = f"{image}.{tx}"
    if kind not in TREE_KINDS:  # a backend's own stream
        stream = backend.native(site)
        if stream is None or stream.kind != kind:
            raise StreamError(f"malformed image stream ({kind} data for a {backend.name} image)")
        os.mkdir(directory, 0o700)
        _receive_native(stream, directory, label, reader)
        incremental = g.get("parent") is not None and bool(staged or header.get("base") is not None)
        size = stream.received_size(directory, incremental)
        if size is None:
            size = backend.generation_size(directory)
        backend.sync(directory)
        return _Staged(number, directory, (number,), True, size)
    whiteouts: list[bytes] = []
    frame, payload = reader.frame()
    while frame == b"W":
        whiteouts += [p for p in payload.split(b"\x00") if p]
        frame, payload = reader.frame()
    if kind == "full":
        tree = backend.init_generation(directory, site, label)
        _receive_tar(reader, tree, frame, payload)
        backend.finish_generation(directory)
        backend.sync(directory)
        return _Staged(number, directory, (number,), True, backend.generation_size(directory))
    parent = g.get("parent")
    if not isinstance(parent, int):
        raise StreamError("malformed image stream (an incremental generation without a parent)")
    parent_dir = _dir_of(ctx, image, parent, staged, root)
    parent_stack = _stack_of(ctx, image, parent, staged)
    if backend.name == "overlay" and len(parent_stack) + 1 <= max_depth:
        os.mkdir(directory, 0o700)
        layer = os.path.join(directory, "layer")
        _receive_tar(reader, layer, frame, payload)
        _make_whiteouts(layer, whiteouts)
        backend.sync(directory)
        return _Staged(number, directory, (number, *parent_stack), False, tree_size(layer))
    # A complete tree: the layer over the previous generation, copied into a new generation.
    tree = backend.init_generation(directory, site, label)
    delta = os.path.join(directory, ".delta")
    _receive_tar(reader, delta, frame, payload)
    _make_whiteouts(delta, whiteouts)
    with ExitStack() as views:
        if backend.name in ("overlay", "dir"):
            lowers = [os.path.join(_dir_of(ctx, image, k, staged, root), "layer") for k in parent_stack]
        else:
            scratch = views.enter_context(_scratch(ctx, f"receive {image} {number}"))
            lowers = [views.enter_context(backend.view(parent_dir, _lowers_in(backend, parent_dir), scratch))]
        merged = views.enter_context(_scratch(ctx, f"receive {image} {number}"))
        mount_overlay(merged, [delta, *lowers])
        from .importers import Source, fill

        fill(Source("dir", path=merged), tree, ctx.progress)
    remove_tree(delta)
    backend.finish_generation(directory)
    backend.sync(directory)
    return _Staged(number, directory, (number,), True, backend.generation_size(directory))


def _lowers_in(backend: backends.Backend, directory: str) -> list[str]:
    """The lowers of a single-layer generation kept in *directory* (which need not be named by its number)."""
    sample = backend.lowers("/g", [1])[0]
    return [os.path.join(directory, sample[len("/g/1/") :])]


def _receive_tar(reader: _Reader, dest: str, frame: bytes, payload: bytes) -> None:
    """Unpack the data frames (starting with *frame*, *payload*) into the new directory *dest*."""
    if not os.path.isdir(dest):
        os.mkdir(dest, 0o755)
    helper = _Helper(
        [*TAR_EXTRACT, f"--directory={dest}"], "unpacking the stream", stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    try:
        _pump_in(reader, helper, frame, payload)
    finally:
        helper.kill()


def _pump_in(reader: _Reader, helper: _Helper, frame: bytes, payload: bytes) -> None:
    """Feed data frames to *helper*'s stdin until the end frame; check its exit and the data's digest."""
    sha = hashlib.sha256()
    feed = helper.proc.stdin
    assert feed is not None
    broken = False
    while frame == b"D":
        sha.update(payload)
        if not broken:
            try:
                feed.write(payload)
            except BrokenPipeError:
                broken = True  # the helper died; its exit status says why
        frame, payload = reader.frame()
    if frame != b"E":
        raise StreamError(f"malformed image stream (frame {frame!r} inside a generation's data)")
    try:
        feed.close()
    except BrokenPipeError:
        pass
    helper.finish()
    try:
        end = json.loads(payload)
    except ValueError:
        raise StreamError("malformed image stream (bad JSON)") from None
    if not isinstance(end, dict) or end.get("sha256") != sha.hexdigest():
        raise StreamError("a generation's checksum does not match: nothing received")


def _receive_native(stream: backends.NativeStream, directory: str, label: str, reader: _Reader) -> None:
    """The backend's own receiving program (``btrfs receive``, ``zfs receive``) into *directory*."""
    frame, payload = reader.frame()
    argv, program = stream.receive(directory, label)
    helper = _Helper(argv, program, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        _pump_in(reader, helper, frame, payload)
    finally:
        helper.kill()
    stream.received(directory, label)


def _native_kinds() -> list[str]:
    """Stream kinds of the backends that have their own stream."""
    return [b.native_kind for b in backends.all() if b.native_kind is not None]


def _make_whiteouts(layer: str, paths: list[bytes]) -> None:
    """Overlay whiteouts (0/0 character devices) at *paths* inside *layer*, never outside it."""
    from . import syscalls

    if not paths:
        return
    top = os.open(layer, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for raw in paths:
            rel = raw[2:] if raw.startswith(b"./") else raw
            parts = rel.split(b"/")
            if not rel or any(p in (b"", b".", b"..") for p in parts):
                raise StreamError(f"malformed image stream (whiteout path {raw!r})")
            parent = b"/".join(parts[:-1]) or b"."
            try:
                fd = syscalls.openat2(
                    top,
                    os.fsdecode(parent),
                    os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                    _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS,
                )
            except OSError as e:
                raise StreamError(f"malformed image stream (whiteout {raw!r}: {e.strerror})") from None
            try:
                name = os.fsdecode(parts[-1])
                times = os.fstat(fd)
                try:
                    os.unlink(name, dir_fd=fd)
                except FileNotFoundError:
                    pass
                os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=fd)
                os.utime(fd, ns=(times.st_atime_ns, times.st_mtime_ns))  # the directory keeps the sender's time
            finally:
                os.close(fd)
    finally:
        os.close(top)


def _received_meta(g: dict[str, Any], s: _Staged, backend: str, tx: str) -> GenerationMeta:
    return GenerationMeta(
        generation=s.number,
        parent=g.get("parent"),
        created=str(g["created"]),
        author=str(g["author"]),
        message=str(g["message"]),
        session=g.get("session"),
        size=s.size,
        backend=backend,
        stack=s.stack,
        tx=tx,
        flattened=s.flattened,
        identity=str(g["identity"]),
    )


def _commit(
    ctx: Context, image: str, header: dict[str, Any], staged: list[_Staged], metas: list[GenerationMeta]
) -> int:
    """Promote's commit for received generations: compare, write metadata durably, rename, switch."""
    store = ctx.store
    with ctx.image_lock(image, "receive"):
        _check_current(ctx, image, str(header["expected"]))
        done, dirs_only, metas_only = generations.scan(store, image)
        taken = set(done) | dirs_only | metas_only
        for s in staged:
            if s.number in taken:
                raise Conflict(f"{image} got its own generation {s.number} meanwhile: nothing received")
        if not staged:
            target = header.get("switch")
            if target is None:
                return generations.current(store, image)  # already up to date: nothing to do
            if target not in done or identity(generations.read_meta(store, image, target)) != header["switch_identity"]:
                raise Conflict(f"{image} no longer has the generation {target} the sender planned to switch to")
            generations.switch(store, image, target)
            faults.crashpoint("receive", "switched")
            return int(target)
        for s, meta in zip(staged, metas, strict=True):
            generations.write_meta(store, image, meta)
            faults.crashpoint("receive", "committed")
            os.rename(s.directory, store.generation_dir(image, s.number))
            faults.crashpoint("receive", "renamed")
        generations.switch(store, image, staged[-1].number)
        faults.crashpoint("receive", "switched")
    return staged[-1].number


def _commit_new(
    ctx: Context, image: str, config: Any, root: str, staged: list[_Staged], metas: list[GenerationMeta]
) -> int:
    """A received new image: its files written in ``staging/<tx>``, renamed into place like a create."""
    store = ctx.store
    if not staged:
        raise StreamError("malformed image stream (a new image without generations)")
    for meta in metas:
        atomic_write(os.path.join(root, "generations", f"{meta.generation}.yaml"), meta.to_yaml())
    atomic_write(os.path.join(root, "image.yaml"), images._config_yaml(config))
    os.symlink(f"generations/{staged[-1].number}", os.path.join(root, "current"))
    sync_filesystem(root)
    faults.crashpoint("receive", "committed")
    with ctx.image_lock(image, "receive"):
        if images.exists(ctx, image):
            raise Conflict(f"image {image} appeared here meanwhile: nothing received")
        images._check_aliases(ctx, image, config.aliases)
        try:
            os.rename(root, store.image_dir(image))
        except OSError as e:
            raise Conflict(f"image {image} appeared here meanwhile ({e.strerror}): nothing received") from None
        fsync_dir(store.images_dir)
        faults.crashpoint("receive", "renamed")
    return staged[-1].number


# --- push and pull over ssh ----------------------------------------------------------------------


def _remote_failure(code: int, stderr: bytes, host: Host) -> RoostError:
    """The remote roost's error as ours: its message (prefixed by the host) and its exit code."""
    from . import ssh

    if code < 0:
        return ssh.Unreachable(f"the connection to {host.name} was cut (ssh was killed by signal {-code})")
    message = f"{host.name}: {ssh.remote_error(stderr, code, host)}"
    for cls in (BadInput, Conflict, NotFound):
        if code == cls.exit_code:
            return cls(message)
    return SystemFailure(message)


def push(ctx: Context, image: str, host: Host, *, backend: str | None = None) -> dict[str, Any]:
    """Send the generations *host* lacks of *image* (see the module's description); its receive result."""
    from . import ssh

    ctx.require_privileged("image push")
    check_send(ctx, image)
    conn = ssh.Connection(host)
    conn.connect()
    # One session does both: the receiver first says what it has (one JSON line), then reads the stream.
    with tempfile.TemporaryFile() as err:
        words = ["--json", "image", "receive", image, "--inventory-first"]
        proc = conn.popen(words, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            line = proc.stdout.readline(16 << 20)
            try:
                theirs = json.loads(line) if line.strip() else None
            except ValueError:
                theirs = None
            if theirs is not None:
                send(ctx, image, theirs, proc.stdin.fileno(), backend=backend, peer=host.name)
        except BrokenPipeError:
            pass  # the receiver stopped reading; its exit status and message say why
        except BaseException:
            proc.kill()  # the other side's complaint about a cut stream would only repeat ours
            proc.wait()
            raise
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        out = proc.stdout.read()
        proc.stdout.close()
        code = proc.wait()
        if code != 0:
            err.seek(0)
            if conn.lost(code):
                raise ssh.Unreachable(f"lost the connection to {host.name}")
            raise _remote_failure(code, err.read(), host)
        if theirs is None:
            raise SystemFailure(f"{host.name} did not say what it has of {image} (is roost installed there?)")
        try:
            result = json.loads(out)
        except ValueError:
            raise SystemFailure(f"{host.name} did not report what it received") from None
    result["host"] = host.name
    ctx.journal("image push", image=image, host=host.name, generations=result.get("generations") or None)
    return dict(result)


def pull(ctx: Context, host: Host, image: str, *, backend: str | None = None) -> dict[str, Any]:
    """Receive from *host* the generations of *image* this host lacks; the receive result."""
    from . import ssh

    ctx.require_privileged("image pull")
    check_receive(ctx, image)
    ctx.ready()
    mine = inventory(ctx, image)
    conn = ssh.Connection(host)
    conn.connect()
    words = ["image", "send", image] + (["--backend", backend] if backend else [])
    with tempfile.TemporaryFile() as err:
        proc = conn.popen(words, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            try:
                proc.stdin.write(json.dumps(mine).encode() + b"\n")
                proc.stdin.close()
            except BrokenPipeError:
                pass
            result = receive(ctx, image, proc.stdout.fileno(), peer=host.name)
        except StreamError:
            code = proc.wait()
            if code != 0:  # the sender refused or failed: its message is the one that matters
                err.seek(0)
                if conn.lost(code):
                    raise ssh.Unreachable(f"lost the connection to {host.name}") from None
                raise _remote_failure(code, err.read(), host) from None
            raise
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        code = proc.wait()
        if code != 0:
            err.seek(0)
            raise _remote_failure(code, err.read(), host)
    result["host"] = host.name
    ctx.journal("image pull", image=image, host=host.name, generations=result.get("generations") or None)
    return result
