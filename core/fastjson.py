"""JSON parsing for the hot path, without importing ``json`` (and with it ``re``).

``import json`` costs about 5 ms at start-up, most of it compiling regular
expressions that only the pure-Python fallback uses. ``session run`` reads one
small record per call, so it calls the C scanner that ``json`` itself uses,
configured exactly as ``json.loads`` configures it.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds to import; annotations are strings here
    from typing import Any


class _Context:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float


_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]
_WS = " \t\n\r"


def loads(text: str) -> Any:
    """Like ``json.loads`` for well-formed input; raises ValueError otherwise."""
    start = 0
    end = len(text)
    while start < end and text[start] in _WS:
        start += 1
    try:
        value, stop = _scan(text, start)
    except StopIteration:
        raise ValueError("not JSON") from None
    while stop < end and text[stop] in _WS:
        stop += 1
    if stop != end:
        raise ValueError("extra data after JSON value")
    return value
