"""``-o KEY=VALUE``: the configuration keys a caller may set for one session, one table.

schroot lets a caller modify the keys a chroot lists in ``user-modifiable-keys``
(or ``root-modifiable-keys``) with ``-o``, and refuses every other key:
``E: Configuration key 'foo' is not permitted to be modified``. The door
keeps that contract with a table of its own: each row is one key the door
understands, with the parser that validates its value and what it does. A
key not in the table is refused with schroot's words (exit 1, like every
failure of the door); a value its parser rejects is refused naming the key.

Like schroot, ``-o`` counts when a session begins (``-b`` and the automatic
session) and when a command runs in one (``-r``); other actions ignore it.
A key sets how a session is made (the keyword of
:meth:`core.engine.Engine.begin` in its row); a key marked ``run`` also acts
on a running session when ``-r`` gives it (``network``: the session is
switched before the command runs, see :mod:`.isolation`). Any other key with
``-r`` is refused ("applies only when a session begins") rather than
silently dropped.

A new key is one row: its name, its parser, the keyword of
:meth:`core.engine.Engine.begin` it sets, and whether ``-r`` takes it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

#: the longest value the door takes for any key
MAX_VALUE = 4096


class InvalidValue(ValueError):
    """A value a key's parser refuses; the message says what it expects."""


class Key:
    """One row of the table: a key, how its value is read, the Engine.begin keyword it sets."""

    __slots__ = ("begin", "help", "name", "parse", "run")

    def __init__(self, name: str, parse: Callable[[str], object], help: str, *, begin: str, run: bool = False) -> None:
        self.name = name
        self.parse = parse
        self.help = help
        self.begin = begin
        self.run = run


def _command_prefix(value: str) -> tuple[str, ...]:
    """schroot's ``command-prefix``: words separated by commas, prepended to every command."""
    if value == "":
        return ()
    words = tuple(value.split(","))
    for word in words:
        if word == "" or any(ord(c) < 32 or c == "\x7f" for c in word):
            raise InvalidValue("expected words separated by commas (e.g. eatmydata or nice,-n,10)")
    return words


def _network(value: str) -> str:
    """``host``, ``none`` or ``loopback`` (core.records.NETWORKS)."""
    from core.records import NETWORKS

    if value not in NETWORKS:
        raise InvalidValue(f"expected one of {', '.join(NETWORKS)}")
    return value


#: every key the door understands, by name
KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key(
            "command-prefix",
            _command_prefix,
            "words (comma-separated) prepended to every command run in the session; "
            "replaces the image's command-prefix for this session",
            begin="command_prefix",
        ),
        Key(
            "network",
            _network,
            "the session's network (host, none, loopback): with -b, what it begins with; "
            "with -r, what it is switched to before the command runs",
            begin="network",
            run=True,
        ),
    )
}


def parse(options: Sequence[str], action: str) -> dict[str, object]:
    """The ``-o`` options of one command line, validated: Engine keyword -> value.

    *action* is ``begin`` (``-b`` and automatic sessions) or ``run`` (``-r``).
    The last of several ``-o`` for one key wins, as with schroot. Raises
    :class:`core.errors.BadInput` with one line for an unknown key, a missing
    or invalid value, or a key that does not apply to *action*.
    """
    from core.errors import BadInput
    from core.names import printable

    chosen: dict[str, object] = {}
    for option in options:
        name, sep, value = option.partition("=")
        key = KEYS.get(name)
        if key is None:
            known = ", ".join(sorted(KEYS))
            raise BadInput(
                f"-o {printable(option)}: configuration key {printable(name)} is not permitted "
                f"to be modified (the keys roost-schroot takes: {known})"
            )
        if not sep:
            raise BadInput(f"-o {name}: give a value (-o {name}=VALUE)")
        if len(value) > MAX_VALUE or "\x00" in value:
            raise BadInput(f"-o {name}: the value is too long or holds a NUL")
        if action != "begin" and not key.run:
            raise BadInput(f"-o {name} applies only when a session begins (-b, or an automatic session)")
        try:
            chosen[key.begin] = key.parse(value)
        except InvalidValue as e:
            raise BadInput(f"-o {name}={printable(value)}: {e}") from None
    return chosen


def value(options: Sequence[str], name: str) -> object | None:
    """The value of key *name* among *options* (the last one), parsed; None if not given.

    For options :func:`parse` has already accepted (the door checks every
    ``-o`` before it acts).
    """
    found = None
    for option in options:
        key, sep, text = option.partition("=")
        if key == name and sep:
            found = text
    return None if found is None else KEYS[name].parse(found)
