"""The schroot 1.6 command line, as sbuild and people type it: options, actions, help.

:func:`parse` reads it into :class:`Options`. Like schroot, options may
appear anywhere before ``--``, short options may be grouped and long ones
abbreviated. Every failure of the door's own is schroot's exit code 1.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

PROG = "roost"
#: The schroot command line this front door follows.
SCHROOT_VERSION = "1.6.13"
#: schroot exits 1 for every failure of its own; a command's status passes through.
EXIT_FAILURE = 1


class UsageError(Exception):
    """The command line is malformed (one line, exit 1, like schroot)."""


ACTIONS = {
    "help": "-h/--help",
    "version": "-V/--version",
    "list": "-l/--list",
    "info": "-i/--info",
    "config": "--config",
    "location": "--location",
    "automatic": "--automatic-session",
    "begin": "-b/--begin-session",
    "recover": "--recover-session",
    "run": "-r/--run-session",
    "end": "-e/--end-session",
}


class Options:
    """A parsed schroot command line."""

    __slots__ = (
        "action",
        "all_chroots",
        "all_sessions",
        "all_sources",
        "chroots",
        "command",
        "directory",
        "exclude_aliases",
        "force",
        "options",
        "preserve",
        "quiet",
        "session_name",
        "shell",
        "user",
        "verbose",
    )

    def __init__(self) -> None:
        self.action: str | None = None
        self.chroots: list[str] = []
        self.all_chroots = False
        self.all_sources = False
        self.all_sessions = False
        self.exclude_aliases = False
        self.directory: str | None = None
        self.user: str | None = None
        self.preserve = False
        self.shell: str | None = None
        self.options: list[str] = []
        self.session_name: str | None = None
        self.force = False
        self.quiet = False
        self.verbose = False
        self.command: list[str] = []

    @property
    def selects_all(self) -> bool:
        return self.all_chroots or self.all_sources or self.all_sessions


#: long option -> (takes a value, what it sets)
_LONG: dict[str, tuple[bool, str]] = {
    "help": (False, "action:help"),
    "version": (False, "action:version"),
    "list": (False, "action:list"),
    "info": (False, "action:info"),
    "config": (False, "action:config"),
    "location": (False, "action:location"),
    "automatic-session": (False, "action:automatic"),
    "begin-session": (False, "action:begin"),
    "recover-session": (False, "action:recover"),
    "run-session": (False, "action:run"),
    "end-session": (False, "action:end"),
    "quiet": (False, "quiet"),
    "verbose": (False, "verbose"),
    "debug": (True, "debug"),
    "chroot": (True, "chroot"),
    "all": (False, "all"),
    "all-chroots": (False, "all_chroots"),
    "all-source-chroots": (False, "all_sources"),
    "all-sessions": (False, "all_sessions"),
    "exclude-aliases": (False, "exclude_aliases"),
    "directory": (True, "directory"),
    "user": (True, "user"),
    "preserve-environment": (False, "preserve"),
    "shell": (True, "shell"),
    "option": (True, "option"),
    "session-name": (True, "session_name"),
    "force": (False, "force"),
}
_SHORT: dict[str, str] = {
    "h": "help",
    "V": "version",
    "l": "list",
    "i": "info",
    "q": "quiet",
    "v": "verbose",
    "c": "chroot",
    "a": "all",
    "d": "directory",
    "u": "user",
    "p": "preserve-environment",
    "s": "shell",
    "o": "option",
    "b": "begin-session",
    "r": "run-session",
    "e": "end-session",
    "n": "session-name",
    "f": "force",
}


def _long_option(name: str) -> str:
    """The long option *name* stands for: exact, or an unambiguous prefix (as schroot allows)."""
    if name in _LONG:
        return name
    matches = [o for o in _LONG if o.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"unrecognised option '--{name}'")
    raise UsageError(f"option '--{name}' is ambiguous ({', '.join('--' + m for m in sorted(matches))})")


def _apply(opts: Options, option: str, value: str | None) -> None:
    _, what = _LONG[option]
    if what.startswith("action:"):
        action = what[7:]
        if opts.action is not None and opts.action != action:
            raise UsageError(f"only one action may be given ({ACTIONS[opts.action]} and {ACTIONS[action]})")
        opts.action = action
    elif what == "chroot":
        assert value is not None
        opts.chroots.append(value)
    elif what == "all":
        opts.all_chroots = opts.all_sources = opts.all_sessions = True
    elif what == "option":
        assert value is not None
        opts.options.append(value)
    elif what == "debug":
        pass  # schroot's debugging output: nothing to add
    elif value is None:
        setattr(opts, what, True)
    else:
        setattr(opts, what, value)


def parse(argv: Sequence[str]) -> Options:
    """Parse a schroot 1.6 command line.

    Like schroot, options may appear anywhere before ``--``; the other words
    form the command. Short options may be grouped (``-qp``) and take their
    value attached or as the next word; long options take ``=VALUE`` or the
    next word and may be abbreviated.
    """
    opts = Options()
    i, n = 0, len(argv)
    while i < n:
        arg = argv[i]
        i += 1
        if arg == "--":
            opts.command.extend(argv[i:])
            break
        if arg.startswith("--"):
            name, eq, attached = arg[2:].partition("=")
            option = _long_option(name)
            takes = _LONG[option][0]
            if takes:
                if eq:
                    value = attached
                elif i < n:
                    value = argv[i]
                    i += 1
                else:
                    raise UsageError(f"option '--{option}' needs a value")
                _apply(opts, option, value)
            else:
                if eq:
                    raise UsageError(f"option '--{option}' takes no value")
                _apply(opts, option, None)
        elif arg.startswith("-") and arg != "-":
            j = 1
            while j < len(arg):
                letter = arg[j]
                j += 1
                option = _SHORT.get(letter, "")
                if not option:
                    raise UsageError(f"unrecognised option '-{letter}'")
                if _LONG[option][0]:
                    if j < len(arg):
                        value = arg[j:]
                    elif i < n:
                        value = argv[i]
                        i += 1
                    else:
                        raise UsageError(f"option '-{letter}' needs a value")
                    _apply(opts, option, value)
                    break
                _apply(opts, option, None)
        else:
            opts.command.append(arg)
    return opts


def split_name(given: str, default: str) -> tuple[str, str]:
    """(namespace, name) of a ``-c`` argument: ``source:x`` is (source, x), a bare ``x`` is in *default*."""
    namespace, sep, name = given.partition(":")
    if not sep:
        return default, given
    return namespace, name


HELP = """\
Usage:
  {prog} [OPTION…] [--] [COMMAND] — run a command in a chroot (schroot 1.6 command line)

