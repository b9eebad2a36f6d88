"""Session names as schroot's clients choose them, mapped onto roost's session ids.

schroot takes any session name a file name can hold; its clients generate
long ones: piuparts names each session ``CHROOT-<uuid1>-piuparts`` (46
characters beyond the chroot's name), autopkgtest takes one from ``-s``.
roost's names are at most 64 characters (``^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$``).

The door accepts longer names of the same characters, up to 255, and maps
each to a roost id without keeping a table: the first 55 characters, a dash
and the first 8 hex digits of the name's SHA-256 (64 characters in all). The
mapping is a pure function, so every later ``-r``, ``-e``, ``--location``,
``-i`` or ``-l`` that names the long name reaches the same session, from any
process; two different long names collide only if both their first 55
characters and their 32-bit digests agree, and even then the second ``-b`` is
refused (the id is taken), never merged. A name of 64 characters or fewer is
used as it is. ``roost session list`` and ``-l --all-sessions`` show the
roost id; ``-b`` prints the name as it was given, as schroot does.
"""

from __future__ import annotations

#: the longest session name the door accepts (a file name's limit, as schroot's)
MAX_LONG = 255
#: characters of a long name kept in its roost id, before the dash and digest
HEAD = 55
_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_REST = _FIRST | frozenset("_.+-")


def is_long_name(name: str) -> bool:
    """A name longer than roost's 64 characters, of the characters roost's names use."""
    return 64 < len(name) <= MAX_LONG and name[0] in _FIRST and all(c in _REST for c in name)


def session_id(name: str) -> str:
    """The roost session id for the session name *name* (itself unless it is a long name)."""
    if not is_long_name(name):
        return name
    import hashlib

    return f"{name[:HEAD]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
