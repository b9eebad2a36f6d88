"""Counters the reliability suite reports in one summary line at the end of a run."""

from __future__ import annotations

COUNTS = {
    "operations killed": 0,
    "states checked": 0,
    "concurrent operations": 0,
    "hostile inputs tried": 0,
    "leaks found": 0,
}


def bump(name: str, by: int = 1) -> None:
    COUNTS[name] += by


def summary() -> str:
    return ", ".join(f"{value} {name}" for name, value in COUNTS.items())
