"""How the console writes sizes, ages and times: short, fixed-width, in UTC."""

from __future__ import annotations

import calendar
import time
from functools import lru_cache
from typing import Any


def size(value: int | None) -> str:
    """``0``, ``512B``, ``4.0K``, ``12.3M``, ``1.2G`` (IEC units, at most 6 characters)."""
    if value is None:
        return "-"
    if value < 1024:
        return f"{value}B" if value else "0"
    amount = float(value)
    for unit in "KMGTP":
        amount /= 1024
        if amount < 999.95 or unit == "P":
            return f"{amount:.1f}{unit}" if amount < 99.95 else f"{amount:.0f}{unit}"
    return f"{value}B"


def percent(value: float | None) -> str:
    """``0%``, ``12%``, ``180%`` (of one CPU; at most 4 characters), ``…`` before a rate is known."""
    if value is None:
        return "…"
    return f"{min(value, 999):.0f}%"


@lru_cache(maxsize=8192)
def epoch(iso: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 UTC time as roost writes it, or None."""
    try:
        return float(calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")))
    except (ValueError, TypeError):
        return None


def duration(seconds: float | None) -> str:
    """``<1m``, ``12m``, ``3h``, ``2d``: at most 4 characters, changing at most once a minute."""
    if seconds is None:
        return "?"
    s = max(0, int(seconds))
    if s < 60:
        return "<1m"
    if s < 120 * 60:
        return f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def long_duration(seconds: float | None) -> str:
    """``3 h 12 min``, for the detail panel."""
    if seconds is None:
        return "?"
    s = max(0, int(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{s} s"


def age(iso: str, now: float) -> str:
    t = epoch(iso)
    return duration(None if t is None else now - t)


def stamp(iso: str) -> str:
    """``2026-11-23 20:20`` (UTC) from an ISO time; the input itself if it does not parse."""
    if len(iso) >= 16 and iso[10] == "T":
        return f"{iso[:10]} {iso[11:16]}"
    return iso


def when(iso: str, now: float) -> str:
    """``09:27`` for a time on the day of *now* (UTC), ``11-21`` for an earlier day."""
    if len(iso) < 16 or iso[10] != "T":
        return iso[:5]
    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    return iso[11:16] if iso[:10] == today else iso[5:10]


def event_target(entry: dict[str, Any]) -> str:
    """What a journal entry acted on: a session, an image and generation, or nothing."""
    session = entry.get("session")
    image = entry.get("image")
    generation = entry.get("generation")
    if session:
        return str(session)
    if image and generation is not None:
        return f"{image}@{generation}"
    return str(image or "")
