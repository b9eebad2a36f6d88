"""The entry point: ``roost-schroot …`` and ``roost schroot …``.

Parses the command line, answers ``--help`` and ``--version`` at once, tries
``-r``'s fast path, and otherwise hands the options to the actions with an
engine; every error is one ``roost: …`` line and schroot's exit code 1.
"""

from __future__ import annotations

import os
import sys

from .. import __version__
from .options import EXIT_FAILURE, HELP, PROG, SCHROOT_VERSION, UsageError, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def request(argv: Sequence[str]) -> tuple[str | None, list[str]] | None:
    """(state root, arguments) when *argv* is ``roost [--headless] [--root DIR] schroot …``."""
    root = None
    i, n = 0, len(argv)
    while i < n:
        arg = argv[i]
        if arg == "--headless":
            i += 1
        elif arg == "--root" and i + 1 < n:
            root = argv[i + 1]
            i += 2
        elif arg.startswith("--root="):
            root = arg[7:]
            i += 1
        else:
            break
    if i < n and argv[i] == "schroot":
        return root, list(argv[i + 1 :])
    return None


def main(argv: Sequence[str] | None = None, *, root: str | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.basename(sys.argv[0]) if argv is None else f"{PROG} schroot"
    try:
        opts = parse(args)
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_FAILURE
    if opts.action == "help":
        sys.stdout.write(HELP.format(prog=prog))
        return 0
    if opts.action == "version":
        print(f"{prog} (roost {__version__}): the schroot {SCHROOT_VERSION} command line, on roost")
        return 0
    if opts.action == "run":
        from .fast import run_fast

        code = run_fast(opts, root, os.environ)
        if code is not None:
            return code
    from core.errors import RoostError

    try:
        from core.engine import Engine

        from .actions import FrontDoor

        def waiting(message: str) -> None:
            if not opts.quiet:
                print(f"{PROG}: {message}", file=sys.stderr, flush=True)

        eng = Engine(root=root, on_wait=waiting)
        return FrontDoor(opts, eng, os.environ).dispatch()
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except RoostError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
