"""Printing a diff (``session diff``, ``image diff``): as it is read, never collected.

Text: a line naming the two sides and how they were compared, the package
changes, one line per changed path (``A`` added, ``D`` removed, ``M``
changed, as ``ostree diff`` marks them), then the counts. JSON: one object
whose ``files`` list is written an entry at a time (one entry per line), the
``summary`` after it.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

    from core.diff import Diff, DiffSummary, FileChange, PackageChange


def show(ctx: Any, diff: Diff) -> int:
    """Print *diff* (entered here) for the command line; ``--summary`` leaves the file list out."""
    from core.diff import DiffSummary

    listing = not getattr(ctx.args, "summary", False)
    out = sys.stdout
    with diff:
        summary = DiffSummary(diff.packages())
        diff.plan()
        if ctx.json:
            _json(out, diff, summary, listing)
        else:
            _text(out, diff, summary, listing)
    return 0


# --- JSON --------------------------------------------------------------------------------


def _dumps(value: Any, indent: int | None = None) -> str:
    """JSON in ASCII: other characters, and names that are not UTF-8, as ``\\u`` escapes (they round-trip).

    ``json.dumps`` with its defaults reuses one encoder and the C string
    encoder's fast path: three times faster per entry than with
    ``ensure_ascii=False``.
    """
    import json

    return json.dumps(value) if indent is None else json.dumps(value, indent=indent)


def _json(out: TextIO, diff: Diff, summary: DiffSummary, listing: bool) -> None:
    out.write("{\n")
    for key, value in diff.header().items():
        out.write(f'  "{key}": {_nested(value)},\n')
    packages = None if summary.packages is None else [p.to_json() for p in summary.packages]
    out.write(f'  "packages": {_nested(packages)},\n')
    if listing:
        out.write('  "files": [')
        first = True
        for change in diff.entries():
            summary.add(change)
            out.write(("\n    " if first else ",\n    ") + _dumps(change.to_json()))
            first = False
        out.write("\n  ],\n" if not first else "],\n")
    else:
        for change in diff.entries():
            summary.add(change)
    out.write(f'  "summary": {_nested(summary.to_json())}\n')
    out.write("}\n")


def _nested(value: Any) -> str:
    return _dumps(value, indent=2).replace("\n", "\n  ")


# --- text --------------------------------------------------------------------------------


def _side(side: dict[str, Any]) -> str:
    if side.get("session"):
        return f"session {side['session']}"
    return f"generation {side['generation']} of {side['image']}"


def _text(out: TextIO, diff: Diff, summary: DiffSummary, listing: bool) -> None:
    from core.errors import one_line

    origin = diff.origin
    head = f"{_side(origin)} -> {_side(diff.target)}"
    if diff.target.get("session"):
        head = f"{_side(diff.target)}: changes against {_side(origin)}"
    out.write(f"{head} ({diff.describe()})\n")
    if diff.note:
        out.write(f"note: {diff.note}\n")
    _packages(out, summary.packages)
    for change in diff.entries():
        summary.add(change)
        if listing:
            out.write(_line(change, one_line))
    out.write(_counts(summary) + "\n")


def _packages(out: TextIO, packages: list[PackageChange] | None) -> None:
    if packages is None:
        return
    if not packages:
        out.write("packages: none changed\n")
        return
    counts: dict[str, int] = {}
    for p in packages:
        counts[p.change] = counts.get(p.change, 0) + 1
    out.write("packages: " + ", ".join(f"{n} {change}" for change, n in counts.items()) + "\n")
    width = max(len(p.display or p.name) for p in packages)
    for p in packages:
        name = (p.display or p.name).ljust(width)
        if p.old is not None and p.new is not None:
            versions = f"{p.old} -> {p.new}"
        else:
            versions = p.new if p.new is not None else p.old or ""
        out.write(f"  {p.change:<10}  {name}  {versions}\n")


def _line(change: FileChange, escape: Any) -> str:
    from core.diff.model import MARKS

    path = escape(change.path) + ("/" if change.type == "dir" and change.path != "/" else "")
    return f"{MARKS[change.change]} {path}  {escape(change.detail())}\n"


def _counts(summary: DiffSummary) -> str:
    from core.units import human_size

    delta = summary.size_delta
    size = f"{'+' if delta >= 0 else '-'}{human_size(abs(delta))}"
    return f"files: {summary.added} added, {summary.removed} removed, {summary.changed} changed ({size})"
