"""What a diff reports: file states, file changes, and the summary of a whole diff."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from .dpkg import PackageChange

#: File types by the name diffs use for them.
TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}

#: Everything a changed entry may list in ``what``, in the order it is listed.
ASPECTS = ("type", "content", "size", "mtime", "mode", "owner", "target", "device", "xattrs", "links")

#: How a change is shown in one character (as ``ostree diff`` does).
MARKS = {"added": "A", "removed": "D", "changed": "M"}


def type_name(mode: int) -> str:
    return TYPES.get(stat.S_IFMT(mode), "unknown")


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs microseconds per field
class FileState:
    """One side of a file change: what the entry is in one root."""

    type: str
    mode: int  # permission bits (07777)
    uid: int
    gid: int
    size: int  # bytes, for regular files (0 otherwise)
    mtime_ns: int
    links: int  # hard links (non-directories)
    target: str | None = None  # symlinks
    device: tuple[int, int] | None = None  # character and block devices: (major, minor)
    xattrs: tuple[str, ...] = ()  # names of extended attributes

    @classmethod
    def of(cls, st: os.stat_result, *, target: str | None = None, xattrs: tuple[str, ...] = ()) -> FileState:
        kind = type_name(st.st_mode)
        device = (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("char", "block") else None
        return cls(
            type=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size if kind == "file" else 0,
            mtime_ns=st.st_mtime_ns,
            links=st.st_nlink if kind != "dir" else 1,
            target=target,
            device=device,
            xattrs=xattrs,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "mode": f"{self.mode:04o}",
            "uid": self.uid,
            "gid": self.gid,
        }
        if self.type == "file":
            out["size"] = self.size
        out["mtime"] = iso_ns(self.mtime_ns)
        if self.target is not None:
            out["target"] = self.target
        if self.device is not None:
            out["device"] = f"{self.device[0]}:{self.device[1]}"
        if self.xattrs:
            out["xattrs"] = list(self.xattrs)
        if self.links > 1:
            out["links"] = self.links
        return out


_SECONDS: dict[int, str] = {}


def iso_ns(ns: int) -> str:
    """ISO 8601 in UTC with the sub-second part when there is one: ``2026-11-23T20:06:00.25Z``."""
    seconds, rest = divmod(ns, 1_000_000_000)
    text = _SECONDS.get(seconds)
    if text is None:  # files written together share their second: format it once
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        text = _SECONDS[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if rest:
        text += f".{rest:09d}".rstrip("0")
    return text + "Z"


@dataclass(slots=True)
class FileChange:
    """One path added, removed or changed between the two roots of a diff."""

    path: str  # absolute inside the root: /usr/bin/hello
    change: str  # added, removed, changed
    old: FileState | None
    new: FileState | None
    what: tuple[str, ...] = ()  # for changed: which of ASPECTS differ
    link_to: str | None = None  # a path reported earlier in this diff that is the same file (a hard link)

    @property
    def type(self) -> str:
        state = self.new if self.new is not None else self.old
        assert state is not None
        return state.type

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "change": self.change}
        if self.what:
            out["what"] = list(self.what)
        if self.old is not None:
            out["old"] = self.old.to_json()
        if self.new is not None:
            out["new"] = self.new.to_json()
        if self.link_to is not None:
            out["link_to"] = self.link_to
        return out

    def detail(self) -> str:
        """A short description for people: what the entry is, or what changed and how."""
        from ..units import human_size

        if self.change != "changed":
            state = self.new if self.new is not None else self.old
            assert state is not None
            words = [state.type, f"{state.mode:04o}", f"{state.uid}:{state.gid}"]
            if state.type == "file":
                words.append(human_size(state.size))
            if state.target is not None:
                words.append(f"-> {state.target}")
            if state.device is not None:
                words.append(f"{state.device[0]}:{state.device[1]}")
            if self.link_to is not None:
                words.append(f"(hard link to {self.link_to})")
            return " ".join(words)
        a, b = self.old, self.new
        assert a is not None and b is not None
        parts = []
        for aspect in self.what:
            if aspect == "type":
                parts.append(f"type {a.type} -> {b.type}")
            elif aspect == "size":
                parts.append(f"size {human_size(a.size)} -> {human_size(b.size)}")
            elif aspect == "mode":
                parts.append(f"mode {a.mode:04o} -> {b.mode:04o}")
            elif aspect == "owner":
                parts.append(f"owner {a.uid}:{a.gid} -> {b.uid}:{b.gid}")
            elif aspect == "target":
                parts.append(f"target {a.target} -> {b.target}")
            elif aspect == "device":
                parts.append(f"device {_dev(a)} -> {_dev(b)}")
            elif aspect == "links":
                parts.append(f"links {a.links} -> {b.links}")
            elif aspect == "xattrs":
                parts.append("xattrs " + ",".join(a.xattrs or ("-",)) + " -> " + ",".join(b.xattrs or ("-",)))
            else:
                parts.append(aspect)  # content, mtime
        return ", ".join(parts)


def _dev(state: FileState) -> str:
    return f"{state.device[0]}:{state.device[1]}" if state.device else "-"


@dataclass
class DiffSummary:
    """The packages and the counts of a diff: what a dialog shows before the full list."""

    packages: list[PackageChange] | None
    added: int = 0
    removed: int = 0
    changed: int = 0
    #: type -> {"added": n, "removed": n, "changed": n}
    types: dict[str, dict[str, int]] = field(default_factory=dict)
    #: bytes of regular files after minus before
    size_delta: int = 0

    def add(self, change: FileChange) -> None:
        if change.change == "added":
            self.added += 1
        elif change.change == "removed":
            self.removed += 1
        else:
            self.changed += 1
        counts = self.types.setdefault(change.type, {"added": 0, "removed": 0, "changed": 0})
        counts[change.change] += 1
        if change.new is not None and change.new.type == "file":
            self.size_delta += change.new.size
        if change.old is not None and change.old.type == "file":
            self.size_delta -= change.old.size

    @property
    def files(self) -> int:
        return self.added + self.removed + self.changed

    def package_counts(self) -> dict[str, int] | None:
        if self.packages is None:
            return None
        counts = {"installed": 0, "removed": 0, "upgraded": 0, "downgraded": 0}
        for p in self.packages:
            counts[p.change] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "packages": self.package_counts(),
            "files": {"added": self.added, "removed": self.removed, "changed": self.changed},
            "types": {t: dict(c) for t, c in sorted(self.types.items())},
            "size_delta": self.size_delta,
        }
