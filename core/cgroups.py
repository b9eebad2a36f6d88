"""Session cgroups: where they go and how they are made, with their limits.

A session with ``limits:`` (or ``network: loopback``) gets one directory per
cgroup hierarchy it needs, all named ``<hierarchy>/<cgroup-parent>/<key>/<id>``
(*key* tells state roots apart). Each controller comes from cgroup v2 when the
v2 hierarchy has it, from cgroup v1 otherwise; a v2 directory is made whenever
v2 is mounted at all, even without controllers, because v2 alone offers
``cgroup.kill`` (an atomic kill of the whole group), ``cpu.stat`` without the
cpu controller, and socket filters (``network: loopback``, :mod:`core.sockfilter`).

The directories are written into the session record, so joining costs one
``write(2)`` to each (:func:`core.process.join_cgroups`, on the hot path)
and ending or recovering needs no discovery. Processes that left the
session's root (a double fork and a chroot to ``/proc/1/root``) stay in its
cgroup, so ending through it (:mod:`core.cgroups_upkeep`, with live usage and
leftovers) catches what the process-tree scan cannot.
"""

from __future__ import annotations

import errno
import os

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

    Found in /proc/self/mountinfo once per process (cgroup hierarchies are
    mounted at boot), in the text the process read last if it read it at all
    (:func:`core.mounts.last_read`); *mountinfo* parses the given text instead.
    """
    global _found
    if mountinfo is None:
        if _found is not None:
            return _found
        from .mounts import last_read

        _found = _parse(last_read())
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
    return frozenset((read(os.path.join(path, "cgroup.controllers")) or "").split())


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

    A session with v1 directories also gets one in v1's pids hierarchy (or,
    without one, in v1's freezer), whether or not it limits processes: it
    stands in for v2's ``cgroup.kill`` (:func:`core.cgroups_upkeep.kill`) and counts the
    session's processes. The v2 directory is then made only when needed (a
    v2 controller, *filters*, or neither v1 pids nor freezer); *v2* forces it
    in or out (recover passes what the record has). Why not always: joining
    a v2 directory is a write to its ``cgroup.procs``, for which the kernel
    takes ``cgroup_threadgroup_rwsem`` for writing and waits for an RCU grace
    period (about 13 ms on a quiet host) unless the hierarchy is mounted with
    ``favordynmods``; a v1 directory is joined through ``tasks``
    (:func:`core.process.join_cgroups`), which does not wait.
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
        if "pids" in v1:
            wanted.setdefault("pids", v1["pids"])  # the kill (pids.max 0) and the process count
        elif "freezer" in v1:
            wanted["freezer"] = v1["freezer"]
    v1_kill = "freezer" in wanted or ("pids" in wanted and wanted["pids"].version == 1)
    if v2 is None:
        v2 = filters or unified in wanted.values() or not v1_kill
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


def limiting(limits: Mapping[str, int | float]) -> frozenset[str]:
    """The controllers (by their v2 and v1 names) that apply *limits*; the rest only count or kill."""
    return frozenset(name for key in limits for name in CONTROLLER_OF[key])


def group_at(path: str, found: Sequence[Hierarchy] | None = None) -> Group | None:
    """The directory *path* as a group of no controllers, if it lies in a mounted hierarchy."""
    for h in hierarchies() if found is None else found:
        if path.startswith(h.path.rstrip("/") + "/"):
            return Group(h, path, frozenset())
    return None


def write(path: str, value: str) -> None:
    """Write *value* to a cgroup file (one write)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read(path: str) -> str | None:
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
            else:  # a new v1 directory's cpu.cfs_period_us is already the kernel's default, CPU_PERIOD_US
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
        enabled = set((read(os.path.join(path, "cgroup.subtree_control")) or "").split())
        missing = wanted - enabled
        if missing:
            write(os.path.join(path, "cgroup.subtree_control"), " ".join(f"+{m}" for m in sorted(missing)))


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
                write(os.path.join(group.path, name), value)
            except OSError as e:
                why = "not offered by this kernel" if e.errno == errno.ENOENT else e.strerror
                raise SystemFailure(f"limits.{key}: cannot set {name} in {group.path} ({why})") from None
