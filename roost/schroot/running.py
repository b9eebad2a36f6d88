"""Running a command in a session and waiting for it, as schroot does.

schroot waits for its command (sbuild reads its status, and a failure must
mark a ``source:`` session), reports a command killed by a signal as 1, and
relays signals to it. The session's lock is held shared until the child has
exec'd, so ``end`` cannot unmount underneath a starting command.
"""

from __future__ import annotations

import os
import sys

from .environment import adjust_launch, caller_cwd, filtered_environment, schroot_environment
from .options import EXIT_FAILURE, PROG

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from core.engine import Engine
    from core.process import Launch
    from core.records import Session

    from .options import Options


def prepare_launch(eng: Engine, session: Session, opts: Options, environ: Mapping[str, str]) -> Launch:
    """Resolve how to run ``opts.command`` (or a login shell) in *session*, schroot's way."""
    cwd = caller_cwd()
    env_in = filtered_environment(environ)
    launch: Launch = eng.launch(
        session.id,
        list(opts.command) or None,
        user=opts.user,
        directory=opts.directory,
        preserve_env=opts.preserve,
        environ=env_in,
        caller_cwd=cwd,
    )
    a = eng.actor
    adjust_launch(
        launch,
        opts,
        env_in,
        cwd,
        lambda command: schroot_environment(a.uid, a.user, session.image, session.alias, session.id, command),
    )
    return launch


def wait_child(pid: int, *, unblock: bool = False) -> int:
    """Wait for *pid*, relaying signals to it (see :func:`process.wait_relaying`).

    A command killed by a signal makes the status 1, as with schroot.
    """
    from core import process

    status = process.wait_relaying(pid, unblock=unblock)
    if os.WIFSIGNALED(status):
        import signal

        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        print(f"{PROG}: the command was terminated by {name}", file=sys.stderr)
        return EXIT_FAILURE
    return os.waitstatus_to_exitcode(status)


def run_launch(eng: Engine, sid: str, launch: Launch, *, unblock: bool = False) -> int:
    """Run *launch* in session *sid* and wait for it; returns its status as schroot reports it.

    The engine's run protocol holds the session's lock shared until the child
    has exec'd, so ``end`` cannot unmount underneath a starting command.
    """
    pid = eng.start(sid, launch)
    return wait_child(pid, unblock=unblock)


def describe(command: Sequence[str]) -> str:
    import shlex

    shown = shlex.join(command)
    return shown if len(shown) <= 200 else shown[:199] + "…"


def failure_reason(command: Sequence[str], code: int) -> str:
    return f"{describe(command) if command else 'the login shell'} exited {code}"
