"""Deterministic crash points, for proving that every step of an operation is recoverable.

Operations call :func:`crashpoint` between their steps. When the environment
names that point in ``ROOST_CRASH_AT`` (``promote:staged``, say, or several
separated by commas), the process kills itself with SIGKILL right there, just
as a power cut or the OOM killer would. Tests iterate over :data:`POINTS`.
"""

from __future__ import annotations

import os


def _armed() -> frozenset[str]:
    """The crash points named in ``ROOST_CRASH_AT``, for root itself only: never for a caller through sudo."""
    if os.geteuid() == 0 and os.environ.get("SUDO_UID", "0") != "0":
        return frozenset()
    return frozenset(p for p in os.environ.get("ROOST_CRASH_AT", "").split(",") if p)


_ARMED = _armed()

POINTS: dict[str, tuple[str, ...]] = {
    "create": ("staged", "renamed"),
    "begin": ("recorded", "cloned", "mounted", "profiled"),
    "end": ("marked", "killed", "unmounted", "removed", "unleased"),
    "promote": (
        "leased",
        "marked",
        "unmounted",
        "staged",
        "synced",
        "renamed",
        "committed",
        "switched",
        "ended",
    ),
    "rollback": ("switched",),
    "convert": ("staged", "exchanged"),
    "gc": ("trashed",),
    "remove": ("sessions-ended", "trashed"),
    "recover": ("session",),
    "receive": ("staged", "committed", "renamed", "switched"),
    "publish": ("streaming", "written"),
}


def crashpoint(operation: str, step: str) -> None:
    if _ARMED and f"{operation}:{step}" in _ARMED:
        os.kill(os.getpid(), 9)  # SIGKILL; the signal module is not worth its import here
