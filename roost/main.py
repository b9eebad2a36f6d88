"""Entry point of ``roost``: the hot path first, everything else through roost.cli.

Kept tiny on purpose: ``roost session run`` must not pay for argparse,
typing, json or the engine (see roost.fastpath). The global options are
split off by roost.global_options, the one splitter every part of the
command line uses; when it steps aside (an abbreviated option, say), argparse
decides everything.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

#: Set when a fast command (roost.fastpath, the schroot door) ran: :func:`launch` may skip the teardown.
_fast = False


def launch() -> NoReturn:
    """bin/roost's entry: :func:`main`, then out; after a fast command without the teardown (roost.leave)."""
    code = main()
    if _fast:
        from .leave import now

        now(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1 and args[0] in ("--version", "--help", "-h"):
        from . import usage

        return usage.fast(args[0])  # without building the parser (roost.usage)
    if "--host" in args or any(a.startswith("--host=") for a in args):
        _collect_cycles()
        from . import remote

        code = remote.main(args)  # `roost --host HOST COMMAND`: the command runs there, over ssh
        if code is not None:
            return code
    from .global_options import split

    found = split(args)
    if found is not None:
        command = args[found.index : found.index + 2]
        global _fast
        if command[:1] == ["schroot"]:
            from .schroot.door import in_roost

            _fast = True
            return in_roost(found.values, list(args[found.index + 1 :]))
        from . import fastpath

        if command == ["session", "run"]:
            fastpath.run(args)  # execs on success; returns when the full command line must decide
        code = fastpath.dispatch(args)
        if code is not None:
            _fast = True
            return code
    _collect_cycles()
    from .cli import main as cli_main

    return cli_main(args)


def _collect_cycles() -> None:
    """Cycle collection back on (bin/roost turns it off): the console and long operations need it."""
    import gc

    gc.enable()


if __name__ == "__main__":
    sys.exit(main())
