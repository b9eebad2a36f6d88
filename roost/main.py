"""Entry point of ``roost``: the hot path first, everything else through roost.cli.

Kept tiny on purpose: ``roost session run`` must not pay for argparse,
typing, json or the engine (see roost.fastpath).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--host" in args or any(a.startswith("--host=") for a in args):
        from . import remote

        code = remote.main(args)  # `roost --host HOST COMMAND`: the command runs there, over ssh
        if code is not None:
            return code
    if "schroot" in args[:4]:
        from . import schroot

        front = schroot.request(args)
        if front is not None:
            return schroot.main(front[1], root=front[0])
    from . import fastpath

    if "session" in args and "run" in args:
        fastpath.run(args)  # execs on success; returns when the full command line must decide
    code = fastpath.dispatch(args)
    if code is not None:
        return code
    from .cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
