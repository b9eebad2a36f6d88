"""``-r`` without the engine: what sbuild runs a few hundred times per build.

Nothing heavy at import time: the fast path needs neither the engine nor
YAML, dataclasses, typing, signal or json (tests/test_schroot.py checks).
"""

from __future__ import annotations

import os

from .environment import adjust_launch, caller_cwd, filtered_environment, schroot_environment
from .options import split_name
from .running import failure_reason, wait_child

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from .options import Options


def run_fast(opts: Options, root: str | None, environ: Mapping[str, str]) -> int | None:
    """``-r`` in one mounted session without the engine; None when the full path must decide.

    Reads the session's record with the C JSON scanner, checks access, takes
    the session's lock shared until the command has exec'd, and waits for it.
    Anything unusual (an error to report, a session that needs recovery, a busy
    lock) returns None before anything was done, and the engine handles it
    with its proper messages.
    """
    if os.geteuid() != 0 or len(opts.chroots) != 1 or opts.selects_all or opts.options:
        return None
    namespace, sid = split_name(opts.chroots[0], "session")
    from core import process
    from core.actor import Actor
    from core.errors import RoostError

    from ..fastpath import live_session, may_run, shared_session_lock

    if namespace != "session":
        return None
    if len(sid) > 64:
        from .sessionnames import session_id

        sid = session_id(sid)  # a long name a client generated (piuparts)
    found = live_session(root, sid)
    if found is None:
        return None
    conf, record = found
    wanted = environ.get("ROOST_NETWORK")  # sbuild's build command asks for its network (isolation.py)
    if wanted and wanted != record.get("network", "host"):
        return None
    image = record.get("image")
    alias = record.get("alias")
    if not isinstance(image, str) or not isinstance(alias, str | None):
        return None
    actor = Actor.current(environ)  # type: ignore[arg-type]
    cwd = caller_cwd()
    env_in = filtered_environment(environ)
    try:
        target = may_run(actor, record, sid, opts.user, conf)
        launch = process.prepare(
            record,
            list(opts.command) or None,
            user=target,
            directory=opts.directory,
            preserve_env=opts.preserve,
            environ=env_in,
            caller_cwd=cwd,
        )
    except (RoostError, TypeError, ValueError):
        return None
    adjust_launch(
        launch,
        opts,
        env_in,
        cwd,
        lambda command: schroot_environment(actor.uid, actor.user, image, alias, sid, command),
    )
    lock = shared_session_lock(conf.run_root, sid)
    if lock is None:
        return None
    try:
        pid = process.start(launch)
    finally:
        os.close(lock)
    code = wait_child(pid)
    if code != 0 and record.get("kind") == "maintenance":
        from core.engine import Engine

        Engine(conf, actor=actor).mark_failed(sid, failure_reason(opts.command, code))
    return code
