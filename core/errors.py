"""One exception hierarchy for roost, each class carrying its exit code.

Front doors catch :class:`RoostError`, print ``roost: <message>`` on one line
and exit with :attr:`RoostError.exit_code`. Anything else escaping the engine
is a bug and may show a traceback.

Exit codes (DESIGN.md, "Front doors"):

====  =====================================================================
0     ok
1     the command inside the session failed (``run`` passes its own code)
2     bad input: names, paths, config, arguments, missing privileges
3     conflict: locked, busy, not fast-forward (compare-and-swap refused)
4     not found
5     system error: a mount, a syscall or a helper program failed
====  =====================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_COMMAND_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_CONFLICT = 3
EXIT_NOT_FOUND = 4
EXIT_SYSTEM = 5


def one_line(text: str) -> str:
    """*text* with every line break and control character escaped, so it prints as one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class RoostError(Exception):
    """Base of every error roost reports to its user."""

    exit_code = EXIT_SYSTEM

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return one_line(self.message)


class BadInput(RoostError):
    """The caller asked for something malformed; nothing was changed."""

    exit_code = EXIT_BAD_INPUT


class NotPermitted(BadInput):
    """The caller lacks the privilege for this operation (not root, not listed)."""


class ConfigError(BadInput):
    """A configuration file (roost.yaml, image.yaml, a profile) is malformed."""


class Conflict(RoostError):
    """The operation collides with another one: a lock, a busy mount, a moved base."""

    exit_code = EXIT_CONFLICT


class NotFound(RoostError):
    """An image, generation or session that does not exist."""

    exit_code = EXIT_NOT_FOUND


class SystemFailure(RoostError):
    """The system refused: a mount, a syscall or a helper program failed."""

    exit_code = EXIT_SYSTEM


class CommandFailed(RoostError):
    """A command run inside a session exited non-zero (``code`` is passed through)."""

    exit_code = EXIT_COMMAND_FAILED

    def __init__(self, message: str, code: int = EXIT_COMMAND_FAILED) -> None:
        super().__init__(message)
        self.exit_code = code


class Cancelled(RoostError):
    """The caller stopped a long operation (the console's cancel) while it ran; nothing was kept.

    Raised by the caller's own progress callback, so the operation unwinds as
    from any other error. Exit code 3, as for a conflict: another request
    (the caller's) stopped it.
    """

    exit_code = EXIT_CONFLICT
