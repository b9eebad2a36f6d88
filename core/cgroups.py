"""Session cgroups: resource limits, live usage, and killing through the kernel's groups.

A session with ``limits:`` (or ``network: loopback``) gets one directory per
cgroup hierarchy it needs, all named ``<hierarchy>/<cgroup-parent>/<key>/<id>``
(*key* tells state roots apart). Each controller comes from cgroup v2 when the
v2 hierarchy has it, from cgroup v1 otherwise; a v2 directory is made whenever
v2 is mounted at all, even without controllers, because v2 alone offers
``cgroup.kill`` (an atomic kill of the whole group), ``cpu.stat`` without the
cpu controller, and socket filters (``network: loopback``, :mod:`core.sockfilter`).

The directories are written into the session record, so joining costs one
``write(2)`` to each ``cgroup.procs`` (:func:`join`, on the hot path: ``os``
only) and ending or recovering needs no discovery. Processes that left the
session's root (a double fork and a chroot to ``/proc/1/root``) stay in its
cgroup, so :func:`kill` catches what the process-tree scan cannot.
"""

from __future__ import annotations

import errno
import os
import time

from .errors import BadInput, SystemFailure

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at start-up
    from collections.abc import Iterable, Mapping, Sequence

V1_CONTROLLERS = frozenset(
    ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "blkio", "perf_event", "net_prio",
     "hugetlb", "pids", "rdma", "misc")
)  # fmt: skip
#: limit key -> (v2 controller, v1 controller)
CONTROLLER_OF = {
    "memory": ("memory", "memory"),
    "swap": ("memory", "memory"),
    "pids": ("pids", "pids"),
    "cpu-weight": ("cpu", "cpu"),
    "cpu-quota": ("cpu", "cpu"),
    "io-weight": ("io", "blkio"),
}
CPU_PERIOD_US = 100_000
_SIGKILL = 9
_SIGTERM = 15


class Hierarchy:
    """A mounted cgroup hierarchy: where, which version, which controllers it offers."""

    __slots__ = ("controllers", "path", "version")

    def __init__(self, path: str, version: int, controllers: frozenset[str]) -> None:
        self.path = path
        self.version = version
        self.controllers = controllers

    def __repr__(self) -> str:
        return f"Hierarchy({self.path!r}, v{self.version}, {sorted(self.controllers)})"


_found: list[Hierarchy] | None = None


def hierarchies(mountinfo: str | None = None) -> list[Hierarchy]:
    """The cgroup hierarchies mounted here: v2 first (if any), then each v1 hierarchy with controllers.

    Read from /proc/self/mountinfo once per process (cgroup hierarchies are
    mounted at boot); *mountinfo* parses the given text instead.
    """
    global _found
    if mountinfo is None:
        if _found is not None:
            return _found
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        _found = _parse(text)
        return _found
    return _parse(mountinfo)


def _parse(mountinfo: str) -> list[Hierarchy]:
    v2: list[Hierarchy] = []
    v1: list[Hierarchy] = []
    seen: set[frozenset[str]] = set()
    for line in mountinfo.splitlines():
        if " - cgroup" not in line:
            continue
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        rest = right.split(" ")
        fields = left.split(" ")
        if len(rest) < 3 or len(fields) < 5 or rest[0] not in ("cgroup", "cgroup2"):
            continue
        target = fields[4].replace("\\040", " ")
        if rest[0] == "cgroup2":
            if not v2:
                v2.append(Hierarchy(target, 2, _v2_controllers(target)))
            continue
        controllers = frozenset(o for o in rest[2].split(",") if o in V1_CONTROLLERS)
        if controllers and controllers not in seen:
            seen.add(controllers)
            v1.append(Hierarchy(target, 1, controllers))
    return v2 + v1


def _v2_controllers(path: str) -> frozenset[str]:
    return frozenset((_read(os.path.join(path, "cgroup.controllers")) or "").split())


def state_key(state_root: str) -> str:
    """What tells this state root's sessions apart from another's under the same cgroup parent."""
    st = os.stat(state_root)
    return f"{st.st_dev:x}-{st.st_ino:x}"


