"""The entry points: ``roost-schroot …`` (:func:`main`) and ``roost … schroot …`` (:func:`in_roost`).

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
    from collections.abc import Mapping, Sequence


#: roost's global options the front door honours (roost.global_options); any other one given is refused.
HONOURED = frozenset({"headless", "root", "quiet", "system_mode", "user_mode"})


def in_roost(values: Mapping[str, object], argv: Sequence[str]) -> int:
    """``roost [GLOBAL OPTIONS] schroot ARGS``: the front door, with roost's global options applied.

    ``--root`` picks the state root; ``--system`` and ``--user`` the mode;
    ``-q`` is schroot's own ``-q`` (no waiting messages); ``--headless`` changes nothing (the door never draws
    or prompts). Any other global option given (``--json``: the door prints
    what schroot prints) is refused with one line and exit code 2, like any
    option roost does not take.
    """
    from ..global_options import OPTIONS

    for o in OPTIONS:
        if o.stores and o.dest not in HONOURED and values.get(o.dest, o.default) != o.default:
            print(f"{PROG}: {o.flags[-1]} does not apply to roost schroot (see {PROG} schroot --help)", file=sys.stderr)
            return 2
    root = values.get("root")
    from core.errors import RoostError

    try:
        from core.rootless.config import asked

        mode = asked(values.get("system_mode"), values.get("user_mode"))
    except RoostError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    return main(argv, root=root if isinstance(root, str) else None, quiet=values.get("quiet") is True, mode=mode)


def main(
    argv: Sequence[str] | None = None, *, root: str | None = None, quiet: bool = False, mode: str | None = None
) -> int:
    """``roost-schroot ARGS``: in the system mode for root, in the caller's own rootless one for anyone else."""
    args = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.basename(sys.argv[0]) if argv is None else f"{PROG} schroot"
    try:
        opts = parse(args)
    except UsageError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_FAILURE
    opts.quiet = opts.quiet or quiet
    if opts.action == "help":
        sys.stdout.write(HELP.format(prog=prog))
        return 0
    if opts.action == "version":
        print(f"{prog} (roost {__version__}): the schroot {SCHROOT_VERSION} command line, on roost")
        return 0
    if opts.action == "run" and mode is None:
        from .fast import run_fast

        code = run_fast(opts, root, os.environ)
        if code is not None:
            return code
    from core.errors import RoostError

    try:
        from core.engine import open_engine

        from .actions import FrontDoor

        def waiting(message: str) -> None:
            if not opts.quiet:
                print(f"{PROG}: {message}", file=sys.stderr, flush=True)

        eng = open_engine(mode, root=root, on_wait=waiting)
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
