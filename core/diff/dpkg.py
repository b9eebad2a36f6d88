"""Debian packages in a root: dpkg's version ordering and the status database.

:func:`compare_versions` is dpkg's own algorithm (``lib/dpkg/version.c``:
epoch numerically, then upstream version and Debian revision with
``verrevcmp``, where ``~`` sorts before everything, even the end of the
string, letters before other characters, and digit runs compare as
numbers); tests check it against ``dpkg --compare-versions``.

:func:`read_status` streams ``var/lib/dpkg/status`` paragraph by paragraph
and keeps only what a package diff needs: name, architecture and version of
every package that is on the system (any state but ``not-installed`` and
``config-files``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

#: The status file, relative to a root.
STATUS = "var/lib/dpkg/status"

#: dpkg states in which a package's files are (at least partly) on the system.
PRESENT = frozenset(
    ("installed", "half-installed", "unpacked", "half-configured", "triggers-awaited", "triggers-pending")
)


class BadVersion(ValueError):
    """A version string dpkg itself would refuse."""


_DIGITS = frozenset("0123456789")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _order(c: str) -> int:
    if c in _DIGITS:
        return 0
    if c in _LETTERS:
        return ord(c)
    if c == "~":
        return -1
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    """dpkg's ``verrevcmp``: compare two upstream versions or two revisions."""
    i = j = 0
    la, lb = len(a), len(b)
    while i < la or j < lb:
        first_diff = 0
        while (i < la and a[i] not in _DIGITS) or (j < lb and b[j] not in _DIGITS):
            ac = _order(a[i]) if i < la else 0
            bc = _order(b[j]) if j < lb else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < la and a[i] == "0":
            i += 1
        while j < lb and b[j] == "0":
            j += 1
        while i < la and j < lb and a[i] in _DIGITS and b[j] in _DIGITS:
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < la and a[i] in _DIGITS:
            return 1
        if j < lb and b[j] in _DIGITS:
            return -1
        if first_diff:
            return first_diff
    return 0


def parse_version(version: str) -> tuple[int, str, str]:
    """(epoch, upstream version, revision) as dpkg's ``parseversion`` splits them."""
    text = version.strip()
    if not text or any(c.isspace() for c in text):
        raise BadVersion(f"invalid version {version!r}")
    epoch = 0
    head, colon, rest = text.partition(":")
    if colon:
        if not (head.isascii() and head.isdigit()):
            raise BadVersion(f"invalid epoch in version {version!r}")
        epoch = int(head)
        text = rest
    upstream, dash, revision = text.rpartition("-")
    if not dash:
        upstream, revision = text, ""
    if not upstream or (dash and not revision):
        raise BadVersion(f"invalid version {version!r}")
    return epoch, upstream, revision


def compare_versions(a: str, b: str) -> int:
    """Negative, zero or positive as *a* is older than, the same as or newer than *b* (dpkg's order)."""
    ea, ua, ra = parse_version(a)
    eb, ub, rb = parse_version(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


# --- the status database -----------------------------------------------------------


@dataclass(frozen=True)
class Package:
    name: str
    architecture: str
    version: str


def read_status(lines: Iterable[bytes]) -> Iterator[Package]:
    """The packages present according to a status file's *lines* (bytes, as read)."""
    fields: dict[bytes, bytes] = {}
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            package = _package(fields)
            if package is not None:
                yield package
            fields = {}
            continue
        if line[:1] in (b" ", b"\t"):
            continue  # a continuation line of a multi-line field
        key, colon, value = line.partition(b":")
        if colon and key in (b"Package", b"Status", b"Architecture", b"Version"):
            fields[key] = value.strip()
    package = _package(fields)
    if package is not None:
        yield package


def _package(fields: dict[bytes, bytes]) -> Package | None:
    name = fields.get(b"Package")
    status = fields.get(b"Status", b"").split()
    if not name or len(status) != 3 or status[2].decode("ascii", "replace") not in PRESENT:
        return None
    return Package(
        name=name.decode("utf-8", "replace"),
        architecture=fields.get(b"Architecture", b"").decode("utf-8", "replace"),
        version=fields.get(b"Version", b"").decode("utf-8", "replace"),
    )


# --- what changed --------------------------------------------------------------------


@dataclass(frozen=True)
class PackageChange:
    """One package installed, removed, upgraded or downgraded between two roots."""

    name: str
    architecture: str
    change: str  # installed, removed, upgraded, downgraded
    old: str | None  # version before
    new: str | None  # version after
    display: str = ""  # name, with :architecture when it is neither native nor all

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "change": self.change,
            "old": self.old,
            "new": self.new,
        }


#: The order changes are listed in (upgrades first: what an operator checks first).
CHANGE_ORDER = ("upgraded", "downgraded", "installed", "removed")


def changes(old: Iterable[Package], new: Iterable[Package]) -> list[PackageChange]:
    """What turns the packages *old* into *new*, by name (then architecture)."""
    before = {(p.name, p.architecture): p for p in old}
    after = {(p.name, p.architecture): p for p in new}
    native = _native(after) or _native(before)
    out = []
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        name, arch = key
        display = name if arch in ("all", native, "") else f"{name}:{arch}"
        if a is None and b is not None:
            out.append(PackageChange(name, arch, "installed", None, b.version, display))
        elif b is None and a is not None:
            out.append(PackageChange(name, arch, "removed", a.version, None, display))
        elif a is not None and b is not None and a.version != b.version:
            try:
                order = compare_versions(a.version, b.version)
            except BadVersion:
                order = -1 if a.version < b.version else 1
            if order != 0:
                out.append(
                    PackageChange(name, arch, "upgraded" if order < 0 else "downgraded", a.version, b.version, display)
                )
    return out


def _native(packages: dict[tuple[str, str], Package]) -> str | None:
    """dpkg's native architecture is the architecture of the dpkg package itself."""
    for (name, arch), _ in packages.items():
        if name == "dpkg":
            return arch
    return None