class Group:
    """One directory a session gets: its hierarchy and the controllers it uses there."""

    __slots__ = ("controllers", "hierarchy", "path")

    def __init__(self, hierarchy: Hierarchy, path: str, controllers: frozenset[str]) -> None:
        self.hierarchy = hierarchy
        self.path = path
        self.controllers = controllers


def plan(
    limits: Mapping[str, int | float],
    parent: str,
    key: str,
    sid: str,
    *,
    account: bool = True,
    filters: bool = False,
    v2: bool | None = None,
    found: Sequence[Hierarchy] | None = None,
) -> list[Group]:
    """Where a session's cgroup directories go; refuses (changing nothing) a limit no hierarchy can apply.

    Each limit's controller comes from v2 when v2 offers it, from v1 otherwise.
    With *account*, memory is accounted where a memory controller exists
    (``session info`` shows it), and CPU time comes from v2's ``cpu.stat``
    or, beside v1 hierarchies, from v1's cpuacct. *filters*: the session
    needs a v2 directory for its socket filters.

    A session with v1 directories also gets one in v1's freezer, if mounted:
    it stands in for v2's ``cgroup.kill`` (freeze, SIGKILL, thaw). The v2
    directory is then made only when needed (a v2 controller, *filters*, or
    no freezer); *v2* forces it in or out (recover passes what the record
    has). Why not always: joining a v2 directory is a write to its
    ``cgroup.procs``, for which the kernel takes ``cgroup_threadgroup_rwsem``
    for writing and waits for an RCU grace period (about 13 ms on a quiet
    host) unless the hierarchy is mounted with ``favordynmods``; a v1
    directory is joined through ``tasks`` (:func:`join`), which does not wait.
    """
    found = hierarchies() if found is None else found
    unified = next((h for h in found if h.version == 2), None)
    v1 = {c: h for h in found if h.version == 1 for c in h.controllers}
    wanted: dict[str, Hierarchy] = {}  # controller name as the hierarchy calls it -> hierarchy

    def want(v2_name: str, v1_name: str, required_by: str | None) -> None:
        if unified is not None and v2 is not False and v2_name in unified.controllers:
            wanted[v2_name] = unified
        elif v1_name in v1:
            wanted[v1_name] = v1[v1_name]
        elif required_by is not None:
            raise SystemFailure(
                f"limits.{required_by} needs the {v2_name} cgroup controller, which this host offers "
                "in neither cgroup v2 nor cgroup v1"
            )

    for limit in limits:
        v2_name, v1_name = CONTROLLER_OF[limit]
        want(v2_name, v1_name, limit)
    if "swap" in limits and "memory" not in limits and wanted.get("memory", unified) is not unified:
        raise BadInput("limits.swap on cgroup v1 needs limits.memory too (v1 limits memory and swap together)")
    if account:
        want("memory", "memory", None)  # live memory figures
    if any(h.version == 1 for h in wanted.values()):
        if account and "cpuacct" in v1:
            wanted["cpuacct"] = v1["cpuacct"]  # live CPU figures (v1's cpu.stat has none)
        if "freezer" in v1:
            wanted["freezer"] = v1["freezer"]
    if v2 is None:
        v2 = filters or unified in wanted.values() or "freezer" not in wanted
    v2 = v2 and unified is not None
    groups: dict[str, set[str]] = {}
    by_path: dict[str, Hierarchy] = {}
    if v2:
        assert unified is not None
        groups[unified.path] = set()  # cgroup.kill, cpu.stat, socket filters
        by_path[unified.path] = unified
    for name, h in wanted.items():
        groups.setdefault(h.path, set()).add(name)
        by_path[h.path] = h
    if not groups:
        raise SystemFailure("limits need cgroups, and no cgroup hierarchy is mounted (mount cgroup2 on /sys/fs/cgroup)")
    return [
        Group(by_path[p], os.path.join(p, parent, key, sid), frozenset(c))
        for p, c in sorted(groups.items(), key=lambda pc: (by_path[pc[0]].version != 2, pc[0]))
    ]


