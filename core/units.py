"""Sizes as people read them, shared by the command line and the console."""

from __future__ import annotations


def human_size(size: int | None) -> str:
    """``512 B``, ``12.3 MiB``, ``1.2 GiB`` (IEC units); ``-`` when unknown."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
