"""``roost --version`` and ``roost --help`` without argparse.

Both are what a user types to see whether roost is there; they should cost
the interpreter's start and little more. Building the full parser (every
command, its handlers imported) costs tens of milliseconds, so the top-level
help is kept rendered in ``roost/help.txt``: what
``build_parser().format_help()`` prints at 80 columns. tests/test_argv.py
renders it again and compares; ``python -m roost.usage`` (run by
``scripts/manpage``) rewrites the file. Only the exact forms ``roost
--version``, ``roost --help`` and ``roost -h`` take this path; anything more
on the command line goes through the parser as before.
"""

from __future__ import annotations

import sys

from . import __version__

#: the width the help is rendered at (argparse wraps to the terminal otherwise)
WIDTH = 80

FAST = ("--version", "--help", "-h")


def fast(option: str) -> int:
    """Print the version or the top-level help (*option* is one of :data:`FAST`)."""
    if option == "--version":
        sys.stdout.write(f"roost {__version__}\n")
        return 0
    with open(_help_file(), encoding="utf-8") as f:
        sys.stdout.write(f.read())
    return 0


def _help_file() -> str:
    return __file__.rpartition("/")[0] + "/help.txt"


def render() -> str:
    """The top-level help as the parser prints it at :data:`WIDTH` columns."""
    import argparse

    from .cli import build_parser

    parser = build_parser()
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=WIDTH)  # type: ignore[assignment]
    return parser.format_help()


if __name__ == "__main__":
    with open(_help_file() + ".new", "w", encoding="utf-8") as out:
        out.write(render())
    import os

    os.replace(_help_file() + ".new", _help_file())
