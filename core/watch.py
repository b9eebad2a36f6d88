"""Watching a state root cheaply: notice what changed, and re-read only that.

The console polls a state root several times a second, with a thousand
sessions in it, while other processes (another operator, sbuild, cron) change
it. A poll in which nothing changed costs a few dozen ``stat(2)`` calls, one
read of ``/proc/locks`` and a ``poll(2)`` on the mount table:

* sessions: the mtime of ``sessions/`` (records are created, renamed into
  place and unlinked, so every change moves it); when it moved, each record's
  (inode, mtime, size) says which ones to parse again;
* images: the mtimes of ``images/``, of each ``images/<name>/`` (``current``,
  ``writer.json`` and ``image.yaml`` are replaced by rename), of each
  ``generations/`` directory, and the stat of ``image.yaml`` (edited by hand);
  generation metadata never changes once complete, so it is read once;
* the journal: its inode and size; new lines are read from the last offset;
* locks: the mtime of the lock directory and the content of ``/proc/locks``;
* the mount table: ``poll(2)`` on ``/proc/self/mountinfo`` (the kernel flags
  every change of the namespace's mounts).

A directory's mtime has the granularity of the kernel's coarse clock, so a
change in the same tick as a read could go unseen; a part whose mtime is less
than :data:`RACY` seconds old is therefore looked at again on the next poll.

What is expensive per session — processes inside, disk used by its changes —
is measured separately by :class:`Usage`, less often and within a time budget.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import generations, images, journal, leases, locks, mounts, procs, records, views
from .errors import NotFound, RoostError
from .fsutil import is_temp_name, tree_size
from .generations import GenerationMeta
from .imageconf import ImageConfig
from .locks import LockState
from .names import is_valid_name
from .views import GenerationInfo, ImageInfo, SessionInfo

if TYPE_CHECKING:
    from .engine import Engine

#: A directory changed less than this many seconds ago is looked at again next time.
RACY = 1.0

#: How many journal entries the first poll returns.
JOURNAL_BACKLOG = 200

StatKey = tuple[int, int, int]


def _stat_key(path: str) -> StatKey | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class Snapshot:
    """The state root as one poll saw it.

    ``changed`` names the parts that differ from the previous snapshot
    (``images``, ``sessions``, ``locks``, ``history``, ``events``); parts
    that did not change are the very same objects as before, so a consumer
    can compare by identity. ``events`` holds only the journal entries that
    are new since the previous snapshot.
    """

    images: Mapping[str, ImageInfo]
    sessions: Mapping[str, SessionInfo]
    locks: tuple[LockState, ...]
    history_image: str | None
    history: tuple[GenerationInfo, ...]
    events: tuple[dict[str, Any], ...]
    changed: frozenset[str]
    broken: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


@dataclass
class _Image:
    """What is cached of one image, and the stats it was read under."""

    key: tuple[Any, ...]
    config: ImageConfig
    current: int
    complete: list[int]
    metas: dict[int, GenerationMeta]
    lease: locks.Lease | None


@dataclass
class _Part:
    """The signature of one part of the state root, and whether it must be looked at again."""

    signature: Any = None
    racy: bool = True


class MountTable:
    """The targets of the mount table, re-read only when the kernel says it changed."""

    def __init__(self, path: str = "/proc/self/mountinfo") -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLPRI | select.POLLERR)
        self.targets: frozenset[str] = frozenset()
        self.read()

    def changed(self) -> bool:
        """True if the mount table changed since the last call (or the last read)."""
        return bool(self._poll.poll(0))

    def read(self) -> frozenset[str]:
        os.lseek(self._fd, 0, os.SEEK_SET)
        chunks = []
        while True:
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        text = b"".join(chunks).decode("utf-8", "surrogateescape")
        targets = set()
        for line in text.splitlines():
            fields = line.split(" ", 5)
            if len(fields) > 4:
                target = fields[4]
                targets.add(mounts._unescape(target) if "\\" in target else target)
        self.targets = frozenset(targets)
        return self.targets

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Watcher:
    """Polls one engine's state root; each poll returns what changed, or None.

    Not thread-safe: one thread polls (the console's refresh worker).
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.ctx = engine.ctx
        self.store = engine.ctx.store
        self.viewer = views.Viewer(engine.ctx.policy, engine.ctx.actor)
        self.clock = clock
        self._parts: dict[str, _Part] = {}
        self._records: dict[str, tuple[StatKey, records.Session]] = {}
        self._broken: set[str] = set()
        self._images: dict[str, _Image] = {}
        self._journal_at: tuple[int, int] | None = None  # (inode, offset)
        self._proc_locks = b""
        self._kernel: dict[int, list[tuple[int, str, bool]]] | None = None
        self._flocks: list[LockState] | None = None
        self._mounts: MountTable | None = None
        self._snapshot: Snapshot | None = None
        self._errors: list[str] = []

    def close(self) -> None:
        if self._mounts is not None:
            self._mounts.close()
            self._mounts = None

    # --- the cheap part: signatures ---------------------------------------------------

    def _dir_changed(self, name: str, path: str, now: float) -> bool:
        """True if *path* changed (or was recently changed) since the last look."""
        try:
            st = os.stat(path)
            signature: Any = (st.st_ino, st.st_mtime_ns)
            age = now - st.st_mtime
        except OSError:
            signature, age = None, RACY
        part = self._parts.setdefault(name, _Part())
        changed = part.racy or signature != part.signature
        part.signature = signature
        part.racy = age < RACY
        return changed

    # --- polling -----------------------------------------------------------------------

    def poll(self, *, image: str | None = None, force: bool = False) -> Snapshot | None:
        """Look at the state root; return a new snapshot if anything changed.

        *image* names the image whose history the snapshot should carry.
        With *force*, everything is read again (the caches are dropped).
        """
        now = time.time()
        if force:
            self._parts.clear()
            self._records.clear()
            self._images.clear()
        self._errors = []
        if self._mounts is None:
            self._mounts = MountTable()
            mounts_changed = True
        else:
            mounts_changed = self._mounts.changed()
            if mounts_changed:
                self._mounts.read()
        proc_locks = _read_proc_locks()
        locks_changed = proc_locks != self._proc_locks or self._kernel is None
        if locks_changed:
            self._proc_locks = proc_locks
            self._kernel = locks.kernel_flocks(proc_locks.decode("ascii", "replace"))

        records_changed = self._dir_changed("sessions", self.store.sessions_dir, now) and self._scan_records(now)
        images_changed = self._scan_images(now)
        lock_dir_changed = self._dir_changed("locks", self.store.lock_dir, now)
        events = self._read_journal()

        prev = self._snapshot
        changed: set[str] = set()

        session_map: Mapping[str, SessionInfo]
        if prev is None or records_changed or mounts_changed or locks_changed:
            session_map = self._session_infos(prev.sessions if prev else {})
            broken = tuple(sorted(self._broken))
            if prev is not None and _same_mapping(session_map, prev.sessions) and broken == prev.broken:
                session_map = prev.sessions
            else:
                changed.add("sessions")
        else:
            session_map = prev.sessions

        by_image: dict[str, list[records.Session]] = {}
        for info in session_map.values():
            by_image.setdefault(info.session.image, []).append(info.session)

        image_map: Mapping[str, ImageInfo]
        if prev is None or images_changed or "sessions" in changed:
            image_map = self._image_infos(by_image)
            if prev is not None and image_map == prev.images:
                image_map = prev.images
            else:
                changed.add("images")
        else:
            image_map = prev.images

        lock_list: tuple[LockState, ...]
        if self._flocks is None or locks_changed or lock_dir_changed:
            self._flocks = self._lock_states()
        if prev is None or locks_changed or lock_dir_changed or images_changed or "sessions" in changed:
            lock_list = tuple(self._visible_locks(self._flocks + self._leases(), image_map, session_map))
            if prev is not None and lock_list == prev.locks:
                lock_list = prev.locks
            else:
                changed.add("locks")
        else:
            lock_list = prev.locks

        history: tuple[GenerationInfo, ...] = ()
        history_image = image if image in self._images else None
        if history_image is not None:
            if (
                prev is None
                or prev.history_image != history_image
                or "sessions" in changed
                or history_image in images_changed
            ):
                history = tuple(self._history(history_image, by_image.get(history_image, [])))
            else:
                history = prev.history
        if prev is None or prev.history_image != history_image or history != prev.history:
            changed.add("history")
        if events:
            changed.add("events")

        if prev is not None and not changed and not self._errors:
            return None
        snapshot = Snapshot(
            images=image_map,
            sessions=session_map,
            locks=lock_list,
            history_image=history_image,
            history=history,
            events=tuple(events),
            changed=frozenset(changed),
            broken=tuple(sorted(self._broken)),
            errors=tuple(self._errors),
        )
        self._snapshot = snapshot
        return snapshot

    # --- sessions ----------------------------------------------------------------------

    def _scan_records(self, now: float) -> bool:
        """Re-read the records whose file changed; True if any did."""
        sessions_dir = self.store.sessions_dir
        seen: dict[str, StatKey] = {}
        try:
            with os.scandir(sessions_dir) as it:
                for entry in it:
                    name = entry.name
                    if not name.endswith(".json") or is_temp_name(name):
                        continue
                    sid = name[:-5]
                    if sid not in self._records and not is_valid_name(sid):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    seen[sid] = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            pass
        except OSError as e:
            self._errors.append(f"cannot read {sessions_dir}: {e.strerror}")
        changed = False
        for sid in list(self._records):
            if sid not in seen:
                del self._records[sid]
                changed = True
        broken: set[str] = set()
        for sid, key in seen.items():
            cached = self._records.get(sid)
            if cached is not None and cached[0] == key:
                continue
            try:
                session = records.read(sessions_dir, sid)
            except NotFound:
                continue
            except RoostError:
                # Torn (being created right now) or corrupt: look again next time.
                broken.add(sid)
                self._parts["sessions"].racy = True
                if cached is not None:
                    del self._records[sid]
                    changed = True
                continue
            self._records[sid] = (key, session)
            changed = True
        if broken != self._broken:
            changed = True
        self._broken = broken
        return changed

    def _session_infos(self, previous: Mapping[str, SessionInfo]) -> dict[str, SessionInfo]:
        assert self._mounts is not None
        targets = self._mounts.targets
        held: set[int] | None = None
        out: dict[str, SessionInfo] = {}
        for sid in sorted(self._records):
            session = self._records[sid][1]
            if not self.viewer.sees_session(session):
                continue  # the console shows what its user may use
            if session.state != "active" and held is None:
                held = set(self._kernel if self._kernel is not None else locks.kernel_flocks())
            if session.backend_data.get("rootless"):
                from .rootless.lifecycle import state_of  # mounted while its holder lives, in its own namespace

                state = state_of(session)
            else:
                state = views.session_state(session, targets, held, self.store.lock_dir)
            old = previous.get(sid)
            if old is not None and old.session is session and old.state == state:
                out[sid] = old
            else:
                out[sid] = SessionInfo(session, state)
        return out

    # --- images ------------------------------------------------------------------------

    def _scan_images(self, now: float) -> set[str]:
        """Re-read the images whose directories changed; the names of those that did."""
        store = self.store
        changed: set[str] = set()
        listing_changed = self._dir_changed("images", store.images_dir, now)
        if listing_changed or "names" not in self._parts:
            names = store.image_names()
            self._parts.setdefault("names", _Part()).signature = names
        else:
            names = self._parts["names"].signature
        for gone in set(self._images) - set(names):
            del self._images[gone]
            changed.add(gone)
        for name in names:
            image_dir = os.path.join(store.images_dir, name)
            key = (
                _stat_key(image_dir),
                _stat_key(os.path.join(image_dir, "generations")),
                _stat_key(os.path.join(image_dir, "image.yaml")),
            )
            cached = self._images.get(name)
            racy = any(k is not None and now - k[1] / 1e9 < RACY for k in key)
            if cached is not None and cached.key == key and not racy:
                continue
            entry = self._read_image(name, key, cached)
            if entry is None:
                if cached is not None:
                    del self._images[name]
                    changed.add(name)
                continue
            if cached is None or _image_differs(cached, entry):
                changed.add(name)
            self._images[name] = entry
        return changed

    def _read_image(self, name: str, key: tuple[Any, ...], cached: _Image | None) -> _Image | None:
        eng = self.ctx
        try:
            config = images.load_config(eng, name)
            current = generations.current(eng.store, name)
            complete = generations.complete(eng.store, name)
        except RoostError as e:
            if os.path.isdir(eng.store.image_dir(name)):
                self._errors.append(f"image {name}: {e}")
            return None
        metas: dict[int, GenerationMeta] = {}
        for n in complete:
            meta = cached.metas.get(n) if cached is not None else None
            if meta is None:
                try:
                    meta = generations.read_meta(eng.store, name, n)
                except RoostError as e:
                    self._errors.append(f"image {name}: {e}")
                    continue
            metas[n] = meta
        lease = locks.read_lease(eng.store.writer_lease(name))
        return _Image(key, config, current, complete, metas, lease)

    def _image_infos(self, by_image: Mapping[str, list[records.Session]]) -> dict[str, ImageInfo]:
        out: dict[str, ImageInfo] = {}
        for name in sorted(self._images):
            entry = self._images[name]
            if not self.viewer.sees_image(name, entry.config):
                continue  # the console shows what its user may use
            out[name] = views.image_info(
                name,
                entry.config,
                entry.current,
                entry.metas,
                by_image.get(name, []),
                entry.lease,
                access=self.viewer.level(entry.config),
            )
        return out

    def _history(self, name: str, mine: list[records.Session]) -> list[GenerationInfo]:
        entry = self._images.get(name)
        if entry is None or not self.viewer.sees_image(name, entry.config):
            return []
        used = views.in_use(self.store.generations_dir(name), mine)
        return views.history(entry.complete, entry.metas, entry.current, used)

    # --- locks -------------------------------------------------------------------------

    def _visible_locks(
        self, states: list[LockState], images_shown: Mapping[str, ImageInfo], sessions_shown: Mapping[str, SessionInfo]
    ) -> list[LockState]:
        """The locks of what the console's user may see (all of them for an administrator)."""
        if self.viewer.sees_everything:
            return states
        out = []
        for state in states:
            kind, _, rest = state.lock.partition(".")
            if (
                (kind in ("image", "writer") and rest in images_shown)
                or (kind == "pin" and any(rest.startswith(f"{i}.") for i in images_shown))
                or (kind == "session" and rest in sessions_shown)
            ):
                out.append(state)
        return out

    def _lock_states(self) -> list[LockState]:
        """The flocks in the lock directory: held, stale, waited for."""
        lock_dir = self.store.lock_dir
        try:
            states = locks.lock_states(lock_dir, self._kernel)
        except OSError as e:
            self._errors.append(f"cannot read the locks: {e.strerror}")
            return []
        return states + kernel_waiters(lock_dir, states, self._kernel)

    def _leases(self) -> list[LockState]:
        """The writer leases, from the image cache; stale unless they bind (leases.binds)."""
        out = []
        for name in sorted(self._images):
            lease = self._images[name].lease
            if lease is None:
                continue
            held = self._records.get(lease.session)
            stale = not leases.binds(held[1] if held is not None else None)
            out.append(LockState(f"writer.{name}", None, lease.user, lease.operation, lease.since, stale, "lease"))
        return out

    # --- journal -----------------------------------------------------------------------

    def _read_journal(self) -> list[dict[str, Any]]:
        path = self.store.journal_path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._journal_at = None
            return []
        except OSError as e:
            self._errors.append(f"cannot read {path}: {e.strerror}")
            return []
        at = self._journal_at
        if at is not None and at[0] == st.st_ino and at[1] == st.st_size:
            return []
        if at is None or at[0] != st.st_ino or st.st_size < at[1]:
            # First look, or the journal was rotated: start from its last entries.
            start = _line_start(path, max(0, st.st_size - JOURNAL_BACKLOG * 400))
            entries, offset = journal.read(path, offset=start)
            entries = entries[-JOURNAL_BACKLOG:]
        else:
            entries, offset = journal.read(path, offset=at[1])
        self._journal_at = (st.st_ino, offset)
        return entries


def _line_start(path: str, offset: int) -> int:
    """The first offset at or after *offset* that starts a line."""
    if offset == 0:
        return 0
    with open(path, "rb") as f:
        f.seek(offset - 1)
        while True:
            chunk = f.read(4096)
            if not chunk:
                return f.tell()
            newline = chunk.find(b"\n")
            if newline >= 0:
                return f.tell() - len(chunk) + newline + 1


def _read_proc_locks() -> bytes:
    try:
        with open("/proc/locks", "rb") as f:
            return f.read()
    except OSError:
        return b""


def kernel_waiters(
    lock_dir: str, known: Iterable[LockState], kernel: dict[int, list[tuple[int, str, bool]]] | None = None
) -> list[LockState]:
    """Processes the kernel shows blocked on a lock file (``flock`` without LOCK_NB).

    roost's own waiters poll and announce themselves in ``<lock>.wait-<pid>``
    files; a process that blocks in the kernel instead (``flock(1)`` in a cron
    job, say) is only visible in ``/proc/locks``.
    """
    if kernel is None:
        kernel = locks.kernel_flocks()
    blocked = {ino: [pid for pid, _, b in entries if b] for ino, entries in kernel.items()}
    blocked = {ino: pids for ino, pids in blocked.items() if pids}
    if not blocked:
        return []
    already = {(s.lock, s.pid) for s in known if s.mode == "waiting"}
    out = []
    try:
        names = sorted(os.listdir(lock_dir))
    except OSError:
        return []
    for name in names:
        if not name.endswith(locks.LOCK_SUFFIX) or locks.WAIT_MARK in name:
            continue
        try:
            inode = os.stat(os.path.join(lock_dir, name), follow_symlinks=False).st_ino
        except OSError:
            continue
        lock = name.removesuffix(locks.LOCK_SUFFIX)
        for pid in blocked.get(inode, []):
            if (lock, pid) in already:
                continue
            out.append(
                LockState(lock, pid, locks._owner_of(pid), f"{procs.comm(pid)} (blocked)", "?", False, "waiting")
            )
    return out


def _same_mapping(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(a[k] is b[k] for k in a)


def _image_differs(a: _Image, b: _Image) -> bool:
    return (a.config, a.current, a.complete, a.lease, sorted(a.metas)) != (
        b.config,
        b.current,
        b.complete,
        b.lease,
        sorted(b.metas),
    )


# --- per-session usage -------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What :class:`Usage` knows of one session."""

    processes: int
    disk: int | None  # bytes in the session's own layer; None if it has none
    measured: bool  # False until its disk use was measured once
    #: Memory and CPU of a session with a cgroup, once read (core.views.Load); None otherwise.
    load: views.Load | None = None


#: Reads memory and CPU figures of sessions with a cgroup, by id (``Engine.session_usage``).
LoadReader = Callable[[list[records.Session]], Mapping[str, Mapping[str, int | None]]]


@dataclass
class Usage:
    """Processes inside each session and disk used by its changes, measured within a budget.

    Counting processes is one pass over ``/proc`` for all sessions. Disk use
    walks each session's own layer (the upper directory of its clone), which
    can be large; :meth:`measure` walks as many as fit in *budget* seconds:
    the *first* session (the one an operator looks at) always, then the
    never-measured ones, then the longest-unmeasured.

    Memory and CPU (:class:`core.views.Load`) are read, with *loads*, only
    for sessions that have a cgroup and that the caller *watches* (those an
    operator can see): a few small files each, every round, so the CPU
    share is over the time between two rounds.
    """

    clock: Callable[[], float] = time.monotonic
    processes: dict[str, int] = field(default_factory=dict)
    disk: dict[str, int | None] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)
    loads: dict[str, views.Load] = field(default_factory=dict)
    #: When each session's load was read (this clock).
    loaded_at: dict[str, float] = field(default_factory=dict)

    def measure(
        self,
        sessions_: Iterable[records.Session],
        *,
        budget: float = 0.2,
        first: str | None = None,
        again_after: float = 30.0,
        loads: LoadReader | None = None,
        watched: Container[str] | None = None,
    ) -> dict[str, Figures]:
        """Measure; returns the figures of the sessions whose figures changed.

        A session's disk use is measured again once it is *again_after*
        seconds old (the *first* one every time). With *loads*, memory and
        CPU are read for the sessions with a cgroup in *watched* (all if
        None) and *first*.
        """
        known = {s.id: s for s in sessions_}
        changed: set[str] = set()
        for gone in set(self.processes) - known.keys():
            self.measured.pop(gone, None)
            self.disk.pop(gone, None)
            self.processes.pop(gone, None)
        for gone in set(self.loads) - known.keys():
            self.loads.pop(gone, None)
            self.loaded_at.pop(gone, None)
        if loads is not None:
            changed |= self._read_loads(known, loads, watched, first)
        roots = {sid: s.mountpoint.rstrip("/") for sid, s in known.items()}
        counts = procs.count_in_roots(list(roots.values())) if roots else {}
        for sid, root in roots.items():
            n = counts.get(root, 0)
            if self.processes.get(sid) != n:
                self.processes[sid] = n
                changed.add(sid)
        order = sorted(known, key=lambda sid: (sid != first, sid in self.measured, self.measured.get(sid, 0.0)))
        now = self.clock()
        deadline = now + budget
        for sid in order:
            if sid != first and (self.clock() >= deadline or now - self.measured.get(sid, -again_after) < again_after):
                break
            size = changes_size(known[sid])
            fresh = sid not in self.measured
            self.measured[sid] = self.clock()
            if fresh or self.disk.get(sid) != size:
                self.disk[sid] = size
                changed.add(sid)
        return {sid: self.figures(sid) for sid in changed}

    def _read_loads(
        self,
        known: Mapping[str, records.Session],
        reader: LoadReader,
        watched: Container[str] | None,
        first: str | None,
    ) -> set[str]:
        wanted = [s for sid, s in known.items() if s.cgroups and (watched is None or sid in watched or sid == first)]
        if not wanted:
            return set()
        figures = reader(wanted)
        now = self.clock()
        changed = set()
        for sid, values in figures.items():
            previous = self.loads.get(sid)
            fresh = views.load(values, previous, now - self.loaded_at.get(sid, now))
            self.loaded_at[sid] = now
            if fresh != previous:
                self.loads[sid] = fresh
                changed.add(sid)
        return changed

    def figures(self, sid: str) -> Figures:
        return Figures(self.processes.get(sid, 0), self.disk.get(sid), sid in self.measured, self.loads.get(sid))


def changes_size(session: records.Session) -> int | None:
    """Bytes in the session's own layer (what ending it loses), or None if it has none."""
    upper = os.path.join(session.clone, "upper")
    if not os.path.isdir(upper):
        return None
    try:
        return tree_size(upper)
    except OSError:
        return None