Actions:
  -h, --help                 Show help options
  -V, --version              Print version information
  -l, --list                 List available chroots
  -i, --info                 Show information about selected chroots
  --location                 Print location of selected chroots
  --automatic-session        Begin, run and end a session automatically (default)
  -b, --begin-session        Begin a session; print its id
  --recover-session          Recover an existing session
  -r, --run-session          Run an existing session
  -e, --end-session          End an existing session (a source: session is promoted)

General options:
  -q, --quiet                Show less output
  -v, --verbose              Show more output

Chroot selection:
  -c, --chroot=chroot        Use specified chroot (chroot:NAME, source:NAME, session:ID)
  -a, --all                  Select all chroots, source chroots and sessions
  --all-chroots              Select all chroots
  --all-source-chroots       Select all source chroots
  --all-sessions             Select all active sessions
  --exclude-aliases          Do not include aliases

Chroot environment:
  -d, --directory=directory  Directory to use
  -u, --user=user            Username (default current user)
  -p, --preserve-environment Preserve user environment
  -s, --shell=shell          Shell to use as login shell

Session actions:
  -n, --session-name=name    Session name (with --begin-session)
  -f, --force                Force operation, even if it fails

chroot:NAME is a roost image (or an alias), source:NAME a maintenance session of it
that is promoted into the image's next generation when it ends successfully.
"""
