"""roost's global options: one table, and the one splitter of them from the command.

The options before the command word (``roost [OPTIONS] COMMAND …``) are
written once, in :data:`OPTIONS`. :func:`add_to` puts them on argparse's
top-level parser (roost.cli), so ``--help``, the manual page and completion
show them; :func:`split` separates them from the command for the paths that
must not pay for argparse: roost.main (which hands ``roost … schroot`` to the
schroot front door) and roost.fastpath.

The splitter takes only the plain forms: each option spelt in full, one per
word, before the command (``--headless``, ``--root DIR``, ``--root=DIR``,
``--json``, ``-q``, ``--quiet``). Anything else before the command (an
abbreviation such as ``--head``, grouped short options, an unknown option,
``--``, ``-h``, ``--version``, a value that looks like an option) makes it
return None, and argparse decides. tests/test_argv.py checks the splitter
against the parser: whatever the splitter accepts means exactly what
argparse makes of it.

A new global option is one more row here. Give it ``fast=False`` until the
fast paths know what to do with it: whenever it is given they then step aside, and the schroot front door
refuses any global option it does not know (roost.schroot.door).

This module imports nothing: roost.main reads it on every command.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # argparse and typing cost milliseconds at start-up
    import argparse
    from collections.abc import Sequence


class GlobalOption:
    """One global option: its flags, where argparse stores it, and how the fast paths treat it.

    *action* is ``store_true`` (a flag), ``store`` (takes *metavar*),
    ``help`` or ``version``. With *fast* False the splitter steps aside
    whenever the option is given.
    """

    __slots__ = ("action", "dest", "fast", "flags", "help", "metavar")

    def __init__(
        self,
        flags: tuple[str, ...],
        dest: str,
        help: str,
        *,
        action: str = "store_true",
        metavar: str | None = None,
        fast: bool = True,
    ) -> None:
        self.flags = flags
        self.dest = dest
        self.help = help
        self.action = action
        self.metavar = metavar
        self.fast = fast

    @property
    def stores(self) -> bool:
        """True for options that set a value (``args.<dest>``); help and version act instead."""
        return self.action in ("store", "store_true")

    @property
    def default(self) -> str | bool | None:
        return False if self.action == "store_true" else None


#: Every global option, in the order ``roost --help`` lists them.
OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption(("-h", "--help"), "help", "show this help message and exit", action="help", fast=False),
    GlobalOption(("--headless",), "headless", "never draw or prompt (for scripts)"),
    GlobalOption(
        ("--root",), "root", "state root (default from roost.yaml or ROOST_ROOT)", action="store", metavar="DIR"
    ),
    GlobalOption(("--json",), "json", "print JSON for listings and info"),
    GlobalOption(
        ("--system",), "system_mode", "the system's images and sessions (/var/lib/roost; the default for root)"
    ),
    GlobalOption(
        ("--user",),
        "user_mode",
        "your own images and sessions, rootless (~/.local/share/roost; the default for anyone but root)",
    ),
    GlobalOption(("-q", "--quiet"), "quiet", "no progress or waiting messages"),
    GlobalOption(
        ("--host",),
        "host",
        "run the command on HOST (ssh://[user@]host[:port] or a name in hosts.yaml) through ssh",
        action="store",
        metavar="HOST",
        fast=False,
    ),
    GlobalOption(("--version",), "version", "show program's version number and exit", action="version", fast=False),
)

_BY_FLAG = {flag: option for option in OPTIONS for flag in option.flags}


def add_to(parser: argparse.ArgumentParser, version: str) -> None:
    """Add every global option to *parser* (made with ``add_help=False``: -h is in the table)."""
    for o in OPTIONS:
        if o.action == "help":
            parser.add_argument(*o.flags, action="help", help=o.help)
        elif o.action == "version":
            parser.add_argument(*o.flags, action="version", version=version, help=o.help)
        elif o.action == "store":
            parser.add_argument(*o.flags, dest=o.dest, metavar=o.metavar, help=o.help)
        else:
            parser.add_argument(*o.flags, dest=o.dest, action="store_true", help=o.help)


def values_of(namespace: object) -> dict[str, object]:
    """The global options' values in an argparse namespace, keyed like :attr:`Split.values`."""
    return {o.dest: getattr(namespace, o.dest, o.default) for o in OPTIONS if o.stores}


class Split:
    """The global options before the command, as argparse sets them, and where the command begins."""

    __slots__ = ("index", "values")

    def __init__(self, values: dict[str, object], index: int) -> None:
        self.values = values  # dest -> value, for every option that stores one
        self.index = index  # argv[index] is the command word (index == len(argv): no command)


def split(argv: Sequence[str]) -> Split | None:
    """Split the plain global options off *argv*; None when anything else comes before the command."""
    values: dict[str, object] = {o.dest: o.default for o in OPTIONS if o.stores}
    i, n = 0, len(argv)
    while i < n:
        word = argv[i]
        if not word.startswith("-"):
            break  # the command word (argparse reads any word not starting with '-' as one)
        option = _BY_FLAG.get(word)
        if option is not None and option.fast:
            if option.action == "store_true":
                values[option.dest] = True
                i += 1
                continue
            if i + 1 < n and not argv[i + 1].startswith("-"):
                values[option.dest] = argv[i + 1]
                i += 2
                continue
            return None
        name, eq, value = word.partition("=")
        option = _BY_FLAG.get(name)
        if eq and option is not None and option.fast and option.action == "store" and name.startswith("--"):
            values[option.dest] = value
            i += 1
            continue
        return None
    return Split(values, i)
