"""Validation of the names people type: images, sessions, profiles, generations.

Every name that reaches the file system goes through :func:`check_name` first,
so no path can be built from ``../x``, ``a/b``, an empty string or a control
character (DESIGN.md invariant 6).
"""

from __future__ import annotations

from .errors import BadInput

_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_REST = _FIRST | frozenset("_.+-")
MAX_NAME = 64


def is_valid_name(name: object) -> bool:
    """True when *name* matches ``^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$``."""
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME and name[0] in _FIRST and _REST.issuperset(name)


def check_name(name: object, what: str = "name") -> str:
    """Return *name* if valid, else raise :class:`BadInput` with one clear line."""
    if is_valid_name(name):
        assert isinstance(name, str)
        return name
    if not isinstance(name, str) or name == "":
        raise BadInput(f"invalid {what}: it must not be empty")
    shown = printable(name)
    if len(name) > MAX_NAME:
        raise BadInput(f"invalid {what} {shown}: longer than {MAX_NAME} characters")
    raise BadInput(f"invalid {what} {shown}: use letters, digits and _ . + - (starting with a letter or digit)")


#: Endings of the files roost keeps beside images and sessions (``<id>.json``, ``<lock>.lock``,
#: ``<n>.yaml``, ``<lock>.lock.wait-<pid>``, ``.<name>.tmp-…``): no image or session may be named so
#: that its files could collide with another one's.
RESERVED_ENDINGS = (".json", ".yaml", ".lock", ".tmp")
RESERVED_PARTS = (".tmp-", ".wait-")


def is_reserved(name: str) -> bool:
    """True when *name* could collide with a file roost writes (see :data:`RESERVED_ENDINGS`)."""
    return name.endswith(RESERVED_ENDINGS) or any(part in name for part in RESERVED_PARTS)


def check_object_name(name: object, what: str) -> str:
    """A valid name (:func:`check_name`) that is not :func:`is_reserved`: for images and sessions."""
    checked = check_name(name, what)
    if is_reserved(checked):
        raise BadInput(
            f"invalid {what} {printable(checked)}: it may not end in {', '.join(RESERVED_ENDINGS)} "
            f"or contain {' or '.join(RESERVED_PARTS)} (the endings of roost's own files)"
        )
    return checked


def check_generation(value: object) -> int:
    """Parse a generation number (a positive integer)."""
    if isinstance(value, bool):
        raise BadInput(f"invalid generation {value!r}: expected a positive number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        number = int(value)
    else:
        raise BadInput(f"invalid generation {printable(str(value))}: expected a positive number")
    if number < 1:
        raise BadInput(f"invalid generation {number}: generations start at 1")
    return number


def printable(text: str, limit: int = 80) -> str:
    """Quote *text* for an error line: escapes control characters, truncates."""
    shown = repr(text[:limit])
    if len(text) > limit:
        shown += "…"
    return shown
