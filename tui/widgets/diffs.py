"""What a diff changed, as the console shows it: computed in a thread worker, said in a few lines.

The engine's diffs (``Engine.session_diff``, ``Engine.image_diff``) read
trees, so they never run on the event loop: :class:`DiffLines` shows
"computing…", runs its computation in a thread worker and shows the lines it
returns, or the error as one line. The functions below are the computations
(they run in the worker) and how their results read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from textual import work
from textual.widgets import Static

from core.diff.dpkg import PackageChange
from core.diff.model import DiffSummary
from core.engine import Engine
from core.errors import RoostError
from core.units import human_size

#: What each computation returns: (what, how it changed) pairs, e.g. ("files", "2 added, …").
Pairs = list[tuple[str, str]]

COMPUTING = "computing…"


def package_counts(packages: Sequence[PackageChange]) -> str:
    counts: dict[str, int] = {}
    for p in packages:
        counts[p.change] = counts.get(p.change, 0) + 1
    return ", ".join(f"{n} {change}" for change, n in counts.items())


def names(packages: Sequence[PackageChange], limit: int = 6) -> str:
    """``ccache, debhelper, libc6 and 4 more``."""
    shown = [p.display or p.name for p in packages[:limit]]
    more = len(packages) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def summary_pairs(summary: DiffSummary) -> Pairs:
    """Packages and files of a summary, as the promote dialog and the history detail show them."""
    out: Pairs = []
    if summary.packages is None:
        out.append(("packages", "no dpkg database"))
    elif not summary.packages:
        out.append(("packages", "none changed"))
    else:
        out.append(("packages", f"{package_counts(summary.packages)}: {names(summary.packages)}"))
    delta = summary.size_delta
    size = f"{'+' if delta >= 0 else '-'}{human_size(abs(delta))}"
    out.append(("files", f"{summary.added} added, {summary.removed} removed, {summary.changed} changed ({size})"))
    return out


def change_back(p: PackageChange) -> str:
    """``libc6 2.36-9+deb12u9 -> 2.36-9 (downgraded)``, ``ccache 4.8 (removed)``."""
    if p.old is not None and p.new is not None:
        versions = f" {p.old} -> {p.new}"
    else:
        version = p.new if p.new is not None else p.old
        versions = f" {version}" if version else ""
    return f"{p.display or p.name}{versions} ({p.change})"


def rollback_pairs(packages: Sequence[PackageChange] | None, limit: int = 6) -> Pairs:
    """What a rollback does to packages (from the current generation to the one rolled back to)."""
    if packages is None:
        return [("packages", "no dpkg database in these generations: none to name")]
    if not packages:
        return [("packages", "none change back (only files differ)")]
    out: Pairs = [("packages", f"{package_counts(packages)} by the rollback:")]
    out += [("", f"  • {change_back(p)}") for p in packages[:limit]]
    if len(packages) > limit:
        out.append(("", f"  … and {len(packages) - limit} more (roost image diff shows them all)"))
    return out


# --- the computations (in a thread worker) ------------------------------------------------


def session_changes(engine: Engine, session: str) -> Pairs:
    """What *session* changed against its generation: packages and file counts."""
    with engine.session_diff(session) as diff:
        return summary_pairs(diff.summary())


def generation_changes(engine: Engine, image: str, generation: int, parent: int) -> Pairs:
    """What generation *generation* of *image* changed against *parent*."""
    with engine.image_diff(image, parent, generation) as diff:
        return summary_pairs(diff.summary())


def rollback_changes(engine: Engine, image: str, current: int, target: int) -> Pairs:
    """The packages that change when *image* goes from *current* back to *target* (dpkg's status only)."""
    with engine.image_diff(image, current, target) as diff:
        return rollback_pairs(diff.packages())


def compute(fn: Callable[[], Pairs]) -> Pairs:
    """Run *fn*; an error becomes one line (a diff is information, never a reason to fail)."""
    try:
        return fn()
    except RoostError as e:
        return [("changes", f"not shown: {e}")]
    except Exception as e:  # noqa: BLE001 - shown in one line, the console goes on
        return [("changes", f"not shown: {type(e).__name__}: {e}")]


def text(pairs: Pairs) -> str:
    return "\n".join(f"{key}: {value}" if key else value for key, value in pairs)


class DiffLines(Static):
    """Lines a diff computation returns: "computing…" meanwhile, its error in one line if it fails."""

    def __init__(self, heading: str, fn: Callable[[], Pairs], *, classes: str = "dialog-line") -> None:
        super().__init__(f"{heading} {COMPUTING}", classes=classes, markup=False)
        self.heading = heading
        self.fn = fn
        #: What was computed, once it was (None until then).
        self.pairs: Pairs | None = None

    def on_mount(self) -> None:
        self._compute()

    @work(thread=True, exit_on_error=False, group="diff")
    def _compute(self) -> None:
        pairs = compute(self.fn)
        try:
            self.app.call_from_thread(self._show, pairs)
        except RuntimeError:
            pass  # the console is shutting down

    def _show(self, pairs: Pairs) -> None:
        self.pairs = pairs
        if self.is_attached:
            self.update(f"{self.heading}\n{text(pairs)}")