def group_at(path: str, found: Sequence[Hierarchy] | None = None) -> Group | None:
    """The directory *path* as a group of no controllers, if it lies in a mounted hierarchy."""
    for h in hierarchies() if found is None else found:
        if path.startswith(h.path.rstrip("/") + "/"):
            return Group(h, path, frozenset())
    return None


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str | None:
    """A cgroup file's text, None if it cannot be read. Plain reads, no text layer: on the hot path."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii", "replace")


def _settings(group: Group, limits: Mapping[str, int | float]) -> list[tuple[str, str, str]]:
    """(file, value, limit key) to write in *group*, in order."""
    v2 = group.hierarchy.version == 2
    c = group.controllers
    out: list[tuple[str, str, str]] = []
    if "memory" in c:
        if "memory" in limits:
            out.append(("memory.max" if v2 else "memory.limit_in_bytes", str(int(limits["memory"])), "memory"))
        if "swap" in limits:
            if v2:
                out.append(("memory.swap.max", str(int(limits["swap"])), "swap"))
            else:
                total = int(limits["memory"]) + int(limits["swap"])
                out.append(("memory.memsw.limit_in_bytes", str(total), "swap"))
    if "pids" in c and "pids" in limits:
        out.append(("pids.max", str(int(limits["pids"])), "pids"))
    if "cpu" in c:
        if "cpu-weight" in limits:
            weight = int(limits["cpu-weight"])
            if v2:
                out.append(("cpu.weight", str(weight), "cpu-weight"))
            else:  # v1 shares: 1024 is the default weight of 100
                out.append(("cpu.shares", str(max(2, weight * 1024 // 100)), "cpu-weight"))
        if "cpu-quota" in limits:
            quota = max(1000, int(float(limits["cpu-quota"]) * CPU_PERIOD_US))
            if v2:
                out.append(("cpu.max", f"{quota} {CPU_PERIOD_US}", "cpu-quota"))
            else:
                out.append(("cpu.cfs_period_us", str(CPU_PERIOD_US), "cpu-quota"))
                out.append(("cpu.cfs_quota_us", str(quota), "cpu-quota"))
    if ("io" in c or "blkio" in c) and "io-weight" in limits:
        weight = int(limits["io-weight"])
        if v2:
            if os.path.exists(os.path.join(group.path, "io.weight")):
                out.append(("io.weight", f"default {weight}", "io-weight"))
            else:
                out.append(("io.bfq.weight", f"default {min(weight, 1000)}", "io-weight"))
        elif os.path.exists(os.path.join(group.path, "blkio.weight")):
            out.append(("blkio.weight", str(max(10, min(weight, 1000))), "io-weight"))
        else:
            out.append(("blkio.bfq.weight", str(min(weight, 1000)), "io-weight"))
    return out


def _enable(hierarchy: Hierarchy, directory: str, controllers: Iterable[str]) -> None:
    """cgroup v2: enable *controllers* for the children of every cgroup from the root down to *directory*."""
    wanted = set(controllers)
    if hierarchy.version != 2 or not wanted:
        return
    rel = os.path.relpath(directory, hierarchy.path)
    path = hierarchy.path
    for part in ["", *rel.split("/")]:
        path = os.path.join(path, part) if part else path
        enabled = set((_read(os.path.join(path, "cgroup.subtree_control")) or "").split())
        missing = wanted - enabled
        if missing:
            _write(os.path.join(path, "cgroup.subtree_control"), " ".join(f"+{m}" for m in sorted(missing)))


def _make_parents(root: str, directory: str) -> None:
    """Make *directory* and the missing directories between it and the hierarchy's *root* (os.makedirs, leaner)."""
    rel = os.path.relpath(directory, root)
    path = root
    for part in rel.split("/"):
        path = f"{path}/{part}"
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            pass


