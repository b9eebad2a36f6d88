"""The commands build tools run all day, and the frame every command runs in.

``session begin``, ``end``, ``run`` and the automatic session (``run IMAGE``),
with :class:`Context` and :func:`execute`: what the fast dispatcher
(roost.fastpath) loads. The rest of the commands are in roost.handlers, which
re-exports these; both are shared by the argparse command line and the fast
one, so a command behaves the same whichever way it came in. Neither imports
argparse nor typing.
"""

from __future__ import annotations

import sys

PROG = "roost"

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and argparse cost milliseconds at start-up
    from collections.abc import Callable
    from typing import Any


class Context:
    """What every command gets: parsed arguments and a lazily built engine."""

    def __init__(self, args: Any) -> None:
        self.args = args
        self.json = bool(getattr(args, "json", False))
        self.quiet = bool(args.quiet)
        from .output import TerminalProgress

        self.progress = TerminalProgress()
        if self.quiet:
            self.progress.enabled = False
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from core.engine import open_engine

            self._engine = open_engine(
                mode_of(self.args), root=self.args.root, on_wait=self._waiting, progress=self.progress
            )
        return self._engine

    def _waiting(self, message: str) -> None:
        if not self.quiet:
            self.progress.done()
            print(f"roost: {message}", file=sys.stderr, flush=True)


def mode_of(args: Any) -> str | None:
    """The mode ``--system`` or ``--user`` asks for (None: from who runs roost); both: one line, exit 2."""
    system, user = getattr(args, "system_mode", False), getattr(args, "user_mode", False)
    if not (system or user):
        return None
    from core.rootless.config import asked

    return asked(system, user)


def _command_argv(args: Any) -> list[str]:
    argv = list(args.command or []) + list(getattr(args, "after_dashes", None) or [])
    if not argv:
        from core.errors import BadInput

        raise BadInput("no command given (put it after --)")
    return argv


def _isolation_options(args: Any) -> dict[str, Any]:
    """``--network`` and ``--limit`` for begin and run (roost.isolation), from argparse or the fast path."""
    if getattr(args, "network", None) is None and not getattr(args, "limit", None):
        return {}
    from .isolation import options

    return options(args)


def cmd_session_begin(ctx: Context) -> int:
    extra = _isolation_options(ctx.args)
    s = ctx.engine.begin(ctx.args.image, name=ctx.args.name, maintenance=ctx.args.maintenance, **extra)
    if ctx.json:
        from .output import emit_json

        emit_json(
            {"id": s.id, "image": s.image, "generation": s.generation, "kind": s.kind, "mountpoint": s.mountpoint}
        )
    else:
        print(s.id)
    return 0


def cmd_session_run(ctx: Context) -> int:
    a = ctx.args
    argv = _command_argv(a)
    eng = ctx.engine
    launch = eng.launch(a.id, argv, user=a.user, directory=a.directory, preserve_env=a.preserve_environment)
    eng.exec(a.id, launch)  # the run protocol: the session's lock is held shared until the exec
    return 127  # not reached: exec replaces roost with the command


def cmd_session_enter(ctx: Context) -> int:
    a = ctx.args
    launch = ctx.engine.launch(a.id, None, user=a.user, directory=a.directory)
    ctx.engine.exec(a.id, launch)
    return 127  # not reached


def cmd_session_end(ctx: Context) -> int:
    ctx.engine.end(ctx.args.id, force=ctx.args.force)
    return 0


def cmd_run(ctx: Context) -> int:
    a = ctx.args
    argv = _command_argv(a)
    code: int = ctx.engine.run_auto(
        a.image, argv, user=a.user, directory=a.directory, preserve_env=a.preserve_environment, **_isolation_options(a)
    )
    return code


def execute(func: Callable[[Context], int], args: Any) -> int:
    """Run one command; a RoostError becomes one line on stderr and its exit code."""
    from core.errors import RoostError

    ctx = Context(args)
    try:
        return func(ctx)
    except RoostError as e:
        ctx.progress.done()
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        ctx.progress.done()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:
        # An error the engine did not expect (a full disk, an I/O error): one line, not a
        # traceback; ROOST_DEBUG=1 shows where it came from.
        import os

        if os.environ.get("ROOST_DEBUG"):
            raise
        ctx.progress.done()
        where = f"{e.filename}: " if e.filename else ""
        print(f"{PROG}: {where}{e.strerror or e}", file=sys.stderr)
        return 5
