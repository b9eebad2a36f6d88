"""JSON for the hot path, without importing ``json`` (and with it ``re``).

``import json`` costs milliseconds at start-up, most of it compiling regular
expressions that only the pure-Python fallback uses. Session records, lock
holders and journal lines are small, so roost reads them with the C scanner
``json`` itself uses (configured exactly as ``json.loads`` configures it) and
writes them with the C string encoder and a few lines of recursion.
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


_encode_str = _json.encode_basestring


def dumps(value: Any) -> str:
    """Compact JSON (like ``json.dumps(v, separators=(",", ":"), ensure_ascii=False)``)."""
    parts: list[str] = []
    _dump(value, parts.append)
    return "".join(parts)


def _dump(value: Any, out: Any) -> None:
    if isinstance(value, str):
        out(_encode_str(value))
    elif value is None:
        out("null")
    elif value is True:
        out("true")
    elif value is False:
        out("false")
    elif isinstance(value, int):
        out(int.__repr__(value))
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"cannot write {value!r} as JSON")
        out(float.__repr__(value))
    elif isinstance(value, dict):
        out("{")
        first = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON keys must be strings, not {key!r}")
            if not first:
                out(",")
            first = False
            out(_encode_str(key))
            out(":")
            _dump(item, out)
        out("}")
    elif isinstance(value, (list, tuple)):
        out("[")
        for i, item in enumerate(value):
            if i:
                out(",")
            _dump(item, out)
        out("]")
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")