def create(groups: Sequence[Group], limits: Mapping[str, int | float]) -> None:
    """Make the directories (an existing one is reused: recover) and apply the limits."""
    for group in groups:
        parent = os.path.dirname(group.path)
        for attempt in range(5):
            try:
                if attempt or group.hierarchy.version == 2:  # v2: the parents' subtree_control first
                    _make_parents(group.hierarchy.path, parent)
                    _enable(group.hierarchy, parent, group.controllers)
                os.mkdir(group.path, 0o755)  # first try, v1: one mkdir while other sessions keep the parents
                break
            except FileExistsError:
                break
            except FileNotFoundError:
                if attempt == 4:  # a concurrent end removes empty parents; try again
                    raise
            except OSError as e:
                raise SystemFailure(f"cannot create cgroup {group.path}: {e.strerror}") from None
        for name, value, key in _settings(group, limits):
            try:
                _write(os.path.join(group.path, name), value)
            except OSError as e:
                why = "not offered by this kernel" if e.errno == errno.ENOENT else e.strerror
                raise SystemFailure(f"limits.{key}: cannot set {name} in {group.path} ({why})") from None


def join(directories: Sequence[str], pid: int = 0) -> None:
    """Put the calling process (or *pid*) into every directory: one write each. On the hot path.

    The caller goes into a v1 directory through its ``tasks`` file, as the
    thread it is: it must have no other threads (a forked child, before it
    execs). Writing ``cgroup.procs`` would move a whole thread group, which
    waits for an RCU grace period (:func:`plan`); v2 has only that.
    """
    for directory in directories:
        fd = -1
        if not pid:
            try:
                fd = os.open(directory + "/tasks", os.O_WRONLY | os.O_CLOEXEC)
                data = b"0"
            except FileNotFoundError:
                pass
        if fd < 0:
            fd = os.open(directory + "/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
            data = str(pid or os.getpid()).encode()
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def _tree(directory: str) -> list[str]:
    """*directory* and the cgroups below it, deepest first (children before their parents).

    A cgroup directory's link count is 2 plus its subdirectories (kernfs
    counts them), so a leaf — nearly every session directory — costs one
    stat instead of a listing of its thirty-odd files.
    """
    found = []
    pending = [directory]
    while pending:
        path = pending.pop()
        try:
            leaf = os.stat(path).st_nlink <= 2
        except OSError:  # gone meanwhile (or never there)
            continue
        found.append(path)
        if leaf:
            continue
        try:
            with os.scandir(path) as entries:
                pending.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            pass
    found.reverse()  # every directory was found after its parent
    return found


def members(directories: Iterable[str]) -> set[int]:
    """Every process in any of the directories or below them."""
    pids: set[int] = set()
    for directory in directories:
        for path in _tree(directory):
            text = _read(os.path.join(path, "cgroup.procs"))
            if text:
                pids.update(int(p) for p in text.split())
    return pids


def signal(directories: Iterable[str], signum: int) -> int:
    """Send *signum* to every process in the directories; how many got it."""
    sent = 0
    for pid in members(directories):
        try:
            os.kill(pid, signum)
            sent += 1
        except ProcessLookupError:
            pass
    return sent


def kill(directories: Sequence[str], timeout: float = 10.0) -> int:
    """SIGKILL everything in the session's cgroups, until they are empty.

    cgroup v2's ``cgroup.kill`` kills the whole group at once, forks in
    flight included. Without it, a v1 freezer directory does the same in
    three steps: freeze (no member runs, so none forks), SIGKILL every
    member, thaw (each dies as it wakes). Without either, the members are
    killed round after round (a fork bomb is held by its pids limit).
    Returns how many processes were found.
    """
    live = [d for d in directories if os.path.isdir(d)]
    if not live:
        return 0
    found = members(live)
    if not found:
        return 0
    killed = False
    for directory in live:  # every v2 directory (there is one per session, but a caller may pass more)
        if os.path.exists(os.path.join(directory, "cgroup.kill")):
            try:
                _write(os.path.join(directory, "cgroup.kill"), "1")
                killed = True
            except OSError:
                pass
    if not killed:
        for directory in live:
            if os.path.exists(os.path.join(directory, "freezer.state")):
                _kill_frozen(directory)
                break
    deadline = time.monotonic() + timeout
    while True:
        left = members(live)
        if not left:
            return len(found)
        found |= left
        if time.monotonic() > deadline:
            raise SystemFailure(f"processes {', '.join(map(str, sorted(left)[:5]))} survive SIGKILL in {live[0]}")
        signal(live, _SIGKILL)
        time.sleep(0.005)


def _kill_frozen(directory: str, timeout: float = 2.0) -> None:
    """Freeze a v1 freezer directory, SIGKILL its members, thaw it: nobody forks in between.

    A member the freezer cannot stop in time (a task in uninterruptible
    sleep) still gets its SIGKILL; :func:`kill`'s rounds catch the rest.
    """
    state = os.path.join(directory, "freezer.state")
    try:
        _write(state, "FROZEN")
    except OSError:
        return
    try:
        deadline = time.monotonic() + timeout
        while (_read(state) or "").strip() == "FREEZING" and time.monotonic() < deadline:
            time.sleep(0.001)
        signal([directory], _SIGKILL)
    finally:
        try:
            _write(state, "THAWED")
        except OSError:
            pass


def remove(directories: Sequence[str], timeout: float = 5.0) -> None:
    """Remove the (empty) session directories and what is below them; their parents stay.

    ``<parent>/<key>`` (the state root's slice) and ``<parent>`` outlive the
    session: making and removing them with every session that begins and ends
    alone cost ten more mkdirs and rmdirs, about a third of what limits add to
    an automatic session. :func:`remove_slice` (``session recover --all`` on a
    state root without sessions) removes them.
    """
    deadline = time.monotonic() + timeout
    for directory in directories:
        for path in _tree(directory):  # the loopback leaf before the session's own directory
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise SystemFailure(f"cannot remove cgroup {path}: {e.strerror}") from None
                    signal([path], _SIGKILL)  # a process that was still exiting, or joined late
                    time.sleep(0.01)


def remove_slice(parent: str, key: str, found: Sequence[Hierarchy] | None = None) -> list[str]:
    """Remove this state root's ``<parent>/<key>`` in every hierarchy, and ``<parent>``, where empty; what went.

    A directory still in use (a session's below it, another state root's
    beside it) stays. A begin that finds its parent gone makes it again
    (:func:`create`).
    """
    removed = []
    for h in hierarchies() if found is None else found:
        key_dir = os.path.join(h.path, parent, key)
        for path in (key_dir, os.path.dirname(key_dir)):
            try:
                os.rmdir(path)
                removed.append(path)
            except OSError:
                break
    return removed


def _stat_value(text: str | None, key: str) -> int | None:
    if not text:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else None


def usage(directories: Sequence[str]) -> dict[str, int | None]:
    """What the session uses now: memory (bytes) and its peak, CPU time (µs), processes, OOM kills.

    A figure the session's hierarchies do not account is None.
    """
    out: dict[str, int | None] = dict.fromkeys(("memory", "memory_peak", "cpu_usec", "pids", "oom_kills"))
    for d in directories:
        if out["memory"] is None:
            v2 = _int(_read(os.path.join(d, "memory.current")))
            v1 = None if v2 is not None else _int(_read(os.path.join(d, "memory.usage_in_bytes")))
            if v2 is not None:
                out["memory"] = v2
                out["memory_peak"] = _int(_read(os.path.join(d, "memory.peak")))
                out["oom_kills"] = _stat_value(_read(os.path.join(d, "memory.events")), "oom_kill")
            elif v1 is not None:
                out["memory"] = v1
                out["memory_peak"] = _int(_read(os.path.join(d, "memory.max_usage_in_bytes")))
                out["oom_kills"] = _stat_value(_read(os.path.join(d, "memory.oom_control")), "oom_kill")
        if out["cpu_usec"] is None:
            usec = _stat_value(_read(os.path.join(d, "cpu.stat")), "usage_usec")
            if usec is None:
                ns = _int(_read(os.path.join(d, "cpuacct.usage")))
                usec = None if ns is None else ns // 1000
            out["cpu_usec"] = usec
        if out["pids"] is None:
            out["pids"] = _int(_read(os.path.join(d, "pids.current")))
    return out


def leftovers(parent: str, key: str, known: set[str], found: Sequence[Hierarchy] | None = None) -> list[str]:
    """Session directories of this state root (under *parent*/*key*) that no record names."""
    found = hierarchies() if found is None else found
    out = []
    for h in found:
        base = os.path.join(h.path, parent, key)
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in sorted(names):
            path = os.path.join(base, name)
            if name not in known and os.path.isdir(path):
                out.append(path)
    return out
