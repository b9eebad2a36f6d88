"""The ids of a rootless user namespace: the user's subordinate ranges, mapped "keep-id".

An ordinary user may map, through the setuid helpers ``newuidmap`` and
``newgidmap`` (package uidmap), the ranges ``/etc/subuid`` and ``/etc/subgid``
give them, plus their own uid and gid. roost lays them out as rootless podman
does with ``--userns=keep-id``:

==============================  ==================================================
inside the namespace            on disk (the host's ids)
==============================  ==================================================
0 … U-1                         first subordinate id … (root is the first one)
U (the user's own uid)          U: what the user makes inside is theirs outside
U+1 … count                     the rest of the subordinate ids, in order
==============================  ==================================================

So root-owned files of an image are owned by the first subordinate id on disk
(as in sbuild's unshare mode), ``nobody`` (65534) is mapped, and the user keeps
their own uid inside a session: the host's ``/home`` and ``/tmp`` bound into it
show the right owner, and ``session run`` runs commands as the user without
changing ids. Tarballs always carry the ids *inside* the namespace (0 for
root), so they are exchangeable with sbuild's and mmdebstrap's unshare mode.

The layout depends only on the user's ids and ranges; it is recorded in the
state root (``idmap.json``) the first time and checked afterwards, because a
changed range would silently give every file of every image another owner.
"""

from __future__ import annotations

from ..errors import BadInput
from ..struct import Struct

SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"

#: Enough for every id a Debian system uses (nobody and nogroup are 65534).
MIN_IDS = 65536


class Extent(Struct, frozen=True):
    """One line of a uid_map: ``count`` ids from ``inside`` map to ``outside``."""

    inside: int
    outside: int
    count: int


class IdMap(Struct, frozen=True):
    """The uid and gid layout of every rootless namespace of one user."""

    user: str
    uid: int
    gid: int
    uids: tuple[Extent, ...]
    gids: tuple[Extent, ...]

    def host_uid(self, inside: int) -> int | None:
        return _lookup(self.uids, inside, to_host=True)

    def host_gid(self, inside: int) -> int | None:
        return _lookup(self.gids, inside, to_host=True)

    def inside_uid(self, host: int) -> int | None:
        return _lookup(self.uids, host, to_host=False)

    def inside_gid(self, host: int) -> int | None:
        return _lookup(self.gids, host, to_host=False)

    def owns_host_uid(self, host: int) -> bool:
        """True if files owned by host uid *host* belong to this user (theirs or subordinate)."""
        return self.inside_uid(host) is not None

    def newuidmap_args(self, pid: int) -> list[str]:
        return ["newuidmap", str(pid), *_triples(self.uids)]

    def newgidmap_args(self, pid: int) -> list[str]:
        return ["newgidmap", str(pid), *_triples(self.gids)]

    def to_json(self) -> dict[str, object]:
        return {
            "user": self.user,
            "uid": self.uid,
            "gid": self.gid,
            "uids": [[e.inside, e.outside, e.count] for e in self.uids],
            "gids": [[e.inside, e.outside, e.count] for e in self.gids],
        }

    @classmethod
    def from_json(cls, data: object) -> IdMap | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                user=str(data["user"]),
                uid=int(data["uid"]),
                gid=int(data["gid"]),
                uids=tuple(Extent(int(a), int(b), int(c)) for a, b, c in data["uids"]),
                gids=tuple(Extent(int(a), int(b), int(c)) for a, b, c in data["gids"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


def _triples(extents: tuple[Extent, ...]) -> list[str]:
    out: list[str] = []
    for e in extents:
        out += [str(e.inside), str(e.outside), str(e.count)]
    return out


def _lookup(extents: tuple[Extent, ...], value: int, *, to_host: bool) -> int | None:
    for e in extents:
        start, other = (e.inside, e.outside) if to_host else (e.outside, e.inside)
        if start <= value < start + e.count:
            return other + value - start
    return None


def read_ranges(path: str, user: str, uid: int) -> list[tuple[int, int]]:
    """The (start, count) ranges *path* (``/etc/subuid`` or ``/etc/subgid``) gives *user*, in file order.

    Lines name the user or their uid, as newuidmap accepts both.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (user, str(uid)):
            continue
        if not (parts[1].isdigit() and parts[2].isdigit()):
            continue
        start, count = int(parts[1]), int(parts[2])
        if count > 0:
            found.append((start, count))
    return found


def keep_id(own: int, ranges: list[tuple[int, int]]) -> tuple[Extent, ...]:
    """Extents mapping inside ids 0… onto *ranges* in order, with *own* mapped to itself.

    The inside id *own* is skipped by the subordinate ranges (they continue at
    own+1), so every inside id maps to exactly one host id.
    """
    extents: list[Extent] = []
    cursor = 0
    for start, count in ranges:
        if cursor <= own < cursor + count:
            before = own - cursor
            if before:
                extents.append(Extent(cursor, start, before))
            extents.append(Extent(own + 1, start + before, count - before))
            cursor += count + 1
        else:
            extents.append(Extent(cursor, start, count))
            cursor += count
    extents.append(Extent(own, own, 1))
    return tuple(sorted(extents, key=lambda e: e.inside))


def _fix(what: str, user: str) -> str:
    return (
        f"no subordinate {what} range of at least {MIN_IDS} ids for {user} in /etc/sub{what}: "
        f"sudo usermod --add-sub{what}s START-END {user} (e.g. 100000-165535, a range no other user has)"
    )


def for_user(user: str, uid: int, gid: int, *, subuid: str = SUBUID, subgid: str = SUBGID) -> IdMap:
    """The id layout of *user*; raises :class:`BadInput` (one line, with the fix) if a range is missing."""
    uid_ranges = read_ranges(subuid, user, uid)
    gid_ranges = read_ranges(subgid, user, uid)
    if sum(c for _, c in uid_ranges) < MIN_IDS:
        raise BadInput(_fix("uid", user))
    if sum(c for _, c in gid_ranges) < MIN_IDS:
        raise BadInput(_fix("gid", user))
    for own, ranges, what in ((uid, uid_ranges, "uid"), (gid, gid_ranges, "gid")):
        for start, count in ranges:
            if start <= own < start + count:
                raise BadInput(
                    f"/etc/sub{what} gives {user} a range {start}-{start + count - 1} that holds their own "
                    f"{what} {own}: give them a range of other ids"
                )
    return IdMap(user=user, uid=uid, gid=gid, uids=keep_id(uid, uid_ranges), gids=keep_id(gid, gid_ranges))


def current() -> IdMap:
    """The layout for the user running this process."""
    import os
    import pwd

    uid = os.getuid()
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise BadInput(f"uid {uid} has no passwd entry: rootless roost needs a user name") from None
    return for_user(entry.pw_name, uid, entry.pw_gid)
