"""Printing for the command line: aligned tables, sizes, JSON, progress on a terminal."""

from __future__ import annotations

import sys
import time

from core.units import human_size as human_size  # re-exported: the commands format sizes with it

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at start-up
    from collections.abc import Sequence
    from typing import Any, TextIO


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def fields(pairs: Sequence[tuple[str, Any]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    width = max(len(k) for k, _ in pairs) + 1
    for key, value in pairs:
        out.write(f"{(key + ':').ljust(width)} {'-' if value is None else value}\n")


def emit_json(data: Any, out: TextIO | None = None) -> None:
    import json

    out = out or sys.stdout
    json.dump(data, out, indent=2, ensure_ascii=False)
    out.write("\n")


class TerminalProgress:
    """One self-rewriting line on stderr, only when stderr is a terminal.

    With a fraction the line is a bar, ``[########..........]  40% installing
    essential packages (stage 4 of 6)``, as apt draws its own; without one, the
    message alone.
    """

    WIDTH = 20

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.last = 0.0
        self.message = ""
        self.shown = False

    def __call__(self, fraction: float | None, message: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        # A bar that only moved is redrawn ten times a second; a new message (a stage) always.
        if now - self.last < 0.1 and fraction not in (None, 1.0) and message == self.message:
            return
        self.last, self.message = now, message
        if fraction is not None:
            filled = round(max(0.0, min(fraction, 1.0)) * self.WIDTH)
            bar = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {fraction * 100:3.0f}% "
        else:
            bar = ""
        line = f"{bar}{message}"[:120]
        self.stream.write(f"\r\x1b[K{line}")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False
